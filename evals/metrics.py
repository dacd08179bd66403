"""Evaluation metrics as pure functions: ranking (from `rag.metrics`), latency, answers, abstention, citations.

Ranking metrics (nDCG, recall, MRR, ... and their conventions) are defined once in `rag.metrics`, because
`rag tune` decides on them too; they are re-exported here so the eval code has one metrics module.

Conventions of the metrics defined here (tested on hand-computed cases in tests/test_metrics.py):

* Answer metrics follow the official SQuAD v2 evaluation script (normalize_answer, EM, token F1, max
  over gold answers). Unanswerable questions (empty gold list) are scored by the caller through the
  abstention metrics instead.
"""

from __future__ import annotations

import collections
import re
import string
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from rag.metrics import (  # noqa: F401  (re-exported: the eval code's one metrics module)
    DEFAULT_RECALL_KS,
    RETRIEVAL_DEPTH,
    Qrels,
    dcg,
    dedupe_ranking,
    evaluable_queries,
    hit_at_k,
    mean_over_queries,
    mean_ranking_metrics,
    metric_deltas,
    metric_names,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    recall_curve,
    relevant_ids,
)


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with numpy's default linear interpolation; None for no values."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p95, max of a list of latencies in milliseconds."""
    if len(values_ms) == 0:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values_ms, dtype=float)
    return {
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "p50": percentile(arr, 50),
        "p95": percentile(arr, 95),
        "max": float(arr.max()),
    }


def stage_latencies(timings: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float | int | None]]:
    """Per-stage latency summaries from per-query `timings_ms` dicts (stages may differ per query)."""
    by_stage: dict[str, list[float]] = collections.defaultdict(list)
    for t in timings:
        for stage, ms in t.items():
            if ms is not None:
                by_stage[stage].append(float(ms))
    return {stage: latency_summary(v) for stage, v in sorted(by_stage.items())}


# --------------------------------------------------------------------------------------------
# Answer correctness (SQuAD v2 official script semantics)
# --------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles (a/an/the), collapse whitespace (SQuAD)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold_answers: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals any normalized gold answer.

    With an empty gold list (unanswerable) the SQuAD rule applies: 1.0 only for an empty prediction;
    callers usually score unanswerables with the abstention metrics instead.
    """
    golds = list(gold_answers) or [""]
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def _f1_one(prediction: str, gold: str) -> float:
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if not pred_toks or not gold_toks:
        # SQuAD: if either is empty, F1 is 1 when both are empty, else 0.
        return float(pred_toks == gold_toks)
    common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_toks)
    recall = same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold_answers: Sequence[str]) -> float:
    """SQuAD token F1: max over gold answers of the bag-of-tokens F1 after normalize_answer."""
    golds = list(gold_answers) or [""]
    return max(_f1_one(prediction, g) for g in golds)


# --------------------------------------------------------------------------------------------
# Abstention
# --------------------------------------------------------------------------------------------


@dataclass
class AbstentionScores:
    """Abstention as a classifier; the positive class is "should abstain" (unanswerable)."""

    precision: float | None  # of the abstentions, the share that were right; None when none
    recall: float | None  # of the unanswerable questions, the share abstained on; None when none
    f1: float | None
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def abstention_scores(should_abstain: Sequence[bool], abstained: Sequence[bool]) -> AbstentionScores:
    """Precision/recall/F1 of abstaining, positive class = the question is unanswerable."""
    if len(should_abstain) != len(abstained):
        raise ValueError("should_abstain and abstained must have the same length")
    tp = sum(1 for s, a in zip(should_abstain, abstained) if s and a)
    fp = sum(1 for s, a in zip(should_abstain, abstained) if not s and a)
    fn = sum(1 for s, a in zip(should_abstain, abstained) if s and not a)
    tn = sum(1 for s, a in zip(should_abstain, abstained) if not s and not a)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return AbstentionScores(precision, recall, f1, tp, fp, fn, tn)


# --------------------------------------------------------------------------------------------
# Citations
# --------------------------------------------------------------------------------------------


def citation_validity(cited_ids: Sequence[str], allowed_ids: Iterable[str]) -> float | None:
    """Share of citations that point inside the allow-list (the evidence shown to the model).

    None when the answer cites nothing (no citation to validate; aggregate with `mean_defined`).
    """
    if not cited_ids:
        return None
    allowed = set(allowed_ids)
    return sum(1 for c in cited_ids if c in allowed) / len(cited_ids)


def mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


Entails = Callable[[str, str], bool]


@dataclass
class CitationScores:
    """ALCE citation recall and precision of one answer."""

    recall: float  # share of sentences supported by the union of their cited passages
    precision: float  # share of citations that are not irrelevant (see citation_scores)
    n_sentences: int
    n_citations: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def citation_scores(
    sentences: Sequence[tuple[str, Sequence[str | None]]],
    entails: Entails,
    joiner: str = "\n",
) -> CitationScores:
    """ALCE citation recall/precision (Gao et al. 2023, "Enabling LLMs to generate text with citations").

    `sentences`: each answer sentence with the passages it cites, in citation order. A `None`
    passage is a citation that points outside the evidence (invalid); such a sentence is unsupported.
    `entails(premise, hypothesis)`: the support function (an NLI model in ALCE; any judge here).

    Definitions, as in ALCE's `compute_autoais`:
    * recall: a sentence scores 1 when it has citations, all are valid, and the concatenation of its
      cited passages entails it; the answer's recall is the mean over its sentences.
    * precision: a citation is *irrelevant* when (a) its passage alone does not entail the sentence and
      (b) the sentence's other citations still entail it without it. For a supported sentence every
      citation that is not irrelevant counts as precise; for an unsupported sentence none does
      (its citations could not justify it). The answer's precision = precise citations / citations.
      ALCE only runs the per-citation check for sentences with 2+ citations: a single citation on a
      supported sentence is precise by definition, which the rule above also gives.
    An answer with no sentences gets recall 0; with no citations, precision 0 (as in ALCE).
    """
    supported_sents = 0
    precise = 0
    n_citations = 0
    for sentence, passages in sentences:
        n_citations += len(passages)
        if not passages or any(p is None for p in passages):
            continue  # no citation or an invalid one: unsupported, and no citation is precise
        joint = entails(joiner.join(passages), sentence)  # type: ignore[arg-type]
        if not joint:
            continue
        supported_sents += 1
        if len(passages) == 1:
            precise += 1
            continue
        for i, passage in enumerate(passages):
            if entails(passage, sentence):  # type: ignore[arg-type]
                precise += 1
                continue
            rest = [p for j, p in enumerate(passages) if j != i]
            if entails(joiner.join(rest), sentence):  # type: ignore[arg-type]
                continue  # irrelevant: it neither supports alone nor is needed by the others
            precise += 1
    n_sent = len(sentences)
    return CitationScores(
        recall=supported_sents / n_sent if n_sent else 0.0,
        precision=precise / n_citations if n_citations else 0.0,
        n_sentences=n_sent,
        n_citations=n_citations,
    )
