"""Cross-encoder reranking: score (query, passage) pairs jointly with a sentence-transformers CrossEncoder.

The backend is imported lazily (importing this module is cheap) and a model loads once per process
per (model, batch size, device). Inputs are truncated by the model's tokenizer to the model's max
length, so arbitrarily long passages or queries score without error.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Any, Protocol, runtime_checkable

from rag.config import Settings
from rag.errors import ModelLoadError

log = logging.getLogger(__name__)

# Models that do not declare a usable max length (some report a huge sentinel) fall back to this.
_DEFAULT_MAX_LENGTH = 512


@runtime_checkable
class RerankerProtocol(Protocol):
    """What retrieval needs from a reranker; `Reranker` is the cross-encoder one."""

    model_name: str

    def score(self, query: str, texts: list[str]) -> list[float]:
        """One relevance score per text, in input order (higher = more relevant; raw logits)."""
        ...


class Reranker:
    """A cross-encoder that scores how well each text answers a query (higher = more relevant)."""

    def __init__(self, model_name: str, batch_size: int = 32, device: str = "cpu", backend: str = "torch-fp32",
                 state_dir: str = ".rag", max_tokens: int | None = None) -> None:
        if batch_size <= 0:
            raise ValueError(f"rerank batch size must be positive (setting 'rerank_batch_size'), got {batch_size}")
        self.model_name = model_name
        self.batch_size = batch_size
        self.device = device
        self._model = _load_cross_encoder(model_name, device)
        self.max_length: int = int(_get_max_length(self._model))
        self.backend = "torch-fp32"
        if backend != "torch-fp32":
            # rag.backends: bf16 autocast or ONNX Runtime (exported from this loaded instance, so a fresh head
            # is exported as loaded); "auto" probes the fastest backend that passes the ranking guard once.
            from rag.backends import resolve_backend

            self._model, _report = resolve_backend(backend, model_name, "reranker", state_dir, model=self._model)
            self.backend = self._model.kind
        # Token budget: the question plus each passage's best-matching window instead of its first tokens.
        self.max_tokens = min(int(max_tokens), self.max_length) if max_tokens else None
        self._windower = None
        if self.max_tokens:
            from rag.backends.budget import PassageWindower

            self._windower = PassageWindower(self._model.tokenizer, self.max_tokens)
        # Tokenizers and torch modules are not guaranteed thread-safe; the UI may call from threads.
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The underlying sentence-transformers CrossEncoder (for benchmarks and fine-tuning)."""
        return self._model

    def score(self, query: str, texts: list[str]) -> list[float]:
        """One relevance score per text, in input order: the model's raw logit (higher = more relevant).

        Raw logits, not sigmoid: models differ in the activation their config asks for (MS MARCO
        cross-encoders none, others sigmoid), and the evidence gate's floor is calibrated on logits,
        so every backend reports on the same scale. An empty list scores to an empty list.
        """
        if not texts:
            return []
        import torch

        pairs = self._windower.pairs(query, texts) if self._windower else [(query, text) for text in texts]
        with self._lock:
            scores = self._model.predict(
                pairs,
                batch_size=self.batch_size,
                show_progress_bar=False,
                activation_fn=torch.nn.Identity(),
                convert_to_numpy=True,
            )
        return [float(s) for s in scores.reshape(len(texts), -1)[:, 0]]

    def __repr__(self) -> str:
        return f"Reranker(model_name={self.model_name!r}, max_length={self.max_length}, batch_size={self.batch_size})"


def _load_cross_encoder(model_name: str, device: str) -> Any:
    """Load a CrossEncoder with one output logit and truncation at the model's own max length."""
    looks_like_path = model_name.startswith(("/", ".", "~"))
    path = os.path.expanduser(model_name)
    hint_tail = "set RAG_RERANK_MODEL (or rerank_model in rag.toml) to a local cross-encoder folder, or to 'none' to turn reranking off"
    if looks_like_path and not os.path.exists(path):
        raise ModelLoadError(f"reranker model path {model_name!r} does not exist; {hint_tail}")
    try:
        from sentence_transformers import CrossEncoder  # heavy import: only when reranking is used

        log.info("loading reranker %s on %s", model_name, device)
        model = CrossEncoder(path, num_labels=1, device=device)
        max_length = _model_max_length(model)
        # CrossEncoder truncates pairs to its max length; set it explicitly to what the model can
        # take so long passages are cut instead of overflowing the position embeddings.
        _set_max_length(model, max_length)
    except Exception as exc:  # OSError, Hub errors, bad folders: all mean "cannot load"
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        reason = (
            "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1) and the model is not in the local cache"
            if offline and not looks_like_path
            else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        raise ModelLoadError(f"cannot load reranker model {model_name!r} ({reason}); {hint_tail}") from exc
    return model


def _model_max_length(model: Any) -> int:
    """The longest input the model accepts: min of the tokenizer limit and the position embeddings."""
    candidates: list[int] = []
    tokenizer = getattr(model, "tokenizer", None)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 100_000:  # HF uses ~1e30 for "unset"
        candidates.append(tok_max)
    config = getattr(getattr(model, "model", None), "config", None)
    pos_max = getattr(config, "max_position_embeddings", None)
    if isinstance(pos_max, int) and pos_max > 0:
        candidates.append(pos_max)
    current = _get_max_length(model)
    if isinstance(current, int) and current > 0:
        candidates.append(current)
    return min(candidates) if candidates else _DEFAULT_MAX_LENGTH


def _get_max_length(model: Any) -> int | None:
    # sentence-transformers 6 renamed CrossEncoder.max_length to max_seq_length (old name deprecated).
    if hasattr(model, "max_seq_length"):
        return model.max_seq_length
    return getattr(model, "max_length", None)


def _set_max_length(model: Any, value: int) -> None:
    if hasattr(model, "max_seq_length"):
        model.max_seq_length = value
    else:
        model.max_length = value


@functools.lru_cache(maxsize=4)
def _cached_reranker(model_name: str, batch_size: int, device: str, backend: str = "torch-fp32", state_dir: str = ".rag",
                     max_tokens: int | None = None) -> Reranker:
    return Reranker(model_name, batch_size=batch_size, device=device, backend=backend, state_dir=state_dir,
                    max_tokens=max_tokens)


def load_reranker(settings: Settings) -> Reranker | None:
    """The reranker described by Settings (cached per process), or None when rerank_model is 'none'.

    The cross-encoder runs on the embedding device (`embed_device`): there is one device setting.
    Raises ModelLoadError naming the model and the RAG_RERANK_MODEL setting when it cannot load.
    """
    if not settings.rerank_enabled:
        return None
    backend = getattr(settings, "rerank_backend", "torch-fp32")
    # The state dir only matters to other backends (their ONNX cache and probe record): keep one fp32 entry.
    return _cached_reranker(settings.rerank_model.strip(), int(settings.rerank_batch_size), settings.embed_device,
                            backend, settings.state_dir if backend != "torch-fp32" else ".rag",
                            getattr(settings, "rerank_max_tokens", None))
