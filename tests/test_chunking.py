"""ingest.chunking: exact spans, hard token budget, structure, speed (real MiniLM tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from ingest.chunking import Chunker, ChunkDraft, extracted_text
from ingest.loaders import Element, ParsedDocument, parse_file
from tests.docgen import docs_mixed_files, parse_cached

TYPES = ["Title", "NarrativeText", "ListItem", "Table", "UncategorizedText"]


def _doc(elements: list[Element]) -> ParsedDocument:
    section = ""
    for el in elements:
        if el.type == "Title":
            section = el.text
        el.section = section
    return ParsedDocument(path=Path("mem.txt"), file_type="txt", elements=elements, page_count=None, needs_ocr=False)


def check_invariants(doc: ParsedDocument, chunks: list[ChunkDraft], count_tokens, budget: int) -> None:
    """Spans are exact, budgets hold, counts are real, every non-space character is covered."""
    full = extracted_text(doc)
    covered = bytearray(len(full))
    last_start = -1
    for c in chunks:
        assert full[c.char_start:c.char_end] == c.text
        assert c.text.strip() and c.text == c.text.strip()
        assert c.token_count == count_tokens(c.text) <= budget
        assert c.char_start >= last_start
        last_start = c.char_start
        assert c.page_numbers == sorted(set(c.page_numbers))
        assert c.element_types and len(c.element_types) == len(set(c.element_types))
        covered[c.char_start:c.char_end] = b"\x01" * (c.char_end - c.char_start)
    missing = [i for i, ch in enumerate(full) if not ch.isspace() and not covered[i]]
    assert not missing, f"text lost: {full[missing[0]:missing[0] + 40]!r}"


# ------------------------------------------------------------------ property tests

_words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
_texts = st.one_of(
    st.lists(_words, min_size=1, max_size=12).map(" ".join),
    st.lists(_words, min_size=30, max_size=200).map(" ".join),  # long: must be split
    st.lists(st.lists(_words, min_size=1, max_size=5).map(" | ".join), min_size=1, max_size=30).map("\n".join),
    st.text(min_size=1, max_size=400),
)
_elements = st.lists(
    st.builds(Element, text=_texts, type=st.sampled_from(TYPES),
              page_number=st.one_of(st.none(), st.integers(1, 5))),
    min_size=0, max_size=25,
).map(lambda els: [e for e in els if e.text.strip() and e.text == e.text.strip()])


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elements=_elements, budget=st.integers(16, 64), overlap=st.integers(0, 8))
def test_random_documents_keep_all_invariants(embedder, elements, budget, overlap):
    doc = _doc(elements)
    chunks = Chunker(embedder.count_tokens, budget, overlap).chunk(doc)
    check_invariants(doc, chunks, embedder.count_tokens, budget)


def _nonadditive(text: str) -> int:
    # Counts characters plus 3 per join: sums of parts underestimate joined texts, which the chunker
    # must notice and correct.
    return len(text) // 3 + 3 * text.count("\n\n") + 1


@hsettings(max_examples=80, deadline=None)
@given(elements=_elements, budget=st.integers(16, 80))
def test_invariants_hold_for_a_non_additive_tokenizer(elements, budget):
    doc = _doc(elements)
    chunks = Chunker(_nonadditive, budget, 4).chunk(doc)
    check_invariants(doc, chunks, _nonadditive, budget)


# ------------------------------------------------------------------ structure


def _para(n: int, word: str = "alpha") -> str:
    return " ".join(f"{word}{i}" for i in range(n)) + "."


def test_title_starts_a_new_chunk_and_sets_section(embedder):
    doc = _doc([Element("Introduction", "Title"), Element(_para(40, "intro"), "NarrativeText"),
                Element("Methods", "Title"), Element(_para(40, "method"), "NarrativeText")])
    chunks = Chunker(embedder.count_tokens, 256, 16).chunk(doc)
    assert [c.text.split("\n\n")[0] for c in chunks] == ["Introduction", "Methods"]
    assert [c.section for c in chunks] == ["Introduction", "Methods"]
    assert chunks[1].element_types == ["Title", "NarrativeText"]


def test_small_elements_are_packed_and_tiny_sections_merge(embedder):
    items = [Element(f"Point number {i} is short.", "ListItem", page_number=1 + i // 5) for i in range(10)]
    doc = _doc([Element("Checklist", "Title"), *items, Element("Note", "Title"), Element("Tiny.", "NarrativeText")])
    chunks = Chunker(embedder.count_tokens, 256, 16).chunk(doc)
    assert len(chunks) == 2  # "Note" closes the checklist section (which has enough body text)
    assert chunks[0].page_numbers == [1, 2]
    assert chunks[0].element_types == ["Title", "ListItem"]
    one_liners = _doc([Element("A", "Title"), Element("x y.", "NarrativeText"), Element("B", "Title"),
                       Element("z w.", "NarrativeText")])
    assert len(Chunker(embedder.count_tokens, 256, 16).chunk(one_liners)) == 1  # no 2-word chunks


def test_table_that_fits_stays_whole(embedder):
    rows = "\n".join(f"row{i} | {i * 3} | {i * 7}" for i in range(12))
    doc = _doc([Element(_para(60), "NarrativeText"), Element(rows, "Table")])
    budget = embedder.count_tokens(rows) + 5
    chunks = Chunker(embedder.count_tokens, budget, 8).chunk(doc)
    tables = [c for c in chunks if "Table" in c.element_types]
    assert len(tables) == 1 and tables[0].text == rows


def test_big_table_splits_on_rows_without_overlap(embedder):
    rows = [f"Team{i} | City{i} | {i}" for i in range(80)]
    doc = _doc([Element("\n".join(rows), "Table")])
    chunks = Chunker(embedder.count_tokens, 48, 16).chunk(doc)
    assert len(chunks) > 3
    for c in chunks:
        assert all(line in rows for line in c.text.split("\n")), c.text
    assert [c.char_start for c in chunks[1:]] == [c.char_end + 1 for c in chunks[:-1]]  # adjacent, no overlap


def test_long_text_splits_with_overlap_and_heading_rides_along(embedder):
    long = " ".join(f"Sentence {i} talks about topic {i}." for i in range(120))
    doc = _doc([Element("Long Section", "Title"), Element(long, "NarrativeText")])
    chunks = Chunker(embedder.count_tokens, 64, 12).chunk(doc)
    assert len(chunks) > 5
    assert chunks[0].text.startswith("Long Section\n\nSentence 0")
    assert all(c.section == "Long Section" for c in chunks)
    overlaps = [a.char_end > b.char_start for a, b in zip(chunks, chunks[1:])]
    assert all(overlaps)
    assert all(b.char_start > a.char_start for a, b in zip(chunks, chunks[1:]))


def test_no_overlap_between_packed_elements(embedder):
    doc = _doc([Element(_para(10, f"p{k}x"), "NarrativeText") for k in range(10)])
    assert all(embedder.count_tokens(e.text) < 100 for e in doc.elements)
    chunks = Chunker(embedder.count_tokens, 100, 20).chunk(doc)
    assert all(a.char_end <= b.char_start for a, b in zip(chunks, chunks[1:]))


def test_empty_document_gives_no_chunks(embedder):
    assert Chunker(embedder.count_tokens, 64, 8).chunk(_doc([])) == []


def test_tokenizer_calls_grow_linearly(embedder):
    calls = {"n": 0, "chars": 0}

    def counting(text: str) -> int:
        calls["n"] += 1
        calls["chars"] += len(text)
        return embedder.count_tokens(text)

    paragraphs = [Element(" ".join(f"Word{k} number {j} here." for j in range(8)), "NarrativeText")
                  for k in range(300)]
    long = Element(" ".join(f"Fact {i} is stated in sentence {i}." for i in range(2000)), "NarrativeText")
    doc = _doc([Element("Heading", "Title"), *paragraphs, long])
    text_len = len(extracted_text(doc))
    chunks = Chunker(counting, 128, 16).chunk(doc)
    assert chunks
    # Each character is tokenized a handful of times (element, split pieces, final chunk), not n times.
    assert calls["chars"] < 6 * text_len, calls
    assert calls["n"] < 3 * len(doc.elements) + 40 * len(chunks), calls


# ------------------------------------------------------------------ real files


def test_every_docs_mixed_file_chunks_within_budget(evaldata, embedder, settings):
    chunker = Chunker(embedder.count_tokens, settings.chunk_tokens, settings.chunk_overlap_tokens)
    total = 0
    for path in docs_mixed_files(evaldata):
        if path.name == "loremipsum-flat.pdf":
            continue
        doc = parse_cached(str(path))
        chunks = chunker.chunk(doc)
        assert chunks, path.name
        check_invariants(doc, chunks, embedder.count_tokens, settings.chunk_tokens)
        if doc.page_count and doc.file_type == "pdf":
            assert all(c.page_numbers for c in chunks), path.name
        total += len(chunks)
    assert total > 500


def test_squad_docs_chunk_within_budget(evaldata, embedder, settings):
    docs = sorted((evaldata / "squad" / "docs").glob("*.md"))
    assert len(docs) >= 20
    chunker = Chunker(embedder.count_tokens, 256, 32)
    for path in docs:
        doc = parse_file(path, settings)
        chunks = chunker.chunk(doc)
        check_invariants(doc, chunks, embedder.count_tokens, 256)
        assert any(c.section for c in chunks), path.name


def test_real_file_pages_and_sections(evaldata, embedder):
    doc = parse_cached(str(evaldata / "docs-mixed/files/layout-parser-paper-fast.pdf"))
    chunks = Chunker(embedder.count_tokens, 128, 16).chunk(doc)
    assert {p for c in chunks for p in c.page_numbers} == {1, 2}
    assert chunks[0].page_numbers == [1] and chunks[-1].page_numbers[-1] == 2
