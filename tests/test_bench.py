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
    settings = Settings(embed_backend="torch-fp32", rerank_backend="torch-fp32", qdrant_path=str(tmp / "q"), state_dir=str(tmp / "s"), embed_model=minilm_path,
                        rerank_model=minilm_path, llm_provider="extractive", chunk_tokens=256,
                        chunk_overlap_tokens=16, rerank_top_m=3, leg_limit=20)
    cfg = bench.BenchConfig(sizes=[300], ingest_max_kb=1, ingest_max_chars=2000, query_pad_to=120,
                            hybrid_queries=3, rerank_queries=2, cranfield_queries=3, cranfield_rerank_queries=2,
                            cranfield_docs=12, baseline_scale_size=300, baseline_scale_queries=2, scale_queries=4,
                            scale_unoptimized_queries=2, local_mode_queries=2, recall_queries=3,
                            search_sweep=[{"hnsw_ef": 32}], sweep_queries=2, quick=True)
    return bench.run_bench(settings, cfg, progress=lambda _m: None, workdir=tmp / "work")


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow  # tiny_result runs the bench: ~75 s
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
    assert isinstance(edge["rss_anon_delta_mb"], float)  # Linux: the heap part of the RSS is reported beside it
    # the dense index as configured and read back, recall against exact search, the payloads-last path
    assert edge["index"] == {"quantization": "scalar", "hnsw_m": 16, "hnsw_ef_construct": 100, "hnsw_payload_m": None}
    # 300 points stay below the HNSW indexing threshold: the search scans and rescores, so it is exact
    assert edge["dense_recall"]["recall_at_10"] == 1.0
    assert _positive(edge["hybrid_all_payloads_ms"]["p50"]) and _positive(edge["exact_ms"]["p50"])
    assert edge["restricted_acl"]["acorn_on"]["queries"] == 3 and edge["search_sweep"][0]["change"] == {"hnsw_ef": 32}
    assert set(r["targets"]) == {"ingest_ratio_to_model_bound", "rerank_non_inference_share",
                                 "ndcg_vs_langchain_hybrid", "ndcg_vs_langchain_rerank",
                                 "p50_speedup_vs_langchain_hybrid", "p50_speedup_vs_langchain_rerank",
                                 "hybrid_p50_ms_largest_edge", "dense_recall_at_10_largest_edge"}
    assert r["targets"]["hybrid_p50_ms_largest_edge"]["met"] is None  # 1M not measured here
    assert r["targets"]["dense_recall_at_10_largest_edge"]["met"] is None
    assert r["targets"]["dense_recall_at_10_largest_edge"]["value"] == edge["dense_recall"]["recall_at_10"]


@pytest.mark.slow  # needs tiny_result (the ~75 s bench run)
def test_main_prints_one_json_object_and_markdown_to_out(tiny_result, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "run_bench", lambda settings, cfg, **kw: tiny_result)
    out = tmp_path / "bench.md"
    args = argparse.Namespace(json=True, out=str(out), sizes="300", quick=True)
    assert bench.main(args, settings=None) == 0
    stdout = capsys.readouterr().out
    assert json.loads(stdout) == json.loads(json.dumps(tiny_result))
    md = out.read_text()
    assert "## 1. Ingest" in md and "## 4. Scale" in md and "| edge | 300 |" in md


# -- the serve and backends parts (`rag bench --parts serve,backends`) ---------------------------------
def test_settings_env_reproduces_the_settings_in_a_subprocess(tmp_path, monkeypatch, minilm_path):
    """The server and CLI subprocesses of the serve part get the bench's settings through RAG_* variables."""
    from evals.bench.serve import settings_env
    from rag.config import Settings, load_settings

    settings = Settings(embed_backend="torch-fp32", rerank_backend="torch-fp32", qdrant_path=str(tmp_path / "q"), state_dir=str(tmp_path / "s"), embed_model=minilm_path,
                        rerank_model=minilm_path, llm_provider="extractive", collection="bench_serve",
                        default_acl=["public", "team"], leg_limit=33)
    env = settings_env(settings)
    assert env["RAG_COLLECTION"] == "bench_serve" and env["RAG_DEFAULT_ACL"] == "public,team"
    for name in [k for k in __import__("os").environ if k.startswith("RAG_")]:
        monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no rag.toml here
    loaded = load_settings()
    for field in ("qdrant_path", "state_dir", "embed_model", "rerank_model", "llm_provider", "collection",
                  "default_acl", "leg_limit", "rrf_k", "bm25_k1", "chunk_tokens"):
        assert getattr(loaded, field) == getattr(settings, field), field


