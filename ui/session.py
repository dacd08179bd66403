"""One browser session's options and bounds: pure functions, tested without a server.

Per-session options can only narrow or re-rank what the operator allows (mode, k, reranking,
evidence threshold, strict citations, file types, extractive instead of LLM); they never hold access
labels (those come from the session's `Caller`). Sessions are bounded: a question has a length cap (`max_question_chars`) and
the conversation sent back to the pipeline keeps only its last turns (issue 14 #13).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rag.access import Caller
from rag.config import Settings
from rag.errors import RagError
from rag.models import SearchFilter
from rag.pipeline import check_question

RETRIEVAL_MODES = ["hybrid", "dense", "bm25"]
ANSWERERS = {"llm": "LLM endpoint", "extractive": "Extractive (quotes the evidence, no LLM)"}

# History sent to the pipeline for follow-ups: the last turns only, and a total size cap.
MAX_HISTORY_TURNS = 6
MAX_HISTORY_CHARS = 12_000
# What the browser keeps on screen (the chat list and the evidence blocks travel with every request).
MAX_SHOWN_MESSAGES = 40
MAX_SHOWN_TURNS = 20


@dataclass
class SessionOptions:
    """What one browser session may change. Never holds access labels."""

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


def threshold_text(value: float | None) -> str:
    """The evidence threshold as the settings box shows it ("" = calibrated default)."""
    return "" if value is None else f"{value:g}"


def parse_threshold(text: str | float | None) -> float | None:
    """The evidence threshold from the settings box: empty/"auto" = None (calibrated default)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    text = text.strip().lower()
    if text in ("", "auto", "default", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"evidence threshold {text[:40]!r} is not a number; use e.g. -2 or 0.3, "
                         "or leave it empty") from None
    if value != value or value in (float("inf"), float("-inf")):  # nan / inf parse but mean nothing
        raise ValueError(f"evidence threshold {text!r} is not a finite number; use e.g. -2 or 0.3")
    return value


def effective_mode(options: SessionOptions, settings: Settings) -> str:
    """The retrieval mode to run: the cross-encoder reranks the hybrid list when enabled."""
    if options.mode == "hybrid" and options.rerank and settings.rerank_enabled:
        return "rerank"
    return options.mode if options.mode in RETRIEVAL_MODES else "hybrid"


def session_settings(settings: Settings, options: SessionOptions) -> Settings:
    """The operator's settings narrowed by one session's options (ACL and LLM endpoint untouched).

    `top_k` is how many passages are retrieved; the evidence shown to the answerer is capped by both
    `max_passages` and `top_k`, so a k below the evidence cap has a visible effect (issue 17).
    """
    provider = settings.llm_provider
    if options.answerer == "extractive" or not settings.llm_enabled:
        provider = "extractive"
    top_k = max(1, min(int(options.top_k), 50))
    return dataclasses.replace(
        settings,
        mode=effective_mode(options, settings),
        top_k=top_k,
        evidence_max_passages=max(1, min(int(options.max_passages), 20, top_k)),
        evidence_min_score=options.min_score,
        strict_citations=bool(options.strict),
        llm_provider=provider,
    )


def session_filter(caller: Caller, options: SessionOptions) -> SearchFilter:
    """The caller's labels plus the session's file-type restriction (a session can only narrow)."""
    return caller.search_filter(SearchFilter(acl=list(caller.labels), file_types=list(options.file_types) or None))


def question_problem(question: str, settings: Settings) -> str | None:
    """Why a question is refused before it reaches the pipeline (the pipeline's own length rule), or None."""
    try:
        check_question(question, settings.max_question_chars)
    except RagError:
        return (f"Your question is {len(question):,} characters long; the limit is "
                f"{settings.max_question_chars:,}. Shorten it (ask about one thing at a time) and send it again.")
    return None


def capped_history(history: list[dict], max_turns: int = MAX_HISTORY_TURNS,
                   max_chars: int = MAX_HISTORY_CHARS) -> list[dict]:
    """The last `max_turns` user/assistant pairs of `history`, oldest dropped first to fit `max_chars`."""
    kept = list(history[-2 * max_turns:])
    while kept and sum(len(str(m.get("content", ""))) for m in kept) > max_chars:
        kept = kept[2:] if len(kept) > 1 else []
    return kept
