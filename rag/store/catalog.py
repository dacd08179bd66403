"""The catalog: the one way to scan, list and write a collection's chunks.

Everything that reads the whole collection (ingest's manifest, the file list, tuning, the explorer)
scans through `iter_chunks` / `load_chunks`, with an optional SearchFilter that runs inside Qdrant, so a
caller's scan never reads a chunk it may not see. Everything that writes hand-built chunks (ingest,
`rag tune --apply`, benchmarks, tests) goes through `write_chunks`, so points are always built the same
way: the payload is `Chunk.to_payload()`, the BM25 vector uses the collection's recorded parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from rag.lexical import BM25Encoder
from rag.models import Chunk, SearchFilter
from rag.store.base import CollectionInfo, Store, StoredPoint, decode_chunk

WRITE_BATCH = 256  # points per upsert call: big enough to amortise the call, small enough to bound memory


def iter_chunks(store: Store, flt: SearchFilter | None = None, fields: Sequence[str] | None = None) -> Iterator[Chunk]:
    """Every chunk matching `flt` (all when None), in store order.

    With `fields`, only those payload fields are read (much less data for large texts); the others
    get their defaults (no `acl` means no label: visible to nobody). A missing collection yields nothing.
    """
    for point_id, payload, _vec in store.iter_payloads(list(fields) if fields is not None else None, flt=flt):
        yield decode_chunk(point_id, payload)


def iter_chunk_vectors(store: Store, flt: SearchFilter | None = None) -> Iterator[tuple[Chunk, list[float]]]:
    """Every chunk matching `flt` with its stored dense vector; points without one are skipped."""
    for point_id, payload, dense in store.iter_payloads(with_vectors=True, flt=flt):
        if dense:
            yield decode_chunk(point_id, payload), dense


def load_chunks(store: Store, flt: SearchFilter | None = None, limit: int | None = None) -> tuple[list[Chunk], np.ndarray]:
    """Up to `limit` chunks (all when None) and their stored dense vectors, float32, one row per chunk.

    The vectors are the ones the collection was built with (its recorded model), unit length (cosine).
    With no chunk the matrix has shape (0, dimension).
    """
    chunks: list[Chunk] = []
    vectors: list[list[float]] = []
    if limit is None or limit > 0:
        for chunk, dense in iter_chunk_vectors(store, flt):
            chunks.append(chunk)
            vectors.append(dense)
            if limit is not None and len(chunks) >= limit:
                break
    if not vectors:
        info = store.info()
        return [], np.zeros((0, int(info.dimension) if info else 0), dtype=np.float32)
    return chunks, np.asarray(vectors, dtype=np.float32)


def stored_files(store: Store, flt: SearchFilter | None = None) -> list[dict]:
    """Indexed files matching `flt` (all when None), sorted by path, for stats, the UI and the API.

    Each entry: {"file_path", "file_type", "chunks" (stored chunks of the file), "acl" (sorted union of
    its chunks' labels)}. With an ACL filter, only chunks the caller may see are counted.
    """
    files: dict[str, dict] = {}
    for chunk in iter_chunks(store, flt, fields=["file_path", "file_type", "acl"]):
        entry = files.setdefault(chunk.file_path, {
            "file_path": chunk.file_path, "file_type": chunk.file_type, "chunks": 0, "acl": set(),
        })
        entry["chunks"] += 1
        entry["acl"].update(chunk.acl or [])
    return [{**f, "acl": sorted(f["acl"])} for f in sorted(files.values(), key=lambda f: f["file_path"])]


@dataclass
class WriteStats:
    """What `write_chunks` did: points written, seconds building points (BM25 encoding) and upserting."""

    points: int = 0
    encode_s: float = 0.0
    upsert_s: float = 0.0


def chunk_points(chunks: Sequence[Chunk], dense_vectors: Any, bm25: BM25Encoder) -> list[StoredPoint]:
    """One StoredPoint per chunk: payload `Chunk.to_payload()`, the dense row, BM25 of the chunk's text."""
    if len(chunks) != len(dense_vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(dense_vectors)} dense vectors")
    return [StoredPoint.from_chunk(chunk, dense, bm25.encode_document(chunk.text))
            for chunk, dense in zip(chunks, dense_vectors)]


def write_chunks(store: Store, chunks: Sequence[Chunk], dense_vectors: Any, bm25: BM25Encoder | None = None, *,
                 info: CollectionInfo | None = None, batch: int = WRITE_BATCH) -> WriteStats:
    """Upsert chunks with their dense vectors (rows of a matrix or lists), `batch` points per call.

    `info`: create the collection with it first when it does not exist yet. `bm25`: the encoder of the
    sparse vectors; by default the collection's own (`CollectionInfo.bm25_encoder()`), which is the one
    its queries use. Ids are the chunks' ids, so writing the same chunk again replaces it.
    """
    if info is not None and store.info() is None:
        store.create(info)
    if bm25 is None:
        current = store.info()
        bm25 = current.bm25_encoder() if current is not None else BM25Encoder()  # upsert then names the missing collection
    stats = WriteStats()
    for start in range(0, len(chunks), max(1, batch)):
        t0 = time.perf_counter()
        points = chunk_points(chunks[start:start + batch], dense_vectors[start:start + batch], bm25)
        t1 = time.perf_counter()
        store.upsert(points)
        stats.encode_s += t1 - t0
        stats.upsert_s += time.perf_counter() - t1
        stats.points += len(points)
    return stats
