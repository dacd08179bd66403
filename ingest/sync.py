"""Folder sync: bring a collection in line with the files on disk.

The store is the manifest. Every chunk's payload carries `file_path`, `file_hash` and `chunk_count`,
so the state of a file is read back from Qdrant itself, never from a side file that could disagree
with it after a crash:

- complete: exactly one hash stored for the path and `chunk_count` points of it -> skip if unchanged
- partial (a crash mid-file) or several versions (a crash between upsert and cleanup) -> redo

Writing a file is ordered so that a kill -9 at any point is repaired by the next run: upsert the new
version's points (ids are uuid5(path, hash, index), so a redo overwrites instead of duplicating), then
delete every other version of that path. A file that fails to parse keeps its previous chunks.

Parsing runs in a worker thread while the main thread embeds, so the CPU-bound model never waits
for the parser (torch releases the GIL during inference). A file that needs OCR (seconds a page) is
handed to a second worker, so a scan never holds back the rest of the folder, and the writer writes
whatever is parsed instead of waiting for it.

Progress (file, stage, pages or chunks done of total; `ingest.progress`) goes to a monitor: the CLI's
bar, or a job's row. The monitor may cancel; the run then stops between files, and every file is either
fully old or fully new.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from ingest import priority
from ingest.chunking import Chunker, ChunkDraft
from ingest.ignore import ignored_name
from ingest.loaders import ParsedDocument, parse_file, supported
from ingest.loaders.ocr import OCRDeferred, watch_ocr_pages
from ingest.progress import IngestMonitor, ProgressTracker, TerminalProgress
from rag.access import root_of
from rag.backends import embedder_backend, ensure_collection_backend
from rag.config import Settings
from rag.errors import ParseError, RagError
from rag.lexical import BM25Encoder
from rag.models import Chunk
from rag.store import CollectionInfo, Store
from rag.store.catalog import iter_chunks, stored_files, write_chunks

__all__ = ["FolderSync", "IngestReport", "FileOutcome", "StoredFile", "chunk_id", "file_sha256", "discover_files",
           "ingest_paths", "read_manifest", "stored_files", "iter_chunks"]  # the last two re-exported from the catalog

log = logging.getLogger(__name__)

CHUNK_NAMESPACE = uuid.UUID("6f1c9d4e-58a7-4a39-9a53-3c0d2f6f0b11")
# How long the writer waits for a parsed file before writing what it holds (and reporting progress).
POLL_S = 0.25


def chunk_id(file_path: str, file_hash: str, chunk_index: int) -> str:
    """Stable point id: the same file version and chunk always map to the same id."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{file_path}\x00{file_hash}\x00{chunk_index}"))


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class StoredFile:
    """What the store holds for one path: stored point counts per file hash and expected counts."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    expected: dict[str, int] = field(default_factory=dict)

    def complete_hash(self) -> str | None:
        """The hash of the one complete version, or None if partial or several versions exist."""
        if len(self.counts) != 1:
            return None
        (file_hash, count), = self.counts.items()
        return file_hash if count == self.expected.get(file_hash) else None


def read_manifest(store: Store) -> dict[str, StoredFile]:
    """Per-path state derived from the payloads in the store."""
    manifest: dict[str, StoredFile] = defaultdict(StoredFile)
    for chunk in iter_chunks(store, fields=["file_path", "file_hash", "chunk_count"]):
        entry = manifest[chunk.file_path]
        entry.counts[chunk.file_hash] += 1
        entry.expected[chunk.file_hash] = int(chunk.chunk_count)
    return dict(manifest)


@dataclass
class FileOutcome:
    """The result for one file, as shown in the summary."""

    path: str
    status: str  # indexed | skipped | failed | removed | unsupported | ignored (symlink not followed)
    reason: str = ""
    chunks: int = 0
    pages: int | None = None
    needs_ocr: bool = False


@dataclass
class IngestReport:
    """Summary of one ingest run (printed, or emitted as JSON with --json)."""

    collection: str
    files_seen: int = 0
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0
    unsupported: int = 0
    ignored: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    pages: int = 0
    seconds: float = 0.0
    chunks_per_s: float = 0.0
    pages_per_s: float = 0.0
    needs_ocr: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    files: list[FileOutcome] = field(default_factory=list)
    cancelled: bool = False  # stopped by its monitor: files not listed here keep their previous version

    def to_dict(self) -> dict:
        return asdict(self)

    def add(self, outcome: FileOutcome) -> None:
        """Count one file outcome into the totals."""
        self.files.append(outcome)
        if outcome.status == "indexed":
            self.indexed += 1
            self.chunks_added += outcome.chunks
            self.pages += outcome.pages or 0
        elif outcome.status == "skipped":
            self.skipped += 1
        elif outcome.status == "failed":
            self.failed += 1
            self.failures.append({"file": outcome.path, "reason": outcome.reason})
            if outcome.needs_ocr:
                self.needs_ocr.append(outcome.path)
        elif outcome.status == "removed":
            self.removed += 1
        elif outcome.status == "unsupported":
            self.unsupported += 1
        elif outcome.status == "ignored":
            self.ignored += 1

    def summary_lines(self) -> list[str]:
        """Human-readable summary for stderr."""
        lines = [
            f"collection {self.collection}: {self.files_seen} files seen, {self.indexed} indexed, "
            f"{self.skipped} unchanged, {self.failed} failed, {self.removed} removed, "
            f"{self.unsupported} unsupported",
            f"chunks: +{self.chunks_added} -{self.chunks_removed}; {self.seconds:.1f}s, "
            f"{self.chunks_per_s:.1f} chunks/s, {self.pages_per_s:.1f} pages/s",
        ]
        lines += [f"  failed: {f['file']}: {f['reason']}" for f in self.failures]
        if self.cancelled:
            lines.append("  cancelled: the files not listed keep their previous version (re-run to finish)")
        if self.ignored:
            lines.append(f"  {self.ignored} symbolic link(s) not followed (RAG_FOLLOW_SYMLINKS=true follows them)")
        if self.needs_ocr:
            lines.append(f"  {len(self.needs_ocr)} file(s) have no text layer and would need OCR")
        return lines


def discover_files(paths: Iterable[str | os.PathLike[str]], follow_symlinks: bool = False,
                   ignored: list[Path] | None = None) -> tuple[list[Path], list[Path]]:
    """Files under the given paths, as (files, roots). Roots are resolved absolute paths.

    Symlinks are not followed unless asked (a link can point outside the folder or form a loop);
    the links left out are appended to `ignored` so the report can say why they were not indexed.
    With follow_symlinks, directories already visited are skipped so loops terminate.
    Hidden files and folders (".git", ".rag") and editor/download temp files ("~$report.docx", "notes.md.swp")
    are skipped: `ingest.ignore`, the rule the watcher applies too.
    """
    files: list[Path] = []
    roots: list[Path] = []
    seen_dirs: set[str] = set()
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise RagError(f"{raw}: no such file or folder")
        root = root.resolve()
        roots.append(root)
        if root.is_file():
            files.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if not follow_symlinks and ignored is not None:  # os.walk lists linked dirs but won't enter them
                ignored.extend(Path(dirpath) / d for d in dirnames if (Path(dirpath) / d).is_symlink())
            for name in sorted(filenames):
                if ignored_name(name):
                    continue
                path = Path(dirpath) / name
                if path.is_symlink() and not follow_symlinks:
                    if ignored is not None:
                        ignored.append(path.absolute())
                    continue
                if not path.is_file():
                    continue
                files.append(path if follow_symlinks else path.absolute())
    return sorted(set(files)), roots


@dataclass
class _Parsed:
    path: Path
    file_hash: str
    doc: ParsedDocument | None
    drafts: list[ChunkDraft]
    error: ParseError | None = None
    parse_s: float = 0.0
    chunk_s: float = 0.0
    vectors: np.ndarray | None = None  # embedded already (by the background worker, ingest.priority)
    embed_s: float = 0.0


@dataclass
class _Lanes:
    """What the parse and OCR workers of one run share."""

    tracker: ProgressTracker
    stop: threading.Event  # set on cancel or error: workers stop between files (OCR: between pages)
    ocr_inbox: "queue.Queue[tuple[Path, str] | None] | None"  # None: no OCR worker (OCR off or unavailable)


class _Cancelled(Exception):
    """The monitor cancelled the run (raised between embedding sub-batches and between files)."""


def _defer_to_ocr_worker(path: Path, _done: int, total: int) -> None:
    """The parse worker's OCR hook: before the first page, hand the file to the OCR worker."""
    raise OCRDeferred(path, f"{total} page(s) need OCR")


