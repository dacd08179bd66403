"""The layering contract in `.importlinter` holds, and covers every module of the core library."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The modules of rag/ that sit above the core library; every other module of rag/ is core.
UPPER_LAYERS = {"rag.pipeline", "rag.cli", "rag.server"}


def _contract_sources(name: str) -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(REPO / ".importlinter")
    return set(parser[f"importlinter:contract:{name}"]["source_modules"].split())


def test_every_rag_module_is_in_a_layer():
    """A new module of rag/ must be named in the core contract, or be one of the upper layers."""
    core = _contract_sources("core")
    top_level = {f"rag.{p.stem}" for p in (REPO / "rag").glob("*.py") if p.stem != "__init__"}
    top_level |= {f"rag.{p.name}" for p in (REPO / "rag").iterdir() if (p / "__init__.py").is_file()}
    unassigned = sorted(top_level - core - UPPER_LAYERS)
    assert unassigned == [], f"add these to the 'core' contract in .importlinter (or to an upper layer): {unassigned}"
    assert core.isdisjoint(UPPER_LAYERS)


def test_import_contracts_are_kept():
    """`lint-imports` checks every contract (direct and indirect imports, function-level ones too)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (scripts/setup.sh --test installs it)")
    result = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
