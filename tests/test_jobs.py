"""Durable ingest jobs (ingest/jobs.py): states, per-file progress, cancel between files, crash re-queue, CLI.

The writer is driven with a recording ingest function on real files, so these run in milliseconds;
the real pipeline behind the queue is exercised by tests/test_server.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest.jobs import JobQueue, JobRunner, jobs_db_path
from rag.access import Caller, Role
from rag.errors import RagError
from tests.conftest import REPO_ROOT

EDITOR = Caller("ed", ("public",), Role.EDITOR)


@dataclass
class _Outcome:
    path: str
    status: str
    chunks: int = 1
    reason: str = ""


@dataclass
class _Report:
    files: list = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    timings_s: dict = field(default_factory=dict)


class Recorder:
    """An ingest function that records calls; can block on a file, fail a file."""

    def __init__(self, fail: str | None = None, gate: threading.Event | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, collection: str, paths: list[str], acl, caller: Caller) -> _Report:
        self.calls.append(list(paths))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if len(paths) == 1 and Path(paths[0]).is_file():
            if self.fail and paths[0].endswith(self.fail):
                raise RagError(f"{paths[0]}: cannot parse")
            return _Report(files=[_Outcome(paths[0], "indexed", 2)], chunks_added=2, timings_s={"embed": 0.01})
        return _Report()


@pytest.fixture()
def folder(tmp_path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"f{i}.txt").write_text(f"file {i}", encoding="utf-8")
    return docs


def test_job_runs_file_by_file_with_progress_and_errors(tmp_path, folder):
    queue = JobQueue(jobs_db_path(tmp_path / "state"))
    ingest = Recorder(fail="f2.txt")
    runner = JobRunner(queue, ingest, idle_poll_s=0.05)
    runner.start()
    try:
        job = queue.submit("c", [str(folder)], EDITOR, acl=["public"])
        assert job.state == "queued"
        done = queue.wait(job.id, timeout=10)
    finally:
        runner.stop()
    assert done.state == "done"
    assert done.files_total == 4 and done.files_done == 4 and done.chunks_added == 6
    assert [e["file"] for e in done.errors] == [str(folder / "f2.txt")]
    assert {f["status"] for f in done.files} == {"indexed", "failed"}
    assert done.timings_s["total"] > 0 and done.started_at and done.finished_at
    # Each file is its own sync, then one sync of the folder removes files deleted from it.
    assert ingest.calls[:4] == [[str(folder / f"f{i}.txt")] for i in range(4)]
    assert ingest.calls[4] == [str(folder.resolve())]


def test_cancel_queued_and_running_jobs(tmp_path, folder):
    queue = JobQueue(jobs_db_path(tmp_path / "state"))
    gate = threading.Event()
    ingest = Recorder(gate=gate)
    runner = JobRunner(queue, ingest, idle_poll_s=0.05)
    runner.start()
    try:
        first = queue.submit("c", [str(folder)], EDITOR)
        second = queue.submit("c", [str(folder)], EDITOR)
        assert ingest.started.wait(5)
        assert queue.cancel(second.id).state == "cancelled"  # queued: cancelled at once
        assert queue.cancel(first.id).state == "running"  # running: stops after the current file
        gate.set()
        final = queue.wait(first.id, timeout=10)
    finally:
        runner.stop()
    assert final.state == "cancelled" and final.files_done == 1 and "after 1 of 4" in final.message
    assert len(ingest.calls) == 1  # no file after the cancel, no folder cleanup
    assert queue.get(second.id).state == "cancelled"


def test_running_job_left_by_a_crash_is_requeued_and_rerun(tmp_path, folder):
    path = jobs_db_path(tmp_path / "state")
    queue = JobQueue(path)
    job = queue.submit("c", [str(folder)], EDITOR)
    claimed = queue.claim_next()  # a writer took it ... and the process died
    assert claimed is not None and claimed.state == "running"
    queue.update(job.id, files_done=2, current_file="f1.txt")
    _writer_process_died(path)

    restarted = JobQueue(path)
    ingest = Recorder()
    runner = JobRunner(restarted, ingest, idle_poll_s=0.05)
    runner.start()
    try:
        final = restarted.wait(job.id, timeout=10)
    finally:
        runner.stop()
    assert final.state == "done" and final.attempts == 2 and final.files_done == 4


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
    runner = JobRunner(queue, Recorder(), idle_poll_s=0.05)
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
