"""ingest.loaders on the real docs-mixed files and on generated bad input (real unstructured, no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.chunking import extracted_text
from ingest.loaders import FileParseError, NeedsOCRError, configure_offline, parse_file, supported
from ingest.loaders import ocr
from rag.errors import ParseError
from tests.docgen import docs_mixed_files, make_bad_files, make_pdf, parse_cached

REPO = Path(__file__).resolve().parent.parent

# Text each file must yield (checked against the extracted text).
EXPECTED: dict[str, list[str]] = {
    "UDHR_first_article_all.txt": ["All human beings are born free"],
    "book-war-and-peace-1p.txt": ["Genoa and Lucca"],
    "codeblock.md": ["HTML Example", "Hello, World!"],
    "contains-pictures.docx": ["Lorem ipsum dolor sit amet"],
    "copy-protected.pdf": ["LayoutParser", "Deep Learning"],
    "docx-tables.docx": ["Header Col 1 | Header Col 2", "Lorem ipsum | A link example"],
    "email-no-html-content-1.eml": ["started watching several repositories"],
    "embedded-images-tables.pdf": ["Potentiodynamic polarization data"],
    "example-10k-1p.html": ["Galaxy Gaming, Inc."],
    "example-steelJIS-datasheet.html": ["SNB22-3 Chemical composition"],
    "example-with-scripts.html": ["Russian Offensive Campaign Assessment"],
    "fake-doc.rtf": ["My First Heading", "Row 2, Cell 2"],
    "fake-email-attachment.eml": ["Here's the attachments!"],
    "fake-html-cp1252.html": ["Die schöne Frau", "15,50 €", "très chaud", "El niño", "¡Qué rico!"],
    "fake-memo.pdf": ["200 laptops", "20,000 bottles of water"],
    "fake-power-point-table.pptx": ["Red | Green | Blue"],
    "family-day.eml": ["first annual family day"],
    "interface-config-guide-p93.pdf": ["Port Cross-Connect"],
    "layout-parser-paper-fast.pdf": ["LayoutParser", "Allen Institute for AI"],
    "layout-parser-paper-with-table.pdf": ["Current layout detection models"],
    "mime-different-plain-html.eml": ["Ray Tomlinson"],
    "multi-column-2p.pdf": ["Dense Passage Retrieval", "Facebook AI"],
    "norwich-city.txt": ["Iwan Roberts", "Norwich City"],
    "pdf-with-ocr-text.pdf": ["Foundation"],
    "reliance.pdf": ["Reliance Industries Limited", "Integrated Annual Report"],
    "rotated-page-90.pdf": ["Hello World Test Text", "Rotated page fixture"],
    "sample-presentation.pptx": ["This is the first content slide", "sub-sub-bullet"],
    "science-exploration-1p.pptx": ["Sciences and Exploration Directorate"],
    "simple-table.md": ["Juicy Apples | 1.99 | 739"],
    "simple.odt": ["These are a few of my favorite things"],
    "stanley-cups.csv": ["Maple Leafs | TOR | 13", "Team | Location | Stanley Cups"],
    "stanley-cups.xlsx": ["Maple Leafs", "Stanley Cups Since 67"],
    "table-multi-row-column-cells-actual.csv": ["Low Vision", "Ballots Completed"],
    "unstructured-example-docs-README.md": ["Example Docs", "layout parser paper"],
    "winter-sports.epub": ["Winter Sports", "ski"],
}
# Files with more than one page must report the right pages.
PAGE_COUNTS = {"layout-parser-paper-fast.pdf": 2, "multi-column-2p.pdf": 2, "copy-protected.pdf": 2,
               "reliance.pdf": 3, "sample-presentation.pptx": 4, "fake-memo.pdf": 1}


def _mixed_ids(evaldata_root: Path | None = None) -> list[str]:
    return sorted(EXPECTED)


def test_expected_table_covers_every_docs_mixed_file(evaldata):
    names = {p.name for p in docs_mixed_files(evaldata)} - {"loremipsum-flat.pdf"}
    assert names == set(EXPECTED), "a docs-mixed file has no expected-content entry (or an entry has no file)"


@pytest.mark.parametrize("name", _mixed_ids())
def test_each_format_parses_with_expected_content(evaldata, name):
    path = evaldata / "docs-mixed" / "files" / name
    doc = parse_cached(str(path))
    assert Path(doc.path).name == name  # the parse of this very file (cached per process)
    assert doc.elements, f"{name}: no elements"
    assert all(e.text and e.text == e.text.strip() for e in doc.elements)
    assert not any(e.type == "PageBreak" for e in doc.elements)
    assert doc.file_type == path.suffix.lstrip(".").lower()
    assert doc.parse_seconds > 0
    assert not doc.needs_ocr
    text = extracted_text(doc)
    for needle in EXPECTED[name]:
        assert needle.lower() in text.lower(), f"{name}: {needle!r} missing from the extracted text"
    if name in PAGE_COUNTS:
        assert doc.page_count == PAGE_COUNTS[name]
        pages = {e.page_number for e in doc.elements}
        assert pages <= set(range(1, PAGE_COUNTS[name] + 1))


def test_multi_page_pdf_reports_pages_and_sections(evaldata):
    doc = parse_cached(str(evaldata / "docs-mixed/files/layout-parser-paper-fast.pdf"))
    assert {1, 2} <= {e.page_number for e in doc.elements}
    # Page order is reading order.
    pages = [e.page_number for e in doc.elements]
    assert pages == sorted(pages)
    assert any(e.section for e in doc.elements)


def test_sections_follow_headings_in_markdown_and_html(evaldata):
    doc = parse_cached(str(evaldata / "docs-mixed/files/fake-html-cp1252.html"))
    assert doc.elements[0].type == "Title" and doc.elements[0].text == "My First Heading"
    assert all(e.section == "My First Heading" for e in doc.elements)
    md = parse_cached(str(evaldata / "docs-mixed/files/codeblock.md"))
    code = [e for e in md.elements if "Hello, World!" in e.text][0]
    assert code.section == "HTML Example"


def test_cp1252_html_has_no_mojibake(evaldata):
    text = extracted_text(parse_cached(str(evaldata / "docs-mixed/files/fake-html-cp1252.html")))
    # windows-1250 (what unstructured's own detector guesses) would give "trčs" and "nińo".
    assert "trčs" not in text and "nińo" not in text and "\ufffd" not in text


def test_tables_keep_rows(evaldata):
    doc = parse_cached(str(evaldata / "docs-mixed/files/stanley-cups.csv"))
    table = [e for e in doc.elements if e.type == "Table"][0]
    assert "Blues | STL | 1\nFlyers | PHI | 2" in table.text
    assert "Unnamed" not in table.text


def test_image_only_pdf_needs_ocr_when_ocr_is_off(evaldata):
    path = evaldata / "docs-mixed/files/loremipsum-flat.pdf"
    with pytest.raises(NeedsOCRError) as info:
        parse_file(path, _settings(ocr="off"))
    err = info.value
    assert isinstance(err, ParseError) and err.needs_ocr
    assert str(err) == (f"{path}: no text layer (scanned/image-only PDF); needs OCR, and OCR is off "
                        "(RAG_OCR=off; set it to auto to read scanned pages)")


def test_encrypted_pdf_with_empty_password_parses_and_real_password_is_reported(evaldata, tmp_path):
    doc = parse_cached(str(evaldata / "docs-mixed/files/copy-protected.pdf"))
    assert "LayoutParser" in extracted_text(doc)
    locked = make_pdf(tmp_path / "locked.pdf", ["Top secret numbers"], password="s3cret")
    with pytest.raises(FileParseError, match=r"locked\.pdf: encrypted; remove the password$"):
        parse_file(locked, _settings())


def _settings(**changes):
    from rag.config import Settings

    return Settings(**changes)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("empty", r"empty\.txt: empty file$"),
        ("junk_pdf", r"junk\.pdf: not a PDF \(file does not start with %PDF"),
        ("truncated_pdf", r"truncated\.pdf: corrupt or truncated PDF"),
        ("text_as_docx", r"fake\.docx: not a valid \.docx \(expected a zip container"),
        ("zip_as_docx", r"not-word\.docx: not a valid \.docx \(zip container lacks word/document\.xml\)"),
        ("binary_txt", r"binary\.txt: binary content in a \.txt file"),
        ("whitespace_txt", r"blank\.txt: no text extracted"),
        ("unsupported", r"photo\.xyz: unsupported file type '\.xyz'"),
    ],
)
def test_bad_files_give_one_line_reasons(evaldata, tmp_path, kind, reason):
    files = make_bad_files(tmp_path, evaldata / "docs-mixed/files/fake-memo.pdf")
    with pytest.raises(ParseError, match=reason) as info:
        parse_file(files[kind], _settings())
    message = str(info.value)
    assert "\n" not in message and str(files[kind]) in message


def test_supported_extensions():
    for name in ["a.pdf", "b.HTML", "c.htm", "d.docx", "e.pptx", "f.xlsx", "g.csv", "h.tsv", "i.md", "j.txt",
                 "k.eml", "l.epub", "m.odt", "n.rtf"]:
        assert supported(Path(name)), name
    for name in ["o.png", "p.JPG", "q.jpeg", "r.tif", "s.tiff"]:  # read by OCR
        assert supported(Path(name)), name
    for name in ["a.exe", "b.gif", "c", "d.doc.bak", "e.zip"]:
        assert not supported(Path(name)), name


def test_size_limit_comes_from_settings(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("word " * 3000, encoding="utf-8")  # ~15 KB
    with pytest.raises(FileParseError, match=r"big\.txt: larger than the 0\.01 MB limit \(RAG_MAX_FILE_MB\)"):
        parse_file(path, _settings(max_file_mb=0.01))
    assert parse_file(path, _settings(max_file_mb=1)).elements


def test_latin1_text_decodes(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Crème brûlée à la française coûte 5 €uros, señor. Ça va très bien.".encode("cp1252"))
    text = extracted_text(parse_file(path, _settings()))
    assert "Crème brûlée à la française" in text and "señor" in text and "Ça va très bien" in text


def test_utf16_text_with_bom_decodes(tmp_path):
    path = tmp_path / "utf16.txt"
    path.write_bytes("Grüße aus Köln. Das ist ein Test.".encode("utf-16"))
    assert "Grüße aus Köln" in extracted_text(parse_file(path, _settings()))


@pytest.mark.parametrize("name", ["with spaces.md", "ünïcödé-日本語.md", "semi;colon $(rm -rf) `x` & 'q'.md",
                                  "-leading-dash.md"])
def test_odd_filenames_parse_and_errors_name_them(tmp_path, name):
    path = tmp_path / name
    path.write_text("# Heading\n\nA paragraph that was written for this test.\n", encoding="utf-8")
    doc = parse_file(path, _settings())
    assert [e.text for e in doc.elements] == ["Heading", "A paragraph that was written for this test."]
    assert doc.elements[1].section == "Heading"
    bad = tmp_path / name.replace(".md", ".pdf")
    bad.write_bytes(b"not a pdf at all")
    with pytest.raises(FileParseError) as info:
        parse_file(bad, _settings())
    assert str(bad) in str(info.value)


def test_generated_pdf_round_trip(tmp_path):
    path = make_pdf(tmp_path / "gen.pdf", ["Quarterly revenue grew by 12 percent in 2023."])
    doc = parse_file(path, _settings())
    assert doc.page_count == 1 and doc.elements[0].page_number == 1
    assert "Quarterly revenue grew by 12 percent" in extracted_text(doc)


def test_offline_nlp_is_blank_pipeline_with_sentencizer_and_verbs():
    configure_offline()
    import unstructured.nlp.tokenize as tokenize
    from unstructured.partition.text import element_from_text

    nlp = tokenize._get_nlp()
    assert "sentencizer" in nlp.pipe_names or "parser" in nlp.pipe_names
    assert tokenize.sent_tokenize("One sentence here. Another one there.") == [
        "One sentence here.", "Another one there."]
    assert element_from_text("The committee approved the budget for next year.").category == "NarrativeText"
    assert element_from_text("Annual Budget Overview").category == "Title"


NO_NETWORK_SCRIPT = r"""
import json, socket, sys
attempts = []
def refuse(self, address, *a, **k):
    attempts.append(repr(address))
    raise OSError("network disabled by test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from rag.config import Settings
from ingest.loaders import parse_file
out = {}
for name in sys.argv[2:]:
    doc = parse_file(Path(name), Settings())
    out[Path(name).name] = len(doc.elements)
print(json.dumps({"attempts": attempts, "elements": out}))
"""


@pytest.mark.slow  # a fresh process parses every format with sockets blocked: ~50 s
def test_parsing_makes_no_network_calls(evaldata, tmp_path):
    files = evaldata / "docs-mixed/files"
    names = [files / "fake-memo.pdf", files / "docx-tables.docx", files / "example-10k-1p.html",
             files / "unstructured-example-docs-README.md", files / "sample-presentation.pptx"]
    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS")}
    script = tmp_path / "no_network.py"
    script.write_text(NO_NETWORK_SCRIPT, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(REPO), *map(str, names)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert all(n > 0 for n in result["elements"].values()) and len(result["elements"]) == len(names)


# ------------------------------------------------------------------ OCR (issue 16): real Tesseract, offline

needs_tesseract = pytest.mark.skipif(
    ocr.tesseract_version() is None,
    reason="Tesseract is not installed: apt-get install tesseract-ocr tesseract-ocr-eng (scripts/setup.sh --test)")


def _text_page_image(lines: list[str], size: tuple[int, int] = (1700, 900)):  # type: ignore[no-untyped-def]
    """A white page with black text lines, drawn with PIL (a scan without the scanner)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 44)
    except OSError:
        font = ImageFont.load_default(size=44)
    for i, line in enumerate(lines):
        draw.text((80, 80 + i * 90), line, fill=0, font=font)
    return image


