"""The HTTP client the CLI uses when a server owns the store (`rag search|ask|stats|ingest|remove`).

It speaks the REST API with the key in RAG_API_KEY (if set) and turns error bodies into one-line
RagErrors, so the CLI's output and exit codes are the same with or without a server.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

import httpx

from rag.errors import RagError


class ServerClient:
    """A thin, synchronous client for /api/v1."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get("RAG_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # trust_env=False: a proxy configured for the internet must not intercept a loopback server.
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            err = response.json()["error"]
            message = err.get("message") or response.reason_phrase
            field = f" (field {err['field']})" if err.get("field") else ""
        except (ValueError, KeyError, TypeError):
            message, field = response.text[:200] or response.reason_phrase, ""
        raise RagError(f"server answered {response.status_code}: {message}{field}")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise RagError(f"cannot reach the rag server at {self.url}: {exc}; is `rag serve` running? "
                           "(unset RAG_SERVER_URL / remove --server to work in-process)") from exc
        self._raise_for(response)
        return response.json()

    def health(self) -> bool:
        try:
            return self.http.get("/api/v1/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def search(self, query: str, k: int | None = None, mode: str | None = None,
               filters: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query}
        if k is not None:
            body["k"] = k
        if mode:
            body["mode"] = mode
        if filters:
            body["filters"] = filters
        return self._call("POST", "/search", json=body)

    def ask(self, question: str, mode: str | None = None, filters: dict[str, Any] | None = None,
            on_token: Callable[[str], None] | None = None) -> dict[str, Any]:
        """The answer dict; with `on_token`, tokens are streamed (SSE) as they are generated."""
        body: dict[str, Any] = {"question": question, "stream": on_token is not None}
        if mode:
            body["mode"] = mode
        if filters:
            body["filters"] = filters
        if on_token is None:
            return self._call("POST", "/ask", json=body)
        try:
            with self.http.stream("POST", "/api/v1/ask", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                event = None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:].strip())
                        if event == "token":
                            on_token(data["text"])
                        elif event == "answer":
                            return data
                        elif event == "error":
                            raise RagError(f"server error: {data.get('message')}")
        except httpx.HTTPError as exc:
            raise RagError(f"cannot reach the rag server at {self.url}: {exc}") from exc
        raise RagError("the server closed the answer stream early")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def remove(self, path: str) -> dict[str, Any]:
        return self._call("DELETE", "/files", params={"path": path})

    def ingest(self, paths: list[str], acl: list[str] | None = None, wait: bool = True,
               progress: bool = True) -> dict[str, Any]:
        """Queue an ingest job of server-side paths; with `wait`, follow it to the end (progress on stderr)."""
        body: dict[str, Any] = {"paths": [os.path.abspath(os.path.expanduser(p)) for p in paths]}
        if acl:
            body["acl"] = acl
        job = self._call("POST", "/ingest", json=body)["job"]
        last = None
        while wait and job["state"] not in ("done", "failed", "cancelled"):
            time.sleep(0.3)
            job = self._call("GET", f"/jobs/{job['id']}")
            line = f"job {job['id']}: {job['state']} {job['files_done']}/{job['files_total']} files" + (
                f" · {os.path.basename(job['current_file'])}" if job.get("current_file") else "")
            if progress and line != last:
                print(line, file=sys.stderr)
                last = line
        return job


class RemotePipeline:
    """The read side of a Pipeline (search, ask, list_files, get_chunk) answered by a running server.

    Lets `rag mcp` serve a desktop MCP client while `rag serve` owns the store: the MCP tools call
    these methods exactly as they call a local Pipeline. The server applies the key's labels, so the
    `caller` argument is ignored here (the identity is RAG_API_KEY, or the loopback operator).
    """

    def __init__(self, client: ServerClient, collection: str | None = None) -> None:
        self.client = client
        self.collection = collection

    def _body(self, **values: Any) -> dict[str, Any]:
        body = {k: v for k, v in values.items() if v is not None}
        if self.collection:
            body["collection"] = self.collection
        return body

    @staticmethod
    def _chunk(data: dict[str, Any]) -> Any:
        from types import SimpleNamespace

        pages = data.get("pages") or ([data["page"]] if data.get("page") else [])
        return SimpleNamespace(id=data["chunk_id"], text=data["text"], file_path=data["file"],
                               file_name=data.get("file_name") or data["file"].rsplit("/", 1)[-1],
                               page=data.get("page"), page_numbers=pages, section=data.get("section", ""),
                               char_start=data.get("char_start", 0), char_end=data.get("char_end", 0),
                               chunk_index=data.get("chunk_index"), chunk_count=data.get("chunk_count"),
                               acl=data.get("acl", []))

    def search(self, query: str, k: int | None = None, mode: str | None = None, caller: Any = None) -> Any:
        from types import SimpleNamespace

        data = self.client._call("POST", "/search", json=self._body(query=query, k=k, mode=mode))
        hits = [SimpleNamespace(chunk=self._chunk(r), score=r.get("score")) for r in data["results"]]
        return SimpleNamespace(mode=data["mode"], hits=hits)

    def ask(self, question: str, caller: Any = None) -> Any:
        from types import SimpleNamespace

        data = self.client._call("POST", "/ask", json=self._body(question=question))
        citations = [SimpleNamespace(**{k: c.get(k) for k in ("number", "chunk_id", "file", "page", "quote")})
                     for c in data["citations"]]
        evidence = [SimpleNamespace(hit=SimpleNamespace(chunk=self._chunk(e), score=e.get("score")))
                    for e in data["evidence"]]
        return SimpleNamespace(text=data["answer"], abstained=data["abstained"], citations=citations,
                               evidence=evidence)

    def list_files(self, caller: Any = None) -> list[dict[str, Any]]:
        params = {"collection": self.collection} if self.collection else None
        return self.client._call("GET", "/files", params=params)["files"]

    def get_chunk(self, chunk_id: str, caller: Any = None) -> Any:
        try:
            data = self.client._call("GET", f"/passages/{chunk_id}",
                                     params={"collection": self.collection} if self.collection else None)
        except RagError as exc:
            if "404" in str(exc):
                return None
            raise
        return self._chunk(data)


class RemoteState:
    """What `build_mcp` needs from a ServerState (`pipeline(collection)`), backed by a running server."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    def pipeline(self, collection: str | None) -> RemotePipeline:
        return RemotePipeline(self.client, collection)
