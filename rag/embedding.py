"""Dense embeddings with sentence-transformers: batched, L2-normalized float32 vectors.

Passages are embedded as-is; queries get the model's query instruction (BGE English models need
"Represent this sentence for searching relevant passages: "). Models load lazily, once per process
(`load_embedder` is cached), and nothing is downloaded at import time.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rag.config import DEFAULT_EMBED_BATCH_SIZE, Settings
from rag.errors import ModelLoadError

log = logging.getLogger(__name__)


@runtime_checkable
class EmbedderProtocol(Protocol):
    """What the product needs from an embedding model; `Embedder` is the sentence-transformers one.

    Tests and evals may pass any object with this shape (e.g. a cached or remote embedder).
    """

    model_name: str
    dimension: int
    max_tokens: int

    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer produces for `text` (no special tokens)."""
        ...

    def embed_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """L2-normalized float32 rows, one per passage."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """One L2-normalized float32 vector for a query (query instruction applied)."""
        ...


class Embedder:
    """A loaded sentence-transformers model with the query/passage conventions of this product."""

    def __init__(self, model: Any, model_name: str, query_instruction: str = "", batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
                 query_model: Any = None) -> None:
        self._model = model
        # Single queries may run on another backend (`auto` picks the one with the least per-query latency,
        # which is not always the one with the best batch throughput); by default the same model.
        self._query_model = query_model if query_model is not None else model
        self.model_name = model_name
        self.query_instruction = query_instruction
        self.batch_size = batch_size
        dim = _model_dimension(model)
        if not dim:
            raise ModelLoadError(f"embedding model {model_name!r} does not report its output dimension; "
                                 "use a sentence-transformers model with a pooling layer")
        self.dimension: int = int(dim)
        # Which rag.backends backend runs the model (torch-fp32 unless a setting chose another).
        self.backend: str = getattr(model, "kind", "torch-fp32")
        self.query_backend: str = getattr(self._query_model, "kind", self.backend)
        # The chunker keeps chunks below max_tokens - 2 so the model's [CLS]/[SEP] still fit.
        self.max_tokens: int = int(model.max_seq_length or 512)
        # Tokenizers and torch modules are not guaranteed thread-safe (the UI calls from threads), so
        # each has a lock. Token counting gets its own copy of the tokenizer and its own lock: the
        # ingest parser thread counts tokens while the main thread is inside model.encode, and one
        # shared lock made the chunker wait for every embedding batch.
        self._tokenizer = copy.deepcopy(model.tokenizer)
        self._count_lock = threading.Lock()
        self._lock = threading.Lock()
        # A separate query model has its own lock, so a query never waits behind an ingest batch.
        self._query_lock = self._lock if self._query_model is model else threading.Lock()

    @property
    def model(self) -> Any:
        """The underlying sentence-transformers model (for benchmarks and fine-tuning)."""
        return self._model

    def count_tokens(self, text: str) -> int:
        """Number of tokens the model's own tokenizer produces for `text`, without special tokens."""
        if not text:
            return 0
        with self._count_lock:
            ids = self._tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return len(ids)

    def embed_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Embed passages in batches: float32 array of shape (len(texts), dimension), rows L2-normalized."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._encode(list(texts), show_progress)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query with the query instruction prepended: float32 vector of shape (dimension,)."""
        return self._encode([self.query_instruction + text], False, query=True)[0]

    def _encode(self, texts: list[str], show_progress: bool, query: bool = False) -> np.ndarray:
        model, lock = (self._query_model, self._query_lock) if query else (self._model, self._lock)
        with lock:
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Embedder(model_name={self.model_name!r}, dimension={self.dimension}, max_tokens={self.max_tokens})"


def _model_dimension(model: Any) -> int | None:
    # sentence-transformers 5+ renamed the getter; keep both so either version works.
    getter = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension")
    return getter()


def load_embedder(model_name: str, query_instruction: str = "", batch_size: int = DEFAULT_EMBED_BATCH_SIZE, device: str = "cpu",
                  backend: str = "torch-fp32", state_dir: str = ".rag") -> Embedder:
    """Load a sentence-transformers model (a Hub name or a local path), once per process per arguments.

    Raises ModelLoadError naming the model and what to do when it cannot be loaded (no network to
    download it, a missing local path, files that are not a sentence-transformers model).
    """
    # Normalize before the cache so positional and keyword calls share one entry.
    backend = str(backend or "torch-fp32")
    # The state dir only matters to other backends (their ONNX cache and probe record): keep one fp32 entry.
    return _load_embedder_cached(str(model_name), query_instruction or "", int(batch_size), str(device),
                                 backend, str(state_dir) if backend != "torch-fp32" else ".rag")


@functools.lru_cache(maxsize=8)
def _load_embedder_cached(model_name: str, query_instruction: str, batch_size: int, device: str,
                          backend: str = "torch-fp32", state_dir: str = ".rag") -> Embedder:
    looks_like_path = model_name.startswith(("/", ".", "~"))
    if looks_like_path and not os.path.exists(os.path.expanduser(model_name)):
        raise ModelLoadError(
            f"embedding model path {model_name!r} does not exist; set RAG_EMBED_MODEL (or embed_model in rag.toml) "
            "to a downloaded sentence-transformers model folder or a Hugging Face model name"
        )
    try:
        from sentence_transformers import SentenceTransformer  # heavy import: only when a model is needed

        log.info("loading embedding model %s on %s", model_name, device)
        model = SentenceTransformer(os.path.expanduser(model_name), device=device)
    except Exception as exc:  # OSError, HF hub errors, ValueError from bad folders: all mean "cannot load"
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        hint = (
            "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1) and the model is not in the local cache"
            if offline and not looks_like_path
            else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        raise ModelLoadError(
            f"cannot load embedding model {model_name!r} ({hint}); download it once with network access, "
            "or set RAG_EMBED_MODEL to a local sentence-transformers model folder"
        ) from exc
    if backend != "torch-fp32":
        # rag.backends: bf16 autocast or an ONNX Runtime export (onnxruntime imported only for ONNX kinds);
        # "auto" probes the fastest backend that passes the quality guard once and remembers it.
        from rag.backends import resolve_backend, resolve_query_backend

        base = model
        model, report = resolve_backend(backend, model_name, "embedder", state_dir, model=base)
        query_model = resolve_query_backend(backend, model, report, model_name, state_dir, model=base)
        return Embedder(model, model_name, query_instruction=query_instruction, batch_size=batch_size,
                        query_model=query_model)
    return Embedder(model, model_name, query_instruction=query_instruction, batch_size=batch_size)


def embedder_from_settings(settings: Settings) -> Embedder:
    """The (cached) embedder described by Settings: model, query instruction, batch size, device."""
    return load_embedder(
        settings.embed_model,
        settings.resolved_query_instruction(),
        settings.embed_batch_size,
        settings.embed_device,
        backend=getattr(settings, "embed_backend", "torch-fp32"),
        state_dir=settings.state_dir,
    )
