"""Turn one file into a list of text elements (title, paragraph, list item, table ...) with pages.

Parsing is done by `unstructured` for every format it handles offline. The package is split by job:

* `formats`  the format table: extension -> expected content -> reader (one row per format).
* `parse`    `parse_file`: size and content checks, then the format's reader, then clean-up.
* `sniff`    checks on the bytes before any parser runs (magic bytes, zip containers inflated under
             a byte budget and a ratio cap), and text decoding.
* `pdf`      PDF specifics (unstructured "fast", pdfminer layout analysis, pages without text).
* `ocr`      Tesseract, offline: image files and PDF pages without a text layer (settings.ocr).
* `offline`  telemetry off and a spaCy pipeline that needs no download (`configure_offline`).
* `elements` unstructured's elements -> `Element`s, and the clean-up every format gets.
* `document` `Element`, `ParsedDocument`, `FileParseError`, `NeedsOCRError`.

Every exception from a parser is wrapped into a `FileParseError` (a `rag.errors.ParseError`) with a
one-line reason naming the file: one bad file never stops an ingest.
"""

from __future__ import annotations

# First: importing `offline` switches telemetry off before anything can load unstructured.
from ingest.loaders.offline import configure_offline
from ingest.loaders.document import Element, FileParseError, NeedsOCRError, ParsedDocument
from ingest.loaders.formats import FORMATS, Format
from ingest.loaders.parse import parse_file, supported
from ingest.loaders.sniff import ZipLimits, decode_text

__all__ = [
    "Element", "FileParseError", "FORMATS", "Format", "NeedsOCRError", "ParsedDocument", "ZipLimits",
    "configure_offline", "decode_text", "parse_file", "supported",
]
