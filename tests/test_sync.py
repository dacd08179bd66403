"""Folder sync end to end: real unstructured, real MiniLM, real Qdrant Edge.

Covers: first ingest, unchanged re-run, edit, delete, failed re-parse keeping the old version,
recovery from a partially written file, provenance fields, ACL labels, and model mismatch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ingest.chunking import extracted_text
from ingest.loaders import parse_file
import ingest.sync
from ingest.sync import chunk_id, ingest_paths, read_manifest
from rag.errors import ModelMismatchError
from rag.models import SearchFilter
from rag.store import open_store
from rag.store.catalog import iter_chunks, stored_files

PARAGRAPH = (
    "The {topic} was studied in {year}. Researchers measured {n} samples and reported that the effect "
    "depends on temperature, pressure and the composition of the mixture used in the experiment. "
)


def write_doc(path: Path, topic: str, paragraphs: int = 4) -> None:
    body = "\n\n".join(PARAGRAPH.format(topic=topic, year=1990 + i, n=10 * i) for i in range(paragraphs))
    path.write_text(f"# {topic.title()}\n\n{body}\n", encoding="utf-8")


def chunks_by_file(store) -> Counter:
    return Counter(c.file_path for c in iter_chunks(store, fields=["file_path"]))


@pytest.fixture()
def folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    write_doc(docs / "alpha.md", "alpha particle decay", 6)
    write_doc(docs / "beta.md", "beta carotene absorption")
    (docs / "sub").mkdir()
    write_doc(docs / "sub" / "gamma.txt", "gamma ray bursts")
    return docs


def test_sync_add_skip_edit_delete(folder, settings, embedder):
    store = open_store(settings)
    first = ingest_paths([folder], settings, store, embedder, progress=False)
    assert (first.files_seen, first.indexed, first.failed) == (3, 3, 0)
    per_file = chunks_by_file(store)
    assert sum(per_file.values()) == first.chunks_added == store.count()

    again = ingest_paths([folder], settings, store, embedder, progress=False)
    assert (again.indexed, again.skipped, again.chunks_added, again.chunks_removed) == (0, 3, 0, 0)
    assert chunks_by_file(store) == per_file

    write_doc(folder / "beta.md", "beta decay in nuclear physics", 8)
    edited = ingest_paths([folder], settings, store, embedder, progress=False)
    assert (edited.indexed, edited.skipped) == (1, 2)
    after_edit = chunks_by_file(store)
    beta = str((folder / "beta.md").resolve())
    assert after_edit[beta] == edited.chunks_added
    assert edited.chunks_removed == per_file[beta]
    hashes = {p["file_hash"] for _i, p, _v in store.iter_payloads(fields=["file_path", "file_hash"]) if p["file_path"] == beta}
    assert len(hashes) == 1  # the old version is gone
    for other in set(per_file) - {beta}:
        assert after_edit[other] == per_file[other]

    gamma = folder / "sub" / "gamma.txt"
    gamma_chunks = after_edit[str(gamma.resolve())]
    gamma.unlink()
    deleted = ingest_paths([folder], settings, store, embedder, progress=False)
    assert (deleted.removed, deleted.chunks_removed, deleted.indexed) == (1, gamma_chunks, 0)
    final = chunks_by_file(store)
    assert str(gamma.resolve()) not in final
    assert store.count() == sum(after_edit.values()) - gamma_chunks
    store.close()


def test_failed_reparse_keeps_previous_version(tmp_path, settings, embedder, evaldata):
    docs = tmp_path / "docs"
    docs.mkdir()
    memo = docs / "memo.pdf"
    shutil.copy(evaldata / "docs-mixed" / "files" / "fake-memo.pdf", memo)
    store = open_store(settings)
    first = ingest_paths([docs], settings, store, embedder, progress=False)
    assert first.indexed == 1
    before = store.count()
    memo.write_bytes(b"this is not a pdf at all" * 10)
    second = ingest_paths([docs], settings, store, embedder, progress=False)
    assert second.failed == 1 and second.indexed == 0
    assert "previous version kept" in second.failures[0]["reason"]
    assert store.count() == before
    store.close()


def test_partial_file_is_completed_without_duplicates(folder, settings, embedder):
    """A crash after some chunks of a file were written: the next run finishes it, no duplicates."""
    store = open_store(settings)
    ingest_paths([folder], settings, store, embedder, progress=False)
    clean_ids = {i for i, _p, _v in store.iter_payloads(fields=["file_path"])}
    alpha = str((folder / "alpha.md").resolve())
    alpha_ids = [i for i, p, _v in store.iter_payloads(fields=["file_path"]) if p["file_path"] == alpha]
    assert len(alpha_ids) >= 2
    store.delete_ids(alpha_ids[: len(alpha_ids) // 2])  # as if the run died half-way through alpha
    manifest = read_manifest(store)
    assert manifest[alpha].complete_hash() is None
    report = ingest_paths([folder], settings, store, embedder, progress=False)
    assert report.indexed == 1 and report.skipped == 2
    assert {i for i, _p, _v in store.iter_payloads(fields=["file_path"])} == clean_ids
    store.close()


def test_stored_files_lists_files_a_caller_may_see(folder, settings, embedder):
    """The file list (stats, UI, API) comes from the catalog, ACL-filtered inside the store."""
    assert ingest.sync.stored_files is stored_files  # the pipeline imports it from ingest.sync
    store = open_store(settings)
    ingest_paths([folder / "alpha.md", folder / "beta.md"], settings, store, embedder, acl=["public"], progress=False)
    ingest_paths([folder / "sub"], settings, store, embedder, acl=["secret"], progress=False)
    per_file = chunks_by_file(store)
    alpha, beta, gamma = (str((folder / name).resolve()) for name in ("alpha.md", "beta.md", "sub/gamma.txt"))
    assert stored_files(store) == [
        {"file_path": alpha, "file_type": "md", "chunks": per_file[alpha], "acl": ["public"]},
        {"file_path": beta, "file_type": "md", "chunks": per_file[beta], "acl": ["public"]},
        {"file_path": gamma, "file_type": "txt", "chunks": per_file[gamma], "acl": ["secret"]},
    ]
    assert [f["file_path"] for f in stored_files(store, SearchFilter(acl=["public"]))] == [alpha, beta]
    assert [f["file_path"] for f in stored_files(store, SearchFilter(acl=["secret"]))] == [gamma]
    assert stored_files(store, SearchFilter(acl=[])) == []
    assert sum(len(c.text) > 0 for c in iter_chunks(store, SearchFilter(acl=["public"]))) == per_file[alpha] + per_file[beta]
    store.close()


def test_provenance_fields(index_docs):
    indexed = index_docs("layout-parser-paper-fast.pdf", "unstructured-example-docs-README.md", acl=["hr", "legal"])
    docs, settings = indexed.docs, indexed.settings
    assert indexed.report.indexed == 2
    store = open_store(settings)
    chunks = list(iter_chunks(store))
    pdf_chunks = [c for c in chunks if c.file_type == "pdf"]
    assert {p for c in pdf_chunks for p in c.page_numbers} >= {1, 2}
    pdf_path = docs / "layout-parser-paper-fast.pdf"
    text = extracted_text(parse_file(pdf_path, settings))
    for c in chunks:
        assert c.acl == ["hr", "legal"]
        assert c.ingested_at and c.file_hash and len(c.file_hash) == 64
        assert 0 <= c.chunk_index < c.chunk_count
        assert c.id == chunk_id(c.file_path, c.file_hash, c.chunk_index)
        assert c.token_count <= settings.chunk_tokens
        if c.file_type == "pdf":
            assert text[c.char_start:c.char_end] == c.text
    assert any(c.section for c in chunks)
    store.close()


def test_model_mismatch_is_a_clear_error(folder, settings, embedder, tmp_path, minilm_path):
    store = open_store(settings)
    ingest_paths([folder], settings, store, embedder, progress=False)
    store.close()
    other_model = tmp_path / "other-model"
    shutil.copytree(minilm_path, other_model)
    from rag.embedding import load_embedder

    other = load_embedder(str(other_model))
    store = open_store(settings)
    with pytest.raises(ModelMismatchError) as info:
        ingest_paths([folder], settings.replace(embed_model=str(other_model)), store, other, progress=False)
    assert "other-model" in str(info.value)
    store.close()


@pytest.mark.slow  # two `rag` processes that load the model: ~55 s on 2 busy cores
def test_cli_ingest_and_stats_json(folder, tmp_path, minilm_path):
    env = {**os.environ, "RAG_EMBED_MODEL": minilm_path, "RAG_QDRANT_PATH": str(tmp_path / "q"),
           "RAG_COLLECTION": "cli", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "rag.cli"]
    out = subprocess.run(cmd + ["ingest", str(folder), "--json"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # exactly one JSON object on stdout
    assert summary["indexed"] == 3 and summary["collection"] == "cli"
    assert "files seen" in out.stderr  # the human summary goes to stderr
    stats = subprocess.run(cmd + ["stats", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["files"] == 3 and data["points"] == summary["chunks_added"]
    assert data["acl_labels"] == ["public"] and data["disk_bytes"] > 0
    assert data["chunks_per_file_type"].keys() == {"md", "txt"}


def test_cli_bad_input_exits_nonzero_with_reason(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(tmp_path / "missing"), "--json"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "missing" in out.stderr and "no such file" in out.stderr


def test_full_sync_skips_the_files_the_watcher_ignores(tmp_path):
    """One rule (ingest.ignore) for the watcher and the full sync: temp, lock, swap and hidden files."""
    from ingest.sync import discover_files
    from ingest.watch import is_ignored

    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / ".git").mkdir()
    kept = ["report.docx", "notes.md", "sub/plan.txt"]
    skipped = ["~$report.docx", ".#notes.md", "file.swp", "notes.md~", "video.part", ".hidden.txt",
               ".git/config.txt", "sub/.~lock.plan.txt#"]
    for name in kept + skipped:
        (docs / name).write_text("x", encoding="utf-8")
    files, _roots = discover_files([docs])
    assert sorted(str(f.relative_to(docs.resolve())) for f in files) == sorted(kept)
    for name in kept + skipped:  # the watcher's predicate is the same rule
        assert is_ignored(docs / name, docs) == (name in skipped), name
    # A file named explicitly is indexed whatever its name: the rule is about what a folder sync picks up.
    assert discover_files([docs / "file.swp"])[0] == [(docs / "file.swp").resolve()]


class RecordingMonitor:
    """An IngestMonitor keeping every snapshot (ingest.progress)."""

    def __init__(self) -> None:
        self.snapshots = []
        self.closed = None

    def progress(self, snapshot) -> None:
        self.snapshots.append(snapshot)

    def cancelled(self) -> bool:
        return False

    def close(self, snapshot) -> None:
        self.closed = snapshot


def test_progress_names_files_stages_and_chunks_with_a_sane_total(folder, settings, embedder):
    monitor = RecordingMonitor()
    store = open_store(settings.replace(embed_batch_size=4))
    report = ingest_paths([folder], settings.replace(embed_batch_size=4), store, embedder, progress=False,
                          monitor=monitor)
    assert report.indexed == 3
    snaps = monitor.snapshots
    done = [s.chunks_done for s in snaps]
    assert done == sorted(done) and done[-1] == report.chunks_added
    assert len(set(done)) > report.chunks_added // 4  # moved after every model batch of 4, not per file
    embedding = [s.current for s in snaps if s.current and s.current.stage == "embed"]
    assert {Path(c.file).name for c in embedding} <= {"alpha.md", "beta.md", "gamma.txt"} and embedding
    assert all(c.unit == "chunk" and c.total and 0 <= c.done <= c.total for c in embedding)
    totals = [s.chunks_total for s in snaps if s.chunks_total is not None]
    assert totals and totals[-1] == report.chunks_added  # the estimate ends exact
    assert monitor.closed.files_done == monitor.closed.files_total == 3 and monitor.closed.active == []


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="Tesseract is not installed")
def test_a_slow_ocr_file_does_not_hold_back_the_rest_and_reports_pages(tmp_path, settings, embedder, monkeypatch):
    """The scan comes first in the folder, and its OCR is held until every other file is indexed: they are
    not starved behind it, and the scan reports OCR pages done of total, then is indexed too."""
    import threading

    from ingest.loaders import ocr
    from tests.test_loaders import _text_page_image

    docs = tmp_path / "docs"
    docs.mkdir()
    _text_page_image(["The harbour master counts", "seventeen ships at dawn."]).save(docs / "a-scan.png")
    for name in ("b.md", "c.md", "d.md"):
        write_doc(docs / name, f"{name[0]} topic of the survey")
    gate = threading.Event()
    real_tesseract = ocr._tesseract

    def held_tesseract(image, page_number):
        assert gate.wait(120)
        return real_tesseract(image, page_number)

    monkeypatch.setattr(ocr, "_tesseract", held_tesseract)

    class Releasing(RecordingMonitor):
        def progress(self, snapshot) -> None:
            super().progress(snapshot)
            if snapshot.files_done == 3:
                gate.set()

    monitor = Releasing()
    store = open_store(settings)
    try:
        report = ingest_paths([docs], settings, store, embedder, progress=False, monitor=monitor)
    finally:
        gate.set()
    assert report.indexed == 4, report.failures
    assert [Path(f.path).name for f in report.files][-1] == "a-scan.png"  # written last, the others first
    waiting = [s for s in monitor.snapshots if s.files_done == 3]
    scan = [f for f in waiting[0].active if f.file.endswith("a-scan.png")]
    assert scan and scan[0].stage == "ocr" and scan[0].unit == "page"
    pages = {(f.done, f.total) for s in monitor.snapshots for f in s.active if f.file.endswith("a-scan.png")
             and f.stage == "ocr" and f.total}
    assert (0, 1) in pages or (1, 1) in pages
    text = " ".join(c.text for c in iter_chunks(store) if c.file_name == "a-scan.png")
    assert "seventeen ships" in text


def test_progress_total_estimates_unparsed_files_by_kind_then_becomes_exact():
    from ingest.progress import ProgressTracker

    tracker = ProgressTracker(5, {"a.txt": 1000, "b.txt": 3000, "c.pdf": 100_000, "d.pdf": 50_000, "e.md": 10})
    assert tracker.snapshot().chunks_total is None  # nothing parsed: no guess
    tracker.parsed("a.txt", 2)
    # b.txt by bytes of its kind (6); the PDFs and the .md by the mean chunks per parsed file (2 each).
    assert tracker.snapshot().chunks_total == 2 + 6 + 2 + 2 + 2
    tracker.parsed("c.pdf", 10)
    assert tracker.snapshot().chunks_total == 2 + 6 + 10 + 5 + 6  # d.pdf at c.pdf's chunks per byte
    tracker.finished("b.txt", failed=True)
    tracker.parsed("d.pdf", 4)
    tracker.parsed("e.md", 1)
    snapshot = tracker.snapshot()
    assert snapshot.chunks_total == 2 + 10 + 4 + 1 and snapshot.files_done == 1
    assert [f.file for f in snapshot.active] == ["a.txt", "c.pdf", "d.pdf", "e.md"]
