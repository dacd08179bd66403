"""The server's CLI commands (`rag serve|mcp|keys|jobs`) and the CLI's remote mode.

`rag.cli` (the composition root) registers these parsers and, for `ingest|search|ask|stats|remove`,
calls `run_remote` first: when a server owns the store (its address is in `<state_dir>/server.json`)
or `--server URL` / RAG_SERVER_URL names one, the command goes through the HTTP API with
RAG_API_KEY, so it works while the server holds the embedded store and answers with warm models.

Kept light at import time (argparse only): heavy modules are imported inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from rag.config import Settings
from rag.errors import RagError
from rag.text import terminal_safe  # server text comes from documents and models: no escape sequences

REMOTE_COMMANDS = ("ingest", "search", "ask", "stats", "remove")

Emit = Callable[[argparse.Namespace, dict, Callable[[], None]], None]


def add_server_parsers(sub: argparse._SubParsersAction, add_common: Callable, add_acl: Callable) -> None:
    """Register serve, mcp, keys, jobs; give the remote-capable commands a --server flag."""
    for name in REMOTE_COMMANDS:
        parser = sub.choices.get(name)
        if parser is not None:
            parser.add_argument("--server", metavar="URL",
                                help="use this running rag server (default: RAG_SERVER_URL, or the server that "
                                     "owns the store); --no-server works in-process")
            parser.add_argument("--no-server", action="store_true", help="never use a running server")

    p = sub.add_parser("serve", help="serve the UI, REST API, OpenAI-compatible chat and MCP from one process")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--ingest-root", action="append", dest="ingest_root", metavar="DIR",
                   help="server folder the API may ingest from (repeatable; uploads work without)")
    p.add_argument("--watch", action="append", metavar="FOLDER",
                   help="keep this folder in sync as files change (repeatable; labels: --acl; also rag.toml `watch`)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback bind with no API keys (anyone who can connect gets the operator's access)")
    p.add_argument("--serve-collection", action="append", dest="serve_collections", metavar="NAME",
                   help="also serve this collection (repeatable); each is a model in /v1/models")
    add_acl(p, "labels of the local operator (loopback requests when no keys exist; default: public)")
    add_common(p)

    p = sub.add_parser("mcp", help="MCP server over stdio (for desktop MCP clients)")
    add_acl(p, "labels the MCP client holds (default: public)")
    p.add_argument("--server", metavar="URL", help="answer through this rag server (default: RAG_SERVER_URL, or "
                   "the server that owns the store, with RAG_API_KEY)")
    p.add_argument("--no-server", action="store_true", help="open the store in this process")
    add_common(p)

    p = sub.add_parser("keys", help="API keys for rag serve: create | list | revoke")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    k = ksub.add_parser("create", help="create a key (printed once; only a hash is stored)")
    k.add_argument("name")
    k.add_argument("--acl", action="append", metavar="LABEL", required=True, help="label the key holds (repeatable)")
    k.add_argument("--role", default="reader", choices=["reader", "editor", "admin"])
    add_common(k)
    k = ksub.add_parser("list", help="list keys (never the keys themselves)")
    add_common(k)
    k = ksub.add_parser("revoke", help="revoke a key by name")
    k.add_argument("name")
    add_common(k)

    p = sub.add_parser("jobs", help="ingest jobs of rag serve: list, or cancel ID")
    p.add_argument("action", nargs="?", choices=["list", "cancel"], default="list")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    add_common(p)


# -- serve / mcp / keys / jobs ------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from rag.server.run import serve

    if args.acl:
        settings = settings.replace(default_acl=args.acl)
    serve(settings, host=args.host or "127.0.0.1", port=args.port or 8000, ingest_roots=args.ingest_root,
          insecure=args.insecure, collections=args.serve_collections, watch=args.watch)
    return 0


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    """MCP over stdio: this process owns the store for the session (the operator's identity)."""
    import logging

    from rag.access import Caller
    from rag.server.mcp_server import stdio_main
    from rag.server.run import find_server
    from rag.server.state import ServerState

    logging.getLogger("rag").setLevel(logging.WARNING)  # stdout is the protocol; logs go to stderr only
    if args.acl:
        settings = settings.replace(default_acl=args.acl)
    url = None if getattr(args, "no_server", False) else find_server(settings, getattr(args, "server", None))
    if url is not None:
        # A server owns the store: answer through its API (with RAG_API_KEY), no models loaded here.
        from rag.server.client import RemoteState, ServerClient

        print(f"rag mcp: using the server at {url}", file=sys.stderr)
        client = ServerClient(url)
        try:
            stdio_main(RemoteState(client), Caller.local(settings.default_acl))
        finally:
            client.close()
        return 0
    state = ServerState.create(settings, start_writer=False)
    try:
        stdio_main(state, Caller.local(settings.default_acl))
    finally:
        state.close()
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    from rag.server.keys import KeyStore, keys_db_path

    store = KeyStore(keys_db_path(settings.state_dir))
    if args.keys_command == "create":
        key = store.create(args.name, args.acl, args.role)

        def human() -> None:
            print(key)
            print(f"key {args.name!r} created (role {args.role}, labels {', '.join(sorted(set(args.acl)))}); "
                  "it is shown only this once: store it now", file=sys.stderr)

        emit(args, {"name": args.name, "key": key, "role": args.role, "labels": sorted(set(args.acl))}, human)
        return 0
    if args.keys_command == "list":
        keys = [k.to_dict() for k in store.list()]

        def human() -> None:
            if not keys:
                print("no keys (the server answers loopback requests only)", file=sys.stderr)
            for k in keys:
                status = "active" if k["active"] else f"revoked {k['revoked_at']}"
                print(f"{k['name']:<20} {k['role']:<7} {','.join(k['labels']):<30} {k['created_at']}  {status}")

        emit(args, {"keys": keys}, human)
        return 0
    store.revoke(args.name)
    emit(args, {"name": args.name, "revoked": True}, lambda: print(f"key {args.name!r} revoked", file=sys.stderr))
    return 0


def cmd_jobs(args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    from ingest.jobs import JobQueue, format_job_line, jobs_db_path

    queue = JobQueue(jobs_db_path(settings.state_dir))
    if args.action == "cancel":
        if not args.job_id:
            raise RagError("rag jobs cancel ID: give the job id (see rag jobs)")
        try:
            job = queue.cancel(args.job_id)
        except KeyError:
            raise RagError(f"no job {args.job_id!r}; see rag jobs") from None
        emit(args, job.to_dict(), lambda: print(f"job {job.id}: {job.state}"
                                                 + (" (stops after the current file)" if job.state == "running" else "")))
        return 0
    jobs = queue.list(limit=args.limit)

    def human() -> None:
        if not jobs:
            print("no ingest jobs", file=sys.stderr)
        for job in jobs:
            print(format_job_line(job))

    emit(args, {"jobs": [j.to_dict() for j in jobs]}, human)
    return 0


# -- remote mode --------------------------------------------------------------------------------------
def run_remote(args: argparse.Namespace, settings: Settings, emit: Emit) -> int | None:
    """Run a data command through a server when one is available; None = run it in-process."""
    if args.command not in REMOTE_COMMANDS or getattr(args, "no_server", False):
        return None
    from rag.server.run import find_server

    url = find_server(settings, getattr(args, "server", None))
    if url is None:
        return None
    from rag.server.client import ServerClient

    print(f"rag: using the server at {url}", file=sys.stderr)
    client = ServerClient(url)
    try:
        return _REMOTE[args.command](args, client, emit)
    finally:
        client.close()


def _filters(args: argparse.Namespace) -> dict[str, Any] | None:
    flt: dict[str, Any] = {}
    if getattr(args, "acl", None):
        flt["acl"] = args.acl
    if getattr(args, "file_type", None):
        flt["file_types"] = args.file_type
    if getattr(args, "path_prefix", None):
        flt["path_prefix"] = args.path_prefix
    return flt or None


def _remote_ingest(args: argparse.Namespace, client: Any, emit: Emit) -> int:
    job = client.ingest(args.paths, acl=args.acl)
    print(f"job {job['id']}: {job['state']}, {job.get('message', '')}; chunks +{job['chunks_added']} "
          f"-{job['chunks_removed']}", file=sys.stderr)
    for err in job.get("errors") or []:
        print(f"  failed: {err['file']}: {err['reason']}", file=sys.stderr)
    if args.json:
        emit(args, job, lambda: None)
    return 0 if job["state"] == "done" else 1


def _remote_search(args: argparse.Namespace, client: Any, emit: Emit) -> int:
    result = client.search(args.query, k=args.k, mode=args.mode, filters=_filters(args))

    def human() -> None:
        if not result["results"]:
            print("no results", file=sys.stderr)
        for rank, hit in enumerate(result["results"], 1):
            where = hit["file_name"] + (f" p.{hit['page']}" if hit.get("page") else "")
            print(terminal_safe(f"{rank:>2}. [{hit['score']:.4f}] {where}"))
            print(terminal_safe("    " + " ".join(hit["text"].split())[:240]))

    emit(args, result, human)
    return 0


def _remote_ask(args: argparse.Namespace, client: Any, emit: Emit) -> int:
    streamed: list[str] = []

    def on_token(token: str) -> None:
        streamed.append(token)
        sys.stdout.write(terminal_safe(token))
        sys.stdout.flush()

    answer = client.ask(args.question, mode=args.mode, filters=_filters(args),
                        on_token=None if args.json else on_token)

    def human() -> None:
        if streamed:
            sys.stdout.write("\n")
            if "".join(streamed).strip() != answer["answer"].strip():
                print("\n--- validated answer ---")
                print(terminal_safe(answer["answer"]))
        else:
            print(terminal_safe(answer["answer"]))
        if answer.get("error"):
            print(terminal_safe(f"error: {answer['error']}"), file=sys.stderr)
        if answer.get("citations"):
            print("\nSources:")
            for c in answer["citations"]:
                page = f", page {c['page']}" if c.get("page") else ""
                print(terminal_safe(f"  [{c['number']}] {c['file']}{page}: \"{' '.join(c['quote'].split())[:200]}\""))

    emit(args, answer, human)
    return 0 if not answer.get("error") else 1


def _remote_stats(args: argparse.Namespace, client: Any, emit: Emit) -> int:
    stats = client.stats()
    emit(args, stats, lambda: [print(f"{k:>22}: {v}") for k, v in stats.items()])
    return 0


def _remote_remove(args: argparse.Namespace, client: Any, emit: Emit) -> int:
    result = client.remove(args.path)
    emit(args, result, lambda: print(f"removed {result['chunks_removed']} chunks"))
    return 0


_REMOTE = {"ingest": _remote_ingest, "search": _remote_search, "ask": _remote_ask, "stats": _remote_stats,
           "remove": _remote_remove}
