"""The "Explore" tab: the collection's embedding space (rag.explore) and any chunk's nearest neighbours.

Self-contained: `explore_tab(pipeline)` is called inside the app's `gr.Tabs()` and wires its own events.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

NEIGHBOUR_HEADERS = ["rank", "file", "section", "text"]


def _choices(data: Any) -> list[tuple[str, int]]:
    return [(f"{i}: {data.files[i]} — {' '.join(data.texts[i].split())[:60]}", i) for i in range(len(data))]


def explore_tab(pipeline: Any) -> None:
    """Add the Explore tab: plot (coloured by cluster or file, a query and its hits marked) + neighbours."""
    import gradio as gr

    from rag import explore

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
        state = gr.State(None)

    def render(q: str, colour: str, how: str):
        try:
            if pipeline.store.info() is None:
                return None, "No collection yet: ingest documents first.", gr.update(choices=[]), None
            data = explore.build(pipeline, query=(q or "").strip() or None, method=how)
            fig = explore.figure(data, colour)
        except Exception as exc:  # shown in the tab; the app keeps running
            log.exception("explore failed")
            return None, f"**Error:** {exc}", gr.update(choices=[]), None
        labels = "; ".join(f"{k}: {v}" for k, v in data.cluster_labels.items())
        msg = f"{len(data)} chunks. Clusters — {labels}"
        if data.query:
            msg += f"  \nQuery ★ and its {len(data.hit_rows)} retrieved chunks (circled) are marked."
        return fig, msg, gr.update(choices=_choices(data), value=None), data

    def show(row: Any, data: Any):
        if data is None or row is None:
            return None
        return [[r["rank"], r["file"], r["section"], r["text"]] for r in explore.neighbour_rows(data, int(row))]

    draw.click(render, [query, color, method], [plot, status, chunk, state])
    chunk.change(show, [chunk, state], [neighbours])
