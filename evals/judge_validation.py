"""Validate a faithfulness judge on labelled (context, question, answer, faithful|hallucinated) records.

Data: evaldata/faithfulness-halueval/faithfulness.jsonl (HaluEval QA). Faithful answers there are
short spans and hallucinated ones are often full sentences, so answer length alone separates them
well; a judge is only worth something if it beats the length-only baseline, and in particular
when length is held fixed. Reported per scorer (the judge and the baseline `-len(answer words)`):

* AUC over all records (faithful = positive class; judge score high = faithful);
* accuracy on the *test* half at the threshold that maximizes accuracy on the *dev* half, the halves
  split by `group` (the source question) so no question's answers sit on both sides; also the
  swapped direction, and the majority-class accuracy for reference;
* length-matched AUC: answers binned by word count, AUC computed only over (faithful, hallucinated)
  pairs in the same bin, pooled by pair count: the chance that a faithful answer outscores a
  hallucinated one *of similar length*.

CLI: python -m evals.judge_validation [--judge lexical|nli|llm] [--data FILE] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from evals.datasets import DatasetError, evaldata_dir, iter_jsonl
from evals.judges import Judge, make_judge

log = logging.getLogger(__name__)

SPLIT_SEED = 20240611
LENGTH_BANDS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 7), (8, 12), (13, 10_000))


def default_data_path() -> Path:
    """faithfulness-halueval/faithfulness.jsonl in the eval data folder (`evals.datasets.evaldata_dir`)."""
    return evaldata_dir() / "faithfulness-halueval" / "faithfulness.jsonl"


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Records with context, question, answer, label ('faithful'|'hallucinated') and group.

    Raises DatasetError (naming file and line) for a missing file, a malformed line or an unknown label.
    """
    records = []
    for lineno, row in iter_jsonl(path):
        if row.get("label") not in ("faithful", "hallucinated"):
            raise DatasetError(f"{path}:{lineno}: label must be 'faithful' or 'hallucinated', got {row.get('label')!r}")
        records.append(row)
    return records


def answer_length(answer: str) -> int:
    """Answer length in whitespace-separated words."""
    return len(answer.split())


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula, ties counted half; None with one class."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def best_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The threshold t maximizing accuracy of `score >= t -> faithful` (midpoints between scores;
    the lowest such t on ties, so the choice is deterministic)."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    uniq = np.unique(s)
    candidates = np.concatenate(([uniq[0] - 1.0], (uniq[:-1] + uniq[1:]) / 2.0, [uniq[-1] + 1.0]))
    accs = [float(((s >= t).astype(int) == y).mean()) for t in candidates]
    return float(candidates[int(np.argmax(accs))])


def accuracy_at(labels: Sequence[int], scores: Sequence[float], threshold: float) -> float:
    """Accuracy of predicting faithful when score >= threshold."""
    y = np.asarray(labels, dtype=int)
    return float(((np.asarray(scores, dtype=float) >= threshold).astype(int) == y).mean())


def length_matched_auc(labels: Sequence[int], scores: Sequence[float], lengths: Sequence[int],
                       bands: Sequence[tuple[int, int]] = LENGTH_BANDS) -> dict[str, Any]:
    """AUC within answer-length bands, pooled by the number of (faithful, hallucinated) pairs."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    n = np.asarray(lengths, dtype=int)
    rows = []
    weighted, pairs_total = 0.0, 0
    for lo, hi in bands:
        mask = (n >= lo) & (n <= hi)
        pos, neg = int(y[mask].sum()), int((1 - y[mask]).sum())
        auc = roc_auc(y[mask], s[mask]) if mask.any() else None
        rows.append({"band": f"{lo}-{hi}" if hi < 10_000 else f"{lo}+", "faithful": pos, "hallucinated": neg, "auc": auc})
        if auc is not None:
            weighted += auc * pos * neg
            pairs_total += pos * neg
    return {"auc": weighted / pairs_total if pairs_total else None, "pairs": pairs_total, "bands": rows}


def split_groups(records: Sequence[dict[str, Any]], seed: int = SPLIT_SEED) -> tuple[set, set]:
    """Split the records' groups in two halves (dev, test) with a fixed seed."""
    groups = sorted({r["group"] for r in records}, key=str)
    random.Random(seed).shuffle(groups)
    half = len(groups) // 2
    return set(groups[:half]), set(groups[half:])


