"""Background ingest yields the CPU (ingest/priority.py): a job runner's files are parsed, chunked and embedded
in a worker process whose every thread runs at a low priority (nice 19), while searches in this process stay
correct; a CLI ingest (no job runner) and `ingest_priority = "normal"` stay in-process.

Mechanism, not timing: the nice values are read from /proc; the speed is measured by `rag bench --parts serve`.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from ingest import priority
from ingest.jobs import JobQueue, JobRunner, jobs_db_path
from ingest.sync import file_sha256
from rag.access import Caller, Role
from rag.config import Settings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice and /proc are Linux")

EDITOR = Caller("ed", ("public",), Role.EDITOR)
FIRST = "Apollo_program.md"  # indexed before the job; searched for while the job runs
QUERY = "Which NASA program landed the first humans on the Moon?"


def _runner(pipeline, jobs: JobQueue) -> JobRunner:
    def ingest(collection, paths, acl, caller, monitor=None):  # as rag.server.state.ServerState.run_ingest
        return pipeline.ingest(paths, acl=acl, progress=False, caller=caller, monitor=monitor)

    return JobRunner(jobs, ingest, idle_poll_s=0.05)


def _top_file(pipeline, query: str, mode: str = "hybrid") -> str:
    hits = pipeline.search(query, k=3, mode=mode).hits
    assert hits, query
    return Path(hits[0].chunk.file_path).name


@pytest.mark.slow  # starts the worker process, which loads torch and the model (10-30 s on 2 busy cores)
def test_job_embeds_in_a_low_priority_worker_while_searches_stay_correct(tmp_path, make_settings, evaldata,
                                                                          monkeypatch):
    from rag.pipeline import Pipeline

    assert priority.BACKGROUND_NICE == 19
    # The product's nice 19 gets a worker almost no CPU on a machine saturated by parallel test runs (measured:
    # ~1% of a core at load 30, the job not done in 12 min); nice 10 (CFS weight 110 vs 15) runs the same mechanism.
    monkeypatch.setattr(priority, "BACKGROUND_NICE", 10)
    priority.shutdown_worker()
    squad = evaldata / "squad" / "docs"
    first, docs = tmp_path / "first", tmp_path / "docs"
    first.mkdir()
    docs.mkdir()
    shutil.copy(squad / FIRST, first / FIRST)
    names = ["Black_Death.md", "American_Broadcasting_Company.md"]
    for name in names:  # their first paragraphs: a few chunks each (a low-priority worker on a busy machine is slow)
        text = (squad / name).read_text(encoding="utf-8")
        (docs / name).write_text(text[: text.find("\n\n", 2500) + 1 or 2500], encoding="utf-8")
    assert Settings().ingest_priority == "background"  # the product default
    settings = make_settings(tmp_path, ingest_priority="background")  # the test default is "normal"
    pipeline = Pipeline(settings)
    jobs = JobQueue(jobs_db_path(settings.state_dir))
    runner = _runner(pipeline, jobs)
    try:
        # On this (non-runner) thread the ingest is the CLI's: in-process, no worker.
        assert pipeline.ingest([str(first)], progress=False).indexed == 1
        assert priority._worker is None
        assert _top_file(pipeline, QUERY) == FIRST

        runner.start()
        job = jobs.submit(settings.collection, [str(docs)], EDITOR, acl=["public"])
        worker_nices: dict[int, int] = {}
        searches_during = 0
        deadline = time.monotonic() + 600
        while jobs.get(job.id).state in ("queued", "running") and time.monotonic() < deadline:
            worker = priority._worker
            if worker is not None and worker.alive:
                worker_nices.update(priority.thread_nices(worker.pid))
            if jobs.get(job.id).state == "running":
                assert _top_file(pipeline, QUERY) == FIRST  # searches run, and find the right file, meanwhile
                searches_during += 1
            time.sleep(0.2)
        done = jobs.wait(job.id, timeout=120)
        assert done.state == "done", done.message
        assert done.files_done == 2 and done.chunks_added > 0 and not done.errors
        assert searches_during > 0

        # Every thread of the worker (torch's pool included, started after the nice) ran at the background nice;
        # this process's own threads, the runner's included, kept their priority.
        assert worker_nices and set(worker_nices.values()) == {10}, worker_nices
        assert len(worker_nices) > 1  # the model ran there with its thread pool
        own = priority.thread_nice(os.getpid())
        assert priority.thread_nice(os.getpid(), runner._thread.native_id) == own != priority.BACKGROUND_NICE
        assert priority._worker.pid != os.getpid()

        # The worker's vectors are the model's: a stored chunk's own text finds it by dense search alone.
        text = next(h.chunk.text for h in pipeline.search("Black Death plague Europe", k=5, mode="bm25").hits
                    if h.chunk.file_path.endswith("Black_Death.md"))
        assert _top_file(pipeline, text, mode="dense") == "Black_Death.md"
        assert _top_file(pipeline, QUERY) == FIRST
    finally:
        runner.stop()
        pipeline.close()
        priority.shutdown_worker()


def test_normal_priority_and_the_cli_path_stay_in_process(tmp_path, make_settings, embedder):
    from rag.pipeline import Pipeline

    priority.shutdown_worker()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lighthouse keeper logs the ships passing the northern cape.", encoding="utf-8")
    settings = make_settings(tmp_path, ingest_priority="normal")
    pipeline = Pipeline(settings, embedder=embedder)
    jobs = JobQueue(jobs_db_path(settings.state_dir))
    runner = _runner(pipeline, jobs)
    runner.start()
    try:
        job = jobs.wait(jobs.submit(settings.collection, [str(docs)], EDITOR, acl=["public"]).id, timeout=120)
        assert job.state == "done" and job.chunks_added == 1
        assert priority._worker is None  # "normal": the job ran in this process
        assert _top_file(pipeline, "who logs ships at the northern cape") == "a.txt"
    finally:
        runner.stop()
        pipeline.close()

    # The decision itself: background work, the right setting, and the settings' own model.
    background = make_settings(tmp_path, ingest_priority="background")
    assert not priority.use_worker(background, embedder)  # not on a job runner's thread
    with priority.background():
        assert priority.use_worker(background, embedder)
        assert not priority.use_worker(settings, embedder)  # ingest_priority = "normal"
        other = type("Other", (), {"model_name": "another-model"})()
        assert not priority.use_worker(background, other)  # its vectors must come from that embedder
    assert not priority.in_background()


def test_a_worker_that_dies_fails_only_its_file(tmp_path, make_settings, monkeypatch):
    from ingest.progress import ProgressTracker
    from ingest.sync import _Lanes

    settings = make_settings(tmp_path)
    path = tmp_path / "a.txt"
    path.write_text("some text", encoding="utf-8")
    worker = priority.IngestWorker()
    try:
        worker.process.kill()  # as an out-of-memory kill or a crashing parser would
        worker.process.join(30)
        with pytest.raises(priority.WorkerDied, match="a.txt: .*ingest worker process"):
            worker.run(settings, path, file_sha256(path))

        # Through the sync's queue protocol: the file comes back failed (its previous version is kept by the
        # sync), then the end mark; the run goes on.
        monkeypatch.setattr(priority, "get_worker", lambda: worker)
        out: queue.Queue = queue.Queue()
        lanes = _Lanes(ProgressTracker(1, {str(path): 9}), threading.Event(), None)
        priority.parse_in_worker(settings, [(path, file_sha256(path))], out, lanes)
        failed = out.get_nowait()
        assert failed.error is not None and "ingest worker process" in str(failed.error) and not failed.drafts
        assert out.get_nowait() is None
    finally:
        worker.close()


@pytest.mark.slow  # starts the worker (torch + model) and OCRs one small image: ~20-40 s
def test_the_worker_reports_progress_and_leaves_scans_for_last(tmp_path, make_settings):
    """A job in the worker still moves: embedding advances per batch, OCR per page; and a scan is handed
    back (deferred) before its first page, so the rest of the folder is indexed first, then the scan."""
    from PIL import Image, ImageDraw, ImageFont

    from ingest.loaders import ocr
    from ingest.progress import ProgressTracker
    from ingest.sync import _Lanes

    if ocr.tesseract_version() is None:
        pytest.skip("Tesseract is not installed: apt-get install tesseract-ocr tesseract-ocr-eng")
    settings = make_settings(tmp_path, embed_batch_size=2, chunk_tokens=32, chunk_overlap_tokens=0)
    text_file = tmp_path / "notes.txt"
    text_file.write_text(" ".join(f"Sentence {i} tells of the harbour and its many ships." for i in range(150)),
                         encoding="utf-8")
    scan = tmp_path / "scan.png"
    image = Image.new("L", (1400, 300), 255)
    ImageDraw.Draw(image).text((60, 100), "The lighthouse keeper logs eleven storms.", fill=0,
                               font=ImageFont.truetype("DejaVuSans.ttf", 44))
    image.save(scan)

    worker = priority.IngestWorker()
    try:
        seen: list[tuple] = []
        work = worker.run(settings, text_file, file_sha256(text_file),
                          on_progress=lambda *event: seen.append(event))
        embeds = [e for e in seen if e[0] == "embed"]
        n = len(work.parsed.drafts)
        assert n > 32 and len(work.parsed.vectors) == n  # more than one progress step (32 chunks)
        assert len(embeds) >= 2 and [e[1] for e in embeds] == sorted(e[1] for e in embeds)
        assert all(e[2] == n and e[3] == "chunk" for e in embeds)

        deferred = worker.run(settings, scan, file_sha256(scan), defer_ocr=True)
        assert deferred.deferred and deferred.parsed is None

        # Through the sync's queue protocol: the text file comes out first, the scan after it, OCR'd.
        priority._worker = worker
        out: queue.Queue = queue.Queue()
        tracker = ProgressTracker(2, {str(scan): scan.stat().st_size, str(text_file): text_file.stat().st_size})
        stages: list[tuple[str, str]] = []
        original = tracker.stage

        def record(path: str, stage: str, *rest) -> None:
            stages.append((path, stage))
            original(path, stage, *rest)

        tracker.stage = record  # type: ignore[method-assign]
        lanes = _Lanes(tracker, threading.Event(), None)
        priority.parse_in_worker(settings, [(scan, file_sha256(scan)), (text_file, file_sha256(text_file))],
                                 out, lanes)
        first, second = out.get_nowait(), out.get_nowait()
        assert out.get_nowait() is None
        assert first.path == text_file and second.path == scan
        assert "lighthouse keeper" in " ".join(d.text for d in second.drafts) and second.vectors is not None
        assert (str(scan), "ocr") in stages and (str(text_file), "embed") in stages
    finally:
        priority._worker = None
        worker.close()
