"""PDF: unstructured's "fast" partitioner when its extras are installed, else (and for encrypted,
rotated or letter-spaced PDFs) pdfminer.six layout analysis typed by unstructured's classifier.

Pages without a text layer go through OCR (`ocr`) when it is on and Tesseract is installed; a PDF
with no text that OCR cannot read raises `NeedsOCRError`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from ingest.loaders import ocr
from ingest.loaders.document import Element, FileParseError, NeedsOCRError, ParsedDocument
from ingest.loaders.elements import clean_box_text, from_unstructured, normalized_box, paragraph_elements

log = logging.getLogger(__name__)
# pdfminer and pypdf log a warning per odd drawing operator or broken xref entry; the per-file
# summary already says when a PDF fails, so their chatter would only bury it on stderr.
for _noisy in ("pdfminer", "pypdf"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

def parse_pdf(path: Path, file_type: str, settings: Any) -> ParsedDocument:
    """Parse a PDF (strategy `settings.pdf_strategy`: only "fast"/"auto" run without layout models).

    Pages without a text layer are read by OCR when `settings.ocr` allows it (see `ocr`); with
    `ocr="always"` every page is, and the OCR text replaces the text layer.
    """
    strategy = str(getattr(settings, "pdf_strategy", "fast") or "fast").lower()
    if strategy not in ("fast", "auto"):
        raise FileParseError(path, f"pdf_strategy {strategy!r} needs layout/OCR models that are not "
                                   "installed; set RAG_PDF_STRATEGY=fast")
    mode = ocr.ocr_mode(path, settings)
    cannot_ocr = ocr.unavailable_reason(mode)
    reader = _open_pdf(path)
    page_count = len(reader.pages)
    password = "" if reader.is_encrypted else None
    if mode == "always" and not cannot_ocr:
        pages = list(range(1, page_count + 1))
        return ParsedDocument(path=path, file_type=file_type, elements=ocr.pdf_page_elements(path, pages, password),
                              page_count=page_count, parser="tesseract", ocr_pages=pages)
    if mode == "always":
        log.warning("%s: ocr=always, but %s; reading the text layer", path, cannot_ocr)
    ocr_pages: list[int] = []
    elements: list[Element] = []
    parser = ""
    if _unstructured_pdf_available() and not reader.is_encrypted and not _has_rotated_pages(reader):
        # Lazy: heavy (unstructured's PDF stack pulls pdfminer, pdf2image, onnx ...).
        from unstructured.partition.pdf import partition_pdf

        raw = partition_pdf(filename=str(path), strategy="fast", infer_table_structure=False, languages=["eng"])
        elements = from_unstructured(raw)
        parser = "unstructured:pdf-fast"
        if _looks_garbled(elements):
            log.info("%s: unstructured's text looks letter-spaced; re-reading with pdfminer layout analysis", path)
            elements, parser = [], ""
    if not parser:
        # Encrypted and rotated pages, and letter-spaced output: unstructured's fast path reads these
        # as one character per word; our pdfminer pass decrypts and detects vertical text.
        elements, ocr_pages = _pdfminer_elements(path, password)
        parser = "pdfminer"
    if not cannot_ocr:
        scanned = _pages_without_text(reader, elements)
        if scanned:
            found = ocr.pdf_page_elements(path, scanned, password)
            # Stable sort: each OCR'd page slots in where it belongs, text-layer order is kept.
            elements = sorted(elements + found, key=lambda e: e.page_number or 0)
            return ParsedDocument(path=path, file_type=file_type, elements=elements, page_count=page_count,
                                  parser=f"{parser}+tesseract", ocr_pages=scanned)
    doc = ParsedDocument(path=path, file_type=file_type, elements=elements, page_count=page_count,
                         parser=parser, ocr_pages=ocr_pages)
    if not any(e.text.strip() for e in elements):
        if not _has_text_layer(reader):
            raise NeedsOCRError(path, no_text_layer_reason(cannot_ocr))
        raise FileParseError(path, "no text extracted (the PDF text layer could not be read)")
    doc.needs_ocr = bool(ocr_pages)
    if ocr_pages:
        log.info("%s: pages %s hold images but no text; their content needs OCR", path, ocr_pages[:20])
    return doc


def no_text_layer_reason(cannot_ocr: str) -> str:
    """The reason given for a PDF with no text at all, when OCR could not read it."""
    return f"no text layer (scanned/image-only PDF); needs OCR, and {cannot_ocr}"


def _pages_without_text(reader: Any, elements: list[Element]) -> list[int]:
    """Pages (1-based) that yielded no text but hold images: scans, for OCR. Blank pages are skipped."""
    with_text = {e.page_number for e in elements if e.text.strip()}
    pages = []
    for number, page in enumerate(reader.pages, start=1):
        if number in with_text:
            continue
        try:
            has_images = len(page.images) > 0
        except Exception:  # pypdf cannot list them: let OCR look at the page
            has_images = True
        if has_images:
            pages.append(number)
    return pages


@functools.lru_cache(maxsize=1)
def _unstructured_pdf_available() -> bool:
    """unstructured's partition_pdf needs the `unstructured[pdf]` extra (pdf2image, cv2, onnx, ...)."""
    try:
        import unstructured.partition.pdf  # noqa: F401  (lazy: heavy, and an optional extra)
    except ImportError as exc:
        log.info("unstructured[pdf] extras not installed (%s); PDFs use pdfminer.six layout analysis", exc)
        return False
    return True


