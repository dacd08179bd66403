"""The "Conversations" list of the Chat tab: past conversations of this user, New / Rename / Delete.

Storage and ownership are `ui.history`'s; this module builds the components, wires their events and
turns a request into its owner (`owner_of_request`). A conversation is shown through
`conversation_view`, the tuple of what the chat shows, so this module and `ui.chat` agree on one order
of outputs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any, Callable

import gradio as gr

from ui import render
from ui.history import Conversation, ConversationInfo, ConversationStore, owner_of

log = logging.getLogger(__name__)


def request_cookies(request: Any) -> dict[str, str]:
    """The cookies of a Gradio request (its own `cookies`, else parsed from the Cookie header)."""
    cookies = getattr(request, "cookies", None) if request is not None else None
    if isinstance(cookies, dict) or hasattr(cookies, "items"):
        try:
            return dict(cookies.items())
        except Exception:  # noqa: BLE001 - fall back to the header
            pass
    headers = getattr(request, "headers", None) or {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", "") or "")
    except Exception:  # noqa: BLE001 - a malformed cookie header means no browser id
        return {}
    return {k: m.value for k, m in jar.items()}


def owner_of_request(request: Any) -> str | None:
    """The owner of a request's conversations: signed-in user, else this browser, else None (not saved)."""
    return owner_of(getattr(request, "username", None) if request is not None else None, request_cookies(request))


def choices(items: list[ConversationInfo]) -> list[tuple[str, str]]:
    """Radio choices: "title · 2 Dec 10:31" → id."""
    return [(f"{c.title} · {time.strftime('%d %b %H:%M', time.localtime(c.updated_at))}", c.id) for c in items]


@dataclass
class HistoryPanel:
    """The components of the conversation list (the chat wires their events)."""

    store: ConversationStore
    owner: Callable[[Any], "str | None"]  # the owner of a request's conversations (None: keep nothing)
    listing: gr.Radio
    title: gr.Textbox
    new: gr.Button
    rename: gr.Button
    delete: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm: gr.Button
    cancel: gr.Button
    status: gr.Markdown

    def list_update(self, owner: str | None, current: str | None) -> Any:
        """The list as this owner sees it, `current` selected."""
        if owner is None:
            return gr.update(choices=[], value=None, info="Conversations are kept for signed-in users and "
                                                          "browsers that accept cookies.")
        items = self.store.list(owner)
        ids = {c.id for c in items}
        # (an empty string clears the hint: None would mean "unchanged")
        return gr.update(choices=choices(items), value=current if current in ids else None,
                         info="" if items else "No saved conversations yet: ask a question to start one.")

    def title_value(self, conversation: Conversation | None) -> str:
        return conversation.title if conversation else ""


def build_history_panel(store: ConversationStore, owner: Callable[[Any], "str | None"]) -> HistoryPanel:
    """The "Conversations" accordion (inside the chat column); `owner(request)` names whose list it shows."""
    with gr.Accordion("Conversations", open=True, elem_id="conversations"):
        listing = gr.Radio(choices=[], value=None, show_label=False, elem_id="conversation-list",
                           container=False)
        with gr.Row(equal_height=True, elem_id="conversation-tools"):
            title = gr.Textbox(placeholder="Title of the open conversation", show_label=False, scale=4,
                               elem_id="conversation-title", max_length=200, container=False, lines=1,
                               max_lines=1, min_width=160)
            new = gr.Button("New", size="sm", scale=0, min_width=64, elem_id="new-conversation",
                            variant="primary")
            rename = gr.Button("Rename", size="sm", scale=0, min_width=72, elem_id="conversation-rename")
            delete = gr.Button("Delete", size="sm", scale=0, min_width=64, elem_id="conversation-delete")
        with gr.Row(visible=False, elem_id="conversation-confirm") as confirm_row:
            confirm_text = gr.Markdown()
            confirm = gr.Button("Delete it", variant="stop", size="sm", elem_id="conversation-confirm-btn")
            cancel = gr.Button("Keep it", size="sm", elem_id="conversation-cancel-btn")
        status = gr.Markdown(elem_id="conversation-status")
    return HistoryPanel(store, owner, listing, title, new, rename, delete, confirm_row, confirm_text, confirm, cancel,
                        status)


