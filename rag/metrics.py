"""Ranking metrics as pure functions: the one definition `rag tune` and `rag eval retrieval` both report.

They live in the library (not in `evals/`) because `rag tune` decides whether to ship a model on them;
`evals.metrics` re-exports them beside the answer, latency and citation metrics.

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
  so averages exclude them: use `evaluable_queries` / `mean_over_queries` / `mean_ranking_metrics`.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

Qrels = Mapping[str, float]

# Recall cut-offs of the standard table row; RETRIEVAL_DEPTH results per query make Recall@100 meaningful.
DEFAULT_RECALL_KS = (1, 5, 10, 100)
RETRIEVAL_DEPTH = 100


def dedupe_ranking(ranked: Sequence[str]) -> list[str]:
    """The ranking with repeated ids removed, keeping each id's first (best) position."""
    return list(dict.fromkeys(ranked))


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


def metric_names(k: int = 10, recall_ks: Iterable[int] = DEFAULT_RECALL_KS) -> list[str]:
    """The columns of `ranking_metrics`, in order: ndcg@k, recall@each, mrr@k."""
    return [f"ndcg@{k}", *[f"recall@{r}" for r in recall_ks], f"mrr@{k}"]


def ranking_metrics(
    ranked: Sequence[str],
    qrels: Qrels,
    ndcg_k: int = 10,
    recall_ks: Iterable[int] = DEFAULT_RECALL_KS,
    mrr_k: int = 10,
) -> dict[str, float]:
    """The standard per-query table row: ndcg@10, recall@{1,5,10,100}, mrr@10."""
    out = {f"ndcg@{ndcg_k}": ndcg_at_k(ranked, qrels, ndcg_k)}
    for k in recall_ks:
        out[f"recall@{k}"] = recall_at_k(ranked, qrels, k)
    out[f"mrr@{mrr_k}"] = mrr_at_k(ranked, qrels, mrr_k)
    return out


def mean_ranking_metrics(per_query: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Qrels],
                         names: Sequence[str]) -> dict[str, float]:
    """Each named metric averaged over the evaluable queries (`mean_over_queries`), from per-query rows."""
    return {name: mean_over_queries({qid: row[name] for qid, row in per_query.items()}, qrels) for name in names}


def metric_deltas(before: Mapping[str, Mapping[str, float | None]], after: Mapping[str, Mapping[str, float | None]]
                  ) -> dict[str, dict[str, float]]:
    """{mode: {metric: after - before}} (rounded to 4 places) for the metrics both sides report."""
    return {mode: {name: round(value - before[mode][name], 4) for name, value in metrics.items()
                   if value is not None and before.get(mode, {}).get(name) is not None}
            for mode, metrics in after.items()}


def recall_curve(ranked: Sequence[str], qrels: Qrels, max_k: int = RETRIEVAL_DEPTH) -> list[float]:
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
