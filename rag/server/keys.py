"""API keys: created once (shown once), stored as a salted hash in SQLite beside the store.

A key looks like `rag_<id>_<secret>`: `<id>` (8 hex chars) finds the row, `<secret>` (32 random
bytes, url-safe) is checked against `sha256(salt || secret)`. The secret is high-entropy, so a fast
hash is enough (no password stretching needed) and verification costs microseconds per request.
Only the id and the hash are stored; the key itself is never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from rag.access import Caller, Role
from rag.errors import RagError

KEY_PREFIX = "rag_"


@dataclass(frozen=True)
class KeyInfo:
    """What `rag keys list` shows about a key (never the key or its hash)."""

    name: str
    key_id: str
    labels: tuple[str, ...]
    role: str
    created_at: str
    revoked_at: str | None

    def to_dict(self) -> dict:
        return {"name": self.name, "key_id": self.key_id, "labels": list(self.labels), "role": self.role,
                "created_at": self.created_at, "revoked_at": self.revoked_at,
                "active": self.revoked_at is None}


def keys_db_path(state_dir: str | Path) -> Path:
    """Where keys live: `<state_dir>/server.sqlite` (shared with replicas that share the state dir)."""
    return Path(state_dir).expanduser() / "server.sqlite"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8")).digest()


class KeyStore:
    """Create, list, revoke and verify API keys. Thread-safe; one short transaction per call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._local = threading.local()
        with self._connect() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS api_keys (
                name TEXT PRIMARY KEY, key_id TEXT UNIQUE NOT NULL, salt BLOB NOT NULL, digest BLOB NOT NULL,
                labels TEXT NOT NULL, role TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)""")

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection (opened once: every API request checks a key, so no per-call connect).

        Autocommit mode: each statement is its own transaction, so a key revoked by `rag keys revoke` in
        another process is refused on the very next request.
        """
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def create(self, name: str, labels: Iterable[str], role: Role | str = Role.READER) -> str:
        """Create a key and return it; this is the only time the key is available."""
        name = (name or "").strip()
        if not name or len(name) > 64 or not all(c.isalnum() or c in "-_.@" for c in name):
            raise RagError(f"key name {name!r}: use 1-64 letters, digits, '-', '_', '.', '@'")
        role = Role.parse(role) if not isinstance(role, Role) else role
        labels = sorted({str(label).strip() for label in labels if str(label).strip()})
        if not labels:
            raise RagError(f"key {name!r}: give at least one --acl LABEL (the labels its holder may read)")
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # check-then-insert is one transaction, across processes too
            row = db.execute("SELECT revoked_at FROM api_keys WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None:
                db.execute("ROLLBACK")
                raise RagError(f"key {name!r} already exists; revoke it first (rag keys revoke {name})")
            db.execute("DELETE FROM api_keys WHERE name = ?", (name,))
            db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                       (name, key_id, salt, _digest(salt, secret), ",".join(labels), role.value, _now()))
        return f"{KEY_PREFIX}{key_id}_{secret}"

    def list(self) -> list[KeyInfo]:
        with self._connect() as db:
            rows = db.execute("SELECT name, key_id, labels, role, created_at, revoked_at FROM api_keys "
                              "ORDER BY name").fetchall()
        return [KeyInfo(r[0], r[1], tuple(x for x in r[2].split(",") if x), r[3], r[4], r[5]) for r in rows]

    def revoke(self, name: str) -> None:
        with self._lock, self._connect() as db:
            cur = db.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                             (_now(), name))
            if cur.rowcount == 0:
                raise RagError(f"no active key named {name!r}; see rag keys list")

    def any_active(self) -> bool:
        """True when at least one non-revoked key exists (then every request needs a key)."""
        with self._connect() as db:
            return db.execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None

    def caller_for_name(self, name: str) -> Caller | None:
        """The Caller of the active key named `name` (a UI session signed in with that key), else None."""
        with self._connect() as db:
            row = db.execute("SELECT labels, role FROM api_keys WHERE name = ? AND revoked_at IS NULL",
                             (name,)).fetchone()
        if row is None:
            return None
        return Caller(name=name, labels=tuple(x for x in row[0].split(",") if x), role=Role.parse(row[1]))

    def authenticate(self, key: str) -> Caller | None:
        """The Caller a key maps to, or None for an unknown, malformed or revoked key."""
        key = (key or "").strip()
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        key_id, _, secret = key[len(KEY_PREFIX):].partition("_")
        if not key_id or not secret:
            return None
        with self._connect() as db:
            row = db.execute("SELECT name, salt, digest, labels, role, revoked_at FROM api_keys WHERE key_id = ?",
                             (key_id,)).fetchone()
        if row is None or row[5] is not None:
            return None
        name, salt, digest, labels, role, _ = row
        if not hmac.compare_digest(_digest(salt, secret), digest):
            return None
        return Caller(name=name, labels=tuple(x for x in labels.split(",") if x), role=Role.parse(role))
