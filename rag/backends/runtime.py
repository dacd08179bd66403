"""Model backends: one encode/predict interface over PyTorch fp32/bf16 and ONNX Runtime fp32/int8.

A backend wraps an already loaded sentence-transformers model (a `SentenceTransformer` for the
embedder role, a `CrossEncoder` for the reranker role) and runs its forward pass one of four ways:

- `torch-fp32`  the model as loaded (today's path).
- `torch-bf16`  the same model under `torch.autocast("cpu", dtype=torch.bfloat16)`. Measured here
                faster than `model.to(torch.bfloat16)` and closer to fp32 (LayerNorm and softmax stay fp32).
- `onnx-fp32`   the loaded model exported with `torch.onnx.export` and run in ONNX Runtime.
- `onnx-int8`   that export dynamically quantized (MatMul weights int8, per channel; per-tensor
                quantization measured cosine 0.92 to fp32 on MiniLM, per channel 0.991).

ONNX files are exported from the *loaded instance* (so a cross-encoder with a freshly initialised
head exports that very head) and cached under `cache_dir/<fingerprint>/`, where the fingerprint hashes
the model path and every weight tensor. A second load of the same weights finds the files and loads
them offline without exporting again. Tokenization always goes through the model's own `preprocess`,
so every backend sees identical token ids.

Backends expose the sentence-transformers call signatures (`encode(...)`, `predict(...)`) and delegate
every other attribute to the wrapped model, so `rag.embedding.Embedder` and `rag.rerank.Reranker` can
use a backend where they use a model today.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rag.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")
ROLES: tuple[str, ...] = ("embedder", "reranker")
_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUT_KEY = {"embedder": "sentence_embedding", "reranker": "scores"}
_EXPORT_FORMAT = 1  # bump when the export or quantization recipe changes: old cache entries are then ignored


def check_backend_name(kind: str, setting: str = "embed_backend") -> str:
    """Normalize a backend name; ConfigError naming the setting when it is not one we know."""
    value = (kind or "").strip().lower()
    if value not in BACKENDS and value != "auto":
        raise ConfigError(f"setting {setting!r} is {kind!r}; use auto, {', '.join(BACKENDS)}")
    return value


@functools.lru_cache(maxsize=1)
def cpuinfo_text() -> str:
    """/proc/cpuinfo (read once per process); empty where there is none (macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (or of `cpuinfo` text); empty when unknown."""
    for line in (cpuinfo_text() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (x86 `avx512_bf16` or `amx_bf16` in /proc/cpuinfo).

    Without it, torch's CPU bf16 autocast is emulated: a MiniLM training step measured 80 s instead of 2 s on
    an AVX2-only EPYC. Unknown (no /proc/cpuinfo) counts as no.
    """
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def unusable_backends() -> dict[str, str]:
    """Backends not worth probing on this CPU, each with the reason (today: bf16 without hardware bf16)."""
    if cpu_has_native_bf16():
        return {}
    return {"torch-bf16": "not probed: this CPU has no hardware bf16 (avx512_bf16 / amx_bf16), so bf16 autocast "
                          "is emulated and slower than fp32"}


def default_cache_dir(state_dir: str | os.PathLike[str]) -> Path:
    """Where exported ONNX models live: beside the other model state, under the state dir."""
    return Path(state_dir).expanduser() / "models" / "onnx"


def model_fingerprint(model: Any, model_path: str = "") -> str:
    """A short hash of the model path and every weight tensor of the loaded model.

    Hashing the loaded weights (not the files) matters for a cross-encoder whose head is initialised
    at load time: two loads of the same folder get different heads and must not share an export.
    """
    import torch  # heavy import: only when a model is loaded

    digest = hashlib.blake2b(digest_size=12)
    digest.update(str(Path(model_path).expanduser().resolve() if model_path else "").encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class TorchBackend:
    """PyTorch forward pass, fp32 or under bf16 autocast."""

    def __init__(self, model: Any, role: str, bf16: bool = False) -> None:
        self._model = model
        self.role = role
        self.kind = "torch-bf16" if bf16 else "torch-fp32"
        self._bf16 = bf16

    @property
    def base_model(self) -> Any:
        """The wrapped sentence-transformers model (other backends of the same weights are built from it)."""
        return self._model

    def _run(self, fn: Callable[[], Any]) -> Any:
        if not self._bf16:
            return fn()
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = True, **kwargs: Any) -> np.ndarray:
        """Embeddings as float32 (bf16 results are upcast)."""
        out = self._run(lambda: self._model.encode(list(texts), batch_size=batch_size, show_progress_bar=show_progress_bar,
                                                   convert_to_numpy=True, normalize_embeddings=normalize_embeddings, **kwargs))
        return np.asarray(out, dtype=np.float32)

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, show_progress_bar: bool = False,
                activation_fn: Any = None, convert_to_numpy: bool = True, **kwargs: Any) -> np.ndarray:
        """Raw logits (activation_fn defaults to identity) as float32, one per pair."""
        import torch

        act = activation_fn if activation_fn is not None else torch.nn.Identity()
        out = self._run(lambda: self._model.predict(list(pairs), batch_size=batch_size, show_progress_bar=show_progress_bar,
                                                    activation_fn=act, convert_to_numpy=True, **kwargs))
        return np.asarray(out, dtype=np.float32)

    def __getattr__(self, name: str) -> Any:  # tokenizer, max_seq_length, get_embedding_dimension, ...
        return getattr(self._model, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, role={self.role!r})"


