"""Watched folders (ingest.watch): real folders, the real watcher, a real embedded store and MiniLM.

Each end-to-end test edits files the way users do and polls the search until the change shows up (or
is gone), within a bound the test states. Searches use the BM25 leg with made-up words, so a hit is
unambiguous and nothing depends on the embedder's ranking.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from ingest.watch import (FolderWatcher, JobSync, PipelineSync, WatchedFolder, filesystem_type, is_ignored,
                          sync_paths, watched_folders)

BOUND_S = 20.0  # every change must be searchable (or gone) this long after the file system saw it


# -- helpers ----------------------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], bool], timeout: float = BOUND_S, what: str = "condition") -> float:
    """Seconds until `predicate()` held; fails the test after `timeout`."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.2)


def hit_paths(pipeline: Any, word: str) -> set[str]:
    """Files whose chunks match `word` in the BM25 leg."""
    return {h.chunk.file_path for h in pipeline.search(word, k=20, mode="bm25").hits}


def text(word: str, n: int = 3) -> str:
    return " ".join(f"Sentence {i} of this note mentions {word} among ordinary words." for i in range(n)) + "\n"


class Recorder:
    """An on_sync wrapper that keeps every request and the report it produced."""

    def __init__(self, inner: Callable[[Path, set[Path], set[Path]], Any]) -> None:
        self.inner = inner
        self.calls: list[tuple[Path, set[Path], set[Path]]] = []
        self.reports: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, folder: Path, changed: set[Path], deleted: set[Path]) -> Any:
        with self.lock:
            self.calls.append((folder, set(changed), set(deleted)))
        report = self.inner(folder, changed, deleted)
        with self.lock:
            self.reports.append(report)
        return report


@pytest.fixture()
def pipeline(settings, embedder):
    from rag.pipeline import Pipeline

    pipe = Pipeline(settings.replace(rerank_model="none", mode="hybrid"), embedder=embedder)
    yield pipe
    pipe.close()


@pytest.fixture()
def folder(tmp_path) -> Path:
    path = tmp_path / "watched"
    path.mkdir()
    return path


def make_watcher(pipeline: Any, folder: Path, **options: Any) -> tuple[FolderWatcher, Recorder]:
    folders = [WatchedFolder(folder, acl=["team"])]
    recorder = Recorder(PipelineSync(lambda paths, acl: pipeline.ingest(paths, acl=acl, progress=False), folders))
    options = {"quiet_ms": 400, "stable_ms": 300, "max_delay_ms": 5000, "retry_s": 0.5, **options}
    return FolderWatcher(folders, recorder, **options), recorder


@pytest.fixture()
def team_search(pipeline):
    """hit_paths as a caller holding the folder's label."""
    from rag.models import SearchFilter

    def search(word: str) -> set[str]:
        hits = pipeline.search(word, k=20, mode="bm25", flt=SearchFilter(acl=["team"])).hits
        return {h.chunk.file_path for h in hits}
    return search


