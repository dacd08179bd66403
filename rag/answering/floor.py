"""The evidence floor for every score kind: is a retrieved passage related enough to be evidence at all?

The gate's numeric floor (`rag.answering.evidence.DEFAULT_MIN_SCORE`) compares `Hit.score`, and in hybrid
mode that score is a reciprocal-rank-fusion value, which says where a passage ranked, never how well it
matched: the 6th fused passage of an off-topic question passes as easily as the 6th of a good one, so
passages with a dense cosine near 0 filled the evidence panel and went to the LLM (issue 17).

A fused hit still carries what each leg measured (`dense_score`, `bm25_rank`, `bm25_score`), so the floor
looks at those instead of the fused score:

    keep a fused (RRF) hit when
      its dense cosine >= the model's calibrated dense floor          (the dense leg found it related), or
      it is at BM25 rank <= STRONG_BM25_RANK of the lexical leg       (a strong keyword match: names, codes,
                                                                       numbers that embeddings blur)

Dense mode uses the same calibrated cosine (never below 0, the old floor). BM25 and rerank hits keep the
gate's existing floors (a matched term; a cross-encoder logit >= -2).

Cosines are model-specific (MiniLM puts unrelated text near 0.1, BGE near 0.5), so the dense floor is
calibrated per embedding model (`DENSE_FLOORS`, matched on the model name); an unknown model gets 0.0, the
old dense-mode floor (only anti-correlated passages are cut). The MiniLM value was calibrated on SQuAD
questions that are *not* in the reported set (`evals/evidence_floor_eval.py`: questions_all minus
questions.jsonl): the highest cosine that still keeps >= 99% of the gold passages the gate admitted
before: 0.30 (kept 99.3% of 297 gold passages, dropped 15.4% of the others). On questions.jsonl (1,000, extractive
answerer, hybrid) it left the answer rate on answerable questions unchanged (523/638 answered, 452 with a gold
answer, before and after) and raised abstention on unanswerable ones from 92/362 to 96/362. `evidence_min_score`, when set, still overrides all of this with one number on `Hit.score`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.models import Hit, ScoreKind

__all__ = ["FloorPolicy", "DENSE_FLOORS", "STRONG_BM25_RANK", "dense_floor_for", "floor_policy", "passes_floor"]

# (substring of the lower-cased embedding model name or path, calibrated cosine floor). First match wins.
DENSE_FLOORS: tuple[tuple[str, float], ...] = (
    ("minilm-l6", 0.30),
    ("minilm_l6", 0.30),
)
DEFAULT_DENSE_FLOOR = 0.0  # unknown model: cut only anti-correlated passages (the former dense-mode floor)
STRONG_BM25_RANK = 3  # a passage in the lexical leg's top 3 passes whatever its cosine


@dataclass(frozen=True)
class FloorPolicy:
    """What a hit must show to pass the floor (see module docstring)."""

    dense_min: float = DEFAULT_DENSE_FLOOR
    strong_bm25_rank: int = STRONG_BM25_RANK

    def to_dict(self) -> dict[str, float | int]:
        return {"dense_min": self.dense_min, "strong_bm25_rank": self.strong_bm25_rank}


def dense_floor_for(embed_model: str | None) -> float:
    """The calibrated cosine floor of an embedding model (DEFAULT_DENSE_FLOOR when it was never calibrated)."""
    name = (embed_model or "").lower()
    for needle, value in DENSE_FLOORS:
        if needle in name:
            return value
    return DEFAULT_DENSE_FLOOR


def floor_policy(embed_model: str | None) -> FloorPolicy:
    """The floor for collections embedded with `embed_model`."""
    return FloorPolicy(dense_min=dense_floor_for(embed_model))


def passes_floor(hit: Hit, policy: FloorPolicy) -> bool | None:
    """True/False for the score kinds this floor owns (RRF, dense); None for the others (BM25, rerank,
    unknown), whose floor stays the gate's numeric one, and for a fused hit that carries no leg scores.

    A fused hit missing from the dense leg (`dense_score` None: outside the dense top-N) and not a strong BM25
    match fails: the dense leg did not find it related and the lexical leg only weakly."""
    kind = hit.score_kind
    if kind is ScoreKind.RRF:
        if hit.dense_score is None and hit.bm25_rank is None:
            return None  # no leg evidence at all (a hit built by hand): nothing to judge it on
        dense = hit.dense_score
        if dense is not None and dense >= policy.dense_min:  # "not >=" semantics: NaN fails
            return True
        return hit.bm25_rank is not None and 1 <= hit.bm25_rank <= policy.strong_bm25_rank
    if kind is ScoreKind.DENSE:
        score = hit.dense_score if hit.dense_score is not None else hit.score
        return bool(score >= max(0.0, policy.dense_min))
    return None