def confirm_message(conversation: Conversation | None) -> str:
    """The question asked before a conversation is deleted."""
    name = render.safe_text(conversation.title) if conversation else "this conversation"
    return f"Delete “{name}” and its answers? This cannot be undone."


def conversation_view(conversation: Conversation | None) -> tuple:
    """What the chat shows for a saved conversation (or a new, empty one), in `ChatTab` view order:
    chat messages, evidence panel, answer details, history, evidence blocks, conversation id."""
    if conversation is None:
        return [], render.evidence_panel([]), None, [], [], None
    return (conversation.messages, render.evidence_panel(conversation.turns), None, conversation.history,
            conversation.turns, conversation.id)


def wire_history_panel(h: HistoryPanel, view_outputs: list, answer_events: list,
                       before_new: Callable[[Any], Any]) -> None:
    """Events of the list: refresh after each answer, select, Rename, Delete (confirmed), New.

    `view_outputs`: the chat's components in `conversation_view` order; `before_new(request)` runs before
    "New conversation" empties the chat (the chat stops a streaming answer there).
    """
    store = h.store
    conversation_state = view_outputs[-1]
    list_outputs = [h.listing, h.title]
    extra = [h.status, h.confirm_row]
    hidden = gr.update(visible=False)

    def refreshed(conversation_id: str | None, request: gr.Request):
        """After an answer: the list with the (maybe just created) conversation selected."""
        owner = h.owner(request)
        return h.list_update(owner, conversation_id), h.title_value(store.get(owner, conversation_id) if owner else None)

    for event in answer_events:
        event.then(refreshed, [conversation_state], list_outputs, api_visibility="private", show_progress="hidden")

    def new_conversation(request: gr.Request):
        before_new(request)
        owner = h.owner(request)
        if owner:
            store.set_current(owner, None)
        return (*conversation_view(None), h.list_update(owner, None), "", "", hidden)

    h.new.click(new_conversation, None, [*view_outputs, *list_outputs, *extra], concurrency_limit=None,
                     api_visibility="private")

    def select(conversation_id: str | None, request: gr.Request):
        owner = h.owner(request)
        conversation = store.get(owner, conversation_id) if owner else None
        if conversation is None:  # gone meanwhile (deleted in another tab)
            return (*[gr.skip()] * len(view_outputs), h.list_update(owner, None), "",
                    "That conversation no longer exists.", hidden)
        store.set_current(owner, conversation.id)
        return (*conversation_view(conversation), h.list_update(owner, conversation.id), conversation.title, "",
                hidden)

    h.listing.input(select, [h.listing], [*view_outputs, *list_outputs, *extra], api_visibility="private",
                    show_progress="hidden")

    def rename(conversation_id: str | None, title: str, request: gr.Request):
        owner = h.owner(request)
        if not owner or store.get(owner, conversation_id) is None:
            return gr.skip(), gr.skip(), "Open a saved conversation first (ask a question to start one)."
        try:
            store.rename(owner, conversation_id, title)
        except ValueError as exc:
            return gr.skip(), gr.skip(), f"⚠️ {exc}"
        return h.list_update(owner, conversation_id), h.title_value(store.get(owner, conversation_id)), "Renamed."

    for trigger in (h.rename.click, h.title.submit):
        trigger(rename, [conversation_state, h.title], [*list_outputs, h.status], api_visibility="private")

    def ask_delete(conversation_id: str | None, request: gr.Request):
        owner = h.owner(request)
        conversation = store.get(owner, conversation_id) if owner else None
        if conversation is None:
            return hidden, "", "No saved conversation is open."
        return gr.update(visible=True), confirm_message(conversation), ""

    h.delete.click(ask_delete, [conversation_state], [h.confirm_row, h.confirm_text, h.status],
                   api_visibility="private")
    h.cancel.click(lambda: hidden, None, [h.confirm_row], api_visibility="private")

    def delete(conversation_id: str | None, request: gr.Request):
        owner = h.owner(request)
        deleted = bool(owner) and store.delete(owner, conversation_id)
        message = "Conversation deleted." if deleted else "Nothing was deleted (the conversation no longer exists)."
        return (*conversation_view(None), h.list_update(owner, None), "", message, hidden)

    h.confirm.click(delete, [conversation_state], [*view_outputs, *list_outputs, *extra], api_visibility="private")
