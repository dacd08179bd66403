"""Issue 16: what running an ingest as a job costs over a direct sync, on ../shared/evaldata/docs-mixed.

Three ways to ingest the same folder into a fresh store, interleaved, `--runs` times each:

- `direct`: one `ingest.sync` run over the folder, in-process (what `rag ingest FOLDER` does);
- `job`: the same through the durable queue: `JobQueue.submit`, the `JobRunner` thread, progress written
  to the job row by `JobMonitor` (`ingest_priority = "normal"`: the queue's own cost, not the low-priority
  worker process's);
- `per_file`: what a job did before issue 16 was finished: one sync per file (each reading the collection's
  manifest and optimizing the store), then one over the folder for deleted files.

A warm-up run is a real direct ingest (parse, OCR, embed: its time is the end-to-end figure). It fills two
in-memory caches, parsed documents by path and passage vectors by text, which every later run reuses: all
variants then do the same parse-free, model-free work, and the differences between them are the sync and
queue overhead alone (on a shared 2-core machine, re-parsing a 619-page PDF and an 872-page DOCX every run
would bury them in noise). The ratios over these cached runs are upper bounds; `*_end_to_end` adds the
measured overhead to the warm-up's real ingest time.
Prints JSON: seconds of each run, the medians, the ratios, the load average.

    python -m evals.ingest_overhead [--docs DIR] [--runs 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ingest.sync
from evals.datasets import evaldata_dir
from ingest.jobs import JobQueue, JobRunner, jobs_db_path
from ingest.sync import discover_files, ingest_paths
from rag.access import Caller
from rag.config import Settings, load_settings
from rag.embedding import load_embedder
from rag.store import open_store

VARIANTS = ("direct", "job", "per_file")


class _CachedPassages:
    """The embedder with passage vectors remembered by text (every variant embeds the same chunks)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.embed_passages(missing)))
        return np.stack([self.cache[t] for t in texts])


class _CachedParse:
    """`ingest.sync.parse_file` remembering each file's parsed document (installed for the measured runs)."""

    def __init__(self) -> None:
        self.real = ingest.sync.parse_file
        self.cache: dict[str, Any] = {}

    def __call__(self, path: Path, settings: Settings) -> Any:
        key = str(path)
        if key not in self.cache:
            try:
                self.cache[key] = self.real(path, settings)
            except Exception as exc:  # noqa: BLE001  (a file that fails, fails the same way every run)
                self.cache[key] = exc
        found = self.cache[key]
        if isinstance(found, Exception):
            raise found
        return found


def _direct(settings: Settings, embedder: Any, docs: Path) -> dict[str, Any]:
    report = ingest_paths([docs], settings, open_store(settings), embedder, progress=False)
    return {"indexed": report.indexed, "chunks": report.chunks_added}


def _job(settings: Settings, embedder: Any, docs: Path) -> dict[str, Any]:
    store = open_store(settings)
    queue = JobQueue(jobs_db_path(settings.state_dir))
    runner = JobRunner(queue, lambda _c, paths, acl, _caller, monitor: ingest_paths(
        paths, settings, store, embedder, acl=acl, progress=False, monitor=monitor), idle_poll_s=0.05)
    runner.start()
    try:
        job = queue.submit(settings.collection, [str(docs)], Caller.local(list(settings.default_acl)))
        done = queue.wait(job.id, timeout=3600, poll_s=0.01)
    finally:
        runner.stop()
    return {"indexed": sum(f["status"] == "indexed" for f in done.files), "chunks": done.chunks_added}


def _per_file(settings: Settings, embedder: Any, docs: Path) -> dict[str, Any]:
    store = open_store(settings)
    files, _roots = discover_files([docs])
    indexed = chunks = 0
    for path in files:
        report = ingest_paths([path], settings, store, embedder, progress=False)
        indexed += report.indexed
        chunks += report.chunks_added
    ingest_paths([docs], settings, store, embedder, progress=False)
    return {"indexed": indexed, "chunks": chunks}


RUNNERS: dict[str, Callable[[Settings, Any, Path], dict[str, Any]]] = {
    "direct": _direct, "job": _job, "per_file": _per_file}


def measure(docs: Path, settings: Settings, runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Warm-up (fills the vector cache, loads the parsers), then `runs` interleaved rounds of every variant."""
    embedder = _CachedPassages(load_embedder(settings.embed_model, batch_size=settings.embed_batch_size))
    work = Path(tempfile.mkdtemp(prefix="rag-ingest-overhead-"))

    def fresh(name: str) -> Settings:
        return settings.replace(qdrant_path=str(work / name / "qdrant"), state_dir=str(work / name / "state"),
                                ingest_priority="normal")

    parse = _CachedParse()
    ingest.sync.parse_file = parse  # type: ignore[assignment]  (restored below)
    try:
        t0 = time.perf_counter()
        warm = _direct(fresh("warmup"), embedder, docs)  # the real thing: parse, OCR, embed (filling the caches)
        warmup_s = round(time.perf_counter() - t0, 3)
        log(f"warm-up (real direct ingest): {warm} in {warmup_s:.1f}s")
        seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        outcome: dict[str, dict[str, Any]] = {}
        for run in range(runs):
            order = VARIANTS if run % 2 == 0 else tuple(reversed(VARIANTS))  # interleaved, order alternating
            for variant in order:
                t0 = time.perf_counter()
                outcome[variant] = RUNNERS[variant](fresh(f"{variant}-{run}"), embedder, docs)
                seconds[variant].append(round(time.perf_counter() - t0, 3))
                log(f"run {run + 1} {variant}: {seconds[variant][-1]:.1f}s {outcome[variant]}")
    finally:
        ingest.sync.parse_file = parse.real
    medians = {v: statistics.median(s) for v, s in seconds.items()}
    return {"docs": str(docs), "files": len(discover_files([docs])[0]), "runs": runs, "seconds": seconds,
            "median_s": medians, "outcome": outcome, "warmup_direct_end_to_end_s": warmup_s,
            "ratio_job_to_direct_cached": round(medians["job"] / medians["direct"], 3),
            "ratio_per_file_to_direct_cached": round(medians["per_file"] / medians["direct"], 3),
            "ratio_job_to_direct_end_to_end": round((warmup_s + medians["job"] - medians["direct"]) / warmup_s, 3),
            "ratio_per_file_to_direct_end_to_end": round(
                (warmup_s + medians["per_file"] - medians["direct"]) / warmup_s, 3),
            "load_average": os.getloadavg(),
            "cached": "parsed documents and passage vectors after a warm-up run (parse and model time excluded)"}


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print (or write) its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=evaldata_dir() / "docs-mixed" / "files")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not args.docs.is_dir():
        print(f"ingest_overhead: {args.docs}: no such folder (see ../shared/evaldata/README)", file=sys.stderr)
        return 2
    result = measure(args.docs, load_settings(), max(1, args.runs), lambda m: print(m, file=sys.stderr, flush=True))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
