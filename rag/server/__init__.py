"""`rag serve`: one process that owns the collections and serves the UI, REST, OpenAI-compatible chat and MCP.

Modules:
- `keys`: API keys (hashed in SQLite beside the store) mapped to `rag.access.Caller`.
- `app`: the FastAPI application (REST under /api/v1, errors, auth, rate limits, the UI mount).
- `openai_api`: `GET /v1/models`, `POST /v1/chat/completions`.
- `mcp_server`: the MCP tools (streamable HTTP at /mcp, stdio via `rag mcp`).
- `run`: start uvicorn, record the address beside the store, graceful shutdown.
- `client`: the small HTTP client the CLI uses when a server owns the store.

Layering: this package may import `ui`, `rag.pipeline`, `ingest` and the core; only `rag.cli` imports it.
"""
