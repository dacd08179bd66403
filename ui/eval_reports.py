"""The Eval tab: open the report of a `rag eval` run (report.md, plots, results.json).

Only runs under the operator's eval roots (setting `eval_roots`, default `./results`) are opened; any
other folder, a missing one, or one without a report gets the same answer, so the tab reveals nothing
about the rest of the server. Plots are read as images (no file path is handed to the browser, no temp
copy is made), results.json and report.md are shown with secrets redacted, and images inside
report.md are not rendered (the plots are shown below it).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import gradio as gr

from rag.config import Settings
from rag.errors import RagError
from rag.secrets import redact_data
from ui.context import UIContext
from ui.paths import PathRefused, confine

log = logging.getLogger(__name__)

NOT_AVAILABLE = "This report is not available. Pick one of the listed runs."
MAX_PLOTS = 24
MAX_PLOT_BYTES = 10_000_000
MAX_TEXT_BYTES = 5_000_000
MAX_RUNS_LISTED = 200
_MD_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
# The config line older reports print for every run, an extractive one included (the settings' default model).
_LLM_MODEL_LINE_RE = re.compile(r"^- llm_model: .*$", re.MULTILINE)


class ReportUnavailable(RagError):
    """The one error the Eval tab shows for any folder it will not open."""

    def __init__(self) -> None:
        super().__init__(NOT_AVAILABLE)


def redact_results(data: Any, settings: Settings) -> Any:
    """results.json with secrets masked: values under secret-named keys, and secret-shaped strings."""
    return redact_data(data, settings.secrets())


def find_runs(roots: list[Path]) -> list[str]:
    """Run folders (holding report.md or results.json) under the roots, at most two levels down."""
    runs: list[str] = []
    for root in roots:
        for pattern in ("report.md", "results.json", "*/report.md", "*/results.json",
                        "*/*/report.md", "*/*/results.json"):
            for hit in sorted(root.glob(pattern)):
                rel = hit.parent.relative_to(root)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                name = str(hit.parent)
                if name not in runs:
                    runs.append(name)
                if len(runs) >= MAX_RUNS_LISTED:
                    return runs
    return runs


def _read_text(path: Path) -> str | None:
    if not path.is_file() or path.stat().st_size > MAX_TEXT_BYTES:
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def _load_plot(path: Path) -> Any | None:
    """A PNG as an in-memory image (None if it is not a readable PNG within the size limit)."""
    from PIL import Image  # Pillow comes with gradio

    if path.stat().st_size > MAX_PLOT_BYTES:
        return None
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                return None
            img.load()
            return img.copy()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def answerer_text(results: Any) -> str | None:
    """Who answered in a run, from its results.json: "LLM gpt-4o", "reader /models/minilm-squad2",
    "extractive (sentence answerer)" or "none (retrieval only)"; None when results.json says nothing usable.

    New runs record it (`config.answerer`, `config.answerer_model`, see evals.runs); for older runs it is
    derived from the LLM settings the run had (an LLM answered only with provider openai, or auto with an
    endpoint or key), never from `llm_model` alone, which every run carries.
    """
    if not isinstance(results, dict) or not isinstance(results.get("config"), dict):
        return None
    cfg = results["config"]
    kind = results.get("kind")
    answerer, model = cfg.get("answerer"), cfg.get("answerer_model")
    if kind == "retrieval" or answerer == "none":
        return "none (retrieval only)"
    if answerer is None or (answerer == "extractive" and "answerer_model" not in cfg):  # a run before the fix
        provider = cfg.get("llm_provider", "auto")
        llm = provider == "openai" or (provider == "auto" and bool(cfg.get("llm_base_url") or cfg.get("llm_api_key")))
        answerer, model = ("llm", cfg.get("llm_model")) if llm else ("extractive", None)
    labels = {"llm": "LLM", "reader": "reader", "extractive": "extractive (sentence answerer)"}
    text = "+".join(labels.get(a, str(a)) for a in str(answerer).split("+"))
    return f"{text} {model}" if model else text


def _with_answerer(markdown: str, answerer: str | None) -> str:
    """The report with one `- answerer: ...` line in place of a `- llm_model: ...` line (or after the first
    list of facts), so an extractive run never reads as if an LLM had answered."""
    if answerer is None:
        return markdown
    line = f"- answerer: {answerer}"
    if _LLM_MODEL_LINE_RE.search(markdown):
        return _LLM_MODEL_LINE_RE.sub(lambda _m: line, markdown, count=1)
    lines = markdown.splitlines()
    facts = [i for i, text in enumerate(lines) if text.startswith("- ")]
    at = facts[0] if facts else min(1, len(lines))
    while at < len(lines) and lines[at].startswith("- "):
        at += 1
    return "\n".join([*lines[:at], line, *lines[at:]]) + ("\n" if markdown.endswith("\n") else "")


def load_eval_folder(folder: str, roots: list[Path], settings: Settings) -> tuple[str, list[tuple[Any, str]], Any]:
    """(report.md as Markdown, [(plot image, caption)], results.json redacted) of one run under `roots`.

    Raises ReportUnavailable (one message for every reason) for anything outside the roots, missing,
    hidden, or without a report.
    """
    try:
        path = confine(folder, roots, what="report folder")
    except PathRefused:
        raise ReportUnavailable() from None
    if not path.is_dir():
        raise ReportUnavailable()
    report_text = _read_text(path / "report.md")
    results_text = _read_text(path / "results.json")
    pngs = (sorted(path.glob("*.png")) + sorted(path.glob("plots/*.png")))[:MAX_PLOTS]
    if report_text is None and results_text is None and not pngs:
        raise ReportUnavailable()
    if report_text is None:
        markdown = "_This run has no report.md._"
    else:
        # Plots appear in the gallery; an image link in the Markdown would make the browser fetch it.
        markdown = _MD_IMAGE_RE.sub(lambda m: f"_(plot: {m.group(1) or 'image'} — shown below)_",
                                    settings.redact(report_text))
    plots = [(img, p.name) for p in pngs if (img := _load_plot(p)) is not None]
    data: Any = None
    if results_text is not None:
        try:
            data = redact_results(json.loads(results_text), settings)
        except json.JSONDecodeError as exc:
            data = {"error": f"results.json is not valid JSON (line {exc.lineno})"}
    if report_text is not None:
        markdown = _with_answerer(markdown, answerer_text(data))
    return markdown, plots, data


def build_eval_tab(ctx: UIContext) -> tuple[gr.Dropdown, Any]:
    """Add the Eval tab and wire its events; returns (runs dropdown, its per-session refresh)."""
    with gr.Tab("Eval", id="eval"):
        roots_text = ", ".join(map(str, ctx.eval_roots)) or "(none configured)"
        with gr.Row():
            run = gr.Dropdown(choices=[], value=None, allow_custom_value=True, scale=4, elem_id="eval-run",
                              label="`rag eval` run (its --out folder)",
                              info=f"runs under {roots_text} (setting eval_roots)")
            open_btn = gr.Button("Open", scale=1, elem_id="eval-open")
        report = gr.Markdown(elem_id="eval-report")
        plots = gr.Gallery(label="Plots", columns=2, height="auto", format="png", object_fit="contain",
                           elem_id="eval-plots")
        with gr.Accordion("results.json", open=False):
            results = gr.JSON()

    def open_run(folder: str | None):
        try:
            return load_eval_folder((folder or "").strip(), ctx.eval_roots, ctx.settings)
        except ReportUnavailable as exc:
            return f"⚠️ {exc}", [], None
        except Exception:  # noqa: BLE001 - same answer whatever went wrong; details in the log
            log.exception("opening an eval report failed")
            return f"⚠️ {NOT_AVAILABLE}", [], None

    open_btn.click(open_run, [run], [report, plots, results], api_name="open_eval")
    run.input(open_run, [run], [report, plots, results], api_visibility="private")

    def refresh() -> Any:
        return gr.update(choices=find_runs(ctx.eval_roots), value=None)

    return run, refresh
