"""`rag bench --parts backends`: the model backends side by side (evals/bench_backends.py) inside `rag bench`.

Runs `evals.bench_backends.run` (fp32 / bf16 PyTorch and ONNX Runtime fp32 / int8 for the embedder and the
cross-encoder, items interleaved across backends) and returns its figures with the ratios to the fp32 path
gathered in one table (`ratios_to_fp32`), plus the Markdown table `to_markdown` renders.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rag.config import Settings


@dataclass
class BackendsConfig:
    """Sizes of the backends part; `quick()` is the smoke-test variant."""

    # Sized so a 0.005 nDCG@10 difference and a 10 % speed difference stand out of the noise (~10 min on 2 cores).
    chunks: int = 256
    queries: int = 100
    rerank_questions: int = 100
    m: int | None = None  # candidates per question; None = the product's default (settings.rerank_top_m)

    @classmethod
    def quick(cls) -> "BackendsConfig":
        """Small sizes for a smoke test."""
        return cls(chunks=16, queries=4, rerank_questions=2, m=10)


def _json_safe(value: Any) -> Any:
    """Tuples to lists, numpy scalars to floats, NaN/inf to None (so the bench JSON stays strict)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def ratios_to_fp32(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant: embedder throughput and query-p50 ratios, rerank stage-time ratio (to torch-fp32)."""
    rows: list[dict[str, Any]] = []
    for name, v in result.get("embedding", {}).items():
        rows.append({"stage": "embed", "variant": name, "chunks_per_s_ratio": v["chunks_per_s_ratio"],
                     "query_p50_ratio": v["query_p50_ratio"], "min_cosine": v["min_cosine"]})
    for name, v in result.get("rerank", {}).items():
        rows.append({"stage": "rerank", "variant": name, "stage_ratio": v["stage_ratio"],
                     "top10_overlap": v["top10_overlap"], "kendall_tau": v["kendall_tau"]})
    return rows


def bench_backends(settings: Settings, cfg: BackendsConfig, workdir: Path,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """Run evals.bench_backends in this process; the reranker is `settings.rerank_model` when it is a local
    folder (e.g. one `rag tune` wrote), else bench_backends' default (MiniLM with a random head)."""
    from evals import bench_backends as bb

    rerank_model = settings.rerank_model if settings.rerank_model and Path(settings.rerank_model).is_dir() else None
    m = cfg.m or settings.rerank_top_m
    progress(f"backends: {cfg.chunks} chunks, {cfg.queries} queries, {cfg.rerank_questions} rerank questions at "
             f"M={m} (ONNX export + int8 quantization first)")
    state = Path(workdir) / "backends_state"
    raw = bb.run(cfg.chunks, cfg.queries, cfg.rerank_questions, m, state_dir=str(state), rerank_model=rerank_model,
                 product_batch=settings.embed_batch_size)
    out = _json_safe(raw)
    out["config"] = {**asdict(cfg), "m": m}
    out["ratios_to_fp32"] = ratios_to_fp32(out)
    out["markdown"] = bb.to_markdown(raw)
    return out