def _open_pdf(path: Path) -> Any:
    """Open with pypdf: page count, encryption check. Raises FileParseError for unreadable PDFs."""
    # Lazy: pypdf is only needed for PDFs.
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise FileParseError(path, "encrypted; remove the password")
            except DependencyError as exc:
                raise FileParseError(path, f"encrypted with AES; install 'cryptography' ({exc})") from exc
        _ = len(reader.pages)
        return reader
    except FileParseError:
        raise
    except FileNotDecryptedError as exc:
        raise FileParseError(path, "encrypted; remove the password") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise FileParseError(path, f"corrupt or truncated PDF ({exc})") from exc


def _has_rotated_pages(reader: Any) -> bool:
    """True when any page carries a /Rotate other than 0."""
    for page in reader.pages:
        try:
            if int(page.get("/Rotate", 0) or 0) % 360:
                return True
        except (TypeError, ValueError):
            continue
    return False


def _looks_garbled(elements: list[Element]) -> bool:
    """Letter-spaced extraction ("R o t a t e d"): most words are a single letter."""
    words = [w for e in elements for w in e.text.split()]
    if len(words) < 8:
        return False
    single = sum(1 for w in words if len(w) == 1 and w.isalpha())
    return single / len(words) > 0.4


def _has_text_layer(reader: Any) -> bool:
    """True when pypdf extracts any non-whitespace text from any page."""
    for page in reader.pages:
        try:
            if (page.extract_text() or "").strip():
                return True
        except Exception:  # a broken page is not a text layer
            continue
    return False


def _pdfminer_elements(path: Path, password: str | None) -> tuple[list[Element], list[int]]:
    """pdfminer.six layout analysis (what unstructured's "fast" strategy runs), one element per text
    box, typed by unstructured's own classifier. Also returns pages with images but no text."""
    # Lazy: pdfminer is heavy and only needed for PDFs.
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTFigure, LTImage, LTTextBox, LTTextContainer, LTTextLine
    from pdfminer.pdfdocument import PDFPasswordIncorrect

    elements: list[Element] = []
    ocr_pages: list[int] = []
    try:
        # all_texts=True runs layout analysis inside figures too: many PDFs (e.g. reports made
        # by DTP tools) put whole pages of text in Form XObjects; detect_vertical reads rotated pages.
        laparams = LAParams(all_texts=True, detect_vertical=True)
        pages = extract_pages(str(path), password=password or "", laparams=laparams)
        for page_number, layout in enumerate(pages, start=1):
            state = {"text": False, "image": False}
            # pdfminer applies the page's /Rotate, so its layout space is the page as displayed.
            width, height = float(layout.width), float(layout.height)

            def line_boxes(item: Any) -> tuple[str, list[tuple[int, list[float]]]]:
                """The box's cleaned text and where each layout line starts in it, with its box."""
                lines = [line for line in item if isinstance(line, LTTextLine)] if isinstance(item, LTTextBox) \
                    else [item]
                text, boxes = "", []
                for line in lines:
                    box = normalized_box(page_number, *line.bbox, width, height, y_down=False)
                    if box:
                        boxes.append((len(text), box))
                    text += clean_box_text(line.get_text())
                return text, boxes

            def walk(container: Any) -> None:
                for item in container:
                    if isinstance(item, LTTextContainer):
                        text, boxes = line_boxes(item)
                        found = paragraph_elements(text, page_number, boxes)
                        state["text"] = state["text"] or bool(found)
                        elements.extend(found)
                    elif isinstance(item, LTImage):
                        state["image"] = True
                    elif isinstance(item, LTFigure):
                        walk(item)

            walk(layout)
            if state["image"] and not state["text"]:
                ocr_pages.append(page_number)
    except PDFPasswordIncorrect as exc:
        raise FileParseError(path, "encrypted; remove the password") from exc
    return elements, ocr_pages
