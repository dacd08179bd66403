"""rag.store on both backends: embedded Qdrant Edge and qdrant-client (local mode, same API as a server)."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.errors import ConfigError, ModelMismatchError, StoreError, StoreLockedError
from rag.lexical import BM25Encoder, SparseVector
from rag.models import Chunk, SearchFilter
from rag.store import (
    CollectionInfo,
    EdgeStore,
    ServerStore,
    StoredPoint,
    VectorIndexConfig,
    dir_prefixes,
    open_store,
)
from tests import builders

REPO_ROOT = Path(__file__).resolve().parent.parent
ENC = BM25Encoder(avg_doc_len=6.0)


def make_chunk(n: int, text: str, file_path: str, file_hash: str = "h1", file_type: str = "txt",
               acl: list[str] | None = None, ingested_at: str = "2024-03-01T12:00:00+00:00") -> Chunk:
    return builders.make_chunk(text, file_path=file_path, index=n, file_hash=file_hash, file_type=file_type,
                               acl=acl, ingested_at=ingested_at, page=1)


def point(chunk: Chunk, dense: list[float]) -> StoredPoint:
    return StoredPoint.from_chunk(chunk, dense, ENC.encode_document(chunk.text))


# A small corpus: dense vectors are hand-made (dimension 4), BM25 vectors are real.
CORPUS = [
    (make_chunk(0, "wing lift at high angle of attack", "/docs/aero/wing.md", file_type="md"), [1, 0, 0, 0]),
    (make_chunk(0, "boundary layer transition on a flat plate", "/docs/aero/plate.pdf", file_type="pdf",
                acl=["eng"], ingested_at="2024-01-15T00:00:00Z"), [0, 1, 0, 0]),
    (make_chunk(0, "quarterly revenue and wing sales", "/docs/finance/q1.txt", acl=["finance", "exec"],
                ingested_at="2024-06-30T23:59:59Z"), [0, 0, 1, 0]),
    (make_chunk(0, "lift coefficient of a slender wing", "/docs/aero2/slender.txt",
                ingested_at="2023-12-31T23:00:00Z"), [0.9, 0.1, 0, 0]),
]


@pytest.fixture(params=["edge", "server"])
def backend(request, tmp_path):
    """A factory for one backend's store on a fresh location; reopening gives the same data."""
    opened = []

    def factory(collection: str = "test"):
        if request.param == "edge":
            store = EdgeStore(tmp_path / "qdrant", collection)
        else:
            store = ServerStore(collection, path=str(tmp_path / "qdrant-local"))
        opened.append(store)
        return store

    factory.kind = request.param
    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def filled(backend):
    store = backend()
    store.create(CollectionInfo(name="test", embed_model="mini", dimension=4, bm25_avg_doc_len=6.0))
    store.upsert([point(c, d) for c, d in CORPUS])
    return store


def ids_of(hits) -> list[str]:
    return [h.chunk.id for h in hits]


def test_create_reopen_and_info(backend):
    store = backend()
    assert store.info() is None and store.count() == 0
    assert store.search([1, 0, 0, 0], ENC.encode_query("wing"), SearchFilter(), 5) == ([], [])
    with pytest.raises(StoreError, match="does not exist"):
        store.upsert([point(*CORPUS[0])])
    info = CollectionInfo(name="ignored", embed_model="mini", dimension=4, bm25_k1=1.5, bm25_avg_doc_len=42.0)
    store.create(info)
    store.upsert([point(c, d) for c, d in CORPUS])
    with pytest.raises(StoreError, match="already exists"):
        store.create(info)
    store.close()
    again = backend()
    got = again.info()
    assert got is not None
    assert (got.name, got.embed_model, got.dimension, got.bm25_k1, got.bm25_avg_doc_len) == ("test", "mini", 4, 1.5, 42.0)
    assert got.created_at == info.created_at
    assert repr(got.bm25_encoder()) == repr(BM25Encoder(k1=1.5, b=0.75, avg_doc_len=42.0, language="english"))
    assert again.count() == len(CORPUS)
    if backend.kind == "edge":
        meta = json.loads((again.path / "collection.json").read_text())
        assert meta["embed_model"] == "mini"
        assert 0 < again.disk_bytes() < 50_000_000  # allocated bytes, not Edge's sparse preallocation
        assert set(again._shard.info().payload_schema) == {"file_path", "file_type", "file_hash", "acl",
                                                             "dir_prefixes", "ingested_at"}
    again.optimize()  # builds indexes on Edge, a no-op on the server; data and search unchanged
    assert again.count() == len(CORPUS)
    assert again.search([1, 0, 0, 0], None, SearchFilter(), 1)[0][0].chunk.id == CORPUS[0][0].id
    with pytest.raises(ModelMismatchError, match="mini"):
        again.search([1, 0, 0], None, SearchFilter(), 1)  # wrong dimension names the collection's model
    with pytest.raises(ModelMismatchError, match="dimension 3"):
        again.upsert([point(CORPUS[0][0], [1, 0, 0])])


