"""The `rag` command. `--json` prints exactly one JSON object on stdout; logs and progress go to stderr.

Exit codes: 0 success, 1 operation failed, 2 bad input or configuration (one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from typing import Any, Callable, Sequence

import rag  # noqa: F401  (sets the no-telemetry environment before anything else imports)
from rag.config import Settings, load_settings
from rag.errors import ConfigError, RagError
from rag.models import Mode, SearchFilter
from rag.text import terminal_safe  # document and model text is untrusted: no escape sequences on the terminal

log = logging.getLogger("rag")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    parser.add_argument("--config", help="path to rag.toml (default ./rag.toml, RAG_CONFIG)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")


def _add_acl(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--acl", action="append", metavar="LABEL", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Question answering over your own documents.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="index (sync) files and folders into the collection")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _add_acl(p, "ACL label given to the ingested chunks (repeatable; default: public)")
    p.add_argument("--follow-symlinks", action="store_true", default=None, help="follow symbolic links")
    p.add_argument("--watch", action="store_true",
                   help="then keep the given folders in sync as files change, until Ctrl-C (no server needed)")
    _add_common(p)

    p = sub.add_parser("search", help="retrieve passages for a query")
    p.add_argument("query")
    p.add_argument("--k", type=int, help="results to return (default 10)")
    p.add_argument("--mode", choices=Mode.values())
    _add_acl(p, "label the caller holds (repeatable; default: public)")
    p.add_argument("--file-type", action="append", help="only these file types (repeatable)")
    p.add_argument("--path-prefix", help="only files under this folder")
    _add_common(p)

    p = sub.add_parser("ask", help="answer a question with citations (streams without --json)")
    p.add_argument("question")
    p.add_argument("--mode", choices=Mode.values())
    _add_acl(p, "label the caller holds (repeatable; default: public)")
    _add_common(p)

    p = sub.add_parser("ui", help="start the Gradio chat UI")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    _add_acl(p, "labels every UI session holds (operator setting; default: public)")
    p.add_argument("--ingest-root", action="append", metavar="DIR", dest="ingest_root",
                   help="server folder visitors may index (repeatable; default: none, folder ingest disabled)")
    _add_common(p)

    p = sub.add_parser("stats", help="collection statistics")
    _add_acl(p, "count the files these labels can see (repeatable; default: the default labels)")
    _add_common(p)

    p = sub.add_parser("remove", help="remove one file's chunks from the collection")
    p.add_argument("path")
    _add_common(p)

    p = sub.add_parser("eval", help="batch evaluations")
    esub = p.add_subparsers(dest="eval_command", required=True)
    e = esub.add_parser("retrieval", help="retrieval metrics per mode on a BEIR or document-QA dataset")
    e.add_argument("dataset")
    e.add_argument("--modes", default="dense,bm25,hybrid,rerank")
    e.add_argument("--k", type=int, default=10)
    e.add_argument("--limit", type=int, help="evaluate only the first N queries")
    e.add_argument("--out", help="folder for results.json, report.md, questions.jsonl, plots")
    _add_common(e)
    e = esub.add_parser("answers", help="answer metrics (correctness, abstention, citations, faithfulness)")
    e.add_argument("dataset")
    e.add_argument("--limit", type=int)
    e.add_argument("--out")
    e.add_argument("--judge", default="lexical", help="faithfulness judge: lexical | nli | llm")
    _add_common(e)
    e = esub.add_parser("compare", help="print metric deltas between two result folders")
    e.add_argument("a")
    e.add_argument("b")
    _add_common(e)

    p = sub.add_parser("bench", help="speed benchmarks")
    p.add_argument("--sizes", help="comma-separated collection sizes for the scale test")
    p.add_argument("--out", help="write the Markdown report here")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--parts", help="comma-separated subset of ingest,query,baseline,scale,serve,backends "
                                   "(default: ingest,query,baseline,scale)")
    _add_common(p)

    p = sub.add_parser("tune", help="fine-tune the retriever and reranker on the collection's own chunks")
    p.add_argument("--out", help="model folder (default <state_dir>/tuned/<collection>)")
    p.add_argument("--eval", dest="eval_dataset", metavar="DATASET_DIR",
                   help="labelled BEIR / doc-QA set: evaluate before and after with the eval harness")
    p.add_argument("--eval-limit", type=int, help="evaluate only the first N questions of --eval")
    p.add_argument("--max-pairs", type=int, default=1600, help="pseudo-query pairs (default 1600)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128, help="training truncation in tokens (default 128)")
    p.add_argument("--scale", type=float, default=20.0, help="InfoNCE similarity scale (= 1/temperature)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--pairs-per-chunk", type=int, default=3, help="pseudo-query sentences per chunk (default 3)")
    p.add_argument("--keep-prob", type=float, default=1.0,
                   help="share of positives that keep the query sentence; 0 = classic inverse cloze (default 1)")
    p.add_argument("--query-dropout", type=float, default=0.3, help="pseudo-query word dropout (default 0.3)")
    p.add_argument("--no-reranker", action="store_true", help="train the embedder only")
    p.add_argument("--apply", metavar="MODEL_DIR", help="re-embed the collection with a tuned model into a new collection")
    p.add_argument("--target", help="name of the new collection for --apply (default <collection>_tuned)")
    p.add_argument("--force", action="store_true", help="--apply even if the tuned model did not win")
    p.add_argument("--reader", action="store_true",
                   help="train an extractive reader from a doc-QA set instead (with --train and --out)")
    p.add_argument("--train", metavar="DATASET_DIR", help="--reader: doc-QA dataset to learn from")
    p.add_argument("--base", metavar="MODEL", help="--reader: backbone (default: the configured embedder's)")
    p.add_argument("--limit", type=int, help="--reader: train on a seeded sample of N questions")
    p.add_argument("--reader-lr", type=float, help="--reader: peak learning rate (default 8e-5)")
    p.add_argument("--window", type=int, help="--reader: tokens per training window (default 256)")
    p.add_argument("--doc-stride", type=int, help="--reader: tokens shared by consecutive windows (default 96)")
    p.add_argument("--distractors", type=float,
                   help="--reader: share of questions that also read a same-article distractor paragraph (default 0.5)")
    p.add_argument("--freeze-layers", type=int, metavar="N",
                   help="--reader: keep the lowest N transformer layers as pretrained (cheaper steps; default 0)")
    p.add_argument("--max-steps", type=int, help="--reader: stop after N optimizer steps")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="--reader: save <out>/checkpoint every N steps (resume with --base <out>/checkpoint)")
    p.add_argument("--time-budget", type=float, metavar="MIN",
                   help="--reader: wall-clock budget; the learning rate decays to 0 by then and training stops")
    _add_common(p)

    p = sub.add_parser("explore", help="plot the collection's embedding space (PNG or HTML)")
    p.add_argument("--out", default="explore.png", help="output file: .png or .html (default explore.png)")
    p.add_argument("--color", choices=["file", "cluster"], default="cluster", help="colour points by file or k-means cluster")
    p.add_argument("--query", help="mark this query and its retrieved chunks")
    p.add_argument("--method", choices=["pca", "tsne"], default="pca", help="2-D projection (default pca)")
    p.add_argument("--clusters", type=int, help="k-means clusters (default: about sqrt(chunks / 2), at most 12)")
    _add_common(p)

    from rag.server.cli_commands import add_server_parsers  # serve, mcp, keys, jobs; --server on data commands

    add_server_parsers(sub, _add_common, _add_acl)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Defaults < rag.toml < RAG_* env < CLI flags."""
    overrides: dict[str, Any] = {}
    for name in ("collection", "mode", "follow_symlinks"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "host", None):
        overrides["ui_host"] = args.host
    if getattr(args, "port", None):
        overrides["ui_port"] = args.port
    return load_settings(getattr(args, "config", None), **overrides)


