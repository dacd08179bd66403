"""The real UI server queried with gradio_client: cited answers, history, parallel sessions, errors, LLM path."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.fake_llm_server import Reply, Status
from tests.ui_app_fixture import llm_ui_server, start_server, ui_settings

gradio_client = pytest.importorskip("gradio_client")

LAPTOPS = "How many laptops were delivered on January 23, 2023?"


def _client(url: str):
    return gradio_client.Client(url, verbose=False)


def _chat(client, question: str, chat: list | None = None):
    """One /chat call; returns (chat messages, evidence html, answer dict)."""
    messages, evidence_html, box, answer = client.predict(question, chat or [], api_name="/chat")
    assert box == ""  # the question box is cleared
    return messages, evidence_html, answer


def _text(content) -> str:
    """A chat message's text (Gradio 6 returns content as a list of {"type": "text", "text": ...} parts)."""
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def _assert_valid_citations(answer: dict) -> None:
    numbers = {e["number"] for e in answer["evidence"]}
    assert answer["citations"], answer
    for c in answer["citations"]:
        assert c["number"] in numbers
        cited = next(e for e in answer["evidence"] if e["number"] == c["number"])
        assert c["quote"] and " ".join(c["quote"].split())[:40] in " ".join(cited["text"].split())


def test_chat_returns_an_answer_with_valid_citations(ui_server):
    messages, evidence_html, answer = _chat(_client(ui_server.url), LAPTOPS)
    assert answer["question"] == LAPTOPS and not answer["abstained"]
    assert "200" in answer["answer"]
    _assert_valid_citations(answer)
    assert {Path(c["file"]).name for c in answer["citations"]} == {"fake-memo.pdf"}
    # the chat shows the question and a cited answer; the panel holds the passage with the quote marked
    assert messages[0]["role"] == "user" and LAPTOPS in _text(messages[0]["content"])
    reply = _text(messages[-1]["content"])
    n = answer["citations"][0]["number"]
    assert f'data-turn="1" data-ev="{n}"' in reply
    assert f'id="ev-1-{n}"' in evidence_html and "<mark>" in evidence_html and "fake-memo.pdf" in evidence_html


def test_follow_up_passes_history_to_the_pipeline(ui_server, monkeypatch):
    from rag.pipeline import Pipeline

    calls: list[tuple[str, list]] = []
    original = Pipeline.ask

    def recording_ask(self, question, *args, **kwargs):  # records, then runs the real pipeline
        calls.append((question, list(kwargs.get("history") or [])))
        return original(self, question, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "ask", recording_ask)
    client = _client(ui_server.url)
    chat, _, first = _chat(client, LAPTOPS)
    chat, evidence_html, second = _chat(client, "And how many blankets?", chat)
    assert calls[0][1] == []
    assert calls[1][1] == [{"role": "user", "content": LAPTOPS}, {"role": "assistant", "content": first["answer"]}]
    assert len(chat) == 4 and not second["abstained"] and "10,000" in second["answer"]
    # both turns' evidence stay in the panel; the older one is hidden until its citation is clicked
    assert 'class="rag-turn rag-hidden rag-tb-1"' in evidence_html and 'data-turn="2"' in evidence_html


def test_parallel_sessions_get_their_own_answers(ui_server):
    questions = {
        LAPTOPS: "fake-memo.pdf",
        "What will there be at the first annual family day?": "family-day.eml",
        "Which team has won 13 Stanley Cups?": "stanley-cups.csv",
    }
    results: dict[str, tuple] = {}
    errors: list[BaseException] = []

    def worker(question: str) -> None:
        try:
            client = _client(ui_server.url)
            first = _chat(client, question)
            # a second turn in the same session sees only its own conversation
            second = _chat(client, question, first[0])
            results[question] = (first, second)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    for question, expected_file in questions.items():
        (chat1, _, answer1), (chat2, evidence2, answer2) = results[question]
        assert answer1["question"] == question and answer2["question"] == question
        user_turns = [_text(m["content"]) for m in chat2 if m["role"] == "user"]
        assert user_turns == [question, question]
        # this session's two turns, nobody else's
        assert len(re.findall(r'class="rag-turn(?: rag-hidden)? rag-tb-\d+"', evidence2)) == 2
        files = [Path(e["file"]).name for e in answer1["evidence"]]
        assert files[0] == expected_file, (question, files)
        others = set(questions) - {question}
        assert not any(o in evidence2 for o in others)


def test_empty_collection_gives_a_readable_message(minilm_path, tmp_path):
    server = start_server(ui_settings(tmp_path, minilm_path), docs=None)
    try:
        chat, evidence_html, answer = _chat(_client(server.url), LAPTOPS)
        text = _text(chat[-1]["content"])
        assert "Nothing is indexed yet" in text and "Traceback" not in text
        assert answer == {"error": answer["error"]} and "Documents tab" in answer["error"]
    finally:
        server.demo.close()
        server.pipeline.close()


