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
from urllib.parse import urlencode

from rag.answering.citations import find_markers  # the one citation-marker grammar
from rag.models import Answer, Chunk, Citation, Hit


def file_label(path: str, file_name: str = "") -> str:
    """The file's base name for display."""
    return file_name or Path(path).name or path


def citation_button(turn: int, number: int) -> str:
    """One clickable citation; the page script opens passage `ev-{turn}-{number}`."""
    # The chat sanitizer strips data-* attributes, so the target also rides in class names.
    return (f'<button class="rag-cite rag-t-{turn} rag-n-{number}" type="button" data-turn="{turn}" '
            f'data-ev="{number}" title="Show passage {number}">[{number}]</button>')


# Characters the chat's Markdown renderer would turn into structure. As numeric entities they show
# as themselves but can never open an image, a link, a code span or an autolink: `![x](http://host/?d=…)`
# in a document or an LLM reply must not make the browser fetch anything (issue 14 #5).
_MARKDOWN_ENTITIES = str.maketrans({"[": "&#91;", "]": "&#93;", "`": "&#96;", "@": "&#64;"})
# GFM autolinks need these literal sequences; one entity breaks each of them.
_AUTOLINK_RE = re.compile(r"(?i)(?<=[a-z0-9])://|\bwww\.")


def safe_text(text: str) -> str:
    """Untrusted text for the chat (Markdown + sanitized HTML): no tags, images, links or autolinks.

    HTML is escaped (so a raw `<img>` or `<a>` is text); Markdown link/image brackets, backticks
    and `@` become numeric entities; `://` and `www.` are broken so GFM autolinking finds no URL.
    The reader sees the same characters.
    """
    escaped = html.escape(text, quote=True).translate(_MARKDOWN_ENTITIES)
    return _AUTOLINK_RE.sub(lambda m: ":&#47;&#47;" if m.group(0) == "://" else m.group(0)[:-1] + "&#46;",
                            escaped)


def _quoted_from(sources: list[str], text: str, start: int, end: int) -> bool:
    """True when the marker text[start:end] is part of a passage quoted from a document.

    A document's own footnote (`… in 1905.[1]` in a Wikipedia text) comes into an answer with the
    words before it; the same words and marker then occur in an evidence passage. The answerer's own
    markers (`… were delivered [1].`) do not occur in the passages.
    """
    context = " ".join(text[max(0, start - 24):end].split())
    if len(context) < (end - start) + 8:  # too little context to tell: trust the answerer
        return False
    return any(context in source for source in sources)


def link_citations(text: str, turn: int, valid: set[int], sources: list[str] | None = None) -> str:
    """`text` made safe (see `safe_text`), with [n] markers of allow-listed numbers as citation buttons.

    Markers with no allow-listed number, and markers quoted from one of the `sources` passages (a
    document's own footnotes), stay visible as plain text.
    """
    flat_sources = [" ".join(s.split()) for s in sources or []]
    out: list[str] = []
    cursor = 0
    for marker in find_markers(text):
        numbers = [n for n in marker.numbers if n in valid]
        if not numbers or _quoted_from(flat_sources, text, marker.start, marker.end):
            continue
        out.append(safe_text(text[cursor:marker.start]))
        out.append("".join(citation_button(turn, n) for n in numbers))
        cursor = marker.end
    out.append(safe_text(text[cursor:]))
    return "".join(out)


def answer_markdown(answer: Answer) -> str:
    """The answer as clean Markdown with its cited sources listed: what the Copy button copies."""
    if answer.abstained:
        body = "No answer found in the indexed documents."
    else:
        body = answer.text.strip()
    lines = [body]
    cited = sorted({c.number for c in answer.citations})
    by_number = {e.number: e for e in answer.evidence}
    quotes = quotes_by_number(answer.citations)
    if cited:
        lines.append("")
        lines.append("Sources:")
        for n in cited:
            ev = by_number.get(n)
            if ev is None:
                continue
            chunk = ev.hit.chunk
            where = file_label(chunk.file_path, chunk.file_name)
            if chunk.page_numbers:
                where += f", p. {chunk.page_numbers[0]}"
            quote = " ".join((quotes.get(n) or [""])[0].split())
            lines.append(f"[{n}] {where}" + (f" — \u201c{quote}\u201d" if quote else ""))
    return "\n".join(lines)


