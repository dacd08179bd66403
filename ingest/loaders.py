"""Turn one file into a list of text elements (title, paragraph, list item, table ...) with pages.

Parsing is done by `unstructured` for every format it handles offline. Three things make that safe
to run on a user's machine with no network:

* `configure_offline()` replaces unstructured's spaCy model loader (which downloads
  `en_core_web_sm` from GitHub on first use) with a blank English pipeline plus a sentencizer and a
  small rule-based verb tagger, unless the real model is installed.
* Files are checked before parsing (size limit, empty file, magic bytes that contradict the
  extension, undecodable text) so a bad file gives a one-line `ParseError` naming it.
* Every exception from a parser is wrapped into a `ParseError`; a parser never crashes a sync run.

PDFs use unstructured's `partition_pdf` (strategy `settings.pdf_strategy`, "fast") when its optional
dependencies (`unstructured[pdf]`) are installed, else the same pdfminer.six layout analysis it
runs in "fast" mode, with element types from unstructured's own text classifier. PDFs without a
text layer raise `NeedsOCRError` (OCR is not enabled).
"""

from __future__ import annotations

import rag  # noqa: F401  (sets DO_NOT_TRACK and friends before unstructured is imported)

import functools
import io
import logging
import os
import re
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ParseError

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

log = logging.getLogger(__name__)
# pdfminer and pypdf log a warning per odd drawing operator or broken xref entry; the per-file
# summary already says when a PDF fails, so their chatter would only bury it on stderr.
for _noisy in ("pdfminer", "pypdf"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

# extension -> file_type reported in ParsedDocument (and the Chunk payload).
_EXTENSIONS: dict[str, str] = {
    ".pdf": "pdf",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx",
    ".csv": "csv", ".tsv": "tsv",
    ".md": "md", ".markdown": "md",
    ".txt": "txt", ".text": "txt", ".log": "txt",
    ".eml": "eml", ".epub": "epub", ".odt": "odt", ".rtf": "rtf",
    ".rst": "rst", ".org": "org",
}
# Zip-based formats and a member each must contain (catches "a .docx that is really a .xlsx").
_ZIP_MEMBERS: dict[str, str] = {
    "docx": "word/document.xml",
    "pptx": "ppt/presentation.xml",
    "xlsx": "xl/workbook.xml",
    "odt": "content.xml",
    "epub": "META-INF/container.xml",
}
_TEXT_TYPES = {"html", "csv", "tsv", "md", "txt", "eml", "rst", "org"}
# Element categories that carry no document text.
_DROP_TYPES = {"PageBreak"}
# Skip unstructured's per-document/per-element language detection (langdetect): it took 85% of the
# parse time on a 120 KB multilingual text file and nothing here uses the language metadata.
_NO_LANG: dict[str, Any] = {"languages": [""]}
_NO_OCR_REASON = "no text layer (scanned/image-only PDF); needs OCR, which is not enabled"


class FileParseError(ParseError):
    """A file could not be parsed. `reason` is the one-line reason without the path."""

    needs_ocr: bool = False

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = _one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")


class NeedsOCRError(FileParseError):
    """A PDF has pages but no text layer: it needs OCR, which this product does not run."""

    needs_ocr = True


@dataclass
class Element:
    """One piece of document text in reading order."""

    text: str
    type: str  # unstructured category: Title, NarrativeText, ListItem, Table, ...
    page_number: int | None = None
    section: str = ""  # nearest preceding Title (a Title's section is its own text)


@dataclass
class ParsedDocument:
    """The parse result of one file."""

    path: Path
    file_type: str
    elements: list[Element]
    page_count: int | None = None
    needs_ocr: bool = False  # some pages hold only images (their text is missing without OCR)
    parse_seconds: float = 0.0
    parser: str = ""  # which partitioner produced the elements
    ocr_pages: list[int] = field(default_factory=list)  # pages with images but no text


def supported(path: Path) -> bool:
    """True when the file's extension is a format `parse_file` handles."""
    return Path(path).suffix.lower() in _EXTENSIONS


def file_type_of(path: Path) -> str:
    """The lower-case file type for a supported path (pdf, docx, md ...); the bare extension otherwise."""
    suffix = Path(path).suffix.lower()
    return _EXTENSIONS.get(suffix, suffix.lstrip("."))


# --------------------------------------------------------------------------------------------
# Offline spaCy for unstructured
# --------------------------------------------------------------------------------------------

_offline_lock = threading.Lock()
_offline_done = False

# A tiny stand-in for a POS tagger: unstructured only asks "does this text contain a verb?" to
# tell narrative text from titles. Auxiliaries, common verbs and -ed/-ing forms are enough.
_COMMON_VERBS = frozenset(
    """is are was were be been being am has have had do does did can could will would shall should
    may might must says said make makes made take takes took get gets got go goes went see sees saw
    know knows knew think thinks thought use uses used provide provides include includes show shows
    find finds found give gives gave come comes came become becomes became need needs want wants
    like likes help helps run runs ran keep keeps kept let lets seem seems feel feels felt try tries
    leave leaves left call calls ask asks work works tell tells told believe believes hold holds held
    bring brings brought begin begins began write writes wrote read reads set sets put puts mean means
    require requires allow allows remain remains consider considers contain contains describe describes
    represent represents offer offers create creates support supports apply applies add adds""".split()
)


def _verb_tag(word: str) -> str:
    low = word.lower()
    if low in _COMMON_VERBS:
        return "VB"
    if word.islower() and len(word) >= 5 and (low.endswith("ed") or low.endswith("ing")):
        return "VBD" if low.endswith("ed") else "VBG"
    return "NN"


def _blank_pipeline() -> Any:
    import spacy
    from spacy.language import Language

    if "rag_verb_tagger" not in Language.factories:

        @Language.component("rag_verb_tagger")
        def _tagger(doc):  # type: ignore[no-untyped-def]
            for token in doc:
                token.tag_ = _verb_tag(token.text)
            return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("rag_verb_tagger")
    return nlp


def configure_offline() -> None:
    """Make unstructured work without network access. Idempotent; called by `parse_file`.

    unstructured 0.27 loads spaCy `en_core_web_sm` on first use and downloads it from GitHub when
    missing (there is no setting to turn that off). Offline the download fails: DOCX/PPTX/HTML/MD
    raise and PDF silently returns nothing. We replace its cached loader `_get_nlp` with one that
    uses the installed model when present and otherwise a blank English pipeline.
    """
    global _offline_done
    if _offline_done:
        return
    with _offline_lock:
        if _offline_done:
            return
        import spacy
        import unstructured.nlp.tokenize as tokenize

        @functools.lru_cache(maxsize=1)
        def _get_nlp() -> Any:
            try:
                return spacy.load("en_core_web_sm", exclude=["ner", "lemmatizer", "attribute_ruler"])
            except OSError:
                log.debug("spaCy en_core_web_sm not installed; using a blank English pipeline")
                return _blank_pipeline()

        # `_run_pipeline` looks `_get_nlp` up in the module globals at call time, and
        # `_load_spacy_model` (the downloader) is only reached through it.
        tokenize._get_nlp = _get_nlp
        tokenize._load_spacy_model = _get_nlp
        _offline_done = True


# --------------------------------------------------------------------------------------------
# Pre-checks and decoding
# --------------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sniff(path: Path, file_type: str, head: bytes, max_bytes: float | None = None) -> None:
    """Reject files whose first bytes contradict the extension, and zip containers that would
    expand beyond `max_bytes` (a zip bomb passes the size check on its compressed bytes)."""
    if file_type == "pdf":
        if b"%PDF-" not in head[:1024]:
            raise FileParseError(path, f"not a PDF (file does not start with %PDF; {_describe(head)})")
    elif file_type in _ZIP_MEMBERS:
        if not head.startswith(b"PK"):
            raise FileParseError(path, f"not a valid .{file_type} (expected a zip container; {_describe(head)})")
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise FileParseError(path, f"corrupt .{file_type} (bad zip container: {exc})") from exc
        names = {info.filename for info in infos}
        # Declared sizes come from the central directory: checked without decompressing anything.
        expanded = sum(info.file_size for info in infos)
        if max_bytes is not None and expanded > max_bytes:
            raise FileParseError(path, f"expands to {expanded / 1024 / 1024:.3g} MB when unzipped, over the "
                                       f"{max_bytes / 1024 / 1024:g} MB limit (RAG_MAX_FILE_MB); "
                                       "possibly a zip bomb, not parsed")
        member = _ZIP_MEMBERS[file_type]
        if member not in names:
            raise FileParseError(path, f"not a valid .{file_type} (zip container lacks {member})")
    elif file_type == "rtf":
        if not head.lstrip().startswith(b"{\\rtf"):
            raise FileParseError(path, f"not an RTF file (no {{\\rtf header; {_describe(head)})")
    elif file_type in _TEXT_TYPES:
        if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
            return  # BOM-marked Unicode text; NUL bytes are expected in UTF-16
        if b"\x00" in head:
            raise FileParseError(path, f"binary content in a .{file_type} file ({_describe(head)}); "
                                       "the extension does not match the content")


def _describe(head: bytes) -> str:
    """A short guess of what the bytes really are, for error messages."""
    if not head:
        return "empty"
    if head.startswith(b"%PDF"):
        return "looks like a PDF"
    if head.startswith(b"PK"):
        return "looks like a zip archive"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")):
        return "looks like an image"
    if head.startswith(b"\x7fELF"):
        return "looks like an executable"
    if b"\x00" in head[:512]:
        return "looks like binary data"
    return "starts with " + repr(head[:16])[2:-1]


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_\-:.]+)""", re.I)
# Single-byte Latin encodings a detector confuses with each other on short text; windows-1252 is by
# far the most common of them (browsers even read "latin-1" labels as windows-1252).
_LATIN_FAMILY = {"cp1250", "cp1252", "latin_1", "iso8859_2", "iso8859_15", "iso8859_9", "cp1254",
                 "mac_roman", "mac_latin2", "cp850", "cp437", "iso8859_3", "iso8859_4", "iso8859_13",
                 "cp1257", "iso8859_10", "iso8859_14", "iso8859_16", "mac_iceland", "mac_turkish",
                 # DOS Latin code pages: short cp1252 text with smart quotes is often detected as cp852.
                 "cp852", "cp775", "cp857", "cp858", "cp860", "cp861", "cp863", "cp865"}


def decode_text(data: bytes, path: Path, file_type: str = "txt") -> tuple[str, str]:
    """Decode text bytes: BOM, UTF-8, a declared HTML/XML charset, then charset detection.

    Returns (text, encoding). Raises FileParseError when nothing decodes it plausibly.
    """
    import codecs

    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if file_type == "html":
        match = _META_CHARSET.search(data[:4096]) or _XML_ENCODING.search(data[:1024])
        if match:
            declared = match.group(1).decode("ascii", "replace")
            try:
                enc = codecs.lookup(declared).name
                if enc in ("latin-1", "iso8859-1", "ascii"):
                    enc = "cp1252"
                return data.decode(enc), enc
            except (LookupError, UnicodeDecodeError):
                pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None:
        enc = codecs.lookup(best.encoding).name.replace("-", "_")
        if enc.replace("_", "") in {e.replace("_", "") for e in _LATIN_FAMILY}:
            try:
                return data.decode("cp1252"), "cp1252"
            except UnicodeDecodeError:
                pass
        return str(best), best.encoding
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        raise FileParseError(path, "undecodable text (not UTF-8 and no known encoding fits); "
                                   "re-save the file as UTF-8") from None


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_file(path: Path, settings: Any) -> ParsedDocument:
    """Parse one file into elements. Raises FileParseError (a ParseError) with a one-line reason.

    Checks size (settings.max_file_mb), emptiness and magic bytes first; PDFs use
    settings.pdf_strategy ("fast"; "hi_res"/"ocr_only" need models this product does not ship).
    """
    path = Path(path)
    started = time.perf_counter()
    file_type = _EXTENSIONS.get(path.suffix.lower())
    if file_type is None:
        raise FileParseError(path, f"unsupported file type {path.suffix or '(no extension)'!r}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FileParseError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise FileParseError(path, "not a regular file")
    max_mb = float(getattr(settings, "max_file_mb", 200.0))
    if size > max_mb * 1024 * 1024:
        raise FileParseError(path, f"larger than the {max_mb:g} MB limit (RAG_MAX_FILE_MB); "
                                   f"file is {size / 1024 / 1024:.3g} MB")
    if size == 0:
        raise FileParseError(path, "empty file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        raise FileParseError(path, f"cannot read file ({exc.strerror or exc})") from exc
    _sniff(path, file_type, head, max_mb * 1024 * 1024)

    configure_offline()
    try:
        if file_type == "pdf":
            doc = _parse_pdf(path, settings)
        else:
            doc = _parse_other(path, file_type)
    except FileParseError:
        raise
    except Exception as exc:  # a parser bug or a malformed file must never crash the run
        log.debug("parser failed on %s", path, exc_info=True)
        raise FileParseError(path, f"parser failed ({type(exc).__name__}: {exc})") from exc

    doc.elements = _finish_elements(doc.elements, doc.page_count)
    if not doc.elements:
        if doc.needs_ocr:
            raise NeedsOCRError(path, _NO_OCR_REASON)
        raise FileParseError(path, "no text extracted (the file holds no readable text)")
    doc.parse_seconds = time.perf_counter() - started
    log.debug("parsed %s: %d elements, %s pages, %.2fs (%s)", path, len(doc.elements),
              doc.page_count, doc.parse_seconds, doc.parser)
    return doc


def _elements_from_unstructured(raw: list[Any]) -> list[Element]:
    out: list[Element] = []
    for el in raw:
        category = getattr(el, "category", type(el).__name__)
        if category in _DROP_TYPES:
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


def _parse_other(path: Path, file_type: str) -> ParsedDocument:
    """Every non-PDF format, through unstructured's per-format partitioners."""
    fname = str(path)
    raw: list[Any]
    if file_type in ("txt", "md", "html", "csv", "tsv"):
        data = path.read_bytes()
        text, encoding = decode_text(data, path, file_type)
        if not text.strip():
            raise FileParseError(path, "no text extracted (the file holds only whitespace)")
        if file_type == "txt":
            from unstructured.partition.text import partition_text

            raw = partition_text(text=text, **_NO_LANG)
        elif file_type == "md":
            from unstructured.partition.md import partition_md

            raw = partition_md(text=text, **_NO_LANG)
        elif file_type == "html":
            from unstructured.partition.html import partition_html

            raw = partition_html(text=text, **_NO_LANG)
        elif file_type == "csv":
            from unstructured.partition.csv import partition_csv

            raw = partition_csv(file=io.BytesIO(text.encode("utf-8")), encoding="utf-8", include_header=True,
                                **_NO_LANG)
        else:
            from unstructured.partition.tsv import partition_tsv

            raw = partition_tsv(file=io.BytesIO(text.encode("utf-8")), include_header=True, **_NO_LANG)
        log.debug("%s decoded as %s", path, encoding)
    elif file_type == "docx":
        from unstructured.partition.docx import partition_docx

        raw = partition_docx(filename=fname, **_NO_LANG)
    elif file_type == "pptx":
        from unstructured.partition.pptx import partition_pptx

        raw = partition_pptx(filename=fname, **_NO_LANG)
    elif file_type == "xlsx":
        from unstructured.partition.xlsx import partition_xlsx

        raw = partition_xlsx(filename=fname, include_header=True, **_NO_LANG)
    elif file_type == "eml":
        from unstructured.partition.email import partition_email

        raw = partition_email(filename=fname, **_NO_LANG)
    elif file_type == "epub":
        from unstructured.partition.epub import partition_epub

        raw = partition_epub(filename=fname, **_NO_LANG)
    elif file_type == "odt":
        from unstructured.partition.odt import partition_odt

        raw = partition_odt(filename=fname, **_NO_LANG)
    elif file_type == "rtf":
        from unstructured.partition.rtf import partition_rtf

        raw = partition_rtf(filename=fname, **_NO_LANG)
    elif file_type == "rst":
        from unstructured.partition.rst import partition_rst

        raw = partition_rst(filename=fname, **_NO_LANG)
    elif file_type == "org":
        from unstructured.partition.org import partition_org

        raw = partition_org(filename=fname, **_NO_LANG)
    else:  # pragma: no cover - _EXTENSIONS and this dispatch are kept in step
        raise FileParseError(path, f"unsupported file type .{file_type}")
    elements = _elements_from_unstructured(raw)
    page_count = None
    if file_type in ("pptx", "xlsx"):  # slides / sheets
        pages = [e.page_number for e in elements if e.page_number]
        page_count = max(pages) if pages else None
    return ParsedDocument(path=path, file_type=file_type, elements=elements, page_count=page_count,
                          needs_ocr=False, parser=f"unstructured:{file_type}")


