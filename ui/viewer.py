"""The source viewer's HTTP routes: a PDF page as PNG, a document's text, the original file, and an
HTML viewer page over them. Mounted twice by one factory, `viewer_router`:

- by the server under `/api/v1/sources/` for API clients (the caller from the API key, `caller_dep`);
- inside the Gradio app under `<ui>/sources/` for the UI's own links (the caller of the browser's UI
  session: the signed-in user, or the UI's operator caller), so a signed-in visitor's cookie works and
  the links are relative to wherever the UI is mounted.

Every route takes a chunk id, never a path: the pipeline resolves it to a chunk the caller can see
(`Pipeline.source_chunk`) and serves that chunk's own indexed file. A chunk that does not exist, a
malformed id and a chunk the caller cannot see all get the same 404.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any, Callable
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from rag.access import AccessDenied, Caller
from rag.errors import RagError
from rag.models import Chunk
from rag.pipeline import Pipeline
from rag.sources import PageNotFound, SourceNotFound, SourceText, SourceUnavailable, safe_download_name

log = logging.getLogger(__name__)

# (request, collection or None) -> the pipeline to read and the request's caller; may raise the
# mounting app's own auth errors (the server's 401/429), which its error handlers render.
Resolver = Callable[[Request, "str | None"], "tuple[Pipeline, Caller]"]

MAX_TEXT_CHARS = 400_000  # a longer document is shown as a window around the passage
TEXT_WINDOW = 100_000
NOT_FOUND = "no such passage"
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _error(status: int, code: str, message: str, field: str | None = "chunk_id") -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status,
                        headers=_NO_STORE)


def _failure(exc: Exception) -> JSONResponse:
    """The response for a viewer failure; a missing and an invisible passage look exactly alike."""
    if isinstance(exc, PageNotFound):  # raised only for a passage the caller can see
        return _error(404, "not_found", str(exc)[:300], "page")
    if isinstance(exc, SourceNotFound):
        return _error(404, "not_found", NOT_FOUND)
    if isinstance(exc, AccessDenied):
        return _error(403, "forbidden", str(exc)[:300], None)
    if isinstance(exc, SourceUnavailable):
        return _error(410, "source_unavailable", str(exc)[:300])
    if isinstance(exc, RagError):  # e.g. the file no longer parses
        return _error(422, "source_unreadable", str(exc)[:300])
    log.exception("source viewer failed")
    return _error(500, "internal", "the source could not be shown; details are in the server log", None)


def _query(chunk_id: str, **extra: Any) -> str:
    return urlencode({"chunk_id": chunk_id, **{k: v for k, v in extra.items() if v is not None}})


def viewer_router(resolve: Resolver, prefix: str = "/sources", collection_param: bool = True) -> APIRouter:
    """The viewer routes under `prefix`: `page` (PNG), `text` (JSON), `file` (download), `view` (HTML).

    `collection_param`: accept `?collection=` (the server serves several collections; the UI one).
    """
    router = APIRouter(prefix=prefix, tags=["sources"])

    def open_(request: Request, collection: str | None) -> tuple[Pipeline, Caller]:
        return resolve(request, collection if collection_param else None)

    @router.get("/page", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def page_image(request: Request, chunk_id: str = Query(..., max_length=64),
                   page: int | None = Query(None, ge=1, le=100_000),
                   collection: str | None = Query(None, max_length=100)) -> Response:
        """A page of the passage's PDF as PNG (default: the passage's page), the passage highlighted."""
        pipeline, caller = open_(request, collection)
        try:
            image = pipeline.source_page(chunk_id, page, caller=caller)
        except Exception as exc:  # noqa: BLE001  (mapped to one readable status each)
            return _failure(exc)
        return Response(image.png, media_type="image/png",
                        headers={**_NO_STORE, "X-Page": str(image.page), "X-Page-Count": str(image.page_count),
                                 "X-Highlighted-Boxes": str(image.highlighted)})

    @router.get("/text")
    def document_text(request: Request, chunk_id: str = Query(..., max_length=64),
                      collection: str | None = Query(None, max_length=100)) -> Response:
        """The passage's document text (as extracted for indexing) and the passage's span in it."""
        pipeline, caller = open_(request, collection)
        try:
            chunk = pipeline.source_chunk(chunk_id, caller=caller)
            source = pipeline.sources.text(chunk)
        except Exception as exc:  # noqa: BLE001
            return _failure(exc)
        return JSONResponse({"chunk_id": chunk.id, "file_name": source.file_name, "file_type": chunk.file_type,
                             "start": source.start, "end": source.end, "found": source.end > source.start,
                             "text": source.text}, headers=_NO_STORE)

    @router.get("/file", response_class=Response)
    def download(request: Request, chunk_id: str = Query(..., max_length=64),
                 collection: str | None = Query(None, max_length=100)) -> Response:
        """The passage's original file as an attachment (the exact indexed bytes)."""
        pipeline, caller = open_(request, collection)
        try:
            source = pipeline.source_file(chunk_id, caller=caller)
        except Exception as exc:  # noqa: BLE001
            return _failure(exc)
        name = safe_download_name(source.file_name)
        ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
        disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
        # Served as a download, never rendered: an indexed HTML file must not run in our origin.
        return FileResponse(source.path, media_type=source.media_type,
                            headers={**_NO_STORE, "Content-Disposition": disposition,
                                     "Content-Security-Policy": "sandbox"})

    @router.get("/view", response_class=HTMLResponse)
    def view(request: Request, chunk_id: str = Query(..., max_length=64),
             page: int | None = Query(None, ge=1, le=100_000), mode: str | None = Query(None, pattern="^(page|text)$"),
             collection: str | None = Query(None, max_length=100)) -> Response:
        """An HTML page: a PDF page with the passage highlighted and page navigation, or the document's
        text scrolled to the highlighted passage."""
        pipeline, caller = open_(request, collection)
        coll = collection if collection_param else None
        try:
            chunk = pipeline.source_chunk(chunk_id, caller=caller)
            if chunk.file_type == "pdf" and mode != "text":
                count = pipeline.sources.page_count(chunk)
                number = int(page or chunk.page or 1)
                if not 1 <= number <= count:
                    raise PageNotFound(f"{chunk.file_name} has {count} pages; there is no page {number}")
                body = _page_view(chunk, number, count, coll)
            else:
                body = _text_view(chunk, pipeline.sources.text(chunk), coll)
        except Exception as exc:  # noqa: BLE001
            failure = _failure(exc)
            message = json.loads(failure.body)["error"]["message"]
            return HTMLResponse(_document("Source not available", f'<p class="err">{html.escape(message)}</p>'),
                                status_code=failure.status_code, headers=_NO_STORE)
        return HTMLResponse(body, headers={**_NO_STORE, "Content-Security-Policy": _CSP})

    return router


