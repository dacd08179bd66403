"""Model backends: fp32/bf16/ONNX/int8 agree with fp32 within the guard, `auto` picks a passing backend and
remembers it, the guard refuses bad backends with the reason, cached ONNX exports load without re-exporting,
collections refuse vectors from a disagreeing backend, and the rerank token budget keeps the best window.

Real MiniLM throughout; each ONNX model is exported once per module (the probe sets are cut down to keep
the module fast on a shared 2-core machine)."""

from __future__ import annotations

import copy
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
    cpu_has_native_bf16,
    default_cache_dir,
    embedding_agreement,
    kendall_tau,
    load_backend,
    load_model,
    probe_backends,
    resolve_backend,
    top_k_overlap,
    unusable_backends,
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


BROKEN_INT8 = "onnx-int8-per-tensor"


@pytest.fixture(scope="module")
def broken_int8(minilm_path, st_model, embed_backends, state_dir):
    """A real, deliberately broken quantization: the same ONNX export, int8 with one scale per weight tensor
    (the recipe the product rejected: one outlier per matrix coarsens every other weight), run in ONNX Runtime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from rag.backends import OnnxBackend
    from rag.backends.runtime import _ort_session

    fp32_path = embed_backends["onnx-fp32"].onnx_path
    out = state_dir / "broken" / "model_int8_per_tensor.onnx"
    out.parent.mkdir(exist_ok=True)
    quantize_dynamic(str(fp32_path), str(out), weight_type=QuantType.QInt8, per_channel=False,
                     op_types_to_quantize=["MatMul", "Gather"])
    return OnnxBackend(st_model, "embedder", _ort_session(out, None), BROKEN_INT8, out, exported=True)


@pytest.fixture(scope="module")
def broken_report(embed_backends, broken_int8):
    """The guard's probe of fp32, int8 and the broken quantization (what a collection check consults)."""
    return probe_backends("embedder", {"torch-fp32": embed_backends["torch-fp32"], "onnx-int8": embed_backends["onnx-int8"],
                                       BROKEN_INT8: broken_int8}, texts=EMBED_PROBE)


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
    # A fresh process-like load: the model is read again from its files, offline, and the int8 file is reused.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr("rag.backends.runtime._export_onnx", lambda *a, **k: pytest.fail("exported again"))
    monkeypatch.setattr("rag.backends.runtime._quantize_int8", lambda *a, **k: pytest.fail("quantized again"))
    again = load_backend("onnx-int8", minilm_path, "embedder", default_cache_dir(state_dir))
    assert again.exported is False and again.onnx_path == path
    assert {p.name: p.stat().st_mtime_ns for p in path.parent.iterdir()} == mtimes
    np.testing.assert_allclose(again.encode(EMBED_PROBE[:3]), first.encode(EMBED_PROBE[:3]), atol=1e-5)


def test_auto_picks_the_fastest_passing_backend_refuses_bad_ones_and_remembers(minilm_path, st_model, embed_backends,
                                                                               broken_int8, state_dir, monkeypatch):
    fp32 = embed_backends["torch-fp32"]
    bad = {BROKEN_INT8: broken_int8, "truncated-8": TruncatingBackend(fp32)}
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
    assert report.results[BROKEN_INT8].metrics["min_cosine"] < EMBED_MIN_COSINE  # a real quantization, measured bad
    # bf16 is probed only where the CPU has it in hardware; elsewhere it is a candidate refused with the reason.
    if not cpu_has_native_bf16():
        assert not report.results["torch-bf16"].passed and "no hardware bf16" in report.results["torch-bf16"].reason
        assert report.chosen != "torch-bf16"

    saved = json.loads((state_dir / "model_backends.json").read_text())
    (entry,) = [e for e in saved.values() if e["role"] == "embedder"]
    assert entry["report"]["chosen"] == report.chosen
    assert entry["report"]["results"][BROKEN_INT8]["passed"] is False

    # Second time: the remembered choice, no probe.
    monkeypatch.setattr(guard_module, "probe_backends", lambda *a, **k: pytest.fail("probed again"))
    again, report2 = resolve_backend("auto", minilm_path, "embedder", state_dir, model=st_model)
    assert again.kind == report.chosen and report2.chosen == report.chosen

    # A collection built by fp32 accepts the chosen backend's vectors, refuses the broken ones, and says why.
    assert vectors_compatible("torch-fp32", report.chosen, report)
    assert vectors_compatible(None, report.chosen, report.to_dict())  # collections from before backends: fp32
    assert again.report is report2  # the loaded backend carries its report, for the collection check
    ok, reason = check_vectors_compatible("torch-fp32", BROKEN_INT8, report)
    assert not ok and "disagree" in reason and "embed_backend" in reason


