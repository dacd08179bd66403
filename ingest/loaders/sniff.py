"""Checks on a file's bytes before any parser sees them, and text decoding.

* `check_content`: the first bytes must agree with the extension (a PNG named .pdf, a text file
  named .docx, binary data named .txt each get a one-line reason instead of a parser traceback).
* `check_zip_container`: zip-based formats (DOCX, PPTX, XLSX, ODT, EPUB) are inflated member by
  member, streaming, under a byte budget and a compression-ratio cap, and every member must unzip
  to exactly the size and CRC its headers declare. Parsers trust different headers (zipfile reads
  the central directory, pandoc the deflate stream itself), so a container whose headers lie is
  refused rather than handed to one of them.
* `decode_text`: bytes of a text format -> str (BOM, UTF-8, declared charset, detection).
"""

from __future__ import annotations

import codecs
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.loaders.document import FileParseError

MB = 1024 * 1024

# Budgets for unzipping one container (see `ZipLimits`). Measured on docs-mixed: the largest real
# part is the 872-page handbook's word/document.xml, 5.3 MB at 13:1; no real part exceeds 30:1.
MEMBER_EXPANSION_CAP = 16 * MB
TOTAL_EXPANSION_CAP = 64 * MB
RATIO_CAP = 100.0
RATIO_FLOOR = 1 * MB
# Members per container. Real documents hold tens to a few thousand parts (docs-mixed: at most 318);
# zipfile builds one object per central-directory entry before anything can be checked, and 300,000
# empty entries (a 26 MB file) took it 111 s and 160 MB here, so the directory's size is read first.
MAX_MEMBERS = 20_000
MAX_DIRECTORY_BYTES = 4 * MB  # 20,000 entries with 150-character names; docs-mixed needs at most 27 KB
_READ_CHUNK = 64 * 1024  # compressed bytes read at a time
_OUT_CHUNK = 256 * 1024  # most bytes inflated per zlib call, so one call cannot balloon


@dataclass(frozen=True)
class ZipLimits:
    """How far a zip container may expand when unzipped.

    Expansion is what a member gains by unzipping (unzipped minus compressed bytes): stored or
    already-compressed parts (photos, video) gain nothing, and their bytes are bounded by
    `max_file_mb` already, so only growth is budgeted. A large genuine PPTX of photos passes; a small
    file that balloons does not.

    * `member_expansion`: one part (e.g. word/document.xml) may grow by at most this much: 16 MB,
      three times the 872-page handbook's 5.3 MB of XML. Parsing that handbook took 82 s and 79 MB of
      peak memory on 2 busy cores, so 16 MB of XML is minutes and ~250 MB; 200 MB (the old budget,
      `max_file_mb`) would be an hour and gigabytes from one upload.
    * `total_expansion`: all parts together may grow by at most this much: 64 MB, room for a long
      deck or workbook whose text is spread over many parts.
    * `ratio`: a part that unzips to more than `ratio_floor` bytes may not be more than `ratio` times
      its compressed size. Real office XML compresses 5-30:1; deflate bombs reach ~1000:1, and a
      DOCX that unzips 52 KB -> 6 MB (115:1) kept the parser busy for about a minute.
    """

    member_expansion: int
    total_expansion: int
    ratio: float = RATIO_CAP
    ratio_floor: int = RATIO_FLOOR

    @classmethod
    def for_max_file_bytes(cls, max_file_bytes: float) -> "ZipLimits":
        """The limits for a given `max_file_mb` (in bytes): never more generous than the file limit."""
        cap = int(max_file_bytes)
        return cls(member_expansion=min(cap, MEMBER_EXPANSION_CAP), total_expansion=min(cap, TOTAL_EXPANSION_CAP))


_IMAGE_MAGIC: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}


