"""The FastAPI application: REST under /api/v1, OpenAI-compatible /v1, MCP at /mcp, the Gradio UI at /ui.

Every route resolves its caller once (`caller_dep`) and hands it to the pipeline, which applies the
caller's labels and role (rag.access); routes never filter results themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rag.access import AccessDenied, Action, Caller, Role
from rag.models import SearchFilter
from rag.pipeline import check_path_text, confine_to_roots
from rag.server.app_support import answer_payload, caller_dep, json_response, request_caller, sse, stream_answer
from rag.server.errors import ApiError, error_body, exception_to_error, install_error_handlers
from rag.server.mcp_server import McpAuthMiddleware, build_mcp
from rag.server.openai_api import router as openai_router
from rag.server.state import ServerState
from rag.server.ui_mount import mount_gradio
from ui.uploads import safe_upload_name
from ui.viewer import viewer_router

log = logging.getLogger("rag.server")

API = "/api/v1"
MAX_QUESTION_CHARS = 2000
MAX_QUERY_CHARS = 2000
MAX_K = 100


# -- request bodies -----------------------------------------------------------------------------------
class Filters(BaseModel):
    """Narrowing filters; `acl` can only narrow to labels the caller holds."""

    model_config = ConfigDict(extra="forbid")
    acl: list[str] | None = Field(None, max_length=50)
    file_types: list[str] | None = Field(None, max_length=50)
    file_paths: list[str] | None = Field(None, max_length=200)
    path_prefix: str | None = Field(None, max_length=4096)
    ingested_after: str | None = Field(None, max_length=40)
    ingested_before: str | None = Field(None, max_length=40)

    def to_filter(self) -> SearchFilter:
        return SearchFilter(acl=self.acl, file_paths=self.file_paths, file_types=self.file_types,
                            path_prefix=self.path_prefix, ingested_after=self.ingested_after,
                            ingested_before=self.ingested_before)


Mode = Literal["dense", "bm25", "hybrid", "rerank"]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(10, ge=1, le=MAX_K)
    mode: Mode | None = None
    filters: Filters | None = None
    collection: str | None = Field(None, max_length=100)


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(..., max_length=MAX_QUESTION_CHARS * 4)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The hard ceiling; the operator's `max_question_chars` (default 2000) is checked in the route.
    question: str = Field(..., min_length=1, max_length=100_000)
    mode: Mode | None = None
    filters: Filters | None = None
    history: list[Message] = Field(default_factory=list, max_length=20)
    stream: bool = False
    collection: str | None = Field(None, max_length=100)


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(..., min_length=1, max_length=100)
    acl: list[str] | None = Field(None, max_length=20)
    collection: str | None = Field(None, max_length=100)


# -- helpers ------------------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: refuse bodies over a limit while receiving (413), not after buffering them.

    Uploads (`POST /api/v1/files`) get their own, larger limit; everything else the JSON limit.
    """

    def __init__(self, app: Callable, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.upload_limit if path.startswith(f"{API}/files") or path.startswith("/ui") else self.json_limit
        field = "files" if path.startswith(f"{API}/files") else "body"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = JSONResponse(error_body("too_large", f"request body is over the limit of {limit // (1 << 20)} MB",
                                            field), status_code=413)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        received = 0
        started = False
        refused = False

        async def limited_receive() -> dict:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer 413 now: a parser up the stack may catch the exception and turn it into a 400.
                    if not started and not refused:
                        refused = True
                        await too_large(scope, receive, send)
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; whatever the app answers after it is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started and not refused:
                await too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


# -- the app ------------------------------------------------------------------------------------------
def create_app(state: ServerState, mount_ui: bool = True, mount_mcp: bool = True, ui_path: str = "/ui") -> FastAPI:
    """The whole HTTP surface over one ServerState."""
    mcp = build_mcp(state) if mount_mcp else None
    mcp_app = None
    if mcp is not None:
        # Stateless: every MCP request stands alone (no server-side session to pin to a replica).
        state.mcp = mcp
        mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", stateless_http=True, json_response=True,
                                          host=state.settings.ui_host)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if mcp is not None:
                await stack.enter_async_context(mcp.session_manager.run())
            yield

    app = FastAPI(title="rag", version="1", description="Question answering over your own documents: search, "
                  "answers with validated citations, ingest jobs; OpenAI-compatible chat at /v1; MCP at /mcp.",
                  lifespan=lifespan)
    app.state.rag = state
    install_error_handlers(app)
    settings = state.settings
    app.add_middleware(BodyLimit, json_limit=int(float(getattr(settings, "server_max_body_mb", 16.0)) * (1 << 20)),
                       upload_limit=int(float(getattr(settings, "server_max_upload_mb", settings.max_file_mb))
                                        * (1 << 20)))

    # ---------------------------------------------------------------- health (no auth, no data)
    @app.get(f"{API}/health", tags=["meta"])
    def health() -> dict[str, str]:
        """Liveness: answers without a key and reveals nothing about the index."""
        return {"status": "ok"}

    # ---------------------------------------------------------------- search / ask
    @app.post(f"{API}/search", tags=["query"], response_model=None)
    def search(body: SearchRequest, caller: Caller = Depends(caller_dep)) -> Response:
        """Retrieve passages (mode, k, filters); only chunks the caller's labels allow."""
        pipeline = state.pipeline(body.collection)
        flt = body.filters.to_filter() if body.filters else None
        result = pipeline.search(body.query, k=body.k, mode=body.mode, flt=flt, caller=caller)
        return json_response(result.to_dict())  # serialized here, in the worker thread (see json_response)

    @app.post(f"{API}/ask", tags=["query"], response_model=None)
    async def ask(body: AskRequest, request: Request, caller: Caller = Depends(caller_dep)) -> Any:
        """Answer with validated citations; `"stream": true` sends SSE `token` events then one `answer` event."""
        pipeline = state.pipeline(body.collection)
        limit = int(getattr(settings, "max_question_chars", MAX_QUESTION_CHARS))
        if len(body.question) > limit:
            raise ApiError(422, "invalid_request", f"question is {len(body.question)} characters long; the limit "
                           f"is {limit} (setting 'max_question_chars')", field="question")
        flt = body.filters.to_filter() if body.filters else None
        history = [m.model_dump() for m in body.history]
        if not body.stream:
            answer = await asyncio.to_thread(pipeline.ask, body.question, flt=flt, history=history,
                                             mode=body.mode, caller=caller)
            return json_response(answer_payload(answer))

        async def events() -> AsyncIterator[str]:
            async for kind, value in stream_answer(pipeline, body.question, caller, flt, history, body.mode,
                                                   request=request):
                if kind == "token":
                    yield sse("token", {"text": value})
                elif kind == "answer":
                    yield sse("answer", answer_payload(value))
                else:
                    yield sse("error", exception_to_error(value).body()["error"])

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---------------------------------------------------------------- ingest and jobs
    def _check_ingest_paths(paths: list[str]) -> list[str]:
        if not state.ingest_roots:
            raise ApiError(403, "forbidden", "this server has no ingest roots; start it with --ingest-root DIR "
                           "to allow server-side ingest (uploads work without)", field="paths")
        resolved = []
        for i, raw in enumerate(paths):
            try:
                check_path_text(raw)
                confine_to_roots([raw], state.ingest_roots)
            except AccessDenied as exc:
                raise ApiError(403, "forbidden", str(exc)[:300], field=f"paths.{i}") from None
            except Exception as exc:  # noqa: BLE001
                raise ApiError(422, "invalid_request", str(exc)[:300], field=f"paths.{i}") from None
            target = Path(raw).expanduser().resolve()
            if not target.exists():
                raise ApiError(422, "invalid_request", f"{raw}: no such file or folder on the server",
                               field=f"paths.{i}")
            resolved.append(str(target))
        return resolved

    def _check_labels(caller: Caller, acl: list[str] | None) -> list[str]:
        """The labels new chunks get: `acl`, else the server's default labels if the caller holds them all,
        else the caller's own labels (an editor of team "a" indexes for team "a" without saying so)."""
        if not acl:
            default = list(settings.default_acl)
            if caller.role is Role.ADMIN or all(label in caller.labels for label in default):
                return default
            return list(caller.labels)
        if caller.role is not Role.ADMIN:
            foreign = [a for a in acl if a not in caller.labels]
            if foreign:
                raise ApiError(403, "forbidden", f"cannot label files {foreign!r}: a caller may only give labels "
                               "it holds", field="acl")
        return list(acl)

    @app.post(f"{API}/ingest", tags=["ingest"], status_code=202)
    def ingest(body: IngestRequest, caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """Queue an ingest of server-side paths (confined to the --ingest-root folders); returns a job."""
        caller.require(Action.INGEST)
        state.pipeline(body.collection)
        labels = _check_labels(caller, body.acl)
        paths = _check_ingest_paths(body.paths)
        job = state.jobs.submit(body.collection or settings.collection, paths, caller, acl=labels)
        return {"job_id": job.id, "job": job.to_dict()}

    @app.post(f"{API}/files", tags=["ingest"], status_code=202)
    async def upload(files: list[UploadFile] = File(...), acl: list[str] | None = Query(None),
                     collection: str | None = Query(None, max_length=100),
                     caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """Upload files (multipart, size-limited while receiving) and queue their ingest; returns a job."""
        caller.require(Action.INGEST)
        state.pipeline(collection)
        labels = _check_labels(caller, acl)
        if not files:
            raise ApiError(422, "invalid_request", "no files in the upload", field="files")
        # Every upload gets its own folder: two people uploading report.pdf never replace each other's file.
        folder = state.upload_root / uuid.uuid4().hex[:16]
        folder.mkdir(parents=True, exist_ok=True)
        stored: list[str] = []
        display: dict[str, str] = {}
        for upload in files:
            name = safe_upload_name(upload.filename or "upload")
            target = folder / name
            n = 1
            while target.exists():
                stem, dot, ext = name.rpartition(".")
                target = folder / (f"{stem}-{n}.{ext}" if dot else f"{name}-{n}")
                n += 1
            with target.open("wb") as out:
                while chunk := await upload.read(1 << 20):
                    out.write(chunk)
            stored.append(str(target))
            display[str(target)] = upload.filename or name
        job = state.jobs.submit(collection or settings.collection, stored, caller, acl=labels, display_names=display)
        return {"job_id": job.id, "job": job.to_dict(), "files": list(display.values())}

    def _visible_job(job_id: str, caller: Caller):
        job = state.jobs.get(job_id)
        # Jobs of other callers are invisible unless you are an admin (their file names are data too).
        if job is None or (job.caller.get("name") != caller.name and not caller.can(Action.MANAGE_KEYS)):
            raise ApiError(404, "not_found", f"no job {job_id!r}", field="job_id")
        return job

    @app.get(f"{API}/jobs", tags=["ingest"])
    def list_jobs(limit: int = Query(50, ge=1, le=500), caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """Recent ingest jobs: yours (all of them for an admin)."""
        jobs = [j for j in state.jobs.list(limit=limit)
                if caller.can(Action.MANAGE_KEYS) or j.caller.get("name") == caller.name]
        return {"jobs": [j.to_dict() for j in jobs]}

    @app.get(f"{API}/jobs/{{job_id}}", tags=["ingest"])
    def get_job(job_id: str, caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """One job: state, per-file progress, errors, timings."""
        return _visible_job(job_id, caller).to_dict()

    @app.post(f"{API}/jobs/{{job_id}}/cancel", tags=["ingest"])
    def cancel_job(job_id: str, caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """Cancel a queued job, or stop a running one after its current file."""
        caller.require(Action.CANCEL_JOB)
        _visible_job(job_id, caller)
        return state.jobs.cancel(job_id).to_dict()

    # ---------------------------------------------------------------- files and stats
    @app.get(f"{API}/files", tags=["files"])
    def list_files(collection: str | None = Query(None, max_length=100),
                   caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """Indexed files the caller can see."""
        return {"files": state.pipeline(collection).list_files(caller=caller)}

    @app.delete(f"{API}/files", tags=["files"])
    def remove_file(path: str = Query(..., min_length=1, max_length=4096),
                    collection: str | None = Query(None, max_length=100),
                    caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """Remove one file's chunks (a file the caller cannot see is reported as not found)."""
        pipeline = state.pipeline(collection)
        caller.require(Action.REMOVE)
        try:
            removed = pipeline.remove_file(path, caller=caller)
        except AccessDenied:
            raise
        except Exception as exc:  # noqa: BLE001
            err = exception_to_error(exc)
            if err.status == 400 and "not in collection" in err.message:
                raise ApiError(404, "not_found", err.message, field="path") from None
            raise
        stored = Path(path).expanduser().resolve()
        if state.upload_root in stored.parents and stored.is_file():
            # An uploaded copy exists only to be indexed: removing it from the index removes the copy.
            stored.unlink()
            with contextlib.suppress(OSError):
                stored.parent.rmdir()
        return {"file": path, "chunks_removed": removed}

    @app.get(f"{API}/stats", tags=["files"])
    def stats(collection: str | None = Query(None, max_length=100),
              caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """Collection statistics over what the caller can see."""
        return state.pipeline(collection).stats(caller=caller)

    @app.get(f"{API}/passages/{{chunk_id}}", tags=["files"])
    def passage(chunk_id: str, collection: str | None = Query(None, max_length=100),
                caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
        """One passage by chunk id with its provenance (404 when missing or not visible)."""
        chunk = state.pipeline(collection).get_chunk(chunk_id, caller=caller)
        if chunk is None:
            raise ApiError(404, "not_found", f"no passage {chunk_id!r}", field="chunk_id")
        return passage_dict(chunk)

    # ---------------------------------------------------------------- source viewer (ui.viewer)
    # Page images, document text, downloads and the viewer page, keyed by chunk id, as the API caller.
    # (The UI serves the same routes inside its own app at <ui>/sources/, as the UI session's caller.)
    app.include_router(viewer_router(lambda request, collection: (state.pipeline(collection), request_caller(request)),
                                     prefix=f"{API}/sources"))

    # ---------------------------------------------------------------- OpenAI-compatible, MCP, UI
    app.include_router(openai_router)
    if mcp_app is not None:
        for route in mcp_app.routes:  # mount the MCP route itself: /mcp, no redirect to /mcp/
            app.router.routes.append(route)
        app.add_middleware(McpAuthMiddleware, state=state)
    if mount_ui:
        mount_gradio(app, state, ui_path)
    return app


def passage_dict(chunk) -> dict[str, Any]:
    """A chunk with its provenance, as the API and MCP return it."""
    return {"chunk_id": chunk.id, "text": chunk.text, "file": chunk.file_path, "file_name": chunk.file_name,
            "file_type": chunk.file_type, "page": chunk.page, "pages": list(chunk.page_numbers),
            "section": chunk.section, "char_start": chunk.char_start, "char_end": chunk.char_end,
            "chunk_index": chunk.chunk_index, "chunk_count": chunk.chunk_count, "acl": list(chunk.acl),
            "ingested_at": chunk.ingested_at, "boxes": [list(b) for b in chunk.boxes]}
