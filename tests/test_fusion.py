"""Reciprocal rank fusion on hand-made rankings with hand-computed scores."""

from __future__ import annotations

import pytest

from rag.fusion import FusedItem, reciprocal_rank_fusion


def ids(items: list[FusedItem]) -> list[str]:
    return [item.id for item in items]


def test_two_legs_scores_and_order_by_hand():
    # dense: a b c ; bm25: c a d   (k = 60)
    # a = 1/61 + 1/62 ; c = 1/63 + 1/61 ; b = 1/62 ; d = 1/63
    fused = reciprocal_rank_fusion({"dense": ["a", "b", "c"], "bm25": ["c", "a", "d"]}, k=60)
    assert ids(fused) == ["a", "c", "b", "d"]
    scores = {f.id: f.score for f in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)
    by_id = {f.id: f for f in fused}
    assert by_id["a"].ranks == {"dense": 1, "bm25": 2}
    assert by_id["c"].ranks == {"dense": 3, "bm25": 1}
    assert by_id["b"].ranks == {"dense": 2}  # missing from bm25: no rank, no contribution
    assert by_id["d"].ranks == {"bm25": 3}


def test_k_changes_scores_and_can_flip_order():
    # x: rank 1 in one leg only; y: rank 3 in both legs.
    rankings = {"dense": ["x", "p", "y"], "bm25": ["q", "r", "y"]}
    small_k = reciprocal_rank_fusion(rankings, k=1)
    # k=1: x = 1/2 = 0.5 ; y = 2/4 = 0.5 -> tie, broken by best rank (x: 1, y: 3)
    assert {f.id: f.score for f in small_k}["x"] == pytest.approx(0.5)
    assert {f.id: f.score for f in small_k}["y"] == pytest.approx(0.5)
    assert ids(small_k)[:2] == ["x", "q"]  # x and q both 1/2 with best rank 1: dense leg first
    assert ids(small_k).index("y") == 2
    big_k = reciprocal_rank_fusion(rankings, k=60)
    # k=60: x = 1/61 = 0.01639 ; y = 2/63 = 0.03175 -> agreement across legs wins
    assert ids(big_k)[0] == "y"
    assert big_k[0].score == pytest.approx(2 / 63)


def test_weights_scale_each_leg():
    rankings = {"dense": ["a", "b"], "bm25": ["b", "a"]}
    fused = reciprocal_rank_fusion(rankings, k=10, weights={"dense": 2.0, "bm25": 0.5})
    # a = 2/11 + 0.5/12 ; b = 2/12 + 0.5/11
    assert ids(fused) == ["a", "b"]
    assert fused[0].score == pytest.approx(2 / 11 + 0.5 / 12)
    assert fused[1].score == pytest.approx(2 / 12 + 0.5 / 11)
    flipped = reciprocal_rank_fusion(rankings, k=10, weights={"dense": 0.5, "bm25": 2.0})
    assert ids(flipped) == ["b", "a"]


def test_zero_weight_leg_keeps_ids_but_adds_nothing():
    fused = reciprocal_rank_fusion({"dense": ["a"], "bm25": ["b", "a"]}, k=60, weights={"bm25": 0.0})
    scores = {f.id: f.score for f in fused}
    assert scores == {"a": pytest.approx(1 / 61), "b": 0.0}
    assert ids(fused) == ["a", "b"]
    assert fused[1].ranks == {"bm25": 1}


def test_missing_weight_defaults_to_one():
    fused = reciprocal_rank_fusion({"dense": ["a"], "bm25": ["b"]}, k=60, weights={"dense": 3.0})
    assert {f.id: f.score for f in fused} == {"a": pytest.approx(3 / 61), "b": pytest.approx(1 / 61)}


