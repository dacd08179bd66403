"""Answering: the evidence gate, cited answers from an LLM or offline, citation validation.

`make_answerer` is the one place that picks the answerer from the settings.
"""

from __future__ import annotations

from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.reader import make_reader_answerer
from rag.answering.llm import LLMAnswerer
from rag.config import Settings
from rag.embedding import EmbedderProtocol
from rag.models import Answerer

__all__ = ["Answerer", "ExtractiveAnswerer", "LLMAnswerer", "make_answerer"]


def make_answerer(settings: Settings, embedder: EmbedderProtocol | None = None) -> Answerer:
    """The answerer the settings ask for: the OpenAI-compatible LLM when an endpoint or key is set
    (`Settings.llm_enabled`), else the offline extractive answerer (scoring with `embedder` when given)."""
    if settings.llm_enabled:
        return LLMAnswerer(settings)
    # The reader when `reader_model` loads, else the sentence answerer (reader.py imports torch lazily).
    return make_reader_answerer(settings, embedder)
