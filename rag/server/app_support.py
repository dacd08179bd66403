"""Helpers shared by the REST routes and the OpenAI-compatible routes (no route definitions here)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, AsyncIterator

from fastapi import Request

from rag.access import Caller
from rag.models import Answer, SearchFilter
from rag.pipeline import Pipeline
from rag.server.state import ServerState


def get_state(request: Request) -> ServerState:
    return request.app.state.rag


def caller_dep(request: Request) -> Caller:
    """The request's Caller (API key, or the loopback operator); 401/429 otherwise."""
    state = get_state(request)
    client = request.client.host if request.client else None
    return state.auth.resolve_caller(request.headers, client)


def answer_payload(answer: Answer) -> dict[str, Any]:
    return answer.to_dict()


async def stream_answer(pipeline: Pipeline, question: str, caller: Caller, flt: SearchFilter | None = None,
                        history: list[dict] | None = None, mode: str | None = None
                        ) -> AsyncIterator[tuple[str, Any]]:
    """Run `pipeline.ask` in a thread and yield ("token", str)... then ("answer", Answer) or ("error", exc).

    The answer is computed in a worker thread (the models release the GIL), tokens cross to the event
    loop through a queue; a client that disconnects just stops reading.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def work() -> None:
        try:
            answer = pipeline.ask(question, flt=flt, on_token=lambda t: put("token", t), history=history,
                                  mode=mode, caller=caller)
            put("answer", answer)
        except BaseException as exc:  # noqa: BLE001  (reported to the client as an error event)
            put("error", exc)

    threading.Thread(target=work, name="rag-ask-stream", daemon=True).start()
    while True:
        kind, value = await queue.get()
        yield kind, value
        if kind in ("answer", "error"):
            return


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"
