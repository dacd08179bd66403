"""`rag eval retrieval`: retrieval metrics per mode on a BEIR or document-QA dataset, through the product.

Everything goes through `rag.pipeline.Pipeline` (ingest, search): the eval measures the product, it
never re-implements retrieval. `evals.relevance` decides which retrieved chunk is the gold evidence of
a doc-QA question; `rag.metrics` (re-exported by `evals.metrics`) turns rankings into numbers.

A BEIR corpus is written as one small `.txt` file per record (`<_id>.txt`, title + blank line + text)
under `settings.state_dir/eval_corpora/<collection>/` and ingested through the normal path; a retrieved
chunk maps back to its record through the file name stem. A record that chunking splits counts once, at
its best rank (the metrics de-duplicate rankings).

Conversations: a document-QA question with a `history` (the rows of squad/conversations.jsonl; pass that
file as the dataset) is searched as `rag ask` would search it in that conversation: the query is
`Pipeline.condense_question` (the follow-up rule of rag.conversation with the collection's IDF, or the LLM
condenser when an LLM is configured), computed once per question, and every mode searches that query. Each
row keeps the question as typed and the rewrite; results.json and the report say how many were rewritten.

Determinism: queries run in dataset order, every mode on the same collection, and nothing random is
involved, so the same config and data give the same retrieval numbers (latencies of course vary).
Runs without `--out` go to `<state_dir>/evals/<UTC timestamp>-retrieval/`.

`compare_models` is the harness `rag tune --eval` runs: the same evaluation with the base and the
tuned models (the CLI passes it into `rag.tuning`, which never imports `evals`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from evals import metrics as M
from evals.datasets import BeirDataset, DocQADataset, DocQAQuestion, dataset_hash, detect_dataset_kind, load_beir, load_doc_qa
from evals.relevance import doc_qa_ranking, is_relevant
from evals.runs import eval_collection_name, ingest_summary, open_pipeline, package_versions, progress_bar, write_results
from rag.config import Settings
from rag.errors import ConfigError, RagError
from rag.models import Mode, SearchFilter

log = logging.getLogger(__name__)

MODES = tuple(mode.value for mode in Mode)


class _Query:
    """One evaluable query: id, text, qrels, and how to turn hits into a ranking of unit ids."""

    def __init__(self, qid: str, text: str, rank: Callable[[list[Any]], tuple[list[str], dict[str, int]]],
                 describe: Callable[[Any], dict[str, Any]], history: list[dict[str, str]] | None = None) -> None:
        self.qid = qid
        self.text = text  # what is searched: the question, or the condensed query of a follow-up
        self.question = text  # as typed
        self.rank = rank
        self.describe = describe
        self.history = list(history or [])
        self.rewrite: dict[str, Any] | None = None  # rag.conversation.Rewrite.to_dict() when history was given


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

        queries.append(_Query(q.id, q.question, rank, describe, history=q.history_messages()))
    return queries, skipped


def condense_queries(pipeline: Any, queries: list[_Query], flt: SearchFilter, progress: bool) -> dict[str, Any]:
    """Replace the text of each query that has a history by the query `rag ask` would search
    (`Pipeline.condense_question`: the LLM condenser when configured, else the follow-up rule); returns the
    counts for the report ({} when no query has a history)."""
    with_history = [q for q in queries if q.history]
    if not with_history:
        return {}
    methods: dict[str, int] = {}
    for q in progress_bar(with_history, len(with_history), "condensing follow-ups", progress):
        rewrite = pipeline.condense_question(q.question, q.history, flt=flt)
        q.text = rewrite.query
        q.rewrite = rewrite.to_dict()
        methods[rewrite.method] = methods.get(rewrite.method, 0) + 1
    return {"questions_with_history": len(with_history),
            "rewritten": sum(bool(q.rewrite and q.rewrite["rewritten"]) for q in with_history),
            "methods": dict(sorted(methods.items())),
            "condenser": "llm" if pipeline.settings.llm_enabled else "rule"}


def _natural_key(text: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text)) if p)


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """'dense,bm25' -> ['dense', 'bm25'] (duplicates dropped); ConfigError (from `Mode.parse`) for an unknown mode."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = [str(m) for m in parts if m and str(m).strip()]
    if not names:
        raise ConfigError(f"--modes {text!r} names no mode; use a comma-separated list of {', '.join(MODES)}")
    return list(dict.fromkeys(Mode.parse(name, field="--modes").value for name in names))


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
    depth = max(M.RETRIEVAL_DEPTH, k)
    recall_ks = sorted(set(M.DEFAULT_RECALL_KS) | {k})

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

    pipeline = open_pipeline(settings, collection, embedder=embedder, reranker=reranker)
    try:
        t0 = time.perf_counter()
        ingest_report = pipeline.ingest([str(p) for p in ingest_paths], progress=progress)
        ingest_s = time.perf_counter() - t0
        ingest = {**ingest_summary(ingest_report), "seconds": round(ingest_s, 2)}
        if pipeline.store.info() is None:
            raise RagError(f"collection {collection!r}: nothing was indexed from {ingest_paths[0]}; "
                           "check the ingest errors above")
        flt = SearchFilter(acl=list(settings.default_acl))
        conversation = condense_queries(pipeline, queries, flt, progress)
        if conversation:
            dataset_info["conversation"] = conversation
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
        conv = dataset_info.get("conversation")
        if conv:
            how = ("the LLM condenser (falling back to the follow-up rule)" if conv["condenser"] == "llm"
                   else "the follow-up rule of rag.conversation")
            notes.append(f"{conv['questions_with_history']} questions carry a conversation history: each was "
                         f"searched with the condensed query, as `rag ask` does, made by {how}; "
                         f"{conv['rewritten']} were rewritten, the others searched as typed "
                         "(questions.jsonl rows: `query` = searched, `question` = as typed).")
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
    return write_results(results, rows, out, settings, "retrieval")


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
    for q in progress_bar(queries, len(queries), f"retrieval {mode}", progress):
        result = pipeline.search(q.text, k=depth, mode=mode, flt=flt)
        ranked, qrels = q.rank(result.hits)
        qrels_all[q.qid] = qrels
        scores = M.ranking_metrics(ranked, qrels, ndcg_k=k, recall_ks=recall_ks, mrr_k=k)
        per_query[q.qid] = scores
        curves.append(M.recall_curve(ranked, qrels, M.RETRIEVAL_DEPTH))
        timings.append(dict(result.timings_ms))
        relevant = M.relevant_ids(qrels)
        deduped = M.dedupe_ranking(ranked)
        rows.append({
            "qid": q.qid,
            "mode": mode,
            "query": q.text,
            **({"question": q.question, "history": [m["content"] for m in q.history], "rewrite": q.rewrite}
               if q.history else {}),
            "relevant_ranks": [i for i, d in enumerate(deduped, start=1) if d in relevant],
            **q.describe(result.hits),
            "metrics": scores,
            "timings_ms": result.timings_ms,
        })
    means = M.mean_ranking_metrics(per_query, qrels_all, M.metric_names(k, recall_ks))
    curve = [sum(c[i] for c in curves) / len(curves) for i in range(M.RETRIEVAL_DEPTH)] if curves else []
    return {"metrics": means, "latency_ms": M.stage_latencies(timings), "recall_curve": curve,
            "queries": len(per_query)}, rows


