"""Issue 8, crash safety: `kill -9` of `rag ingest` at varied points of a real folder's ingest.

After every kill the store is reopened and checked: each point's id is the one sync derives from its
payload (uuid5(path, hash, index)), so the manifest read back from the store (ingest.sync.read_manifest)
describes exactly the points there are, and every file it calls complete has all its chunks. A final
run finishes the work, and the point set and payloads equal a clean ingest of the same folder.

Guards the write order in ingest/sync.py (upsert new version, then delete the others; ids stable per
file version) and the Edge WAL durability in rag/store.py. Without stable ids a redo would duplicate
chunks; deleting the old version before the upsert would lose a file on a kill.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.sync import chunk_id, ingest_paths, read_manifest
from rag.store import EdgeStore
from tests.conftest import REPO_ROOT

MIXED = ["fake-memo.pdf", "family-day.eml", "stanley-cups.csv", "book-war-and-peace-1p.txt",
         "docx-tables.docx", "simple.odt"]
SQUAD = ["Sky_United_Kingdom.md"]
SEED = 8

# `rag ingest` in a process that SIGKILLs itself at a chosen write boundary of the store: a timer
# alone rarely lands inside the few milliseconds a write takes, so half of the rounds aim there.
KILLER = """
import os, signal, sys
from rag import store as store_mod

op, nth, frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
calls = [0]
orig_upsert, orig_delete = store_mod.EdgeStore.upsert, store_mod.EdgeStore.delete_file

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def upsert(self, points):
    if op == "upsert":
        calls[0] += 1
        if calls[0] == nth:  # part of the batch reaches the WAL, then the process dies
            cut = int(len(points) * frac)
            if cut:
                orig_upsert(self, points[:cut])
            die()
    return orig_upsert(self, points)

def delete_file(self, path, keep_hash=None):
    if op == "delete":
        calls[0] += 1
        if calls[0] == nth:  # the new version is stored, the old one not yet deleted
            die()
    return orig_delete(self, path, keep_hash)

store_mod.EdgeStore.upsert, store_mod.EdgeStore.delete_file = upsert, delete_file
from rag.cli import main
sys.exit(main(["ingest", *sys.argv[4:]]))
"""


def _env(store_root: Path, minilm_path: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RAG_QDRANT_PATH": str(store_root), "RAG_COLLECTION": "crash", "RAG_EMBED_MODEL": minilm_path,
        "RAG_RERANK_MODEL": "none", "RAG_LLM_PROVIDER": "extractive", "RAG_CHUNK_TOKENS": "128",
        "RAG_CHUNK_OVERLAP_TOKENS": "16", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1", "PYTHONPATH": str(REPO_ROOT),
    })
    env.pop("RAG_QDRANT_URL", None)
    env.pop("RAG_CONFIG", None)
    return env


def _start(folder: Path, env: dict[str, str], cwd: Path, log: Path, json_out: bool = False,
           kill_at: tuple[str, int, float] | None = None) -> subprocess.Popen:
    tail = [str(folder)] + (["--json"] if json_out else [])
    if kill_at is None:
        args = [sys.executable, "-m", "rag.cli", "ingest", *tail]
    else:
        op, nth, frac = kill_at
        args = [sys.executable, "-c", KILLER, op, str(nth), str(frac), *tail]
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)


def _wait_for_indexing(proc: subprocess.Popen, log: Path, timeout: float = 120) -> bool:
    """Wait until the ingest's progress bar appears (models loaded, manifest read); False if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if re.search(r"\d+/\d+ files", log.read_text(errors="replace")):  # the bar's "0/7 files · name"
            return True
        time.sleep(0.05)
    raise AssertionError(f"ingest did not start indexing within {timeout}s: {log.read_text()[-2000:]}")


def _points(store_root: Path) -> dict[str, dict]:
    store = EdgeStore(store_root, "crash")
    try:
        if store.info() is None:
            return {}
        return {i: p for i, p, _v in store.iter_payloads(fields=["file_path", "file_hash", "chunk_index", "chunk_count"])}
    finally:
        store.close()


