"""Citation markers in answers: parse them, keep only allow-listed evidence, flag unsupported sentences.

An answer cites evidence with markers like `[1]`, `[1, 3]`, `[2-4]` or `[1][2]`. Validation:
- a number outside the evidence list (the allow-list) is dropped, and so is a malformed marker
  (`[0]`, `[abc]`, `[1.5]`); a partly valid marker keeps its valid numbers;
- each sentence is *supported* when it cites at least one allowed evidence number;
- in strict mode unsupported sentences are removed and the text says how many were removed;
- each cited number becomes a `Citation` quoting the passage sentence(s) the answer rests on, so the
  UI can highlight them.
Evidence numbers are kept as given (no renumbering), so `[n]` always means `Evidence.number == n`.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Iterable

from rag.models import Answer, Citation, Evidence, Hit, SentenceSupport, TokenCallback
from rag.text import ENGLISH_FUNCTION_WORDS, ENGLISH_NEGATIONS

# A bracketed run short enough to be a citation marker (no nesting, no newline).
_MARKER_RE = re.compile(r"\[([^\[\]\n]{0,40})\]")
# Valid marker content: optional "source"/"doc"/... word, then numbers or ranges separated by , ; or "and".
_PREFIX = r"(?:(?:source|sources|doc|docs|document|evidence|passage|passages|ref|refs|no\.?)\s*:?\s*)?#?"
_ITEM = r"\d+(?:\s*[-–]\s*#?\d+)?"
_VALID_CONTENT_RE = re.compile(
    rf"^\s*{_PREFIX}{_ITEM}(?:\s*(?:,|;|and|&)\s*{_PREFIX}{_ITEM})*\s*$", re.IGNORECASE
)
_ITEM_RE = re.compile(r"(\d+)(?:\s*[-–]\s*#?(\d+))?")
# Content that is no valid citation but clearly tried to be one: a single token, or anything with a digit.
_LOOKS_LIKE_MARKER_RE = re.compile(r"^\s*(?:[^\s]+|.*\d.*)\s*$")
_MAX_RANGE = 50  # "[1-100000]" is not a citation; refusing it also bounds the work

# Lower-cased words that end with "." without ending a sentence.
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al fig figs eq eqs no nos vol vols pp p ch
    sec art approx ca inc ltd co corp dept est gov univ jan feb mar apr jun jul aug sep sept oct nov dec
    u.s u.k u.n a.m p.m ph.d b.a m.a b.sc m.sc op ed eds rev gen col lt sgt capt cmdr adm hon""".split()
)
_SENT_END_RE = re.compile(r"[.!?]+")
_CLOSERS = "\"'”’)»"

SENTINEL = "INSUFFICIENT_EVIDENCE"
ABSTAIN_TEXT = "I could not find the answer to this question in your documents."
_ABSTAIN_PHRASES_RE = re.compile(
    r"insufficient[_ ]evidence"
    r"|cannot (?:be )?answer(?:ed)?\b.{0,40}\b(?:from|based on|using|with) the (?:provided|given|available)"
    r"|can ?not answer (?:this|the question)"
    r"|(?:evidence|passages?|documents?|context)\s+(?:provided\s+)?(?:does|do) not (?:contain|mention|say|include|provide|specify)"
    r"|not (?:contained|mentioned|found|stated|present) in the (?:provided |given )?(?:evidence|passages|documents|context)"
    r"|(?:i )?(?:do not|don't) have enough (?:information|evidence)",
    re.IGNORECASE,
)

_WORD_RE = re.compile(r"\w+", re.UNICODE)
# Function words carry no claim; negations are kept because they change what a sentence says.
_STOP = ENGLISH_FUNCTION_WORDS - ENGLISH_NEGATIONS


@dataclass
class Marker:
    """One bracketed marker found in a text: its span, raw text and the numbers it names."""

    start: int
    end: int
    raw: str
    numbers: list[int]
    valid: bool  # grammatically a citation (numbers may still be outside the allow-list)


