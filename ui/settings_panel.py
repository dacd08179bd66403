"""The "Settings (this session)" panel beside the chat: retrieval and answering options of one session,
and a read-only view of the models and access labels the operator configured.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gradio as gr

from rag.access import Caller
from rag.errors import RagError
from ui.context import UIContext
from ui.session import ANSWERERS, RETRIEVAL_MODES, SessionOptions, parse_threshold, threshold_text


@dataclass
class SettingsPanel:
    """The components other tabs update (file types and models change when the index changes)."""

    options_state: gr.State
    file_types: gr.CheckboxGroup
    models_md: gr.Markdown


def models_markdown(ctx: UIContext, caller: Caller) -> str:
    """Which models and endpoint answer this UI, whether they are loaded yet, and the session's labels."""
    pipeline, st = ctx.pipeline, ctx.pipeline.settings
    loaded = pipeline.loaded_models()
    lines = [f"- **Embedding model:** `{st.embed_model}` "
             f"({'loaded' if loaded['embedder'] is not None else 'loads on first use'})"]
    if st.rerank_enabled:
        lines.append(f"- **Reranker:** `{st.rerank_model}` "
                     f"({'loaded' if loaded['reranker'] is not None else 'loads on first use'})")
    else:
        lines.append("- **Reranker:** off (`rerank_model = none`)")
    lines.extend(backend_lines(pipeline))
    if st.llm_enabled:
        lines.append(f"- **LLM:** `{st.llm_model}` at `{st.redact(st.llm_base_url or 'https://api.openai.com/v1')}` (operator setting)")
    else:
        lines.append("- **LLM:** none configured — answers are extractive quotes from the evidence")
    lines.append(f"- **Access labels of this UI:** {', '.join(caller.labels) or '(none)'} "
                 "(operator setting, `rag ui --acl`; sessions cannot change it)")
    return "\n".join(lines)


def backend_lines(pipeline: Any) -> list[str]:
    """Which backend (fp32/bf16/ONNX/int8) runs each model and which one built the collection's vectors."""
    try:
        backends = pipeline.model_backends()
    except RagError as exc:  # e.g. the store is locked by another process: say so, keep the panel
        return [f"- **Model backends:** unavailable ({exc})"]
    lines = [f"- **Embedding backend:** `{backends['embedder']}`"]
    if backends["reranker"] is not None:
        lines.append(f"- **Reranker backend:** `{backends['reranker']}`")
    vectors = backends["collection_vectors"]
    lines.append(f"- **Collection vectors from:** `{vectors}`" if vectors is not None
                 else "- **Collection vectors from:** (no collection yet: the first ingest records the embedding backend)")
    return lines


def file_type_choices(ctx: UIContext, caller: Caller) -> list[str]:
    """File types among the files this caller can see."""
    try:
        return sorted({f.get("file_type", "") for f in ctx.pipeline.list_files(caller=caller)} - {""})
    except RagError:
        return []


def build_settings_panel(ctx: UIContext) -> SettingsPanel:
    """The accordion with this session's options; wires each control to the session's options state.

    Values that depend on the caller (file types, labels) are filled when the page loads, not here:
    whatever is built here is in Gradio's public `/config` for every visitor.
    """
    settings = ctx.settings
    defaults = SessionOptions.from_settings(settings)
    options_state = gr.State(defaults)
    with gr.Accordion("Settings (this session)", open=False, elem_id="settings"):
        with gr.Row():
            mode = gr.Radio(RETRIEVAL_MODES, value=defaults.mode, label="Retrieval mode", scale=2, min_width=260)
            rerank = gr.Checkbox(value=defaults.rerank, label="Rerank with the cross-encoder",
                                 info="reorders the hybrid results" if settings.rerank_enabled
                                 else "unavailable: no reranker configured (operator)",
                                 interactive=settings.rerank_enabled)
            strict = gr.Checkbox(value=defaults.strict, label="Strict citations",
                                 info="drop answer sentences without a valid citation")
        with gr.Row():
            top_k = gr.Slider(1, 50, value=defaults.top_k, step=1, label="Passages retrieved (k)",
                              info="also caps the evidence passages")
            max_passages = gr.Slider(1, 20, value=defaults.max_passages, step=1, label="Max evidence passages")
            # A Textbox, not a Number: a Number shows 0 for "unset", which is a real floor.
            with gr.Column(min_width=200):
                min_score = gr.Textbox(value=threshold_text(defaults.min_score), label="Evidence threshold",
                                       placeholder="auto", elem_id="min-score",
                                       info="minimum passage score; empty = calibrated default")
                threshold_msg = gr.Markdown(elem_id="threshold-msg")
        with gr.Row():
            file_types = gr.CheckboxGroup([], value=[], label="File types (none selected = all)",
                                          elem_id="file-types")
            answerer = gr.Radio(
                [(ANSWERERS["llm"], "llm"), (ANSWERERS["extractive"], "extractive")]
                if settings.llm_enabled else [(ANSWERERS["extractive"], "extractive")],
                value=defaults.answerer, label="Answerer")
        models_md = gr.Markdown(elem_id="models")

    def setter(name: str):
        def update(options: SessionOptions, value: Any) -> SessionOptions:
            if value is None:
                return options
            return dataclasses.replace(options, **{name: value})
        return update

    for name, component in [("mode", mode), ("rerank", rerank), ("strict", strict), ("top_k", top_k),
                            ("max_passages", max_passages), ("file_types", file_types), ("answerer", answerer)]:
        component.change(setter(name), [options_state, component], options_state,
                         api_visibility="private", show_progress="hidden", queue=False)

    def set_threshold(options: SessionOptions, value: str) -> tuple[SessionOptions, str]:
        # The message is a component, not a toast: toasts of unqueued events never reach the browser.
        try:
            parsed = parse_threshold(value)
        except ValueError as exc:
            return options, f"⚠️ {exc} — the previous threshold is still in use."
        return dataclasses.replace(options, min_score=parsed), ""

    # Typed text is applied when complete (Enter or leaving the box), not at every keystroke.
    gr.on([min_score.submit, min_score.blur], set_threshold, [options_state, min_score],
          [options_state, threshold_msg], api_visibility="private", show_progress="hidden", queue=False)
    return SettingsPanel(options_state=options_state, file_types=file_types, models_md=models_md)
