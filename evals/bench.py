"""`rag bench`: speed of the product, measured in one run on this machine, with ratios to reference points.

Four parts (each a function returning a JSON-able dict):
1. `bench_ingest`   end-to-end `Pipeline.ingest` chunks/s on SQuAD docs vs raw `model.encode` of the same
                    chunk texts with the same model and batch size (the model-bound limit), plus where the
                    rest of the time goes (parse, chunk, embed, bm25, upsert, cleanup).
2. `bench_query`    p50/p95 per stage (embed, search, fuse, rerank, total) for `hybrid` and `rerank` over
                    SQuAD questions, on the ingested chunks padded with synthetic chunks to 10k, and the
                    share of the total that is not model inference.
3. `bench_baseline` the hand-written LangChain recipe (evals/langchain_baseline.py) vs ours: nDCG@10 and
                    latency on Cranfield (BEIR, one document per record), and latency at 100k synthetic chunks.
4. `bench_scale`    BM25 / dense / hybrid leg latency, build time and memory at growing sizes for Qdrant
                    Edge (EdgeStore), qdrant-client local mode (ServerStore ":memory:", until it stops being
                    usable) and a Qdrant server when RAG_QDRANT_URL is set.

Synthetic chunks draw words from the unigram distribution of the real SQuAD + Cranfield text (so term
frequencies are Zipfian like real text) and carry random unit vectors; queries are real SQuAD questions.
`--json` prints one JSON object on stdout; the Markdown report goes to `--out` or stderr.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from rag.config import Settings
from rag.errors import ConfigError, RagError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = [10_000, 100_000]
QUICK_SIZES = [2_000]
UPSERT_BATCH = 2_000
PUBLIC = ["public"]


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """Sizes and query counts of one run. `quick()` is the smoke-test variant."""

    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    ingest_max_kb: int = 200  # SQuAD docs, smallest first, until this much text
    ingest_max_chars: int | None = None  # smoke runs: ingest only the first N characters of the first doc
    query_pad_to: int = 10_000  # part 2 collection size (real chunks + synthetic filler)
    hybrid_queries: int = 100
    rerank_queries: int = 30
    cranfield_queries: int | None = None  # None = all judged queries
    cranfield_rerank_queries: int | None = 40  # rerank costs ~30 cross-encoder pairs per query; None = all
    cranfield_docs: int | None = None  # None = the whole corpus
    baseline_scale_size: int = 100_000
    baseline_scale_queries: int = 20
    scale_queries: int = 100
    scale_unoptimized_queries: int = 20
    local_mode_queries: int = 5
    local_mode_max_p50_s: float = 1.0  # qdrant-client local mode stops at the size predicted past this
    optimize_timeout_note_s: float = 600.0
    quick: bool = False

    @classmethod
    def quick_config(cls, sizes: list[int] | None = None) -> "BenchConfig":
        s = sizes or list(QUICK_SIZES)
        return cls(sizes=s, ingest_max_kb=18, ingest_max_chars=6000, query_pad_to=500, hybrid_queries=5,
                   rerank_queries=2, cranfield_queries=5, cranfield_rerank_queries=2, cranfield_docs=60,
                   baseline_scale_size=s[0], baseline_scale_queries=2, scale_queries=10, scale_unoptimized_queries=3,
                   local_mode_queries=2, quick=True)


def evaldata_dir() -> Path:
    """../shared/evaldata beside the repo, or $RAG_EVALDATA."""
    return Path(os.environ.get("RAG_EVALDATA", REPO_ROOT.parent / "shared" / "evaldata")).resolve()


def parse_sizes(text: str | None) -> list[int] | None:
    """'10k,100k,1M' or '10000,100000' -> [10000, 100000, 1000000]; ConfigError on anything else."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = 1
        if part[-1] in "km":
            mult = 1_000 if part[-1] == "k" else 1_000_000
            part = part[:-1]
        try:
            value = int(float(part) * mult)
        except ValueError:
            raise ConfigError(f"--sizes: {text!r} is not a list of sizes; use e.g. 10k,100k,1M") from None
        if value <= 0:
            raise ConfigError(f"--sizes: sizes must be positive, got {value}")
        out.append(value)
    return sorted(set(out)) or None


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


class _Progress:
    """Progress lines on stderr with elapsed time (the bench is long; silence looks like a hang)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[bench {time.perf_counter() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)


def stats_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean of millisecond values, rounded; empty input gives zeros with n=0."""
    if not len(values):
        return {"n": 0, "p50": 0.0, "p95": 0.0, "mean": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": int(arr.size), "p50": round(float(np.percentile(arr, 50)), 3),
            "p95": round(float(np.percentile(arr, 95)), 3), "mean": round(float(arr.mean()), 3)}