@pytest.mark.slow  # OCR of a full PDF page: ~20 s
@needs_tesseract
def test_scanned_pdf_is_read_by_ocr_with_page_provenance(evaldata):
    path = evaldata / "docs-mixed/files/loremipsum-flat.pdf"
    doc = parse_file(path, _settings())  # ocr="auto" is the default
    text = extracted_text(doc)
    assert "Lorem ipsum dolor sit amet" in text and "consectetur adipiscing elit" in text
    assert doc.parser == "unstructured:pdf-fast+tesseract" and doc.ocr_pages == [1] and not doc.needs_ocr
    assert doc.page_count == 1 and {e.page_number for e in doc.elements} == {1}


@pytest.mark.slow  # OCR of a full PDF page (ocr="always"): ~10 s
@needs_tesseract
def test_pdf_with_a_text_layer_is_not_ocrd_unless_always(evaldata):
    path = evaldata / "docs-mixed/files/pdf-with-ocr-text.pdf"
    auto = parse_cached(str(path))
    assert auto.parser == "unstructured:pdf-fast" and auto.ocr_pages == []
    assert "Foundation" in extracted_text(auto)
    always = parse_file(path, _settings(ocr="always"))
    assert always.parser == "tesseract" and always.ocr_pages == [1]
    assert "Foundation" in extracted_text(always) and {e.page_number for e in always.elements} == {1}


