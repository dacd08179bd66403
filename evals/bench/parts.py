"""The measured parts of `rag bench`: ingest (1), query stages (2) and scale (4); the baseline (3) is in
`evals.bench.baseline`.

1. `bench_ingest`  end-to-end `Pipeline.ingest` chunks/s on SQuAD docs vs raw `model.encode` of the same
                   chunk texts with the same model and batch size (the model-bound limit), plus where the
                   rest of the time goes (parse, chunk, embed, bm25, upsert, cleanup).
2. `bench_query`   p50/p95 per stage (embed, search, fuse, rerank, total) for `hybrid` and `rerank` over
                   SQuAD questions, on the ingested chunks padded with synthetic chunks, and the share of
                   the total that is not model inference.
4. `bench_scale`   BM25 / dense / hybrid leg latency, build time and memory at growing sizes for Qdrant
                   Edge (EdgeStore), qdrant-client local mode (ServerStore ":memory:", up to 20k chunks and
                   until it stops being usable) and a Qdrant server when RAG_QDRANT_URL is set. The hybrid
                   query fetches payloads for the final top-k only (`hybrid_all_payloads_ms`: every leg
                   result's payload, as before); the dense leg's recall@10 is measured against exact
                   search, also under a restrictive ACL with ACORN on and off, and `search_sweep` re-measures
                   search-time variants of the index settings (hnsw_ef, oversampling, rescore) on the same
                   built collection. The index settings come from Settings (rag.store.vector_index).
"""

from __future__ import annotations

import dataclasses
import gc
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evals.bench.baseline import bench_baseline_at_scale
from evals.bench.config import BenchConfig
from evals.bench.data import (RESTRICTED_EVERY, RESTRICTED_LABEL, SyntheticCorpus, Vocabulary, avg_bm25_len,
                              collection_info, fill_store, random_unit_vectors, vector_sampler)
from evals.bench.measure import ms_since, public_filter, ratio, rss_anon_mb, rss_mb, stats_ms
from ingest.loaders import parse_file
from rag.config import Settings
from rag.errors import RagError
from rag.fusion import reciprocal_rank_fusion
from rag.lexical import BM25Encoder
from rag.models import SearchFilter
from rag.pipeline import Pipeline
from rag.retriever import bm25_encoder_for
from rag.store import EdgeStore, ServerStore
from rag.store.vector_index import VectorIndexConfig
from rag.store.catalog import iter_chunks


