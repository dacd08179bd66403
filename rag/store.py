"""The store of record: one Qdrant point per chunk with a dense vector, a BM25 sparse vector and a payload.

Two backends behind one `Store` interface:
- `EdgeStore`: Qdrant Edge (`qdrant_edge`), the Qdrant engine in-process, one shard directory per
  collection at `<qdrant_path>/<collection>`; the default, no server needed.
- `ServerStore`: `qdrant_client` against a Qdrant server (`RAG_QDRANT_URL`), or its local mode for tests.

Both legs of a hybrid search run in one engine call with the same filter, so deletes, updates and
access control apply to dense and BM25 retrieval alike. Collection metadata (`CollectionInfo`: which
embedding model and dimension built it, the BM25 parameters) lives beside the data: a `collection.json`
in the Edge shard directory, collection metadata on the server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from rag.errors import ConfigError, ModelMismatchError, StoreError, StoreLockedError
from rag.lexical import BM25Encoder, SparseVector
from rag.models import Chunk, SearchFilter

log = logging.getLogger(__name__)

DENSE = "dense"
SPARSE = "bm25"
META_FILE = "collection.json"
META_KEY = "rag_collection"  # key of CollectionInfo inside server collection metadata
SCROLL_PAGE = 512

# Payload fields that filters use, with their index type. `dir_prefixes` is derived at upsert time
# from `file_path` (every ancestor directory), so a path-prefix filter is one indexed keyword match.
INDEXED_FIELDS: dict[str, str] = {
    "file_path": "keyword",
    "file_type": "keyword",
    "file_hash": "keyword",
    "acl": "keyword",
    "dir_prefixes": "keyword",
    "ingested_at": "datetime",
}


@dataclass
class CollectionInfo:
    """What a collection was built with; checked before every use so models are never mixed."""

    name: str
    embed_model: str
    dimension: int
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    bm25_avg_doc_len: float = 100.0
    bm25_language: str = "english"
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    schema_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def bm25_encoder(self) -> BM25Encoder:
        """The BM25 encoder this collection's sparse vectors were built with (queries must use the same)."""
        return BM25Encoder(k1=self.bm25_k1, b=self.bm25_b, avg_doc_len=self.bm25_avg_doc_len, language=self.bm25_language)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CollectionInfo":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class StoredPoint:
    """One point to write: a chunk id (UUID string), its vectors and its payload (`Chunk.to_payload()`)."""

    id: str
    dense: list[float]
    sparse: SparseVector
    payload: dict[str, Any]

    @classmethod
    def from_chunk(cls, chunk: Chunk, dense: Any, sparse: SparseVector) -> "StoredPoint":
        """Build a point from a Chunk and its vectors (numpy arrays are accepted for `dense`)."""
        return cls(id=chunk.id, dense=[float(x) for x in dense], sparse=sparse, payload=chunk.to_payload())


@dataclass
class ScoredChunk:
    """A chunk returned by one retrieval leg with that leg's score."""

    chunk: Chunk
    score: float


# --------------------------------------------------------------------------------------------------
# Backend-neutral helpers
# --------------------------------------------------------------------------------------------------


def dir_prefixes(file_path: str) -> list[str]:
    """Every ancestor directory of `file_path`, root first: "/a/b/c.txt" -> ["/", "/a", "/a/b"]."""
    prefixes: list[str] = []
    current = os.path.dirname(os.path.normpath(file_path))
    while current and current not in prefixes:
        prefixes.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return prefixes[::-1]


def _normalize_prefix(prefix: str) -> str:
    norm = os.path.normpath(prefix)
    return norm if norm != "." else prefix


def _normalize_datetime(value: str, name: str) -> str:
    """ISO 8601 -> RFC 3339 UTC, which both Qdrant backends parse. Naive times are taken as UTC."""
    try:
        dt = datetime.fromisoformat(value.strip())
    except (AttributeError, ValueError) as exc:
        raise ConfigError(f"filter {name}={value!r} is not an ISO 8601 date/time; use e.g. 2024-05-01 or 2024-05-01T12:00:00Z") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _prepare_payload(payload: dict[str, Any]) -> dict[str, Any]:
    out = dict(payload)
    if out.get("file_path"):
        out["dir_prefixes"] = dir_prefixes(str(out["file_path"]))
    return out