def check_content(path: Path, content: str, file_type: str, head: bytes, *, zip_member: str,
                  zip_limits: ZipLimits) -> None:
    """Raise FileParseError when the first bytes contradict the format's `content` kind.

    `content` is "pdf", "zip", "rtf", "text" or an image kind ("png", "jpeg", "tiff"). For "zip",
    the container must hold `zip_member` and pass `check_zip_container` under `zip_limits`.
    """
    if content == "pdf":
        if b"%PDF-" not in head[:1024]:
            raise FileParseError(path, f"not a PDF (file does not start with %PDF; {describe(head)})")
    elif content == "zip":
        if not head.startswith(b"PK"):
            raise FileParseError(path, f"not a valid .{file_type} (expected a zip container; {describe(head)})")
        check_zip_container(path, file_type, zip_member, zip_limits)
    elif content == "rtf":
        if not head.lstrip().startswith(b"{\\rtf"):
            raise FileParseError(path, f"not an RTF file (no {{\\rtf header; {describe(head)})")
    elif content in _IMAGE_MAGIC:
        if not head.startswith(_IMAGE_MAGIC[content]):
            raise FileParseError(path, f"not a {content.upper()} image ({describe(head)}); "
                                       "the extension does not match the content")
    elif content == "text":
        if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
            return  # BOM-marked Unicode text; NUL bytes are expected in UTF-16
        if b"\x00" in head:
            raise FileParseError(path, f"binary content in a .{file_type} file ({describe(head)}); "
                                       "the extension does not match the content")


def describe(head: bytes) -> str:
    """A short guess of what the bytes really are, for error messages."""
    if not head:
        return "empty"
    if head.startswith(b"%PDF"):
        return "looks like a PDF"
    if head.startswith(b"PK"):
        return "looks like a zip archive"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*")):
        return "looks like an image"
    if head.startswith(b"\x7fELF"):
        return "looks like an executable"
    if b"\x00" in head[:512]:
        return "looks like binary data"
    return "starts with " + repr(head[:16])[2:-1]


# --------------------------------------------------------------------------------------------
# Zip containers
# --------------------------------------------------------------------------------------------

_BOMB_ADVICE = "possibly a zip bomb, not parsed; if the document is genuine, split it or save it as PDF"
_LIE_ADVICE = ("the zip headers misstate its size, which only a damaged or hostile file does; not parsed "
               "(re-save it from the application that made it)")
# Local file header: signature, version, flags, method, time, date, crc, compressed, size, name len, extra len.
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


class _Refused(Exception):
    """A member failed a check; the message is the reason (without the file path)."""


def check_zip_container(path: Path, file_type: str, required_member: str, limits: ZipLimits) -> None:
    """Refuse a zip-based document that is corrupt, lacks `required_member`, or expands past `limits`.

    Declared sizes are checked first (free: the central directory), then every member is actually
    inflated, streaming, stopping at the first byte past its declared size or a budget, so a hostile
    file costs at most a few megabytes of inflation. Raises FileParseError naming the member.
    """
    try:
        directory = _central_directory(path)
        if directory is not None and (directory[0] > MAX_MEMBERS or directory[1] > MAX_DIRECTORY_BYTES):
            raise FileParseError(path, f"zip container lists {directory[0]} parts in {directory[1] / MB:.3g} MB, "
                                       f"over the limit of {MAX_MEMBERS} parts in {MAX_DIRECTORY_BYTES / MB:g} MB; "
                                       "not parsed (no document has that many parts)")
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise FileParseError(path, f"corrupt .{file_type} (bad zip container: {exc})") from exc
    _check_declared_sizes(path, infos, limits)
    if required_member not in {info.filename for info in infos}:
        raise FileParseError(path, f"not a valid .{file_type} (zip container lacks {required_member})")
    expansion = 0
    try:
        with open(path, "rb") as fh:
            for info in infos:
                unzipped, compressed = _inflate_member(fh, info, limits, limits.total_expansion - expansion)
                expansion += max(0, unzipped - compressed)
    except _Refused as exc:
        raise FileParseError(path, str(exc)) from None
    except OSError as exc:
        raise FileParseError(path, f"cannot read file ({exc.strerror or exc})") from exc


