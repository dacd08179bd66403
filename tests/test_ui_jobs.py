"""The Documents tab with the server's job queue (issue 16): a folder ingest becomes a job, the tab lists the
session's jobs live (state, file, stage, progress) and cancels them. Plain `rag ui` (no queue) keeps
ingesting in the request: tests/test_ui_api.py and tests/test_ui_browser.py cover it.

The UI runs as the server mounts it (build_app with the queue) over a real JobRunner and pipeline; a gate
on one file's parse holds a job in a known state.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

import ingest.sync
from ingest.jobs import JobQueue, JobRunner, jobs_db_path
from rag.access import Caller, Role
from tests.test_ui_browser import ARGS, CHROMIUM, _shot
from tests.ui_app_fixture import start_server, ui_settings

gradio_client = pytest.importorskip("gradio_client")


class ParseGate:
    """Holds the parse of files named `slow-*` until released (the rest parse normally)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.reached = threading.Event()
        self._real = ingest.sync.parse_file

    def __call__(self, path, settings):
        if Path(path).name.startswith("slow-"):
            self.reached.set()
            assert self.open.wait(120)
        return self._real(path, settings)


def _write_docs(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        topic = name.split(".")[0].replace("slow-", "")
        (folder / name).write_text("\n\n".join(
            f"Field notes on {topic}, entry {k}: the crew recorded {k * 5} observations of {topic} near the "
            "north depot." for k in range(5)) + "\n", encoding="utf-8")


@pytest.fixture()
def jobs_ui(tmp_path, minilm_path, embedder, monkeypatch):
    """A UI with a job queue and its writer (what `rag serve` mounts), over an empty store."""
    from rag.pipeline import Pipeline

    gate = ParseGate()
    monkeypatch.setattr(ingest.sync, "parse_file", gate)
    docs = tmp_path / "docs"
    # In-process jobs: the gate above must see the parse (ingest_priority="background" parses in a worker process).
    settings = ui_settings(tmp_path, minilm_path, ingest_priority="normal")
    pipeline = Pipeline(settings, embedder=embedder)
    queue = JobQueue(jobs_db_path(settings.state_dir))
    runner = JobRunner(queue, lambda collection, paths, acl, caller, monitor: pipeline.ingest(
        paths, acl=acl, progress=False, caller=caller, roots=[docs], monitor=monitor), idle_poll_s=0.05)
    runner.start()
    server = start_server(settings, None, pipeline=pipeline, ingest_roots=[str(docs)], jobs=queue)
    try:
        yield server, queue, docs, gate
    finally:
        gate.open.set()
        server.demo.close()
        runner.stop()
        pipeline.close()


def _queued_id(status: str) -> str:
    found = re.search(r"Queued job \*\*([0-9a-f]+)\*\*", status)
    assert found, status
    return found.group(1)


@pytest.mark.slow  # a UI server and a job writer per test: ~30 s on 2 busy cores
def test_folder_ingest_is_a_job_that_the_tab_can_cancel(jobs_ui):
    server, queue, docs, gate = jobs_ui
    _write_docs(docs / "first", ["glaciers.txt", "orchards.txt"])
    _write_docs(docs / "second", ["ferries.txt", "slow-lighthouses.txt", "tides.txt"])
    client = gradio_client.Client(server.url, verbose=False)

    outputs = client.predict(str(docs / "first"), api_name="/ingest_folder")
    first = queue.wait(_queued_id(outputs[1]), timeout=120)  # the writer ran it, not the request
    assert first.state == "done" and first.files_done == 2 and first.caller["name"] == "ui"
    assert {Path(f["file"]).name for f in first.files if f["status"] == "indexed"} == {"glaciers.txt", "orchards.txt"}

    running = _queued_id(client.predict(str(docs / "second"), api_name="/ingest_folder")[1])
    assert gate.reached.wait(120)
    queued = _queued_id(client.predict(str(docs / "first"), api_name="/ingest_folder")[1])
    others = queue.submit(server.settings.collection, [str(docs / "first")], Caller("other", ("public",), Role.EDITOR))
    assert "cancelled" in client.predict(queued, api_name="/cancel_job")
    client.predict(others.id, api_name="/cancel_job")  # another caller's job: refused, as if it did not exist
    assert queue.get(others.id).state == "queued"
    assert "stops after its current file" in client.predict(running, api_name="/cancel_job")
    queue.cancel(others.id)
    gate.open.set()
    final = queue.wait(running, timeout=120)
    assert final.state == "cancelled" and queue.get(queued).state == "cancelled"
    # Cancelled between files: nothing of the held file or the files after it is in the index.
    indexed = {Path(f["file_path"]).name for f in server.pipeline.list_files()}
    assert "slow-lighthouses.txt" not in indexed and "tides.txt" not in indexed


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_job_list_shows_file_stage_and_progress_live_in_the_browser(jobs_ui):
    """The job list updates on its own (a timer), showing the held file's stage, then the job done."""
    sync_api = pytest.importorskip("playwright.sync_api")
    server, queue, docs, gate = jobs_ui
    _write_docs(docs / "notes", ["alpine-huts.txt", "slow-harbour-log.txt", "valley-farms.txt"])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1440, "height": 1100}).new_page()
            page.set_default_timeout(120_000)
            page.goto(server.url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Documents").click()
            page.locator("#folder textarea, #folder input").first.fill(str(docs / "notes"))
            page.get_by_role("button", name="Index folder").click()
            page.wait_for_function("() => document.querySelector('#ingest-status').innerText.includes('Queued job')")
            assert gate.reached.wait(120)
            # No click: the timer brings the running job, the held file and its stage into the table.
            page.wait_for_function("""() => { const t = document.querySelector('#jobs').innerText;
                return t.includes('running') && t.includes('slow-harbour-log.txt') && t.includes('parse'); }""")
            _shot(page, "documents-jobs-running")
            gate.open.set()
            page.wait_for_function("() => document.querySelector('#jobs').innerText.includes('done')")
            table = page.locator("#jobs").inner_text()
            assert "3/3" in table and "3 indexed, 0 failed of 3 files" in table
            # The finished job refreshed the indexed files and filled the per-file summary without a click.
            page.wait_for_function("() => document.querySelector('#files').innerText.includes('valley-farms.txt')")
            assert page.locator("#summary").inner_text().count("indexed") == 3
            _shot(page, "documents-jobs-done")
        finally:
            browser.close()