@dataclass
class CitationCheck:
    """The result of `validate_citations`."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    sentences: list[SentenceSupport] = field(default_factory=list)
    removed_sentences: list[str] = field(default_factory=list)
    dropped_citations: list[str] = field(default_factory=list)

    @property
    def supported_count(self) -> int:
        return sum(1 for s in self.sentences if s.supported)


def find_markers(text: str) -> list[Marker]:
    """Every citation-like bracketed marker in `text` (valid or malformed), in order.

    Bracketed prose such as "[in Paris]" is not a marker and is left alone.
    """
    markers: list[Marker] = []
    for m in _MARKER_RE.finditer(text):
        content = m.group(1)
        if _VALID_CONTENT_RE.match(content):
            numbers: list[int] = []
            ok = True
            for item in _ITEM_RE.finditer(content):
                lo = int(item.group(1))
                hi = int(item.group(2)) if item.group(2) else lo
                if hi < lo or hi - lo > _MAX_RANGE:
                    ok = False
                    break
                numbers.extend(range(lo, hi + 1))
            if ok:
                markers.append(Marker(m.start(), m.end(), m.group(0), _dedupe(numbers), True))
                continue
            markers.append(Marker(m.start(), m.end(), m.group(0), [], False))
        elif content.strip() and _LOOKS_LIKE_MARKER_RE.match(content):
            markers.append(Marker(m.start(), m.end(), m.group(0), [], False))
        elif not content.strip():
            markers.append(Marker(m.start(), m.end(), m.group(0), [], False))
    return markers


def strip_citation_markers(text: str) -> str:
    """`text` without its citation markers (valid ones, and the whitespace before each), e.g. for claims."""
    pieces: list[str] = []
    cursor = 0
    for marker in find_markers(text):
        if not marker.valid:
            continue
        pieces.append(text[cursor:marker.start].rstrip())
        cursor = marker.end
    pieces.append(text[cursor:])
    return "".join(pieces).strip()


def parse_citations(text: str, allowed: Iterable[int] | None = None) -> list[int]:
    """Cited numbers in order of first appearance; only those in `allowed` when given."""
    allow = None if allowed is None else set(allowed)
    out: list[int] = []
    for marker in find_markers(text):
        for n in marker.numbers:
            if (allow is None or n in allow) and n not in out:
                out.append(n)
    return out


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) of `text`, robust to abbreviations, initials, decimals and markers.

    Citation markers right after the final punctuation ("... capital. [1] Next") stay with the
    sentence they follow; blank lines and list items always start a new sentence. Spans exclude
    surrounding whitespace and cover every non-space character exactly once.
    """
    spans: list[tuple[int, int]] = []
    # Marker spans never overlap and come in order, so "is this position inside a marker" is one
    # binary search (a scan of every marker per sentence end made long replies quadratic).
    marker_spans = [(m.start(), m.end()) for m in _MARKER_RE.finditer(text)]
    marker_starts = [a for a, _b in marker_spans]

    def inside_marker(pos: int) -> bool:
        i = bisect.bisect_left(marker_starts, pos) - 1
        return i >= 0 and marker_spans[i][0] < pos < marker_spans[i][1]

    for block_start, block_end in _blocks(text):
        start = block_start
        for m in _SENT_END_RE.finditer(text, block_start, block_end):
            if inside_marker(m.start()):
                continue  # "[e.g. 1]" : punctuation inside a marker never ends a sentence
            end = m.end()
            if end <= start:
                continue  # already consumed by markers absorbed into the previous sentence
            while end < block_end and text[end] in _CLOSERS:
                end += 1
            # Markers after the punctuation belong to this sentence.
            probe = end
            while True:
                k = probe
                while k < block_end and text[k] in " \t":
                    k += 1
                mm = _MARKER_RE.match(text, k)
                if mm and mm.end() <= block_end and _VALID_CONTENT_RE.match(mm.group(1)):
                    probe = mm.end()
                    end = probe
                    continue
                break
            if end < block_end and not text[end].isspace():
                continue  # "3.14", "U.S.A", "e.g.," : no break inside a token
            nxt = end
            while nxt < block_end and text[nxt].isspace():
                nxt += 1
            if nxt < block_end and not _can_start_sentence(text[nxt]):
                continue  # "approx. five" : next word is lower case
            if m.group(0) == "." and _is_abbreviation(text, m.start(), block_start):
                if nxt >= block_end or not _strong_start(text, nxt, block_end):
                    continue
            if text[start:end].strip():
                spans.append(_trim(text, start, end))
            start = nxt
        if text[start:block_end].strip():
            spans.append(_trim(text, start, block_end))
    # A sentence that is nothing but markers (e.g. "Paris. [1]" split oddly) joins the previous one.
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and _only_markers(text[s:e]):
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def sentences(text: str) -> list[str]:
    """The sentences of `text` as strings (see `split_sentences`)."""
    return [text[s:e] for s, e in split_sentences(text)]


