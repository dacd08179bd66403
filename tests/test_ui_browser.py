"""The UI driven in headless Debian Chromium with Playwright: ask, click a citation, upload a file.

Screenshots of the main views go to test-output/screenshots/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.fake_llm_server import fake_llm  # noqa: F401
from tests.ui_app_fixture import llm_ui_server, start_server, ui_docs, ui_server  # noqa: F401

CHROMIUM = os.environ.get("RAG_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
LAPTOPS = "How many laptops were delivered on January 23, 2023?"
TIMEOUT_MS = 240_000  # the machine is shared; a first answer includes model warm-up

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no Chromium at {CHROMIUM} (apt install chromium, or set RAG_CHROMIUM)"),
]

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


def _open(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#question textarea").wait_for(state="visible")


def _ask(page, question: str) -> None:
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")


def _target(cite) -> tuple[str, str]:
    """(turn, evidence number) a citation button opens (carried in its classes: rag-t-<turn> rag-n-<n>)."""
    classes = cite.get_attribute("class") or ""
    return re.search(r"rag-t-(\d+)", classes).group(1), re.search(r"rag-n-(\d+)", classes).group(1)


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_ask_click_citation_and_see_the_passage(page, ui_server):
    _open(page, ui_server.url)
    _ask(page, LAPTOPS)
    cite = page.locator("#chat .rag-cite").first
    cite.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "200 laptops" in page.locator("#chat").inner_text()
    _shot(page, "chat")

    turn, number = _target(cite)
    cite.click()
    passage = page.locator(f"#evidence .ev-{turn}-{number}")
    passage.wait_for(state="visible")
    assert "rag-active" in (passage.get_attribute("class") or "")
    assert "fake-memo.pdf" in passage.inner_text()
    marked = passage.locator("mark").first
    assert "200 laptops" in marked.inner_text()
    # the highlighted passage is scrolled into the panel's view
    page.wait_for_function(
        "(cls) => { const el = document.querySelector('.' + cls); const r = el.getBoundingClientRect();"
        " return r.top >= 0 && r.top < window.innerHeight; }", arg=f"ev-{turn}-{number}")
    _shot(page, "evidence")


def test_citation_of_an_older_answer_opens_that_answers_passage(page, ui_server):
    _open(page, ui_server.url)
    _ask(page, LAPTOPS)
    page.locator('#chat .rag-cite.rag-t-1').first.wait_for(state="visible", timeout=TIMEOUT_MS)
    _ask(page, "What will there be at the first annual family day?")
    page.locator('#chat .rag-cite.rag-t-2').first.wait_for(state="visible", timeout=TIMEOUT_MS)
    # the panel shows turn 2; clicking turn 1's citation brings turn 1's evidence back
    assert page.locator('#evidence .rag-tb-1').is_hidden()
    first = page.locator('#chat .rag-cite.rag-t-1').first
    first.click()
    target = page.locator(f"#evidence .ev-1-{_target(first)[1]}")
    target.wait_for(state="visible")
    assert "fake-memo.pdf" in target.inner_text()
    assert page.locator('#evidence .rag-tb-2').is_hidden()


def test_settings_panel_shows_models_and_operator_acl(page, ui_server):
    _open(page, ui_server.url)
    page.get_by_text("Settings (this session)").click()
    models = page.locator("#models")
    models.wait_for(state="visible")
    text = models.inner_text()
    assert "Embedding model" in text and "extractive" in text and "public" in text
    assert "sessions cannot change it" in text
    _shot(page, "settings")


def test_upload_a_file_and_see_it_indexed(page, ui_server, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("Depot report. The orchard behind the north depot grows 37 quince trees, "
                    "planted in 2019 by the maintenance crew.\n", encoding="utf-8")
    _open(page, ui_server.url)
    page.get_by_role("tab", name="Documents").click()
    page.locator("#uploads input[type=file]").set_input_files(str(note))
    page.locator("#uploads").get_by_text("note.txt").first.wait_for(state="visible")
    page.locator("#index-uploads").click()
    status = page.locator("#ingest-status")
    page.wait_for_function("() => document.querySelector('#ingest-status').innerText.includes('indexed')",
                           timeout=TIMEOUT_MS)
    assert "1 indexed" in status.inner_text()
    summary = page.locator("#summary")
    assert "note.txt" in summary.inner_text() and "indexed" in summary.inner_text()
    files = page.locator("#files")
    assert "note.txt" in files.inner_text()
    stored = Path(ui_server.settings.upload_dir).resolve()
    assert [p.name for p in stored.iterdir()] == ["note.txt"]
    _shot(page, "documents")

    # the new file answers questions at once
    page.get_by_role("tab", name="Chat").click()
    _ask(page, "How many quince trees grow behind the north depot?")
    page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "37 quince trees" in page.locator("#chat").inner_text()
    assert "note.txt" in page.locator("#evidence").inner_text()


def test_llm_answer_streams_in_the_browser(page, ui_server, fake_llm):
    words = " ".join(["The memo says that"] * 20)
    fake_llm.responder = lambda body: f"{words} 200 laptops were delivered on January 23, 2023 [1]."
    server = llm_ui_server(ui_server, fake_llm)
    try:
        _open(page, server.url)
        # record every state of the reply while it streams
        page.evaluate("""() => { window.__snapshots = [];
            new MutationObserver(() => { const t = document.querySelector('#chat').innerText;
              if (t.includes('▍')) window.__snapshots.push(t); })
            .observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true}); }""")
        _ask(page, LAPTOPS)
        page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        snapshots = page.evaluate("window.__snapshots")
        assert snapshots, "no partial (streaming) state of the answer was rendered"
        assert "▍" not in page.locator("#chat").inner_text()
        assert re.search(r"200 laptops were delivered", page.locator("#chat").inner_text())
    finally:
        server.demo.close()


def test_file_type_filter_applies_to_this_session_only(browser, ui_server):
    filtered = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    plain = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    try:
        _open(filtered, ui_server.url)
        filtered.get_by_text("Settings (this session)").click()
        filtered.get_by_label("eml").check()
        _ask(filtered, LAPTOPS)
        filtered.locator("#evidence .rag-turn").first.wait_for(state="attached", timeout=TIMEOUT_MS)
        evidence = filtered.locator("#evidence").inner_text()
        assert "family-day.eml" in evidence and "fake-memo.pdf" not in evidence
        _open(plain, ui_server.url)  # another visitor: no filter
        _ask(plain, LAPTOPS)
        plain.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert "fake-memo.pdf" in plain.locator("#evidence").inner_text()
    finally:
        filtered.context.close()
        plain.context.close()


def test_abstention_is_shown_with_related_passages(page, ui_server, fake_llm):
    fake_llm.responder = lambda body: "INSUFFICIENT_EVIDENCE"
    server = llm_ui_server(ui_server, fake_llm)
    try:
        _open(page, server.url)
        _ask(page, "Who won the 1890 regatta on the river Thames?")
        page.locator("#chat .rag-abstain").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert "No answer found" in page.locator("#chat").inner_text()
        panel = page.locator("#evidence")
        assert "Related passages (not sufficient)" in panel.inner_text()
        assert panel.locator(".rag-ev").count() >= 1
        assert page.locator("#chat .rag-cite").count() == 0
        _shot(page, "abstention")
    finally:
        server.demo.close()
