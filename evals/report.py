"""Eval reports: results.json (every number + config), report.md (tables people read),
questions.jsonl (per-question rows), PNG plots, and `compare` for two result folders.

The `results` dict the runner passes in (all keys optional except what a section needs):

    {
      "kind": "retrieval" | "answers",
      "dataset": {"name": ..., "path": ..., "hash": ..., "kind": ...},
      "config": {...settings.public_dict(), k values ...},
      "versions": {"rag": ..., "python": ..., "sentence_transformers": ...},
      "retrieval": {"modes": {mode: {
            "metrics": {"ndcg@10": .., "recall@1": .., "recall@5": .., "recall@10": .., "recall@100": .., "mrr@10": ..},
            "latency_ms": {stage: {"p50": .., "p95": .., ...}},   # evals.metrics.stage_latencies
            "recall_curve": [recall@1, ..., recall@100],          # mean over queries
            "queries": n}}},
      "answers": {"metrics": {name: value}, "latency_ms": {stage: {...}}, "judge": {...}},
    }
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from rag.errors import RagError

RETRIEVAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ndcg@10", "nDCG@10"),
    ("recall@1", "R@1"),
    ("recall@5", "R@5"),
    ("recall@10", "R@10"),
    ("recall@100", "R@100"),
    ("mrr@10", "MRR@10"),
)

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
QUESTIONS_FILE = "questions.jsonl"
RECALL_PLOT = "recall_at_k.png"
LATENCY_PLOT = "latency_by_stage.png"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str | tuple[str, str]], digits: int = 3) -> str:
    """A Markdown table: one row per dict, columns given as keys or (key, header); floats with
    `digits` decimals, None as "–". Numeric columns are right-aligned."""
    cols = [(c, c) if isinstance(c, str) else (c[0], c[1]) for c in columns]
    numeric = [all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in rows) and
               any(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in rows)
               for k, _ in cols]
    lines = ["| " + " | ".join(h for _, h in cols) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k), digits) for k, _ in cols) + " |")
    return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dict__"):
        return obj.__dict__
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# --------------------------------------------------------------------------------------------
# report.md sections
# --------------------------------------------------------------------------------------------


def _modes(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return (results.get("retrieval") or {}).get("modes") or {}


def _stages(modes: dict[str, dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for mode in modes.values():
        for stage in (mode.get("latency_ms") or {}):
            if stage not in seen:
                seen.append(stage)
    # "total" last so the per-stage columns read left to right
    return sorted((s for s in seen), key=lambda s: (s == "total", seen.index(s)))


def retrieval_table(results: dict[str, Any]) -> str:
    """Modes side by side: quality metrics plus total latency p50/p95."""
    modes = _modes(results)
    rows = []
    for name, data in modes.items():
        row: dict[str, Any] = {"mode": name, "queries": data.get("queries")}
        row.update(data.get("metrics") or {})
        total = (data.get("latency_ms") or {}).get("total") or {}
        for key in ("p50", "p95"):  # milliseconds read best with one decimal
            row[key] = None if total.get(key) is None else f"{total[key]:.1f}"
        rows.append(row)
    cols: list[tuple[str, str]] = [("mode", "mode"), *RETRIEVAL_COLUMNS, ("p50", "total p50 ms"),
                                   ("p95", "total p95 ms"), ("queries", "queries")]
    return markdown_table(rows, cols)


def latency_table(modes: dict[str, dict[str, Any]]) -> str:
    """Latency per stage (p50 / p95 ms), one row per mode."""
    stages = _stages(modes)
    rows = []
    for name, data in modes.items():
        lat = data.get("latency_ms") or {}
        row: dict[str, Any] = {"mode": name}
        for stage in stages:
            s = lat.get(stage) or {}
            row[stage] = None if s.get("p50") is None else f"{s['p50']:.1f} / {s['p95']:.1f}"
        rows.append(row)
    return markdown_table(rows, [("mode", "mode (p50 / p95 ms)"), *stages])


def answers_table(metrics: dict[str, Any]) -> str:
    """Answer metrics as metric | value rows."""
    return markdown_table([{"metric": k, "value": v} for k, v in metrics.items() if not isinstance(v, (dict, list))],
                          [("metric", "metric"), ("value", "value")])


def render_markdown(results: dict[str, Any]) -> str:
    """The human report."""
    ds = results.get("dataset") or {}
    lines = [f"# Eval report: {results.get('kind', 'eval')} on {ds.get('name', '?')}", ""]
    facts = [("dataset", ds.get("path")), ("dataset hash", (ds.get("hash") or "")[:16] or None),
             ("created", results.get("created_at"))]
    cfg = results.get("config") or {}
    for key in ("embed_model", "rerank_model", "chunk_tokens", "chunk_overlap_tokens", "rrf_k", "leg_limit",
                "answerer", "answerer_model", "llm_model"):
        if key in cfg:
            facts.append((key, cfg[key]))
    lines += [f"- {k}: {_fmt(v)}" for k, v in facts if v is not None]
    modes = _modes(results)
    if modes:
        lines += ["", "## Retrieval", "", retrieval_table(results), "", "### Latency per stage", "",
                  latency_table(modes), ""]
        if any(m.get("recall_curve") for m in modes.values()):
            lines.append(f"![recall@k]({RECALL_PLOT})")
        if _stages(modes):
            lines.append(f"![latency]({LATENCY_PLOT})")
    answers = results.get("answers") or {}
    if answers.get("metrics"):
        lines += ["", "## Answers", "", answers_table(answers["metrics"]), ""]
        if answers.get("latency_ms"):
            lat = answers["latency_ms"]
            lines += ["### Latency per stage", "", markdown_table(
                [{"stage": s, **{k: v.get(k) for k in ("p50", "p95", "count")}} for s, v in lat.items()],
                [("stage", "stage"), ("p50", "p50 ms"), ("p95", "p95 ms"), ("count", "n")], digits=1), ""]
    for note in results.get("notes") or []:
        lines.append(f"> {note}")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib  # heavy: imported only when plots are written

    matplotlib.use("Agg")  # no display; must precede pyplot import
    import matplotlib.pyplot as plt

    return plt


def plot_recall_curves(modes: dict[str, dict[str, Any]], path: Path) -> bool:
    """recall@k for k = 1..K, one line per mode. False when no mode has a curve."""
    curves = {m: d["recall_curve"] for m, d in modes.items() if d.get("recall_curve")}
    if not curves:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for mode, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, label=mode, linewidth=1.6)
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("Recall@k by retrieval mode")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_latency(modes: dict[str, dict[str, Any]], path: Path) -> bool:
    """Grouped bars: p50 latency per stage for each mode, with the p95 as a thin line above."""
    stages = _stages(modes)
    if not stages:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(stages) + 2), 4.2), dpi=100)
    width = 0.8 / max(len(modes), 1)
    for i, (mode, data) in enumerate(modes.items()):
        lat = data.get("latency_ms") or {}
        xs = [j + i * width for j in range(len(stages))]
        p50 = [(lat.get(s) or {}).get("p50") or 0.0 for s in stages]
        p95 = [(lat.get(s) or {}).get("p95") or 0.0 for s in stages]
        ax.bar(xs, p50, width=width, label=f"{mode} p50")
        ax.errorbar(xs, p50, yerr=[[0] * len(p50), [max(b - a, 0) for a, b in zip(p50, p95)]], fmt="none",
                    ecolor="black", capsize=2, linewidth=0.8)
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(stages))])
    ax.set_xticklabels(stages, rotation=20)
    ax.set_ylabel("ms (bar p50, whisker p95)")
    ax.legend(fontsize=8)
    ax.set_title("Latency per stage")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# writing and comparing
# --------------------------------------------------------------------------------------------


def write_questions(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Per-question rows as JSON lines; returns the count."""
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
            n += 1
    return n


