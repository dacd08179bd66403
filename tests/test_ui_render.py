"""Unit tests for the UI's pure parts: HTML rendering of answers/evidence, upload names, session settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.access import Caller
from rag.config import Settings
from rag.models import Answer, Citation, Evidence, Hit
from tests.builders import make_hit
from ui import render
from ui.app import SessionOptions, effective_mode, session_filter, session_settings
from ui.uploads import safe_upload_name, store_uploads


def _hit(text: str, file_path: str = "/docs/memo.pdf", page: int | None = 1, **scores) -> Hit:
    return make_hit(text, scores.pop("score", 1.0), file_path=file_path, file_type="pdf", page=page,
                    section="Delivery", **scores)


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
    # shown as the text "[7]" (brackets as entities, so Markdown cannot make a link of it)
    assert "&#91;7&#93;" in html and 'data-ev="7"' not in html


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
    # each upload in its own fresh folder directly inside the upload dir
    assert all(p.parent.parent == up.resolve() for _, p in stored)
    assert len({p.parent for _, p in stored}) == 2
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
    flt = session_filter(Caller("ui", ("team-a",)), opts)
    assert flt.acl == ["team-a"] and flt.file_types == ["pdf"]
    # no reranker configured: the checkbox cannot turn rerank mode on
    off = Settings(rerank_model="none")
    assert effective_mode(SessionOptions(mode="hybrid", rerank=True), off) == "hybrid"


def test_load_eval_folder_reads_report_plots_and_results(tmp_path):
    from PIL import Image

    from ui.eval_reports import NOT_AVAILABLE, ReportUnavailable, load_eval_folder

    run = tmp_path / "run"
    run.mkdir()
    (run / "report.md").write_text("| mode | nDCG@10 |\n|---|---|\n| hybrid | 0.61 |\n")
    (run / "results.json").write_text('{"modes": {"hybrid": {"ndcg@10": 0.61}}}')
    Image.new("RGB", (4, 4), "red").save(run / "ndcg.png")
    settings = Settings()
    markdown, plots, data = load_eval_folder(str(run), [tmp_path], settings)
    assert "hybrid | 0.61" in markdown and data["modes"]["hybrid"]["ndcg@10"] == 0.61
    assert [caption for _img, caption in plots] == ["ndcg.png"] and plots[0][0].size == (4, 4)
    (tmp_path / "empty").mkdir()
    # missing, empty and outside folders all get the one message
    for folder in (tmp_path / "missing", tmp_path / "empty", Path("/etc"), ""):
        with pytest.raises(ReportUnavailable) as err:
            load_eval_folder(str(folder), [tmp_path], settings)
        assert str(err.value) == NOT_AVAILABLE


# --------------------------------------------------------------------------------------------------
# Issue 14 #5: no Markdown image, link or raw HTML in anything the chat renders
# --------------------------------------------------------------------------------------------------

PLANTED = [
    "![x](http://127.0.0.1:9/beacon?d=secret)",
    "[click me](http://127.0.0.1:9/phish)",
    '<img src="http://127.0.0.1:9/beacon">',
    '<a href="http://127.0.0.1:9/phish">here</a>',
    "see http://127.0.0.1:9/raw and www.example.com or mail bob@example.com",
    "![ref][r]\n\n[r]: http://127.0.0.1:9/beacon",
    "`![x](http://127.0.0.1:9/beacon)`",
]


def _no_active_markup(out: str) -> None:
    """No Markdown link/image syntax, no tag other than our own buttons/divs, no URL an autolinker finds."""
    assert "](" not in out and "<img" not in out and "<a " not in out and "://" not in out
    assert "www." not in out and "`" not in out and "[r]:" not in out


@pytest.mark.parametrize("planted", PLANTED)
def test_answers_render_no_image_link_or_raw_html(planted):
    answer = _answer()
    answer.text = f"200 laptops were delivered [1]. {planted}"
    html = render.answer_message(answer, turn=1)
    _no_active_markup(html)
    assert 'rag-t-1 rag-n-1' in html  # citation buttons still work
    _no_active_markup(render.streaming_text(planted))  # while streaming, before validation
    _no_active_markup(render.error_message(planted))


def test_safe_text_shows_the_same_characters():
    import html as html_lib

    text = "a [b](http://c) ![d](www.e.f) `g` h@i <j>"
    assert html_lib.unescape(render.safe_text(text)) == text


def test_capped_history_keeps_the_last_turns_within_the_size_cap():
    from ui.session import capped_history

    history = []
    for i in range(20):
        history += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    kept = capped_history(history, max_turns=3, max_chars=10_000)
    assert [m["content"] for m in kept] == ["q17", "a17", "q18", "a18", "q19", "a19"]
    big = [{"role": "user", "content": "x" * 6000}, {"role": "assistant", "content": "y" * 6000},
           {"role": "user", "content": "short"}, {"role": "assistant", "content": "answer"}]
    assert capped_history(big, max_turns=6, max_chars=12_000) == big[2:]


def test_question_over_the_limit_is_refused_with_a_readable_reason():
    from ui.session import question_problem

    settings = Settings(max_question_chars=100)
    assert question_problem("x" * 100, settings) is None
    assert "limit is 100" in question_problem("x" * 101, settings)


def test_top_k_below_the_evidence_cap_limits_the_evidence():
    """Issue 17: "Passages retrieved (k)" below 6 had no effect (the evidence cap of 6 won)."""
    narrowed = session_settings(Settings(rerank_model="none"), SessionOptions(top_k=3, max_passages=6))
    assert narrowed.top_k == 3 and narrowed.evidence_max_passages == 3


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "1e999"])
def test_invalid_thresholds_are_refused(text):
    from ui.session import parse_threshold

    with pytest.raises(ValueError):
        parse_threshold(text)


def test_a_documents_own_footnote_markers_never_become_citation_buttons():
    """Issue 17: `[1]` quoted from a Wikipedia text opened the wrong passage."""
    passage = "The Stanley Cup was first awarded in 1893.[1] It is the oldest trophy.[2]"
    e1 = Evidence(1, _hit(passage, file_path="/docs/cup.txt", page=None))
    e2 = Evidence(2, _hit("The Montreal Canadiens have won 24 Stanley Cups.", file_path="/docs/habs.txt", page=None))
    answer = Answer(question="When was the cup first awarded?",
                    text="The Stanley Cup was first awarded in 1893.[1] [1] The Canadiens won 24 [2].",
                    citations=[], evidence=[e1, e2], abstained=False)
    html = render.answer_message(answer, turn=1)
    # the quoted "[1]" stays text; the answerer's own [1] and [2] are buttons
    assert html.count('class="rag-cite ') == 2
    assert "1893.&#91;1&#93;" in html
    assert 'rag-t-1 rag-n-1' in html and 'rag-t-1 rag-n-2' in html


def test_copy_gives_clean_markdown_with_sources():
    import html as html_lib
    import re

    answer = _answer()
    markdown = render.answer_markdown(answer)
    assert markdown.startswith("200 laptops were delivered [1].")
    assert "Sources:\n[1] memo.pdf, p. 1 — \u201cwe delivered 200 laptops\u201d" in markdown
    assert "<button" not in markdown and "rag-cite" not in markdown
    message = render.answer_message(answer, turn=1)
    hidden = re.search(r'<div class="rag-copy-src">(.*?)</div>', message).group(1)
    assert "\n" not in hidden and html_lib.unescape(hidden) == markdown


def test_evidence_block_shows_the_rewritten_query_only_when_it_differs():
    answer = _answer()
    assert "Searched for" not in render.evidence_block(answer, turn=1)
    answer.searched_query = "How many laptops did <Acme> deliver?"
    answer.query_rewrite = {"method": "rule", "rewritten": True}
    html = render.evidence_block(answer, turn=1)
    assert 'Searched for: “How many laptops did &lt;Acme&gt; deliver?” (rewritten from the conversation)' in html


def test_scores_read_as_words_with_the_numbers_on_hover():
    """Issue 17: "dense #1 (0.608) · BM25 #1 (22.79) · fused #1" read as jargon."""
    h = make_hit
    both = h("t", 0.03, dense_rank=1, dense_score=0.608, bm25_rank=2, bm25_score=22.79, fused_rank=1)
    assert render.match_words(both) == "Strong match · found by meaning and keywords"
    assert render.match_words(h("t", 0.01, dense_rank=9, dense_score=0.1)) == "Weak match · found by meaning"
    assert render.match_words(h("t", 0.01, bm25_rank=1, bm25_score=5.0)).startswith("Good match")
    assert render.match_words(h("t", 0.01, dense_rank=7, bm25_rank=2)).startswith("Good match")
    assert render.match_words(h("t", 0.01, dense_rank=12, bm25_rank=3)).startswith("Weak match")
    assert render.match_words(h("t", 0.5, dense_rank=8, rerank_score=4.1)).startswith("Strong match")
    assert render.match_words(h("t", 0.5, dense_rank=1, bm25_rank=1, rerank_score=-3.0)).startswith("Weak")
    card = render.evidence_block(Answer(question="q", text="x [1]", citations=[], abstained=False,
                                        evidence=[Evidence(1, both)]), turn=1)
    assert '>Strong match · found by meaning and keywords</div>' in card
    assert 'title="dense #1 (0.608) · BM25 #2 (22.79) · fused #1"' in card
