"""MCP server (official `mcp` SDK, `MCPServer`): tools search, ask, list_files, get_passage.

Served over streamable HTTP at /mcp by `rag serve`, and over stdio by `rag mcp` for desktop clients.
Tool inputs and outputs are typed (pydantic), so clients get input and output JSON schemas.

Identity: over HTTP, `McpAuthMiddleware` resolves the caller from the request's API key exactly as
the REST API does (401 before the MCP layer sees the request) and hands it to the tools through a
per-request reference header it sets itself (client-supplied values of that header are dropped), so
the tools never re-parse keys. Over stdio the caller is the operator who started the process; when a
server owns the store, `rag mcp` answers through its API instead (rag.server.client.RemoteState), so
the server applies the labels of the key in RAG_API_KEY.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any, Callable

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from rag.access import Caller
from rag.server.errors import ApiError, exception_to_error

CALLER_REF_HEADER = "x-rag-caller-ref"


class PassageOut(BaseModel):
    """One passage with its provenance."""

    chunk_id: str
    text: str
    file: str
    file_name: str
    page: int | None = None
    section: str = ""
    char_start: int = 0
    char_end: int = 0
    score: float | None = None


class SearchOut(BaseModel):
    query: str
    mode: str
    results: list[PassageOut]


class CitationOut(BaseModel):
    number: int
    chunk_id: str
    file: str
    page: int | None = None
    quote: str


class AskOut(BaseModel):
    answer: str
    abstained: bool
    citations: list[CitationOut]
    evidence: list[PassageOut]


class FileOut(BaseModel):
    file_path: str
    file_type: str
    chunks: int
    acl: list[str]


class FilesOut(BaseModel):
    files: list[FileOut]


class PassageLookupOut(BaseModel):
    found: bool
    passage: PassageOut | None = None
    chunk_index: int | None = None
    chunk_count: int | None = None
    pages: list[int] = Field(default_factory=list)
    acl: list[str] = Field(default_factory=list)


def _passage(hit_or_chunk: Any, score: float | None = None) -> PassageOut:
    chunk = getattr(hit_or_chunk, "chunk", hit_or_chunk)
    return PassageOut(chunk_id=chunk.id, text=chunk.text, file=chunk.file_path, file_name=chunk.file_name,
                      page=chunk.page, section=chunk.section, char_start=chunk.char_start, char_end=chunk.char_end,
                      score=score if score is not None else getattr(hit_or_chunk, "score", None))


class CallerRegistry:
    """Short-lived map from an unguessable per-request reference to the Caller resolved for that request."""

    def __init__(self) -> None:
        self._callers: dict[str, Caller] = {}
        self._lock = threading.Lock()

    def put(self, caller: Caller) -> str:
        ref = secrets.token_urlsafe(24)
        with self._lock:
            self._callers[ref] = caller
        return ref

    def get(self, ref: str | None) -> Caller | None:
        if not ref:
            return None
        with self._lock:
            return self._callers.get(ref)

    def drop(self, ref: str) -> None:
        with self._lock:
            self._callers.pop(ref, None)


def build_mcp(state: Any, stdio_caller: Caller | None = None):
    """The MCPServer over a ServerState. `stdio_caller`: the identity used when there is no HTTP request."""
    mcp = MCPServer("rag", instructions="Search and answer questions over the user's indexed documents. "
                    "Answers cite passages as [n]; get_passage returns a cited passage with its provenance.")
    registry = CallerRegistry()
    mcp.rag_callers = registry  # type: ignore[attr-defined]  (the HTTP middleware registers callers here)

    def caller_of(ctx: Context) -> Caller:
        headers = None
        try:
            headers = ctx.headers
        except Exception:  # noqa: BLE001  (no request context: stdio)
            headers = None
        if headers is None:
            try:
                transport = getattr(ctx.request_context, "transport", None)
                headers = getattr(transport, "headers", None)
            except Exception:  # noqa: BLE001
                headers = None
        if headers is not None:
            caller = registry.get(headers.get(CALLER_REF_HEADER))
            if caller is None:
                raise ToolError("unauthenticated: send an API key (Authorization: Bearer KEY)")
            return caller
        if stdio_caller is None:
            raise ToolError("unauthenticated: no caller for this MCP request")
        return stdio_caller

    def run(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001  (tools report the same messages as the REST API)
            err = exception_to_error(exc)
            # ToolError: a deliberate refusal the client sees verbatim (any other exception is a "crash"
            # whose text the SDK keeps on the server).
            raise ToolError(f"{err.code}: {err.message}" + (f" (field {err.field})" if err.field else "")) from None

    def pipeline(collection: str | None):
        return run(lambda: state.pipeline(collection))

    async def as_caller(ctx: Context, collection: str | None, call: Callable[[Any, Caller], Any]) -> Any:
        """Run `call(pipeline, caller)` for this request's caller in a worker thread, errors as ToolErrors."""
        caller = caller_of(ctx)
        p = pipeline(collection)
        return await anyio.to_thread.run_sync(lambda: run(lambda: call(p, caller)))

    @mcp.tool(description="Search the indexed documents; returns passages with file, page and score.")
    async def search(ctx: Context, query: str = Field(..., min_length=1, max_length=2000, description="what to look for"),
                     k: int = Field(10, ge=1, le=100, description="number of passages"),
                     mode: str | None = Field(None, description="dense | bm25 | hybrid | rerank"),
                     collection: str | None = Field(None, description="collection (default: the server's)")) -> SearchOut:
        result = await as_caller(ctx, collection, lambda p, caller: p.search(query, k=k, mode=mode, caller=caller))
        return SearchOut(query=query, mode=str(result.mode), results=[_passage(h) for h in result.hits])

    @mcp.tool(description="Answer a question from the documents with validated [n] citations, or abstain.")
    async def ask(ctx: Context, question: str = Field(..., min_length=1, max_length=2000),
                  collection: str | None = Field(None, description="collection (default: the server's)")) -> AskOut:
        answer = await as_caller(ctx, collection, lambda p, caller: p.ask(question, caller=caller))
        return AskOut(answer=answer.text, abstained=answer.abstained,
                      citations=[CitationOut(number=c.number, chunk_id=c.chunk_id, file=c.file, page=c.page,
                                             quote=c.quote) for c in answer.citations],
                      evidence=[_passage(e.hit) for e in answer.evidence])

    @mcp.tool(description="List the indexed files you can see, with chunk counts and labels.")
    async def list_files(ctx: Context, collection: str | None = Field(None, description="collection (default: the server's)")) -> FilesOut:
        files = await as_caller(ctx, collection, lambda p, caller: p.list_files(caller=caller))
        return FilesOut(files=[FileOut(file_path=f["file_path"], file_type=f.get("file_type", ""),
                                       chunks=f["chunks"], acl=list(f["acl"])) for f in files])

    @mcp.tool(description="Get one passage by its chunk id (from search or ask citations), with provenance.")
    async def get_passage(ctx: Context, chunk_id: str = Field(..., min_length=1, max_length=100),
                          collection: str | None = Field(None, description="collection (default: the server's)")) -> PassageLookupOut:
        chunk = await as_caller(ctx, collection, lambda p, caller: p.get_chunk(chunk_id, caller=caller))
        if chunk is None:
            return PassageLookupOut(found=False)
        return PassageLookupOut(found=True, passage=_passage(chunk, None), chunk_index=chunk.chunk_index,
                                chunk_count=chunk.chunk_count, pages=list(chunk.page_numbers), acl=list(chunk.acl))

    return mcp


class McpAuthMiddleware:
    """ASGI middleware for /mcp: authenticate like the REST API, then tag the request with a caller reference."""

    def __init__(self, app: Callable, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not (scope.get("path", "") == "/mcp" or scope.get("path", "").startswith("/mcp/")):
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import Headers
        from starlette.responses import JSONResponse

        headers = Headers(scope=scope)
        client = scope.get("client")
        try:
            caller = self.state.auth.resolve_caller(headers, client[0] if client else None)
        except ApiError as err:
            await JSONResponse(err.body(), status_code=err.status, headers=err.headers)(scope, receive, send)
            return
        registry: CallerRegistry = self.state.mcp.rag_callers
        ref = registry.put(caller)
        raw = [(k, v) for k, v in scope.get("headers", []) if k.lower() != CALLER_REF_HEADER.encode()]
        raw.append((CALLER_REF_HEADER.encode(), ref.encode()))
        try:
            await self.app({**scope, "headers": raw}, receive, send)
        finally:
            registry.drop(ref)


def stdio_main(state: Any, caller: Caller) -> None:
    """Serve MCP over stdio until the client closes the pipe (`rag mcp`)."""
    mcp = build_mcp(state, stdio_caller=caller)
    mcp.run("stdio")

