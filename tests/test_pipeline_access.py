"""The caller-aware Pipeline facade (issue 14 #1, #2, #6): a `secret` file never reaches a `public`
caller through search, ask, list_files, stats, remove_file or get_chunk; a reader cannot ingest or
remove; ingest is confined to roots; impossible paths are one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag.access import AccessDenied, Caller, Role
from rag.config import Settings
from rag.errors import RagError
from rag.models import SearchFilter
from rag.pipeline import Pipeline

SECRET_TEXT = "The falcon secret bonus is 5 million dollars, paid to the falcon team in March."
PUBLIC_TEXT = "The falcon project ships in May. The falcon team meets every Monday in room 4."
QUERY = "falcon secret bonus dollars"

PUBLIC = Caller("visitor", ("public",), Role.READER)
PUBLIC_EDITOR = Caller("public-editor", ("public",), Role.EDITOR)
HR = Caller("hr", ("public", "secret"), Role.READER)


@pytest.fixture(scope="module")
def collection(tmp_path_factory, minilm_path, embedder):
    """A pipeline over one public and one secret file (ingested by the operator)."""
    root = tmp_path_factory.mktemp("access")
    public_dir, secret_dir = root / "public", root / "secret"
    public_dir.mkdir()
    secret_dir.mkdir()
    (public_dir / "public.txt").write_text(PUBLIC_TEXT + "\n", encoding="utf-8")
    (secret_dir / "secret.txt").write_text(SECRET_TEXT + "\n", encoding="utf-8")
    settings = Settings(embed_backend="torch-fp32", rerank_backend="torch-fp32", qdrant_path=str(root / "qdrant"), collection="access", embed_model=minilm_path,
                        rerank_model="none", mode="hybrid", llm_provider="extractive", chunk_tokens=128,
                        chunk_overlap_tokens=16)
    pipeline = Pipeline(settings, embedder=embedder)
    assert pipeline.ingest([public_dir], progress=False).indexed == 1
    assert pipeline.ingest([secret_dir], acl=["secret"], progress=False).indexed == 1
    yield pipeline, root
    pipeline.close()


def _secret_ids(pipeline: Pipeline) -> set[str]:
    return {i for i, p, _v in pipeline.store.iter_payloads() if "secret" in p["acl"]}


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_never_shows_a_secret_chunk_to_a_public_caller(collection, mode):
    pipeline, _root = collection
    secret = _secret_ids(pipeline)
    assert secret
    hits = pipeline.search(QUERY, k=10, mode=mode, caller=PUBLIC).hits
    assert hits and not {h.chunk.id for h in hits} & secret
    # a filter narrows, never widens: naming the secret label gets a public caller nothing
    assert pipeline.search(QUERY, k=10, mode=mode, flt=SearchFilter(acl=["secret"]), caller=PUBLIC).hits == []
    # the label holder does see it
    assert {h.chunk.id for h in pipeline.search(QUERY, k=10, mode=mode, caller=HR).hits} & secret


def test_ask_never_puts_a_secret_chunk_in_evidence_citations_or_related(collection):
    pipeline, _root = collection
    secret = _secret_ids(pipeline)
    answer = pipeline.ask("How big is the falcon secret bonus?", caller=PUBLIC)
    shown = {e.chunk.id for e in answer.evidence} | {c.chunk_id for c in answer.citations} | \
        {h.chunk.id for h in answer.related}
    assert not shown & secret
    assert "5 million" not in answer.text
    held = pipeline.ask("How big is the falcon secret bonus?", caller=HR)
    assert {e.chunk.id for e in held.evidence} & secret


def test_list_files_and_stats_cover_only_visible_files(collection):
    pipeline, root = collection
    files = pipeline.list_files(caller=PUBLIC)
    assert [Path(f["file_path"]).name for f in files] == ["public.txt"]
    assert {Path(f["file_path"]).name for f in pipeline.list_files(caller=HR)} == {"public.txt", "secret.txt"}
    stats = pipeline.stats(caller=PUBLIC)
    assert stats["files"] == 1 and stats["acl_labels"] == ["public"]
    assert stats["points"] == files[0]["chunks"]
    assert sum(stats["chunks_per_file_type"].values()) == files[0]["chunks"]
    hr_stats = pipeline.stats(caller=HR)
    assert hr_stats["files"] == 2 and hr_stats["acl_labels"] == ["public", "secret"]
    # without a caller: the operator with the default labels
    assert pipeline.stats()["files"] == 1 and len(pipeline.list_files()) == 1


def test_get_chunk_returns_only_visible_chunks(collection):
    pipeline, _root = collection
    secret_id = next(iter(_secret_ids(pipeline)))
    public_id = next(i for i, p, _v in pipeline.store.iter_payloads() if p["acl"] == ["public"])
    assert pipeline.get_chunk(secret_id, caller=PUBLIC) is None
    assert pipeline.get_chunk(secret_id, caller=HR).text.startswith("The falcon secret bonus")
    assert pipeline.get_chunk(public_id, caller=PUBLIC).acl == ["public"]
    assert pipeline.get_chunk("not-a-chunk-id", caller=HR) is None
    assert pipeline.get_chunk("00000000-0000-0000-0000-000000000000", caller=HR) is None


def test_remove_of_a_hidden_file_reads_exactly_like_a_missing_one(collection):
    pipeline, root = collection
    secret_path = str(root / "secret" / "secret.txt")
    missing_path = str(root / "secret" / "nothing.txt")
    with pytest.raises(RagError) as hidden:
        pipeline.remove_file(secret_path, caller=PUBLIC_EDITOR)
    with pytest.raises(RagError) as missing:
        pipeline.remove_file(missing_path, caller=PUBLIC_EDITOR)
    assert str(hidden.value) == f"{secret_path}: not in collection 'access'"
    assert str(missing.value) == f"{missing_path}: not in collection 'access'"
    assert type(hidden.value) is type(missing.value)
    assert {Path(f["file_path"]).name for f in pipeline.list_files(caller=HR)} == {"public.txt", "secret.txt"}


def test_reader_cannot_ingest_or_remove(collection):
    pipeline, root = collection
    with pytest.raises(AccessDenied, match="'ingest' needs 'editor'"):
        pipeline.ingest([root / "public"], progress=False, caller=PUBLIC)
    with pytest.raises(AccessDenied, match="'remove' needs 'editor'"):
        pipeline.remove_file(str(root / "public" / "public.txt"), caller=PUBLIC)
    assert len(pipeline.list_files(caller=PUBLIC)) == 1


def test_editor_cannot_relabel_a_file_it_cannot_see_or_grant_labels_it_lacks(collection):
    pipeline, root = collection
    # re-indexing the secret folder under `public` would publish the secret file (issue 14 #2)
    with pytest.raises(AccessDenied, match="secret.txt: already indexed under labels"):
        pipeline.ingest([root / "secret"], progress=False, caller=PUBLIC_EDITOR)
    with pytest.raises(AccessDenied, match="cannot label files"):
        pipeline.ingest([root / "public"], acl=["secret"], progress=False, caller=PUBLIC_EDITOR)
    assert pipeline.get_chunk(next(iter(_secret_ids(pipeline))), caller=HR).acl == ["secret"]


def test_ingest_roots_confine_paths_after_resolving_symlinks(collection, tmp_path):
    pipeline, root = collection
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    os.symlink("/etc", allowed / "etc-link")
    with pytest.raises(AccessDenied, match="/etc: outside the folders"):
        pipeline.ingest(["/etc"], progress=False, caller=PUBLIC_EDITOR, roots=[allowed])
    with pytest.raises(AccessDenied, match="etc-link: outside the folders"):
        pipeline.ingest([allowed / "etc-link"], progress=False, caller=PUBLIC_EDITOR, roots=[allowed])
    with pytest.raises(AccessDenied, match="outside the folders"):
        pipeline.ingest([allowed / ".." / "allowed" / ".." ], progress=False, caller=PUBLIC_EDITOR, roots=[allowed])
    (allowed / "note.txt").write_text("An allowed note about herons nesting.\n", encoding="utf-8")
    report = pipeline.ingest([allowed], progress=False, caller=PUBLIC_EDITOR, roots=[allowed])
    assert report.indexed == 1


@pytest.mark.parametrize("bad,reason", [("docs\x00/etc/passwd", "cannot contain a NUL byte"),
                                        ("d" * 5000, "path is 5000 characters long; the limit is 4096")])
def test_impossible_paths_are_one_line_errors(collection, bad, reason):
    pipeline, _root = collection
    for call in (lambda: pipeline.ingest([bad], progress=False), lambda: pipeline.remove_file(bad)):
        with pytest.raises(RagError) as err:
            call()
        message = str(err.value)
        assert reason in message and "\n" not in message and len(message) < 200


def test_question_length_is_capped_with_an_error_naming_the_setting(collection):
    """Issue 14 #13: a 1 MB question was embedded, searched and forwarded whole to the LLM."""
    pipeline, _root = collection
    limit = pipeline.settings.max_question_chars
    assert limit == 2000
    with pytest.raises(RagError, match=r"question is 2001 characters long; the limit is 2000 \(setting 'max_question_chars'\)"):
        pipeline.ask("falcon " + "x" * (limit - 7 + 1), caller=PUBLIC)
    with pytest.raises(RagError, match="max_question_chars"):
        pipeline.ask("a" * 1_000_000, caller=PUBLIC)
    answer = pipeline.ask("When does the falcon project ship? " + " " * (limit - 40), caller=PUBLIC)
    assert len(answer.question) <= limit and answer.evidence


def test_non_admin_ingest_labels_default_to_labels_the_caller_holds(collection, tmp_path):
    pipeline, _root = collection
    hr_editor = Caller("hr-editor", ("secret",), Role.EDITOR)
    folder = tmp_path / "hr"
    folder.mkdir()
    (folder / "payroll.txt").write_text("Payroll runs on the 25th of each month for the falcon team.\n",
                                        encoding="utf-8")
    assert pipeline.ingest([folder], progress=False, caller=hr_editor).indexed == 1
    entry = next(f for f in pipeline.list_files(caller=HR) if f["file_path"].endswith("payroll.txt"))
    assert entry["acl"] == ["secret"]
    assert not [f for f in pipeline.list_files(caller=PUBLIC) if f["file_path"].endswith("payroll.txt")]
    with pytest.raises(AccessDenied, match="holds no labels"):
        pipeline.ingest([folder], progress=False, caller=Caller("nobody", (), Role.EDITOR))