def test_native_bf16_is_read_from_the_cpu_flags_and_gates_bf16_everywhere():
    from rag.tuning.reader import ReaderTrainConfig

    avx2 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n"
    assert not cpu_has_native_bf16(avx2)
    assert cpu_has_native_bf16(avx2.replace("f16c", "avx512f avx512_bf16"))
    assert cpu_has_native_bf16(avx2.replace("f16c", "amx_bf16 amx_tile"))
    assert not cpu_has_native_bf16("")
    native = cpu_has_native_bf16()
    assert ("torch-bf16" in unusable_backends()) is (not native)
    assert ReaderTrainConfig().bf16 is native  # reader training autocasts only where bf16 is real


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
    # A truncated model: the same weights and head with only the first of its six transformer layers.
    shallow = copy.deepcopy(model)
    shallow.model.bert.encoder.layer = shallow.model.bert.encoder.layer[:1]
    windower = PassageWindower(model.tokenizer, max_tokens=96)
    questions = [(q, windower.fit(q, passages)) for q, passages in probe_data.rerank_questions()[:2]]
    report = probe_backends("reranker", {"torch-fp32": fp32, "onnx-fp32": onnx, "truncated-8": TruncatingBackend(fp32),
                                         "one-layer": load_backend("torch-fp32", role="reranker", model=shallow)},
                            questions=questions)
    assert report.results["onnx-fp32"].passed, report.results["onnx-fp32"].reason
    assert report.results["onnx-fp32"].metrics["kendall_tau_mean"] > 0.99
    for bad in ("truncated-8", "one-layer"):
        assert not report.results[bad].passed
        assert "with fp32" in report.results[bad].reason and "beyond the guard" in report.results[bad].reason
    assert report.results["one-layer"].seconds < report.results["torch-fp32"].seconds  # faster, still refused
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
    assert Settings().embed_backend == "auto" and Settings().rerank_backend == "auto"
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


# --------------------------------------------------------------------------------------------------
# collections record their vectors' backend and refuse vectors that disagree; stats and the UI say so
# --------------------------------------------------------------------------------------------------


def _docs(root, *names):
    """A folder of small text files (one sentence set each), for real ingests."""
    folder = root / "docs"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.txt").write_text(f"{name.title()} notes. " + " ".join(EMBED_PROBE[:3]), encoding="utf-8")
    return folder


def _ingest(settings, embedder, folder):
    from ingest.sync import ingest_paths
    from rag.store import open_store

    store = open_store(settings)
    try:
        report = ingest_paths([folder], settings, store, embedder, progress=False)
        return report, store.info(), store.count()
    finally:
        store.close()