def test_symmetric_ties_break_by_best_rank_then_leg_order_then_id():
    # a: dense 1, bm25 2 ; b: dense 2, bm25 1 -> identical scores and best rank 1 each.
    fused = reciprocal_rank_fusion({"dense": ["a", "b"], "bm25": ["b", "a"]}, k=60)
    assert fused[0].score == fused[1].score  # exactly equal, not just approximately
    assert ids(fused) == ["a", "b"]  # a holds rank 1 in the first leg (dense)
    # Swapping the leg order swaps the winner: the tie-break follows leg order, not dict luck.
    fused = reciprocal_rank_fusion({"bm25": ["b", "a"], "dense": ["a", "b"]}, k=60)
    assert ids(fused) == ["b", "a"]
    # Same score, same best rank, same leg: the id decides.
    fused = reciprocal_rank_fusion({"dense": ["z"], "bm25": ["y"], "other": ["m"]}, k=60,
                                   weights={"dense": 1.0, "bm25": 1.0, "other": 1.0})
    assert ids(fused) == ["z", "y", "m"]  # leg order first
    fused = reciprocal_rank_fusion({"dense": ["z", "q"], "bm25": ["q", "z"]}, k=60)
    assert ids(fused) == ["z", "q"]


def test_ties_with_three_legs_are_exact():
    # Sums of the same three terms in different leg orders must compare equal (fsum), so the
    # tie-break, not float rounding, decides.
    rankings = {"l1": ["a", "b", "c"], "l2": ["b", "c", "a"], "l3": ["c", "a", "b"]}
    fused = reciprocal_rank_fusion(rankings, k=7)
    assert fused[0].score == fused[1].score == fused[2].score
    assert ids(fused) == ["a", "b", "c"]  # all best rank 1; leg order l1 (a), l2 (b), l3 (c)


def test_duplicates_in_one_leg_count_once_at_best_rank():
    fused = reciprocal_rank_fusion({"dense": ["a", "b", "a", "a"]}, k=60)
    scores = {f.id: f.score for f in fused}
    assert scores["a"] == pytest.approx(1 / 61)  # not 1/61 + 1/63 + 1/64
    assert scores["b"] == pytest.approx(1 / 62)  # positions are list positions
    assert fused[0].ranks == {"dense": 1}


def test_single_leg_keeps_its_order():
    fused = reciprocal_rank_fusion({"bm25": ["d", "c", "b", "a"]}, k=60)
    assert ids(fused) == ["d", "c", "b", "a"]
    assert [f.ranks["bm25"] for f in fused] == [1, 2, 3, 4]
    assert [f.score for f in fused] == pytest.approx([1 / 61, 1 / 62, 1 / 63, 1 / 64])


def test_empty_legs_and_no_legs():
    assert reciprocal_rank_fusion({}) == []
    assert reciprocal_rank_fusion({"dense": [], "bm25": []}) == []
    fused = reciprocal_rank_fusion({"dense": [], "bm25": ["x", "y"]}, k=60)
    assert ids(fused) == ["x", "y"]
    assert fused[0].ranks == {"bm25": 1}


def test_unpacks_like_id_score_tuples():
    pairs = [(doc_id, score) for doc_id, score in reciprocal_rank_fusion({"dense": ["a", "b"]}, k=1)]
    assert pairs == [("a", pytest.approx(0.5)), ("b", pytest.approx(1 / 3))]


@pytest.mark.parametrize("k", [0, -1, float("nan"), float("inf")])
def test_rejects_non_positive_k(k):
    with pytest.raises(ValueError, match="rrf_k"):
        reciprocal_rank_fusion({"dense": ["a"]}, k=k)


@pytest.mark.parametrize("w", [-0.1, float("nan"), float("inf")])
def test_rejects_bad_weights(w):
    with pytest.raises(ValueError, match="weight"):
        reciprocal_rank_fusion({"dense": ["a"]}, weights={"dense": w})


def test_rejects_weight_for_unknown_leg():
    with pytest.raises(ValueError, match="unknown legs"):
        reciprocal_rank_fusion({"dense": ["a"]}, weights={"sparse": 1.0})
