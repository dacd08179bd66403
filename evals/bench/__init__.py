"""`rag bench`: speed of the product, measured in one run on this machine, with ratios to reference points.

The package, one module per job (each part is a function returning a JSON-able dict):
`config` (sizes, `--sizes`), `data` (SQuAD questions and docs, synthetic chunks), `measure` (timing helpers),
`parts` (ingest, query stages, scale), `baseline` (the LangChain recipe), `report` (targets, Markdown),
`run` (`run_bench`, the parts in order) and, here, `main`, the CLI adapter.

Four parts:
1. `bench_ingest`   end-to-end `Pipeline.ingest` chunks/s on SQuAD docs vs raw `model.encode` of the same
                    chunk texts with the same model and batch size (the model-bound limit), plus where the
                    rest of the time goes (parse, chunk, embed, bm25, upsert, cleanup).
2. `bench_query`    p50/p95 per stage (embed, search, fuse, rerank, total) for `hybrid` and `rerank` over
                    SQuAD questions, on the ingested chunks padded with synthetic chunks to 10k, and the
                    share of the total that is not model inference.
3. `bench_baseline` the hand-written LangChain recipe (evals/langchain_baseline.py) vs ours: nDCG@10 and
                    latency on Cranfield (BEIR, one document per record), and latency at 100k synthetic chunks.
4. `bench_scale`    BM25 / dense / hybrid leg latency, build time and memory at growing sizes for Qdrant
                    Edge (EdgeStore), qdrant-client local mode (ServerStore ":memory:", until it stops being
                    usable) and a Qdrant server when RAG_QDRANT_URL is set.

Two more parts run only when named in `--parts` (they start subprocesses or export models):
5. `bench_serve`    (`evals.bench.serve`) `rag serve` as a subprocess: API overhead over an in-process
                    hybrid search, throughput and p95 at 1/4/16 clients, p95 during an API ingest job,
                    `rag ask` through a warm server vs a cold CLI.
6. `bench_backends` (`evals.bench.backends`) evals/bench_backends.py: model backends as ratios to fp32.

Synthetic chunks draw words from the unigram distribution of the real SQuAD + Cranfield text (so term
frequencies are Zipfian like real text) and carry random unit vectors; queries are real SQuAD questions.
`--json` prints one JSON object on stdout; the Markdown report goes to `--out` or stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from evals.bench.baseline import bench_baseline_at_scale, bench_baseline_cranfield
from evals.bench.config import DEFAULT_SIZES, QUICK_SIZES, BenchConfig, parse_sizes
from evals.bench.data import Vocabulary, load_vocabulary, random_unit_vectors, squad_questions, synthetic_chunks
from evals.bench.measure import stats_ms
from evals.bench.parts import bench_ingest, bench_query, bench_scale, measure_legs
from evals.bench.report import render_markdown, targets
from evals.bench.run import ALL_PARTS, EXTRA_PARTS, PARTS, run_bench
from rag.config import Settings
from rag.errors import ConfigError

__all__ = ["ALL_PARTS", "BenchConfig", "EXTRA_PARTS", "DEFAULT_SIZES", "PARTS", "QUICK_SIZES", "Vocabulary", "bench_baseline_at_scale",
           "bench_baseline_cranfield", "bench_ingest", "bench_query", "bench_scale", "load_vocabulary", "main",
           "measure_legs", "parse_sizes", "random_unit_vectors", "render_markdown", "run_bench", "squad_questions",
           "stats_ms", "synthetic_chunks", "targets"]

log = logging.getLogger(__name__)


def main(args: Any, settings: Settings) -> int:
    """Entry point of `rag bench` (args: json, out, sizes, quick)."""
    if log.getEffectiveLevel() > logging.INFO:
        logging.getLogger("evals").setLevel(logging.INFO)
    sizes = parse_sizes(getattr(args, "sizes", None))
    cfg = BenchConfig.quick_config(sizes) if getattr(args, "quick", False) else BenchConfig(sizes=sizes or list(DEFAULT_SIZES))
    if not cfg.quick and cfg.baseline_scale_size not in cfg.sizes:
        cfg.baseline_scale_size = max(s for s in cfg.sizes if s <= cfg.baseline_scale_size) if any(
            s <= cfg.baseline_scale_size for s in cfg.sizes) else cfg.sizes[0]
    partial = Path(args.out).with_suffix(".partial.json") if getattr(args, "out", None) else None
    parts = tuple(p.strip() for p in (getattr(args, "parts", None) or ",".join(PARTS)).split(",") if p.strip())
    unknown = set(parts) - set(ALL_PARTS)
    if unknown:
        raise ConfigError(f"--parts: unknown part(s) {', '.join(sorted(unknown))}; use {', '.join(ALL_PARTS)}")
    # `run_bench` is looked up in this module at call time, so tests can replace it here.
    result = run_bench(settings, cfg, partial_path=partial, parts=parts)
    markdown = render_markdown(result)
    if getattr(args, "out", None):
        Path(args.out).write_text(markdown + "\n", encoding="utf-8")
    if getattr(args, "json", False):
        if not getattr(args, "out", None):
            print(markdown, file=sys.stderr)
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        print(markdown)
    return 0
