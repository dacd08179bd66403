"""Every metric on hand-computed cases, including the edge cases (no relevant, all relevant, ties,
k beyond the list, duplicates in the ranking)."""

from __future__ import annotations

import math

import pytest

import rag.metrics
from evals import metrics as m

QRELS = {"a": 3, "b": 2, "c": 1, "d": 0}  # d is judged non-relevant


def test_ndcg_graded_hand_computed():
    # DCG = 0/log2(2) + 3/log2(3) + 0/log2(4) + 1/log2(5); IDCG = 3/1 + 2/log2(3) + 1/log2(4)
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 + 2 / math.log2(3) + 1 / 2
    assert m.ndcg_at_k(["d", "a", "x", "c"], QRELS, 10) == pytest.approx(dcg / idcg)
    assert m.ndcg_at_k(["d", "a", "x", "c"], QRELS, 10) == pytest.approx(0.48793, abs=1e-5)


def test_ndcg_cutoff_uses_ideal_truncated_at_k():
    # k=1: ideal is [3]; ranked top-1 is "b" (gain 2) -> 2/3
    assert m.ndcg_at_k(["b", "a"], QRELS, 1) == pytest.approx(2 / 3)
    # ideal DCG uses all judged relevant docs, even if never retrieved
    assert m.ndcg_at_k(["a"], QRELS, 10) == pytest.approx(3 / (3 + 2 / math.log2(3) + 0.5))


def test_ndcg_perfect_and_all_relevant():
    assert m.ndcg_at_k(["a", "b", "c"], QRELS, 10) == pytest.approx(1.0)
    allrel = {"a": 1, "b": 1, "c": 1}
    assert m.ndcg_at_k(["c", "a", "b"], allrel, 3) == pytest.approx(1.0)
    assert m.recall_at_k(["c", "a", "b"], allrel, 3) == 1.0
    assert m.precision_at_k(["c", "a", "b"], allrel, 3) == 1.0


def test_ties_in_gains_any_order_is_ideal():
    tied = {"a": 2, "b": 2, "c": 1}
    assert m.ndcg_at_k(["a", "b", "c"], tied, 10) == pytest.approx(1.0)
    assert m.ndcg_at_k(["b", "a", "c"], tied, 10) == pytest.approx(1.0)
    # swapping a tied-gain doc with a lower one does cost
    assert m.ndcg_at_k(["c", "a", "b"], tied, 10) < 1.0


def test_no_relevant_docs_gives_zero_everywhere():
    none = {"a": 0, "b": 0}
    for fn in (m.ndcg_at_k, m.recall_at_k, m.mrr_at_k, m.hit_at_k, m.precision_at_k):
        assert fn(["a", "b"], none, 10) == 0.0
    assert m.ndcg_at_k(["a"], {}, 10) == 0.0
    assert m.recall_curve(["a"], none, 3) == [0.0, 0.0, 0.0]


def test_recall_at_k_binary_and_k_beyond_list():
    ranked = ["x", "c", "d", "a"]
    assert m.recall_at_k(ranked, QRELS, 1) == 0.0
    assert m.recall_at_k(ranked, QRELS, 2) == pytest.approx(1 / 3)  # relevant = a,b,c; d (score 0) is not
    assert m.recall_at_k(ranked, QRELS, 4) == pytest.approx(2 / 3)
    assert m.recall_at_k(ranked, QRELS, 100) == pytest.approx(2 / 3)  # k larger than the list


def test_precision_does_not_pad_short_lists():
    assert m.precision_at_k(["a", "x"], QRELS, 4) == pytest.approx(1 / 4)


def test_mrr():
    assert m.mrr_at_k(["x", "y", "b"], QRELS, 10) == pytest.approx(1 / 3)
    assert m.mrr_at_k(["x", "y", "b"], QRELS, 2) == 0.0
    assert m.mrr_at_k(["d", "c"], QRELS, 10) == pytest.approx(1 / 2)  # d is judged non-relevant
    assert m.mrr_at_k([], QRELS, 10) == 0.0


