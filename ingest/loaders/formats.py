"""The format table: one row per supported format, from file extension to the reader that parses it.

A row says what the format is called in results (`file_type`), which extensions map to it, what its
first bytes must look like (`content`, checked by `sniff.check_content` before any parser runs) and
which reader turns it into elements. PDFs have their own reader (`pdf`), images are read by OCR
(`ocr`), every other format by one of unstructured's per-format partitioners through
`UnstructuredReader`; adding a format is adding a row.
"""

from __future__ import annotations

import importlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from ingest.loaders.document import FileParseError, ParsedDocument
from ingest.loaders.elements import NO_LANG, from_unstructured
from ingest.loaders.ocr import read_image
from ingest.loaders.pdf import parse_pdf
from ingest.loaders.sniff import decode_text

log = logging.getLogger(__name__)

# (path, file_type, settings) -> ParsedDocument, raising FileParseError for a bad file.
Reader = Callable[[Path, str, Any], ParsedDocument]
# What a format's first bytes must look like (see sniff.check_content); "text" also means "no NUL bytes".
Content = Literal["pdf", "zip", "rtf", "text", "png", "jpeg", "tiff"]


@dataclass(frozen=True)
class UnstructuredReader:
    """Calls `unstructured.partition.<module>.<function>` on a file.

    `source` is how the file is handed over: "filename" (the partitioner reads it), "text" (decoded
    here by `decode_text`, so encodings are detected one way for every text format) or "table" (decoded,
    then re-encoded as UTF-8 bytes for the CSV/TSV partitioners). `numbered_pages`: the format's slides
    or sheets come back as page numbers, so the page count is the highest one.
    """

    module: str
    function: str
    source: Literal["filename", "text", "table"] = "filename"
    numbered_pages: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, path: Path, file_type: str, settings: Any) -> ParsedDocument:
        # Lazy: unstructured's partitioners are heavy; only the one this format needs is imported.
        partition = getattr(importlib.import_module(f"unstructured.partition.{self.module}"), self.function)
        if self.source == "filename":
            raw = partition(filename=str(path), **self.options, **NO_LANG)
        else:
            text, encoding = decode_text(path.read_bytes(), path, file_type)
            if not text.strip():
                raise FileParseError(path, "no text extracted (the file holds only whitespace)")
            log.debug("%s decoded as %s", path, encoding)
            if self.source == "text":
                raw = partition(text=text, **self.options, **NO_LANG)
            else:
                raw = partition(file=io.BytesIO(text.encode("utf-8")), **self.options, **NO_LANG)
        elements = from_unstructured(raw)
        page_count = None
        if self.numbered_pages:
            pages = [e.page_number for e in elements if e.page_number]
            page_count = max(pages) if pages else None
        return ParsedDocument(path=path, file_type=file_type, elements=elements, page_count=page_count,
                              needs_ocr=False, parser=f"unstructured:{file_type}")


@dataclass(frozen=True)
class Format:
    """One supported format."""

    file_type: str  # reported in ParsedDocument.file_type and the chunk payload
    extensions: tuple[str, ...]  # lower case, with the dot
    content: Content
    read: Reader
    zip_member: str = ""  # zip-based formats: a member the container must hold (a .docx that is an .xlsx fails)


FORMATS: tuple[Format, ...] = (
    Format("pdf", (".pdf",), "pdf", parse_pdf),
    Format("html", (".html", ".htm", ".xhtml"), "text", UnstructuredReader("html", "partition_html", "text")),
    Format("docx", (".docx",), "zip", UnstructuredReader("docx", "partition_docx"), zip_member="word/document.xml"),
    Format("pptx", (".pptx",), "zip", UnstructuredReader("pptx", "partition_pptx", numbered_pages=True),
           zip_member="ppt/presentation.xml"),
    Format("xlsx", (".xlsx",), "zip",
           UnstructuredReader("xlsx", "partition_xlsx", numbered_pages=True, options={"include_header": True}),
           zip_member="xl/workbook.xml"),
    Format("csv", (".csv",), "text",
           UnstructuredReader("csv", "partition_csv", "table", options={"encoding": "utf-8", "include_header": True})),
    Format("tsv", (".tsv",), "text",
           UnstructuredReader("tsv", "partition_tsv", "table", options={"include_header": True})),
    Format("md", (".md", ".markdown"), "text", UnstructuredReader("md", "partition_md", "text")),
    Format("txt", (".txt", ".text", ".log"), "text", UnstructuredReader("text", "partition_text", "text")),
    Format("eml", (".eml",), "text", UnstructuredReader("email", "partition_email")),
    Format("epub", (".epub",), "zip", UnstructuredReader("epub", "partition_epub"),
           zip_member="META-INF/container.xml"),
    Format("odt", (".odt",), "zip", UnstructuredReader("odt", "partition_odt"), zip_member="content.xml"),
    Format("rtf", (".rtf",), "rtf", UnstructuredReader("rtf", "partition_rtf")),
    Format("rst", (".rst",), "text", UnstructuredReader("rst", "partition_rst")),
    Format("org", (".org",), "text", UnstructuredReader("org", "partition_org")),
    # Images are read by OCR (settings.ocr); every TIFF frame is a page.
    Format("png", (".png",), "png", read_image),
    Format("jpeg", (".jpg", ".jpeg"), "jpeg", read_image),
    Format("tiff", (".tif", ".tiff"), "tiff", read_image),
)

BY_EXTENSION: dict[str, Format] = {ext: fmt for fmt in FORMATS for ext in fmt.extensions}


def format_of(path: Path) -> Format | None:
    """The format row for a path's extension (case-insensitive), or None when unsupported."""
    return BY_EXTENSION.get(Path(path).suffix.lower())
