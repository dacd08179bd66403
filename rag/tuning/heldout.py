"""The held-out check of `rag tune`: held-out pseudo-queries through the product's own retriever.

Each held-out pair has one relevant chunk, its positive. Its query runs through
`rag.retriever.HybridRetriever` (the code `rag search` runs, modes, fusion and reranking included) over
two throwaway embedded collections that hold the same chunks: one with the collection's stored
base-model vectors, one re-embedded with the tuned model. BM25 vectors are built with the source
collection's recorded parameters, so the sparse leg is the same on both sides.

The figures are `rag.metrics.ranking_metrics` per query averaged with `mean_ranking_metrics`: the
functions, names and averaging `rag eval retrieval` reports.

Large collections are sampled: the check corpus holds every held-out positive plus a random sample of
other chunks, up to CHECK_CORPUS_MAX, because re-embedding the whole collection would cost as much as
`rag tune --apply`. Both sides rank the same sample, so before and after stay comparable.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rag.config import Settings
from rag.metrics import (DEFAULT_RECALL_KS, RETRIEVAL_DEPTH, mean_ranking_metrics, metric_deltas, metric_names,
                         ranking_metrics)
from rag.models import Chunk, Mode, SearchFilter
from rag.retriever import HybridRetriever, RetrievalConfig
from rag.store import CollectionInfo, EdgeStore, Store
from rag.store.catalog import write_chunks
from rag.tuning.pairs import TrainPair

CHECK_CORPUS_MAX = 600  # chunks in the check collections (all held-out positives + a sample)
HELDOUT_MAX_QUERIES = 240  # held-out pseudo-queries the check runs (bounds its time)
RERANK_CHECK_QUERIES = 60  # of those, the ones run through the cross-encoder (its cost dominates)
MODES = (Mode.DENSE, Mode.HYBRID)  # the embedder's effect, alone and fused with BM25
K = 10  # nDCG@K and MRR@K, as `rag eval retrieval --k 10`


def check_corpus_rows(chunks: Sequence[Chunk], held: Sequence[TrainPair], limit: int, seed: int) -> list[int]:
    """Row indices of the chunks the check ranks: every held-out positive plus a random sample, sorted."""
    by_id = {c.id: i for i, c in enumerate(chunks)}
    must = sorted({by_id[p.chunk_id] for p in held if p.chunk_id in by_id})
    taken = set(must)
    rest = [i for i in range(len(chunks)) if i not in taken]
    random.Random(seed).shuffle(rest)
    return sorted(must + rest[: max(0, limit - len(must))])


def write_check_collection(root: str | Path, name: str, chunks: Sequence[Chunk], vectors: np.ndarray,
                           embed_model: str, source: CollectionInfo) -> Store:
    """A new embedded collection `name` under `root` holding `chunks` with their dense `vectors`.

    It records `embed_model` (the retriever checks queries are embedded with it) and the source
    collection's BM25 parameters, so queries and chunks are tokenized as in the real collection.
    """
    store = EdgeStore(root, name)
    info = CollectionInfo(name=name, embed_model=embed_model, dimension=int(vectors.shape[1]), bm25_k1=source.bm25_k1,
                          bm25_b=source.bm25_b, bm25_avg_doc_len=source.bm25_avg_doc_len,
                          bm25_language=source.bm25_language)
    write_chunks(store, chunks, vectors, info=info)
    store.flush()
    return store


def retrieval_figures(retriever: HybridRetriever, pairs: Sequence[TrainPair], mode: Mode, flt: SearchFilter,
                      depth: int = RETRIEVAL_DEPTH) -> dict[str, float]:
    """Mean ranking metrics of `pairs` (each positive chunk is its query's one relevant item) in `mode`.

    Each query retrieves `depth` chunks; recall cut-offs deeper than that are not reported.
    """
    recall_ks = sorted({r for r in DEFAULT_RECALL_KS if r <= depth} | {min(K, depth)})
    per_query: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i, pair in enumerate(pairs):
        qid = str(i)
        qrels[qid] = {pair.chunk_id: 1}
        hits = retriever.retrieve(pair.query, k=depth, mode=mode, flt=flt).hits
        per_query[qid] = ranking_metrics([h.chunk.id for h in hits], qrels[qid], ndcg_k=K, recall_ks=recall_ks,
                                         mrr_k=K)
    return mean_ranking_metrics(per_query, qrels, metric_names(K, recall_ks))


class _RememberedQueries:
    """An embedder that embeds each query once: every mode and rerank run asks again for the same queries."""

    def __init__(self, embedder: Any) -> None:
        self._embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}

    def embed_query(self, text: str) -> np.ndarray:
        """The wrapped embedder's query vector, computed once per text."""
        if text not in self._vectors:
            self._vectors[text] = self._embedder.embed_query(text)
        return self._vectors[text]

    def __getattr__(self, name: str) -> Any:  # model_name, dimension, embed_passages, ...: the embedder's own
        return getattr(self._embedder, name)


class _RememberedScores:
    """A reranker that remembers its scores per (query, text).

    The alone and fused rerank runs score the same candidates, and the cross-encoder is the slow part.
    """

    def __init__(self, reranker: Any) -> None:
        self._reranker = reranker
        self.model_name = getattr(reranker, "model_name", repr(reranker))
        self._scores: dict[tuple[str, str], float] = {}

    def score(self, query: str, texts: list[str]) -> list[float]:
        """The wrapped reranker's scores, computed once per (query, text)."""
        missing = [t for t in dict.fromkeys(texts) if (query, t) not in self._scores]
        if missing:
            for text, value in zip(missing, self._reranker.score(query, missing)):
                self._scores[(query, text)] = float(value)
        return [self._scores[(query, t)] for t in texts]


def _retriever(store: Store, embedder: Any, reranker: Any, config: RetrievalConfig) -> HybridRetriever:
    return HybridRetriever(store, embedder, None, reranker, config)


def rerank_check(pairs: Sequence[TrainPair], store: Store, embedder: Any, reranker: Any, config: RetrievalConfig,
                 flt: SearchFilter, fusion_weight: float) -> dict[str, Any]:
    """The trained reranker over the base hybrid top-M (`config.rerank_top_m`), as search runs it.

    Three runs of the same queries: `hybrid` (no reranker), `rerank_alone` (the cross-encoder's order)
    and `rerank_fused` (the cross-encoder as a third RRF leg of weight `fusion_weight`). Each retrieves
    the top M, the candidates the reranker sees.
    """
    depth = config.rerank_top_m
    scorer = _RememberedScores(reranker)
    runs = {"hybrid": (Mode.HYBRID, None), "rerank_alone": (Mode.RERANK, None),
            "rerank_fused": (Mode.RERANK, fusion_weight)}
    figures = {name: retrieval_figures(_retriever(store, embedder, scorer,
                                                  dataclasses.replace(config, rerank_fusion_weight=w)),
                                       pairs, mode, flt, depth=depth)
               for name, (mode, w) in runs.items()}
    return {"queries": len(pairs), "top_m": depth, "fusion_weight": fusion_weight,
            **{f"{name}_mrr@{K}": f[f"mrr@{K}"] for name, f in figures.items()}, "modes": figures}


def heldout_check(held: Sequence[TrainPair], chunks: Sequence[Chunk], base_vectors: np.ndarray,
                  source: CollectionInfo, labels: Sequence[str], base_embedder: Any, tuned_embedder: Any,
                  settings: Settings, reranker: Any = None, fusion_weight: float = 1.0, seed: int = 0,
                  corpus_max: int = CHECK_CORPUS_MAX, progress: bool = False) -> dict[str, Any]:
    """Held-out figures before (base embedder, stored vectors) and after (tuned embedder) tuning.

    `base_vectors` are the stored dense vectors, one row per chunk. Returns
    `{"queries", "corpus_chunks", "before", "after", "by_mode", "rerank"}`: `before` / `after` are the
    dense-mode figures (the embedder's own effect, which decides whether the tuned model wins),
    `by_mode` holds `{"before": {mode: figures}, "after": ..., "deltas": ...}` for every mode in MODES,
    and `rerank` the `rerank_check` of `reranker` (None without one).
    """
    base_embedder, tuned_embedder = _RememberedQueries(base_embedder), _RememberedQueries(tuned_embedder)
    rows = check_corpus_rows(chunks, held, corpus_max, seed)
    subset = [chunks[r] for r in rows]
    in_corpus = {c.id for c in subset}
    held = [p for p in held if p.chunk_id in in_corpus]
    flt = SearchFilter(acl=list(labels))  # every label of the collection: the check sees every chunk
    config = RetrievalConfig.from_settings(settings)
    tuned_vectors = tuned_embedder.embed_passages([c.text for c in subset], show_progress=progress)
    with tempfile.TemporaryDirectory(prefix="rag-tune-check-") as root, ExitStack() as stores:
        base_store = stores.enter_context(write_check_collection(
            root, "base", subset, base_vectors[rows], base_embedder.model_name, source))
        tuned_store = stores.enter_context(write_check_collection(
            root, "tuned", subset, tuned_vectors, tuned_embedder.model_name, source))
        before = {m.value: retrieval_figures(_retriever(base_store, base_embedder, None, config), held, m, flt)
                  for m in MODES}
        after = {m.value: retrieval_figures(_retriever(tuned_store, tuned_embedder, None, config), held, m, flt)
                 for m in MODES}
        rerank = None
        if reranker is not None:
            rerank = rerank_check(held[:RERANK_CHECK_QUERIES], base_store, base_embedder, reranker, config, flt,
                                  fusion_weight)
    return {"queries": len(held), "corpus_chunks": len(rows), "before": before["dense"], "after": after["dense"],
            "by_mode": {"before": before, "after": after, "deltas": metric_deltas(before, after)},
            "rerank": rerank}