def _central_directory(path: Path) -> tuple[int, int] | None:
    """(entry count, central directory bytes) from the end-of-central-directory record (zip64 too),
    or None when there is none (zipfile then reports the damage).

    Read before zipfile parses the central directory: its cost grows with both numbers, and zipfile
    walks the directory by its byte size, so a lying count alone would not bound it.
    """
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - (22 + 0xFFFF)))  # the record plus the longest archive comment
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        count, cd_bytes = struct.unpack_from("<HI", tail, at + 10)
        if count != 0xFFFF and cd_bytes != 0xFFFFFFFF:
            return count, cd_bytes
        # Zip64: a locator right before the record points at the zip64 record with 8-byte fields.
        locator = at - 20
        if locator < 0 or tail[locator:locator + 4] != b"PK\x06\x07":
            return count, cd_bytes
        fh.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
        record = fh.read(56)
        if len(record) < 48 or record[:4] != b"PK\x06\x06":
            return count, cd_bytes
        return struct.unpack_from("<QQ", record, 32)


def _check_declared_sizes(path: Path, infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    """The central directory's sizes against the limits: refuses an honest bomb without inflating it."""
    total = sum(info.file_size for info in infos)
    total_growth = sum(max(0, info.file_size - info.compress_size) for info in infos)
    if total_growth > limits.total_expansion:
        raise FileParseError(path, f"expands to {total / MB:.3g} MB when unzipped, over the "
                                   f"{limits.total_expansion / MB:g} MB limit (RAG_MAX_FILE_MB); {_BOMB_ADVICE}")
    for info in infos:
        if info.file_size - info.compress_size > limits.member_expansion:
            raise FileParseError(path, f"{info.filename} expands to {info.file_size / MB:.3g} MB when unzipped, "
                                       f"over the {limits.member_expansion / MB:g} MB limit for one part; "
                                       f"{_BOMB_ADVICE}")
        if info.file_size > limits.ratio_floor and info.file_size > limits.ratio * max(info.compress_size, 1):
            raise FileParseError(path, f"{info.filename} expands {info.file_size / max(info.compress_size, 1):.0f}:1 "
                                       f"when unzipped ({info.compress_size / 1024:.0f} KB -> "
                                       f"{info.file_size / MB:.3g} MB), over the {limits.ratio:g}:1 limit; "
                                       f"{_BOMB_ADVICE}")


def _inflate_member(fh: BinaryIO, info: zipfile.ZipInfo, limits: ZipLimits, total_left: int) -> tuple[int, int]:
    """Inflate one member from its local header on, counting bytes; return (unzipped, compressed).

    Stops early (raising _Refused) as soon as the output passes the declared size, the member budget,
    what is left of the total budget, or the ratio cap. Ends with the size and CRC checks.
    """
    name = info.filename
    if info.flag_bits & 0x1:
        raise _Refused(f"{name} is encrypted inside the zip container; remove the password and re-save")
    fh.seek(info.header_offset)
    header = fh.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise _Refused(f"corrupt zip container (no local header for {name}); re-save the file")
    _sig, _ver, flags, method, _t, _d, _crc, _csize, local_size, name_len, extra_len = _LOCAL_HEADER.unpack(header)
    # Without a data descriptor (flag bit 3) the local header repeats the size; parsers that read
    # local headers would believe it, so it must agree with the central directory.
    if not flags & 0x8 and local_size not in (0xFFFFFFFF, info.file_size):
        raise _Refused(f"{name}: local header declares {local_size} bytes, central directory {info.file_size}; "
                       f"{_LIE_ADVICE}")
    if method != info.compress_type:
        raise _Refused(f"{name}: local and central headers name different compression methods; {_LIE_ADVICE}")
    fh.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    # Growth is measured on the bytes actually read, never on the declared compressed size.
    growth_budget = min(limits.member_expansion, total_left)

    if method == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise _Refused(f"{name}: stored uncompressed, yet its headers declare {info.compress_size} and "
                           f"{info.file_size} bytes; {_LIE_ADVICE}")
        crc, left = 0, info.file_size
        while left:
            data = fh.read(min(_READ_CHUNK, left))
            if not data:
                raise _Refused(f"corrupt zip container ({name} is truncated); re-save the file")
            crc = zlib.crc32(data, crc)
            left -= len(data)
        _check_crc(name, crc, info)
        return info.file_size, info.compress_size
    if method != zipfile.ZIP_DEFLATED:
        raise _Refused(f"{name} uses zip compression method {method}; documents use only stored or deflate "
                       "(re-save the file from its application)")

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate stream, no zlib header
    unzipped = fed = crc = 0
    while not inflater.eof:
        data = fh.read(_READ_CHUNK)
        if not data:
            raise _Refused(f"corrupt zip container ({name} is truncated); re-save the file")
        fed += len(data)
        while data and not inflater.eof:
            try:
                piece = inflater.decompress(data, _OUT_CHUNK)
            except zlib.error as exc:
                raise _Refused(f"corrupt zip container ({name}: {exc}); re-save the file") from None
            data = inflater.unconsumed_tail
            unzipped += len(piece)
            crc = zlib.crc32(piece, crc)
            consumed = fed - len(data) - len(inflater.unused_data)
            _check_progress(name, info, limits, unzipped, consumed, growth_budget)
    compressed = fed - len(inflater.unused_data)
    if unzipped != info.file_size:
        raise _Refused(f"{name}: headers declare {info.file_size} bytes but it unzips to {unzipped}; {_LIE_ADVICE}")
    _check_crc(name, crc, info)
    return unzipped, compressed


def _check_progress(name: str, info: zipfile.ZipInfo, limits: ZipLimits, unzipped: int, consumed: int,
                    growth_budget: int) -> None:
    """The running checks while a member inflates (`unzipped` and `consumed` are bytes so far)."""
    if unzipped > info.file_size:
        raise _Refused(f"{name}: headers declare {info.file_size} bytes but it unzips to more than {unzipped}; "
                       f"{_LIE_ADVICE}")
    if unzipped - consumed > growth_budget:
        raise _Refused(f"{name} expands to more than {unzipped / MB:.3g} MB when unzipped, past the unzip budget "
                       f"(growth of at most {limits.member_expansion / MB:g} MB per part and "
                       f"{limits.total_expansion / MB:g} MB per file, from RAG_MAX_FILE_MB); {_BOMB_ADVICE}")
    if unzipped > limits.ratio_floor and unzipped > limits.ratio * max(consumed, 1):
        raise _Refused(f"{name} expands more than {limits.ratio:g}:1 when unzipped ({consumed / 1024:.0f} KB -> "
                       f"{unzipped / MB:.3g} MB so far); {_BOMB_ADVICE}")


def _check_crc(name: str, crc: int, info: zipfile.ZipInfo) -> None:
    if crc != info.CRC:
        raise _Refused(f"corrupt zip container ({name} fails its CRC check); re-save the file")


# --------------------------------------------------------------------------------------------
# Text decoding
# --------------------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_\-:.]+)""", re.I)
# Single-byte Latin encodings a detector confuses with each other on short text; windows-1252 is by
# far the most common of them (browsers even read "latin-1" labels as windows-1252).
_LATIN_FAMILY = {"cp1250", "cp1252", "latin_1", "iso8859_2", "iso8859_15", "iso8859_9", "cp1254",
                 "mac_roman", "mac_latin2", "cp850", "cp437", "iso8859_3", "iso8859_4", "iso8859_13",
                 "cp1257", "iso8859_10", "iso8859_14", "iso8859_16", "mac_iceland", "mac_turkish",
                 # DOS Latin code pages: short cp1252 text with smart quotes is often detected as cp852.
                 "cp852", "cp775", "cp857", "cp858", "cp860", "cp861", "cp863", "cp865"}
_LATIN_KEYS = {e.replace("_", "") for e in _LATIN_FAMILY}


def decode_text(data: bytes, path: Path, file_type: str = "txt") -> tuple[str, str]:
    """Decode text bytes: BOM, UTF-8, a declared HTML/XML charset, then charset detection.

    Returns (text, encoding). Raises FileParseError when nothing decodes it plausibly.
    """
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
    # Lazy: charset detection is needed only for text that is not UTF-8.
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None:
        enc = codecs.lookup(best.encoding).name.replace("-", "_")
        if enc.replace("_", "") in _LATIN_KEYS:
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
