"""What a loader returns (`Element`, `ParsedDocument`) and how it fails (`FileParseError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import ParseError


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (whitespace runs collapsed), cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FileParseError(ParseError):
    """A file could not be parsed. `reason` is the one-line reason without the path."""

    needs_ocr: bool = False

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Pickled with its two arguments: a parse failure crosses the ingest worker's pipe (ingest.priority).
        return (type(self), (self.path, self.reason))


class NeedsOCRError(FileParseError):
    """A PDF has pages but no text layer, and OCR is off or unavailable."""

    needs_ocr = True


@dataclass
class Element:
    """One piece of document text in reading order."""

    text: str
    type: str  # unstructured category: Title, NarrativeText, ListItem, Table, ...
    page_number: int | None = None
    section: str = ""  # nearest preceding Title (a Title's section is its own text)
    # Where the text sits on its page, for the source viewer's highlight: [page, x0, y0, x1, y1] with
    # x/y as fractions (0..1) of the displayed page, origin top-left. Empty when the format has no layout.
    boxes: list[list[float]] = field(default_factory=list)


@dataclass
class ParsedDocument:
    """The parse result of one file."""

    path: Path
    file_type: str
    elements: list[Element]
    page_count: int | None = None
    needs_ocr: bool = False  # some pages hold only images and OCR could not read them (their text is missing)
    parse_seconds: float = 0.0
    parser: str = ""  # which partitioner produced the elements
    # Pages with images but no text layer: read by OCR, or (when needs_ocr) left unread.
    ocr_pages: list[int] = field(default_factory=list)