def test_duplicates_in_ranking_count_once():
    ranked = ["a", "a", "a", "b"]
    # after de-duplication: [a, b]; recall@2 = 2/3 (not 3/3 from counting "a" thrice)
    assert m.recall_at_k(ranked, QRELS, 2) == pytest.approx(2 / 3)
    assert m.recall_at_k(["a", "a", "a"], QRELS, 3) == pytest.approx(1 / 3)
    assert m.precision_at_k(["a", "a"], QRELS, 2) == pytest.approx(1 / 2)
    # nDCG never exceeds 1 with repeats of the best doc
    assert m.ndcg_at_k(["a", "a", "a"], {"a": 3}, 3) == pytest.approx(1.0)
    assert m.dedupe_ranking(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_bad_k_rejected():
    with pytest.raises(ValueError):
        m.recall_at_k(["a"], QRELS, 0)


def test_recall_curve_matches_recall_at_k():
    ranked = ["x", "c", "d", "a", "y", "b"]
    curve = m.recall_curve(ranked, QRELS, 8)
    assert len(curve) == 8
    for k in range(1, 9):
        assert curve[k - 1] == pytest.approx(m.recall_at_k(ranked, QRELS, k))
    assert curve[-1] == 1.0


def test_ranking_metrics_row_and_mean_excludes_unjudged_queries():
    row = m.ranking_metrics(["a", "b"], QRELS)
    assert list(row) == m.metric_names() == ["ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10"]
    top2 = 3 + 2 / math.log2(3)
    assert row == pytest.approx({"ndcg@10": top2 / (top2 + 1 / 2), "recall@1": 1 / 3, "recall@5": 2 / 3,
                                 "recall@10": 2 / 3, "recall@100": 2 / 3, "mrr@10": 1.0})
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}, "q3": {"c": 2}}
    assert m.evaluable_queries(qrels) == ["q1", "q3"]
    # q2 has no relevant doc: excluded; q3 missing from per_query counts as 0
    assert m.mean_over_queries({"q1": 1.0, "q2": 1.0}, qrels) == pytest.approx(0.5)
    assert m.mean_over_queries({}, {"q": {}}) == 0.0


def test_mean_ranking_metrics_and_deltas():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}, "q3": {"c": 2}}
    per_query = {"q1": {"mrr@10": 1.0, "ndcg@10": 1.0}, "q3": {"mrr@10": 0.5, "ndcg@10": 0.25}}
    assert m.mean_ranking_metrics(per_query, qrels, ["ndcg@10", "mrr@10"]) == {"ndcg@10": 0.625, "mrr@10": 0.75}
    before = {"dense": {"mrr@10": 0.5, "ndcg@10": None}, "bm25": {"mrr@10": 0.1}}
    after = {"dense": {"mrr@10": 0.75, "ndcg@10": 0.5}, "hybrid": {"mrr@10": 0.9}}
    # Only metrics both sides report: a mode or value missing on either side gives no delta.
    assert m.metric_deltas(before, after) == {"dense": {"mrr@10": 0.25}, "hybrid": {}}


def test_ranking_metrics_are_the_products_own():
    """The eval harness reports with the very functions `rag tune` decides on (defined once, in rag.metrics)."""
    for name in ("ndcg_at_k", "recall_at_k", "mrr_at_k", "ranking_metrics", "mean_over_queries", "recall_curve"):
        assert getattr(m, name) is getattr(rag.metrics, name)


def test_percentiles_use_numpy_linear():
    vals = [10, 20, 30, 40, 100]
    assert m.percentile(vals, 50) == 30
    assert m.percentile(vals, 95) == pytest.approx(40 + 0.8 * 60)  # rank 3.8 between 40 and 100
    assert m.percentile([], 50) is None
    s = m.latency_summary(vals)
    assert s["p50"] == 30 and s["count"] == 5 and s["max"] == 100 and s["mean"] == 40
    assert m.latency_summary([])["p95"] is None
    stages = m.stage_latencies([{"embed": 1.0, "search": 4.0}, {"embed": 3.0}])
    assert stages["embed"]["p50"] == 2.0 and stages["search"]["count"] == 1