@needs_tesseract
def test_png_of_a_text_page_is_read(tmp_path):
    path = tmp_path / "scan.png"
    _text_page_image(["The harbour master counts", "seventeen ships at dawn."]).save(path)
    doc = parse_file(path, _settings())
    text = extracted_text(doc)
    assert "harbour master counts" in text and "seventeen ships at dawn" in text
    assert doc.file_type == "png" and doc.parser == "tesseract:png"
    assert doc.page_count == 1 and doc.ocr_pages == [1] and {e.page_number for e in doc.elements} == {1}


@needs_tesseract
def test_every_tiff_frame_is_a_page(tmp_path):
    path = tmp_path / "two-pages.tiff"
    first = _text_page_image(["Page one lists the lighthouse."], (1500, 260))
    second = _text_page_image(["Page two lists the ferry."], (1500, 260))
    first.save(path, save_all=True, append_images=[second])
    doc = parse_file(path, _settings())
    pages = {e.page_number: e.text for e in doc.elements}
    assert doc.page_count == 2 and "lighthouse" in pages[1] and "ferry" in pages[2]


@needs_tesseract
def test_ocr_reports_pages_done_of_total_to_a_hook_and_a_hook_can_defer_the_file(tmp_path):
    path = tmp_path / "two-pages.tiff"
    first = _text_page_image(["Page one lists the lighthouse."], (1500, 260))
    first.save(path, save_all=True, append_images=[_text_page_image(["Page two lists the ferry."], (1500, 260))])
    seen: list[tuple[str, int, int]] = []
    with ocr.watch_ocr_pages(lambda p, done, total: seen.append((p.name, done, total))):
        doc = parse_file(path, _settings())
    assert seen == [("two-pages.tiff", 0, 2), ("two-pages.tiff", 1, 2), ("two-pages.tiff", 2, 2)]
    assert doc.page_count == 2

    def defer(p, done, total):
        raise ocr.OCRDeferred(p, f"{total} page(s) need OCR")

    with ocr.watch_ocr_pages(defer), pytest.raises(ocr.OCRDeferred, match="2 page"):
        parse_file(path, _settings())  # before any page is read: the sync's OCR worker takes the file
    seen.clear()
    parse_file(path, _settings())  # outside the block no hook runs
    assert seen == []


