"""What every tab of the UI shares: the pipeline, the operator's settings, who the session's caller is,
and which server folders may be read.

Each tab module gets one `UIContext` and asks it for the caller of each request; no tab decides
visibility or permissions itself (`rag.access` does, through the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

from rag.access import Caller, Role
from rag.config import Settings
from rag.pipeline import Pipeline

if TYPE_CHECKING:  # gradio is imported only by the modules that build components
    import gradio as gr

# A fixed caller for every session, or a function of the request (a server that signs visitors in
# resolves each request's own caller, e.g. from a header its auth layer set).
CallerSource = Union[Caller, Callable[["gr.Request | None"], Caller]]


def default_caller(settings: Settings) -> Caller:
    """The caller of a UI without sign-in: the operator's labels, allowed to upload and remove.

    Run the UI with a READER caller (`build_app(..., caller=Caller("ui", labels, Role.READER))`) for an
    audience that may only ask.
    """
    return Caller(name="ui", labels=tuple(settings.default_acl), role=Role.EDITOR)


@dataclass
class UIContext:
    """Shared by the tab builders: one per app."""

    pipeline: Pipeline
    settings: Settings
    caller_source: CallerSource
    ingest_roots: list[Path] = field(default_factory=list)  # empty: folder ingest is disabled
    eval_roots: list[Path] = field(default_factory=list)
    jobs: Any = None  # the server's ingest.jobs.JobQueue (folder ingests become jobs); None in plain `rag ui`

    def caller(self, request: Any = None) -> Caller:
        """The caller of one request (the session's caller when the UI has no sign-in)."""
        if isinstance(self.caller_source, Caller):
            return self.caller_source
        return self.caller_source(request)
