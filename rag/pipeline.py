"""The facade the CLI, the UI and the evals use: ingest, search, ask, stats.

It owns the component wiring (store, embedder, reranker, answerer) and loads each lazily, so a
`rag stats` never loads a model and a `rag search --mode bm25` never loads the reranker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ingest.progress import IngestMonitor
from ingest.sync import IngestReport, discover_files, ingest_paths, stored_files
from rag.access import AccessDenied, Action, Caller, Role, resolve_roots, root_of
from rag.answering import make_answerer
from rag.answering.evidence import related_passages, select_evidence
from rag.backends.vectors import UNRECORDED, describe_backend
from rag.config import Settings, load_settings
from rag.conversation import Rewrite, condense, condenser_from_settings, idf_from_counts
from rag.embedding import Embedder, EmbedderProtocol, embedder_from_settings
from rag.errors import RagError
from rag.models import Answer, Answerer, Chunk, Mode, SearchFilter, SearchResult
from rag.rerank import Reranker, load_reranker
from rag.retriever import HybridRetriever, RetrievalConfig
from rag.sources import PageImage, SourceFile, SourceNotFound, SourceText, SourceViewer
from rag.store import Store, open_store

log = logging.getLogger(__name__)

Message = dict  # {"role": "user"|"assistant", "content": str}
MIN_CHUNKS_FOR_IDF = 50  # smallest collection whose BM25 IDF guides the follow-up rule (Pipeline.condense_question)


class Pipeline:
    """One collection's ingest/search/ask surface, applied to a `Caller` (see rag.access).

    Every operation takes an optional `caller`; None means the operator at this machine,
    `Caller.local(settings.default_acl)` (admin role, the default labels), which is what the CLI and
    a loopback UI without sign-in have always been.

    Concurrency: searches and answers run in parallel with each other and with an ingest. Two locks,
    both short-lived for readers:
    - `_components_lock` guards lazy loading of the store and models (held only while loading);
    - `_writer_lock` admits one writer (ingest, remove) at a time, and readers never take it: the
      store serves concurrent reads while one thread writes, so a long ingest no longer stalls chats.
    Readers also come first for the CPU: an ingest embeds in small sub-batches and, between them,
    waits while a search or answer is running (see `_ReaderFirstEmbedder`), so a question asked
    during a long ingest waits for at most one small batch instead of the whole run.
    """

    def __init__(self, settings: Settings | None = None, store: Store | None = None,
                 embedder: Embedder | None = None, reranker: Reranker | None = None) -> None:
        self.settings = settings or load_settings()
        self._store = store
        self._embedder = embedder
        self._reranker = reranker
        self._reranker_loaded = reranker is not None
        self._retriever: HybridRetriever | None = None
        self._components_lock = threading.RLock()
        self._writer_lock = threading.Lock()
        self._readers = _ReaderCount()
        # Set by whoever runs an ingest.watch.FolderWatcher on this collection (rag serve --watch): its status().
        self.watch_status: Callable[[], list[dict[str, Any]]] | None = None

    # -- components (lazy) ---------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The collection's store, opened on first use."""
        with self._components_lock:
            if self._store is None:
                self._store = open_store(self.settings)
            return self._store

    @property
    def embedder(self) -> Embedder:
        """The embedding model, loaded on first use."""
        with self._components_lock:
            if self._embedder is None:
                self._embedder = embedder_from_settings(self.settings)
            return self._embedder

    @property
    def reranker(self) -> Reranker | None:
        """The cross-encoder, loaded on first use; None when reranking is off."""
        with self._components_lock:
            if not self._reranker_loaded:
                self._reranker = load_reranker(self.settings)
                self._reranker_loaded = True
            return self._reranker

    def retriever(self, mode: Mode | str | None = None) -> HybridRetriever:
        """The retriever for this collection (the reranker is attached when a rerank mode needs it)."""
        wanted = Mode.parse(mode or self.settings.mode, field="mode")
        with self._components_lock:
            if self._retriever is None:
                reranker = self.reranker if wanted is Mode.RERANK else None
                self._retriever = HybridRetriever(self.store, self.embedder, None, reranker,
                                                  RetrievalConfig.from_settings(self.settings))
            elif wanted is Mode.RERANK and self._retriever.reranker is None and self.settings.rerank_enabled:
                self._retriever.reranker = self.reranker
            return self._retriever

    def loaded_models(self) -> dict[str, str | None]:
        """Which models this pipeline has loaded (None = not loaded yet or disabled); secrets redacted."""
        return {
            "embedder": self._embedder.model_name if self._embedder is not None else None,
            "reranker": getattr(self._reranker, "model_name", None) if self._reranker is not None else None,
            "answerer": self.settings.redact(f"openai-compatible: {self.settings.llm_model} at "
                                             f"{self.settings.llm_base_url or 'the default OpenAI endpoint'}")
            if self.settings.llm_enabled else "extractive",
        }

    def model_backends(self) -> dict[str, str | None]:
        """Which rag.backends backend runs the embedder and the reranker, and which one built the collection's vectors.

        Loads no model: a loaded model reports its own backend; otherwise the setting (for `auto`, the
        remembered probe's choice and the backends the quality guard refused) is described.
        """
        st = self.settings
        loaded = self._embedder is not None
        embedder = describe_backend(st.embed_backend, st.embed_model, "embedder", st.state_dir,
                                    loaded=getattr(self._embedder, "backend", None) if loaded else None,
                                    loaded_query=getattr(self._embedder, "query_backend", None) if loaded else None)
        reranker = None
        if st.rerank_enabled:
            reranker = describe_backend(st.rerank_backend, st.rerank_model.strip(), "reranker", st.state_dir,
                                        loaded=getattr(self._reranker, "backend", None) if self._reranker is not None else None)
        info = self.store.info()
        vectors = None if info is None else (info.embed_backend or UNRECORDED)
        return {"embedder": embedder, "reranker": reranker, "collection_vectors": vectors}

    def default_filter(self, acl: list[str] | None = None) -> SearchFilter:
        """A filter holding `acl` labels (the settings' default labels when None)."""
        return SearchFilter(acl=list(acl) if acl is not None else list(self.settings.default_acl))

    def local_caller(self) -> Caller:
        """The operator at this machine: admin, holding the settings' default labels."""
        return Caller.local(self.settings.default_acl)

    def _caller(self, caller: Caller | None, flt: SearchFilter | None = None) -> Caller:
        """`caller`, or the operator. The operator names the labels it holds through `flt.acl` (the
        CLI's --acl, an eval's filter), so without a caller a filter's labels are taken as given."""
        if caller is not None:
            return caller
        if flt is not None and flt.acl is not None:
            return Caller.local(flt.acl)
        return self.local_caller()

    # -- operations ----------------------------------------------------------------------------
    def ingest(self, paths: Iterable[str | os.PathLike[str]], acl: list[str] | None = None, progress: bool = True,
               caller: Caller | None = None, roots: Iterable[str | os.PathLike[str]] | None = None,
               monitor: IngestMonitor | None = None) -> IngestReport:
        """Sync files/folders into the collection (see ingest.sync); needs Action.INGEST.

        `monitor` (ingest.progress) follows the run file by file and may cancel it between files; without
        one, `progress` draws the terminal bar.

        `roots`: when given, every path must resolve (symlinks resolved) inside one of these folders,
        else AccessDenied naming the path: the UI and the server confine ingest to configured folders.
        A caller below admin may only give labels it holds, and may not re-index a file already indexed
        under labels it cannot see (that would relabel someone else's file).
        Searches and answers keep running while an ingest writes; only one ingest or removal runs at a time.
        """
        caller = self._caller(caller)
        caller.require(Action.INGEST)
        paths = list(paths)
        for raw in paths:
            check_path_text(raw)
        if roots is not None:
            confine_to_roots(paths, roots)
        for raw in paths:  # fail on a typo before loading any model
            if not Path(raw).expanduser().exists():
                raise RagError(f"{raw}: no such file or folder")
        labels = self._ingest_labels(acl, caller)
        store = self.store  # load before taking the writer lock
        embedder = _ReaderFirstEmbedder(self.embedder, self._readers)
        with self._writer_lock:
            if caller.role is not Role.ADMIN:
                self._refuse_hidden_files(paths, caller)
            report = ingest_paths(paths, self.settings, store, embedder, acl=labels, progress=progress,
                                  monitor=monitor)
        return report

    def _ingest_labels(self, acl: list[str] | None, caller: Caller) -> list[str]:
        """The labels new chunks get: `acl`, else the default labels (for a non-admin caller, those of them it
        holds, else all its own labels). A non-admin caller may only give labels it holds."""
        if caller.role is Role.ADMIN:
            return list(acl) if acl is not None else list(self.settings.default_acl)
        if acl is None:
            acl = [label for label in self.settings.default_acl if label in caller.labels] or list(caller.labels)
        foreign = [label for label in acl if label not in caller.labels]
        if foreign:
            raise AccessDenied(f"{caller.name!r} cannot label files {foreign!r}: a caller may only give labels "
                               "it holds")
        if not acl:
            raise AccessDenied(f"{caller.name!r} holds no labels, so nothing it ingested would be visible to it")
        return list(acl)

    def _refuse_hidden_files(self, paths: list[str | os.PathLike[str]], caller: Caller) -> None:
        """AccessDenied when an ingest would overwrite a file indexed under labels `caller` cannot see."""
        hidden = {f["file_path"] for f in stored_files(self.store) if not caller.sees(f["acl"])}
        if not hidden:
            return
        files, _roots = discover_files(paths, self.settings.follow_symlinks)
        for path in files:
            if str(path) in hidden or str(Path(path).resolve()) in hidden:
                raise AccessDenied(f"{path}: already indexed under labels {caller.name!r} does not hold; "
                                   "ask an admin to re-index it")

    def search(self, query: str, k: int | None = None, mode: Mode | str | None = None,
               flt: SearchFilter | None = None, caller: Caller | None = None) -> SearchResult:
        """Retrieve chunks for a query; needs Action.SEARCH.

        The effective filter is `caller.search_filter(flt)`: `flt` can narrow what the caller sees,
        never widen it. ACL and metadata filters apply inside the store, on every leg.
        """
        caller = self._caller(caller, flt)
        caller.require(Action.SEARCH)
        chosen = Mode.parse(mode or self.settings.mode, field="mode")
        if chosen is Mode.RERANK and not self.settings.rerank_enabled:
            chosen = Mode.HYBRID
        if self.store.info() is None:
            return SearchResult(query=query, mode=chosen, hits=[], timings_ms={})
        with self._readers.active():
            return self.retriever(chosen).retrieve(query, k=k or self.settings.top_k, mode=chosen,
                                                   flt=caller.search_filter(flt))

    def answerer(self) -> Answerer:
        """The configured answerer (see `rag.answering.make_answerer`): the LLM when an endpoint is set,
        else the offline reader or sentence answerer."""
        return make_answerer(self.settings, self.embedder)

    def condense_question(self, question: str, history: list[Message], flt: SearchFilter | None = None,
                          caller: Caller | None = None) -> Rewrite:
        """The query to search for `question` in a conversation (rag.conversation.condense): the LLM condenser
        when an LLM is configured (one short call, checked, falling back to the rule), else the follow-up rule.

        The rule gets the collection's BM25 IDF, counted over the chunks this caller can see (a BM25-only
        search per word, cached per question), so a hidden document never shapes a visible rewrite.
        """
        if not any(isinstance(m, dict) and m.get("role") == "user" and m.get("content") for m in history or []):
            return Rewrite((question or "").strip(), False, "none", "no earlier question")
        caller = self._caller(caller, flt)
        total = self.store.count(caller.search_filter(flt)) if self.store.info() is not None else 0

        def doc_count(word: str) -> int:
            return len(self.search(word, k=1000, mode=Mode.BM25, flt=flt, caller=caller).hits)

        # Below a few dozen chunks every word is "common" and IDF says nothing about the topic: rule without it.
        idf = idf_from_counts(doc_count, total) if total >= MIN_CHUNKS_FOR_IDF else None
        return condense(question, history, llm=condenser_from_settings(self.settings), idf=idf)

    def ask(self, question: str, flt: SearchFilter | None = None,
            on_token: Callable[[str], None] | None = None, history: list[Message] | None = None,
            mode: Mode | str | None = None, caller: Caller | None = None) -> Answer:
        """Answer a question from allow-listed evidence with validated citations, or abstain; needs Action.ASK.

        With a conversation `history`, the follow-up is made standalone before retrieval
        (see `condense_question`); the answer itself is built from the retrieved evidence only, and carries the
        searched query (`Answer.searched_query`, `Answer.query_rewrite`) so front ends can show it.
        A question longer than the `max_question_chars` setting is refused with a RagError naming it.
        """
        caller = self._caller(caller, flt)
        caller.require(Action.ASK)
        check_question(question, self.settings.max_question_chars)
        started = time.perf_counter()
        rewrite = self.condense_question(question, history or [], flt=flt, caller=caller)
        query = rewrite.query
        with self._readers.active():
            result = self.search(query, mode=mode, k=max(self.settings.top_k, self.settings.evidence_max_passages),
                                 flt=flt, caller=caller)
            evidence = select_evidence(result.hits, self.settings, self.embedder.count_tokens)
            related = related_passages(result.hits)
            answer = self.answerer().answer(query, evidence, on_token=on_token, related=related)
        answer.question = question
        answer.searched_query = query
        answer.query_rewrite = rewrite.to_dict()
        answer.timings_ms = {**result.timings_ms, **answer.timings_ms,
                             "total_with_answer": round((time.perf_counter() - started) * 1000, 2)}
        return answer

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        """Collection name, model, points, files, chunks per type, ACL labels, on-disk size; needs Action.STATS.

        Points, files, chunk counts and labels cover only the files the caller can see.
        """
        caller = self._caller(caller)
        caller.require(Action.STATS)
        info = self.store.info()
        files = self.list_files(caller)
        by_type: dict[str, int] = {}
        labels: set[str] = set()
        for entry in files:
            by_type[entry["file_type"]] = by_type.get(entry["file_type"], 0) + entry["chunks"]
            labels.update(entry["acl"])
        return {
            "collection": self.settings.collection,
            "backend": "server" if self.settings.qdrant_url else "edge",
            "location": self.settings.redact(self.settings.qdrant_url) if self.settings.qdrant_url
            else str(Path(self.settings.qdrant_path).resolve()),
            "exists": info is not None,
            "embed_model": info.embed_model if info else None,
            "dimension": info.dimension if info else None,
            "bm25": {"k1": info.bm25_k1, "b": info.bm25_b, "avg_doc_len": info.bm25_avg_doc_len,
                     "language": info.bm25_language} if info else None,
            "created_at": info.created_at if info else None,
            # rag.backends: what runs the models now, and what the stored vectors came from.
            **{f"{key}_backend": value for key, value in self.model_backends().items()},
            "points": self.store.count(caller.search_filter()) if info else 0,
            "files": len(files),
            "chunks_per_file_type": dict(sorted(by_type.items())),
            "acl_labels": sorted(labels),
            "disk_bytes": self.store.disk_bytes() if info else 0,
            # Folders kept in sync and when each last synced; a caller sees the folders whose labels it holds.
            "watched_folders": [f for f in (self.watch_status() if self.watch_status else [])
                                if caller.role is Role.ADMIN or caller.sees(f["acl"] or self.settings.default_acl)],
        }

    def list_files(self, caller: Caller | None = None) -> list[dict[str, Any]]:
        """Indexed files the caller can see, with chunk counts, file type and labels; needs Action.LIST_FILES."""
        caller = self._caller(caller)
        caller.require(Action.LIST_FILES)
        return [entry for entry in stored_files(self.store) if caller.sees(entry["acl"])]

    def get_chunk(self, chunk_id: str, caller: Caller | None = None) -> Chunk | None:
        """One chunk by id, or None when it does not exist or the caller cannot see it; needs Action.READ_SOURCE."""
        caller = self._caller(caller)
        caller.require(Action.READ_SOURCE)
        try:
            key = str(uuid.UUID(str(chunk_id)))
        except ValueError:
            return None  # not an id this product makes: reported like a missing one
        if self.store.info() is None:
            return None
        found = self.store.retrieve([key])
        if not found or not caller.sees(found[0].acl):
            return None
        return found[0]

    def remove_file(self, path: str, caller: Caller | None = None) -> int:
        """Remove one file's chunks from the index; returns how many were removed; needs Action.REMOVE.

        A file the caller cannot see is reported exactly like a missing one, so removal reveals nothing.
        """
        caller = self._caller(caller)
        caller.require(Action.REMOVE)
        check_path_text(path)
        resolved = str(Path(path).expanduser().resolve()) if not Path(path).is_absolute() else path
        store = self.store
        with self._writer_lock:
            visible = store.info() is not None and store.count(
                caller.search_filter(SearchFilter(acl=None, file_paths=[resolved]))) > 0
            removed = store.delete_file(resolved) if visible else 0
            if removed:
                store.flush()
        if removed == 0:
            raise RagError(f"{path}: not in collection {self.settings.collection!r}")
        return removed

    def close(self) -> None:
        """Close the store (models stay cached for the process)."""
        with self._components_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # -- source viewer (rag.sources): every method resolves a chunk id the caller can see first -----
    @property
    def sources(self) -> SourceViewer:
        """The page renderer / text extractor behind the source viewer (created on first use, caches inside)."""
        with self._components_lock:
            viewer = getattr(self, "_sources", None)
            if viewer is None:
                viewer = self._sources = SourceViewer(self._document_text)
            return viewer

    def _document_text(self, path: Path) -> str:
        """A file's extracted text exactly as chunk spans index it (re-parsed with this collection's settings)."""
        from ingest.chunking import extracted_text  # lazy: the parsers load only when a text is viewed
        from ingest.loaders import parse_file

        return extracted_text(parse_file(path, self.settings))

    def source_chunk(self, chunk_id: str, caller: Caller | None = None) -> Chunk:
        """The chunk a source request names, if the caller can see it; needs Action.READ_SOURCE.

        A missing id, a malformed one and one the caller cannot see all raise the same SourceNotFound,
        so the answer reveals nothing. The file served is always this chunk's own indexed `file_path`.
        """
        chunk = self.get_chunk(chunk_id, caller=caller)
        if chunk is None:
            raise SourceNotFound("no such passage")
        return chunk

    def source_page(self, chunk_id: str, page: int | None = None, caller: Caller | None = None) -> PageImage:
        """Page `page` (default: the passage's first page) of the passage's PDF as PNG, passage highlighted."""
        return self.sources.page(self.source_chunk(chunk_id, caller), page)

    def source_text(self, chunk_id: str, caller: Caller | None = None) -> SourceText:
        """The passage's document text and the passage's span in it."""
        return self.sources.text(self.source_chunk(chunk_id, caller))

    def source_file(self, chunk_id: str, caller: Caller | None = None) -> SourceFile:
        """The passage's original file, for download (checked to hold the indexed bytes)."""
        return self.sources.file(self.source_chunk(chunk_id, caller))


