"""Data generation for `rag bench`: the real SQuAD questions and docs, and synthetic chunks at any size.

Synthetic chunks draw words from the unigram distribution of the real SQuAD + Cranfield text (so term
frequencies are Zipfian like real text) and carry random unit vectors; they are written through the
catalog (`rag.store.catalog.write_chunks`) with full payloads, as ingest writes them.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from evals.bench.measure import PUBLIC
from evals.datasets import iter_jsonl
from rag.config import Settings
from rag.errors import ConfigError
from rag.lexical import SparseVector, term_id
from rag.models import Chunk
from rag.store import CollectionInfo
from rag.store.catalog import write_chunks

UPSERT_BATCH = 2_000
# One synthetic file in RESTRICTED_EVERY also carries this label: a caller holding only it sees ~20% of the
# chunks, the restrictive ACL filter ACORN is for (public callers still see every chunk).
RESTRICTED_LABEL = "team-a"
RESTRICTED_EVERY = 5


def chunk_uuid(text: str) -> str:
    """A stable point id for a bench chunk."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, text))


def squad_questions(squad_dir: Path, docs: set[str] | None = None) -> list[dict[str, Any]]:
    """SQuAD questions (answerable first, file order), optionally only those about `docs` (file names)."""
    rows = [row for _lineno, row in iter_jsonl(squad_dir / "questions.jsonl")]
    if docs is not None:
        rows = [r for r in rows if r["doc"] in docs]
    return [r for r in rows if not r["is_impossible"]] + [r for r in rows if r["is_impossible"]]


def pick_squad_files(docs_dir: Path, max_kb: int) -> list[Path]:
    """Smallest SQuAD docs first until `max_kb` of text (at least one file)."""
    files = sorted(docs_dir.glob("*.md"), key=lambda p: (p.stat().st_size, p.name))
    if not files:
        raise ConfigError(f"no .md files in {docs_dir}; set RAG_EVALDATA to the evaldata folder")
    picked, total = [], 0
    for f in files:
        if picked and total + f.stat().st_size > max_kb * 1024:
            break
        picked.append(f)
        total += f.stat().st_size
    return picked


_WORD_RE = re.compile(r"[a-z]+|[0-9]+")


class Vocabulary:
    """Words and their relative frequencies from real text; sampling them gives Zipfian term statistics."""

    def __init__(self, texts: Iterable[str], min_count: int = 1) -> None:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(_WORD_RE.findall(text.lower()))
        items = [(w, c) for w, c in counts.most_common() if c >= min_count]
        if not items:
            raise ValueError("no words to build a vocabulary from")
        self.words = [w for w, _ in items]
        freq = np.asarray([c for _, c in items], dtype=np.float64)
        self.probs = freq / freq.sum()

    def __len__(self) -> int:
        return len(self.words)

    def sample_texts(self, n: int, rng: np.random.Generator, mean_words: int = 150,
                     min_words: int = 40, max_words: int = 220) -> list[str]:
        """n texts of about `mean_words` words (≈ a 256-token chunk), words drawn by corpus frequency."""
        lengths = np.clip(rng.normal(mean_words, 40, size=n).astype(np.int64), min_words, max_words)
        ids = rng.choice(len(self.words), size=int(lengths.sum()), p=self.probs)
        words = self.words
        out = []
        pos = 0
        for length in lengths.tolist():
            out.append(" ".join([words[i] for i in ids[pos:pos + length].tolist()]))
            pos += length
        return out


def load_vocabulary(evaldata: Path) -> Vocabulary:
    """Vocabulary of the SQuAD docs and the Cranfield corpus (whichever exist)."""
    texts: list[str] = []
    squad_docs = evaldata / "squad" / "docs"
    if squad_docs.is_dir():
        texts += [p.read_text(encoding="utf-8", errors="replace") for p in sorted(squad_docs.glob("*.md"))]
    corpus = evaldata / "beir-cranfield" / "corpus.jsonl"
    if corpus.is_file():
        texts.append(corpus.read_text(encoding="utf-8", errors="replace"))
    if not texts:
        raise ConfigError(f"no SQuAD docs or Cranfield corpus under {evaldata}; set RAG_EVALDATA to the evaldata folder")
    return Vocabulary(texts)


def random_unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """n random L2-normalized float32 vectors (worst case for HNSW: no cluster structure)."""
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs


class TopicVectors:
    """Unit vectors around `topics` random centres (noise of norm ~`spread` per unit centre), like real
    embeddings: a query's nearest chunks are clearly nearer than the rest (top-1 cosine ~0.56, median ~0;
    MiniLM on SQuAD looks alike), where uniformly random 384-dim vectors are all about equally far apart
    (top-1 cosine ~0.2) and no approximate index finds "the" neighbours without scanning most points.
    The same centres serve the corpus and the queries, so a query falls into the corpus's topics."""

    def __init__(self, dim: int, rng: np.random.Generator, topics: int = 1000, spread: float = 1.0) -> None:
        self.dim = dim
        self.spread = spread
        self.centres = random_unit_vectors(topics, dim, rng)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n unit vectors, each near a uniformly chosen centre."""
        out = self.centres[rng.integers(0, len(self.centres), n)]
        out = out + (self.spread / np.sqrt(self.dim)) * rng.standard_normal((n, self.dim), dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out.astype(np.float32, copy=False)


def vector_sampler(kind: str, dim: int, rng: np.random.Generator) -> Callable[[int, np.random.Generator], np.ndarray]:
    """`sample(n, rng)` for the bench's synthetic vectors: "topics" (TopicVectors) or "random" (uniform)."""
    if kind == "topics":
        return TopicVectors(dim, rng).sample
    if kind == "random":
        return lambda n, r: random_unit_vectors(n, dim, r)
    raise ConfigError(f"bench vectors {kind!r}: use topics or random")


