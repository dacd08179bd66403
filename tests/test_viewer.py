"""The source viewer (issue 17): a PDF page with the passage highlighted, a document's text scrolled to
its highlighted passage, the original file for download; and none of it for a caller who cannot see the
file, by any URL.

One real store (MiniLM embedder, embedded Qdrant Edge) holds `public` files (a PDF, a DOCX, an e-mail)
and `secret` ones (a PDF, an e-mail). The REST routes are called through FastAPI's TestClient over the
server app with API keys; the UI's own copy of the routes through a real Gradio server whose session is
a `public` reader; the browser test drives that UI in Chromium.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.ui_app_fixture import free_port, ui_settings

PUBLIC = ["fake-memo.pdf", "docx-tables.docx", "family-day.eml"]
SECRET = ["layout-parser-paper-fast.pdf", "mime-different-plain-html.eml"]
CHROMIUM = os.environ.get("RAG_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path("/tmp/shots")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@dataclass
class World:
    docs: Path
    pipeline: object
    state: object
    keys: dict[str, str]
    chunks: dict[str, list]  # file name -> its chunks (read as the operator)

    def chunk(self, name: str, contains: str = ""):
        return next(c for c in self.chunks[name] if contains in c.text)


@pytest.fixture(scope="module")
def world(evaldata, minilm_path, tmp_path_factory):
    from rag.access import Caller
    from rag.models import SearchFilter
    from rag.pipeline import Pipeline
    from rag.server.state import ServerState

    root = tmp_path_factory.mktemp("viewer")
    docs = root / "docs"
    for folder, names in (("public", PUBLIC), ("secret", SECRET)):
        (docs / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(evaldata / "docs-mixed" / "files" / name, docs / folder / name)
    settings = ui_settings(root, minilm_path, collection="viewer", default_acl=["public"], server_rate_limit=0.0)
    pipeline = Pipeline(settings)
    assert pipeline.ingest([str(docs / "public")], acl=["public"], progress=False).failed == 0
    assert pipeline.ingest([str(docs / "secret")], acl=["secret"], progress=False).failed == 0
    state = ServerState.create(settings, pipeline=pipeline, start_writer=False)
    keys = {"reader": state.keys.create("reader", ["public"], "reader"),
            "admin": state.keys.create("admin", ["public", "secret"], "admin")}
    everyone = Caller.local(["public", "secret"])
    chunks: dict[str, list] = {}
    for folder, names in (("public", PUBLIC), ("secret", SECRET)):
        for name in names:
            path = str((docs / folder / name).resolve())
            flt = everyone.search_filter(SearchFilter(acl=None, file_paths=[path]))
            ids = [point_id for point_id, _payload, _vec in pipeline.store.iter_payloads(fields=[], flt=flt)]
            chunks[name] = sorted(pipeline.store.retrieve(ids), key=lambda c: c.chunk_index)
            assert chunks[name], f"{name} was not indexed"
    yield World(docs=docs, pipeline=pipeline, state=state, keys=keys, chunks=chunks)
    state.close()


@pytest.fixture(scope="module")
def api(world):
    from fastapi.testclient import TestClient

    from rag.server.app import create_app

    app = create_app(world.state, mount_ui=False, mount_mcp=False)
    with TestClient(app) as client:
        yield client


def _as(world: World, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.keys[who]}"}


def _yellowish(rgb) -> bool:
    r, g, b = rgb[:3]
    return r > 150 and r - b > 60 and g - b > 45


# ------------------------------------------------------------------------------ provenance
def test_pdf_chunks_keep_their_element_boxes_and_other_formats_none(world):
    pdf = world.chunks["fake-memo.pdf"]
    assert pdf, "the PDF was not indexed"
    for chunk in pdf:
        assert chunk.boxes, chunk
        for page, x0, y0, x1, y1 in chunk.boxes:
            assert page in chunk.page_numbers
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    # The memo's lines sit in the top third of a letter page, left margin one inch (72/612 = 0.1176).
    assert min(b[1] for c in pdf for b in c.boxes) == pytest.approx(72 / 612, abs=0.002)
    assert max(b[4] for c in pdf for b in c.boxes) < 0.34
    assert all(not c.boxes for c in world.chunks["docx-tables.docx"] + world.chunks["family-day.eml"])


def test_a_chunk_written_before_boxes_existed_still_loads():
    from rag.models import Chunk

    old = {"text": "x", "file_path": "/a.pdf", "file_hash": "h", "file_type": "pdf", "chunk_index": 0,
           "chunk_count": 1, "char_start": 0, "char_end": 1}
    assert Chunk.from_payload(str(uuid.uuid4()), old).boxes == []
    chunk = Chunk.from_payload(str(uuid.uuid4()), {**old, "boxes": [[1, 0.1, 0.2, 0.3, 0.4]]})
    assert chunk.to_payload()["boxes"] == [[1, 0.1, 0.2, 0.3, 0.4]]


# ------------------------------------------------------------------------------ page images
def test_page_png_highlights_exactly_the_passage_box(world, api):
    from PIL import Image

    chunk = world.chunk("fake-memo.pdf", "bottles of water")
    response = api.get("/api/v1/sources/page", params={"chunk_id": chunk.id}, headers=_as(world, "reader"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-page"] == "1" and response.headers["x-page-count"] == "1"
    image = Image.open(io.BytesIO(response.content)).convert("RGB")
    w, h = image.size
    assert (w, h) == (round(612 * 1.5), round(792 * 1.5))
    boxes = [b for b in chunk.boxes if b[0] == 1]
    assert boxes

    def inside(x: int, y: int, margin: float) -> bool:
        return any(b[1] - margin <= x / w <= b[3] + margin and b[2] - margin <= y / h <= b[4] + margin for b in boxes)

    pixels = image.load()
    yellow_in = total_in = yellow_out = 0
    for y in range(0, h, 2):
        for x in range(0, w, 2):
            if inside(x, y, 0.0):
                total_in += 1
                yellow_in += _yellowish(pixels[x, y])
            elif not inside(x, y, 0.01):  # the padding and outline sit within 1% of the box
                yellow_out += _yellowish(pixels[x, y])
    assert total_in > 500
    assert yellow_in / total_in > 0.6, (yellow_in, total_in)
    assert yellow_out == 0


def test_pages_of_another_chunk_are_not_highlighted_and_out_of_range_pages_are_404(world, api):
    from PIL import Image

    secret_pdf = world.chunks["layout-parser-paper-fast.pdf"]
    first = next(c for c in secret_pdf if c.page == 1)
    response = api.get("/api/v1/sources/page", params={"chunk_id": first.id, "page": 2}, headers=_as(world, "admin"))
    assert response.status_code == 200
    assert response.headers["x-page-count"] == "2"
    highlighted_on_2 = sum(1 for b in first.boxes if b[0] == 2)
    assert response.headers["x-highlighted-boxes"] == str(highlighted_on_2)
    if not highlighted_on_2:
        image = Image.open(io.BytesIO(response.content)).convert("RGB")
        import numpy as np

        rgb = np.asarray(image, dtype=np.int16)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        assert not ((r > 150) & (r - b > 60) & (g - b > 45)).any()
    missing = api.get("/api/v1/sources/page", params={"chunk_id": first.id, "page": 3}, headers=_as(world, "admin"))
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "page"
    not_pdf = api.get("/api/v1/sources/page", params={"chunk_id": world.chunks["family-day.eml"][0].id},
                      headers=_as(world, "reader"))
    assert not_pdf.status_code == 410


def test_page_view_has_the_image_and_page_navigation(world, api):
    chunk = next(c for c in world.chunks["layout-parser-paper-fast.pdf"] if c.page == 1)
    page = api.get("/api/v1/sources/view", params={"chunk_id": chunk.id}, headers=_as(world, "admin"))
    assert page.status_code == 200
    body = page.text
    assert "Page 1 of 2" in body and 'id="page-image"' in body
    assert f'href="view?chunk_id={chunk.id}&amp;page=2"' in body or f"view?chunk_id={chunk.id}&page=2" in body
    assert 'id="download"' in body
    second = api.get("/api/v1/sources/view", params={"chunk_id": chunk.id, "page": 2}, headers=_as(world, "admin"))
    assert "Page 2 of 2" in second.text and 'rel="prev"' in second.text


# ------------------------------------------------------------------------------ text views
@pytest.mark.parametrize("name", ["docx-tables.docx", "family-day.eml"])
def test_text_view_marks_the_passage_in_its_document(world, api, name):
    import html

    for chunk in world.chunks[name]:
        data = api.get("/api/v1/sources/text", params={"chunk_id": chunk.id}, headers=_as(world, "reader")).json()
        assert data["found"] is True
        assert data["text"][data["start"]:data["end"]] == chunk.text
        view = api.get("/api/v1/sources/view", params={"chunk_id": chunk.id}, headers=_as(world, "reader"))
        assert view.status_code == 200
        assert f'<mark id="passage">{html.escape(chunk.text, quote=False)}</mark>' in view.text
        assert "scrollIntoView" in view.text
    if name == "docx-tables.docx":  # document text is escaped: the table's ">b<" and "&t" never become markup
        page = "".join(api.get("/api/v1/sources/view", params={"chunk_id": c.id}, headers=_as(world, "reader")).text
                       for c in world.chunks[name])
        assert "&gt;b&lt;" in page and ">b<" not in page


# ------------------------------------------------------------------------------ downloads
@pytest.mark.parametrize("name", PUBLIC)
def test_download_returns_the_exact_bytes_as_an_attachment(world, api, name):
    chunk = world.chunks[name][0]
    response = api.get("/api/v1/sources/file", params={"chunk_id": chunk.id}, headers=_as(world, "reader"))
    assert response.status_code == 200
    assert response.content == (world.docs / "public" / name).read_bytes()
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and name in disposition


def test_a_file_changed_since_indexing_is_not_served(world, tmp_path):
    from dataclasses import replace

    from rag.sources import SourceUnavailable, SourceViewer

    chunk = world.chunks["family-day.eml"][0]
    changed = tmp_path / "family-day.eml"
    changed.write_bytes(b"Subject: replaced\n\nother content\n")
    viewer = SourceViewer(lambda p: "")
    with pytest.raises(SourceUnavailable, match="changed since it was indexed"):
        viewer.file(replace(chunk, file_path=str(changed)))


# ------------------------------------------------------------------------------ access
ROUTES = ["page", "text", "file", "view"]


def _guesses(world: World) -> list[dict[str, str]]:
    """Every way a public caller might name a secret file: its real chunk ids, ids computed from its
    path and hash, paths and traversals as the chunk id, and path-like extra parameters."""
    from ingest.sync import chunk_id

    secret_paths = [str((world.docs / "secret" / n).resolve()) for n in SECRET]
    ids = [c.id for n in SECRET for c in world.chunks[n]]
    computed = [chunk_id(p, c.file_hash, i) for p, n in zip(secret_paths, SECRET)
                for i, c in enumerate(world.chunks[n][:3])]
    public_id = world.chunks["fake-memo.pdf"][0].id
    guesses = [{"chunk_id": i} for i in ids + computed]
    guesses += [{"chunk_id": p} for p in secret_paths + ["../secret/" + SECRET[1], "..%2F..%2Fetc%2Fpasswd",
                                                         "/etc/passwd", "file:///etc/passwd", ids[0].upper(),
                                                         "{" + ids[0] + "}", ids[0].replace("-", "")]]
    # Extra parameters are ignored: the file always comes from the visible chunk's own record.
    guesses += [{"chunk_id": public_id, "path": secret_paths[0], "file": secret_paths[0],
                 "file_path": secret_paths[0], "collection": "viewer"}]
    return guesses


def test_public_caller_cannot_reach_secret_files_by_any_api_url(world, api):
    reader = _as(world, "reader")
    missing = api.get("/api/v1/sources/text", params={"chunk_id": str(uuid.uuid4())}, headers=reader)
    assert missing.status_code == 404
    secret_texts = [(world.docs / "secret" / n).read_bytes() for n in SECRET]
    for params in _guesses(world):
        for route in ROUTES:
            response = api.get(f"/api/v1/sources/{route}", params=params, headers=reader)
            if params.get("chunk_id") == world.chunks["fake-memo.pdf"][0].id:
                assert response.status_code == 200
                if route == "file":  # the public file, whatever the extra parameters said
                    assert response.content == (world.docs / "public" / "fake-memo.pdf").read_bytes()
            else:
                assert response.status_code in (404, 422), (route, params, response.status_code)
                if response.status_code == 404 and route != "view":
                    assert response.json() == missing.json()  # same answer as a passage that does not exist
            assert not any(s[:200] in response.content for s in secret_texts)
    # Path segments instead of parameters: no route takes a path.
    for raw in ["/api/v1/sources/file/..%2F..%2Fsecret", f"/api/v1/sources/file{quote(str(world.docs))}/secret",
                "/api/v1/sources/../../etc/passwd", "/api/v1/sources/file?chunk_id=" + quote("../../etc/passwd")]:
        response = api.get(raw, headers=reader)
        assert response.status_code in (404, 405, 422), raw
    # The admin, who holds `secret`, does get them (so the 404s above are access, not breakage).
    secret_chunk = world.chunks[SECRET[1]][0]
    ok = api.get("/api/v1/sources/file", params={"chunk_id": secret_chunk.id}, headers=_as(world, "admin"))
    assert ok.status_code == 200 and ok.content == secret_texts[1]
    # No key: 401 before anything is looked up (keys exist, so loopback is not trusted).
    assert api.get("/api/v1/sources/file", params={"chunk_id": secret_chunk.id}).status_code == 401


@pytest.fixture(scope="module")
def public_ui(world):
    """A real Gradio server (as `rag ui` without the API) whose sessions are a `public` reader."""
    from rag.access import Caller, Role
    from ui.app import build_app, server_options

    demo = build_app(world.pipeline.settings, world.pipeline, caller=Caller("visitor", ("public",), Role.READER))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True,
                **server_options(world.pipeline.settings, demo))
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_the_ui_serves_the_viewer_as_its_session_and_never_the_secret_file(world, public_ui):
    import httpx

    secret_texts = [(world.docs / "secret" / n).read_bytes() for n in SECRET]
    with httpx.Client(base_url=public_ui, timeout=60, trust_env=False) as client:
        memo = world.chunk("fake-memo.pdf", "bottles of water")
        page = client.get("sources/page", params={"chunk_id": memo.id})
        assert page.status_code == 200 and page.headers["content-type"] == "image/png"
        view = client.get("sources/view", params={"chunk_id": world.chunks["family-day.eml"][0].id})
        assert view.status_code == 200 and '<mark id="passage">' in view.text
        for params in _guesses(world):
            for route in ROUTES:
                response = client.get(f"sources/{route}", params=params)
                if params.get("chunk_id") != memo.id and params.get("chunk_id") != world.chunks["fake-memo.pdf"][0].id:
                    assert response.status_code in (404, 422), (route, params)
                assert not any(s[:200] in response.content for s in secret_texts)


def test_evidence_cards_link_to_the_viewer(world):
    from rag.models import Evidence, Hit
    from ui import render

    memo = world.chunk("fake-memo.pdf", "bottles of water")
    mail = world.chunks["family-day.eml"][0]
    from rag.models import Answer

    answer = Answer(question="q", text="x [1] [2]", citations=[], abstained=False,
                    evidence=[Evidence(1, Hit(memo, 1.0)), Evidence(2, Hit(mail, 0.5))])
    block = render.evidence_block(answer, 1)
    assert f'href="sources/view?chunk_id={memo.id}&amp;page=1"' in block
    assert f'href="sources/view?chunk_id={mail.id}#passage"' in block
    assert f'href="sources/file?chunk_id={mail.id}" download' in block


# ------------------------------------------------------------------------------ timing
def test_page_render_time(world, capsys):
    """Time to produce a page image: uncached render + highlight + PNG encode, and a cached hit (p50 of 10)."""
    chunk = world.chunk("fake-memo.pdf", "bottles of water")
    big = next(c for c in world.chunks["layout-parser-paper-fast.pdf"] if c.page == 1)
    figures = {}
    for label, c in (("fake-memo p1", chunk), ("layout-parser p1", big)):
        cold = []
        for _ in range(10):
            sources = world.pipeline.sources
            sources._pages, sources._bases = type(sources._pages)(64 << 20), type(sources._bases)(64 << 20)
            t0 = time.perf_counter()
            world.pipeline.sources.page(c)
            cold.append((time.perf_counter() - t0) * 1000)
        warm = []
        for _ in range(10):
            t0 = time.perf_counter()
            world.pipeline.sources.page(c)
            warm.append((time.perf_counter() - t0) * 1000)
        figures[label] = (statistics.median(cold), statistics.median(warm))
    with capsys.disabled():
        for label, (cold, warm) in figures.items():
            print(f"\n[viewer timing] {label}: render p50 {cold:.1f} ms uncached, {warm:.2f} ms cached (10 runs)")
    assert all(cold < 2000 for cold, _warm in figures.values())


# ------------------------------------------------------------------------------ browser
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_browser_open_source_from_a_pdf_citation(world, public_ui, capsys):
    sync_api = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    memo = world.chunk("fake-memo.pdf", "bottles of water")
    mail = world.chunks["family-day.eml"][0]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            def cited_card(scheme: str, w: int, h: int):
                context = browser.new_context(viewport={"width": w, "height": h}, color_scheme=scheme)
                page = context.new_page()
                page.set_default_timeout(240_000)
                page.goto(public_ui, wait_until="domcontentloaded")
                box = page.locator("#question textarea")
                box.wait_for(state="visible")
                box.fill("How many bottles of water were there?")
                box.press("Enter")
                cite = page.locator("#chat .rag-cite").first
                cite.wait_for(state="visible")
                cite.click()
                card = page.locator("#evidence .rag-ev.rag-active")
                card.wait_for(state="visible")
                card.scroll_into_view_if_needed()
                link = card.locator("a.rag-open")
                fg = link.evaluate("e => getComputedStyle(e).color")
                bg = card.evaluate("e => getComputedStyle(e).backgroundColor")
                assert _contrast(fg, bg) >= 4.5, (scheme, fg, bg)
                page.screenshot(path=str(SHOTS / f"viewer-evidence-{scheme}-{w}x{h}.png"))
                return context, card

            for scheme, (w, h) in [("dark", (1440, 900)), ("light", (390, 844)), ("dark", (390, 844))]:
                cited_card(scheme, w, h)[0].close()
            context, card = cited_card("light", 1440, 900)
            opener = card.locator("a.rag-open")
            assert "sources/view?chunk_id=" in (opener.get_attribute("href") or "")
            with context.expect_page() as new_tab:
                opener.click()
            viewer = new_tab.value
            viewer.wait_for_load_state("load")
            image = viewer.locator("#page-image")
            image.wait_for(state="visible")
            viewer.wait_for_function("document.getElementById('page-image').naturalWidth > 0")
            assert "Page 1 of 1" in viewer.locator("header").inner_text()
            viewer_url = viewer.url
            context.close()

            # Screenshots of both views in both themes at desktop and phone sizes.
            text_url = public_ui + f"sources/view?chunk_id={mail.id}#passage"
            for scheme in ("light", "dark"):
                for w, h in ((1440, 900), (390, 844)):
                    ctx = browser.new_context(viewport={"width": w, "height": h}, color_scheme=scheme)
                    tab = ctx.new_page()
                    tab.goto(viewer_url, wait_until="load")
                    tab.wait_for_function("document.getElementById('page-image').naturalWidth > 0")
                    tab.screenshot(path=str(SHOTS / f"viewer-page-{scheme}-{w}x{h}.png"))
                    tab.goto(text_url, wait_until="load")
                    mark = tab.locator("mark#passage")
                    assert mark.is_visible()
                    # Scrolled into view and readable: the mark is within the viewport.
                    top = tab.evaluate("document.getElementById('passage').getBoundingClientRect().top")
                    assert 0 <= top < h
                    tab.screenshot(path=str(SHOTS / f"viewer-text-{scheme}-{w}x{h}.png"))
                    if scheme == "dark":
                        fg, bg = tab.evaluate("[getComputedStyle(document.body).color, "
                                              "getComputedStyle(document.body).backgroundColor]")
                        assert _contrast(fg, bg) >= 4.5, (fg, bg)
                    ctx.close()

            # Time to show a page in the browser: navigation to image decoded, p50 of 10 (cache warm).
            ctx = browser.new_context(viewport={"width": 1440, "height": 900})
            tab = ctx.new_page()
            times = []
            for _ in range(10):
                t0 = time.perf_counter()
                tab.goto(viewer_url, wait_until="load")
                tab.wait_for_function("document.getElementById('page-image').naturalWidth > 0")
                times.append((time.perf_counter() - t0) * 1000)
            ctx.close()
            with capsys.disabled():
                print(f"\n[viewer timing] browser: viewer page to decoded page image p50 "
                      f"{statistics.median(times):.0f} ms (10 loads of {memo.file_name} p1)")
        finally:
            browser.close()


def _contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two CSS rgb()/rgba() colours."""
    import re

    def lum(css: str) -> float:
        r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css)[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = sorted((lum(fg), lum(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


@pytest.mark.parametrize("ui_path", ["/ui", "/"])  # `rag serve` (UI at /ui) and `rag ui` (UI at /)
def test_signed_in_ui_session_under_the_server_sees_only_its_own_files(world, ui_path):
    """The server mounts the UI with sign-in (keys exist): the UI's viewer routes (relative to the UI page,
    so wherever it is mounted) use the signed-in key's labels; a visitor not signed in gets nothing."""
    from fastapi.testclient import TestClient

    from rag.server.app import create_app

    app = create_app(world.state, mount_ui=True, mount_mcp=False, ui_path=ui_path)
    base = ui_path.rstrip("/")
    memo = world.chunk("fake-memo.pdf", "bottles of water")
    secret = world.chunks[SECRET[0]][0]
    with TestClient(app) as client:
        assert client.get(f"{base}/sources/page", params={"chunk_id": memo.id}).status_code == 404  # signed out
        login = client.post(f"{base}/login", data={"username": "reader", "password": world.keys["reader"]})
        assert login.status_code == 200, login.text
        page = client.get(f"{base}/sources/page", params={"chunk_id": memo.id})
        assert page.status_code == 200 and page.headers["content-type"] == "image/png"
        for route in ROUTES:
            assert client.get(f"{base}/sources/{route}", params={"chunk_id": secret.id}).status_code == 404
        # The same routes for API clients, at /api/v1/sources, take the key, not the UI cookie.
        assert client.get("/api/v1/sources/page", params={"chunk_id": memo.id}).status_code == 401


def test_pdfminer_boxes_match_unstructured_coordinates(evaldata):
    """Both PDF paths give the same boxes for the same text (the pdfminer one serves encrypted/rotated PDFs)."""
    from ingest.loaders import configure_offline
    from ingest.loaders.elements import from_unstructured
    from ingest.loaders.pdf import _pdfminer_elements

    configure_offline()
    from unstructured.partition.pdf import partition_pdf

    path = evaldata / "docs-mixed" / "files" / "fake-memo.pdf"
    ours, _ = _pdfminer_elements(path, None)
    theirs = from_unstructured(partition_pdf(filename=str(path), strategy="fast", languages=["eng"]))
    by_text = {e.text.strip(): e.boxes for e in theirs}
    compared = 0
    for element in ours:
        if element.text.strip() in by_text:
            assert element.boxes[0][0] == by_text[element.text.strip()][0][0]
            assert element.boxes[0][1:] == pytest.approx(by_text[element.text.strip()][0][1:], abs=0.003)
            compared += 1
    assert compared >= 4


# ------------------------------------------------------------------------------ browser: DOCX and e-mail
def _long_docx(path: Path, needle: str) -> Path:
    """A real Word file (python-docx) whose cited sentence sits far below the first screen."""
    import docx

    doc = docx.Document()
    doc.add_heading("Harbour maintenance log", level=1)
    for i in range(1, 91):
        doc.add_paragraph(f"Inspection note {i}: the crew checked berth {i % 7 + 1}, cleared drain {i * 3} "
                          f"and logged {i + 11} metres of mooring rope as sound.")
    doc.add_paragraph(needle)
    doc.add_paragraph("End of the log.")
    doc.save(str(path))
    return path


def _long_eml(path: Path, needle: str) -> Path:
    """A real RFC 822 message (the stdlib email package) whose cited sentence is near its end."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "ferries@example.org", "staff@example.org", "Timetable notes"
    lines = [f"Note {i}: sailing {i} carried {40 + i} cars and {i * 9} foot passengers without delay."
             for i in range(1, 91)]
    msg.set_content("\n\n".join([*lines, needle, "Regards, the ferry office"]))
    path.write_bytes(bytes(msg))
    return path


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_browser_docx_and_email_citations_open_the_highlighted_passage_and_download(world, public_ui, tmp_path):
    """Issue 17: a DOCX and an e-mail citation → the text view scrolled to the highlighted passage; the
    download is the original file; the public session's browser gets none of a secret file by URL."""
    sync_api = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    folder = world.docs / "public-long"
    folder.mkdir(exist_ok=True)
    cases = [
        (_long_docx(folder / "harbour-log.docx", "The lighthouse keeper counted 417 gannets nesting on the "
                                                 "western cliff in May."),
         "How many gannets were nesting on the western cliff?", "417 gannets"),
        (_long_eml(folder / "ferry-notes.eml", "From 14 March the last ferry leaves Brodick at 19:40 every "
                                               "weekday."),
         "When does the last ferry leave Brodick?", "19:40"),
    ]
    assert world.pipeline.ingest([str(folder)], acl=["public"], progress=False).failed == 0
    secret = world.chunks[SECRET[1]][0]
    secret_bytes = (world.docs / "secret" / SECRET[1]).read_bytes()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(240_000)
            page.goto(public_ui, wait_until="domcontentloaded")
            for turn, (path, question, needle) in enumerate(cases, start=1):
                box = page.locator("#question textarea")
                box.wait_for(state="visible")
                box.fill(question)
                box.press("Enter")
                cite = page.locator(f"#chat .rag-cite.rag-t-{turn}").first
                cite.wait_for(state="visible")
                cite.click()
                card = page.locator("#evidence .rag-ev.rag-active")
                card.wait_for(state="visible")
                assert path.name in card.inner_text() and needle in card.inner_text()
                with context.expect_page() as new_tab:
                    card.locator("a.rag-open").click()
                viewer = new_tab.value
                viewer.wait_for_load_state("load")
                mark = viewer.locator("mark#passage")
                mark.wait_for(state="visible")
                assert needle in mark.inner_text()
                # scrolled: the page moved down to the passage, which is on screen
                viewer.wait_for_function("() => { const r = document.getElementById('passage').getBoundingClientRect();"
                                         " return window.scrollY > 300 && r.top >= 0 && r.top < window.innerHeight; }")
                viewer.screenshot(path=str(SHOTS / f"viewer-{path.suffix[1:]}-light-1440x900.png"))
                viewer.close()
                with page.expect_download() as download:
                    card.locator("a.rag-download").click()
                assert Path(download.value.path()).read_bytes() == path.read_bytes()
                assert download.value.suggested_filename == path.name

            # The same browser session guessing a secret file's URLs gets a 404 and none of its bytes.
            for route in ROUTES:
                response = page.request.get(f"{public_ui}sources/{route}?chunk_id={secret.id}")
                assert response.status == 404, route
                assert secret_bytes[:200] not in response.body() and secret.text[:80].encode() not in response.body()
            tab = context.new_page()
            response = tab.goto(f"{public_ui}sources/view?chunk_id={secret.id}", wait_until="load")
            assert response.status == 404 and "no such passage" in tab.locator("body").inner_text()
            context.close()
        finally:
            browser.close()