def test_edge_keeps_payloads_cached_also_for_shards_written_cold(tmp_path):
    """Payloads read from disk per query ("Cold", Edge's default) cost 24 vs 8 ms p50 at 1M chunks: a new
    collection is created Cached, and a shard written Cold (an older version) is switched when opened,
    with its points, payloads and both search legs unchanged."""
    import qdrant_edge as qe

    def payload_memory(store: EdgeStore) -> str:
        return json.loads((store.path / "edge_config.json").read_text())["payload_memory"]

    fresh = EdgeStore(tmp_path / "new", "test")
    fresh.create(CollectionInfo(name="test", embed_model="mini", dimension=4, bm25_avg_doc_len=6.0))
    assert payload_memory(fresh) == "cached"
    fresh.close()

    old = EdgeStore(tmp_path / "old", "test")
    old.create(CollectionInfo(name="test", embed_model="mini", dimension=4, bm25_avg_doc_len=6.0))
    old.upsert([point(c, d) for c, d in CORPUS])
    old.flush()
    path = old.path
    old.close()
    cold = qe.EdgeShard.load(str(path), qe.EdgeConfig(
        sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}, payload_memory=qe.Memory.Cold))
    cold.close()
    assert json.loads((path / "edge_config.json").read_text())["payload_memory"] == "cold"

    reopened = EdgeStore(tmp_path / "old", "test")
    try:
        assert payload_memory(reopened) == "cached"
        assert reopened.count() == len(CORPUS)
        dense, bm25 = reopened.search([1, 0, 0, 0], ENC.encode_query("wing"), SearchFilter(), 2)
        assert dense[0].chunk.text == "wing lift at high angle of attack"
        assert {h.chunk.id for h in bm25} == {CORPUS[0][0].id, CORPUS[3][0].id}
        assert reopened.retrieve([CORPUS[0][0].id])[0].file_path == "/docs/aero/wing.md"
    finally:
        reopened.close()


def test_search_runs_both_legs_with_payload(filled):
    dense, sparse = filled.search([1, 0, 0, 0], ENC.encode_query("wing lift"), SearchFilter(acl=["public", "eng", "finance"]), 10)
    wing, plate, revenue, slender = (c.id for c, _ in CORPUS)
    assert ids_of(dense)[:2] == [wing, slender]
    assert dense[0].score == pytest.approx(1.0, abs=1e-5)
    assert set(ids_of(sparse)) == {wing, slender, revenue}  # only documents sharing a term
    assert ids_of(sparse)[-1] == revenue  # one term ("wing") versus two
    top = dense[0].chunk
    assert top == CORPUS[0][0]  # the payload round-trips into the same Chunk
    only_dense, none_sparse = filled.search([0, 0, 1, 0], None, SearchFilter(acl=["finance"]), 3)
    assert ids_of(only_dense) == [revenue] and none_sparse == []
    assert filled.search(None, SparseVector([], []), SearchFilter(), 3) == ([], [])
    assert filled.search(None, ENC.encode_query("wing"), SearchFilter(), 1)[1][0].chunk.id in {wing, slender}


def test_acl_is_match_any_and_empty_acl_sees_nothing(filled):
    assert filled.count(SearchFilter(acl=["public"])) == 2
    assert filled.count(SearchFilter(acl=["exec"])) == 1
    assert filled.count(SearchFilter(acl=["eng", "exec"])) == 2
    assert filled.count(SearchFilter(acl=["nobody"])) == 0
    assert filled.count(SearchFilter(acl=[])) == 0
    assert filled.search([0, 0, 1, 0], ENC.encode_query("revenue wing"), SearchFilter(acl=[]), 10) == ([], [])
    dense, sparse = filled.search([0, 0, 1, 0], ENC.encode_query("revenue wing"), SearchFilter(acl=["public"]), 10)
    revenue = CORPUS[2][0].id
    # the filter runs inside the engine before ranking, on both legs
    assert revenue not in ids_of(dense) and revenue not in ids_of(sparse) and len(dense) == 2
    assert filled.count() == 4  # no filter at all


