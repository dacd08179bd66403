"""Durable ingest jobs (ingest/jobs.py): one sync per job with per-file progress, cancel between files,
crash re-queue, CLI.

The writer runs the real sync (MiniLM, Qdrant Edge) over small text files; the queue-only behaviours
(claiming, leases, the CLI) need no model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import ingest.sync
from ingest.jobs import JobQueue, JobRunner, format_job_line, jobs_db_path
from ingest.progress import IngestMonitor, SyncProgress
from ingest.sync import ingest_paths, read_manifest
from rag.access import Caller, Role
from rag.errors import RagError
from rag.store import open_store
from tests.conftest import REPO_ROOT

EDITOR = Caller("ed", ("public",), Role.EDITOR)
TOPICS = ["alpine glaciers", "coral reefs", "desert dunes", "river deltas"]


def _write(folder: Path, version: int = 1) -> None:
    for i, topic in enumerate(TOPICS):
        body = "\n\n".join(f"Version {version} of the notes on {topic}, part {k}: the survey of {topic} counted "
                            f"{k * 7 + version} sites and measured erosion, temperature and sediment." for k in range(6))
        (folder / f"f{i}.txt").write_text(body + "\n", encoding="utf-8")


@pytest.fixture()
def folder(tmp_path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    _write(docs)
    return docs


class Writer:
    """The server's ingest function over a real store (what ServerState.run_ingest does, minus access checks),
    recording calls and, through `watch`, what the monitor saw and what the job row said meanwhile."""

    def __init__(self, settings: Any, embedder: Any, queue: JobQueue | None = None) -> None:
        # In-process, as `ingest_priority = "normal"` runs jobs: the sync's own threads, which these tests
        # watch and gate (the low-priority worker process of "background" is tested in its own module).
        self.settings = settings.replace(ingest_priority="normal")
        self.store = open_store(settings)
        self.embedder = embedder
        self.queue = queue
        self.calls: list[list[str]] = []
        self.snapshots: list[SyncProgress] = []
        self.rows: list[dict[str, Any]] = []
        self.cancel_seen = threading.Event()

    def __call__(self, collection: str, paths: list[str], acl, caller: Caller, monitor: IngestMonitor) -> Any:
        self.calls.append(list(paths))
        writer = self

        class Watch(IngestMonitor):
            def progress(self, snapshot: SyncProgress) -> None:
                monitor.progress(snapshot)
                writer.snapshots.append(snapshot)
                if writer.queue is not None and monitor.job is not None:
                    job = writer.queue.get(monitor.job.id)
                    writer.rows.append({**job.to_dict(), "line": format_job_line(job)})

            def cancelled(self) -> bool:
                if monitor.cancelled():
                    writer.cancel_seen.set()
                    return True
                return False

            def close(self, snapshot: SyncProgress) -> None:
                monitor.close(snapshot)

        return ingest_paths(paths, self.settings, self.store, self.embedder, acl=acl, progress=False, monitor=Watch())


def test_a_job_is_one_sync_with_per_file_stage_progress_and_errors(tmp_path, folder, settings, embedder,
                                                                   monkeypatch):
    (folder / "empty.txt").write_text("", encoding="utf-8")
    queue = JobQueue(jobs_db_path(tmp_path / "state"))
    writer = Writer(settings, embedder, queue)
    manifests, optimizes = [], []
    real_manifest, real_optimize = ingest.sync.read_manifest, writer.store.optimize
    monkeypatch.setattr(ingest.sync, "read_manifest", lambda store: manifests.append(1) or real_manifest(store))
    monkeypatch.setattr(writer.store, "optimize", lambda: optimizes.append(1) or real_optimize())
    runner = JobRunner(queue, writer, idle_poll_s=0.05)
    runner.start()
    try:
        job = queue.submit("c", [str(folder)], EDITOR, acl=["public"])
        assert job.state == "queued"
        done = queue.wait(job.id, timeout=120)
    finally:
        runner.stop()
    assert done.state == "done", done.message
    assert done.files_total == 5 and done.files_done == 5 and done.chunks_added == writer.store.count() > 0
    assert [e["file"] for e in done.errors] == [str(folder / "empty.txt")] and "empty" in done.errors[0]["reason"]
    assert {f["status"] for f in done.files} == {"indexed", "failed"}
    assert done.timings_s["total"] > 0 and done.timings_s["embed"] > 0 and done.started_at and done.finished_at
    # One sync for the whole job: the manifest read once, the store optimized once (not once per file).
    assert writer.calls == [[str(folder)]] and len(manifests) == 1 and len(optimizes) == 1
    # The sync reported each file's stage and its chunks done of total, and the job row (the API's and
    # `rag jobs`'s view) carried them while it ran.
    writing = [s.current for s in writer.snapshots if s.current and s.current.stage in ("embed", "write")]
    assert writing and all(c.unit == "chunk" and 0 <= c.done <= c.total for c in writing)
    assert any(c.stage == "write" and c.done == c.total > 0 for c in writing)
    chunks_done = [s.chunks_done for s in writer.snapshots]
    assert chunks_done == sorted(chunks_done) and chunks_done[-1] == done.chunks_added
    running = [r for r in writer.rows if r["state"] == "running" and (r["progress"] or {}).get("current")]
    assert running, "the job row never showed a file in flight"
    shown = running[-1]
    assert shown["stage"] in ("parse", "parsed", "embed", "write") and shown["current_file"].startswith(str(folder))
    assert shown["progress"]["current"]["stage"] == shown["stage"] and f"{Path(shown['current_file']).name}: " in shown["line"]
    assert done.progress["files_done"] == done.progress["files_total"] == 5 and done.progress["active"] == []
    assert json.loads(json.dumps(done.to_dict()))["progress"]["chunks_done"] == done.chunks_added


def test_cancel_leaves_every_file_fully_old_or_fully_new(tmp_path, folder, settings, embedder, monkeypatch):
    """Cancel while the third file is being parsed: the two written files are new, the other two old."""
    writer = Writer(settings, embedder)
    ingest_paths([folder], settings, writer.store, embedder, progress=False)
    old = {path: entry.complete_hash() for path, entry in read_manifest(writer.store).items()}
    _write(folder, version=2)
    gate, reached = threading.Event(), threading.Event()
    real_parse = ingest.sync.parse_file

    def parse_file(path, settings):  # the third file's parse waits until the test lets it go
        if Path(path).name == "f2.txt":
            reached.set()
            assert gate.wait(60)
        return real_parse(path, settings)

    monkeypatch.setattr(ingest.sync, "parse_file", parse_file)
    queue = JobQueue(jobs_db_path(tmp_path / "state"))
    runner = JobRunner(queue, writer, idle_poll_s=0.05)
    runner.start()
    try:
        first = queue.submit("c", [str(folder)], EDITOR)
        second = queue.submit("c", [str(folder)], EDITOR)
        assert reached.wait(60)
        assert queue.cancel(second.id).state == "cancelled"  # queued: cancelled at once
        _wait_for(lambda: queue.get(first.id).files_done == 2)  # f0 and f1 written meanwhile
        assert queue.cancel(first.id).state == "running"  # running: stops after the files written so far
        assert writer.cancel_seen.wait(10)  # the sync saw it while waiting for the parse
        gate.set()
        final = queue.wait(first.id, timeout=60)
    finally:
        gate.set()
        runner.stop()
    assert final.state == "cancelled" and final.files_done == 2 and "after 2 of 4" in final.message
    assert queue.get(second.id).state == "cancelled" and len(writer.calls) == 1
    now = read_manifest(writer.store)
    for path, entry in now.items():  # exactly one complete version of every file ...
        assert entry.complete_hash() is not None, path
    new = {p for p in now if now[p].complete_hash() != old[p]}
    assert {Path(p).name for p in new} == {"f0.txt", "f1.txt"}  # ... new where written, old elsewhere


def _wait_for(condition, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_running_job_left_by_a_crash_is_requeued_and_rerun(tmp_path, folder, settings, embedder):
    path = jobs_db_path(tmp_path / "state")
    queue = JobQueue(path)
    job = queue.submit("c", [str(folder)], EDITOR)
    claimed = queue.claim_next()  # a writer took it ... and the process died
    assert claimed is not None and claimed.state == "running"
    queue.update(job.id, files_done=2, current_file="f1.txt")
    _writer_process_died(path)

    restarted = JobQueue(path)
    writer = Writer(settings, embedder)
    runner = JobRunner(restarted, writer, idle_poll_s=0.05)
    runner.start()
    try:
        final = restarted.wait(job.id, timeout=120)
    finally:
        runner.stop()
    assert final.state == "done" and final.attempts == 2 and final.files_done == 4
    assert sum(f["status"] == "indexed" for f in final.files) == 4


def _writer_process_died(path: Path) -> None:
    """Make the lease holder a process of this host that has exited (as after a kill -9)."""
    import socket
    import sqlite3

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE writer_lease SET owner = ?", (f"{socket.gethostname()}:{dead.pid}:gone",))


def test_replicas_sharing_a_queue_never_write_one_collection_at_once(tmp_path):
    """Two server replicas over one state_dir: one writer per collection; another collection proceeds;
    a live replica's running job is not re-queued by the other; a dead replica's job is taken over."""
    path = jobs_db_path(tmp_path / "state")
    replica_a, replica_b = JobQueue(path), JobQueue(path)
    first = replica_a.submit("docs", ["/x/a.txt"], EDITOR)
    second = replica_b.submit("docs", ["/x/b.txt"], EDITOR)
    other = replica_b.submit("mail", ["/x/c.eml"], EDITOR)

    assert replica_a.claim_next().id == first.id
    # B may not write into "docs" while A does, but may take the job of another collection.
    assert replica_b.claim_next().id == other.id
    assert replica_b.claim_next() is None
    # A third process starting up re-queues nothing that a live writer is running.
    assert JobQueue(path).requeue_interrupted() == 0
    assert replica_a.get(first.id).state == "running" and replica_b.get(other.id).state == "running"
    # A finishes: "docs" is free again for B.
    replica_a.update(first.id, state="done", stage="done")
    assert replica_b.claim_next().id == second.id
    # B dies mid-job: a restart takes the job over.
    _writer_process_died(path)
    restarted = JobQueue(path)
    assert restarted.requeue_interrupted() == 2
    assert {restarted.claim_next().id, restarted.claim_next().id} == {second.id, other.id}


def test_a_job_over_missing_paths_fails_with_a_reason(tmp_path):
    queue = JobQueue(jobs_db_path(tmp_path / "state"))

    def never(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("nothing to ingest")

    runner = JobRunner(queue, never, idle_poll_s=0.05)
    runner.start()
    try:
        job = queue.submit("c", [str(tmp_path / "gone")], EDITOR)
        final = queue.wait(job.id, timeout=10)
    finally:
        runner.stop()
    assert final.state == "failed" and "no such file" in final.message


def test_two_writers_never_claim_the_same_job(tmp_path):
    path = jobs_db_path(tmp_path / "state")
    queue = JobQueue(path)
    ids = {queue.submit("c", ["/x"], EDITOR).id for _ in range(20)}
    claimed: list[str] = []
    lock = threading.Lock()

    def writer() -> None:
        q = JobQueue(path)
        while (job := q.claim_next()) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


def test_rag_jobs_cli_lists_and_cancels_from_the_same_sqlite(tmp_path):
    state = tmp_path / "state"
    queue = JobQueue(jobs_db_path(state))
    job = queue.submit("c", ["/data/a"], EDITOR)
    env_args = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120,
                "env": {**__import__("os").environ, "RAG_STATE_DIR": str(state), "PYTHONPATH": str(REPO_ROOT)}}
    listed = subprocess.run([sys.executable, "-m", "rag.cli", "jobs", "--json"], **env_args)
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [job.id]
    cancelled = subprocess.run([sys.executable, "-m", "rag.cli", "jobs", "cancel", job.id, "--json"], **env_args)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    assert queue.get(job.id).state == "cancelled"
    missing = subprocess.run([sys.executable, "-m", "rag.cli", "jobs", "cancel", "nope"], **env_args)
    assert missing.returncode == 2 and "no job" in missing.stderr


def test_keys_are_stored_hashed_and_revocable(tmp_path):
    from rag.server.keys import KeyStore, keys_db_path

    store = KeyStore(keys_db_path(tmp_path))
    key = store.create("alice", ["public", "team"], "editor")
    caller = store.authenticate(key)
    assert caller == Caller("alice", ("public", "team"), Role.EDITOR)
    raw = keys_db_path(tmp_path).read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("server.sqlite-*"))
    assert key.encode() not in raw and key.split("_", 2)[2].encode() not in raw
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate("not-a-key") is None
    from rag.secrets import redact

    assert key not in redact(f"request failed for {key}")  # a key that reaches a log line is masked
    with pytest.raises(RagError):
        store.create("alice", ["public"], "reader")  # active name taken
    store.revoke("alice")
    assert store.authenticate(key) is None and not store.any_active()
    assert [k.to_dict()["active"] for k in store.list()] == [False]
    with pytest.raises(RagError):
        store.create("bob", [], "reader")  # labels required