def _filter_spec(flt: SearchFilter | None) -> dict[str, Any] | None:
    """A SearchFilter as plain data both backends translate: {"must": [...], "path_prefix": str | None}.

    Conditions: ("any", key, values) and ("range", key, gte, lt). None means no filter at all.
    """
    if flt is None:
        return None
    must: list[tuple] = [("any", "acl", [str(a) for a in flt.acl])]
    if flt.file_paths is not None:
        must.append(("any", "file_path", [str(p) for p in flt.file_paths]))
    if flt.file_types is not None:
        must.append(("any", "file_type", [t.lower().lstrip(".") for t in flt.file_types]))
    if flt.ingested_after or flt.ingested_before:
        must.append((
            "range",
            "ingested_at",
            _normalize_datetime(flt.ingested_after, "ingested_after") if flt.ingested_after else None,
            _normalize_datetime(flt.ingested_before, "ingested_before") if flt.ingested_before else None,
        ))
    prefix = _normalize_prefix(flt.path_prefix) if flt.path_prefix else None
    return {"must": must, "path_prefix": prefix}


def _matches_nothing(flt: SearchFilter | None) -> bool:
    # An empty list of labels or paths can match no point; answer without asking the engine.
    return flt is not None and (not flt.acl or flt.file_paths == [] or flt.file_types == [])


_CHUNK_DEFAULTS: dict[str, Any] = {
    "text": "", "file_path": "", "file_hash": "", "file_type": "", "chunk_index": 0, "chunk_count": 1,
    "char_start": 0, "char_end": 0,
}


def _chunks_in_order(ids: list[str], records: list[Any]) -> list[Chunk]:
    """Chunks for the requested ids, in request order, skipping ids the store does not have."""
    by_id = {str(r.id): r for r in records}
    return [_chunk(i, by_id[str(i)].payload) for i in ids if str(i) in by_id]


def _chunk(point_id: Any, payload: dict[str, Any] | None) -> Chunk:
    # Points written by an older version (or by hand) may lack fields: fill them rather than crash a search.
    return Chunk.from_payload(str(point_id), {**_CHUNK_DEFAULTS, **(payload or {})})


# --------------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------------


