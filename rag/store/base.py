"""The store algorithm, written once: filters, query legs, scrolling, count-then-delete, payload decoding.

`Store` holds every rule of how chunks live in Qdrant; a driver (`EdgeStore`, `ServerStore`) only
translates a handful of primitives into its engine's calls:

    conditions   _match_any(key, values), _match_value(key, value), _datetime_range(key, gte, lt),
                 _combine(must, should, must_not) -> an engine filter
    reads        _query_batch(legs) -> one engine call for all legs, _scroll(...) -> one page,
                 _retrieve(ids), _count(filter)
    writes       _upsert(points), _delete_by_filter(filter), _delete_ids(ids)
    collection   _collection_exists(), _create_collection(info), _create_index(field, kind),
                 _read_info(), _write_info(info), _drop_collection(), _close()
    plus the public flush(), optimize(), disk_bytes() where the engines differ.

Drivers return rows as `RawPoint` (id, payload, score, dense) and raise `StoreError` with context.
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, NamedTuple, Sequence

from rag.errors import ConfigError, ModelMismatchError, StoreError
from rag.lexical import BM25Encoder, SparseVector
from rag.models import Chunk, SearchFilter

DENSE = "dense"
SPARSE = "bm25"
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
# Payload fields the store derives for its own filters: written on upsert, never returned to callers.
INTERNAL_FIELDS = frozenset({"dir_prefixes"})


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
    # The rag.backends backend the dense vectors came from (torch-fp32, torch-bf16, onnx-fp32, onnx-int8).
    # None: not recorded (collections from before backends), which means torch-fp32.
    embed_backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored form (JSON-ready); an unrecorded embed backend is left out, as in older collections."""
        data = dataclasses.asdict(self)
        if data["embed_backend"] is None:  # unrecorded: stored exactly as before backends existed
            del data["embed_backend"]
        return data

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


class RawPoint(NamedTuple):
    """A point as a driver returns it: the engine's payload as stored, a score (queries) or dense vector (scrolls)."""

    id: str
    payload: dict[str, Any]
    score: float = 0.0
    dense: list[float] | None = None


class Leg(NamedTuple):
    """One retrieval leg of a batch query: vector name, the plain vector, the engine filter, the limit.

    `vector` is a list of floats for "dense", or (indices, values) for the sparse "bm25" leg.
    """

    name: str
    vector: Any
    filter: Any
    limit: int
    with_payload: bool = True  # False: ids and scores only (payloads fetched later for the final top-k)
    exact: bool = False  # True: exact (brute-force) dense search, the ground truth for recall checks


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


def stored_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as written: the caller's fields plus the derived internal ones (`dir_prefixes`)."""
    out = {k: v for k, v in payload.items() if k not in INTERNAL_FIELDS}
    if out.get("file_path"):
        out["dir_prefixes"] = dir_prefixes(str(out["file_path"]))
    return out


def public_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    """The payload as callers see it: internal fields removed."""
    return {k: v for k, v in (payload or {}).items() if k not in INTERNAL_FIELDS}


def matches_nothing(flt: SearchFilter | None) -> bool:
    """True when the filter can match no point (no labels, an empty path or type list)."""
    # Answered without asking the engine: an empty MatchAny would mean "no condition" to some backends.
    return flt is not None and (not flt.acl or flt.file_paths == [] or flt.file_types == [])


def dense_of(vector: Any) -> list[float] | None:
    """The "dense" vector of an engine record's vector field (a dict of named vectors, or one vector)."""
    if not vector:
        return None
    return list(vector.get(DENSE) or []) if isinstance(vector, dict) else list(vector)


# Fields a stored point may lack. `acl` is not here: each chunk gets its own empty list (no labels: what the
# engine's ACL filter makes of it), never one list shared by every decoded chunk.
_CHUNK_DEFAULTS: dict[str, Any] = {
    "text": "", "file_path": "", "file_hash": "", "file_type": "", "chunk_index": 0, "chunk_count": 1,
    "char_start": 0, "char_end": 0,
}


