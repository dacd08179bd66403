"""Start `rag serve`: refuse unsafe binds, record the address beside the store, run uvicorn, shut down cleanly.

Shutdown (SIGTERM or Ctrl-C): uvicorn stops accepting connections and lets in-flight requests finish
(up to `timeout_graceful_shutdown`), then the ingest writer stops after its current file and the
stores are flushed and closed. An ingest cut short is consistent anyway (the sync's crash-safety
guarantees hold for SIGKILL too) and its job is re-queued and re-run at the next start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from rag.config import Settings
from rag.errors import ConfigError
from rag.server.auth import is_loopback
from rag.server.keys import KeyStore, keys_db_path

log = logging.getLogger("rag.server")


def server_file(settings: Settings) -> Path:
    """`<state_dir>/server.json`: where a running server records its pid and URL for the CLI."""
    return Path(settings.state_dir).expanduser() / "server.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_server(settings: Settings, explicit: str | None = None) -> str | None:
    """The URL of a server to talk to: --server, RAG_SERVER_URL / server_url, or a live server.json."""
    for candidate in (explicit, os.environ.get("RAG_SERVER_URL"), getattr(settings, "server_url", None)):
        if candidate:
            return candidate.rstrip("/")
    path = server_file(settings)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not _alive(int(info.get("pid", 0) or 0)):
        return None
    url = str(info.get("url", "")).rstrip("/")
    if not url:
        return None
    # A recorded server whose process is alive but does not answer (still loading models, or the pid was
    # reused after a crash): wait briefly for it, then work in-process (which reports a held store lock).
    import httpx  # only when a server.json exists

    deadline = time.monotonic() + 5.0
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1.0, trust_env=False).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)


def record_server(settings: Settings, url: str, collections: list[str]) -> Path:
    """Write `<state_dir>/server.json` (pid, url) so CLI commands on this store go through the server."""
    record = server_file(settings)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url, "started_at": time.time(),
                               "collections": sorted(collections)}), encoding="utf-8")
    tmp.replace(record)  # atomic: a CLI never reads half a file
    return record


def forget_server(settings: Settings) -> None:
    """Remove server.json if this process wrote it."""
    record = server_file(settings)
    try:
        if json.loads(record.read_text(encoding="utf-8")).get("pid") == os.getpid():
            record.unlink()
    except (OSError, ValueError):
        pass


def check_bind(host: str, settings: Settings, insecure: bool) -> None:
    """Refuse to bind a non-loopback address with no API key configured (unless --insecure)."""
    if is_loopback(host) or host in ("127.0.0.1", "::1", "localhost"):
        return
    if KeyStore(keys_db_path(settings.state_dir)).any_active():
        return
    if insecure:
        print(f"rag serve: WARNING: --insecure: serving {host} with NO API keys: anyone who can reach this "
              "address can search, ask, ingest and remove files with the operator's labels", file=sys.stderr)
        return
    raise ConfigError(f"refusing to serve on {host} without API keys: anyone on the network could read the "
                      "index. Create a key first (rag keys create NAME --acl LABEL --role reader), bind "
                      "127.0.0.1, or pass --insecure to override")


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, ingest_roots: list[str] | None = None,
          insecure: bool = False, collections: list[str] | None = None, ui_path: str = "/ui",
          mount_ui: bool = True, watch: list[str] | None = None) -> None:
    """Run the server in the foreground until SIGTERM / Ctrl-C; `watch`: folders kept in sync (with settings.watch)."""
    # Imported here, not at the top: the CLI imports this module (find_server) on every `rag search`,
    # and uvicorn, FastAPI, the models and Gradio would add seconds to each of those runs.
    import uvicorn

    from rag.server.app import create_app
    from rag.server.state import ServerState

    check_bind(host, settings, insecure)
    settings = settings.replace(ui_host=host)
    state = ServerState.create(settings, collections=collections, ingest_roots=ingest_roots, insecure=insecure)
    try:
        state.warm_up()
        state.start_watching(watch)
        app = create_app(state, mount_ui=mount_ui, ui_path=ui_path)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30,
                                access_log=False)  # access logs would carry query strings, never keys
        server = uvicorn.Server(config)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{shown}:{port}"
        record_server(settings, url, list(state.pipelines))
        print(f"rag serve: {url}  (UI {url}{ui_path.rstrip('/')}/, API docs {url}/docs, OpenAI base_url {url}/v1, "
              f"MCP {url}/mcp)", file=sys.stderr)
        # uvicorn handles SIGTERM gracefully, then re-raises it to the handler that was installed before
        # it; with the default handler that would kill the process before the stores are closed below.
        signal.signal(signal.SIGTERM, lambda _sig, _frame: log.info("stopped by SIGTERM"))
        server.run()
    finally:
        forget_server(settings)
        state.close()
