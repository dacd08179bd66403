"""Report files: results.json, report.md, questions.jsonl and plots exist, parse and hold the numbers;
compare prints the deltas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.metrics import stage_latencies
from evals.report import compare, load_results, markdown_table, write_report
from rag.errors import RagError


def _results(ndcg_hybrid: float = 0.4567, dataset_hash: str = "abc123") -> dict:
    curve = [min(1.0, 0.1 + 0.009 * k) for k in range(100)]
    return {
        "kind": "retrieval",
        "dataset": {"name": "tiny", "path": "/data/tiny", "hash": dataset_hash},
        "config": {"embed_model": "minilm", "chunk_tokens": 128, "rrf_k": 60},
        "versions": {"rag": "0.1.0", "python": "3.11"},
        "retrieval": {"modes": {
            "bm25": {"metrics": {"ndcg@10": 0.3123, "recall@1": 0.1, "recall@5": 0.25, "recall@10": 0.4,
                                 "recall@100": 0.8, "mrr@10": 0.33},
                     "latency_ms": stage_latencies([{"sparse": 1.0, "total": 2.0}, {"sparse": 3.0, "total": 4.0}]),
                     "recall_curve": curve, "queries": 2},
            "hybrid": {"metrics": {"ndcg@10": ndcg_hybrid, "recall@1": 0.2, "recall@5": 0.35, "recall@10": 0.5,
                                   "recall@100": 0.9, "mrr@10": 0.41},
                       "latency_ms": stage_latencies([{"embed": 10.0, "search": 5.0, "total": 16.0}]),
                       "recall_curve": [min(1.0, v + 0.05) for v in curve], "queries": 2},
        }},
        "answers": {"metrics": {"exact_match": 0.61, "f1": 0.7234, "citation_validity": 1.0, "answered": 12}},
    }


def test_markdown_table_formats_and_aligns():
    table = markdown_table([{"a": "x|y", "b": 0.12345, "c": None}, {"a": "z", "b": 2, "c": True}],
                           ["a", ("b", "B!"), "c"])
    lines = table.splitlines()
    assert lines[0] == "| a | B! | c |"
    assert lines[1] == "|---|---:|---|"
    assert lines[2] == "| x\\|y | 0.123 | – |"
    assert lines[3] == "| z | 2 | yes |"


def test_write_report_files(tmp_path: Path):
    rows = [{"query_id": "q1", "mode": "bm25", "recall@10": 1.0}, {"query_id": "q2", "mode": "bm25", "recall@10": 0.0}]
    write_report(tmp_path / "out", _results(), rows)
    out = tmp_path / "out"
    data = json.loads((out / "results.json").read_text())
    assert data["retrieval"]["modes"]["hybrid"]["metrics"]["ndcg@10"] == 0.4567
    assert data["dataset"]["hash"] == "abc123" and data["versions"]["rag"] == "0.1.0"
    assert data["files"]["plots"] == ["recall_at_k.png", "latency_by_stage.png"]
    lines = (out / "questions.jsonl").read_text().splitlines()
    assert [json.loads(x)["query_id"] for x in lines] == ["q1", "q2"]
    md = (out / "report.md").read_text()
    assert "| mode | nDCG@10 | R@1 | R@5 | R@10 | R@100 | MRR@10 |" in md
    assert "| hybrid | 0.457 | 0.200 | 0.350 | 0.500 | 0.900 | 0.410 | 16.0 | 16.0 | 2 |" in md
    assert "| bm25 | 0.312 |" in md
    assert "2.0 / 2.9" in md  # bm25 sparse stage p50 / p95 (numpy linear: 1 + 0.95 * 2)
    assert "| f1 | 0.723 |" in md and "| answered | 12 |" in md
    for png in ("recall_at_k.png", "latency_by_stage.png"):
        head = (out / png).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 5000


def test_answers_only_report_has_no_plots(tmp_path: Path):
    results = {"kind": "answers", "dataset": {"name": "squad"}, "answers": {"metrics": {"exact_match": 0.5},
               "latency_ms": stage_latencies([{"retrieve": 20.0, "generate": 100.0}])}}
    write_report(tmp_path, results, [])
    assert not (tmp_path / "recall_at_k.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "## Answers" in md and "## Retrieval" not in md and "| generate | 100.0 |" in md
    assert (tmp_path / "questions.jsonl").read_text() == ""


def test_compare_prints_deltas(tmp_path: Path):
    write_report(tmp_path / "a", _results(0.40), [])
    b = _results(0.45)
    b["config"]["chunk_tokens"] = 256
    b["answers"]["metrics"]["f1"] = 0.80
    write_report(tmp_path / "b", b, [])
    text = compare(tmp_path / "a", tmp_path / "b")
    assert "| ndcg@10 | 0.400 | 0.450 | 0.050 |" in text
    assert "| chunk_tokens | 128 | 256 |" in text
    assert "| f1 | 0.723 | 0.800 | 0.077 |" in text
    assert "| total p50 ms | 16.000 | 16.000 | 0.000 |" in text
    assert "WARNING" not in text
    c = _results(0.45, dataset_hash="other")
    write_report(tmp_path / "c", c, [])
    assert "dataset hashes differ" in compare(tmp_path / "a", tmp_path / "c")


def test_load_results_missing_folder(tmp_path: Path):
    with pytest.raises(RagError, match="results.json not found"):
        load_results(tmp_path)


# --- issue 17: the Eval tab said `llm_model: gpt-4o-mini` for extractive runs ----------------------------------

def _answers_results(settings) -> dict:
    return {"kind": "answers", "dataset": {"name": "tiny", "path": "/data/tiny", "hash": "abc"},
            "config": {**settings.public_dict(), "answerer": "llm" if settings.llm_enabled else "extractive"},
            "answers": {"metrics": {"exact_match": 0.5, "answered": 1}}}


@pytest.mark.parametrize("settings_changes,provider,expected", [
    ({"llm_provider": "extractive", "reader_model": "/models/minilm-squad2"}, "reader",
     "answerer: reader /models/minilm-squad2"),
    ({"llm_provider": "extractive", "reader_model": "/models/minilm-squad2"}, "extractive",  # reader failed to load
     "answerer: extractive (sentence answerer)"),
    ({"llm_provider": "openai", "llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "gpt-4o"}, "openai",
     "answerer: LLM gpt-4o"),
])
def test_eval_tab_shows_the_answerer_a_run_actually_used(tmp_path, settings_changes, provider, expected):
    from evals.runs import write_results
    from rag.config import Settings
    from ui.eval_reports import load_eval_folder

    settings = Settings(state_dir=str(tmp_path / "state"), **settings_changes)
    rows = [{"id": "q1", "question": "Who?", "provider": provider, "abstained": False}]
    write_results(_answers_results(settings), rows, tmp_path / "run", settings, "answers")
    markdown, _plots, data = load_eval_folder(str(tmp_path / "run"), [tmp_path], settings)
    assert expected in markdown
    assert data["config"]["answerer"] == {"reader": "reader", "extractive": "extractive", "openai": "llm"}[provider]
    if provider != "openai":
        assert "gpt-4o-mini" not in markdown and "llm_model" not in data["config"]


def test_eval_tab_corrects_an_older_extractive_report(tmp_path):
    """Runs written before the fix carry `- llm_model: gpt-4o-mini` in report.md and llm_model in results.json."""
    from rag.config import Settings
    from ui.eval_reports import load_eval_folder

    run = tmp_path / "old"
    run.mkdir()
    (run / "report.md").write_text("# Eval report: answers on squad\n\n- embed_model: minilm\n"
                                   "- llm_model: gpt-4o-mini\n\n## Answers\n")
    (run / "results.json").write_text(json.dumps({"kind": "answers", "config": {
        "llm_provider": "auto", "llm_base_url": None, "llm_model": "gpt-4o-mini", "answerer": "extractive"}}))
    markdown, _plots, _data = load_eval_folder(str(run), [tmp_path], Settings())
    assert "gpt-4o-mini" not in markdown
    assert "- embed_model: minilm\n- answerer: extractive (sentence answerer)\n" in markdown
    # a retrieval run answers nothing
    (run / "results.json").write_text(json.dumps({"kind": "retrieval", "config": {"llm_model": "gpt-4o-mini"}}))
    assert "- answerer: none (retrieval only)" in load_eval_folder(str(run), [tmp_path], Settings())[0]