def test_path_prefix_file_type_and_date_filters(filled):
    everyone = ["public", "eng", "finance"]
    assert filled.count(SearchFilter(acl=everyone, path_prefix="/docs/aero")) == 2  # not /docs/aero2
    assert filled.count(SearchFilter(acl=everyone, path_prefix="/docs/aero/")) == 2
    assert filled.count(SearchFilter(acl=everyone, path_prefix="/docs")) == 4
    assert filled.count(SearchFilter(acl=everyone, path_prefix="/docs/aero/wing.md")) == 1  # a file matches itself
    assert filled.count(SearchFilter(acl=everyone, path_prefix="/elsewhere")) == 0
    assert filled.count(SearchFilter(acl=everyone, file_types=["pdf", ".MD"])) == 2
    assert filled.count(SearchFilter(acl=everyone, file_paths=["/docs/finance/q1.txt"])) == 1
    assert filled.count(SearchFilter(acl=everyone, file_types=[])) == 0
    # after is inclusive, before exclusive; dates without time or zone are UTC
    assert filled.count(SearchFilter(acl=everyone, ingested_after="2024-01-15T00:00:00Z")) == 3
    assert filled.count(SearchFilter(acl=everyone, ingested_before="2024-01-15")) == 1
    assert filled.count(SearchFilter(acl=everyone, ingested_after="2024-01-01", ingested_before="2024-06-30T23:59:59Z")) == 2
    assert filled.count(SearchFilter(acl=everyone, ingested_after="2024-06-30T23:59:59+00:00")) == 1
    assert filled.count(SearchFilter(acl=everyone, ingested_after="2024-07-01T01:00:00+02:00")) == 1  # = 23:00 UTC
    dense, sparse = filled.search([1, 0, 0, 0], ENC.encode_query("wing"), SearchFilter(acl=everyone, path_prefix="/docs/aero2"), 10)
    assert ids_of(dense) == ids_of(sparse) == [CORPUS[3][0].id]
    with pytest.raises(ConfigError, match="ingested_after"):
        filled.count(SearchFilter(ingested_after="last tuesday"))


def test_delete_file_keeps_one_version_and_delete_ids(filled):
    old = [make_chunk(n, f"old text {n}", "/docs/v.txt", file_hash="old") for n in range(3)]
    new = [make_chunk(n, f"new text {n}", "/docs/v.txt", file_hash="new") for n in range(2)]
    filled.upsert([point(c, [0, 0, 0, 1]) for c in old + new])
    assert filled.count(SearchFilter(file_paths=["/docs/v.txt"])) == 5
    assert filled.delete_file("/docs/v.txt", keep_hash="new") == 3
    assert {c.text for c in filled.retrieve([c.id for c in old + new])} == {"new text 0", "new text 1"}
    assert filled.delete_file("/docs/v.txt") == 2
    assert filled.delete_file("/docs/v.txt") == 0
    filled.delete_ids([CORPUS[0][0].id, str(uuid.uuid4())])  # unknown ids are ignored
    assert filled.count() == 3


def test_upsert_replaces_by_id_and_retrieve_keeps_order(filled):
    chunk, _ = CORPUS[1]
    changed = make_chunk(0, "completely different words", chunk.file_path, file_type="pdf", acl=["eng"])
    assert changed.id == chunk.id
    filled.upsert([point(changed, [0, 1, 0, 0])])
    assert filled.count() == 4
    _, sparse = filled.search(None, ENC.encode_query("boundary layer"), SearchFilter(acl=["eng"]), 5)
    assert sparse == []  # the old sparse vector is gone with the old version
    wanted = [CORPUS[3][0].id, "00000000-0000-0000-0000-000000000000", chunk.id]
    assert [c.text for c in filled.retrieve(wanted)] == ["lift coefficient of a slender wing", "completely different words"]


