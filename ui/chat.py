"""The Chat tab: streaming answers with clickable citations, the evidence panel, the session settings,
a Stop button, and the saved conversations of this user (`ui.history`, listed by `ui.history_panel`).

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
from ui.history import ConversationStore, history_db_path
from ui.history_panel import build_history_panel, conversation_view, owner_of_request, wire_history_panel
from ui.session import (MAX_SHOWN_MESSAGES, MAX_SHOWN_TURNS, SessionOptions,
                        capped_history, question_problem, session_filter, session_settings)
from ui.settings_panel import SettingsPanel, build_settings_panel

log = logging.getLogger(__name__)

STOPPED_NOTE = '<div class="rag-note rag-stopped">⏹ Stopped: the answer was not finished.</div>'
_STREAMING = ("▍", "_Searching the documents…_")


STOP_POLL_S = 0.1  # how often a waiting answer checks whether its reader pressed Stop
NEW_WAIT_S = 3.0  # "New conversation" waits this long for a streaming answer to stop


class AnswerStopped(Exception):
    """Raised inside the answering thread when the browser stopped the answer (ends the LLM stream)."""


class LiveAnswers:
    """The answer each browser session is streaming, so its Stop button can end it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, tuple[threading.Event, threading.Event]] = {}

    def start(self, session: str | None) -> tuple[threading.Event, threading.Event]:
        """A new answer of `session`: (stop, ended); set `stop` to stop it, `end` sets `ended`."""
        entry = (threading.Event(), threading.Event())
        if session:
            with self._lock:
                self._live[session] = entry
        return entry

    def end(self, session: str | None, entry: tuple[threading.Event, threading.Event]) -> None:
        entry[1].set()
        with self._lock:
            if session and self._live.get(session) is entry:
                del self._live[session]

    def running(self, session: str | None) -> bool:
        """True while the session has an answer streaming."""
        with self._lock:
            return bool(session) and session in self._live

    def stop(self, session: str | None, wait_s: float = 0.0) -> bool:
        """Ask the session's streaming answer to stop (waiting up to `wait_s` for its last update);
        False when it has none."""
        with self._lock:
            entry = self._live.get(session or "")
        if entry is None:
            return False
        entry[0].set()
        entry[1].wait(wait_s)
        return True


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

    def stream(self, question: str, history: list[dict], options: SessionOptions, caller: Caller,
               stop: threading.Event | None = None) -> Iterator[tuple[str, Any]]:
        """Yield ("token", text) while the answer streams, then ("answer", Answer) or ("error", message);
        ("stopped", None) as soon as `stop` is set (the answering thread then ends at its next token)."""
        tokens: queue.Queue = queue.Queue()
        done = object()
        result: dict[str, Any] = {}
        stopped = threading.Event()

        def on_token(text: str) -> None:
            if stopped.is_set():  # the reader stopped or went away: end the LLM stream instead of finishing it
                raise AnswerStopped()
            tokens.put(text)

        def run() -> None:
            try:
                pipe = self.session_pipeline(options)
                result["answer"] = pipe.ask(question, flt=session_filter(caller, options), on_token=on_token,
                                            history=capped_history(history), caller=caller)
            except AnswerStopped:
                log.info("an answer was stopped by its reader")
            except RagError as exc:
                result["error"] = str(exc)
            except Exception as exc:  # noqa: BLE001 - a UI must answer with a message, not a trace
                log.exception("answering a question of %d characters failed", len(question))
                result["error"] = f"internal error ({type(exc).__name__}); details are in the server log"
            finally:
                tokens.put(done)

        threading.Thread(target=run, name="rag-ask", daemon=True).start()
        try:
            while True:
                try:
                    item = tokens.get(timeout=STOP_POLL_S)
                except queue.Empty:
                    if stop is not None and stop.is_set():
                        yield "stopped", None
                        return
                    continue
                batch = [item]
                while item is not done:  # drain what arrived meanwhile: one UI update per burst
                    try:
                        item = tokens.get_nowait()
                    except queue.Empty:
                        break
                    batch.append(item)
                text = "".join(t for t in batch if t is not done)
                if stop is not None and stop.is_set():
                    yield "stopped", None
                    return
                if text:
                    yield "token", text
                if batch[-1] is done:
                    break
        finally:  # stopped, or closed early (the browser went away): tell the answering thread to stop
            stopped.set()
        if "answer" in result:
            yield "answer", result["answer"]
        else:
            yield "error", result.get("error", "no answer was produced")


