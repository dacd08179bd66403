"""Batch evaluation runner behind `rag eval retrieval | answers | compare`.

Everything goes through `rag.pipeline.Pipeline` (ingest, search, ask): the eval measures the product,
it never re-implements retrieval. The pieces it composes:

* `evals.datasets`  loads BEIR and document-QA folders;
* `evals.relevance` decides which retrieved chunk is the gold evidence of a doc-QA question;
* `evals.metrics`   turns rankings and answers into numbers;
* `evals.judges`    is the support function of ALCE citation scores and of faithfulness;
* `evals.report`    writes results.json, report.md, questions.jsonl and plots, and compares two runs.

Collections. Each dataset is indexed into a collection of its own whose name carries a hash of
everything that shapes the index (dataset content, embedding model, chunking, BM25 parameters), so a
re-run reuses it (the folder sync skips unchanged files) and a config change never reads a stale index.
A BEIR corpus is written as one small `.txt` file per record (`<_id>.txt`, title + blank line + text)
under `settings.state_dir/eval_corpora/<collection>/` and ingested through the normal path; a retrieved
chunk maps back to its record through the file name stem. A record that chunking splits counts once, at
its best rank (`evals.metrics` de-duplicates rankings).

Determinism: queries run in dataset order, every mode on the same collection, and nothing random is
involved, so the same config and data give the same retrieval numbers (latencies of course vary).

Resumable answers: each finished question is appended to `<out>/answers.partial.jsonl` (flushed and
fsynced per row); a restart skips the ids already there, as long as they were produced with the same
answering config (`config_key`); rows from another config are ignored and recomputed. Without
`--out`, answers go to `<state_dir>/evals/answers-<dataset>-<config_key>/` (so the same command
resumes); retrieval runs go to `<state_dir>/evals/<UTC timestamp>-retrieval/`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rag.config import Settings
from rag.errors import ConfigError, RagError
from rag.models import Answer, SearchFilter

from evals import metrics as M
from evals.datasets import (
    BeirDataset,
    DatasetError,
    DocQADataset,
    DocQAQuestion,
    dataset_hash,
    detect_dataset_kind,
    load_beir,
    load_doc_qa,
)
from evals.relevance import doc_qa_ranking, is_relevant

log = logging.getLogger(__name__)

MODES = ("dense", "bm25", "hybrid", "rerank")
RETRIEVAL_DEPTH = 100  # results per query, so Recall@100 is meaningful
BASE_RECALL_KS = (1, 5, 10, 100)
PARTIAL_FILE = "answers.partial.jsonl"
# Packages whose versions go into results.json (the numbers depend on them).
KEY_PACKAGES = (
    "torch", "sentence-transformers", "transformers", "qdrant-edge-py", "qdrant-client", "unstructured",
    "langchain-text-splitters", "rank-bm25", "snowballstemmer", "numpy", "openai",
)


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """Python and key package versions (None when a package is not installed)."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    return (slug or "dataset")[:40]


def index_config(settings: Settings) -> dict[str, Any]:
    """The settings that shape an index: a change in any of them needs a new collection."""
    return {
        "embed_model": settings.embed_model,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap_tokens": settings.chunk_overlap_tokens,
        "pdf_strategy": settings.pdf_strategy,
        "bm25_k1": settings.bm25_k1,
        "bm25_b": settings.bm25_b,
        "bm25_language": settings.bm25_language,
        "query_instruction": settings.resolved_query_instruction(),
    }


def eval_collection_name(kind: str, dataset_name: str, data_hash: str, settings: Settings,
                         extra: str = "") -> str:
    """`eval_<kind>-<dataset>_<hash8>`, hash8 over the dataset hash and the index-shaping settings."""
    digest = hashlib.sha256(
        json.dumps({"data": data_hash, "index": index_config(settings), "extra": extra}, sort_keys=True).encode()
    ).hexdigest()[:8]
    return f"eval_{kind}-{_slug(dataset_name)}_{digest}"


