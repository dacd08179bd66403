"""Quality guards for model backends, the `auto` choice, and whether two backends' vectors may mix.

The guard compares every backend with `torch-fp32` on a fixed probe set of real text (rag.backends.probe_data):
- embedder: every probe embedding within cosine `EMBED_MIN_COSINE` (0.99) of its fp32 embedding;
- reranker: per probe question, the top-10 of the 30 candidates overlaps fp32's top-10 by at least
  `RERANK_MIN_TOP10_OVERLAP` on average, and the whole order agrees by Kendall tau >= `RERANK_MIN_KENDALL_TAU`.
A backend that fails is never chosen, and the reason (the measured value against the threshold) is kept.

`auto` = the fastest passing backend, measured on the same probe with the backends interleaved (so a busy
machine slows them alike). For the embedder the probe also times single queries, one at a time, and keeps a
second choice for them (`chosen_query`): the backend with the best batch throughput is not always the one with
the least latency for one short text (fixed per-call overhead dominates there). The choice is remembered in `<state_dir>/model_backends.json`, keyed by role, the
model's files and this CPU, so the probe runs once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from rag.backends.runtime import (BACKENDS, cpu_flags, cpuinfo_text, default_cache_dir, load_backend, load_model,
                                  unusable_backends)

log = logging.getLogger(__name__)

REFERENCE = "torch-fp32"
EMBED_MIN_COSINE = 0.99
RERANK_MIN_TOP10_OVERLAP = 0.9
RERANK_MIN_KENDALL_TAU = 0.9
CHOICES_FILE = "model_backends.json"


@dataclass
class GuardResult:
    """One backend's agreement with fp32 on the probe set, its speed, and whether it may be used."""

    backend: str
    role: str
    passed: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # total probe time (interleaved with the other backends)
    ratio_to_fp32: float = 1.0  # seconds / fp32 seconds in the same run
    query_seconds: float = 0.0  # embedder: total time of the single-query probe (one text per call)
    query_ratio_to_fp32: float = 1.0