def write_report(out_dir: str | Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write results.json, report.md, questions.jsonl and the plots into `out_dir` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modes = _modes(results)
    plots = []
    if modes and plot_recall_curves(modes, out / RECALL_PLOT):
        plots.append(RECALL_PLOT)
    if modes and plot_latency(modes, out / LATENCY_PLOT):
        plots.append(LATENCY_PLOT)
    full = {**results, "files": {"report": REPORT_FILE, "questions": QUESTIONS_FILE, "plots": plots}}
    tmp = out / (RESULTS_FILE + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, ensure_ascii=False, default=_json_default), encoding="utf-8")
    tmp.replace(out / RESULTS_FILE)  # atomic: a reader never sees half a results file
    (out / REPORT_FILE).write_text(render_markdown(results), encoding="utf-8")
    write_questions(out / QUESTIONS_FILE, rows)


def load_results(path: str | Path) -> dict[str, Any]:
    """results.json from a result folder (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise RagError(f"{p} not found; pass a folder written by `rag eval ... --out DIR`")
    return json.loads(p.read_text(encoding="utf-8"))


def _delta_rows(a: dict[str, Any], b: dict[str, Any], keys: Iterable[str]) -> list[dict[str, Any]]:
    rows = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        num = isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool)
        rows.append({"metric": key, "A": va, "B": vb, "delta": (vb - va) if num else None})
    return rows


def compare_results(a: dict[str, Any], b: dict[str, Any], a_name: str = "A", b_name: str = "B") -> str:
    """Markdown deltas (B - A) between two results dicts."""
    cols = [("metric", "metric"), ("A", a_name), ("B", b_name), ("delta", "B - A")]
    lines = [f"# Compare: A = {a_name}, B = {b_name}", ""]
    ha, hb = (a.get("dataset") or {}).get("hash"), (b.get("dataset") or {}).get("hash")
    if ha and hb and ha != hb:
        lines += ["> WARNING: the dataset hashes differ; the numbers are not comparable.", ""]
    ca, cb = a.get("config") or {}, b.get("config") or {}
    changed = [{"setting": k, "A": ca.get(k), "B": cb.get(k)} for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]
    if changed:
        lines += ["## Config differences", "", markdown_table(changed, [("setting", "setting"), ("A", a_name), ("B", b_name)]), ""]
    ma, mb = _modes(a), _modes(b)
    for mode in list(dict.fromkeys([*ma, *mb])):
        da, db = ma.get(mode) or {}, mb.get(mode) or {}
        metrics_a, metrics_b = dict(da.get("metrics") or {}), dict(db.get("metrics") or {})
        for data, target in ((da, metrics_a), (db, metrics_b)):
            for stage, s in (data.get("latency_ms") or {}).items():
                target[f"{stage} p50 ms"] = (s or {}).get("p50")
        keys = list(dict.fromkeys([*metrics_a, *metrics_b]))
        lines += [f"## Retrieval: {mode}", "", markdown_table(_delta_rows(metrics_a, metrics_b, keys), cols), ""]
    aa, ab = (a.get("answers") or {}).get("metrics") or {}, (b.get("answers") or {}).get("metrics") or {}
    if aa or ab:
        keys = [k for k in dict.fromkeys([*aa, *ab]) if not isinstance(aa.get(k, ab.get(k)), (dict, list))]
        lines += ["## Answers", "", markdown_table(_delta_rows(aa, ab, keys), cols), ""]
    return "\n".join(lines).rstrip() + "\n"


def compare(a_dir: str | Path, b_dir: str | Path) -> str:
    """Deltas between two result folders, as Markdown (for `rag eval compare A B`)."""
    return compare_results(load_results(a_dir), load_results(b_dir), str(a_dir), str(b_dir))


def compare_deltas(a_dir: str | Path, b_dir: str | Path) -> dict[str, Any]:
    """Numeric B - A deltas of two result folders, for `rag eval compare --json` (the Markdown is
    `compare`)."""
    a, b = load_results(a_dir), load_results(b_dir)

    def deltas(ma: dict[str, Any], mb: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key in dict.fromkeys([*ma, *mb]):
            va, vb = ma.get(key), mb.get(key)
            if isinstance(va, (dict, list)) or isinstance(vb, (dict, list)):
                continue
            num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
            out[key] = {"a": va, "b": vb, "delta": vb - va if num else None}
        return out

    modes_a = (a.get("retrieval") or {}).get("modes") or {}
    modes_b = (b.get("retrieval") or {}).get("modes") or {}
    return {
        "a": str(a_dir),
        "b": str(b_dir),
        "same_dataset": (a.get("dataset") or {}).get("hash") == (b.get("dataset") or {}).get("hash"),
        "retrieval": {mode: deltas((modes_a.get(mode) or {}).get("metrics") or {},
                                   (modes_b.get(mode) or {}).get("metrics") or {})
                      for mode in dict.fromkeys([*modes_a, *modes_b])},
        "answers": deltas(((a.get("answers") or {}).get("metrics")) or {},
                          ((b.get("answers") or {}).get("metrics")) or {}),
    }
