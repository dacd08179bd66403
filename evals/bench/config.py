"""`rag bench` configuration: sizes and query counts of one run, and the `--sizes` parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rag.errors import ConfigError

DEFAULT_SIZES = [10_000, 100_000]
QUICK_SIZES = [2_000]


@dataclass
class BenchConfig:
    """Sizes and query counts of one run. `quick()` is the smoke-test variant."""

    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    ingest_max_kb: int = 200  # SQuAD docs, smallest first, until this much text
    ingest_max_chars: int | None = None  # smoke runs: ingest only the first N characters of the first doc
    query_pad_to: int = 10_000  # part 2 collection size (real chunks + synthetic filler)
    hybrid_queries: int = 100
    rerank_queries: int = 30
    cranfield_queries: int | None = None  # None = all judged queries
    cranfield_rerank_queries: int | None = 40  # rerank costs ~30 cross-encoder pairs per query; None = all
    cranfield_docs: int | None = None  # None = the whole corpus
    baseline_scale_size: int = 100_000
    baseline_scale_queries: int = 20
    scale_queries: int = 100
    scale_unoptimized_queries: int = 20
    local_mode_queries: int = 5
    local_mode_max_p50_s: float = 1.0  # qdrant-client local mode stops at the size predicted past this
    local_mode_max_size: int = 20_000  # ... and never runs above this (its scan is Python: 100k predicted ~7 s/query)
    # Synthetic dense vectors of the scale part: "topics" (clustered like real embeddings) or "random"
    # (uniform on the sphere: no neighbour structure, the worst case for any approximate index).
    scale_vectors: str = "topics"
    recall_queries: int = 50  # dense recall@10 against exact search (exact search: ~1 s per query at 1M)
    # Search-time variants of the index settings measured on the same built Edge collection (hybrid p50 +
    # recall@10 each): how the defaults of hnsw_ef / oversampling / ACORN were chosen.
    search_sweep: list[dict[str, Any]] = field(default_factory=lambda: [
        {"hnsw_ef": 64}, {"hnsw_ef": 128}, {"hnsw_ef": 512}, {"oversampling": 1.0}, {"rescore": False}])
    sweep_queries: int = 50
    optimize_timeout_note_s: float = 600.0
    quick: bool = False

    @classmethod
    def quick_config(cls, sizes: list[int] | None = None) -> "BenchConfig":
        s = sizes or list(QUICK_SIZES)
        return cls(sizes=s, ingest_max_kb=18, ingest_max_chars=6000, query_pad_to=500, hybrid_queries=5,
                   rerank_queries=2, cranfield_queries=5, cranfield_rerank_queries=2, cranfield_docs=60,
                   baseline_scale_size=s[0], baseline_scale_queries=2, scale_queries=10, scale_unoptimized_queries=3,
                   local_mode_queries=2, recall_queries=5, search_sweep=[{"hnsw_ef": 64}],
                   sweep_queries=3, quick=True)


def parse_sizes(text: str | None) -> list[int] | None:
    """'10k,100k,1M' or '10000,100000' -> [10000, 100000, 1000000]; ConfigError on anything else."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = 1
        if part[-1] in "km":
            mult = 1_000 if part[-1] == "k" else 1_000_000
            part = part[:-1]
        try:
            value = int(float(part) * mult)
        except ValueError:
            raise ConfigError(f"--sizes: {text!r} is not a list of sizes; use e.g. 10k,100k,1M") from None
        if value <= 0:
            raise ConfigError(f"--sizes: sizes must be positive, got {value}")
        out.append(value)
    return sorted(set(out)) or None
