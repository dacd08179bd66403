"""Issue 8, failing dependencies: LLM endpoint down / slow / erroring, Qdrant server unreachable,
embedding model files missing, the wrong model for a collection. Each gives a clear error, retries
where sensible, keeps the evidence, leaks no secret, and writes nothing partial.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import index_sample_docs

from ingest.sync import ingest_paths
from rag.config import Settings
from rag.errors import ModelMismatchError
from rag.pipeline import Pipeline
from rag.store import CollectionInfo, EdgeStore, open_store
from tests.conftest import REPO_ROOT
from tests.fake_llm_server import Delay, Reply, Status, closed_port_url

SECRET = "sk-test-DEPFAULT-5f2c9e1d7b"
QUESTION = "How many laptops were delivered on January 23, 2023?"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, evaldata, minilm_path, embedder):
    """A small real collection shared by the LLM-fault tests (pipelines reuse its store)."""
    root = tmp_path_factory.mktemp("depfault")
    docs = root / "docs"
    docs.mkdir()
    for name in ("fake-memo.pdf", "family-day.eml"):
        shutil.copy(evaldata / "docs-mixed" / "files" / name, docs / name)
    settings = Settings(embed_backend="torch-fp32", rerank_backend="torch-fp32", qdrant_path=str(root / "qdrant"), state_dir=str(root / "state"), collection="dep",
                        embed_model=minilm_path, rerank_model="none", mode="hybrid", llm_provider="extractive",
                        chunk_tokens=128, chunk_overlap_tokens=16)
    store = open_store(settings)
    report = ingest_paths([docs], settings, store, embedder, progress=False)
    assert report.indexed == 2
    yield settings, store, docs
    store.close()


def _ask(indexed, embedder, base_url: str, **llm):
    settings, store, _docs = indexed
    s = settings.replace(llm_provider="openai", llm_base_url=base_url, llm_model="fake", llm_api_key=SECRET, **llm)
    # the pipeline borrows the shared store (not closed here)
    return Pipeline(s, store=store, embedder=embedder).ask(QUESTION)


def _assert_failed_with_evidence(answer, *needles: str) -> None:
    assert answer.error, answer
    assert "\n" not in answer.error
    for needle in needles:
        assert needle in answer.error, (needle, answer.error)
    assert SECRET not in answer.error and SECRET not in answer.text
    assert answer.abstained and not answer.citations
    # the evidence found is still returned (the UI and CLI show it)
    assert answer.evidence and any("laptops" in e.chunk.text.lower() for e in answer.evidence)


def test_llm_endpoint_down(indexed, embedder):
    url = closed_port_url()
    started = time.perf_counter()
    answer = _ask(indexed, embedder, url, llm_max_retries=1)
    # guards generation.LLMAnswerer.complete: connection errors -> LLMError naming the endpoint
    _assert_failed_with_evidence(answer, url, "unreachable after 2 attempts", "RAG_LLM_BASE_URL")
    assert time.perf_counter() - started < 30


def test_llm_endpoint_slow_times_out_and_is_retried(indexed, embedder, fake_llm):
    fake_llm.script(Delay(5.0, Reply("late [1].")), Delay(5.0, Reply("late [1].")))
    started = time.perf_counter()
    answer = _ask(indexed, embedder, fake_llm.base_url, llm_timeout_s=0.5, llm_max_retries=1)
    # guards the client timeout (settings.llm_timeout_s) and the retry of timeouts
    _assert_failed_with_evidence(answer, "timed out after 0.5s", "llm_timeout_s")
    assert len(fake_llm.requests) == 2
    assert time.perf_counter() - started < 5.0


def test_llm_500_then_ok_is_retried(indexed, embedder, fake_llm):
    fake_llm.script(Status(500, "upstream overloaded"), Reply("200 laptops were delivered [1]."))
    answer = _ask(indexed, embedder, fake_llm.base_url, llm_max_retries=2)
    # guards the retry of 5xx answers in generation._stream_once/complete
    assert answer.error is None and not answer.abstained, answer
    assert len(fake_llm.requests) == 2
    assert "200" in answer.text and answer.citations


def test_llm_400_is_not_retried(indexed, embedder, fake_llm):
    fake_llm.script(Status(400, f"bad request for key {SECRET}"), Reply("never sent [1]."))
    answer = _ask(indexed, embedder, fake_llm.base_url, llm_max_retries=3)
    # guards: a 4xx is the caller's fault -> no retry; and the secret echoed by the server is redacted
    _assert_failed_with_evidence(answer, "HTTP 400", "rejected the request")
    assert len(fake_llm.requests) == 1 and fake_llm.pending == 1


# --------------------------------------------------------------------------------------------------
# CLI: Qdrant server unreachable, model files missing, wrong model for a collection
# --------------------------------------------------------------------------------------------------


def _cli(argv: list[str], cwd: Path, **env_changes: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("RAG_QDRANT_URL", None)
    env.update({"PYTHONPATH": str(REPO_ROOT), "RAG_RERANK_MODEL": "none", "RAG_LLM_PROVIDER": "extractive",
                "RAG_CHUNK_TOKENS": "128", "RAG_CHUNK_OVERLAP_TOKENS": "16", **env_changes})
    return subprocess.run([sys.executable, "-m", "rag.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # progress logs (INFO lines, model loading bars) may precede it; the reason is one "rag: " line, last
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith("rag: ")]
    assert len(reasons) == 1 and lines[-1] == reasons[0], proc.stderr
    assert proc.stdout == ""
    return reasons[0]


@pytest.mark.slow  # waits out connection retries to a dead Qdrant: ~25 s
def test_qdrant_server_unreachable(tmp_path, minilm_path):
    url = closed_port_url().removesuffix("/v1")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Some text about herons.\n", encoding="utf-8")
    for argv in (["search", "herons"], ["ingest", str(docs)], ["stats"]):
        started = time.perf_counter()
        proc = _cli(argv, tmp_path, RAG_QDRANT_URL=url, RAG_EMBED_MODEL=minilm_path)
        # guards ServerStore.__init__: connection failures -> StoreError naming RAG_QDRANT_URL's value
        line = _one_line_exit_2(proc)
        assert line.startswith(f"rag: cannot reach Qdrant at {url}"), line
        assert "RAG_QDRANT_URL" in line
        assert time.perf_counter() - started < 120


@pytest.fixture()
def existing(tmp_path, settings, embedder, evaldata):
    """A collection built with MiniLM, and a snapshot of its points."""
    docs = index_sample_docs(tmp_path, settings, embedder, evaldata)
    store = open_store(settings)
    snapshot = {i: p for i, p, _v in store.iter_payloads()}
    store.close()
    (docs / "new.txt").write_text("A new file that must not be half-written when the model is missing.\n",
                                  encoding="utf-8")
    return docs, snapshot


def _store_env(settings) -> dict[str, str]:
    return {"RAG_QDRANT_PATH": settings.qdrant_path, "RAG_COLLECTION": settings.collection}


@pytest.mark.slow  # `rag` processes with broken model folders: ~40 s
def test_missing_model_files_fail_clearly_without_writes(tmp_path, settings, existing, minilm_path):
    docs, snapshot = existing
    no_weights = tmp_path / "minilm-no-weights"  # a model folder whose weights file is gone
    no_weights.mkdir()
    for item in Path(minilm_path).iterdir():
        if item.name != "model.safetensors":
            os.symlink(item, no_weights / item.name)
    for model, needle in (("/nonexistent/model", "does not exist"), (str(no_weights), "model.safetensors")):
        proc = _cli(["ingest", str(docs)], tmp_path, RAG_EMBED_MODEL=model, **_store_env(settings))
        # guards embedding.load_embedder: ModelLoadError naming the model and RAG_EMBED_MODEL
        line = _one_line_exit_2(proc)
        assert model in line and needle in line and "RAG_EMBED_MODEL" in line, line
        store = EdgeStore(settings.qdrant_path, settings.collection)
        assert {i: p for i, p, _v in store.iter_payloads()} == snapshot  # no partial writes
        store.close()
    # a brand-new collection is not even created when the model cannot load
    proc = _cli(["ingest", str(docs)], tmp_path, RAG_EMBED_MODEL="/nonexistent/model",
                RAG_QDRANT_PATH=settings.qdrant_path, RAG_COLLECTION="fresh")
    _one_line_exit_2(proc)
    assert EdgeStore(settings.qdrant_path, "fresh").info() is None
    assert not (Path(settings.qdrant_path) / "fresh" / "collection.json").exists()


def test_wrong_model_for_collection_names_both_models(tmp_path, settings, minilm_path, embedder):
    """A collection recorded as built with BGE; using it with MiniLM (same dimension!) is refused."""
    store = EdgeStore(settings.qdrant_path, "bge")
    store.create(CollectionInfo(name="bge", embed_model="BAAI/bge-small-en-v1.5", dimension=384))
    store.close()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Some text about herons and their nests.\n", encoding="utf-8")
    env = {"RAG_QDRANT_PATH": settings.qdrant_path, "RAG_COLLECTION": "bge", "RAG_EMBED_MODEL": minilm_path}
    proc = _cli(["ingest", str(docs)], tmp_path, **env)
    # guards Store.check_compatible, called by FolderSync.run before any write
    line = _one_line_exit_2(proc)
    assert "'BAAI/bge-small-en-v1.5'" in line and repr(minilm_path) in line, line
    assert "RAG_EMBED_MODEL" in line
    # ... and by HybridRetriever before any query (in-process: the CLI maps it to exit 2 as above)
    pipeline = Pipeline(settings.replace(collection="bge", rerank_model="none", mode="hybrid"), embedder=embedder)
    with pytest.raises(ModelMismatchError, match="BAAI/bge-small-en-v1.5"):
        pipeline.search("herons")
    assert pipeline.store.count() == 0  # the refused ingest wrote nothing
    pipeline.close()
