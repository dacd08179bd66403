"""Model backends: fp32/bf16/ONNX/int8 agree with fp32 within the guard, `auto` picks a passing backend and
remembers it, the guard refuses bad backends with the reason, cached ONNX exports load without re-exporting,
collections refuse vectors from a disagreeing backend, and the rerank token budget keeps the best window.

Real MiniLM throughout; each ONNX model is exported once per module (the probe sets are cut down to keep
the module fast on a shared 2-core machine)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.backends import (
    BACKENDS,
    EMBED_MIN_COSINE,
    PassageWindower,
    ProbeReport,
    check_backend_name,
    check_vectors_compatible,
    default_cache_dir,
    embedding_agreement,
    kendall_tau,
    load_backend,
    load_model,
    probe_backends,
    resolve_backend,
    top_k_overlap,
    vectors_compatible,
)
from rag.backends import guard as guard_module
from rag.backends import probe_data
from rag.errors import ConfigError

EMBED_PROBE = probe_data.embedding_texts(n_passages=12)[:12] + probe_data.EMBED_QUERIES[:4]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backend-state")


@pytest.fixture(scope="module")
def st_model(minilm_path):
    return load_model(minilm_path, "embedder")


@pytest.fixture(scope="module")
def embed_backends(minilm_path, st_model, state_dir):
    """All four embedder backends over one loaded model; exports land in the state dir's model cache."""
    cache = default_cache_dir(state_dir)
    return {kind: load_backend(kind, minilm_path, "embedder", cache, model=st_model) for kind in BACKENDS}


