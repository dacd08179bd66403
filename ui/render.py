"""HTML for the chat UI: answers with clickable citations and the evidence panel.

Pure functions from `rag.models` objects to strings, so they are unit-tested without a browser.

Every piece of document text is HTML-escaped before it is placed in markup: indexed files are
untrusted input (an HTML or e-mail file may contain `<script>`), and the chat renders HTML.

Anchors are scoped by conversation turn: the passage behind citation [n] of answer t has
`id="ev-t-n"`, so [1] in an older answer still opens *that* answer's passage 1, not the latest one.
The click handler (see `CITATION_JS`) shows turn t's block in the evidence panel and scrolls to it.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from rag.models import Answer, Citation, Evidence, Hit

# A validated answer's markers: [1], [1, 3], [2-4] (rag.answering.citations keeps them as given).
_MARKER_RE = re.compile(r"\[(\d+(?:\s*(?:[-–]|,|;)\s*\d+)*)\]")


def file_label(path: str, file_name: str = "") -> str:
    """The file's base name for display."""
    return file_name or Path(path).name or path


def _numbers(marker: str) -> list[int]:
    """Numbers in a marker body: "1, 3" -> [1, 3]; "2-4" -> [2, 3, 4] (ranges capped at 50)."""
    out: list[int] = []
    for part in re.split(r"\s*[,;]\s*", marker):
        bounds = re.split(r"\s*[-–]\s*", part)
        if len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
            lo, hi = int(bounds[0]), int(bounds[1])
            out.extend(range(lo, min(hi, lo + 50) + 1))
        elif part.isdigit():
            out.append(int(part))
    return out


def citation_button(turn: int, number: int) -> str:
    """One clickable citation; the page script opens passage `ev-{turn}-{number}`."""
    # The chat sanitizer strips data-* attributes, so the target also rides in class names.
    return (f'<button class="rag-cite rag-t-{turn} rag-n-{number}" type="button" data-turn="{turn}" '
            f'data-ev="{number}" title="Show passage {number}">[{number}]</button>')


def link_citations(escaped_text: str, turn: int, valid: set[int]) -> str:
    """Replace [n] markers in already-escaped text by citation buttons (only allow-listed numbers)."""

    def repl(match: re.Match[str]) -> str:
        numbers = [n for n in _numbers(match.group(1)) if n in valid]
        if not numbers:
            return match.group(0)
        return "".join(citation_button(turn, n) for n in numbers)

    return _MARKER_RE.sub(repl, escaped_text)


def streaming_text(partial: str) -> str:
    """Text while tokens are still arriving: escaped, markers left as plain text."""
    return html.escape(partial, quote=False) + " ▍"


def answer_message(answer: Answer, turn: int) -> str:
    """The assistant chat message for a final answer: text with citation buttons and notes."""
    valid = {e.number for e in answer.evidence}
    parts: list[str] = []
    if answer.error:
        parts.append(f'<div class="rag-error">⚠️ The answer could not be generated: '
                     f'{html.escape(answer.error, quote=False)}<br>The retrieved evidence is in the panel; '
                     'try again later, or choose the extractive answerer in Settings.</div>')
    elif answer.abstained:
        parts.append('<div class="rag-abstain"><strong>No answer found in the indexed documents.</strong> '
                     'The retrieved passages do not contain enough evidence to answer; the closest ones '
                     'are listed in the evidence panel as related, not sufficient.</div>')
        # The answerer's own wording repeats the banner and lists the related passages the panel shows;
        # keep only notes after it (e.g. how many unsupported sentences were removed).
        notes = [p.strip() for p in answer.text.split("\n\n")[1:]
                 if p.strip() and not p.strip().startswith("Related passages")]
        parts.extend(f'<div class="rag-note">{html.escape(n, quote=False)}</div>' for n in notes)
    else:
        parts.append(link_citations(html.escape(answer.text.strip(), quote=False), turn, valid))
    if answer.removed_sentences and not answer.abstained:
        n = len(answer.removed_sentences)
        parts.append(f'<div class="rag-note">{n} sentence{"s" if n != 1 else ""} without a valid citation '
                     'removed (strict citations).</div>')
    if answer.dropped_citations:
        dropped = ", ".join(html.escape(d, quote=False) for d in answer.dropped_citations[:5])
        parts.append(f'<div class="rag-note">Ignored citation markers that point at no evidence: {dropped}</div>')
    return "\n\n".join(parts)


def error_message(text: str) -> str:
    """A readable error in the chat (never a stack trace)."""
    return f'<div class="rag-error">⚠️ {html.escape(text, quote=False)}</div>'


