"""Structure-aware chunking with exact provenance and a hard token budget.

* A Title starts a new chunk once the chunk being built holds body text of its own (at least
  `min_chunk_tokens`), so sections stay apart while runs of one-line "titles" still pack together.
* Consecutive small elements are packed up to `chunk_tokens`.
* An element that fits the budget is never split (tables stay whole); a longer one is split the way
  langchain's RecursiveCharacterTextSplitter does (paragraphs, lines, sentences, clauses, words,
  characters), measured in tokens, with `overlap_tokens` overlap (tables split by rows, no overlap).
  The splitter is reimplemented on spans so positions are exact even in repetitive text.
* Every chunk is an exact slice of `extracted_text(doc)` (element texts joined by "\\n\\n"):
  `extracted_text(doc)[c.char_start:c.char_end] == c.text`, and `c.token_count`, measured by the
  given `count_tokens` on the final text, is <= `chunk_tokens`. Nothing is truncated downstream.

Cost: one `count_tokens` call per element and per final chunk, plus one per split piece of long
elements (coarse pieces first, finer only where needed); nothing is re-tokenized quadratically.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Callable

from ingest.loaders import Element, ParsedDocument

log = logging.getLogger(__name__)

SEPARATOR = "\n\n"
_TEXT_SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
_TABLE_SEPARATORS = ["\n", " | ", " ", ""]


@dataclass
class ChunkDraft:
    """A chunk before embedding: its text and where it came from."""

    text: str
    char_start: int
    char_end: int
    page_numbers: list[int] = field(default_factory=list)
    section: str = ""
    element_types: list[str] = field(default_factory=list)
    token_count: int = 0
    # Layout boxes ([page, x0, y0, x1, y1], fractions of the page) of the elements the chunk overlaps.
    boxes: list[list[float]] = field(default_factory=list)


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def extracted_text(doc: ParsedDocument) -> str:
    """The document's text as chunk spans index it: element texts joined by "\\n\\n"."""
    return SEPARATOR.join(e.text for e in doc.elements)


@dataclass
class _Piece:
    """A span of extracted text: a whole element or a part of a long one."""

    start: int
    end: int
    tokens: int
    element: Element
    is_part: bool = False  # a part of a split element (may overlap its neighbours)


