"""Hybrid retrieval: dense + BM25 legs in one store call, reciprocal rank fusion, optional cross-encoder rerank.

Modes:
- `dense`:  the dense leg alone, ordered by cosine similarity.
- `bm25`:   the BM25 leg alone, ordered by BM25 score (IDF applied inside Qdrant).
- `hybrid`: both legs fused with our RRF (settings.rrf_k, dense_weight, bm25_weight).
- `rerank`: the fused top-M (settings.rerank_top_m) re-scored by the cross-encoder.

Access control and metadata filters are a `SearchFilter` handed to the store, which applies it inside
Qdrant to both legs before ranking; nothing here filters after the fact, so the reranker and the
caller only ever see chunks the caller may read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rag.errors import ConfigError, EmptyQueryError, RagError
from rag.fusion import reciprocal_rank_fusion
from rag.lexical import BM25Encoder, SparseVector, term_id
from rag.models import Hit, SearchFilter, SearchResult

log = logging.getLogger(__name__)

MODES = ("dense", "bm25", "hybrid", "rerank")
# Distinct BM25 terms a query may carry: a pasted page of text stays a bounded sparse query.
MAX_QUERY_TERMS = 256
DENSE_LEG = "dense"
BM25_LEG = "bm25"


def bm25_encoder_for(info: Any) -> BM25Encoder:
    """The BM25 encoder a collection was indexed with, from its recorded CollectionInfo.

    Queries must be tokenized exactly as the chunks were (same stemmer, stop words, k1, b and
    average length), whatever the current settings say.
    """
    return BM25Encoder(
        k1=float(info.bm25_k1),
        b=float(info.bm25_b),
        avg_doc_len=float(info.bm25_avg_doc_len),
        language=str(info.bm25_language),
    )


def _same_bm25(encoder: BM25Encoder, info: Any) -> bool:
    return (
        encoder.k1 == float(info.bm25_k1)
        and encoder.b == float(info.bm25_b)
        and encoder.avg_doc_len == float(info.bm25_avg_doc_len)
        and encoder.language == BM25Encoder(language=str(info.bm25_language)).language
    )


class HybridRetriever:
    """Retrieves chunks for a query from one collection in any of the four modes.

    `bm25_encoder` may be None: it is then built from the collection's CollectionInfo (the normal
    case). An encoder whose parameters disagree with the collection is replaced, with a warning.
    `reranker` may be None when the `rerank` mode is not used; it can be attached later by setting
    the `reranker` attribute.
    """

    def __init__(self, store: Any, embedder: Any, bm25_encoder: BM25Encoder | None, reranker: Any, settings: Any) -> None:
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.settings = settings
        self._given_bm25 = bm25_encoder
        self._bm25: BM25Encoder | None = bm25_encoder
        self._seen_info: Any = None
        self._sync_with_collection()

    # -- collection metadata ---------------------------------------------------------------------
    def _sync_with_collection(self) -> Any:
        """Check the collection's model and adopt its BM25 parameters; redone when the info changes
        (e.g. the collection was created after this retriever)."""
        info = self.store.info()
        if info is None or info is self._seen_info:
            return info
        # Raises ModelMismatchError: a query embedded with another model would silently match garbage.
        self.store.check_compatible(self.embedder.model_name, self.embedder.dimension)
        given = self._given_bm25
        if given is not None and _same_bm25(given, info):
            self._bm25 = given
        else:
            if given is not None:
                log.warning("BM25 encoder %r differs from collection %r (k1=%s b=%s avg_doc_len=%s language=%s); "
                            "using the collection's parameters", given, info.name, info.bm25_k1, info.bm25_b,
                            info.bm25_avg_doc_len, info.bm25_language)
            self._bm25 = bm25_encoder_for(info)
        self._seen_info = info
        return info

    @property
    def bm25_encoder(self) -> BM25Encoder:
        """The encoder queries are tokenized with (the collection's parameters once it exists)."""
        if self._bm25 is None:
            s = self.settings
            self._bm25 = BM25Encoder(k1=s.bm25_k1, b=s.bm25_b, language=s.bm25_language)
        return self._bm25

    # -- query encoding --------------------------------------------------------------------------
    def encode_bm25_query(self, query: str) -> SparseVector:
        """The query's BM25 terms (1.0 each), capped at MAX_QUERY_TERMS distinct terms in query order."""
        encoder = self.bm25_encoder
        tokens = list(dict.fromkeys(encoder.tokenize(query)))
        if len(tokens) <= MAX_QUERY_TERMS:
            return encoder.encode_query(query)
        log.info("query has %d distinct BM25 terms; using the first %d", len(tokens), MAX_QUERY_TERMS)
        weights: dict[int, float] = {}
        for tok in tokens[:MAX_QUERY_TERMS]:
            tid = term_id(tok)
            weights[tid] = weights.get(tid, 0.0) + 1.0  # same hash-collision rule as the encoder
        indices = sorted(weights)
        return SparseVector(indices=indices, values=[weights[i] for i in indices])

    # -- retrieval -------------------------------------------------------------------------------
    def retrieve(self, query: str, k: int = 10, mode: str = "hybrid", flt: SearchFilter | None = None) -> SearchResult:
        """Top-k chunks for `query` in `mode`, visible under `flt` (default: the settings' default ACL).

        Raises EmptyQueryError for an empty/whitespace query, ConfigError for an unknown mode or a
        `rerank` request without a reranker, ModelMismatchError when the collection was built with
        another embedding model.
        """
        t_start = time.perf_counter()
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise ConfigError(f"search mode {mode!r} is unknown; use one of {', '.join(MODES)}")
        if mode == "rerank" and self.reranker is None:
            raise ConfigError("search mode 'rerank' needs a cross-encoder, but reranking is off; "
                              "set RAG_RERANK_MODEL to a cross-encoder (name or local path) or use mode 'hybrid'")
        if not isinstance(k, int) or k <= 0:
            raise ConfigError(f"k (number of results) must be a positive integer, got {k!r}")
        if query is None or not str(query).strip():
            raise EmptyQueryError("the query is empty; type a question or some keywords to search for")
        query = str(query).strip()
        if flt is None:
            flt = SearchFilter(acl=list(self.settings.default_acl))
        timings = {"embed": 0.0, "search": 0.0, "fuse": 0.0, "rerank": 0.0, "total": 0.0}

        info = self._sync_with_collection()
        if info is None:  # no collection yet: nothing to find, and no reason to load or run a model
            timings["total"] = _ms(t_start)
            return SearchResult(query=query, mode=mode, hits=[], timings_ms=timings)

        # 1. Encode the query for the legs this mode needs. The embedder's tokenizer truncates long
        #    queries to the model's window; BM25 keeps up to MAX_QUERY_TERMS terms.
        t0 = time.perf_counter()
        dense_vec = None
        sparse_vec = None
        if mode != "bm25":
            dense_vec = [float(x) for x in self.embedder.embed_query(query)]
        if mode != "dense":
            sparse_vec = self.encode_bm25_query(query)
            if not sparse_vec.indices:
                log.info("query %r has no BM25 terms (stop words or symbols only); the BM25 leg is empty", query[:80])
                sparse_vec = None
        timings["embed"] = _ms(t0)

        # 2. Both legs in one store call, same filter on both (applied inside Qdrant).
        rerank_m = max(int(self.settings.rerank_top_m), k) if mode == "rerank" else 0
        # Fused modes take leg_limit from each leg (the union is usually deeper than k or M); a
        # single-leg mode goes at least k deep so asking for more results than leg_limit works.
        limit = int(self.settings.leg_limit) if mode in ("hybrid", "rerank") else max(int(self.settings.leg_limit), k)
        t0 = time.perf_counter()
        if dense_vec is None and sparse_vec is None:
            dense_hits, bm25_hits = [], []
        else:
            dense_hits, bm25_hits = self.store.search(dense_vec, sparse_vec, flt, limit=limit)
        timings["search"] = _ms(t0)

        # 3. Order: one leg, or fused legs, then optionally reranked.
        if mode == "dense":
            hits = [Hit(chunk=sc.chunk, score=sc.score, dense_rank=i, dense_score=sc.score)
                    for i, sc in enumerate(dense_hits[:k], start=1)]
        elif mode == "bm25":
            hits = [Hit(chunk=sc.chunk, score=sc.score, bm25_rank=i, bm25_score=sc.score)
                    for i, sc in enumerate(bm25_hits[:k], start=1)]
        else:
            t0 = time.perf_counter()
            hits = self._fuse(dense_hits, bm25_hits)
            timings["fuse"] = _ms(t0)
            if mode == "rerank":
                t0 = time.perf_counter()
                hits = self._rerank(query, hits[:rerank_m])
                timings["rerank"] = _ms(t0)
            hits = hits[:k]
        timings["total"] = _ms(t_start)
        return SearchResult(query=query, mode=mode, hits=hits, timings_ms=timings)

    def _fuse(self, dense_hits: list[Any], bm25_hits: list[Any]) -> list[Hit]:
        """All chunks of both legs, ordered by RRF, each with its per-leg ranks and scores."""
        s = self.settings
        fused = reciprocal_rank_fusion(
            {DENSE_LEG: [sc.chunk.id for sc in dense_hits], BM25_LEG: [sc.chunk.id for sc in bm25_hits]},
            k=s.rrf_k,
            weights={DENSE_LEG: float(s.dense_weight), BM25_LEG: float(s.bm25_weight)},
        )
        chunks = {sc.chunk.id: sc.chunk for sc in bm25_hits}
        chunks.update({sc.chunk.id: sc.chunk for sc in dense_hits})
        dense_scores = {sc.chunk.id: sc.score for sc in dense_hits}
        bm25_scores = {sc.chunk.id: sc.score for sc in bm25_hits}
        hits = []
        for rank, item in enumerate(fused, start=1):
            hits.append(Hit(
                chunk=chunks[item.id],
                score=item.score,
                dense_rank=item.ranks.get(DENSE_LEG),
                dense_score=dense_scores.get(item.id),
                bm25_rank=item.ranks.get(BM25_LEG),
                bm25_score=bm25_scores.get(item.id),
                fused_rank=rank,
                fused_score=item.score,
            ))
        return hits

    def _rerank(self, query: str, candidates: list[Hit]) -> list[Hit]:
        """Candidates re-scored by the cross-encoder, best first; equal scores keep fused order.

        With `rerank_fusion_weight` set, the score is instead the candidates' dense+BM25 RRF score plus
        weight / (rrf_k + rank by the cross-encoder): the reranker becomes a third fusion leg.
        """
        if not candidates:
            return []
        scores = self.reranker.score(query, [h.chunk.text for h in candidates])
        if len(scores) != len(candidates):
            raise RagError(f"reranker {getattr(self.reranker, 'model_name', self.reranker)!r} returned "
                           f"{len(scores)} scores for {len(candidates)} passages")
        for hit, score in zip(candidates, scores):
            hit.rerank_score = float(score)
            hit.score = float(score)
        ordered = sorted(candidates, key=lambda h: (-h.score, h.fused_rank))
        weight = self.settings.rerank_fusion_weight
        if weight is None:
            return ordered
        for rank, hit in enumerate(ordered, start=1):
            hit.score = float(hit.fused_score or 0.0) + float(weight) / (self.settings.rrf_k + rank)
        return sorted(ordered, key=lambda h: (-h.score, h.fused_rank))


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)
