"""Uploaded files into the upload folder: sanitized, unique names, a size limit, never a write outside it."""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path

from rag.errors import RagError

_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._ ()+-]+")


def safe_upload_name(name: str) -> str:
    """A file name safe to create inside the upload folder.

    Directory parts (either separator) are dropped, so `../../etc/passwd` becomes `passwd`;
    unusual characters become `_`; leading dots go (no hidden files, no `..`); the result is never
    empty and at most 200 characters, keeping the extension.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE_RE.sub("_", base).strip().lstrip(".").strip()
    if not base or set(base) <= {"_", " "}:
        base = "upload"
    if len(base) > 200:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 200 - len(ext) - 1] + "." + ext) if dot and len(ext) <= 16 else base[:200]
    return base


def store_uploads(sources: list[str | Path], upload_dir: str | Path,
                  names: list[str] | None = None, max_bytes: int | None = None) -> list[tuple[str, Path]]:
    """Copy uploaded temp files into `upload_dir`, each under a fresh unique folder.

    `names` are the names the user gave (default: the sources' base names). Returns
    `(display name, stored path)` pairs; the stored path is `upload_dir/<random>/<sanitized name>`, so
    two visitors uploading `report.pdf` never replace each other's file (issue 14 #8) and the
    indexed file still shows its own name.
    A source larger than `max_bytes` is refused with a RagError naming the file and the limit, and is
    deleted (it is a temp copy the upload route made). Raises RagError if a target would land outside
    `upload_dir` (defence in depth: the sanitizer already makes that impossible).
    """
    root = Path(upload_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    sources = [Path(s) for s in sources]
    if max_bytes is not None:
        too_big = [s for s in sources if s.is_file() and s.stat().st_size > max_bytes]
        if too_big:
            for source in too_big:
                source.unlink(missing_ok=True)
            raise RagError(f"{', '.join(s.name for s in too_big)}: larger than the upload limit of "
                           f"{max_bytes / 1e6:g} MB (operator setting server_max_upload_mb); nothing was indexed")
    stored: list[tuple[str, Path]] = []
    for i, source in enumerate(sources):
        display = names[i] if names and i < len(names) else source.name
        folder = root / secrets.token_hex(8)
        target = (folder / safe_upload_name(display)).resolve()
        if target.parent.parent != root:
            raise RagError(f"upload {display!r}: refusing to write outside the upload folder {root}")
        folder.mkdir()
        shutil.copyfile(source, target)
        stored.append((display, target))
    return stored


def discard_upload(path: Path, upload_dir: str | Path) -> None:
    """Delete one stored upload (and its folder) that could not be indexed; never outside `upload_dir`."""
    root = Path(upload_dir).expanduser().resolve()
    path = Path(path).resolve()
    if path.parent.parent != root:
        return
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty: leave it
        pass
