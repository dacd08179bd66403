"""The Gradio UI inside the server, with a sign-in decided per request from the key store.

Gradio's sign-in (`mount_gradio_app(auth=...)`) is fixed when the app is mounted, but keys come and go
while the server runs (`rag keys create|revoke` from another process). `UiSignIn`, a middleware of the
mounted Gradio app, decides on every request what the key store says now:

- at least one active key: the UI asks for a sign-in (user = the key's name, password = the key);
- no active key: the UI is open to the operator on this machine (loopback), as the REST API is, and a
  request from another address is refused (unless the server runs with --insecure).

Gradio reads its `App.auth` attribute at request time (`/login`, the page, `login_check` on every
event route), so the middleware sets it to the key check or to None before handing the request on.
The value depends only on the key store, never on the request, so concurrent requests cannot hand
each other a different decision (at worst a request straddling `rag keys create` sees the newer one).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse

from rag.access import Caller, Role
from rag.server.auth import is_loopback
from rag.server.errors import error_body
from rag.server.state import ServerState

log = logging.getLogger("rag.server")

SIGN_IN_MESSAGE = "Sign in with your key's name and the API key (rag keys create NAME ...)"


class UiSignIn:
    """ASGI middleware of the mounted Gradio app: sign-in required exactly while keys exist (see module doc)."""

    def __init__(self, app: Callable, state: ServerState, check: Callable[[str, str], bool]) -> None:
        self.app = app
        self.state = state
        self.check = check

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        keys_exist = self.state.keys.any_active()
        gradio_app = scope.get("app")  # Starlette puts the app running this middleware stack here
        if gradio_app is not None and hasattr(gradio_app, "tokens"):
            gradio_app.auth = self.check if keys_exist else None
        client = scope.get("client")
        if not keys_exist and not self.state.insecure and not is_loopback(client[0] if client else None):
            body = error_body("missing_api_key", "no API keys are configured, so this server's UI only answers "
                              "on this machine (loopback); create a key with: rag keys create NAME --acl LABEL "
                              "--role reader, then sign in with its name and key", "authorization")
            await JSONResponse(body, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def session_caller_source(state: ServerState) -> Callable[[Any], Caller]:
    """The Caller of each UI request: the signed-in key's (resolved per request, so a revoked key loses
    access at once), the operator's when no key exists and the request is local, else nobody."""
    from ui.context import default_caller

    nobody = Caller(name="signed-out", labels=(), role=Role.READER)

    def session_caller(request: Any) -> Caller:
        username = getattr(request, "username", None) if request is not None else None
        if username:
            return state.keys.caller_for_name(username) or nobody  # revoked since sign-in: sees nothing
        if state.keys.any_active():
            return nobody  # keys exist: only a signed-in session sees anything
        client = getattr(request, "client", None) if request is not None else None
        if state.insecure or is_loopback(getattr(client, "host", None)):
            return default_caller(state.settings)
        return nobody

    return session_caller


def mount_gradio(app: FastAPI, state: ServerState, path: str = "/ui") -> None:
    """Mount the Gradio UI at `path`, its sign-in governed per request by `UiSignIn`."""
    import gradio as gr  # heavy: imported only when the UI is mounted
    from starlette.middleware import Middleware

    from ui.app import build_app

    pipeline = state.pipelines[state.settings.collection]
    roots = [str(r) for r in state.ingest_roots]
    demo = build_app(state.settings, pipeline, ingest_roots=roots, caller=session_caller_source(state), jobs=state.jobs)

    def check(username: str, password: str) -> bool:
        caller = state.keys.authenticate(password)
        return caller is not None and caller.name == username

    options: dict[str, Any] = {}
    try:
        from ui.web import server_options  # upload limit and same-origin guard for the UI's own routes

        options = server_options(state.settings, demo)
    except ImportError:
        pass
    app_kwargs = dict(options.pop("app_kwargs", {}) or {})
    # Ahead of the same-origin guard and of every Gradio route: decided before Gradio looks at `auth`.
    app_kwargs["middleware"] = [Middleware(UiSignIn, state=state, check=check),
                                *(app_kwargs.get("middleware") or [])]
    # `auth=check` makes Gradio build its sign-in page and /login; UiSignIn switches it off per request
    # while no key exists.
    gr.mount_gradio_app(app, demo, path=path, auth=check, auth_message=SIGN_IN_MESSAGE, show_error=False,
                        footer_links=[], app_kwargs=app_kwargs, **options)
    if path not in ("", "/"):
        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse(url=f"{path}/")