def test_a_collection_refuses_an_ingest_whose_backend_disagrees_and_accepts_one_that_agrees(
        tmp_path, make_settings, minilm_path, embedder, embed_backends, broken_int8, broken_report, monkeypatch):
    from rag.embedding import Embedder
    from rag.errors import ModelMismatchError

    settings = make_settings(tmp_path, collection="notes")
    folder = _docs(tmp_path, "alpha")
    report, info, points = _ingest(settings, embedder, folder)
    assert report.failed == 0 and info.embed_backend == "torch-fp32" and points > 0

    # The broken quantization, with the guard's measurement of it: refused before anything is written.
    monkeypatch.setattr(broken_int8, "report", broken_report, raising=False)
    broken = Embedder(broken_int8, minilm_path)
    assert broken.backend == BROKEN_INT8
    _docs(tmp_path, "beta")
    with pytest.raises(ModelMismatchError) as refused:
        _ingest(settings, broken, folder)
    message = str(refused.value)
    for part in ("'notes'", "torch-fp32", BROKEN_INT8, "min cosine", "RAG_EMBED_BACKEND=torch-fp32", "re-index"):
        assert part in message, (part, message)
    before = _ingest(settings, embedder, folder)[2]
    assert before > points  # fp32 still adds beta: nothing of it was written by the refused ingest

    # int8 (per channel), which the same probe measured within the guard of fp32: accepted.
    monkeypatch.setattr(embed_backends["onnx-int8"], "report", broken_report, raising=False)
    assert broken_report.pairwise_min_cosine["torch-fp32"]["onnx-int8"] >= EMBED_MIN_COSINE
    _docs(tmp_path, "gamma")
    report, info, after = _ingest(settings, Embedder(embed_backends["onnx-int8"], minilm_path), folder)
    assert report.failed == 0 and after > before and info.embed_backend == "torch-fp32"  # the record stays the creator's

    # Queries are held to the same rule: a query embedded by the broken backend would match garbage.
    from rag.pipeline import Pipeline

    with pytest.raises(ModelMismatchError, match=f"'notes'.*{BROKEN_INT8}"):
        pipeline = Pipeline(settings, embedder=broken)
        try:
            pipeline.search("alpha notes", k=3, mode="dense")
        finally:
            pipeline.close()
    agreeing = Pipeline(settings, embedder=Embedder(embed_backends["onnx-int8"], minilm_path))
    try:
        hits = agreeing.search("alpha notes", k=3, mode="hybrid").hits
    finally:
        agreeing.close()
    assert any(h.chunk.file_path.endswith("alpha.txt") for h in hits)


