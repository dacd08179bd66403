"""`rag bench` on tiny sizes: every part runs for real (models, Qdrant Edge, LangChain recipe) and
reports positive figures in the documented JSON shape."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from evals import bench
from rag.errors import ConfigError


def test_parse_sizes_accepts_suffixes_and_rejects_junk():
    assert bench.parse_sizes("100k, 10k,1M") == [10_000, 100_000, 1_000_000]
    assert bench.parse_sizes(None) is None
    with pytest.raises(ConfigError, match="--sizes"):
        bench.parse_sizes("ten")
    with pytest.raises(ConfigError):
        bench.parse_sizes("0")


def test_vocabulary_sampling_follows_corpus_frequencies():
    vocab = bench.Vocabulary(["the the the the cat cat dog"])
    texts = vocab.sample_texts(200, np.random.default_rng(0), mean_words=50, min_words=40, max_words=60)
    words = " ".join(texts).split()
    assert all(40 <= len(t.split()) <= 60 for t in texts)
    share_the = words.count("the") / len(words)
    assert 0.5 < share_the < 0.65  # 4 of 7 occurrences
    assert set(words) == {"the", "cat", "dog"}


def test_stats_ms_percentiles():
    s = bench.stats_ms([float(i) for i in range(1, 101)])
    assert s["n"] == 100 and s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory, minilm_path, evaldata):
    from rag.config import Settings

    tmp = tmp_path_factory.mktemp("bench")
    settings = Settings(qdrant_path=str(tmp / "q"), state_dir=str(tmp / "s"), embed_model=minilm_path,
                        rerank_model=minilm_path, llm_provider="extractive", chunk_tokens=256,
                        chunk_overlap_tokens=16, rerank_top_m=3, leg_limit=20)
    cfg = bench.BenchConfig(sizes=[300], ingest_max_kb=1, ingest_max_chars=2000, query_pad_to=120,
                            hybrid_queries=3, rerank_queries=2, cranfield_queries=3, cranfield_rerank_queries=2,
                            cranfield_docs=12, baseline_scale_size=300, baseline_scale_queries=2, scale_queries=4,
                            scale_unoptimized_queries=2, local_mode_queries=2, quick=True)
    return bench.run_bench(settings, cfg, progress=lambda _m: None, workdir=tmp / "work")


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_bench_reports_every_part_with_positive_figures(tiny_result):
    r = tiny_result
    json.dumps(r)  # one JSON-able object

    ing = r["ingest"]
    assert ing["chunks"] >= 2
    for key in ("end_to_end_chunks_per_s", "model_bound_chunks_per_s", "ratio_to_model_bound"):
        assert _positive(ing[key]), key
    assert {"parse", "chunk", "embed", "bm25", "upsert"} <= set(ing["timings_s"])

    q = r["query"]
    assert q["collection"]["real_chunks"] + q["collection"]["synthetic_chunks"] == 120
    for mode in ("hybrid", "rerank"):
        stages = q[mode]["stages_ms"]
        assert _positive(stages["total"]["p50"]) and _positive(stages["embed"]["p50"])
        assert stages["total"]["p95"] >= stages["total"]["p50"]
        assert 0 < q[mode]["non_inference_share"] < 1
    assert _positive(q["rerank"]["stages_ms"]["rerank"]["p50"])

    cran = r["baseline"]["cranfield"]
    for mode in ("hybrid", "rerank"):
        for system in ("ours", "langchain"):
            assert 0 <= cran[mode][system]["ndcg@10"] <= 1
            assert _positive(cran[mode][system]["latency_ms"]["p50"])
        assert _positive(cran[mode]["p50_speedup"])
    # BM25 + dense fusion over Cranfield finds judged documents for these queries.
    assert cran["hybrid"]["ours"]["ndcg@10"] > 0

    at_scale = r["baseline"]["at_scale"]
    assert at_scale["chunks"] == 300 and _positive(at_scale["hybrid"]["p50_speedup"])

    scale = r["scale"]
    (edge,) = scale["edge"]
    (local,) = scale["qdrant_local"]
    for row in (edge, local):
        assert row["chunks"] == 300
        for leg in ("bm25_ms", "dense_ms", "hybrid_ms", "hybrid_unfiltered_ms"):
            assert _positive(row[leg]["p50"]), (row["store"], leg)
    assert _positive(edge["disk_mb"])
    assert set(r["targets"]) == {"ingest_ratio_to_model_bound", "rerank_non_inference_share",
                                 "ndcg_vs_langchain_hybrid", "ndcg_vs_langchain_rerank",
                                 "p50_speedup_vs_langchain_hybrid", "p50_speedup_vs_langchain_rerank",
                                 "hybrid_p50_ms_largest_edge"}
    assert r["targets"]["hybrid_p50_ms_largest_edge"]["met"] is None  # 1M not measured here


def test_main_prints_one_json_object_and_markdown_to_out(tiny_result, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "run_bench", lambda settings, cfg, **kw: tiny_result)
    out = tmp_path / "bench.md"
    args = argparse.Namespace(json=True, out=str(out), sizes="300", quick=True)
    assert bench.main(args, settings=None) == 0
    stdout = capsys.readouterr().out
    assert json.loads(stdout) == json.loads(json.dumps(tiny_result))
    md = out.read_text()
    assert "## 1. Ingest" in md and "## 4. Scale" in md and "| edge | 300 |" in md
