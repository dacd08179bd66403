"""Hybrid retrieval: dense + BM25 legs in one store call, reciprocal rank fusion, optional cross-encoder rerank.

Modes (`rag.models.Mode`):
- `dense`:  the dense leg alone, ordered by cosine similarity.
- `bm25`:   the BM25 leg alone, ordered by BM25 score (IDF applied inside Qdrant).
- `hybrid`: both legs fused with our RRF (rrf_k, dense_weight, bm25_weight).
- `rerank`: the fused top-M (rerank_top_m) re-scored by the cross-encoder, or, with
  `rerank_fusion_weight` set, the cross-encoder's order fused with both legs as a third RRF leg.

Every hit records which kind of score it carries (`Hit.score_kind`), so the evidence gate never has to
guess it from the numbers.

Access control and metadata filters are a `SearchFilter` handed to the store, which applies it inside
Qdrant to both legs before ranking; nothing here filters after the fact, so the reranker and the
caller only ever see chunks the caller may read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from rag.backends import ensure_collection_backend
from rag.config import Settings
from rag.embedding import EmbedderProtocol
from rag.errors import ConfigError, EmptyQueryError, RagError
from rag.fusion import reciprocal_rank_fusion
from rag.lexical import BM25Encoder, SparseVector, term_id
from rag.models import Hit, Mode, ScoreKind, SearchFilter, SearchResult
from rag.rerank import RerankerProtocol
from rag.store import ScoredChunk, Store

log = logging.getLogger(__name__)

MODES = tuple(Mode.values())  # kept for callers that list the names; validation is Mode.parse
# Distinct BM25 terms a query may carry: a pasted page of text stays a bounded sparse query.
MAX_QUERY_TERMS = 256
DENSE_LEG = "dense"
BM25_LEG = "bm25"
RERANK_LEG = "rerank"


@dataclass(frozen=True)
class RetrievalConfig:
    """The retrieval settings, typed and explicit (built from Settings with `from_settings`)."""

    mode: Mode = Mode.RERANK
    top_k: int = 10
    leg_limit: int = 100
    rrf_k: int = 60
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    rerank_top_m: int = 30
    rerank_fusion_weight: float | None = None
    default_acl: tuple[str, ...] = ("public",)
    # BM25 parameters used only before a collection exists (afterwards the collection's own apply).
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    bm25_language: str = "english"
    # Where the backend quality-guard measurements are remembered (None: a backend differing from the one
    # the collection was built with is refused unless the embedder carries its own probe report).
    state_dir: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "RetrievalConfig":
        """The retrieval part of Settings (the mode validated, naming the setting on error)."""
        return cls(
            mode=Mode.parse(settings.mode, field="setting 'mode'"),
            top_k=int(settings.top_k),
            leg_limit=int(settings.leg_limit),
            rrf_k=int(settings.rrf_k),
            dense_weight=float(settings.dense_weight),
            bm25_weight=float(settings.bm25_weight),
            rerank_top_m=int(settings.rerank_top_m),
            rerank_fusion_weight=(None if settings.rerank_fusion_weight is None
                                  else float(settings.rerank_fusion_weight)),
            default_acl=tuple(settings.default_acl),
            bm25_k1=float(settings.bm25_k1),
            bm25_b=float(settings.bm25_b),
            bm25_language=str(settings.bm25_language),
            state_dir=str(settings.state_dir),
        )


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
    the `reranker` attribute. `config` is a RetrievalConfig, or a Settings it is built from.
    """

    def __init__(self, store: Store, embedder: EmbedderProtocol, bm25_encoder: BM25Encoder | None,
                 reranker: RerankerProtocol | None, config: RetrievalConfig | Settings) -> None:
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.config = config if isinstance(config, RetrievalConfig) else RetrievalConfig.from_settings(config)
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
        # ... and so would a query embedded by a backend whose vectors disagree with the stored ones.
        ensure_collection_backend(self.store.collection, info.embed_backend, self.embedder, self.config.state_dir)
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
            c = self.config
            self._bm25 = BM25Encoder(k1=c.bm25_k1, b=c.bm25_b, language=c.bm25_language)
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
    def retrieve(self, query: str, k: int = 10, mode: Mode | str = Mode.HYBRID,
                 flt: SearchFilter | None = None) -> SearchResult:
        """Top-k chunks for `query` in `mode`, visible under `flt` (default: the config's default ACL).

        Raises EmptyQueryError for an empty/whitespace query, ConfigError for an unknown mode or a
        `rerank` request without a reranker, ModelMismatchError when the collection was built with
        another embedding model.
        """
        t_start = time.perf_counter()
        mode = Mode.parse(mode or self.config.mode, field="search mode")
        if mode is Mode.RERANK and self.reranker is None:
            raise ConfigError("search mode 'rerank' needs a cross-encoder, but reranking is off; "
                              "set RAG_RERANK_MODEL to a cross-encoder (name or local path) or use mode 'hybrid'")
        if not isinstance(k, int) or k <= 0:
            raise ConfigError(f"k (number of results) must be a positive integer, got {k!r}")
        if query is None or not str(query).strip():
            raise EmptyQueryError("the query is empty; type a question or some keywords to search for")
        query = str(query).strip()
        if flt is None:
            flt = SearchFilter(acl=list(self.config.default_acl))
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
        if mode is not Mode.BM25:
            dense_vec = [float(x) for x in self.embedder.embed_query(query)]
        if mode is not Mode.DENSE:
            sparse_vec = self.encode_bm25_query(query)
            if not sparse_vec.indices:
                log.info("query %r has no BM25 terms (stop words or symbols only); the BM25 leg is empty", query[:80])
                sparse_vec = None
        timings["embed"] = _ms(t0)

        # 2. Both legs in one store call, same filter on both (applied inside Qdrant).
        rerank_m = max(self.config.rerank_top_m, k) if mode is Mode.RERANK else 0
        # Fused modes take leg_limit from each leg (the union is usually deeper than k or M); a
        # single-leg mode goes at least k deep so asking for more results than leg_limit works.
        fused_mode = mode in (Mode.HYBRID, Mode.RERANK)
        limit = self.config.leg_limit if fused_mode else max(self.config.leg_limit, k)
        t0 = time.perf_counter()
        if dense_vec is None and sparse_vec is None:
            dense_hits, bm25_hits = [], []
        else:
            # Ids and scores only: reading 2 x leg_limit payloads costs more than the search at scale
            # (measured 127 -> 34 ms p50 at 100k chunks); the kept hits get theirs below.
            dense_hits, bm25_hits = self.store.search(dense_vec, sparse_vec, flt, limit=limit, with_payload=False)
        timings["search"] = _ms(t0)

        # 3. Order: one leg, or fused legs, then optionally reranked.
        if mode is Mode.DENSE:
            hits = [Hit(chunk=sc.chunk, score=sc.score, dense_rank=i, dense_score=sc.score,
                        score_kind=ScoreKind.DENSE)
                    for i, sc in enumerate(dense_hits[:k], start=1)]
            hits = self._with_payloads(hits)
        elif mode is Mode.BM25:
            hits = [Hit(chunk=sc.chunk, score=sc.score, bm25_rank=i, bm25_score=sc.score,
                        score_kind=ScoreKind.BM25)
                    for i, sc in enumerate(bm25_hits[:k], start=1)]
            hits = self._with_payloads(hits)
        else:
            t0 = time.perf_counter()
            hits = self._fuse(dense_hits, bm25_hits)
            timings["fuse"] = _ms(t0)
            if mode is Mode.RERANK:
                candidates = self._with_payloads(hits[:rerank_m])  # the cross-encoder reads their text
                t0 = time.perf_counter()
                hits = self._rerank(query, candidates, dense_hits, bm25_hits)
                timings["rerank"] = _ms(t0)
            else:
                hits = self._with_payloads(hits[:k])
            hits = hits[:k]
        timings["total"] = _ms(t_start)
        return SearchResult(query=query, mode=mode, hits=hits, timings_ms=timings)

    def _with_payloads(self, hits: list[Hit]) -> list[Hit]:
        """The hits with their stored chunks (text, provenance) read by id, in the same order.

        The ids come from a search that applied the caller's filter inside Qdrant, so reading them
        back by id shows nothing the filter hid. A chunk deleted between the two calls (a concurrent
        sync) is dropped rather than shown without its text.
        """
        if not hits:
            return hits
        chunks = {c.id: c for c in self.store.retrieve([h.chunk.id for h in hits])}
        kept = []
        for hit in hits:
            chunk = chunks.get(hit.chunk.id)
            if chunk is not None:
                hit.chunk = chunk
                kept.append(hit)
        return kept

    def _leg_rankings(self, dense_hits: list[ScoredChunk], bm25_hits: list[ScoredChunk]) -> dict[str, list[str]]:
        return {DENSE_LEG: [sc.chunk.id for sc in dense_hits], BM25_LEG: [sc.chunk.id for sc in bm25_hits]}

    def _leg_weights(self) -> dict[str, float]:
        return {DENSE_LEG: self.config.dense_weight, BM25_LEG: self.config.bm25_weight}

    def _fuse(self, dense_hits: list[ScoredChunk], bm25_hits: list[ScoredChunk]) -> list[Hit]:
        """All chunks of both legs, ordered by RRF, each with its per-leg ranks and scores."""
        fused = reciprocal_rank_fusion(self._leg_rankings(dense_hits, bm25_hits), k=self.config.rrf_k,
                                       weights=self._leg_weights())
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
                score_kind=ScoreKind.RRF,
            ))
        return hits

    def _rerank(self, query: str, candidates: list[Hit], dense_hits: list[ScoredChunk],
                bm25_hits: list[ScoredChunk]) -> list[Hit]:
        """Candidates re-scored by the cross-encoder, best first; equal scores keep fused order.

        With `rerank_fusion_weight` set, the cross-encoder's order of the candidates instead joins the
        dense and BM25 legs as a third `reciprocal_rank_fusion` leg with that weight: a candidate's score
        is its dense+BM25 RRF score plus weight / (rrf_k + rank by the cross-encoder).
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
            hit.score_kind = ScoreKind.RERANK
        ordered = sorted(candidates, key=lambda h: (-h.score, h.fused_rank))
        weight = self.config.rerank_fusion_weight
        if weight is None:
            return ordered
        rankings = {**self._leg_rankings(dense_hits, bm25_hits), RERANK_LEG: [h.chunk.id for h in ordered]}
        fused = reciprocal_rank_fusion(rankings, k=self.config.rrf_k,
                                       weights={**self._leg_weights(), RERANK_LEG: float(weight)})
        score_of = {item.id: item.score for item in fused}
        for hit in ordered:
            hit.score = score_of[hit.chunk.id]
            hit.score_kind = ScoreKind.RRF
        # Equal scores keep the fused (dense+BM25) order, as in rerank-alone mode.
        return sorted(ordered, key=lambda h: (-h.score, h.fused_rank))


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)