def test_iter_payloads_with_fields_and_vectors(filled):
    rows = list(filled.iter_payloads(["file_path", "file_hash"], with_vectors=True))
    assert len(rows) == 4
    by_id = {pid: (payload, vec) for pid, payload, vec in rows}
    payload, vec = by_id[CORPUS[3][0].id]
    assert payload == {"file_path": "/docs/aero2/slender.txt", "file_hash": "h1"}
    expected = np.array([0.9, 0.1, 0, 0]) / np.linalg.norm([0.9, 0.1, 0, 0])  # cosine stores unit vectors
    np.testing.assert_allclose(vec, expected, atol=1e-6)
    full = {pid: (payload, vec) for pid, payload, vec in filled.iter_payloads()}
    assert full[CORPUS[0][0].id][1] is None
    # the derived filter field is stored, but never leaks out of the store
    assert full[CORPUS[0][0].id][0] == CORPUS[0][0].to_payload()
    raw, _next = filled._scroll(None, ["dir_prefixes"], False, None, 10)
    assert {r.id: r.payload["dir_prefixes"] for r in raw}[CORPUS[0][0].id] == ["/", "/docs", "/docs/aero"]


def test_check_compatible_names_both_models(filled):
    filled.check_compatible("mini", 4)
    with pytest.raises(ModelMismatchError) as info:
        filled.check_compatible("BAAI/bge-small-en-v1.5", 384)
    msg = str(info.value)
    assert "'mini'" in msg and "BAAI/bge-small-en-v1.5" in msg and "384" in msg and "4" in msg
    assert "RAG_EMBED_MODEL" in msg and "new collection" in msg
    with pytest.raises(ModelMismatchError):
        filled.check_compatible("mini", 8)


def test_drop_removes_everything(backend):
    store = backend("dropme")
    store.create(CollectionInfo(name="dropme", embed_model="mini", dimension=4))
    store.upsert([point(c, d) for c, d in CORPUS])
    store.drop()
    assert store.info() is None
    if backend.kind == "edge":
        assert not store.path.exists()
    store.close()
    again = backend("dropme")
    assert again.info() is None and again.count() == 0


def test_dir_prefixes():
    assert dir_prefixes("/a/b/c.txt") == ["/", "/a", "/a/b"]
    assert dir_prefixes("/c.txt") == ["/"]


def test_open_store_picks_backend(settings):
    store = open_store(settings)
    assert isinstance(store, EdgeStore) and store.path == Path(settings.qdrant_path).resolve() / "test"
    store.close()
    with pytest.raises(StoreError, match="127.0.0.1:9"):
        open_store(settings.replace(qdrant_url="http://127.0.0.1:9"))


def test_two_stores_in_one_process_share_the_shard(tmp_path):
    first = EdgeStore(tmp_path, "shared")
    first.create(CollectionInfo(name="shared", embed_model="mini", dimension=4))
    second = EdgeStore(tmp_path, "shared")  # no WAL lock error inside one process
    second.upsert([point(*CORPUS[0])])
    assert first.count() == 1
    second.close()
    assert first.count() == 1  # still open until the last user closes it
    first.close()
    with pytest.raises(StoreError, match="closed"):
        first.count()


HOLDER = textwrap.dedent("""
    import sys, uuid
    from rag.store import CollectionInfo, EdgeStore, StoredPoint
    from rag.lexical import BM25Encoder
    store = EdgeStore(sys.argv[1], "locked")
    store.create(CollectionInfo(name="locked", embed_model="mini", dimension=4))
    enc = BM25Encoder()
    store.upsert([StoredPoint(str(uuid.uuid4()), [1.0, 0.0, 0.0, float(i)], enc.encode_document(f"text {i}"),
                              {"file_path": f"/f/{i}.txt", "acl": ["public"], "text": f"text {i}"}) for i in range(500)])
    print("ready", flush=True)
    sys.stdin.read()  # hold the store until killed
""")


