"""What the server owns: one Pipeline per collection (models shared), the key store, the job queue and writer.

Built once per process by `ServerState.create` and shared by every route, the OpenAI-compatible API,
the MCP tools and the mounted UI, so each model is loaded once and the embedded store is opened by
exactly one process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.jobs import JobQueue, JobRunner, jobs_db_path
from rag.access import Caller, Role
from rag.config import Settings
from rag.pipeline import Pipeline
from rag.server.auth import Authenticator, RateLimiter
from rag.server.errors import ApiError
from rag.server.keys import KeyStore, keys_db_path

log = logging.getLogger("rag.server")


@dataclass
class ServerState:
    """The long-lived objects behind every route."""

    settings: Settings
    pipelines: dict[str, Pipeline]
    keys: KeyStore
    jobs: JobQueue
    runner: JobRunner | None
    auth: Authenticator
    ingest_roots: list[Path] = field(default_factory=list)
    insecure: bool = False
    mcp: Any = None  # the MCPServer, when MCP is served over HTTP
    watcher: Any = None  # the ingest.watch.FolderWatcher of `rag serve --watch` / the `watch` setting

    @classmethod
    def create(cls, settings: Settings, collections: list[str] | None = None, ingest_roots: list[str] | None = None,
               insecure: bool = False, pipeline: Pipeline | None = None, start_writer: bool = True) -> "ServerState":
        """Open the collections (lazily), the key store and the job queue; start the writer thread."""
        names = list(dict.fromkeys([settings.collection, *(collections or [])]))
        primary = pipeline or Pipeline(settings)
        pipelines = {settings.collection: primary}
        for name in names[1:]:
            # Models are shared: a second collection reuses the loaded embedder and reranker.
            pipelines[name] = Pipeline(settings.replace(collection=name), embedder=primary._embedder,
                                       reranker=primary._reranker if primary._reranker_loaded else None)
        keys = KeyStore(keys_db_path(settings.state_dir))
        limiter = RateLimiter(float(getattr(settings, "server_rate_limit", 20.0)),
                              float(getattr(settings, "server_rate_burst", 40.0)))
        auth = Authenticator(keys, list(settings.default_acl), insecure=insecure, limiter=limiter)
        roots = [Path(r).expanduser().resolve()
                 for r in dict.fromkeys([*(ingest_roots or []), *(getattr(settings, "ingest_roots", None) or [])])]
        state = cls(settings=settings, pipelines=pipelines, keys=keys, jobs=JobQueue(jobs_db_path(settings.state_dir)),
                    runner=None, auth=auth, ingest_roots=roots, insecure=insecure)
        state.runner = JobRunner(state.jobs, state.run_ingest, follow_symlinks=settings.follow_symlinks)
        if start_writer:
            state.runner.start()
        return state

    @property
    def upload_root(self) -> Path:
        return Path(self.settings.upload_dir).expanduser().resolve() / "api"

    def pipeline(self, collection: str | None) -> Pipeline:
        """The pipeline of `collection` (the default one when None); 404 naming the field when unknown."""
        name = collection or self.settings.collection
        found = self.pipelines.get(name)
        if found is None:
            raise ApiError(404, "unknown_collection",
                           f"collection {name!r} is not served here; known: {', '.join(sorted(self.pipelines))}",
                           field="collection")
        return found

    def run_ingest(self, collection: str, paths: list[str], acl: list[str] | None, caller: Caller,
                   monitor: Any = None) -> Any:
        """What the job writer calls: the pipeline's ingest, confined to the ingest roots and the upload folder.
        `monitor` (ingest.jobs.JobMonitor) records the job's progress and passes a cancel on."""
        roots = [*self.ingest_roots, self.upload_root]
        return self.pipeline(collection).ingest(paths, acl=acl, progress=False, caller=caller, roots=roots,
                                                monitor=monitor)

    def start_watching(self, folders: list[str] | None = None) -> None:
        """Watch `folders` (labels: the operator's) and the `watch` setting's folders; each burst of changes
        becomes one ingest job, and a start-up job per folder catches what changed while the server was down.

        Watched folders count as ingest roots: the operator named them, as with --ingest-root.
        """
        from ingest.watch import FolderWatcher, JobSync, watched_folders

        entries = [*(getattr(self.settings, "watch", None) or []), *({"path": f} for f in folders or [])]
        watched = watched_folders(entries)
        if not watched:
            return
        for folder in watched:  # no labels given: the operator's, written out so status and jobs show them
            folder.acl = folder.acl if folder.acl is not None else list(self.settings.default_acl)
        missing = [str(f.path) for f in watched if not f.path.is_dir()]
        if missing:
            log.warning("watched folder(s) missing at start: %s (watching for them to appear)", ", ".join(missing))
        self.ingest_roots.extend(f.path for f in watched if f.path not in self.ingest_roots)
        caller = Caller(name="watcher", labels=tuple(self.settings.default_acl), role=Role.ADMIN)
        self.watcher = FolderWatcher(watched, JobSync(self.jobs, self.settings.collection, watched, caller))
        self.pipelines[self.settings.collection].watch_status = self.watcher.status
        self.watcher.start()
        self.watcher.reconcile()

    def warm_up(self) -> None:
        """Load the embedder (and the reranker when used) before the first request."""
        primary = self.pipelines[self.settings.collection]
        try:
            _ = primary.embedder
            if self.settings.rerank_enabled and self.settings.mode == "rerank":
                _ = primary.reranker
        except Exception as exc:  # noqa: BLE001  (the first request reports it properly)
            log.warning("model warm-up failed: %s", exc)
        for pipeline in self.pipelines.values():
            if pipeline._embedder is None:
                pipeline._embedder = primary._embedder

    def close(self) -> None:
        """Stop the watcher and the writer (after its current file) and close the stores."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.runner is not None:
            self.runner.stop()
            if self.runner.alive:
                # Still inside one file's sync: closing the store under it would turn a clean stop into
                # a failed write. Leave it to process exit; the sync is crash-safe and the job re-queued.
                log.warning("ingest writer still busy after 30 s; exiting without closing the store "
                            "(the job is re-run at next start)")
                return
        for pipeline in self.pipelines.values():
            pipeline.close()
