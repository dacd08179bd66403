"""Part 3 of `rag bench`: the hand-written LangChain recipe (`evals.langchain_baseline`) against ours.

3a. `bench_baseline_cranfield`  nDCG@10 and latency on Cranfield (BEIR, one document per record).
3b. `bench_baseline_at_scale`   latency over the same synthetic corpus (run inside the scale part).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evals.bench.config import BenchConfig
from evals.bench.data import UPSERT_BATCH, SyntheticCorpus, avg_bm25_len, chunk_uuid, collection_info
from evals.bench.measure import PUBLIC, ms_since, public_filter, ratio, rss_mb, stats_ms
from evals.datasets import evaldata_dir, load_beir
from evals.langchain_baseline import LangChainHybridRecipe, SentenceTransformerEmbeddings
from evals.metrics import ndcg_at_k
from rag.config import Settings
from rag.lexical import BM25Encoder
from rag.models import Chunk
from rag.retriever import HybridRetriever
from rag.store import EdgeStore
from rag.store.catalog import write_chunks


def bench_baseline_cranfield(settings: Settings, embedder: Any, reranker: Any, cfg: BenchConfig, workdir: Path,
                             progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 3a: our hybrid/rerank vs the LangChain recipe on Cranfield: nDCG@10 and latency."""
    ds = load_beir(evaldata_dir() / "beir-cranfield")
    qids = sorted(ds.queries, key=lambda q: (len(q), q))
    if cfg.cranfield_queries:
        qids = qids[: cfg.cranfield_queries]
    doc_ids = list(ds.corpus)
    if cfg.cranfield_docs and cfg.cranfield_docs < len(doc_ids):
        judged = [d for q in qids for d in ds.qrels.get(q, {})]
        keep = list(dict.fromkeys([d for d in judged if d in ds.corpus] + doc_ids))[: cfg.cranfield_docs]
        doc_ids = keep
    texts = [((ds.corpus[d].get("title") or "").strip() + "\n" + ds.corpus[d].get("text", "")).strip() for d in doc_ids]

    progress(f"baseline: embedding {len(texts)} Cranfield docs once (shared by both systems)")
    t0 = time.perf_counter()
    vectors = embedder.embed_passages(texts)
    embed_corpus_s = time.perf_counter() - t0

    # Ours: one point per record, through EdgeStore and HybridRetriever (the product's query path).
    def make_encoder(avg: float = 100.0) -> BM25Encoder:
        return BM25Encoder(settings.bm25_k1, settings.bm25_b, avg, settings.bm25_language)

    store = EdgeStore(workdir / "cranfield_qdrant", "cranfield")
    avg_len = avg_bm25_len(make_encoder, texts)
    store.create(collection_info("cranfield", embedder.model_name, embedder.dimension, settings, avg_len))
    enc = make_encoder(avg_len)
    t0 = time.perf_counter()
    chunks = [Chunk(id=chunk_uuid(f"cranfield:{d}"), text=text, file_path=f"/bench/cranfield/{d}", file_hash="0" * 64,
                    file_type="txt", chunk_index=0, chunk_count=1, char_start=0, char_end=len(text),
                    acl=list(PUBLIC), file_name=d)
              for d, text in zip(doc_ids, texts)]
    write_chunks(store, chunks, vectors, enc, batch=UPSERT_BATCH)
    store.optimize()
    ours_build_s = time.perf_counter() - t0
    retriever = HybridRetriever(store, embedder, None, reranker, settings)

    lc_emb = SentenceTransformerEmbeddings(embedder.model, batch_size=embedder.batch_size,
                                           query_instruction=settings.resolved_query_instruction(),
                                           precomputed=dict(zip(texts, vectors)))
    # The same cross-encoder object: a freshly loaded untrained head would differ from ours.
    cross_encoder = getattr(reranker, "_model", None) if reranker is not None else None
    recipe = LangChainHybridRecipe(texts, doc_ids, lc_emb, cross_encoder, leg_k=settings.leg_limit,
                                   rerank_top_m=settings.rerank_top_m, rerank_batch_size=settings.rerank_batch_size,
                                   dimension=embedder.dimension)

    modes = ["hybrid"] + (["rerank"] if reranker is not None else [])
    out: dict[str, Any] = {"dataset": "beir-cranfield", "docs": len(texts), "queries": len(qids),
                           "corpus_embed_s": round(embed_corpus_s, 2), "ours_build_s": round(ours_build_s, 2),
                           "langchain_build_s": {k: round(v, 2) for k, v in recipe.build_seconds.items()},
                           "relevance": "BEIR qrels (graded), nDCG@10 via evals.metrics.ndcg_at_k"}
    warm = ds.queries[qids[0]]
    retriever.retrieve(warm, k=10, mode="hybrid")
    recipe.query(warm, rerank=False)
    for mode in modes:
        mode_qids = qids[: cfg.cranfield_rerank_queries] if mode == "rerank" and cfg.cranfield_rerank_queries else qids
        progress(f"baseline: Cranfield {len(mode_qids)} queries, {mode}, ours and LangChain")
        ours_ms, lc_ms, ours_ndcg, lc_ndcg = [], [], [], []
        for qid in mode_qids:
            q = ds.queries[qid]
            t0 = time.perf_counter()
            res = retriever.retrieve(q, k=10, mode=mode, flt=public_filter())
            ours_ms.append(ms_since(t0))
            ours_ndcg.append(ndcg_at_k([h.chunk.file_name for h in res.hits], ds.qrels[qid]))
            t0 = time.perf_counter()
            lc = recipe.query(q, k=10, rerank=(mode == "rerank"))
            lc_ms.append(ms_since(t0))
            lc_ndcg.append(ndcg_at_k(lc.ids, ds.qrels[qid]))
        o, l = stats_ms(ours_ms), stats_ms(lc_ms)
        out[mode] = {
            "queries": len(mode_qids),
            "ours": {"ndcg@10": round(float(np.mean(ours_ndcg)), 4), "latency_ms": o},
            "langchain": {"ndcg@10": round(float(np.mean(lc_ndcg)), 4), "latency_ms": l},
            "ndcg_delta": round(float(np.mean(ours_ndcg) - np.mean(lc_ndcg)), 4),
            "p50_speedup": ratio(l["p50"], o["p50"]),
            "p95_speedup": ratio(l["p95"], o["p95"]),
        }
    recipe.close()
    store.drop()
    store.close()
    return out


