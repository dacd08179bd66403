"""The facade the CLI, the UI and the evals use: ingest, search, ask, stats.

It owns the component wiring (store, embedder, reranker, answerer) and loads each lazily, so a
`rag stats` never loads a model and a `rag search --mode bm25` never loads the reranker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from rag.config import Settings, load_settings
from rag.errors import RagError
from rag.models import Answer, SearchFilter, SearchResult

log = logging.getLogger(__name__)

Message = dict  # {"role": "user"|"assistant", "content": str}


class Pipeline:
    """One collection's ingest/search/ask surface. Thread-safe for concurrent queries."""

    def __init__(self, settings: Settings | None = None, store=None, embedder=None, reranker=None) -> None:
        self.settings = settings or load_settings()
        self._store = store
        self._embedder = embedder
        self._reranker = reranker
        self._reranker_loaded = reranker is not None
        self._retriever = None
        self._lock = threading.RLock()

    # -- components (lazy) ---------------------------------------------------------------------
    @property
    def store(self):
        with self._lock:
            if self._store is None:
                from rag.store import open_store

                self._store = open_store(self.settings)
            return self._store

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from rag.embedding import embedder_from_settings

                self._embedder = embedder_from_settings(self.settings)
            return self._embedder

    @property
    def reranker(self):
        with self._lock:
            if not self._reranker_loaded:
                from rag.rerank import load_reranker

                self._reranker = load_reranker(self.settings)
                self._reranker_loaded = True
            return self._reranker

    def retriever(self, mode: str | None = None):
        """The retriever for this collection; built after the collection exists (BM25 params)."""
        from rag.retriever import HybridRetriever

        with self._lock:
            if self._retriever is None:
                needs_reranker = (mode or self.settings.mode) == "rerank"
                reranker = self.reranker if needs_reranker else None
                self._retriever = HybridRetriever(self.store, self.embedder, None, reranker, self.settings)
            elif (mode or self.settings.mode) == "rerank" and self._retriever.reranker is None and self.settings.rerank_enabled:
                self._retriever.reranker = self.reranker
            return self._retriever

    def loaded_models(self) -> dict[str, str | None]:
        """Which models this pipeline has loaded (None = not loaded yet or disabled)."""
        return {
            "embedder": self._embedder.model_name if self._embedder is not None else None,
            "reranker": getattr(self._reranker, "model_name", None) if self._reranker is not None else None,
            "answerer": (f"openai-compatible: {self.settings.llm_model} at {self.settings.llm_base_url or 'the default OpenAI endpoint'}"
                         if self.settings.llm_enabled else "extractive"),
        }

    def default_filter(self, acl: list[str] | None = None) -> SearchFilter:
        return SearchFilter(acl=list(acl) if acl is not None else list(self.settings.default_acl))

    # -- operations ----------------------------------------------------------------------------
    def ingest(self, paths: Iterable[str | os.PathLike[str]], acl: list[str] | None = None, progress: bool = True):
        """Sync files/folders into the collection (see ingest.sync)."""
        from ingest.sync import ingest_paths

        paths = list(paths)
        for raw in paths:  # fail on a typo before loading any model
            if not Path(raw).expanduser().exists():
                raise RagError(f"{raw}: no such file or folder")
        with self._lock:
            report = ingest_paths(paths, self.settings, self.store, self.embedder, acl=acl, progress=progress)
            self._retriever = None  # BM25 parameters exist now if the collection was just created
            return report

    def search(self, query: str, k: int | None = None, mode: str | None = None,
               flt: SearchFilter | None = None) -> SearchResult:
        """Retrieve chunks for a query; ACL and metadata filters apply inside the store."""
        mode = mode or self.settings.mode
        if mode == "rerank" and not self.settings.rerank_enabled:
            mode = "hybrid"
        if self.store.info() is None:
            return SearchResult(query=query, mode=mode, hits=[], timings_ms={})
        return self.retriever(mode).retrieve(query, k=k or self.settings.top_k, mode=mode,
                                             flt=flt or self.default_filter())

    def answerer(self):
        """The configured answerer: the LLM when an endpoint is set, else the extractive one."""
        if self.settings.llm_enabled:
            from rag.answering.llm import LLMAnswerer

            return LLMAnswerer(self.settings)
        from rag.answering.extractive import ExtractiveAnswerer

        return ExtractiveAnswerer(self.settings, embedder=self.embedder)

    def ask(self, question: str, flt: SearchFilter | None = None,
            on_token: Callable[[str], None] | None = None, history: list[Message] | None = None,
            mode: str | None = None) -> Answer:
        """Answer a question from allow-listed evidence with validated citations, or abstain.

        With a conversation `history`, the follow-up is made standalone before retrieval
        (see `standalone_question`); the answer itself is built from the retrieved evidence only.
        """
        from rag.answering.evidence import related_passages, select_evidence

        started = time.perf_counter()
        query = standalone_question(question, history or [])
        result = self.search(query, mode=mode, k=max(self.settings.top_k, self.settings.evidence_max_passages),
                             flt=flt)
        evidence = select_evidence(result.hits, self.settings, self.embedder.count_tokens)
        related = related_passages(result.hits)
        answer = self.answerer().answer(query, evidence, on_token=on_token, related=related)
        answer.question = question
        answer.timings_ms = {**result.timings_ms, **answer.timings_ms,
                             "total_with_answer": round((time.perf_counter() - started) * 1000, 2)}
        return answer

    def stats(self) -> dict:
        """Collection name, model, points, files, chunks per type, ACL labels, on-disk size."""
        from ingest.sync import stored_files

        info = self.store.info()
        files = stored_files(self.store)
        by_type: dict[str, int] = {}
        labels: set[str] = set()
        for entry in files:
            by_type[entry["file_type"]] = by_type.get(entry["file_type"], 0) + entry["chunks"]
            labels.update(entry["acl"])
        return {
            "collection": self.settings.collection,
            "backend": "server" if self.settings.qdrant_url else "edge",
            "location": self.settings.qdrant_url or str(Path(self.settings.qdrant_path).resolve()),
            "exists": info is not None,
            "embed_model": info.embed_model if info else None,
            "dimension": info.dimension if info else None,
            "bm25": {"k1": info.bm25_k1, "b": info.bm25_b, "avg_doc_len": info.bm25_avg_doc_len,
                     "language": info.bm25_language} if info else None,
            "created_at": info.created_at if info else None,
            "points": self.store.count() if info else 0,
            "files": len(files),
            "chunks_per_file_type": dict(sorted(by_type.items())),
            "acl_labels": sorted(labels),
            "disk_bytes": self.store.disk_bytes() if info else 0,
        }

    def list_files(self) -> list[dict]:
        """Indexed files with chunk counts."""
        from ingest.sync import stored_files

        return stored_files(self.store)

    def remove_file(self, path: str) -> int:
        """Remove one file's chunks from the index; returns how many were removed."""
        resolved = str(Path(path).expanduser().resolve()) if not Path(path).is_absolute() else path
        with self._lock:
            removed = self.store.delete_file(resolved)
            self.store.flush()
        if removed == 0:
            raise RagError(f"{path}: not in collection {self.settings.collection!r}")
        return removed

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


# Words that mark a question as depending on the conversation ("what about its population?").
_FOLLOW_UP_MARKERS = {"it", "its", "they", "them", "their", "this", "that", "these", "those", "he", "she",
                      "his", "her", "there", "also", "same", "what about", "and"}


def standalone_question(question: str, history: list[Message]) -> str:
    """Rewrite a follow-up into a standalone retrieval query.

    Without an LLM we cannot paraphrase, so we use the cheap, predictable rule many search engines
    use: when the question looks like a follow-up (a pronoun or "what about", or very short), the
    previous user question is prepended, so both dense and BM25 see the topic. Standalone questions
    pass through unchanged.
    """
    question = question.strip()
    previous = [m["content"] for m in history if m.get("role") == "user" and m.get("content")]
    if not previous:
        return question
    words = question.lower().replace("?", " ").split()
    lowered = " " + question.lower() + " "
    looks_follow_up = len(words) <= 4 or any(f" {marker} " in lowered for marker in _FOLLOW_UP_MARKERS)
    if not looks_follow_up:
        return question
    return f"{previous[-1].strip()} {question}"
