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
