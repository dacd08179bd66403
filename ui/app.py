"""The Gradio app: Chat (streaming answers, clickable citations, evidence panel), Documents, Eval.

Presentation only: every operation goes through `rag.pipeline.Pipeline`, the same facade the CLI uses.

Trust model
-----------
The UI is a server-side application; its visitors are less trusted than the operator who starts it.

- Access labels (ACL) are an OPERATOR setting: `settings.default_acl`, set with `rag ui --acl LABEL`
  (or `RAG_DEFAULT_ACL`). Every query of every session is filtered with exactly those labels, inside
  Qdrant. The UI only *displays* them; no session input reaches the ACL filter, so a visitor can
  never widen what they see. (Run one UI per audience, each with its own labels, behind your own
  authentication, to serve several audiences.)
- Per-session settings (gr.State) can only narrow or re-rank what the operator allows: retrieval
  mode, k, reranking, evidence threshold, strict citations, file-type filter, and switching from the
  LLM to the offline extractive answerer.
- The LLM endpoint, model and API key are operator settings, shown read-only: letting a visitor point
  the server at an arbitrary URL would send the operator's key and the documents there.
- Documents uploaded through the UI are copied into `settings.upload_dir` under sanitized names
  (directories and `..` stripped) and indexed with the operator's labels. Ingesting a folder *path on
  the server* reads any file the server process can read; pass `ingest_roots` to `build_app` to
  confine it, and keep the default bind address 127.0.0.1 unless the audience is trusted.
- Errors are shown as one readable line; stack traces go to the server log only.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from rag.config import Settings
from rag.errors import RagError
from rag.models import Answer, SearchFilter
from rag.pipeline import Pipeline
from ui.explore import explore_tab
from ui import render
from ui.uploads import store_uploads

log = logging.getLogger(__name__)

# Chat requests are CPU-bound (embedding, reranking) or wait on the LLM; a few at once keeps the
# queue moving without oversubscribing a small machine. Index writes are serialized.
CHAT_CONCURRENCY = 4
QUEUE_MAX_SIZE = 64
RETRIEVAL_MODES = ["hybrid", "dense", "bm25"]
ANSWERERS = {"llm": "LLM endpoint", "extractive": "Extractive (quotes the evidence, no LLM)"}

SUMMARY_HEADERS = ["file", "status", "chunks", "pages", "reason"]
FILES_HEADERS = ["file", "type", "chunks", "acl", "path"]


@dataclass
class SessionOptions:
    """What one browser session may change. Never holds access labels (see the trust model)."""

    mode: str = "hybrid"
    rerank: bool = True
    top_k: int = 10
    max_passages: int = 6
    min_score: float | None = None
    strict: bool = True
    file_types: list[str] = field(default_factory=list)
    answerer: str = "llm"

    @classmethod
    def from_settings(cls, settings: Settings) -> "SessionOptions":
        mode = "hybrid" if settings.mode == "rerank" else settings.mode
        return cls(
            mode=mode,
            rerank=settings.rerank_enabled and settings.mode == "rerank",
            top_k=settings.top_k,
            max_passages=settings.evidence_max_passages,
            min_score=settings.evidence_min_score,
            strict=settings.strict_citations,
            answerer="llm" if settings.llm_enabled else "extractive",
        )


def _threshold_text(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def parse_threshold(text: str | float | None) -> float | None:
    """The evidence threshold from the settings box: empty/"auto" = None (calibrated default)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    text = text.strip().lower()
    if text in ("", "auto", "default", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"evidence threshold {text!r} is not a number; use e.g. -2 or 0.3, or leave it empty") from None


def effective_mode(options: SessionOptions, settings: Settings) -> str:
    """The retrieval mode to run: the cross-encoder reranks the hybrid list when enabled."""
    if options.mode == "hybrid" and options.rerank and settings.rerank_enabled:
        return "rerank"
    return options.mode if options.mode in RETRIEVAL_MODES else "hybrid"


def session_settings(settings: Settings, options: SessionOptions) -> Settings:
    """The operator's settings narrowed by one session's options (ACL and LLM endpoint untouched)."""
    provider = settings.llm_provider
    if options.answerer == "extractive" or not settings.llm_enabled:
        provider = "extractive"
    return dataclasses.replace(
        settings,
        mode=effective_mode(options, settings),
        top_k=max(1, min(int(options.top_k), 50)),
        evidence_max_passages=max(1, min(int(options.max_passages), 20)),
        evidence_min_score=options.min_score,
        strict_citations=bool(options.strict),
        llm_provider=provider,
    )


