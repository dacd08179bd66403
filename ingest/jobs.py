"""Durable ingest jobs: a SQLite queue beside the store and one writer thread that runs them.

Every server-side ingest (REST, uploads, MCP, later the watcher and the UI) becomes a job row:
state (queued, running, done, failed, cancelled), per-file progress (current file, files done of
total, chunks added, stage), per-file errors and timings. One `JobRunner` thread takes queued jobs
one at a time, so there is one writer while searches and answers keep being served.

Crash safety comes from the sync, not from the queue: a sync is idempotent (point ids are
uuid5(path, hash, index); a file is either fully old or fully new after the next run), so a job
left `running` by a crash or a kill is simply re-queued at start-up and re-run. Cancelling stops
between files; each file is indexed by one complete sync call, so no file is left half-indexed.

The queue is a plain SQLite file, so `rag jobs` (the CLI) reads and cancels the same jobs without
talking to the server; several server processes sharing the state dir claim jobs with an atomic
UPDATE, so two never run the same job.

This module imports only the core (`rag.*` below the pipeline) and `ingest.sync`; the caller of
`JobRunner` supplies the function that actually ingests (the pipeline's, in the server).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rag.access import Caller, Role
from rag.errors import RagError

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
# A writer's hold on a collection lapses when its heartbeat (refreshed by every progress update) is this old;
# a holder on this machine whose process is gone loses it at once.
LEASE_S = 600.0


def jobs_db_path(state_dir: str | Path) -> Path:
    """`<state_dir>/jobs.sqlite`: beside the store, where the CLI and every replica find it."""
    return Path(state_dir).expanduser() / "jobs.sqlite"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Job:
    """One ingest job as stored (and as returned by the API and `rag jobs --json`)."""

    id: str
    collection: str
    state: str
    paths: list[str]
    acl: list[str] | None
    caller: dict[str, Any]
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    stage: str = "queued"
    current_file: str | None = None
    files_total: int = 0
    files_done: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    message: str = ""
    cancel_requested: bool = False
    attempts: int = 0
    display_names: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        # Uploaded files are stored under unique names; show the name the user gave.
        data["caller"] = {"name": self.caller.get("name")}
        return data

    @property
    def caller_obj(self) -> Caller:
        return Caller(name=self.caller.get("name", "local"), labels=tuple(self.caller.get("labels", ())),
                      role=Role.parse(self.caller.get("role", "reader")))


_COLUMNS = ["id", "collection", "state", "paths", "acl", "caller", "created_at", "started_at", "finished_at",
            "stage", "current_file", "files_total", "files_done", "chunks_added", "chunks_removed", "errors",
            "files", "timings_s", "message", "cancel_requested", "attempts", "display_names"]
_JSON_COLUMNS = {"paths", "acl", "caller", "errors", "files", "timings_s", "display_names"}


class JobQueue:
    """The persistent queue. Every method is one short SQLite transaction, safe across threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.changed = threading.Condition()
        with self._connect() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, collection TEXT NOT NULL, state TEXT NOT NULL, paths TEXT NOT NULL,
                acl TEXT, caller TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
                stage TEXT NOT NULL DEFAULT 'queued', current_file TEXT, files_total INTEGER DEFAULT 0,
                files_done INTEGER DEFAULT 0, chunks_added INTEGER DEFAULT 0, chunks_removed INTEGER DEFAULT 0,
                errors TEXT DEFAULT '[]', files TEXT DEFAULT '[]', timings_s TEXT DEFAULT '{{}}',
                message TEXT DEFAULT '', cancel_requested INTEGER DEFAULT 0, attempts INTEGER DEFAULT 0,
                display_names TEXT DEFAULT '{{}}')""")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at)")
            # One writer per collection across every process that shares this database (server replicas over
            # one state_dir): two replicas never index into the same collection, so never the same file, at once.
            db.execute("CREATE TABLE IF NOT EXISTS writer_lease (collection TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                       "job_id TEXT NOT NULL, heartbeat REAL NOT NULL)")
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @staticmethod
    def _row(row: tuple) -> Job:
        values = {}
        for name, value in zip(_COLUMNS, row):
            if name in _JSON_COLUMNS:
                value = json.loads(value) if value is not None else None
            values[name] = value
        values["cancel_requested"] = bool(values["cancel_requested"])
        return Job(**values)

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -- producers ----------------------------------------------------------------------------
    def submit(self, collection: str, paths: list[str], caller: Caller, acl: list[str] | None = None,
               display_names: dict[str, str] | None = None) -> Job:
        """Queue an ingest of `paths` (already checked by the caller) and return the job."""
        job = Job(id=uuid.uuid4().hex[:12], collection=collection, state="queued", paths=[str(p) for p in paths],
                  acl=list(acl) if acl is not None else None,
                  caller={"name": caller.name, "labels": list(caller.labels), "role": caller.role.value},
                  created_at=_now(), display_names=display_names or {})
        with self._connect() as db:
            db.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       [json.dumps(getattr(job, c)) if c in _JSON_COLUMNS else getattr(job, c) for c in _COLUMNS])
        self._notify()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row(row) if row else None

    def list(self, limit: int = 100, collection: str | None = None) -> list[Job]:
        """Most recent jobs first."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        args: list[Any] = []
        if collection:
            query += " WHERE collection = ?"
            args.append(collection)
        query += " ORDER BY created_at DESC LIMIT ?"
        args.append(int(limit))
        with self._connect() as db:
            return [self._row(r) for r in db.execute(query, args).fetchall()]

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or ask a running one to stop after its current file."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                raise KeyError(job_id)
            if row[0] == "queued":
                db.execute("UPDATE jobs SET state='cancelled', stage='cancelled', finished_at=?, "
                           "cancel_requested=1, message='cancelled before it started' WHERE id=?", (_now(), job_id))
            elif row[0] == "running":
                db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            db.execute("COMMIT")
        self._notify()
        job = self.get(job_id)
        assert job is not None
        return job

    # -- the writer ---------------------------------------------------------------------------
    def _lease_live(self, owner: str, heartbeat: float) -> bool:
        """True while another writer's lease holds: fresh heartbeat, and (on this host) a living process."""
        if owner == self.owner:
            return True
        host, _, rest = owner.partition(":")
        if host == socket.gethostname():
            try:
                os.kill(int(rest.split(":", 1)[0]), 0)
            except (ValueError, ProcessLookupError):
                return False
            except PermissionError:
                pass
        return time.time() - heartbeat < LEASE_S

    def requeue_interrupted(self) -> int:
        """Jobs left `running` by a crash go back to `queued` (re-running the sync resumes them).

        A job another live writer is running (a server replica sharing this database) is left alone.
        """
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            live = {job_id for _c, owner, job_id, beat in db.execute("SELECT * FROM writer_lease")
                    if owner != self.owner and self._lease_live(owner, beat)}
            running = [row[0] for row in db.execute("SELECT id FROM jobs WHERE state='running'")]
            stale = [job_id for job_id in running if job_id not in live]
            for job_id in stale:
                db.execute("UPDATE jobs SET state='queued', stage='queued', "
                           "message='re-queued after an interrupted run' WHERE id=?", (job_id,))
                db.execute("DELETE FROM writer_lease WHERE job_id=?", (job_id,))
            db.execute("COMMIT")
        return len(stale)

    def release_leases(self) -> None:
        """Give up this writer's leases (on shutdown): its unfinished job is re-queued by the next start."""
        with self._connect() as db:
            db.execute("DELETE FROM writer_lease WHERE owner = ?", (self.owner,))

    def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job whose collection no other live writer holds to running."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            held = {coll for coll, owner, _job, beat in db.execute("SELECT * FROM writer_lease")
                    if owner != self.owner and self._lease_live(owner, beat)}
            row = None
            for job_id, collection in db.execute("SELECT id, collection FROM jobs WHERE state='queued' "
                                                 "ORDER BY created_at"):
                if collection not in held:
                    row = (job_id, collection)
                    break
            if row is None:
                db.execute("ROLLBACK")
                return None
            db.execute("UPDATE jobs SET state='running', stage='starting', started_at=?, attempts=attempts+1 "
                       "WHERE id=?", (_now(), row[0]))
            db.execute("INSERT OR REPLACE INTO writer_lease VALUES (?, ?, ?, ?)", (row[1], self.owner, row[0], time.time()))
            db.execute("COMMIT")
        return self.get(row[0])

    def update(self, job_id: str, **values: Any) -> None:
        """Write progress fields of a job."""
        if not values:
            return
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in values)
        args = [json.dumps(v) if k in _JSON_COLUMNS else v for k, v in values.items()]
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*args, job_id])
            if values.get("state") in FINAL_STATES:
                db.execute("DELETE FROM writer_lease WHERE job_id = ?", (job_id,))
            else:  # progress is the heartbeat of this writer's lease
                db.execute("UPDATE writer_lease SET heartbeat = ? WHERE job_id = ? AND owner = ?",
                           (time.time(), job_id, self.owner))
        self._notify()

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def wait(self, job_id: str, timeout: float = 60.0, poll_s: float = 0.05) -> Job:
        """Block until the job reaches a final state (for tests and synchronous callers)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job.state in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout:.0f} s")
            with self.changed:
                self.changed.wait(poll_s)


# ingest(collection, paths, acl, caller) -> an IngestReport-like object (see ingest.sync.IngestReport)
IngestFn = Callable[[str, list[str], "list[str] | None", Caller], Any]


class JobRunner:
    """The one writer: a daemon thread running queued jobs in order, file by file.

    `ingest` syncs paths into a collection (the server passes the pipeline's ingest, which checks
    the caller's role and the ingest roots). Each file is its own sync, so progress is per file and
    cancel takes effect between files; a last sync over the job's folders removes files that
    disappeared from them (all unchanged files are skipped by hash, so it is cheap).
    """

    def __init__(self, queue: JobQueue, ingest: IngestFn, idle_poll_s: float = 1.0,
                 follow_symlinks: bool = False) -> None:
        self.queue = queue
        self.ingest = ingest
        self.idle_poll_s = idle_poll_s
        self.follow_symlinks = follow_symlinks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current_job: str | None = None

    def start(self) -> None:
        requeued = self.queue.requeue_interrupted()
        if requeued:
            log.warning("re-queued %d ingest job(s) interrupted by a previous shutdown or crash", requeued)
        self._thread = threading.Thread(target=self._loop, name="rag-ingest-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current file; an unfinished job stays `running` and is re-queued at next start."""
        self._stop.set()
        self.queue._notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.alive:
            self.queue.release_leases()

    @property
    def alive(self) -> bool:
        """True while the writer thread runs (after `stop`, until its current file is done)."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.claim_next()
            except sqlite3.Error as exc:  # a locked or busy database must not kill the writer
                log.warning("job queue unavailable: %s", exc)
                job = None
            if job is None:
                with self.queue.changed:
                    self.queue.changed.wait(self.idle_poll_s)
                continue
            self.current_job = job.id
            try:
                self.run_job(job)
            except Exception:  # noqa: BLE001  (a bug in one job must not stop the writer)
                log.exception("ingest job %s failed unexpectedly", job.id)
                self.queue.update(job.id, state="failed", stage="failed", finished_at=_now(),
                                  message="internal error; see the server log")
            finally:
                self.current_job = None

    def run_job(self, job: Job) -> None:
        """Run one claimed job to a final state (or leave it `running` if the runner is stopping)."""
        from ingest.sync import discover_files  # ingest.sync pulls in the parsers; only the writer needs it

        started = time.perf_counter()
        caller = job.caller_obj
        q = self.queue
        try:
            files, roots = discover_files(job.paths, self.follow_symlinks)
        except (RagError, OSError) as exc:
            q.update(job.id, state="failed", stage="failed", finished_at=_now(), message=str(exc),
                     errors=[{"file": "", "reason": str(exc)}])
            return
        q.update(job.id, files_total=len(files), files_done=0, stage="indexing", errors=[], files=[],
                 chunks_added=0, chunks_removed=0)
        errors: list[dict[str, str]] = []
        outcomes: list[dict[str, Any]] = []
        added = removed = 0
        timings: dict[str, float] = {}

        def absorb(report: Any) -> None:
            nonlocal added, removed
            added += report.chunks_added
            removed += report.chunks_removed
            for name, seconds in (report.timings_s or {}).items():
                timings[name] = round(timings.get(name, 0.0) + seconds, 3)
            for outcome in report.files:
                entry = {"file": job.display_names.get(outcome.path, outcome.path), "status": outcome.status,
                         "chunks": outcome.chunks, "reason": outcome.reason}
                outcomes.append(entry)
                if outcome.status == "failed":
                    errors.append({"file": entry["file"], "reason": outcome.reason})

        for done, path in enumerate(files):
            if q.cancel_requested(job.id):
                q.update(job.id, state="cancelled", stage="cancelled", finished_at=_now(), current_file=None,
                         message=f"cancelled after {done} of {len(files)} files", errors=errors, files=outcomes)
                return
            if self._stop.is_set():
                return  # stays running; re-queued and re-run (idempotently) at the next start
            shown = job.display_names.get(str(path), str(path))
            q.update(job.id, current_file=shown, files_done=done, stage="indexing")
            try:
                report = self.ingest(job.collection, [str(path)], job.acl, caller)
            except RagError as exc:
                errors.append({"file": shown, "reason": str(exc)})
                outcomes.append({"file": shown, "status": "failed", "chunks": 0, "reason": str(exc)})
            else:
                absorb(report)
            q.update(job.id, files_done=done + 1, chunks_added=added, chunks_removed=removed, errors=errors,
                     files=outcomes)

        folders = [str(root) for root in roots if root.is_dir()]
        if folders and not q.cancel_requested(job.id):
            # Files deleted from a synced folder lose their chunks (everything else is skipped by hash).
            q.update(job.id, stage="removing deleted files", current_file=None)
            try:
                report = self.ingest(job.collection, folders, job.acl, caller)
                added += report.chunks_added
                removed += report.chunks_removed
                outcomes.extend({"file": o.path, "status": o.status, "chunks": o.chunks, "reason": o.reason}
                                for o in report.files if o.status == "removed")
            except RagError as exc:
                errors.append({"file": ", ".join(folders), "reason": str(exc)})
        timings["total"] = round(time.perf_counter() - started, 3)
        indexed = sum(1 for o in outcomes if o["status"] == "indexed")
        state = "failed" if errors and not indexed and files else "done"
        q.update(job.id, state=state, stage=state, finished_at=_now(), current_file=None, files_done=len(files),
                 chunks_added=added, chunks_removed=removed, errors=errors, files=outcomes, timings_s=timings,
                 message=f"{indexed} indexed, {len(errors)} failed of {len(files)} files")


def format_job_line(job: Job) -> str:
    """One human line per job for `rag jobs`."""
    progress = f"{job.files_done}/{job.files_total} files"
    current = f" · {os.path.basename(job.current_file)}" if job.current_file else ""
    errors = f" · {len(job.errors)} error(s)" if job.errors else ""
    return f"{job.id}  {job.state:<9} {job.collection:<12} {progress}, +{job.chunks_added} chunks{current}{errors}  {job.created_at}"
