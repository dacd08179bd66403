"""Builders for the product's value objects, so tests state only the fields they care about.

    make_chunk("Paris is the capital of France.", file_path="/docs/france.md", page=3)
    make_hit("Paris ...", score=0.9, rerank_score=3.2)          # or make_hit(chunk=some_chunk)
    make_evidence(1, "Paris ...", file_path="/docs/f1.pdf")     # Evidence(number, Hit(Chunk))

Defaults are valid and boring: one chunk of one file, labelled "public", a stable uuid5 id derived from
(file_path, file_hash, index) the way ingest derives it, the file type from the path's extension.
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Any

from rag.models import Chunk, Evidence, Hit

_HIT_FIELDS = {"dense_rank", "dense_score", "bm25_rank", "bm25_score", "fused_rank", "fused_score", "rerank_score",
               "score_kind"}


def chunk_id(file_path: str, file_hash: str, index: int) -> str:
    """A stable chunk id for (file_path, file_hash, index), shaped like the ids ingest writes."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{file_path}/{file_hash}/{index}"))


def make_chunk(text: str = "Paris is the capital of France.", *, file_path: str = "/docs/doc.md",
               index: int = 0, count: int = 1, file_hash: str = "h", file_type: str | None = None,
               id: str | None = None, page: int | None = None, page_numbers: list[int] | None = None,
               section: str = "", acl: list[str] | None = None, ingested_at: str = "",
               element_types: list[str] | None = None, token_count: int = 0,
               char_start: int = 0, char_end: int | None = None) -> Chunk:
    """A Chunk of `text` from `file_path`; `page` is shorthand for `page_numbers=[page]`."""
    if page_numbers is None:
        page_numbers = [page] if page else []
    return Chunk(
        id=id if id is not None else chunk_id(file_path, file_hash, index), text=text, file_path=file_path,
        file_hash=file_hash, file_type=file_type if file_type is not None else PurePosixPath(file_path).suffix[1:],
        chunk_index=index, chunk_count=count, char_start=char_start,
        char_end=char_end if char_end is not None else char_start + len(text), page_numbers=page_numbers,
        section=section, element_types=list(element_types or []),
        acl=list(acl) if acl is not None else ["public"], ingested_at=ingested_at, token_count=token_count,
        file_name=PurePosixPath(file_path).name)


def make_hit(text: str = "Paris is the capital of France.", score: float = 1.0, *, chunk: Chunk | None = None,
             **fields: Any) -> Hit:
    """A Hit on `chunk` (or on a chunk made from `text` and the chunk fields among `fields`).

    Hit fields (dense_rank, bm25_score, rerank_score, score_kind ...) go to the Hit, the rest to make_chunk.
    """
    hit_fields = {k: fields.pop(k) for k in list(fields) if k in _HIT_FIELDS}
    if chunk is None:
        chunk = make_chunk(text, **fields)
    elif fields:
        raise TypeError(f"chunk fields {sorted(fields)} given together with a chunk")
    return Hit(chunk=chunk, score=score, **hit_fields)


def make_evidence(number: int, text: str = "Paris is the capital of France.", score: float = 1.0,
                  **fields: Any) -> Evidence:
    """Evidence number `number`: a hit made by make_hit(text, score, **fields)."""
    return Evidence(number=number, hit=make_hit(text, score, **fields))