def rss_mb() -> float:
    """Resident set size of this process in MB (psutil, else /proc)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except ImportError:  # pragma: no cover - psutil ships with the dev environment
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _uuid(text: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, text))


def squad_questions(squad_dir: Path, docs: set[str] | None = None) -> list[dict[str, Any]]:
    """SQuAD questions (answerable first, file order), optionally only those about `docs` (file names)."""
    rows = [json.loads(line) for line in (squad_dir / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    if docs is not None:
        rows = [r for r in rows if r["doc"] in docs]
    return [r for r in rows if not r["is_impossible"]] + [r for r in rows if r["is_impossible"]]


# --------------------------------------------------------------------------------------------------
# synthetic corpus
# --------------------------------------------------------------------------------------------------

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


@dataclass
class SyntheticCorpus:
    texts: list[str]
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def synthetic_points(corpus: SyntheticCorpus, encoder: Any, start: int, stop: int, prefix: str = "synthetic"):
    """StoredPoints for corpus[start:stop]: full Chunk payloads (as ingest writes them), BM25 via `encoder`."""
    from rag.models import Chunk
    from rag.store import StoredPoint

    points = []
    for i in range(start, stop):
        text = corpus.texts[i]
        file_no = i // 20  # 20 chunks per synthetic "file", like a mid-sized document
        path = f"/bench/{prefix}/file_{file_no:07d}.md"
        chunk = Chunk(id=_uuid(f"{prefix}:{i}"), text=text, file_path=path, file_hash=f"{file_no:064x}", file_type="md",
                      chunk_index=i % 20, chunk_count=20, char_start=0, char_end=len(text), section="",
                      element_types=["NarrativeText"], acl=list(PUBLIC), ingested_at="2024-01-01T00:00:00+00:00",
                      token_count=0, file_name=f"file_{file_no:07d}.md")
        points.append(StoredPoint(id=chunk.id, dense=corpus.vectors[i].tolist(), sparse=encoder.encode_document(text),
                                  payload=chunk.to_payload()))
    return points


def fill_store(store: Any, corpus: SyntheticCorpus, encoder: Any, prefix: str = "synthetic",
               progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Bulk-upsert a synthetic corpus in big batches; returns seconds spent encoding BM25 vs upserting."""
    encode_s = upsert_s = 0.0
    n = len(corpus)
    for start in range(0, n, UPSERT_BATCH):
        t0 = time.perf_counter()
        points = synthetic_points(corpus, encoder, start, min(n, start + UPSERT_BATCH), prefix)
        t1 = time.perf_counter()
        store.upsert(points)
        t2 = time.perf_counter()
        encode_s += t1 - t0
        upsert_s += t2 - t1
        if progress and (start // UPSERT_BATCH) % 10 == 9:
            progress(f"  {start + len(points):,}/{n:,} points")
    return {"bm25_encode_s": round(encode_s, 2), "upsert_s": round(upsert_s, 2),
            "upsert_points_per_s": round(n / max(upsert_s, 1e-9), 1)}


def _collection_info(name: str, embedder_name: str, dim: int, settings: Settings, avg_len: float) -> Any:
    from rag.store import CollectionInfo

    return CollectionInfo(name=name, embed_model=embedder_name, dimension=dim, bm25_k1=settings.bm25_k1,
                          bm25_b=settings.bm25_b, bm25_avg_doc_len=max(1.0, avg_len), bm25_language=settings.bm25_language)


def _avg_bm25_len(encoder_factory: Callable[[], Any], texts: Sequence[str]) -> float:
    probe = encoder_factory()
    sample = texts[:2000]
    return sum(len(probe.tokenize(t)) for t in sample) / max(1, len(sample))


# --------------------------------------------------------------------------------------------------
# part 1: ingest
# --------------------------------------------------------------------------------------------------


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


def bench_ingest(settings: Settings, embedder: Any, files: list[Path], workdir: Path,
                 progress: Callable[[str], None]) -> tuple[dict[str, Any], Any]:
    """Part 1. Returns (figures, the Pipeline holding the ingested collection, still open for part 2)."""
    from rag.pipeline import Pipeline

    s = settings.replace(qdrant_path=str(workdir / "ingest_qdrant"), state_dir=str(workdir / "state"),
                         collection="bench_ingest")
    pipe = Pipeline(s, embedder=embedder)
    embedder.embed_passages(["warm up the model and its thread pool"] * 4)
    # unstructured loads its NLP pipeline on first use (seconds): a one-time cost per process, reported
    # apart so the ratio reflects steady-state throughput.
    from ingest.loaders import parse_file

    warm = workdir / "warmup.md"
    warm.write_text("# Warm up\n\nOne paragraph to load the parser.\n", encoding="utf-8")
    t0 = time.perf_counter()
    parse_file(warm, s)
    parser_warmup_s = time.perf_counter() - t0
    progress(f"ingest: Pipeline.ingest of {len(files)} SQuAD docs ({sum(f.stat().st_size for f in files) // 1024} KB)")
    report = pipe.ingest([str(f) for f in files], progress=False)
    if report.failed:
        raise RagError(f"bench ingest: {report.failed} file(s) failed: {report.failures[:3]}")
    texts = [payload["text"] for _id, payload, _v in pipe.store.iter_payloads(fields=["text"])]
    n = len(texts)
    progress(f"ingest: {n} chunks in {report.seconds:.1f}s; now raw model.encode of the same {n} texts")
    model = embedder.model  # the very same SentenceTransformer the pipeline used (same weights, same settings)
    t0 = time.perf_counter()
    model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False)
    raw_s = time.perf_counter() - t0
    tokens = [embedder.count_tokens(t) for t in texts]
    e2e_cps = n / max(report.seconds, 1e-9)
    raw_cps = n / max(raw_s, 1e-9)
    timings = dict(report.timings_s)
    figures = {
        "dataset": "squad/docs",
        "files": [f.name for f in files],
        "kb": round(sum(f.stat().st_size for f in files) / 1024, 1),
        "chunks": n,
        "mean_tokens_per_chunk": round(float(np.mean(tokens)), 1) if tokens else 0.0,
        "embed_model": embedder.model_name,
        "batch_size": embedder.batch_size,
        "end_to_end_s": round(report.seconds, 2),
        "end_to_end_chunks_per_s": round(e2e_cps, 2),
        "model_bound_s": round(raw_s, 2),
        "model_bound_chunks_per_s": round(raw_cps, 2),
        "ratio_to_model_bound": _ratio(e2e_cps, raw_cps),
        "parser_warmup_s": round(parser_warmup_s, 2),
        "timings_s": timings,
        # parse and chunk run in a worker thread, overlapped with embedding; the rest is serial.
        "share_of_end_to_end": {k: round(v / max(report.seconds, 1e-9), 3) for k, v in timings.items()},
        "unaccounted_s": round(report.seconds - sum(v for k, v in timings.items() if k not in ("parse", "chunk")), 2),
    }
    return figures, pipe


