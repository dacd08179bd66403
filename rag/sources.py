"""The source viewer's engine: an indexed file's page as an image with the passage highlighted, its
extracted text with the passage's span, and its bytes for download.

Access is decided before anything here runs: the pipeline resolves a chunk id to a `Chunk` the
caller can see (`Pipeline.get_chunk`), and only that chunk's own `file_path` (a path the ingest
recorded, never one from a request) reaches this module. The file must still hold the bytes that were
indexed (`file_hash`): a file replaced on disk since could carry other content than its labels were
given for, and its spans and boxes would point at the wrong places.

Core layer: re-parsing a document to get its text belongs to `ingest`, so the text loader is a
constructor argument (the pipeline passes `parse_file` + `extracted_text`).
"""

from __future__ import annotations

import hashlib
import html
import io
import mimetypes
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable

from rag.errors import RagError
from rag.models import Chunk

PAGE_SCALE = 1.5  # 108 dpi: lines of 10-pt text stay readable on a laptop without a zoom
HIGHLIGHT_FILL = (255, 214, 0, 96)  # semi-transparent yellow: the text underneath stays readable
HIGHLIGHT_OUTLINE = (230, 160, 0, 220)
BOX_PAD = 0.003  # fraction of the page added around each box so the highlight does not clip ascenders


class SourceNotFound(RagError):
    """No source for this chunk id: the id does not exist, or the caller cannot see it.

    Both cases give the same message, so a caller learns nothing about chunks it may not see.
    """


class PageNotFound(SourceNotFound):
    """The chunk is visible but its PDF has no such page."""


class SourceUnavailable(RagError):
    """The chunk is visible but its file can no longer be served (deleted, or changed since indexing)."""


@dataclass
class PageImage:
    """One rendered page of a PDF: PNG bytes, which page of how many, and how many boxes were drawn."""

    png: bytes
    page: int  # 1-based
    page_count: int
    highlighted: int  # boxes of the chunk drawn on this page
    width: int
    height: int


@dataclass
class SourceText:
    """A document's extracted text and where the passage sits in it (`text[start:end]`); start == end
    when the passage could not be located (the file parses differently than when it was indexed)."""

    text: str
    start: int
    end: int
    file_name: str

    def html(self, anchor: str = "passage") -> str:
        """The text HTML-escaped, with the passage in `<mark id=anchor>` (the viewer scrolls to it)."""
        before = html.escape(self.text[: self.start], quote=False)
        passage = html.escape(self.text[self.start:self.end], quote=False)
        after = html.escape(self.text[self.end:], quote=False)
        return f'{before}<mark id="{html.escape(anchor)}">{passage}</mark>{after}'


@dataclass
class SourceFile:
    """An indexed file as served for download."""

    path: Path
    file_name: str
    media_type: str
    size: int


