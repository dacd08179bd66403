"""Who is asking, and what they may see and do: the one place access decisions are made.

Every entry point (CLI, UI, REST API, OpenAI-compatible chat, MCP) turns its caller into a `Caller`
and hands it to the pipeline; nothing else decides visibility or permissions.

- Visibility: a chunk (or a file, whose chunks all carry the same labels) is visible to a caller who
  holds at least one of its ACL labels. The search filter built from a caller applies inside Qdrant
  on every leg, so what a caller may not see is never ranked, shown, listed or cited.
- Permissions: roles are ordered reader < editor < admin. A reader searches and asks; an editor also
  ingests and removes files (only files it can see); an admin also manages keys and users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterable

from rag.errors import RagError
from rag.models import SearchFilter


class Role(str, Enum):
    """What a caller may do; each role includes the ones before it."""

    READER = "reader"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_ORDER.index(self)

    @classmethod
    def parse(cls, value: str) -> "Role":
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise RagError(f"role {value!r} is unknown; use one of {', '.join(r.value for r in cls)}") from None


_ROLE_ORDER = [Role.READER, Role.EDITOR, Role.ADMIN]


class Action(str, Enum):
    """Operations that need a permission check, with the least role allowed to perform them."""

    SEARCH = "search"
    ASK = "ask"
    LIST_FILES = "list_files"
    READ_SOURCE = "read_source"
    STATS = "stats"
    INGEST = "ingest"
    REMOVE = "remove"
    CANCEL_JOB = "cancel_job"
    MANAGE_KEYS = "manage_keys"

    @property
    def least_role(self) -> Role:
        return _LEAST_ROLE[self]


_LEAST_ROLE = {
    Action.SEARCH: Role.READER,
    Action.ASK: Role.READER,
    Action.LIST_FILES: Role.READER,
    Action.READ_SOURCE: Role.READER,
    Action.STATS: Role.READER,
    Action.INGEST: Role.EDITOR,
    Action.REMOVE: Role.EDITOR,
    Action.CANCEL_JOB: Role.EDITOR,
    Action.MANAGE_KEYS: Role.ADMIN,
}


class AccessDenied(RagError):
    """The caller's role does not allow the action, or the object is not visible to its labels."""


@dataclass(frozen=True)
class Caller:
    """An identified caller: a name (key, user, or "local"), the ACL labels it holds, its role."""

    name: str
    labels: tuple[str, ...] = field(default_factory=tuple)
    role: Role = Role.READER

    @classmethod
    def local(cls, labels: Iterable[str], role: Role = Role.ADMIN) -> "Caller":
        """The operator at the machine (CLI in-process, a loopback UI without sign-in)."""
        return cls(name="local", labels=tuple(labels), role=role)

    def can(self, action: Action) -> bool:
        return self.role.rank >= action.least_role.rank

    def require(self, action: Action) -> None:
        """Raise AccessDenied unless this caller's role allows `action`."""
        if not self.can(action):
            raise AccessDenied(f"{self.name!r} has role {self.role.value!r}; {action.value!r} needs "
                               f"{action.least_role.value!r} or above")

    def sees(self, acl: Iterable[str] | None) -> bool:
        """True when an object carrying `acl` labels is visible to this caller."""
        return bool(set(acl or ()) & set(self.labels))

    def search_filter(self, base: SearchFilter | None = None) -> SearchFilter:
        """`base` (or no filter) narrowed to this caller's labels: a filter can narrow, never widen.

        A `base.acl` is intersected with the caller's labels, so a request that names labels the
        caller does not hold gets nothing extra.
        """
        held = list(self.labels)
        if base is None:
            return SearchFilter(acl=held)
        acl = [label for label in base.acl if label in set(held)] if base.acl is not None else held
        return SearchFilter(acl=acl, file_paths=base.file_paths, file_types=base.file_types,
                            path_prefix=base.path_prefix, ingested_after=base.ingested_after,
                            ingested_before=base.ingested_before)


def resolve_roots(roots: Iterable[str | Path] | None) -> list[Path]:
    """Configured folders (ingest roots, eval roots) as absolute, resolved paths; none means nothing allowed."""
    return [Path(r).expanduser().resolve() for r in roots or []]


def root_of(path: Path, roots: Iterable[Path]) -> Path | None:
    """The root among `roots` that `path` is, or lies under (compared as given: resolve both first), else None."""
    for root in roots:
        if path == root or root in path.parents:
            return root
    return None
