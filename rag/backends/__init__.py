"""Model backends (PyTorch fp32/bf16, ONNX Runtime fp32/int8), their quality guards, and the rerank token budget.

    backend = load_backend("onnx-int8", model_path, role="embedder", cache_dir=default_cache_dir(state_dir))
    backend.encode(texts, batch_size=32)          # embedder: float32 (n, dim), L2-normalized
    backend.predict(pairs, batch_size=32)         # reranker: float32 (n,) raw logits

    backend, report = resolve_backend("auto", model_path, "embedder", state_dir)   # probe once, remember
    query_backend = resolve_query_backend("auto", backend, report, model_path, state_dir)  # least latency per query
    vectors_compatible(recorded_backend, current_backend, report)                  # may vectors mix?
    ensure_collection_backend(collection, info.embed_backend, embedder, state_dir)  # ModelMismatchError if not

Importing this package is cheap: torch, onnxruntime and sentence-transformers load only when a model does.
"""

from rag.backends.budget import PassageWindower
from rag.backends.guard import (
    EMBED_MIN_COSINE,
    RERANK_MIN_KENDALL_TAU,
    RERANK_MIN_TOP10_OVERLAP,
    GuardResult,
    ProbeReport,
    check_vectors_compatible,
    embedding_agreement,
    kendall_tau,
    measured_min_cosine,
    probe_backends,
    ranking_agreement,
    remembered_choice,
    resolve_backend,
    resolve_query_backend,
    select_fastest,
    top_k_overlap,
    vectors_compatible,
)
from rag.backends.runtime import (
    BACKENDS,
    OnnxBackend,
    TorchBackend,
    check_backend_name,
    cpu_has_native_bf16,
    default_cache_dir,
    load_backend,
    load_model,
    unusable_backends,
)
from rag.backends.vectors import (
    describe_backend,
    embedder_backend,
    ensure_collection_backend,
    measure_vector_agreement,
    remembered_agreement,
    vectors_backend,
)

__all__ = [
    "BACKENDS", "EMBED_MIN_COSINE", "RERANK_MIN_KENDALL_TAU", "RERANK_MIN_TOP10_OVERLAP", "GuardResult", "OnnxBackend",
    "PassageWindower", "ProbeReport", "TorchBackend", "check_backend_name", "check_vectors_compatible", "default_cache_dir",
    "embedding_agreement", "kendall_tau", "load_backend", "load_model", "probe_backends", "ranking_agreement",
    "remembered_choice", "resolve_backend", "resolve_query_backend", "select_fastest", "top_k_overlap", "vectors_compatible",
    "describe_backend", "embedder_backend", "ensure_collection_backend", "measure_vector_agreement",
    "measured_min_cosine", "remembered_agreement", "vectors_backend", "cpu_has_native_bf16", "unusable_backends",
]