def session_filter(settings: Settings, options: SessionOptions) -> SearchFilter:
    """The operator's ACL labels plus the session's file-type restriction."""
    return SearchFilter(acl=list(settings.default_acl), file_types=list(options.file_types) or None)


class ChatService:
    """Runs one question against a per-session view of the shared pipeline and streams the result."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def session_pipeline(self, options: SessionOptions) -> Pipeline:
        """A Pipeline with the session's settings that shares the loaded store and models."""
        settings = session_settings(self.pipeline.settings, options)
        reranker = self.pipeline.reranker if settings.mode == "rerank" else None
        return Pipeline(settings, store=self.pipeline.store, embedder=self.pipeline.embedder, reranker=reranker)

    def nothing_to_search(self, options: SessionOptions) -> str | None:
        """A readable reason when no passage can be retrieved at all, else None."""
        store = self.pipeline.store
        if store.info() is None or store.count() == 0:
            return ("Nothing is indexed yet. Add documents in the Documents tab (a folder on the server "
                    "or uploaded files), then ask again.")
        flt = session_filter(self.pipeline.settings, options)
        if store.count(flt) == 0:
            return ("No indexed passage is visible with the current filters "
                    f"(access labels: {', '.join(flt.acl) or 'none'}"
                    + (f"; file types: {', '.join(flt.file_types)}" if flt.file_types else "")
                    + "). Clear the file-type filter or ask the operator about access labels.")
        return None

    def stream(self, question: str, history: list[dict], options: SessionOptions) -> Iterator[tuple[str, Any]]:
        """Yield ("token", text) while the answer streams, then ("answer", Answer) or ("error", message)."""
        tokens: queue.Queue = queue.Queue()
        done = object()
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                pipe = self.session_pipeline(options)
                result["answer"] = pipe.ask(question, flt=session_filter(pipe.settings, options),
                                            on_token=tokens.put, history=history)
            except RagError as exc:
                result["error"] = str(exc)
            except Exception as exc:  # noqa: BLE001 - a UI must answer with a message, not a trace
                log.exception("answering %r failed", question)
                result["error"] = f"internal error ({type(exc).__name__}: {exc}); details are in the server log"
            finally:
                tokens.put(done)

        threading.Thread(target=run, name="rag-ask", daemon=True).start()
        while True:
            item = tokens.get()
            batch = [item]
            while item is not done:  # drain what arrived meanwhile: one UI update per burst
                try:
                    item = tokens.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            text = "".join(t for t in batch if t is not done)
            if text:
                yield "token", text
            if batch[-1] is done:
                break
        if "answer" in result:
            yield "answer", result["answer"]
        else:
            yield "error", result.get("error", "no answer was produced")


# -- formatting of tables and panels ----------------------------------------------------------------

def files_rows(pipeline: Pipeline) -> list[list]:
    """Indexed files with chunk counts, for the Documents tab."""
    return [[render.file_label(f["file_path"]), f.get("file_type", ""), f.get("chunks", 0),
             ", ".join(f.get("acl", [])), f["file_path"]] for f in pipeline.list_files()]


def summary_rows(report, display: dict[str, str] | None = None) -> list[list]:
    """One row per file of an ingest report: indexed / skipped / failed with the reason."""
    display = display or {}
    rows = []
    for outcome in report.files:
        name = display.get(str(outcome.path)) or render.file_label(str(outcome.path))
        status = "skipped (unchanged)" if outcome.status == "skipped" and not outcome.reason else outcome.status
        rows.append([name, status, outcome.chunks, outcome.pages if outcome.pages is not None else "",
                     outcome.reason or ("no text layer: needs OCR" if outcome.needs_ocr else "")])
    return rows


def summary_text(report) -> str:
    return (f"**{report.indexed} indexed**, {report.skipped} unchanged, **{report.failed} failed**, "
            f"{report.removed} removed, {report.unsupported} unsupported — "
            f"{report.chunks_added} chunk{'' if report.chunks_added == 1 else 's'} added in {report.seconds:.1f} s")


