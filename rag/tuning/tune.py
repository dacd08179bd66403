"""`rag tune`: adapt the retriever and the reranker to the user's own documents, and measure it.

Steps (each its own module):
1. pairs      (`rag.tuning.pairs`)      pseudo-queries from the collection's chunks (+ LLM questions if enabled);
2. negatives  (`rag.tuning.negatives`)  BM25 hard negatives, false-negative filter, duplicate-free batches;
3. training   (`rag.tuning.finetune`)   bi-encoder (MNRL / InfoNCE) and cross-encoder (BCE), saved under MODEL_DIR;
4. evaluation (here)               held-out pseudo-queries before/after (MRR@10, Recall@10 of the positive
                                   chunk) and, with `--eval DATASET`, the eval harness before/after;
5. apply      (here)               `rag tune --apply MODEL_DIR` re-embeds every chunk into a NEW collection.

The collection is never switched: a collection records its embedding model, so using the tuned model
means re-embedding into a new collection and pointing RAG_COLLECTION / RAG_EMBED_MODEL at it. `--apply`
refuses a model that did not beat the base model unless `--force` is given.

MODEL_DIR layout: `embedder/` (sentence-transformers), `reranker/` (cross-encoder), `tune_report.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rag.config import Settings
from rag.errors import ConfigError, RagError

from rag.tuning.finetune import TrainConfig, train_bi_encoder, train_cross_encoder
from rag.tuning.negatives import bm25_candidates, mine_hard_negatives
from rag.tuning.pairs import TrainPair, generate_pairs, split_holdout

log = logging.getLogger(__name__)

REPORT_FILE = "tune_report.json"
HOLDOUT_FRACTION = 0.15
EVAL_CORPUS_MAX = 600  # chunks re-embedded for the held-out check (all held-out positives + a sample)
HELDOUT_MAX_QUERIES = 240  # held-out pseudo-queries scored by the dense check (bounds its time)
RERANK_CHECK_QUERIES = 60
RERANK_CHECK_DEPTH = 30  # = the default rerank_top_m
# A reranker trained for minutes on pseudo-queries is weaker than a pretrained one: it joins the dense and
# BM25 legs as a third, equal-weight RRF leg (`rerank_fusion_weight`) instead of replacing their order.
RERANK_FUSION_WEIGHT = 1.0


# ------------------------------------------------------------------------------------------------
# Reading the collection
# ------------------------------------------------------------------------------------------------


def load_collection(store: Any) -> tuple[list[Any], np.ndarray, list[str]]:
    """All chunks, their stored dense vectors (float32, one row per chunk) and every ACL label seen."""
    from rag.models import Chunk

    chunks, vectors, labels = [], [], set()
    for point_id, payload, dense in store.iter_payloads(with_vectors=True):
        chunk = Chunk.from_payload(point_id, payload)
        chunks.append(chunk)
        vectors.append(dense or [])
        labels.update(chunk.acl or [])
    matrix = np.asarray(vectors, dtype=np.float32) if chunks else np.zeros((0, 0), dtype=np.float32)
    return chunks, matrix, sorted(labels)


# ------------------------------------------------------------------------------------------------
# Held-out check
# ------------------------------------------------------------------------------------------------


def rank_metrics(query_vecs: np.ndarray, corpus_vecs: np.ndarray, positive_rows: Sequence[int], k: int = 10) -> dict[str, float]:
    """MRR@k and Recall@k of each query's single positive row under cosine (rows are normalized)."""
    if len(positive_rows) == 0:
        return {f"mrr@{k}": 0.0, f"recall@{k}": 0.0}
    scores = query_vecs @ corpus_vecs.T
    pos_scores = scores[np.arange(len(positive_rows)), np.asarray(positive_rows)]
    ranks = (scores > pos_scores[:, None]).sum(axis=1) + 1  # 1-based rank of the positive
    mrr = np.where(ranks <= k, 1.0 / ranks, 0.0)
    return {f"mrr@{k}": round(float(mrr.mean()), 4), f"recall@{k}": round(float((ranks <= k).mean()), 4)}


