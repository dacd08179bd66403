"""The Gradio app: composes the tabs (Chat with its settings panel, Documents, Eval, Explore).

Presentation only: every operation goes through `rag.pipeline.Pipeline`, the same facade the CLI and
the server use, as the session's `rag.access.Caller`.

Trust model
-----------
The UI is a server-side application; its visitors are less trusted than the operator who starts it.

- Who a session is: a `Caller` (labels + role). Without sign-in every session is the operator's
  `default_caller` (labels `settings.default_acl`, set with `rag ui --acl LABEL`; role editor). A server
  that signs visitors in passes `caller=` a function of the request. No session input reaches the
  labels, so a visitor can never widen what they see; the pipeline filters every search, listing,
  statistic, explore scan and removal by them.
- Nothing caller-specific is built into the components (Gradio's `/config` shows their values to
  anyone): file lists, choices and statistics are filled per session when the page loads.
- Per-session settings (gr.State) can only narrow or re-rank what the operator allows.
- The LLM endpoint, model and API key are operator settings, shown read-only and redacted.
- Server paths: folder ingest only under `ingest_roots` (none = disabled), eval reports only under
  `eval_roots`; hidden files are not read; uploads get unique names, a size limit while receiving, and
  state-changing requests from another site's page are refused (`ui.web`).
- Answers are rendered with Markdown images, links and raw HTML disabled (`ui.render.safe_text`).
- Errors are shown as one readable line; stack traces go to the server log only.
- Saved conversations (`ui.history`, SQLite in the state folder) belong to the signed-in user, else to
  the browser's random id cookie; every query names the owner, so nobody lists or opens another's.
  They keep the evidence as it was shown when answered (a later narrowing of labels does not edit them).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable

import gradio as gr

from rag.access import resolve_roots
from rag.config import Settings
from rag.errors import RagError
from rag.pipeline import Pipeline
from ui import render
from ui.chat import ChatService, build_chat_tab
from ui.context import CallerSource, UIContext, default_caller
from ui.documents import build_documents_tab
from ui.eval_reports import build_eval_tab, load_eval_folder
from ui.explore import build_explore_tab
from ui.history import BROWSER_ID_JS
from ui.session import (SessionOptions, effective_mode, parse_threshold, session_filter,  # noqa: F401 - API
                        session_settings)
from ui.viewer import gradio_resolver, viewer_router
from ui.web import server_options

log = logging.getLogger(__name__)

# Chat requests are CPU-bound (embedding, reranking) or wait on the LLM; a few at once keeps the
# queue moving without oversubscribing a small machine. Index writes are serialized.
CHAT_CONCURRENCY = 4
QUEUE_MAX_SIZE = 64
# Files Gradio caches for a session (uploads, plots) are deleted after an hour.
CACHE_CLEANUP = (3600, 3600)

__all__ = ["build_app", "launch", "warm_up", "server_options", "ChatService", "SessionOptions",
           "effective_mode", "parse_threshold", "session_filter", "session_settings", "load_eval_folder"]


def build_app(settings: Settings, pipeline: Pipeline | None = None, ingest_roots: Iterable[str | Path] | None = None,
              caller: CallerSource | None = None, eval_roots: Iterable[str | Path] | None = None,
              jobs: Any = None) -> gr.Blocks:
    """Build the Gradio Blocks app over one Pipeline (created from `settings` when not given).

    `ingest_roots`: server folders a visitor may index (default: the `ingest_roots` setting; none means
    folder ingest is disabled). `eval_roots`: folders whose `rag eval` runs the Eval tab may open
    (default: the `eval_roots` setting). `caller`: the session's Caller, or a function of the
    `gr.Request` returning one (default: `default_caller(settings)`). `jobs`: the server's ingest job queue
    (ingest.jobs.JobQueue, run by its writer): folder ingests become jobs and the Documents tab lists them live.
    Mount or launch it with `server_options(settings)` (upload limit and same-origin guard).
    """
    pipeline = pipeline or Pipeline(settings)
    settings = pipeline.settings
    ctx = UIContext(
        pipeline=pipeline, settings=settings, caller_source=caller or default_caller(settings),
        ingest_roots=resolve_roots(ingest_roots if ingest_roots is not None else settings.ingest_roots),
        eval_roots=resolve_roots(eval_roots if eval_roots is not None else settings.eval_roots),
        jobs=jobs,
    )
    with gr.Blocks(title="Ask your documents", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown("## Ask your documents\nAnswers quote your indexed files; click a citation "
                    "such as [1] to see the passage it rests on.")
        with gr.Tabs():
            chat = build_chat_tab(ctx)
            documents = build_documents_tab(ctx, chat.settings_panel)
            eval_run, eval_refresh = build_eval_tab(ctx)
            build_explore_tab(ctx)

        def on_load(request: gr.Request):
            """The session's own view: files, choices and statistics it may see, and the eval runs."""
            return (*documents.refresh(request), eval_refresh())

        # The citation click handler and styles, installed once per page load (however it is launched).
        demo.load(on_load, None, [*documents.outputs, eval_run], js=render.CITATION_JS,
                  api_visibility="private", show_progress="hidden")
        # This user's saved conversation reopens on every load (a reload keeps the conversation); the
        # script first gives a browser without sign-in its own id (ui.history).
        demo.load(chat.restore, chat.restore_inputs, chat.restore_outputs, js=BROWSER_ID_JS,
                  api_visibility="private", show_progress="hidden")

    demo.queue(default_concurrency_limit=CHAT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    demo.rag_pipeline = pipeline  # for tests and launch(); not part of the Gradio API
    # The source viewer's routes, served inside the Gradio app at <ui>/sources/ as the session's caller
    # (`server_options(settings, demo)` adds them to whatever app launches or mounts the UI).
    demo.rag_viewer_router = viewer_router(gradio_resolver(pipeline, ctx.caller), prefix="/sources",
                                           collection_param=False)
    return demo


def warm_up(pipeline: Pipeline) -> None:
    """Load the models before the first visitor asks, so the first answer is not slowed by loading."""
    started = time.perf_counter()
    try:
        _ = pipeline.embedder
        if pipeline.settings.rerank_enabled and pipeline.settings.mode == "rerank":
            _ = pipeline.reranker
    except RagError as exc:
        log.warning("model warm-up failed: %s (the UI will show the error on first use)", exc)
    log.info("models ready in %.1f s", time.perf_counter() - started)


def launch(settings: Settings) -> None:
    """Start the UI on settings.ui_host:settings.ui_port (127.0.0.1:7860 by default); blocks."""
    pipeline = Pipeline(settings)
    warm_up(pipeline)
    demo = build_app(settings, pipeline)
    try:
        demo.launch(server_name=settings.ui_host, server_port=settings.ui_port, share=False,
                    show_error=False, footer_links=[], **server_options(settings, demo))
    finally:
        pipeline.close()