def stats_markdown(pipeline: Pipeline) -> str:
    """Collection statistics as Markdown."""
    try:
        s = pipeline.stats()
    except RagError as exc:
        return f"⚠️ Statistics unavailable: {exc}"
    if not s.get("exists"):
        return f"Collection **{s['collection']}** is empty: nothing indexed yet."
    types = ", ".join(f"{k}: {v}" for k, v in s.get("chunks_per_file_type", {}).items()) or "–"
    size_mb = (s.get("disk_bytes") or 0) / 1e6
    return (f"Collection **{s['collection']}** ({s['backend']}, {s['location']}) — **{s['files']} files**, "
            f"**{s['points']} chunks** ({types}); embedding model `{s['embed_model']}` ({s['dimension']} dims); "
            f"labels in the index: {', '.join(s.get('acl_labels', [])) or '–'}; {size_mb:.1f} MB on disk.")


def models_markdown(pipeline: Pipeline) -> str:
    """Which models and endpoint answer this UI, and whether they are loaded yet."""
    st = pipeline.settings
    loaded = pipeline.loaded_models()
    embed_loaded = loaded["embedder"] is not None
    rerank_loaded = loaded["reranker"] is not None
    lines = [f"- **Embedding model:** `{st.embed_model}` ({'loaded' if embed_loaded else 'loads on first use'})"]
    if st.rerank_enabled:
        lines.append(f"- **Reranker:** `{st.rerank_model}` ({'loaded' if rerank_loaded else 'loads on first use'})")
    else:
        lines.append("- **Reranker:** off (`rerank_model = none`)")
    if st.llm_enabled:
        endpoint = st.llm_base_url or "https://api.openai.com/v1"
        lines.append(f"- **LLM:** `{st.llm_model}` at `{endpoint}` (operator setting)")
    else:
        lines.append("- **LLM:** none configured — answers are extractive quotes from the evidence")
    lines.append(f"- **Access labels of this UI:** {', '.join(st.default_acl) or '(none)'} "
                 "(operator setting, `rag ui --acl`; sessions cannot change it)")
    return "\n".join(lines)


def file_type_choices(pipeline: Pipeline) -> list[str]:
    try:
        return sorted({f.get("file_type", "") for f in pipeline.list_files()} - {""})
    except RagError:
        return []