def evaluate_scores(records: Sequence[dict[str, Any]], scores: Sequence[float], dev: set, test: set) -> dict[str, Any]:
    """AUC, dev->test accuracy (and swapped), and length-matched AUC for one scorer."""
    y = np.array([1 if r["label"] == "faithful" else 0 for r in records])
    s = np.asarray(scores, dtype=float)
    g = [r["group"] for r in records]
    dev_m = np.array([x in dev for x in g])
    test_m = np.array([x in test for x in g])
    t_dev = best_threshold(y[dev_m], s[dev_m])
    t_test = best_threshold(y[test_m], s[test_m])
    lengths = [answer_length(r["answer"]) for r in records]
    return {
        "auc": roc_auc(y, s),
        "auc_dev": roc_auc(y[dev_m], s[dev_m]),
        "auc_test": roc_auc(y[test_m], s[test_m]),
        "threshold": t_dev,
        "accuracy": accuracy_at(y[test_m], s[test_m], t_dev),  # chosen on dev, measured on test
        "accuracy_swapped": accuracy_at(y[dev_m], s[dev_m], t_test),
        "length_matched": length_matched_auc(y, s, lengths),
    }


def validate_judge(judge: Judge, records: Sequence[dict[str, Any]], seed: int = SPLIT_SEED,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score every record with `judge` and compare with the length-only baseline (see module doc)."""
    dev, test = split_groups(records, seed)
    started = time.perf_counter()
    judge_scores = []
    for i, r in enumerate(records):
        judge_scores.append(judge.score(r["context"], r["question"], r["answer"]).score)
        if progress:
            progress(i + 1, len(records))
    elapsed = time.perf_counter() - started
    baseline_scores = [-float(answer_length(r["answer"])) for r in records]
    y = [1 if r["label"] == "faithful" else 0 for r in records]
    test_labels = [v for v, r in zip(y, records) if r["group"] in test]
    majority = max(np.mean(test_labels), 1 - np.mean(test_labels)) if test_labels else None
    return {
        "judge": judge.config(),
        "records": len(records),
        "faithful": int(sum(y)),
        "hallucinated": int(len(y) - sum(y)),
        "groups_dev": len(dev),
        "groups_test": len(test),
        "split_seed": seed,
        "seconds": elapsed,
        "ms_per_record": 1000 * elapsed / max(len(records), 1),
        "majority_accuracy": float(majority) if majority is not None else None,
        "judge_metrics": evaluate_scores(records, judge_scores, dev, test),
        "length_baseline": evaluate_scores(records, baseline_scores, dev, test),
    }


def format_table(result: dict[str, Any]) -> str:
    """The validation result as a Markdown table."""
    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        f"Judge validation: {result['judge']['name']} on {result['records']} records "
        f"({result['faithful']} faithful / {result['hallucinated']} hallucinated; "
        f"groups dev {result['groups_dev']} / test {result['groups_test']})",
        "",
        "| scorer | AUC | AUC test half | accuracy (dev-threshold, test) | accuracy (swapped) | length-matched AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in ((result["judge"]["name"] + " judge", "judge_metrics"), ("length-only baseline", "length_baseline")):
        m = result[key]
        lines.append(f"| {label} | {f(m['auc'])} | {f(m['auc_test'])} | {f(m['accuracy'])} | "
                     f"{f(m['accuracy_swapped'])} | {f(m['length_matched']['auc'])} |")
    lines.append(f"| majority class | 0.500 | 0.500 | {f(result['majority_accuracy'])} | | 0.500 |")
    lines += ["", "Length bands (judge AUC within band):", "", "| words | faithful | hallucinated | judge AUC | baseline AUC |",
              "|---|---:|---:|---:|---:|"]
    for jb, bb in zip(result["judge_metrics"]["length_matched"]["bands"], result["length_baseline"]["length_matched"]["bands"]):
        lines.append(f"| {jb['band']} | {jb['faithful']} | {jb['hallucinated']} | {f(jb['auc'])} | {f(bb['auc'])} |")
    lines.append(f"\n{result['ms_per_record']:.1f} ms per record")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m evals.judge_validation", description=__doc__.splitlines()[0])
    parser.add_argument("--judge", default="lexical", help="lexical | nli | llm (default lexical)")
    parser.add_argument("--model", default=None, help="NLI model name or path (nli judge)")
    parser.add_argument("--data", default=None, help="faithfulness.jsonl (default: evaldata/faithfulness-halueval)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N records")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        records = load_records(args.data or default_data_path())
        if args.limit:
            records = records[: args.limit]
        kwargs: dict[str, Any] = {}
        settings = None
        if args.judge == "nli" and args.model:
            kwargs["model_name"] = args.model
        if args.judge == "llm":
            from rag.config import load_settings

            settings = load_settings()
        judge = make_judge(args.judge, settings, **kwargs)
        result = validate_judge(judge, records)
    except Exception as exc:  # noqa: BLE001 - CLI: one-line reason, non-zero exit
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