class _LRU:
    """A small thread-safe LRU keyed by hashable keys, bounded by total bytes (PNGs, texts)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> object | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: Hashable, value: object, size: int) -> None:
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _key, (_value, old) = self._items.popitem(last=False)
                self._bytes -= old


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SourceViewer:
    """Renders pages, extracts texts and opens files of indexed chunks (access already checked).

    `text_loader(path) -> str` returns a document's extracted text exactly as chunk spans index it.
    Caches: rendered PNGs (`page_cache_mb`), document texts (`text_cache_mb`), file hashes by
    (path, size, mtime); all in memory, least recently used evicted first.
    """

    def __init__(self, text_loader: Callable[[Path], str], scale: float = PAGE_SCALE, page_cache_mb: float = 64,
                 text_cache_mb: float = 32) -> None:
        self.text_loader = text_loader
        self.scale = scale
        self._pages = _LRU(int(page_cache_mb * (1 << 20)))
        # Rendered pages before highlighting, so another passage on the same page skips PDFium.
        self._bases = _LRU(int(page_cache_mb * (1 << 20)))
        self._texts = _LRU(int(text_cache_mb * (1 << 20)))
        self._hashes = _LRU(1 << 20)
        # PDFium is not thread-safe: one render at a time (a page takes tens of milliseconds).
        self._pdfium = threading.Lock()

    # ---------------------------------------------------------------- the file behind a chunk
    def indexed_file(self, chunk: Chunk) -> Path:
        """The chunk's file, checked to be a regular file still holding the indexed bytes."""
        path = Path(chunk.file_path)
        if not chunk.file_path or not path.is_absolute():
            raise SourceUnavailable(f"passage {chunk.id} has no file recorded; re-index it")
        try:
            st = path.stat()
        except OSError:
            raise SourceUnavailable(f"{chunk.file_name or path.name}: the file is no longer at its indexed "
                                    "location") from None
        if not path.is_file():
            raise SourceUnavailable(f"{chunk.file_name or path.name}: not a regular file any more")
        key = (str(path), st.st_size, st.st_mtime_ns)
        digest = self._hashes.get(key)
        if digest is None:
            digest = _sha256(path)
            self._hashes.put(key, digest, 100)
        if chunk.file_hash and digest != chunk.file_hash:
            raise SourceUnavailable(f"{chunk.file_name or path.name}: the file changed since it was indexed; "
                                    "re-index it to view the current version")
        return path

    def file(self, chunk: Chunk) -> SourceFile:
        """The chunk's file for download (type guessed from the name; unknown types as octet-stream)."""
        path = self.indexed_file(chunk)
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return SourceFile(path=path, file_name=chunk.file_name or path.name, media_type=media,
                          size=path.stat().st_size)

    # ---------------------------------------------------------------- PDF pages
    def page_count(self, chunk: Chunk) -> int:
        """Pages of the chunk's PDF."""
        path = self.indexed_file(chunk)
        with self._pdfium:
            pdf = self._open_pdf(path)
            try:
                return len(pdf)
            finally:
                pdf.close()

    def page(self, chunk: Chunk, page: int | None = None) -> PageImage:
        """Page `page` (default: the chunk's first page) of the chunk's PDF as PNG, the chunk's boxes on
        that page drawn as semi-transparent yellow rectangles. SourceNotFound for a page out of range."""
        if chunk.file_type != "pdf":
            raise SourceUnavailable(f"{chunk.file_name}: only PDFs have page images; open the text view")
        path = self.indexed_file(chunk)
        number = int(page or chunk.page or 1)
        boxes = tuple(tuple(float(v) for v in b[1:5]) for b in chunk.boxes if len(b) >= 5 and int(b[0]) == number)
        key = (chunk.file_hash, number, boxes, self.scale)
        cached = self._pages.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        base_key = (chunk.file_hash, number, self.scale)
        rendered = self._bases.get(base_key)
        if rendered is None:
            rendered = self._render(path, number)
            self._bases.put(base_key, rendered, rendered[0].width * rendered[0].height * 3)
        image, count = rendered  # type: ignore[misc]
        drawn = _draw_boxes(image, boxes)
        out = io.BytesIO()
        # compress_level 3: a 1.5x letter page encodes in ~25 ms instead of ~120 ms at the default 6,
        # for files about 15% larger; the viewer is interactive, the bytes are local.
        drawn.save(out, format="PNG", compress_level=3)
        result = PageImage(png=out.getvalue(), page=number, page_count=count, highlighted=len(boxes),
                           width=drawn.width, height=drawn.height)
        self._pages.put(key, result, len(result.png))
        return result

    def _open_pdf(self, path: Path):
        import pypdfium2 as pdfium  # lazy: only the viewer renders pages

        try:
            return pdfium.PdfDocument(str(path), password="")
        except pdfium.PdfiumError as exc:
            raise SourceUnavailable(f"{path.name}: the PDF cannot be rendered ({exc})") from None

    def _render(self, path: Path, number: int):
        """(PIL image of page `number`, page count); SourceNotFound when the page does not exist."""
        with self._pdfium:
            pdf = self._open_pdf(path)
            try:
                count = len(pdf)
                if not 1 <= number <= count:
                    raise PageNotFound(f"{path.name} has {count} page{'s' if count != 1 else ''}; "
                                         f"there is no page {number}")
                page = pdf[number - 1]
                try:
                    image = page.render(scale=self.scale).to_pil()
                finally:
                    page.close()
            finally:
                pdf.close()
        return image, count

    # ---------------------------------------------------------------- document text
    def text(self, chunk: Chunk) -> SourceText:
        """The chunk's document text (re-extracted, cached per file version) and the passage's span."""
        path = self.indexed_file(chunk)
        # The extension picks the parser: the same bytes named .md and .txt extract differently.
        key = (chunk.file_hash or str(path), chunk.file_type)
        text = self._texts.get(key)
        if text is None:
            text = self.text_loader(path)
            self._texts.put(key, text, len(text) * 2)
        assert isinstance(text, str)
        start, end = chunk.char_start, chunk.char_end
        if not (0 <= start < end <= len(text)) or text[start:end] != chunk.text:
            # The parser read the file differently than at indexing time (another version of a
            # parser library): find the passage by its text, else show the document unmarked.
            found = text.find(chunk.text) if chunk.text else -1
            start, end = (found, found + len(chunk.text)) if found >= 0 else (0, 0)
        return SourceText(text=text, start=start, end=end, file_name=chunk.file_name or path.name)


def _draw_boxes(image, boxes: tuple[tuple[float, ...], ...]):
    """A copy of `image` (RGB) with each normalized box drawn as a translucent yellow rectangle.

    Only the boxes' own regions are composited: a whole-page RGBA composite cost more than the render.
    """
    from PIL import Image, ImageDraw  # lazy: Pillow is needed only for rendering

    out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    w, h = out.size
    for x0, y0, x1, y1 in boxes:
        left, top = int(max(0, (x0 - BOX_PAD) * w)), int(max(0, (y0 - BOX_PAD) * h))
        right, bottom = int(min(w, (x1 + BOX_PAD) * w + 1)), int(min(h, (y1 + BOX_PAD) * h + 1))
        if right - left < 2 or bottom - top < 2:
            continue
        region = out.crop((left, top, right, bottom)).convert("RGBA")
        overlay = Image.new("RGBA", region.size, (0, 0, 0, 0))
        ImageDraw.Draw(overlay).rectangle((0, 0, region.width - 1, region.height - 1), fill=HIGHLIGHT_FILL,
                                          outline=HIGHLIGHT_OUTLINE, width=2)
        out.paste(Image.alpha_composite(region, overlay).convert("RGB"), (left, top))
    return out


def safe_download_name(name: str) -> str:
    """A file name for Content-Disposition: no path, no quotes or control characters."""
    base = os.path.basename(name.replace("\\", "/")) or "download"
    return "".join(ch if ch.isprintable() and ch not in '"\\;' else "_" for ch in base)[:200]
