"""The "Conversations" list of the Chat tab: past conversations of this user, New / Rename / Delete.

Storage and ownership are `ui.history`'s; this module only builds the components and turns a request
into its owner (`owner_of_request`). The chat restores a conversation through `ChatView`, the tuple of
what the chat shows, so this module and `ui.chat` agree on one order of outputs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

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
    listing: gr.Radio
    title: gr.Textbox
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
        return gr.update(choices=choices(items), value=current if current in ids else None,
                         info=None if items else "No saved conversations yet: ask a question to start one.")

    def title_value(self, conversation: Conversation | None) -> str:
        return conversation.title if conversation else ""


def build_history_panel(store: ConversationStore) -> HistoryPanel:
    """The "Conversations" accordion (inside the chat column)."""
    with gr.Accordion("Conversations", open=True, elem_id="conversations"):
        listing = gr.Radio(choices=[], value=None, show_label=False, elem_id="conversation-list",
                           container=False)
        with gr.Row(equal_height=True):
            title = gr.Textbox(placeholder="Title of the open conversation", show_label=False, scale=4,
                               elem_id="conversation-title", max_length=200, container=False)
            rename = gr.Button("Rename", size="sm", scale=1, elem_id="conversation-rename")
            delete = gr.Button("Delete", size="sm", scale=1, elem_id="conversation-delete")
        with gr.Row(visible=False, elem_id="conversation-confirm") as confirm_row:
            confirm_text = gr.Markdown()
            confirm = gr.Button("Delete it", variant="stop", size="sm", elem_id="conversation-confirm-btn")
            cancel = gr.Button("Keep it", size="sm", elem_id="conversation-cancel-btn")
        status = gr.Markdown(elem_id="conversation-status")
    return HistoryPanel(store, listing, title, rename, delete, confirm_row, confirm_text, confirm, cancel, status)


def confirm_message(conversation: Conversation | None) -> str:
    """The question asked before a conversation is deleted."""
    name = render.safe_text(conversation.title) if conversation else "this conversation"
    return f"Delete “{name}” and its answers? This cannot be undone."