@needs_tesseract
def test_huge_image_canvas_is_refused_before_ocr(tmp_path):
    from PIL import Image

    path = tmp_path / "poster.png"
    Image.new("1", (8000, 6000), 1).save(path)  # 48 megapixels in a few KB
    assert path.stat().st_size < 100_000
    with pytest.raises(FileParseError, match=r"poster\.png: image frame 1 is 8000x6000 pixels, over the "
                                              r"40-megapixel limit for OCR; scale it down"):
        parse_file(path, _settings())


def test_images_need_ocr_when_it_is_off_or_missing(tmp_path, monkeypatch):
    path = tmp_path / "scan.png"
    _text_page_image(["Anything"], (400, 200)).save(path)
    with pytest.raises(NeedsOCRError, match=r"scan\.png: an image: its text needs OCR, and OCR is off \(RAG_OCR=off"):
        parse_file(path, _settings(ocr="off"))
    # No tesseract on PATH: the same clear failure, naming what to install.
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    ocr.tesseract_version.cache_clear()
    try:
        with pytest.raises(NeedsOCRError, match=r"Tesseract is not installed; install Tesseract \(apt-get install "
                                                 r"tesseract-ocr tesseract-ocr-eng"):
            parse_file(path, _settings())
    finally:
        monkeypatch.undo()
        ocr.tesseract_version.cache_clear()


def test_image_content_must_match_the_extension(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"%PDF-1.4 not an image")
    with pytest.raises(FileParseError, match=r"photo\.png: not a PNG image \(looks like a PDF\)"):
        parse_file(path, _settings())


def test_ocr_setting_is_validated():
    from rag.config import validate
    from rag.errors import ConfigError

    for mode in ("auto", "off", "always"):
        validate(_settings(ocr=mode))
    with pytest.raises(ConfigError, match=r"setting 'ocr' is 'sometimes'; use auto, off or always"):
        validate(_settings(ocr="sometimes"))
