"""The cross-encoder reranker with the real MiniLM backbone (fresh one-logit head, seeded)."""

from __future__ import annotations

import math

import pytest

from rag.config import Settings
from rag.errors import ModelLoadError
from rag.rerank import Reranker, load_reranker


# `reranker` (session, head seeded for reproducible scores) comes from tests/conftest.py.

TEXTS = [
    "The cat sat on the mat.",
    "Quarterly revenue grew by twelve percent.",
    "Boundary layer separation on a swept wing at high Mach numbers.",
    "Paris is the capital of France.",
    "A recipe for sourdough bread with a long fermentation.",
]


def test_scores_one_float_per_text_in_input_order(reranker):
    scores = reranker.score("what is the capital of france", TEXTS)
    assert len(scores) == len(TEXTS)
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert len(set(scores)) > 1  # the pairs really differ
    # Order is preserved: scoring reversed input gives reversed scores.
    reversed_scores = reranker.score("what is the capital of france", TEXTS[::-1])
    assert reversed_scores == pytest.approx(scores[::-1], abs=1e-5)
    # The query takes part in the score (a cross-encoder, not a passage prior).
    other = reranker.score("sourdough fermentation time", TEXTS)
    assert other != pytest.approx(scores, abs=1e-6)


def test_batching_does_not_change_scores(reranker):
    full = reranker.score("wing separation", TEXTS)
    old = reranker.batch_size
    reranker.batch_size = 2  # 3 batches: 2 + 2 + 1
    try:
        batched = reranker.score("wing separation", TEXTS)
    finally:
        reranker.batch_size = old
    assert batched == pytest.approx(full, abs=1e-4)


def test_empty_text_list(reranker):
    assert reranker.score("anything", []) == []


def test_very_long_inputs_are_truncated_not_errors(reranker):
    assert reranker.max_length == 512  # the BERT backbone's position limit
    long_passage = "The shock wave interacts with the boundary layer. " * 2000  # ~18k tokens
    long_query = "pressure distribution " * 3000
    scores = reranker.score(long_query, [long_passage, "short passage"])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    # Past the model's window extra text cannot matter: a passage twice as long scores the same.
    again = reranker.score(long_query, [long_passage * 2])
    assert again[0] == pytest.approx(scores[0], abs=1e-4)


def test_load_reranker_none_when_disabled():
    for value in ("none", "None", "off", ""):
        assert load_reranker(Settings(rerank_model=value)) is None


def test_load_reranker_is_cached(reranker, minilm_path):
    assert load_reranker(Settings(rerank_model=minilm_path, rerank_backend="torch-fp32")) is reranker


def test_missing_model_path_names_model_and_setting(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError) as err:
        load_reranker(Settings(rerank_model=missing))
    message = str(err.value)
    assert missing in message and "RAG_RERANK_MODEL" in message and "'none'" in message


def test_unloadable_folder_is_model_load_error(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "README.txt").write_text("no weights here")
    with pytest.raises(ModelLoadError, match="RAG_RERANK_MODEL"):
        Reranker(str(folder))


def test_rejects_bad_batch_size(minilm_path):
    with pytest.raises(ValueError, match="rerank_batch_size"):
        Reranker(minilm_path, batch_size=0)


def test_scores_are_raw_logits(reranker):
    # The evidence gate's floor is calibrated on logits, so the score must not pass through the
    # sigmoid this model's config would apply by default.
    torch = pytest.importorskip("torch")
    pairs = [("capital of france", t) for t in TEXTS]
    default = reranker._model.predict(pairs, show_progress_bar=False)  # this checkpoint: sigmoid
    logits = reranker.score("capital of france", TEXTS)
    assert torch.sigmoid(torch.tensor(logits)).tolist() == pytest.approx(list(default), abs=1e-5)
