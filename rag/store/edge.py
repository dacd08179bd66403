"""The embedded driver: a collection is one Qdrant Edge shard at `<root>/<collection>`.

Only one process may use a shard. Edge locks its WAL, but `EdgeShard.load()` opens (and truncates)
files such as `tracker_journal.dat` before it reaches that lock, so a second process used to damage a
live store on its way to the lock error. We therefore take an exclusive `flock` on
`<root>/.<collection>.lock` before any Edge file is opened and hold it until the last store on that
shard in this process closes; a second process fails on that lock and touches nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from rag.errors import StoreError, StoreLockedError
from rag.store.base import DENSE, SPARSE, CollectionInfo, Leg, RawPoint, Store, StoredPoint, dense_of
from rag.store.vector_index import VectorIndexConfig, dense_search_params

META_FILE = "collection.json"

log = logging.getLogger(__name__)


def _qe() -> Any:
    # Imported on first use: commands that never open a store (help, config checks) skip the native module.
    import qdrant_edge

    return qdrant_edge


def _flush_and_close(shard: Any) -> None:
    """Flush a shard's writes, then close it even when the flush fails (None: nothing open)."""
    if shard is None:
        return
    try:
        shard.flush()
    finally:
        shard.close()


class _Handle:
    """One process's hold on a shard directory: the lock file, the open shard (if any), its users."""

    def __init__(self, lock_fd: int) -> None:
        self.lock_fd = lock_fd
        self.shard: Any = None
        self.refs = 0


# Edge locks a shard's WAL per open handle, so a second open in the same process would fail like a
# second process does (and flock, being per open file, would refuse a second lock too). Stores on the
# same directory share one handle, reference-counted.
_HANDLES: dict[str, _Handle] = {}
_HANDLES_LOCK = threading.RLock()  # also held while a shard is loaded, created or dropped (re-entered by _release)


def _locked_message(path: Path) -> str:
    return (f"another rag process is using the store at {path}; stop it or use its server (rag serve), "
            "or point RAG_QDRANT_URL at a Qdrant server")


def _acquire(path: Path, load: bool) -> _Handle:
    """This process's handle on `path`, taking the OS lock first if no store here holds it yet.

    With `load`, the existing shard is opened too (once per process), after the lock.
    """
    key = str(path)
    with _HANDLES_LOCK:
        handle = _HANDLES.get(key)
        if handle is None:
            lock_file = path.parent / f".{path.name}.lock"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot create the lock file {lock_file} ({exc.strerror or exc}); "
                                 "check RAG_QDRANT_PATH and its permissions") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                raise StoreLockedError(_locked_message(path)) from exc
            handle = _HANDLES[key] = _Handle(fd)
        handle.refs += 1
        if load and handle.shard is None:
            try:
                handle.shard = _load_shard(key)
            except Exception as exc:
                _release(path, handle)
                raise _edge_error(exc, path) from exc
        return handle


def _payload_memory() -> Any:
    """Where payloads live: Cached = memory-mapped and kept in the page cache (evictable, not process heap).

    Edge's default, Cold, reads each payload from disk on demand; at 1M chunks reading the final top-10
    payloads then cost more than both search legs together on a cold cache (the bench's first pass:
    hybrid p50 24 ms against 8 ms once the same payloads were cached).
    """
    return _qe().Memory.Cached


def _sparse_vectors() -> dict[str, Any]:
    """The BM25 leg's sparse vector: term weights from our encoder, IDF applied by the engine."""
    qe = _qe()
    return {SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}


def _load_shard(path: str) -> Any:
    """Open an existing shard with payloads Cached (recorded in the shard's config from then on).

    The config names only the sparse vector (every collection has `bm25` with IDF); the dense vector
    and index settings are inherited from the shard as stored. A shard that refuses it (e.g. written by
    another tool) opens as it is.
    """
    qe = _qe()
    config = qe.EdgeConfig(sparse_vectors=_sparse_vectors(), payload_memory=_payload_memory())
    try:
        return qe.EdgeShard.load(path, config)
    except Exception as exc:  # incompatible with the stored config: open it unchanged (and say so)
        log.info("opening %s with its stored settings (payload cache not applied: %s)", path, exc)
        return qe.EdgeShard.load(path)