# --------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _unstructured_pdf_available() -> bool:
    """unstructured's partition_pdf needs the `unstructured[pdf]` extra (pdf2image, cv2, onnx, ...)."""
    try:
        import unstructured.partition.pdf  # noqa: F401
    except ImportError as exc:
        log.info("unstructured[pdf] extras not installed (%s); PDFs use pdfminer.six layout analysis", exc)
        return False
    return True


def _open_pdf(path: Path) -> Any:
    """Open with pypdf: page count, encryption check. Raises FileParseError for unreadable PDFs."""
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


def _parse_pdf(path: Path, settings: Any) -> ParsedDocument:
    strategy = str(getattr(settings, "pdf_strategy", "fast") or "fast").lower()
    if strategy not in ("fast", "auto"):
        raise FileParseError(path, f"pdf_strategy {strategy!r} needs layout/OCR models that are not "
                                   "installed; set RAG_PDF_STRATEGY=fast")
    reader = _open_pdf(path)
    page_count = len(reader.pages)
    password = "" if reader.is_encrypted else None
    ocr_pages: list[int] = []
    elements: list[Element] = []
    parser = ""
    if _unstructured_pdf_available() and not reader.is_encrypted and not _has_rotated_pages(reader):
        from unstructured.partition.pdf import partition_pdf

        raw = partition_pdf(filename=str(path), strategy="fast", infer_table_structure=False, languages=["eng"])
        elements = _elements_from_unstructured(raw)
        parser = "unstructured:pdf-fast"
        if _looks_garbled(elements):
            log.info("%s: unstructured's text looks letter-spaced; re-reading with pdfminer layout analysis", path)
            elements, parser = [], ""
    if not parser:
        # Encrypted and rotated pages, and letter-spaced output: unstructured's fast path reads these
        # as one character per word; our pdfminer pass decrypts and detects vertical text.
        elements, ocr_pages = _pdfminer_elements(path, password)
        parser = "pdfminer"
    doc = ParsedDocument(path=path, file_type="pdf", elements=elements, page_count=page_count,
                         parser=parser, ocr_pages=ocr_pages)
    if not any(e.text.strip() for e in elements):
        if not _has_text_layer(reader):
            raise NeedsOCRError(path, _NO_OCR_REASON)
        raise FileParseError(path, "no text extracted (the PDF text layer could not be read)")
    doc.needs_ocr = bool(ocr_pages)
    if ocr_pages:
        log.info("%s: pages %s hold images but no text; their content needs OCR", path, ocr_pages[:20])
    return doc