def heldout_corpus(chunks: Sequence[Any], held: Sequence[TrainPair], limit: int, seed: int) -> list[int]:
    """Row indices of the chunks the held-out check ranks: every held-out positive plus a random sample."""
    by_id = {c.id: i for i, c in enumerate(chunks)}
    must = sorted({by_id[p.chunk_id] for p in held if p.chunk_id in by_id})
    rest = [i for i in range(len(chunks)) if i not in set(must)]
    random.Random(seed).shuffle(rest)
    return sorted(must + rest[: max(0, limit - len(must))])


def heldout_check(held: Sequence[TrainPair], chunks: Sequence[Any], base_vectors: np.ndarray, base_model: Any,
                  tuned_model: Any, query_instruction: str, seed: int = 0, corpus_max: int = EVAL_CORPUS_MAX,
                  progress: bool = False) -> dict[str, Any]:
    """Dense MRR@10 / Recall@10 of held-out pseudo-queries, base model vs tuned model, on the same corpus.

    The base corpus vectors are the stored ones (the collection was embedded with the base model); the
    tuned model re-embeds the same chunks.
    """
    rows = heldout_corpus(chunks, held, corpus_max, seed)
    row_of = {chunks[r].id: j for j, r in enumerate(rows)}
    held = [p for p in held if p.chunk_id in row_of]
    positives = [row_of[p.chunk_id] for p in held]
    queries = [query_instruction + p.query for p in held]
    encode = dict(normalize_embeddings=True, convert_to_numpy=True, batch_size=32)
    before_q = base_model.encode(queries, **encode)
    tuned_q = tuned_model.encode(queries, **encode)
    tuned_corpus = tuned_model.encode([chunks[r].text for r in rows], show_progress_bar=progress, **encode)
    return {
        "queries": len(held),
        "corpus_chunks": len(rows),
        "before": rank_metrics(before_q, base_vectors[rows], positives),
        "after": rank_metrics(tuned_q, tuned_corpus, positives),
    }


def bm25_rows(pairs: Sequence[TrainPair], chunks: Sequence[Any], store: Any, bm25: Any, acl: list[str],
              depth: int = 100) -> list[list[int]]:
    """Each pair's BM25 top-`depth` as chunk row indices (the sparse leg of the store, as search runs it)."""
    from rag.models import SearchFilter

    row = {c.id: i for i, c in enumerate(chunks)}
    flt = SearchFilter(acl=list(acl))
    return [[row[c.id] for c in bm25_candidates(store, bm25, flt, pair.query, depth) if c.id in row]
            for pair in pairs]


def _rr_at_10(order: Sequence[int], target: int) -> float:
    top = list(order[:10])
    return 1.0 / (top.index(target) + 1) if target in top else 0.0


def rerank_check(held: Sequence[TrainPair], held_bm25: Sequence[Sequence[int]], chunks: Sequence[Any],
                 base_vectors: np.ndarray, base_model: Any, reranker: Any, query_instruction: str,
                 rrf_k: int = 60, top_m: int = RERANK_CHECK_DEPTH, limit: int = RERANK_CHECK_QUERIES,
                 fusion_weight: float = RERANK_FUSION_WEIGHT) -> dict[str, Any]:
    """MRR@10 of held-out queries over the base hybrid top-`top_m`: hybrid order, the trained reranker's
    order alone, and the reranker fused as a third RRF leg (`fusion_weight`), as search would run them."""
    import torch

    from rag.fusion import reciprocal_rank_fusion

    id_row = {c.id: i for i, c in enumerate(chunks)}
    rows = [(p, bm) for p, bm in zip(held, held_bm25) if p.chunk_id in id_row][:limit]
    if not rows:
        return {"queries": 0}
    q = base_model.encode([query_instruction + p.query for p, _ in rows], normalize_embeddings=True,
                          convert_to_numpy=True)
    dense_top = np.argsort(-(q @ base_vectors.T), axis=1)[:, :100]
    rr: dict[str, list[float]] = {"hybrid": [], "rerank_alone": [], "rerank_fused": []}
    for (pair, bm), dense in zip(rows, dense_top):
        target = id_row[pair.chunk_id]
        legs = {"dense": [str(r) for r in dense], "bm25": [str(r) for r in bm]}
        hybrid = [int(item.id) for item in reciprocal_rank_fusion(legs, k=rrf_k)]
        cands = hybrid[:top_m]
        in_cands = set(cands)
        scores = reranker.predict([(pair.query, chunks[i].text) for i in cands], activation_fn=torch.nn.Identity(),
                                  show_progress_bar=False, convert_to_numpy=True).reshape(-1)
        alone = [cands[i] for i in np.argsort(-scores, kind="stable")]
        fused = [int(item.id) for item in reciprocal_rank_fusion(
            {**legs, "rerank": [str(r) for r in alone]}, k=rrf_k, weights={"rerank": fusion_weight})
            if int(item.id) in in_cands]
        rr["hybrid"].append(_rr_at_10(hybrid, target))
        rr["rerank_alone"].append(_rr_at_10(alone, target))
        rr["rerank_fused"].append(_rr_at_10(fused, target))
    return {"queries": len(rows), "top_m": top_m, "fusion_weight": fusion_weight,
            **{f"{name}_mrr@10": round(float(np.mean(v)), 4) for name, v in rr.items()}}