def test_normalize_answer_squad():
    assert m.normalize_answer("The  Walt Disney, Company!") == "walt disney company"
    assert m.normalize_answer("An apple a day") == "apple day"
    assert m.normalize_answer("  ") == ""


def test_exact_match_and_f1():
    gold = ["The Walt Disney Company", "Disney–ABC Television Group"]
    assert m.exact_match("walt disney company.", gold) == 1.0
    assert m.exact_match("Disney", gold) == 0.0
    # F1 vs "walt disney company": pred tokens [disney], p=1, r=1/3 -> 0.5;
    # vs "disney–abc television group": token "disney–abc" != "disney" -> 0. max = 0.5
    assert m.token_f1("Disney", gold) == pytest.approx(0.5)
    # repeated tokens: pred "paris paris" vs "paris": common=1, p=1/2, r=1 -> 2/3
    assert m.token_f1("paris paris", ["Paris"]) == pytest.approx(2 / 3)
    assert m.token_f1("", ["x"]) == 0.0
    # unanswerable (empty gold) in SQuAD semantics: only an empty prediction scores
    assert m.exact_match("", []) == 1.0 and m.token_f1("something", []) == 0.0


def test_abstention_scores():
    should = [True, True, False, False, True]
    did = [True, False, True, False, True]
    s = m.abstention_scores(should, did)
    assert (s.true_pos, s.false_pos, s.false_neg, s.true_neg) == (2, 1, 1, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    none = m.abstention_scores([False, False], [False, False])
    assert none.precision is None and none.recall is None and none.f1 is None
    with pytest.raises(ValueError):
        m.abstention_scores([True], [])


def test_citation_validity():
    assert m.citation_validity(["c1", "c2"], {"c1", "c2", "c3"}) == 1.0
    assert m.citation_validity(["c1", "zz", "c1", "yy"], {"c1"}) == 0.5
    assert m.citation_validity([], {"c1"}) is None
    assert m.mean_defined([1.0, None, 0.5]) == 0.75
    assert m.mean_defined([None]) is None


def _entails(premise: str, hypothesis: str) -> bool:
    """Toy support: every word of the hypothesis appears in the premise."""
    words = set(premise.lower().split())
    return all(w in words for w in hypothesis.lower().split())


def test_alce_citation_recall_and_precision():
    p_ab = "alpha beta"
    p_c = "gamma"
    p_x = "unrelated words"
    p_all = "alpha beta gamma"
    sentences = [
        ("alpha beta gamma", [p_ab, p_c]),  # joint supports; neither alone; each needed -> 2 precise
        ("alpha beta", [p_ab, p_x]),  # supported; p_x irrelevant (alone no, rest yes) -> 1 precise of 2
        ("alpha", [p_all, p_ab]),  # both alone support -> both precise (redundant, not irrelevant)
        ("delta", [p_ab]),  # unsupported -> recall 0, its citation not precise
        ("gamma", []),  # no citation -> unsupported
        ("gamma", [p_c, None]),  # invalid citation -> unsupported, 0 precise of 2
    ]
    s = m.citation_scores(sentences, _entails)
    assert s.n_sentences == 6 and s.n_citations == 9
    assert s.recall == pytest.approx(3 / 6)
    assert s.precision == pytest.approx((2 + 1 + 2) / 9)


def test_alce_single_citation_and_empty_answer():
    assert m.citation_scores([("gamma", ["gamma ray"])], _entails).precision == 1.0
    empty = m.citation_scores([], _entails)
    assert empty.recall == 0.0 and empty.precision == 0.0