class _ReaderCount:
    """How many searches and answers are running; an ingest waits for zero between its batches."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Count the calling search or answer as running for the duration of the block."""
        with self._idle:
            self._count += 1
        try:
            yield
        finally:
            with self._idle:
                self._count -= 1
                if self._count == 0:
                    self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> None:
        """Block until no reader runs, or `timeout_s` passed (so a stream of questions cannot stall an ingest)."""
        with self._idle:
            self._idle.wait_for(lambda: self._count == 0, timeout=timeout_s)


class _ReaderFirstEmbedder:
    """The pipeline's embedder as an ingest sees it: passages are embedded in small sub-batches, and
    before each one the ingest waits while searches or answers run.

    The embedder serializes its model calls (torch modules and tokenizers are not thread-safe), so one
    large ingest batch (hundreds of chunks) used to make a question wait tens of seconds for its query
    embedding. Texts are sorted by length before being cut into sub-batches, as sentence-transformers
    does inside one call, so padding stays low and throughput stays the same.
    """

    SUB_BATCH = 8  # about 0.3 s of CPU for 128-token chunks on 2 cores: the longest a question waits
    MAX_WAIT_S = 2.0  # then an ingest takes its turn even while questions keep coming

    def __init__(self, inner: EmbedderProtocol, readers: _ReaderCount) -> None:
        self._inner = inner
        self._readers = readers
        self.model_name = inner.model_name
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.backend = getattr(inner, "backend", "torch-fp32")  # recorded in / checked against the collection

    @property
    def model(self) -> Any:
        """The inner embedder's model (its backend's probe report is what the collection check consults)."""
        return getattr(self._inner, "model", None)

    def count_tokens(self, text: str) -> int:
        """See EmbedderProtocol."""
        return self._inner.count_tokens(text)

    def embed_query(self, text: str) -> np.ndarray:
        """See EmbedderProtocol."""
        return self._inner.embed_query(text)

    def embed_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """See EmbedderProtocol; same vectors as the inner embedder, computed reader-first."""
        if not texts:
            return self._inner.embed_passages([], show_progress)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.SUB_BATCH):
            part = order[start:start + self.SUB_BATCH]
            self._readers.wait_idle(self.MAX_WAIT_S)
            out[part] = self._inner.embed_passages([texts[i] for i in part])
        return out