# ------------------------------------------------------------------------------------------------
# Eval harness before/after
# ------------------------------------------------------------------------------------------------


def harness_compare(dataset_dir: str, base: Settings, tuned: Settings, limit: int | None, progress: bool) -> dict[str, Any]:
    """`rag eval retrieval` on a labelled dataset with the base and the tuned models, plus deltas.

    Before: dense and hybrid with the base embedder, and rerank = the TRAINED reranker over the base
    hybrid list (the reranker's own effect). After: dense, hybrid and rerank with both tuned models.
    """
    from evals.runner import run_retrieval

    modes = ("dense", "hybrid", "rerank") if tuned.rerank_enabled else ("dense", "hybrid")
    before = run_retrieval(dataset_dir, base, modes=modes, limit=limit, progress=progress)
    after = run_retrieval(dataset_dir, tuned, modes=modes, limit=limit, progress=progress)
    b = {m: v["metrics"] for m, v in before["retrieval"]["modes"].items()}
    a = {m: v["metrics"] for m, v in after["retrieval"]["modes"].items()}
    deltas = {m: {name: round(a[m][name] - b[m][name], 4) for name in a[m] if name in b.get(m, {})
                  and a[m][name] is not None and b[m][name] is not None} for m in a}
    # The reranker's own effect: rerank mode against hybrid mode of the same embedder.
    rerank_over_hybrid = {label: round(r["rerank"]["ndcg@10"] - r["hybrid"]["ndcg@10"], 4)
                          for label, r in (("before", b), ("after", a)) if "rerank" in r}
    return {"dataset": dataset_dir, "queries": after["dataset"].get("queries_evaluated"),
            "before": b, "after": a, "deltas": deltas, "rerank_over_hybrid_ndcg@10": rerank_over_hybrid,
            "before_collection": before["config"]["collection"], "after_collection": after["config"]["collection"],
            "before_out": before.get("out_dir"), "after_out": after.get("out_dir")}


# ------------------------------------------------------------------------------------------------
# The whole run
# ------------------------------------------------------------------------------------------------