# --------------------------------------------------------------------------------------------------
# part 2: query stages
# --------------------------------------------------------------------------------------------------


def pad_collection(store: Any, vocab: Vocabulary, target: int, dim: int, rng: np.random.Generator,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """Add synthetic chunks until the collection holds `target` points, then optimize it."""
    from rag.retriever import bm25_encoder_for

    have = store.count(None)
    extra = max(0, target - have)
    out: dict[str, Any] = {"real_chunks": have, "synthetic_chunks": extra}
    if extra:
        progress(f"query: padding the collection with {extra:,} synthetic chunks to {target:,}")
        corpus = SyntheticCorpus(vocab.sample_texts(extra, rng), random_unit_vectors(extra, dim, rng))
        out.update(fill_store(store, corpus, bm25_encoder_for(store.info()), prefix="filler"))
    t0 = time.perf_counter()
    store.optimize()
    out["optimize_s"] = round(time.perf_counter() - t0, 2)
    return out


def bench_query(pipe: Any, questions: list[str], modes: dict[str, int], progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 2: per-stage p50/p95 for each mode (mode -> number of questions) through Pipeline.search."""
    out: dict[str, Any] = {}
    for mode, n in modes.items():
        qs = questions[:n]
        if not qs:
            continue
        for q in qs[:2]:  # warm-up: first calls pay for lazy loads and allocator growth
            pipe.search(q, mode=mode)
        progress(f"query: {len(qs)} questions in {mode} mode")
        stages: dict[str, list[float]] = {}
        wall: list[float] = []
        for q in qs:
            t0 = time.perf_counter()
            result = pipe.search(q, mode=mode)
            wall.append(_ms_since(t0))
            for key, value in result.timings_ms.items():
                stages.setdefault(key, []).append(float(value))
        total = np.asarray(stages.get("total", wall))
        inference = np.asarray(stages.get("embed", [0.0] * len(qs))) + np.asarray(stages.get("rerank", [0.0] * len(qs)))
        non_inf = total - inference
        out[mode] = {
            "queries": len(qs),
            "stages_ms": {k: stats_ms(v) for k, v in stages.items()},
            "wall_ms": stats_ms(wall),
            "non_inference_ms": stats_ms(non_inf.tolist()),
            # Share of summed query time that is not embed or rerank (the model calls). "embed" also
            # holds the BM25 query tokenization, so this slightly under-counts non-inference work.
            "non_inference_share": round(float(non_inf.sum() / max(total.sum(), 1e-9)), 4),
        }
    return out


# --------------------------------------------------------------------------------------------------
# part 3: LangChain baseline
# --------------------------------------------------------------------------------------------------


def _ndcg(ranked: list[str], qrels: dict[str, int], k: int = 10) -> float:
    from evals.metrics import ndcg_at_k

    return ndcg_at_k(ranked, qrels, k)


def bench_baseline_cranfield(settings: Settings, embedder: Any, reranker: Any, cfg: BenchConfig, workdir: Path,
                             progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 3a: our hybrid/rerank vs the LangChain recipe on Cranfield: nDCG@10 and latency."""
    from evals.datasets import load_beir
    from evals.langchain_baseline import LangChainHybridRecipe, SentenceTransformerEmbeddings
    from rag.lexical import BM25Encoder
    from rag.models import Chunk
    from rag.retriever import HybridRetriever
    from rag.store import EdgeStore, StoredPoint

    ds = load_beir(evaldata_dir() / "beir-cranfield")
    qids = sorted(ds.queries, key=lambda q: (len(q), q))
    if cfg.cranfield_queries:
        qids = qids[: cfg.cranfield_queries]
    doc_ids = list(ds.corpus)
    if cfg.cranfield_docs and cfg.cranfield_docs < len(doc_ids):
        judged = [d for q in qids for d in ds.qrels.get(q, {})]
        keep = list(dict.fromkeys([d for d in judged if d in ds.corpus] + doc_ids))[: cfg.cranfield_docs]
        doc_ids = keep
    texts = [((ds.corpus[d].get("title") or "").strip() + "\n" + ds.corpus[d].get("text", "")).strip() for d in doc_ids]

    progress(f"baseline: embedding {len(texts)} Cranfield docs once (shared by both systems)")
    t0 = time.perf_counter()
    vectors = embedder.embed_passages(texts)
    embed_corpus_s = time.perf_counter() - t0

    # Ours: one point per record, through EdgeStore and HybridRetriever (the product's query path).
    def make_encoder(avg: float = 100.0) -> BM25Encoder:
        return BM25Encoder(settings.bm25_k1, settings.bm25_b, avg, settings.bm25_language)

    store = EdgeStore(workdir / "cranfield_qdrant", "cranfield")
    avg_len = _avg_bm25_len(make_encoder, texts)
    store.create(_collection_info("cranfield", embedder.model_name, embedder.dimension, settings, avg_len))
    enc = make_encoder(avg_len)
    t0 = time.perf_counter()
    points = []
    for d, text, vec in zip(doc_ids, texts, vectors):
        chunk = Chunk(id=_uuid(f"cranfield:{d}"), text=text, file_path=f"/bench/cranfield/{d}", file_hash="0" * 64,
                      file_type="txt", chunk_index=0, chunk_count=1, char_start=0, char_end=len(text),
                      acl=list(PUBLIC), file_name=d)
        points.append(StoredPoint.from_chunk(chunk, vec, enc.encode_document(text)))
    for i in range(0, len(points), UPSERT_BATCH):
        store.upsert(points[i:i + UPSERT_BATCH])
    store.optimize()
    ours_build_s = time.perf_counter() - t0
    retriever = HybridRetriever(store, embedder, None, reranker, settings)

    lc_emb = SentenceTransformerEmbeddings(embedder.model, batch_size=embedder.batch_size,
                                           query_instruction=settings.resolved_query_instruction(),
                                           precomputed=dict(zip(texts, vectors)))
    # The same cross-encoder object: a freshly loaded untrained head would differ from ours.
    cross_encoder = getattr(reranker, "_model", None) if reranker is not None else None
    recipe = LangChainHybridRecipe(texts, doc_ids, lc_emb, cross_encoder, leg_k=settings.leg_limit,
                                   rerank_top_m=settings.rerank_top_m, rerank_batch_size=settings.rerank_batch_size,
                                   dimension=embedder.dimension)

    modes = ["hybrid"] + (["rerank"] if reranker is not None else [])
    out: dict[str, Any] = {"dataset": "beir-cranfield", "docs": len(texts), "queries": len(qids),
                           "corpus_embed_s": round(embed_corpus_s, 2), "ours_build_s": round(ours_build_s, 2),
                           "langchain_build_s": {k: round(v, 2) for k, v in recipe.build_seconds.items()},
                           "relevance": "BEIR qrels (graded), nDCG@10 via evals.metrics.ndcg_at_k"}
    warm = ds.queries[qids[0]]
    retriever.retrieve(warm, k=10, mode="hybrid")
    recipe.query(warm, rerank=False)
    for mode in modes:
        mode_qids = qids[: cfg.cranfield_rerank_queries] if mode == "rerank" and cfg.cranfield_rerank_queries else qids
        progress(f"baseline: Cranfield {len(mode_qids)} queries, {mode}, ours and LangChain")
        ours_ms, lc_ms, ours_ndcg, lc_ndcg = [], [], [], []
        for qid in mode_qids:
            q = ds.queries[qid]
            t0 = time.perf_counter()
            res = retriever.retrieve(q, k=10, mode=mode, flt=SearchFilterPublic())
            ours_ms.append(_ms_since(t0))
            ours_ndcg.append(_ndcg([h.chunk.file_name for h in res.hits], ds.qrels[qid]))
            t0 = time.perf_counter()
            lc = recipe.query(q, k=10, rerank=(mode == "rerank"))
            lc_ms.append(_ms_since(t0))
            lc_ndcg.append(_ndcg(lc.ids, ds.qrels[qid]))
        o, l = stats_ms(ours_ms), stats_ms(lc_ms)
        out[mode] = {
            "queries": len(mode_qids),
            "ours": {"ndcg@10": round(float(np.mean(ours_ndcg)), 4), "latency_ms": o},
            "langchain": {"ndcg@10": round(float(np.mean(lc_ndcg)), 4), "latency_ms": l},
            "ndcg_delta": round(float(np.mean(ours_ndcg) - np.mean(lc_ndcg)), 4),
            "p50_speedup": _ratio(l["p50"], o["p50"]),
            "p95_speedup": _ratio(l["p95"], o["p95"]),
        }
    recipe.close()
    store.drop()
    store.close()
    return out


def SearchFilterPublic() -> Any:
    """The filter the product applies by default (callers hold the 'public' label)."""
    from rag.models import SearchFilter

    return SearchFilter(acl=list(PUBLIC))


def bench_baseline_at_scale(settings: Settings, embedder: Any, reranker: Any, store: Any, corpus: SyntheticCorpus,
                            questions: list[str], progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 3b: latency of ours vs the LangChain recipe over the same synthetic corpus (query embedding and
    reranking run the real models; corpus vectors are the synthetic ones, given to both)."""
    from evals.langchain_baseline import LangChainHybridRecipe, SentenceTransformerEmbeddings
    from rag.retriever import HybridRetriever

    n = len(corpus)
    ids = [str(i) for i in range(n)]
    progress(f"baseline: building the LangChain recipe over {n:,} synthetic chunks (rank_bm25 + qdrant local mode)")
    rss0 = rss_mb()
    lc_emb = SentenceTransformerEmbeddings(embedder.model, batch_size=embedder.batch_size,
                                           query_instruction=settings.resolved_query_instruction(),
                                           precomputed=dict(zip(corpus.texts, corpus.vectors)))
    cross_encoder = getattr(reranker, "_model", None) if reranker is not None else None
    recipe = LangChainHybridRecipe(corpus.texts, ids, lc_emb, cross_encoder, leg_k=settings.leg_limit,
                                   rerank_top_m=settings.rerank_top_m, rerank_batch_size=settings.rerank_batch_size,
                                   dimension=embedder.dimension)
    lc_rss = rss_mb() - rss0
    retriever = HybridRetriever(store, embedder, None, reranker, settings)
    out: dict[str, Any] = {"chunks": n, "queries": len(questions),
                           "langchain_build_s": {k: round(v, 2) for k, v in recipe.build_seconds.items()},
                           "langchain_rss_delta_mb": round(lc_rss, 1)}
    modes = ["hybrid"] + (["rerank"] if reranker is not None else [])
    retriever.retrieve(questions[0], k=10, mode="hybrid")
    for mode in modes:
        progress(f"baseline: {len(questions)} queries at {n:,} chunks, {mode}, ours and LangChain")
        ours_ms, lc_ms = [], []
        lc_stages: dict[str, list[float]] = {}
        ours_stages: dict[str, list[float]] = {}
        for q in questions:
            t0 = time.perf_counter()
            res = retriever.retrieve(q, k=10, mode=mode, flt=SearchFilterPublic())
            ours_ms.append(_ms_since(t0))
            for k, v in res.timings_ms.items():
                ours_stages.setdefault(k, []).append(v)
            t0 = time.perf_counter()
            lc = recipe.query(q, k=10, rerank=(mode == "rerank"))
            lc_ms.append(_ms_since(t0))
            for k, v in lc.timings_ms.items():
                lc_stages.setdefault(k, []).append(v)
        o, l = stats_ms(ours_ms), stats_ms(lc_ms)
        out[mode] = {
            "ours": {"latency_ms": o, "stages_ms": {k: stats_ms(v) for k, v in ours_stages.items()}},
            "langchain": {"latency_ms": l, "stages_ms": {k: stats_ms(v) for k, v in lc_stages.items()}},
            "p50_speedup": _ratio(l["p50"], o["p50"]),
            "p95_speedup": _ratio(l["p95"], o["p95"]),
        }
    recipe.close()
    del recipe
    gc.collect()
    return out


# --------------------------------------------------------------------------------------------------
# part 4: scale
# --------------------------------------------------------------------------------------------------


@dataclass
class QuerySet:
    dense: list[list[float]]
    sparse: list[Any]


def measure_legs(store: Any, queries: QuerySet, limit: int, rrf_k: int, n: int) -> dict[str, Any]:
    """p50/p95 of the BM25 leg, the dense leg, both legs + RRF (ACL-filtered, as the product queries) and
    both legs unfiltered, each through `store.search`."""
    from rag.fusion import reciprocal_rank_fusion

    flt = SearchFilterPublic()
    n = min(n, len(queries.dense))
    bm25, dense, hybrid, hybrid_nf = [], [], [], []
    store.search(queries.dense[0], queries.sparse[0], flt, limit)  # warm-up
    for i in range(n):
        t0 = time.perf_counter()
        store.search(None, queries.sparse[i], flt, limit)
        bm25.append(_ms_since(t0))
        t0 = time.perf_counter()
        store.search(queries.dense[i], None, flt, limit)
        dense.append(_ms_since(t0))
        t0 = time.perf_counter()
        d, s = store.search(queries.dense[i], queries.sparse[i], flt, limit)
        reciprocal_rank_fusion({"dense": [c.chunk.id for c in d], "bm25": [c.chunk.id for c in s]}, k=rrf_k)
        hybrid.append(_ms_since(t0))
        t0 = time.perf_counter()
        d, s = store.search(queries.dense[i], queries.sparse[i], None, limit)
        reciprocal_rank_fusion({"dense": [c.chunk.id for c in d], "bm25": [c.chunk.id for c in s]}, k=rrf_k)
        hybrid_nf.append(_ms_since(t0))
    return {"queries": n, "bm25_ms": stats_ms(bm25), "dense_ms": stats_ms(dense), "hybrid_ms": stats_ms(hybrid),
            "hybrid_unfiltered_ms": stats_ms(hybrid_nf)}


def build_and_measure(kind: str, store: Any, corpus: SyntheticCorpus, info: Any, encoder: Any, queries: QuerySet,
                      settings: Settings, cfg: BenchConfig, progress: Callable[[str], None],
                      n_queries: int, optimize: bool) -> dict[str, Any]:
    """Create a collection in `store`, bulk-load `corpus`, (optimize), measure legs and memory."""
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    store.create(info)
    fill = fill_store(store, corpus, encoder, progress=progress)
    store.flush()
    out: dict[str, Any] = {"store": kind, "chunks": len(corpus), "load_s": round(time.perf_counter() - t0, 2), **fill}
    if optimize:
        progress(f"scale: {kind} {len(corpus):,}: unoptimized query check, then optimize")
        out["unoptimized"] = measure_legs(store, queries, settings.leg_limit, settings.rrf_k, cfg.scale_unoptimized_queries)
        t0 = time.perf_counter()
        store.optimize()
        out["optimize_s"] = round(time.perf_counter() - t0, 2)
    gc.collect()
    out["rss_delta_mb"] = round(rss_mb() - rss0, 1)
    try:
        out["disk_mb"] = round(store.disk_bytes() / 1e6, 1)
    except Exception:  # a server may not expose its disk usage
        out["disk_mb"] = None
    progress(f"scale: {kind} {len(corpus):,}: measuring {n_queries} queries")
    out.update(measure_legs(store, queries, settings.leg_limit, settings.rrf_k, n_queries))
    return out


def bench_scale(settings: Settings, embedder: Any, reranker: Any, vocab: Vocabulary, cfg: BenchConfig,
                questions: list[str], workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 4 (and 3b at cfg.baseline_scale_size): legs' latency and memory per size per backend."""
    from rag.lexical import BM25Encoder
    from rag.store import EdgeStore, ServerStore

    rng = np.random.default_rng(20240611)
    dim = embedder.dimension
    out: dict[str, Any] = {"sizes": cfg.sizes, "vectors": f"random unit {dim}-dim",
                           "texts": f"Zipfian words from SQuAD+Cranfield ({len(vocab):,} word vocabulary), ~150 words",
                           "edge": [], "qdrant_local": [], "server": [], "baseline_at_scale": None}
    qvecs = random_unit_vectors(len(questions), dim, rng)
    local_skip: str | None = None
    last_local: tuple[int, float] | None = None
    corpus_cache: SyntheticCorpus | None = None
    for size in cfg.sizes:
        progress(f"scale: generating {size:,} synthetic chunks")
        t0 = time.perf_counter()
        # Grow one corpus so smaller sizes are prefixes of larger ones (same text statistics).
        if corpus_cache is None or len(corpus_cache) < size:
            have = 0 if corpus_cache is None else len(corpus_cache)
            extra = SyntheticCorpus(vocab.sample_texts(size - have, rng), random_unit_vectors(size - have, dim, rng))
            corpus_cache = extra if corpus_cache is None else SyntheticCorpus(
                corpus_cache.texts + extra.texts, np.concatenate([corpus_cache.vectors, extra.vectors]))
        corpus = SyntheticCorpus(corpus_cache.texts[:size], corpus_cache.vectors[:size])
        gen_s = time.perf_counter() - t0

        def make_encoder(avg: float = 100.0) -> BM25Encoder:
            return BM25Encoder(settings.bm25_k1, settings.bm25_b, avg, settings.bm25_language)

        avg_len = _avg_bm25_len(make_encoder, corpus.texts)
        encoder = make_encoder(avg_len)
        info = _collection_info("bench_scale", embedder.model_name, dim, settings, avg_len)
        queries = QuerySet([v.tolist() for v in qvecs], [encoder.encode_query(q) for q in questions])

        edge = EdgeStore(workdir / f"scale_{size}", "bench_scale")
        try:
            row = build_and_measure("edge", edge, corpus, info, encoder, queries, settings, cfg, progress,
                                    cfg.scale_queries, optimize=True)
            row["generate_s"] = round(gen_s, 2)
            out["edge"].append(row)
            if size == cfg.baseline_scale_size:
                out["baseline_at_scale"] = bench_baseline_at_scale(
                    settings, embedder, reranker, edge, corpus, questions[: cfg.baseline_scale_queries], progress)
        finally:
            edge.drop()
            edge.close()
        gc.collect()

        # qdrant-client local mode: pure Python; stop before the size where a query would exceed the limit.
        if local_skip is None and last_local is not None:
            prev_size, prev_p50 = last_local
            predicted = prev_p50 * size / prev_size / 1000.0
            if predicted > cfg.local_mode_max_p50_s:
                local_skip = (f"skipped from {size:,} chunks: hybrid p50 was {prev_p50:.0f} ms at {prev_size:,} and grows "
                              f"linearly (predicted {predicted:.1f} s per query > {cfg.local_mode_max_p50_s:.1f} s)")
        if local_skip is None:
            local = ServerStore("bench_scale", location=":memory:")
            try:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # it warns above 20k points; measuring that is the point
                    row = build_and_measure("qdrant_local", local, corpus, info, encoder, queries, settings, cfg,
                                            progress, cfg.local_mode_queries, optimize=False)
                out["qdrant_local"].append(row)
                last_local = (size, row["hybrid_ms"]["p50"])
            finally:
                local.drop()
                local.close()
            gc.collect()
        else:
            out["qdrant_local"].append({"store": "qdrant_local", "chunks": size, "skipped": local_skip})

        if settings.qdrant_url:
            server = ServerStore("rag_bench_scale", url=settings.qdrant_url, api_key=settings.qdrant_api_key)
            try:
                if server.info() is not None:
                    server.drop()
                row = build_and_measure("server", server, corpus, info, encoder, queries, settings, cfg, progress,
                                        cfg.scale_queries, optimize=False)
                out["server"].append(row)
            finally:
                server.drop()
                server.close()
    return out


# --------------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------------


def run_bench(settings: Settings, cfg: BenchConfig, progress: Callable[[str], None] | None = None,
              workdir: Path | None = None, partial_path: Path | None = None,
              parts: Sequence[str] = ("ingest", "query", "baseline", "scale")) -> dict[str, Any]:
    """Run the chosen parts and return one JSON-able dict (see the module docstring).

    `partial_path`: the figures measured so far are rewritten there after each part, so an
    interrupted long run keeps them. "query" needs "ingest" (it queries the ingested collection).
    """
    from rag.embedding import embedder_from_settings
    from rag.rerank import load_reranker

    progress = progress or _Progress()
    started = time.perf_counter()
    evaldata = evaldata_dir()
    squad = evaldata / "squad"
    if not (squad / "docs").is_dir():
        raise ConfigError(f"SQuAD docs not found at {squad / 'docs'}; set RAG_EVALDATA to the evaldata folder")
    own_tmp = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_at_start": list(os.getloadavg())},
        "settings": {k: getattr(settings, k) for k in ("embed_model", "embed_batch_size", "rerank_model",
                                                       "chunk_tokens", "chunk_overlap_tokens", "leg_limit",
                                                       "rerank_top_m", "rrf_k")},
        "config": {"quick": cfg.quick, "sizes": cfg.sizes, "query_pad_to": cfg.query_pad_to,
                   "hybrid_queries": cfg.hybrid_queries, "rerank_queries": cfg.rerank_queries,
                   "baseline_scale_size": cfg.baseline_scale_size},
    }
    try:
        def checkpoint() -> None:
            if partial_path is not None:
                Path(partial_path).write_text(json.dumps(result, default=str), encoding="utf-8")

        progress("loading models")
        t0 = time.perf_counter()
        embedder = embedder_from_settings(settings)
        reranker = load_reranker(settings)
        result["model_load_s"] = round(time.perf_counter() - t0, 2)
        vocab = load_vocabulary(evaldata)
        rng = np.random.default_rng(7)

        files = pick_squad_files(squad / "docs", cfg.ingest_max_kb)
        if "ingest" not in parts:
            files = []
        elif cfg.ingest_max_chars:
            cut = workdir / "ingest_docs"
            cut.mkdir(parents=True, exist_ok=True)
            text = files[0].read_text(encoding="utf-8")[: cfg.ingest_max_chars]
            (cut / files[0].name).write_text(text[: text.rfind("\n\n")] if "\n\n" in text else text, encoding="utf-8")
            files = [cut / files[0].name]
        if files:
            result["ingest"], pipe = bench_ingest(settings, embedder, files, workdir, progress)
            checkpoint()
            try:
                if "query" in parts:
                    result["query"] = {"collection": pad_collection(pipe.store, vocab, cfg.query_pad_to,
                                                                    embedder.dimension, rng, progress)}
                    questions = [r["question"] for r in squad_questions(squad, {f.name for f in files})]
                    modes = {"hybrid": cfg.hybrid_queries}
                    if reranker is not None:
                        modes["rerank"] = cfg.rerank_queries
                    result["query"].update(bench_query(pipe, questions, modes, progress))
                    checkpoint()
            finally:
                pipe.close()

        result["baseline"] = {}
        if "baseline" in parts:
            result["baseline"]["cranfield"] = bench_baseline_cranfield(settings, embedder, reranker, cfg, workdir, progress)
            checkpoint()

        if "scale" in parts:
            all_questions = [r["question"] for r in squad_questions(squad)]
            scale_qs = all_questions[: max(cfg.scale_queries, cfg.baseline_scale_queries)]
            if "baseline" not in parts:
                cfg.baseline_scale_size = -1  # no at-scale comparison either
            result["scale"] = bench_scale(settings, embedder, reranker, vocab, cfg, scale_qs, workdir, progress)
            result["baseline"]["at_scale"] = result["scale"].pop("baseline_at_scale")
            checkpoint()
        result["targets"] = targets(result)
        result["seconds"] = round(time.perf_counter() - started, 1)
        progress(f"done in {result['seconds']:.0f}s")
        return result
    finally:
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured value and whether it is met (None = not measured)."""
    out: dict[str, Any] = {}
    ratio = result.get("ingest", {}).get("ratio_to_model_bound")
    out["ingest_ratio_to_model_bound"] = {"target": ">= 0.85", "value": ratio, "met": None if ratio is None else ratio >= 0.85}
    q = result.get("query", {})
    share = q.get("rerank", {}).get("non_inference_share")
    out["rerank_non_inference_share"] = {"target": "<= 0.10", "at_chunks": q.get("collection", {}).get("real_chunks", 0)
                                         + q.get("collection", {}).get("synthetic_chunks", 0),
                                         "value": share, "met": None if share is None else share <= 0.10}
    base = result.get("baseline", {})
    cran = base.get("cranfield", {})
    scale_base = base.get("at_scale") or {}
    # Both modes are reported: rerank-mode quality only means something with a trained cross-encoder
    # (on machines without the Hub the test cross-encoder has an untrained head), and at scale the
    # shared cross-encoder's inference dominates rerank-mode latency in both systems alike.
    for mode in ("hybrid", "rerank"):
        delta = cran.get(mode, {}).get("ndcg_delta")
        out[f"ndcg_vs_langchain_{mode}"] = {"target": ">= 0 (ours - LangChain)", "mode": mode, "value": delta,
                                            "met": None if delta is None else delta >= -1e-9}
    for mode in ("hybrid", "rerank"):
        speed = scale_base.get(mode, {}).get("p50_speedup")
        out[f"p50_speedup_vs_langchain_{mode}"] = {"target": ">= 2.0", "mode": mode,
                                                   "at_chunks": scale_base.get("chunks"), "value": speed,
                                                   "met": None if speed is None else speed >= 2.0}
    edge = result.get("scale", {}).get("edge", [])
    biggest = max(edge, key=lambda r: r["chunks"]) if edge else None
    p50 = biggest["hybrid_ms"]["p50"] if biggest else None
    out["hybrid_p50_ms_largest_edge"] = {"target": "<= 20 ms at 1,000,000", "at_chunks": biggest["chunks"] if biggest else None,
                                         "value": p50, "met": (p50 <= 20.0) if (biggest and biggest["chunks"] >= 1_000_000) else None}
    return out


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(r: dict[str, Any]) -> str:
    """The human report: one table per part plus the targets."""
    out = [f"# rag bench ({'quick' if r['config']['quick'] else 'default'}; {r['machine']['cpus']} CPUs, "
           f"load {r['machine']['load_avg_at_start'][0]:.1f} at start; {r.get('seconds', 0):.0f} s)", ""]
    ing = r.get("ingest")
    if ing:
        out += ["## 1. Ingest", f"{ing['chunks']} chunks from {len(ing['files'])} SQuAD docs ({ing['kb']} KB), "
                f"{ing['mean_tokens_per_chunk']} tokens/chunk, batch {ing['batch_size']}", "",
                _table(["", "seconds", "chunks/s"],
                       [["end-to-end Pipeline.ingest", ing["end_to_end_s"], ing["end_to_end_chunks_per_s"]],
                        ["raw model.encode (model-bound)", ing["model_bound_s"], ing["model_bound_chunks_per_s"]]]),
                "", f"ratio to model-bound: **{_fmt(ing['ratio_to_model_bound'])}**", "",
                _table(["stage", "seconds", "share of end-to-end"],
                       [[k, v, ing["share_of_end_to_end"].get(k)] for k, v in ing["timings_s"].items()]), ""]
    q = r.get("query")
    if q:
        coll = q["collection"]
        out += ["## 2. Query stages", f"{coll['real_chunks']} real + {coll['synthetic_chunks']} synthetic chunks", ""]
        rows = []
        for mode in ("hybrid", "rerank"):
            if mode in q:
                st = q[mode]["stages_ms"]
                rows.append([mode, q[mode]["queries"]] + [f"{st[s]['p50']:.1f} / {st[s]['p95']:.1f}" if s in st else "–"
                                                          for s in ("embed", "search", "fuse", "rerank", "total")]
                            + [f"{100 * q[mode]['non_inference_share']:.1f}%"])
        out += [_table(["mode", "queries", "embed p50/p95 ms", "search", "fuse", "rerank", "total", "non-inference share"], rows), ""]
    b = r.get("baseline", {})
    if b.get("cranfield"):
        c = b["cranfield"]
        out += ["## 3. LangChain baseline", f"Cranfield: {c['docs']} docs, {c['queries']} queries", ""]
        rows = []
        for mode in ("hybrid", "rerank"):
            if mode in c:
                m = c[mode]
                rows.append([mode, m["ours"]["ndcg@10"], m["langchain"]["ndcg@10"], m["ours"]["latency_ms"]["p50"],
                             m["langchain"]["latency_ms"]["p50"], m["ours"]["latency_ms"]["p95"],
                             m["langchain"]["latency_ms"]["p95"], m["p50_speedup"]])
        out += [_table(["mode", "nDCG@10 ours", "nDCG@10 LC", "p50 ms ours", "p50 ms LC", "p95 ms ours", "p95 ms LC",
                        "p50 speedup"], rows), ""]
    if b.get("at_scale"):
        s = b["at_scale"]
        out += [f"At {s['chunks']:,} synthetic chunks ({s['queries']} queries; LangChain build "
                f"{s['langchain_build_s']}, +{s['langchain_rss_delta_mb']} MB RSS):", ""]
        rows = []
        for mode in ("hybrid", "rerank"):
            if mode in s:
                m = s[mode]
                rows.append([mode, m["ours"]["latency_ms"]["p50"], m["langchain"]["latency_ms"]["p50"],
                             m["ours"]["latency_ms"]["p95"], m["langchain"]["latency_ms"]["p95"], m["p50_speedup"]])
        out += [_table(["mode", "p50 ms ours", "p50 ms LC", "p95 ms ours", "p95 ms LC", "p50 speedup"], rows), ""]
    sc = r.get("scale")
    if sc:
        out += ["## 4. Scale", f"texts: {sc['texts']}; vectors: {sc['vectors']}; leg limit {r['settings']['leg_limit']}; "
                "latencies are store.search (+RRF for hybrid), ACL-filtered unless noted", ""]
        rows = []
        for row in sc["edge"] + sc["qdrant_local"] + sc["server"]:
            if "skipped" in row:
                rows.append([row["store"], row["chunks"], "skipped", "", "", "", "", "", "", row["skipped"]])
                continue
            un = row.get("unoptimized", {}).get("hybrid_ms", {}).get("p50")
            rows.append([row["store"], row["chunks"], f"{row['bm25_ms']['p50']:.1f} / {row['bm25_ms']['p95']:.1f}",
                         f"{row['dense_ms']['p50']:.1f} / {row['dense_ms']['p95']:.1f}",
                         f"{row['hybrid_ms']['p50']:.1f} / {row['hybrid_ms']['p95']:.1f}",
                         f"{row['hybrid_unfiltered_ms']['p50']:.1f}", un, row["rss_delta_mb"], row["disk_mb"],
                         f"load {row['load_s']} s, optimize {row.get('optimize_s', '–')} s"])
        out += [_table(["store", "chunks", "bm25 p50/p95 ms", "dense p50/p95", "hybrid p50/p95", "hybrid unfiltered p50",
                        "hybrid p50 before optimize", "RSS Δ MB", "disk MB", "build"], rows), ""]
    t = r.get("targets")
    if t:
        out += ["## Targets", _table(["target", "wanted", "measured", "met"],
                                      [[k, v["target"], v["value"], {True: "yes", False: "NO", None: "not measured"}[v["met"]]]
                                       for k, v in t.items()]), ""]
    return "\n".join(out)


def main(args: Any, settings: Settings) -> int:
    """Entry point of `rag bench` (args: json, out, sizes, quick)."""
    if log.getEffectiveLevel() > logging.INFO:
        logging.getLogger("evals").setLevel(logging.INFO)
    sizes = parse_sizes(getattr(args, "sizes", None))
    cfg = BenchConfig.quick_config(sizes) if getattr(args, "quick", False) else BenchConfig(sizes=sizes or list(DEFAULT_SIZES))
    if not cfg.quick and cfg.baseline_scale_size not in cfg.sizes:
        cfg.baseline_scale_size = max(s for s in cfg.sizes if s <= cfg.baseline_scale_size) if any(
            s <= cfg.baseline_scale_size for s in cfg.sizes) else cfg.sizes[0]
    partial = Path(args.out).with_suffix(".partial.json") if getattr(args, "out", None) else None
    parts = tuple(p.strip() for p in (getattr(args, "parts", None) or "ingest,query,baseline,scale").split(",") if p.strip())
    unknown = set(parts) - {"ingest", "query", "baseline", "scale"}
    if unknown:
        raise ConfigError(f"--parts: unknown part(s) {', '.join(sorted(unknown))}; use ingest, query, baseline, scale")
    result = run_bench(settings, cfg, partial_path=partial, parts=parts)
    markdown = render_markdown(result)
    if getattr(args, "out", None):
        Path(args.out).write_text(markdown + "\n", encoding="utf-8")
    if getattr(args, "json", False):
        if not getattr(args, "out", None):
            print(markdown, file=sys.stderr)
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        print(markdown)
    return 0
