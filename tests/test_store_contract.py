"""The store contract: every behaviour of `rag.store.Store` (and the catalog on top of it), with exact
expected values, against BOTH drivers: EdgeStore on tmp_path and ServerStore on qdrant-client ":memory:".

One algorithm (rag/store/base.py) runs over two sets of driver primitives; this file is what keeps them
interchangeable. Dense vectors are hand-made (dimension 4); BM25 vectors are real.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from rag.errors import ConfigError, ModelMismatchError, StoreError
from rag.lexical import BM25Encoder
from rag.models import Chunk, SearchFilter
from rag.store import INTERNAL_FIELDS, CollectionInfo, EdgeStore, ServerStore, Store, StoredPoint
from rag.store.catalog import chunk_points, iter_chunk_vectors, iter_chunks, load_chunks, stored_files, write_chunks
from tests.builders import make_chunk

INFO = dict(embed_model="mini", dimension=4, bm25_avg_doc_len=5.0)
EVERYONE = ["public", "eng", "finance"]


def chunk(name: str, index: int, text: str, file_path: str, acl: list[str], ingested_at: str,
          file_type: str = "txt", file_hash: str = "h1", count: int = 1) -> Chunk:
    return make_chunk(text, file_path=file_path, index=index, count=count, file_hash=file_hash, file_type=file_type,
                      page=index + 1, section=name, element_types=["Text"], acl=acl, ingested_at=ingested_at,
                      token_count=len(text.split()))


WING = chunk("wing", 0, "wing lift at high angle of attack", "/docs/aero/wing.md", ["public"],
             "2024-03-01T12:00:00+00:00", file_type="md", count=2)
TIP = chunk("tip", 1, "wing tip vortices", "/docs/aero/wing.md", ["public"], "2024-03-01T12:00:00+00:00",
            file_type="md", count=2)
PLATE = chunk("plate", 0, "boundary layer transition on a flat plate", "/docs/aero/plate.pdf", ["eng"],
              "2024-01-15T00:00:00Z", file_type="pdf")
REVENUE = chunk("revenue", 0, "quarterly revenue and wing sales", "/docs/finance/q1.txt", ["finance", "exec"],
                "2024-06-30T23:59:59Z")
SLENDER = chunk("slender", 0, "lift coefficient of a slender wing", "/docs/aero2/slender.txt", ["public"],
                "2023-12-31T23:00:00Z")
CORPUS = [WING, TIP, PLATE, REVENUE, SLENDER]
VECTORS = np.array([[1, 0, 0, 0], [0.7, 0, 0, 0.7], [0, 1, 0, 0], [0, 0, 1, 0], [0.9, 0.1, 0, 0]], dtype=np.float32)


@pytest.fixture(params=["edge", "server"])
def empty(request, tmp_path):
    """A store with no collection yet, on one driver."""
    store: Store = EdgeStore(tmp_path, "contract") if request.param == "edge" else ServerStore("contract", location=":memory:")
    yield store
    store.close()


@pytest.fixture
def store(empty):
    write_chunks(empty, CORPUS, VECTORS, info=CollectionInfo(name="ignored", **INFO))
    return empty


def ids(hits) -> list[str]:
    return [h.chunk.id for h in hits]


def id_set(*chunks: Chunk) -> list[str]:
    return sorted(c.id for c in chunks)


def test_create_info_and_compatibility(empty):
    assert empty.info() is None and empty.count() == 0 and empty.count(SearchFilter()) == 0
    assert empty.search([1, 0, 0, 0], None, SearchFilter(), 5) == ([], [])
    assert empty.retrieve([WING.id]) == [] and list(empty.iter_payloads()) == []
    assert empty.delete_file(WING.file_path) == 0
    empty.delete_ids([WING.id])  # nothing to delete, no error
    with pytest.raises(StoreError, match="collection 'contract' does not exist"):
        empty.upsert(chunk_points([WING], VECTORS[:1], BM25Encoder()))
    empty.check_compatible("anything", 7)  # no collection: nothing to mismatch
    info = CollectionInfo(name="ignored", bm25_k1=1.5, created_at="2024-01-01T00:00:00+00:00", **INFO)
    empty.create(info)
    got = empty.info()
    assert got is not None and got.to_dict() == {
        "name": "contract", "embed_model": "mini", "dimension": 4, "bm25_k1": 1.5, "bm25_b": 0.75,
        "bm25_avg_doc_len": 5.0, "bm25_language": "english", "created_at": "2024-01-01T00:00:00+00:00",
        "schema_version": 1}
    with pytest.raises(StoreError, match="collection 'contract' already exists"):
        empty.create(info)
    empty.check_compatible("mini", 4)
    with pytest.raises(ModelMismatchError, match="built with embedding model 'mini' \\(dimension 4\\)"):
        empty.check_compatible("mini", 8)
    with pytest.raises(ModelMismatchError, match="dimension 3"):
        empty.upsert(chunk_points([WING], [[1.0, 0.0, 0.0]], BM25Encoder()))
    with pytest.raises(ModelMismatchError, match="the query vector has dimension 2"):
        empty.search([1, 0], None, SearchFilter(), 1)


def test_upsert_and_count_with_filters(store):
    assert store.count() == 5
    expected = [
        (SearchFilter(acl=["public"]), 3),
        (SearchFilter(acl=["exec"]), 1),
        (SearchFilter(acl=["eng", "exec"]), 2),
        (SearchFilter(acl=["nobody"]), 0),
        (SearchFilter(acl=[]), 0),
        (SearchFilter(acl=EVERYONE, path_prefix="/docs/aero"), 3),  # not /docs/aero2
        (SearchFilter(acl=EVERYONE, path_prefix="/docs/aero/"), 3),
        (SearchFilter(acl=EVERYONE, path_prefix="/docs/aero/wing.md"), 2),  # a file matches itself
        (SearchFilter(acl=EVERYONE, path_prefix="/docs"), 5),
        (SearchFilter(acl=EVERYONE, path_prefix="/elsewhere"), 0),
        (SearchFilter(acl=EVERYONE, file_types=["PDF", ".md"]), 3),
        (SearchFilter(acl=EVERYONE, file_types=[]), 0),
        (SearchFilter(acl=EVERYONE, file_paths=["/docs/finance/q1.txt", "/nope"]), 1),
        (SearchFilter(acl=EVERYONE, file_paths=[]), 0),
        (SearchFilter(acl=EVERYONE, ingested_after="2024-01-15T00:00:00Z"), 4),  # inclusive
        (SearchFilter(acl=EVERYONE, ingested_before="2024-01-15"), 1),  # exclusive; a date alone is UTC midnight
        (SearchFilter(acl=EVERYONE, ingested_after="2024-07-01T01:00:00+02:00"), 1),  # = 23:00 UTC
        (SearchFilter(acl=["public"], path_prefix="/docs/aero", file_types=["md"], ingested_before="2024-04-01"), 2),
    ]
    assert [(flt, store.count(flt)) for flt, _ in expected] == expected
    with pytest.raises(ConfigError, match="ingested_after='yesterday' is not an ISO 8601"):
        store.count(SearchFilter(ingested_after="yesterday"))


def test_delete_file_keeps_one_version_then_delete_ids(store):
    old = [chunk("v", n, f"old text {n}", "/docs/v.txt", ["public"], "2024-01-01", file_hash="old", count=3)
           for n in range(3)]
    new = [chunk("v", n, f"new text {n}", "/docs/v.txt", ["public"], "2024-01-02", file_hash="new", count=2)
           for n in range(2)]
    write_chunks(store, old + new, [[0, 0, 0, 1]] * 5)
    assert store.count() == 10
    assert store.delete_file("/docs/v.txt", keep_hash="new") == 3
    assert [c.text for c in store.retrieve([c.id for c in old + new])] == ["new text 0", "new text 1"]
    assert store.delete_file("/docs/v.txt", keep_hash="new") == 0
    assert store.delete_file("/docs/v.txt") == 2
    assert store.delete_file("/docs/v.txt") == 0
    store.delete_ids([WING.id, str(uuid.uuid4())])  # unknown ids are ignored
    assert store.count() == 4 and store.retrieve([WING.id]) == []


def test_retrieve_keeps_request_order_and_round_trips_payloads(store):
    missing = "00000000-0000-0000-0000-000000000000"
    got = store.retrieve([SLENDER.id, missing, PLATE.id, WING.id])
    assert got == [SLENDER, PLATE, WING]  # every Chunk field round-trips exactly, the unknown id is skipped
    changed = chunk("plate", 0, "completely different words", PLATE.file_path, ["eng"], PLATE.ingested_at,
                    file_type="pdf")
    assert changed.id == PLATE.id
    write_chunks(store, [changed], [[0, 1, 0, 0]])  # same id: replaced, not added
    assert store.count() == 5 and store.retrieve([PLATE.id]) == [changed]
    assert store.search(None, BM25Encoder().encode_query("boundary layer"), SearchFilter(acl=["eng"]), 5) == ([], [])


def test_search_runs_both_legs_under_the_same_acl_filter(store):
    enc = store.info().bm25_encoder()
    dense, sparse = store.search([1, 0, 0, 0], enc.encode_query("wing lift"), SearchFilter(acl=["public"]), 10)
    assert ids(dense) == [WING.id, SLENDER.id, TIP.id]
    assert [round(h.score, 4) for h in dense] == [1.0, 0.9939, 0.7071]
    assert ids(sparse) == [SLENDER.id, WING.id, TIP.id]  # REVENUE shares "wing" but is not visible
    assert [h.chunk for h in dense] == [WING, SLENDER, TIP]
    dense, sparse = store.search([0, 0, 1, 0], enc.encode_query("revenue wing"), SearchFilter(acl=["exec"]), 10)
    assert ids(dense) == ids(sparse) == [REVENUE.id]
    dense, sparse = store.search([1, 0, 0, 0], enc.encode_query("wing"), SearchFilter(acl=EVERYONE, path_prefix="/docs/aero2"), 10)
    assert ids(dense) == ids(sparse) == [SLENDER.id]
    assert store.search([1, 0, 0, 0], None, SearchFilter(acl=["public"]), 2)[0][1].chunk == SLENDER  # limit per leg
    assert store.search(None, enc.encode_query("vortices"), SearchFilter(acl=["public"]), 5)[0] == []
    assert ids(store.search(None, enc.encode_query("vortices"), SearchFilter(acl=["public"]), 5)[1]) == [TIP.id]
    assert store.search([1, 0, 0, 0], enc.encode_query("wing"), SearchFilter(acl=[]), 5) == ([], [])
    assert store.search([1, 0, 0, 0], enc.encode_query("wing"), SearchFilter(), 0) == ([], [])
    assert store.search(None, enc.encode_query("zzzunknownzzz"), SearchFilter(), 5) == ([], [])
    assert ids(store.search([0, 1, 0, 0], None, None, 1)[0]) == [PLATE.id]  # None: no filter at all


def test_scans_are_filtered_inside_the_store_and_hide_internal_fields(store):
    rows = {pid: (payload, vec) for pid, payload, vec in store.iter_payloads()}
    assert sorted(rows) == id_set(*CORPUS)
    assert rows[WING.id] == (WING.to_payload(), None)  # exactly the chunk's payload: no dir_prefixes
    public = {pid: payload for pid, payload, _ in store.iter_payloads(["file_path", "dir_prefixes"], flt=SearchFilter())}
    assert public == {c.id: {"file_path": c.file_path} for c in (WING, TIP, SLENDER)}
    with_vec = {pid: (payload, vec) for pid, payload, vec in store.iter_payloads([], with_vectors=True,
                                                                                  flt=SearchFilter(acl=["eng"]))}
    assert list(with_vec) == [PLATE.id] and with_vec[PLATE.id][0] == {}  # [] reads no payload at all
    with_vec = {pid: vec for pid, (_payload, vec) in with_vec.items()}
    np.testing.assert_allclose(with_vec[PLATE.id], [0, 1, 0, 0], atol=1e-6)
    assert list(store.iter_payloads(flt=SearchFilter(acl=[]))) == []
    # the derived field is stored (filters use it), only hidden from callers
    raw, _next = store._scroll(store._filter(SearchFilter(acl=["public"], path_prefix="/docs/aero2")), None, False, None, 10)
    assert [(r.id, r.payload["dir_prefixes"]) for r in raw] == [(SLENDER.id, ["/", "/docs", "/docs/aero2"])]
    assert INTERNAL_FIELDS == {"dir_prefixes"}


def test_catalog_scans_lists_and_writes(store):
    assert sorted(c.id for c in iter_chunks(store)) == id_set(*CORPUS)
    assert sorted((c.id, c.text) for c in iter_chunks(store, SearchFilter(acl=["public"]))) == sorted(
        (c.id, c.text) for c in (WING, TIP, SLENDER))
    light = {c.id: c for c in iter_chunks(store, fields=["file_path", "chunk_count"])}
    assert (light[TIP.id].file_path, light[TIP.id].chunk_count, light[TIP.id].text, light[TIP.id].acl) == \
        ("/docs/aero/wing.md", 2, "", [])  # fields not read get defaults; no acl read means no label
    pairs = dict((c.id, v) for c, v in iter_chunk_vectors(store, SearchFilter(acl=["finance"])))
    assert list(pairs) == [REVENUE.id]
    chunks, matrix = load_chunks(store, SearchFilter(acl=["public"]))
    assert sorted(c.id for c in chunks) == id_set(WING, TIP, SLENDER) and matrix.shape == (3, 4)
    assert matrix.dtype == np.float32
    for c, row in zip(chunks, matrix):
        expected = VECTORS[CORPUS.index(c)]
        np.testing.assert_allclose(row, expected / np.linalg.norm(expected), atol=1e-6)  # cosine stores unit vectors
    assert [len(x) for x in load_chunks(store, limit=2)] == [2, 2]
    none, empty_matrix = load_chunks(store, SearchFilter(acl=["nobody"]))
    assert none == [] and empty_matrix.shape == (0, 4)
    assert stored_files(store) == [
        {"file_path": "/docs/aero/plate.pdf", "file_type": "pdf", "chunks": 1, "acl": ["eng"]},
        {"file_path": "/docs/aero/wing.md", "file_type": "md", "chunks": 2, "acl": ["public"]},
        {"file_path": "/docs/aero2/slender.txt", "file_type": "txt", "chunks": 1, "acl": ["public"]},
        {"file_path": "/docs/finance/q1.txt", "file_type": "txt", "chunks": 1, "acl": ["exec", "finance"]},
    ]
    assert [f["file_path"] for f in stored_files(store, SearchFilter(acl=["public"]))] == [
        "/docs/aero/wing.md", "/docs/aero2/slender.txt"]
    # the writer encodes BM25 with the collection's own parameters by default, in batches of `batch`
    extra = [chunk("x", n, f"extra text {n}", "/docs/x.txt", ["public"], "2024-01-01", count=3) for n in range(3)]
    stats = write_chunks(store, extra, np.ones((3, 4), dtype=np.float32), batch=2)
    assert stats.points == 3 and store.count() == 8
    mine = chunk_points(extra[:1], [[1, 1, 1, 1]], store.info().bm25_encoder())[0]
    assert isinstance(mine, StoredPoint) and mine.payload == extra[0].to_payload() and mine.id == extra[0].id
    with pytest.raises(ValueError, match="3 chunks but 2 dense vectors"):
        write_chunks(store, extra, [[1, 0, 0, 0]] * 2)


def test_drop_then_create_again(store):
    store.drop()
    assert store.info() is None and store.count() == 0 and list(iter_chunks(store)) == []
    write_chunks(store, [WING], VECTORS[:1], info=CollectionInfo(name="again", **INFO))
    assert store.info().name == "contract" and store.count() == 1
    assert store.retrieve([WING.id]) == [WING]


def test_closed_store_refuses_every_operation(store):
    store.close()
    store.close()  # idempotent
    for call in (lambda: store.count(), lambda: store.retrieve([WING.id]), lambda: list(store.iter_payloads()),
                 lambda: store.search([1, 0, 0, 0], None, SearchFilter(), 1), lambda: store.delete_file("/x"),
                 lambda: store.delete_ids([WING.id]), lambda: store.drop(),
                 lambda: store.upsert(chunk_points([WING], VECTORS[:1], BM25Encoder()))):
        with pytest.raises(StoreError, match="is closed"):
            call()
