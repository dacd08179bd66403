"""Helpers shared by the REST routes and the OpenAI-compatible routes (no route definitions here)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any, AsyncIterator

from fastapi import Request
from fastapi.responses import Response

from rag.access import Caller
from rag.models import Answer, SearchFilter
from rag.pipeline import Pipeline
from rag.server.state import ServerState

try:  # Gradio depends on orjson, so it is here whenever the UI is; ~100x faster than json + jsonable_encoder
    import orjson
except ImportError:  # pragma: no cover - the API works without it, just slower
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("rag.server")

# How often a stream with nothing to send checks whether its client is still there.
DISCONNECT_POLL_S = 0.5


def get_state(request: Request) -> ServerState:
    return request.app.state.rag


def request_caller(request: Request) -> Caller:
    """The request's Caller (API key, or the loopback operator); ApiError 401/429 otherwise."""
    state = get_state(request)
    client = request.client.host if request.client else None
    return state.auth.resolve_caller(request.headers, client)


async def caller_dep(request: Request) -> Caller:
    """`request_caller` as a FastAPI dependency.

    Async on purpose: a sync dependency costs a thread-pool round trip per request, and the lookup is
    one indexed SQLite read on a kept-open connection in WAL mode (tens of microseconds, never blocked
    by a writer), cheaper to run on the event loop than to hand off.
    """
    return request_caller(request)


def _default(value: Any) -> Any:
    """What JSON cannot say directly: sets as lists, pydantic models as dicts, the rest as text."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def dumps(data: Any) -> bytes:
    """JSON bytes of a route's payload (NaN becomes null; see `_default` for other types)."""
    if orjson is not None:
        return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(data, ensure_ascii=False, default=_default).encode("utf-8")


def json_response(data: Any, status_code: int = 200) -> Response:
    """A JSON response serialized once, directly.

    Returning a dict from a route makes FastAPI validate it against the return annotation (in a worker
    thread for sync routes) and walk it with `jsonable_encoder` before `json.dumps`: ~2-3 ms for a
    10-hit search result on this machine, most of the API's overhead over an in-process call.
    """
    return Response(dumps(data), status_code=status_code, media_type="application/json")


def answer_payload(answer: Answer) -> dict[str, Any]:
    return answer.to_dict()


class StreamCancelled(BaseException):
    """Raised inside the answering thread, from the token callback, once nobody reads the stream.

    A BaseException (like GeneratorExit): no `except Exception` on the way may swallow it and carry
    on generating. Unwinding through the LLM client's stream iterator closes its HTTP response, so
    the LLM endpoint stops generating too.
    """


async def stream_answer(pipeline: Pipeline, question: str, caller: Caller, flt: SearchFilter | None = None,
                        history: list[dict] | None = None, mode: str | None = None,
                        request: Request | None = None) -> AsyncIterator[tuple[str, Any]]:
    """Run `pipeline.ask` in a thread and yield ("token", str)... then ("answer", Answer) or ("error", exc).

    The answer is computed in a worker thread (the models release the GIL); tokens cross to the event
    loop through a queue. When the client goes away the answer stops: the response closes this
    generator (or, with `request`, a quiet stream notices the disconnect itself), and the next token
    the worker produces raises StreamCancelled in the worker, which closes the LLM stream.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(kind: str, value: Any) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def on_token(text: str) -> None:
        if stop.is_set():
            raise StreamCancelled()
        put("token", text)

    def work() -> None:
        try:
            answer = pipeline.ask(question, flt=flt, on_token=on_token, history=history, mode=mode, caller=caller)
            put("answer", answer)
        except StreamCancelled:  # unwinding closed the LLM stream (rag.answering.llm iterates it in `with`)
            log.info("streamed answer stopped: the client went away")
        except BaseException as exc:  # noqa: BLE001  (reported to the client as an error event)
            put("error", exc)

    threading.Thread(target=work, name="rag-ask-stream", daemon=True).start()
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), timeout=DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                # Nothing to send (retrieval, a slow LLM): a server that does not cancel the response
                # on disconnect (ASGI spec >= 2.4) would otherwise only notice at the next write.
                if request is not None and await request.is_disconnected():
                    return
                continue
            yield kind, value
            if kind in ("answer", "error"):
                return
    finally:
        # Any way out (done, client disconnected, response cancelled or closed): the worker stops
        # at its next token instead of generating an answer nobody reads.
        stop.set()


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {dumps(data).decode('utf-8')}\n\n"