class Chunker:
    """Packs a document's elements into chunks of at most `chunk_tokens` tokens."""

    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int, overlap_tokens: int,
                 min_chunk_tokens: int | None = None) -> None:
        if chunk_tokens < 8:
            raise ValueError(f"chunk_tokens must be at least 8, got {chunk_tokens}")
        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError("overlap_tokens must be >= 0 and smaller than chunk_tokens")
        self.count_tokens = count_tokens
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        # A Title only closes the current chunk when that chunk has this much body text; tiny
        # sections (an infobox line, a one-line paragraph under a heading) join the next one.
        self.min_chunk_tokens = min(32, chunk_tokens // 4) if min_chunk_tokens is None else min_chunk_tokens
        # The splitter measures the same merged pieces repeatedly (overlap windows); cache them.
        self._count_cached = functools.lru_cache(maxsize=4096)(count_tokens)
        self._sep_tokens = max(0, count_tokens(SEPARATOR))

    # ---------------------------------------------------------------- public

    def chunk(self, doc: ParsedDocument) -> list[ChunkDraft]:
        """Chunk one parsed document. Spans index into `extracted_text(doc)`."""
        full = extracted_text(doc)
        pieces = self._pieces(doc.elements, full)
        groups = self._group(pieces)
        chunks: list[ChunkDraft] = []
        for group in groups:
            chunks.extend(self._emit(group, full))
        return chunks

    # ---------------------------------------------------------------- steps

    def _pieces(self, elements: list[Element], full: str) -> list[_Piece]:
        """Whole elements that fit the budget, and budget-sized parts of those that don't."""
        pieces: list[_Piece] = []
        offset = 0
        heading_tokens = 0  # tokens of the run of Title elements just above (they head the next part)
        for el in elements:
            start, end = offset, offset + len(el.text)
            offset = end + len(SEPARATOR)
            if not el.text.strip():
                continue
            tokens = self.count_tokens(el.text)
            if tokens <= self.chunk_tokens:
                pieces.append(_Piece(start, end, tokens, el))
                heading_tokens = heading_tokens + tokens + self._sep_tokens if el.type == "Title" else 0
                continue
            budget = self.chunk_tokens
            if 0 < heading_tokens <= self.chunk_tokens // 4:
                budget -= heading_tokens  # leave room so the heading can ride along with the first part
            heading_tokens = 0
            if el.type == "Table":  # tables split on rows, nothing repeated
                spans = self._split(el.text, _TABLE_SEPARATORS, budget, 0)
            else:
                spans = self._split(el.text, _TEXT_SEPARATORS, budget, self.overlap_tokens)
            for part_start, part_end in spans:
                text = el.text[part_start:part_end]
                pieces.append(_Piece(start + part_start, start + part_end, self._count_cached(text), el, True))
        return pieces

    def _split(self, text: str, separators: list[str], budget: int, overlap: int) -> list[tuple[int, int]]:
        """Recursive-character splitting (as langchain's RecursiveCharacterTextSplitter, measured in
        tokens) that returns (start, end) spans of `text` directly, so positions are exact even in
        repetitive text. Atoms are merged into windows of <= budget tokens with `overlap` tokens of
        trailing atoms repeated at the start of the next window."""
        atoms = self._atoms(text, 0, len(text), separators, budget)
        windows: list[tuple[int, int]] = []
        i = 0
        while i < len(atoms):
            j, total = i, 0
            while j < len(atoms) and (j == i or total + atoms[j][2] <= budget):
                total += atoms[j][2]
                j += 1
            start, end = _strip_span(text, atoms[i][0], atoms[j - 1][1])
            if start < end:
                windows.extend(self._enforce_budget(text, start, end, budget))
            if j >= len(atoms):
                break
            # Step back over trailing atoms worth <= overlap tokens, but always move forward.
            k, back = j, 0
            while overlap and k - 1 > i and back + atoms[k - 1][2] <= overlap:
                k -= 1
                back += atoms[k][2]
            i = k
        return windows

    def _atoms(self, text: str, start: int, end: int, separators: list[str], budget: int) -> list[tuple[int, int, int]]:
        """(start, end, tokens) pieces within budget, split at the coarsest separator present."""
        sep_index = next((n for n, sep in enumerate(separators) if sep == "" or sep in text[start:end]), None)
        if sep_index is None or separators[sep_index] == "":
            return [(s, e, self._count_cached(text[s:e])) for s, e in self._hard_split(text, start, end, budget)]
        sep, rest = separators[sep_index], separators[sep_index + 1:]
        atoms: list[tuple[int, int, int]] = []
        pos = start
        while pos < end:
            hit = text.find(sep, pos, end)
            seg_end = end if hit < 0 else hit + len(sep)  # the separator stays with the piece it closes
            if text[pos:seg_end].strip():
                tokens = self._count_cached(text[pos:seg_end])
                if tokens <= budget:
                    atoms.append((pos, seg_end, tokens))
                else:
                    atoms.extend(self._atoms(text, pos, seg_end, rest or [""], budget))
            pos = seg_end
        return atoms

    def _enforce_budget(self, text: str, start: int, end: int, budget: int) -> list[tuple[int, int]]:
        """Token counts of joined atoms are estimates; re-split anything still over budget."""
        if self._count_cached(text[start:end]) <= budget:
            return [(start, end)]
        return self._hard_split(text, start, end, budget)

    def _hard_split(self, text: str, start: int, end: int, budget: int | None = None) -> list[tuple[int, int]]:
        """Cut [start, end) into the longest prefixes within budget (binary search, no overlap)."""
        budget = self.chunk_tokens if budget is None else budget
        spans = []
        while start < end:
            while start < end and text[start].isspace():
                start += 1
            if start >= end:
                break
            lo, hi = start + 1, end
            while lo < hi:  # largest cut with count(text[start:cut]) <= budget
                mid = (lo + hi + 1) // 2
                if self.count_tokens(text[start:mid]) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            cut = lo
            # Prefer a whitespace boundary in the last fifth of the piece.
            space = text.rfind(" ", start + (cut - start) * 4 // 5, cut)
            if space > start and cut < end:
                cut = space
            piece_end = cut
            while piece_end > start and text[piece_end - 1].isspace():
                piece_end -= 1
            spans.append((start, max(piece_end, start + 1)))
            start = cut
        return spans

    def _group(self, pieces: list[_Piece]) -> list[list[_Piece]]:
        """Pack consecutive pieces into groups whose estimated tokens fit the budget."""
        groups: list[list[_Piece]] = []
        current: list[_Piece] = []
        tokens = 0
        body_tokens = 0  # tokens of non-Title pieces in `current`
        for piece in pieces:
            is_title = piece.element.type == "Title" and not piece.is_part
            needed = piece.tokens + (self._sep_tokens if current else 0)
            new_chunk = False
            if current:
                if tokens + needed > self.chunk_tokens:
                    new_chunk = True
                elif piece.is_part or current[-1].is_part:
                    # Parts of a split element stand alone (they overlap each other); only a
                    # heading directly above the first part rides along with it.
                    first_part_under_heading = (
                        piece.is_part and not current[-1].is_part and body_tokens == 0
                        and piece.start >= current[-1].end
                    )
                    new_chunk = not first_part_under_heading
                elif is_title and body_tokens >= self.min_chunk_tokens:
                    new_chunk = True
            if new_chunk:
                groups.append(current)
                current, tokens, body_tokens = [], 0, 0
                needed = piece.tokens
            current.append(piece)
            tokens += needed
            if not is_title:
                body_tokens += piece.tokens
        if current:
            groups.append(current)
        return groups

    def _emit(self, group: list[_Piece], full: str) -> list[ChunkDraft]:
        """Turn a group into a chunk, measuring its real token count; split the group if over."""
        start, end = group[0].start, group[-1].end
        # A single piece was measured on exactly this text already.
        tokens = group[0].tokens if len(group) == 1 else self.count_tokens(full[start:end])
        if tokens > self.chunk_tokens and len(group) > 1:
            # The estimate (sum of parts) was off: tokenizers may merge across the joins.
            mid = len(group) // 2
            return self._emit(group[:mid], full) + self._emit(group[mid:], full)
        if tokens > self.chunk_tokens:  # a single piece over budget: cannot happen, but never emit it
            return [self._draft(full, s, e, group) for s, e in self._hard_split(full, start, end)]
        return [self._draft(full, start, end, group, tokens)]

    def _draft(self, full: str, start: int, end: int, group: list[_Piece], tokens: int | None = None) -> ChunkDraft:
        text = full[start:end]
        elements = [p.element for p in group if p.start < end and p.end > start]
        pages = sorted({e.page_number for e in elements if e.page_number is not None})
        types: list[str] = []
        for e in elements:
            if e.type not in types:
                types.append(e.type)
        section = elements[0].section if elements else ""
        boxes: list[list[float]] = []
        for e in elements:
            boxes.extend(b for b in e.boxes if b not in boxes)
        return ChunkDraft(
            text=text,
            char_start=start,
            char_end=end,
            page_numbers=pages,
            section=section,
            element_types=types,
            token_count=self.count_tokens(text) if tokens is None else tokens,
            boxes=boxes,
        )