def tune(settings: Settings, out_dir: str | Path, cfg: TrainConfig | None = None, max_pairs: int = 1600,
         eval_dataset: str | None = None, eval_limit: int | None = None, train_reranker: bool = True,
         progress: bool = True, store: Any = None) -> dict[str, Any]:
    """Generate pairs, mine negatives, train both models into `out_dir`, evaluate, write tune_report.json.

    The base model is the one the collection was built with (recorded in the collection). Nothing in the
    collection changes. Returns the report dict.
    """
    from rag.store import open_store
    from sentence_transformers import SentenceTransformer

    cfg = cfg or TrainConfig()
    out = Path(out_dir).expanduser().resolve()
    started = time.perf_counter()
    own_store = store is None
    store = store or open_store(settings)
    try:
        info = store.info()
        if info is None:
            raise ConfigError(f"collection {settings.collection!r} does not exist or is empty; run `rag ingest` "
                              "first or pass --collection")
        t0 = time.perf_counter()
        chunks, vectors, labels = load_collection(store)
        if len(chunks) < 4:
            raise ConfigError(f"collection {settings.collection!r} has {len(chunks)} chunks; tuning needs at least 4")
        base_name = info.embed_model
        instruction = settings.replace(embed_model=base_name).resolved_query_instruction()
        pairs = generate_pairs(chunks, max_pairs=max_pairs, seed=cfg.seed, settings=settings,
                               per_chunk=cfg.pairs_per_chunk, keep_prob=cfg.keep_prob, query_dropout=cfg.query_dropout)
        train_pairs, held = split_holdout(pairs, HOLDOUT_FRACTION, cfg.seed)
        if len(train_pairs) < 2:
            raise RagError(f"only {len(pairs)} training pairs could be made from {len(chunks)} chunks; "
                           "the collection needs more text (sentences of 6+ words)")
        bm25 = info.bm25_encoder()
        triplets = mine_hard_negatives(train_pairs, store, bm25, labels, seed=cfg.seed, progress=progress)
        held = held[:HELDOUT_MAX_QUERIES]
        held_bm25 = bm25_rows(held[:RERANK_CHECK_QUERIES], chunks, store, bm25, labels) if train_reranker else []
        prep_s = time.perf_counter() - t0
    finally:
        if own_store:
            store.close()

    if instruction:  # train queries exactly as they are embedded at search time
        for t in triplets:
            t.pair = dataclasses.replace(t.pair, query=instruction + t.pair.query)

    base_path = _model_path(base_name)
    embed_dir, rerank_dir = out / "embedder", out / "reranker"
    log.info("training on %d pairs (%d held out) from %d chunks; base model %s", len(triplets), len(held), len(chunks), base_name)
    t0 = time.perf_counter()
    base_model = SentenceTransformer(base_path, device="cpu")
    tuned_model = SentenceTransformer(base_path, device="cpu")
    embed_stats = train_bi_encoder(base_path, triplets, cfg, embed_dir, progress=progress, model=tuned_model)
    rerank_stats = None
    if train_reranker:
        # Reranker queries are plain text (no embedding instruction).
        plain = [dataclasses.replace(t, pair=dataclasses.replace(t.pair, query=t.pair.query[len(instruction):]))
                 for t in triplets] if instruction else triplets
        rerank_stats = train_cross_encoder(base_path, plain, cfg, rerank_dir, progress=progress)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    heldout = heldout_check(held, chunks, vectors, base_model, tuned_model, instruction, cfg.seed, progress=progress)
    rerank_held = None
    if train_reranker:
        from sentence_transformers import CrossEncoder

        rerank_held = rerank_check(held, held_bm25, chunks, vectors, base_model,
                                   CrossEncoder(str(rerank_dir), num_labels=1, device="cpu"), instruction,
                                   rrf_k=settings.rrf_k, top_m=settings.rerank_top_m)
    harness = None
    harness_error = None
    fusion = RERANK_FUSION_WEIGHT if train_reranker else None
    tuned_settings = settings.replace(embed_model=str(embed_dir), query_instruction=instruction,
                                      rerank_model=str(rerank_dir) if train_reranker else "none",
                                      rerank_fusion_weight=fusion)
    if eval_dataset:
        # The trained models are on disk already; keep the held-out results even if the harness fails.
        out.mkdir(parents=True, exist_ok=True)
        (out / REPORT_FILE).write_text(json.dumps({"partial": True, "heldout": heldout, "rerank_heldout": rerank_held,
                                                   "training": {"embedder": embed_stats, "reranker": rerank_stats},
                                                   "train_seconds": round(train_s, 1), "tuned_wins": False},
                                                  indent=2, default=str), encoding="utf-8")
        base_settings = settings.replace(embed_model=base_name, rerank_fusion_weight=fusion,
                                         rerank_model=str(rerank_dir) if train_reranker else "none")
        try:
            harness = harness_compare(eval_dataset, base_settings, tuned_settings, eval_limit, progress)
        except Exception as exc:  # report what was measured; the decision falls back to the held-out check
            log.error("eval harness on %s failed (%s: %s); deciding on the held-out pseudo-queries",
                      eval_dataset, type(exc).__name__, exc)
            harness_error = f"{type(exc).__name__}: {exc}"
    eval_s = time.perf_counter() - t0

    if harness:
        wins = harness["deltas"].get("dense", {}).get("ndcg@10", 0.0) > 0
        basis = "eval harness dense nDCG@10"
    else:
        wins = heldout["after"]["mrr@10"] > heldout["before"]["mrr@10"]
        basis = "held-out pseudo-queries dense MRR@10"
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    report = {
        "collection": settings.collection,
        "base_model": base_name,
        "query_instruction": instruction,
        "model_dir": str(out),
        "embedder": str(embed_dir),
        "reranker": str(rerank_dir) if train_reranker else None,
        "rerank_fusion_weight": fusion,
        "chunks": len(chunks),
        "pairs": {**counts, "total": len(pairs), "train": len(triplets), "held_out": len(held),
                  "with_hard_negative": sum(1 for t in triplets if t.negative)},
        "config": cfg.to_dict(),
        "training": {"embedder": embed_stats, "reranker": rerank_stats},
        "heldout": heldout,
        "rerank_heldout": rerank_held,
        "eval": harness,
        "eval_error": harness_error,
        "seconds": {"prepare": round(prep_s, 1), "train": round(train_s, 1), "evaluate": round(eval_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "tuned_wins": bool(wins),
        "decision_basis": basis,
        "apply_command": f"rag tune --apply {out} --collection {settings.collection}",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return report


def _model_path(name: str) -> str:
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


# ------------------------------------------------------------------------------------------------
# Apply: re-embed into a new collection
# ------------------------------------------------------------------------------------------------


def apply_tuned(settings: Settings, model_dir: str | Path, target: str | None = None, force: bool = False,
                progress: bool = True, batch: int = 256) -> dict[str, Any]:
    """Re-embed every chunk of `settings.collection` with MODEL_DIR/embedder into a new collection.

    Payloads and BM25 vectors are copied (BM25 recomputed with the source's recorded parameters); only
    the dense vectors change. Refuses when the tune report says the tuned model did not win, unless
    `force`. Returns {"collection", "points", "env": {...}} with the settings to switch to.
    """
    from rag.embedding import load_embedder
    from rag.store import CollectionInfo, StoredPoint, open_store
    from tqdm import tqdm

    model_dir = Path(model_dir).expanduser().resolve()
    embed_dir = model_dir / "embedder" if (model_dir / "embedder").is_dir() else model_dir
    report_path = model_dir / REPORT_FILE
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if report and not report.get("tuned_wins") and not force:
        raise RagError(f"{report_path}: the tuned model did not beat the base model ({report.get('decision_basis')}); "
                       "not re-embedding. Pass --force to use it anyway")
    target = target or f"{settings.collection}_tuned"
    if target == settings.collection:
        raise ConfigError("--target must differ from the source collection (a collection records its model)")
    instruction = report.get("query_instruction", settings.resolved_query_instruction()) if report else \
        settings.resolved_query_instruction()
    embedder = load_embedder(str(embed_dir), instruction, settings.embed_batch_size, settings.embed_device)
    source = open_store(settings)
    dest = open_store(settings.replace(collection=target))
    try:
        info = source.info()
        if info is None:
            raise ConfigError(f"collection {settings.collection!r} does not exist; nothing to re-embed")
        if dest.info() is not None:
            raise ConfigError(f"collection {target!r} already exists; pass another --target or remove it")
        dest.create(CollectionInfo(name=target, embed_model=str(embed_dir), dimension=embedder.dimension,
                                   bm25_k1=info.bm25_k1, bm25_b=info.bm25_b, bm25_avg_doc_len=info.bm25_avg_doc_len,
                                   bm25_language=info.bm25_language))
        bm25 = info.bm25_encoder()
        total = source.count()
        written = 0
        pending: list[tuple[str, dict]] = []
        bar = tqdm(total=total, desc=f"re-embedding into {target}", unit="chunk", disable=not progress)

        def flush() -> None:
            nonlocal written
            vecs = embedder.embed_passages([p.get("text", "") for _, p in pending])
            dest.upsert([StoredPoint(id=i, dense=v.tolist(), sparse=bm25.encode_document(p.get("text", "")),
                                     payload={k: val for k, val in p.items() if k != "dir_prefixes"})
                         for (i, p), v in zip(pending, vecs)])
            written += len(pending)
            bar.update(len(pending))
            pending.clear()

        for point_id, payload, _ in source.iter_payloads():
            pending.append((point_id, payload))
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        bar.close()
        dest.flush()
    finally:
        source.close()
        dest.close()
    env = {"RAG_COLLECTION": target, "RAG_EMBED_MODEL": str(embed_dir)}
    if instruction:
        env["RAG_QUERY_INSTRUCTION"] = instruction
    if report.get("reranker"):
        env["RAG_RERANK_MODEL"] = report["reranker"]
        env["RAG_RERANK_FUSION_WEIGHT"] = str(report.get("rerank_fusion_weight", RERANK_FUSION_WEIGHT))
    return {"source": settings.collection, "collection": target, "points": written, "env": env}


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`rag tune` / `rag tune --apply MODEL_DIR`; with --json one JSON object on stdout."""
    as_json = bool(getattr(args, "json", False))
    if args.apply:
        result = apply_tuned(settings, args.apply, target=args.target, force=args.force)
        lines = [f"re-embedded {result['points']} chunks of {result['source']!r} into {result['collection']!r}.",
                 "To use it:"] + [f"  export {k}={json.dumps(v) if ' ' in v else v}" for k, v in result["env"].items()]
        _emit(as_json, result, lines)
        return 0
    for name in ("max_pairs", "epochs", "batch_size", "max_seq_length", "pairs_per_chunk"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} is {getattr(args, name)}; it must be positive")
    if not 0.0 <= args.keep_prob <= 1.0:
        raise ConfigError(f"--keep-prob is {args.keep_prob}; use a value from 0 to 1")
    if not 0.0 <= args.query_dropout < 1.0:  # 1.0 would drop every word
        raise ConfigError(f"--query-dropout is {args.query_dropout}; use a value from 0 up to (not including) 1")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                      scale=args.scale, lr=args.lr, pairs_per_chunk=args.pairs_per_chunk, keep_prob=args.keep_prob,
                      query_dropout=args.query_dropout)
    out = args.out or str(Path(settings.state_dir) / "tuned" / settings.collection)
    report = tune(settings, out, cfg, max_pairs=args.max_pairs, eval_dataset=args.eval_dataset,
                  eval_limit=args.eval_limit, train_reranker=not args.no_reranker)
    _emit(as_json, report, summary_lines(report))
    return 0


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A human summary of a tune report."""
    h = report["heldout"]
    lines = [
        f"tuned {report['base_model']} on {report['pairs']['train']} pairs from {report['chunks']} chunks "
        f"({report['seconds']['train']} s training); model in {report['model_dir']}",
        f"held-out pseudo-queries ({h['queries']}): MRR@10 {h['before']['mrr@10']:.4f} -> {h['after']['mrr@10']:.4f}, "
        f"Recall@10 {h['before']['recall@10']:.4f} -> {h['after']['recall@10']:.4f}",
    ]
    r = report.get("rerank_heldout") or {}
    if r.get("queries"):
        lines.append(f"reranker on held-out ({r['queries']}, top {r['top_m']}): MRR@10 hybrid {r['hybrid_mrr@10']:.4f}, "
                     f"reranker alone {r['rerank_alone_mrr@10']:.4f}, fused (weight {r['fusion_weight']}) "
                     f"{r['rerank_fused_mrr@10']:.4f}")
    if report.get("eval"):
        e = report["eval"]
        lines.append(f"eval harness on {e['dataset']} ({e['queries']} queries):")
        for mode, metrics in e["after"].items():
            b = e["before"].get(mode, {})
            lines.append(f"  {mode:>7}: nDCG@10 {b.get('ndcg@10', float('nan')):.4f} -> {metrics.get('ndcg@10', float('nan')):.4f}"
                         f"  (delta {e['deltas'].get(mode, {}).get('ndcg@10', float('nan')):+.4f})")
        for label, delta in (e.get("rerank_over_hybrid_ndcg@10") or {}).items():
            lines.append(f"  rerank over hybrid ({label} tuning the embedder): nDCG@10 {delta:+.4f}")
    if report.get("eval_error"):
        lines.append(f"eval harness failed: {report['eval_error']}")
    if report["tuned_wins"]:
        lines.append(f"the tuned model wins ({report['decision_basis']}); to use it: {report['apply_command']}")
    else:
        lines.append(f"the tuned model does NOT win ({report['decision_basis']}); keep the base model")
    return lines


def _emit(as_json: bool, payload: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, default=str) + "\n")
        for line in lines:
            print(line, file=sys.stderr)
    else:
        print("\n".join(lines))