def bench_ingest(settings: Settings, embedder: Any, files: list[Path], workdir: Path,
                 progress: Callable[[str], None]) -> tuple[dict[str, Any], Any]:
    """Part 1. Returns (figures, the Pipeline holding the ingested collection, still open for part 2)."""
    s = settings.replace(qdrant_path=str(workdir / "ingest_qdrant"), state_dir=str(workdir / "state"),
                         collection="bench_ingest")
    pipe = Pipeline(s, embedder=embedder)
    embedder.embed_passages(["warm up the model and its thread pool"] * 4)
    # unstructured loads its NLP pipeline on first use (seconds): a one-time cost per process, reported
    # apart so the ratio reflects steady-state throughput.
    warm = workdir / "warmup.md"
    warm.write_text("# Warm up\n\nOne paragraph to load the parser.\n", encoding="utf-8")
    t0 = time.perf_counter()
    parse_file(warm, s)
    parser_warmup_s = time.perf_counter() - t0
    progress(f"ingest: Pipeline.ingest of {len(files)} SQuAD docs ({sum(f.stat().st_size for f in files) // 1024} KB)")
    report = pipe.ingest([str(f) for f in files], progress=False)
    if report.failed:
        raise RagError(f"bench ingest: {report.failed} file(s) failed: {report.failures[:3]}")
    texts = [chunk.text for chunk in iter_chunks(pipe.store, fields=["text"])]
    n = len(texts)
    progress(f"ingest: {n} chunks in {report.seconds:.1f}s; now raw model.encode of the same {n} texts")
    model = embedder.model  # the very same SentenceTransformer the pipeline used (same weights, same settings)
    t0 = time.perf_counter()
    model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False)
    raw_s = time.perf_counter() - t0
    tokens = [embedder.count_tokens(t) for t in texts]
    e2e_cps = n / max(report.seconds, 1e-9)
    raw_cps = n / max(raw_s, 1e-9)
    timings = dict(report.timings_s)
    figures = {
        "dataset": "squad/docs",
        "files": [f.name for f in files],
        "kb": round(sum(f.stat().st_size for f in files) / 1024, 1),
        "chunks": n,
        "mean_tokens_per_chunk": round(float(np.mean(tokens)), 1) if tokens else 0.0,
        "embed_model": embedder.model_name,
        "batch_size": embedder.batch_size,
        "end_to_end_s": round(report.seconds, 2),
        "end_to_end_chunks_per_s": round(e2e_cps, 2),
        "model_bound_s": round(raw_s, 2),
        "model_bound_chunks_per_s": round(raw_cps, 2),
        "ratio_to_model_bound": ratio(e2e_cps, raw_cps),
        "parser_warmup_s": round(parser_warmup_s, 2),
        "timings_s": timings,
        # parse and chunk run in a worker thread, overlapped with embedding; the rest is serial.
        "share_of_end_to_end": {k: round(v / max(report.seconds, 1e-9), 3) for k, v in timings.items()},
        "unaccounted_s": round(report.seconds - sum(v for k, v in timings.items() if k not in ("parse", "chunk")), 2),
    }
    return figures, pipe