# -- end to end ---------------------------------------------------------------------------------------------
def test_create_edit_delete_rename_and_move_are_searchable_within_the_bound(pipeline, folder, team_search):
    watcher, recorder = make_watcher(pipeline, folder)
    with watcher:
        time.sleep(0.3)  # the watch thread is up
        note = folder / "note.txt"
        note.write_text(text("zorblax"))
        wait_until(lambda: str(note) in team_search("zorblax"), what="new file searchable")

        note.write_text(text("quintrel"))  # an edit
        wait_until(lambda: str(note) in team_search("quintrel") and not team_search("zorblax"),
                   what="edit searchable, old text gone")

        note.unlink()
        wait_until(lambda: not team_search("quintrel"), what="deleted file gone")

        old = folder / "before.txt"
        old.write_text(text("vellumask"))
        wait_until(lambda: str(old) in team_search("vellumask"), what="file to rename indexed")
        renamed = folder / "after.txt"
        old.rename(renamed)
        wait_until(lambda: team_search("vellumask") == {str(renamed)}, what="renamed file under its new name only")

        sub = folder / "archive" / "2026"
        sub.mkdir(parents=True)
        moved = sub / "after.txt"
        renamed.rename(moved)
        wait_until(lambda: team_search("vellumask") == {str(moved)}, what="moved file under its new path only")

        # A folder moved in from outside raises one event for the folder, none for the files inside it.
        outside = folder.parent / "outside"
        outside.mkdir()
        (outside / "inner.txt").write_text(text("plumbrook"))
        outside.rename(folder / "incoming")
        wait_until(lambda: team_search("plumbrook") == {str(folder / "incoming" / "inner.txt")},
                   what="file of a moved-in folder searchable")

        (folder / "~$lock.docx").write_text("owner lock")
        (folder / ".hidden.txt").write_text(text("ghostword"))
        (folder / "draft.txt.part").write_text(text("ghostword"))
        time.sleep(1.2)  # > quiet_ms: a request would have fired by now
        assert not any(p.name in ("~$lock.docx", ".hidden.txt", "draft.txt.part")
                       for _f, changed, _d in recorder.calls for p in changed)
    status = watcher.status()[0]
    assert status["path"] == str(folder) and status["acl"] == ["team"] and status["syncs"] == len(recorder.calls)
    assert status["last_sync_at"] and status["last_result"]["failed"] == 0 and status["pending_changes"] == 0
    # Chunks carry the folder's labels: a caller without "team" sees none of it.
    assert not hit_paths(pipeline, "vellumask")


@pytest.mark.slow  # 300 files through the watcher: ~70 s
def test_a_burst_of_300_files_is_coalesced_into_few_syncs(pipeline, folder, team_search):
    watcher, recorder = make_watcher(pipeline, folder)
    with watcher:
        time.sleep(0.3)
        started = time.monotonic()
        for i in range(300):
            (folder / f"file{i:03d}.txt").write_text(f"Burst file {i} mentions burstword{i} once.\n")
        # Generous: embedding 300 chunks takes ~5 s on an idle 2-core machine, over a minute on a loaded one.
        wait_until(lambda: len(pipeline.list_files(_team())) >= 300, timeout=240,
                   what="300 files indexed")
        absorbed = time.monotonic() - started
        assert watcher.wait_idle(30)
    assert len(recorder.calls) <= 3, [len(c) for _f, c, _d in recorder.calls]
    assert sum(r.indexed for r in recorder.reports if r is not None) == 300
    assert team_search("burstword299") == {str(folder / "file299.txt")}
    logging.getLogger(__name__).info("300-file burst absorbed in %.1f s with %d sync(s)", absorbed, len(recorder.calls))


def _team():
    from rag.access import Caller

    return Caller.local(["team"])


def test_a_file_written_slowly_is_indexed_once_and_complete(pipeline, folder, tmp_path, team_search, settings,
                                                            embedder):
    from rag.pipeline import Pipeline

    sentences = [f"Paragraph {i} of the slow report explains point {i} in several plain words, enough to fill "
                 f"a few tokens of the chunk budget for this test run. " * 2 for i in range(7)]
    sentences[-1] += "The final sentence names the keyword slowfinale."
    watcher, recorder = make_watcher(pipeline, folder, quiet_ms=500)
    target = folder / "slow.txt"
    with watcher:
        time.sleep(0.3)
        with target.open("w") as handle:  # chunks every 300 ms over about 2 s
            for sentence in sentences:
                handle.write(sentence + "\n\n")
                handle.flush()
                time.sleep(0.3)
        wait_until(lambda: str(target) in team_search("slowfinale"), what="slowly written file complete")
        assert watcher.wait_idle(20)
    indexed = [o for r in recorder.reports if r is not None for o in r.files
               if o.path == str(target) and o.status == "indexed"]
    assert len(indexed) == 1, f"indexed {len(indexed)} times"

    # A clean ingest of the same bytes (another store) makes the same number of chunks.
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    shutil.copy(target, clean_dir / "slow.txt")
    clean = Pipeline(settings.replace(qdrant_path=str(tmp_path / "clean-store"), rerank_model="none"),
                     embedder=embedder)
    try:
        clean_report = clean.ingest([clean_dir], progress=False)
    finally:
        clean.close()
    assert indexed[0].chunks == clean_report.chunks_added > 1


