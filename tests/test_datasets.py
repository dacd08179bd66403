"""Dataset loaders on tiny hand-made folders (formats, layouts, errors) and on the real evaldata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.datasets import (
    DatasetError,
    dataset_hash,
    detect_dataset_kind,
    evaldata_dir,
    iter_jsonl,
    load_beir,
    load_doc_qa,
)
from rag.errors import RagError


def _jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture()
def beir_dir(tmp_path: Path) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    _jsonl(root / "corpus.jsonl", [
        {"_id": "d1", "title": "T1", "text": "alpha"},
        {"_id": "d2", "title": "", "text": "beta"},
        {"_id": 3, "text": "gamma"},
    ])
    _jsonl(root / "queries.jsonl", [
        {"_id": "q1", "text": "alpha?"},
        {"_id": "q2", "text": "nothing relevant"},
        {"_id": "q3", "text": "no qrels at all"},
    ])
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t3\t1\nq1\td2\t0\nq2\td2\t0\n", encoding="utf-8"
    )
    return root


def test_load_beir(beir_dir: Path):
    ds = load_beir(beir_dir)
    assert ds.corpus["d1"] == {"title": "T1", "text": "alpha"}
    assert ds.corpus["3"] == {"title": "", "text": "gamma"}  # numeric ids become strings
    assert ds.queries == {"q1": "alpha?"}
    assert ds.qrels == {"q1": {"d1": 2, "3": 1, "d2": 0}}
    assert set(ds.unjudged_queries) == {"q2", "q3"}
    assert detect_dataset_kind(beir_dir) == "beir"


def test_beir_malformed_rows_name_file_and_line(beir_dir: Path):
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: expected 3"):
        load_beir(beir_dir)
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: score 'high'"):
        load_beir(beir_dir)
    (beir_dir / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: invalid JSON"):
        load_beir(beir_dir)
    (beir_dir / "corpus.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:1: missing field '_id'"):
        load_beir(beir_dir)


def _squad_dir(tmp_path: Path) -> Path:
    root = tmp_path / "squad"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "Apollo.md").write_text("# Apollo\n\nThe program ran.\n", encoding="utf-8")
    _jsonl(root / "questions.jsonl", [
        {"id": "s1", "question": "What ran?", "answers": ["The program"], "is_impossible": False,
         "doc": "Apollo.md", "paragraph": "The program ran.", "paragraph_index": 0},
        {"id": "s2", "question": "Who?", "answers": [], "is_impossible": True,
         "doc": "Apollo.md", "paragraph": "The program ran."},
    ])
    return root


def test_load_doc_qa_squad_layout(tmp_path: Path):
    root = _squad_dir(tmp_path)
    ds = load_doc_qa(root)
    assert ds.layout == "squad" and ds.docs_dir == root / "docs"
    q1, q2 = ds.questions
    assert (q1.id, q1.answers, q1.is_impossible, q1.doc, q1.evidence_text) == (
        "s1", ["The program"], False, "Apollo.md", "The program ran.")
    assert q1.raw["paragraph_index"] == 0
    assert q2.is_impossible and q2.answers == []
    assert ds.doc_path(q1) == (root / "docs" / "Apollo.md").resolve()
    assert detect_dataset_kind(root) == "docqa"


def test_load_doc_qa_mixed_layout(tmp_path: Path):
    root = tmp_path / "mixed"
    (root / "files").mkdir(parents=True)
    (root / "files" / "memo.txt").write_text("200 laptops delivered", encoding="utf-8")
    _jsonl(root / "questions.jsonl", [
        {"id": "m1", "question": "How many?", "answers": ["200"], "is_impossible": False,
         "file": "files/memo.txt", "evidence": "200 laptops delivered", "hand_written": True},
    ])
    ds = load_doc_qa(root)
    assert ds.layout == "docs-mixed"
    (q,) = ds.questions
    assert q.doc == "memo.txt" and q.doc_name == "memo.txt" and q.evidence_text == "200 laptops delivered"


def test_doc_qa_errors(tmp_path: Path):
    root = _squad_dir(tmp_path)
    with (root / "questions.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "s3", "question": "x", "answers": "nope", "doc": "Apollo.md"}) + "\n")
    with pytest.raises(DatasetError, match=r"questions\.jsonl:3: field 'answers' should be list"):
        load_doc_qa(root)
    _jsonl(root / "questions.jsonl", [{"id": "s1", "question": "x", "answers": [], "doc": "Missing.md"}])
    with pytest.raises(DatasetError, match=r"questions\.jsonl:1: gold document .*Missing\.md does not exist"):
        load_doc_qa(root)
    _jsonl(root / "questions.jsonl", [{"id": "s1", "question": "x", "answers": []}])
    with pytest.raises(DatasetError, match="missing gold document field"):
        load_doc_qa(root)


def test_detect_rejects_unknown_folder(tmp_path: Path):
    with pytest.raises(DatasetError, match="neither a BEIR"):
        detect_dataset_kind(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        detect_dataset_kind(tmp_path / "nope")


def test_dataset_hash_stable_and_sensitive(tmp_path: Path, beir_dir: Path):
    h1 = dataset_hash(beir_dir)
    assert h1 == dataset_hash(beir_dir) and len(h1) == 64
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(beir_dir, copy)
    assert dataset_hash(copy) == h1  # location does not matter
    (copy / "queries.jsonl").write_text('{"_id": "q1", "text": "changed"}\n', encoding="utf-8")
    assert dataset_hash(copy) != h1


def test_real_evaldata_counts(evaldata: Path):
    cran = load_beir(evaldata / "beir-cranfield")
    assert len(cran.corpus) == 1400
    assert len(cran.queries) + len(cran.unjudged_queries) == 113
    assert sum(1 for q in cran.qrels.values() for s in q.values() if s > 0) == 763
    squad = load_doc_qa(evaldata / "squad")
    assert len(squad.questions) == 1000
    assert sum(q.is_impossible for q in squad.questions) == 362
    mixed = load_doc_qa(evaldata / "docs-mixed")
    assert mixed.layout == "docs-mixed" and len(mixed.questions) == 9
    assert all((mixed.docs_dir / q.doc).is_file() for q in mixed.questions)


def test_iter_jsonl_names_bad_lines_or_skips_them_for_append_only_logs(tmp_path: Path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n\n[2]\n{"id": 3}\n{"id": "torn', encoding="utf-8")
    assert list(iter_jsonl(path, skip_invalid=True)) == [(1, {"id": 1}), (4, {"id": 3})]
    with pytest.raises(DatasetError, match=r"rows\.jsonl:3: expected a JSON object, got list"):
        list(iter_jsonl(path))
    with pytest.raises(DatasetError, match="missing"):
        list(iter_jsonl(tmp_path / "absent.jsonl"))
    assert issubclass(DatasetError, RagError)  # the CLI reports it as bad input (exit 2)


def test_evaldata_dir_honours_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("RAG_EVALDATA", str(tmp_path))
    assert evaldata_dir() == tmp_path.resolve()
    monkeypatch.delenv("RAG_EVALDATA")
    assert evaldata_dir() == (Path(__file__).resolve().parent.parent.parent / "shared" / "evaldata").resolve()
