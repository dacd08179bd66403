"""unstructured's elements -> our `Element`s, and the clean-up every format gets afterwards."""

from __future__ import annotations

import bisect
import re
from typing import Any, Sequence

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
        page = int(page) if page else None
        box = _coordinates_box(getattr(meta, "coordinates", None), page) if meta is not None else None
        out.append(Element(text=text, type=category, page_number=page, boxes=[box] if box else []))
    return out


def normalized_box(page: int, x0: float, y0: float, x1: float, y1: float, width: float, height: float,
                   y_down: bool) -> list[float] | None:
    """[page, x0, y0, x1, y1] as fractions of a `width` x `height` page, origin top-left (None if degenerate).

    `y_down`: the input's y axis grows downwards (screen/pixel space) rather than upwards (PDF space).
    Rounded to 4 decimals (a tenth of a point on a letter page): boxes ride in every chunk's payload.
    """
    if not width or not height or width <= 0 or height <= 0:
        return None
    if not y_down:
        y0, y1 = height - y0, height - y1
    xs = sorted((x0 / width, x1 / width))
    ys = sorted((y0 / height, y1 / height))
    box = [max(0.0, min(1.0, v)) for v in (xs[0], ys[0], xs[1], ys[1])]
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return [page, *(round(v, 4) for v in box)]


def _coordinates_box(coords: Any, page: int | None) -> list[float] | None:
    """unstructured's CoordinatesMetadata (points + coordinate system) -> a normalized box, if any."""
    if coords is None or page is None:
        return None
    try:
        points = list(coords.points or [])
        system = coords.system
        width, height = float(system.width), float(system.height)
        # CoordinateOrientation.SCREEN is (1, -1): y grows downwards (what "fast" PDF parsing gives).
        orientation = getattr(system, "orientation", None)
        y_down = tuple(getattr(orientation, "value", orientation) or (1, -1))[1] < 0
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
    except (AttributeError, TypeError, ValueError, IndexError):
        return None  # no layout for this element (or a coordinate system we do not know): no highlight
    if not xs:
        return None
    return normalized_box(page, min(xs), min(ys), max(xs), max(ys), width, height, y_down)


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


def clean_box_text(raw: str) -> str:
    """Text of a pdfminer box or line with control characters and unmapped glyphs removed (idempotent)."""
    return _CID.sub("", _CONTROL.sub("", raw.replace("\r", "\n")))


def paragraph_elements(raw: str, page_number: int | None,
                       line_boxes: Sequence[tuple[int, list[float]]] | None = None) -> list[Element]:
    """Plain text laid out in lines (a pdfminer text box, a page of OCR output) -> typed paragraphs.

    Types come from unstructured's own text classifier, so they match what its partitioners return.
    `line_boxes`: (offset in `clean_box_text(raw)` where a layout line starts, its normalized box),
    sorted by offset; each paragraph then gets the union box of the lines it was made from.
    """
    # Lazy: unstructured is heavy.
    from unstructured.partition.text import element_from_text

    out = []
    for text, starts in _split_box(raw):
        category = element_from_text(text).category
        if category in ("Header", "Footer"):  # only from coordinates; none passed
            category = "Text"
        if category == "ListItem":
            text = _BULLET_LINE.sub("", text, count=1) or text
        boxes = _union_of_lines(starts, line_boxes) if line_boxes else []
        out.append(Element(text=text, type=category, page_number=page_number, boxes=boxes))
    return out


def _union_of_lines(starts: list[int], line_boxes: Sequence[tuple[int, list[float]]]) -> list[list[float]]:
    """The one box around the layout lines that the text lines starting at `starts` came from."""
    offsets = [offset for offset, _box in line_boxes]
    owned = [line_boxes[i][1] for i in sorted({bisect.bisect_right(offsets, s) - 1 for s in starts}) if i >= 0]
    if not owned:
        return []
    page = owned[0][0]
    owned = [b for b in owned if b[0] == page]
    return [[page, min(b[1] for b in owned), min(b[2] for b in owned),
             max(b[3] for b in owned), max(b[4] for b in owned)]]


def _split_box(raw: str) -> list[tuple[str, list[int]]]:
    """A pdfminer text box -> paragraphs: lines joined by spaces, bullet lines kept apart.

    Each paragraph comes with the offsets (in the cleaned text) of the lines it joins, so layout
    boxes can follow the text.
    """
    raw = clean_box_text(raw)
    groups: list[list[tuple[str, int]]] = []
    offset = 0
    for raw_line in raw.split("\n"):
        line_start, offset = offset, offset + len(raw_line) + 1
        line = raw_line.strip()
        if not line:
            if groups and groups[-1]:
                groups.append([])
            continue
        if _BULLET_LINE.match(line) and groups and groups[-1]:
            groups.append([])
        if not groups:
            groups.append([])
        groups[-1].append((line, line_start))
    out = []
    for group in groups:
        if not group:
            continue
        text = group[0][0]
        for line, _start in group[1:]:
            # Re-join words hyphenated across lines ("docu-\nment"); keep real hyphens otherwise.
            if text.endswith("-") and line[:1].islower() and len(text) > 1 and text[-2].isalpha():
                text = text[:-1] + line
            else:
                text = text + " " + line
        out.append((text, [start for _line, start in group]))
    return out


def finish(elements: list[Element], page_count: int | None) -> list[Element]:
    """Strip, drop empties and repeated page headers/footers, fill in `section`."""
    cleaned = []
    for el in elements:
        text = el.text.strip()
        if not text or el.type in DROP_TYPES:
            continue
        cleaned.append(Element(text=text, type=el.type, page_number=el.page_number, boxes=el.boxes))
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