def message_text(content: Any) -> str:
    """A chat message's text, as the client sends it back (a string, or Gradio 6's list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, list):
        return "".join(message_text(part) for part in content)
    return ""


def stopped_messages(chat_messages: list) -> list | None:
    """The chat with its streaming reply ended by a "stopped" note; None when nothing was streaming."""
    messages = list(chat_messages or [])
    if not messages or messages[-1].get("role") != "assistant":
        return None
    text = message_text(messages[-1].get("content"))
    if not any(text.rstrip().endswith(mark) for mark in _STREAMING):
        return None
    partial = text.rstrip().removesuffix("▍").removesuffix("_Searching the documents…_").rstrip()
    messages[-1] = {"role": "assistant", "content": stopped_text(partial)}
    return messages


def stopped_text(partial_html: str) -> str:
    """A stopped reply: the (already safe) text it had reached, then the "stopped" note."""
    partial_html = partial_html.strip()
    return (partial_html + "\n\n" if partial_html else "") + STOPPED_NOTE


@dataclass
class ChatTab:
    """Components of the Chat tab that the app composes with other tabs."""

    settings_panel: SettingsPanel
    restore: Any  # fn(conversation id, request) for the page's load event: reopens the current conversation
    restore_inputs: list
    restore_outputs: list


def build_chat_tab(ctx: UIContext) -> ChatTab:
    """Add the Chat tab (inside `gr.Tabs`) and wire its events."""
    chat = ChatService(ctx.pipeline)
    live = LiveAnswers()
    store = ConversationStore(history_db_path(ctx.settings.state_dir), ctx.settings.collection)

    def owner_of(request: Any) -> str | None:
        """Whose conversations this request sees; none for a caller who sees nothing (a signed-in user
        whose key was revoked keeps no access to what their old answers quoted)."""
        return owner_of_request(request) if ctx.caller(request).labels else None
    # States live inside the tab: a non-Tab child of gr.Tabs shifts the tab labels.
    with gr.Tab("Chat", id="chat"):
        history_state = gr.State([])  # plain {"role", "content"} messages for Pipeline.ask
        turns_state = gr.State([])  # one evidence block (HTML) per answered turn
        conversation_state = gr.State(None)  # id of the saved conversation shown (None: not saved yet)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                panel_h = build_history_panel(store, owner_of)
                # No Gradio copy/share buttons: they copy the message HTML. Each answer carries its own
                # Copy button (clean Markdown with its sources, see render.copy_control).
                chatbot = gr.Chatbot(label="Conversation", elem_id="chat", height=480, feedback_options=None,
                                     sanitize_html=True, buttons=[],
                                     placeholder="Ask a question about your documents.")
                with gr.Row(equal_height=True):
                    question = gr.Textbox(placeholder="Ask a question and press Enter", show_label=False,
                                          elem_id="question", scale=5, autofocus=True, submit_btn=False,
                                          min_width=140)
                    send = gr.Button("Ask", variant="primary", scale=0, min_width=72, elem_id="ask-btn")
                    stop = gr.Button("Stop", variant="secondary", scale=0, min_width=72, elem_id="stop-btn")
                panel = build_settings_panel(ctx)
                with gr.Accordion("Answer details (JSON)", open=False):
                    answer_json = gr.JSON(label="Last answer")
            with gr.Column(scale=2):
                gr.Markdown("### Evidence", elem_id="evidence-title")
                evidence = gr.HTML(render.evidence_panel([]), elem_id="evidence", max_height=720, padding=True)

    def save(request: Any, conversation_id: str | None, first_question: str, chat_messages: list,
             history: list, turns: list) -> str | None:
        """Keep the conversation for this user (nothing is kept for a request without an owner)."""
        owner = owner_of(request)
        if owner is None:
            return conversation_id
        try:
            return store.save(owner, conversation_id, first_question, chat_messages, history, turns)
        except Exception:  # noqa: BLE001 - a failed save must not lose the answer on screen
            log.exception("saving a conversation failed")
            return conversation_id

    def first_question(chat_messages: list, fallback: str) -> str:
        users = [message_text(m.get("content")) for m in chat_messages if m.get("role") == "user"]
        return users[0] if users else fallback

    def respond(message: str, chat_messages: list, history: list, turns: list, options: SessionOptions,
                conversation_id: str | None, request: gr.Request):
        """Stream one answer into the chat and its evidence into the panel; save the conversation."""
        caller = ctx.caller(request)
        message = (message or "").strip()
        # The client sends the chat back with every request: keep only what is shown.
        chat_messages = list(chat_messages or [])[-MAX_SHOWN_MESSAGES:]
        turns = list(turns or [])[-MAX_SHOWN_TURNS:]
        if not message:
            yield chat_messages, render.evidence_panel(turns), "", None, history, turns, conversation_id
            return
        problem = question_problem(message, ctx.settings)
        if problem:
            # The question is not echoed (it may be megabytes); the box keeps it for editing.
            chat_messages.append({"role": "assistant", "content": render.error_message(problem)})
            yield (chat_messages, render.evidence_panel(turns), gr.skip(), {"error": problem}, history, turns,
                   conversation_id)
            return
        chat_messages.append({"role": "user", "content": render.safe_text(message)})
        try:
            reason = chat.nothing_to_search(options, caller)
        except RagError as exc:
            reason = str(exc)
        if reason:
            chat_messages.append({"role": "assistant", "content": render.error_message(reason)})
            yield chat_messages, render.evidence_panel(turns), "", {"error": reason}, history, turns, conversation_id
            return
        chat_messages.append({"role": "assistant", "content": "_Searching the documents…_"})
        session = getattr(request, "session_hash", None)
        entry = live.start(session)
        try:
            yield chat_messages, render.evidence_panel(turns), "", None, history, turns, conversation_id
            yield from answer_updates(message, chat_messages, history, turns, options, conversation_id, caller,
                                      request, entry[0])
        finally:  # also when the browser goes away: Gradio closes this generator
            live.end(session, entry)

    def answer_updates(message: str, chat_messages: list, history: list, turns: list, options: SessionOptions,
                       conversation_id: str | None, caller: Any, request: Any, stop: threading.Event):
        """The streaming part of `respond`: tokens, then the final answer (or error, or stopped), saved."""
        partial = ""
        title = first_question(chat_messages, message)
        for kind, value in chat.stream(message, history, options, caller, stop=stop):
            if kind == "token":
                partial += value
                chat_messages[-1] = {"role": "assistant", "content": render.streaming_text(partial)}
                yield chat_messages, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            elif kind == "stopped":
                # The question stays in the chat, the partial text is marked; follow-ups do not build on it.
                chat_messages[-1] = {"role": "assistant", "content": stopped_text(render.safe_text(partial))}
                conversation_id = save(request, conversation_id, title, chat_messages, history, turns)
                yield (chat_messages, render.evidence_panel(turns), "", {"stopped": True}, history, turns,
                       conversation_id)
            elif kind == "error":
                chat_messages[-1] = {"role": "assistant", "content": render.error_message(value)}
                conversation_id = save(request, conversation_id, title, chat_messages, history, turns)
                yield (chat_messages, render.evidence_panel(turns), "", {"error": value}, history, turns,
                       conversation_id)
            else:
                answer: Answer = value
                turn = render.last_turn(turns) + 1
                turns = [*turns, render.evidence_block(answer, turn)][-MAX_SHOWN_TURNS:]
                chat_messages[-1] = {"role": "assistant", "content": render.answer_message(answer, turn)}
                history = capped_history([*history, {"role": "user", "content": message},
                                          {"role": "assistant", "content": answer.text}])
                conversation_id = save(request, conversation_id, title, chat_messages, history, turns)
                yield (chat_messages, render.evidence_panel(turns), "", answer.to_dict(), history, turns,
                       conversation_id)

    chat_outputs = [chatbot, evidence, question, answer_json, history_state, turns_state, conversation_state]
    chat_inputs = [question, chatbot, history_state, turns_state, panel.options_state, conversation_state]
    asked = question.submit(respond, chat_inputs, chat_outputs, api_name="chat", concurrency_id="chat")
    clicked = send.click(respond, chat_inputs, chat_outputs, api_visibility="private", concurrency_id="chat")
    view_outputs = [chatbot, evidence, answer_json, history_state, turns_state, conversation_state]
    # "New conversation" first ends a streaming answer (its last update lands before the empty chat).
    wire_history_panel(panel_h, view_outputs, [asked, clicked],
                       before_new=lambda request: live.stop(getattr(request, "session_hash", None), NEW_WAIT_S))

    def on_stop(chat_messages: list, history: list, turns: list, conversation_id: str | None, request: gr.Request):
        """Stop this session's streaming answer: it ends itself with a "stopped" note as its last update.

        A chat that still shows a streaming reply the server no longer runs (e.g. after a restart) is
        marked here instead."""
        if live.stop(getattr(request, "session_hash", None)):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        messages = stopped_messages(chat_messages)
        if messages is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        conversation_id = save(request, conversation_id, first_question(messages, "Conversation"), messages,
                               history, turns)
        owner = owner_of(request)
        return messages, conversation_id, panel_h.list_update(owner, conversation_id), panel_h.title_value(
            store.get(owner, conversation_id) if owner else None)

    # Not `cancels=`: a cancelled event's last updates can arrive after the Stop handler's and hide the
    # "stopped" note; the answer itself checks the stop flag and sends the note as its final update.
    stop.click(on_stop, [chatbot, history_state, turns_state, conversation_state],
               [chatbot, conversation_state, panel_h.listing, panel_h.title], api_visibility="private",
               show_progress="hidden", concurrency_limit=None)

    def restore(conversation_id: str | None, request: gr.Request):
        """On page load: reopen the conversation this user had open (a reload keeps the conversation).

        A load handled late (a busy server) never replaces a conversation the page has started since:
        only the list is refreshed then."""
        owner = owner_of(request)
        if conversation_id is not None or live.running(getattr(request, "session_hash", None)):
            current = store.get(owner, conversation_id) if owner else None
            return (*[gr.skip()] * 6, panel_h.list_update(owner, conversation_id), panel_h.title_value(current))
        conversation = store.current(owner) if owner else None
        return (*conversation_view(conversation), panel_h.list_update(owner, conversation.id if conversation else None),
                panel_h.title_value(conversation))

    return ChatTab(settings_panel=panel, restore=restore, restore_inputs=[conversation_state],
                   restore_outputs=[chatbot, evidence, answer_json, history_state, turns_state, conversation_state,
                                    panel_h.listing, panel_h.title])
