"""Faithfulness judges (lexical offline, NLI when weights load, LLM against a real local HTTP server)
and the judge-validation statistics."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from evals.judge_validation import (
    accuracy_at,
    best_threshold,
    length_matched_auc,
    load_records,
    roc_auc,
    split_groups,
    validate_judge,
)
from evals.judges import LexicalJudge, LLMJudge, NLIJudge, make_judge, parse_json_reply, split_claims
from evals.metrics import citation_scores
from rag.errors import ConfigError, LLMError, ModelLoadError
from tests.fake_llm_server import Reply, Status

CONTEXT = (
    "Milhouse Van Houten is a character in The Simpsons, created by Matt Groening, who named the "
    "character after President Richard Nixon's middle name. The show premiered in 1989."
)


# --- lexical ---------------------------------------------------------------------------------


def test_split_claims_strips_citation_markers():
    assert split_claims("Nixon [1]. The show began in 1989 [1, 2].") == ["Nixon.", "The show began in 1989."]
    assert split_claims("  [1] ") == []


def test_lexical_supported_and_unsupported_claims():
    judge = LexicalJudge()
    good = judge.score(CONTEXT, "Who?", "Milhouse was named after Richard Nixon [1].")
    assert good.supported and good.score == pytest.approx(1.0)
    bad = judge.score(CONTEXT, "Who?", "Milhouse was named after Richard Nixon. The show premiered in 1994.")
    assert not bad.supported
    assert [c.supported for c in bad.claims] == [True, False]
    assert "1994" in bad.claims[1].reason
    # a number weighs more than a plain word: same count of missing tokens, lower score
    num = judge.score(CONTEXT, "", "The show premiered in 1994.").score
    word = judge.score(CONTEXT, "", "The show premiered in winter.").score
    assert num < word < 1.0


def test_lexical_names_weigh_more_and_polarity_is_not_content():
    judge = LexicalJudge()
    name = judge.score(CONTEXT, "", "The character was created by Groening and Brooks.").score
    plain = judge.score(CONTEXT, "", "The character was created by Groening and friends.").score
    assert name < plain
    yes = judge.score(CONTEXT, "Is Milhouse in The Simpsons?", "yes")
    assert yes.supported and yes.score == 1.0 and yes.claims[0].reason == "no content words"
    empty = judge.score(CONTEXT, "", "")
    assert empty.score == 1.0 and empty.claims == []


def test_judge_as_alce_support_function():
    judge = LexicalJudge()
    passages = ["Matt Groening created Milhouse.", "Milhouse is named after Richard Nixon."]
    s = citation_scores([("Groening created Milhouse, named after Richard Nixon.", passages)], judge.entails)
    assert s.recall == 1.0 and s.precision == 1.0
    s2 = citation_scores([("Groening created Milhouse.", [passages[0], "Unrelated weather report."])], judge.entails)
    assert s2.recall == 1.0 and s2.precision == 0.5  # the weather passage is irrelevant


def test_make_judge():
    assert isinstance(make_judge("lexical"), LexicalJudge)
    assert isinstance(make_judge("NLI", model_name="x"), NLIJudge)
    with pytest.raises(ConfigError, match="unknown judge"):
        make_judge("magic")


# --- NLI ---------------------------------------------------------------------------------------


def test_nli_judge_default_model_or_skip():
    judge = NLIJudge()
    try:
        judge.load()
    except ModelLoadError as exc:
        assert "nli-deberta-v3-small" in str(exc)
        pytest.skip(f"NLI weights unavailable offline (Hugging Face Hub unreachable): {exc}")
    good = judge.score(CONTEXT, "", "Milhouse was named after Richard Nixon.")
    bad = judge.score(CONTEXT, "", "Milhouse was named after Abraham Lincoln.")
    assert good.score > bad.score


def test_nli_judge_rejects_model_without_entailment_label(minilm_path):
    judge = NLIJudge(model_name=minilm_path)
    with pytest.raises(ModelLoadError, match="no 'entailment' label"):
        judge.score(CONTEXT, "", "Milhouse exists.")


# --- LLM ---------------------------------------------------------------------------------------


def test_parse_json_reply_variants():
    assert parse_json_reply('{"claims": ["a"]}') == {"claims": ["a"]}
    assert parse_json_reply('```json\n{"claims": ["a", "b"]}\n```') == {"claims": ["a", "b"]}
    assert parse_json_reply('Sure! Here you go: {"verdicts": [1, 0]} Hope that helps.') == {"verdicts": [1, 0]}
    assert parse_json_reply('["x", "y"]') == ["x", "y"]
    with pytest.raises(ValueError):
        parse_json_reply("no json here")


def _llm_judge(server) -> LLMJudge:
    from rag.config import Settings

    settings = Settings(llm_base_url=server.base_url, llm_model="judge-model", llm_max_retries=0, llm_timeout_s=5)
    return LLMJudge(settings)


def test_llm_judge_claims_then_verdicts(fake_llm):
    fake_llm.script(
        Reply('```json\n{"claims": ["Milhouse was named after Richard Nixon.", "The show premiered in 1994."]}\n```'),
        Reply('Verdicts: {"verdicts": [{"claim": "c1", "reason": "stated", "verdict": 1}, '
              '{"claim": "c2", "reason": "context says 1989", "verdict": "no"}]}'),
    )
    judge = _llm_judge(fake_llm)
    result = judge.score(CONTEXT, "Who?", "Milhouse was named after Nixon [1], and the show premiered in 1994 [1].")
    assert result.score == 0.5 and not result.supported
    assert [c.supported for c in result.claims] == [True, False]
    assert result.claims[1].reason == "context says 1989"
    assert len(fake_llm.requests) == 2
    assert fake_llm.requests[0]["model"] == "judge-model"
    assert "[1]" not in fake_llm.requests[0]["messages"][0]["content"]  # markers stripped for claim splitting
    assert CONTEXT in fake_llm.requests[1]["messages"][0]["content"]


def test_llm_judge_unusable_replies_fall_back(fake_llm):
    fake_llm.script(Reply("I cannot produce JSON today."), Reply('{"verdicts": [true]}'))
    result = _llm_judge(fake_llm).score(CONTEXT, "", "Nixon. Lincoln.")
    # claims fall back to the answer sentences; the missing second verdict counts as unsupported
    assert [c.claim for c in result.claims] == ["Nixon.", "Lincoln."]
    assert [c.supported for c in result.claims] == [True, False]
    assert "no usable verdict" in result.claims[1].reason


def test_llm_judge_http_error_is_llm_error(fake_llm):
    fake_llm.script(Status(500, "boom"))
    with pytest.raises(LLMError, match="judge-model"):
        _llm_judge(fake_llm).score(CONTEXT, "", "Nixon.")


def test_llm_judge_needs_an_endpoint(monkeypatch):
    from rag.config import Settings

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="RAG_LLM_BASE_URL"):
        LLMJudge(Settings())


# --- validation statistics ---------------------------------------------------------------------


def test_roc_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding creates ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    assert roc_auc([1, 1], [0.1, 0.2]) is None


def test_best_threshold_and_accuracy():
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.2, 0.6, 0.9, 0.7, 0.8]
    t = best_threshold(y, s)
    # 0.4 (0.7 wrong) and 0.75 (0.6 wrong) both give 5/6; ties go to the lowest threshold
    assert t == pytest.approx(0.4)
    assert accuracy_at(y, s, t) == pytest.approx(5 / 6)
    assert accuracy_at(y, s, 0.75) == pytest.approx(5 / 6)
    assert accuracy_at(y, s, 0.95) == pytest.approx(3 / 6)


def test_length_matched_auc_pools_pairs_within_bands():
    # band 1-2: faithful [1.0], halluc [0.0] -> auc 1 (1 pair); band 3-4: faithful [0.2, 0.2], halluc [0.5] -> 0 (2 pairs)
    y = [1, 0, 1, 1, 0]
    s = [1.0, 0.0, 0.2, 0.2, 0.5]
    n = [1, 2, 3, 4, 3]
    out = length_matched_auc(y, s, n)
    assert out["pairs"] == 3
    assert out["auc"] == pytest.approx(1 / 3)


def test_group_split_is_disjoint_and_deterministic():
    records = [{"group": g} for g in range(10) for _ in range(3)]
    dev, test = split_groups(records)
    assert dev.isdisjoint(test) and len(dev | test) == 10
    assert split_groups(records) == (dev, test)


def test_validate_lexical_judge_on_halueval(evaldata):
    records = load_records(evaldata / "faithfulness-halueval" / "faithfulness.jsonl")
    result = validate_judge(LexicalJudge(), records)
    jm, bm = result["judge_metrics"], result["length_baseline"]
    assert result["records"] == 744
    assert jm["auc"] > 0.85
    assert jm["accuracy"] > result["majority_accuracy"]
    # the point of the length-matched AUC: length alone carries little signal at fixed length
    assert jm["length_matched"]["auc"] > bm["length_matched"]["auc"] + 0.15


def test_cli_json(evaldata):
    out = subprocess.run(
        [sys.executable, "-m", "evals.judge_validation", "--judge", "lexical", "--limit", "60", "--json",
         "--data", str(evaldata / "faithfulness-halueval" / "faithfulness.jsonl")],
        capture_output=True, text=True, check=True, timeout=120,
    )
    data = json.loads(out.stdout)
    assert data["records"] == 60 and "auc" in data["judge_metrics"]