def _check_consistent(store_root: Path) -> tuple[int, int]:
    """The store after a crash: ids match payloads, the manifest agrees with the points.

    Returns (complete files, incomplete files)."""
    points = _points(store_root)
    for point_id, p in points.items():
        assert point_id == chunk_id(p["file_path"], p["file_hash"], p["chunk_index"]), p
        assert 0 <= p["chunk_index"] < p["chunk_count"], p
    store = EdgeStore(store_root, "crash")
    try:
        if points:
            assert store.info() is not None, "points without collection metadata"
        manifest = read_manifest(store)
        assert sum(sum(entry.counts.values()) for entry in manifest.values()) == len(points) == (store.count() if points else 0)
    finally:
        store.close()
    complete = incomplete = 0
    for path, entry in manifest.items():
        file_hash = entry.complete_hash()
        if file_hash is None:
            incomplete += 1
            continue
        complete += 1
        ids = {i for i, p in points.items() if p["file_path"] == path}
        assert ids == {chunk_id(path, file_hash, n) for n in range(entry.expected[file_hash])}, path
    return complete, incomplete


def _signature(points: dict[str, dict]) -> set[tuple]:
    return {(i, p["file_path"], p["file_hash"], p["chunk_index"], p["chunk_count"]) for i, p in points.items()}


@pytest.mark.slow  # six `rag ingest` processes, five killed mid-run
def test_kill_9_during_ingest_then_rerun_equals_clean_ingest(tmp_path, evaldata, minilm_path, settings, embedder):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in MIXED:
        shutil.copy(evaldata / "docs-mixed" / "files" / name, folder / name)
    for name in SQUAD:
        shutil.copy(evaldata / "squad" / "docs" / name, folder / name)
    store_root = tmp_path / "crash-store"
    env = _env(store_root, minilm_path)
    rng = random.Random(SEED)
    # (what changes on disk before the round, how the round dies)
    plan = [
        (None, "timer"),                                   # killed while parsing/embedding
        (None, ("upsert", 1, rng.uniform(0.2, 0.8))),      # dies half-way through a batch upsert
        (None, ("delete", rng.randint(2, 4), 0.0)),        # dies between one file's upsert and cleanup
        ("edit", ("delete", 1, 0.0)),                      # new version stored, old version not deleted yet
        ("remove", "timer"),                               # a file vanished; killed at a random moment
    ]
    landed = 0
    history = []
    for round_no, (change, kill) in enumerate(plan):
        if change == "edit":
            with (folder / "book-war-and-peace-1p.txt").open("a", encoding="utf-8") as fh:
                fh.write("\n\nAn added paragraph about Prince Andrei and the battle of Austerlitz.\n")
        elif change == "remove":
            (folder / "stanley-cups.csv").unlink()
        log = tmp_path / f"round{round_no}.log"
        proc = _start(folder, env, tmp_path, log, kill_at=None if kill == "timer" else kill)
        try:
            if kill == "timer":
                started = _wait_for_indexing(proc, log)
                delay = rng.uniform(0.0, 4.0) if started else 0.0
                time.sleep(delay)
                alive = proc.poll() is None
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
            else:
                delay = None
                proc.wait(timeout=400)
                alive = proc.returncode == -signal.SIGKILL  # it reached the write boundary and died there
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        landed += alive
        complete, incomplete = _check_consistent(store_root)
        history.append((round_no, kill if kill == "timer" else kill[:2], delay and round(delay, 2), alive,
                        complete, incomplete))
    # the kills must land mid-run (otherwise this test proves nothing); write-boundary kills always do
    assert landed >= 4, history
    assert any(h[5] for h in history), f"no round left a partial file behind: {history}"

    log = tmp_path / "final.log"
    proc = _start(folder, env, tmp_path, log, json_out=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log.read_text()[-3000:]
    report = json.loads(out)
    assert report["failed"] == 0, report["failures"]
    _check_consistent(store_root)
    crashed = _points(store_root)

    clean_store = EdgeStore(tmp_path / "clean-store", "crash")
    clean_report = ingest_paths([folder], settings, clean_store, embedder, progress=False)
    clean = {i: {k: p[k] for k in ("file_path", "file_hash", "chunk_index", "chunk_count")}
             for i, p, _v in clean_store.iter_payloads()}
    clean_store.close()
    assert clean_report.failed == 0
    # no duplicate and no missing chunk: same ids, same (file, version, index) for each
    assert _signature(crashed) == _signature(clean), history
    assert not any(p["file_path"].endswith("stanley-cups.csv") for p in crashed.values())
    print("rounds (round, delay s, killed mid-run, complete files, incomplete files):", history)