def test_auto_keeps_a_second_choice_for_single_queries_and_the_embedder_uses_it(
        tmp_path, make_settings, minilm_path, st_model, embed_backends, broken_int8, broken_report, state_dir):
    """The probe times single queries too; the embedder embeds queries with that choice and passages with the
    batch one; stats name both; a query backend whose vectors disagree with the collection's is refused."""
    from rag.backends import GuardResult, describe_backend, resolve_query_backend, select_fastest
    from rag.embedding import Embedder
    from rag.errors import ModelMismatchError

    report = probe_backends("embedder", {k: embed_backends[k] for k in ("torch-fp32", "onnx-fp32")},
                            texts=EMBED_PROBE[:8], queries=probe_data.EMBED_QUERIES[:6])
    for name in ("torch-fp32", "onnx-fp32"):
        assert report.results[name].query_seconds > 0
    assert report.chosen_query == select_fastest(report.results, by="query_seconds")
    # The choice rule, on fixed figures: batch speed and query latency can pick different backends, and a
    # refused backend is never picked, however fast.
    results = {"torch-fp32": GuardResult("torch-fp32", "embedder", True, "", seconds=1.0, query_seconds=0.30),
               "onnx-int8": GuardResult("onnx-int8", "embedder", True, "", seconds=0.5, query_seconds=0.20),
               "onnx-fp32": GuardResult("onnx-fp32", "embedder", True, "", seconds=0.9, query_seconds=0.10),
               "bad": GuardResult("bad", "embedder", False, "", seconds=0.1, query_seconds=0.01)}
    assert select_fastest(results) == "onnx-int8" and select_fastest(results, by="query_seconds") == "onnx-fp32"
    assert ProbeReport.from_dict(report.to_dict()).chosen_query == report.chosen_query
    assert ProbeReport.from_dict({"role": "embedder", "chosen": "onnx-int8", "results": {}}).query_backend == "onnx-int8"

    # A report whose batch choice is int8 and query choice ONNX fp32: `auto` loads both; named backends never split.
    split = ProbeReport.from_dict({**report.to_dict(), "chosen": "onnx-int8", "chosen_query": "onnx-fp32"})
    batch = embed_backends["onnx-int8"]
    query = resolve_query_backend("auto", batch, split, minilm_path, state_dir, model=st_model)
    assert query.kind == "onnx-fp32" and query.report is split
    assert resolve_query_backend("onnx-int8", batch, split, minilm_path, state_dir) is batch
    assert resolve_query_backend("auto", batch, None, minilm_path, state_dir) is batch
    embedder = Embedder(batch, minilm_path, query_model=query)
    assert (embedder.backend, embedder.query_backend) == ("onnx-int8", "onnx-fp32")
    text = "who discovered polonium?"
    np.testing.assert_allclose(embedder.embed_query(text), query.encode([text])[0], atol=1e-6)
    np.testing.assert_allclose(embedder.embed_passages([text])[0], batch.encode([text])[0], atol=1e-6)
    assert describe_backend("auto", minilm_path, "embedder", state_dir, loaded="onnx-int8",
                            loaded_query="onnx-fp32").startswith("onnx-int8, queries onnx-fp32 (auto:")

    # The collection check covers the query backend: fp32-built vectors, passages by int8 (agrees), queries by
    # the broken quantization (disagrees) -> refused, naming the query backend.
    settings = make_settings(tmp_path, collection="split")
    _ingest(settings, Embedder(embed_backends["torch-fp32"], minilm_path), _docs(tmp_path, "alpha"))
    batch_with_report = load_backend("onnx-int8", minilm_path, "embedder", default_cache_dir(state_dir), model=st_model)
    batch_with_report.report = broken_report
    mixed = Embedder(batch_with_report, minilm_path, query_model=broken_int8)
    from rag.pipeline import Pipeline

    pipeline = Pipeline(settings, embedder=mixed)
    try:
        with pytest.raises(ModelMismatchError, match=f"'split'.*{BROKEN_INT8}"):
            pipeline.search("alpha notes", k=3, mode="dense")
    finally:
        pipeline.close()


@pytest.mark.slow
def test_a_backend_never_compared_with_the_collections_is_measured_once_then_remembered(
        tmp_path, make_settings, minilm_path, embedder, embed_backends, monkeypatch):
    """bf16 set by name (no `auto` probe on record): the first ingest measures it against fp32 on the probe set."""
    from rag.backends import vectors as vectors_module
    from rag.embedding import Embedder

    settings = make_settings(tmp_path, collection="notes")
    folder = _docs(tmp_path, "alpha")
    _, _, before = _ingest(settings, embedder, folder)
    bf16 = Embedder(embed_backends["torch-bf16"], minilm_path)
    _docs(tmp_path, "beta")
    report, info, after = _ingest(settings, bf16, folder)
    assert report.failed == 0 and after > before and info.embed_backend == "torch-fp32"
    saved = json.loads((tmp_path / "state" / "model_backends.json").read_text())
    (measured,) = [e for e in saved.values() if e["role"] == "agreement"]
    assert measured["report"]["pairwise_min_cosine"]["torch-fp32"]["torch-bf16"] >= EMBED_MIN_COSINE
    assert measured["report"]["probe_size"] == len(probe_data.embedding_texts())
    # Remembered: the next bf16 ingest does not measure again.
    monkeypatch.setattr(vectors_module, "probe_backends", lambda *a, **k: pytest.fail("measured again"))
    _docs(tmp_path, "gamma")
    assert _ingest(settings, bf16, folder)[0].failed == 0


