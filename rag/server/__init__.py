"""`rag serve`: one process that owns the index and serves the UI, REST, OpenAI-compatible chat and MCP."""