class Store(ABC):
    """One collection of chunk points. See docs/architecture.md for the contract."""

    collection: str

    @abstractmethod
    def info(self) -> CollectionInfo | None:
        """The collection's metadata, or None when it does not exist yet."""

    @abstractmethod
    def create(self, info: CollectionInfo) -> None:
        """Create the collection: "dense" (cosine) + sparse "bm25" (Modifier.IDF), payload indexes."""

    def check_compatible(self, embed_model: str, dimension: int) -> None:
        """Raise ModelMismatchError when the collection was built with another model or dimension."""
        info = self.info()
        if info is None:
            return
        if info.embed_model != embed_model or int(info.dimension) != int(dimension):
            raise ModelMismatchError(
                f"collection {self.collection!r} was built with embedding model {info.embed_model!r} "
                f"(dimension {info.dimension}), but the configured model is {embed_model!r} (dimension {dimension}); "
                f"set RAG_EMBED_MODEL back to {info.embed_model!r}, or re-ingest into a new collection "
                "(RAG_COLLECTION=<new name>)"
            )

    def _check_dimension(self, size: int, what: str) -> None:
        info = self.info()
        if info is not None and size != int(info.dimension):
            raise ModelMismatchError(
                f"{what} has dimension {size} but collection {self.collection!r} holds {info.dimension}-dimensional "
                f"vectors of {info.embed_model!r}; set RAG_EMBED_MODEL back to it or re-ingest into a new collection"
            )

    @abstractmethod
    def upsert(self, points: list[StoredPoint]) -> None:
        """Insert or replace points (durable once this returns)."""

    @abstractmethod
    def delete_ids(self, ids: list[str]) -> None:
        """Delete points by id (missing ids are ignored)."""

    @abstractmethod
    def delete_file(self, file_path: str, keep_hash: str | None = None) -> int:
        """Delete all chunks of `file_path` (or all but the version `keep_hash`); returns how many."""

    @abstractmethod
    def count(self, flt: SearchFilter | None = None) -> int:
        """Number of points matching the filter (all points when None)."""

    @abstractmethod
    def iter_payloads(
        self, fields: list[str] | None = None, with_vectors: bool = False
    ) -> Iterator[tuple[str, dict, list[float] | None]]:
        """Every point as (id, payload restricted to `fields` or all, dense vector or None)."""

    @abstractmethod
    def retrieve(self, ids: list[str]) -> list[Chunk]:
        """Chunks by id, in the order asked; ids not in the store are skipped."""

    @abstractmethod
    def search(
        self, dense: list[float] | None, sparse: SparseVector | None, flt: SearchFilter | None, limit: int
    ) -> tuple[list[ScoredChunk], list[ScoredChunk]]:
        """Top-`limit` per leg (dense, bm25) in ONE engine call, same filter on both; a None leg is []."""

    @abstractmethod
    def disk_bytes(self) -> int:
        """Bytes on disk used by the collection (0 when the backend cannot tell)."""

    def _query_legs(self, dense: list[float] | None, sparse: SparseVector | None) -> list[tuple[str, Any]]:
        """The legs a search runs, as (vector name, plain vector): dense floats, or (indices, values)."""
        legs: list[tuple[str, Any]] = []
        if dense is not None and len(dense):
            self._check_dimension(len(dense), "the query vector")
            legs.append((DENSE, [float(x) for x in dense]))
        if sparse is not None and len(sparse.indices):
            legs.append((SPARSE, (list(sparse.indices), [float(v) for v in sparse.values])))
        return legs

    def optimize(self) -> None:
        """Build search indexes now (HNSW, payload); a no-op where the backend does it by itself."""

    @abstractmethod
    def flush(self) -> None:
        """Persist pending changes."""

    @abstractmethod
    def close(self) -> None:
        """Release the collection (locks, connections)."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the collection and all its data."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Qdrant Edge (embedded)
# --------------------------------------------------------------------------------------------------

# Edge locks a shard's WAL per open handle, so a second open in the same process would fail like a
# second process does. Stores on the same directory share one handle, reference-counted.
_EDGE_SHARDS: dict[str, list[Any]] = {}  # resolved path -> [EdgeShard, refcount]
_EDGE_LOCK = threading.Lock()


def _edge_open(path: Path) -> Any:
    import qdrant_edge as qe

    key = str(path)
    with _EDGE_LOCK:
        entry = _EDGE_SHARDS.get(key)
        if entry is not None:
            entry[1] += 1
            return entry[0]
        try:
            shard = qe.EdgeShard.load(key)
        except Exception as exc:
            raise _edge_error(exc, path) from exc
        _EDGE_SHARDS[key] = [shard, 1]
        return shard


def _edge_register(path: Path, shard: Any) -> None:
    with _EDGE_LOCK:
        _EDGE_SHARDS[str(path)] = [shard, 1]


def _edge_release(path: Path, force: bool = False) -> None:
    with _EDGE_LOCK:
        entry = _EDGE_SHARDS.get(str(path))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0 and not force:
            return
        del _EDGE_SHARDS[str(path)]
        shard = entry[0]
    try:
        shard.flush()
    finally:
        shard.close()


def _edge_error(exc: Exception, path: Path) -> StoreError:
    text = str(exc)
    if "WouldBlock" in text or "already locked" in text.lower():
        return StoreLockedError(
            f"another rag process is using the store at {path}; stop it or use a Qdrant server via RAG_QDRANT_URL"
        )
    return StoreError(f"cannot open the Qdrant Edge store at {path}: {text}; move it aside or choose another RAG_QDRANT_PATH")


class EdgeStore(Store):
    """A collection in an embedded Qdrant Edge shard at `<root>/<collection>`.

    The shard is opened (and its WAL locked) when the store is constructed, so a busy store fails
    early with StoreLockedError. Upserts go through Edge's write-ahead log: once `upsert` returns the
    points survive the process being killed (checked: kill -9 right after an upsert loses nothing).
    """

    def __init__(self, root: str | os.PathLike[str], collection: str) -> None:
        self.collection = collection
        self.root = Path(root).expanduser().resolve()
        self.path = self.root / collection
        self._shard: Any = None
        self._info: CollectionInfo | None = None
        self._closed = False
        if (self.path / "edge_config.json").exists() or (self.path / "segments").exists():
            self._shard = _edge_open(self.path)
            self._info = self._read_info()

    # -- metadata --------------------------------------------------------------------------------
    def _read_info(self) -> CollectionInfo | None:
        meta = self.path / META_FILE
        if not meta.is_file():
            return None
        try:
            return CollectionInfo.from_dict(json.loads(meta.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(f"{meta} is unreadable ({exc}); restore it or drop the collection and re-ingest") from exc

    def _write_info(self, info: CollectionInfo) -> None:
        meta = self.path / META_FILE
        tmp = meta.with_name(f".{META_FILE}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(info.to_dict(), fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, meta)  # atomic: readers see the old or the new file, never half of one

    def info(self) -> CollectionInfo | None:
        return self._info

    def create(self, info: CollectionInfo) -> None:
        import qdrant_edge as qe

        self._check_open()
        if self._info is not None:
            raise StoreError(f"collection {self.collection!r} already exists at {self.path}; drop it first to recreate it")
        if self._shard is None:
            config = qe.EdgeConfig(
                vectors={DENSE: qe.EdgeVectorParams(size=int(info.dimension), distance=qe.Distance.Cosine)},
                sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            )
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                shard = qe.EdgeShard.create(str(self.path), config)
            except Exception as exc:
                raise _edge_error(exc, self.path) from exc
            _edge_register(self.path, shard)
            self._shard = shard
        # A shard without collection.json is a creation interrupted before the metadata was written:
        # (re)creating the indexes is idempotent, so adopt it.
        schema = {"keyword": qe.PayloadSchemaType.Keyword, "datetime": qe.PayloadSchemaType.Datetime}
        for name, kind in INDEXED_FIELDS.items():
            self._shard.update(qe.UpdateOperation.create_field_index(name, schema[kind]))
        self._shard.flush()
        info.name = self.collection
        self._write_info(info)
        self._info = info

    # -- writes ----------------------------------------------------------------------------------
    def upsert(self, points: list[StoredPoint]) -> None:
        import qdrant_edge as qe

        if not points:
            return
        shard = self._require()
        for p in points:
            self._check_dimension(len(p.dense), f"point {p.id}")
        batch = [
            qe.Point(
                str(p.id),
                {DENSE: [float(x) for x in p.dense], SPARSE: qe.SparseVector(list(p.sparse.indices), [float(v) for v in p.sparse.values])},
                _prepare_payload(p.payload),
            )
            for p in points
        ]
        try:
            shard.update(qe.UpdateOperation.upsert_points(batch))
        except Exception as exc:
            raise StoreError(f"upsert of {len(points)} points into {self.path} failed: {exc}") from exc

    def delete_ids(self, ids: list[str]) -> None:
        import qdrant_edge as qe

        if ids:
            self._require().update(qe.UpdateOperation.delete_points([str(i) for i in ids]))

    def delete_file(self, file_path: str, keep_hash: str | None = None) -> int:
        import qdrant_edge as qe

        if self._info is None:
            return 0
        must = [qe.FieldCondition(key="file_path", match=qe.MatchValue(str(file_path)))]
        must_not = [qe.FieldCondition(key="file_hash", match=qe.MatchValue(keep_hash))] if keep_hash else None
        flt = qe.Filter(must=must, must_not=must_not)
        shard = self._require()
        n = shard.count(qe.CountRequest(exact=True, filter=flt))
        if n:
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
        return int(n)

    # -- reads -----------------------------------------------------------------------------------
    def count(self, flt: SearchFilter | None = None) -> int:
        import qdrant_edge as qe

        if self._info is None or _matches_nothing(flt):
            return 0
        return int(self._require().count(qe.CountRequest(exact=True, filter=self._filter(flt))))

    def iter_payloads(
        self, fields: list[str] | None = None, with_vectors: bool = False
    ) -> Iterator[tuple[str, dict, list[float] | None]]:
        import qdrant_edge as qe

        if self._info is None:
            return
        shard = self._require()
        with_payload: Any = qe.PayloadSelector.Include(list(fields)) if fields is not None else True
        offset = None
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=with_payload,
                                 with_vector=[DENSE] if with_vectors else False)
            )
            for rec in records:
                dense = None
                if with_vectors and rec.vector:
                    dense = list(rec.vector.get(DENSE) or []) if isinstance(rec.vector, dict) else list(rec.vector)
                yield str(rec.id), dict(rec.payload or {}), dense
            if offset is None or not records:
                return

    def retrieve(self, ids: list[str]) -> list[Chunk]:
        if not ids or self._info is None:
            return []
        records = self._require().retrieve([str(i) for i in ids], with_payload=True, with_vector=False)
        return _chunks_in_order(ids, records)

    def search(
        self, dense: list[float] | None, sparse: SparseVector | None, flt: SearchFilter | None, limit: int
    ) -> tuple[list[ScoredChunk], list[ScoredChunk]]:
        import qdrant_edge as qe

        if self._info is None or _matches_nothing(flt) or limit <= 0:
            return [], []
        edge_filter = self._filter(flt)
        legs = self._query_legs(dense, sparse)
        if not legs:
            return [], []
        requests = [
            qe.QueryRequest(limit=limit, filter=edge_filter, with_payload=True,
                            query=qe.Query.Nearest(list(vector) if name == DENSE else qe.SparseVector(*vector), using=name))
            for name, vector in legs
        ]
        names = [name for name, _ in legs]
        try:
            results = self._require().query_batch(qe.QueryBatchRequest(requests))
        except StoreError:
            raise
        except Exception as exc:  # e.g. a query vector of the wrong dimension
            raise StoreError(f"search in {self.path} failed: {exc}; check that RAG_EMBED_MODEL matches the collection "
                             f"({self._info.embed_model}, dimension {self._info.dimension})") from exc
        out = {name: [ScoredChunk(_chunk(p.id, p.payload), float(p.score)) for p in res] for name, res in zip(names, results)}
        return out.get(DENSE, []), out.get(SPARSE, [])

    def _filter(self, flt: SearchFilter | None) -> Any:
        import qdrant_edge as qe

        spec = _filter_spec(flt)
        if spec is None:
            return None
        must: list[Any] = []
        for cond in spec["must"]:
            if cond[0] == "any":
                must.append(qe.FieldCondition(key=cond[1], match=qe.MatchAny(cond[2])))
            else:
                must.append(qe.FieldCondition(key=cond[1], range=qe.RangeDateTime(gte=cond[2], lt=cond[3])))
        if spec["path_prefix"]:
            p = spec["path_prefix"]
            # A directory prefix matches files below it; a file path matches itself.
            must.append(qe.Filter(should=[
                qe.FieldCondition(key="dir_prefixes", match=qe.MatchValue(p)),
                qe.FieldCondition(key="file_path", match=qe.MatchValue(p)),
            ]))
        return qe.Filter(must=must)

    # -- lifecycle -------------------------------------------------------------------------------
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

    def optimize(self) -> None:
        """Build HNSW and payload indexes over the appended segments (blocking; minutes at 100k points)."""
        if self._shard is not None:
            self._shard.optimize()

    def flush(self) -> None:
        if self._shard is not None:
            self._shard.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._shard is not None:
            self._shard = None
            _edge_release(self.path)

    def drop(self) -> None:
        self._check_open()
        if self._shard is not None:
            self._shard = None
            _edge_release(self.path, force=True)
        self._info = None
        shutil.rmtree(self.path, ignore_errors=True)

    def _require(self) -> Any:
        self._check_open()
        if self._shard is None or self._info is None:
            raise StoreError(f"collection {self.collection!r} does not exist at {self.path}; ingest documents first (rag ingest PATH)")
        return self._shard

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store at {self.path} is closed")

    def __repr__(self) -> str:
        return f"EdgeStore(path={str(self.path)!r})"


# --------------------------------------------------------------------------------------------------
# Qdrant server (or qdrant-client local mode for tests)
# --------------------------------------------------------------------------------------------------


class ServerStore(Store):
    """A collection on a Qdrant server via qdrant-client (`url=`), or in its local mode (`location=":memory:"`
    or `path=`), which speaks the same API and is used by tests. CollectionInfo is kept in the
    collection's own metadata, so it travels with the data.
    """

    def __init__(
        self,
        collection: str,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        path: str | None = None,
        timeout: int = 30,
        client: Any = None,
    ) -> None:
        from qdrant_client import QdrantClient

        self.collection = collection
        self.where = url or location or path or "qdrant"
        try:
            if client is not None:
                self.client = client
            elif url:
                self.client = QdrantClient(url=url, api_key=api_key, timeout=timeout, check_compatibility=False)
            elif path:
                self.client = QdrantClient(path=path)
            else:
                self.client = QdrantClient(location=location or ":memory:")
            exists = self.client.collection_exists(collection)
        except Exception as exc:
            if "already accessed by another instance" in str(exc):
                raise StoreLockedError(f"another process is using the local Qdrant folder {path}; stop it or use a "
                                       "Qdrant server via RAG_QDRANT_URL") from exc
            raise StoreError(f"cannot reach Qdrant at {self.where} ({type(exc).__name__}: {exc}); "
                             "check RAG_QDRANT_URL and that the server is running") from exc
        self._info: CollectionInfo | None = self._read_info() if exists else None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StoreError, ConfigError):
            raise
        except Exception as exc:
            raise StoreError(f"Qdrant at {self.where}: {what} on collection {self.collection!r} failed: {exc}") from exc

    def _read_info(self) -> CollectionInfo | None:
        desc = self._call("get_collection", self.client.get_collection, self.collection)
        meta = (desc.config.metadata or {}).get(META_KEY)
        return CollectionInfo.from_dict(meta) if meta else None

    def info(self) -> CollectionInfo | None:
        return self._info

    def create(self, info: CollectionInfo) -> None:
        from qdrant_client import models as qm

        if self._info is not None:
            raise StoreError(f"collection {self.collection!r} already exists at {self.where}; drop it first to recreate it")
        info.name = self.collection
        if not self._call("collection_exists", self.client.collection_exists, self.collection):
            self._call("create_collection", self.client.create_collection, self.collection,
                       vectors_config={DENSE: qm.VectorParams(size=int(info.dimension), distance=qm.Distance.COSINE)},
                       sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                       metadata={META_KEY: info.to_dict()})
        else:  # exists without our metadata (interrupted create): adopt it
            self._call("update_collection", self.client.update_collection, self.collection, metadata={META_KEY: info.to_dict()})
        schema = {"keyword": qm.PayloadSchemaType.KEYWORD, "datetime": qm.PayloadSchemaType.DATETIME}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode warns that payload indexes are no-ops there
            for name, kind in INDEXED_FIELDS.items():
                self._call("create_payload_index", self.client.create_payload_index, self.collection, name, schema[kind])
        self._info = info

    def upsert(self, points: list[StoredPoint]) -> None:
        from qdrant_client import models as qm

        if not points:
            return
        self._require()
        for p in points:
            self._check_dimension(len(p.dense), f"point {p.id}")
        batch = [
            qm.PointStruct(
                id=str(p.id),
                vector={DENSE: [float(x) for x in p.dense],
                        SPARSE: qm.SparseVector(indices=list(p.sparse.indices), values=[float(v) for v in p.sparse.values])},
                payload=_prepare_payload(p.payload),
            )
            for p in points
        ]
        self._call("upsert", self.client.upsert, self.collection, batch, wait=True)

    def delete_ids(self, ids: list[str]) -> None:
        from qdrant_client import models as qm

        if ids and self._info is not None:
            self._call("delete", self.client.delete, self.collection, qm.PointIdsList(points=[str(i) for i in ids]), wait=True)

    def delete_file(self, file_path: str, keep_hash: str | None = None) -> int:
        from qdrant_client import models as qm

        if self._info is None:
            return 0
        flt = qm.Filter(
            must=[qm.FieldCondition(key="file_path", match=qm.MatchValue(value=str(file_path)))],
            must_not=[qm.FieldCondition(key="file_hash", match=qm.MatchValue(value=keep_hash))] if keep_hash else None,
        )
        n = self._call("count", self.client.count, self.collection, count_filter=flt, exact=True).count
        if n:
            self._call("delete", self.client.delete, self.collection, qm.FilterSelector(filter=flt), wait=True)
        return int(n)

    def count(self, flt: SearchFilter | None = None) -> int:
        if self._info is None or _matches_nothing(flt):
            return 0
        return int(self._call("count", self.client.count, self.collection, count_filter=self._filter(flt), exact=True).count)

    def iter_payloads(
        self, fields: list[str] | None = None, with_vectors: bool = False
    ) -> Iterator[tuple[str, dict, list[float] | None]]:
        if self._info is None:
            return
        offset = None
        while True:
            records, offset = self._call(
                "scroll", self.client.scroll, self.collection, limit=SCROLL_PAGE, offset=offset,
                with_payload=list(fields) if fields is not None else True,
                with_vectors=[DENSE] if with_vectors else False,
            )
            for rec in records:
                dense = None
                if with_vectors and rec.vector:
                    dense = list(rec.vector.get(DENSE) or []) if isinstance(rec.vector, dict) else list(rec.vector)
                yield str(rec.id), dict(rec.payload or {}), dense
            if offset is None or not records:
                return

    def retrieve(self, ids: list[str]) -> list[Chunk]:
        if not ids or self._info is None:
            return []
        records = self._call("retrieve", self.client.retrieve, self.collection, [str(i) for i in ids],
                             with_payload=True, with_vectors=False)
        return _chunks_in_order(ids, records)

    def search(
        self, dense: list[float] | None, sparse: SparseVector | None, flt: SearchFilter | None, limit: int
    ) -> tuple[list[ScoredChunk], list[ScoredChunk]]:
        from qdrant_client import models as qm

        if self._info is None or _matches_nothing(flt) or limit <= 0:
            return [], []
        server_filter = self._filter(flt)
        legs = self._query_legs(dense, sparse)
        if not legs:
            return [], []
        requests = [
            qm.QueryRequest(query=list(vector) if name == DENSE else qm.SparseVector(indices=vector[0], values=vector[1]),
                            using=name, filter=server_filter, limit=limit, with_payload=True)
            for name, vector in legs
        ]
        names = [name for name, _ in legs]
        responses = self._call("query_batch_points", self.client.query_batch_points, self.collection, requests)
        out = {name: [ScoredChunk(_chunk(p.id, p.payload), float(p.score)) for p in res.points]
               for name, res in zip(names, responses)}
        return out.get(DENSE, []), out.get(SPARSE, [])

    def _filter(self, flt: SearchFilter | None) -> Any:
        from qdrant_client import models as qm

        spec = _filter_spec(flt)
        if spec is None:
            return None
        must: list[Any] = []
        for cond in spec["must"]:
            if cond[0] == "any":
                must.append(qm.FieldCondition(key=cond[1], match=qm.MatchAny(any=cond[2])))
            else:
                must.append(qm.FieldCondition(key=cond[1], range=qm.DatetimeRange(gte=cond[2], lt=cond[3])))
        if spec["path_prefix"]:
            p = spec["path_prefix"]
            must.append(qm.Filter(should=[
                qm.FieldCondition(key="dir_prefixes", match=qm.MatchValue(value=p)),
                qm.FieldCondition(key="file_path", match=qm.MatchValue(value=p)),
            ]))
        return qm.Filter(must=must)

    def disk_bytes(self) -> int:
        return 0  # the server does not report per-collection disk usage through the API

    def flush(self) -> None:
        pass  # every write waits for the server (wait=True); the server's WAL makes it durable

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead connection must not mask the real error
            log.debug("closing qdrant client failed", exc_info=True)

    def drop(self) -> None:
        self._call("delete_collection", self.client.delete_collection, self.collection)
        self._info = None

    def _require(self) -> None:
        if self._info is None:
            raise StoreError(f"collection {self.collection!r} does not exist at {self.where}; ingest documents first (rag ingest PATH)")

    def __repr__(self) -> str:
        return f"ServerStore(where={self.where!r}, collection={self.collection!r})"


def open_store(settings: Any) -> Store:
    """ServerStore when `settings.qdrant_url` is set, else the embedded EdgeStore under `settings.qdrant_path`."""
    if settings.qdrant_url:
        return ServerStore(settings.collection, url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    return EdgeStore(settings.qdrant_path, settings.collection)
