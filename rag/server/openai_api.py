"""OpenAI-compatible chat: `GET /v1/models` (collections as models), `POST /v1/chat/completions`.

The last user message is the question and earlier messages are the history; the answer goes through
the same evidence gate, citation validation and abstention as everywhere else. The content carries
`[n]` markers and a "Sources:" list a person can read; the structured citations travel in an extra
`citations` field (on the response, and on the final chunk of a stream) that OpenAI clients ignore
and programs can read (`response.model_extra["citations"]` with the official client).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rag.access import Caller
from rag.models import Answer
from rag.server.app_support import caller_dep, dumps, get_state, json_response, stream_answer
from rag.server.errors import ApiError, exception_to_error

router = APIRouter(tags=["openai"])

MAX_MESSAGES = 50
MAX_MESSAGE_CHARS = 8000


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = Field(None, max_length=100_000)


class ChatRequest(BaseModel):
    """The subset of the OpenAI request we use; other fields (temperature, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(..., min_length=1, max_length=100)
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False


def _text(content: str | list[dict[str, Any]] | None) -> str:
    """Message content as text (the array form's text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def sources_block(answer: Answer) -> str:
    """The human-readable sources list appended to the content."""
    if not answer.citations:
        return ""
    lines = ["", "", "Sources:"]
    for c in answer.citations:
        page = f", page {c.page}" if c.page else ""
        name = c.file.rsplit("/", 1)[-1]
        lines.append(f"[{c.number}] {name}{page}")
    return "\n".join(lines)


def citations_field(answer: Answer) -> list[dict[str, Any]]:
    return [c.to_dict() for c in answer.citations]


def _split_request(body: ChatRequest, limit: int) -> tuple[str, list[dict[str, str]]]:
    """(last user message, earlier user/assistant turns as history); 422 naming `messages` when unusable."""
    last_user = None
    for i in range(len(body.messages) - 1, -1, -1):
        if body.messages[i].role == "user":
            last_user = i
            break
    if last_user is None:
        raise ApiError(422, "invalid_request", "messages: no user message to answer", field="messages")
    question = _text(body.messages[last_user].content).strip()
    if not question:
        raise ApiError(422, "invalid_request", "messages: the last user message is empty",
                       field=f"messages.{last_user}.content")
    if len(question) > limit:
        raise ApiError(422, "invalid_request", f"messages.{last_user}.content: question is {len(question)} "
                       f"characters long; the limit is {limit}", field=f"messages.{last_user}.content")
    history = []
    for m in body.messages[:last_user]:
        if m.role in ("user", "assistant"):
            text = _text(m.content)[:MAX_MESSAGE_CHARS]
            if m.role == "assistant":
                text = text.split("\n\nSources:\n", 1)[0]  # our own sources list is not conversation
            history.append({"role": m.role, "content": text})
    return question, history[-20:]


@router.get("/v1/models")
def list_models(request: Request, caller: Caller = Depends(caller_dep)) -> dict[str, Any]:
    """Every served collection, as an OpenAI model."""
    state = get_state(request)
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rag"}
                                       for name in sorted(state.pipelines)]}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request, caller: Caller = Depends(caller_dep)) -> Any:
    """Answer the last user message from the collection named by `model`."""
    state = get_state(request)
    if body.model not in state.pipelines:
        raise ApiError(404, "model_not_found", f"model {body.model!r} is not a collection served here; "
                       f"known: {', '.join(sorted(state.pipelines))}", field="model")
    pipeline = state.pipelines[body.model]
    question, history = _split_request(body, int(getattr(state.settings, "max_question_chars", 2000)))
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    if not body.stream:
        answer = await asyncio.to_thread(pipeline.ask, question, history=history, caller=caller)
        content = answer.text + sources_block(answer)
        return json_response({
            "id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "citations": citations_field(answer), "abstained": answer.abstained,
        })

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {dumps(payload).decode('utf-8')}\n\n"

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        streamed: list[str] = []
        async for kind, value in stream_answer(pipeline, question, caller, history=history, request=request):
            if kind == "token":
                streamed.append(value)
                yield chunk({"content": value})
            elif kind == "answer":
                answer: Answer = value
                tail = ""
                if not streamed:
                    tail = answer.text
                elif "".join(streamed).strip() != answer.text.strip():
                    # Validation changed the streamed draft (e.g. dropped an uncited sentence): the
                    # validated text follows, so a reader never keeps an unsupported claim as final.
                    tail = "\n\n--- validated answer ---\n" + answer.text
                tail += sources_block(answer)
                if tail:
                    yield chunk({"content": tail})
                yield chunk({}, "stop", citations=citations_field(answer), abstained=answer.abstained)
            else:
                err = exception_to_error(value)
                yield f"data: {json.dumps({'error': {'message': err.message, 'type': err.code, 'code': err.code}})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
