"""The offline answerer: picks the evidence sentences that best answer the question, with citations.

Faithful by construction: every output sentence is verbatim evidence text (whitespace collapsed),
followed by the [n] of the passage it comes from. Each sentence gets a score in [0, 1]:

    lexical  = IDF-weighted share of the question's content terms found in the sentence
               (IDF over the sentences of this evidence set, so terms every sentence shares weigh little)
    semantic = cosine(question embedding, sentence embedding), when an embedder is given
    score    = lexical_weight * lexical + (1 - lexical_weight) * semantic   (or lexical alone)

The best sentence must reach `min_score`, else the answer abstains and lists related passages. Up to
`max_sentences` sentences scoring at least `min_score` and `relative_floor` times the best are returned.
The defaults come from the SQuAD sweep in `evals/extractive_sweep.py` (see its docstring).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from rag.answering.citations import abstained_answer, checked_answer, split_sentences, validate_citations
from rag.config import Settings
from rag.embedding import EmbedderProtocol
from rag.lexical import BM25Encoder
from rag.models import Answer, Evidence, Hit
from rag.text import ENGLISH_QUESTION_WORDS

# Chosen from the SQuAD sweep (evals/extractive_sweep.py); see the module docstring there.
DEFAULT_MIN_SCORE_LEXICAL = 0.45
DEFAULT_MIN_SCORE_HYBRID = 0.5

# Question words carry no content to match ("what year" -> only "year" matters).
_QUESTION_WORDS = ENGLISH_QUESTION_WORDS
_MIN_SENTENCE_WORDS = 4


@dataclass
class ScoredSentence:
    """One evidence sentence and how well it answers the question."""

    evidence: Evidence
    text: str
    position: int  # sentence index inside the passage
    lexical: float
    semantic: float | None
    score: float


class ExtractiveAnswerer:
    """Answers with the best evidence sentences, verbatim and cited; abstains below a score threshold."""

    provider = "extractive"

    def __init__(self, settings: Settings | None = None, embedder: EmbedderProtocol | None = None,
                 min_score: float | None = None, max_sentences: int = 2,
                 lexical_weight: float = 0.5, relative_floor: float = 0.8) -> None:
        self.settings = settings
        self.embedder = embedder
        if min_score is None:
            min_score = DEFAULT_MIN_SCORE_HYBRID if embedder is not None else DEFAULT_MIN_SCORE_LEXICAL
        self.min_score = float(min_score)
        self.max_sentences = max(1, int(max_sentences))
        self.lexical_weight = float(lexical_weight) if embedder is not None else 1.0
        self.relative_floor = float(relative_floor)
        # The same normalization and stemming as the BM25 leg.
        self._tokenize: Callable[[str], list[str]] = BM25Encoder().tokenize
        self._question_stop = {t for w in _QUESTION_WORDS for t in self._tokenize(w)} | set(_QUESTION_WORDS)

    # --- scoring -------------------------------------------------------------------------------
    def question_terms(self, question: str) -> set[str]:
        """Content terms of the question (tokenized like BM25, question words dropped)."""
        terms = set(self._tokenize(question)) - self._question_stop
        return terms or set(self._tokenize(question))

    def score_sentences(self, question: str, evidence: list[Evidence]) -> list[ScoredSentence]:
        """Every usable sentence of the evidence with its scores, best first."""
        candidates: list[tuple[Evidence, int, str]] = []
        for ev in evidence:
            text = ev.chunk.text
            for i, (s, e) in enumerate(split_sentences(text)):
                sentence = " ".join(text[s:e].split())
                if len(sentence.split()) < _MIN_SENTENCE_WORDS or sentence.startswith("#"):
                    continue  # headings and fragments answer nothing on their own
                candidates.append((ev, i, sentence))
        if not candidates:
            return []
        q_terms = self.question_terms(question)
        sent_terms = [set(self._tokenize(c[2])) for c in candidates]
        n = len(candidates)
        df: dict[str, int] = {}
        for terms in sent_terms:
            for t in terms & q_terms:
                df[t] = df.get(t, 0) + 1
        idf = {t: math.log(1.0 + (n + 1) / (df.get(t, 0) + 0.5)) for t in q_terms}
        total = sum(idf.values()) or 1.0
        lexical = [sum(idf[t] for t in q_terms & terms) / total for terms in sent_terms]

        semantic: list[float | None] = [None] * n
        if self.embedder is not None:
            q = self.embedder.embed_query(question)
            vecs = self.embedder.embed_passages([c[2] for c in candidates])
            semantic = [float(x) for x in np.clip(vecs @ q, 0.0, 1.0)]
        w = self.lexical_weight
        scored = [
            ScoredSentence(ev, sentence, pos, lex, sem,
                           lex if sem is None else w * lex + (1.0 - w) * sem)
            for (ev, pos, sentence), lex, sem in zip(candidates, lexical, semantic)
        ]
        # Ties go to the higher-ranked passage, then the earlier sentence.
        scored.sort(key=lambda s: (-s.score, s.evidence.number, s.position))
        return scored

    def select(self, scored: list[ScoredSentence]) -> list[ScoredSentence]:
        """The sentences to answer with: empty when the best one is below `min_score`."""
        if not scored or scored[0].score < self.min_score:
            return []
        floor = max(self.min_score, self.relative_floor * scored[0].score)
        return [s for s in scored if s.score >= floor][: self.max_sentences]

    # --- answering -----------------------------------------------------------------------------
    def answer(self, question: str, evidence: list[Evidence], on_token: Callable[[str], None] | None = None,
               related: list[Hit] | None = None) -> Answer:
        """The best 1..max_sentences evidence sentences with [n] citations, or an abstention."""
        started = time.perf_counter()
        related = list(related) if related is not None else [e.hit for e in evidence[:3]]
        chosen = self.select(self.score_sentences(question, evidence)) if evidence else []
        timings = {"extractive": round((time.perf_counter() - started) * 1000.0, 2)}
        if not chosen:
            return abstained_answer(question, evidence, related, self.provider, timings, on_token)
        text = " ".join(f"{s.text} [{s.evidence.number}]" for s in chosen)
        check = validate_citations(text, evidence, strict=True)
        return checked_answer(question, check, evidence, related, self.provider, timings, on_token)
