"""unstructured's elements -> our `Element`s, and the clean-up every format gets afterwards."""

from __future__ import annotations

import re
from typing import Any

from ingest.loaders.document import Element, one_line

# Element categories that carry no document text.
DROP_TYPES = {"PageBreak"}
# Skip unstructured's per-document/per-element language detection (langdetect): it took 85% of the
# parse time on a 120 KB multilingual text file and nothing here uses the language metadata.
NO_LANG: dict[str, Any] = {"languages": [""]}

_UNNAMED = re.compile(r"Unnamed: \d+")
_CID = re.compile(r"\(cid:\d+\)")  # glyphs pdfminer cannot map to Unicode
_BULLET_LINE = re.compile(r"^\s*[•●▪◦·‣∙○■□➢►\-*]\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def from_unstructured(raw: list[Any]) -> list[Element]:
    """Convert unstructured elements: category, text (tables as rows), page number."""
    out: list[Element] = []
    for el in raw:
        category = getattr(el, "category", type(el).__name__)
        if category in DROP_TYPES:
            continue
        meta = getattr(el, "metadata", None)
        text = el.text or ""
        if category == "Table" and meta is not None and getattr(meta, "text_as_html", None):
            text = _table_text(meta.text_as_html) or text
        page = getattr(meta, "page_number", None) if meta is not None else None
        out.append(Element(text=text, type=category, page_number=int(page) if page else None))
    return out


def _table_text(html: str) -> str:
    """A table as plain text: one line per row, cells separated by " | " (rows stay splittable)."""
    try:
        # Lazy: lxml comes with unstructured and is needed only for tables.
        from lxml import html as lxml_html

        root = lxml_html.fromstring(html)
    except Exception:  # malformed table HTML: fall back to the element text
        return ""
    lines = []
    for row in root.iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in row if cell.tag in ("td", "th")]
        # pandas names blank header cells "Unnamed: 3"; they are not document text.
        cells = ["" if _UNNAMED.fullmatch(c) else c for c in cells]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def paragraph_elements(raw: str, page_number: int | None) -> list[Element]:
    """Plain text laid out in lines (a pdfminer text box, a page of OCR output) -> typed paragraphs.

    Types come from unstructured's own text classifier, so they match what its partitioners return.
    """
    # Lazy: unstructured is heavy.
    from unstructured.partition.text import element_from_text

    out = []
    for text in _split_box(raw):
        category = element_from_text(text).category
        if category in ("Header", "Footer"):  # only from coordinates; none passed
            category = "Text"
        if category == "ListItem":
            text = _BULLET_LINE.sub("", text, count=1) or text
        out.append(Element(text=text, type=category, page_number=page_number))
    return out


def _split_box(raw: str) -> list[str]:
    """A pdfminer text box -> paragraphs: lines joined by spaces, bullet lines kept apart."""
    raw = _CID.sub("", _CONTROL.sub("", raw.replace("\r", "\n")))
    groups: list[list[str]] = []
    for line in raw.split("\n"):
        line = line.strip()
        if not line:
            if groups and groups[-1]:
                groups.append([])
            continue
        if _BULLET_LINE.match(line) and groups and groups[-1]:
            groups.append([])
        if not groups:
            groups.append([])
        groups[-1].append(line)
    out = []
    for group in groups:
        if not group:
            continue
        text = group[0]
        for line in group[1:]:
            # Re-join words hyphenated across lines ("docu-\nment"); keep real hyphens otherwise.
            if text.endswith("-") and line[:1].islower() and len(text) > 1 and text[-2].isalpha():
                text = text[:-1] + line
            else:
                text = text + " " + line
        out.append(text)
    return out


def finish(elements: list[Element], page_count: int | None) -> list[Element]:
    """Strip, drop empties and repeated page headers/footers, fill in `section`."""
    cleaned = []
    for el in elements:
        text = el.text.strip()
        if not text or el.type in DROP_TYPES:
            continue
        cleaned.append(Element(text=text, type=el.type, page_number=el.page_number))
    cleaned = _drop_running_headers(cleaned, page_count)
    section = ""
    for el in cleaned:
        if el.type == "Title":
            section = one_line(el.text, 200)
        el.section = section
    return cleaned


def _header_key(text: str) -> str:
    return re.sub(r"\d+", "#", text.lower())


def _drop_running_headers(elements: list[Element], page_count: int | None) -> list[Element]:
    """Drop short lines repeated on most pages (running headers, footers, page numbers)."""
    if not page_count or page_count < 3:
        return elements
    pages_by_key: dict[str, set[int]] = {}
    for el in elements:
        if el.page_number and len(el.text) <= 80:
            pages_by_key.setdefault(_header_key(el.text), set()).add(el.page_number)
    threshold = max(3, page_count // 2)
    repeated = {k for k, pages in pages_by_key.items() if len(pages) >= threshold}
    if not repeated:
        return elements
    return [el for el in elements
            if not (el.page_number and len(el.text) <= 80 and _header_key(el.text) in repeated)]