@dataclass
class SyntheticCorpus:
    """Texts and their (random) dense vectors, one row per text."""

    texts: list[str]
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def synthetic_chunks(corpus: SyntheticCorpus, start: int, stop: int, prefix: str = "synthetic") -> list[Any]:
    """Chunks for corpus[start:stop] with full payloads, as ingest writes them (20 chunks per synthetic file)."""
    chunks = []
    for i in range(start, stop):
        text = corpus.texts[i]
        file_no = i // 20  # 20 chunks per synthetic "file", like a mid-sized document
        path = f"/bench/{prefix}/file_{file_no:07d}.md"
        chunks.append(Chunk(id=chunk_uuid(f"{prefix}:{i}"), text=text, file_path=path, file_hash=f"{file_no:064x}",
                            file_type="md", chunk_index=i % 20, chunk_count=20, char_start=0, char_end=len(text),
                            section="", element_types=["NarrativeText"],
                            acl=list(PUBLIC) + ([RESTRICTED_LABEL] if file_no % RESTRICTED_EVERY == 0 else []),
                            ingested_at="2024-01-01T00:00:00+00:00", token_count=0, file_name=f"file_{file_no:07d}.md"))
    return chunks


class SyntheticBM25:
    """`encode_document` of `encoder` for synthetic texts (space-joined vocabulary words), memoized per word.

    Gives the very vectors `encoder.encode_document` gives for such texts (each word is one token; the
    stem and its term id are computed once per distinct word instead of once per occurrence), so a
    million-chunk corpus encodes in minutes rather than most of an hour.
    """

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self._token: dict[str, tuple[str, int] | None] = {}

    def encode_document(self, text: str) -> SparseVector:
        memo, enc = self._token, self.encoder
        counts: Counter[tuple[str, int]] = Counter()
        n = 0
        for word in text.split():
            tok = memo.get(word, _UNSEEN)
            if tok is _UNSEEN:
                toks = enc.tokenize(word)
                tok = memo[word] = (toks[0], term_id(toks[0])) if len(toks) == 1 else None
                if len(toks) > 1:  # not a plain vocabulary word: no memo, the encoder's own answer
                    raise ValueError(f"SyntheticBM25: {word!r} is not one token; use the encoder itself")
            if tok is not None:
                counts[tok] += 1
                n += 1
        if not n:
            return SparseVector()
        norm = enc.k1 * (1.0 - enc.b + enc.b * n / enc.avg_doc_len)
        merged: dict[int, float] = {}
        for (_tok, tid), tf in counts.items():  # same formula and collision rule as BM25Encoder
            merged[tid] = merged.get(tid, 0.0) + tf * (enc.k1 + 1.0) / (tf + norm)
        indices = sorted(merged)
        return SparseVector(indices=indices, values=[merged[i] for i in indices])


_UNSEEN = object()


def fill_store(store: Any, corpus: SyntheticCorpus, encoder: Any, prefix: str = "synthetic",
               progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Bulk-upsert a synthetic corpus in big batches; returns seconds spent encoding BM25 vs upserting."""
    encode_s = upsert_s = 0.0
    n = len(corpus)
    fast = SyntheticBM25(encoder) if hasattr(encoder, "tokenize") else encoder
    for start in range(0, n, UPSERT_BATCH):
        stop = min(n, start + UPSERT_BATCH)
        stats = write_chunks(store, synthetic_chunks(corpus, start, stop, prefix), corpus.vectors[start:stop], fast,
                             batch=UPSERT_BATCH)
        encode_s += stats.encode_s
        upsert_s += stats.upsert_s
        if progress and (start // UPSERT_BATCH) % 10 == 9:
            progress(f"  {stop:,}/{n:,} points")
    return {"bm25_encode_s": round(encode_s, 2), "upsert_s": round(upsert_s, 2),
            "upsert_points_per_s": round(n / max(upsert_s, 1e-9), 1)}


def collection_info(name: str, embedder_name: str, dim: int, settings: Settings, avg_len: float) -> CollectionInfo:
    """The CollectionInfo of a bench collection: the settings' BM25 parameters and the measured average length."""
    return CollectionInfo(name=name, embed_model=embedder_name, dimension=dim, bm25_k1=settings.bm25_k1,
                          bm25_b=settings.bm25_b, bm25_avg_doc_len=max(1.0, avg_len), bm25_language=settings.bm25_language)


def avg_bm25_len(encoder_factory: Callable[[], Any], texts: Sequence[str]) -> float:
    """Mean BM25 token count of (up to 2,000 of) `texts`, the average length a BM25 encoder needs."""
    probe = encoder_factory()
    sample = texts[:2000]
    return sum(len(probe.tokenize(t)) for t in sample) / max(1, len(sample))
