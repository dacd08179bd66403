"""`parse_file`: checks a file, picks its row in the format table, parses it, cleans the elements."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ingest.loaders.document import FileParseError, NeedsOCRError, ParsedDocument
from ingest.loaders.elements import finish
from ingest.loaders.formats import BY_EXTENSION, format_of
from ingest.loaders.offline import configure_offline
from ingest.loaders.ocr import ocr_mode, unavailable_reason
from ingest.loaders.pdf import no_text_layer_reason
from ingest.loaders.sniff import MB, ZipLimits, check_content

log = logging.getLogger(__name__)


def supported(path: Path) -> bool:
    """True when the file's extension is a format `parse_file` handles."""
    return Path(path).suffix.lower() in BY_EXTENSION


def parse_file(path: Path, settings: Any) -> ParsedDocument:
    """Parse one file into elements. Raises FileParseError (a ParseError) with a one-line reason.

    Checks size (settings.max_file_mb), emptiness and content (magic bytes; zip containers are
    inflated under a budget) first; PDFs use settings.pdf_strategy ("fast"; "hi_res"/"ocr_only" need
    models this product does not ship).
    """
    path = Path(path)
    started = time.perf_counter()
    fmt = format_of(path)
    if fmt is None:
        raise FileParseError(path, f"unsupported file type {path.suffix or '(no extension)'!r}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FileParseError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise FileParseError(path, "not a regular file")
    max_mb = float(getattr(settings, "max_file_mb", 200.0))
    if size > max_mb * MB:
        raise FileParseError(path, f"larger than the {max_mb:g} MB limit (RAG_MAX_FILE_MB); "
                                   f"file is {size / MB:.3g} MB")
    if size == 0:
        raise FileParseError(path, "empty file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        raise FileParseError(path, f"cannot read file ({exc.strerror or exc})") from exc
    check_content(path, fmt.content, fmt.file_type, head, zip_member=fmt.zip_member,
                  zip_limits=ZipLimits.for_max_file_bytes(max_mb * MB))

    configure_offline()
    try:
        doc = fmt.read(path, fmt.file_type, settings)
    except FileParseError:
        raise
    except Exception as exc:  # a parser bug or a malformed file must never crash the run
        log.debug("parser failed on %s", path, exc_info=True)
        raise FileParseError(path, f"parser failed ({type(exc).__name__}: {exc})") from exc

    doc.elements = finish(doc.elements, doc.page_count)
    if not doc.elements:
        if doc.needs_ocr:
            raise NeedsOCRError(path, no_text_layer_reason(unavailable_reason(ocr_mode(path, settings))))
        raise FileParseError(path, "no text extracted (the file holds no readable text)")
    doc.parse_seconds = time.perf_counter() - started
    log.debug("parsed %s: %d elements, %s pages, %.2fs (%s)", path, len(doc.elements),
              doc.page_count, doc.parse_seconds, doc.parser)
    return doc
