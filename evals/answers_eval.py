"""`rag eval answers`: the ask pipeline on each question of a document-QA set, and the answer metrics.

Everything goes through `rag.pipeline.Pipeline` (ingest, ask). `evals.judges` is the support function
of the ALCE citation scores and of faithfulness; `evals.relevance` says whether evidence holds the gold
paragraph; `evals.metrics` turns answers into numbers.

Resumable: each finished question is appended to `<out>/answers.partial.jsonl` (flushed and fsynced per
row); a restart skips the ids already there, as long as they were produced with the same answering
config (`config_key`); rows from another config are ignored and recomputed. Without `--out`, answers go
to `<state_dir>/evals/answers-<dataset>-<config_key>/`, so the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from evals import metrics as M
from evals.datasets import DatasetError, DocQAQuestion, dataset_hash, detect_dataset_kind, iter_jsonl, load_doc_qa
from evals.judges import make_judge
from evals.relevance import is_relevant
from evals.runs import (eval_collection_name, ingest_summary, open_pipeline, package_versions, progress_bar, slug,
                        write_results)
from rag.answering.citations import find_markers
from rag.config import Settings
from rag.models import Answer, SearchFilter

log = logging.getLogger(__name__)

PARTIAL_FILE = "answers.partial.jsonl"


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
        "searched_query": answer.searched_query or question.question,  # differs for a condensed follow-up
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
    for _lineno, row in iter_jsonl(path, skip_invalid=True):
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
    judge_fn = make_judge(judge, settings)  # fail on a bad --judge before the long part
    collection = eval_collection_name("docqa", dataset.name, data_hash, settings, extra=str(dataset.docs_dir))
    key = answers_config_key(settings, data_hash)
    # Without --out the folder is named by dataset and config (not a timestamp), so re-running the
    # same command after an interruption resumes instead of starting over.
    out_dir = Path(out) if out else Path(settings.state_dir) / "evals" / f"answers-{slug(dataset.name)}-{key}"
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL_FILE
    done = read_partial(partial, key)
    todo = [q for q in questions if q.id not in done]
    log.info("answers: %d questions, %d already done in %s, %d to run", len(questions),
             len(questions) - len(todo), partial, len(todo))

    ingest: dict[str, Any] = {}
    computed = 0
    if todo:
        pipeline = open_pipeline(settings, collection, embedder=embedder, reranker=reranker)
        try:
            t0 = time.perf_counter()
            ingest = {**ingest_summary(pipeline.ingest([str(dataset.docs_dir)], progress=progress)),
                      "seconds": round(time.perf_counter() - t0, 2)}
            flt = SearchFilter(acl=list(settings.default_acl))
            with partial.open("a", encoding="utf-8") as fh:
                for q in progress_bar(todo, len(todo), "answers", progress):
                    # conversations.jsonl rows carry the earlier user questions: ask as a follow-up would be asked
                    history = [{"role": "user", "content": str(h)} for h in q.raw.get("history") or []]
                    answer = pipeline.ask(q.question, flt=flt, history=history)
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
    return write_results(results, per_question, out_dir, settings, "answers")


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
            cs = M.citation_scores(sents, judge.entails)
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
        "exact_match": M.mean_defined(ems),
        "token_f1": M.mean_defined(f1s),
        "exact_match_answered": M.mean_defined(ems_answered),
        "token_f1_answered": M.mean_defined(f1s_answered),
        "answer_contains_gold": M.mean_defined(contains),
        "gold_in_evidence": M.mean_defined(gold_in_evidence),
        "abstention_precision": abst.precision,
        "abstention_recall": abst.recall,
        "abstention_f1": abst.f1,
        "abstention_counts": abst.to_dict(),
        "citation_validity": M.mean_defined(validity),
        "citations_total": sum(len(r["citations"]) for r in rows),
        "dropped_citation_markers": sum(len(r["dropped_citations"]) for r in rows),
        "citation_recall": M.mean_defined(cit_recall),
        "citation_precision": M.mean_defined(cit_precision),
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