def _emit(args: argparse.Namespace, payload: dict, human: Callable[[], None]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, default=str) + "\n")
    else:
        human()


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from rag.pipeline import Pipeline

    pipeline = Pipeline(settings)
    watcher = None
    try:
        if args.watch:
            watcher = _start_watching(args, pipeline)  # before the ingest: nothing saved meanwhile is missed
        report = pipeline.ingest(args.paths, acl=args.acl, progress=True)
        for line in report.summary_lines():
            print(line, file=sys.stderr)
        if args.json:
            payload = report.to_dict()
            payload.pop("files")
            payload["files"] = [f.__dict__ for f in report.files]
            _emit(args, payload, lambda: None)
            sys.stdout.flush()
        if watcher is not None:
            print(f"rag: watching {len(watcher.folders)} folder(s) for changes; Ctrl-C stops", file=sys.stderr)
            signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop ends it like Ctrl-C does
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("rag: stopped watching", file=sys.stderr)
    finally:
        # A sync still running after 10 s is left to process exit (crash-safe); closing the store under it is not.
        if watcher is None or watcher.stop(timeout=10):
            pipeline.close()
    return 0


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _start_watching(args: argparse.Namespace, pipeline: Any) -> Any:
    """`rag ingest --watch`: a FolderWatcher syncing each given folder through this pipeline (same labels)."""
    from pathlib import Path

    from ingest.watch import FolderWatcher, PipelineSync, WatchedFolder

    not_folders = [p for p in args.paths if not Path(p).expanduser().is_dir()]
    if not_folders:
        raise RagError(f"--watch keeps folders in sync; not a folder: {', '.join(not_folders)}")
    folders = [WatchedFolder(Path(p), acl=args.acl) for p in args.paths]
    watcher = FolderWatcher(folders, PipelineSync(
        lambda paths, acl: pipeline.ingest(paths, acl=acl, progress=False), folders))
    watcher.start()
    return watcher


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from rag.pipeline import Pipeline

    pipeline = Pipeline(settings)
    flt = SearchFilter(acl=args.acl or list(settings.default_acl), file_types=args.file_type,
                       path_prefix=args.path_prefix)
    try:
        result = pipeline.search(args.query, k=args.k, mode=args.mode, flt=flt)
    finally:
        pipeline.close()

    def human() -> None:
        if not result.hits:
            print("no results", file=sys.stderr)
        for rank, hit in enumerate(result.hits, 1):
            where = hit.chunk.file_name + (f" p.{hit.chunk.page}" if hit.chunk.page else "")
            ranks = f"dense #{hit.dense_rank or '-'}  bm25 #{hit.bm25_rank or '-'}"
            if hit.rerank_score is not None:
                ranks += f"  rerank {hit.rerank_score:.3f}"
            print(terminal_safe(f"{rank:>2}. [{hit.score:.4f}] {where}  ({ranks})"))
            print(terminal_safe("    " + " ".join(hit.chunk.text.split())[:240]))
        print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items()), file=sys.stderr)

    _emit(args, result.to_dict(), human)
    return 0


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from rag.answering.citations import abstention_text
    from rag.pipeline import Pipeline

    pipeline = Pipeline(settings)
    flt = SearchFilter(acl=args.acl or list(settings.default_acl))
    streamed: list[str] = []

    def on_token(token: str) -> None:
        streamed.append(token)
        if not args.json:
            sys.stdout.write(terminal_safe(token))
            sys.stdout.flush()

    try:
        answer = pipeline.ask(args.question, flt=flt, on_token=on_token, mode=args.mode)
    finally:
        pipeline.close()

    def human() -> None:
        if streamed:
            # The streamed draft is shown live; strict validation may have changed it.
            sys.stdout.write("\n")
            if "".join(streamed).strip() != answer.text.strip():
                print("\n--- validated answer ---")
                print(terminal_safe(answer.text))
        else:
            print(terminal_safe(answer.text))
        if answer.error:
            print(terminal_safe(f"error: {answer.error}"), file=sys.stderr)
        if answer.citations:
            print("\nSources:")
            for c in answer.citations:
                page = f", page {c.page}" if c.page else ""
                print(terminal_safe(f"  [{c.number}] {c.file}{page}: \"{' '.join(c.quote.split())[:200]}\""))
        # An abstention's text already lists the related passages (answering.citations.abstention_text); list
        # them here only when it does not (an LLM error message), so they are never printed twice.
        if answer.abstained and answer.related and abstention_text(answer.related) not in answer.text:
            print("\nRelated, not sufficient:")
            for hit in answer.related:
                print(terminal_safe(f"  - {hit.chunk.file_name}: {' '.join(hit.chunk.text.split())[:160]}"))

    _emit(args, answer.to_dict(), human)
    return 0 if not answer.error else 1


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from rag.pipeline import Pipeline

    if args.acl:
        settings = settings.replace(default_acl=args.acl)
    pipeline = Pipeline(settings)
    try:
        stats = pipeline.stats()
    finally:
        pipeline.close()

    def human() -> None:
        for key, value in stats.items():
            print(f"{key:>22}: {value}")

    _emit(args, stats, human)
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    from rag.pipeline import Pipeline

    pipeline = Pipeline(settings)
    try:
        removed = pipeline.remove_file(args.path)
    finally:
        pipeline.close()
    _emit(args, {"file": args.path, "chunks_removed": removed}, lambda: print(f"removed {removed} chunks"))
    return 0


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    """`rag ui` is `rag serve` with the UI at / on port 7860: the API, the CLI's server mode and MCP come along."""
    from rag.server.run import serve

    if args.acl:
        settings = settings.replace(default_acl=args.acl)
    if args.ingest_root:
        settings = settings.replace(ingest_roots=args.ingest_root)
    serve(settings, host=settings.ui_host, port=settings.ui_port, ui_path="/")
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from evals import runner

    return runner.main(args, settings)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from evals import bench

    return bench.main(args, settings)


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "reader", False):
        from rag.tuning import reader

        return reader.main(args, settings)
    from rag.tuning import tune

    harness = None
    if args.eval_dataset:  # the composition root hands the eval harness to the library (which never imports evals)
        from evals.retrieval_eval import tuning_harness

        harness = tuning_harness(args.eval_dataset, limit=args.eval_limit)
    return tune.main(args, settings, eval_harness=harness)


