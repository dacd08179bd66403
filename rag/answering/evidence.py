"""The evidence gate: which retrieved passages an answer may rest on, numbered [1]..[K].

Only gated passages are shown to the answerer and only they may be cited (the allow-list). The
caller's ACL already constrained retrieval; the gate adds a relevance floor, a passage cap and a
prompt token budget.

Default floor (`evidence_min_score = None`) depends on what `Hit.score` measures (`Hit.score_kind`,
set by the retriever, which knows the mode), because the scales are unrelated:
- cross-encoder logit (rerank mode, `rerank_score` set): -2.0, i.e. sigmoid ≈ 0.12. MS MARCO
  cross-encoders give clearly irrelevant passages logits around -8..-11 and answer-bearing ones
  positive logits; partial matches sit around -2..0. The gate is deliberately lenient: its job is
  to reject off-topic passages, while the answerer (LLM or extractive sentence threshold) makes the
  finer "is the answer here" call. A strict floor here would turn answerable questions into
  abstentions with no way for the answerer to recover.
- dense cosine (dense mode): 0.0 — cosines are model-specific (BGE puts unrelated text near 0.5,
  MiniLM near 0.1), so no single positive floor is safe; only anti-correlated passages are cut.
- BM25 (bm25 mode): > 0, i.e. at least one query term matched.
- RRF (hybrid mode, and rerank mode with `rerank_fusion_weight` set): no floor — a fused rank score
  says nothing about absolute relevance.
- unknown (hits built by hand): no floor.
Set `evidence_min_score` to gate on a calibrated value for your own model and mode.
"""

from __future__ import annotations

import logging
from typing import Callable

from rag.answering.floor import floor_policy, passes_floor
from rag.config import Settings
from rag.models import Evidence, Hit, ScoreKind

log = logging.getLogger(__name__)

DEFAULT_MIN_SCORE: dict[ScoreKind, float | None] = {
    ScoreKind.RERANK: -2.0,
    ScoreKind.DENSE: 0.0,
    ScoreKind.BM25: 1e-9,
    ScoreKind.RRF: None,
    ScoreKind.UNKNOWN: None,
}


def score_kind(hit: Hit) -> ScoreKind:
    """What `hit.score` measures (a str Enum: "rerank", "rrf", "dense", "bm25" or "unknown")."""
    return hit.score_kind


def default_min_score(hits: list[Hit]) -> float | None:
    """The default gate floor for these hits' score type (see module docstring); None = no floor."""
    if not hits:
        return None
    return DEFAULT_MIN_SCORE[score_kind(hits[0])]


def select_evidence(hits: list[Hit], settings: Settings, count_tokens: Callable[[str], int]) -> list[Evidence]:
    """Gate hits into numbered evidence: score >= floor, at most `evidence_max_passages`,
    passage tokens within `evidence_token_budget`, numbered 1..K in rank order.

    A passage that would overflow the budget is skipped (a shorter one further down may still fit);
    the top passage is always admitted when it passes the floor, even if alone it exceeds the budget,
    because a slightly long prompt beats no answer.
    """
    floor = settings.evidence_min_score if settings.evidence_min_score is not None else default_min_score(hits)
    # Fused and dense hits also need a calibrated relatedness floor (rag.answering.floor): an RRF score alone
    # admits off-topic passages. An explicit evidence_min_score replaces every default floor.
    policy = floor_policy(settings.embed_model) if settings.evidence_min_score is None else None
    max_k = max(0, int(settings.evidence_max_passages))
    budget = int(settings.evidence_token_budget)
    evidence: list[Evidence] = []
    used = 0
    for hit in hits:
        if len(evidence) >= max_k:
            break
        if floor is not None and not hit.score >= floor:  # "not >=" also rejects NaN
            continue
        if policy is not None and passes_floor(hit, policy) is False:
            continue
        tokens = count_tokens(hit.chunk.text)
        if evidence and used + tokens > budget:
            log.debug("evidence gate: skipped chunk %s (%d tokens) over budget %d", hit.chunk.id, tokens, budget)
            continue
        if not evidence and tokens > budget:
            log.warning("evidence gate: top passage %s has %d tokens, over the budget of %d "
                        "(setting evidence_token_budget); admitting it alone", hit.chunk.id, tokens, budget)
        used += tokens
        evidence.append(Evidence(number=len(evidence) + 1, hit=hit))
    return evidence


def related_passages(hits: list[Hit], n: int = 3) -> list[Hit]:
    """The n closest hits, shown as "related, not sufficient" when the answer abstains."""
    return list(hits[: max(0, n)])