def test_unknown_part_names_every_part():
    args = argparse.Namespace(json=True, out=None, sizes=None, quick=True, parts="serve,nope")
    with pytest.raises(ConfigError, match="nope.*serve, backends"):
        bench.main(args, settings=None)


def _tiny_settings(tmp, minilm_path):
    from rag.config import Settings

    return Settings(embed_backend="torch-fp32", rerank_backend="torch-fp32", qdrant_path=str(tmp / "q"), state_dir=str(tmp / "s"), embed_model=minilm_path,
                    rerank_model=minilm_path, llm_provider="extractive", chunk_tokens=256,
                    chunk_overlap_tokens=16, rerank_top_m=3, leg_limit=20)


@pytest.mark.slow  # starts `rag serve`, a `rag ask --server` and a cold `rag ask --no-server`: ~2-3 min
def test_serve_part_quick_reports_every_figure_from_its_recorded_times(tmp_path, minilm_path, evaldata):
    from evals.bench.measure import ratio, stats_ms
    from evals.bench.report import render_markdown
    from evals.bench.serve import ServeConfig

    scfg = ServeConfig(docs=1, pad_to=60, overhead_queries=4, block=2, concurrency=(1, 4, 16), requests_per_level=16,
                       idle_queries=4, ingest_docs=2, ingest_max_queries=50, ingest_max_s=60.0, ask_warm=1, ask_cold=1,
                       ingest_max_chars=3000)
    r = bench.run_bench(_tiny_settings(tmp_path, minilm_path), bench.BenchConfig.quick_config(), progress=lambda _m: None,
                        workdir=tmp_path / "work", parts=("serve",), serve_cfg=scfg)
    json.dumps(r, allow_nan=False)
    assert "ingest" not in r and "backends" not in r
    sv = r["serve"]
    assert sv["host"] == "127.0.0.1" and sv["server_start_s"] > 0 and sv["server_rate_limit"] == 0.0
    assert sv["collection"]["real_chunks"] + sv["collection"]["synthetic_chunks"] == 60

    o = sv["overhead"]
    assert o["queries_per_side"] == 4 and len(o["inproc_raw_ms"]) == len(o["api_raw_ms"]) == 4
    assert o["inproc_ms"] == stats_ms(o["inproc_raw_ms"]) and o["api_ms"] == stats_ms(o["api_raw_ms"])
    assert o["overhead_p50_ms"] == round(o["api_ms"]["p50"] - o["inproc_ms"]["p50"], 3)
    assert o["overhead_p95_ms"] == round(o["api_ms"]["p95"] - o["inproc_ms"]["p95"], 3)
    assert o["paired_overhead_ms"] == stats_ms([a - b for a, b in zip(o["api_raw_ms"], o["inproc_raw_ms"])])
    assert o["api_minus_server_total_ms"]["n"] == 4 and o["api_minus_server_total_ms"]["p50"] > 0

    assert [c["clients"] for c in sv["concurrency"]] == [1, 4, 16]
    for c in sv["concurrency"]:
        assert (c["requests"], c["completed"], c["errors"], c["latency_ms"]["n"]) == (16, 16, 0, 16), c
        assert c["throughput_rps"] == round(16 / c["wall_s"], 2)

    il = sv["ingest_load"]
    assert il["idle_ms"] == stats_ms(il["idle_raw_ms"]) and il["idle_ms"]["n"] == 4
    assert il["during_ingest_ms"] == stats_ms(il["during_raw_ms"])
    assert len(il["during_raw_ms"]) <= 50
    assert il["job"]["state"] == "done" and il["job"]["files_total"] == il["job"]["files_done"] == 2
    assert il["p95_ratio"] == (ratio(il["during_ingest_ms"]["p95"], il["idle_ms"]["p95"]) if il["during_raw_ms"] else None)

    a = sv["ask"]
    assert len(a["warm_server_cli_s"]) == 1 and len(a["cold_cli_s"]) == 1 and a["api_ask_ms"]["n"] == 1
    assert a["warm_median_s"] == a["warm_server_cli_s"][0] and a["cold_median_s"] == a["cold_cli_s"][0]
    assert a["cold_over_warm"] == ratio(a["cold_median_s"], a["warm_median_s"])

    t = r["targets"]
    assert t["serve_api_overhead_p50_ms_hybrid"]["value"] == o["api_minus_server_total_ms"]["p50"]
    assert t["serve_api_overhead_p50_ms_hybrid"]["difference_of_p50s_ms"] == o["overhead_p50_ms"]
    assert t["serve_p95_during_ingest_ratio"]["value"] == il["p95_ratio"]
    md = render_markdown(r)
    assert "## 5. Serve" in md and "| 16 | 16 | 16 | 0 |" in md