_UNNAMED = re.compile(r"Unnamed: \d+")
_CID = re.compile(r"\(cid:\d+\)")  # glyphs pdfminer cannot map to Unicode
_BULLET_LINE = re.compile(r"^\s*[•●▪◦·‣∙○■□➢►\-*]\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _pdfminer_elements(path: Path, password: str | None) -> tuple[list[Element], list[int]]:
    """pdfminer.six layout analysis (what unstructured's "fast" strategy runs), one element per text
    box, typed by unstructured's own classifier. Also returns pages with images but no text."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTFigure, LTImage, LTTextContainer
    from pdfminer.pdfdocument import PDFPasswordIncorrect
    from unstructured.partition.text import element_from_text

    elements: list[Element] = []
    ocr_pages: list[int] = []
    try:
        # all_texts=True runs layout analysis inside figures too: many PDFs (e.g. reports made
        # by DTP tools) put whole pages of text in Form XObjects; detect_vertical reads rotated pages.
        laparams = LAParams(all_texts=True, detect_vertical=True)
        pages = extract_pages(str(path), password=password or "", laparams=laparams)
        for page_number, layout in enumerate(pages, start=1):
            state = {"text": False, "image": False}

            def walk(container: Any) -> None:
                for item in container:
                    if isinstance(item, LTTextContainer):
                        for text in _split_box(item.get_text()):
                            state["text"] = True
                            category = element_from_text(text).category
                            if category in ("Header", "Footer"):  # only from coordinates; none passed
                                category = "Text"
                            if category == "ListItem":
                                text = _BULLET_LINE.sub("", text, count=1) or text
                            elements.append(Element(text=text, type=category, page_number=page_number))
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


# --------------------------------------------------------------------------------------------
# Post-processing shared by all formats
# --------------------------------------------------------------------------------------------


def _finish_elements(elements: list[Element], page_count: int | None) -> list[Element]:
    """Strip, drop empties and repeated page headers/footers, fill in `section`."""
    cleaned = []
    for el in elements:
        text = el.text.strip()
        if not text or el.type in _DROP_TYPES:
            continue
        cleaned.append(Element(text=text, type=el.type, page_number=el.page_number))
    cleaned = _drop_running_headers(cleaned, page_count)
    section = ""
    for el in cleaned:
        if el.type == "Title":
            section = _one_line(el.text, 200)
        el.section = section
    return cleaned


def _drop_running_headers(elements: list[Element], page_count: int | None) -> list[Element]:
    """Drop short lines repeated on most pages (running headers, footers, page numbers)."""
    if not page_count or page_count < 3:
        return elements
    pages_by_key: dict[str, set[int]] = {}
    for el in elements:
        if el.page_number and len(el.text) <= 80:
            key = re.sub(r"\d+", "#", el.text.lower())
            pages_by_key.setdefault(key, set()).add(el.page_number)
    threshold = max(3, page_count // 2)
    repeated = {k for k, pages in pages_by_key.items() if len(pages) >= threshold}
    if not repeated:
        return elements
    return [el for el in elements
            if not (el.page_number and len(el.text) <= 80 and re.sub(r"\d+", "#", el.text.lower()) in repeated)]
