"""Answering: the evidence gate, cited answers from an LLM or offline, citation validation.

`make_answerer` is the one place that picks the answerer from the settings.
"""

from __future__ import annotations

from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.reader import gate_with_reader, make_reader_answerer
from rag.answering.llm import LLMAnswerer
from rag.config import Settings
from rag.embedding import EmbedderProtocol
from rag.models import Answerer

__all__ = ["Answerer", "ExtractiveAnswerer", "LLMAnswerer", "make_answerer"]


def make_answerer(settings: Settings, embedder: EmbedderProtocol | None = None) -> Answerer:
    """The answerer the settings ask for: the OpenAI-compatible LLM when an endpoint or key is set
    (`Settings.llm_enabled`; behind the reader gate when `reader_gate` is on), else the offline extractive
    answerer (scoring with `embedder` when given)."""
    if settings.llm_enabled:
        # `reader_gate = on`: the reader may abstain first, sparing the LLM call (rag.answering.reader.ReaderGate).
        return gate_with_reader(LLMAnswerer(settings), settings)
    # The reader when `reader_model` loads, else the sentence answerer (reader.py imports torch lazily).
    return make_reader_answerer(settings, embedder)