@dataclass
class ProbeReport:
    """Guard results of every probed backend for one role, the choice, and pairwise vector agreement."""

    role: str
    chosen: str
    results: dict[str, GuardResult]
    pairwise_min_cosine: dict[str, dict[str, float]] = field(default_factory=dict)  # embedder only
    probe_size: int = 0
    chosen_query: str = ""  # embedder: the passing backend with the least single-query time ("" = `chosen`)

    @property
    def query_backend(self) -> str:
        """The backend for single queries: `chosen_query` when the probe timed queries, else `chosen`."""
        return self.chosen_query or self.chosen

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["results"] = {k: asdict(v) for k, v in self.results.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeReport":
        results = {k: GuardResult(**v) for k, v in data.get("results", {}).items()}
        return cls(role=data["role"], chosen=data["chosen"], results=results,
                   pairwise_min_cosine=data.get("pairwise_min_cosine", {}), probe_size=int(data.get("probe_size", 0)),
                   chosen_query=str(data.get("chosen_query", "") or ""))


# --------------------------------------------------------------------------------------------------
# agreement measures
# --------------------------------------------------------------------------------------------------


def embedding_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Per-row cosine between two embedding matrices of the same texts: min, mean and 1st percentile."""
    a = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    b = other / np.maximum(np.linalg.norm(other, axis=1, keepdims=True), 1e-12)
    cos = np.sum(a * b, axis=1)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "p01_cosine": float(np.percentile(cos, 1)),
            "worst_index": int(np.argmin(cos))}


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists over the same items (1 = same order, -1 = reversed)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    n = len(a)
    if n < 2:
        return 1.0
    da = np.sign(a[:, None] - a[None, :])[np.triu_indices(n, 1)]
    db = np.sign(b[:, None] - b[None, :])[np.triu_indices(n, 1)]
    concordant_minus_discordant = float(np.sum(da * db))
    denom = math.sqrt(float(np.count_nonzero(da)) * float(np.count_nonzero(db)))
    return concordant_minus_discordant / denom if denom else 1.0


def top_k_overlap(x: Sequence[float], y: Sequence[float], k: int = 10) -> float:
    """Share of the top-k items by `x` that are also in the top-k by `y`."""
    k = min(k, len(x))
    if k == 0:
        return 1.0
    top_x = set(np.argsort(-np.asarray(x), kind="stable")[:k].tolist())
    top_y = set(np.argsort(-np.asarray(y), kind="stable")[:k].tolist())
    return len(top_x & top_y) / k


def ranking_agreement(reference: Sequence[Sequence[float]], other: Sequence[Sequence[float]], k: int = 10) -> dict[str, float]:
    """Mean and min top-k overlap and Kendall tau over several questions' candidate scores."""
    overlaps = [top_k_overlap(r, o, k) for r, o in zip(reference, other)]
    taus = [kendall_tau(r, o) for r, o in zip(reference, other)]
    return {"top10_overlap_mean": float(np.mean(overlaps)), "top10_overlap_min": float(np.min(overlaps)),
            "kendall_tau_mean": float(np.mean(taus)), "kendall_tau_min": float(np.min(taus)), "questions": len(taus)}


def judge_embedder(metrics: dict[str, float], min_cosine: float = EMBED_MIN_COSINE) -> tuple[bool, str]:
    """Pass when every probe embedding is within `min_cosine` of fp32; the reason names the value."""
    value = metrics["min_cosine"]
    if value >= min_cosine:
        return True, f"min cosine to fp32 {value:.5f} >= {min_cosine}"
    return False, (f"min cosine to fp32 {value:.5f} < {min_cosine} (mean {metrics['mean_cosine']:.5f}); "
                   "its vectors disagree with fp32 beyond the guard")


def judge_reranker(metrics: dict[str, float], min_overlap: float = RERANK_MIN_TOP10_OVERLAP,
                   min_tau: float = RERANK_MIN_KENDALL_TAU) -> tuple[bool, str]:
    """Pass when top-10 overlap and Kendall tau with fp32 (means over questions) reach the thresholds."""
    overlap, tau = metrics["top10_overlap_mean"], metrics["kendall_tau_mean"]
    failures = []
    if overlap < min_overlap:
        failures.append(f"top-10 overlap with fp32 {overlap:.3f} < {min_overlap}")
    if tau < min_tau:
        failures.append(f"Kendall tau with fp32 {tau:.3f} < {min_tau}")
    if failures:
        return False, "; ".join(failures) + "; its ranking disagrees with fp32 beyond the guard"
    return True, f"top-10 overlap {overlap:.3f} >= {min_overlap}, Kendall tau {tau:.3f} >= {min_tau}"


# --------------------------------------------------------------------------------------------------
# probing
# --------------------------------------------------------------------------------------------------


def probe_backends(role: str, backends: dict[str, Any], texts: Sequence[str] | None = None,
                   questions: Sequence[tuple[str, Sequence[str]]] | None = None, batch_size: int = 32,
                   queries: Sequence[str] | None = None) -> ProbeReport:
    """Run every backend on the probe set (interleaved), judge each against `torch-fp32`, pick the fastest passing.

    `backends` maps a name to an object with `encode` (embedder) or `predict` (reranker); it must hold
    `torch-fp32`, the reference. Any extra name (a deliberately bad wrapper in tests) is judged the same way.
    For the embedder, `queries` (default: the probe's questions) are also embedded one per call to time
    single-query latency, which picks `chosen_query`.
    """
    if REFERENCE not in backends:
        raise ValueError(f"probing needs the {REFERENCE} reference backend among {sorted(backends)}")
    from rag.backends import probe_data

    names = list(backends)
    seconds = dict.fromkeys(names, 0.0)
    if role == "embedder":
        texts = list(texts if texts is not None else probe_data.embedding_texts())
        outputs: dict[str, list[np.ndarray]] = {n: [] for n in names}
        # Interleave per batch, rotating who goes first, so machine load hits every backend alike.
        for i, start in enumerate(range(0, len(texts), batch_size)):
            batch = texts[start:start + batch_size]
            for name in names[i % len(names):] + names[:i % len(names)]:
                t0 = time.perf_counter()
                outputs[name].append(np.asarray(backends[name].encode(batch, batch_size=batch_size), dtype=np.float32))
                seconds[name] += time.perf_counter() - t0
        vectors = {n: np.concatenate(v) for n, v in outputs.items()}
        results = {}
        for name in names:
            metrics = embedding_agreement(vectors[REFERENCE], vectors[name])
            passed, reason = judge_embedder(metrics)
            results[name] = GuardResult(name, role, passed, reason, metrics, seconds[name])
        pairwise = {a: {b: embedding_agreement(vectors[a], vectors[b])["min_cosine"] for b in names} for a in names}
        size = len(texts)
        query_seconds = _time_single_queries(backends, names, list(queries if queries is not None
                                                                    else probe_data.EMBED_QUERIES))
        for name in names:
            results[name].query_seconds = query_seconds[name]
            results[name].query_ratio_to_fp32 = query_seconds[name] / max(query_seconds[REFERENCE], 1e-9)
    elif role == "reranker":
        questions = list(questions if questions is not None else probe_data.rerank_questions())
        scores: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for i, (question, passages) in enumerate(questions):
            pairs = [(question, p) for p in passages]
            for name in names[i % len(names):] + names[:i % len(names)]:
                t0 = time.perf_counter()
                scores[name].append(np.asarray(backends[name].predict(pairs, batch_size=batch_size), dtype=np.float32).ravel())
                seconds[name] += time.perf_counter() - t0
        results = {}
        for name in names:
            metrics = ranking_agreement(scores[REFERENCE], scores[name])
            passed, reason = judge_reranker(metrics)
            results[name] = GuardResult(name, role, passed, reason, metrics, seconds[name])
        pairwise = {}
        size = sum(len(p) for _, p in questions)
    else:
        raise ValueError(f"role must be 'embedder' or 'reranker', got {role!r}")
    for result in results.values():
        result.ratio_to_fp32 = result.seconds / max(seconds[REFERENCE], 1e-9)
    chosen = select_fastest(results)
    chosen_query = select_fastest(results, by="query_seconds") if role == "embedder" else ""
    return ProbeReport(role=role, chosen=chosen, results=results, pairwise_min_cosine=pairwise, probe_size=size,
                       chosen_query=chosen_query)


def _time_single_queries(backends: dict[str, Any], names: list[str], queries: list[str]) -> dict[str, float]:
    """Seconds per backend to embed `queries` one per call, interleaved with rotation (after one warm-up call
    each, so first-call allocations do not count)."""
    seconds = dict.fromkeys(names, 0.0)
    for name in names:
        backends[name].encode(queries[:1], batch_size=1)
    for i, query in enumerate(queries):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            backends[name].encode([query], batch_size=1)
            seconds[name] += time.perf_counter() - t0
    return seconds


def select_fastest(results: dict[str, GuardResult], by: str = "seconds") -> str:
    """The passing backend with the least probe time (`seconds`, or `query_seconds` for single queries);
    fp32 always passes against itself."""
    passing = [r for r in results.values() if r.passed]
    if not passing:
        return REFERENCE
    return min(passing, key=lambda r: getattr(r, by)).backend


# --------------------------------------------------------------------------------------------------
# auto: probe once, remember
# --------------------------------------------------------------------------------------------------


def model_files_key(model_path: str) -> str:
    """Hash of a local model folder's files (names, sizes, contents), or of the Hub name."""
    digest = hashlib.blake2b(digest_size=10)
    path = Path(os.path.expanduser(model_path))
    digest.update(str(path.resolve() if path.exists() else model_path).encode())
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(str(file.stat().st_size).encode())
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def cpu_signature() -> str:
    """What makes a speed ranking valid: CPU model, the instruction sets that matter, core count."""
    model_name = platform.processor()
    for line in cpuinfo_text().splitlines():
        if line.startswith("model name") and not model_name:
            model_name = line.split(":", 1)[1].strip()
            break
    have = cpu_flags()
    flags = ",".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in have)
    return f"{model_name}|{flags}|{os.cpu_count()}"