def is_abstention(text: str) -> bool:
    """True when a model reply says it cannot answer from the evidence (the sentinel or a clear phrase)."""
    return bool(_ABSTAIN_PHRASES_RE.search(text or ""))


def strip_sentinel(text: str) -> str:
    """`text` without the abstention sentinel (a reply that answers part of a question may carry it)."""
    return text.replace(SENTINEL, "")


def abstention_text(related: list[Hit]) -> str:
    """The abstention message, listing the closest passages as related but not sufficient."""
    if not related:
        return ABSTAIN_TEXT
    lines = [ABSTAIN_TEXT, "", "Related passages (not sufficient to answer):"]
    for hit in related:
        c = hit.chunk
        where = c.file_name or c.file_path.rsplit("/", 1)[-1]
        if c.page is not None:
            where += f", p. {c.page}"
        snippet = " ".join(c.text.split())
        lines.append(f"- {where}: {snippet[:160]}{'…' if len(snippet) > 160 else ''}")
    return "\n".join(lines)


def abstained_answer(question: str, evidence: list[Evidence], related: list[Hit], provider: str,
                     timings_ms: dict[str, float], on_token: TokenCallback | None = None) -> Answer:
    """An abstention (listing the related passages), streamed whole to `on_token`."""
    text = abstention_text(related)
    if on_token is not None:
        on_token(text)
    return Answer(question=question, text=text, citations=[], evidence=evidence, abstained=True,
                  related=related, provider=provider, timings_ms=timings_ms)


def checked_answer(question: str, check: "CitationCheck", evidence: list[Evidence], related: list[Hit],
                   provider: str, timings_ms: dict[str, float], on_token: TokenCallback | None = None) -> Answer:
    """An answer built from validated text (`validate_citations`), streamed whole to `on_token`."""
    if on_token is not None:
        on_token(check.text)
    return Answer(question=question, text=check.text, citations=check.citations, evidence=evidence,
                  abstained=False, related=related, sentences=check.sentences,
                  removed_sentences=check.removed_sentences, dropped_citations=check.dropped_citations,
                  provider=provider, timings_ms=timings_ms)


def content_terms(text: str) -> set[str]:
    """Lower-cased content words of `text` (stop words and citation numbers dropped), light-stemmed."""
    terms = set()
    for w in _WORD_RE.findall(_MARKER_RE.sub(" ", text.lower())):
        if w in _STOP or w.isdigit() and len(w) < 2:
            continue
        terms.add(_light_stem(w))
    return terms