# Our own viewer page: inline style and the one scroll script, images only from this origin.
_CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")

_STYLE = """
:root { color-scheme: light dark; --bg:#ffffff; --fg:#1f2328; --muted:#57606a; --line:#d0d4dc; --link:#0969da;
  --mark-bg:#ffe58a; --mark-fg:#1f2328; --page-bg:#f3f4f6; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#0d1117; --fg:#e6edf3; --muted:#9da7b3; --line:#30363d; --link:#58a6ff; --page-bg:#161b22; }
}
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { position:sticky; top:0; z-index:1; background:var(--bg); border-bottom:1px solid var(--line);
  padding:8px 14px; display:flex; flex-wrap:wrap; gap:6px 14px; align-items:baseline; }
header h1 { font-size:1.05em; margin:0; word-break:break-all; }
header .meta { color:var(--muted); font-size:0.9em; }
nav { display:flex; flex-wrap:wrap; gap:6px 12px; align-items:baseline; }
a { color:var(--link); }
a.btn, span.btn { border:1px solid var(--line); border-radius:6px; padding:2px 10px; text-decoration:none; }
span.btn { color:var(--muted); opacity:0.6; }
main { padding:12px; }
.page { background:var(--page-bg); padding:10px; text-align:center; }
.page img { max-width:100%; height:auto; box-shadow:0 1px 4px rgba(0,0,0,0.35); background:#fff; }
pre.doc { white-space:pre-wrap; word-wrap:break-word; font:14px/1.55 ui-monospace, SFMono-Regular, Menlo, monospace;
  max-width:60em; margin:0 auto; }
mark { background:var(--mark-bg); color:var(--mark-fg); padding:1px 0; scroll-margin-top:30vh;
  box-shadow:0 0 0 2px var(--mark-bg); }
.note, .err { color:var(--muted); max-width:60em; margin:6px auto; }
.err { color:#d1242f; }
"""


def _document(title: str, body: str, script: str = "") -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"referrer\" content=\"no-referrer\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}"
            + (f"<script>{script}</script>" if script else "") + "</body></html>")


