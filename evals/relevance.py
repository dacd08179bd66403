"""Document-QA relevance: is a retrieved chunk the gold evidence, whatever the chunking?

Our chunk ids change with every chunking setting, so relevance is defined by the gold *text*:

    A chunk is relevant to a question when
      (1) it comes from the gold document (same file name; same relative path when the gold doc
          names folders), and
      (2) it overlaps the gold paragraph/evidence substantially.

Overlap is measured on normalized tokens, because parser output and gold text differ in
whitespace, punctuation, quotes, dashes and case (PDF/DOCX/HTML extraction; hand-typed evidence):
normalize = Unicode NFKC, lower-case, every non-alphanumeric character becomes a space, split.
Char spans are not used: they index the parser's extracted text, which the gold text was not cut
from (Markdown headings, table flattening, page breaks), so they cannot be compared.

Shared text is counted with word 3-gram shingles: a token of the evidence is *covered* when it lies
in a 3-gram that also occurs in the chunk (and vice versa for chunk tokens). Requiring 3 words in
a row keeps stray common words ("of the", "in") from counting, while a paragraph cut anywhere still
matches on both sides of the cut. It is linear time, so it scales to 100 hits x 1,000 questions.
Evidence shorter than 3 tokens must appear as a contiguous token run.

With E = evidence tokens, C = chunk tokens, e = covered evidence tokens, c = covered chunk tokens,
the chunk is relevant when any of these holds:
  (a) e >= 0.5 * |E|                       most of the evidence is in the chunk (short evidence: all of it);
  (b) e >= 0.2 * |E| and e >= 10           a substantial piece of a paragraph split over 2-3 chunks
                                           (a paragraph cut in three leaves each piece ~33%);
  (c) c >= 0.5 * |C| and c >= 10           the chunk lies mostly inside a long gold paragraph.
A chunk that shares only a short run (e.g. the 5-word tail of the paragraph carried by chunk overlap)
fails all three: it is not counted, because it rarely carries the answer.

Relevance is binary. For ranking metrics the runner maps every relevant chunk of a question to one
unit id (`doc_qa_ranking`): the gold evidence is found once, however many chunks it was cut into,
so Recall@k is "the evidence was in the top k" and nDCG/MRR reward its first appearance.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Sequence

_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)

SHINGLE = 3
MOST_OF_EVIDENCE = 0.5  # rule (a)
PIECE_OF_EVIDENCE = 0.2  # rule (b)
MOSTLY_INSIDE = 0.5  # rule (c)
MIN_TOKENS = 10  # rules (b) and (c): below this a shared run is an accident of overlap, not evidence


def normalize_tokens(text: str) -> list[str]:
    """NFKC, lower-case, non-alphanumerics to spaces, split on whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_ALNUM.sub(" ", text).split()


@dataclass(frozen=True)
class Overlap:
    """How much of the evidence is in the chunk and how much of the chunk is evidence."""

    evidence_tokens: int
    chunk_tokens: int
    evidence_covered: int
    chunk_covered: int

    @property
    def evidence_share(self) -> float:
        return self.evidence_covered / self.evidence_tokens if self.evidence_tokens else 0.0

    @property
    def chunk_share(self) -> float:
        return self.chunk_covered / self.chunk_tokens if self.chunk_tokens else 0.0

    @property
    def substantial(self) -> bool:
        """The overlap rule of this module (a, b or c in the module docstring)."""
        if self.evidence_covered == 0:
            return False
        if self.evidence_covered >= MOST_OF_EVIDENCE * self.evidence_tokens:
            return True
        if self.evidence_covered >= PIECE_OF_EVIDENCE * self.evidence_tokens and self.evidence_covered >= MIN_TOKENS:
            return True
        return self.chunk_covered >= MOSTLY_INSIDE * self.chunk_tokens and self.chunk_covered >= MIN_TOKENS


def _covered(tokens: list[str], other_grams: set[tuple[str, ...]], n: int) -> int:
    mask = [False] * len(tokens)
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i : i + n]) in other_grams:
            for j in range(i, i + n):
                mask[j] = True
    return sum(mask)


def _grams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def measure_overlap(evidence: str, chunk_text: str) -> Overlap:
    """Token coverage between gold evidence and a chunk (see module docstring)."""
    ev = normalize_tokens(evidence)
    ch = normalize_tokens(chunk_text)
    if not ev or not ch:
        return Overlap(len(ev), len(ch), 0, 0)
    n = min(SHINGLE, len(ev))
    if len(ch) < n:
        return Overlap(len(ev), len(ch), 0, 0)
    ev_grams, ch_grams = _grams(ev, n), _grams(ch, n)
    return Overlap(len(ev), len(ch), _covered(ev, ch_grams, n), _covered(ch, ev_grams, n))


def same_document(chunk_file: str, gold_doc: str) -> bool:
    """True when a chunk's file is the gold document: same base name, and when the gold path has
    folders (e.g. "sub/a.pdf"), the chunk path ends with the same parts."""
    if not chunk_file or not gold_doc:
        return False
    chunk_parts = PurePath(chunk_file.replace("\\", "/")).parts
    gold_parts = PurePath(gold_doc.replace("\\", "/")).parts
    return len(chunk_parts) >= len(gold_parts) and tuple(chunk_parts[-len(gold_parts) :]) == tuple(gold_parts)


def chunk_is_relevant(chunk_file: str, chunk_text: str, gold_doc: str, evidence: str) -> bool:
    """The doc-QA relevance rule: from the gold document AND a substantial overlap with the evidence."""
    if not evidence.strip():
        return False
    return same_document(chunk_file, gold_doc) and measure_overlap(evidence, chunk_text).substantial


def _chunk_fields(chunk: Any) -> tuple[str, str, str]:
    """(id, file, text) of a rag.models.Chunk, a Hit (its .chunk), or a dict from Hit.to_dict()."""
    if hasattr(chunk, "chunk"):
        chunk = chunk.chunk
    if isinstance(chunk, dict):
        return str(chunk.get("chunk_id") or chunk.get("id")), chunk.get("file") or chunk.get("file_path", ""), chunk["text"]
    return str(chunk.id), chunk.file_path or chunk.file_name, chunk.text


def is_relevant(question: Any, chunk: Any) -> bool:
    """Relevance of a Chunk/Hit (or hit dict) to an evals.datasets.DocQAQuestion."""
    _, file, text = _chunk_fields(chunk)
    return chunk_is_relevant(file, text, question.doc, question.evidence_text)


def gold_unit_id(question_id: str) -> str:
    """The id every relevant chunk of a question is mapped to in doc_qa_ranking."""
    return f"gold:{question_id}"


def doc_qa_ranking(question: Any, hits: Sequence[Any]) -> tuple[list[str], dict[str, int], list[bool]]:
    """Turn retrieved chunks into (ranked ids, qrels, per-hit relevance) for evals.metrics.

    Relevant chunks all become `gold_unit_id(question.id)` (the metrics de-duplicate, so the
    evidence counts once, at its best rank); other chunks keep their own ids. qrels has the single
    relevant unit, so recall@k = 1 when the evidence is in the top k.
    """
    ranked: list[str] = []
    flags: list[bool] = []
    unit = gold_unit_id(question.id)
    for hit in hits:
        chunk_id, file, text = _chunk_fields(hit)
        rel = chunk_is_relevant(file, text, question.doc, question.evidence_text)
        flags.append(rel)
        ranked.append(unit if rel else chunk_id)
    return ranked, {unit: 1}, flags