def test_llm_answers_stream_into_the_chat(ui_server, fake_llm):
    # Paced chunks: without a pause a busy machine may deliver the whole stream between two UI updates.
    fake_llm.script(Reply("According to the memo, 200 laptops were delivered on January 23, 2023 [1].",
                          token_delay_s=0.15))
    server = llm_ui_server(ui_server, fake_llm)
    try:
        job = _client(server.url).submit(LAPTOPS, [], api_name="/chat")
        final = job.result(timeout=300)
        updates = job.outputs()
        partial = [_text(u[0][-1]["content"]) for u in updates if u and u[0] and u[0][-1]["role"] == "assistant"
                   and "▍" in _text(u[0][-1]["content"])]
        assert len(partial) >= 2, "expected several streamed updates before the final answer"
        assert len(partial[0]) < len(partial[-1])
        messages, evidence_html, _, answer = final
        assert answer["provider"] == "openai" and not answer["abstained"]
        _assert_valid_citations(answer)
        assert 'data-ev="1"' in _text(messages[-1]["content"]) and "▍" not in _text(messages[-1]["content"])
        assert fake_llm.requests and fake_llm.requests[0]["stream"] is True
    finally:
        server.demo.close()


def test_llm_endpoint_down_is_a_readable_message(ui_server, fake_llm):
    fake_llm.default = Status(500, "model crashed")
    server = llm_ui_server(ui_server, fake_llm)
    try:
        messages, evidence_html, _, answer = _client(server.url).predict(LAPTOPS, [], api_name="/chat")
        text = _text(messages[-1]["content"])
        assert answer["error"] and "could not be generated" in text and "Traceback" not in text
        assert "fake-memo.pdf" in evidence_html  # the evidence is still shown
    finally:
        server.demo.close()


def test_conversations_are_kept_per_signed_in_user_and_per_browser(ui_server):
    """Issue 17: history per user. Signed in, the sign-in names the owner (a browser cookie cannot make alice
    bob); without sign-in each browser's id cookie does; a client with neither keeps nothing."""
    from rag.access import Caller, Role
    from tests.ui_app_fixture import free_port
    from ui.app import build_app, server_options
    from ui.history import ConversationStore, history_db_path

    import gradio as gr

    MESSAGES = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "quoted secret passage"}]

    settings = ui_server.settings
    store = ConversationStore(history_db_path(settings.state_dir), settings.collection)
    # carol's key was revoked since she signed in: she sees nothing, so nothing of hers is kept or shown
    labels = {"alice": ("public",), "bob": ("public",), "carol": ()}
    demo = build_app(settings, ui_server.pipeline,
                     caller=lambda request: Caller(request.username or "nobody", labels.get(request.username, ()),
                                                   Role.READER))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                auth=[("alice", "alice-pw-1"), ("bob", "bob-pw-22"), ("carol", "carol-pw-3")],
                **server_options(settings, demo))
    url = f"http://127.0.0.1:{port}/"
    bobs_browser = "b0b" + "x" * 29
    try:
        alice = gradio_client.Client(url, auth=("alice", "alice-pw-1"), verbose=False)
        alice.cookies["rag_browser"] = bobs_browser  # beside the sign-in cookie
        _chat(alice, LAPTOPS)
        mine = store.list("user:alice")
        assert len(mine) == 1 and mine[0].title.startswith("How many laptops")
        saved = store.get("user:alice", mine[0].id)
        assert "rag-cite" in _text(saved.messages[-1]["content"]) and "fake-memo.pdf" in saved.turns[0]
        assert store.list("user:bob") == [] and store.list(f"browser:{bobs_browser}") == []
        bob = gradio_client.Client(url, auth=("bob", "bob-pw-22"), verbose=False)
        _chat(bob, "What will there be at the first annual family day?")
        assert [c.title[:9] for c in store.list("user:bob")] == ["What will"]
        assert len(store.list("user:alice")) == 1 and store.get("user:bob", mine[0].id) is None
        # what the page shows on load (the app's own load handler, as each user's request)
        restore = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "restore")
        shown = restore(None, gr.Request(username="alice"))
        assert "200 laptops" in _text(shown[0][-1]["content"]) and shown[-2]["value"] == mine[0].id
        store.save("user:carol", None, "asked while carol still had access", MESSAGES, [], [])
        hidden = restore(None, gr.Request(username="carol"))
        assert hidden[0] == [] and hidden[-2]["choices"] == []
    finally:
        demo.close()
    # no sign-in (ui_server): one browser's cookie names its conversations; no cookie, nothing is kept
    browser_id = "Qk" + "r" * 30
    before = {c.id for c in store.list(f"browser:{browser_id}")}
    browser = _client(ui_server.url)
    browser.cookies["rag_browser"] = browser_id
    _chat(browser, LAPTOPS)
    assert len({c.id for c in store.list(f"browser:{browser_id}")} - before) == 1
    with sqlite3.connect(store.path) as db:
        count = db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
    _chat(_client(ui_server.url), LAPTOPS)
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == count
