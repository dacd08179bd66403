"""`rag serve` as a real process: it records its address beside the store, the CLI finds it, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.ui_app_fixture import free_port


@pytest.mark.slow  # a real `rag serve` process: starts, loads the model, serves, stops on SIGTERM
def test_serve_process_is_found_by_the_cli_and_stops_on_sigterm(tmp_path, minilm_path):
    port = free_port()
    env = {**os.environ, "RAG_STATE_DIR": str(tmp_path / "state"), "RAG_QDRANT_PATH": str(tmp_path / "qdrant"),
           "RAG_UPLOAD_DIR": str(tmp_path / "uploads"), "RAG_COLLECTION": "proc", "RAG_EMBED_MODEL": minilm_path,
           "RAG_RERANK_MODEL": "none", "RAG_MODE": "hybrid", "RAG_LLM_PROVIDER": "extractive",
           "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAG_SERVER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    record = tmp_path / "state" / "server.json"
    try:
        deadline = time.monotonic() + 300  # loading torch, the model and Gradio takes minutes on 2 busy cores
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        info = json.loads(record.read_text())
        assert info["pid"] == proc.pid and info["url"] == f"http://127.0.0.1:{port}"
        # The CLI finds the server through server.json and asks it (the server holds the store).
        stats = subprocess.run([sys.executable, "-m", "rag.cli", "stats", "--json"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
        assert stats.returncode == 0, stats.stderr
        assert "using the server" in stats.stderr and json.loads(stats.stdout)["collection"] == "proc"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not record.exists()  # removed at exit: the next CLI run works in-process


def test_rag_ui_is_the_server_with_the_ui_at_the_root(monkeypatch, tmp_path):
    import rag.server.run as run
    from rag.cli import main

    calls: list[dict] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run, "serve", lambda settings, **kwargs: calls.append({"settings": settings, **kwargs}))
    assert main(["ui", "--port", "7999", "--acl", "team"]) == 0
    (call,) = calls
    assert call["ui_path"] == "/" and call["port"] == 7999 and call["host"] == "127.0.0.1"
    assert call["settings"].default_acl == ["team"]
