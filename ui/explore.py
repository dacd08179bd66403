"""The Explore tab: the embedding space of the chunks the session may see (rag.explore) and any chunk's
nearest neighbours.

The scan, the clusters (and their labels, which quote chunk words), the query's hits and the neighbours
are all computed from the caller's visible chunks only: `rag.explore.build(..., caller=...)` filters
inside the store.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from rag import explore
from rag.errors import RagError
from ui.context import UIContext

log = logging.getLogger(__name__)

NEIGHBOUR_HEADERS = ["rank", "file", "section", "text"]


def _choices(data: Any) -> list[tuple[str, int]]:
    return [(f"{i}: {data.files[i]} — {' '.join(data.texts[i].split())[:60]}", i) for i in range(len(data))]


def build_explore_tab(ctx: UIContext) -> None:
    """Add the Explore tab: plot (coloured by cluster or file, a query and its hits marked) + neighbours."""
    with gr.Tab("Explore", id="explore"):
        with gr.Row():
            query = gr.Textbox(label="Query to mark (optional)", scale=3)
            color = gr.Radio(["cluster", "file"], value="cluster", label="Colour by", scale=1)
            method = gr.Radio(["pca", "tsne"], value="pca", label="Projection", scale=1)
            draw = gr.Button("Plot", variant="primary", scale=1)
        status = gr.Markdown()
        plot = gr.Plot(label="Embedding space")
        chunk = gr.Dropdown(label="Chunk (its nearest neighbours in the full embedding space)", choices=[],
                            interactive=True)
        neighbours = gr.Dataframe(headers=NEIGHBOUR_HEADERS, interactive=False, wrap=True)
        state = gr.State(None)  # the session's ExploreData: never sent to or accepted from a client

    def render(q: str, colour: str, how: str, request: gr.Request):
        caller = ctx.caller(request)
        try:
            if ctx.pipeline.store.info() is None:
                return None, "No collection yet: ingest documents first.", gr.update(choices=[]), None
            data = explore.build(ctx.pipeline, query=(q or "").strip()[:2000] or None, method=how, caller=caller)
            if len(data) == 0:
                return None, "No chunk is visible to this session.", gr.update(choices=[], value=None), None
            fig = explore.figure(data, colour)
        except RagError as exc:
            return None, f"**Error:** {exc}", gr.update(choices=[]), None
        except Exception as exc:  # noqa: BLE001 - shown in the tab; the app keeps running
            log.exception("explore failed")
            return None, f"**Error:** internal error ({type(exc).__name__}); details are in the server log", \
                gr.update(choices=[]), None
        labels = "; ".join(f"{k}: {v}" for k, v in data.cluster_labels.items())
        msg = f"{len(data)} chunks. Clusters — {labels}"
        if data.query:
            msg += f"  \nQuery ★ and its {len(data.hit_rows)} retrieved chunks (circled) are marked."
        return fig, msg, gr.update(choices=_choices(data), value=None), data

    def show(row: Any, data: Any):
        if data is None or row is None:
            return None
        try:
            index = int(row)
        except (TypeError, ValueError):
            return None
        if not 0 <= index < len(data):
            return None
        return [[r["rank"], r["file"], r["section"], r["text"]] for r in explore.neighbour_rows(data, index)]

    draw.click(render, [query, color, method], [plot, status, chunk, state], api_name="explore_plot")
    chunk.change(show, [chunk, state], [neighbours], api_name="explore_neighbours")