class FolderSync:
    """Runs one ingest: discover, diff against the store, parse/chunk/embed/upsert, clean up."""

    def __init__(self, settings: Settings, store: Store, embedder, acl: list[str] | None = None,
                 progress: bool = True, monitor: IngestMonitor | None = None) -> None:
        """`monitor` follows the run (and may cancel it); without one, `progress` draws the CLI's bar."""
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.acl = sorted(set(acl or settings.default_acl))
        self.progress = progress
        self.monitor = monitor
        self._emitted = -1
        self.chunker = Chunker(embedder.count_tokens, min(settings.chunk_tokens, embedder.max_tokens - 2),
                               settings.chunk_overlap_tokens)
        self.timings: dict[str, float] = defaultdict(float)
        self.bm25: BM25Encoder | None = None

    # -- collection -----------------------------------------------------------------------------
    def _ensure_collection(self, sample_texts: list[str]) -> None:
        """Create the collection on first write, recording the model and BM25 parameters."""
        info = self.store.info()
        if info is not None:
            self.store.check_compatible(self.embedder.model_name, self.embedder.dimension)
            # Vectors of another backend may join only when the quality guard measured them alike.
            ensure_collection_backend(self.store.collection, info.embed_backend, self.embedder, self.settings.state_dir)
            self.bm25 = BM25Encoder(info.bm25_k1, info.bm25_b, info.bm25_avg_doc_len, info.bm25_language)
            return
        probe = BM25Encoder(self.settings.bm25_k1, self.settings.bm25_b, 100.0, self.settings.bm25_language)
        lengths = [len(probe.tokenize(t)) for t in sample_texts] or [100]
        # BM25 length normalisation needs the average document length; it is fixed at creation
        # (recorded in the collection) because stored term weights were computed with it.
        avg_len = max(1.0, sum(lengths) / len(lengths))
        info = CollectionInfo(
            name=self.settings.collection,
            embed_model=self.embedder.model_name,
            dimension=self.embedder.dimension,
            bm25_k1=self.settings.bm25_k1,
            bm25_b=self.settings.bm25_b,
            bm25_avg_doc_len=avg_len,
            bm25_language=self.settings.bm25_language,
            created_at=_now(),
            embed_backend=embedder_backend(self.embedder)[0],
        )
        self.store.create(info)
        self.bm25 = BM25Encoder(info.bm25_k1, info.bm25_b, info.bm25_avg_doc_len, info.bm25_language)

    # -- parsing (worker threads) ---------------------------------------------------------------
    def _parse_one(self, path: Path, file_hash: str) -> _Parsed:
        """Parse and chunk one file; a failure comes back in `error`, never raised."""
        started = time.perf_counter()
        try:
            doc = parse_file(path, self.settings)
            parsed_at = time.perf_counter()
            drafts = self.chunker.chunk(doc)
            if not drafts:
                raise ParseError(f"{path}: no text to index after chunking")
            return _Parsed(path, file_hash, doc, drafts, parse_s=parsed_at - started,
                           chunk_s=time.perf_counter() - parsed_at)
        except ParseError as exc:
            return _Parsed(path, file_hash, None, [], error=exc, parse_s=time.perf_counter() - started)
        except Exception as exc:  # a parser bug must not stop the run
            log.exception("unexpected error parsing %s", path)
            return _Parsed(path, file_hash, None, [], error=ParseError(f"{path}: {type(exc).__name__}: {exc}"),
                           parse_s=time.perf_counter() - started)

    def _parse_worker(self, jobs: list[tuple[Path, str]], out: "queue.Queue[_Parsed | None]", lanes: _Lanes) -> None:
        """The parse thread: files in order. One that needs OCR goes to the OCR thread (when there is one)
        before its first page, so the files after it do not wait for the scan."""
        try:
            for path, file_hash in jobs:
                if lanes.stop.is_set():
                    break
                lanes.tracker.stage(str(path), "parse")
                if lanes.ocr_inbox is None:
                    item = self._parse_one(path, file_hash)
                else:
                    with watch_ocr_pages(_defer_to_ocr_worker):
                        item = self._parse_one(path, file_hash)
                    if isinstance(item.error, OCRDeferred):
                        lanes.tracker.stage(str(path), "ocr", 0, None, "page")  # waits for the OCR thread
                        lanes.ocr_inbox.put((path, file_hash))
                        continue
                lanes.tracker.stage(str(path), "parsed")
                out.put(item)
        finally:
            (lanes.ocr_inbox if lanes.ocr_inbox is not None else out).put(None)

    def _ocr_worker(self, out: "queue.Queue[_Parsed | None]", lanes: _Lanes) -> None:
        """The OCR thread: files the parse thread handed over, one at a time, with page progress.
        It ends after the parse thread does (whose end marker it receives)."""
        assert lanes.ocr_inbox is not None
        try:
            while (job := lanes.ocr_inbox.get()) is not None:
                if lanes.stop.is_set():
                    continue  # cancelled: drain until the parse thread is done
                path, file_hash = job
                key = str(path)

                def pages(_path: Path, done: int, total: int, key: str = key) -> None:
                    if lanes.stop.is_set():  # a cancel stops between pages; the file keeps its old version
                        raise RagError("ingest cancelled")
                    lanes.tracker.stage(key, "ocr", done, total, "page")

                with watch_ocr_pages(pages):
                    item = self._parse_one(path, file_hash)
                lanes.tracker.stage(key, "parsed")
                out.put(item)
        finally:
            out.put(None)

    def _ocr_worker_needed(self) -> bool:
        """True when OCR can run (mode auto/always and Tesseract installed): scans get their own thread."""
        return priority.ocr_can_run(self.settings)

    # -- progress -------------------------------------------------------------------------------
    def _emit(self, tracker: ProgressTracker) -> None:
        """Give the monitor a snapshot when something moved since the last one."""
        if self.monitor is not None and tracker.version != self._emitted:
            self._emitted = tracker.version
            self.monitor.progress(tracker.snapshot())

    def _check_cancel(self) -> None:
        if self.monitor is not None and self.monitor.cancelled():
            raise _Cancelled

    # -- main -----------------------------------------------------------------------------------
    def run(self, paths: Iterable[str | os.PathLike[str]]) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(collection=self.settings.collection)
        links: list[Path] = []
        files, roots = discover_files(paths, self.settings.follow_symlinks, links)
        report.files_seen = len(files)
        for link in links:
            report.add(FileOutcome(str(link), "ignored", "symbolic link not followed (set RAG_FOLLOW_SYMLINKS=true "
                                                         "or pass --follow-symlinks to index its target)"))
        if self.store.info() is not None:
            # Fail before touching anything: a collection is only ever written by its own model.
            self._ensure_collection([])
        manifest = read_manifest(self.store)

        jobs: list[tuple[Path, str]] = []
        sizes: dict[str, int] = {}
        present: set[str] = set()
        for path in files:
            key = str(path)
            present.add(key)
            if not supported(path):
                report.add(FileOutcome(key, "unsupported", f"unsupported file type '{path.suffix or 'none'}'"))
                continue
            try:
                file_hash = file_sha256(path)
                sizes[key] = path.stat().st_size
            except OSError as exc:
                report.add(FileOutcome(key, "failed", f"cannot read: {exc.strerror or exc}"))
                continue
            stored = manifest.get(key)
            if stored is not None and stored.complete_hash() == file_hash:
                report.add(FileOutcome(key, "skipped", "unchanged"))
                continue
            jobs.append((path, file_hash))

        # Files that disappeared from the synced folders lose their chunks.
        for stored_path, stored in manifest.items():
            if stored_path not in present and root_of(Path(stored_path), roots) is not None and not Path(stored_path).exists():
                removed = self.store.delete_file(stored_path)
                report.chunks_removed += removed
                report.add(FileOutcome(stored_path, "removed", "file no longer exists", chunks=removed))

        given_monitor = self.monitor
        if self.monitor is None and self.progress and jobs:
            self.monitor = TerminalProgress()
        tracker = ProgressTracker(len(files), {str(p): sizes.get(str(p), 0) for p, _h in jobs})
        try:
            if jobs:
                report.cancelled = not self._index(jobs, report, manifest, tracker)
        finally:
            if self.monitor is not None:
                self.monitor.close(tracker.snapshot())
            self.monitor = given_monitor
        if report.chunks_added or report.chunks_removed:
            # Qdrant Edge builds HNSW and payload indexes only when asked; unindexed segments are
            # searched by full scan (3x slower at 2k points, far worse at 100k).
            log.info("building search indexes for %s", self.settings.collection)
            t0 = time.perf_counter()
            self.store.optimize()
            self.timings["optimize"] += time.perf_counter() - t0
        self.store.flush()
        report.seconds = round(time.perf_counter() - started, 3)
        indexing_s = max(report.seconds, 1e-9)
        report.chunks_per_s = round(report.chunks_added / indexing_s, 2)
        report.pages_per_s = round(report.pages / indexing_s, 2)
        report.timings_s = {k: round(v, 3) for k, v in self.timings.items()}
        return report

    def _index(self, jobs: list[tuple[Path, str]], report: IngestReport, manifest: dict[str, StoredFile],
               tracker: ProgressTracker) -> bool:
        """Parse, embed and write `jobs`. False when the monitor cancelled: the files written so far are
        complete, the rest keep their previous version."""
        parsed_queue: "queue.Queue[_Parsed | None]" = queue.Queue(maxsize=8)
        if priority.use_worker(self.settings, self.embedder):
            # A server's background job: parse, OCR, chunk and embed in the low-priority worker process.
            lanes = _Lanes(tracker, threading.Event(), None)
            workers = [threading.Thread(target=priority.parse_in_worker, daemon=True, name="rag-parse",
                                        args=(self.settings, jobs, parsed_queue, lanes))]
        else:
            lanes = _Lanes(tracker, threading.Event(), queue.Queue() if self._ocr_worker_needed() else None)
            workers = [threading.Thread(target=self._parse_worker, args=(jobs, parsed_queue, lanes), daemon=True,
                                        name="rag-parse")]
        if lanes.ocr_inbox is not None:
            workers.append(threading.Thread(target=self._ocr_worker, args=(parsed_queue, lanes), daemon=True,
                                            name="rag-ocr"))
        for worker in workers:
            worker.start()
        # Large groups: sentence-transformers sorts each encode call by length, so bigger groups pad less.
        batch_target = max(self.settings.embed_batch_size * 16, 256)
        pending: list[tuple[_Parsed, ChunkDraft, int]] = []
        remaining: dict[str, int] = {}
        by_path: dict[str, _Parsed] = {}
        ingested_at = _now()
        ended = False

        def flush_pending() -> None:
            if not pending:
                return
            self._write_batch(pending, ingested_at, tracker)
            for parsed, _draft, _index in pending:
                key = str(parsed.path)
                remaining[key] -= 1
                if remaining[key] == 0:
                    self._finish_file(by_path.pop(key), report)
                    tracker.finished(key)
            pending.clear()
            self._emit(tracker)

        try:
            while True:
                try:
                    item = parsed_queue.get(timeout=POLL_S)
                except queue.Empty:
                    # Nothing parsed meanwhile (a long file, an OCR page): write what is ready rather than wait.
                    flush_pending()
                    self._emit(tracker)
                    self._check_cancel()
                    continue
                if item is None:
                    ended = True
                    break
                self.timings["parse"] += item.parse_s
                self.timings["chunk"] += item.chunk_s
                self.timings["embed"] += item.embed_s
                key = str(item.path)
                if item.error is not None:
                    keeps = " (previous version kept)" if key in manifest else ""
                    reason = _one_line(str(item.error), key) + keeps
                    report.add(FileOutcome(key, "failed", reason,
                                           needs_ocr=bool(getattr(item.error, "needs_ocr", False))))
                    tracker.finished(key, failed=True)
                    self._emit(tracker)
                    continue
                by_path[key] = item
                remaining[key] = len(item.drafts)
                tracker.parsed(key, len(item.drafts))
                pending.extend((item, draft, i) for i, draft in enumerate(item.drafts))
                if len(pending) >= batch_target:
                    flush_pending()
                self._emit(tracker)
                self._check_cancel()
            self._check_cancel()  # the last files: a cancel asked while they parsed still stops them
            flush_pending()
        except _Cancelled:
            log.info("ingest cancelled: %d file(s) not written keep their previous version", len(by_path))
            return False
        finally:
            lanes.stop.set()
            while not ended:  # let the workers see the stop and finish (their queue puts must not block)
                ended = parsed_queue.get() is None
            for worker in workers:
                worker.join()
        return True

    def _write_batch(self, pending: list[tuple[_Parsed, ChunkDraft, int]], ingested_at: str,
                     tracker: ProgressTracker) -> None:
        texts = [draft.text for _p, draft, _i in pending]
        if self.bm25 is None:
            self._ensure_collection(texts)
        assert self.bm25 is not None
        t0 = time.perf_counter()
        vectors = self._embed(pending, texts, tracker)
        self.timings["embed"] += time.perf_counter() - t0
        for path, count in Counter(str(parsed.path) for parsed, _d, _i in pending).items():
            tracker.stage(path, "write", count, count, "chunk")
        self._emit(tracker)
        chunks = []
        for parsed, draft, index in pending:
            path = str(parsed.path)
            chunks.append(Chunk(
                id=chunk_id(path, parsed.file_hash, index),
                text=draft.text,
                file_path=path,
                file_hash=parsed.file_hash,
                file_type=parsed.doc.file_type if parsed.doc else parsed.path.suffix.lstrip(".").lower(),
                chunk_index=index,
                chunk_count=len(parsed.drafts),
                char_start=draft.char_start,
                char_end=draft.char_end,
                page_numbers=list(draft.page_numbers),
                section=draft.section,
                element_types=list(draft.element_types),
                boxes=[list(b) for b in draft.boxes],
                acl=self.acl,
                ingested_at=ingested_at,
                token_count=draft.token_count,
                file_name=parsed.path.name,
            ))
        # The whole group in one upsert call: one WAL write per group rather than one per 256 points.
        stats = write_chunks(self.store, chunks, vectors, self.bm25, batch=len(chunks))
        self.timings["bm25"] += stats.encode_s
        self.timings["upsert"] += stats.upsert_s

    def _embed(self, pending: list[tuple[_Parsed, ChunkDraft, int]], texts: list[str],
               tracker: ProgressTracker) -> np.ndarray:
        """Embed one group in model batches, reporting chunks per file after each (and checking for a cancel).

        Files go in order, each file's texts longest first, cut at the model's batch size: the bar then
        moves through one file at a time (naming it), and chunks of one file, mostly near the chunk budget,
        pad about as little as the whole group sorted by length would.
        """
        # Embedded already by the background worker (ingest.priority): same batches and progress, no model call.
        ready = all(parsed.vectors is not None for parsed, _d, _i in pending)
        first: dict[str, int] = {}
        for i, (parsed, _d, _i) in enumerate(pending):
            first.setdefault(str(parsed.path), i)
        order = sorted(range(len(texts)), key=lambda i: (first[str(pending[i][0].path)], -len(texts[i])))
        step = max(1, int(self.settings.embed_batch_size))
        vectors: np.ndarray | None = None
        for start in range(0, len(order), step):
            part = order[start:start + step]
            embedded = (np.stack([pending[i][0].vectors[pending[i][2]] for i in part]).astype(np.float32) if ready
                        else np.asarray(self.embedder.embed_passages([texts[i] for i in part]), dtype=np.float32))
            if vectors is None:
                vectors = np.zeros((len(texts), embedded.shape[1]), dtype=np.float32)
            vectors[part] = embedded
            tracker.embedded(Counter(str(pending[i][0].path) for i in part))
            self._emit(tracker)
            self._check_cancel()  # nothing of this group is written yet: a cancel leaves its files as they were
        assert vectors is not None
        return vectors

    def _finish_file(self, parsed: _Parsed, report: IngestReport) -> None:
        """All chunks of the new version are stored: drop every other version of the file."""
        t0 = time.perf_counter()
        removed = self.store.delete_file(str(parsed.path), keep_hash=parsed.file_hash)
        self.timings["cleanup"] += time.perf_counter() - t0
        report.chunks_removed += removed
        pages = parsed.doc.page_count if parsed.doc else None
        report.add(FileOutcome(str(parsed.path), "indexed", chunks=len(parsed.drafts), pages=pages))


def ingest_paths(paths: Iterable[str | os.PathLike[str]], settings: Settings, store: Store, embedder,
                 acl: list[str] | None = None, progress: bool = True,
                 monitor: IngestMonitor | None = None) -> IngestReport:
    """Sync the given files and folders into the collection; see the module docstring."""
    return FolderSync(settings, store, embedder, acl=acl, progress=progress, monitor=monitor).run(paths)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _one_line(message: str, path: str) -> str:
    """Strip the path prefix (the summary shows it) and fold the reason to one line."""
    text = " ".join(message.split())
    for prefix in (f"{path}: ", f"{path} "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


