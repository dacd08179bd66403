"""Durable ingest jobs: a SQLite queue beside the store and one writer thread that runs them.

Every server-side ingest (REST, uploads, MCP, the watcher, the UI inside the server) becomes a job
row: state (queued, running, done, failed, cancelled), progress (files done of total; each file in
flight with its stage, parse / ocr / embed / write, and pages or chunks done of total: `progress`),
per-file errors and timings. One `JobRunner` thread takes queued jobs one at a time, so there is one
writer while searches and answers keep being served.

A job is one sync (ingest.sync.FolderSync) over its paths: the collection's manifest is read once and
the store optimized once, however many files. Its `JobMonitor` writes the sync's progress onto the row
(at most a few times a second) and passes a cancel on: the sync stops between files.

Crash safety comes from the sync, not from the queue: a sync is idempotent (point ids are
uuid5(path, hash, index); a file is either fully old or fully new after the next run), so a job
left `running` by a crash or a kill is simply re-queued at start-up and re-run. A cancel leaves every
file fully old or fully new (the sync writes a file's new version whole before dropping the old one).

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

from ingest.progress import FileProgress, IngestMonitor, SyncProgress
from ingest.priority import background
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
    # The running sync's progress (JobMonitor.describe): files and chunks done of total, each file in flight
    # with its stage and pages/chunks done of total. Empty until the sync starts.
    progress: dict[str, Any] = field(default_factory=dict)

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
            "files", "timings_s", "message", "cancel_requested", "attempts", "display_names", "progress"]
_JSON_COLUMNS = {"paths", "acl", "caller", "errors", "files", "timings_s", "display_names", "progress"}


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
                display_names TEXT DEFAULT '{{}}', progress TEXT DEFAULT '{{}}')""")
            # A queue written by an older version has no progress column yet.
            if "progress" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
                db.execute("ALTER TABLE jobs ADD COLUMN progress TEXT DEFAULT '{}'")
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
        values["progress"] = values.get("progress") or {}
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


# ingest(collection, paths, acl, caller, monitor=...) -> an IngestReport (ingest.sync); `monitor` follows the
# sync and cancels it (the server passes the pipeline's ingest, whose `monitor` goes to the sync).
IngestFn = Callable[..., Any]


class JobMonitor(IngestMonitor):
    """Writes one running sync's progress onto its job row and passes a cancel (or a shutdown) on to it.

    Rows are written at most every WRITE_EVERY_S, and whenever a file finishes, so a folder of many small
    files costs a few SQLite writes a second; every write also refreshes the writer's lease.
    """

    WRITE_EVERY_S = 0.3
    # The cancel flag is read on every check (a ~0.1 ms SQLite read, once per model batch or file): a
    # throttled read let a cancel asked just before the last files parsed go unseen and the job end 'done'.
    CANCEL_EVERY_S = 0.0

    def __init__(self, queue: "JobQueue", job: Job, stopping: threading.Event) -> None:
        self.queue = queue
        self.job = job
        self.stopping = stopping
        self._written_at = 0.0
        self._files_done = -1
        self._checked_at = 0.0
        self._cancel = False
        self.last: SyncProgress | None = None

    def progress(self, snapshot: SyncProgress) -> None:
        """Store the snapshot on the row (throttled)."""
        self.last = snapshot
        now = time.monotonic()
        if now - self._written_at < self.WRITE_EVERY_S and snapshot.files_done == self._files_done:
            return
        self._write(snapshot)

    def _write(self, snapshot: SyncProgress) -> None:
        self._written_at, self._files_done = time.monotonic(), snapshot.files_done
        current = snapshot.current
        self.queue.update(self.job.id, stage=current.stage if current else "indexing",
                          current_file=self._shown(current.file) if current else None,
                          files_total=snapshot.files_seen, files_done=self.files_done(snapshot),
                          progress=self.describe(snapshot))

    @staticmethod
    def files_done(snapshot: SyncProgress) -> int:
        """Files of the job that are finished: the unchanged ones and those written or failed."""
        return snapshot.files_seen - snapshot.files_total + snapshot.files_done

    def describe(self, snapshot: SyncProgress) -> dict[str, Any]:
        """The job's `progress` field: JSON, with the names the user gave to uploaded files."""
        def entry(f: FileProgress) -> dict[str, Any]:
            return {"file": self._shown(f.file), "stage": f.stage, "done": f.done, "total": f.total, "unit": f.unit}

        return {"files_done": snapshot.files_done, "files_total": snapshot.files_total,
                "chunks_done": snapshot.chunks_done, "chunks_total": snapshot.chunks_total,
                "current": entry(snapshot.current) if snapshot.current else None,
                "active": [entry(f) for f in snapshot.active]}

    def _shown(self, path: str) -> str:
        return self.job.display_names.get(path, path)

    def cancelled(self) -> bool:
        """True once the job's cancel was asked (read from the row at most every CANCEL_EVERY_S) or the
        writer is shutting down."""
        if self.stopping.is_set():
            return True
        now = time.monotonic()
        if not self._cancel and now - self._checked_at >= self.CANCEL_EVERY_S:
            self._checked_at = now
            self._cancel = self.queue.cancel_requested(self.job.id)
        return self._cancel

    def close(self, snapshot: SyncProgress) -> None:
        """The final snapshot goes to the row whatever the throttle says."""
        self.last = snapshot
        self._write(snapshot)