def pad_collection(store: Any, vocab: Vocabulary, target: int, dim: int, rng: np.random.Generator,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """Add synthetic chunks until the collection holds `target` points, then optimize it."""
    have = store.count(None)
    extra = max(0, target - have)
    out: dict[str, Any] = {"real_chunks": have, "synthetic_chunks": extra}
    if extra:
        progress(f"query: padding the collection with {extra:,} synthetic chunks to {target:,}")
        corpus = SyntheticCorpus(vocab.sample_texts(extra, rng), random_unit_vectors(extra, dim, rng))
        out.update(fill_store(store, corpus, bm25_encoder_for(store.info()), prefix="filler"))
    t0 = time.perf_counter()
    store.optimize()
    out["optimize_s"] = round(time.perf_counter() - t0, 2)
    return out


def bench_query(pipe: Any, questions: list[str], modes: dict[str, int], progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 2: per-stage p50/p95 for each mode (mode -> number of questions) through Pipeline.search."""
    out: dict[str, Any] = {}
    for mode, n in modes.items():
        qs = questions[:n]
        if not qs:
            continue
        for q in qs[:2]:  # warm-up: first calls pay for lazy loads and allocator growth
            pipe.search(q, mode=mode)
        progress(f"query: {len(qs)} questions in {mode} mode")
        stages: dict[str, list[float]] = {}
        wall: list[float] = []
        for q in qs:
            t0 = time.perf_counter()
            result = pipe.search(q, mode=mode)
            wall.append(ms_since(t0))
            for key, value in result.timings_ms.items():
                stages.setdefault(key, []).append(float(value))
        total = np.asarray(stages.get("total", wall))
        inference = np.asarray(stages.get("embed", [0.0] * len(qs))) + np.asarray(stages.get("rerank", [0.0] * len(qs)))
        non_inf = total - inference
        out[mode] = {
            "queries": len(qs),
            "stages_ms": {k: stats_ms(v) for k, v in stages.items()},
            "wall_ms": stats_ms(wall),
            "non_inference_ms": stats_ms(non_inf.tolist()),
            # Share of summed query time that is not embed or rerank (the model calls). "embed" also
            # holds the BM25 query tokenization, so this slightly under-counts non-inference work.
            "non_inference_share": round(float(non_inf.sum() / max(total.sum(), 1e-9)), 4),
        }
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far in MB (getrusage; Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


@dataclass
class QuerySet:
    """The scale part's queries: random dense vectors and the BM25 vectors of real questions."""

    dense: list[list[float]]
    sparse: list[Any]


def _hybrid(store: Any, dense: list[float], sparse: Any, flt: Any, limit: int, rrf_k: int, top_k: int,
            payloads_last: bool) -> list[Any]:
    """Both legs + RRF; the final top-k with payloads. `payloads_last`: the legs return ids only and the
    top-k payloads are fetched afterwards (2 x limit payloads otherwise)."""
    d, s = store.search(dense, sparse, flt, limit, with_payload=not payloads_last)
    fused = reciprocal_rank_fusion({"dense": [c.chunk.id for c in d], "bm25": [c.chunk.id for c in s]}, k=rrf_k)
    top = [item.id for item in fused[:top_k]]
    return store.retrieve(top) if payloads_last else top


def measure_legs(store: Any, queries: QuerySet, limit: int, rrf_k: int, n: int, top_k: int = 10) -> dict[str, Any]:
    """p50/p95 through `store.search` of: the BM25 leg, the dense leg, both legs + RRF + the final top-k
    payloads (ACL-filtered, as the product queries; `hybrid_ms`), the same with every leg result's
    payload read (`hybrid_all_payloads_ms`, the path before payloads-last), and unfiltered hybrid."""
    flt = public_filter()
    n = min(n, len(queries.dense))
    bm25, dense, hybrid, hybrid_all, hybrid_nf = [], [], [], [], []
    for i in range(min(2, n)):  # warm-up
        _hybrid(store, queries.dense[i], queries.sparse[i], flt, limit, rrf_k, top_k, True)
    for i in range(n):
        t0 = time.perf_counter()
        store.search(None, queries.sparse[i], flt, limit, with_payload=False)
        bm25.append(ms_since(t0))
        t0 = time.perf_counter()
        store.search(queries.dense[i], None, flt, limit, with_payload=False)
        dense.append(ms_since(t0))
        t0 = time.perf_counter()
        _hybrid(store, queries.dense[i], queries.sparse[i], flt, limit, rrf_k, top_k, True)
        hybrid.append(ms_since(t0))
        t0 = time.perf_counter()
        _hybrid(store, queries.dense[i], queries.sparse[i], flt, limit, rrf_k, top_k, False)
        hybrid_all.append(ms_since(t0))
        t0 = time.perf_counter()
        _hybrid(store, queries.dense[i], queries.sparse[i], None, limit, rrf_k, top_k, True)
        hybrid_nf.append(ms_since(t0))
    return {"queries": n, "bm25_ms": stats_ms(bm25), "dense_ms": stats_ms(dense), "hybrid_ms": stats_ms(hybrid),
            "hybrid_all_payloads_ms": stats_ms(hybrid_all), "hybrid_unfiltered_ms": stats_ms(hybrid_nf)}


def exact_top(store: Any, queries: QuerySet, n: int, at: int = 10,
              flt: SearchFilter | None = None) -> tuple[list[set[str]], dict[str, Any]]:
    """The ACL-filtered exact (brute-force) dense top-`at` ids of the first `n` queries, and its latency."""
    flt = flt or public_filter()
    truth, exact_ms = [], []
    for i in range(min(n, len(queries.dense))):
        t0 = time.perf_counter()
        rows, _ = store.search(queries.dense[i], None, flt, at, with_payload=False, exact=True)
        exact_ms.append(ms_since(t0))
        truth.append({c.chunk.id for c in rows})
    return truth, stats_ms(exact_ms)


def dense_recall(store: Any, queries: QuerySet, limit: int, truth: list[set[str]], at: int = 10,
                 flt: SearchFilter | None = None) -> dict[str, Any]:
    """Recall@`at` of the ACL-filtered dense leg as the product runs it (`limit` deep, the store's index
    settings) against `truth` (`exact_top`): mean and worst over the queries, and the leg's latency."""
    flt = flt or public_filter()
    hits, ms = [], []
    for i, want in enumerate(truth):
        t0 = time.perf_counter()
        approx, _ = store.search(queries.dense[i], None, flt, limit, with_payload=False)
        ms.append(ms_since(t0))
        hits.append(len(want & {c.chunk.id for c in approx[:at]}) / max(1, len(want)))
    return {f"recall_at_{at}": round(float(np.mean(hits)), 4) if hits else None,
            f"min_recall_at_{at}": round(float(np.min(hits)), 4) if hits else None, "queries": len(truth),
            "dense_ms": stats_ms(ms)}


def restricted_recall(store: Any, queries: QuerySet, limit: int, n: int,
                      progress: Callable[[str], None]) -> dict[str, Any]:
    """Dense recall@10 and latency under a restrictive ACL (a label ~5% of chunks carry), with ACORN as
    configured and with ACORN off: what ACORN buys where filters cut the HNSW graph apart."""
    flt = SearchFilter(acl=[RESTRICTED_LABEL])
    truth, exact_ms = exact_top(store, queries, n, flt=flt)
    out: dict[str, Any] = {"label": RESTRICTED_LABEL, "share": round(1 / RESTRICTED_EVERY, 3), "exact_ms": exact_ms}
    base = store.index
    try:
        for name, acorn in (("acorn_on", True), ("acorn_off", False)):
            store.index = dataclasses.replace(base, acorn=acorn)
            out[name] = dense_recall(store, queries, limit, truth, flt=flt)
    finally:
        store.index = base
    progress(f"scale: restricted ACL ({RESTRICTED_LABEL}): recall@10 ACORN on {out['acorn_on']['recall_at_10']} "
             f"({out['acorn_on']['dense_ms']['p50']:.2f} ms) / off {out['acorn_off']['recall_at_10']} "
             f"({out['acorn_off']['dense_ms']['p50']:.2f} ms)")
    return out


def search_sweep(store: Any, queries: QuerySet, settings: Settings, truth: list[set[str]], n: int,
                 variants: list[dict[str, Any]], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Filtered hybrid p50 and dense recall@10 for search-time variants of the store's index settings
    (e.g. {"hnsw_ef": 64}, {"acorn": False}, {"oversampling": 1.0}) on the same built collection."""
    base = store.index
    rows = []
    try:
        for change in variants:
            store.index = dataclasses.replace(base, **change)
            legs = measure_legs(store, queries, settings.leg_limit, settings.rrf_k, n, settings.top_k)
            row = {"change": change, "hybrid_ms": legs["hybrid_ms"], "dense_ms": legs["dense_ms"],
                   **dense_recall(store, queries, settings.leg_limit, truth)}
            progress(f"scale: sweep {change}: hybrid p50 {row['hybrid_ms']['p50']:.2f} ms, "
                     f"dense p50 {row['dense_ms']['p50']:.2f} ms, recall@10 {row['recall_at_10']}")
            rows.append(row)
    finally:
        store.index = base
    return rows


def build_and_measure(kind: str, store: Any, corpus: SyntheticCorpus, info: Any, encoder: Any, queries: QuerySet,
                      settings: Settings, cfg: BenchConfig, progress: Callable[[str], None],
                      n_queries: int, optimize: bool) -> dict[str, Any]:
    """Create a collection in `store`, bulk-load `corpus`, (optimize), measure legs and memory."""
    gc.collect()
    rss0, anon0 = rss_mb(), rss_anon_mb()
    t0 = time.perf_counter()
    store.create(info)
    fill = fill_store(store, corpus, encoder, progress=progress)
    store.flush()
    out: dict[str, Any] = {"store": kind, "chunks": len(corpus), "load_s": round(time.perf_counter() - t0, 2), **fill}
    progress(f"scale: {kind} {len(corpus):,}: loaded in {out['load_s']:.0f}s ({fill})")
    if optimize:
        progress(f"scale: {kind} {len(corpus):,}: unoptimized query check, then optimize")
        # Unindexed segments are scanned: at a million chunks each query takes ~a second, so fewer there.
        n_plain = cfg.scale_unoptimized_queries if len(corpus) <= 200_000 else min(5, cfg.scale_unoptimized_queries)
        out["unoptimized"] = measure_legs(store, queries, settings.leg_limit, settings.rrf_k, n_plain)
        t0 = time.perf_counter()
        store.optimize()
        out["optimize_s"] = round(time.perf_counter() - t0, 2)
        progress(f"scale: {kind} {len(corpus):,}: optimized in {out['optimize_s']:.0f}s")
    gc.collect()
    out["rss_delta_mb"] = round(rss_mb() - rss0, 1)
    # RSS counts the store's memory-mapped files (payloads, vectors, indexes: page cache the kernel can
    # reclaim); the anonymous part is the memory the process itself holds.
    out["rss_anon_delta_mb"] = round(rss_anon_mb() - anon0, 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    try:
        out["disk_mb"] = round(store.disk_bytes() / 1e6, 1)
    except Exception:  # a server may not expose its disk usage
        out["disk_mb"] = None
    out["index"] = store.index_config()
    progress(f"scale: {kind} {len(corpus):,}: measuring {n_queries} queries")
    out.update(measure_legs(store, queries, settings.leg_limit, settings.rrf_k, n_queries, settings.top_k))
    progress(f"scale: {kind} {len(corpus):,}: hybrid p50 {out['hybrid_ms']['p50']:.2f} ms (all payloads "
             f"{out['hybrid_all_payloads_ms']['p50']:.2f}), dense {out['dense_ms']['p50']:.2f}, "
             f"bm25 {out['bm25_ms']['p50']:.2f}")
    if cfg.recall_queries:
        progress(f"scale: {kind} {len(corpus):,}: dense recall@10 against exact search ({cfg.recall_queries} queries)")
        truth, out["exact_ms"] = exact_top(store, queries, cfg.recall_queries)
        out["dense_recall"] = dense_recall(store, queries, settings.leg_limit, truth)
        progress(f"scale: {kind} {len(corpus):,}: recall@10 {out['dense_recall']['recall_at_10']} "
                 f"(exact p50 {out['exact_ms']['p50']:.0f} ms)")
        if hasattr(store, "index"):
            out["restricted_acl"] = restricted_recall(store, queries, settings.leg_limit, cfg.recall_queries, progress)
        if cfg.search_sweep and hasattr(store, "index"):
            out["search_sweep"] = search_sweep(store, queries, settings, truth, cfg.sweep_queries,
                                               cfg.search_sweep, progress)
    out["rss_after_queries_mb"] = round(rss_mb() - rss0, 1)
    return out


def bench_scale(settings: Settings, embedder: Any, reranker: Any, vocab: Vocabulary, cfg: BenchConfig,
                questions: list[str], workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 4 (and 3b at cfg.baseline_scale_size): legs' latency and memory per size per backend."""
    rng = np.random.default_rng(20240611)
    dim = embedder.dimension
    out: dict[str, Any] = {"sizes": cfg.sizes, "vectors": f"{cfg.scale_vectors} unit {dim}-dim",
                           "texts": f"Zipfian words from SQuAD+Cranfield ({len(vocab):,} word vocabulary), ~150 words",
                           "edge": [], "qdrant_local": [], "server": [], "baseline_at_scale": None}
    sample = vector_sampler(cfg.scale_vectors, dim, rng)
    qvecs = sample(len(questions), rng)
    index = VectorIndexConfig.from_settings(settings)
    out["index_settings"] = index.to_dict()
    local_skip: str | None = None
    last_local: tuple[int, float] | None = None
    corpus_cache: SyntheticCorpus | None = None
    for size in cfg.sizes:
        progress(f"scale: generating {size:,} synthetic chunks")
        t0 = time.perf_counter()
        # Grow one corpus so smaller sizes are prefixes of larger ones (same text statistics).
        if corpus_cache is None or len(corpus_cache) < size:
            have = 0 if corpus_cache is None else len(corpus_cache)
            extra = SyntheticCorpus(vocab.sample_texts(size - have, rng), sample(size - have, rng))
            corpus_cache = extra if corpus_cache is None else SyntheticCorpus(
                corpus_cache.texts + extra.texts, np.concatenate([corpus_cache.vectors, extra.vectors]))
        corpus = SyntheticCorpus(corpus_cache.texts[:size], corpus_cache.vectors[:size])
        gen_s = time.perf_counter() - t0

        def make_encoder(avg: float = 100.0) -> BM25Encoder:
            return BM25Encoder(settings.bm25_k1, settings.bm25_b, avg, settings.bm25_language)

        avg_len = avg_bm25_len(make_encoder, corpus.texts)
        encoder = make_encoder(avg_len)
        info = collection_info("bench_scale", embedder.model_name, dim, settings, avg_len)
        queries = QuerySet([v.tolist() for v in qvecs], [encoder.encode_query(q) for q in questions])

        edge = EdgeStore(workdir / f"scale_{size}", "bench_scale", index)
        try:
            row = build_and_measure("edge", edge, corpus, info, encoder, queries, settings, cfg, progress,
                                    cfg.scale_queries, optimize=True)
            row["generate_s"] = round(gen_s, 2)
            out["edge"].append(row)
            if size == cfg.baseline_scale_size:
                out["baseline_at_scale"] = bench_baseline_at_scale(
                    settings, embedder, reranker, edge, corpus, questions[: cfg.baseline_scale_queries], progress)
        finally:
            edge.drop()
            edge.close()
        gc.collect()

        # qdrant-client local mode: pure Python; stop before the size where a query would exceed the limit.
        if local_skip is None and size > cfg.local_mode_max_size:
            local_skip = (f"skipped from {size:,} chunks: local mode scans linearly in Python "
                          f"(only run up to {cfg.local_mode_max_size:,} chunks)")
        if local_skip is None and last_local is not None:
            prev_size, prev_p50 = last_local
            predicted = prev_p50 * size / prev_size / 1000.0
            if predicted > cfg.local_mode_max_p50_s:
                local_skip = (f"skipped from {size:,} chunks: hybrid p50 was {prev_p50:.0f} ms at {prev_size:,} and grows "
                              f"linearly (predicted {predicted:.1f} s per query > {cfg.local_mode_max_p50_s:.1f} s)")
        if local_skip is None:
            local = ServerStore("bench_scale", location=":memory:")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # it warns above 20k points; measuring that is the point
                    row = build_and_measure("qdrant_local", local, corpus, info, encoder, queries, settings, cfg,
                                            progress, cfg.local_mode_queries, optimize=False)
                out["qdrant_local"].append(row)
                last_local = (size, row["hybrid_ms"]["p50"])
            finally:
                local.drop()
                local.close()
            gc.collect()
        else:
            out["qdrant_local"].append({"store": "qdrant_local", "chunks": size, "skipped": local_skip})

        if settings.qdrant_url:
            server = ServerStore("rag_bench_scale", url=settings.qdrant_url, api_key=settings.qdrant_api_key)
            try:
                if server.info() is not None:
                    server.drop()
                row = build_and_measure("server", server, corpus, info, encoder, queries, settings, cfg, progress,
                                        cfg.scale_queries, optimize=False)
                out["server"].append(row)
            finally:
                server.drop()
                server.close()
    return out