def test_changes_made_while_not_watching_are_found_by_reconcile(pipeline, folder, team_search):
    keep, edit, gone = folder / "keep.txt", folder / "edit.txt", folder / "gone.txt"
    keep.write_text(text("steadfastword"))
    edit.write_text(text("oldversionword"))
    gone.write_text(text("doomedword"))
    pipeline.ingest([folder], acl=["team"], progress=False)
    assert team_search("doomedword") == {str(gone)}

    # The watcher is down: a file is added, one edited, one deleted, one moved into a subfolder.
    edit.write_text(text("newversionword"))
    gone.unlink()
    (folder / "added.txt").write_text(text("latecomerword"))
    (folder / "sub").mkdir()
    keep.rename(folder / "sub" / "keep.txt")

    watcher, recorder = make_watcher(pipeline, folder)
    with watcher:
        watcher.reconcile()
        wait_until(lambda: team_search("latecomerword") == {str(folder / "added.txt")}
                   and team_search("newversionword") == {str(edit)} and not team_search("oldversionword")
                   and not team_search("doomedword")
                   and team_search("steadfastword") == {str(folder / "sub" / "keep.txt")},
                   what="offline changes reconciled")
    assert recorder.calls and folder in recorder.calls[0][1]  # a full sync of the folder


# -- the watcher alone (no model) ----------------------------------------------------------------------------
def test_a_vanished_folder_is_never_synced_and_is_caught_up_when_back(tmp_path, caplog):
    folder = tmp_path / "share"
    folder.mkdir()
    calls: list[tuple[Path, set[Path], set[Path]]] = []
    watcher = FolderWatcher([WatchedFolder(folder)], lambda f, c, d: calls.append((f, c, d)), quiet_ms=200,
                            stable_ms=100, retry_s=0.3)
    with caplog.at_level(logging.INFO, logger="ingest.watch"), watcher:
        time.sleep(0.3)
        (folder / "a.txt").write_text("a")
        wait_until(lambda: len(calls) == 1, timeout=10, what="first sync")
        shutil.rmtree(folder)  # like an unmounted share: its files must not be dropped from the index
        wait_until(lambda: not watcher.status()[0]["available"], timeout=10, what="folder reported missing")
        time.sleep(1.0)
        assert len(calls) == 1
        folder.mkdir()
        (folder / "b.txt").write_text("b")
        wait_until(lambda: len(calls) == 2, timeout=10, what="catch-up sync")
    assert folder in calls[1][1]  # a full sync: it covers whatever happened while it was gone
    assert "missing" in caplog.text