def load_eval_folder(folder: str) -> tuple[str, list[str], Any]:
    """report.md, the PNG plots (copied to a temp folder Gradio may serve) and results.json of a run."""
    path = Path(folder or "").expanduser()
    if not folder or not path.is_dir():
        raise RagError(f"{folder or '(empty)'}: not a folder; give the --out folder of a `rag eval` run")
    report = path / "report.md"
    results = path / "results.json"
    pngs = sorted(path.glob("*.png")) + sorted(path.glob("plots/*.png"))
    if not report.is_file() and not results.is_file() and not pngs:
        raise RagError(f"{path}: no report.md, results.json or *.png; is this a `rag eval --out` folder?")
    markdown = report.read_text(encoding="utf-8", errors="replace") if report.is_file() else \
        f"_{path} has no report.md_"
    # Gradio serves only files under its cache, the temp dir or the working directory.
    staging = Path(tempfile.mkdtemp(prefix="rag-eval-"))
    images = []
    for png in pngs:
        target = staging / png.name
        shutil.copyfile(png, target)
        images.append(str(target))
    data: Any = None
    if results.is_file():
        import json

        try:
            data = json.loads(results.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            data = {"error": f"{results}: invalid JSON ({exc})"}
    return markdown, images, data


def _within(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


# -- the app ----------------------------------------------------------------------------------------

def build_app(settings: Settings, pipeline: Pipeline | None = None,
              ingest_roots: list[str] | None = None) -> gr.Blocks:
    """Build the Gradio Blocks app over one Pipeline (created from `settings` when not given).

    `ingest_roots`: when set, server-side folder ingest is limited to paths under these folders.
    """
    pipeline = pipeline or Pipeline(settings)
    settings = pipeline.settings
    chat = ChatService(pipeline)
    roots = [Path(r).expanduser().resolve() for r in ingest_roots] if ingest_roots else None
    defaults = SessionOptions.from_settings(settings)

    with gr.Blocks(title="Ask your documents", analytics_enabled=False) as demo:
        options_state = gr.State(defaults)
        history_state = gr.State([])  # plain {"role", "content"} messages for Pipeline.ask
        turns_state = gr.State([])  # one evidence block (HTML) per answered turn

        gr.Markdown("## Ask your documents\nAnswers quote your indexed files; click a citation "
                    "such as [1] to see the passage it rests on.")
        with gr.Tabs():
            # ---------------------------------------------------------------- Chat
            with gr.Tab("Chat", id="chat"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(label="Conversation", elem_id="chat", height=480,
                                             feedback_options=None, sanitize_html=True,
                                             placeholder="Ask a question about your documents.")
                        with gr.Row():
                            question = gr.Textbox(placeholder="Ask a question and press Enter",
                                                  show_label=False, elem_id="question", scale=5,
                                                  autofocus=True, submit_btn=False)
                            send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask-btn")
                            clear = gr.Button("New conversation", scale=1)
                        with gr.Accordion("Settings (this session)", open=False, elem_id="settings"):
                            with gr.Row():
                                mode = gr.Radio(RETRIEVAL_MODES, value=defaults.mode, label="Retrieval mode",
                                                scale=2, min_width=260)
                                rerank = gr.Checkbox(value=defaults.rerank, label="Rerank with the cross-encoder",
                                                     info="reorders the hybrid results" if settings.rerank_enabled
                                                     else "unavailable: no reranker configured (operator)",
                                                     interactive=settings.rerank_enabled)
                                strict = gr.Checkbox(value=defaults.strict, label="Strict citations",
                                                     info="drop answer sentences without a valid citation")
                            with gr.Row():
                                top_k = gr.Slider(1, 50, value=defaults.top_k, step=1, label="Passages retrieved (k)")
                                max_passages = gr.Slider(1, 20, value=defaults.max_passages, step=1,
                                                         label="Max evidence passages")
                                # A Textbox, not a Number: a Number shows 0 for "unset", which is a real floor.
                                min_score = gr.Textbox(value=_threshold_text(defaults.min_score),
                                                       label="Evidence threshold", placeholder="auto",
                                                       info="minimum passage score; empty = calibrated default")
                            with gr.Row():
                                file_types = gr.CheckboxGroup(file_type_choices(pipeline), value=[],
                                                              label="File types (none selected = all)")
                                answerer = gr.Radio(
                                    [(ANSWERERS["llm"], "llm"), (ANSWERERS["extractive"], "extractive")]
                                    if settings.llm_enabled else [(ANSWERERS["extractive"], "extractive")],
                                    value=defaults.answerer, label="Answerer")
                            models_md = gr.Markdown(models_markdown(pipeline), elem_id="models")
                        with gr.Accordion("Answer details (JSON)", open=False):
                            answer_json = gr.JSON(label="Last answer")
                    with gr.Column(scale=2):
                        gr.Markdown("### Evidence")
                        evidence = gr.HTML(render.evidence_panel([]), elem_id="evidence",
                                           js_on_load=None, max_height=720, padding=True)

            # ---------------------------------------------------------------- Documents
            with gr.Tab("Documents", id="documents"):
                stats_md = gr.Markdown(stats_markdown(pipeline), elem_id="stats")
                with gr.Row():
                    with gr.Column():
                        folder = gr.Textbox(label="Folder or file on the server", placeholder="/path/to/documents",
                                            elem_id="folder")
                        ingest_folder_btn = gr.Button("Index folder", variant="primary")
                    with gr.Column():
                        uploads = gr.File(label="Upload files", file_count="multiple", elem_id="uploads")
                        ingest_upload_btn = gr.Button("Index uploaded files", variant="primary",
                                                      elem_id="index-uploads")
                ingest_status = gr.Markdown(elem_id="ingest-status")
                summary = gr.Dataframe(headers=SUMMARY_HEADERS, value=[], label="Last ingest: per-file summary",
                                       interactive=False, wrap=True, elem_id="summary")
                files_table = gr.Dataframe(headers=FILES_HEADERS, value=files_rows_safe(pipeline),
                                           label="Indexed files", interactive=False, wrap=True, elem_id="files")
                with gr.Row():
                    remove_choice = gr.Dropdown(choices=[r[4] for r in files_rows_safe(pipeline)],
                                                label="Remove a file from the index", scale=4)
                    remove_btn = gr.Button("Remove", variant="stop", scale=1)
                    refresh_btn = gr.Button("Refresh", scale=1)

            # ---------------------------------------------------------------- Eval
            with gr.Tab("Eval", id="eval"):
                with gr.Row():
                    eval_dir = gr.Textbox(label="`rag eval` result folder (its --out)", scale=4,
                                          placeholder="/path/to/eval-output")
                    eval_btn = gr.Button("Open", scale=1)
                eval_report = gr.Markdown()
                eval_plots = gr.Gallery(label="Plots", columns=2, height="auto", format="png")
                with gr.Accordion("results.json", open=False):
                    eval_json = gr.JSON()

            explore_tab(pipeline)  # ui/explore.py: embedding-space plot + nearest neighbours

        # ---------------------------------------------------------------- events: chat
        def respond(message: str, chat_messages: list, history: list, turns: list, options: SessionOptions):
            """Stream one answer into the chat and its evidence into the panel."""
            message = (message or "").strip()
            chat_messages = list(chat_messages or [])
            if not message:
                yield chat_messages, render.evidence_panel(turns), "", None, history, turns
                return
            chat_messages.append({"role": "user", "content": message})
            reason = None
            try:
                reason = chat.nothing_to_search(options)
            except RagError as exc:
                reason = str(exc)
            if reason:
                chat_messages.append({"role": "assistant", "content": render.error_message(reason)})
                yield chat_messages, render.evidence_panel(turns), "", {"error": reason}, history, turns
                return
            chat_messages.append({"role": "assistant", "content": "_Searching the documents…_"})
            yield chat_messages, render.evidence_panel(turns), "", None, history, turns
            partial = ""
            for kind, value in chat.stream(message, history, options):
                if kind == "token":
                    partial += value
                    chat_messages[-1] = {"role": "assistant", "content": render.streaming_text(partial)}
                    yield chat_messages, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                elif kind == "error":
                    chat_messages[-1] = {"role": "assistant", "content": render.error_message(value)}
                    yield chat_messages, render.evidence_panel(turns), "", {"error": value}, history, turns
                else:
                    answer: Answer = value
                    turn = len(turns) + 1
                    turns = [*turns, render.evidence_block(answer, turn)]
                    chat_messages[-1] = {"role": "assistant", "content": render.answer_message(answer, turn)}
                    history = [*history, {"role": "user", "content": message},
                               {"role": "assistant", "content": answer.text}]
                    yield chat_messages, render.evidence_panel(turns), "", answer.to_dict(), history, turns

        chat_outputs = [chatbot, evidence, question, answer_json, history_state, turns_state]
        chat_inputs = [question, chatbot, history_state, turns_state, options_state]
        question.submit(respond, chat_inputs, chat_outputs, api_name="chat", concurrency_id="chat")
        send.click(respond, chat_inputs, chat_outputs, api_visibility="private", concurrency_id="chat")

        def new_conversation():
            return [], render.evidence_panel([]), "", None, [], []

        clear.click(new_conversation, None, chat_outputs, api_visibility="private")

        def setter(name: str):
            def update(options: SessionOptions, value):
                if name == "min_score":
                    try:
                        value = parse_threshold(value)
                    except ValueError as exc:
                        gr.Warning(str(exc))
                        return options
                elif value is None:
                    return options
                return dataclasses.replace(options, **{name: value})
            return update

        for name, component in [("mode", mode), ("rerank", rerank), ("strict", strict), ("top_k", top_k),
                                ("max_passages", max_passages), ("file_types", file_types), ("answerer", answerer)]:
            component.change(setter(name), [options_state, component], options_state,
                             api_visibility="private", show_progress="hidden", queue=False)
        # Typed text is applied when complete (Enter or leaving the box), not at every keystroke.
        gr.on([min_score.submit, min_score.blur], setter("min_score"), [options_state, min_score], options_state,
              api_visibility="private", show_progress="hidden", queue=False)

        # The citation click handler and styles, installed once per page load (however it is launched).
        demo.load(None, None, None, js=render.CITATION_JS)

        # ---------------------------------------------------------------- events: documents
        def after_index_change(rows_summary, status):
            rows = files_rows_safe(pipeline)
            return (rows_summary, status, rows, gr.update(choices=[r[4] for r in rows], value=None),
                    stats_markdown(pipeline), gr.update(choices=file_type_choices(pipeline)),
                    models_markdown(pipeline))

        doc_outputs = [summary, ingest_status, files_table, remove_choice, stats_md, file_types, models_md]

        def ingest_folder(path: str, progress=gr.Progress(track_tqdm=True)):
            target = Path((path or "").strip()).expanduser()
            if not str(path or "").strip():
                gr.Warning("Enter a folder or file path on the server first.")
                return after_index_change([], "")
            resolved = target.resolve()
            if roots is not None and not _within(resolved, roots):
                msg = f"{path}: outside the folders this UI may index ({', '.join(map(str, roots))})"
                gr.Warning(msg)
                return after_index_change([], f"⚠️ {msg}")
            if not resolved.exists():
                msg = f"{path}: no such file or folder on the server"
                gr.Warning(msg)
                return after_index_change([], f"⚠️ {msg}")
            return _run_ingest([resolved], {}, progress)

        def ingest_uploads(files: list | None, progress=gr.Progress(track_tqdm=True)):
            if not files:
                gr.Warning("Choose files to upload first.")
                return after_index_change([], "")
            sources = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]
            try:
                stored = store_uploads(sources, settings.upload_dir)
            except (RagError, OSError) as exc:
                gr.Warning(str(exc))
                return after_index_change([], f"⚠️ {exc}")
            display = {str(p): name for name, p in stored}
            return _run_ingest([p for _, p in stored], display, progress)

        def _run_ingest(paths: list[Path], display: dict[str, str], progress):
            progress(0, desc="Indexing")
            try:
                report = pipeline.ingest([str(p) for p in paths], acl=list(settings.default_acl), progress=True)
            except RagError as exc:
                gr.Warning(str(exc))
                return after_index_change([], f"⚠️ Indexing failed: {exc}")
            except Exception as exc:  # noqa: BLE001
                log.exception("ingest of %s failed", paths)
                msg = f"Indexing failed: internal error ({type(exc).__name__}: {exc}); details are in the server log"
                gr.Warning(msg)
                return after_index_change([], f"⚠️ {msg}")
            if report.failed:
                gr.Warning(f"{report.failed} file(s) failed to index; see the summary table.")
            return after_index_change(summary_rows(report, display), summary_text(report))

        ingest_folder_btn.click(ingest_folder, [folder], doc_outputs, api_name="ingest_folder",
                                concurrency_id="index-write", concurrency_limit=1)
        ingest_upload_btn.click(ingest_uploads, [uploads], doc_outputs, api_name="ingest_uploads",
                                concurrency_id="index-write", concurrency_limit=1)

        def remove_file(path: str | None):
            if not path:
                gr.Warning("Pick a file to remove first.")
                return after_index_change(gr.skip(), "")
            try:
                removed = pipeline.remove_file(path)
            except RagError as exc:
                gr.Warning(str(exc))
                return after_index_change(gr.skip(), f"⚠️ {exc}")
            return after_index_change(gr.skip(), f"Removed **{render.file_label(path)}** ({removed} chunks).")

        remove_btn.click(remove_file, [remove_choice], doc_outputs, api_name="remove_file",
                         concurrency_id="index-write", concurrency_limit=1)
        refresh_btn.click(lambda: after_index_change(gr.skip(), ""), None, doc_outputs, api_visibility="private")

        # ---------------------------------------------------------------- events: eval
        def open_eval(folder_path: str):
            try:
                markdown, images, data = load_eval_folder((folder_path or "").strip())
            except RagError as exc:
                gr.Warning(str(exc))
                return f"⚠️ {exc}", [], None
            return markdown, images, data

        eval_btn.click(open_eval, [eval_dir], [eval_report, eval_plots, eval_json], api_name="open_eval")
        eval_dir.submit(open_eval, [eval_dir], [eval_report, eval_plots, eval_json], api_visibility="private")

    demo.queue(default_concurrency_limit=CHAT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    demo.rag_pipeline = pipeline  # for tests and launch(); not part of the Gradio API
    return demo


def files_rows_safe(pipeline: Pipeline) -> list[list]:
    """files_rows, or no rows (with a log line) when the store cannot be read yet."""
    try:
        return files_rows(pipeline)
    except RagError as exc:
        log.warning("cannot list indexed files: %s", exc)
        return []


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
                    show_error=False, footer_links=[])
    finally:
        pipeline.close()
