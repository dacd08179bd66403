"""Which files an ingest never looks at: hidden files and folders, editor and download temp files.

One rule for the full sync (`ingest.sync.discover_files`) and the watcher (`ingest.watch`): a file the
watcher would not report is a file a full sync does not index, and the other way round. This module
imports nothing of the product, so both can use it.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

__all__ = ["TEMP_PATTERNS", "is_ignored", "ignored_name"]

# Lock files, partial downloads and editor scratch files: indexing them is noise at best, a parse error
# at worst, and the real file arrives (usually by a rename) once the program is done.
TEMP_PATTERNS = ("~$*", "*.tmp", ".#*", "*.swp", "*.swo", "*.swx", "*.part", "*.partial", "*.crdownload",
                 "*.download", "*~", "4913")  # 4913: the probe file vim creates to test a folder is writable


def ignored_name(name: str) -> bool:
    """True for one path component that is never indexed: hidden (".git", ".notes.md") or a temp file name."""
    if name.startswith("."):
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TEMP_PATTERNS)


def is_ignored(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True for a path under `root` that is never indexed: inside a hidden folder, hidden, or a temp file.

    Only the part below `root` counts (a synced folder may itself live under a hidden one); a path
    outside `root` is judged by its name alone, and `root` itself (a file named explicitly) never is.
    """
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        parts = Path(path).parts[-1:]
    if not parts:
        return False
    # Folders below the root only hide when hidden; a folder named like a temp file ("x.part/") still syncs.
    return any(part.startswith(".") for part in parts[:-1]) or ignored_name(parts[-1])