def best_quote(passage: str, claims: list[str]) -> str:
    """The passage sentence(s) that best overlap the citing sentences (for highlighting).

    For each claim, the passage sentence with the most shared content words is picked (plus a
    neighbour that shares at least half as many); picked sentences are returned in passage order,
    joined with " … " where they are not adjacent. Falls back to the whole passage when nothing overlaps.
    """
    spans = split_sentences(passage)
    if not spans:
        return passage
    terms = [content_terms(passage[s:e]) for s, e in spans]
    picked: set[int] = set()
    for claim in claims:
        cterms = content_terms(claim)
        if not cterms:
            continue
        scores = [len(cterms & t) / (1.0 + 0.02 * len(t)) for t in terms]
        best = max(range(len(spans)), key=lambda i: scores[i])
        if scores[best] <= 0:
            continue
        picked.add(best)
        for nb in (best - 1, best + 1):
            if 0 <= nb < len(spans) and scores[nb] >= 0.5 * scores[best] and len(cterms & terms[nb]) >= 2:
                picked.add(nb)
    if not picked:
        return passage
    order = sorted(picked)
    parts = [passage[spans[order[0]][0]:spans[order[0]][1]]]
    for prev, cur in zip(order, order[1:]):
        parts.append((" " if cur == prev + 1 else " … ") + passage[spans[cur][0]:spans[cur][1]])
    return "".join(parts)


def validate_citations(text: str, evidence: list[Evidence], strict: bool = True) -> CitationCheck:
    """Check the citations of an answer against the evidence allow-list.

    Returns the cleaned text (dropped markers removed; in strict mode unsupported sentences removed
    and a note saying how many), one `Citation` per cited evidence number (in order of first use),
    per-sentence support, the removed sentences and the dropped markers (as written).
    """
    by_number = {e.number: e for e in evidence}
    allowed = set(by_number)
    markers = find_markers(text)
    dropped: list[str] = []
    # Edits on the original text: (start, end, replacement), applied right to left.
    edits: list[tuple[int, int, str]] = []
    kept_numbers_at: dict[int, list[int]] = {}  # marker start -> allowed numbers it keeps
    for mk in markers:
        keep = [n for n in mk.numbers if n in allowed] if mk.valid else []
        bad = [n for n in mk.numbers if n not in allowed] if mk.valid else []
        if not mk.valid:
            dropped.append(mk.raw)
        elif bad:
            dropped.extend(f"[{n}]" for n in bad)
        if keep:
            kept_numbers_at[mk.start] = keep
            if bad:
                edits.append((mk.start, mk.end, "[" + ", ".join(str(n) for n in keep) + "]"))
        else:
            edits.append((mk.start, mk.end, ""))

    supports: list[SentenceSupport] = []
    removed: list[str] = []
    claims_by_number: dict[int, list[str]] = {}
    order: list[int] = []
    # Markers and their edits are in text order, as are sentences: each sentence takes its slice by
    # binary search, so validation stays linear in the reply's length (a 300 KB reply once took minutes).
    marker_starts = [mk.start for mk in markers]
    marker_edits = list(edits)
    edit_starts = [a for a, _b, _r in marker_edits]
    for s, e in split_sentences(text):
        cited: list[int] = []
        for mk in markers[bisect.bisect_left(marker_starts, s):bisect.bisect_left(marker_starts, e)]:
            for n in kept_numbers_at.get(mk.start, []):
                if n not in cited:
                    cited.append(n)
        own_edits = marker_edits[bisect.bisect_left(edit_starts, s):bisect.bisect_left(edit_starts, e)]
        clean = _apply_edits(text[s:e], [(a - s, b - s, r) for a, b, r in own_edits]).strip()
        clean = _tidy(clean)
        if not clean or not _WORD_RE.search(_MARKER_RE.sub("", clean)):
            continue  # nothing left but punctuation or markers
        supported = bool(cited)
        if strict and not supported:
            removed.append(clean)
            edits.append((s, e, ""))
            continue
        supports.append(SentenceSupport(text=clean, citations=cited, supported=supported))
        bare = _tidy(_MARKER_RE.sub("", clean))
        for n in cited:
            claims_by_number.setdefault(n, []).append(bare)
            if n not in order:
                order.append(n)

    out = _tidy(_apply_edits(text, edits))
    if removed:
        n = len(removed)
        note = f"({n} unsupported sentence{'s were' if n != 1 else ' was'} removed.)"
        out = f"{out}\n\n{note}" if out else note

    citations = []
    for n in order:
        ev = by_number[n]
        chunk = ev.chunk
        citations.append(
            Citation(
                number=n,
                chunk_id=chunk.id,
                file=chunk.file_path,
                page=chunk.page,
                quote=best_quote(chunk.text, claims_by_number.get(n, [])),
                passage=chunk.text,
                section=chunk.section,
            )
        )
    return CitationCheck(text=out, citations=citations, sentences=supports, removed_sentences=removed,
                         dropped_citations=dropped)