@pytest.mark.slow  # exports and int8-quantizes the embedder and the cross-encoder to ONNX: ~1-2 min
def test_backends_part_quick_reports_ratios_to_fp32(tmp_path, minilm_path, evaldata):
    from evals.bench.backends import BackendsConfig
    from evals.bench.report import render_markdown
    from rag.backends import BACKENDS, unusable_backends

    bcfg = BackendsConfig(chunks=8, queries=2, rerank_questions=1, m=5)
    r = bench.run_bench(_tiny_settings(tmp_path, minilm_path), bench.BenchConfig.quick_config(), progress=lambda _m: None,
                        workdir=tmp_path / "work", parts=("backends",), backends_cfg=bcfg)
    json.dumps(r, allow_nan=False)
    b = r["backends"]
    assert b["config"] == {"chunks": 8, "queries": 2, "rerank_questions": 1, "m": 5}
    assert b["rerank_m"] == 5 and b["rerank_questions"] == 1
    kinds = [k for k in BACKENDS if k not in unusable_backends()]  # bf16 only where the CPU has it in hardware
    assert list(b["embedding"]) == kinds and b["skipped_backends"] == unusable_backends()
    fp32 = b["embedding"]["torch-fp32"]
    assert fp32["chunks_per_s_ratio"] == pytest.approx(1.0) and fp32["query_p50_ratio"] == pytest.approx(1.0)
    for name, v in b["embedding"].items():
        assert v["chunks_per_s_ratio"] == pytest.approx(v["chunks_per_s"] / fp32["chunks_per_s"], rel=1e-9), name
        assert v["query_p50_ratio"] == pytest.approx(v["query_p50_ms"] / fp32["query_p50_ms"], rel=1e-9), name
    at_batch = b["embedding_at_product_batch"]  # the settings' embed_batch_size (16), beside today's 32
    assert at_batch["batch"] == 16 and at_batch["today_batch"] == 32 and list(at_batch["backends"]) == kinds
    for name, v in at_batch["backends"].items():
        assert v["chunks_per_s_ratio"] == pytest.approx(v["chunks_per_s"] / fp32["chunks_per_s"], rel=1e-9), name
        same = at_batch["backends"]["torch-fp32"]["chunks_per_s"]
        assert v["ratio_same_batch"] == pytest.approx(v["chunks_per_s"] / same, rel=1e-9), name
    assert len(b["rerank"]) == len(kinds) * 3  # each backend on full passages and at budgets 192 and 128
    assert b["rerank"]["torch-fp32 full"]["stage_ratio"] == pytest.approx(1.0)
    rows = b["ratios_to_fp32"]
    assert len(rows) == len(b["embedding"]) + len(b["rerank"])
    for row in rows:
        src = b["embedding" if row["stage"] == "embed" else "rerank"][row["variant"]]
        key = "chunks_per_s_ratio" if row["stage"] == "embed" else "stage_ratio"
        assert row[key] == src[key]
    for role in ("embedder", "reranker"):  # auto's one-time cost: probed once, then the remembered choice loads
        auto = b["auto_first_load"][role]
        assert auto["chosen"] in kinds and auto["remembered_chosen"] == auto["chosen"]
        assert auto["remembered_s"] < auto["first_s"]
    md = render_markdown(r)
    assert "## 6. Model backends" in md and "| onnx-int8 |" in md and "`auto` on a user's first load" in md