def decode_chunk(point_id: Any, payload: dict[str, Any] | None) -> Chunk:
    """A Chunk from a stored point; missing fields get defaults, unknown and internal fields are ignored."""
    if not payload:  # an id-only search hit (with_payload=False): ~200 per hybrid query, so the short path
        return Chunk(id=str(point_id), acl=[], **_CHUNK_DEFAULTS)
    # Points written by an older version (or by hand) may lack fields: fill them rather than crash a search.
    return Chunk.from_payload(str(point_id), {**_CHUNK_DEFAULTS, "acl": [], **public_payload(payload)})


# --------------------------------------------------------------------------------------------------
# The algorithm
# --------------------------------------------------------------------------------------------------


class Store(ABC):
    """One collection of chunk points: the Qdrant algorithm over a driver's primitives.

    Subclasses set `collection` and `where` (for messages), open their engine handle, then call
    `self._open()` to load the collection's metadata. See docs/architecture.md for the contract.
    """

    collection: str
    where: str  # where the collection lives, for error messages (a path or a URL)
    _info: CollectionInfo | None = None
    _closed: bool = False

    def _open(self) -> None:
        """Load the collection's metadata (None when it does not exist, or its creation never finished)."""
        self._info = self._read_info() if self._collection_exists() else None

    # -- metadata --------------------------------------------------------------------------------
    def info(self) -> CollectionInfo | None:
        """The collection's metadata, or None when it does not exist yet."""
        return self._info

    def create(self, info: CollectionInfo) -> None:
        """Create the collection: "dense" (cosine) + sparse "bm25" (Modifier.IDF), payload indexes.

        The metadata is written last, so a creation interrupted before it leaves a collection without
        metadata, which the next `create` adopts (creating vectors and indexes again is idempotent).
        """
        self._check_open()
        if self._info is not None:
            raise StoreError(f"collection {self.collection!r} already exists at {self.where}; drop it first to recreate it")
        info.name = self.collection
        if not self._collection_exists():
            self._create_collection(info)
        for name, kind in INDEXED_FIELDS.items():
            self._create_index(name, kind)
        self._write_info(info)
        self._info = info

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

    # -- writes ----------------------------------------------------------------------------------
    def upsert(self, points: list[StoredPoint]) -> None:
        """Insert or replace points (durable once this returns)."""
        if not points:
            return
        self._require()
        for p in points:
            self._check_dimension(len(p.dense), f"point {p.id}")
        self._upsert([
            StoredPoint(id=str(p.id), dense=[float(x) for x in p.dense],
                        sparse=SparseVector(list(p.sparse.indices), [float(v) for v in p.sparse.values]),
                        payload=stored_payload(p.payload))
            for p in points
        ])

    def delete_ids(self, ids: list[str]) -> None:
        """Delete points by id (missing ids are ignored)."""
        self._check_open()
        if ids and self._info is not None:
            self._delete_ids([str(i) for i in ids])

    def delete_file(self, file_path: str, keep_hash: str | None = None) -> int:
        """Delete all chunks of `file_path` (or all but the version `keep_hash`); returns how many."""
        self._check_open()
        if self._info is None:
            return 0
        flt = self._combine(
            must=[self._match_value("file_path", str(file_path))],
            must_not=[self._match_value("file_hash", keep_hash)] if keep_hash else [],
        )
        n = self._count(flt)
        if n:
            self._delete_by_filter(flt)
        return int(n)

    # -- reads -----------------------------------------------------------------------------------
    def count(self, flt: SearchFilter | None = None) -> int:
        """Number of points matching the filter (all points when None)."""
        self._check_open()
        if self._info is None or matches_nothing(flt):
            return 0
        return int(self._count(self._filter(flt)))

    def iter_payloads(
        self, fields: list[str] | None = None, with_vectors: bool = False, flt: SearchFilter | None = None
    ) -> Iterator[tuple[str, dict, list[float] | None]]:
        """Every point matching `flt` (all when None) as (id, payload, dense vector or None).

        The payload holds `fields` only (all when None, none when []), never the store's internal fields. The filter
        runs inside the engine, so an ACL-filtered scan never reads a chunk the caller may not see.
        """
        self._check_open()
        if self._info is None or matches_nothing(flt):
            return
        engine_filter = self._filter(flt)
        wanted = [f for f in fields if f not in INTERNAL_FIELDS] if fields is not None else None
        offset: Any = None
        while True:
            records, offset = self._scroll(engine_filter, wanted, with_vectors, offset, SCROLL_PAGE)
            for rec in records:
                yield rec.id, public_payload(rec.payload), rec.dense if with_vectors else None
            if offset is None or not records:
                return

    def retrieve(self, ids: list[str]) -> list[Chunk]:
        """Chunks by id, in the order asked; ids not in the store are skipped."""
        self._check_open()
        if not ids or self._info is None:
            return []
        by_id = {rec.id: rec for rec in self._retrieve([str(i) for i in ids])}
        return [decode_chunk(i, by_id[str(i)].payload) for i in ids if str(i) in by_id]

    def search(
        self, dense: list[float] | None, sparse: SparseVector | None, flt: SearchFilter | None, limit: int,
        with_payload: bool = True, exact: bool = False,
    ) -> tuple[list[ScoredChunk], list[ScoredChunk]]:
        """Top-`limit` per leg (dense, bm25) in ONE engine call, same filter on both; a None leg is [].

        `with_payload=False` returns chunks that carry only their id (fetch the ones you keep with
        `retrieve`): reading 2 x `limit` payloads costs more than the search itself at scale.
        `exact=True` searches the dense leg exhaustively (the ground truth of recall checks).
        """
        self._check_open()
        if self._info is None or matches_nothing(flt) or limit <= 0:
            return [], []
        engine_filter = self._filter(flt)
        legs = [Leg(name, vector, engine_filter, limit, with_payload, exact)
                for name, vector in self._query_legs(dense, sparse)]
        if not legs:
            return [], []
        results = self._query_batch(legs)
        out = {leg.name: [ScoredChunk(decode_chunk(p.id, p.payload), float(p.score)) for p in rows]
               for leg, rows in zip(legs, results)}
        return out.get(DENSE, []), out.get(SPARSE, [])

    def _query_legs(self, dense: list[float] | None, sparse: SparseVector | None) -> list[tuple[str, Any]]:
        """The legs a search runs, as (vector name, plain vector): dense floats, or (indices, values)."""
        legs: list[tuple[str, Any]] = []
        if dense is not None and len(dense):
            self._check_dimension(len(dense), "the query vector")
            legs.append((DENSE, [float(x) for x in dense]))
        if sparse is not None and len(sparse.indices):
            legs.append((SPARSE, (list(sparse.indices), [float(v) for v in sparse.values])))
        return legs

    def _filter(self, flt: SearchFilter | None) -> Any:
        """A SearchFilter as the engine's filter (None: no filter at all)."""
        if flt is None:
            return None
        must: list[Any] = [self._match_any("acl", [str(a) for a in flt.acl])]
        if flt.file_paths is not None:
            must.append(self._match_any("file_path", [str(p) for p in flt.file_paths]))
        if flt.file_types is not None:
            must.append(self._match_any("file_type", [t.lower().lstrip(".") for t in flt.file_types]))
        if flt.ingested_after or flt.ingested_before:
            must.append(self._datetime_range(
                "ingested_at",
                _normalize_datetime(flt.ingested_after, "ingested_after") if flt.ingested_after else None,
                _normalize_datetime(flt.ingested_before, "ingested_before") if flt.ingested_before else None,
            ))
        if flt.path_prefix:
            prefix = _normalize_prefix(flt.path_prefix)
            # A directory prefix matches files below it; a file path matches itself.
            must.append(self._combine(should=[self._match_value("dir_prefixes", prefix),
                                              self._match_value("file_path", prefix)]))
        return self._combine(must=must)

    # -- lifecycle -------------------------------------------------------------------------------
    def disk_bytes(self) -> int:
        """Bytes on disk used by the collection (0 when the backend cannot tell)."""
        return 0

    def index_config(self) -> dict[str, Any] | None:
        """The dense index as the engine recorded it ({quantization, hnsw_m, hnsw_ef_construct}); None: unknown."""
        return None

    def optimize(self) -> None:
        """Build search indexes now (HNSW, payload); a no-op where the backend does it by itself."""

    def flush(self) -> None:
        """Persist pending changes (a no-op where every write is durable when it returns)."""

    def close(self) -> None:
        """Release the collection (locks, connections); later calls raise StoreError."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def drop(self) -> None:
        """Delete the collection and all its data."""
        self._check_open()
        self._drop_collection()
        self._info = None

    def _require(self) -> None:
        self._check_open()
        if self._info is None:
            raise StoreError(f"collection {self.collection!r} does not exist at {self.where}; "
                             "ingest documents first (rag ingest PATH)")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store at {self.where} is closed")

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- driver primitives -----------------------------------------------------------------------
    @abstractmethod
    def _match_any(self, key: str, values: list[str]) -> Any:
        """Condition: the keyword field `key` holds any of `values`."""

    @abstractmethod
    def _match_value(self, key: str, value: str) -> Any:
        """Condition: the keyword field `key` holds `value`."""

    @abstractmethod
    def _datetime_range(self, key: str, gte: str | None, lt: str | None) -> Any:
        """Condition: gte <= the datetime field `key` < lt (RFC 3339 strings; None: open end)."""

    @abstractmethod
    def _combine(self, must: Sequence[Any] = (), should: Sequence[Any] = (), must_not: Sequence[Any] = ()) -> Any:
        """A filter of conditions (or nested filters); empty lists are left out."""

    @abstractmethod
    def _query_batch(self, legs: list[Leg]) -> list[list[RawPoint]]:
        """Run every leg in ONE engine call; per leg, its points with payload and score, best first."""

    @abstractmethod
    def _scroll(self, engine_filter: Any, fields: list[str] | None, with_vectors: bool, offset: Any,
                limit: int) -> tuple[list[RawPoint], Any]:
        """One page of points and the next offset (None: done). Payload: all fields (None), these, or none ([])."""

    @abstractmethod
    def _retrieve(self, ids: list[str]) -> list[RawPoint]:
        """The points with these ids that exist, with payload, in any order."""

    @abstractmethod
    def _count(self, engine_filter: Any) -> int:
        """Exact number of points matching the filter (all when None)."""

    @abstractmethod
    def _upsert(self, points: list[StoredPoint]) -> None:
        """Write prepared points (plain floats, stored payload) durably."""

    @abstractmethod
    def _delete_by_filter(self, engine_filter: Any) -> None:
        """Delete every point matching the filter."""

    @abstractmethod
    def _delete_ids(self, ids: list[str]) -> None:
        """Delete points by id (missing ids are ignored)."""

    @abstractmethod
    def _collection_exists(self) -> bool:
        """Whether the engine holds the collection's data (with or without metadata)."""

    @abstractmethod
    def _create_collection(self, info: CollectionInfo) -> None:
        """Create the collection's vectors: "dense" (cosine, `info.dimension`) and sparse "bm25" (IDF)."""

    @abstractmethod
    def _create_index(self, field_name: str, kind: str) -> None:
        """Create a payload index on `field_name` ("keyword" or "datetime"); idempotent."""

    @abstractmethod
    def _read_info(self) -> CollectionInfo | None:
        """The collection's recorded metadata, or None when it was never written."""

    @abstractmethod
    def _write_info(self, info: CollectionInfo) -> None:
        """Record the collection's metadata durably (the last step of `create`)."""

    @abstractmethod
    def _drop_collection(self) -> None:
        """Delete the collection and all its data."""

    @abstractmethod
    def _close(self) -> None:
        """Release the engine handle (called once)."""
