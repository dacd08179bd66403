"""The store of record: one Qdrant point per chunk with a dense vector, a BM25 sparse vector and a payload.

One algorithm (`rag.store.base.Store`), two thin drivers:
- `EdgeStore` (`rag.store.edge`): Qdrant Edge, the Qdrant engine in-process, one shard directory per
  collection at `<qdrant_path>/<collection>`; the default, no server needed.
- `ServerStore` (`rag.store.server`): `qdrant_client` against a Qdrant server (`RAG_QDRANT_URL`), or its
  local mode for tests.

Both legs of a hybrid search run in one engine call with the same filter, so deletes, updates and
access control apply to dense and BM25 retrieval alike. Collection metadata (`CollectionInfo`: which
embedding model and dimension built it, the BM25 parameters) lives beside the data: a `collection.json`
in the Edge shard directory, collection metadata on the server. `rag.store.catalog` scans, lists and
writes chunks on top of a Store.
"""

from __future__ import annotations

from typing import Any

from rag.store.base import (
    DENSE,
    INDEXED_FIELDS,
    INTERNAL_FIELDS,
    SCROLL_PAGE,
    SPARSE,
    CollectionInfo,
    ScoredChunk,
    Store,
    StoredPoint,
    dir_prefixes,
)
from rag.store.edge import EdgeStore
from rag.store.server import ServerStore
from rag.store.vector_index import VectorIndexConfig

__all__ = [
    "DENSE", "SPARSE", "SCROLL_PAGE", "INDEXED_FIELDS", "INTERNAL_FIELDS", "CollectionInfo", "ScoredChunk", "Store",
    "StoredPoint", "EdgeStore", "ServerStore", "VectorIndexConfig", "dir_prefixes", "open_store",
]


def open_store(settings: Any) -> Store:
    """ServerStore when `settings.qdrant_url` is set, else the embedded EdgeStore under `settings.qdrant_path`."""
    index = VectorIndexConfig.from_settings(settings)
    if settings.qdrant_url:
        return ServerStore(settings.collection, url=settings.qdrant_url, api_key=settings.qdrant_api_key, index=index)
    return EdgeStore(settings.qdrant_path, settings.collection, index)
