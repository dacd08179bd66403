"""The doc-QA relevance rule across chunkings, documents and punctuation differences."""

from __future__ import annotations

import pytest

from evals.datasets import DocQAQuestion
from evals.metrics import mrr_at_k, recall_at_k
from evals.relevance import (
    chunk_is_relevant,
    doc_qa_ranking,
    gold_unit_id,
    measure_overlap,
    normalize_tokens,
    same_document,
)
from rag.models import Chunk

PARA = (
    "ABC originally launched on October 12, 1943 as a radio network, separated from and serving as the "
    "successor to the NBC Blue Network, which had been purchased by Edward J. Noble. It extended its "
    "operations to television in 1948, following in the footsteps of established broadcast networks CBS "
    "and NBC. In the mid-1950s, ABC merged with United Paramount Theatres, a chain of movie theaters that "
    "formerly operated as a subsidiary of Paramount Pictures. Leonard Goldenson, who had been the head of "
    "UPT, made the new television network profitable by helping develop and greenlight many successful series."
)
BEFORE = (
    "The American Broadcasting Company (ABC) is an American commercial broadcast television network that is "
    "owned by the Disney–ABC Television Group. The network is part of the Big Three television networks."
)
AFTER = (
    "In 1985, ABC was acquired by Capital Cities Communications. The network is headquartered on Columbus "
    "Avenue and West 66th Street in Manhattan, with offices in New York City, Los Angeles and Burbank."
)
DOC_TEXT = f"# American Broadcasting Company\n\n{BEFORE}\n\n{PARA}\n\n{AFTER}"
GOLD = "American_Broadcasting_Company.md"
FILE = "/data/squad/docs/American_Broadcasting_Company.md"


def _split_words(text: str, parts: int) -> list[str]:
    words = text.split()
    size = -(-len(words) // parts)
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


def test_whole_paragraph_chunk_is_relevant_and_neighbours_are_not():
    assert chunk_is_relevant(FILE, PARA, GOLD, PARA)
    assert chunk_is_relevant(FILE, BEFORE + "\n\n" + PARA, GOLD, PARA)  # paragraph inside a bigger chunk
    assert not chunk_is_relevant(FILE, BEFORE, GOLD, PARA)
    assert not chunk_is_relevant(FILE, AFTER, GOLD, PARA)


@pytest.mark.parametrize("parts", [2, 3])
def test_paragraph_split_into_pieces_each_piece_counts(parts):
    pieces = _split_words(PARA, parts)
    assert len(pieces) == parts
    for piece in pieces:
        assert chunk_is_relevant(FILE, piece, GOLD, PARA), piece
    # pieces glued to neighbouring paragraphs (as a token-bounded chunker produces) still count
    assert chunk_is_relevant(FILE, BEFORE + " " + pieces[0], GOLD, PARA)
    assert chunk_is_relevant(FILE, pieces[-1] + "\n\n" + AFTER, GOLD, PARA)


def test_real_splitter_chunkings_with_overlap():
    splitter_mod = pytest.importorskip("langchain_text_splitters")
    for size, overlap in [(300, 40), (500, 60), (900, 100)]:
        splitter = splitter_mod.RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)
        chunks = splitter.split_text(DOC_TEXT)
        flags = [chunk_is_relevant(FILE, c, GOLD, PARA) for c in chunks]
        assert any(flags), size
        for chunk, flag in zip(chunks, flags):
            ov = measure_overlap(PARA, chunk)
            # a chunk is relevant exactly when it carries a substantial share of the paragraph
            if ov.evidence_covered >= 0.3 * ov.evidence_tokens:
                assert flag, (size, chunk)
            if ov.evidence_covered < 8:
                assert not flag, (size, chunk)


def test_short_tail_overlap_is_not_relevant():
    tail = " ".join(PARA.split()[-5:])  # "develop and greenlight many successful series."
    chunk = tail + "\n\n" + AFTER
    ov = measure_overlap(PARA, chunk)
    assert ov.evidence_covered == 5
    assert not chunk_is_relevant(FILE, chunk, GOLD, PARA)
    head = " ".join(PARA.split()[:6])
    assert not chunk_is_relevant(FILE, BEFORE + " " + head, GOLD, PARA)


def test_same_text_in_another_document_is_not_relevant():
    assert not chunk_is_relevant("/data/squad/docs/NBC.md", PARA, GOLD, PARA)
    assert not chunk_is_relevant("", PARA, GOLD, PARA)
    # nested gold paths must match their folders, not only the base name
    assert same_document("/x/files/sub/a.pdf", "sub/a.pdf")
    assert not same_document("/x/files/other/a.pdf", "sub/a.pdf")
    assert same_document("C:\\docs\\a.pdf", "a.pdf")


def test_punctuation_and_whitespace_differences():
    evidence = "There were 20,000 bottles of water, 10,000 blankets, and 200 laptops delivered on January 23, 2023."
    parsed = "There were 20, 000 bottles of water,\n10,000 blankets and 200 laptops delivered on\nJanuary 23 2023 ."
    # "20, 000" vs "20,000" both normalize to "20 000"
    assert normalize_tokens("20,000 — “Quoted” don’t") == ["20", "000", "quoted", "don", "t"]
    assert chunk_is_relevant("/x/fake-memo.pdf", "MEMO\n" + parsed + "\nThanks.", "fake-memo.pdf", evidence)
    # curly quotes, dashes and case
    assert chunk_is_relevant(FILE, PARA.replace(",", " ,").upper(), GOLD, PARA.replace("mid-1950s", "mid–1950s"))


def test_short_evidence_must_appear_whole():
    assert chunk_is_relevant("/d/stanley-cups.csv", "Team Abbr Cups\nMaple Leafs TOR 13\nCanadiens MTL 24",
                             "stanley-cups.csv", "Maple Leafs,TOR,13")
    assert not chunk_is_relevant("/d/stanley-cups.csv", "Maple Leafs MTL 24", "stanley-cups.csv",
                                 "Maple Leafs,TOR,13")
    assert chunk_is_relevant("/d/a.txt", "the answer is 42 ok", "a.txt", "42")
    assert not chunk_is_relevant("/d/a.txt", "anything", "a.txt", "")  # no gold evidence: nothing relevant


def _chunk(cid: str, text: str, path: str = FILE) -> Chunk:
    return Chunk(id=cid, text=text, file_path=path, file_hash="h", file_type="md", chunk_index=0,
                 chunk_count=1, char_start=0, char_end=len(text))


def test_doc_qa_ranking_maps_relevant_chunks_to_one_unit():
    q = DocQAQuestion("q1", "When?", ["1943"], False, GOLD, PARA)
    first, second = _split_words(PARA, 2)
    hits = [_chunk("c0", BEFORE), _chunk("c1", first), _chunk("c9", PARA, "/other/NBC.md"), _chunk("c2", second)]
    ranked, qrels, flags = doc_qa_ranking(q, hits)
    unit = gold_unit_id("q1")
    assert flags == [False, True, False, True]
    assert ranked == ["c0", unit, "c9", unit]
    assert qrels == {unit: 1}
    assert recall_at_k(ranked, qrels, 1) == 0.0
    assert recall_at_k(ranked, qrels, 2) == 1.0
    assert mrr_at_k(ranked, qrels, 10) == 0.5
    # hit dicts (Hit.to_dict()) work too
    ranked2, _, _ = doc_qa_ranking(q, [{"chunk_id": "c1", "file": FILE, "text": first}])
    assert ranked2 == [unit]