MAX_PATH_CHARS = 4096


def check_path_text(path: str | os.PathLike[str]) -> None:
    """RagError (one line, no traceback) for a path no file system accepts: a NUL byte, or over 4096 chars."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    shown = text[:80].replace("\x00", "\\0") + ("..." if len(text) > 80 else "")
    if "\x00" in text:
        raise RagError(f"{shown!r}: a path cannot contain a NUL byte")
    if len(text) > MAX_PATH_CHARS:
        raise RagError(f"{shown!r}: path is {len(text)} characters long; the limit is {MAX_PATH_CHARS}")


def confine_to_roots(paths: Iterable[str | os.PathLike[str]], roots: Iterable[str | os.PathLike[str]]) -> None:
    """AccessDenied naming the first path that does not resolve (symlinks resolved) inside one of `roots`."""
    resolved_roots = resolve_roots(roots)
    for raw in paths:
        if root_of(Path(raw).expanduser().resolve(), resolved_roots) is None:
            raise AccessDenied(f"{os.fspath(raw)}: outside the folders this server may ingest from")


def check_question(question: str, max_chars: int) -> None:
    """RagError naming the `max_question_chars` setting when a question is longer than it."""
    if question is not None and len(question) > max_chars:
        raise RagError(f"question is {len(question)} characters long; the limit is {max_chars} "
                       "(setting 'max_question_chars')")

