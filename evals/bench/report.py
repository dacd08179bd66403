"""The `rag bench` report: the issue's targets with measured values, and the Markdown tables."""

from __future__ import annotations

from typing import Any

# Issue 18's scale targets: the ACL-filtered hybrid query and the dense leg's recall against exact search.
TARGET_HYBRID_P50_MS = 15.0
TARGET_DENSE_RECALL = 0.95


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured value and whether it is met (None = not measured)."""
    out: dict[str, Any] = {}
    ratio = result.get("ingest", {}).get("ratio_to_model_bound")
    out["ingest_ratio_to_model_bound"] = {"target": ">= 0.85", "value": ratio, "met": None if ratio is None else ratio >= 0.85}
    q = result.get("query", {})
    share = q.get("rerank", {}).get("non_inference_share")
    out["rerank_non_inference_share"] = {"target": "<= 0.10", "at_chunks": q.get("collection", {}).get("real_chunks", 0)
                                         + q.get("collection", {}).get("synthetic_chunks", 0),
                                         "value": share, "met": None if share is None else share <= 0.10}
    base = result.get("baseline", {})
    cran = base.get("cranfield", {})
    scale_base = base.get("at_scale") or {}
    # Both modes are reported: rerank-mode quality only means something with a trained cross-encoder
    # (on machines without the Hub the test cross-encoder has an untrained head), and at scale the
    # shared cross-encoder's inference dominates rerank-mode latency in both systems alike.
    for mode in ("hybrid", "rerank"):
        delta = cran.get(mode, {}).get("ndcg_delta")
        out[f"ndcg_vs_langchain_{mode}"] = {"target": ">= 0 (ours - LangChain)", "mode": mode, "value": delta,
                                            "met": None if delta is None else delta >= -1e-9}
    for mode in ("hybrid", "rerank"):
        speed = scale_base.get(mode, {}).get("p50_speedup")
        out[f"p50_speedup_vs_langchain_{mode}"] = {"target": ">= 2.0", "mode": mode,
                                                   "at_chunks": scale_base.get("chunks"), "value": speed,
                                                   "met": None if speed is None else speed >= 2.0}
    edge = result.get("scale", {}).get("edge", [])
    biggest = max(edge, key=lambda r: r["chunks"]) if edge else None
    p50 = biggest["hybrid_ms"]["p50"] if biggest else None
    at_million = bool(biggest and biggest["chunks"] >= 1_000_000)
    out["hybrid_p50_ms_largest_edge"] = {"target": f"<= {TARGET_HYBRID_P50_MS:g} ms at 1,000,000 (ACL-filtered)",
                                         "at_chunks": biggest["chunks"] if biggest else None, "value": p50,
                                         "met": (p50 <= TARGET_HYBRID_P50_MS) if at_million else None}
    recall = ((biggest or {}).get("dense_recall") or {}).get("recall_at_10")
    out["dense_recall_at_10_largest_edge"] = {"target": f">= {TARGET_DENSE_RECALL:g} against exact search at 1,000,000",
                                              "at_chunks": biggest["chunks"] if biggest else None, "value": recall,
                                              "met": (recall >= TARGET_DENSE_RECALL) if at_million and recall is not None else None}
    serve = result.get("serve")
    if serve:  # only when the serve part ran (the keys above are the default parts' contract)
        o = serve.get("overhead", {})
        # The direct measure: API wall time minus the server's own timings_ms.total of the same request.
        # The difference of the two p50s (in-process vs API, ~50-200 ms each on 2 shared cores) is reported
        # beside it, but load noise swamps a 5 ms effect there, even with alternating blocks.
        over = o.get("api_minus_server_total_ms", {}).get("p50") if o.get("api_minus_server_total_ms", {}).get("n") else None
        out["serve_api_overhead_p50_ms_hybrid"] = {"target": "<= 5 ms", "value": over,
                                                   "difference_of_p50s_ms": o.get("overhead_p50_ms"),
                                                   "met": None if over is None else over <= 5.0}
        load = serve.get("ingest_load", {}).get("p95_ratio")
        out["serve_p95_during_ingest_ratio"] = {"target": "<= 3x idle p95", "value": load,
                                                "met": None if load is None else load <= 3.0}
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(r: dict[str, Any]) -> str:
    """The human report: one table per part plus the targets."""
    out = [f"# rag bench ({'quick' if r['config']['quick'] else 'default'}; {r['machine']['cpus']} CPUs, "
           f"load {r['machine']['load_avg_at_start'][0]:.1f} at start; {r.get('seconds', 0):.0f} s)", ""]
    ing = r.get("ingest")
    if ing:
        out += ["## 1. Ingest", f"{ing['chunks']} chunks from {len(ing['files'])} SQuAD docs ({ing['kb']} KB), "
                f"{ing['mean_tokens_per_chunk']} tokens/chunk, batch {ing['batch_size']}", "",
                _table(["", "seconds", "chunks/s"],
                       [["end-to-end Pipeline.ingest", ing["end_to_end_s"], ing["end_to_end_chunks_per_s"]],
                        ["raw model.encode (model-bound)", ing["model_bound_s"], ing["model_bound_chunks_per_s"]]]),
                "", f"ratio to model-bound: **{_fmt(ing['ratio_to_model_bound'])}**", "",
                _table(["stage", "seconds", "share of end-to-end"],
                       [[k, v, ing["share_of_end_to_end"].get(k)] for k, v in ing["timings_s"].items()]), ""]
    q = r.get("query")
    if q:
        coll = q["collection"]
        out += ["## 2. Query stages", f"{coll['real_chunks']} real + {coll['synthetic_chunks']} synthetic chunks", ""]
        rows = []
        for mode in ("hybrid", "rerank"):
            if mode in q:
                st = q[mode]["stages_ms"]
                rows.append([mode, q[mode]["queries"]] + [f"{st[s]['p50']:.1f} / {st[s]['p95']:.1f}" if s in st else "–"
                                                          for s in ("embed", "search", "fuse", "rerank", "total")]
                            + [f"{100 * q[mode]['non_inference_share']:.1f}%"])
        out += [_table(["mode", "queries", "embed p50/p95 ms", "search", "fuse", "rerank", "total", "non-inference share"], rows), ""]
    b = r.get("baseline", {})
    if b.get("cranfield"):
        c = b["cranfield"]
        out += ["## 3. LangChain baseline", f"Cranfield: {c['docs']} docs, {c['queries']} queries", ""]
        rows = []
        for mode in ("hybrid", "rerank"):
            if mode in c:
                m = c[mode]
                rows.append([mode, m["ours"]["ndcg@10"], m["langchain"]["ndcg@10"], m["ours"]["latency_ms"]["p50"],
                             m["langchain"]["latency_ms"]["p50"], m["ours"]["latency_ms"]["p95"],
                             m["langchain"]["latency_ms"]["p95"], m["p50_speedup"]])
        out += [_table(["mode", "nDCG@10 ours", "nDCG@10 LC", "p50 ms ours", "p50 ms LC", "p95 ms ours", "p95 ms LC",
                        "p50 speedup"], rows), ""]
    if b.get("at_scale"):
        s = b["at_scale"]
        out += [f"At {s['chunks']:,} synthetic chunks ({s['queries']} queries; LangChain build "
                f"{s['langchain_build_s']}, +{s['langchain_rss_delta_mb']} MB RSS):", ""]
        rows = []
        for mode in ("hybrid", "rerank"):
            if mode in s:
                m = s[mode]
                rows.append([mode, m["ours"]["latency_ms"]["p50"], m["langchain"]["latency_ms"]["p50"],
                             m["ours"]["latency_ms"]["p95"], m["langchain"]["latency_ms"]["p95"], m["p50_speedup"]])
        out += [_table(["mode", "p50 ms ours", "p50 ms LC", "p95 ms ours", "p95 ms LC", "p50 speedup"], rows), ""]
    sc = r.get("scale")
    if sc:
        out += ["## 4. Scale", f"texts: {sc['texts']}; vectors: {sc['vectors']}; leg limit {r['settings']['leg_limit']}; "
                "latencies are store.search (+RRF for hybrid), ACL-filtered unless noted", ""]
        rows = []
        for row in sc["edge"] + sc["qdrant_local"] + sc["server"]:
            if "skipped" in row:
                rows.append([row["store"], row["chunks"], "skipped", "", "", "", "", "", "", row["skipped"]])
                continue
            un = row.get("unoptimized", {}).get("hybrid_ms", {}).get("p50")
            rows.append([row["store"], row["chunks"], f"{row['bm25_ms']['p50']:.1f} / {row['bm25_ms']['p95']:.1f}",
                         f"{row['dense_ms']['p50']:.1f} / {row['dense_ms']['p95']:.1f}",
                         f"{row['hybrid_ms']['p50']:.1f} / {row['hybrid_ms']['p95']:.1f}",
                         f"{row['hybrid_unfiltered_ms']['p50']:.1f}", un,
                         f"{row['rss_delta_mb']} ({row.get('rss_anon_delta_mb', '–')} anon)", row["disk_mb"],
                         f"load {row['load_s']} s, optimize {row.get('optimize_s', '–')} s"])
        out += [_table(["store", "chunks", "bm25 p50/p95 ms", "dense p50/p95", "hybrid p50/p95", "hybrid unfiltered p50",
                        "hybrid p50 before optimize", "RSS Δ MB (anonymous)", "disk MB", "build"], rows), ""]
    sv = r.get("serve")
    if sv:
        out += render_serve(sv)
    bk = r.get("backends")
    if bk:
        out += ["## 6. Model backends (ratios to the fp32 path, same run)", "", bk["markdown"], ""]
    t = r.get("targets")
    if t:
        out += ["## Targets", _table(["target", "wanted", "measured", "met"],
                                      [[k, v["target"], v["value"], {True: "yes", False: "NO", None: "not measured"}[v["met"]]]
                                       for k, v in t.items()]), ""]
    return "\n".join(out)



def render_serve(sv: dict[str, Any]) -> list[str]:
    """Markdown lines of the serve part (section 5)."""
    coll = sv["collection"]
    o = sv["overhead"]
    load = sv.get("load_avg", {})
    out = ["## 5. Serve (`rag serve` subprocess on 127.0.0.1 vs in-process)",
           f"{coll['real_chunks']} real + {coll['synthetic_chunks']} synthetic chunks; server start {sv['server_start_s']} s; "
           f"load average {load.get('start', [0])[0]:.1f} at start, {load.get('end', [0])[0]:.1f} at end; "
           f"per-key rate limit {'off' if not sv.get('server_rate_limit') else sv['server_rate_limit']}", "",
           f"Hybrid search, k={o['k']}, {o['queries_per_side']} queries per side in alternating blocks of {o['block']}:", "",
           _table(["", "p50 ms", "p95 ms", "mean ms"],
                  [["in-process Pipeline.search", o["inproc_ms"]["p50"], o["inproc_ms"]["p95"], o["inproc_ms"]["mean"]],
                   ["POST /api/v1/search", o["api_ms"]["p50"], o["api_ms"]["p95"], o["api_ms"]["mean"]],
                   ["overhead (API − in-process)", o["overhead_p50_ms"], o["overhead_p95_ms"], None],
                   ["paired per-question difference", o["paired_overhead_ms"]["p50"], o["paired_overhead_ms"]["p95"],
                    o["paired_overhead_ms"]["mean"]],
                   ["API wall − server's own total (HTTP + JSON)", o["api_minus_server_total_ms"]["p50"],
                    o["api_minus_server_total_ms"]["p95"], o["api_minus_server_total_ms"]["mean"]]]), ""]
    out += ["Concurrent clients (threads, one httpx client each, hybrid search):", "",
            _table(["clients", "requests", "completed", "errors", "throughput req/s", "p50 ms", "p95 ms"],
                   [[c["clients"], c["requests"], c["completed"], c["errors"], c["throughput_rps"],
                     c["latency_ms"]["p50"], c["latency_ms"]["p95"]] for c in sv["concurrency"]]), ""]
    il = sv["ingest_load"]
    job = il["job"]
    out += [f"Query latency while an ingest job runs (job {job['state']}, {job['files_done']}/{job['files_total']} files, "
            f"{job['chunks_added']} chunks, {job['seconds_queried']} s):", "",
            _table(["", "queries", "p50 ms", "p95 ms"],
                   [["idle", il["idle_ms"]["n"], il["idle_ms"]["p50"], il["idle_ms"]["p95"]],
                    ["during ingest", il["during_ingest_ms"]["n"], il["during_ingest_ms"]["p50"],
                     il["during_ingest_ms"]["p95"]]]),
            "", f"p95 during ingest / idle p95: **{_fmt(il['p95_ratio'])}** (target ≤ 3)", ""]
    a = sv["ask"]
    out += ["`rag ask` wall time:", "",
            _table(["", "runs", "median s", "values s"],
                   [["CLI through the warm server (--server)", len(a["warm_server_cli_s"]), a["warm_median_s"],
                     ", ".join(f"{v:.2f}" for v in a["warm_server_cli_s"])],
                    ["POST /api/v1/ask (no CLI start-up)", a["api_ask_ms"]["n"],
                     a["api_ask_ms"]["p50"] / 1000.0 if a["api_ask_ms"]["n"] else None, ""],
                    ["cold CLI (--no-server)", len(a["cold_cli_s"]), a["cold_median_s"],
                     ", ".join(f"{v:.2f}" for v in a["cold_cli_s"])]]),
            "", f"cold / warm: **{_fmt(a['cold_over_warm'])}×**", ""]
    return out