class OnnxBackend:
    """ONNX Runtime forward pass over the model's own tokenization; batches sorted by length, padded per batch."""

    def __init__(self, model: Any, role: str, session: Any, kind: str, onnx_path: Path, exported: bool) -> None:
        self._model = model
        self.role = role
        self.kind = kind
        self._session = session
        self._input_names = {i.name for i in session.get_inputs()}
        self.onnx_path = onnx_path
        self.exported = exported  # True when this load had to export (or quantize) the model
        self._lock = threading.Lock()

    @property
    def base_model(self) -> Any:
        """The wrapped sentence-transformers model (tokenization, and other backends of the same weights)."""
        return self._model

    def _run_batches(self, items: list[Any], batch_size: int, length: Callable[[Any], int]) -> np.ndarray:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        order = np.argsort([-length(item) for item in items], kind="stable")
        outputs: list[np.ndarray | None] = [None] * len(items)
        for start in range(0, len(items), batch_size):
            idx = order[start:start + batch_size]
            features = self._model.preprocess([items[j] for j in idx])
            feed = {k: features[k].cpu().numpy().astype(np.int64) for k in _ONNX_INPUTS if k in self._input_names}
            if "token_type_ids" in self._input_names and "token_type_ids" not in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            with self._lock:
                result = self._session.run(None, feed)[0]
            for j, row in zip(idx, result):
                outputs[j] = row
        return np.stack(outputs).astype(np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = True, **kwargs: Any) -> np.ndarray:
        """Embeddings (L2-normalized when asked), float32, shape (len(texts), dimension)."""
        if self.role != "embedder":
            raise TypeError(f"{self!r} is a reranker backend; it has no encode()")
        texts = list(texts)
        if not texts:
            return np.zeros((0, int(self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension")
                                    else self._model.get_sentence_embedding_dimension())), dtype=np.float32)
        vectors = self._run_batches(texts, batch_size, len)
        if normalize_embeddings:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, show_progress_bar: bool = False,
                activation_fn: Any = None, convert_to_numpy: bool = True, **kwargs: Any) -> np.ndarray:
        """Raw logits, float32, one per pair (an activation_fn other than identity is applied with torch)."""
        if self.role != "reranker":
            raise TypeError(f"{self!r} is an embedder backend; it has no predict()")
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            return np.zeros((0,), dtype=np.float32)
        scores = self._run_batches(pairs, batch_size, lambda p: len(p[0]) + len(p[1]))
        scores = scores.reshape(len(pairs), -1)
        if scores.shape[1] == 1:
            scores = scores[:, 0]
        if activation_fn is not None:
            import torch

            scores = activation_fn(torch.from_numpy(scores)).numpy().astype(np.float32)
        return scores

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, role={self.role!r}, path={str(self.onnx_path)!r})"


