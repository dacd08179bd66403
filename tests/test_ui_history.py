"""Saved conversations (issue 17, "conversations that last"): the SQLite store beside the index, who owns
a conversation, and the chat's stopped-answer marker. The UI flows are in test_ui_api / test_ui_browser."""

from __future__ import annotations

import sqlite3

import pytest

from ui.history import (MAX_CONVERSATIONS, ConversationStore, clean_title, history_db_path, owner_of,
                        title_for)

MSGS = [{"role": "user", "content": "How many laptops?"},
        {"role": "assistant", "content": 'Two hundred <button class="rag-cite rag-t-1 rag-n-1">[1]</button>'}]
HIST = [{"role": "user", "content": "How many laptops?"}, {"role": "assistant", "content": "Two hundred [1]."}]
TURNS = ['<div class="rag-turn rag-tb-1" data-turn="1">passage</div>']


@pytest.fixture()
def store(tmp_path):
    return ConversationStore(history_db_path(tmp_path / ".rag"), collection="docs")


def test_saved_conversation_comes_back_exactly_and_becomes_current(store, tmp_path):
    cid = store.save("user:alice", None, "How many laptops were delivered on January 23, 2023?", MSGS, HIST, TURNS)
    assert (tmp_path / ".rag" / "conversations.sqlite").is_file()
    got = store.get("user:alice", cid)
    assert (got.messages, got.history, got.turns) == (MSGS, HIST, TURNS)
    assert got.title == "How many laptops were delivered on January 23, 2023?"
    assert store.current("user:alice").id == cid
    # an update keeps the id and the title, replaces the content
    more = MSGS + [{"role": "user", "content": "And blankets?"}]
    assert store.save("user:alice", cid, "ignored", more, HIST, TURNS) == cid
    assert store.get("user:alice", cid).messages == more and store.get("user:alice", cid).title.startswith("How")
    store.set_current("user:alice", None)  # "New conversation": a reload then shows an empty chat
    assert store.current("user:alice") is None
    assert [c.id for c in store.list("user:alice")] == [cid]


def test_one_owner_never_reaches_another_owners_conversation(store):
    mine = store.save("user:alice", None, "alice's question", MSGS, HIST, TURNS)
    assert store.list("user:bob") == [] and store.current("user:bob") is None
    assert store.get("user:bob", mine) is None
    assert store.rename("user:bob", mine, "stolen") is False
    assert store.delete("user:bob", mine) is False
    # saving "into" alice's id as bob creates bob's own conversation and leaves alice's untouched
    bobs = store.save("user:bob", mine, "bob's question", [], [], [])
    assert bobs != mine and store.get("user:alice", mine).messages == MSGS
    assert [c.title for c in store.list("user:alice")] == ["alice's question"]
    # another collection of the same state folder is a separate list
    other = ConversationStore(store.path, collection="other")
    assert other.list("user:alice") == [] and other.get("user:alice", mine) is None
    # malformed ids are refused before SQL
    for bad in ("", None, "' OR 1=1 --", mine.upper(), mine + "0"):
        assert store.get("user:alice", bad) is None and store.delete("user:alice", bad) is False


def test_rename_and_delete(store):
    cid = store.save("browser:" + "a" * 32, None, "first", MSGS, HIST, TURNS)
    owner = "browser:" + "a" * 32
    assert store.rename(owner, cid, "  Laptops\nmemo  ") is True
    assert store.list(owner)[0].title == "Laptops memo"
    with pytest.raises(ValueError, match="title is empty"):
        store.rename(owner, cid, "   ")
    assert store.delete(owner, cid) is True
    assert store.list(owner) == [] and store.current(owner) is None and store.get(owner, cid) is None


def test_each_owner_keeps_a_bounded_number_of_conversations(store):
    owner = "user:carol"
    with sqlite3.connect(store.path) as db:  # many rows at once, as if saved over months
        db.executemany("INSERT INTO conversations VALUES (?, ?, 'docs', 't', ?, ?, '{}')",
                       [(f"{i:032x}", owner, i, i) for i in range(MAX_CONVERSATIONS)])
    store.save(owner, None, "newest", [], [], [])
    listed = store.list(owner, limit=10_000)
    assert len(listed) == MAX_CONVERSATIONS and listed[0].title == "newest"
    assert f"{0:032x}" not in {c.id for c in listed}  # the least recently used one was dropped


def test_owner_comes_from_the_sign_in_first_then_the_browser_cookie():
    browser = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFi"
    assert owner_of("alice", {"rag_browser": browser}) == "user:alice"
    assert owner_of(None, {"rag_browser": browser}) == f"browser:{browser}"
    assert owner_of(None, {}) is None
    assert owner_of(None, {"rag_browser": "short"}) is None
    assert owner_of(None, {"rag_browser": "x" * 30 + "; drop"}) is None


def test_titles_are_one_short_line():
    assert title_for("  What   is\nthis? ") == "What is this?"
    assert len(title_for("word " * 50)) == 60 and title_for("word " * 50).endswith("…")
    assert len(clean_title("x" * 500)) == 80


def test_a_stopped_answer_keeps_its_partial_text_and_says_it_stopped():
    from ui.chat import STOPPED_NOTE, stopped_messages

    streaming = [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "text", "text": "The memo says 200 ▍"}]}]
    out = stopped_messages(streaming)
    assert out[-1]["content"] == "The memo says 200\n\n" + STOPPED_NOTE
    waiting = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "_Searching the documents…_"}]
    assert stopped_messages(waiting)[-1]["content"] == STOPPED_NOTE
    finished = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Done [1]."}]
    assert stopped_messages(finished) is None and stopped_messages([]) is None