def copy_control(answer: Answer) -> str:
    """A Copy button and, hidden beside it, the answer as Markdown (one line: newlines as entities,
    so the chat's Markdown renderer keeps the whole block as HTML)."""
    source = safe_text(answer_markdown(answer)).replace("\n", "&#10;")
    return (f'<div class="rag-copy-wrap"><button class="rag-copy" type="button" title="Copy the answer and its '
            f'sources as Markdown">Copy</button><div class="rag-copy-src">{source}</div></div>')


def streaming_text(partial: str) -> str:
    """Text while tokens are still arriving: made safe, markers left as plain text."""
    return safe_text(partial) + " ▍"


def answer_message(answer: Answer, turn: int) -> str:
    """The assistant chat message for a final answer: text with citation buttons and notes."""
    valid = {e.number for e in answer.evidence}
    parts: list[str] = []
    if answer.error:
        parts.append(f'<div class="rag-error">⚠️ The answer could not be generated: '
                     f'{safe_text(answer.error)}<br>The retrieved evidence is in the panel; '
                     'try again later, or choose the extractive answerer in Settings.</div>')
    elif answer.abstained:
        parts.append('<div class="rag-abstain"><strong>No answer found in the indexed documents.</strong> '
                     'The retrieved passages do not contain enough evidence to answer; the closest ones '
                     'are listed in the evidence panel as related, not sufficient.</div>')
        # The answerer's own wording repeats the banner and lists the related passages the panel shows;
        # keep only notes after it (e.g. how many unsupported sentences were removed).
        notes = [p.strip() for p in answer.text.split("\n\n")[1:]
                 if p.strip() and not p.strip().startswith("Related passages")]
        parts.extend(f'<div class="rag-note">{safe_text(n)}</div>' for n in notes)
    else:
        parts.append(link_citations(answer.text.strip(), turn, valid,
                                    sources=[e.hit.chunk.text for e in answer.evidence]))
    if answer.removed_sentences and not answer.abstained:
        n = len(answer.removed_sentences)
        parts.append(f'<div class="rag-note">{n} sentence{"s" if n != 1 else ""} without a valid citation '
                     'removed (strict citations).</div>')
    if answer.dropped_citations:
        dropped = ", ".join(safe_text(d) for d in answer.dropped_citations[:5])
        parts.append(f'<div class="rag-note">Ignored citation markers that point at no evidence: {dropped}</div>')
    if not answer.error:
        parts.append(copy_control(answer))
    return "\n\n".join(parts)


def error_message(text: str) -> str:
    """A readable error in the chat (never a stack trace)."""
    return f'<div class="rag-error">⚠️ {safe_text(text)}</div>'


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


# Cross-encoder scores (logits) above which a passage reads as a strong / good match.
RERANK_STRONG, RERANK_GOOD = 3.0, 0.0
TOP_RANK, GOOD_RANK = 3, 10  # ranks in both search legs that make a strong / good match


def match_words(hit: Hit) -> str:
    """Why the passage came back, in words ("Strong match · meaning and keywords"); the numbers behind
    it are in `scores_line`, shown on hover.

    With the reranker its score decides; without it, a passage both legs rank in their top 3 is a strong
    match, one both rank in their top 10 (or one leg ranks first) a good one, anything else a weak one.
    """
    legs = [name for name, rank in (("meaning", hit.dense_rank), ("keywords", hit.bm25_rank)) if rank]
    if hit.rerank_score is not None:
        strength = ("Strong" if hit.rerank_score >= RERANK_STRONG else
                    "Good" if hit.rerank_score >= RERANK_GOOD else "Weak")
    else:
        ranks = [rank for rank in (hit.dense_rank, hit.bm25_rank) if rank]
        both = len(ranks) == 2
        strength = ("Strong" if both and max(ranks) <= TOP_RANK else
                    "Good" if (both and max(ranks) <= GOOD_RANK) or 1 in ranks else "Weak")
    found = " and ".join(legs) if legs else "search"
    return f"{strength} match · found by {found}"


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


