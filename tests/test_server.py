"""`rag serve` end to end: a real server on 127.0.0.1 (uvicorn in a thread) over a real embedded store.

One module-scoped server holds a small folder with a `public` file and a `secret` file; every endpoint
and MCP tool is called by real clients (httpx, the official `openai` client, the `mcp` client SDK,
`gradio_client`, the `rag` CLI in a subprocess) with keys of different labels and roles.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.ui_app_fixture import free_port, ui_settings

PUBLIC_FILE = "book-war-and-peace-1p.txt"  # Anna Pavlovna, Genoa and Lucca
SECRET_FILE = "family-day.eml"  # face painting, a petting zoo, funnel cake
SECRET_QUERY = "petting zoo funnel cake face painting family day"
PUBLIC_QUERY = "Genoa and Lucca family estates of the Buonapartes"


@dataclass
class Srv:
    url: str
    root: Path
    docs: Path
    settings: object
    state: object
    keys: dict[str, str]
    secret_path: str
    public_path: str

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, trust_env=False)


@pytest.fixture(scope="module")
def srv(evaldata, minilm_path, tmp_path_factory):
    from rag.pipeline import Pipeline
    from rag.server.app import create_app
    from rag.server.run import forget_server, record_server
    from rag.server.state import ServerState

    root = tmp_path_factory.mktemp("serve")
    docs = root / "docs"
    (docs / "public").mkdir(parents=True)
    (docs / "secret").mkdir()
    shutil.copy(evaldata / "docs-mixed" / "files" / PUBLIC_FILE, docs / "public" / PUBLIC_FILE)
    shutil.copy(evaldata / "docs-mixed" / "files" / SECRET_FILE, docs / "secret" / SECRET_FILE)
    settings = ui_settings(root, minilm_path, collection="srv", server_rate_limit=0.0, server_max_upload_mb=2.0)
    pipeline = Pipeline(settings)
    assert pipeline.ingest([str(docs / "public")], acl=["public"], progress=False).failed == 0
    assert pipeline.ingest([str(docs / "secret")], acl=["secret"], progress=False).failed == 0

    state = ServerState.create(settings, ingest_roots=[str(docs)], pipeline=pipeline)
    keys = {
        "reader": state.keys.create("reader", ["public"], "reader"),
        "editor": state.keys.create("editor", ["public"], "editor"),
        "admin": state.keys.create("admin", ["public", "secret"], "admin"),
        "revoked": state.keys.create("revoked", ["public", "secret"], "admin"),
    }
    state.keys.revoke("revoked")
    url, stop = _run_uvicorn(create_app(state))
    record_server(settings, url, ["srv"])
    yield Srv(url=url, root=root, docs=docs, settings=settings, state=state, keys=keys,
              secret_path=str((docs / "secret" / SECRET_FILE).resolve()),
              public_path=str((docs / "public" / PUBLIC_FILE).resolve()))
    forget_server(settings)
    stop()
    state.close()


def _run_uvicorn(app) -> tuple[str, object]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port from a thread; returns (url, stop)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(30)

    return f"http://127.0.0.1:{server.config.port}", stop


def _side_state(srv: Srv, **changes):
    """A second ServerState over the module server's store and embedder (nothing re-indexed, no writer):
    other settings (an LLM endpoint, an empty key store) on the same data."""
    from rag.pipeline import Pipeline
    from rag.server.state import ServerState

    settings = srv.settings.replace(**changes)
    primary = srv.state.pipelines["srv"]
    pipeline = Pipeline(settings, store=primary.store, embedder=primary.embedder)
    return ServerState.create(settings, pipeline=pipeline, start_writer=False)


def _files(client: httpx.Client) -> list[str]:
    response = client.get("/api/v1/files")
    assert response.status_code == 200, response.text
    return [f["file_path"] for f in response.json()["files"]]


def _points(srv: Srv) -> int:
    with srv.client("admin") as c:
        return c.get("/api/v1/stats").json()["points"]


# ------------------------------------------------------------------------------------------ auth
def test_health_needs_no_key_and_reveals_nothing(srv):
    with srv.client(None) as c:
        response = c.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("who", [None, "revoked", "garbage"])
def test_missing_invalid_or_revoked_key_is_refused_everywhere(srv, who):
    headers = {"Authorization": "Bearer rag_deadbeef_nope"} if who == "garbage" else {}
    client = srv.client(who if who != "garbage" else None)
    with client as c:
        c.headers.update(headers)
        for method, path, body in [("POST", "/api/v1/search", {"query": "Genoa"}), ("GET", "/api/v1/files", None),
                                   ("GET", "/api/v1/stats", None), ("GET", "/v1/models", None),
                                   ("GET", "/api/v1/jobs", None), ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1,
                                                                                   "method": "tools/list"})]:
            response = c.request(method, path, json=body)
            assert response.status_code == 401, (path, response.text)
            error = response.json()["error"]
            assert error["field"] == "authorization" and error["code"] in ("missing_api_key", "invalid_api_key")
            for key in srv.keys.values():  # keys never echoed
                assert key not in response.text


def test_x_api_key_header_works(srv):
    with httpx.Client(base_url=srv.url, headers={"X-API-Key": srv.keys["reader"]}, trust_env=False) as c:
        assert c.get("/api/v1/stats").status_code == 200


def test_non_loopback_requests_without_keys_are_refused(tmp_path):
    from rag.server.auth import Authenticator
    from rag.server.errors import ApiError
    from rag.server.keys import KeyStore

    auth = Authenticator(KeyStore(tmp_path / "k.sqlite"), ["public"])
    assert auth.resolve_caller({}, "127.0.0.1").name == "local"  # loopback operator, no keys configured
    with pytest.raises(ApiError) as excinfo:
        auth.resolve_caller({}, "192.168.1.20")
    assert excinfo.value.status == 401 and "rag keys create" in excinfo.value.message


def test_serve_refuses_public_bind_without_keys(tmp_path):
    env = {**os.environ, "RAG_STATE_DIR": str(tmp_path / "state"), "RAG_QDRANT_PATH": str(tmp_path / "q")}
    result = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "rag keys create" in result.stderr and "--insecure" in result.stderr


def test_rate_limit_per_key():
    from rag.server.auth import RateLimiter
    from rag.server.errors import ApiError

    limiter = RateLimiter(rate_per_s=1.0, burst=3)
    for _ in range(3):
        limiter.check("k1")
    with pytest.raises(ApiError) as excinfo:
        limiter.check("k1")
    assert excinfo.value.status == 429 and "Retry-After" in excinfo.value.headers
    limiter.check("k2")  # buckets are per key


# ---------------------------------------------------------------------------------- search / ask
def test_search_applies_the_callers_labels(srv):
    with srv.client("reader") as c:
        response = c.post("/api/v1/search", json={"query": SECRET_QUERY, "k": 20, "mode": "hybrid"})
        assert response.status_code == 200, response.text
        files = {r["file"] for r in response.json()["results"]}
        assert srv.secret_path not in files and srv.public_path in files
        # Naming a label you do not hold widens nothing.
        response = c.post("/api/v1/search", json={"query": SECRET_QUERY, "filters": {"acl": ["secret"]}})
        assert response.json()["results"] == []
    with srv.client("admin") as c:
        results = c.post("/api/v1/search", json={"query": SECRET_QUERY, "k": 3}).json()["results"]
        assert results[0]["file"] == srv.secret_path


def test_ask_json_and_stream(srv):
    with srv.client("reader") as c:
        answer = c.post("/api/v1/ask", json={"question": "Who said Genoa and Lucca are family estates?"}).json()
        assert not answer["abstained"] and answer["citations"]
        assert all(cit["file"] == srv.public_path for cit in answer["citations"])
        secret = c.post("/api/v1/ask", json={"question": "Is there a petting zoo at the family day?"}).json()
        assert srv.secret_path not in json.dumps(secret) and "funnel" not in json.dumps(secret).lower()

        events: list[tuple[str, dict]] = []
        with c.stream("POST", "/api/v1/ask", json={"question": "Who said Genoa and Lucca are family estates?",
                                                   "stream": True}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((event, json.loads(line[5:])))
        # Streamed or not, a public key never gets the secret file.
        with c.stream("POST", "/api/v1/ask", json={"question": "Is there a petting zoo at the family day?",
                                                   "stream": True}) as response:
            body = "".join(response.iter_text())
        assert srv.secret_path not in body and "funnel" not in body.lower()
    kinds = [k for k, _ in events]
    assert kinds[-1] == "answer" and kinds.count("answer") == 1
    assert "token" in kinds
    final = events[-1][1]
    assert final["citations"] and final["evidence"]


# ------------------------------------------------------------------------------- files and stats
def test_files_stats_and_passages_are_filtered(srv):
    with srv.client("reader") as c:
        listed = _files(c)
        assert srv.public_path in listed and srv.secret_path not in listed
        stats = c.get("/api/v1/stats").json()
        assert stats["files"] == len(listed) and "secret" not in stats["acl_labels"]
    with srv.client("admin") as c:
        assert srv.secret_path in _files(c)
        hits = c.post("/api/v1/search", json={"query": SECRET_QUERY, "k": 1}).json()["results"]
        secret_id = hits[0]["chunk_id"]
        passage = c.get(f"/api/v1/passages/{secret_id}").json()
        assert passage["file"] == srv.secret_path and passage["chunk_count"] >= 1
    with srv.client("reader") as c:
        response = c.get(f"/api/v1/passages/{secret_id}")
        assert response.status_code == 404 and response.json()["error"]["field"] == "chunk_id"


def test_reader_cannot_ingest_or_remove_and_editor_cannot_remove_hidden_files(srv):
    before = _points(srv)
    with srv.client("reader") as c:
        response = c.delete("/api/v1/files", params={"path": srv.public_path})
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
        response = c.post("/api/v1/ingest", json={"paths": [str(srv.docs / "public")]})
        assert response.status_code == 403
        response = c.post("/api/v1/files", files={"files": ("x.txt", b"hello world", "text/plain")})
        assert response.status_code == 403
    with srv.client("editor") as c:
        response = c.delete("/api/v1/files", params={"path": srv.secret_path})
        assert response.status_code == 404 and response.json()["error"]["field"] == "path"
        response = c.post("/api/v1/ingest", json={"paths": [str(srv.docs / "secret")]})  # would relabel it public
        job = response.json()["job"] if response.status_code == 202 else None
        if job is not None:
            final = srv.state.jobs.wait(job["id"], timeout=60)
            assert final.errors, "an editor must not re-index a file it cannot see"
    with srv.client("admin") as c:
        assert srv.secret_path in _files(c)
    assert _points(srv) == before


def test_bad_requests_get_4xx_naming_the_field_and_change_nothing(srv):
    before = _points(srv)
    with srv.client("editor") as c:
        cases = [
            (c.post("/api/v1/search", content=b'{"query": "x", ', headers={"content-type": "application/json"}),
             422, "body"),
            (c.post("/api/v1/search", json={"query": "Genoa", "collection": "nope"}), 404, "collection"),
            (c.post("/api/v1/search", json={"query": "Genoa", "k": 0}), 422, "k"),
            (c.post("/api/v1/search", json={"query": "Genoa", "mode": "magic"}), 422, "mode"),
            (c.post("/api/v1/ask", json={"question": "x" * (10 * 1024 * 1024)}), 422, "question"),
            (c.post("/api/v1/ask", json={"question": "x" * 2001}), 422, "question"),
            (c.post("/api/v1/ingest", json={"paths": ["/etc"]}), 403, "paths.0"),
            (c.post("/api/v1/ingest", json={"paths": [str(srv.docs / ".." / "..")]}), 403, "paths.0"),
            (c.post("/api/v1/ingest", json={"paths": ["a\x00b"]}), 422, "paths.0"),
            (c.post("/api/v1/search", json={"query": "Genoa", "unknown": 1}), 422, "unknown"),
            (c.post("/api/v1/search", content=b"x" * (17 * 1024 * 1024), headers={"content-type": "application/json"}),
             413, "body"),
            (c.get("/api/v1/jobs/nope"), 404, "job_id"),
        ]
        for response, status, field in cases:
            assert response.status_code == status, (field, response.text[:300])
            error = response.json()["error"]
            assert error["field"] == field, error
            assert "Traceback" not in response.text and len(response.text) < 2000
        assert c.get("/api/v1/health").status_code == 200  # still up
    assert _points(srv) == before


# ---------------------------------------------------------------------------------- ingest jobs
def test_ingest_job_and_upload_job(srv):
    extra = srv.docs / "public" / "more"
    extra.mkdir()
    (extra / "norwich.md").write_text(
        "# Club history\n\nThe Canaries play at Carrow Road stadium in the city of Norwich.\n", encoding="utf-8")
    with srv.client("editor") as c:
        response = c.post("/api/v1/ingest", json={"paths": [str(extra)], "acl": ["public"]})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        job = srv.state.jobs.wait(job_id, timeout=120)
        assert job.state == "done", job
        view = c.get(f"/api/v1/jobs/{job_id}").json()
        assert view["files_total"] == 1 and view["files_done"] == 1 and view["chunks_added"] == 1  # one short section
        assert view["timings_s"]["total"] > 0
        assert job_id in [j["id"] for j in c.get("/api/v1/jobs").json()["jobs"]]
        hits = c.post("/api/v1/search", json={"query": "Carrow Road stadium Canaries"}).json()["results"]
        assert hits and hits[0]["file_name"] == "norwich.md"

        # Two uploads with the same name are stored side by side, never replacing each other.
        ids = []
        for text in (b"The lighthouse keeper logs the tide at dawn.", b"The lighthouse keeper paints the lamp."):
            response = c.post("/api/v1/files", files={"files": ("notes.txt", text, "text/plain")})
            assert response.status_code == 202, response.text
            ids.append(response.json()["job_id"])
        for job_id in ids:
            assert srv.state.jobs.wait(job_id, timeout=120).state == "done"
        # A name trying to leave the upload folder is reduced to its base name inside it.
        response = c.post("/api/v1/files", files={"files": ("../../../escape.txt", b"The owl hoots twice.", "text/plain")})
        assert response.status_code == 202
        assert srv.state.jobs.wait(response.json()["job_id"], timeout=120).state == "done"
        escaped = [f for f in _files(c) if f.endswith("escape.txt")]
        assert len(escaped) == 1 and escaped[0].startswith(str(Path(srv.settings.upload_dir).resolve()))
        assert c.delete("/api/v1/files", params={"path": escaped[0]}).status_code == 200
        stored = [f for f in _files(c) if f.endswith("notes.txt")]
        assert len(stored) == 2 and len(set(stored)) == 2
        assert all(f.startswith(str(Path(srv.settings.upload_dir).resolve())) for f in stored)
        # Cancelling a finished job changes nothing; a reader may not cancel.
        assert c.post(f"/api/v1/jobs/{ids[0]}/cancel").json()["state"] == "done"
    with srv.client("reader") as c:
        assert c.post(f"/api/v1/jobs/{ids[0]}/cancel").status_code == 403
        assert c.get(f"/api/v1/jobs/{ids[0]}").status_code == 404  # another caller's job is not listed
        for f in stored:  # a reader cannot remove
            assert c.delete("/api/v1/files", params={"path": f}).status_code == 403
    with srv.client("editor") as c:
        for f in stored:
            assert c.delete("/api/v1/files", params={"path": f}).json()["chunks_removed"] == 1  # one sentence each
            assert not Path(f).exists()  # the uploaded copy goes with it


def test_upload_over_the_limit_is_refused_while_receiving(srv):
    limit = int(srv.settings.server_max_upload_mb * (1 << 20))
    with srv.client("editor") as c:
        before = len(_files(c))

        def body():  # streamed without a Content-Length: the server must count while receiving
            sent = 0
            chunk = b"x" * (1 << 20)
            while sent <= limit + (1 << 20):
                yield chunk
                sent += len(chunk)

        boundary = "xyz"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.txt\"\r\n"
                "Content-Type: text/plain\r\n\r\n").encode()

        def multipart():
            yield head
            yield from body()
            yield f"\r\n--{boundary}--\r\n".encode()

        try:
            response = c.post("/api/v1/files", content=multipart(),
                              headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            assert response.status_code == 413, response.text[:200]
            assert response.json()["error"]["field"] == "files"
        except httpx.HTTPError:
            pass  # the server may close the connection once over the limit; what matters is nothing stored
        assert len(_files(c)) == before


# ---------------------------------------------------------------------------- OpenAI-compatible
def test_openai_client_models_and_chat(srv):
    import openai

    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=srv.keys["reader"], http_client=None)
    assert [m.id for m in client.models.list().data] == ["srv"]

    reply = client.chat.completions.create(model="srv", messages=[
        {"role": "system", "content": "You answer from documents."},
        {"role": "user", "content": "Who said Genoa and Lucca are family estates of the Buonapartes?"}])
    content = reply.choices[0].message.content
    assert "[1]" in content and "Sources:" in content and PUBLIC_FILE in content
    citations = reply.model_extra["citations"]
    assert citations and all(c["file"] == srv.public_path for c in citations)

    # Multi-turn: the follow-up is answered with the earlier turns as history.
    follow = client.chat.completions.create(model="srv", messages=[
        {"role": "user", "content": "Who said Genoa and Lucca are family estates?"},
        {"role": "assistant", "content": content},
        {"role": "user", "content": "And what about the Buonapartes?"}])
    assert follow.model_extra["citations"]

    # Streamed: content deltas, then a final chunk carrying the structured citations.
    chunks = list(client.chat.completions.create(model="srv", stream=True, messages=[
        {"role": "user", "content": "Who said Genoa and Lucca are family estates?"}]))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "Sources:" in text and "[1]" in text
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].model_extra["citations"]

    # The secret file is never cited to a public key.
    secret = client.chat.completions.create(model="srv", messages=[
        {"role": "user", "content": "Is there a petting zoo and funnel cake at the family day?"}])
    assert SECRET_FILE not in secret.choices[0].message.content
    assert all(c["file"] != srv.secret_path for c in secret.model_extra["citations"])

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{srv.url}/v1", api_key=srv.keys["revoked"]).models.list()


# --------------------------------------------------------------------------------- MCP over HTTP
async def _mcp_http(url: str, key: str, calls: list[tuple[str, dict]]):
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                results = [await session.call_tool(name, args) for name, args in calls]
                return tools, results


def test_mcp_over_http_lists_and_calls_every_tool_with_labels_applied(srv):
    with srv.client("admin") as c:
        secret_id = c.post("/api/v1/search", json={"query": SECRET_QUERY, "k": 1}).json()["results"][0]["chunk_id"]
    calls = [("search", {"query": SECRET_QUERY, "k": 20}), ("ask", {"question": "Who said Genoa and Lucca are family estates?"}),
             ("list_files", {}), ("get_passage", {"chunk_id": secret_id}),
             ("search", {"query": "Genoa", "collection": "nope"}), ("search", {"query": "Genoa", "k": 0})]
    tools, results = asyncio.run(_mcp_http(srv.url, srv.keys["reader"], calls))
    *results, unknown, bad_k = results
    assert unknown.is_error and "collection" in str(unknown.content)
    assert bad_k.is_error and "k" in str(bad_k.content)
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) >= {"search", "ask", "list_files", "get_passage"}
    for tool in by_name.values():
        assert tool.input_schema["type"] == "object" and tool.output_schema is not None
    search, ask, files, passage = [r.structured_content for r in results]
    assert all(not r.is_error for r in results), results
    assert search["results"] and all(p["file"] != srv.secret_path for p in search["results"])
    assert ask["citations"] and all(c["file"] == srv.public_path for c in ask["citations"])
    listed = [f["file_path"] for f in files["files"]]
    assert srv.public_path in listed and srv.secret_path not in listed
    assert passage["found"] is False  # a secret chunk id reveals nothing

    _, (admin_passage,) = asyncio.run(_mcp_http(srv.url, srv.keys["admin"], [("get_passage", {"chunk_id": secret_id})]))
    assert admin_passage.structured_content["found"] is True
    assert admin_passage.structured_content["passage"]["file"] == srv.secret_path


# ------------------------------------------------------------------------------ the mounted UI
def test_ui_is_mounted_with_key_sign_in(srv):
    import gradio_client

    with srv.client(None) as c:
        root = c.get("/", follow_redirects=False)
        assert root.status_code in (302, 307) and root.headers["location"].startswith("/ui")
        assert c.get("/docs").status_code == 200
        assert c.get("/openapi.json").json()["paths"].get("/api/v1/search")
    reader = gradio_client.Client(f"{srv.url}/ui/", auth=("reader", srv.keys["reader"]), verbose=False)
    _messages, _evidence, _box, answer = reader.predict("Who said Genoa and Lucca are family estates?", [],
                                                        api_name="/chat")
    assert answer and answer["citations"]
    # The session's caller is the signed-in key's: a public key never gets the secret file ...
    _m, _e, _b, secret = reader.predict("Is there a petting zoo and funnel cake at the family day?", [],
                                        api_name="/chat")
    assert srv.secret_path not in json.dumps(secret)
    # ... while a key holding `secret` does.
    admin = gradio_client.Client(f"{srv.url}/ui/", auth=("admin", srv.keys["admin"]), verbose=False)
    _m, _e, _b, seen = admin.predict("Is there a petting zoo and funnel cake at the family day?", [],
                                     api_name="/chat")
    assert srv.secret_path in json.dumps(seen)
    for name, key in (("reader", "rag_wrong_key"), ("revoked", srv.keys["revoked"]), ("admin", srv.keys["reader"])):
        # gradio's /login refuses (400 or 401): gradio_client raises ValueError (AuthenticationError on 401)
        with pytest.raises(ValueError, match="Could not login"):
            gradio_client.Client(f"{srv.url}/ui/", auth=(name, key), verbose=False)


def test_ui_sign_in_follows_keys_created_and_revoked_while_the_server_runs(srv, tmp_path):
    """No key: the UI is open on loopback only. A key created from another process (`rag keys create`)
    closes it at once, open sessions included; a sign-in with the key works; revoking the last key
    opens it again. No restart anywhere."""
    import gradio_client

    from rag.server.app import create_app
    from rag.server.keys import KeyStore, keys_db_path

    state = _side_state(srv, state_dir=str(tmp_path / "state"))
    app = create_app(state, mount_mcp=False)
    url, stop = _run_uvicorn(app)
    question = "Who said Genoa and Lucca are family estates?"
    try:
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
            assert c.get("/ui/config").status_code == 200  # no keys: the loopback operator's open UI
            assert '"auth_required"' not in c.get("/ui/").text
        operator = gradio_client.Client(f"{url}/ui/", verbose=False)
        *_, answer = operator.predict(question, [], api_name="/chat")
        assert answer and answer["citations"]

        # Without keys, only this machine: the same request from another address is refused.
        async def from_address(host: str) -> httpx.Response:
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://rag.example") as ac:
                return await ac.get("/ui/config")

        remote = asyncio.run(from_address("192.168.1.20"))
        assert remote.status_code == 401 and "rag keys create" in remote.json()["error"]["message"]
        assert asyncio.run(from_address("127.0.0.1")).status_code == 200

        other_process = KeyStore(keys_db_path(state.settings.state_dir))  # its own connection, as the CLI's
        key = other_process.create("late", ["public"], "reader")
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
            assert c.get("/ui/config").status_code == 401
            assert '"auth_required"' in c.get("/ui/").text  # the sign-in form
        with pytest.raises(Exception, match="401|[Uu]nauthori|[Nn]ot authenticated|[Cc]ould not"):
            operator.predict(question, [], api_name="/chat")  # the session opened before the key is closed
        with pytest.raises(ValueError):
            gradio_client.Client(f"{url}/ui/", verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            gradio_client.Client(f"{url}/ui/", auth=("late", "rag_wrong_key"), verbose=False)
        signed_in = gradio_client.Client(f"{url}/ui/", auth=("late", key), verbose=False)
        *_, answer = signed_in.predict(question, [], api_name="/chat")
        assert answer and answer["citations"]

        other_process.revoke("late")
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
            assert c.get("/ui/config").status_code == 200  # no active key left: open on loopback again
    finally:
        stop()


# ------------------------------------------------------------------------ streams and disconnects
@pytest.fixture()
def llm_srv(srv, fake_llm, tmp_path):
    """A server over the module server's data whose answers come from the fake LLM endpoint."""
    from rag.server.app import create_app

    state = _side_state(srv, state_dir=str(tmp_path / "state"), llm_provider="openai",
                        llm_base_url=fake_llm.base_url, llm_model="fake-model", llm_max_retries=0,
                        llm_timeout_s=30.0)
    key = state.keys.create("reader", ["public"], "reader")
    url, stop = _run_uvicorn(create_app(state, mount_ui=False, mount_mcp=False))
    try:
        yield url, key
    finally:
        stop()


