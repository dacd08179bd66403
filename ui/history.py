"""Saved chat conversations: one SQLite file beside the store, rows keyed by their owner.

An owner is decided by the server, never by a form field: the signed-in user's name when the UI asks
visitors to sign in (`user:<name>`), else the browser's own random id (`browser:<id>`, a cookie the page
sets once, see `BROWSER_ID_JS`) on a UI without sign-in. Every read and write names the owner in its
`WHERE` clause, so one owner can never list, open, rename or delete another's conversation; an unknown
or foreign id behaves exactly like a missing one.

A conversation is stored as the chat shows it (messages with their citation buttons, the evidence
blocks per turn) plus the plain question/answer history used for follow-ups, so selecting one restores
it exactly. Sizes are bounded: the UI already caps what a conversation keeps; titles and the number of
conversations per owner are capped here.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_TITLE_CHARS = 80
MAX_CONVERSATIONS = 200  # per owner and collection; the least recently used are dropped first
MAX_STATE_BYTES = 4_000_000  # one conversation's JSON (40 messages and 20 evidence blocks fit easily)
BROWSER_COOKIE = "rag_browser"
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_BROWSER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def history_db_path(state_dir: str | Path) -> Path:
    """`<state_dir>/conversations.sqlite`: beside the store, like the job queue."""
    return Path(state_dir).expanduser() / "conversations.sqlite"


def owner_of(username: str | None, cookies: dict[str, str] | None) -> str | None:
    """Whose conversations a request sees: the signed-in user, else the browser's id cookie, else nobody.

    A signed-in user is always identified by the sign-in (a cookie cannot make them someone else).
    A malformed browser id is ignored (no history is kept for that request).
    """
    if username:
        return f"user:{username}"
    browser = (cookies or {}).get(BROWSER_COOKIE, "")
    return f"browser:{browser}" if _BROWSER_ID_RE.match(browser) else None


def title_for(question: str) -> str:
    """A conversation's default title: its first question on one line, shortened."""
    flat = " ".join((question or "").split())
    return flat if len(flat) <= 60 else flat[:59].rstrip() + "…"


def clean_title(title: str) -> str:
    """A user-given title on one line, at most MAX_TITLE_CHARS; raises ValueError when empty."""
    flat = " ".join((title or "").split())[:MAX_TITLE_CHARS]
    if not flat:
        raise ValueError("the conversation title is empty; type a name, then press Rename")
    return flat


@dataclass
class ConversationInfo:
    """One row of the conversation list."""

    id: str
    title: str
    updated_at: float