def test_a_collection_built_before_backends_works_as_fp32_and_still_refuses_disagreeing_vectors(
        tmp_path, make_settings, minilm_path, embedder, broken_int8, broken_report, monkeypatch):
    from rag.embedding import Embedder
    from rag.errors import ModelMismatchError
    from rag.pipeline import Pipeline

    settings = make_settings(tmp_path, collection="old")
    folder = _docs(tmp_path, "alpha")
    _ingest(settings, embedder, folder)
    meta = tmp_path / "qdrant" / "old" / "collection.json"  # the embedded store's record of the collection
    data = json.loads(meta.read_text())
    del data["embed_backend"]  # what a collection written before backends holds
    meta.write_text(json.dumps(data))

    _docs(tmp_path, "beta")
    report, info, _ = _ingest(settings, embedder, folder)
    assert report.failed == 0 and info.embed_backend is None  # still works, still unrecorded

    pipeline = Pipeline(settings, embedder=embedder)
    try:
        stats = pipeline.stats()
        hits = pipeline.search("alpha notes", k=3, mode="dense").hits
    finally:
        pipeline.close()
    assert stats["collection_vectors_backend"] == "torch-fp32 (not recorded: built before backends)"
    assert hits

    monkeypatch.setattr(broken_int8, "report", broken_report, raising=False)
    _docs(tmp_path, "gamma")
    with pytest.raises(ModelMismatchError, match="not recorded: built before backends.*onnx-int8-per-tensor"):
        _ingest(settings, Embedder(broken_int8, minilm_path), folder)


def test_stats_cli_and_ui_name_the_backends_in_use_and_the_collection_vectors_backend(
        tmp_path, make_settings, minilm_path, embedder, broken_report, monkeypatch, capsys):
    from rag.access import Caller, Role
    from rag.backends.guard import remember_choice
    from rag.cli import main
    from rag.pipeline import Pipeline
    from ui.context import UIContext
    from ui.settings_panel import models_markdown

    settings = make_settings(tmp_path, collection="shown", embed_backend="auto", rerank_backend="torch-bf16")
    # Before any probe: the setting, and that the first load probes; no collection yet.
    fresh = Pipeline(settings)
    try:
        before = fresh.model_backends()
    finally:
        fresh.close()
    assert before == {"embedder": "auto (not probed yet: the first model load measures the backends)",
                      "reranker": "torch-bf16", "collection_vectors": None}

    remember_choice(settings.state_dir, "embedder", minilm_path, broken_report)
    _ingest(settings, embedder, _docs(tmp_path, "alpha"))
    pipeline = Pipeline(settings)  # no model loaded: stats read the remembered probe and the collection record
    try:
        stats = pipeline.stats()
        markdown = models_markdown(UIContext(pipeline, settings, Caller("ui", ("public",), Role.EDITOR)),
                                   Caller("ui", ("public",), Role.EDITOR))
        assert pipeline.loaded_models()["embedder"] is None
    finally:
        pipeline.close()
    chosen = broken_report.chosen
    assert stats["embedder_backend"].startswith(f"{chosen} (auto: fastest passing the quality guard, probed ")
    assert f"refused by the quality guard: {BROKEN_INT8}" in stats["embedder_backend"]
    assert stats["reranker_backend"] == "torch-bf16" and stats["collection_vectors_backend"] == "torch-fp32"
    assert f"**Embedding backend:** `{stats['embedder_backend']}`" in markdown
    assert "**Reranker backend:** `torch-bf16`" in markdown and "**Collection vectors from:** `torch-fp32`" in markdown

    # A loaded model reports its own backend.
    loaded = Pipeline(settings, embedder=embedder)
    try:
        assert loaded.model_backends()["embedder"].startswith("torch-fp32 (auto")
    finally:
        loaded.close()

    for name, value in {"QDRANT_PATH": settings.qdrant_path, "STATE_DIR": settings.state_dir, "COLLECTION": "shown",
                        "EMBED_MODEL": minilm_path, "RERANK_MODEL": minilm_path, "EMBED_BACKEND": "auto",
                        "RERANK_BACKEND": "onnx-int8"}.items():
        monkeypatch.setenv(f"RAG_{name}", value)
    monkeypatch.chdir(tmp_path)
    assert main(["stats"]) == 0
    out = capsys.readouterr().out
    assert f"embedder_backend: {stats['embedder_backend']}" in out
    assert "reranker_backend: onnx-int8" in out and "collection_vectors_backend: torch-fp32" in out