def test_second_process_gets_store_locked_error_and_kill9_loses_nothing(tmp_path):
    proc = subprocess.Popen([str(REPO_ROOT / ".venv/bin/python"), "-c", HOLDER, str(tmp_path)], cwd=REPO_ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        with pytest.raises(StoreLockedError) as info:
            EdgeStore(tmp_path, "locked")
        msg = str(info.value)
        assert str(tmp_path / "locked") in msg and "RAG_QDRANT_URL" in msg
    finally:
        proc.send_signal(signal.SIGKILL)  # no flush, no close: only the WAL keeps the upsert
        proc.wait(timeout=30)
    store = EdgeStore(tmp_path, "locked")
    assert store.count() == 500
    # those payloads lack most Chunk fields: reads fill defaults instead of failing
    first_id = next(store.iter_payloads(["file_path"]))[0]
    [chunk] = store.retrieve([first_id])
    assert chunk.file_path.startswith("/f/") and chunk.text.startswith("text ") and chunk.file_hash == ""
    store.close()


# A second process on a live store: before the store's own lock, `EdgeShard.load()` truncated the holder's
# tracker_journal.dat files on its way to the WAL lock error, and every later flush of the holder failed.
PROBE = textwrap.dedent("""
    import sys
    from rag.errors import StoreLockedError
    from rag.store import EdgeStore
    try:
        EdgeStore(sys.argv[1], "held")
    except StoreLockedError as exc:
        print(exc)
    else:
        print("opened")
""")


def _shard_files(path: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(f.relative_to(path)): (f.stat().st_size, f.stat().st_mtime_ns, f.read_bytes())
            for f in sorted(path.rglob("*")) if f.is_file()}


def test_second_process_is_refused_before_it_touches_a_live_store(tmp_path):
    holder = EdgeStore(tmp_path, "held")
    try:
        holder.create(CollectionInfo(name="held", embed_model="mini", dimension=4, bm25_avg_doc_len=6.0))
        holder.upsert([point(c, d) for c, d in CORPUS])
        holder.flush()
        before = _shard_files(holder.path)
        assert sum(name.endswith("tracker_journal.dat") for name in before) >= 3
        proc = subprocess.run([str(REPO_ROOT / ".venv/bin/python"), "-c", PROBE, str(tmp_path)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == (f"another rag process is using the store at {tmp_path / 'held'}; stop it or use "
                                       "its server (rag serve), or point RAG_QDRANT_URL at a Qdrant server")
        assert _shard_files(holder.path) == before  # not one byte, size or mtime of the shard changed
        # the holder carries on: writes, flushes and searches
        extra = make_chunk(0, "wing flutter at transonic speed", "/docs/aero/flutter.md")
        holder.upsert([point(extra, [0, 0, 0, 1])])
        holder.flush()
        assert holder.count() == len(CORPUS) + 1
        dense, sparse = holder.search([0, 0, 0, 1], ENC.encode_query("flutter"), SearchFilter(), 1)
        assert ids_of(dense) == ids_of(sparse) == [extra.id]
    finally:
        holder.close()
    # closing released the lock: another opener (here, this process again) gets the store
    again = EdgeStore(tmp_path, "held")
    assert again.count() == len(CORPUS) + 1
    again.close()


def test_lock_is_released_on_close_and_shared_within_a_process(tmp_path):
    lock_file = tmp_path / ".held.lock"
    first = EdgeStore(tmp_path, "held")
    assert not lock_file.exists()  # no collection yet: nothing to lock, nothing created
    first.create(CollectionInfo(name="held", embed_model="mini", dimension=4))
    assert lock_file.exists() and not (first.path / ".held.lock").exists()
    second = EdgeStore(tmp_path, "held")  # the same process shares the lock and the shard
    first.close()
    probe = subprocess.run([str(REPO_ROOT / ".venv/bin/python"), "-c", PROBE, str(tmp_path)], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=120)
    assert probe.stdout.startswith("another rag process is using the store at "), probe.stderr
    second.close()
    probe = subprocess.run([str(REPO_ROOT / ".venv/bin/python"), "-c", PROBE, str(tmp_path)], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "opened", probe.stderr  # free again


# ------------------------------------------------------------------------------------------------
# Parity: the same corpus and queries through Edge and qdrant-client give the same rankings
# ------------------------------------------------------------------------------------------------


def _grouped_ranking(hits, digits: int = 5) -> list[set[str]]:
    """Ids grouped by equal score, in rank order; the last group may be cut by the limit, so drop it."""
    groups: list[tuple[float, set[str]]] = []
    for h in hits:
        s = round(h.score, digits)
        if groups and groups[-1][0] == s:
            groups[-1][1].add(h.chunk.id)
        else:
            groups.append((s, {h.chunk.id}))
    return [g for _, g in groups[:-1]]


@pytest.mark.slow  # embeds 1,400 Cranfield abstracts: ~40 s on 2 busy cores
def test_edge_and_server_rank_identically(evaldata, embedder, tmp_path):
    folder = evaldata / "beir-cranfield"
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        docs = [json.loads(line) for _, line in zip(range(200), fh)]
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for _, line in zip(range(10), fh)]
    # The first 24 words of each abstract keep embedding to seconds on a busy 2-core machine.
    texts = [" ".join(d["text"].split()[:24]) for d in docs]
    enc = BM25Encoder(avg_doc_len=16.0)
    vectors = embedder.embed_passages(texts)
    points = [
        point_from(make_chunk(0, text, f"/cran/{d['_id']}.txt", acl=["public"] if i % 3 else ["public", "x"]), vec, enc)
        for i, (d, text, vec) in enumerate(zip(docs, texts, vectors))
    ]
    info = CollectionInfo(name="cran", embed_model=embedder.model_name, dimension=embedder.dimension, bm25_avg_doc_len=16.0)
    edge = EdgeStore(tmp_path, "cran")
    server = ServerStore("cran", location=":memory:")
    try:
        for store in (edge, server):
            store.create(info)
            store.upsert(points)
        compared = 0
        for query in queries:
            qvec = embedder.embed_query(query).tolist()
            qsparse = enc.encode_query(query)
            e_dense, e_sparse = edge.search(qvec, qsparse, SearchFilter(), 10)
            s_dense, s_sparse = server.search(qvec, qsparse, SearchFilter(), 10)
            assert ids_of(e_dense) == ids_of(s_dense)
            np.testing.assert_allclose([h.score for h in e_dense], [h.score for h in s_dense], atol=1e-4)
            assert _grouped_ranking(e_sparse) == _grouped_ranking(s_sparse)
            np.testing.assert_allclose([h.score for h in e_sparse], [h.score for h in s_sparse], rtol=1e-4)
            assert len(e_sparse) == 10
            compared += 1
        assert compared == 10
    finally:
        edge.close()
        server.close()


def point_from(chunk: Chunk, vec, enc: BM25Encoder) -> StoredPoint:
    return StoredPoint.from_chunk(chunk, vec, enc.encode_document(chunk.text))


# -- the dense index: quantization, HNSW, ACORN, payloads last -----------------------------------------

def _indexed_store(kind: str, tmp_path: Path, index: VectorIndexConfig, n: int = 1200, dim: int = 32):
    """A store of `n` random points, every other one labelled "secret" (the rest "public"), optimized.

    The engine thresholds are lowered so even these few points get an HNSW graph and quantized vectors
    (by default both need megabytes of vectors), and filtered searches use the graph rather than a scan.
    """
    index = dataclasses.replace(index, full_scan_threshold_kb=1, indexing_threshold_kb=1)
    if kind == "edge":
        store = EdgeStore(tmp_path / "qdrant", "ix", index)
    else:
        store = ServerStore("ix", path=str(tmp_path / "qdrant-local"), index=index)
    store.create(CollectionInfo(name="ix", embed_model="mini", dimension=dim, bm25_avg_doc_len=3.0))
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    words = ["wing", "lift", "drag", "plate", "flow", "shock"]
    store.upsert([point(make_chunk(0, f"{words[i % 6]} {words[(i // 6) % 6]} note", f"/docs/{i}.md",
                                   acl=["secret"] if i % 2 else ["public"]), vecs[i].tolist())
                  for i in range(n)])
    store.optimize()
    return store, vecs, rng


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_index_settings_reach_the_collection_config(kind, tmp_path):
    index = VectorIndexConfig(quantization="binary", hnsw_m=8, hnsw_ef_construct=40, hnsw_payload_m=0)
    store = (EdgeStore(tmp_path / "q", "c", index) if kind == "edge"
             else ServerStore("c", path=str(tmp_path / "local"), index=index))
    store.create(CollectionInfo(name="c", embed_model="mini", dimension=4))
    expected = {"quantization": "binary", "hnsw_m": 8, "hnsw_ef_construct": 40, "hnsw_payload_m": 0}
    assert store.index_config() == expected
    store.close()
    # read back from what the engine persisted, by a store opened with other settings
    again = (EdgeStore(tmp_path / "q", "c", VectorIndexConfig()) if kind == "edge"
             else ServerStore("c", path=str(tmp_path / "local")))
    assert again.index_config() == expected
    again.close()


def test_open_store_builds_collections_with_the_settings(settings):
    store = open_store(settings.replace(dense_quantization="none", hnsw_m=24, hnsw_ef_construct=64, hnsw_ef=200,
                                        acorn=False))
    assert store.index == VectorIndexConfig(quantization="none", hnsw_m=24, hnsw_ef_construct=64, hnsw_ef=200,
                                            acorn=False)
    store.create(CollectionInfo(name="test", embed_model="mini", dimension=4))
    assert store.index_config() == {"quantization": "none", "hnsw_m": 24, "hnsw_ef_construct": 64,
                                    "hnsw_payload_m": None}
    store.close()
    default = open_store(settings.replace(collection="other"))
    default.create(CollectionInfo(name="other", embed_model="mini", dimension=4))
    assert default.index_config()["quantization"] == Settings().dense_quantization == "scalar"
    default.close()


def test_quantized_search_with_rescoring_equals_exact_search(tmp_path):
    store, vecs, rng = _indexed_store("edge", tmp_path, VectorIndexConfig(quantization="scalar", rescore=True))
    public = SearchFilter(acl=["public"])
    for i in range(0, 40, 4):
        query = (vecs[i] + 0.3 * rng.standard_normal(vecs.shape[1])).tolist()
        approx, _ = store.search(query, None, public, 10)
        exact, _ = store.search(query, None, public, 10, exact=True)
        assert ids_of(approx) == ids_of(exact)
        assert [h.score for h in approx] == pytest.approx([h.score for h in exact], abs=1e-5)
    # The quantized vectors are really in use: without rescoring the scores are the int8 approximations.
    store.index = dataclasses.replace(store.index, rescore=False)
    coarse, _ = store.search(vecs[0].tolist(), None, public, 10)
    exact, _ = store.search(vecs[0].tolist(), None, public, 10, exact=True)
    assert max(abs(a.score - b.score) for a, b in zip(coarse, exact)) > 1e-4
    # dense_quantization "none" on a collection built quantized searches the float vectors only
    store.index = dataclasses.replace(store.index, quantization="none")
    floats, _ = store.search(vecs[0].tolist(), None, public, 10)
    assert [h.score for h in floats] == pytest.approx([h.score for h in exact], abs=1e-5)
    store.close()


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_acl_filter_holds_on_every_leg_with_acorn(kind, tmp_path):
    # max_selectivity 1.0: ACORN runs for every filtered dense search, not only restrictive ones.
    store, vecs, _rng = _indexed_store(kind, tmp_path, VectorIndexConfig(acorn=True, acorn_max_selectivity=1.0),
                                       n=200 if kind == "server" else 1000)
    public = SearchFilter(acl=["public"])
    for i in range(1, 30, 2):  # queries right on top of secret points
        dense, sparse = store.search(vecs[i].tolist(), ENC.encode_query("wing lift drag"), public, 50)
        assert len(dense) == 50 and sparse
        found = store.retrieve(ids_of(dense) + ids_of(sparse))
        assert found and all(c.acl == ["public"] for c in found)
    store.close()


def test_search_without_payloads_ranks_alike_and_retrieve_fetches_the_top(filled):
    query = ([1, 0, 0, 0], ENC.encode_query("wing lift"), SearchFilter(acl=["public", "eng"]), 10)
    full = filled.search(*query)
    bare = filled.search(*query, with_payload=False)
    for with_payload, ids_only in zip(full, bare):
        assert ids_of(with_payload) == ids_of(ids_only)
        assert [h.score for h in with_payload] == pytest.approx([h.score for h in ids_only])
        assert all(h.chunk.text == "" for h in ids_only) and all(h.chunk.text for h in with_payload)
    top = ids_of(bare[0])[:2]
    assert [c.text for c in filled.retrieve(top)] == [h.chunk.text for h in full[0][:2]]


@pytest.mark.parametrize("field, value, words", [
    ("dense_quantization", "pq", "none, scalar or binary"),
    ("dense_oversampling", 0.5, "1 to 16"),
    ("hnsw_m", 2, "4 to 128"),
    ("hnsw_ef_construct", 4, "8 to 1024"),
    ("hnsw_ef", 0, "1 to 4096"),
    ("hnsw_payload_m", -1, "0 to 128"),
    ("acorn_max_selectivity", 1.5, "0 to 1"),
])
def test_invalid_index_settings_name_the_field(field, value, words, tmp_path, monkeypatch):
    from rag.config import load_settings

    with pytest.raises(ConfigError, match=rf"'{field}'.*{words}"):
        load_settings(config_file=None, **{field: value})
    monkeypatch.setenv(f"RAG_{field.upper()}", str(value))
    with pytest.raises(ConfigError, match=rf"'{field}'"):
        load_settings()
