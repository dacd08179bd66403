"""`rag mcp`: the MCP server over stdio, driven by the official `mcp` client SDK in a real subprocess.

(MCP over streamable HTTP at /mcp is tested against the shared server in tests/test_server.py.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.ui_app_fixture import ui_settings

PUBLIC_FILE = "book-war-and-peace-1p.txt"
SECRET_FILE = "family-day.eml"


@pytest.fixture(scope="module")
def store(evaldata, minilm_path, tmp_path_factory):
    """A small store with a public and a secret file, closed so the MCP subprocess can own it."""
    from rag.pipeline import Pipeline

    root = tmp_path_factory.mktemp("mcp")
    for name, label in ((PUBLIC_FILE, "public"), (SECRET_FILE, "secret")):
        (root / "docs" / label).mkdir(parents=True)
        shutil.copy(evaldata / "docs-mixed" / "files" / name, root / "docs" / label / name)
    settings = ui_settings(root, minilm_path, collection="mcp")
    pipeline = Pipeline(settings)
    try:
        for label in ("public", "secret"):
            assert pipeline.ingest([str(root / "docs" / label)], acl=[label], progress=False).failed == 0
        secret_id = pipeline.search("petting zoo funnel cake", k=1,
                                    caller=__import__("rag.access", fromlist=["Caller"]).Caller.local(["secret"])
                                    ).hits[0].chunk.id
    finally:
        pipeline.close()
    return settings, root, secret_id


async def _session(settings, calls):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {**os.environ, "RAG_STATE_DIR": settings.state_dir, "RAG_QDRANT_PATH": settings.qdrant_path,
           "RAG_COLLECTION": settings.collection, "RAG_EMBED_MODEL": settings.embed_model,
           "RAG_RERANK_MODEL": "none", "RAG_MODE": "hybrid", "RAG_LLM_PROVIDER": "extractive",
           "RAG_CHUNK_TOKENS": "128", "RAG_CHUNK_OVERLAP_TOKENS": "16", "PYTHONPATH": str(REPO_ROOT)}
    params = StdioServerParameters(command=sys.executable, args=["-m", "rag.cli", "mcp", "--acl", "public"],
                                   env=env, cwd=str(REPO_ROOT))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            results = [await session.call_tool(name, args) for name, args in calls]
            return tools, results


@pytest.mark.slow  # a `rag mcp` subprocess loads the model and serves stdio
def test_mcp_stdio_lists_and_calls_every_tool_as_the_operator(store):
    settings, root, secret_id = store
    calls = [("search", {"query": "petting zoo funnel cake family day", "k": 10}),
             ("ask", {"question": "Who said Genoa and Lucca are family estates?"}),
             ("list_files", {}),
             ("get_passage", {"chunk_id": secret_id}),
             ("search", {"query": "Genoa", "k": 0})]
    tools, results = asyncio.run(asyncio.wait_for(_session(settings, calls), timeout=240))
    names = {t.name for t in tools.tools}
    assert names >= {"search", "ask", "list_files", "get_passage"}
    assert all(t.output_schema for t in tools.tools if t.name in names)
    search, ask, files, passage, bad = results
    secret_path = str((root / "docs" / "secret" / SECRET_FILE).resolve())
    public_path = str((root / "docs" / "public" / PUBLIC_FILE).resolve())
    assert search.structured_content["results"]
    assert all(p["file"] != secret_path for p in search.structured_content["results"])
    assert ask.structured_content["citations"]
    assert all(c["file"] == public_path for c in ask.structured_content["citations"])
    assert [f["file_path"] for f in files.structured_content["files"]] == [public_path]
    assert passage.structured_content["found"] is False  # the operator holds only `public` here
    assert bad.is_error and "k" in str(bad.content)
