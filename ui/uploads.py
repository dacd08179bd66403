"""Uploaded files into the upload folder: sanitized names, never a write outside it."""

from __future__ import annotations

import re
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
                  names: list[str] | None = None) -> list[tuple[str, Path]]:
    """Copy uploaded temp files into `upload_dir` under sanitized names.

    `names` are the names the user gave (default: the sources' base names). Returns
    `(display name, stored path)` pairs. A file with the same sanitized name replaces the earlier
    upload, so uploading a new version of `report.pdf` re-indexes it instead of adding a copy.
    Raises RagError if a target would land outside `upload_dir` (defence in depth: the sanitizer
    already makes that impossible).
    """
    root = Path(upload_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    stored: list[tuple[str, Path]] = []
    for i, source in enumerate(sources):
        source = Path(source)
        display = names[i] if names and i < len(names) else source.name
        target = (root / safe_upload_name(display)).resolve()
        if target.parent != root:
            raise RagError(f"upload {display!r}: refusing to write outside the upload folder {root}")
        shutil.copyfile(source, target)
        stored.append((display, target))
    return stored
