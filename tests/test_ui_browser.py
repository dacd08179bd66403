"""The UI driven in headless Debian Chromium with Playwright: ask, click a citation, upload a file.

Screenshots of the main views go to test-output/screenshots/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.fake_llm_server import Reply
from tests.ui_app_fixture import llm_ui_server, start_server, write_eval_run

CHROMIUM = os.environ.get("RAG_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("RAG_SHOTS", Path(__file__).resolve().parent.parent / "test-output" / "screenshots"))
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
    # stored under a fresh folder of its own (same-named uploads never replace each other)
    assert [p.relative_to(stored).parts[1:] for p in stored.rglob("*") if p.is_file()] == [("note.txt",)]
    _shot(page, "documents")

    # the new file answers questions at once
    page.get_by_role("tab", name="Chat").click()
    _ask(page, "How many quince trees grow behind the north depot?")
    page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "37 quince trees" in page.locator("#chat").inner_text()
    assert "note.txt" in page.locator("#evidence").inner_text()


def _record_streaming_states(page) -> None:
    """Record every state of the reply while it streams (the text while the cursor ▍ is shown)."""
    page.evaluate("""() => { window.__snapshots = [];
        new MutationObserver(() => { const t = document.querySelector('#chat').innerText;
          if (t.includes('▍')) window.__snapshots.push(t); })
        .observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true}); }""")


def test_llm_answer_streams_in_the_browser(page, ui_server, fake_llm):
    words = " ".join(["The memo says that"] * 20)
    fake_llm.responder = lambda body: f"{words} 200 laptops were delivered on January 23, 2023 [1]."
    server = llm_ui_server(ui_server, fake_llm)
    try:
        _open(page, server.url)
        _record_streaming_states(page)
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


# --------------------------------------------------------------------------------------------------
# Issue 14 #5 and issue 17: nothing fetched without a click, confirmation, dark mode, messages, copy
# --------------------------------------------------------------------------------------------------

BEACON = "127.0.0.1:9"  # a closed port: a request there is recorded by the page even though it fails
CONTRAST_JS = """(sel) => {
  const el = document.querySelector(sel);
  if (!el) return null;
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = (c) => { const v = rgb(c).slice(0, 3).map((x) => { x /= 255;
    return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  let bg = null;
  for (let node = el; node; node = node.parentElement) {
    const c = getComputedStyle(node).backgroundColor; const a = rgb(c);
    if (a.length && (a.length < 4 || a[3] > 0.5)) { bg = c; break; }
  }
  bg = bg || 'rgb(255, 255, 255)';
  const fg = getComputedStyle(el).color;
  const [l1, l2] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return {ratio: (l1 + 0.05) / (l2 + 0.05), fg, bg};
}"""


def test_planted_images_and_links_are_never_fetched_or_clickable(page, ui_server, fake_llm):
    """#5: an LLM reply (prompt injection) with a Markdown image, link, raw <img> and URL, while streaming."""
    planted = (f"200 laptops were delivered [1]. ![x](http://{BEACON}/beacon?d=secret) "
               f"[click](http://{BEACON}/phish) <img src=\"http://{BEACON}/beacon2\"> http://{BEACON}/raw")
    fake_llm.script(Reply(planted, token_delay_s=0.05))
    server = llm_ui_server(ui_server, fake_llm)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        _open(page, server.url)
        _record_streaming_states(page)
        _ask(page, LAPTOPS)
        page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        page.wait_for_timeout(500)
        chat = page.locator("#chat")
        assert not [u for u in requests if BEACON in u], requests
        assert chat.locator(f"img[src*='{BEACON}']").count() == 0
        assert chat.locator("a[href*='phish'], a[href*='raw']").count() == 0
        # while streaming, the planted markup was shown as text (strict citations then drop the sentence)
        assert any("![x](http://" in t and "[click](http://" in t for t in page.evaluate("window.__snapshots"))
        assert chat.locator(".rag-cite").count() == 1  # the product's own citation still works
    finally:
        server.demo.close()


def test_remove_asks_for_confirmation_and_is_not_prefilled(page, ui_server, tmp_path):
    """Issue 17: the Remove dropdown came pre-filled and one click deleted a file."""
    doomed = tmp_path / "doomed-note.txt"
    doomed.write_text("The doomed note mentions 5 red kites over the hill.\n", encoding="utf-8")
    ui_server.pipeline.ingest([str(doomed)], acl=["public"], progress=False)
    _open(page, ui_server.url)
    page.get_by_role("tab", name="Documents").click()
    page.wait_for_function("() => document.querySelector('#files').innerText.includes('doomed-note.txt')")
    choice = page.locator("#remove-choice input")
    assert choice.input_value() == ""
    page.locator("#remove-btn").click()  # nothing chosen: nothing happens
    assert page.locator("#remove-confirm").is_hidden()
    choice.click()
    page.get_by_role("option", name=str(doomed)).click()
    page.locator("#remove-btn").click()
    confirm = page.locator("#remove-confirm")
    confirm.wait_for(state="visible")
    assert "doomed-note.txt" in confirm.inner_text()
    _shot(page, "remove-confirm")
    page.locator("#remove-cancel-btn").click()
    confirm.wait_for(state="hidden")
    assert any(f["file_path"] == str(doomed) for f in ui_server.pipeline.list_files())
    page.locator("#remove-btn").click()
    confirm.wait_for(state="visible")
    page.locator("#remove-confirm-btn").click()
    page.wait_for_function("() => document.querySelector('#ingest-status').innerText.includes('Removed')",
                           timeout=TIMEOUT_MS)
    assert not any(f["file_path"] == str(doomed) for f in ui_server.pipeline.list_files())


def test_invalid_threshold_shows_a_message(page, ui_server):
    """Issue 17: an invalid evidence threshold showed nothing in the browser."""
    _open(page, ui_server.url)
    page.get_by_text("Settings (this session)").click()
    box = page.locator("#min-score textarea, #min-score input").first
    box.fill("abc")
    box.press("Enter")
    message = page.locator("#threshold-msg")
    page.wait_for_function("() => document.querySelector('#threshold-msg').innerText.includes('not a number')")
    assert "previous threshold" in message.inner_text()


def test_copy_button_copies_markdown_with_sources(browser, ui_server):
    """Issue 17: the copy button copied raw <button class="rag-cite"> HTML and no sources."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui_server.url.rstrip("/"))
    page = context.new_page()
    try:
        _open(page, ui_server.url)
        _ask(page, LAPTOPS)
        page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        page.locator("#chat .rag-copy").last.click()
        copied = page.evaluate("navigator.clipboard.readText()")
        assert "200 laptops" in copied and "Sources:" in copied and "fake-memo.pdf" in copied
        assert "<button" not in copied and "rag-cite" not in copied
    finally:
        context.close()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", [(1440, 900), (390, 844)], ids=["1440x900", "390x844"])
def test_evidence_and_abstention_are_readable_in_light_and_dark(browser, ui_server, fake_llm, scheme, size):
    """Issue 17: in dark mode evidence cards and the abstention banner were white boxes with near-white text."""
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        _open(page, ui_server.url)
        _ask(page, LAPTOPS)
        page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        page.locator("#evidence .rag-ev-text").first.wait_for(state="attached")
        for sel in ("#evidence .rag-ev-text", "#evidence .rag-ev-text mark", "#evidence .rag-ev-scores",
                    "#chat .rag-cite"):
            result = page.evaluate(CONTRAST_JS, sel)
            assert result and result["ratio"] >= 4.5, (scheme, sel, result)
        tabs = page.get_by_role("tab").all_inner_texts()
        assert [t.strip() for t in tabs] == ["Chat", "Documents", "Eval", "Explore"], tabs
        _shot(page, f"chat-{scheme}-{width}x{height}")
    finally:
        context.close()
    fake_llm.responder = lambda body: "INSUFFICIENT_EVIDENCE"
    server = llm_ui_server(ui_server, fake_llm)
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        _open(page, server.url)
        _ask(page, "Who won the 1890 regatta on the river Thames?")
        page.locator("#chat .rag-abstain").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        for sel in ("#chat .rag-abstain", "#evidence .rag-abstain", "#evidence .rag-ev-text"):
            result = page.evaluate(CONTRAST_JS, sel)
            assert result and result["ratio"] >= 4.5, (scheme, sel, result)
        _shot(page, f"abstention-{scheme}-{width}x{height}")
    finally:
        context.close()
        server.demo.close()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", [(1440, 900), (390, 844)], ids=["1440x900", "390x844"])
def test_documents_eval_and_explore_tabs_in_light_and_dark(browser, ui_server, tmp_path, scheme, size):
    """Every tab at desktop and phone width, both themes: folder ingest explains how to enable it, the Eval
    tab lists and opens a run under its roots (plot shown whole, no remote image), Explore plots."""
    write_eval_run(tmp_path / "results" / "run1")
    server = start_server(ui_server.settings, None, pipeline=ui_server.pipeline, eval_roots=[tmp_path / "results"])
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(60_000)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    name = f"{scheme}-{width}x{height}"
    try:
        _open(page, server.url)
        page.get_by_role("tab", name="Documents").click()
        page.wait_for_function("() => document.querySelector('#files').innerText.includes('fake-memo.pdf')")
        assert "rag ui --ingest-root DIR" in page.locator("#folder-disabled").inner_text()
        _shot(page, f"documents-{name}")
        page.get_by_role("tab", name="Eval").click()
        page.locator("#eval-run input").click()
        page.get_by_role("option", name=str(tmp_path / "results" / "run1")).click()
        page.locator("#eval-open").click()
        page.wait_for_function("() => document.querySelector('#eval-report').innerText.includes('0.61')")
        page.locator("#eval-plots img").first.wait_for(state="visible")
        assert "shown below" in page.locator("#eval-report").inner_text()
        _shot(page, f"eval-{name}")
        page.get_by_role("tab", name="Explore").click()
        page.get_by_role("button", name="Plot").click()
        page.get_by_text("chunks. Clusters").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        _shot(page, f"explore-{name}")
        assert not [u for u in requests if BEACON in u], requests
    finally:
        context.close()
        server.demo.close()


# --------------------------------------------------------------------------------------------------
# Issue 17: conversations that last, a Stop button, a way back after a citation click on a phone
# --------------------------------------------------------------------------------------------------

def _conversations(page) -> list[str]:
    return [t.strip() for t in page.locator("#conversation-list label").all_inner_texts()]


def test_conversations_last_across_reloads_and_belong_to_their_browser(browser, ui_server):
    """Ask → saved; reload keeps it (citations still open their passages); New / select / Rename / Delete;
    another browser sees none of it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    other = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        _open(page, ui_server.url)
        _ask(page, LAPTOPS)
        page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        page.wait_for_function("() => document.querySelectorAll('#conversation-list label').length === 1")
        assert _conversations(page)[0].startswith("How many laptops")

        page.reload(wait_until="domcontentloaded")  # the conversation survives a reload, evidence included
        cite = page.locator("#chat .rag-cite").first
        cite.wait_for(state="visible")
        assert "200 laptops" in page.locator("#chat").inner_text()
        turn, number = _target(cite)
        cite.click()
        page.locator(f"#evidence .ev-{turn}-{number}").wait_for(state="visible")
        assert "fake-memo.pdf" in page.locator(f"#evidence .ev-{turn}-{number}").inner_text()

        page.locator("#new-conversation").click()
        page.wait_for_function("() => !document.querySelector('#chat').innerText.includes('laptops')")
        _ask(page, "What will there be at the first annual family day?")
        page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        page.wait_for_function("() => document.querySelectorAll('#conversation-list label').length === 2")
        assert _conversations(page)[0].startswith("What will there be")  # newest first

        page.locator("#conversation-list label", has_text="How many laptops").click()
        page.wait_for_function("() => document.querySelector('#chat').innerText.includes('200 laptops')")
        assert "family day" not in page.locator("#chat").inner_text().lower()
        assert page.locator("#rag-back").is_hidden()  # the citation clicked earlier is gone: no way "back" to it
        page.locator("#conversation-title textarea, #conversation-title input").first.fill("Laptop memo")
        page.locator("#conversation-rename").click()
        page.wait_for_function("() => document.querySelector('#conversation-list').innerText.includes('Laptop memo')")
        _shot(page, "history-light-1440x900")

        page.locator("#conversation-delete").click()
        confirm = page.locator("#conversation-confirm")
        confirm.wait_for(state="visible")
        assert "Laptop memo" in confirm.inner_text()
        page.locator("#conversation-confirm-btn").click()
        page.wait_for_function("() => document.querySelectorAll('#conversation-list label').length === 1")
        assert _conversations(page)[0].startswith("What will there be")
        assert "200 laptops" not in page.locator("#chat").inner_text()

        stranger = other.new_page()  # another browser (its own id cookie): an empty list, an empty chat
        _open(stranger, ui_server.url)
        stranger.wait_for_timeout(1500)  # the page's load event has run
        assert _conversations(stranger) == []
        assert "family day" not in stranger.locator("#chat").inner_text().lower()
    finally:
        context.close()
        other.close()


def test_stop_ends_a_streaming_answer_and_the_chat_stays_usable(page, ui_server, fake_llm):
    """Issue 17: a Stop button while an answer streams; a clear "stopped" marker; the next question works."""
    fake_llm.script(Reply("The memo lists " + "many items in detail " * 60 + "[1].", token_delay_s=0.15))
    fake_llm.responder = lambda body: "200 laptops were delivered on January 23, 2023 [1]."
    server = llm_ui_server(ui_server, fake_llm)
    try:
        _open(page, server.url)
        _ask(page, LAPTOPS)
        page.wait_for_function("() => document.querySelector('#chat').innerText.includes('many items')",
                               timeout=TIMEOUT_MS)
        page.locator("#stop-btn").click()
        page.locator("#chat .rag-stopped").wait_for(state="visible")
        shown = page.locator("#chat").inner_text()
        assert "many items" in shown and "▍" not in shown
        page.wait_for_timeout(1500)  # a cancelled stream must not overwrite the marker afterwards
        assert page.locator("#chat .rag-stopped").count() == 1 and "▍" not in page.locator("#chat").inner_text()
        _ask(page, LAPTOPS)  # usable at once
        page.locator("#chat .rag-cite").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert "200 laptops were delivered" in page.locator("#chat").inner_text()
        assert page.locator("#chat .rag-stopped").count() == 1  # the stopped turn stays marked
    finally:
        server.demo.close()


def test_phone_citation_click_shows_the_passage_and_a_way_back(browser, ui_server):
    """Issue 17: on a phone a citation click jumped 900 px down with no way back."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    inside = ("(sel) => { const r = document.querySelector(sel).getBoundingClientRect();"
              " return r.bottom > 0 && r.top < window.innerHeight; }")
    try:
        _open(page, ui_server.url)
        _ask(page, LAPTOPS)
        cite = page.locator("#chat .rag-cite").first
        cite.wait_for(state="visible", timeout=TIMEOUT_MS)
        cite.scroll_into_view_if_needed()
        turn, number = _target(cite)
        cite.click()
        page.wait_for_function(inside, arg=f"#evidence .ev-{turn}-{number}")  # the passage opens in view
        back = page.locator("#rag-back")
        back.wait_for(state="visible")
        assert "Back to answer" in back.inner_text()
        _shot(page, "phone-citation-back-light-390x844")
        back.click()
        page.wait_for_function(inside, arg=f"#chat .rag-cite.rag-t-{turn}.rag-n-{number}")
        back.wait_for(state="hidden")
    finally:
        context.close()
