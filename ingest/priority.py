"""Background ingest yields the CPU to searches: a server's ingest jobs parse, chunk and embed in a
low-priority worker process.

A server runs its ingest jobs (ingest.jobs.JobRunner) in the process that answers searches. On a
2-core machine a search during an ingest job measured 14x its idle p95 (`rag bench --parts serve`).
Read from the code, three causes, of which a lower thread priority addresses only the last:

- the embedder's model lock: a query's embedding waits for the ingest's current sub-batch;
- the GIL: the parser (unstructured, pure Python) holds it, and a query re-takes it after each torch op
  and each store call, waiting up to the switch interval whenever the parser has it;
- the CPU: the ingest's torch threads compete with the query's on both cores.

So, with `ingest_priority = "background"` (the default), a job's files are parsed, chunked and embedded
(the sync's own `_parse_one`, then the model) by one worker process at nice 19: no shared lock, no
shared GIL, and the kernel gives the searches the CPU first. The worker is spawned on first use and
reused; it loads its own copy of the embedder; every thread it has (torch's OpenMP pool included) starts
after its nice is set and inherits it. It returns chunks and vectors; the server process still does the
writes (Qdrant Edge admits one process), in the order ingest.sync's crash-safety relies on. A CLI
`rag ingest` (no job runner) is untouched: in-process at normal priority, as fast as before;
`ingest_priority = "normal"` keeps jobs in-process too.

The price: nice 19 gets the job only the CPU nothing else wants. On a machine saturated by other work
(measured at load 25-30 on 2 cores) a job ran about 7x slower than in-process; there, set "normal".
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from rag.config import Settings
from rag.errors import ParseError, RagError

log = logging.getLogger(__name__)

BACKGROUND_NICE = 19  # the lowest CPU priority: the worker runs on whatever CPU the searches leave

_local = threading.local()


# -- which threads run background work --------------------------------------------------------------
@contextlib.contextmanager
def background() -> Iterator[None]:
    """Mark the calling thread as running background ingest work (the job runner's thread) for the block."""
    before = getattr(_local, "background", False)
    _local.background = True
    try:
        yield
    finally:
        _local.background = before


def in_background() -> bool:
    """True inside `background()` on this thread."""
    return bool(getattr(_local, "background", False))


def use_worker(settings: Settings, embedder: Any) -> bool:
    """Whether this ingest should parse/chunk/embed in the low-priority worker process.

    Only background work (a job runner's thread) with `ingest_priority = "background"`, and only when the
    embedder is the one the settings name (the worker loads its own copy from the settings; a test or eval
    passing another embedder object keeps it in-process so the vectors come from that embedder).
    """
    if getattr(settings, "ingest_priority", "background") != "background" or not in_background():
        return False
    return getattr(embedder, "model_name", None) == settings.embed_model


# -- nice values --------------------------------------------------------------------------------------
def lower_priority(nice: int = BACKGROUND_NICE) -> None:
    """Set the calling thread's nice value to `nice` (Linux: per thread; threads it starts later inherit it).

    Called first thing in a fresh process this lowers the whole process, torch's thread pool included.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # not Linux / not permitted: run at normal priority
        log.warning("could not lower the ingest worker's CPU priority: %s", exc)


def thread_nice(pid: int, tid: int | None = None) -> int:
    """The nice value of thread `tid` of process `pid` (the main thread by default), read from /proc."""
    stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
    # Field 2 (comm) may hold spaces: split after its closing parenthesis; nice is field 19.
    return int(stat.rsplit(")", 1)[1].split()[16])


def thread_nices(pid: int) -> dict[int, int]:
    """{tid: nice} for every thread of process `pid` (Linux /proc)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread may end while we look
            out[int(task.name)] = thread_nice(pid, int(task.name))
    return out


# -- the worker process -------------------------------------------------------------------------------
class WorkerDied(RagError):
    """The ingest worker process ended while working on a file."""


@dataclass
class FileWork:
    """What the worker returns for one file: the parse result (or error) and the chunks' vectors."""

    parsed: Any  # ingest.sync._Parsed, with .vectors set when it has drafts; None when `deferred`
    embed_s: float = 0.0
    deferred: bool = False  # the file needs OCR and was asked not to run it yet (the folder goes first)


def _worker_main(conn: Any, nice: int) -> None:
    """The worker process: lower its priority before anything starts threads, then serve file requests."""
    lower_priority(nice)
    from ingest.sync import FolderSync  # heavy (parsers): only in the worker
    from rag.embedding import embedder_from_settings

    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the server is gone: nothing left to do
            return
        if request is None:
            return
        settings, path, file_hash, defer_ocr = request

        def report(stage: str, done: int, total: int | None, unit: str) -> None:
            conn.send(("progress", (stage, done, total, unit)))

        try:
            reply: tuple[str, Any] = ("ok", _parse_and_embed(FolderSync, embedder_from_settings(settings), settings,
                                                             Path(path), file_hash, defer_ocr, report))
        except Exception as exc:  # noqa: BLE001  (reported to the server, which fails only this file)
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:  # the server is gone (killed mid-file): nothing left to do
            return


def _parse_and_embed(sync_cls: Any, embedder: Any, settings: Settings, path: Path, file_hash: str,
                     defer_ocr: bool = False, report: Callable[[str, int, int | None, str], None] | None = None
                     ) -> FileWork:
    """One file through the sync's own parse step (same parser, OCR, chunker and errors), then embedded.

    `defer_ocr`: a file that needs OCR comes back `deferred` before its first page (the caller runs the
    scans after the rest of the folder). `report(stage, done, total, unit)` follows OCR pages and embedded
    chunks, so the job's progress moves while the worker works.
    """
    import numpy as np  # here, not at module top: the worker lowers its priority before any library starts threads

    from ingest.loaders.ocr import OCRDeferred, watch_ocr_pages
    from ingest.sync import _defer_to_ocr_worker

    report = report or (lambda *_: None)
    sync = sync_cls(settings, None, embedder, progress=False)  # the store is never touched here

    def pages(_path: Path, done: int, total: int) -> None:
        report("ocr", done, total, "page")

    with watch_ocr_pages(_defer_to_ocr_worker if defer_ocr else pages):
        parsed = sync._parse_one(path, file_hash)
    if isinstance(parsed.error, OCRDeferred):
        return FileWork(None, deferred=True)
    embed_s = 0.0
    if parsed.error is None and parsed.drafts:
        t0 = time.perf_counter()
        texts = [d.text for d in parsed.drafts]
        step = max(settings.embed_batch_size * 4, 32)  # progress per few model batches, not per file
        parts = []
        for start in range(0, len(texts), step):
            report("embed", start, len(texts), "chunk")
            parts.append(np.asarray(embedder.embed_passages(texts[start:start + step])))
        parsed.vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
        embed_s = time.perf_counter() - t0
    return FileWork(parsed, embed_s)


class IngestWorker:
    """One low-priority worker process (spawned, daemonic) and the pipe to it; one request at a time."""

    def __init__(self, nice: int | None = None) -> None:
        nice = BACKGROUND_NICE if nice is None else nice
        # spawn, not fork: the server has threads (uvicorn, torch) that a fork would copy mid-state.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, nice), daemon=True, name="rag-ingest-worker")
        self.process.start()
        child.close()
        self._lock = threading.Lock()
        self.nice = nice
        log.info("started the background ingest worker (pid %s, nice %d)", self.process.pid, nice)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def run(self, settings: Settings, path: Path, file_hash: str, stop: threading.Event | None = None,
            defer_ocr: bool = False, on_progress: Callable[[str, int, int | None, str], None] | None = None
            ) -> FileWork:
        """Parse, chunk and embed one file in the worker; WorkerDied if the process ends meanwhile.

        `stop` (a cancel, or the server stopping) ends the worker at once instead of after a long file
        (an OCR'd scan can take minutes); the next file starts a new one. `on_progress(stage, done, total,
        unit)` receives the worker's OCR-page and embedding progress; `defer_ocr` as in `_parse_and_embed`.
        """
        with self._lock:
            try:
                self._conn.send((settings, str(path), file_hash, defer_ocr))
                while True:
                    while not self._conn.poll(0.2):
                        if stop is not None and stop.is_set():
                            self.process.kill()
                            self.process.join(10)
                            raise WorkerDied(f"{path}: stopped (the ingest was cancelled or the server is stopping)")
                        if not self.process.is_alive():
                            raise WorkerDied(f"{path}: the ingest worker process ended (exit code "
                                             f"{self.process.exitcode}) while parsing or embedding this file")
                    status, value = self._conn.recv()
                    if status != "progress":
                        break
                    if on_progress is not None:
                        on_progress(*value)
            except (EOFError, OSError, BrokenPipeError) as exc:
                raise WorkerDied(f"{path}: lost the ingest worker process ({type(exc).__name__})") from exc
        if status != "ok":
            raise RagError(f"{path}: ingest worker error: {value}")
        return value

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit; terminate it if it does not within `timeout`."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        self._conn.close()


_worker: IngestWorker | None = None
_worker_lock = threading.Lock()


def get_worker() -> IngestWorker:
    """The process's ingest worker, started on first use (and again if it died)."""
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.alive:
            _worker = IngestWorker()
        return _worker


def shutdown_worker() -> None:
    """Stop the ingest worker if one runs (tests; at exit, multiprocessing terminates the daemonic worker, and a
    worker whose server was killed exits when its pipe closes)."""
    global _worker
    with _worker_lock:
        worker, _worker = _worker, None
    if worker is not None:
        worker.close()


def parse_in_worker(settings: Settings, jobs: list[tuple[Path, str]], out: "queue.Queue[Any]", lanes: Any) -> None:
    """The worker-process counterpart of FolderSync._parse_worker (same queue protocol and progress stages):
    put each file's `_Parsed` (with `vectors` and `embed_s`) on `out`, then None. The worker reports OCR pages
    and embedded chunks as it goes; files that need OCR are handed back before their first page and read
    after the rest. A file whose processing ended the worker fails alone (its previous version is kept);
    the next file gets a fresh worker."""
    from ingest.sync import _Parsed  # ingest.sync imports this module

    # Files that need OCR (minutes each) wait until the rest of the folder is done, as the OCR thread
    # of the in-process path arranges; when OCR cannot run, nothing is deferred (the parser reports it).
    defer = ocr_can_run(settings)
    scans: list[tuple[Path, str]] = []
    try:
        for pass_jobs, defer_ocr, first_stage in ((jobs, defer, "parse"), (scans, False, "ocr")):
            for path, file_hash in pass_jobs:  # `scans` fills during the first pass
                if lanes.stop.is_set():
                    return
                key = str(path)
                lanes.tracker.stage(key, first_stage, 0, None, "page" if first_stage == "ocr" else "")
                started = time.perf_counter()

                def progress(stage: str, done: int, total: int | None, unit: str, key: str = key) -> None:
                    lanes.tracker.stage(key, stage, done, total, unit)

                try:
                    work = get_worker().run(settings, path, file_hash, lanes.stop, defer_ocr, progress)
                    if work.deferred:
                        lanes.tracker.stage(key, "ocr", 0, None, "page")  # after the rest of the folder
                        scans.append((path, file_hash))
                        continue
                    parsed = work.parsed
                    parsed.embed_s = work.embed_s
                except RagError as exc:
                    log.warning("%s", exc)
                    parsed = _Parsed(path, file_hash, None, [], error=ParseError(str(exc)),
                                     parse_s=time.perf_counter() - started)
                lanes.tracker.stage(key, "parsed")
                out.put(parsed)
    finally:
        out.put(None)


def ocr_can_run(settings: Settings) -> bool:
    """True when OCR is on (auto/always) and Tesseract is installed."""
    from ingest.loaders.ocr import OCR_MODES, unavailable_reason

    mode = str(settings.ocr).strip().lower()
    return mode in OCR_MODES and not unavailable_reason(mode)
