"""Progress of one ingest run: which file is in which stage, and how far along, for every front end.

`ingest.sync.FolderSync` keeps a `ProgressTracker` (its parse workers and its writer update it) and
hands snapshots (`SyncProgress`) to an `IngestMonitor`: the CLI's `TerminalProgress` (one tqdm bar),
the job writer's (ingest.jobs: stored on the job row, shown by the API, `rag jobs` and the UI), or the
UI's own. The monitor can also stop the run between files (`cancelled`).

Stages of a file: parse -> (ocr, pages done of total) -> embed (chunks done of total) -> write -> done
or failed. The run counts in chunks: the total is exact for files already parsed and estimated from
their chunks per byte for the rest, so a time estimate is sane long before the last file is parsed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FileProgress", "SyncProgress", "IngestMonitor", "ProgressTracker", "TerminalProgress"]

WRITER_STAGES = ("embed", "write")


@dataclass
class FileProgress:
    """One file in flight: its stage and how far that stage is (`unit`: page or chunk)."""

    file: str
    stage: str  # parse | ocr | parsed | embed | write
    done: int = 0
    total: int | None = None
    unit: str = ""

    def describe(self) -> str:
        """`ocr 3/9 pages`, `embed 12/40 chunks`, `parse`."""
        if self.total is None or not self.unit:
            return self.stage
        return f"{self.stage} {self.done}/{self.total} {self.unit}s"


@dataclass
class SyncProgress:
    """A snapshot of one run (what a monitor receives)."""

    files_seen: int = 0  # files found under the given paths
    files_total: int = 0  # of those, new or changed: the ones this run parses and writes
    files_done: int = 0  # of files_total: written or failed
    chunks_done: int = 0  # chunks embedded (and, after each group, written)
    chunks_total: int | None = None  # exact for parsed files + an estimate for the rest; None before any
    current: FileProgress | None = None  # the file the run waits on: being written, else being parsed/OCR'd
    active: list[FileProgress] = field(default_factory=list)  # every file in flight, oldest first

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for the job row)."""
        return asdict(self)


class IngestMonitor:
    """Follows and steers one ingest run; the default follows nothing and never cancels."""

    def progress(self, snapshot: SyncProgress) -> None:
        """Called on the writer thread whenever something moved (often: throttle expensive work)."""

    def cancelled(self) -> bool:
        """True to stop the run between files: unwritten files keep their previous version."""
        return False

    def close(self, snapshot: SyncProgress) -> None:
        """Called once when the run ends (also after a cancel or an error)."""


