"""Timing and memory helpers shared by the bench parts."""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from evals.metrics import latency_summary
from rag.models import SearchFilter

PUBLIC = ["public"]


class Progress:
    """Progress lines on stderr with elapsed time (the bench is long; silence looks like a hang)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[bench {time.perf_counter() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)


def stats_ms(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p95 and mean of millisecond values, rounded to 3 places (`evals.metrics.latency_summary`);
    empty input gives zeros with n=0."""
    summary = latency_summary(values)
    if not summary["count"]:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "mean": 0.0}
    return {"n": int(summary["count"]), **{key: round(float(summary[key]), 3) for key in ("p50", "p95", "mean")}}


def _resident_bytes() -> tuple[int, int]:
    """(resident, resident file-backed + shared) bytes of this process (psutil, else /proc/self/statm)."""
    try:
        import psutil  # optional: /proc is the fallback

        info = psutil.Process().memory_info()
        return info.rss, getattr(info, "shared", 0)
    except ImportError:  # pragma: no cover - psutil ships with the dev environment
        with open("/proc/self/statm") as fh:
            fields = fh.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        return int(fields[1]) * page, int(fields[2]) * page


def rss_mb() -> float:
    """Resident set size of this process in MB."""
    return _resident_bytes()[0] / 1e6


def rss_anon_mb() -> float:
    """The anonymous part of the RSS in MB: the process's own memory, without the memory-mapped files
    (and shared memory) the RSS also counts."""
    rss, shared = _resident_bytes()
    return (rss - shared) / 1e6


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded to 3 places; None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ms_since(t0: float) -> float:
    """Milliseconds elapsed since the `time.perf_counter()` reading `t0`."""
    return (time.perf_counter() - t0) * 1000.0


def public_filter() -> SearchFilter:
    """The filter the product applies by default (callers hold the 'public' label)."""
    return SearchFilter(acl=list(PUBLIC))