def test_failed_sync_is_retried_as_a_full_sync(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    calls: list[set[Path]] = []

    def flaky(f: Path, changed: set[Path], deleted: set[Path]) -> None:
        calls.append(changed)
        if len(calls) == 1:
            raise RuntimeError("store busy")

    watcher = FolderWatcher([WatchedFolder(folder)], flaky, quiet_ms=100, stable_ms=50, retry_s=0.2)
    with watcher:
        time.sleep(0.3)
        (folder / "x.txt").write_text("x")
        wait_until(lambda: len(calls) >= 2, timeout=10, what="retry")
        assert watcher.wait_idle(5)
        assert watcher.status()[0]["last_error"] is None
    assert calls[1] == {folder}


def test_job_sync_submits_one_watch_job_per_request(tmp_path):
    from ingest.jobs import JobQueue
    from rag.access import Caller

    folder = WatchedFolder(tmp_path / "w", acl=["hr"])
    folder.path.mkdir()
    (folder.path / "a.txt").write_text("a")
    queue = JobQueue(tmp_path / "jobs.sqlite")
    submit = JobSync(queue, "test", [folder], Caller.local(["hr"]))
    job = submit(folder.path, {folder.path / "a.txt"}, set())
    stored = queue.get(job.id)
    assert stored.paths == [str(folder.path / "a.txt")] and stored.acl == ["hr"] and stored.collection == "test"
    assert submit.describe(job)["state"] == "queued"
    assert submit(folder.path, set(), set()) is None  # nothing to do, no job


def test_ignored_names_and_sync_paths(tmp_path):
    root = tmp_path / "r"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("x")
    for name in ("~$report.docx", "x.tmp", ".#x.md", "x.md.swp", "movie.part", "a.pdf.crdownload", ".env",
                 ".git/config", "notes.txt~", "4913"):
        assert is_ignored(root / name, root), name
    for name in ("report.docx", "sub/notes.md", "tmp/report.pdf"):
        assert not is_ignored(root / name, root), name
    # A deleted file is covered by its nearest existing folder; covered paths are dropped.
    assert sync_paths(root, {root / "sub" / "f.txt"}, {root / "sub" / "old.txt"}) == [root / "sub"]
    assert sync_paths(root, {root / "sub" / "f.txt"}, {root / "gone" / "deep" / "x.txt"}) == [root]
    assert sync_paths(root, {root / "sub" / "f.txt", root / "vanished.txt"}, set()) == [root / "sub" / "f.txt"]


def test_network_filesystems_are_polled(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nserver:/export /mnt/share nfs4 rw 0 0\n"
                      "me@host:/ /mnt/my\\040files fuse.sshfs rw 0 0\n")
    assert filesystem_type("/mnt/share/docs", str(mounts)) == "nfs4"
    assert filesystem_type("/mnt/my files/a", str(mounts)) == "fuse.sshfs"
    assert filesystem_type("/home/me", str(mounts)) == "ext4"
    watcher = FolderWatcher([WatchedFolder(tmp_path, polling=True)], lambda *a: None)
    assert watcher._polling_for(watcher.folders[0]) is True


def test_watch_setting_is_parsed(tmp_path, monkeypatch):
    from rag.config import load_settings
    from rag.errors import ConfigError

    config = tmp_path / "rag.toml"
    config.write_text('watch = [{path = "docs", acl = ["team", "hr"]}, {path = "/mnt/share", polling = true}]\n')
    settings = load_settings(config)
    folders = watched_folders(settings.watch)
    assert [f.acl for f in folders] == [["team", "hr"], None] and folders[1].polling is True
    monkeypatch.setenv("RAG_WATCH", "a, b")
    assert [e["path"] for e in load_settings(config).watch] == ["a", "b"]
    config.write_text('watch = [{acl = ["x"]}]\n')
    monkeypatch.delenv("RAG_WATCH")
    with pytest.raises(ConfigError, match="watch"):
        load_settings(config)


def test_server_watch_turns_bursts_into_jobs_and_reconciles_at_start(pipeline, folder, team_search):
    """`rag serve --watch`: the start-up reconcile and each burst become ingest jobs run by the server's writer."""
    from rag.server.state import ServerState

    (folder / "before.txt").write_text(text("prestartword"))  # there before the server started
    pipeline.settings = pipeline.settings.replace(watch=[{"path": str(folder), "acl": ["team"]}])
    state = ServerState.create(pipeline.settings, pipeline=pipeline)
    try:
        state.start_watching()
        wait_until(lambda: team_search("prestartword") == {str(folder / "before.txt")}, what="reconcile job ran")
        settled = lambda: state.watcher.wait_idle(0) and all(j.state == "done" for j in state.jobs.list())  # noqa: E731
        wait_until(settled, what="reconcile job done")
        (folder / "live.txt").write_text(text("liveword"))
        wait_until(lambda: team_search("liveword") == {str(folder / "live.txt")}, what="watch job ran")
        time.sleep(0.5)
        wait_until(settled, what="watch job done")
        jobs = state.jobs.list()
        assert len(jobs) == 2 and all(j.state == "done" and j.acl == ["team"] for j in jobs)
        assert jobs[0].paths == [str(folder / "live.txt")] and jobs[1].paths == [str(folder)]
        watched = pipeline.stats(caller=_team())["watched_folders"]
        assert [w["path"] for w in watched] == [str(folder)] and watched[0]["last_result"]["state"] == "done"
    finally:
        state.close()
