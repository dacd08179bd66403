"""HTTP-level guards for the Gradio server: same-origin writes and the upload size limit.

Gradio's CORS middleware only decides which *responses* a foreign page may read; the request itself
still runs. A page on another site could therefore POST a multipart upload (or queue an ingest) to a UI
on 127.0.0.1 from a visitor's browser. `SameOriginWrites` refuses any state-changing request whose
`Origin` header names another host than the one the request was sent to. Clients that send no Origin
(gradio_client, curl, server-side code) are not browsers acting for another site and pass.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from rag.config import Settings

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class SameOriginWrites:
    """ASGI middleware: 403 for a non-GET request whose Origin is not the server's own host."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            origin = headers.get("origin")
            if origin is not None and not same_origin(origin, headers):
                await _forbidden(send)
                return
        await self.app(scope, receive, send)


def same_origin(origin: str, headers: dict[str, str]) -> bool:
    """True when `origin` (scheme://host[:port]) names the host the request was addressed to.

    Behind a reverse proxy the address the browser used is in X-Forwarded-Host; both are accepted.
    The literal origin "null" (sandboxed frames, file:// pages) is never the server's own.
    """
    if origin.strip().lower() == "null":
        return False
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    hosts = {headers.get("host", "").lower()}
    forwarded = headers.get("x-forwarded-host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip().lower())
    return bool(netloc) and netloc in hosts


async def _forbidden(send: Any) -> None:
    body = b"cross-origin request refused"
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def upload_limit_bytes(settings: Settings) -> int:
    """The largest upload accepted, in bytes: the same limit as the server's uploads (`server_max_upload_mb`)."""
    return int(float(settings.server_max_upload_mb) * 1_000_000)


def server_options(settings: Settings, demo: Any = None) -> dict[str, Any]:
    """Keyword arguments for `Blocks.launch` and `gradio.mount_gradio_app` that every UI server needs.

    - `max_file_size`: Gradio stops reading an upload past this size (413) instead of storing it;
    - `app_kwargs`: the same-origin guard as middleware of Gradio's FastAPI app, and, given the `demo`
      built by `ui.app.build_app`, the source viewer's routes (`ui.viewer`) inside that app.
    A server that mounts the UI (`rag serve`) passes these to `mount_gradio_app`.
    """
    from starlette.middleware import Middleware

    app_kwargs: dict[str, Any] = {"middleware": [Middleware(SameOriginWrites)]}
    router = getattr(demo, "rag_viewer_router", None)
    if router is not None:
        app_kwargs["routes"] = list(router.routes)  # ahead of Gradio's own routes
    return {"max_file_size": upload_limit_bytes(settings), "app_kwargs": app_kwargs}
