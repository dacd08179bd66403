"""Reciprocal rank fusion (Cormack et al., 2009) over any number of ranked id lists.

score(id) = sum over legs of weight(leg) / (k + rank(id, leg)), with 1-based ranks. Only ranks
matter, so legs whose raw scores live on different scales (cosine vs BM25) combine without
calibration. Implemented here rather than in Qdrant so k, weights and tie-breaking are explicit and
tested, and so every fused item keeps its per-leg ranks for display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class FusedItem:
    """One fused id: its RRF score and its 1-based rank in each leg where it appeared."""

    id: str
    score: float
    ranks: dict[str, int] = field(default_factory=dict)

    @property
    def best_rank(self) -> int:
        """The best (smallest) rank this id reached in any leg."""
        return min(self.ranks.values()) if self.ranks else math.inf  # type: ignore[return-value]

    def __iter__(self) -> Iterator[object]:
        # Lets callers written against the documented `list[tuple[str, float]]` shape unpack
        # `for doc_id, score in reciprocal_rank_fusion(...)`.
        yield self.id
        yield self.score


def reciprocal_rank_fusion(
    rankings: dict[str, list[str]],
    k: int = 60,
    weights: dict[str, float] | None = None,
) -> list[FusedItem]:
    """Fuse ranked id lists (best first, keyed by leg name) into one list ordered by RRF score.

    - An id missing from a leg contributes nothing for that leg.
    - An id repeated within one leg counts once, at its best (first) rank.
    - `weights` maps leg name to a non-negative multiplier (missing legs weigh 1.0).
    - Ties on score are broken by best individual rank, then by the earliest leg (in `rankings`
      order) holding that best rank, then by id, so the output is deterministic.

    Raises ValueError when k is not positive, a weight is negative or not finite, or a weight names
    an unknown leg.
    """
    if not (isinstance(k, (int, float)) and k > 0 and math.isfinite(k)):
        raise ValueError(f"RRF k must be a positive number (setting 'rrf_k'), got {k!r}")
    weights = dict(weights or {})
    unknown = set(weights) - set(rankings)
    if unknown:
        raise ValueError(f"RRF weights name unknown legs {sorted(unknown)}; legs are {list(rankings)}")
    for leg, w in weights.items():
        if not (isinstance(w, (int, float)) and w >= 0 and math.isfinite(w)):
            raise ValueError(f"RRF weight for leg {leg!r} must be a finite number >= 0, got {w!r}")

    leg_order = {leg: i for i, leg in enumerate(rankings)}
    items: dict[str, FusedItem] = {}
    parts: dict[str, list[float]] = {}
    for leg, ids in rankings.items():
        weight = float(weights.get(leg, 1.0))
        seen: set[str] = set()
        for position, doc_id in enumerate(ids, start=1):
            if doc_id in seen:  # duplicate within a leg: only its best rank counts
                continue
            seen.add(doc_id)
            item = items.get(doc_id)
            if item is None:
                item = items[doc_id] = FusedItem(id=doc_id, score=0.0)
                parts[doc_id] = []
            item.ranks[leg] = position
            parts[doc_id].append(weight / (k + position))
    # fsum is exactly rounded, so equal sums are equal floats whatever the leg order: ties are real
    # ties and go to the deterministic tie-break below instead of to rounding noise.
    for doc_id, item in items.items():
        item.score = math.fsum(parts[doc_id])

    def sort_key(item: FusedItem) -> tuple[float, int, int, str]:
        best = item.best_rank
        first_leg = min(leg_order[leg] for leg, r in item.ranks.items() if r == best)
        return (-item.score, best, first_leg, item.id)

    return sorted(items.values(), key=sort_key)
