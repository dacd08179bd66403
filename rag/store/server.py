"""The server driver: a collection on a Qdrant server through qdrant-client.

Also runs qdrant-client's local mode (`location=":memory:"` or `path=`), which speaks the same API as a
server and is what tests use. CollectionInfo is kept in the collection's own metadata, so it travels
with the data.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Sequence

from rag.errors import ConfigError, StoreError, StoreLockedError
from rag.store.base import DENSE, SPARSE, CollectionInfo, Leg, RawPoint, Store, StoredPoint, dense_of
from rag.store.vector_index import VectorIndexConfig, dense_search_params

log = logging.getLogger(__name__)

META_KEY = "rag_collection"  # key of CollectionInfo inside the collection's metadata


def _qm() -> Any:
    # Imported on first use: qdrant-client (pydantic models, grpc) is heavy and only the server backend needs it.
    from qdrant_client import models

    return models


class ServerStore(Store):
    """A collection on a Qdrant server via qdrant-client (`url=`), or in its local mode (`location=":memory:"`
    or `path=`), which speaks the same API and is used by tests.
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
        index: VectorIndexConfig | None = None,
    ) -> None:
        from qdrant_client import QdrantClient  # heavy; see _qm

        # As in EdgeStore: quantization and HNSW apply when this store creates the collection, the
        # search-time settings to every dense query. (Local mode accepts and records them but scans.)
        self.index = index or VectorIndexConfig()
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
            self.client.collection_exists(collection)  # fail here, with the address, when the server is down
        except Exception as exc:
            if "already accessed by another instance" in str(exc):
                raise StoreLockedError(f"another process is using the local Qdrant folder {path}; stop it or use a "
                                       "Qdrant server via RAG_QDRANT_URL") from exc
            raise StoreError(f"cannot reach Qdrant at {self.where} ({type(exc).__name__}: {exc}); "
                             "check RAG_QDRANT_URL and that the server is running") from exc
        # Local mode always scans exactly and warns on every query that search params do nothing.
        self._local = type(getattr(self.client, "_client", None)).__name__ == "QdrantLocal"
        self._open()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StoreError, ConfigError):
            raise
        except Exception as exc:
            raise StoreError(f"Qdrant at {self.where}: {what} on collection {self.collection!r} failed: {exc}") from exc

    # -- conditions ------------------------------------------------------------------------------
    def _match_any(self, key: str, values: list[str]) -> Any:
        qm = _qm()
        return qm.FieldCondition(key=key, match=qm.MatchAny(any=list(values)))

    def _match_value(self, key: str, value: str) -> Any:
        qm = _qm()
        return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))

    def _datetime_range(self, key: str, gte: str | None, lt: str | None) -> Any:
        qm = _qm()
        return qm.FieldCondition(key=key, range=qm.DatetimeRange(gte=gte, lt=lt))

    def _combine(self, must: Sequence[Any] = (), should: Sequence[Any] = (), must_not: Sequence[Any] = ()) -> Any:
        return _qm().Filter(must=list(must) or None, should=list(should) or None, must_not=list(must_not) or None)

    # -- reads -----------------------------------------------------------------------------------
    def _search_params(self, leg: Leg) -> Any:
        """The dense leg's SearchParams (ef, quantization rescoring, ACORN); None for the sparse leg."""
        if leg.name != DENSE or self._local:
            return None
        return dense_search_params(_qm(), self.index, leg.exact, leg.filter is not None)

    def _query_batch(self, legs: list[Leg]) -> list[list[RawPoint]]:
        qm = _qm()
        requests = [
            qm.QueryRequest(query=list(leg.vector) if leg.name == DENSE else qm.SparseVector(indices=leg.vector[0], values=leg.vector[1]),
                            using=leg.name, filter=leg.filter, limit=leg.limit, with_payload=leg.with_payload,
                            params=self._search_params(leg))
            for leg in legs
        ]
        responses = self._call("query_batch_points", self.client.query_batch_points, self.collection, requests)
        return [[RawPoint(str(p.id), dict(p.payload or {}), float(p.score)) for p in res.points] for res in responses]

    def _scroll(self, engine_filter: Any, fields: list[str] | None, with_vectors: bool, offset: Any,
                limit: int) -> tuple[list[RawPoint], Any]:
        records, next_offset = self._call(
            "scroll", self.client.scroll, self.collection, scroll_filter=engine_filter, limit=limit, offset=offset,
            with_payload=True if fields is None else list(fields) or False,
            with_vectors=[DENSE] if with_vectors else False,
        )
        return [RawPoint(str(r.id), dict(r.payload or {}), dense=dense_of(r.vector) if with_vectors else None)
                for r in records], next_offset

    def _retrieve(self, ids: list[str]) -> list[RawPoint]:
        records = self._call("retrieve", self.client.retrieve, self.collection, ids, with_payload=True, with_vectors=False)
        return [RawPoint(str(r.id), dict(r.payload or {})) for r in records]

    def _count(self, engine_filter: Any) -> int:
        return int(self._call("count", self.client.count, self.collection, count_filter=engine_filter, exact=True).count)

    # -- writes ----------------------------------------------------------------------------------
    def _upsert(self, points: list[StoredPoint]) -> None:
        qm = _qm()
        batch = [
            qm.PointStruct(id=p.id, payload=p.payload,
                           vector={DENSE: p.dense, SPARSE: qm.SparseVector(indices=p.sparse.indices, values=p.sparse.values)})
            for p in points
        ]
        self._call("upsert", self.client.upsert, self.collection, batch, wait=True)

    def _delete_by_filter(self, engine_filter: Any) -> None:
        self._call("delete", self.client.delete, self.collection, _qm().FilterSelector(filter=engine_filter), wait=True)

    def _delete_ids(self, ids: list[str]) -> None:
        self._call("delete", self.client.delete, self.collection, _qm().PointIdsList(points=ids), wait=True)

    # -- collection ------------------------------------------------------------------------------
    def _collection_exists(self) -> bool:
        return bool(self._call("collection_exists", self.client.collection_exists, self.collection))

    def _create_collection(self, info: CollectionInfo) -> None:
        qm = _qm()
        ix = self.index
        quantization = {
            "none": None,
            "scalar": lambda: qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(
                type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)),
            "binary": lambda: qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=True)),
        }[ix.quantization]
        self._call("create_collection", self.client.create_collection, self.collection,
                   vectors_config={DENSE: qm.VectorParams(
                       size=int(info.dimension), distance=qm.Distance.COSINE,
                       quantization_config=quantization() if quantization else None,
                       hnsw_config=qm.HnswConfigDiff(m=ix.hnsw_m, ef_construct=ix.hnsw_ef_construct,
                                                     full_scan_threshold=ix.full_scan_threshold_kb,
                                                     payload_m=ix.hnsw_payload_m))},
                   sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                   optimizers_config=(qm.OptimizersConfigDiff(indexing_threshold=ix.indexing_threshold_kb)
                                      if ix.indexing_threshold_kb is not None else None))

    def _create_index(self, field_name: str, kind: str) -> None:
        qm = _qm()
        schema = {"keyword": qm.PayloadSchemaType.KEYWORD, "datetime": qm.PayloadSchemaType.DATETIME}[kind]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode warns that payload indexes are no-ops there
            self._call("create_payload_index", self.client.create_payload_index, self.collection, field_name, schema)

    def _read_info(self) -> CollectionInfo | None:
        desc = self._call("get_collection", self.client.get_collection, self.collection)
        meta = (desc.config.metadata or {}).get(META_KEY)
        return CollectionInfo.from_dict(meta) if meta else None

    def _write_info(self, info: CollectionInfo) -> None:
        self._call("update_collection", self.client.update_collection, self.collection, metadata={META_KEY: info.to_dict()})

    def index_config(self) -> dict[str, Any] | None:
        # What the server reports for the collection (per-vector settings, else the collection's).
        config = self._call("get_collection", self.client.get_collection, self.collection).config
        params = config.params.vectors
        dense = params.get(DENSE) if isinstance(params, dict) else None
        if dense is None:
            return None
        quant = dense.quantization_config or config.quantization_config
        hnsw = dense.hnsw_config or config.hnsw_config
        kind = ("none" if quant is None else "scalar" if getattr(quant, "scalar", None) is not None
                else "binary" if getattr(quant, "binary", None) is not None else type(quant).__name__)
        return {"quantization": kind, "hnsw_m": getattr(hnsw, "m", None),
                "hnsw_ef_construct": getattr(hnsw, "ef_construct", None),
                "hnsw_payload_m": getattr(hnsw, "payload_m", None)}

    def _drop_collection(self) -> None:
        self._call("delete_collection", self.client.delete_collection, self.collection)

    def _close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead connection must not mask the real error
            log.debug("closing qdrant client failed", exc_info=True)

    # flush(), optimize(), disk_bytes(): the base no-ops. Every write waits for the server (wait=True) and
    # its WAL makes it durable; the server builds indexes by itself and does not report per-collection disk use.

    def __repr__(self) -> str:
        return f"ServerStore(where={self.where!r}, collection={self.collection!r})"

