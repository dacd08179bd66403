"""Hard negatives from our BM25 leg, false-negative filtering, and duplicate-free training batches.

A hard negative is a chunk that BM25 ranks high for the pseudo-query (lexically close) but that is not
its positive. Pseudo-labels are noisy, so candidates that may in fact answer the query are dropped:
the positive chunk itself, its neighbours in the same file and section (a chunk boundary can cut the
passage a sentence belongs to), every chunk of the section for a title query (a title describes its whole
section), and near-duplicates of the positive (Jaccard similarity of BM25 token sets above a threshold).

Other chunks of the same section stay eligible for sentence queries: in a long section (a wiki article
under one heading) they are exactly the confusable passages a retriever must learn to tell apart.

In-batch negatives: MultipleNegativesRankingLoss uses every other pair's positive and negative as
negatives for each query. `no_duplicate_batches` builds batches in which no chunk (positive or
negative) and no query text occurs twice, so a pair's positive is never another pair's negative.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from tqdm import tqdm

from rag.models import SearchFilter
from rag.tuning.pairs import TrainPair

log = logging.getLogger(__name__)

NEAR_DUPLICATE_JACCARD = 0.8
RERANK_POOL = 8  # safe candidates kept per pair for listwise reranker training
NEIGHBOUR_WINDOW = 1  # chunks this close to the positive (same file and section) are never negatives


@dataclass
class Triplet:
    """A training example: query, positive text, and one hard negative chunk (or None when none was found).

    `pool` holds the texts of every safe candidate (best BM25 rank first, up to RERANK_POOL); the
    reranker trains listwise against several of them.
    """

    pair: TrainPair
    negative: str | None
    negative_id: str | None
    pool: list[str] = field(default_factory=list)


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|A ∩ B| / |A ∪ B| of two token collections (0.0 when both are empty)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 0.0


def is_false_negative(pair: TrainPair, candidate: Any, tokenize: Callable[[str], list[str]],
                      threshold: float = NEAR_DUPLICATE_JACCARD, positive_tokens: set[str] | None = None) -> bool:
    """True when `candidate` (a Chunk) may be relevant to the pair's query and must not be a negative."""
    if candidate.id == pair.chunk_id:
        return True
    if candidate.file_path == pair.file_path and (candidate.section or "") == pair.section:
        if pair.kind == "title" or pair.chunk_index < 0:  # a title query (or an unknown position): whole section
            return True
        if abs(candidate.chunk_index - pair.chunk_index) <= NEIGHBOUR_WINDOW:
            return True
    pos = positive_tokens if positive_tokens is not None else set(tokenize(pair.positive))
    return jaccard(pos, tokenize(candidate.text)) > threshold


def filter_candidates(pair: TrainPair, candidates: Sequence[Any], tokenize: Callable[[str], list[str]],
                      threshold: float = NEAR_DUPLICATE_JACCARD) -> list[Any]:
    """Candidates (in rank order) that are safe negatives for the pair."""
    pos = set(tokenize(pair.positive))
    return [c for c in candidates if not is_false_negative(pair, c, tokenize, threshold, pos)]


def bm25_candidates(store: Any, bm25: Any, flt: Any, query: str, depth: int) -> list[Any]:
    """The store's BM25 top-`depth` chunks for `query` (the sparse leg alone, as search runs it)."""
    sparse = bm25.encode_query(query)
    if not sparse.indices:
        return []
    _dense, hits = store.search(None, sparse, flt, limit=depth)
    return [h.chunk for h in hits]


def mine_hard_negatives(pairs: Sequence[TrainPair], store: Any, bm25: Any, acl: list[str], depth: int = 20,
                        skip: int = 0, threshold: float = NEAR_DUPLICATE_JACCARD, seed: int = 0,
                        progress: bool = False) -> list[Triplet]:
    """One BM25 hard negative per pair: the best-ranked candidate surviving the false-negative filter.

    `store.search` runs the sparse leg only (no dense vector), with an ACL filter holding every label
    of the collection so tuning sees all chunks. `skip` ignores the first candidates (the very top BM25
    hits are the likeliest unlabeled positives). A pair without a safe candidate gets `negative=None`
    and trains with in-batch negatives only.
    """
    rng = random.Random(seed)
    flt = SearchFilter(acl=list(acl))
    triplets = []
    missing = 0
    for pair in tqdm(pairs, desc="mining BM25 negatives", disable=not progress, unit="pair"):
        candidates = bm25_candidates(store, bm25, flt, pair.query, depth)
        safe = filter_candidates(pair, candidates, bm25.tokenize, threshold)[skip:]
        if safe:
            pick = safe[min(len(safe) - 1, rng.randrange(3))]  # one of the top 3: variety over epochs/pairs
            triplets.append(Triplet(pair, pick.text, pick.id, [c.text for c in safe[:RERANK_POOL]]))
        else:
            missing += 1
            triplets.append(Triplet(pair, None, None))
    if missing:
        log.info("%d of %d pairs have no safe BM25 negative; they use in-batch negatives only", missing, len(pairs))
    return triplets


def _keys(t: Triplet) -> set[str]:
    keys = {"q:" + t.pair.query, "c:" + t.pair.chunk_id}
    if t.negative_id:
        keys.add("c:" + t.negative_id)
    return keys


def no_duplicate_batches(triplets: Sequence[Triplet], batch_size: int, seed: int = 0) -> list[list[int]]:
    """Index batches in which no query text and no chunk id (positive or negative) repeats.

    First-fit over a shuffled order: each triplet goes to the first open batch it does not conflict
    with. Every triplet is placed exactly once; late batches may be smaller than `batch_size`.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    order = list(range(len(triplets)))
    random.Random(seed).shuffle(order)
    open_batches: list[tuple[list[int], set[str]]] = []
    done: list[list[int]] = []
    for i in order:
        keys = _keys(triplets[i])
        for members, used in open_batches:
            if not (keys & used):
                members.append(i)
                used |= keys
                break
        else:
            open_batches.append(([i], set(keys)))
        full = [b for b in open_batches if len(b[0]) >= batch_size]
        for b in full:
            done.append(b[0])
            open_batches.remove(b)
    done.extend(members for members, _ in open_batches)
    # Full-size batches first makes the loss comparable across steps; the remainder last.
    done.sort(key=lambda b: -len(b))
    return done
