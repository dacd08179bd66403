"""`run_bench`: runs the chosen parts of `rag bench` in order and returns one JSON-able dict."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from evals.bench.backends import BackendsConfig, bench_backends
from evals.bench.baseline import bench_baseline_cranfield
from evals.bench.config import BenchConfig
from evals.bench.data import load_vocabulary, pick_squad_files, squad_questions
from evals.bench.measure import Progress
from evals.bench.parts import bench_ingest, bench_query, bench_scale, pad_collection
from evals.bench.report import targets
from evals.bench.serve import ServeConfig, bench_serve
from evals.datasets import evaldata_dir
from rag.config import Settings
from rag.embedding import embedder_from_settings
from rag.errors import ConfigError
from rag.rerank import load_reranker

PARTS = ("ingest", "query", "baseline", "scale")
# Parts run only when asked for (`--parts serve,backends`): they start subprocesses / export models.
EXTRA_PARTS = ("serve", "backends")
ALL_PARTS = PARTS + EXTRA_PARTS


def run_bench(settings: Settings, cfg: BenchConfig, progress: Callable[[str], None] | None = None,
              workdir: Path | None = None, partial_path: Path | None = None,
              parts: Sequence[str] = PARTS, serve_cfg: ServeConfig | None = None,
              backends_cfg: BackendsConfig | None = None) -> dict[str, Any]:
    """Run the chosen parts and return one JSON-able dict (see the module docstring).

    `partial_path`: the figures measured so far are rewritten there after each part, so an
    interrupted long run keeps them. "query" needs "ingest" (it queries the ingested collection).
    "serve" and "backends" (in EXTRA_PARTS) run only when named; `serve_cfg` / `backends_cfg` default to
    their quick or full sizes after `cfg.quick`.
    """
    progress = progress or Progress()
    started = time.perf_counter()
    evaldata = evaldata_dir()
    squad = evaldata / "squad"
    if not (squad / "docs").is_dir():
        raise ConfigError(f"SQuAD docs not found at {squad / 'docs'}; set RAG_EVALDATA to the evaldata folder")
    own_tmp = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        import torch  # heavy: only to report the thread count the models run with

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_at_start": list(os.getloadavg())},
        "settings": {k: getattr(settings, k) for k in ("embed_model", "embed_batch_size", "rerank_model",
                                                       "chunk_tokens", "chunk_overlap_tokens", "leg_limit",
                                                       "rerank_top_m", "rrf_k")},
        "config": {"quick": cfg.quick, "sizes": cfg.sizes, "query_pad_to": cfg.query_pad_to,
                   "hybrid_queries": cfg.hybrid_queries, "rerank_queries": cfg.rerank_queries,
                   "baseline_scale_size": cfg.baseline_scale_size},
    }
    try:
        def checkpoint() -> None:
            if partial_path is not None:
                Path(partial_path).write_text(json.dumps(result, default=str), encoding="utf-8")

        progress("loading models")
        t0 = time.perf_counter()
        embedder = embedder_from_settings(settings)
        reranker = load_reranker(settings)
        result["model_load_s"] = round(time.perf_counter() - t0, 2)
        vocab = load_vocabulary(evaldata)
        rng = np.random.default_rng(7)

        files = pick_squad_files(squad / "docs", cfg.ingest_max_kb)
        if "ingest" not in parts:
            files = []
        elif cfg.ingest_max_chars:
            cut = workdir / "ingest_docs"
            cut.mkdir(parents=True, exist_ok=True)
            text = files[0].read_text(encoding="utf-8")[: cfg.ingest_max_chars]
            (cut / files[0].name).write_text(text[: text.rfind("\n\n")] if "\n\n" in text else text, encoding="utf-8")
            files = [cut / files[0].name]
        if files:
            result["ingest"], pipe = bench_ingest(settings, embedder, files, workdir, progress)
            checkpoint()
            try:
                if "query" in parts:
                    result["query"] = {"collection": pad_collection(pipe.store, vocab, cfg.query_pad_to,
                                                                    embedder.dimension, rng, progress)}
                    questions = [r["question"] for r in squad_questions(squad, {f.name for f in files})]
                    modes = {"hybrid": cfg.hybrid_queries}
                    if reranker is not None:
                        modes["rerank"] = cfg.rerank_queries
                    result["query"].update(bench_query(pipe, questions, modes, progress))
                    checkpoint()
            finally:
                pipe.close()

        result["baseline"] = {}
        if "baseline" in parts:
            result["baseline"]["cranfield"] = bench_baseline_cranfield(settings, embedder, reranker, cfg, workdir, progress)
            checkpoint()

        if "scale" in parts:
            all_questions = [r["question"] for r in squad_questions(squad)]
            scale_qs = all_questions[: max(cfg.scale_queries, cfg.baseline_scale_queries)]
            if "baseline" not in parts:
                cfg.baseline_scale_size = -1  # no at-scale comparison either
            result["scale"] = bench_scale(settings, embedder, reranker, vocab, cfg, scale_qs, workdir, progress)
            result["baseline"]["at_scale"] = result["scale"].pop("baseline_at_scale")
            checkpoint()

        if "serve" in parts:
            scfg = serve_cfg or (ServeConfig.quick() if cfg.quick else ServeConfig())
            docs = sorted((squad / "docs").glob("*.md"), key=lambda p: (p.stat().st_size, p.name))
            build_files = docs[: scfg.docs]
            if scfg.ingest_max_chars:
                cut = workdir / "serve_docs"
                cut.mkdir(parents=True, exist_ok=True)
                cut_files = []
                for f in build_files:
                    text = f.read_text(encoding="utf-8")[: scfg.ingest_max_chars]
                    (cut / f.name).write_text(text[: text.rfind("\n\n")] if "\n\n" in text else text, encoding="utf-8")
                    cut_files.append(cut / f.name)
                build_files = cut_files
            ingest_files = docs[scfg.docs: scfg.docs + scfg.ingest_docs]
            serve_qs = [r["question"] for r in squad_questions(squad, {f.name for f in build_files})] or \
                [r["question"] for r in squad_questions(squad)][:50]
            result["serve"] = bench_serve(settings, embedder, build_files, ingest_files, serve_qs, vocab, scfg,
                                          workdir, progress)
            checkpoint()

        if "backends" in parts:
            bcfg = backends_cfg or (BackendsConfig.quick() if cfg.quick else BackendsConfig())
            result["backends"] = bench_backends(settings, bcfg, workdir, progress)
            checkpoint()
        result["targets"] = targets(result)
        result["seconds"] = round(time.perf_counter() - started, 1)
        progress(f"done in {result['seconds']:.0f}s")
        return result
    finally:
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
