"""`rag eval answers`: the ask pipeline on each question of a document-QA set, and the answer metrics.

Everything goes through `rag.pipeline.Pipeline` (ingest, ask). `evals.judges` is the support function
of the ALCE citation scores and of faithfulness; `evals.relevance` says whether evidence holds the gold
paragraph; `evals.metrics` turns answers into numbers.

With the reader answering (or gating an LLM: `reader_gate`), each row also keeps the reader's verdict on its
evidence (best span and best span - no-answer score), and the results hold a curve over the no-answer margin:
EM / F1, answer rate and abstention at each margin, and the margin where the reader still answers
`TARGET_ANSWER_RATE` of the answerable questions (`answer_rates`, `threshold_curve`; evals/reader_eval.py uses
the same functions).

Resumable: each finished question is appended to `<out>/answers.partial.jsonl` (flushed and fsynced per
row); a restart skips the ids already there, as long as they were produced with the same answering
config (`config_key`); rows from another config are ignored and recomputed. Without `--out`, answers go
to `<state_dir>/evals/answers-<dataset>-<config_key>/`, so the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from evals import metrics as M
from evals.datasets import DatasetError, DocQAQuestion, dataset_hash, detect_dataset_kind, iter_jsonl, load_doc_qa
from evals.judges import make_judge
from evals.relevance import is_relevant
from evals.runs import (eval_collection_name, ingest_summary, open_pipeline, package_versions, progress_bar, slug,
                        write_results)
from rag.answering.citations import find_markers
from rag.answering.reader import reader_scores
from rag.config import Settings
from rag.models import Answer, SearchFilter

log = logging.getLogger(__name__)

PARTIAL_FILE = "answers.partial.jsonl"
# No-answer margins of the threshold curve (best span score - no-answer score, in logits).
NO_ANSWER_MARGINS = [round(-4.0 + 0.5 * i, 2) for i in range(29)]  # -4.0 .. 10.0
TARGET_ANSWER_RATE = 0.7


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


def answer_row(question: DocQAQuestion, answer: Answer, config_key: str,
               reader: tuple[float | None, str] | None = None) -> dict[str, Any]:
    """Everything later metrics need from one answer, as a JSON-ready row (judges run afterwards).

    `reader`: the reader's (best span - no-answer score or None when no span, best span) on the answer's
    evidence, when a reader answered or gated (for the threshold curve)."""
    by_number = {e.number: e for e in answer.evidence}
    return {
        "reader_gap": None if reader is None else reader[0],
        "reader_span": None if reader is None else reader[1],
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
    gated = settings.llm_enabled and settings.reader_gate == "on"
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
                    # The reader's verdict on the same evidence (remembered from the ask: no second read).
                    verdict = (reader_scores(settings, answer.searched_query or q.question, answer.evidence)
                               if answer.provider in ("reader", "reader-gate") or gated else None)
                    row = answer_row(q, answer, key, verdict)
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
        "answers": {"metrics": metrics, "latency_ms": latency, "judge": judge_fn.config(),
                    **reader_curve(rows, gated)},
        "notes": [
            "EM/F1 over answerable questions (an abstention scores 0); *_answered over answered ones only.",
            "threshold_curve: the reader's best span alone at each no-answer margin (answer when best span - "
            "no-answer score >= margin); with reader_gate it is the gate's margin (llm_calls_saved).",
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
        "answer_rate": M.mean_defined(float(not r["abstained"]) for r in rows),
        "answer_rate_answerable": M.mean_defined(float(not r["abstained"]) for r in answerable),
        "abstain_rate_unanswerable": M.mean_defined(float(r["abstained"]) for r in rows if r["is_impossible"]),
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


# --------------------------------------------------------------------------------------------
# Answer rates and the curve over the no-answer threshold (shared with evals/reader_eval.py)
# --------------------------------------------------------------------------------------------


def answer_rates(is_impossible: Sequence[bool], golds: Sequence[Sequence[str]], answered: Sequence[bool],
                 predictions: Sequence[str]) -> dict[str, Any]:
    """EM / token F1 on answerable questions (an abstention scores 0; `*_answered` over answered ones), answer
    rate on answerable questions, abstention rate on unanswerable ones, and abstention precision / recall / F1
    (positive class = unanswerable). Parallel sequences, one item per question."""
    f1, em, f1_answered, em_answered = [], [], [], []
    for imp, gold, ans, pred in zip(is_impossible, golds, answered, predictions):
        if imp:
            continue
        f, e = (M.token_f1(pred, gold), M.exact_match(pred, gold)) if ans else (0.0, 0.0)
        f1.append(f)
        em.append(e)
        if ans:
            f1_answered.append(f)
            em_answered.append(e)
    abst = M.abstention_scores(list(is_impossible), [not a for a in answered])
    n_un = sum(1 for imp in is_impossible if imp)

    def r(x: float | None) -> float | None:
        return None if x is None else round(float(x), 4)

    return {
        "f1": r(M.mean_defined(f1)), "em": r(M.mean_defined(em)),
        "f1_answered": r(M.mean_defined(f1_answered)), "em_answered": r(M.mean_defined(em_answered)),
        "answer_rate_answerable": r(len(f1_answered) / len(f1)) if f1 else None,
        "abstain_rate_unanswerable": r(abst.true_pos / n_un) if n_un else None,
        "abstention_precision": r(abst.precision), "abstention_recall": r(abst.recall), "abstention_f1": r(abst.f1),
    }


def threshold_curve(scores: Sequence[float | None], predictions: Sequence[str], is_impossible: Sequence[bool],
                    golds: Sequence[Sequence[str]], thresholds: Iterable[float]) -> list[dict[str, Any]]:
    """`answer_rates` at each threshold: a question is answered (with its prediction) when its score is not
    None and >= the threshold."""
    rows = []
    for t in thresholds:
        answered = [s is not None and s >= t for s in scores]
        rows.append({"threshold": t, **answer_rates(is_impossible, golds, answered,
                                                      [p if a else "" for p, a in zip(predictions, answered)])})
    return rows


def threshold_for_answer_rate(scores: Sequence[float | None], is_impossible: Sequence[bool],
                              target: float = TARGET_ANSWER_RATE) -> float | None:
    """The largest threshold (most abstention) at which a share >= `target` of the answerable questions is
    still answered: the target-th largest score among answerable questions. None when that share cannot be
    reached (too many answerable questions without a score)."""
    ans = sorted((s for s, imp in zip(scores, is_impossible) if not imp and s is not None), reverse=True)
    need = math.ceil(target * sum(1 for imp in is_impossible if not imp))
    if need == 0 or len(ans) < need:
        return None
    return float(ans[need - 1])


def reader_curve(rows: list[dict[str, Any]], gated: bool = False) -> dict[str, Any]:
    """The curve over the reader's no-answer margin from answer rows with `reader_gap` (empty dict when no row
    has one), the point at TARGET_ANSWER_RATE, and with `gated` (reader_gate in front of an LLM) how many LLM
    calls the gate saved on unanswerable questions and skipped wrongly on answerable ones."""
    kept = [r for r in rows if r.get("reader_span") is not None]
    if not kept:
        return {}
    scores = [r["reader_gap"] for r in kept]
    preds = [r["reader_span"] or "" for r in kept]
    imp = [bool(r["is_impossible"]) for r in kept]
    golds = [r["gold_answers"] for r in kept]
    out: dict[str, Any] = {"threshold_curve": threshold_curve(scores, preds, imp, golds, NO_ANSWER_MARGINS)}
    t = threshold_for_answer_rate(scores, imp)
    if t is not None:
        out["at_target_answer_rate"] = {"target": TARGET_ANSWER_RATE,
                                        **threshold_curve(scores, preds, imp, golds, [round(t, 4)])[0]}
    if gated:
        skipped = [r["provider"] == "reader-gate" for r in kept]
        out["reader_gate"] = {
            "llm_calls_saved_unanswerable": sum(1 for s, i in zip(skipped, imp) if s and i),
            "llm_calls_skipped_answerable": sum(1 for s, i in zip(skipped, imp) if s and not i),
            "unanswerable": sum(imp), "answerable": len(imp) - sum(imp)}
    return out