def default_out_dir(settings: Settings, kind: str) -> Path:
    """`<state_dir>/evals/<UTC timestamp>-<kind>` for runs without --out."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(settings.state_dir) / "evals" / f"{stamp}-{kind}"


def _pipeline(settings: Settings, collection: str, embedder: Any = None, reranker: Any = None):
    from rag.pipeline import Pipeline

    return Pipeline(settings.replace(collection=collection), embedder=embedder, reranker=reranker)


def _ingest_summary(report: Any) -> dict[str, Any]:
    """The counts of an IngestReport (whatever its exact fields), for results.json."""
    try:
        data = report.to_dict()
    except Exception:  # noqa: BLE001 - a summary must never fail the eval
        return {}
    data.pop("files", None)
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _tqdm(iterable: Iterable, total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------
# Retrieval
# ------------------------------------------------------------------------------------------------


class _Query:
    """One evaluable query: id, text, qrels, and how to turn hits into a ranking of unit ids."""

    def __init__(self, qid: str, text: str, rank: Callable[[list[Any]], tuple[list[str], dict[str, int]]],
                 describe: Callable[[Any], dict[str, Any]]) -> None:
        self.qid = qid
        self.text = text
        self.rank = rank
        self.describe = describe


def prepare_beir_corpus(dataset: BeirDataset, folder: Path) -> dict[str, str]:
    """Write one `<_id>.txt` per record (title + blank line + text) into `folder`; returns stem -> doc id.

    Files whose content is already right are left untouched. Records with no text at all are skipped
    (nothing to index; such a record cannot be retrieved by any system). Ids that are not safe file
    names are encoded, and the mapping returned is what maps chunks back to ids.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stems: dict[str, str] = {}
    empty = 0
    for doc_id, rec in dataset.corpus.items():
        title, text = rec.get("title", "").strip(), rec.get("text", "").strip()
        body = f"{title}\n\n{text}" if title and text else (title or text)
        if not body:
            empty += 1
            continue
        stem = doc_id if re.fullmatch(r"[A-Za-z0-9._-]{1,120}", doc_id) and not doc_id.startswith(".") \
            else "id-" + hashlib.sha256(doc_id.encode()).hexdigest()[:24]
        stems[stem] = doc_id
        path = folder / f"{stem}.txt"
        data = (body + "\n").encode("utf-8")
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    if empty:
        log.info("%s: %d corpus records have no title or text; not indexed", dataset.name, empty)
    return stems


def _beir_queries(dataset: BeirDataset, stems: dict[str, str], k: int) -> list[_Query]:
    def doc_of(hit: Any) -> str:
        stem = Path(hit.chunk.file_path or hit.chunk.file_name).stem
        return stems.get(stem, f"?{stem}")

    queries = []
    for qid in sorted(dataset.queries, key=_natural_key):
        qrels = dataset.qrels[qid]

        def rank(hits: list[Any], qrels: dict[str, int] = qrels) -> tuple[list[str], dict[str, int]]:
            return [doc_of(h) for h in hits], qrels

        def describe(hits: list[Any], qrels: dict[str, int] = qrels) -> dict[str, Any]:
            docs = M.dedupe_ranking([doc_of(h) for h in hits])
            return {"hits": docs[:k], "relevant": sorted(M.relevant_ids(qrels), key=_natural_key)}

        queries.append(_Query(qid, dataset.queries[qid], rank, describe))
    return queries


def _docqa_queries(dataset: DocQADataset, k: int) -> tuple[list[_Query], dict[str, int]]:
    skipped = {"is_impossible": 0, "no_evidence": 0}
    queries = []
    for q in dataset.questions:
        if q.is_impossible:
            skipped["is_impossible"] += 1
            continue
        if not q.evidence_text.strip():
            skipped["no_evidence"] += 1
            continue

        def rank(hits: list[Any], q: DocQAQuestion = q) -> tuple[list[str], dict[str, int]]:
            ranked, qrels, _ = doc_qa_ranking(q, hits)
            return ranked, qrels

        def describe(hits: list[Any], q: DocQAQuestion = q) -> dict[str, Any]:
            return {
                "gold_doc": q.doc,
                "hits": [{"chunk_id": h.chunk.id, "file": h.chunk.file_name, "relevant": is_relevant(q, h)}
                         for h in hits[:k]],
            }

        queries.append(_Query(q.id, q.question, rank, describe))
    return queries, skipped


