"""The hybrid-search recipe users write by hand with LangChain, as the speed/quality baseline for `rag bench`.

The recipe (LangChain 1.x package layout):
    BM25Retriever (rank_bm25, `langchain_community`)  ┐
    QdrantVectorStore in memory (`langchain_qdrant`)   ├─ EnsembleRetriever(weights=[0.5, 0.5])  (`langchain_classic`)
    → top-M → the same sentence-transformers CrossEncoder → top-k

Embeddings go through a tiny `Embeddings` adapter over sentence-transformers, which is what users write
when they do not install `langchain-huggingface`: same model, same batch size, normalized vectors.
The adapter can be handed precomputed document vectors (keyed by text) so a benchmark does not pay for
embedding the same corpus twice; query embedding always runs the model, and is timed.
"""

from __future__ import annotations

import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from langchain_core.embeddings import Embeddings


class SentenceTransformerEmbeddings(Embeddings):
    """LangChain `Embeddings` over a loaded `SentenceTransformer` (normalized, fixed batch size).

    `precomputed` maps a document text to its vector; `embed_documents` uses it when every text is
    present (the benchmark already embedded the corpus with the same model) and otherwise encodes.
    `query_seconds` accumulates the time spent in `embed_query`, so the recipe's latency can be split.
    """

    def __init__(self, model: Any, batch_size: int = 32, query_instruction: str = "",
                 precomputed: dict[str, np.ndarray] | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.query_instruction = query_instruction
        self.precomputed = precomputed or {}
        self.query_seconds = 0.0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.precomputed and all(t in self.precomputed for t in texts):
            return [np.asarray(self.precomputed[t], dtype=np.float32).tolist() for t in texts]
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        t0 = time.perf_counter()
        vector = self.model.encode([self.query_instruction + text], batch_size=self.batch_size,
                                   normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)[0]
        self.query_seconds += time.perf_counter() - t0
        return vector.tolist()


@dataclass
class RecipeResult:
    """One query through the recipe: ranked document ids and timings in milliseconds."""

    ids: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)


class LangChainHybridRecipe:
    """BM25Retriever + QdrantVectorStore(":memory:") fused by EnsembleRetriever, then cross-encoder rerank.

    `ids[i]` names `texts[i]`; results come back as those ids. `leg_k` is how many documents each leg
    returns (the product's `leg_limit`), `rerank_top_m` how many fused documents the cross-encoder scores.
    """

    def __init__(self, texts: Sequence[str], ids: Sequence[str], embeddings: SentenceTransformerEmbeddings,
                 cross_encoder: Any | None = None, leg_k: int = 100, rerank_top_m: int = 30,
                 rerank_batch_size: int = 32, dimension: int | None = None) -> None:
        # LangChain and qdrant-client are heavy and only the baseline needs them: imported here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community's sunset notice
            from langchain_classic.retrievers import EnsembleRetriever
            from langchain_community.retrievers import BM25Retriever
        from langchain_qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient
        from qdrant_client.models import Distance, VectorParams

        self.embeddings = embeddings
        self.cross_encoder = cross_encoder
        self.rerank_top_m = rerank_top_m
        self.rerank_batch_size = rerank_batch_size
        metadatas = [{"doc_id": i} for i in ids]
        self.build_seconds: dict[str, float] = {}

        t0 = time.perf_counter()
        self.bm25 = BM25Retriever.from_texts(list(texts), metadatas=metadatas)
        self.bm25.k = leg_k
        self.build_seconds["bm25"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        dim = dimension or len(embeddings.embed_documents([texts[0]])[0])
        self.client = QdrantClient(":memory:")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode warns above 20k points; measuring that is the point
            self.client.create_collection("lc", vectors_config=VectorParams(size=dim, distance=Distance.COSINE))
            self.vectorstore = QdrantVectorStore(client=self.client, collection_name="lc", embedding=embeddings)
            self.vectorstore.add_texts(list(texts), metadatas=metadatas,
                                       ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, i)) for i in ids], batch_size=1024)
        self.build_seconds["qdrant"] = time.perf_counter() - t0

        self.ensemble = EnsembleRetriever(
            retrievers=[self.bm25, self.vectorstore.as_retriever(search_kwargs={"k": leg_k})],
            weights=[0.5, 0.5],
        )

    def query(self, question: str, k: int = 10, rerank: bool = True) -> RecipeResult:
        """Run the recipe for one question; timings: embed, retrieve (both legs + fusion), rerank, total."""
        t_start = time.perf_counter()
        embed_before = self.embeddings.query_seconds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            docs = self.ensemble.invoke(question)
        t_retrieved = time.perf_counter()
        embed_s = self.embeddings.query_seconds - embed_before
        timings = {"embed": embed_s * 1000, "retrieve": (t_retrieved - t_start - embed_s) * 1000}
        if rerank and self.cross_encoder is not None:
            top = docs[: self.rerank_top_m]
            scores = self.cross_encoder.predict([(question, d.page_content) for d in top],
                                                batch_size=self.rerank_batch_size, show_progress_bar=False)
            order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(len(top), -1)[:, 0], kind="stable")
            docs = [top[i] for i in order]
            timings["rerank"] = (time.perf_counter() - t_retrieved) * 1000
        timings["total"] = (time.perf_counter() - t_start) * 1000
        return RecipeResult(ids=[d.metadata["doc_id"] for d in docs[:k]], timings_ms=timings)

    def close(self) -> None:
        self.client.close()
