"""`rag tune`: adapt the retriever and the reranker to the user's own documents, and measure it.

Steps (each its own module):
1. pairs      (`rag.tuning.pairs`)      pseudo-queries from the collection's chunks (+ LLM questions if enabled);
2. negatives  (`rag.tuning.negatives`)  BM25 hard negatives, false-negative filter, duplicate-free batches;
3. training   (`rag.tuning.finetune`)   bi-encoder (MNRL / InfoNCE) and cross-encoder (BCE), saved under MODEL_DIR;
4. evaluation (`rag.tuning.heldout`) held-out pseudo-queries before/after through the product's retriever
                                   (the metrics `rag eval retrieval` reports) and, with `--eval DATASET`, the
                                   eval harness before/after (passed in by the CLI: the library never imports
                                   `evals`);
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
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import ConfigError, RagError
from rag.rerank import Reranker
from rag.store import open_store
from rag.tuning.finetune import TrainConfig, train_bi_encoder, train_cross_encoder
from rag.tuning.heldout import HELDOUT_MAX_QUERIES, heldout_check
from rag.tuning.negatives import mine_hard_negatives
from rag.tuning.pairs import generate_pairs, split_holdout

log = logging.getLogger(__name__)

REPORT_FILE = "tune_report.json"
HOLDOUT_FRACTION = 0.15
# A reranker trained for minutes on pseudo-queries is weaker than a pretrained one: it joins the dense and
# BM25 legs as a third, equal-weight RRF leg (`rerank_fusion_weight`) instead of replacing their order.
RERANK_FUSION_WEIGHT = 1.0

EvalHarness = Callable[[Settings, Settings], dict[str, Any]]
"""`rag eval retrieval` on a labelled dataset with (base settings, tuned settings), as `rag tune --eval` runs it.

