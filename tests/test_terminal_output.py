"""Issue 14 (low): document text with terminal escape sequences (OSC 0 retitle, OSC 52 clipboard write,
SGR 8 hidden text) was printed raw by `rag search` and `rag ask`."""

from __future__ import annotations

import pytest

from rag.text import terminal_safe

HOSTILE = ("The heron colony nests by the lake every spring. "
           "\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;pwned\x1b\\\x1b[8mhidden instructions\x1b[0m\r\x9b2J"
           " Herons return to the lake in March.")


def test_terminal_safe_removes_escape_sequences_and_controls_but_keeps_text():
    clean = terminal_safe(HOSTILE + "\n\tnext line")
    assert "\x1b" not in clean and "\x07" not in clean and "\r" not in clean and "\x9b" not in clean
    assert "52;c;" not in clean and "pwned" not in clean
    assert "The heron colony nests by the lake every spring." in clean and "hidden instructions" in clean
    assert clean.endswith("\n\tnext line")


@pytest.mark.parametrize("command", [["search", "heron colony lake", "--mode", "bm25"],
                                     ["ask", "When do herons return to the lake?", "--mode", "bm25"]])
def test_rag_search_and_ask_print_no_control_sequences(command, tmp_path, monkeypatch, capsys, minilm_path):
    from rag.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "herons.txt").write_text(HOSTILE + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name, value in {"RAG_QDRANT_PATH": str(tmp_path / "qdrant"), "RAG_COLLECTION": "term",
                        "RAG_EMBED_MODEL": minilm_path, "RAG_RERANK_MODEL": "none",
                        "RAG_LLM_PROVIDER": "extractive", "RAG_CHUNK_TOKENS": "128",
                        "RAG_CHUNK_OVERLAP_TOKENS": "16", "RAG_STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAG_QDRANT_URL", raising=False)
    assert main(["ingest", str(docs)]) == 0
    capsys.readouterr()
    assert main(command) in (0, 1)
    out = capsys.readouterr().out
    assert "heron" in out.lower()  # the passage was printed ...
    assert not any(c in out for c in "\x1b\x07\r\x9b\x9d")  # ... without a single control sequence