def _natural_key(text: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text)) if p)


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """'dense,bm25' -> ['dense', 'bm25']; raises ConfigError for an unknown mode."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    modes = [m.strip().lower() for m in parts if m and m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"--modes {text!r}: unknown mode(s) {', '.join(bad) or '(none)'}; "
                          f"use a comma-separated list of {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def run_retrieval(
    dataset_dir: str | Path,
    settings: Settings,
    modes: Sequence[str] = ("dense", "bm25", "hybrid"),
    k: int = 10,
    limit: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    embedder: Any = None,
    reranker: Any = None,
) -> dict[str, Any]:
    """Evaluate retrieval per mode on a BEIR or document-QA dataset; writes the report into `out`.

    Returns the results dict (also written as results.json). `embedder`/`reranker` may be passed to
    reuse loaded models (tests); otherwise the pipeline loads them from `settings`.
    """
    if k <= 0:
        raise ConfigError(f"--k is {k}; it must be a positive integer")
    modes = parse_modes(modes)
    if "rerank" in modes and not settings.rerank_enabled:
        raise ConfigError("mode 'rerank' needs a cross-encoder but RAG_RERANK_MODEL is 'none'; "
                          "set it to a cross-encoder or drop rerank from --modes")
    started = time.perf_counter()
    root = Path(dataset_dir).resolve()
    kind = detect_dataset_kind(root)
    data_hash = dataset_hash(root)
    depth = max(RETRIEVAL_DEPTH, k)
    recall_ks = sorted(set(BASE_RECALL_KS) | {k})

    dataset_info: dict[str, Any] = {"name": root.name, "path": str(root), "kind": kind, "hash": data_hash}
    if kind == "beir":
        beir = load_beir(root)
        collection = eval_collection_name("beir", beir.name, data_hash, settings)
        corpus_dir = Path(settings.state_dir) / "eval_corpora" / collection
        stems = prepare_beir_corpus(beir, corpus_dir)
        ingest_paths = [corpus_dir]
        queries = _beir_queries(beir, stems, k)
        dataset_info.update(corpus_docs=len(beir.corpus), indexed_docs=len(stems),
                            queries_judged=len(beir.queries), queries_unjudged=len(beir.unjudged_queries))
    else:
        docqa = load_doc_qa(root)
        collection = eval_collection_name("docqa", docqa.name, data_hash, settings, extra=str(docqa.docs_dir))
        ingest_paths = [docqa.docs_dir]
        queries, skipped = _docqa_queries(docqa, k)
        dataset_info.update(layout=docqa.layout, questions=len(docqa.questions),
                            skipped_for_retrieval=skipped)
    if limit is not None:
        queries = queries[: max(0, limit)]
    dataset_info["queries_evaluated"] = len(queries)

    pipeline = _pipeline(settings, collection, embedder=embedder, reranker=reranker)
    try:
        t0 = time.perf_counter()
        ingest_report = pipeline.ingest([str(p) for p in ingest_paths], progress=progress)
        ingest_s = time.perf_counter() - t0
        ingest = {**_ingest_summary(ingest_report), "seconds": round(ingest_s, 2)}
        if pipeline.store.info() is None:
            raise RagError(f"collection {collection!r}: nothing was indexed from {ingest_paths[0]}; "
                           "check the ingest errors above")
        flt = SearchFilter(acl=list(settings.default_acl))
        chunk_depth = depth
        if kind == "beir":
            # Chunking may split a record; ask for enough chunks that the top `depth` *records* are
            # all there after de-duplication (Recall@100 counts 100 records, not 100 chunks).
            per_doc = pipeline.store.count() / max(1, dataset_info["indexed_docs"])
            chunk_depth = int(math.ceil(depth * max(1.0, per_doc) * 1.25))
            dataset_info["chunks_per_doc"] = round(per_doc, 3)
        per_mode: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        for mode in modes:
            per_mode[mode], mode_rows = _eval_mode(pipeline, queries, mode, chunk_depth, k, recall_ks, flt,
                                                   progress)
            rows.extend(mode_rows)
    finally:
        pipeline.close()

    notes = []
    if kind == "beir":
        if dataset_info["indexed_docs"] < dataset_info["corpus_docs"]:
            notes.append(f"{dataset_info['corpus_docs'] - dataset_info['indexed_docs']} corpus records have no "
                         "text and were not indexed (they count as not retrieved).")
        notes.append(f"Each query retrieves {chunk_depth} chunks (records were cut into "
                     f"{dataset_info['chunks_per_doc']} chunks on average); a record counts once, at its best "
                     f"rank, and the metrics read the top {depth} records.")
    else:
        notes.append("Document QA: unanswerable questions are skipped for retrieval; a chunk is relevant when "
                     "it comes from the gold document and overlaps the gold paragraph (evals.relevance).")
        notes.append(f"Each query retrieves {chunk_depth} chunks; the gold evidence counts once, at the best "
                     "rank of a relevant chunk.")
    results = {
        "kind": "retrieval",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset_info,
        "config": {
            **settings.public_dict(),
            "collection": collection,
            "modes": modes,
            "k": k,
            "depth": depth,
            "chunk_depth": chunk_depth,
            "recall_ks": recall_ks,
        },
        "versions": package_versions(),
        "ingest": ingest,
        "retrieval": {"modes": {mode: per_mode[mode] for mode in modes}},
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return _finish(results, rows, out, settings, "retrieval")


def _eval_mode(pipeline: Any, queries: list[_Query], mode: str, depth: int, k: int, recall_ks: list[int],
               flt: SearchFilter, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run every query in one mode; per-query rows plus mean metrics, latency and the recall curve."""
    if queries:  # warm-up (model load, first-call allocations) kept out of the latency numbers
        pipeline.search(queries[0].text, k=depth, mode=mode, flt=flt)
    per_query: dict[str, dict[str, float]] = {}
    curves: list[list[float]] = []
    timings: list[dict[str, float]] = []
    qrels_all: dict[str, dict[str, int]] = {}
    rows = []
    for q in _tqdm(queries, len(queries), f"retrieval {mode}", progress):
        result = pipeline.search(q.text, k=depth, mode=mode, flt=flt)
        ranked, qrels = q.rank(result.hits)
        qrels_all[q.qid] = qrels
        scores = M.ranking_metrics(ranked, qrels, ndcg_k=k, recall_ks=recall_ks, mrr_k=k)
        per_query[q.qid] = scores
        curves.append(M.recall_curve(ranked, qrels, RETRIEVAL_DEPTH))
        timings.append(dict(result.timings_ms))
        relevant = M.relevant_ids(qrels)
        deduped = M.dedupe_ranking(ranked)
        rows.append({
            "qid": q.qid,
            "mode": mode,
            "query": q.text,
            "relevant_ranks": [i for i, d in enumerate(deduped, start=1) if d in relevant],
            **q.describe(result.hits),
            "metrics": scores,
            "timings_ms": result.timings_ms,
        })
    names = list(next(iter(per_query.values())).keys()) if per_query else \
        [f"ndcg@{k}", *[f"recall@{r}" for r in recall_ks], f"mrr@{k}"]
    means = {name: M.mean_over_queries({qid: s[name] for qid, s in per_query.items()}, qrels_all)
             for name in names}
    curve = [sum(c[i] for c in curves) / len(curves) for i in range(RETRIEVAL_DEPTH)] if curves else []
    return {"metrics": means, "latency_ms": M.stage_latencies(timings), "recall_curve": curve,
            "queries": len(per_query)}, rows