class PerturbedBackend:
    """A deliberately bad backend: fp32 vectors plus noise large enough to move them off fp32."""

    def __init__(self, inner, scale: float = 0.02) -> None:
        self.inner, self.scale = inner, scale

    def encode(self, texts, batch_size=32, **kwargs):
        vectors = self.inner.encode(texts, batch_size=batch_size)
        noise = np.random.default_rng(0).normal(0, self.scale, vectors.shape).astype(np.float32)
        out = vectors + noise
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class TruncatingBackend:
    """A deliberately bad (and fast) backend: only the first 8 words of every text (or passage) are seen."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def encode(self, texts, batch_size=32, **kwargs):
        return self.inner.encode([" ".join(t.split()[:8]) for t in texts], batch_size=batch_size)

    def predict(self, pairs, batch_size=32, **kwargs):
        return self.inner.predict([(q, " ".join(p.split()[:8])) for q, p in pairs], batch_size=batch_size)


def test_bf16_and_int8_embeddings_are_within_the_guard_of_fp32(embed_backends):
    vectors = {kind: backend.encode(EMBED_PROBE, batch_size=16) for kind, backend in embed_backends.items()}
    for kind, v in vectors.items():
        assert v.shape == (len(EMBED_PROBE), 384) and v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
    for kind in ("torch-bf16", "onnx-fp32", "onnx-int8"):
        metrics = embedding_agreement(vectors["torch-fp32"], vectors[kind])
        assert metrics["min_cosine"] >= EMBED_MIN_COSINE == 0.99, (kind, metrics)
    assert embedding_agreement(vectors["torch-fp32"], vectors["onnx-fp32"])["min_cosine"] > 0.9999


def test_cached_quantized_model_loads_offline_without_exporting_again(minilm_path, embed_backends, state_dir, monkeypatch):
    first = embed_backends["onnx-int8"]
    path = first.onnx_path
    assert path.is_file() and path.parent.parent == default_cache_dir(state_dir)
    mtimes = {p.name: p.stat().st_mtime_ns for p in path.parent.iterdir()}
    # A fresh process-like load: the model is read again from its files, offline (conftest sets HF_HUB_OFFLINE).
    monkeypatch.setattr("rag.backends.runtime._export_onnx", lambda *a, **k: pytest.fail("exported again"))
    monkeypatch.setattr("rag.backends.runtime._quantize_int8", lambda *a, **k: pytest.fail("quantized again"))
    again = load_backend("onnx-int8", minilm_path, "embedder", default_cache_dir(state_dir))
    assert again.exported is False and again.onnx_path == path
    assert {p.name: p.stat().st_mtime_ns for p in path.parent.iterdir()} == mtimes
    np.testing.assert_allclose(again.encode(EMBED_PROBE[:3]), first.encode(EMBED_PROBE[:3]), atol=1e-5)


def test_auto_picks_the_fastest_passing_backend_refuses_bad_ones_and_remembers(minilm_path, st_model, embed_backends,
                                                                               state_dir, monkeypatch):
    fp32 = embed_backends["torch-fp32"]
    bad = {"perturbed": PerturbedBackend(fp32), "truncated-8": TruncatingBackend(fp32)}
    backend, report = resolve_backend("auto", minilm_path, "embedder", state_dir, model=st_model,
                                      candidates=("torch-fp32", "torch-bf16", "onnx-int8"), extra=bad, probe_texts=EMBED_PROBE)
    assert report.chosen in BACKENDS and backend.kind == report.chosen
    assert report.results[report.chosen].passed
    passing = [r for r in report.results.values() if r.passed]
    assert report.results[report.chosen].seconds == min(r.seconds for r in passing)
    for name in bad:  # refused with the measured reason, even though truncation is the fastest of all
        assert not report.results[name].passed
        assert "min cosine to fp32" in report.results[name].reason and "< 0.99" in report.results[name].reason
    assert report.results["truncated-8"].metrics["min_cosine"] < 0.9

    saved = json.loads((state_dir / "model_backends.json").read_text())
    (entry,) = [e for e in saved.values() if e["role"] == "embedder"]
    assert entry["report"]["chosen"] == report.chosen
    assert entry["report"]["results"]["perturbed"]["passed"] is False

    # Second time: the remembered choice, no probe.
    monkeypatch.setattr(guard_module, "probe_backends", lambda *a, **k: pytest.fail("probed again"))
    again, report2 = resolve_backend("auto", minilm_path, "embedder", state_dir, model=st_model)
    assert again.kind == report.chosen and report2.chosen == report.chosen

    # A collection built by fp32 accepts the chosen backend's vectors, refuses the perturbed ones, and says why.
    assert vectors_compatible("torch-fp32", report.chosen, report)
    assert vectors_compatible(None, report.chosen, report.to_dict())  # collections from before backends: fp32
    ok, reason = check_vectors_compatible("torch-fp32", "perturbed", report)
    assert not ok and "disagree" in reason and "embed_backend" in reason


def test_vectors_compatible_uses_pairwise_values_or_the_angle_bound():
    report = ProbeReport(role="embedder", chosen="torch-bf16", results={}, pairwise_min_cosine={
        "torch-fp32": {"onnx-int8": 0.995, "torch-bf16": 0.9999}, "onnx-int8": {"torch-bf16": 0.985}})
    assert vectors_compatible("torch-fp32", "torch-fp32", None)
    assert vectors_compatible("torch-fp32", "onnx-int8", report)
    assert not vectors_compatible("onnx-int8", "torch-bf16", report)  # measured pair below the guard
    assert not vectors_compatible("torch-fp32", "onnx-int8", None)  # nothing measured: refuse
    bound_only = ProbeReport.from_dict({"role": "embedder", "chosen": "torch-fp32", "results": {
        "onnx-int8": {"backend": "onnx-int8", "role": "embedder", "passed": True, "reason": "", "metrics": {"min_cosine": 0.996}},
        "torch-bf16": {"backend": "torch-bf16", "role": "embedder", "passed": True, "reason": "", "metrics": {"min_cosine": 0.9999}}}})
    assert vectors_compatible("onnx-int8", "torch-bf16", bound_only)  # cos(acos .996 + acos .9999) > .99
    assert vectors_compatible("torch-fp32", "onnx-int8", bound_only)


def test_reranker_backends_export_the_loaded_head_and_the_guard_refuses_truncation(minilm_path, state_dir):
    """The cross-encoder head is random at every load: the ONNX export must come from this very instance."""
    model = load_model(minilm_path, "reranker")
    fp32 = load_backend("torch-fp32", minilm_path, "reranker", model=model)
    onnx = load_backend("onnx-fp32", minilm_path, "reranker", default_cache_dir(state_dir), model=model)
    windower = PassageWindower(model.tokenizer, max_tokens=96)
    questions = [(q, windower.fit(q, passages)) for q, passages in probe_data.rerank_questions()[:2]]
    report = probe_backends("reranker", {"torch-fp32": fp32, "onnx-fp32": onnx, "truncated-8": TruncatingBackend(fp32)},
                            questions=questions)
    assert report.results["onnx-fp32"].passed, report.results["onnx-fp32"].reason
    assert report.results["onnx-fp32"].metrics["kendall_tau_mean"] > 0.99
    assert not report.results["truncated-8"].passed
    assert "Kendall tau with fp32" in report.results["truncated-8"].reason
    assert report.chosen in ("torch-fp32", "onnx-fp32")
    scores = onnx.predict([(questions[0][0], questions[0][1][0])])
    assert scores.shape == (1,) and scores.dtype == np.float32


def test_passage_window_keeps_the_part_that_matches_the_question(st_model):
    windower = PassageWindower(st_model.tokenizer, max_tokens=48)
    filler = "The committee met on several occasions to discuss routine budget matters and schedules. " * 6
    answer = "Marie Curie discovered polonium and radium in Paris in 1898."
    passage = filler + answer + " " + filler
    (fitted,) = windower.fit("Who discovered polonium and radium?", [passage])
    assert "polonium" in fitted and "radium" in fitted
    n_query = len(st_model.tokenizer("Who discovered polonium and radium?", add_special_tokens=False)["input_ids"])
    assert len(st_model.tokenizer(fitted, add_special_tokens=False)["input_ids"]) + n_query + 3 <= 48 + 2
    short = "Paris is the capital of France."
    assert windower.fit("capital of France", [short]) == [short]
    (no_match,) = windower.fit("zzz qqq", [passage])  # nothing to match: the passage's start, as before
    assert passage.startswith(no_match) and len(no_match) < len(passage)


def test_agreement_measures_and_backend_names():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert top_k_overlap(list(range(20)), list(range(20)), k=10) == 1.0
    assert top_k_overlap(list(range(20)), list(range(20))[::-1], k=10) == 0.0
    assert check_backend_name(" ONNX-int8 ") == "onnx-int8" and check_backend_name("auto") == "auto"
    with pytest.raises(ConfigError, match="rerank_backend"):
        check_backend_name("tensorrt", "rerank_backend")
    with pytest.raises(ConfigError, match="cache directory"):
        load_backend("onnx-fp32", "unused", "embedder", cache_dir=None, model=object())


def test_embedder_and_reranker_take_a_backend_setting(minilm_path, state_dir, embed_backends):
    """The product's Embedder/Reranker run a backend from settings; torch-fp32 stays the default."""
    from rag.config import Settings, validate
    from rag.embedding import embedder_from_settings, load_embedder
    from rag.rerank import Reranker

    settings = Settings(embed_model=minilm_path, rerank_model=minilm_path, state_dir=str(state_dir),
                        embed_backend="onnx-int8", rerank_max_tokens=64)
    validate(settings)
    assert Settings().embed_backend == "torch-fp32" and Settings().rerank_max_tokens is None
    with pytest.raises(ConfigError, match="embed_backend"):
        validate(Settings(embed_backend="fp8"))
    embedder = embedder_from_settings(settings)
    assert embedder.backend == "onnx-int8" and embedder.dimension == 384
    reference = load_embedder(minilm_path)
    assert reference.backend == "torch-fp32"
    texts = EMBED_PROBE[:4]
    assert embedding_agreement(reference.embed_passages(texts), embedder.embed_passages(texts))["min_cosine"] >= 0.99
    assert float(embedder.embed_query("who built it?") @ reference.embed_query("who built it?")) >= 0.99

    reranker = Reranker(minilm_path, backend="torch-bf16", state_dir=str(state_dir), max_tokens=64)
    assert reranker.backend == "torch-bf16" and reranker.max_tokens == 64
    scores = reranker.score("Who discovered polonium?", [EMBED_PROBE[0], "Marie Curie discovered polonium."])
    assert len(scores) == 2 and all(np.isfinite(scores))
