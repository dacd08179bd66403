"""The eval runner end to end on tiny datasets: real Pipeline (Qdrant Edge, MiniLM, extractive answerer).

Each test builds its datasets in tmp_path; models are loaded once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals import runner
from evals.datasets import DatasetError
from rag.cli import build_parser
from rag.config import Settings
from rag.errors import ConfigError

BEIR_DOCS = {
    "d1": ("Boundary layer", "The laminar boundary layer on a flat plate thickens downstream as viscosity acts."),
    "d2": ("Shock waves", "A normal shock wave forms ahead of a blunt body in supersonic flow."),
    "d3": ("Heat transfer", "Heat transfer to the wall rises sharply in hypersonic flow near the stagnation point."),
    "d4": ("Wing flutter", "Flutter of a thin wing couples bending and torsion at high dynamic pressure."),
    "d5": ("Buckling", "Thin cylindrical shells buckle under axial compression well below the classical load."),
    "d6": ("Jet noise", "Noise from a subsonic jet scales with the eighth power of the exit velocity."),
    "d7": ("Transition", "Transition from laminar to turbulent boundary layer flow depends on roughness."),
    "d8": ("Slender bodies", "Slender body theory predicts the lift of pointed bodies of revolution."),
    "d9": ("Ablation", "Ablating heat shields protect re-entry vehicles by carrying heat away as mass."),
    "d10": ("Empty", ""),
}
BEIR_QUERIES = {
    "1": "what makes a laminar boundary layer become turbulent",
    "2": "heat transfer at the stagnation point in hypersonic flow",
    "3": "buckling of cylindrical shells under axial load",
}
BEIR_QRELS = [("1", "d7", 2), ("1", "d1", 1), ("2", "d3", 3), ("2", "d9", 0), ("3", "d5", 1)]

DOC_A = """# Apollo program

The Apollo program was the third United States human spaceflight program carried out by NASA. It landed the first humans on the Moon from 1969 to 1972.

Apollo 11 was the first crewed mission to land on the Moon, commanded by Neil Armstrong, on July 20, 1969.
"""
DOC_B = """# Chloroplast

Chloroplasts are organelles that conduct photosynthesis in plant and algal cells. They capture light energy with the pigment chlorophyll.