# ------------------------------------------------------------------------------------------------
# Answers
# ------------------------------------------------------------------------------------------------


def answers_config_key(settings: Settings, data_hash: str) -> str:
    """Hash of everything that shapes an answer; partial rows from another config are not reused."""
    s = settings.public_dict()
    for volatile in ("qdrant_path", "state_dir", "upload_dir", "ui_host", "ui_port", "collection",
                     "llm_api_key", "qdrant_api_key", "qdrant_url"):
        s.pop(volatile, None)
    return hashlib.sha256(json.dumps({"settings": s, "data": data_hash}, sort_keys=True, default=str)
                          .encode()).hexdigest()[:16]


def strip_markers(text: str) -> str:
    """Answer text without [n] citation markers and the strict-mode removal note (for EM/F1)."""
    from rag.answering.citations import find_markers

    text = re.sub(r"\(\d+ unsupported sentences? (?:was|were) removed\.\)", " ", text or "")
    out, last = [], 0
    for mk in find_markers(text):
        out.append(text[last:mk.start])
        last = mk.end
    out.append(text[last:])
    return " ".join("".join(out).split())


def answer_row(question: DocQAQuestion, answer: Answer, config_key: str) -> dict[str, Any]:
    """Everything later metrics need from one answer, as a JSON-ready row (judges run afterwards)."""
    by_number = {e.number: e for e in answer.evidence}
    return {
        "id": question.id,
        "question": question.question,
        "gold_answers": question.answers,
        "is_impossible": question.is_impossible,
        "gold_doc": question.doc,
        "answer": answer.text,
        "prediction": "" if answer.abstained else strip_markers(answer.text),
        "abstained": answer.abstained,
        "provider": answer.provider,
        "error": answer.error,
        "evidence": [{"number": e.number, "chunk_id": e.chunk.id, "file": e.chunk.file_name,
                      "text": e.chunk.text, "gold": is_relevant(question, e.hit)} for e in answer.evidence],
        "citations": [{"number": c.number, "chunk_id": c.chunk_id,
                       "valid": c.number in by_number and by_number[c.number].chunk.id == c.chunk_id}
                      for c in answer.citations],
        "sentences": [{"text": strip_markers(s.text), "citations": list(s.citations), "supported": s.supported}
                      for s in answer.sentences],
        "dropped_citations": list(answer.dropped_citations),
        "removed_sentences": list(answer.removed_sentences),
        "timings_ms": answer.timings_ms,
        "config_key": config_key,
    }


