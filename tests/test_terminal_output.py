"""Issue 14 (low): document text with terminal escape sequences (OSC 0 retitle, OSC 52 clipboard write,
SGR 8 hidden text) was printed raw by `rag search` and `rag ask`."""

from __future__ import annotations

import json

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


def test_rag_ask_lists_the_related_passages_of_an_abstention_once(tmp_path, monkeypatch, capsys, minilm_path):
    """Issue 17: an abstention printed its related passages twice (in the answer text, then again below it)."""
    from rag.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "herons.txt").write_text("The heron colony nests by the lake every spring. "
                                     "Herons return to the lake in March.\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name, value in {"RAG_QDRANT_PATH": str(tmp_path / "qdrant"), "RAG_COLLECTION": "abstain",
                        "RAG_EMBED_MODEL": minilm_path, "RAG_RERANK_MODEL": "none", "RAG_READER_MODEL": "none",
                        "RAG_LLM_PROVIDER": "extractive", "RAG_STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAG_QDRANT_URL", raising=False)
    assert main(["ingest", str(docs)]) == 0
    capsys.readouterr()
    assert main(["ask", "What is the tax rate on imported cars in Norway?", "--mode", "dense"]) == 0
    out = capsys.readouterr().out
    assert "herons.txt" in out  # the closest passage is listed as related ...
    assert out.count("The heron colony nests by the lake") == 1  # ... once


@pytest.mark.slow  # `rag ingest` in-process loads the model: ~20 s on 2 busy cores
def test_rag_ingest_progress_bar_names_each_file_and_moves_per_chunk_batch(tmp_path, monkeypatch, capsys,
                                                                           minilm_path):
    """Issue 16: the bar sat at 0/10 files for nine seconds, never naming a file. Now it counts chunks (the
    total estimated, then exact), moves after every model batch, and its label names the file and stage."""
    import re

    from rag.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    names = ["glaciers.md", "harbours.txt", "orchards.md"]
    for name in names:
        topic = name.split(".")[0]
        text = "\n\n".join(f"The {topic} survey, section {k}: observers logged {k * 3} records of {topic} across "
                           "several valleys, noting weather, soil and the time of each visit." for k in range(12))
        (docs / name).write_text(text + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name, value in {"RAG_QDRANT_PATH": str(tmp_path / "qdrant"), "RAG_COLLECTION": "bar",
                        "RAG_EMBED_MODEL": minilm_path, "RAG_RERANK_MODEL": "none", "RAG_CHUNK_TOKENS": "48",
                        "RAG_CHUNK_OVERLAP_TOKENS": "0", "RAG_EMBED_BATCH_SIZE": "4",
                        "RAG_STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(name, value)
    # Draw every update. (TQDM_MININTERVAL would do it only if tqdm was first imported after it was set:
    # tqdm reads its TQDM_* defaults at import.)
    import functools

    import tqdm

    monkeypatch.setattr(tqdm, "tqdm", functools.partial(tqdm.tqdm, mininterval=0, miniters=1))
    monkeypatch.delenv("RAG_QDRANT_URL", raising=False)
    assert main(["ingest", str(docs), "--json"]) == 0
    captured = capsys.readouterr()
    chunks = json.loads(captured.out)["chunks_added"]
    frames = [f for f in re.split(r"[\r\n]", captured.err) if " files · " in f]
    for name in names:
        assert any(f"{name}: embed " in f for f in frames), f"{name} never named on the bar"
    counts = [int(m.group(1)) for f in frames if (m := re.search(r"\| *(\d+)/\d+ \[", f))]
    assert counts == sorted(counts) and counts[-1] == chunks > 12
    steps = [b - a for a, b in zip(counts, counts[1:]) if b > a]
    assert len(steps) >= chunks // 4 - 1 and max(steps) <= 4  # one step per model batch of 4 chunks
    last = re.search(r"\| *(\d+)/(\d+) \[", frames[-1])
    assert last and last.group(1) == last.group(2)  # the estimated total ends exact
