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
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from rag.answering.citations import sentences as citation_sentences

log = logging.getLogger(__name__)

# A sentence end in tokenized text: punctuation with a space before it ("... cooling . this paper").
_TOKENIZED_END = re.compile(r"(?<=\s[.!?])\s+")
MIN_FRAGMENT_WORDS = 3
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
    chunk_index: int = -1  # the positive's position in its file (the negative filter spares its neighbours)
    chunk_text: str = ""  # the whole positive chunk (what the reranker scores at search time)

    @property
    def full_positive(self) -> str:
        """The whole positive chunk when known, else the training positive."""
        return self.chunk_text or self.positive


def split_sentences(text: str) -> list[str]:
    """Sentences of a chunk: the product's sentence splitter (`rag.answering.citations`), plus a pass for tokenized
    lower-case text ("cooling . this paper ..."), which it rightly does not split; fragments of fewer
    than MIN_FRAGMENT_WORDS words join the sentence before them."""
    out: list[str] = []
    for sentence in citation_sentences(text):
        sentence = " ".join(sentence.split())
        pieces = _TOKENIZED_END.split(sentence)
        for piece in pieces:
            piece = piece.strip()
            if not piece:
                continue
            if out and _words(piece) < MIN_FRAGMENT_WORDS and not _is_heading(out[-1]):
                out[-1] = f"{out[-1]} {piece}"
            else:
                out.append(piece)
    return out


def _words(text: str) -> int:
    return len(text.split())


def _is_heading(sentence: str) -> bool:
    return bool(_MARKDOWN_HEADING.match(sentence)) or not re.search(r"[.!?:;]$", sentence) and _words(sentence) < 10


def inverse_cloze_pairs(chunk: Any, rng: random.Random, per_chunk: int = 1, keep_prob: float = 0.0,
                        query_dropout: float = 0.0) -> list[TrainPair]:
    """Up to `per_chunk` inverse-cloze pairs from a chunk, each on a different sentence.

    The query sentence is taken out of the positive, except with probability `keep_prob` (Lee et al.
    keep it 10% of the time, so the model still learns that literal overlap counts). `query_dropout`
    drops each query word with that probability (at least MIN_FRAGMENT_WORDS stay), which makes a
    sentence read more like a partial, keyword-ish user query. A sentence that occurs twice in the chunk
    is never chosen. `chunk_text` of every pair is the whole chunk, as search scores it.
    """
    sentences = split_sentences(chunk.text)
    candidates = [
        i for i, s in enumerate(sentences)
        if MIN_QUERY_WORDS <= _words(s) <= MAX_QUERY_WORDS and not _is_heading(s) and sentences.count(s) == 1
    ]
    rng.shuffle(candidates)
    pairs: list[TrainPair] = []
    for i in candidates:
        if len(pairs) >= per_chunk:
            break
        query = sentences[i]
        rest = " ".join(s for j, s in enumerate(sentences) if j != i)
        if _words(rest) < MIN_POSITIVE_WORDS or query in rest:
            continue
        positive = chunk.text if rng.random() < keep_prob else rest
        if query_dropout > 0:
            words = query.split()
            kept = [w for w in words if rng.random() >= query_dropout]
            query = " ".join(kept if len(kept) >= MIN_FRAGMENT_WORDS else words[:MIN_FRAGMENT_WORDS])
        pairs.append(TrainPair(query=query, positive=positive, chunk_id=chunk.id, file_path=chunk.file_path,
                               section=chunk.section or "", kind="cloze", chunk_index=chunk.chunk_index,
                               chunk_text=chunk.text))
    return pairs


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
                                   section=chunk.section or "", kind="title", chunk_index=chunk.chunk_index,
                                   chunk_text=chunk.text))
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
        from openai import OpenAI  # a slow import, needed only when LLM questions are enabled

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
                                   section=chunk.section or "", kind="llm", chunk_index=chunk.chunk_index,
                                   chunk_text=chunk.text))
    return pairs


def generate_pairs(chunks: Iterable[Any], max_pairs: int = 2000, seed: int = 0, settings: Any = None,
                   llm_questions: int | None = None, per_chunk: int = 1, keep_prob: float = 0.0,
                   query_dropout: float = 0.0) -> list[TrainPair]:
    """Pseudo-query pairs for a collection: inverse cloze (most), titles, and LLM questions when enabled.

    At most `max_pairs` pairs, spread over as many chunks as possible: a first round takes one cloze
    pair per chunk, later rounds (up to `per_chunk`) add more sentences of the same chunks.
    `keep_prob` and `query_dropout` shape the cloze pairs (see `inverse_cloze_pairs`).
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
    # Every chunk's candidate sentences, drawn once; round r takes the r-th pair of each chunk.
    rounds = max(1, per_chunk)
    per_chunk_pairs = [inverse_cloze_pairs(c, rng, rounds, keep_prob, query_dropout) for c in chunks]
    for round_ in range(rounds):
        for chunk_pairs in per_chunk_pairs:
            if len(pairs) >= max_pairs:
                break
            if round_ < len(chunk_pairs):
                pairs.append(chunk_pairs[round_])
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