Chloroplasts have their own DNA, which supports the theory that they descend from free-living cyanobacteria.
"""
QUESTIONS = [
    {"id": "q1", "question": "Who commanded Apollo 11?", "answers": ["Neil Armstrong"], "is_impossible": False,
     "doc": "Apollo.md",
     "paragraph": "Apollo 11 was the first crewed mission to land on the Moon, commanded by Neil Armstrong, on July 20, 1969."},
    {"id": "q2", "question": "What pigment do chloroplasts use to capture light energy?", "answers": ["chlorophyll"],
     "is_impossible": False, "doc": "Chloroplast.md",
     "paragraph": "Chloroplasts are organelles that conduct photosynthesis in plant and algal cells. They capture light energy with the pigment chlorophyll."},
    {"id": "q3", "question": "Which bacteria did mitochondria descend from?", "answers": [], "is_impossible": True,
     "doc": "Chloroplast.md",
     "paragraph": "Chloroplasts have their own DNA, which supports the theory that they descend from free-living cyanobacteria."},
]


@pytest.fixture()
def beir_dir(tmp_path) -> Path:
    root = tmp_path / "tiny-beir"
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as fh:
        for doc_id, (title, text) in BEIR_DOCS.items():
            fh.write(json.dumps({"_id": doc_id, "title": title if text else "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for qid, text in BEIR_QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in BEIR_QRELS]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture()
def docqa_dir(tmp_path) -> Path:
    root = tmp_path / "tiny-squad"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "Apollo.md").write_text(DOC_A)
    (root / "docs" / "Chloroplast.md").write_text(DOC_B)
    with (root / "questions.jsonl").open("w") as fh:
        for q in QUESTIONS:
            fh.write(json.dumps(q) + "\n")
    return root


@pytest.fixture()
def eval_settings(settings) -> Settings:
    """The shared per-test settings (conftest): MiniLM, fresh embedded store, extractive answers."""
    return settings


def _in_unit(value) -> bool:
    return value is None or 0.0 <= value <= 1.0


@pytest.mark.slow  # two full retrieval evals over every mode: ~40 s
def test_beir_retrieval_writes_report_and_is_deterministic(beir_dir, tmp_path, eval_settings, embedder, reranker):
    out1, out2 = tmp_path / "run1", tmp_path / "run2"
    modes = ["dense", "bm25", "hybrid", "rerank"]
    r1 = runner.run_retrieval(beir_dir, eval_settings, modes=modes, out=out1, progress=False,
                              embedder=embedder, reranker=reranker)
    for name in ("results.json", "report.md", "questions.jsonl"):
        assert (out1 / name).is_file(), name
    saved = json.loads((out1 / "results.json").read_text())
    assert saved["retrieval"] == r1["retrieval"]
    assert saved["config"]["embed_model"] == eval_settings.embed_model
    assert saved["dataset"]["hash"] and saved["versions"]["torch"]
    assert r1["dataset"]["indexed_docs"] == 9  # the empty record is not indexed
    assert r1["config"]["collection"].startswith("eval_beir-tiny-beir_")
    m1 = {mode: d["metrics"] for mode, d in r1["retrieval"]["modes"].items()}
    # Every query's relevant records come first in dense, bm25 and hybrid; query 1 has two (recall@1 = 1/2).
    perfect = {"ndcg@10": 1.0, "recall@1": (0.5 + 1 + 1) / 3, "recall@5": 1.0, "recall@10": 1.0, "recall@100": 1.0,
               "mrr@10": 1.0}
    for mode in modes:
        m = m1[mode]
        assert set(m) == {"ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10"}
        if mode == "rerank":  # the test cross-encoder's head is untrained: its order means nothing
            assert all(0.0 <= v <= 1.0 for v in m.values())
        else:
            assert m == pytest.approx(perfect)
        # 9 indexed docs < 100: every relevant (indexed) doc is retrieved at depth 100
        assert m["recall@100"] == pytest.approx(1.0)
        assert len(r1["retrieval"]["modes"][mode]["recall_curve"]) == 100
        assert r1["retrieval"]["modes"][mode]["latency_ms"]["total"]["p50"] > 0
    # BM25 finds the lexical matches of these queries at rank 1
    assert m1["bm25"]["mrr@10"] == pytest.approx(1.0)
    assert (out1 / "recall_at_k.png").is_file()
    assert "| bm25 |" in (out1 / "report.md").read_text()
    rows = [json.loads(line) for line in (out1 / "questions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * len(modes)
    row = next(r for r in rows if r["qid"] == "2" and r["mode"] == "bm25")
    assert row["relevant"] == ["d3"] and row["relevant_ranks"][0] == 1 and row["hits"][0] == "d3"

    # Second run: same collection (sync skips all files), identical retrieval numbers.
    r2 = runner.run_retrieval(beir_dir, eval_settings, modes=modes, out=out2, progress=False,
                              embedder=embedder, reranker=reranker)
    assert r2["config"]["collection"] == r1["config"]["collection"]
    for mode in modes:
        a, b = r1["retrieval"]["modes"][mode], r2["retrieval"]["modes"][mode]
        assert a["metrics"] == b["metrics"] and a["recall_curve"] == b["recall_curve"]
    rows2 = [json.loads(line) for line in (out2 / "questions.jsonl").read_text().splitlines()]
    assert [(r["qid"], r["mode"], r["hits"]) for r in rows2] == [(r["qid"], r["mode"], r["hits"]) for r in rows]


def test_collection_name_changes_with_index_settings(eval_settings):
    a = runner.eval_collection_name("beir", "cranfield", "abc", eval_settings)
    assert a == runner.eval_collection_name("beir", "cranfield", "abc", eval_settings)
    assert a != runner.eval_collection_name("beir", "cranfield", "abc", eval_settings.replace(chunk_tokens=64))
    assert a != runner.eval_collection_name("beir", "cranfield", "abd", eval_settings)
    assert a.startswith("eval_beir-cranfield_") and len(a.rsplit("_", 1)[1]) == 8


def test_docqa_retrieval_skips_impossible(docqa_dir, tmp_path, eval_settings, embedder):
    res = runner.run_retrieval(docqa_dir, eval_settings, modes=["bm25", "hybrid"], out=tmp_path / "out",
                               progress=False, embedder=embedder)
    assert res["dataset"]["queries_evaluated"] == 2
    assert res["dataset"]["skipped_for_retrieval"]["is_impossible"] == 1
    for mode in ("bm25", "hybrid"):
        m = res["retrieval"]["modes"][mode]["metrics"]
        # two small docs: the chunk holding the gold paragraph comes first for both questions
        assert m == pytest.approx(dict.fromkeys(["ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100",
                                                 "mrr@10"], 1.0))
        # two docs, the gold paragraph is somewhere in the top 10
        assert m["recall@10"] == pytest.approx(1.0)
    rows = [json.loads(line) for line in (tmp_path / "out" / "questions.jsonl").read_text().splitlines()]
    assert {r["qid"] for r in rows} == {"q1", "q2"}
    assert all(any(h["relevant"] for h in r["hits"]) for r in rows)


def test_answers_resume_skips_finished_questions(docqa_dir, tmp_path, eval_settings, embedder, monkeypatch):
    from rag.pipeline import Pipeline

    calls: list[str] = []
    real_ask = Pipeline.ask

    def counting_ask(self, question, *a, **kw):
        calls.append(question)
        return real_ask(self, question, *a, **kw)

    monkeypatch.setattr(Pipeline, "ask", counting_ask)
    out = tmp_path / "answers"
    first = runner.run_answers(docqa_dir, eval_settings, limit=2, out=out, progress=False, embedder=embedder)
    assert len(calls) == 2 and first["answers"]["metrics"]["questions"] == 2
    partial = out / runner.PARTIAL_FILE
    first_lines = partial.read_text().splitlines()
    assert [json.loads(line)["id"] for line in first_lines] == ["q1", "q2"]

    # An interrupted write leaves a torn last line: it must be ignored, not crash the resume.
    with partial.open("a") as fh:
        fh.write('{"id": "q3", "question": "trunc')
    calls.clear()
    full = runner.run_answers(docqa_dir, eval_settings, out=out, progress=False, embedder=embedder)
    assert calls == [QUESTIONS[2]["question"]]  # only the unfinished question ran
    assert full["resume"] == {"reused_rows": 2, "computed_rows": 1, "partial_file": str(partial)}
    lines = partial.read_text().splitlines()
    assert lines[:2] == first_lines  # finished rows untouched

    m = full["answers"]["metrics"]
    assert m["questions"] == 3 and m["answerable"] == 2 and m["unanswerable"] == 1
    assert m["gold_in_evidence"] == 1.0  # retrieval finds both gold paragraphs in these two small docs
    # The other answer metrics measure the offline answerer, whose own tests pin its behaviour: ranges here.
    for key in ("exact_match", "token_f1", "citation_recall", "citation_precision", "faithfulness",
                "gold_in_evidence"):
        assert _in_unit(m[key]), key
    assert m["citation_validity"] in (None, 1.0)
    assert _in_unit(m["abstention_precision"]) and _in_unit(m["abstention_recall"])
    # the extractive answerer quotes evidence verbatim: whatever it answers is faithful to it
    if m["answered"]:
        assert m["faithfulness"] == pytest.approx(1.0)
    assert full["answers"]["latency_ms"]["total_with_answer"]["count"] == 3
    assert "## Answers" in (out / "report.md").read_text()
    for name in ("results.json", "report.md", "questions.jsonl"):
        assert (out / name).is_file(), name

    # A different answering config does not reuse the rows.
    calls.clear()
    runner.run_answers(docqa_dir, eval_settings.replace(evidence_max_passages=2), limit=1, out=out,
                       progress=False, embedder=embedder)
    assert len(calls) == 1


def test_score_answers_hand_computed():
    from evals.judges import make_judge

    rows = [
        {"id": "a", "question": "who", "gold_answers": ["Neil Armstrong"], "is_impossible": False,
         "prediction": "Neil Armstrong", "abstained": False, "error": None,
         "evidence": [{"number": 1, "chunk_id": "c1", "text": "Apollo 11 was commanded by Neil Armstrong.",
                       "gold": True}],
         "citations": [{"number": 1, "chunk_id": "c1"}],
         "sentences": [{"text": "Apollo 11 was commanded by Neil Armstrong.", "citations": [1]}],
         "dropped_citations": [], "timings_ms": {"total_with_answer": 10.0}},
        {"id": "b", "question": "why", "gold_answers": [], "is_impossible": True, "prediction": "",
         "abstained": True, "error": None, "evidence": [], "citations": [], "sentences": [],
         "dropped_citations": [], "timings_ms": {"total_with_answer": 30.0}},
        {"id": "c", "question": "what", "gold_answers": ["blue"], "is_impossible": False,
         "prediction": "", "abstained": True, "error": None, "evidence": [], "citations": [], "sentences": [],
         "dropped_citations": [], "timings_ms": {"total_with_answer": 20.0}},
    ]
    metrics, per_q = runner.score_answers(rows, make_judge("lexical"))
    assert metrics["exact_match"] == 0.5 and metrics["token_f1"] == 0.5
    assert metrics["exact_match_answered"] == 1.0
    assert metrics["answer_contains_gold"] == 0.5
    assert metrics["abstention_precision"] == 0.5 and metrics["abstention_recall"] == 1.0
    assert metrics["citation_validity"] == 1.0
    assert metrics["citation_recall"] == 1.0 and metrics["citation_precision"] == 1.0
    assert metrics["faithfulness"] == 1.0
    assert metrics["latency_ms"]["total_with_answer"]["p50"] == 20.0
    assert per_q[0]["scores"]["em"] == 1.0 and "em" not in per_q[1]["scores"]


def test_contains_gold():
    assert runner.contains_gold("It was commanded by Neil Armstrong [1].", ["Neil Armstrong"]) == 1.0
    assert runner.contains_gold("Armstrongs", ["Armstrong"]) == 0.0  # whole tokens only
    assert runner.contains_gold("anything", []) == 0.0


def test_strip_markers():
    assert runner.strip_markers("Neil Armstrong [1].") == "Neil Armstrong ."
    assert runner.strip_markers("A [1, 2] b [3]\n\n(1 unsupported sentence was removed.)") == "A b"


def test_main_json_and_compare(beir_dir, tmp_path, eval_settings, embedder, capsys, monkeypatch):
    from rag.embedding import load_embedder  # noqa: F401  (cached: main reuses the session model)

    parser = build_parser()
    settings = eval_settings.replace(rerank_model="none")
    out_a = tmp_path / "a"
    args = parser.parse_args(["eval", "retrieval", str(beir_dir), "--modes", "bm25", "--out", str(out_a), "--json"])
    assert runner.main(args, settings) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # exactly one JSON object on stdout
    assert payload["retrieval"]["modes"]["bm25"]["metrics"]["mrr@10"] == pytest.approx(1.0)
    assert "bm25" in captured.err  # the Markdown table went to stderr

    # No --out: a timestamped folder under state_dir/evals, named on stderr.
    args = parser.parse_args(["eval", "retrieval", str(beir_dir), "--modes", "bm25,dense", "--limit", "2"])
    assert runner.main(args, settings) == 0
    (out_b,) = (Path(settings.state_dir) / "evals").glob("*-retrieval")
    assert str(out_b.resolve()) in capsys.readouterr().err
    assert (out_b / "results.json").is_file()
    args = parser.parse_args(["eval", "compare", str(out_a), str(out_b)])
    assert runner.main(args, settings) == 0
    text = capsys.readouterr().out
    assert "bm25" in text and "recall@10" in text.lower()
    args = parser.parse_args(["eval", "compare", str(out_a), str(out_b), "--json"])
    assert runner.main(args, settings) == 0
    deltas = json.loads(capsys.readouterr().out)
    assert deltas["same_dataset"] and set(deltas["retrieval"]) == {"bm25", "dense"}
    d = deltas["retrieval"]["bm25"]["mrr@10"]
    assert d["delta"] == pytest.approx(d["b"] - d["a"])
    assert deltas["retrieval"]["dense"]["mrr@10"]["a"] is None  # mode only in B

    with pytest.raises(ConfigError, match="rerank"):
        runner.run_retrieval(beir_dir, settings, modes=["rerank"], out=tmp_path / "c", progress=False)
    with pytest.raises(DatasetError, match="BEIR"):
        runner.run_answers(beir_dir, settings, out=tmp_path / "d", progress=False)


# Issue 17: `rag eval retrieval` on squad/conversations.jsonl searches each follow-up as `rag ask` would.
CONVERSATION_DOCS = ("Private_school.md", "Construction.md", "Sky_United_Kingdom.md")
CONVERSATION_IDS = ("57274d1cdd62a815002e9aae-fu", "57273d8bf1498d1400e8f4fe-fu", "57094ca7efce8f15003a7dd6-ts")


@pytest.fixture()
def conversations_file(tmp_path, evaldata) -> Path:
    """Three real SQuAD articles (their first paragraphs and the gold ones, to keep the ingest short) and three rows
    of squad/conversations.jsonl about them (two follow-ups whose pronoun stands for the article's topic, one
    topic switch)."""
    root = tmp_path / "tiny-conversations"
    (root / "docs").mkdir(parents=True)
    rows = {r["id"]: r for r in map(json.loads, (evaldata / "squad" / "conversations.jsonl").open(encoding="utf-8"))}
    for name in CONVERSATION_DOCS:
        title, *paragraphs = (evaldata / "squad" / "docs" / name).read_text(encoding="utf-8").split("\n\n")
        gold = {rows[i]["paragraph_index"] for i in CONVERSATION_IDS if rows[i]["doc"] == name}
        kept = [p for n, p in enumerate(paragraphs) if n < 4 or n in gold]
        (root / "docs" / name).write_text("\n\n".join([title, *kept]), encoding="utf-8")
    path = root / "conversations.jsonl"
    path.write_text("".join(json.dumps(rows[i]) + "\n" for i in CONVERSATION_IDS), encoding="utf-8")
    (root / "questions.jsonl").write_text("")  # the folder's own questions file is not the one evaluated
    return path


@pytest.mark.slow  # ingests three real articles: ~100 s on this busy machine
def test_retrieval_on_a_conversations_file_searches_the_condensed_query(conversations_file, tmp_path, eval_settings,
                                                                         embedder):
    settings = eval_settings.replace(rerank_model="none")
    res = runner.run_retrieval(conversations_file, settings, modes=["hybrid"], out=tmp_path / "out",
                               progress=False, embedder=embedder)
    assert res["dataset"]["queries_evaluated"] == 3
    assert res["config"]["collection"].startswith("eval_docqa-tiny-conversations-conversations_")
    conv = res["dataset"]["conversation"]
    assert conv == {"questions_with_history": 3, "rewritten": 2, "methods": {"none": 1, "rule": 2},
                    "condenser": "rule"}
    rows = {r["qid"]: r for r in map(json.loads, (tmp_path / "out" / "questions.jsonl").read_text().splitlines())}
    irish, sectors, bskyb = (rows[i] for i in CONVERSATION_IDS)
    # Follow-ups: the pronoun was resolved from the previous question before searching, and the row keeps both.
    assert irish["question"] == "What is the Irish term for them?" and irish["query"] != irish["question"]
    assert irish["rewrite"]["method"] == "rule" and irish["history"] == [
        "What percentage of Filipino primary school students are in private schools?"]
    assert sectors["question"] == "What are the three sectors of it?"
    assert "construction" in sectors["query"].lower() and sectors["rewrite"]["rewritten"] is True
    # The topic switch is searched as typed.
    assert bskyb["query"] == bskyb["question"] and bskyb["rewrite"]["rewritten"] is False
    assert any(h["relevant"] for h in sectors["hits"])  # the condensed query finds the gold paragraph
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "3 questions carry a conversation history" in report_md and "condensed query" in report_md


def test_a_malformed_history_names_file_and_line(conversations_file):
    from evals.datasets import load_doc_qa

    lines = conversations_file.read_text().splitlines()
    row = json.loads(lines[1])
    row["history"] = "not a list"
    conversations_file.write_text("\n".join([lines[0], json.dumps(row), lines[2]]) + "\n")
    with pytest.raises(DatasetError, match=r"conversations\.jsonl:2: 'history' must be a list"):
        load_doc_qa(conversations_file)
