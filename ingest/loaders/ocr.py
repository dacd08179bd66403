"""OCR with Tesseract, offline: image files, and PDF pages that have no text layer.

`settings.ocr` decides when it runs: "auto" (the default: image files, and PDF pages without a text
layer), "always" (also every PDF page, whose OCR text then replaces the text layer: for PDFs whose
text layer is garbage) or "off". Tesseract is an external program (Debian `tesseract-ocr` with
`tesseract-ocr-eng`, installed by `scripts/setup.sh --test`), run as a subprocess; without it, such
files and pages are reported as needing OCR, as they are with "off". OCR text keeps its page numbers.

OCR is slow (seconds a page), so whoever parses can follow it page by page: inside
`watch_ocr_pages(hook)`, `hook(path, pages_done, pages_total)` is called before the first page and after
each one, on the parsing thread. A hook may raise to stop (`OCRDeferred` hands the file to someone else
before any page is read: the sync's OCR worker, so a scan never holds back the rest of a folder).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ingest.loaders.document import Element, FileParseError, NeedsOCRError, ParsedDocument
from ingest.loaders.elements import paragraph_elements

log = logging.getLogger(__name__)

OCR_MODES = ("auto", "off", "always")
LANGUAGE = "eng"
RENDER_DPI = 300  # Tesseract's accuracy drops quickly below ~300 dpi
# A page at 300 dpi is ~9 megapixels (A4) and takes ~11 s on 2 cores; bigger images are refused
# rather than OCR'd for minutes (a small PNG can declare a huge canvas), bigger PDF pages rendered smaller.
MAX_PIXELS = 40_000_000
PAGE_TIMEOUT_S = 300
INSTALL_HINT = "install Tesseract (apt-get install tesseract-ocr tesseract-ocr-eng, or scripts/setup.sh --test)"


# hook(path, pages_done, pages_total); a context variable, so each parsing thread has its own.
PageHook = Callable[[Path, int, int], None]
_page_hook: contextvars.ContextVar[PageHook | None] = contextvars.ContextVar("ocr_page_hook", default=None)


class OCRDeferred(FileParseError):
    """Raised by a page hook before the first page: this file needs OCR and is to be read elsewhere."""


@contextlib.contextmanager
def watch_ocr_pages(hook: PageHook) -> Iterator[None]:
    """Call `hook(path, pages_done, pages_total)` for every OCR run on this thread inside the block."""
    token = _page_hook.set(hook)
    try:
        yield
    finally:
        _page_hook.reset(token)


def _pages_done(path: Path, done: int, total: int) -> None:
    hook = _page_hook.get()
    if hook is not None:
        hook(Path(path), done, total)


def _tesseract_env() -> dict[str, str]:
    """The environment for a tesseract process: one OpenMP thread.

    Tesseract's OpenMP threads spin-wait for each other: on 2 busy cores one page took 216 s with two
    threads and 12 s with one. Set for the tesseract process only: in this process the same
    variable would also cap torch's thread pool.
    """
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}


def ocr_mode(path: Path, settings: Any) -> str:
    """The OCR mode of `settings` (auto | off | always); a bad value fails the file, naming the setting."""
    mode = str(settings.ocr).strip().lower()
    if mode not in OCR_MODES:
        raise FileParseError(path, f"setting ocr={settings.ocr!r} is not one of {', '.join(OCR_MODES)}; fix RAG_OCR")
    return mode


@functools.lru_cache(maxsize=1)
def tesseract_version() -> str | None:
    """Tesseract's version when it and its English data are installed, else None (logged once)."""
    exe = shutil.which("tesseract")
    if exe is None:
        log.info("OCR unavailable: no tesseract program on PATH; %s", INSTALL_HINT)
        return None
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, env=_tesseract_env())
        langs = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30, env=_tesseract_env())
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("OCR unavailable: %s does not run (%s); %s", exe, exc, INSTALL_HINT)
        return None
    if LANGUAGE not in langs.stdout.split():
        log.warning("OCR unavailable: Tesseract has no %r language data; %s", LANGUAGE, INSTALL_HINT)
        return None
    first = (version.stdout or version.stderr).strip().splitlines()
    return first[0] if first else "tesseract"


