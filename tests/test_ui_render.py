"""Unit tests for the UI's pure parts: HTML rendering of answers/evidence, upload names, session settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.models import Answer, Chunk, Citation, Evidence, Hit
from ui import render
from ui.app import SessionOptions, effective_mode, session_filter, session_settings
from ui.uploads import safe_upload_name, store_uploads


def _hit(text: str, file_path: str = "/docs/memo.pdf", page: int | None = 1, **scores) -> Hit:
    chunk = Chunk(id="c-" + str(abs(hash(text)) % 1000), text=text, file_path=file_path, file_hash="h",
                  file_type="pdf", chunk_index=0, chunk_count=1, char_start=0, char_end=len(text),
                  page_numbers=[page] if page else [], section="Delivery", file_name=Path(file_path).name)
    return Hit(chunk=chunk, score=scores.pop("score", 1.0), **scores)


def _answer() -> Answer:
    e1 = Evidence(1, _hit("On January 23, 2023 we delivered 200 laptops to the office.",
                          rerank_score=3.2, dense_rank=2, dense_score=0.61, bm25_rank=1, bm25_score=7.5, fused_rank=1))
    e2 = Evidence(2, _hit("The <script>alert(1)</script> cafeteria opens at 9.", file_path="/docs/a.eml", page=None))
    cit = Citation(number=1, chunk_id=e1.chunk.id, file=e1.chunk.file_path, page=1,
                   quote="we delivered 200 laptops", passage=e1.chunk.text)
    return Answer(question="How many laptops?", text="200 laptops were delivered [1].", citations=[cit],
                  evidence=[e1, e2], abstained=False)


def test_answer_message_turns_valid_markers_into_buttons_and_keeps_invalid_as_text():
    answer = _answer()
    answer.text = "200 laptops [1]. Something [7]."
    html = render.answer_message(answer, turn=3)
    assert 'rag-t-3 rag-n-1' in html
    assert "[7]" in html and 'data-ev="7"' not in html


def test_ranges_and_lists_expand_to_one_button_each():
    html = render.link_citations("see [1, 2] and [1-2]", turn=1, valid={1, 2})
    assert html.count('class="rag-cite ') == 4


def test_evidence_block_anchors_highlights_quote_and_escapes_document_html():
    html = render.evidence_block(_answer(), turn=2)
    assert 'id="ev-2-1"' in html and 'id="ev-2-2"' in html
    assert "<mark>we delivered 200 laptops</mark>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "rerank 3.20" in html and "dense #2" in html and "BM25 #1" in html
    assert "memo.pdf" in html and "p. 1" in html and "Delivery" in html
    # the cited passage comes before the uncited one
    assert html.index('id="ev-2-1"') < html.index('id="ev-2-2"')


def test_highlight_tolerates_whitespace_and_case_differences():
    out = render.highlight("Alpha  beta\ngamma delta", ["BETA gamma"])
    assert out == "Alpha  <mark>beta\ngamma</mark> delta"
    assert render.highlight("abc", ["not there"]) == "abc"


def test_abstention_is_shown_as_such_with_related_passages():
    related = [_hit("Unrelated passage about cups.", file_path="/docs/cups.csv", page=None)]
    answer = Answer(question="Who won in 1890?", text="INSUFFICIENT_EVIDENCE", citations=[], evidence=[],
                    abstained=True, related=related)
    message = render.answer_message(answer, 1)
    assert "No answer found" in message and "INSUFFICIENT_EVIDENCE" not in message
    block = render.evidence_block(answer, 1)
    assert "Related passages (not sufficient)" in block and 'id="rel-1-1"' in block and "cups.csv" in block


def test_evidence_panel_shows_only_the_latest_turn():
    answers = [_answer(), _answer()]
    panel = render.evidence_panel([render.evidence_block(a, t) for t, a in enumerate(answers, start=1)])
    assert 'class="rag-turn rag-hidden rag-tb-1"' in panel
    assert 'class="rag-turn rag-tb-2"' in panel


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\win.ini", "win.ini"),
    ("..", "upload"),
    (".hidden.txt", "hidden.txt"),
    ("a b<>|c.pdf", "a b_c.pdf"),
    ("", "upload"),
])
def test_safe_upload_name(name, expected):
    assert safe_upload_name(name) == expected


def test_store_uploads_never_writes_outside_the_upload_dir(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("hello")
    up = tmp_path / "uploads"
    stored = store_uploads([src, src], up, names=["../../evil.txt", "/abs/path/ok.txt"])
    assert [p.name for _, p in stored] == ["evil.txt", "ok.txt"]
    assert all(p.parent == up.resolve() for _, p in stored)
    assert not (tmp_path / "evil.txt").exists()


def test_session_settings_never_touch_acl_or_llm_endpoint():
    base = Settings(default_acl=["team-a"], llm_base_url="http://127.0.0.1:9/v1", llm_provider="openai",
                    mode="rerank", rerank_model="some-model")
    opts = SessionOptions.from_settings(base)
    assert effective_mode(opts, base) == "rerank"
    opts.rerank = False
    opts.answerer = "extractive"
    opts.file_types = ["pdf"]
    narrowed = session_settings(base, opts)
    assert narrowed.mode == "hybrid" and narrowed.llm_provider == "extractive"
    assert narrowed.default_acl == ["team-a"] and narrowed.llm_base_url == base.llm_base_url
    flt = session_filter(base, opts)
    assert flt.acl == ["team-a"] and flt.file_types == ["pdf"]
    # no reranker configured: the checkbox cannot turn rerank mode on
    off = Settings(rerank_model="none")
    assert effective_mode(SessionOptions(mode="hybrid", rerank=True), off) == "hybrid"


def test_load_eval_folder_reads_report_plots_and_results(tmp_path):
    from PIL import Image

    from rag.errors import RagError
    from ui.app import load_eval_folder

    (tmp_path / "report.md").write_text("| mode | nDCG@10 |\n|---|---|\n| hybrid | 0.61 |\n")
    (tmp_path / "results.json").write_text('{"modes": {"hybrid": {"ndcg@10": 0.61}}}')
    Image.new("RGB", (4, 4), "red").save(tmp_path / "ndcg.png")
    markdown, images, data = load_eval_folder(str(tmp_path))
    assert "hybrid | 0.61" in markdown and data["modes"]["hybrid"]["ndcg@10"] == 0.61
    assert [Path(i).name for i in images] == ["ndcg.png"] and Path(images[0]).is_file()
    with pytest.raises(RagError, match="not a folder"):
        load_eval_folder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RagError, match="no report.md"):
        load_eval_folder(str(tmp_path / "empty"))