def _header(chunk: Chunk, extra: str, coll: str | None) -> str:
    name = html.escape(chunk.file_name or chunk.file_path.rsplit("/", 1)[-1])
    section = f'<span class="meta">§ {html.escape(chunk.section[:120])}</span>' if chunk.section else ""
    download = f'<a class="btn" id="download" href="file?{_query(chunk.id, collection=coll)}">Download</a>'
    return f"<header><h1>{name}</h1>{section}<nav>{extra}{download}</nav></header>"


def _page_view(chunk: Chunk, number: int, count: int, coll: str | None) -> str:
    def link(n: int, label: str, rel: str) -> str:
        if 1 <= n <= count and n != number:
            return f'<a class="btn" rel="{rel}" id="{rel}" href="view?{_query(chunk.id, page=n, collection=coll)}">{label}</a>'
        return f'<span class="btn">{label}</span>'

    cited = sorted({int(b[0]) for b in chunk.boxes if b} or set(chunk.page_numbers))
    pages_note = ("cited on p. " + ", ".join(str(p) for p in cited)) if cited else ""
    nav = (link(number - 1, "‹ Previous", "prev") + f'<span class="meta" id="page-of">Page {number} of {count}</span>'
           + link(number + 1, "Next ›", "next")
           + (f'<span class="meta">{pages_note}</span>' if pages_note else "")
           + f'<a class="btn" href="view?{_query(chunk.id, mode="text", collection=coll)}#passage">Text</a>')
    alt = f"Page {number} of {html.escape(chunk.file_name)}" + (" with the cited passage highlighted"
                                                                 if number in cited else "")
    img = (f'<div class="page"><img id="page-image" alt="{alt}" '
           f'src="page?{_query(chunk.id, page=number, collection=coll)}"></div>')
    note = ""
    if not chunk.boxes:
        note = ('<p class="note">This passage was indexed without layout positions, so it cannot be highlighted '
                "on the page; re-index the file to get highlights, or open the text view.</p>")
    body = _header(chunk, nav, coll) + f"<main>{note}{img}</main>"
    return _document(f"{chunk.file_name} — page {number}", body)


def _text_view(chunk: Chunk, source, coll: str | None) -> str:
    text, start, end = source.text, source.start, source.end
    note = ""
    if len(text) > MAX_TEXT_CHARS:
        lo = max(0, start - TEXT_WINDOW // 2)
        hi = min(len(text), max(end, start) + TEXT_WINDOW // 2)
        note = (f'<p class="note">Showing characters {lo:,}–{hi:,} of {len(text):,} around the passage; '
                "download the file for the whole document.</p>")
        text, start, end = text[lo:hi], start - lo, end - lo
    window = SourceText(text=text, start=start, end=end, file_name=source.file_name)
    if end <= start:
        note += '<p class="note">The passage could not be located in the current text of this file.</p>'
    extra = ""
    if chunk.file_type == "pdf":
        extra = f'<a class="btn" href="view?{_query(chunk.id, collection=coll)}">Page view</a>'
    body = _header(chunk, extra, coll) + f'<main>{note}<pre class="doc">{window.html("passage")}</pre></main>'
    # The #passage fragment scrolls natively; the script also centres it when the page is opened without it.
    script = ("var m=document.getElementById('passage');"
              "if(m&&m.textContent){m.scrollIntoView({block:'center'});}")
    return _document(f"{chunk.file_name} — passage", body, script)


def gradio_resolver(pipeline: Pipeline, caller_of: Callable[[Any], Caller]) -> Resolver:
    """A Resolver for routes mounted inside the Gradio app: the UI's pipeline, and the caller of the
    browser's UI session (`caller_of` gets a `gr.Request` carrying the signed-in user name, if any).

    The user comes from Gradio's own session cookie, as Gradio resolves it for its event routes.
    """
    import gradio as gr  # the UI's dependency; only routes mounted in the Gradio app use this

    def resolve(request: Request, _collection: str | None) -> tuple[Pipeline, Caller]:
        app = request.app
        username = None
        tokens = getattr(app, "tokens", None)
        cookie_id = getattr(app, "cookie_id", None)
        if isinstance(tokens, dict) and cookie_id:
            token = (request.cookies.get(f"access-token-{cookie_id}")
                     or request.cookies.get(f"access-token-unsecure-{cookie_id}"))
            username = tokens.get(token) if token else None
        return pipeline, caller_of(gr.Request(request=request, username=username))

    return resolve