def load_model(model_path: str, role: str) -> Any:
    """Load the sentence-transformers model for a role from a local path or Hub name (offline if cached)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    path = os.path.expanduser(model_path)
    try:
        if role == "embedder":
            from sentence_transformers import SentenceTransformer  # heavy import: only when a model is needed

            return SentenceTransformer(path, device="cpu")
        from sentence_transformers import CrossEncoder  # heavy import: only when a model is needed

        return CrossEncoder(path, num_labels=1, device="cpu")
    except Exception as exc:  # OSError, Hub errors, bad folders: all mean "cannot load"
        raise ModelLoadError(f"cannot load {role} model {model_path!r} for a backend "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def load_backend(kind: str, model_path: str = "", role: str = "embedder", cache_dir: str | os.PathLike[str] | None = None,
                 model: Any = None, num_threads: int | None = None) -> TorchBackend | OnnxBackend:
    """A backend of `kind` for the model at `model_path` (or the already loaded `model`).

    ONNX kinds export the loaded model once into `cache_dir` (required for them) and reuse the files on
    later loads of the same weights; the returned backend's `exported` says whether this call exported.
    """
    if kind not in BACKENDS:
        raise ConfigError(f"unknown model backend {kind!r}; use one of {', '.join(BACKENDS)} (or 'auto' in settings)")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if model is None:
        if not model_path:
            raise ValueError("load_backend needs model_path or a loaded model")
        model = load_model(model_path, role)
    if hasattr(model, "eval"):
        model.eval()
    if kind.startswith("torch-"):
        return TorchBackend(model, role, bf16=(kind == "torch-bf16"))
    if cache_dir is None:
        raise ConfigError(f"backend {kind!r} needs a cache directory for its ONNX export (settings 'state_dir')")
    path, exported = ensure_onnx(model, role, kind, Path(cache_dir), model_path)
    session = _ort_session(path, num_threads)
    return OnnxBackend(model, role, session, kind, path, exported)


def ensure_onnx(model: Any, role: str, kind: str, cache_dir: Path, model_path: str = "") -> tuple[Path, bool]:
    """Path of the ONNX file for `kind` (exporting/quantizing it if absent) and whether this call built it."""
    folder = cache_dir / f"{role}-{model_fingerprint(model, model_path)}"
    fp32 = folder / "model.onnx"
    int8 = folder / "model_int8.onnx"
    meta_path = folder / "export.json"
    target = fp32 if kind == "onnx-fp32" else int8
    if target.is_file() and _meta_ok(meta_path):
        return target, False
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (fp32.is_file() and _meta_ok(meta_path)):
        _export_onnx(model, role, fp32)
    if kind == "onnx-int8":
        _quantize_int8(fp32, int8)
    meta = {"format": _EXPORT_FORMAT, "role": role, "model_path": str(model_path), "files": sorted(p.name for p in folder.glob("*.onnx"))}
    tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp, meta_path)
    log.info("built %s ONNX model for %s in %.1f s: %s", kind, model_path or role, time.perf_counter() - t0, target)
    return target, True


def _meta_ok(meta_path: Path) -> bool:
    try:
        return json.loads(meta_path.read_text(encoding="utf-8")).get("format") == _EXPORT_FORMAT
    except (OSError, ValueError):
        return False


def _export_onnx(model: Any, role: str, out: Path) -> None:
    """torch.onnx.export of the whole sentence-transformers pipeline (pooling and normalization included)."""
    import torch

    key = _OUTPUT_KEY[role]

    class _Graph(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})[key]

    sample = ["a short sample", "another sample text for the export"]
    features = model.preprocess(sample if role == "embedder" else [("a question", s) for s in sample])
    args = tuple(features.get(name, torch.zeros_like(features["input_ids"])) for name in _ONNX_INPUTS)
    tmp = out.with_suffix(f".{os.getpid()}.tmp.onnx")
    axes = {name: {0: "batch", 1: "tokens"} for name in _ONNX_INPUTS}
    axes["output"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes the dynamic axes already cover
        # dynamo=False: the TorchScript exporter needs no onnxscript and handles the HF BERT graph.
        torch.onnx.export(_Graph(model).eval(), args, str(tmp), dynamo=False, input_names=list(_ONNX_INPUTS),
                          output_names=["output"], dynamic_axes=axes, opset_version=17, do_constant_folding=True)
    os.replace(tmp, out)


def _quantize_int8(src: Path, out: Path) -> None:
    """Dynamic int8 quantization of the MatMul weights, per output channel (per tensor loses too much)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic  # heavy import: only when quantizing

    tmp = out.with_suffix(f".{os.getpid()}.tmp.onnx")
    # The quantizer logs one line per tensor through the root logger; keep only its errors.
    quiet = _DropBelow(logging.ERROR, "onnxruntime")
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().removeFilter(quiet)
    os.replace(tmp, out)


class _DropBelow(logging.Filter):
    """Drops records below `level` logged from files under a package path (here: onnxruntime's quantizer)."""

    def __init__(self, level: int, path_part: str) -> None:
        super().__init__()
        self.level, self.path_part = level, path_part

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or self.path_part not in (record.pathname or "")


def _ort_session(path: Path, num_threads: int | None) -> Any:
    import onnxruntime  # heavy import: only when an ONNX backend is used

    onnxruntime.disable_telemetry_events()
    options = onnxruntime.SessionOptions()
    threads = num_threads or _torch_threads()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No busy-waiting between ops: on a shared CPU spinning threads measured slower, not faster.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _torch_threads() -> int:
    try:
        import torch

        return max(1, int(torch.get_num_threads()))
    except Exception:  # torch missing or odd builds: fall back to the CPU count
        return max(1, os.cpu_count() or 1)