def test_bench_targets_take_the_best_guard_passing_variant_and_say_when_a_target_is_missed():
    from evals.bench_backends import targets

    result = {
        "embedding": {"torch-fp32": {"chunks_per_s_ratio": 1.0, "query_p50_ratio": 1.0},
                      "onnx-int8": {"chunks_per_s_ratio": 2.1, "query_p50_ratio": 0.7},
                      "torch-bf16": {"chunks_per_s_ratio": 1.5, "query_p50_ratio": 0.5},
                      "broken": {"chunks_per_s_ratio": 3.0, "query_p50_ratio": 0.2}},
        "embedder_guard": {"results": {"torch-fp32": {"passed": True}, "onnx-int8": {"passed": True},
                                       "torch-bf16": {"passed": True}, "broken": {"passed": False}}},
        "rerank": {"torch-fp32 full": {"stage_ratio": 1.0, "top10_overlap": 1.0, "kendall_tau": 1.0, "ndcg10_vs_gold": 0.80},
                   "onnx-int8 budget128": {"stage_ratio": 0.3, "top10_overlap": 0.95, "kendall_tau": 0.93, "ndcg10_vs_gold": 0.79},
                   "onnx-int8 full": {"stage_ratio": 0.5, "top10_overlap": 1.0, "kendall_tau": 0.97, "ndcg10_vs_gold": 0.80},
                   "torch-bf16 budget128": {"stage_ratio": 0.1, "top10_overlap": 0.6, "kendall_tau": 0.5, "ndcg10_vs_gold": 0.5}},
        "reranker_guard": {"results": {"onnx-int8": {"passed": True}, "torch-bf16": {"passed": True}}},
        "rerank_m": 30, "rerank_questions": 8,
    }
    t = targets(result)
    assert t["ingest_chunks_per_s_ratio"] == {"variant": "onnx-int8", "value": 2.1, "target": ">= 1.8", "met": True}
    assert t["query_p50_ratio"]["variant"] == "torch-bf16" and t["query_p50_ratio"]["met"] is True
    # At the product's batch size a passing backend may be faster still (ratio to today's fp32 at batch 32);
    # a refused backend stays out there too.
    result["embedding_at_product_batch"] = {"batch": 16, "today_batch": 32, "backends": {
        "torch-fp32": {"chunks_per_s_ratio": 1.4}, "onnx-int8": {"chunks_per_s_ratio": 2.7},
        "broken": {"chunks_per_s_ratio": 4.0}}}
    assert targets(result)["ingest_chunks_per_s_ratio"] == {"variant": "onnx-int8 batch16", "value": 2.7,
                                                            "target": ">= 1.8", "met": True}
    del result["embedding_at_product_batch"]
    # The budgeted variants are faster but lose nDCG beyond 0.005: the fastest one within it is int8 full (2x, missed).
    speed, ndcg = t["rerank_stage_speedup"], t["rerank_ndcg10_delta"]
    assert speed["variant"] == ndcg["variant"] == "onnx-int8 full"
    assert speed["value"] == pytest.approx(2.0) and speed["met"] is False and ndcg["value"] == 0.0 and ndcg["met"]
    # A backend the reranker guard refused is never the answer, however fast and accurate.
    result["reranker_guard"]["results"]["onnx-int8"]["passed"] = False
    result["rerank"]["onnx-int8 budget128"]["ndcg10_vs_gold"] = 0.80
    assert targets(result)["rerank_stage_speedup"]["variant"] == "torch-fp32 full"
    # Allowed again, and now within the nDCG target: the budgeted int8 variant is the answer.
    result["reranker_guard"]["results"]["onnx-int8"]["passed"] = True
    assert targets(result)["rerank_stage_speedup"] == {"variant": "onnx-int8 budget128", "value": pytest.approx(1 / 0.3),
                                                       "target": ">= 2.5", "met": True, "m": 30}