def cmd_explore(args: argparse.Namespace, settings: Settings) -> int:
    from rag import explore
    from rag.pipeline import Pipeline

    return explore.main(args, settings, open_pipeline=Pipeline)  # the library gets the facade from here


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "ask": cmd_ask,
    "ui": cmd_ui,
    "stats": cmd_stats,
    "remove": cmd_remove,
    "eval": cmd_eval,
    "bench": cmd_bench,
    "tune": cmd_tune,
    "explore": cmd_explore,
}


def _server_command(name: str) -> Callable[[argparse.Namespace, Settings], int]:
    """`rag serve|mcp|keys|jobs`, implemented in rag.server.cli_commands (imported when run)."""
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from rag.server import cli_commands

        if name in ("keys", "jobs"):
            return getattr(cli_commands, f"cmd_{name}")(args, settings, _emit)
        return getattr(cli_commands, f"cmd_{name}")(args, settings)
    return run


COMMANDS.update({name: _server_command(name) for name in ("serve", "mcp", "keys", "jobs")})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rag` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("rag").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logging.getLogger("ingest").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        settings = settings_from_args(args)
        from rag.server.cli_commands import run_remote  # a running server owns the store: go through its API

        if getattr(args, "watch", False):
            args.no_server = True  # the watcher runs here; a server owning the store says so when it is opened
        remote = run_remote(args, settings, _emit)
        if remote is not None:
            return remote
        return COMMANDS[args.command](args, settings)
    except ConfigError as exc:
        print(f"rag: configuration error: {exc}", file=sys.stderr)
        return 2
    except RagError as exc:
        print(f"rag: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rag: interrupted; re-run the same command to finish (work done so far is kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