Returns `{"dataset", "queries", "before": {mode: metrics}, "after": {mode: metrics},
"deltas": {mode: {metric: after - before}}, ...}`; the tuned model wins when the dense nDCG@10 delta is
positive. The composition root (`rag.cli`) builds it from `evals`, so this library never imports `evals`.
"""


# ------------------------------------------------------------------------------------------------
# Reading the collection
# ------------------------------------------------------------------------------------------------


def load_collection(store: Any) -> tuple[list[Any], np.ndarray, list[str]]:
    """All chunks, their stored dense vectors (float32, one row per chunk) and every ACL label seen."""
    from rag.store.catalog import load_chunks

    chunks, matrix = load_chunks(store)
    return chunks, matrix, sorted({label for chunk in chunks for label in chunk.acl or []})


# ------------------------------------------------------------------------------------------------
# The whole run
# ------------------------------------------------------------------------------------------------


def tune(settings: Settings, out_dir: str | Path, cfg: TrainConfig | None = None, max_pairs: int = 1600,
         eval_harness: EvalHarness | None = None, train_reranker: bool = True, progress: bool = True,
         store: Any = None) -> dict[str, Any]:
    """Generate pairs, mine negatives, train both models into `out_dir`, evaluate, write tune_report.json.

    The base model is the one the collection was built with (recorded in the collection). Nothing in the
    collection changes. The tuned model wins on the held-out check's dense MRR@10 or, when
    `eval_harness` is given (`rag tune --eval`), on its dense nDCG@10. Returns the report dict.
    """
    from sentence_transformers import SentenceTransformer  # heavy (torch): imported only when training runs

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
    # The check runs the product's retriever with the models as they ship (the in-memory tuned model is
    # the one just saved to embed_dir; the reranker is loaded back from rerank_dir).
    batch = settings.embed_batch_size
    heldout = heldout_check(
        held, chunks, vectors, info, labels, Embedder(base_model, base_name, instruction, batch),
        Embedder(tuned_model, str(embed_dir), instruction, batch), settings,
        reranker=Reranker(str(rerank_dir), settings.rerank_batch_size) if train_reranker else None,
        fusion_weight=RERANK_FUSION_WEIGHT, seed=cfg.seed, progress=progress)
    rerank_held = heldout.pop("rerank")
    harness = None
    harness_error = None
    fusion = RERANK_FUSION_WEIGHT if train_reranker else None
    tuned_settings = settings.replace(embed_model=str(embed_dir), query_instruction=instruction,
                                      rerank_model=str(rerank_dir) if train_reranker else "none",
                                      rerank_fusion_weight=fusion)
    if eval_harness is not None:
        # The trained models are on disk already; keep the held-out results even if the harness fails.
        out.mkdir(parents=True, exist_ok=True)
        (out / REPORT_FILE).write_text(json.dumps({"partial": True, "heldout": heldout, "rerank_heldout": rerank_held,
                                                   "training": {"embedder": embed_stats, "reranker": rerank_stats},
                                                   "train_seconds": round(train_s, 1), "tuned_wins": False},
                                                  indent=2, default=str), encoding="utf-8")
        base_settings = settings.replace(embed_model=base_name, rerank_fusion_weight=fusion,
                                         rerank_model=str(rerank_dir) if train_reranker else "none")
        try:
            harness = eval_harness(base_settings, tuned_settings)
        except Exception as exc:  # report what was measured; the decision falls back to the held-out check
            log.error("eval harness failed (%s: %s); deciding on the held-out pseudo-queries",
                      type(exc).__name__, exc)
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
    from rag.store import CollectionInfo, open_store
    from rag.store.catalog import iter_chunks, write_chunks
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
        total = source.count()
        written = 0
        pending: list[Any] = []
        bar = tqdm(total=total, desc=f"re-embedding into {target}", unit="chunk", disable=not progress)

        def flush() -> None:
            nonlocal written
            # BM25 with the collection's own recorded parameters (dest copied them from the source).
            written += write_chunks(dest, pending, embedder.embed_passages([c.text for c in pending]), batch=batch).points
            bar.update(len(pending))
            pending.clear()

        for chunk in iter_chunks(source):
            pending.append(chunk)
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


def main(args: argparse.Namespace, settings: Settings, eval_harness: EvalHarness | None = None) -> int:
    """`rag tune` / `rag tune --apply MODEL_DIR`; with --json one JSON object on stdout.

    `eval_harness` is what `--eval DATASET_DIR` runs; the composition root (`rag.cli`) builds it.
    """
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
    if args.eval_dataset and eval_harness is None:
        raise ConfigError("--eval needs the eval harness, which the `rag` command provides; run `rag tune --eval ...`")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                      scale=args.scale, lr=args.lr, pairs_per_chunk=args.pairs_per_chunk, keep_prob=args.keep_prob,
                      query_dropout=args.query_dropout)
    out = args.out or str(Path(settings.state_dir) / "tuned" / settings.collection)
    report = tune(settings, out, cfg, max_pairs=args.max_pairs, eval_harness=eval_harness,
                  train_reranker=not args.no_reranker)
    _emit(as_json, report, summary_lines(report))
    return 0


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A human summary of a tune report."""
    h = report["heldout"]
    lines = [
        f"tuned {report['base_model']} on {report['pairs']['train']} pairs from {report['chunks']} chunks "
        f"({report['seconds']['train']} s training); model in {report['model_dir']}",
        f"held-out pseudo-queries ({h['queries']} over {h['corpus_chunks']} chunks, the product's retriever):",
        *_comparison_lines(h["by_mode"]),
    ]
    r = report.get("rerank_heldout") or {}
    if r.get("queries"):
        lines.append(f"reranker on held-out ({r['queries']}, top {r['top_m']}): MRR@10 hybrid {r['hybrid_mrr@10']:.4f}, "
                     f"reranker alone {r['rerank_alone_mrr@10']:.4f}, fused (weight {r['fusion_weight']}) "
                     f"{r['rerank_fused_mrr@10']:.4f}")
    if report.get("eval"):
        e = report["eval"]
        lines.append(f"eval harness on {e['dataset']} ({e['queries']} queries):")
        lines += _comparison_lines(e)
        for label, delta in (e.get("rerank_over_hybrid_ndcg@10") or {}).items():
            lines.append(f"  rerank over hybrid ({label} tuning the embedder): nDCG@10 {delta:+.4f}")
    if report.get("eval_error"):
        lines.append(f"eval harness failed: {report['eval_error']}")
    if report["tuned_wins"]:
        lines.append(f"the tuned model wins ({report['decision_basis']}); to use it: {report['apply_command']}")
    else:
        lines.append(f"the tuned model does NOT win ({report['decision_basis']}); keep the base model")
    return lines


def _comparison_lines(comparison: dict[str, Any], names: tuple[str, ...] = ("ndcg@10", "mrr@10")) -> list[str]:
    """One line per mode of a {"before", "after", "deltas"} comparison: each metric before -> after (delta)."""
    nan = float("nan")
    lines = []
    for mode, after in comparison["after"].items():
        before, delta = comparison["before"].get(mode, {}), comparison["deltas"].get(mode, {})
        lines.append(f"  {mode:>7}: " + ", ".join(
            f"{name} {before.get(name, nan):.4f} -> {after.get(name, nan):.4f} ({delta.get(name, nan):+.4f})"
            for name in names))
    return lines


def _emit(as_json: bool, payload: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, default=str) + "\n")
        for line in lines:
            print(line, file=sys.stderr)
    else:
        print("\n".join(lines))