def read_partial(path: Path, config_key: str) -> dict[str, dict[str, Any]]:
    """Rows already finished with this config, by question id. A torn last line (killed mid-write)
    and rows from another config are ignored."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    other = 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("config_key") != config_key:
                other += 1
                continue
            done[str(row["id"])] = row
    if other:
        log.warning("%s: %d rows were made with another config; they will be recomputed", path, other)
    return done


def _append_row(fh: Any, row: dict[str, Any]) -> None:
    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def run_answers(
    dataset_dir: str | Path,
    settings: Settings,
    limit: int | None = None,
    out: str | Path | None = None,
    judge: str = "lexical",
    progress: bool = True,
    embedder: Any = None,
    reranker: Any = None,
) -> dict[str, Any]:
    """Run the ask pipeline on each question of a document-QA set and score the answers.

    Resumable: rows are appended to `<out>/answers.partial.jsonl` as questions finish, and a re-run
    with the same `out` and config skips them. Returns the results dict (also written to `out`).
    """
    started = time.perf_counter()
    root = Path(dataset_dir).resolve()
    if detect_dataset_kind(root) != "docqa":
        raise DatasetError(f"{root} is a BEIR retrieval set; `rag eval answers` needs a document-QA set "
                           "(questions.jsonl with gold answers and docs/ or files/)")
    dataset = load_doc_qa(root)
    data_hash = dataset_hash(root)
    questions = dataset.questions[: max(0, limit)] if limit is not None else dataset.questions
    judge_fn = _load_judge(judge, settings)  # fail on a bad --judge before the long part
    collection = eval_collection_name("docqa", dataset.name, data_hash, settings, extra=str(dataset.docs_dir))
    key = answers_config_key(settings, data_hash)
    # Without --out the folder is named by dataset and config (not a timestamp), so re-running the
    # same command after an interruption resumes instead of starting over.
    out_dir = Path(out) if out else Path(settings.state_dir) / "evals" / f"answers-{_slug(dataset.name)}-{key}"
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL_FILE
    done = read_partial(partial, key)
    todo = [q for q in questions if q.id not in done]
    log.info("answers: %d questions, %d already done in %s, %d to run", len(questions),
             len(questions) - len(todo), partial, len(todo))

    ingest: dict[str, Any] = {}
    computed = 0
    if todo:
        pipeline = _pipeline(settings, collection, embedder=embedder, reranker=reranker)
        try:
            t0 = time.perf_counter()
            ingest = {**_ingest_summary(pipeline.ingest([str(dataset.docs_dir)], progress=progress)),
                      "seconds": round(time.perf_counter() - t0, 2)}
            flt = SearchFilter(acl=list(settings.default_acl))
            with partial.open("a", encoding="utf-8") as fh:
                for q in _tqdm(todo, len(todo), "answers", progress):
                    answer = pipeline.ask(q.question, flt=flt)
                    row = answer_row(q, answer, key)
                    _append_row(fh, row)
                    done[q.id] = row
                    computed += 1
        finally:
            pipeline.close()

    rows = [done[q.id] for q in questions if q.id in done]
    metrics, per_question = score_answers(rows, judge_fn)
    latency = metrics.pop("latency_ms")
    results = {
        "kind": "answers",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": root.name, "path": str(root), "kind": "docqa", "hash": data_hash,
                    "layout": dataset.layout, "questions": len(dataset.questions),
                    "questions_evaluated": len(rows)},
        "config": {**settings.public_dict(), "collection": collection, "judge": judge, "limit": limit,
                   "config_key": key, "answerer": "llm" if settings.llm_enabled else "extractive"},
        "versions": package_versions(),
        "ingest": ingest,
        "resume": {"reused_rows": len(rows) - computed, "computed_rows": computed, "partial_file": str(partial)},
        "answers": {"metrics": metrics, "latency_ms": latency, "judge": judge_fn.config()},
        "notes": [
            "EM/F1 over answerable questions (an abstention scores 0); *_answered over answered ones only.",
            "Citation recall/precision (ALCE) and faithfulness use the "
            f"{judge!r} judge as the support function, over answered questions.",
        ],
        "seconds": round(time.perf_counter() - started, 2),
    }
    return _finish(results, per_question, out_dir, settings, "answers")


def _load_judge(name: str, settings: Settings) -> Any:
    """The faithfulness judge chosen by --judge, from evals.judges."""
    from evals import judges

    return judges.make_judge(name, settings)


def _entails(judge: Any) -> Callable[[str, str], bool]:
    """judge -> entails(premise, hypothesis) for evals.metrics.citation_scores."""
    return judge.entails


def _faithfulness(judge: Any, question: str, answer: str, passages: list[str]) -> dict[str, Any]:
    """The judge's verdict on the answer against the union of its cited passages (evals.judges:
    share of supported claims for the LLM judge, mean claim score for the others)."""
    return judge.score("\n\n".join(passages), question, answer).to_dict()


def score_answers(rows: list[dict[str, Any]], judge: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Aggregate answer metrics and per-question rows (with per-question scores) from answer rows.

    * EM / token F1 over answerable questions (an abstention predicts "" and scores 0);
      also over the answered ones alone, to separate "wrong" from "declined"; plus
      `answer_contains_gold` (see `contains_gold`);
    * gold_in_evidence: share of answerable questions whose evidence holds the gold paragraph
      (evals.relevance), which separates retrieval misses from answerer misses;
    * abstention precision/recall, positive class = unanswerable (should abstain);
    * citation validity = share of emitted citations inside the allow-list (must be 1.0);
    * ALCE citation recall/precision and faithfulness with `judge` as the support function, over
      answered questions (an abstention makes no claim);
    * latency of the whole ask and of each stage.
    """
    entails = _entails(judge)
    answerable = [r for r in rows if not r["is_impossible"]]
    per_question = []
    ems, f1s, ems_answered, f1s_answered = [], [], [], []
    validity, cit_recall, cit_precision, faith, gold_in_evidence = [], [], [], [], []
    contains: list[float] = []
    for r in rows:
        scores: dict[str, Any] = {}
        if not r["is_impossible"]:
            scores["em"] = M.exact_match(r["prediction"], r["gold_answers"])
            scores["f1"] = M.token_f1(r["prediction"], r["gold_answers"])
            scores["contains_gold"] = contains_gold(r["prediction"], r["gold_answers"])
            contains.append(scores["contains_gold"])
            ems.append(scores["em"])
            f1s.append(scores["f1"])
            if not r["abstained"]:
                ems_answered.append(scores["em"])
                f1s_answered.append(scores["f1"])
            gold_in_evidence.append(float(any(e.get("gold") for e in r["evidence"])))
        cited = [c["chunk_id"] for c in r["citations"]]
        allowed = [e["chunk_id"] for e in r["evidence"]]
        scores["citation_validity"] = M.citation_validity(cited, allowed)
        validity.append(scores["citation_validity"])
        if not r["abstained"] and r["sentences"]:
            passages = {e["number"]: e["text"] for e in r["evidence"]}
            sents = [(s["text"], [passages.get(n) for n in s["citations"]]) for s in r["sentences"]]
            cs = M.citation_scores(sents, entails)
            scores["citation_recall"], scores["citation_precision"] = cs.recall, cs.precision
            cit_recall.append(cs.recall)
            cit_precision.append(cs.precision)
            cited_passages = [passages[n] for n in dict.fromkeys(n for s in r["sentences"] for n in s["citations"])
                              if n in passages]
            verdict = _faithfulness(judge, r["question"], " ".join(s["text"] for s in r["sentences"]),
                                    cited_passages)
            scores["faithfulness"] = verdict["score"]
            scores["faithfulness_claims"] = verdict["claims"]
            faith.append(verdict["score"])
        per_question.append({**{k: v for k, v in r.items() if k != "config_key"}, "scores": scores})

    abst = M.abstention_scores([r["is_impossible"] for r in rows], [r["abstained"] for r in rows])
    metrics = {
        "questions": len(rows),
        "answerable": len(answerable),
        "unanswerable": len(rows) - len(answerable),
        "answered": sum(1 for r in rows if not r["abstained"]),
        "exact_match": _mean(ems),
        "token_f1": _mean(f1s),
        "exact_match_answered": _mean(ems_answered),
        "token_f1_answered": _mean(f1s_answered),
        "answer_contains_gold": _mean(contains),
        "gold_in_evidence": _mean(gold_in_evidence),
        "abstention_precision": abst.precision,
        "abstention_recall": abst.recall,
        "abstention_f1": abst.f1,
        "abstention_counts": abst.to_dict(),
        "citation_validity": M.mean_defined(validity),
        "citations_total": sum(len(r["citations"]) for r in rows),
        "dropped_citation_markers": sum(len(r["dropped_citations"]) for r in rows),
        "citation_recall": _mean(cit_recall),
        "citation_precision": _mean(cit_precision),
        "faithfulness": M.mean_defined(faith),
        "errors": sum(1 for r in rows if r.get("error")),
        "latency_ms": M.stage_latencies(r["timings_ms"] for r in rows if r.get("timings_ms")),
    }
    return metrics, per_question