SLOW_WORDS = 80  # at 0.1 s a word: the LLM would stream for 8 s


def _assert_llm_stream_closed_early(fake_llm, client_gone: float) -> None:
    (log,) = fake_llm.streams
    assert log.done.wait(10), "the LLM stream was still being read 10 s after the client left"
    assert log.client_closed and log.chunks_written < log.chunks_total, log
    assert log.ended - client_gone < 3.0, f"LLM stream closed {log.ended - client_gone:.1f} s after the client left"


def test_streamed_ask_stops_generating_when_the_client_disconnects(llm_srv, fake_llm):
    from tests.fake_llm_server import Reply

    url, key = llm_srv
    fake_llm.script(Reply("Anna Pavlovna said it [1]. " + "and more " * (SLOW_WORDS // 2), token_delay_s=0.1))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60, trust_env=False) as c:
        with c.stream("POST", "/api/v1/ask", json={"question": "Who said Genoa and Lucca are family estates?",
                                                   "stream": True}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("event: token"):
                    break  # the first token arrived: hang up
        client_gone = time.monotonic()
        _assert_llm_stream_closed_early(fake_llm, client_gone)
        assert c.get("/api/v1/health").status_code == 200


def test_openai_stream_stops_generating_when_the_client_closes_it(llm_srv, fake_llm):
    import openai

    from tests.fake_llm_server import Reply

    url, key = llm_srv
    fake_llm.script(Reply("Anna Pavlovna said it [1]. " + "and more " * (SLOW_WORDS // 2), token_delay_s=0.1))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(model="srv", stream=True, messages=[
        {"role": "user", "content": "Who said Genoa and Lucca are family estates?"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    _assert_llm_stream_closed_early(fake_llm, time.monotonic())


# ------------------------------------------------------------------- the CLI while the server runs
def test_cli_ingest_and_ask_go_through_the_running_server(srv):
    folder = srv.docs / "cli"
    folder.mkdir()
    (folder / "harbour.md").write_text("# Harbour\n\nThe harbour master rings the brass bell at noon every Sunday.\n",
                                       encoding="utf-8")
    env = {**os.environ, "RAG_STATE_DIR": srv.settings.state_dir, "RAG_QDRANT_PATH": srv.settings.qdrant_path,
           "RAG_COLLECTION": "srv", "RAG_API_KEY": srv.keys["editor"], "RAG_EMBED_MODEL": srv.settings.embed_model}
    env.pop("RAG_SERVER_URL", None)
    run = lambda *args: subprocess.run([sys.executable, "-m", "rag.cli", *args], cwd=REPO_ROOT, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=180)
    ingest = run("ingest", str(folder), "--acl", "public", "--json")
    assert ingest.returncode == 0, ingest.stderr
    job = json.loads(ingest.stdout)
    assert job["state"] == "done" and job["chunks_added"] == 1  # one short section
    assert "using the server" in ingest.stderr
    ask = run("ask", "When does the harbour master ring the brass bell?", "--json")
    assert ask.returncode == 0, ask.stderr
    answer = json.loads(ask.stdout)
    assert answer["citations"] and answer["citations"][0]["file"].endswith("harbour.md")
    stats = run("stats", "--json")
    assert json.loads(stats.stdout)["files"] >= 2
    # Outside the ingest roots: refused with a one-line reason, exit code 2.
    outside = run("ingest", str(srv.root), "--json")
    assert outside.returncode == 2 and "outside" in outside.stderr


def test_rag_mcp_stdio_goes_through_the_running_server_with_the_key(srv):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    with srv.client("admin") as c:
        secret_id = c.post("/api/v1/search", json={"query": SECRET_QUERY, "k": 1}).json()["results"][0]["chunk_id"]
    env = {**os.environ, "RAG_STATE_DIR": srv.settings.state_dir, "RAG_QDRANT_PATH": srv.settings.qdrant_path,
           "RAG_COLLECTION": "srv", "RAG_API_KEY": srv.keys["reader"], "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAG_SERVER_URL", None)  # found through server.json beside the store

    async def session():
        params = StdioServerParameters(command=sys.executable, args=["-m", "rag.cli", "mcp"], env=env,
                                       cwd=str(REPO_ROOT))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return [await s.call_tool(name, args) for name, args in [
                    ("search", {"query": SECRET_QUERY, "k": 20}),
                    ("ask", {"question": "Who said Genoa and Lucca are family estates?"}),
                    ("list_files", {}), ("get_passage", {"chunk_id": secret_id})]]

    search, ask, files, passage = asyncio.run(asyncio.wait_for(session(), timeout=180))
    assert not any(r.is_error for r in (search, ask, files, passage)), (search, ask, files, passage)
    assert search.structured_content["results"]
    assert all(p["file"] != srv.secret_path for p in search.structured_content["results"])
    assert ask.structured_content["citations"]
    assert srv.secret_path not in [f["file_path"] for f in files.structured_content["files"]]
    assert passage.structured_content["found"] is False
