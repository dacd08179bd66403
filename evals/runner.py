"""`rag eval retrieval | answers | compare`: the command-line adapter over the eval jobs.

The jobs live in their own modules, and this one re-exports their public names so `from evals import
runner` keeps working:

* `evals.retrieval_eval`  retrieval metrics per mode (`run_retrieval`), and the `rag tune --eval` harness;
* `evals.answers_eval`    answers, citations and faithfulness (`run_answers`, resumable);
* `evals.runs`            what every run shares (collection naming, pipeline, results folder, versions);
* `evals.report`          results.json, report.md, questions.jsonl, plots, and the comparison of two runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from evals import report
from evals.answers_eval import PARTIAL_FILE, contains_gold, run_answers, score_answers, strip_markers
from evals.report import compare_deltas
from evals.retrieval_eval import parse_modes, run_retrieval
from evals.runs import eval_collection_name
from rag.config import Settings
from rag.errors import ConfigError

__all__ = ["PARTIAL_FILE", "compare_deltas", "contains_gold", "eval_collection_name", "main", "parse_modes",
           "run_answers", "run_retrieval", "score_answers", "strip_markers"]


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`rag eval retrieval|answers|compare`. With --json, stdout gets one JSON object only (the
    results, or the deltas for compare); the Markdown report and progress go to stderr."""
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