# Where the UI serves the source viewer (ui.viewer), relative to the UI page: the links work wherever
# the UI is mounted (/ui/ under `rag serve`, / under `rag ui`) and carry the session's own sign-in.
VIEWER_BASE = "sources"


def source_links(chunk: Chunk) -> str:
    """"Open source" (the cited page of a PDF, else the text scrolled to the passage) and "Download"."""
    if not chunk.id:
        return ""
    is_pdf = chunk.file_type == "pdf"
    params = {"chunk_id": chunk.id, **({"page": chunk.page} if is_pdf and chunk.page else {})}
    view = f"{VIEWER_BASE}/view?{urlencode(params)}" + ("" if is_pdf else "#passage")
    download = f"{VIEWER_BASE}/file?{urlencode({'chunk_id': chunk.id})}"
    where = f"page {chunk.page}" if is_pdf and chunk.page else "the passage in its document"
    return (f'<div class="rag-ev-links"><a class="rag-open" href="{html.escape(view)}" target="_blank" '
            f'rel="noopener noreferrer" title="Open {where} in a new tab">Open source</a>'
            f'<a class="rag-download" href="{html.escape(download)}" download '
            f'title="Download the original file">Download</a></div>')


def _passage_card(anchor: str, label: str, hit: Hit, quotes: list[str], cited: bool) -> str:
    # Classes repeat the anchor: the page script finds passages by class if a sanitizer drops ids.
    classes = f"rag-ev {anchor}" + (" cited" if cited else "")
    return (
        f'<div class="{classes}" id="{anchor}">'
        f'<div class="rag-ev-head"><span class="rag-ev-num">{label}</span> {_source_line(hit)}</div>'
        f'<div class="rag-ev-scores" title="{html.escape(scores_line(hit))}">{match_words(hit)}</div>'
        f'<div class="rag-ev-text">{highlight(hit.chunk.text, quotes)}</div>'
        f"{source_links(hit.chunk)}"
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
    if answer.searched_query and answer.searched_query.strip() != answer.question.strip():
        # A follow-up was rewritten into a standalone query: show what was actually searched.
        method = "by the LLM" if (answer.query_rewrite or {}).get("method") == "llm" else "from the conversation"
        parts.append(f'<div class="rag-note rag-searched">Searched for: “{html.escape(answer.searched_query, quote=False)}” '
                     f'(rewritten {method})</div>')
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


def last_turn(blocks: list[str]) -> int:
    """The turn number of the newest evidence block (0 when there is none); older blocks may be capped away."""
    match = re.search(r'rag-tb-(\d+)', blocks[-1]) if blocks else None
    return int(match.group(1)) if match else len(blocks)


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
.rag-cite { display:inline; border:1px solid var(--color-accent, #7c8cff); background:var(--color-accent-soft, #eef0ff);
  color:var(--body-text-color, #1f2328); border-radius:4px; padding:0 3px; margin:0 1px; font-size:0.85em;
  cursor:pointer; line-height:1.3; }
.rag-cite:hover { filter:brightness(0.92); }
.rag-panel { font-size:0.92em; }
.rag-turn.rag-hidden { display:none; }
.rag-turn-q { font-weight:600; margin:4px 0 8px; }
.rag-ev { border:1px solid var(--border-color-primary, #d0d4dc); border-radius:6px; padding:8px 10px; margin:0 0 10px;
  background:var(--block-background-fill, #fff); color:var(--body-text-color, #1f2328); }
.rag-ev.cited { border-left:4px solid var(--color-accent, #7c8cff); }
.rag-ev.rag-active { outline:3px solid #f0b400; box-shadow:0 0 0 4px rgba(240,180,0,0.25); }
.rag-ev-head { font-weight:600; }
.rag-ev-num { margin-right:4px; }
.rag-ev-scores { color:var(--body-text-color-subdued, #57606a); font-size:0.85em; margin:2px 0 6px; }
.rag-ev-text { white-space:pre-wrap; max-height:18em; overflow-y:auto; }
/* fixed colours in both themes: the HTML block's prose styles would otherwise tint the text in dark mode */
.rag-ev-text mark { background:#ffe58a !important; color:#1f2328 !important; padding:0 1px; }
.rag-sub { color:var(--body-text-color-subdued, #57606a); font-weight:600; margin:12px 0 6px; font-size:0.9em; }
.rag-abstain { background:#fff4e5; border:1px solid #f0b400; color:#5c3d00; border-radius:6px; padding:6px 10px; margin:4px 0; }
.rag-error { background:#ffebe9; border:1px solid #ff8182; color:#82071e; border-radius:6px; padding:6px 10px; }
.dark .rag-abstain { background:#3b2d05; border-color:#b88a00; color:#ffe7a6; }
.dark .rag-error { background:#4a1218; border-color:#d1242f; color:#ffd8d6; }
.rag-note { color:var(--body-text-color-subdued, #57606a); font-size:0.9em; }
.rag-copy { border:1px solid var(--border-color-primary, #d0d4dc); background:transparent; color:var(--body-text-color-subdued, #57606a);
  border-radius:4px; padding:0 6px; font-size:0.8em; cursor:pointer; margin-top:6px; }
.rag-copy-src { display:none; }
/* fixed link colours: at least 4.5:1 on the card background in both themes */
.rag-ev-links { margin-top:6px; display:flex; gap:16px; font-size:0.9em; }
.rag-ev-links a { color:#0969da !important; text-decoration:underline; }
.dark .rag-ev-links a { color:#58a6ff !important; }
.rag-stopped { margin-top:4px; font-style:italic; }
/* "Back to answer": shown while the citation that opened a passage is off-screen (on a phone the evidence
   panel sits below the chat, so a citation click scrolls far down) */
#rag-back { position:fixed; right:14px; bottom:18px; z-index:1000; display:none;
  background:#0969da; color:#ffffff; border:none; border-radius:18px; padding:8px 16px; font-size:0.95em;
  box-shadow:0 2px 8px rgba(0,0,0,0.35); cursor:pointer; }
#rag-back.rag-show { display:block; }
"""

# Installed once per page: one delegated click handler for every citation button, present or future.
CITATION_JS = (
    "() => {\n"
    "  if (window.__ragCitations) return;\n"
    "  window.__ragCitations = true;\n"
    "  const style = document.createElement('style');\n"
    f"  style.textContent = {json.dumps(CSS)};\n"
    "  document.head.appendChild(style);\n"
    # One "Back to answer" control: visible while the clicked citation is out of view; it scrolls back.
    "  const back = document.createElement('button');\n"
    "  back.id = 'rag-back'; back.type = 'button'; back.textContent = '\u2191 Back to answer';\n"
    "  document.body.appendChild(back);\n"
    "  let origin = null, observer = null;\n"
    "  const watchOrigin = (btn) => {\n"
    "    if (observer) observer.disconnect();\n"
    "    origin = btn;\n"
    "    observer = new IntersectionObserver((entries) => {\n"
    "      const seen = entries[entries.length - 1].isIntersecting;\n"
    # A citation no longer on the page (another conversation opened) has nothing to go back to.
    "      back.classList.toggle('rag-show', !seen && origin.isConnected);\n"
    "    });\n"
    "    observer.observe(btn);\n"
    "  };\n"
    "  back.addEventListener('click', () => {\n"
    "    back.classList.remove('rag-show');\n"
    "    if (observer) { observer.disconnect(); observer = null; }\n"
    "    if (origin && origin.isConnected) { origin.scrollIntoView({block: 'center'}); origin.focus(); }\n"
    "  });\n"
    "  document.addEventListener('click', (event) => {\n"
    "    const copy = event.target.closest && event.target.closest('.rag-copy');\n"
    "    if (copy) {\n"
    "      event.preventDefault();\n"
    "      const src = copy.parentElement && copy.parentElement.querySelector('.rag-copy-src');\n"
    "      const text = src ? src.textContent : '';\n"
    "      const done = () => { copy.textContent = 'Copied'; setTimeout(() => { copy.textContent = 'Copy'; }, 1500); };\n"
    "      if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text).then(done); }\n"
    "      else { const ta = document.createElement('textarea'); ta.value = text; document.body.appendChild(ta);\n"
    "        ta.select(); document.execCommand('copy'); ta.remove(); done(); }\n"
    "      return;\n"
    "    }\n"
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
    "    watchOrigin(btn);\n"
    "  }, true);\n"
    "}"
)
