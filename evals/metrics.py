"""Evaluation metrics as pure functions: ranking, latency, answer correctness, abstention, citations.

Conventions (each one is tested on hand-computed cases in tests/test_metrics.py):

* Ranking metrics consume a ranked list of ids (best first) and qrels `{doc_id: graded score}`.
  Ties in retrieval scores are the retriever's business (it must order them deterministically);
  metrics never re-sort, so the same ranking always gives the same number.
* A ranking may contain the same id twice (e.g. two chunks mapped to one relevant unit). It is
  de-duplicated first, keeping the first occurrence, so a relevant item is counted once and the top k
  holds k distinct items.
* Binary relevance is `score > 0` (BEIR/Cranfield use 0 for "judged, not relevant").
* nDCG uses linear gains (the qrel score, as trec_eval/pytrec_eval and BEIR do) and the log2 discount
  `1/log2(rank+1)`; the ideal DCG is built from *all* judged relevant documents, not only retrieved ones.
* A query with no relevant documents gets 0 from every ranking metric. Such queries carry no signal,
  so the runner excludes them from averages: use `evaluable_queries` / `mean_over_queries`.
* Answer metrics follow the official SQuAD v2 evaluation script (normalize_answer, EM, token F1, max
  over gold answers). Unanswerable questions (empty gold list) are scored by the caller through the
  abstention metrics instead.
"""

from __future__ import annotations

import collections
import math
import re
import string
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

Qrels = Mapping[str, float]


# --------------------------------------------------------------------------------------------
# Ranking metrics
# --------------------------------------------------------------------------------------------


def dedupe_ranking(ranked: Sequence[str]) -> list[str]:
    """The ranking with repeated ids removed, keeping each id's first (best) position."""
    seen: set[str] = set()
    out: list[str] = []
    for doc_id in ranked:
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(doc_id)
    return out


def relevant_ids(qrels: Qrels) -> set[str]:
    """Ids judged relevant (score > 0)."""
    return {doc_id for doc_id, score in qrels.items() if score > 0}


def _check_k(k: int) -> None:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain of gains listed in rank order: sum(g_i / log2(i + 1)), i from 1."""
    return float(sum(g / math.log2(i + 2) for i, g in enumerate(gains)))


def ndcg_at_k(ranked: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """nDCG@k with graded (linear) gains; 0.0 when the query has no relevant document."""
    _check_k(k)
    ideal = sorted((s for s in qrels.values() if s > 0), reverse=True)[:k]
    idcg = dcg(ideal)
    if idcg == 0:
        return 0.0
    top = dedupe_ranking(ranked)[:k]
    gains = [max(float(qrels.get(doc_id, 0.0)), 0.0) for doc_id in top]
    return dcg(gains) / idcg


def recall_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Share of the relevant documents (score > 0) found in the top k; 0.0 when none are relevant."""
    _check_k(k)
    rel = relevant_ids(qrels)
    if not rel:
        return 0.0
    top = dedupe_ranking(ranked)[:k]
    return sum(1 for doc_id in top if doc_id in rel) / len(rel)


def precision_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Relevant documents in the top k divided by k (a short list is not padded in k's favour)."""
    _check_k(k)
    rel = relevant_ids(qrels)
    top = dedupe_ranking(ranked)[:k]
    return sum(1 for doc_id in top if doc_id in rel) / k


def hit_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """1.0 when at least one relevant document is in the top k (success@k), else 0.0."""
    _check_k(k)
    rel = relevant_ids(qrels)
    return float(any(doc_id in rel for doc_id in dedupe_ranking(ranked)[:k]))


def mrr_at_k(ranked: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top k (0.0 when none)."""
    _check_k(k)
    rel = relevant_ids(qrels)
    for rank, doc_id in enumerate(dedupe_ranking(ranked)[:k], start=1):
        if doc_id in rel:
            return 1.0 / rank
    return 0.0


def evaluable_queries(qrels: Mapping[str, Qrels]) -> list[str]:
    """Query ids with at least one relevant document, sorted; the others are excluded from averages."""
    return sorted(qid for qid, q in qrels.items() if relevant_ids(q))


def mean_over_queries(per_query: Mapping[str, float], qrels: Mapping[str, Qrels]) -> float:
    """Mean of a per-query metric over the evaluable queries (those with a relevant document).

    Queries missing from `per_query` count as 0 (the system returned nothing for them).
    Returns 0.0 when no query is evaluable.
    """
    qids = evaluable_queries(qrels)
    if not qids:
        return 0.0
    return float(np.mean([per_query.get(qid, 0.0) for qid in qids]))


def ranking_metrics(
    ranked: Sequence[str],
    qrels: Qrels,
    ndcg_k: int = 10,
    recall_ks: Iterable[int] = (1, 5, 10, 100),
    mrr_k: int = 10,
) -> dict[str, float]:
    """The standard per-query table row: ndcg@10, recall@{1,5,10,100}, mrr@10."""
    out = {f"ndcg@{ndcg_k}": ndcg_at_k(ranked, qrels, ndcg_k)}
    for k in recall_ks:
        out[f"recall@{k}"] = recall_at_k(ranked, qrels, k)
    out[f"mrr@{mrr_k}"] = mrr_at_k(ranked, qrels, mrr_k)
    return out


def recall_curve(ranked: Sequence[str], qrels: Qrels, max_k: int = 100) -> list[float]:
    """recall@k for k = 1..max_k (index 0 is recall@1), computed in one pass."""
    _check_k(max_k)
    rel = relevant_ids(qrels)
    top = dedupe_ranking(ranked)[:max_k]
    if not rel:
        return [0.0] * max_k
    found = 0
    curve = []
    for i in range(max_k):
        if i < len(top) and top[i] in rel:
            found += 1
        curve.append(found / len(rel))
    return curve


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
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
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
