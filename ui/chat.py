"""The Chat tab: streaming answers with clickable citations, the evidence panel, the session settings.

Every question runs as the session's `Caller` through `Pipeline.ask`, so the caller's labels filter
retrieval inside Qdrant. Questions and the conversation carried into follow-ups are bounded
(`ui.session`), and everything the chat shows is rendered by `ui.render` with images and links disabled.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr

from rag.access import Caller
from rag.errors import RagError
from rag.models import Answer
from rag.pipeline import Pipeline
from ui import render
from ui.context import UIContext
from ui.session import (MAX_SHOWN_MESSAGES, MAX_SHOWN_TURNS, SessionOptions,
                        capped_history, question_problem, session_filter, session_settings)
from ui.settings_panel import SettingsPanel, build_settings_panel

log = logging.getLogger(__name__)


class ChatService:
    """Runs one question against a per-session view of the shared pipeline and streams the result."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def session_pipeline(self, options: SessionOptions) -> Pipeline:
        """A Pipeline with the session's settings that shares the loaded store and models."""
        settings = session_settings(self.pipeline.settings, options)
        reranker = self.pipeline.reranker if settings.mode == "rerank" else None
        return Pipeline(settings, store=self.pipeline.store, embedder=self.pipeline.embedder, reranker=reranker)

    def nothing_to_search(self, options: SessionOptions, caller: Caller) -> str | None:
        """A readable reason when no passage can be retrieved at all, else None."""
        store = self.pipeline.store
        if store.info() is None or store.count() == 0:
            return ("Nothing is indexed yet. Add documents in the Documents tab (a folder on the server "
                    "or uploaded files), then ask again.")
        flt = session_filter(caller, options)
        if store.count(flt) == 0:
            return ("No indexed passage is visible with the current filters "
                    f"(access labels: {', '.join(flt.acl) or 'none'}"
                    + (f"; file types: {', '.join(flt.file_types)}" if flt.file_types else "")
                    + "). Clear the file-type filter or ask the operator about access labels.")
        return None

    def stream(self, question: str, history: list[dict], options: SessionOptions,
               caller: Caller) -> Iterator[tuple[str, Any]]:
        """Yield ("token", text) while the answer streams, then ("answer", Answer) or ("error", message)."""
        tokens: queue.Queue = queue.Queue()
        done = object()
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                pipe = self.session_pipeline(options)
                result["answer"] = pipe.ask(question, flt=session_filter(caller, options), on_token=tokens.put,
                                            history=capped_history(history), caller=caller)
            except RagError as exc:
                result["error"] = str(exc)
            except Exception as exc:  # noqa: BLE001 - a UI must answer with a message, not a trace
                log.exception("answering a question of %d characters failed", len(question))
                result["error"] = f"internal error ({type(exc).__name__}); details are in the server log"
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


@dataclass
class ChatTab:
    """Components of the Chat tab that the app composes with other tabs."""

    settings_panel: SettingsPanel


def build_chat_tab(ctx: UIContext) -> ChatTab:
    """Add the Chat tab (inside `gr.Tabs`) and wire its events."""
    chat = ChatService(ctx.pipeline)
    # States live inside the tab: a non-Tab child of gr.Tabs shifts the tab labels.
    with gr.Tab("Chat", id="chat"):
        history_state = gr.State([])  # plain {"role", "content"} messages for Pipeline.ask
        turns_state = gr.State([])  # one evidence block (HTML) per answered turn
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                # No Gradio copy/share buttons: they copy the message HTML. Each answer carries its own
                # Copy button (clean Markdown with its sources, see render.copy_control).
                chatbot = gr.Chatbot(label="Conversation", elem_id="chat", height=480, feedback_options=None,
                                     sanitize_html=True, buttons=[],
                                     placeholder="Ask a question about your documents.")
                with gr.Row():
                    question = gr.Textbox(placeholder="Ask a question and press Enter", show_label=False,
                                          elem_id="question", scale=5, autofocus=True, submit_btn=False)
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask-btn")
                    clear = gr.Button("New conversation", scale=1)
                panel = build_settings_panel(ctx)
                with gr.Accordion("Answer details (JSON)", open=False):
                    answer_json = gr.JSON(label="Last answer")
            with gr.Column(scale=2):
                gr.Markdown("### Evidence")
                evidence = gr.HTML(render.evidence_panel([]), elem_id="evidence", max_height=720, padding=True)

    def respond(message: str, chat_messages: list, history: list, turns: list, options: SessionOptions,
                request: gr.Request):
        """Stream one answer into the chat and its evidence into the panel."""
        caller = ctx.caller(request)
        message = (message or "").strip()
        # The client sends the chat back with every request: keep only what is shown.
        chat_messages = list(chat_messages or [])[-MAX_SHOWN_MESSAGES:]
        turns = list(turns or [])[-MAX_SHOWN_TURNS:]
        if not message:
            yield chat_messages, render.evidence_panel(turns), "", None, history, turns
            return
        problem = question_problem(message, ctx.settings)
        if problem:
            # The question is not echoed (it may be megabytes); the box keeps it for editing.
            chat_messages.append({"role": "assistant", "content": render.error_message(problem)})
            yield chat_messages, render.evidence_panel(turns), gr.skip(), {"error": problem}, history, turns
            return
        chat_messages.append({"role": "user", "content": render.safe_text(message)})
        try:
            reason = chat.nothing_to_search(options, caller)
        except RagError as exc:
            reason = str(exc)
        if reason:
            chat_messages.append({"role": "assistant", "content": render.error_message(reason)})
            yield chat_messages, render.evidence_panel(turns), "", {"error": reason}, history, turns
            return
        chat_messages.append({"role": "assistant", "content": "_Searching the documents…_"})
        yield chat_messages, render.evidence_panel(turns), "", None, history, turns
        partial = ""
        for kind, value in chat.stream(message, history, options, caller):
            if kind == "token":
                partial += value
                chat_messages[-1] = {"role": "assistant", "content": render.streaming_text(partial)}
                yield chat_messages, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            elif kind == "error":
                chat_messages[-1] = {"role": "assistant", "content": render.error_message(value)}
                yield chat_messages, render.evidence_panel(turns), "", {"error": value}, history, turns
            else:
                answer: Answer = value
                turn = render.last_turn(turns) + 1
                turns = [*turns, render.evidence_block(answer, turn)][-MAX_SHOWN_TURNS:]
                chat_messages[-1] = {"role": "assistant", "content": render.answer_message(answer, turn)}
                history = capped_history([*history, {"role": "user", "content": message},
                                          {"role": "assistant", "content": answer.text}])
                yield chat_messages, render.evidence_panel(turns), "", answer.to_dict(), history, turns

    chat_outputs = [chatbot, evidence, question, answer_json, history_state, turns_state]
    chat_inputs = [question, chatbot, history_state, turns_state, panel.options_state]
    question.submit(respond, chat_inputs, chat_outputs, api_name="chat", concurrency_id="chat")
    send.click(respond, chat_inputs, chat_outputs, api_visibility="private", concurrency_id="chat")

    def new_conversation():
        return [], render.evidence_panel([]), "", None, [], []

    clear.click(new_conversation, None, chat_outputs, api_visibility="private")
    return ChatTab(settings_panel=panel)