class ProgressTracker:
    """Thread-safe state of one run, updated by the parse workers and the writer."""

    def __init__(self, files_seen: int, sizes: dict[str, int]) -> None:
        self._lock = threading.Lock()
        self._sizes = dict(sizes)  # bytes of each file to index, for the chunk estimate
        self._active: dict[str, FileProgress] = {}
        # Running sums for the estimate, per extension: [files, bytes] not parsed yet; [chunks, bytes] parsed.
        self._unparsed: dict[str, list[int]] = {}
        for path, size in self._sizes.items():
            sums = self._unparsed.setdefault(_kind(path), [0, 0])
            sums[0] += 1
            sums[1] += size
        self._parsed: dict[str, list[int]] = {}
        self._parsed_files = 0
        self._seen_parsed: set[str] = set()
        self._snapshot = SyncProgress(files_seen=files_seen, files_total=len(sizes))
        self.version = 0  # bumped by every change; a monitor is only called when it moved

    def stage(self, path: str, stage: str, done: int = 0, total: int | None = None, unit: str = "") -> None:
        """File `path` entered (or advanced in) `stage`."""
        with self._lock:
            entry = self._active.get(path)
            if entry is None:
                self._active[path] = FileProgress(path, stage, done, total, unit)
            else:
                entry.stage, entry.done, entry.total, entry.unit = stage, done, total, unit
            self.version += 1

    def parsed(self, path: str, chunks: int) -> None:
        """The writer took a parsed file: its chunk count is now known."""
        with self._lock:
            self._count_parsed(path, chunks)
            self._active[path] = FileProgress(path, "embed", 0, chunks, "chunk")
            self.version += 1

    def _count_parsed(self, path: str, chunks: int | None) -> None:
        """Move `path` from the unparsed bytes to the parsed sums (a failed file: to neither)."""
        if path in self._seen_parsed:
            return
        self._seen_parsed.add(path)
        size = self._sizes.get(path, 0)
        unparsed = self._unparsed.setdefault(_kind(path), [0, 0])
        unparsed[0] -= 1
        unparsed[1] -= size
        if chunks is not None:
            sums = self._parsed.setdefault(_kind(path), [0, 0])
            sums[0] += chunks
            sums[1] += size
            self._parsed_files += 1

    def embedded(self, per_file: dict[str, int]) -> None:
        """Chunks of these files were embedded (counts per file)."""
        with self._lock:
            for path, count in per_file.items():
                entry = self._active.get(path)
                if entry is not None:
                    entry.done += count
                    if entry.total is not None and entry.done >= entry.total:
                        entry.stage = "write"  # all embedded: waits for its group's upsert
                self._snapshot.chunks_done += count
            self.version += 1

    def finished(self, path: str, failed: bool = False) -> None:
        """The file is written (or failed): it leaves the active list."""
        with self._lock:
            self._active.pop(path, None)
            if failed:
                self._count_parsed(path, None)
            self._snapshot.files_done += 1
            self.version += 1

    def snapshot(self) -> SyncProgress:
        """A copy of the current state."""
        with self._lock:
            active = [FileProgress(**asdict(f)) for f in self._active.values()]
            # The file the writer works on: the one being embedded (one at a time, in order), else one
            # waiting to be written, else the parse or OCR the writer waits for.
            embedding = [f for f in active if f.stage == "embed" and f.done > 0]
            writing = [f for f in active if f.stage in WRITER_STAGES]
            waiting = [f for f in active if f.stage in ("ocr", "parse")]
            current = (embedding or writing or waiting or active or [None])[0]
            return SyncProgress(files_seen=self._snapshot.files_seen, files_total=self._snapshot.files_total,
                                files_done=self._snapshot.files_done, chunks_done=self._snapshot.chunks_done,
                                chunks_total=self._estimate_total(), current=current, active=active)

    def _estimate_total(self) -> int | None:
        """Chunks of the parsed files, plus an estimate for the rest: their bytes at the chunks per byte of
        parsed files of the same kind (extension), else the mean chunks per parsed file (a PDF's bytes are
        mostly not text, so bytes compare only within a kind)."""
        if not self._parsed_files:
            return None
        known = sum(chunks for chunks, _bytes in self._parsed.values())
        per_file = known / self._parsed_files
        estimate = 0.0
        for kind, (files, unparsed_bytes) in self._unparsed.items():
            if files <= 0:
                continue
            chunks, size = self._parsed.get(kind, (0, 0))
            estimate += unparsed_bytes * chunks / size if size > 0 else files * per_file
        return known + round(estimate)


def _kind(path: str) -> str:
    return os.path.splitext(path)[1].lower()


class TerminalProgress(IngestMonitor):
    """`rag ingest`'s bar on stderr: chunks written of the (estimated) total, labelled with the files done,
    the current file and its stage, e.g. `3/10 files · scan.pdf: ocr 2/9 pages`."""

    NAME_CHARS = 32

    def __init__(self, file: Any = None) -> None:
        from tqdm import tqdm  # tqdm is light, but only the CLI needs it

        self._bar = tqdm(desc="ingest", unit="chunk", file=file or sys.stderr, dynamic_ncols=True)
        self._last_refresh = 0.0

    def progress(self, snapshot: SyncProgress) -> None:
        """Move the bar to `snapshot` (tqdm itself limits how often it redraws)."""
        bar = self._bar
        if snapshot.chunks_total is not None and snapshot.chunks_total != bar.total:
            bar.total = max(snapshot.chunks_total, snapshot.chunks_done)
        bar.set_description_str(self.label(snapshot), refresh=False)
        delta = snapshot.chunks_done - bar.n
        if delta > 0:
            bar.update(delta)
        elif time.monotonic() - self._last_refresh >= bar.mininterval:
            bar.refresh()  # the label moved (an OCR page) while the count did not
        self._last_refresh = time.monotonic()

    @classmethod
    def label(cls, snapshot: SyncProgress) -> str:
        """The bar's label for one snapshot."""
        text = f"{snapshot.files_done}/{snapshot.files_total} files"
        if snapshot.current is not None:
            name = Path(snapshot.current.file).name
            if len(name) > cls.NAME_CHARS:
                name = name[: cls.NAME_CHARS - 1] + "…"
            text += f" · {name}: {snapshot.current.describe()}"
        return text

    def close(self, snapshot: SyncProgress) -> None:
        """Leave the bar at its final count."""
        self.progress(snapshot)
        self._bar.close()
