"""Server paths a visitor names (folder ingest, eval reports), confined to the operator's roots.

One rule for every tab that reads a server path: the path is checked as text first (the pipeline's
`check_path_text`: NUL bytes and absurd lengths), resolved (symlinks followed, so a link cannot
lead out), and must lie inside one of the configured roots, with no hidden component below the root.
"""

from __future__ import annotations

from pathlib import Path

from rag.access import root_of
from rag.errors import RagError
from rag.pipeline import check_path_text


class PathRefused(RagError):
    """A visitor-supplied path that is malformed, outside the roots, hidden or missing."""


def confine(raw: str | None, roots: list[Path], what: str = "path") -> Path:
    """`raw` resolved inside one of `roots`, existing and not hidden; else PathRefused with one readable line.

    A relative `raw` is taken relative to the first root. Messages never include a traceback; they do
    say which rule refused the path (callers that must not reveal it, like the Eval tab, replace them).
    """
    text = (raw or "").strip()
    if not text:
        raise PathRefused(f"enter a {what} first")
    try:
        check_path_text(text)  # NUL bytes, absurd lengths: refused before the OS sees them
    except RagError as exc:
        raise PathRefused(str(exc)) from None
    if not roots:
        raise PathRefused(f"no folders are configured for this {what}")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, names too long for the OS
        raise PathRefused(f"the {what} cannot be resolved ({type(exc).__name__})") from None
    root = root_of(resolved, roots)
    if root is None:
        raise PathRefused(f"{text}: outside the folders allowed here ({', '.join(map(str, roots))})")
    if any(part.startswith(".") for part in resolved.relative_to(root).parts):
        raise PathRefused(f"{text}: hidden files and folders are not read")
    try:
        exists = resolved.exists()
    except OSError:
        exists = False
    if not exists:
        raise PathRefused(f"{text}: no such file or folder")
    return resolved
