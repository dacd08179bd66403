"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, replaying scripted behaviours.

Usage (pytest; tests/conftest.py registers this module, so the `fake_llm` fixture needs no import):

    from tests.fake_llm_server import Reply, Status

    def test_x(fake_llm):
        fake_llm.script(Status(500), Reply("Paris is the capital [1]."))
        settings = Settings(llm_base_url=fake_llm.base_url, llm_model="fake", ...)
        ...
        assert len(fake_llm.requests) == 2
        assert fake_llm.requests[-1]["messages"][0]["role"] == "system"

Endpoints: POST /v1/chat/completions (streaming SSE when the body has "stream": true, JSON otherwise),
GET /v1/models. Each chat request pops the next behaviour from the queue; when the queue is empty,
`fake_llm.responder(body) -> str` (if set) makes a reply, else `fake_llm.default` is used (a 500 with
"no scripted response" unless you set it). Behaviours:

- `Reply(text, chunk_chars=None, token_delay_s=0)` : a completion; streamed word by word (or in
                                     chunks of chunk_chars), optionally pausing between chunks
- `Status(code, message, headers)` : an HTTP error with an OpenAI-style error body (429, 500, 400 ...)
- `Delay(seconds, then)`           : wait (longer than the client timeout to test timeouts), then `then`
- `Malformed(after_tokens)`        : a stream that sends `after_tokens` good chunks, then invalid JSON
- `Cut(after_tokens)`              : a stream that stops after `after_tokens` chunks, no finish, no [DONE]
- `Drop()`                         : close the connection without any response

`requests` holds every chat request body (parsed JSON) in arrival order; `streams` holds a `StreamLog`
per streamed reply (chunks written, whether the client closed the connection before the end).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest


@dataclass
class Reply:
    text: str
    chunk_chars: int | None = None  # None: one chunk per word (with its leading space)
    token_delay_s: float = 0.0  # pause between stream chunks (visible streaming in UI tests)


@dataclass
class Status:
    code: int
    message: str = "scripted error"
    headers: dict[str, str] | None = None


@dataclass
class Delay:
    seconds: float
    then: object = None  # the behaviour after the delay (default: Reply("late"))


@dataclass
class Malformed:
    after_tokens: int = 1


@dataclass
class Cut:
    after_tokens: int = 1


@dataclass
class Drop:
    pass


Behaviour = Reply | Status | Delay | Malformed | Cut | Drop


@dataclass
class StreamLog:
    """What happened to one streamed reply, as the server saw it."""

    chunks_total: int  # SSE chunks the reply would have written (role chunk, tokens, finish)
    chunks_written: int = 0
    client_closed: bool = False  # a write failed: the client closed the connection before the end
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


def split_tokens(text: str, chunk_chars: int | None = None) -> list[str]:
    """How a Reply is cut into stream chunks: words with their leading whitespace, or fixed-size chunks."""
    if chunk_chars:
        return [text[i:i + chunk_chars] for i in range(0, len(text), chunk_chars)] or [""]
    return re.findall(r"\s*\S+", text) or [""]


class FakeLLMServer:
    """The server. `start()` binds a free port on 127.0.0.1 and serves from a daemon thread."""

    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.requests: list[dict] = []
        self.streams: list[StreamLog] = []
        self.default: Behaviour = Status(500, "fake LLM server: no scripted response left")
        self.responder: Callable[[dict], str] | None = None
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control -----------------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> "FakeLLMServer":
        """Append behaviours to the queue (consumed one per chat request)."""
        with self._lock:
            self._queue.extend(behaviours)
        return self

    def reset(self) -> None:
        """Forget queued behaviours, recorded requests and the responder."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.streams.clear()
            self.responder = None

    @property
    def pending(self) -> int:
        """Behaviours not consumed yet."""
        return len(self._queue)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ends in /v1) to put in `Settings.llm_base_url`."""
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeLLMServer":
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _next(self, body: dict) -> Behaviour:
        with self._lock:
            self.requests.append(body)
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            return Reply(self.responder(body))
        return self.default


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: simple and realistic

    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model", "owned_by": "test"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
            return
        behaviour = self.fake._next(body)
        try:
            self._perform(behaviour, body)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the client gave up (timeout test); nothing to do

    def _perform(self, behaviour: Behaviour, body: dict) -> None:
        stream = bool(body.get("stream"))
        if isinstance(behaviour, Delay):
            self.fake._stopping.wait(behaviour.seconds)
            self._perform(behaviour.then or Reply("late"), body)
        elif isinstance(behaviour, Status):
            kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                    429: "rate_limit_error"}.get(behaviour.code, "server_error")
            self._json(behaviour.code, {"error": {"message": behaviour.message, "type": kind, "code": None}},
                       behaviour.headers)
        elif isinstance(behaviour, Drop):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif isinstance(behaviour, Reply):
            if stream:
                self._stream(split_tokens(behaviour.text, behaviour.chunk_chars), body, finish=True,
                             delay=behaviour.token_delay_s)
            else:
                self._json(200, self._completion(behaviour.text, body))
        elif isinstance(behaviour, (Malformed, Cut)):
            tokens = split_tokens("partial answer text that never finishes")[: behaviour.after_tokens]
            self._stream(tokens, body, finish=False, garbage=isinstance(behaviour, Malformed))
        else:  # pragma: no cover - a test scripted something unknown
            self._json(500, {"error": {"message": f"unknown behaviour {behaviour!r}"}})

    # --- responses ---------------------------------------------------------------------------
    def _json(self, code: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _completion(self, text: str, body: dict) -> dict:
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.fake.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def _chunks(self, tokens: list[str], body: dict, finish: bool) -> Iterator[dict]:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", self.fake.model)}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        for tok in tokens:
            yield {**base, "choices": [{"index": 0, "delta": {"content": tok}, "finish_reason": None}]}
        if finish:
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

    def _stream(self, tokens: list[str], body: dict, finish: bool, garbage: bool = False, delay: float = 0.0) -> None:
        chunks = list(self._chunks(tokens, body, finish))
        log = StreamLog(chunks_total=len(chunks))
        with self.fake._lock:
            self.fake.streams.append(log)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for i, chunk in enumerate(chunks):
                if delay and i >= 2:  # after the role chunk and the first token
                    self.fake._stopping.wait(delay)
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                log.chunks_written += 1
        except (BrokenPipeError, ConnectionResetError):
            log.client_closed = True
            raise
        finally:
            log.ended = time.monotonic()
            log.done.set()
        if garbage:
            self.wfile.write(b'data: {"choices": [{"delta": {"content": "oops"\n\n')
            self.wfile.flush()
            return
        if finish:
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()


@pytest.fixture()
def fake_llm() -> Iterator[FakeLLMServer]:
    """A started FakeLLMServer, stopped after the test."""
    server = FakeLLMServer().start()
    try:
        yield server
    finally:
        server.stop()


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