def _release(path: Path, handle: _Handle) -> None:
    """Drop one user of the handle; the last one closes the shard and only then unlocks."""
    # Under the registry lock until the flock is gone: a store opened meanwhile by another thread would
    # otherwise find no handle, open a new descriptor and be refused by this process's own lock.
    with _HANDLES_LOCK:
        handle.refs -= 1
        if handle.refs > 0:
            return
        if _HANDLES.get(str(path)) is handle:
            del _HANDLES[str(path)]
        shard, handle.shard = handle.shard, None
        try:
            _flush_and_close(shard)
        finally:
            os.close(handle.lock_fd)  # closing the descriptor releases the flock


def _edge_error(exc: Exception, path: Path) -> StoreError:
    text = str(exc)
    if "WouldBlock" in text or "already locked" in text.lower():
        # Another process that does not take our lock file (an older rag, or a foreign tool).
        return StoreLockedError(_locked_message(path))
    return StoreError(f"cannot open the Qdrant Edge store at {path}: {text}; move it aside or choose another RAG_QDRANT_PATH")


class EdgeStore(Store):
    """A collection in an embedded Qdrant Edge shard at `<root>/<collection>`.

    The store's lock is taken, and an existing shard opened, when the store is constructed, so a busy
    store fails early with StoreLockedError. Upserts go through Edge's write-ahead log: once `upsert`
    returns the points survive the process being killed (checked: kill -9 right after an upsert loses nothing).
    """

    def __init__(self, root: str | os.PathLike[str], collection: str, index: VectorIndexConfig | None = None) -> None:
        # Build-time parts of `index` apply when this store creates the collection; search-time parts
        # (rescore, oversampling, hnsw_ef, ACORN) to every dense query.
        self.index = index or VectorIndexConfig()
        self.collection = collection
        self.root = Path(root).expanduser().resolve()
        self.path = self.root / collection
        self.where = str(self.path)
        self._handle: _Handle | None = None
        if (self.path / "edge_config.json").exists() or (self.path / "segments").exists():
            self._handle = _acquire(self.path, load=True)
        try:
            self._open()
        except BaseException:
            self._detach()  # the caller never gets this store, so nobody else would release the lock
            raise

    # -- handle ----------------------------------------------------------------------------------
    def _detach(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            _release(self.path, handle)

    @property
    def _shard(self) -> Any:
        """The open shard, or None (no collection yet, dropped, or closed)."""
        return self._handle.shard if self._handle is not None else None

    def _live_shard(self) -> Any:
        shard = self._shard
        if shard is None:
            raise StoreError(f"collection {self.collection!r} does not exist at {self.path}; "
                             "ingest documents first (rag ingest PATH)")
        return shard

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"Qdrant Edge at {self.path}: {what} failed: {exc}") from exc

    # -- conditions ------------------------------------------------------------------------------
    def _match_any(self, key: str, values: list[str]) -> Any:
        qe = _qe()
        return qe.FieldCondition(key=key, match=qe.MatchAny(list(values)))

    def _match_value(self, key: str, value: str) -> Any:
        qe = _qe()
        return qe.FieldCondition(key=key, match=qe.MatchValue(value))

    def _datetime_range(self, key: str, gte: str | None, lt: str | None) -> Any:
        qe = _qe()
        return qe.FieldCondition(key=key, range=qe.RangeDateTime(gte=gte, lt=lt))

    def _combine(self, must: Sequence[Any] = (), should: Sequence[Any] = (), must_not: Sequence[Any] = ()) -> Any:
        return _qe().Filter(must=list(must) or None, should=list(should) or None, must_not=list(must_not) or None)

    # -- reads -----------------------------------------------------------------------------------
    def _search_params(self, leg: Leg) -> Any:
        """The dense leg's SearchParams (ef, quantization rescoring, ACORN); None for the sparse leg."""
        if leg.name != DENSE:
            return None
        return dense_search_params(_qe(), self.index, leg.exact, leg.filter is not None)

    def _query_batch(self, legs: list[Leg]) -> list[list[RawPoint]]:
        qe = _qe()
        requests = [
            qe.QueryRequest(limit=leg.limit, filter=leg.filter, with_payload=leg.with_payload,
                            params=self._search_params(leg),
                            query=qe.Query.Nearest(list(leg.vector) if leg.name == DENSE else qe.SparseVector(*leg.vector),
                                                   using=leg.name))
            for leg in legs
        ]
        try:
            results = self._live_shard().query_batch(qe.QueryBatchRequest(requests))
        except StoreError:
            raise
        except Exception as exc:  # e.g. a query vector of the wrong dimension
            info = self.info()
            raise StoreError(f"search in {self.path} failed: {exc}; check that RAG_EMBED_MODEL matches the collection "
                             f"({info.embed_model if info else '?'}, dimension {info.dimension if info else '?'})") from exc
        return [[RawPoint(str(p.id), dict(p.payload or {}), float(p.score)) for p in rows] for rows in results]

    def _scroll(self, engine_filter: Any, fields: list[str] | None, with_vectors: bool, offset: Any,
                limit: int) -> tuple[list[RawPoint], Any]:
        qe = _qe()
        request = qe.ScrollRequest(offset=offset, limit=limit, filter=engine_filter,
                                   with_payload=(True if fields is None else
                                                 qe.PayloadSelector.Include(list(fields)) if fields else False),
                                   with_vector=[DENSE] if with_vectors else False)
        records, next_offset = self._call("scroll", self._live_shard().scroll, request)
        return [RawPoint(str(r.id), dict(r.payload or {}), dense=dense_of(r.vector) if with_vectors else None)
                for r in records], next_offset

    def _retrieve(self, ids: list[str]) -> list[RawPoint]:
        records = self._call("retrieve", lambda: self._live_shard().retrieve(ids, with_payload=True, with_vector=False))
        return [RawPoint(str(r.id), dict(r.payload or {})) for r in records]

    def _count(self, engine_filter: Any) -> int:
        return int(self._call("count", self._live_shard().count, _qe().CountRequest(exact=True, filter=engine_filter)))

    # -- writes ----------------------------------------------------------------------------------
    def _upsert(self, points: list[StoredPoint]) -> None:
        qe = _qe()
        batch = [qe.Point(p.id, {DENSE: p.dense, SPARSE: qe.SparseVector(p.sparse.indices, p.sparse.values)}, p.payload)
                 for p in points]
        self._call(f"upsert of {len(points)} points", self._live_shard().update, qe.UpdateOperation.upsert_points(batch))

    def _delete_by_filter(self, engine_filter: Any) -> None:
        qe = _qe()
        self._call("delete", self._live_shard().update, qe.UpdateOperation.delete_points_by_filter(engine_filter))

    def _delete_ids(self, ids: list[str]) -> None:
        qe = _qe()
        self._call("delete", self._live_shard().update, qe.UpdateOperation.delete_points(ids))

    # -- collection ------------------------------------------------------------------------------
    def _collection_exists(self) -> bool:
        return self._shard is not None

    def _create_collection(self, info: CollectionInfo) -> None:
        qe = _qe()
        if self._handle is None:
            self._handle = _acquire(self.path, load=False)  # the lock comes before the shard's files
        with _HANDLES_LOCK:
            if self._handle.shard is not None:  # another store in this process created it meanwhile
                return
            ix = self.index
            quantization = {
                "none": None,
                "scalar": lambda: qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True),
                "binary": lambda: qe.BinaryQuantizationConfig(always_ram=True),
            }[ix.quantization]
            config = qe.EdgeConfig(
                vectors={DENSE: qe.EdgeVectorParams(
                    size=int(info.dimension), distance=qe.Distance.Cosine,
                    quantization_config=quantization() if quantization else None,
                    hnsw_config=qe.HnswIndexConfig(m=ix.hnsw_m, ef_construct=ix.hnsw_ef_construct,
                                                   full_scan_threshold=ix.full_scan_threshold_kb,
                                                   payload_m=ix.hnsw_payload_m))},
                sparse_vectors=_sparse_vectors(),
                optimizers=(qe.EdgeOptimizersConfig(indexing_threshold=ix.indexing_threshold_kb)
                            if ix.indexing_threshold_kb is not None else None),
                payload_memory=_payload_memory(),
            )
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                self._handle.shard = qe.EdgeShard.create(str(self.path), config)
            except Exception as exc:
                raise _edge_error(exc, self.path) from exc

    def _create_index(self, field_name: str, kind: str) -> None:
        qe = _qe()
        schema = {"keyword": qe.PayloadSchemaType.Keyword, "datetime": qe.PayloadSchemaType.Datetime}[kind]
        self._call(f"index on {field_name}", self._live_shard().update, qe.UpdateOperation.create_field_index(field_name, schema))

    def _read_info(self) -> CollectionInfo | None:
        meta = self.path / META_FILE
        if not meta.is_file():
            return None
        try:
            return CollectionInfo.from_dict(json.loads(meta.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(f"{meta} is unreadable ({exc}); restore it or drop the collection and re-ingest") from exc

    def _write_info(self, info: CollectionInfo) -> None:
        self._live_shard().flush()  # vectors and indexes are on disk before the metadata says the collection exists
        meta = self.path / META_FILE
        tmp = meta.with_name(f".{META_FILE}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(info.to_dict(), fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, meta)  # atomic: readers see the old or the new file, never half of one

    def _drop_collection(self) -> None:
        # Close the shard (for every store of this process on it) but keep the lock until close():
        # no other process may start using the directory while this store can still recreate it.
        with _HANDLES_LOCK:
            shard = None
            if self._handle is not None:
                shard, self._handle.shard = self._handle.shard, None
            try:
                _flush_and_close(shard)
            finally:
                shutil.rmtree(self.path, ignore_errors=True)

    def _close(self) -> None:
        self._detach()

    # -- engine-specific -------------------------------------------------------------------------
    def disk_bytes(self) -> int:
        # Allocated blocks, not apparent sizes: Edge preallocates sparse 32 MB mmap pages and WAL
        # files, so apparent sizes report ~200 MB for an empty collection.
        total = 0
        for dirpath, _dirs, files in os.walk(self.path):
            for name in files:
                try:
                    st = os.stat(os.path.join(dirpath, name))
                    total += min(st.st_size, getattr(st, "st_blocks", st.st_size // 512 + 1) * 512)
                except OSError:
                    pass  # a segment file replaced by the optimizer while we walk
        return total

    def index_config(self) -> dict[str, Any] | None:
        # Read back what the engine persisted with the shard (edge_config.json), not what we asked for.
        path = self.path / "edge_config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return _index_config_of(data)

    def optimize(self) -> None:
        """Build HNSW and payload indexes over the appended segments (blocking; minutes at 100k points)."""
        if self._shard is not None:
            self._call("optimize", self._shard.optimize)

    def flush(self) -> None:
        if self._shard is not None:
            self._call("flush", self._shard.flush)

    def __repr__(self) -> str:
        return f"EdgeStore(path={str(self.path)!r})"



def _index_config_of(edge_config: dict[str, Any]) -> dict[str, Any] | None:
    """{quantization, hnsw_m, hnsw_ef_construct} of the dense vector in a persisted Edge config."""
    vectors = edge_config.get("vectors") or edge_config.get("vector_data") or {}
    dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
    if not isinstance(dense, dict):
        return None
    quant = dense.get("quantization_config") or edge_config.get("quantization_config")
    hnsw = dense.get("hnsw_config") or edge_config.get("hnsw_config") or {}
    kind = "none" if not quant else "scalar" if "scalar" in quant else "binary" if "binary" in quant else next(iter(quant))
    return {"quantization": kind, "hnsw_m": hnsw.get("m"), "hnsw_ef_construct": hnsw.get("ef_construct"),
            "hnsw_payload_m": hnsw.get("payload_m")}