def choices_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir).expanduser() / CHOICES_FILE


def remembered_choice(state_dir: str | os.PathLike[str], role: str, model_path: str) -> ProbeReport | None:
    """The probe report saved for this role, model files and CPU, or None."""
    return remembered_report(state_dir, _choice_key(role, model_path))


def remembered_report(state_dir: str | os.PathLike[str], key: str) -> ProbeReport | None:
    """The probe report saved under `key` in the choices file, if it was measured on this CPU; else None."""
    try:
        entry = json.loads(choices_path(state_dir).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not entry or entry.get("cpu") != cpu_signature():
        return None
    try:
        return ProbeReport.from_dict(entry["report"])
    except (KeyError, TypeError):
        return None


def remember_choice(state_dir: str | os.PathLike[str], role: str, model_path: str, report: ProbeReport) -> Path:
    """Save a probe report (atomic replace) so later processes skip the probe."""
    return remember_report(state_dir, _choice_key(role, model_path), role, model_path, report)


def remember_report(state_dir: str | os.PathLike[str], key: str, role: str, model_path: str,
                    report: ProbeReport) -> Path:
    """Save `report` under `key` in the choices file (atomic replace), stamped with this CPU and the time."""
    path = choices_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data[key] = {"role": role, "model": str(model_path), "cpu": cpu_signature(),
                 "probed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "report": report.to_dict()}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _choice_key(role: str, model_path: str) -> str:
    return f"{role}:{model_files_key(model_path)}"


def resolve_backend(kind: str, model_path: str, role: str, state_dir: str | os.PathLike[str], model: Any = None,
                    candidates: Iterable[str] = BACKENDS, extra: dict[str, Any] | None = None,
                    probe_texts: Sequence[str] | None = None,
                    probe_questions: Sequence[tuple[str, Sequence[str]]] | None = None) -> tuple[Any, ProbeReport | None]:
    """The backend for a setting: a named kind directly, or for `auto` the remembered/probed fastest passing one.

    Returns (backend, probe report or None). The report is what `rag stats` can show and what a collection's
    `vectors_compatible` check consults. `extra` adds more candidate backends by name (tests use it);
    `probe_texts` / `probe_questions` replace the built-in probe set (smaller ones make tests fast).
    """
    cache_dir = default_cache_dir(state_dir)
    if model is None:
        model = load_model(model_path, role)
    if kind != "auto":
        report = remembered_choice(state_dir, role, model_path)
        return _with_report(load_backend(kind, model_path, role, cache_dir, model=model), report), report
    report = remembered_choice(state_dir, role, model_path)
    if report is not None and report.chosen in BACKENDS:
        try:
            return _with_report(load_backend(report.chosen, model_path, role, cache_dir, model=model), report), report
        except Exception as exc:  # a deleted cache or a broken runtime: fall through to a fresh probe
            log.warning("remembered %s backend %s no longer loads (%s); probing again", role, report.chosen, exc)
    backends: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    skip = unusable_backends()
    for name in candidates:
        if name in skip:
            reasons[name] = skip[name]
            continue
        try:
            backends[name] = load_backend(name, model_path, role, cache_dir, model=model)
        except Exception as exc:  # e.g. onnxruntime missing: the backend is not a candidate, and we say why
            reasons[name] = f"could not load: {type(exc).__name__}: {exc}"
    backends.update(extra or {})
    report = probe_backends(role, backends, texts=probe_texts, questions=probe_questions)
    for name, reason in reasons.items():
        report.results[name] = GuardResult(name, role, False, reason)
    log.info("%s backend probe: chose %s (%s)", role, report.chosen,
             ", ".join(f"{n} {r.ratio_to_fp32:.2f}x {'ok' if r.passed else 'REJECTED'}" for n, r in report.results.items()))
    remember_choice(state_dir, role, model_path, report)
    chosen = backends.get(report.chosen) or load_backend(REFERENCE, model_path, role, cache_dir, model=model)
    return _with_report(chosen, report), report


def resolve_query_backend(kind: str, batch_backend: Any, report: ProbeReport | None, model_path: str,
                          state_dir: str | os.PathLike[str], model: Any = None) -> Any:
    """The backend for single queries beside `batch_backend` (what `resolve_backend` returned for the embedder).

    Only `auto` may split the two uses: with a named backend, or a probe that timed no queries, or a query
    choice equal to the batch one, it is `batch_backend` itself. A query backend that fails to load falls back
    to `batch_backend` with a warning (queries still work, only slower).
    """
    batch_kind = getattr(batch_backend, "kind", REFERENCE)
    if kind != "auto" or report is None or report.query_backend in ("", batch_kind) or report.query_backend not in BACKENDS:
        return batch_backend
    try:
        query = load_backend(report.query_backend, model_path, "embedder", default_cache_dir(state_dir),
                             model=model if model is not None else getattr(batch_backend, "base_model", None))
    except Exception as exc:  # a deleted export or a broken runtime: keep embedding queries with the batch backend
        log.warning("query backend %s no longer loads (%s); queries use %s", report.query_backend, exc, batch_kind)
        return batch_backend
    return _with_report(query, report)


def _with_report(backend: Any, report: ProbeReport | None) -> Any:
    """Attach the probe report to the backend (`backend.report`): a collection's vector check consults it."""
    try:
        backend.report = report
    except AttributeError:  # an object without instance attributes (only test doubles): nothing to attach to
        pass
    return backend


# --------------------------------------------------------------------------------------------------
# collections: may vectors from two backends live in one collection?
# --------------------------------------------------------------------------------------------------


def measured_min_cosine(recorded: str, current: str, guard_results: ProbeReport | dict[str, Any] | None) -> float | None:
    """The probe's min cosine between two backends' vectors of the same texts, or None when nothing measures it.

    The pairwise value when the probe ran both; otherwise a lower bound from each one's cosine to fp32
    (angles add: cos(a1 + a2)); None when either backend is missing from the report.
    """
    if guard_results is None:
        return None
    report = guard_results if isinstance(guard_results, ProbeReport) else ProbeReport.from_dict(guard_results)
    if recorded == current:
        return 1.0
    pairwise = report.pairwise_min_cosine.get(recorded, {}).get(current)
    if pairwise is None:
        pairwise = report.pairwise_min_cosine.get(current, {}).get(recorded)
    if pairwise is not None:
        return float(pairwise)
    to_fp32 = []
    for name in (recorded, current):
        if name == REFERENCE:
            to_fp32.append(1.0)
        elif name in report.results and "min_cosine" in report.results[name].metrics:
            to_fp32.append(report.results[name].metrics["min_cosine"])
    if len(to_fp32) < 2:
        return None
    angle = sum(math.acos(max(-1.0, min(1.0, c))) for c in to_fp32)
    return math.cos(min(angle, math.pi))


def check_vectors_compatible(recorded_backend: str | None, current_backend: str,
                             guard_results: ProbeReport | dict[str, Any] | None,
                             min_cosine: float = EMBED_MIN_COSINE) -> tuple[bool, str]:
    """Whether `current_backend` may add to / query a collection whose vectors came from `recorded_backend`.

    Same backend: yes. A collection that recorded none predates backends and was built by torch-fp32.
    Otherwise the probe's measured pairwise min cosine between the two must reach `min_cosine`; without a
    pairwise value, the bound from each backend's cosine to fp32 (angles add: cos(a1 + a2)) must. No guard
    results at all: refused, since nothing shows the vectors agree.
    """
    recorded = recorded_backend or REFERENCE
    if recorded == current_backend:
        return True, f"same backend {recorded}"
    if guard_results is None:
        return False, (f"collection vectors came from {recorded}, this process embeds with {current_backend}, and no "
                       "guard measurement compares them; re-embed or set embed_backend to " + recorded)
    measured = measured_min_cosine(recorded, current_backend, guard_results)
    if measured is None:
        return False, f"no guard measurement for {recorded} vs {current_backend}; re-embed or set embed_backend to {recorded}"
    if measured >= min_cosine:
        return True, f"{recorded} and {current_backend} vectors agree (min cosine {measured:.5f} >= {min_cosine})"
    return False, (f"collection vectors came from {recorded}; {current_backend} vectors disagree with them "
                   f"(min cosine {measured:.5f} < {min_cosine}); set embed_backend to {recorded} or re-ingest")


def vectors_compatible(recorded_backend: str | None, current_backend: str,
                       guard_results: ProbeReport | dict[str, Any] | None, min_cosine: float = EMBED_MIN_COSINE) -> bool:
    """True when the two backends' vectors agree within the guard (see `check_vectors_compatible` for the reason)."""
    return check_vectors_compatible(recorded_backend, current_backend, guard_results, min_cosine)[0]