def unavailable_reason(mode: str) -> str:
    """Why OCR cannot run now ("" when it can)."""
    if mode == "off":
        return "OCR is off (RAG_OCR=off; set it to auto to read scanned pages)"
    if tesseract_version() is None:
        return f"Tesseract is not installed; {INSTALL_HINT}"
    return ""


def page_elements(image: Any, page_number: int) -> list[Element]:
    """OCR one page image into typed paragraphs carrying `page_number`."""
    return paragraph_elements(_tesseract(image, page_number), page_number)


def _tesseract(image: Any, page_number: int) -> str:
    """Run the tesseract program on one image (PNG through stdin) and return its text."""
    if image.mode not in ("RGB", "L", "1"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    command = [shutil.which("tesseract") or "tesseract", "stdin", "stdout", "-l", LANGUAGE]
    try:
        proc = subprocess.run(command, input=buffer.getvalue(), capture_output=True, timeout=PAGE_TIMEOUT_S,
                              env=_tesseract_env())
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"OCR of page {page_number} took over {PAGE_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"tesseract failed on page {page_number} (exit {proc.returncode}: {detail[0]})")
    return proc.stdout.decode("utf-8", "replace")


def read_image(path: Path, file_type: str, settings: Any) -> ParsedDocument:
    """An image file (PNG, JPEG, TIFF; every TIFF frame is a page) read by OCR."""
    reason = unavailable_reason(ocr_mode(path, settings))
    if reason:
        raise NeedsOCRError(path, f"an image: its text needs OCR, and {reason}")
    # Lazy: Pillow is only needed for images.
    from PIL import Image, ImageSequence

    elements: list[Element] = []
    pages = 0
    with Image.open(path) as image:
        total = int(getattr(image, "n_frames", 1) or 1)
        _pages_done(path, 0, total)
        for pages, frame in enumerate(ImageSequence.Iterator(image), start=1):
            _check_pixels(path, frame.size, pages)
            elements.extend(page_elements(frame, pages))
            _pages_done(path, pages, total)
    return ParsedDocument(path=path, file_type=file_type, elements=elements, page_count=pages or None,
                          parser=f"tesseract:{file_type}", ocr_pages=list(range(1, pages + 1)))


def pdf_page_elements(path: Path, page_numbers: list[int], password: str | None) -> list[Element]:
    """Render the given PDF pages (1-based) at RENDER_DPI and OCR them, in page order."""
    elements: list[Element] = []
    _pages_done(path, 0, len(page_numbers))
    for done, (number, image) in enumerate(_render_pdf_pages(path, page_numbers, password), start=1):
        started = time.perf_counter()
        found = page_elements(image, number)
        log.info("%s: OCR of page %d: %d paragraphs in %.1fs", path, number, len(found),
                 time.perf_counter() - started)
        elements.extend(found)
        _pages_done(path, done, len(page_numbers))
    return elements


def _render_pdf_pages(path: Path, page_numbers: list[int], password: str | None) -> Iterator[tuple[int, Any]]:
    # Lazy: pypdfium2 (PDFium) is only needed to render pages for OCR.
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(path), password=password or None)
    try:
        for number in page_numbers:
            page = pdf[number - 1]
            try:
                width, height = page.get_size()  # points
                # Poster-sized pages are rendered below RENDER_DPI rather than to a gigapixel bitmap.
                scale = min(RENDER_DPI / 72, (MAX_PIXELS / max(width * height, 1.0)) ** 0.5)
                image = page.render(scale=scale, grayscale=True).to_pil()
            finally:
                page.close()
            yield number, image
    finally:
        pdf.close()


def _check_pixels(path: Path, size: tuple[int, int], frame: int) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise FileParseError(path, f"image frame {frame} is {width}x{height} pixels, over the "
                                   f"{MAX_PIXELS // 1_000_000}-megapixel limit for OCR; "
                                   "scale it down (300 dpi is enough)")