def compare_models(dataset_dir: str | Path, base: Settings, tuned: Settings, limit: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """`rag eval retrieval` on a labelled dataset with the base and the tuned models, plus deltas.

    Before: dense and hybrid with the base embedder, and rerank = the TRAINED reranker over the base
    hybrid list (the reranker's own effect). After: dense, hybrid and rerank with both tuned models.
    The shape is `rag.tuning.tune.EvalHarness`'s.
    """
    modes = ("dense", "hybrid", "rerank") if tuned.rerank_enabled else ("dense", "hybrid")
    before = run_retrieval(dataset_dir, base, modes=modes, limit=limit, progress=progress)
    after = run_retrieval(dataset_dir, tuned, modes=modes, limit=limit, progress=progress)
    b = {m: v["metrics"] for m, v in before["retrieval"]["modes"].items()}
    a = {m: v["metrics"] for m, v in after["retrieval"]["modes"].items()}
    # The reranker's own effect: rerank mode against hybrid mode of the same embedder.
    rerank_over_hybrid = {label: round(r["rerank"]["ndcg@10"] - r["hybrid"]["ndcg@10"], 4)
                          for label, r in (("before", b), ("after", a)) if "rerank" in r}
    return {"dataset": str(dataset_dir), "queries": after["dataset"].get("queries_evaluated"),
            "before": b, "after": a, "deltas": M.metric_deltas(b, a), "rerank_over_hybrid_ndcg@10": rerank_over_hybrid,
            "before_collection": before["config"]["collection"], "after_collection": after["config"]["collection"],
            "before_out": before.get("out_dir"), "after_out": after.get("out_dir")}


def tuning_harness(dataset_dir: str | Path, limit: int | None = None,
                   progress: bool = True) -> Callable[[Settings, Settings], dict[str, Any]]:
    """`compare_models` on `dataset_dir`, as the (base, tuned) -> comparison callable `rag tune --eval` takes."""
    return functools.partial(compare_models, dataset_dir, limit=limit, progress=progress)