def bench_baseline_at_scale(settings: Settings, embedder: Any, reranker: Any, store: Any, corpus: SyntheticCorpus,
                            questions: list[str], progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 3b: latency of ours vs the LangChain recipe over the same synthetic corpus (query embedding and
    reranking run the real models; corpus vectors are the synthetic ones, given to both)."""
    n = len(corpus)
    ids = [str(i) for i in range(n)]
    progress(f"baseline: building the LangChain recipe over {n:,} synthetic chunks (rank_bm25 + qdrant local mode)")
    rss0 = rss_mb()
    lc_emb = SentenceTransformerEmbeddings(embedder.model, batch_size=embedder.batch_size,
                                           query_instruction=settings.resolved_query_instruction(),
                                           precomputed=dict(zip(corpus.texts, corpus.vectors)))
    cross_encoder = getattr(reranker, "_model", None) if reranker is not None else None
    recipe = LangChainHybridRecipe(corpus.texts, ids, lc_emb, cross_encoder, leg_k=settings.leg_limit,
                                   rerank_top_m=settings.rerank_top_m, rerank_batch_size=settings.rerank_batch_size,
                                   dimension=embedder.dimension)
    lc_rss = rss_mb() - rss0
    retriever = HybridRetriever(store, embedder, None, reranker, settings)
    out: dict[str, Any] = {"chunks": n, "queries": len(questions),
                           "langchain_build_s": {k: round(v, 2) for k, v in recipe.build_seconds.items()},
                           "langchain_rss_delta_mb": round(lc_rss, 1)}
    modes = ["hybrid"] + (["rerank"] if reranker is not None else [])
    retriever.retrieve(questions[0], k=10, mode="hybrid")
    for mode in modes:
        progress(f"baseline: {len(questions)} queries at {n:,} chunks, {mode}, ours and LangChain")
        ours_ms, lc_ms = [], []
        lc_stages: dict[str, list[float]] = {}
        ours_stages: dict[str, list[float]] = {}
        for q in questions:
            t0 = time.perf_counter()
            res = retriever.retrieve(q, k=10, mode=mode, flt=public_filter())
            ours_ms.append(ms_since(t0))
            for k, v in res.timings_ms.items():
                ours_stages.setdefault(k, []).append(v)
            t0 = time.perf_counter()
            lc = recipe.query(q, k=10, rerank=(mode == "rerank"))
            lc_ms.append(ms_since(t0))
            for k, v in lc.timings_ms.items():
                lc_stages.setdefault(k, []).append(v)
        o, l = stats_ms(ours_ms), stats_ms(lc_ms)
        out[mode] = {
            "ours": {"latency_ms": o, "stages_ms": {k: stats_ms(v) for k, v in ours_stages.items()}},
            "langchain": {"latency_ms": l, "stages_ms": {k: stats_ms(v) for k, v in lc_stages.items()}},
            "p50_speedup": ratio(l["p50"], o["p50"]),
            "p95_speedup": ratio(l["p95"], o["p95"]),
        }
    recipe.close()
    del recipe
    gc.collect()
    return out
