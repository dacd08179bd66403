"""Training pairs for domain adaptation, made from the collection's own chunks (no labels needed).

Three sources of (query, positive chunk) pairs:
- inverse cloze (Lee et al. 2019): one sentence of a chunk is the query, the rest of the chunk is the
  positive; the sentence is removed from the positive so the model must learn topical, not literal,
  matching;
- titles: a section heading (the chunk's `section` payload) is a query for the chunks under it;
- LLM questions (optional): an OpenAI-compatible endpoint writes one question per chunk.

Pairs keep the chunk id, file and section of their positive, which the negative miner and the batcher
use to keep false negatives out of training.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

# Sentence ends: ., ! or ? followed by whitespace and an upper-case letter, digit or quote.
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
_MARKDOWN_HEADING = re.compile(r"^\s*#{1,6}\s+")
MIN_QUERY_WORDS = 6
MAX_QUERY_WORDS = 60
MIN_POSITIVE_WORDS = 12
TITLES_PER_SECTION = 2  # a title is a vague query: pair it with only the first chunks of its section


@dataclass
class TrainPair:
    """A pseudo-query and the chunk it should retrieve."""

    query: str
    positive: str  # text the model trains on (for inverse cloze: the chunk minus the query sentence)
    chunk_id: str
    file_path: str
    section: str
    kind: str  # "cloze" | "title" | "llm"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_sentences(text: str) -> list[str]:
    """Sentences of a chunk (paragraph breaks and sentence punctuation); headings become their own line."""
    sentences: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=\s*[#*\-])", text):
        block = " ".join(block.split())
        if not block:
            continue
        sentences.extend(s.strip() for s in _SENT_SPLIT.split(block) if s.strip())
    return sentences


def _words(text: str) -> int:
    return len(text.split())


def _is_heading(sentence: str) -> bool:
    return bool(_MARKDOWN_HEADING.match(sentence)) or not re.search(r"[.!?:;]$", sentence) and _words(sentence) < 10


def inverse_cloze_pair(chunk: Any, rng: random.Random) -> TrainPair | None:
    """One inverse-cloze pair from a chunk, or None when it has no usable sentence.

    The query sentence is taken out of the positive; a sentence that occurs twice in the chunk is never
    chosen, so the query text never appears verbatim in its positive.
    """
    sentences = split_sentences(chunk.text)
    candidates = [
        i for i, s in enumerate(sentences)
        if MIN_QUERY_WORDS <= _words(s) <= MAX_QUERY_WORDS and not _is_heading(s) and sentences.count(s) == 1
    ]
    rng.shuffle(candidates)
    for i in candidates:
        query = sentences[i]
        positive = " ".join(s for j, s in enumerate(sentences) if j != i)
        if _words(positive) >= MIN_POSITIVE_WORDS and query not in positive:
            return TrainPair(query=query, positive=positive, chunk_id=chunk.id, file_path=chunk.file_path,
                             section=chunk.section or "", kind="cloze")
    return None


def title_pairs(chunks: Sequence[Any], per_section: int = TITLES_PER_SECTION) -> list[TrainPair]:
    """Section titles as queries for the first `per_section` chunks of their section (file order)."""
    by_section: dict[tuple[str, str], list[Any]] = {}
    for chunk in chunks:
        title = " ".join((chunk.section or "").lstrip("#").split())
        if _words(title) < 1 or len(title) < 4:
            continue
        by_section.setdefault((chunk.file_path, title), []).append(chunk)
    pairs = []
    for (file_path, title), members in by_section.items():
        members.sort(key=lambda c: c.chunk_index)
        for chunk in members[:per_section]:
            pairs.append(TrainPair(query=title, positive=chunk.text, chunk_id=chunk.id, file_path=file_path,
                                   section=chunk.section or "", kind="title"))
    return pairs


LLM_PROMPT = (
    "Write one question that a user of a search engine could ask and that the passage below answers. "
    "Do not copy long phrases from the passage. Reply with the question only.\n\nPassage:\n{passage}"
)


def llm_question_pairs(chunks: Sequence[Any], settings: Any, limit: int) -> list[TrainPair]:
    """One LLM-written question per chunk (up to `limit` chunks) through the openai client.

    Optional: any endpoint error is logged and the pairs written so far are returned, so tuning goes on
    with the pseudo-queries alone.
    """
    if limit <= 0 or not chunks:
        return []
    try:
        from openai import OpenAI

        client = OpenAI(base_url=settings.llm_base_url, api_key=settings.resolved_api_key or "none",
                        timeout=settings.llm_timeout_s, max_retries=settings.llm_max_retries)
    except Exception as exc:  # the package or the configuration is unusable: tune without questions
        log.warning("LLM questions skipped (%s); tuning with pseudo-queries only", exc)
        return []
    pairs: list[TrainPair] = []
    for chunk in list(chunks)[:limit]:
        try:
            reply = client.chat.completions.create(
                model=settings.llm_model, temperature=0.7, max_tokens=64,
                messages=[{"role": "user", "content": LLM_PROMPT.format(passage=chunk.text[:2000])}],
            )
            question = " ".join((reply.choices[0].message.content or "").split())
        except Exception as exc:
            log.warning("LLM question generation stopped after %d questions (%s: %s); set RAG_LLM_BASE_URL "
                        "to a working endpoint or ignore", len(pairs), type(exc).__name__, exc)
            break
        if 3 <= _words(question) <= MAX_QUERY_WORDS:
            pairs.append(TrainPair(query=question, positive=chunk.text, chunk_id=chunk.id, file_path=chunk.file_path,
                                   section=chunk.section or "", kind="llm"))
    return pairs


def generate_pairs(chunks: Iterable[Any], max_pairs: int = 2000, seed: int = 0, settings: Any = None,
                   llm_questions: int | None = None) -> list[TrainPair]:
    """Pseudo-query pairs for a collection: inverse cloze (most), titles, and LLM questions when enabled.

    At most `max_pairs` pairs, spread over as many chunks as possible (at most one cloze pair per chunk).
    `llm_questions` caps LLM calls (default: a quarter of `max_pairs` when `settings.llm_enabled`).
    """
    rng = random.Random(seed)
    chunks = [c for c in chunks if c.text and c.text.strip()]
    rng.shuffle(chunks)
    pairs: list[TrainPair] = []
    if settings is not None and getattr(settings, "llm_enabled", False):
        budget = max_pairs // 4 if llm_questions is None else llm_questions
        pairs.extend(llm_question_pairs(chunks, settings, budget))
    titles = title_pairs(chunks)
    rng.shuffle(titles)
    # Titles are few and vague: they may take at most a tenth of the budget.
    pairs.extend(titles[: max(0, max_pairs // 10)])
    for chunk in chunks:
        if len(pairs) >= max_pairs:
            break
        pair = inverse_cloze_pair(chunk, rng)
        if pair is not None:
            pairs.append(pair)
    rng.shuffle(pairs)
    return pairs[:max_pairs]


def split_holdout(pairs: Sequence[TrainPair], fraction: float = 0.15, seed: int = 0) -> tuple[list[TrainPair], list[TrainPair]]:
    """(train, held-out): held-out pairs are inverse-cloze queries whose chunk has no training pair,
    so the before/after check never scores a chunk the model was trained to retrieve."""
    rng = random.Random(seed + 1)
    cloze_chunks = sorted({p.chunk_id for p in pairs if p.kind == "cloze"})
    rng.shuffle(cloze_chunks)
    held_chunks = set(cloze_chunks[: int(round(len(cloze_chunks) * fraction))])
    train = [p for p in pairs if p.chunk_id not in held_chunks]
    held = [p for p in pairs if p.chunk_id in held_chunks and p.kind == "cloze"]
    return train, held
