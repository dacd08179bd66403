"""Watched folders: turn file-system events into coalesced, debounced sync requests.

`FolderWatcher` watches folders with `watchfiles` (inotify and friends, or polling for network file
systems where change notifications never arrive) and calls `on_sync(folder, changed, deleted)` once per
folder per burst of changes:

- coalescing: a request fires when no event has arrived for `quiet_ms`, or `max_delay_ms` after the
  first event of a burst that never goes quiet, so a `git checkout` touching 1,000 files is one sync;
- stability: a file fires only once its size and mtime were unchanged across two checks at least
  `stable_ms` apart (a file still being written waits; a long download does not hold back the rest);
- hidden files and folders and editor/download temp files are ignored (`ingest.ignore.is_ignored`, the
  rule the full sync applies too);
- a vanished folder (an unmounted share, a deleted folder) is logged and retried, never synced: an
  unmount must not empty the index. When it comes back, a full sync catches up.

The sync itself lives elsewhere and is idempotent (ingest.sync: unchanged files are skipped by hash,
vanished ones removed), so the watcher only has to say *where* to look, never to be exactly right:
`reconcile()` asks for a full sync of every folder at start-up, which catches whatever changed while
nothing was watching, and a failed request is retried as a full sync after a back-off.

Two ready-made callbacks: `PipelineSync` runs the sync in-process through an ingest function
(`rag ingest --watch`), `JobSync` submits one job per request to the durable queue (`rag serve --watch`).

This module imports only the core library, `ingest.ignore` and `ingest.jobs`; the caller supplies the ingest
function.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from ingest.ignore import is_ignored  # re-exported: one rule with the full sync
from rag.access import Caller

log = logging.getLogger(__name__)

__all__ = ["WatchedFolder", "FolderWatcher", "PipelineSync", "JobSync", "SyncCallback", "is_ignored",
           "sync_paths", "filesystem_type", "needs_polling", "watched_folders", "NETWORK_FILESYSTEMS"]

# on_sync(folder, changed, deleted) -> anything (an IngestReport, a Job, ...); its result is shown by status().
SyncCallback = Callable[[Path, "set[Path]", "set[Path]"], Any]

# Change notifications (inotify) do not see changes made by other machines on these file systems.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "fuse.sshfs", "sshfs", "9p", "drvfs", "fuse.rclone",
    "davfs", "fuse.davfs2", "fuse.s3fs", "afs", "ncpfs", "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs",
    "lustre", "fuse.gcsfuse",
})

def filesystem_type(path: str | os.PathLike[str], mounts_file: str = "/proc/mounts") -> str | None:
    """The type of the file system holding `path` (longest matching mount point in /proc/mounts), or None."""
    target = os.path.realpath(path)
    best, best_type = "", None
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 3:
                    continue
                # /proc/mounts escapes spaces and tabs in mount points as octal (\040).
                point = fields[1].encode().decode("unicode_escape")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, best_type = point, fields[2]
    except OSError:
        return None
    return best_type


def needs_polling(path: str | os.PathLike[str]) -> bool:
    """True when `path` lives on a network file system, where change notifications miss remote writes."""
    fs_type = filesystem_type(path)
    return fs_type is not None and fs_type.lower() in NETWORK_FILESYSTEMS


@dataclass
class WatchedFolder:
    """One folder to keep in sync: the labels its chunks get (None = the default labels) and how to watch it.

    `polling`: None = automatic (polling on network file systems), True/False forces it.
    """

    path: Path
    acl: list[str] | None = None
    polling: bool | None = None

    def __post_init__(self) -> None:
        # Resolved once, because the store keys files by their resolved path (ingest.sync.discover_files).
        self.path = Path(self.path).expanduser().resolve()
        self.acl = list(self.acl) if self.acl is not None else None

    @classmethod
    def from_setting(cls, entry: dict[str, Any] | str) -> "WatchedFolder":
        """From one entry of the `watch` setting: `{path=..., acl=[...], polling=true}` or a bare path."""
        if isinstance(entry, str):
            return cls(Path(entry))
        polling = entry.get("polling")
        if isinstance(polling, str):
            polling = {"auto": None, "true": True, "false": False}.get(polling.lower())
        return cls(Path(entry["path"]), entry.get("acl"), polling)


def watched_folders(entries: Iterable[dict[str, Any] | str]) -> list[WatchedFolder]:
    """WatchedFolders from the `watch` setting (a folder listed twice is watched once, the first entry wins)."""
    found: dict[Path, WatchedFolder] = {}
    for entry in entries:
        folder = WatchedFolder.from_setting(entry)
        found.setdefault(folder.path, folder)
    return list(found.values())


def sync_paths(folder: Path, changed: set[Path], deleted: set[Path]) -> list[Path]:
    """The fewest paths whose sync covers one request: changed files/folders, and for each deleted path its
    nearest existing parent folder (the sync removes files gone from the folders it is given).

    A path covered by another one in the list is dropped; the folder itself covers everything.
    """
    targets: set[Path] = set()
    for path in changed:
        if path.exists():
            targets.add(path)
    for path in deleted:
        parent = path.parent
        while parent != folder and folder in parent.parents and not parent.is_dir():
            parent = parent.parent
        targets.add(parent if parent.is_dir() and (parent == folder or folder in parent.parents) else folder)
    kept: list[Path] = []
    for path in sorted(targets, key=lambda p: len(p.parts)):
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds") if ts else None


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


@dataclass
class _Pending:
    """What the watcher knows about one changed path until it is handed to a sync."""

    signature: tuple[int, int] | None = None
    since: float = 0.0  # monotonic time the signature was first seen


@dataclass
class _FolderState:
    folder: WatchedFolder
    polling: bool = False
    watching: bool = False
    available: bool | None = None
    identity: tuple[int, int] | None = None
    pending: dict[Path, _Pending] = field(default_factory=dict)
    full: bool = False  # a full sync of the folder is due (reconcile, folder came back, a failed sync)
    first_event: float | None = None  # monotonic, first event of the current burst
    last_event: float | None = None
    retry_at: float = 0.0
    failures: int = 0
    requests: int = 0
    last_event_at: float | None = None  # wall clock, for status()
    last_request_at: float | None = None
    last_sync_at: float | None = None
    last_result: Any = None
    last_error: str | None = None
    in_flight: bool = False


class FolderWatcher:
    """Watches folders and delivers coalesced sync requests to `on_sync`, one at a time, from one thread.

    Threads: one watch thread per folder (only collects events) and one dispatch thread that decides
    when a burst is over and calls `on_sync` — so syncs never overlap, and events keep being collected
    while a sync runs (they become the next request).
    """

    def __init__(self, folders: Iterable[WatchedFolder], on_sync: SyncCallback, quiet_ms: int = 500,
                 max_delay_ms: int = 5000, stable_ms: int = 300, force_polling: bool | None = None,
                 poll_delay_ms: int = 300, retry_s: float = 2.0,
                 describe: Callable[[Any], dict[str, Any] | None] | None = None) -> None:
        """`force_polling` applies to every folder that does not set its own (None = auto per file system).

        `describe` turns the last value `on_sync` returned into the `last_result` dict of `status()`
        (default: the callback's own `describe` method if it has one, like JobSync; else the counts of an
        IngestReport, or a dict as is).
        """
        self.on_sync = on_sync
        self.quiet_s = quiet_ms / 1000
        self.max_delay_s = max_delay_ms / 1000
        self.stable_s = stable_ms / 1000
        self.force_polling = force_polling
        self.poll_delay_ms = poll_delay_ms
        self.retry_s = retry_s
        self.describe = describe or getattr(on_sync, "describe", None) or describe_result
        self._states = {f.path: _FolderState(f) for f in folders}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def folders(self) -> list[WatchedFolder]:
        return [s.folder for s in self._states.values()]

    def folder(self, path: str | os.PathLike[str]) -> WatchedFolder | None:
        """The watched folder at `path` (resolved), or None."""
        state = self._states.get(Path(path).expanduser().resolve())
        return state.folder if state else None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching (returns at once; events are collected from now on)."""
        if self._threads:
            return
        self._stop.clear()
        # watchfiles logs every batch ("300 changes detected") at INFO; our own line per sync says it better.
        logging.getLogger("watchfiles").setLevel(max(logging.WARNING, logging.getLogger("watchfiles").level))
        for state in self._states.values():
            thread = threading.Thread(target=self._watch_loop, args=(state,), daemon=True,
                                      name=f"rag-watch:{state.folder.path.name}")
            thread.start()
            self._threads.append(thread)
        dispatcher = threading.Thread(target=self._dispatch_loop, name="rag-watch-dispatch", daemon=True)
        dispatcher.start()
        self._threads.append(dispatcher)
        names = ", ".join(f"{s.folder.path}" for s in self._states.values())
        log.info("watching %d folder(s): %s", len(self._states), names)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop watching; a sync in progress is let finish (up to `timeout`), pending changes are dropped
        (the next start's `reconcile()` finds them).

        Returns False when a sync was still running after `timeout`: then do not close the store under it
        (the sync is crash-safe, so leaving it to process exit is fine).
        """
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("watcher threads still busy after %.0f s: %s", timeout, ", ".join(alive))
        self._threads = []
        return not alive

    def __enter__(self) -> "FolderWatcher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reconcile(self) -> None:
        """Ask for a full sync of every watched folder now (start-up: catches changes made while not watching)."""
        now = time.monotonic()
        with self._wake:
            for state in self._states.values():
                state.full = True
                state.first_event = state.first_event or now
                state.last_event = now - self.quiet_s  # no reason to wait for quiet: fire at once
                state.retry_at = 0.0
            self._wake.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is pending or syncing (True), or `timeout` passed (False). For tests and tools."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = any(s.pending or s.full or s.in_flight for s in self._states.values())
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    # -- status ------------------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Per folder: path, labels, how it is watched, pending changes, syncs requested, last sync and result."""
        with self._lock:
            rows = [(s, dict(path=str(s.folder.path), acl=s.folder.acl, polling=s.polling, watching=s.watching,
                             available=bool(s.available), pending_changes=len(s.pending), full_sync_due=s.full,
                             syncing=s.in_flight, syncs=s.requests, last_event_at=_iso(s.last_event_at),
                             last_request_at=_iso(s.last_request_at), last_sync_at=_iso(s.last_sync_at),
                             last_error=s.last_error)) for s in self._states.values()]
        out = []
        for state, row in rows:
            try:  # outside the lock: describing a job reads the job queue
                row["last_result"] = self.describe(state.last_result) if state.last_result is not None else None
            except Exception as exc:  # noqa: BLE001  (status must always answer)
                row["last_result"] = {"error": f"cannot describe: {exc}"}
            out.append(row)
        return out

    # -- watching (one thread per folder) ----------------------------------------------------------------
    def _polling_for(self, folder: WatchedFolder) -> bool:
        if folder.polling is not None:
            return folder.polling
        if self.force_polling is not None:
            return self.force_polling
        return needs_polling(folder.path)

    def _watch_loop(self, state: _FolderState) -> None:
        import watchfiles  # imported here: only a watching process pays for it

        root = state.folder.path
        root_text = str(root)

        def keep(_change: Any, path: str) -> bool:
            return not is_ignored(path, root_text)

        while not self._stop.is_set():
            identity = _identity(root)
            if identity is None:
                if state.available is not False:
                    log.warning("watched folder %s is missing or not a folder; retrying every %.0f s (its files stay "
                                "indexed until it is back)", root, self.retry_s)
                with self._lock:
                    state.available, state.watching = False, False
                self._stop.wait(self.retry_s)
                continue
            with self._wake:
                if state.available is False or (state.identity is not None and state.identity != identity):
                    log.info("watched folder %s is back; syncing it in full", root)
                    self._mark(state, full=True)
                state.available, state.identity = True, identity
                state.polling = self._polling_for(state.folder)
                state.watching = True
            try:
                for changes in watchfiles.watch(root, watch_filter=keep, debounce=200, step=50, stop_event=self._stop,
                                                rust_timeout=1000, yield_on_timeout=True, raise_interrupt=False,
                                                force_polling=state.polling, poll_delay_ms=self.poll_delay_ms,
                                                ignore_permission_denied=True):
                    if changes:
                        self._collect(state, changes)
                    if _identity(root) != identity:  # deleted, unmounted or replaced: watch it anew
                        log.warning("watched folder %s vanished or was replaced", root)
                        break
            except Exception as exc:  # noqa: BLE001  (a watch error must not end watching)
                log.warning("watching %s failed (%s: %s); retrying in %.0f s", root, type(exc).__name__, exc,
                            self.retry_s)
                self._stop.wait(self.retry_s)
            with self._lock:
                state.watching = False

    def _collect(self, state: _FolderState, changes: set[tuple[Any, str]]) -> None:
        """Record raw events; the stat taken here is the first of the two stability checks."""
        now = time.monotonic()
        seen = [(Path(path), _signature(Path(path))) for _change, path in changes]
        with self._wake:
            for path, signature in seen:
                entry = state.pending.get(path)
                if entry is None or entry.signature != signature:
                    state.pending[path] = _Pending(signature, now)
            self._mark(state)
            self._wake.notify_all()

    def _mark(self, state: _FolderState, full: bool = False) -> None:
        """Note an event (caller holds the lock)."""
        now = time.monotonic()
        state.full = state.full or full
        state.first_event = state.first_event or now
        state.last_event = now
        state.last_event_at = time.time()

    # -- dispatching (one thread) ------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        tick = max(0.02, min(self.quiet_s, self.stable_s) / 4)
        while not self._stop.is_set():
            request = None
            with self._wake:
                for state in self._states.values():
                    request = self._take_request(state)
                    if request is not None:
                        break
                if request is None:
                    self._wake.wait(tick)
                    continue
            self._run(*request)

    def _take_request(self, state: _FolderState) -> tuple[_FolderState, set[Path], set[Path]] | None:
        """The request due for this folder, removed from its pending set; None if not due (caller holds the lock)."""
        if not (state.pending or state.full) or state.first_event is None or state.last_event is None:
            return None
        now = time.monotonic()
        if now < state.retry_at or state.available is False:
            return None  # backing off, or the folder is gone: never sync a missing folder (an unmount is not a delete)
        if now - state.last_event < self.quiet_s and now - state.first_event < self.max_delay_s:
            return None
        changed: set[Path] = set()
        deleted: set[Path] = set()
        waiting = 0
        for path, entry in list(state.pending.items()):
            signature = _signature(path)
            if signature is None:
                if not os.path.lexists(path):
                    deleted.add(path)
                del state.pending[path]  # gone, or a dangling link / unreadable entry the sync reports itself
                continue
            if path.is_dir():
                changed.add(path)  # a folder moved in brings files that raised no event of their own
                del state.pending[path]
            elif signature == entry.signature and now - entry.since >= self.stable_s:
                changed.add(path)
                del state.pending[path]
            else:
                if signature != entry.signature:  # still being written: start its stability clock again
                    state.pending[path] = _Pending(signature, now)
                waiting += 1
        if state.full:
            changed.add(state.folder.path)
            state.full = False
        if not changed and not deleted:
            if waiting:
                state.first_event = now  # only unstable files left: the max delay restarts for them
            return None
        state.first_event = now if state.pending else None
        state.last_event = now if state.pending else None
        state.in_flight = True
        return state, changed, deleted

    def _run(self, state: _FolderState, changed: set[Path], deleted: set[Path]) -> None:
        folder = state.folder.path
        with self._lock:
            state.requests += 1
            state.last_request_at = time.time()
        log.info("sync %s: %d changed, %d deleted", folder, len(changed), len(deleted))
        try:
            result = self.on_sync(folder, changed, deleted)
        except Exception as exc:  # noqa: BLE001  (one failed sync must not stop the watcher)
            with self._wake:
                state.failures += 1
                delay = min(60.0, self.retry_s * 2 ** (state.failures - 1))
                state.last_error = f"{type(exc).__name__}: {exc}"
                # The sync is idempotent: retrying the whole folder covers this request and anything else.
                self._mark(state, full=True)
                state.retry_at = time.monotonic() + delay
                state.in_flight = False
            log.warning("sync of watched folder %s failed (%s); retrying in %.0f s", folder, state.last_error, delay)
            return
        with self._wake:
            state.failures = 0
            state.last_error = None
            state.last_result = result
            state.last_sync_at = time.time()
            state.in_flight = False


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, None when it is missing or not a folder."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    import stat as _stat

    return (st.st_dev, st.st_ino) if _stat.S_ISDIR(st.st_mode) else None


def describe_result(result: Any) -> dict[str, Any] | None:
    """Counts of an IngestReport-like result (indexed, removed, failed, ...), a dict as is, else None."""
    if isinstance(result, dict):
        return result
    if hasattr(result, "indexed"):
        return {name: getattr(result, name, None) for name in
                ("indexed", "removed", "failed", "skipped", "chunks_added", "chunks_removed", "seconds")}
    return None


class PipelineSync:
    """`on_sync` that syncs in this process through `ingest(paths, acl)` (e.g. the pipeline's ingest, with
    the caller and ingest roots of a manual ingest bound in), and logs one line per sync."""

    def __init__(self, ingest: Callable[[list[str], "list[str] | None"], Any],
                 folders: Iterable[WatchedFolder]) -> None:
        self.ingest = ingest
        self.folders = {f.path: f for f in folders}

    def __call__(self, folder: Path, changed: set[Path], deleted: set[Path]) -> Any:
        paths = sync_paths(folder, changed, deleted)
        if not paths:
            return None
        report = self.ingest([str(p) for p in paths], self.folders[folder].acl)
        log.info("watch %s: %s indexed, %s removed, %s failed (+%s -%s chunks) in %.1f s", folder,
                 getattr(report, "indexed", "?"), getattr(report, "removed", "?"), getattr(report, "failed", "?"),
                 getattr(report, "chunks_added", "?"), getattr(report, "chunks_removed", "?"),
                 getattr(report, "seconds", 0.0) or 0.0)
        for failure in getattr(report, "failures", None) or []:
            log.warning("watch %s: failed: %s: %s", folder, failure.get("file"), failure.get("reason"))
        return report


class JobSync:
    """`on_sync` that submits one ingest job per request to the durable queue (ingest.jobs.JobQueue).

    The job runs as `caller` (the server's operator: the watched folders were configured by whoever started
    the server) with the folder's labels; the server's job writer applies the same ingest roots as a
    manual ingest. `describe` reports the job's state and counts in `FolderWatcher.status()`.
    """

    def __init__(self, queue: Any, collection: str, folders: Iterable[WatchedFolder], caller: Caller) -> None:
        self.queue = queue
        self.collection = collection
        self.folders = {f.path: f for f in folders}
        self.caller = caller

    def __call__(self, folder: Path, changed: set[Path], deleted: set[Path]) -> Any:
        paths = sync_paths(folder, changed, deleted)
        if not paths:
            return None
        job = self.queue.submit(self.collection, [str(p) for p in paths], self.caller, acl=self.folders[folder].acl,
                                **self._kind())
        log.info("watch %s: queued job %s for %d path(s)", folder, job.id, len(paths))
        return job

    def _kind(self) -> dict[str, Any]:
        """`kind="watch"` when the queue records job kinds (older queues do not take the argument)."""
        import inspect

        return {"kind": "watch"} if "kind" in inspect.signature(self.queue.submit).parameters else {}

    def describe(self, job: Any) -> dict[str, Any]:
        """The job's current state and counts (read from the queue, so it moves while the job runs)."""
        current = self.queue.get(job.id) or job
        return {"job_id": current.id, "state": current.state, "files_done": current.files_done,
                "files_total": current.files_total, "chunks_added": current.chunks_added,
                "chunks_removed": current.chunks_removed, "failed": len(current.errors or []),
                "message": current.message, "finished_at": current.finished_at}