@dataclass
class Conversation(ConversationInfo):
    """A saved conversation: what the chat shows and the history carried into follow-ups."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    turns: list[str] = field(default_factory=list)


class ConversationStore:
    """Conversations per owner and collection. Each method is one short SQLite transaction."""

    def __init__(self, path: str | Path, collection: str = "") -> None:
        self.path = Path(path)
        self.collection = collection
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS conversations (
                id TEXT PRIMARY KEY, owner TEXT NOT NULL, collection TEXT NOT NULL, title TEXT NOT NULL,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, state TEXT NOT NULL)""")
            db.execute("CREATE INDEX IF NOT EXISTS conversations_owner "
                       "ON conversations(owner, collection, updated_at)")
            # The conversation each owner had open last, so a reload reopens it (none after "New").
            db.execute("CREATE TABLE IF NOT EXISTS current (owner TEXT NOT NULL, collection TEXT NOT NULL, "
                       "conversation_id TEXT, PRIMARY KEY (owner, collection))")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def list(self, owner: str, limit: int = MAX_CONVERSATIONS) -> list[ConversationInfo]:
        """The owner's conversations, most recently updated first."""
        with self._connect() as db:
            rows = db.execute("SELECT id, title, updated_at FROM conversations WHERE owner=? AND collection=? "
                              "ORDER BY updated_at DESC LIMIT ?", (owner, self.collection, limit)).fetchall()
        return [ConversationInfo(*row) for row in rows]

    def get(self, owner: str, conversation_id: str | None) -> Conversation | None:
        """One of the owner's conversations; None when missing, malformed or someone else's."""
        if not conversation_id or not _ID_RE.match(conversation_id):
            return None
        with self._connect() as db:
            row = db.execute("SELECT id, title, updated_at, state FROM conversations "
                             "WHERE id=? AND owner=? AND collection=?",
                             (conversation_id, owner, self.collection)).fetchone()
        if row is None:
            return None
        state = json.loads(row[3])
        return Conversation(row[0], row[1], row[2], messages=state.get("messages", []),
                            history=state.get("history", []), turns=state.get("turns", []))

    def save(self, owner: str, conversation_id: str | None, title: str, messages: list, history: list,
             turns: list[str]) -> str:
        """Create (id None or not the owner's) or update a conversation; make it the owner's current one.

        Returns its id. The title is only set when the conversation is created (renames are kept).
        """
        state = json.dumps({"messages": messages, "history": history, "turns": turns}, ensure_ascii=False)
        while len(state.encode("utf-8")) > MAX_STATE_BYTES and len(turns) > 1:
            turns = turns[1:]  # drop the oldest evidence blocks first: the messages are what a user rereads
            state = json.dumps({"messages": messages, "history": history, "turns": turns}, ensure_ascii=False)
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            updated = 0
            if conversation_id and _ID_RE.match(conversation_id):
                updated = db.execute("UPDATE conversations SET state=?, updated_at=? WHERE id=? AND owner=? "
                                     "AND collection=?", (state, now, conversation_id, owner,
                                                          self.collection)).rowcount
            if not updated:
                conversation_id = uuid.uuid4().hex
                db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (conversation_id, owner, self.collection, title_for(title) or "Conversation",
                            now, now, state))
                db.execute("DELETE FROM conversations WHERE owner=? AND collection=? AND id NOT IN (SELECT id "
                           "FROM conversations WHERE owner=? AND collection=? ORDER BY updated_at DESC LIMIT ?)",
                           (owner, self.collection, owner, self.collection, MAX_CONVERSATIONS))
            self._set_current(db, owner, conversation_id)
            db.execute("COMMIT")
        return conversation_id

    def rename(self, owner: str, conversation_id: str | None, title: str) -> bool:
        """Give one of the owner's conversations a new title; False when it is not theirs or missing."""
        title = clean_title(title)
        if not conversation_id or not _ID_RE.match(conversation_id):
            return False
        with self._connect() as db:
            return db.execute("UPDATE conversations SET title=? WHERE id=? AND owner=? AND collection=?",
                              (title, conversation_id, owner, self.collection)).rowcount == 1

    def delete(self, owner: str, conversation_id: str | None) -> bool:
        """Delete one of the owner's conversations; False when it is not theirs or missing."""
        if not conversation_id or not _ID_RE.match(conversation_id):
            return False
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            gone = db.execute("DELETE FROM conversations WHERE id=? AND owner=? AND collection=?",
                              (conversation_id, owner, self.collection)).rowcount == 1
            if gone:
                db.execute("UPDATE current SET conversation_id=NULL WHERE owner=? AND collection=? "
                           "AND conversation_id=?", (owner, self.collection, conversation_id))
            db.execute("COMMIT")
        return gone

    def set_current(self, owner: str, conversation_id: str | None) -> None:
        """Remember the conversation the owner has open (None: a new, still empty one)."""
        with self._connect() as db:
            self._set_current(db, owner, conversation_id)

    def current(self, owner: str) -> Conversation | None:
        """The conversation the owner had open last, if it still exists."""
        with self._connect() as db:
            row = db.execute("SELECT conversation_id FROM current WHERE owner=? AND collection=?",
                             (owner, self.collection)).fetchone()
        return self.get(owner, row[0]) if row and row[0] else None

    def _set_current(self, db: sqlite3.Connection, owner: str, conversation_id: str | None) -> None:
        db.execute("INSERT INTO current VALUES (?, ?, ?) ON CONFLICT(owner, collection) "
                   "DO UPDATE SET conversation_id=excluded.conversation_id", (owner, self.collection, conversation_id))


# Installed on page load: a random id for this browser, kept a year in a first-party cookie that is
# sent with the UI's own requests only (SameSite=Strict). It names the browser's conversations on a UI
# without sign-in; a signed-in user is identified by the sign-in instead.
BROWSER_ID_JS = (
    "() => {\n"
    f"  const name = '{BROWSER_COOKIE}';\n"
    "  if (!document.cookie.split('; ').some((c) => c.startsWith(name + '='))) {\n"
    "    const bytes = new Uint8Array(24); crypto.getRandomValues(bytes);\n"
    "    const id = btoa(String.fromCharCode(...bytes)).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');\n"
    "    document.cookie = name + '=' + id + '; path=/; max-age=31536000; SameSite=Strict';\n"
    "  }\n"
    "}"
)