def _find_span(passage: str, quote: str) -> tuple[int, int] | None:
    """Where `quote` occurs in `passage`: exact, then case- and whitespace-insensitive."""
    quote = quote.strip()
    if not quote:
        return None
    start = passage.find(quote)
    if start >= 0:
        return start, start + len(quote)
    # Map a whitespace-collapsed, lower-cased view back to original offsets.
    chars: list[str] = []
    offsets: list[int] = []
    prev_space = False
    for i, ch in enumerate(passage):
        if ch.isspace():
            if prev_space:
                continue
            chars.append(" ")
            prev_space = True
        else:
            chars.append(ch.lower())
            prev_space = False
        offsets.append(i)
    flat = "".join(chars)
    needle = " ".join(quote.lower().split())
    pos = flat.find(needle)
    if pos < 0:
        return None
    end_index = offsets[pos + len(needle) - 1] + 1
    return offsets[pos], end_index


def highlight(passage: str, quotes: list[str]) -> str:
    """The passage, escaped, with each quote found in it wrapped in <mark>."""
    spans = sorted(s for s in (_find_span(passage, q) for q in quotes) if s)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[str] = []
    cursor = 0
    for start, end in merged:
        out.append(html.escape(passage[cursor:start], quote=False))
        out.append(f"<mark>{html.escape(passage[start:end], quote=False)}</mark>")
        cursor = end
    out.append(html.escape(passage[cursor:], quote=False))
    return "".join(out)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def scores_line(hit: Hit) -> str:
    """Why this passage came back: rerank score, dense rank, BM25 rank, fused rank."""
    items = []
    if hit.rerank_score is not None:
        items.append(f"rerank {_fmt(hit.rerank_score, 2)}")
    items.append("dense " + (f"#{hit.dense_rank} ({_fmt(hit.dense_score)})" if hit.dense_rank else "–"))
    items.append("BM25 " + (f"#{hit.bm25_rank} ({_fmt(hit.bm25_score, 2)})" if hit.bm25_rank else "–"))
    if hit.fused_rank is not None:
        items.append(f"fused #{hit.fused_rank}")
    return " · ".join(items)


def _source_line(hit: Hit) -> str:
    chunk = hit.chunk
    bits = [f'<span class="rag-file" title="{html.escape(chunk.file_path)}">'
            f'{html.escape(file_label(chunk.file_path, chunk.file_name), quote=False)}</span>']
    if chunk.page_numbers:
        pages = chunk.page_numbers
        bits.append(f"p. {pages[0]}" if len(pages) == 1 else f"pp. {pages[0]}–{pages[-1]}")
    if chunk.section:
        bits.append(f'§ {html.escape(chunk.section[:120], quote=False)}')
    return " · ".join(bits)


def _passage_card(anchor: str, label: str, hit: Hit, quotes: list[str], cited: bool) -> str:
    # Classes repeat the anchor: the page script finds passages by class if a sanitizer drops ids.
    classes = f"rag-ev {anchor}" + (" cited" if cited else "")
    return (
        f'<div class="{classes}" id="{anchor}">'
        f'<div class="rag-ev-head"><span class="rag-ev-num">{label}</span> {_source_line(hit)}</div>'
        f'<div class="rag-ev-scores">{scores_line(hit)}</div>'
        f'<div class="rag-ev-text">{highlight(hit.chunk.text, quotes)}</div>'
        "</div>"
    )


def quotes_by_number(citations: list[Citation]) -> dict[int, list[str]]:
    """The quotes each evidence number is cited for (one number may be cited by several sentences)."""
    out: dict[int, list[str]] = {}
    for c in citations:
        if c.quote:
            out.setdefault(c.number, []).append(c.quote)
    return out


def evidence_block(answer: Answer, turn: int) -> str:
    """One turn's evidence: cited passages first (quote highlighted), then the other evidence;
    on abstention, the related passages marked as not sufficient."""
    quotes = quotes_by_number(answer.citations)
    cited_numbers = {c.number for c in answer.citations}
    question = html.escape(answer.question, quote=False)
    parts = [f'<div class="rag-turn rag-tb-{turn}" data-turn="{turn}">',
             f'<div class="rag-turn-q">Q{turn}: {question}</div>']
    if answer.error:
        parts.append('<div class="rag-error">The answer could not be generated; the evidence retrieved:</div>')
        for ev in answer.evidence:
            parts.append(_passage_card(f"ev-{turn}-{ev.number}", f"[{ev.number}]", ev.hit, [], cited=False))
        if not answer.evidence:
            parts.append('<div class="rag-note">No evidence.</div>')
    elif answer.abstained:
        parts.append('<div class="rag-abstain">Abstained: no passage was sufficient to answer.</div>')
        related = answer.related or [e.hit for e in answer.evidence]
        if related:
            parts.append('<div class="rag-sub">Related passages (not sufficient)</div>')
            for i, hit in enumerate(related, start=1):
                parts.append(_passage_card(f"rel-{turn}-{i}", f"R{i}", hit, [], cited=False))
        else:
            parts.append('<div class="rag-note">No related passages were retrieved.</div>')
    else:
        ordered = sorted(answer.evidence, key=lambda e: (e.number not in cited_numbers, e.number))
        if not ordered:
            parts.append('<div class="rag-note">No evidence.</div>')
        for i, ev in enumerate(ordered):
            if i > 0 and ev.number not in cited_numbers and ordered[i - 1].number in cited_numbers:
                parts.append('<div class="rag-sub">Other evidence shown to the answerer (not cited)</div>')
            parts.append(_passage_card(f"ev-{turn}-{ev.number}", f"[{ev.number}]", ev.hit,
                                       quotes.get(ev.number, []), ev.number in cited_numbers))
    parts.append("</div>")
    return "".join(parts)


