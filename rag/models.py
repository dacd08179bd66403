"""The data that flows between components: chunks, search hits, evidence, citations, answers.

Plain dataclasses with `to_dict`/`from_payload` so the same shapes go to Qdrant payloads, `--json`
output, eval reports and the UI.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Protocol, runtime_checkable

from rag.errors import ConfigError


class Mode(str, Enum):
    """A retrieval mode. A `str` Enum, so `Mode.HYBRID == "hybrid"` and JSON shows the plain value.

    - DENSE: the dense leg alone, ordered by cosine similarity.
    - BM25: the BM25 leg alone, ordered by BM25 score.
    - HYBRID: both legs fused with reciprocal rank fusion.
    - RERANK: the fused top-M re-scored by the cross-encoder.
    """

    DENSE = "dense"
    BM25 = "bm25"
    HYBRID = "hybrid"
    RERANK = "rerank"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "Mode | str", field: str = "mode") -> "Mode":
        """The Mode named by `value` (case and surrounding spaces ignored).

        Raises ConfigError naming `field` (the setting, flag or request field the value came from)
        and the accepted values. This is the one place a mode name is validated.
        """
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigError(f"{field} {value!r} is not a retrieval mode; use one of "
                              f"{', '.join(m.value for m in cls)}") from None

    @classmethod
    def values(cls) -> list[str]:
        """The mode names, for argparse choices and UI radio buttons."""
        return [m.value for m in cls]


class ScoreKind(str, Enum):
    """What `Hit.score` measures; the evidence gate picks its default floor from it."""

    DENSE = "dense"  # cosine similarity of the dense leg
    BM25 = "bm25"  # BM25 score of the sparse leg
    RRF = "rrf"  # reciprocal rank fusion score (also the reranker fused as a third leg)
    RERANK = "rerank"  # cross-encoder logit
    UNKNOWN = "unknown"  # built by hand (tests, sweeps): no default floor applies

    def __str__(self) -> str:
        return self.value


@dataclass
class Chunk:
    """One indexed passage with its provenance. Stored as the payload of one Qdrant point."""

    id: str  # stable UUID string: uuid5(file_path, file_hash, chunk_index)
    text: str
    file_path: str  # absolute, resolved path of the source file
    file_hash: str  # sha256 of the file bytes
    file_type: str  # lower-case extension without dot: pdf, docx, md ...
    chunk_index: int
    chunk_count: int  # chunks of this file version (lets sync verify a file is complete)
    char_start: int  # span in the file's extracted text (elements joined by "\n\n")
    char_end: int
    page_numbers: list[int] = field(default_factory=list)
    section: str = ""  # nearest title/heading above the chunk
    element_types: list[str] = field(default_factory=list)
    acl: list[str] = field(default_factory=lambda: ["public"])
    ingested_at: str = ""  # ISO 8601 UTC
    token_count: int = 0
    file_name: str = ""  # base name, for display and filtering
    # Where the passage sits on its pages (formats with a layout, e.g. PDF): [page, x0, y0, x1, y1] per
    # element it overlaps, x/y as fractions of the displayed page, origin top-left. The source viewer
    # highlights these; empty for formats without layout and for collections indexed before boxes existed.
    boxes: list[list[float]] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        """The Qdrant payload (every field but the id)."""
        data = dataclasses.asdict(self)
        data.pop("id")
        return data

    @classmethod
    def from_payload(cls, point_id: str, payload: dict[str, Any]) -> "Chunk":
        """Rebuild a Chunk from a point id and payload, ignoring unknown payload keys."""
        known = _field_names(cls)
        return cls(id=str(point_id), **{k: v for k, v in payload.items() if k in known})

    @property
    def page(self) -> int | None:
        """First page of the chunk, when the format has pages."""
        return self.page_numbers[0] if self.page_numbers else None


@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> frozenset[str]:
    # dataclasses.fields() per call cost more than the rest of decoding a search hit (~200 per query).
    return frozenset(f.name for f in dataclasses.fields(cls))


@dataclass
class SearchFilter:
    """Restrictions applied inside Qdrant to every retrieval leg (never after the fact).

    `acl`: labels the caller holds; a chunk is visible when it carries at least one of them.
    An empty list means the caller holds no label and sees nothing.
    """

    acl: list[str] = field(default_factory=lambda: ["public"])
    file_paths: list[str] | None = None
    file_types: list[str] | None = None
    path_prefix: str | None = None
    ingested_after: str | None = None  # ISO 8601, inclusive
    ingested_before: str | None = None  # ISO 8601, exclusive


@dataclass
class Hit:
    """One retrieved chunk and why it came back: per-leg ranks (1-based) and scores."""

    chunk: Chunk
    score: float  # the score that ordered the final list in this mode
    dense_rank: int | None = None
    dense_score: float | None = None
    bm25_rank: int | None = None
    bm25_score: float | None = None
    fused_rank: int | None = None
    fused_score: float | None = None
    rerank_score: float | None = None
    score_kind: ScoreKind = ScoreKind.UNKNOWN  # what `score` measures (set by the retriever)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk.id,
            "score": self.score,
            "score_kind": self.score_kind.value,
            "dense_rank": self.dense_rank,
            "dense_score": self.dense_score,
            "bm25_rank": self.bm25_rank,
            "bm25_score": self.bm25_score,
            "fused_rank": self.fused_rank,
            "fused_score": self.fused_score,
            "rerank_score": self.rerank_score,
            "file": self.chunk.file_path,
            "file_name": self.chunk.file_name,
            "page": self.chunk.page,
            "pages": self.chunk.page_numbers,
            "section": self.chunk.section,
            "char_start": self.chunk.char_start,
            "char_end": self.chunk.char_end,
            "text": self.chunk.text,
        }


@dataclass
class SearchResult:
    """The output of one retrieval: ordered hits plus per-stage timings in milliseconds."""

    query: str
    mode: Mode | str
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "mode": str(self.mode),
            "timings_ms": self.timings_ms,
            "results": [h.to_dict() for h in self.hits],
        }


@dataclass
class Evidence:
    """A passage admitted by the evidence gate, numbered [n] for the prompt and citations."""

    number: int
    hit: Hit

    @property
    def chunk(self) -> Chunk:
        return self.hit.chunk

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, **self.hit.to_dict()}


@dataclass
class Citation:
    """A validated citation: it points at allow-listed evidence and quotes it."""

    number: int
    chunk_id: str
    file: str
    page: int | None
    quote: str  # the part of the passage the cited sentence rests on (or the passage)
    passage: str  # the whole evidence passage
    section: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SentenceSupport:
    """One answer sentence and the evidence numbers it cites."""

    text: str
    citations: list[int]
    supported: bool


@dataclass
class Answer:
    """The final answer: text with [n] markers, validated citations, and the evidence behind it."""

    question: str
    text: str
    citations: list[Citation]
    evidence: list[Evidence]
    abstained: bool
    related: list[Hit] = field(default_factory=list)  # shown as "related, not sufficient" on abstention
    sentences: list[SentenceSupport] = field(default_factory=list)
    removed_sentences: list[str] = field(default_factory=list)  # dropped by strict mode
    dropped_citations: list[str] = field(default_factory=list)  # out-of-allow-list or malformed markers
    provider: str = "extractive"
    error: str | None = None  # LLM failure message; evidence is still returned
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The query actually searched (the question itself, or a follow-up made standalone: rag.conversation) and
    # how it was obtained ({"method": "none"|"rule"|"llm", "rewritten", "reason", ...}), for the UI/API/CLI to show.
    searched_query: str = ""
    query_rewrite: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "provider": self.provider,
            "error": self.error,
            "citations": [c.to_dict() for c in self.citations],
            "evidence": [e.to_dict() for e in self.evidence],
            "related": [h.to_dict() for h in self.related],
            "sentences": [dataclasses.asdict(s) for s in self.sentences],
            "removed_sentences": self.removed_sentences,
            "dropped_citations": self.dropped_citations,
            "timings_ms": self.timings_ms,
            "searched_query": self.searched_query or self.question,
            "query_rewrite": self.query_rewrite,
        }


TokenCallback = Callable[[str], None]


@runtime_checkable
class Answerer(Protocol):
    """Turns a question and its gated evidence into an Answer (LLM or offline; see rag.answering)."""

    provider: str

    def answer(self, question: str, evidence: list[Evidence], on_token: TokenCallback | None = None,
               related: list[Hit] | None = None) -> Answer:
        """Answer from `evidence` only, streaming text to `on_token`; abstain listing `related` when it cannot."""
        ...