def contains_gold(prediction: str, gold_answers: Sequence[str]) -> float:
    """1.0 when a SQuAD-normalized gold answer occurs inside the normalized prediction.

    A diagnostic beside EM/F1 for answerers that reply with a whole sentence (the extractive one):
    EM/F1 punish the extra words, this tells whether the right span is in the reply at all.
    """
    pred = f" {M.normalize_answer(prediction)} "
    return float(any(M.normalize_answer(g) and f" {M.normalize_answer(g)} " in pred for g in gold_answers))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------------------------------
# Reports and the CLI entry point
# ------------------------------------------------------------------------------------------------


def _finish(results: dict[str, Any], rows: list[dict[str, Any]], out: str | Path | None, settings: Settings,
            kind: str) -> dict[str, Any]:
    """Write the report folder (results.json, report.md, questions.jsonl, plots) via evals.report."""
    from evals import report

    out_dir = Path(out) if out else default_out_dir(settings, kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    results["out_dir"] = str(out_dir.resolve())
    report.write_report(out_dir, results, rows)
    return results


def compare_deltas(a_dir: str | Path, b_dir: str | Path) -> dict[str, Any]:
    """Numeric B - A deltas of two result folders, for `rag eval compare --json` (the Markdown comes
    from evals.report.compare)."""
    from evals import report

    a, b = report.load_results(a_dir), report.load_results(b_dir)

    def deltas(ma: dict[str, Any], mb: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key in dict.fromkeys([*ma, *mb]):
            va, vb = ma.get(key), mb.get(key)
            if isinstance(va, (dict, list)) or isinstance(vb, (dict, list)):
                continue
            num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
            out[key] = {"a": va, "b": vb, "delta": vb - va if num else None}
        return out

    modes_a = (a.get("retrieval") or {}).get("modes") or {}
    modes_b = (b.get("retrieval") or {}).get("modes") or {}
    return {
        "a": str(a_dir),
        "b": str(b_dir),
        "same_dataset": (a.get("dataset") or {}).get("hash") == (b.get("dataset") or {}).get("hash"),
        "retrieval": {mode: deltas((modes_a.get(mode) or {}).get("metrics") or {},
                                   (modes_b.get(mode) or {}).get("metrics") or {})
                      for mode in dict.fromkeys([*modes_a, *modes_b])},
        "answers": deltas(((a.get("answers") or {}).get("metrics")) or {},
                          ((b.get("answers") or {}).get("metrics")) or {}),
    }


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`rag eval retrieval|answers|compare`. With --json, stdout gets one JSON object only (the
    results, or the deltas for compare); the Markdown report and progress go to stderr."""
    from evals import report

    command = args.eval_command
    as_json = bool(getattr(args, "json", False))
    if command == "compare":
        text = report.compare(args.a, args.b)
        if as_json:
            sys.stdout.write(json.dumps(compare_deltas(args.a, args.b), default=str) + "\n")
            print(text, file=sys.stderr)
        else:
            print(text)
        return 0
    if getattr(args, "limit", None) is not None and args.limit <= 0:
        raise ConfigError(f"--limit is {args.limit}; give a positive number of questions")
    if command == "retrieval":
        results = run_retrieval(args.dataset, settings, modes=parse_modes(args.modes), k=args.k,
                                limit=args.limit, out=args.out, progress=True)
    elif command == "answers":
        results = run_answers(args.dataset, settings, limit=args.limit, out=args.out,
                              judge=getattr(args, "judge", None) or "lexical", progress=True)
    else:  # argparse restricts the choices; keep a clear message anyway
        raise ConfigError(f"unknown eval command {command!r}; use retrieval, answers or compare")

    markdown = report.render_markdown(results)
    where = f"results written to {results['out_dir']}"
    if not args.out:
        where += " (default folder under RAG_STATE_DIR/evals; pass --out DIR to choose)"
    if as_json:
        sys.stdout.write(json.dumps(results, ensure_ascii=False, default=str) + "\n")
        print(markdown, file=sys.stderr)
    else:
        print(markdown)
    print(where, file=sys.stderr)
    return 0
