"""Issue 8, concurrency: the embedded store admits one process; a second `rag` process gets a clear
one-line message and exit code 2, never a traceback and never a corrupted store.

(Simultaneous UI chats not mixing sessions: tests/test_ui_api.py::test_parallel_sessions_get_their_own_answers
runs three gradio_client sessions in parallel, two turns each, and asserts each session's answers,
history and evidence panel hold only its own question.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from ingest.sync import ingest_paths
from rag.store import EdgeStore, open_store
from tests.conftest import REPO_ROOT

HOLDER = """
import sys, time
from rag.config import Settings
from rag.pipeline import Pipeline
pipeline = Pipeline(Settings(embed_backend="torch-fp32", rerank_backend="torch-fp32", qdrant_path=sys.argv[1], collection="conc", embed_model=sys.argv[2]))
assert pipeline.store.info() is not None
print("ready", flush=True)
sys.stdin.readline()  # hold the store until the test says so
pipeline.close()
print("closed", flush=True)
"""


def _env(settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RAG_QDRANT_PATH": settings.qdrant_path, "RAG_COLLECTION": "conc",
                "RAG_EMBED_MODEL": settings.embed_model, "RAG_RERANK_MODEL": "none",
                "RAG_LLM_PROVIDER": "extractive", "PYTHONPATH": str(REPO_ROOT)})
    env.pop("RAG_QDRANT_URL", None)
    return env


@pytest.fixture()
def filled(tmp_path, settings, embedder, evaldata):
    settings = settings.replace(collection="conc")
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(evaldata / "docs-mixed" / "files" / "fake-memo.pdf", docs)
    store = open_store(settings)
    report = ingest_paths([docs], settings, store, embedder, progress=False)
    assert report.indexed == 1
    snapshot = {i: p for i, p, _v in store.iter_payloads()}
    store.close()
    return settings, docs, snapshot


def test_second_rag_process_gets_one_line_message_and_exit_2(filled, tmp_path, embedder):
    settings, docs, snapshot = filled
    env = _env(settings)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, settings.qdrant_path, settings.embed_model],
                              cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        (docs / "new.txt").write_text("A new file the second process must not write.\n", encoding="utf-8")
        for argv in (["search", "laptops"], ["ingest", str(docs)], ["stats"]):
            proc = subprocess.run([sys.executable, "-m", "rag.cli", *argv], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
            # guards rag.store._edge_error (WouldBlock -> StoreLockedError) and cli.main's RagError -> exit 2
            assert proc.returncode == 2, (argv, proc.stderr[-2000:])
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, (argv, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert lines[0].startswith("rag: another rag process is using the store at ")
            assert str(tmp_path / "qdrant") in lines[0] and "RAG_QDRANT_URL" in lines[0]
            assert proc.stdout == ""
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=60)
    # not corrupted: the same points and payloads, and the store opens, searches and takes writes again
    store = EdgeStore(settings.qdrant_path, "conc")
    assert {i: p for i, p, _v in store.iter_payloads()} == snapshot
    again = ingest_paths([docs], settings, store, embedder, progress=False)
    assert again.indexed == 1 and again.skipped == 1  # only the new file; the old one is intact
    store.close()


def test_holder_killed_with_sigkill_leaves_a_usable_store(filled, tmp_path, embedder):
    """The first process dying with the lock held (kill -9) does not leave the store locked or damaged."""
    settings, docs, snapshot = filled
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, settings.qdrant_path, settings.embed_model],
                              cwd=tmp_path, env=_env(settings), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    store = open_store(settings)
    assert {i: p for i, p, _v in store.iter_payloads()} == snapshot
    again = ingest_paths([docs], settings, store, embedder, progress=False)
    assert again.skipped == 1 and again.indexed == 0
    store.close()


def test_an_ingest_yields_the_embedder_while_a_question_runs(tmp_path, settings, embedder, evaldata):
    """Issue 14 #11: an ingest held the pipeline lock (and the embedder, for whole 512-chunk batches) for
    its whole run, so a chat sent during a 97 s ingest answered after 95 s. Now readers never wait for
    the writer, and the ingest yields the embedder between small batches while a question runs.

    Asserted on the mechanism, not on a timing (the machine may be busy): while a search or answer is
    running, the ingest starts no embedding batch; it resumes after, completes, and questions asked
    during it find their passage."""
    import threading
    import time

    from rag.pipeline import Pipeline

    class RecordingEmbedder:
        """The real embedder, recording when each of the ingest thread's passage batches starts (the
        sentence answerer embeds passages too, on the question's thread)."""

        def __init__(self, inner) -> None:
            self._inner = inner
            self.starts: list[float] = []

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def embed_passages(self, texts, show_progress=False):
            if threading.current_thread().name == "ingest":
                self.starts.append(time.monotonic())
            return self._inner.embed_passages(texts, show_progress)

    settings = settings.replace(collection="busy", rerank_model="none", mode="hybrid")
    docs, incoming = tmp_path / "docs", tmp_path / "incoming"
    docs.mkdir()
    incoming.mkdir()
    shutil.copy(evaldata / "docs-mixed" / "files" / "fake-memo.pdf", docs)
    for name in ("norwich-city.txt", "book-war-and-peace-1p.txt"):  # a real folder: ~150 chunks
        shutil.copy(evaldata / "docs-mixed" / "files" / name, incoming)
    recording = RecordingEmbedder(embedder)
    pipeline = Pipeline(settings, embedder=recording)
    try:
        assert pipeline.ingest([docs], progress=False).indexed == 1
        recording.starts.clear()
        report: dict = {}
        ingest = threading.Thread(target=lambda: report.update(r=pipeline.ingest([incoming], progress=False)),
                                  name="ingest")
        ingest.start()
        deadline = time.monotonic() + 300
        while not recording.starts and time.monotonic() < deadline:  # the ingest is embedding
            time.sleep(0.005)
        assert recording.starts, "the ingest never embedded"
        with pipeline._readers.active():  # what every search and answer holds while it runs
            held_from = time.monotonic()
            answer = pipeline.ask("How many laptops were delivered?")  # the embedder is the question's
            time.sleep(max(0.0, 1.0 - (time.monotonic() - held_from)))
            held_to = time.monotonic()
        ingest.join(timeout=600)
        assert answer.evidence and "fake-memo.pdf" in {e.chunk.file_name for e in answer.evidence}
        assert report["r"].indexed == 2
        # At most the batch that had passed its check as the question arrived starts in the first moment.
        during = [t for t in recording.starts if held_from + 0.2 < t < held_to]
        assert during == [], f"{len(during)} ingest batches started while a question was running"
        assert any(t >= held_to for t in recording.starts), "the ingest did not resume after the question"
    finally:
        pipeline.close()