def evidence_panel(blocks: list[str]) -> str:
    """All turns' evidence blocks; the latest is visible, the others open when their citations are clicked."""
    if not blocks:
        return ('<div class="rag-panel"><div class="rag-note">Citations in answers open their passages here.'
                "</div></div>")
    shown = len(blocks) - 1
    rendered = [b.replace('class="rag-turn ', 'class="rag-turn rag-hidden ', 1) if i != shown else b
                for i, b in enumerate(blocks)]
    return '<div class="rag-panel">' + "".join(rendered) + "</div>"


# Styles for the chat and the evidence panel (installed into <head> by CITATION_JS, so they apply
# however the app is launched).
CSS = """
.rag-cite { display:inline; border:1px solid #7c8cff; background:#eef0ff; color:#2a3bd1; border-radius:4px;
  padding:0 3px; margin:0 1px; font-size:0.85em; cursor:pointer; line-height:1.3; }
.rag-cite:hover { background:#d9ddff; }
.rag-panel { font-size:0.92em; }
.rag-turn.rag-hidden { display:none; }
.rag-turn-q { font-weight:600; margin:4px 0 8px; }
.rag-ev { border:1px solid #d0d4dc; border-radius:6px; padding:8px 10px; margin:0 0 10px; background:#fff; color:#1f2328; }
.rag-ev.cited { border-left:4px solid #7c8cff; }
.rag-ev.rag-active { outline:3px solid #f0b400; box-shadow:0 0 0 4px rgba(240,180,0,0.25); }
.rag-ev-head { font-weight:600; }
.rag-ev-num { color:#2a3bd1; margin-right:4px; }
.rag-ev-scores { color:#57606a; font-size:0.85em; margin:2px 0 6px; }
.rag-ev-text { white-space:pre-wrap; max-height:18em; overflow-y:auto; }
.rag-ev-text mark { background:#ffe58a; color:#1f2328; padding:0 1px; }
.rag-sub { color:#57606a; font-weight:600; margin:12px 0 6px; font-size:0.9em; }
.rag-abstain { background:#fff4e5; border:1px solid #f0b400; color:#5c3d00; border-radius:6px; padding:6px 10px; margin:4px 0; }
.rag-error { background:#ffebe9; border:1px solid #ff8182; color:#82071e; border-radius:6px; padding:6px 10px; }
.rag-note { color:#57606a; font-size:0.9em; }
"""

# Installed once per page: one delegated click handler for every citation button, present or future.
CITATION_JS = (
    "() => {\n"
    "  if (window.__ragCitations) return;\n"
    "  window.__ragCitations = true;\n"
    "  const style = document.createElement('style');\n"
    f"  style.textContent = {json.dumps(CSS)};\n"
    "  document.head.appendChild(style);\n"
    "  document.addEventListener('click', (event) => {\n"
    "    const btn = event.target.closest && event.target.closest('.rag-cite');\n"
    "    if (!btn) return;\n"
    "    event.preventDefault();\n"
    "    const cls = btn.className;\n"
    "    const turn = (cls.match(/rag-t-(\\d+)/) || [])[1], num = (cls.match(/rag-n-(\\d+)/) || [])[1];\n"
    "    if (!turn || !num) return;\n"
    "    document.querySelectorAll('.rag-turn').forEach((el) =>\n"
    "      el.classList.toggle('rag-hidden', !el.classList.contains('rag-tb-' + turn)));\n"
    "    document.querySelectorAll('.rag-ev.rag-active').forEach((el) => el.classList.remove('rag-active'));\n"
    "    const target = document.getElementById('ev-' + turn + '-' + num)\n"
    "      || document.querySelector('.rag-ev.ev-' + turn + '-' + num);\n"
    "    if (!target) return;\n"
    "    target.classList.add('rag-active');\n"
    "    target.scrollIntoView({behavior: 'smooth', block: 'start'});\n"
    "  }, true);\n"
    "}"
)