# --- helpers -------------------------------------------------------------------------------------

def _dedupe(numbers: list[int]) -> list[int]:
    seen: list[int] = []
    for n in numbers:
        if n not in seen:
            seen.append(n)
    return seen


def _blocks(text: str) -> list[tuple[int, int]]:
    """Spans separated by blank lines, or by single newlines before list items / after a line end."""
    blocks: list[tuple[int, int]] = []
    start = 0
    for m in re.finditer(r"\n\s*\n|\n(?=\s*(?:[-*•]\s|\d+[.)]\s|#+\s))|(?<=[.!?:])\s*\n", text):
        blocks.append((start, m.start()))
        start = m.end()
    blocks.append((start, len(text)))
    return [(s, e) for s, e in blocks if text[s:e].strip()]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _can_start_sentence(ch: str) -> bool:
    return ch.isupper() or ch.isdigit() or ch in "\"'“‘([*-•#" or not ch.isalpha() and not ch.islower()


def _strong_start(text: str, pos: int, end: int) -> bool:
    """After an abbreviation, only a capitalised common sentence opener ends the sentence."""
    word = _WORD_RE.match(text, pos, end)
    return bool(word) and word.group(0) in {"The", "This", "It", "In", "He", "She", "They", "We", "A", "An",
                                             "There", "These", "Those", "However", "But", "And", "I"}


def _is_abbreviation(text: str, dot: int, floor: int) -> bool:
    k = dot
    while k > floor and not text[k - 1].isspace() and text[k - 1] not in "([\"'“":
        k -= 1
    # Emphasis around a quoted span ("The **E. W. Scripps** ...") is not part of the word.
    token = text[k:dot].lstrip("*_`~")
    if not token:
        return False
    low = token.lower()
    if low in _ABBREVIATIONS:
        return True
    if len(token) == 1 and token.isalpha():
        return True  # initials: "J. R. R. Tolkien"
    if re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", token):
        return True  # "U.S", "e.g"
    return False


def _only_markers(s: str) -> bool:
    return bool(s.strip()) and not _MARKER_RE.sub("", s).strip(" \t.,;:!?")


def _apply_edits(text: str, edits: list[tuple[int, int, str]]) -> str:
    # Later edits may cover earlier ones (a removed sentence covers its markers): drop nested edits.
    spans: list[tuple[int, int, str]] = []
    for a, b, r in sorted(edits, key=lambda x: (x[0], -(x[1] - x[0]))):
        if spans and a < spans[-1][1]:
            continue
        spans.append((a, b, r))
    pieces: list[str] = []
    cursor = 0
    for a, b, r in spans:  # one pass, joined once: linear in the text, however many edits
        pieces.append(text[cursor:a])
        pieces.append(r)
        cursor = b
    pieces.append(text[cursor:])
    return "".join(pieces)


def _tidy(s: str) -> str:
    s = re.sub(r"[ \t]{2,}", " ", s)
    s = re.sub(r"[ \t]+([.,;:!?])", r"\1", s)
    s = re.sub(r"\n{3,}", "\n\n", s)
    s = re.sub(r"[ \t]+\n", "\n", s)
    return s.strip()


def _light_stem(w: str) -> str:
    for suffix in ("ies", "es", "s", "ing", "ed"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w
