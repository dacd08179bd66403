"""Test-data generators for the loader and chunker tests: broken files, odd names, shared parses."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

DOCS_MIXED_SKIP = {"DA-619p.pdf", "handbook-872p.docx"}  # large: measured once, not per test run


def docs_mixed_files(evaldata: Path) -> list[Path]:
    """Every docs-mixed file except the two large ones."""
    folder = evaldata / "docs-mixed" / "files"
    return [p for p in sorted(folder.iterdir()) if p.name not in DOCS_MIXED_SKIP]


@functools.lru_cache(maxsize=None)
def parse_cached(path: str):  # type: ignore[no-untyped-def]
    """parse_file with default settings, cached per test process (parsing costs seconds)."""
    from ingest.loaders import parse_file
    from rag.config import Settings

    return parse_file(Path(path), Settings())


def make_pdf(path: Path, lines: list[str], password: str | None = None) -> Path:
    """A small text PDF written by hand (no PDF library needed), optionally encrypted by pypdf."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({_pdf_escape(x)}) '" for x in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)
    if password:
        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter(clone_from=PdfReader(str(path)))
        writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-128")
        with open(path, "wb") as fh:
            writer.write(fh)
    return path


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_bad_files(folder: Path, good_pdf: Path) -> dict[str, Path]:
    """Broken inputs keyed by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["empty"] = folder / "empty.txt"
    files["empty"].write_bytes(b"")
    files["junk_pdf"] = folder / "junk.pdf"
    files["junk_pdf"].write_bytes(bytes(range(256)) * 8)
    data = good_pdf.read_bytes()
    files["truncated_pdf"] = folder / "truncated.pdf"
    files["truncated_pdf"].write_bytes(data[: len(data) // 3])
    files["text_as_docx"] = folder / "fake.docx"
    files["text_as_docx"].write_text("I am plain text pretending to be a Word document.\n", encoding="utf-8")
    files["zip_as_docx"] = folder / "not-word.docx"
    with zipfile.ZipFile(files["zip_as_docx"], "w") as zf:
        zf.writestr("readme.txt", "a zip, but not a Word document")
    files["binary_txt"] = folder / "binary.txt"
    files["binary_txt"].write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(2000))
    files["whitespace_txt"] = folder / "blank.txt"
    files["whitespace_txt"].write_text("   \n\n\t \n", encoding="utf-8")
    files["unsupported"] = folder / "photo.xyz"
    files["unsupported"].write_bytes(b"whatever")
    return files


def rewrite_zip(src: Path, out: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the zip container `src` with some members' contents replaced (same names, deflated)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = replace.get(item.filename, zin.read(item.filename))
            item.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(item, data)
    return out


def patch_zip_sizes(path: Path, member: str, *, file_size: int | None = None, compress_size: int | None = None,
                    headers: tuple[str, ...] = ("local", "central")) -> Path:
    """Make a zip's headers lie: overwrite the declared sizes of `member` in its local and/or central
    directory header, leaving the compressed data (and the CRC) as they are."""
    import struct

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(member).header_offset
    if "local" in headers:
        assert data[local:local + 4] == b"PK\x03\x04"
        if compress_size is not None:
            struct.pack_into("<I", data, local + 18, compress_size)
        if file_size is not None:
            struct.pack_into("<I", data, local + 22, file_size)
    if "central" in headers:
        name = member.encode()
        at = data.find(b"PK\x01\x02")
        while at != -1:
            name_len = struct.unpack_from("<H", data, at + 28)[0]
            if bytes(data[at + 46:at + 46 + name_len]) == name:
                if compress_size is not None:
                    struct.pack_into("<I", data, at + 20, compress_size)
                if file_size is not None:
                    struct.pack_into("<I", data, at + 24, file_size)
                break
            at = data.find(b"PK\x01\x02", at + 46)
        else:
            raise AssertionError(f"{member} not in the central directory")
    path.write_bytes(bytes(data))
    return path