class JobRunner:
    """The one writer: a daemon thread running queued jobs in order.

    `ingest` syncs paths into a collection (the server passes the pipeline's ingest, which checks the
    caller's role and the ingest roots). A job is one sync of its paths with a `JobMonitor`: progress is
    per file and stage, a cancel takes effect between files, and files that disappeared from the job's
    folders are removed by the same sync.
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
                with background():  # ingest.priority: a job's heavy work yields the CPU to searches
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
        q = self.queue
        try:
            files, _roots = discover_files(job.paths, self.follow_symlinks)
        except (RagError, OSError) as exc:
            q.update(job.id, state="failed", stage="failed", finished_at=_now(), message=str(exc),
                     errors=[{"file": "", "reason": str(exc)}])
            return
        q.update(job.id, files_total=len(files), files_done=0, stage="starting", errors=[], files=[],
                 chunks_added=0, chunks_removed=0, progress={})
        monitor = JobMonitor(q, job, self._stop)
        try:
            report = self.ingest(job.collection, list(job.paths), job.acl, job.caller_obj, monitor=monitor)
        except RagError as exc:
            q.update(job.id, state="failed", stage="failed", finished_at=_now(), current_file=None,
                     message=str(exc), errors=[{"file": ", ".join(job.paths), "reason": str(exc)}])
            return
        if report.cancelled and self._stop.is_set() and not q.cancel_requested(job.id):
            return  # the writer is stopping: stays running; re-queued and re-run (idempotently) at the next start
        outcomes = [{"file": job.display_names.get(o.path, o.path), "status": o.status, "chunks": o.chunks,
                     "pages": o.pages, "reason": o.reason} for o in report.files]
        errors = [{"file": o["file"], "reason": o["reason"]} for o in outcomes if o["status"] == "failed"]
        timings = {**report.timings_s, "total": round(time.perf_counter() - started, 3)}
        indexed = sum(1 for o in outcomes if o["status"] == "indexed")
        done = JobMonitor.files_done(monitor.last) if monitor.last else len(files)
        if report.cancelled:
            state, message = "cancelled", f"cancelled after {done} of {len(files)} files"
        else:
            state = "failed" if errors and not indexed and files else "done"
            done, message = len(files), f"{indexed} indexed, {len(errors)} failed of {len(files)} files"
        q.update(job.id, state=state, stage=state, finished_at=_now(), current_file=None, files_done=done,
                 chunks_added=report.chunks_added, chunks_removed=report.chunks_removed, errors=errors,
                 files=outcomes, timings_s=timings, message=message)


def describe_file_progress(entry: dict[str, Any] | None) -> str:
    """`scan.pdf: ocr 2/9 pages` for one entry of a job's `progress` ("" for none)."""
    if not entry:
        return ""
    shown = FileProgress(os.path.basename(str(entry.get("file", ""))), str(entry.get("stage", "")),
                         int(entry.get("done") or 0), entry.get("total"), str(entry.get("unit") or ""))
    return f"{shown.file}: {shown.describe()}"


def format_job_line(job: Job) -> str:
    """One human line per job for `rag jobs`."""
    progress = f"{job.files_done}/{job.files_total} files"
    if job.state == "running" and job.progress.get("current"):
        current = f" · {describe_file_progress(job.progress['current'])}"
    else:
        current = f" · {os.path.basename(job.current_file)}" if job.current_file else ""
    errors = f" · {len(job.errors)} error(s)" if job.errors else ""
    return f"{job.id}  {job.state:<9} {job.collection:<12} {progress}, +{job.chunks_added} chunks{current}{errors}  {job.created_at}"