def test_synthetic_bm25_gives_the_encoders_own_vectors():
    from evals.bench.data import SyntheticBM25
    from rag.lexical import BM25Encoder

    vocab = bench.Vocabulary(["The wings of the aircraft were running faster than 42 studies of running flows",
                              "a flow of fluid; the fluids' running flows"])
    encoder = BM25Encoder(avg_doc_len=12.0)
    fast = SyntheticBM25(encoder)
    texts = vocab.sample_texts(50, np.random.default_rng(3), mean_words=20, min_words=1, max_words=40) + ["", "the of a"]
    for text in texts:
        assert fast.encode_document(text) == encoder.encode_document(text), text
    with pytest.raises(ValueError, match="not one token"):
        fast.encode_document("wing-flow")


def test_topic_vectors_have_neighbours_random_ones_do_not():
    from evals.bench.data import vector_sampler

    rng = np.random.default_rng(0)
    nearest = {}
    for kind in ("topics", "random"):
        sample = vector_sampler(kind, 384, rng)
        corpus, queries = sample(3000, rng), sample(20, rng)
        assert np.allclose(np.linalg.norm(corpus, axis=1), 1.0, atol=1e-5)
        nearest[kind] = float(np.sort(queries @ corpus.T, axis=1)[:, -1].mean())
    assert nearest["topics"] > 0.45 and 0 < nearest["random"] < 0.3
    with pytest.raises(ConfigError, match="topics or random"):
        vector_sampler("gaussian", 8, rng)


def test_recall_against_exact_search_and_restricted_acl(tmp_path):
    from evals.bench.data import RESTRICTED_EVERY, RESTRICTED_LABEL, SyntheticCorpus, collection_info, fill_store
    from evals.bench.parts import QuerySet, dense_recall, exact_top, restricted_recall
    from rag.config import Settings
    from rag.lexical import BM25Encoder
    from rag.models import SearchFilter
    from rag.store import EdgeStore

    rng = np.random.default_rng(1)
    vocab = bench.Vocabulary(["wing lift drag plate flow shock boundary layer transition"])
    vecs = bench.random_unit_vectors(400, 16, rng)
    corpus = SyntheticCorpus(vocab.sample_texts(400, rng, mean_words=8, min_words=3, max_words=12), vecs)
    encoder = BM25Encoder(avg_doc_len=8.0)
    store = EdgeStore(tmp_path, "bench")
    store.create(collection_info("bench", "mini", 16, Settings(), 8.0))
    fill_store(store, corpus, encoder)
    # one synthetic file in RESTRICTED_EVERY (20 chunks each) carries the restricted label as well as "public"
    assert store.count(SearchFilter(acl=[RESTRICTED_LABEL])) == 20 * len(range(0, 20, RESTRICTED_EVERY)) == 80
    assert store.count(SearchFilter(acl=["public"])) == 400
    queries = QuerySet([v.tolist() for v in vecs[:5]], [encoder.encode_query("wing lift")] * 5)
    truth, exact_ms = exact_top(store, queries, 5)
    assert all(len(t) == 10 for t in truth) and exact_ms["n"] == 5
    assert all(str(i) for i in truth[0])
    assert dense_recall(store, queries, 20, truth)["recall_at_10"] == 1.0  # 400 points: scanned exactly
    wrong = [set(list(t)[:5]) | {"not-a-real-id-%d" % k for k in range(5)} for t in truth]
    assert dense_recall(store, queries, 20, wrong)["recall_at_10"] == 0.5
    restricted = restricted_recall(store, queries, 20, 3, lambda _m: None)
    assert restricted["acorn_on"]["recall_at_10"] == restricted["acorn_off"]["recall_at_10"] == 1.0
    assert store.index.acorn  # restored after measuring with ACORN off
    store.close()
