"""The Documents tab: index a server folder (only inside the operator's ingest roots) or uploaded files,
see the indexed files the session may see, and remove one after confirming.

Inside the server (`ctx.jobs`, its durable job queue), a folder ingest is a job run by the server's writer,
and the tab shows a live job list (state, current file, stage, pages or chunks done, cancel) refreshed
by a timer. In plain `rag ui` an ingest runs in the request, its progress bar naming the current file
and stage (ingest.progress).

Nothing caller-specific is put into the components when the app is built (that would be in Gradio's
public `/config` for every visitor); the file list, the remove choices and the statistics are filled
per session when the page loads and after every change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ingest.jobs import Job, describe_file_progress
from ingest.progress import IngestMonitor, SyncProgress, TerminalProgress
from rag.access import AccessDenied, Action, Caller
from rag.errors import RagError
from ui import render
from ui.context import UIContext
from ui.paths import confine
from ui.settings_panel import SettingsPanel, file_type_choices, models_markdown
from ui.uploads import discard_upload, store_uploads
from ui.web import upload_limit_bytes

log = logging.getLogger(__name__)

SUMMARY_HEADERS = ["file", "status", "chunks", "pages", "reason"]
JOBS_HEADERS = ["job", "state", "file", "stage", "progress", "files", "chunks", "message"]
JOBS_REFRESH_S = 1.0  # the job list's timer; each tick is one small SQLite read
FILES_HEADERS = ["file", "type", "chunks", "acl", "path"]
FOLDER_DISABLED = ("Folder ingest is disabled: the operator has not named any folder this UI may read. "
                   "Start it with `rag ui --ingest-root DIR` (or set `ingest_roots` in rag.toml) to allow "
                   "folders under DIR; uploads work either way.")


def files_rows(ctx: UIContext, caller: Caller) -> list[list]:
    """The files this caller can see, with chunk counts (no rows when the store cannot be read yet)."""
    try:
        files = ctx.pipeline.list_files(caller=caller)
    except RagError as exc:
        log.warning("cannot list indexed files: %s", exc)
        return []
    return [[render.file_label(f["file_path"]), f.get("file_type", ""), f.get("chunks", 0),
             ", ".join(f.get("acl", [])), f["file_path"]] for f in files]


def summary_rows(report, display: dict[str, str] | None = None, visible: set[str] | None = None) -> list[list]:
    """One row per file of an ingest report: indexed / skipped / failed with the reason.

    With `visible`, an unchanged file the caller cannot see is not named (it was indexed by someone
    else, under labels this caller does not hold); one summary row counts such files.
    """
    display = display or {}
    rows, hidden = [], 0
    for outcome in report.files:
        if visible is not None and outcome.status == "skipped" and str(outcome.path) not in visible:
            hidden += 1
            continue
        name = display.get(str(outcome.path)) or render.file_label(str(outcome.path))
        status = "skipped (unchanged)" if outcome.status == "skipped" and not outcome.reason else outcome.status
        rows.append([name, status, outcome.chunks, outcome.pages if outcome.pages is not None else "",
                     outcome.reason or ("no text layer: needs OCR" if outcome.needs_ocr else "")])
    if hidden:
        rows.append([f"({hidden} other file{'s' if hidden != 1 else ''})", "skipped", "", "",
                     "already indexed under labels this session does not hold"])
    return rows


def summary_text(report) -> str:
    return (f"**{report.indexed} indexed**, {report.skipped} unchanged, **{report.failed} failed**, "
            f"{report.removed} removed, {report.unsupported} unsupported — "
            f"{report.chunks_added} chunk{'' if report.chunks_added == 1 else 's'} added in {report.seconds:.1f} s")


def stats_markdown(ctx: UIContext, caller: Caller) -> str:
    """Statistics of what this caller can see, as Markdown."""
    try:
        s = ctx.pipeline.stats(caller=caller)
    except RagError as exc:
        return f"⚠️ Statistics unavailable: {exc}"
    if not s.get("exists"):
        return f"Collection **{s['collection']}** is empty: nothing indexed yet."
    types = ", ".join(f"{k}: {v}" for k, v in s.get("chunks_per_file_type", {}).items()) or "–"
    size_mb = (s.get("disk_bytes") or 0) / 1e6
    return (f"Collection **{s['collection']}** ({s['backend']}) — **{s['files']} files** visible to this "
            f"session, **{s['points']} chunks** ({types}); embedding model `{s['embed_model']}` "
            f"({s['dimension']} dims); labels: {', '.join(s.get('acl_labels', [])) or '–'}; "
            f"{size_mb:.1f} MB on disk.")


def visible_jobs(ctx: UIContext, caller: Caller, limit: int = 20) -> list[Job]:
    """The caller's own jobs, newest first (every job for an admin), as the REST API lists them."""
    if ctx.jobs is None:
        return []
    jobs = ctx.jobs.list(limit=limit, collection=ctx.settings.collection)
    return [j for j in jobs if caller.can(Action.MANAGE_KEYS) or j.caller.get("name") == caller.name]


def job_rows(jobs: list[Job]) -> list[list]:
    """One row per job: what runs now (file, stage, pages or chunks done of total) and how far the job is."""
    rows = []
    for job in jobs:
        current = job.progress.get("current") if job.state == "running" else None
        shown = describe_file_progress(current)  # "scan.pdf: ocr 2/9 pages"
        name, _, stage = shown.partition(": ")
        parts = stage.split(" ", 1)
        chunks = job.progress.get("chunks_done", job.chunks_added) if job.state == "running" else job.chunks_added
        total = job.progress.get("chunks_total") if job.state == "running" else None
        rows.append([job.id, job.state, render.file_label(name) if name else "", parts[0] if parts[0] else job.stage,
                     parts[1] if len(parts) > 1 else "", f"{job.files_done}/{job.files_total}",
                     f"{chunks}/{total}" if total else str(chunks),
                     job.message or (f"{len(job.errors)} error(s)" if job.errors else "")])
    return rows


def job_summary_rows(job: Job) -> list[list]:
    """A finished job's files as the per-file summary table shows an ingest report."""
    return [[render.file_label(str(f.get("file", ""))), f.get("status", ""), f.get("chunks", ""),
             f.get("pages") if f.get("pages") is not None else "", f.get("reason", "")] for f in job.files]


class GradioProgress(IngestMonitor):
    """An in-request ingest's progress on Gradio's bar: chunks done of the (estimated) total, labelled with
    the current file and stage."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress

    def progress(self, snapshot: SyncProgress) -> None:
        """See IngestMonitor."""
        label = TerminalProgress.label(snapshot)
        if snapshot.chunks_total:
            self._progress((min(snapshot.chunks_done, snapshot.chunks_total), snapshot.chunks_total), desc=label,
                           unit="chunks")
        else:
            self._progress(0.0, desc=label)


@dataclass
class DocumentsTab:
    """The per-session refresh the app runs when the page loads."""

    refresh: Any  # (request) -> values for `outputs`
    outputs: list[Any]


def build_documents_tab(ctx: UIContext, panel: SettingsPanel) -> DocumentsTab:
    """Add the Documents tab and wire its events; `panel`'s file types and models follow index changes."""
    settings = ctx.settings
    folder_enabled = bool(ctx.ingest_roots)
    with gr.Tab("Documents", id="documents"):
        stats_md = gr.Markdown(elem_id="stats")
        with gr.Row():
            with gr.Column():
                folder = gr.Textbox(
                    label="Folder or file on the server", elem_id="folder",
                    placeholder=(f"a path under {', '.join(map(str, ctx.ingest_roots))}" if folder_enabled
                                 else "disabled: start the UI with rag ui --ingest-root DIR"),
                    interactive=folder_enabled)
                ingest_folder_btn = gr.Button("Index folder", variant="primary", interactive=folder_enabled)
                if not folder_enabled:
                    gr.Markdown(FOLDER_DISABLED, elem_id="folder-disabled")
            with gr.Column():
                uploads = gr.File(label=f"Upload files (up to {settings.server_max_upload_mb:g} MB each)",
                                  file_count="multiple", elem_id="uploads")
                ingest_upload_btn = gr.Button("Index uploaded files", variant="primary", elem_id="index-uploads")
        ingest_status = gr.Markdown(elem_id="ingest-status")
        jobs_table = cancel_choice = cancel_job_btn = None
        if ctx.jobs is not None:
            jobs_table = gr.Dataframe(headers=JOBS_HEADERS, value=[], label="Ingest jobs (live)", interactive=False,
                                      wrap=True, elem_id="jobs")
            with gr.Row():
                # Any id is accepted (the API takes one too); cancel_job checks it is the session's own job.
                cancel_choice = gr.Dropdown(choices=[], value=None, label="Cancel a queued or running job", scale=4,
                                            elem_id="cancel-job-choice", allow_custom_value=True)
                cancel_job_btn = gr.Button("Cancel job", variant="stop", scale=1, elem_id="cancel-job-btn")
            jobs_timer = gr.Timer(JOBS_REFRESH_S)
        summary = gr.Dataframe(headers=SUMMARY_HEADERS, value=[], label="Last ingest: per-file summary",
                               interactive=False, wrap=True, elem_id="summary")
        files_table = gr.Dataframe(headers=FILES_HEADERS, value=[], label="Indexed files", interactive=False,
                                   wrap=True, elem_id="files")
        with gr.Row():
            remove_choice = gr.Dropdown(choices=[], value=None, label="Remove a file from the index", scale=4,
                                        elem_id="remove-choice")
            remove_btn = gr.Button("Remove…", variant="stop", scale=1, elem_id="remove-btn")
            refresh_btn = gr.Button("Refresh", scale=1)
        with gr.Row(visible=False, elem_id="remove-confirm") as confirm_row:
            confirm_md = gr.Markdown()
            confirm_btn = gr.Button("Yes, remove it", variant="stop", scale=0, elem_id="remove-confirm-btn")
            cancel_btn = gr.Button("Cancel", scale=0, elem_id="remove-cancel-btn")
        pending_remove = gr.State(None)  # the path the visitor confirmed; the confirm step removes only it

    def refresh(request: gr.Request | None = None) -> tuple:
        """Everything caller-specific on this tab and the settings panel, for one session."""
        caller = ctx.caller(request)
        rows = files_rows(ctx, caller)
        return (rows, gr.update(choices=[r[4] for r in rows], value=None), stats_markdown(ctx, caller),
                gr.update(choices=file_type_choices(ctx, caller)), models_markdown(ctx, caller))

    refresh_outputs = [files_table, remove_choice, stats_md, panel.file_types, panel.models_md]

    def jobs_view(request: gr.Request | None, selected: str | None, running_before: list[str] | None) -> tuple:
        """The live job list; when a job of this session finished since the last tick, the files and
        statistics too (the index changed)."""
        caller = ctx.caller(request)
        jobs = visible_jobs(ctx, caller)
        open_ids = [j.id for j in jobs if j.state in ("queued", "running")]
        finished = [j for j in jobs if j.id in set(running_before or []) - set(open_ids)]
        files = refresh(request) if finished else tuple(gr.skip() for _ in refresh_outputs)
        # The per-file summary of the job that just finished (the newest, when several did).
        last = job_summary_rows(finished[0]) if finished else gr.skip()
        return (job_rows(jobs), gr.update(choices=open_ids, value=selected if selected in open_ids else None),
                open_ids, last, *files)

    def cancel_job(job_id: str | None, request: gr.Request):
        caller = ctx.caller(request)
        if not job_id:
            gr.Warning("Pick a queued or running job first.")
            return gr.skip()
        if not caller.can(Action.CANCEL_JOB) or job_id not in {j.id for j in visible_jobs(ctx, caller, 500)}:
            gr.Warning(f"No job {job_id} you may cancel.")  # another caller's job: the same answer as none
            return gr.skip()
        job = ctx.jobs.cancel(job_id)
        return (f"Job **{job.id}**: {'cancelled' if job.state == 'cancelled' else 'stops after its current file'}.")
    doc_outputs = [summary, ingest_status, *refresh_outputs]

    def after_change(request: gr.Request | None, rows_summary: Any, status: str) -> tuple:
        return (rows_summary, status, *refresh(request))

    def refused(request: gr.Request | None, message: str) -> tuple:
        gr.Warning(message)
        return after_change(request, [], f"⚠️ {message}")

    def run_ingest(request: gr.Request | None, caller: Caller, paths: list[Path], display: dict[str, str],
                   roots: list[Path] | None, progress: Any) -> tuple[tuple, Any]:
        """(outputs, the ingest report or None when it failed)."""
        progress(0, desc="Indexing")
        try:
            report = ctx.pipeline.ingest([str(p) for p in paths], acl=list(caller.labels), progress=False,
                                         caller=caller, roots=roots, monitor=GradioProgress(progress))
        except RagError as exc:
            return refused(request, f"Indexing failed: {exc}"), None
        except Exception as exc:  # noqa: BLE001 - a UI must answer with a message, not a trace
            log.exception("ingest of %d path(s) failed", len(paths))
            return refused(request, f"Indexing failed: internal error ({type(exc).__name__}); details are in "
                                    "the server log"), None
        if report.failed:
            gr.Warning(f"{report.failed} file(s) failed to index; see the summary table.")
        visible = {f["file_path"] for f in ctx.pipeline.list_files(caller=caller)}
        return after_change(request, summary_rows(report, display, visible), summary_text(report)), report

    def ingest_folder(path: str, request: gr.Request, progress=gr.Progress()):
        if not ctx.ingest_roots:
            return refused(request, FOLDER_DISABLED)
        caller = ctx.caller(request)
        try:
            caller.require(Action.INGEST)
            target = confine(path, ctx.ingest_roots, what="folder or file path")
        except RagError as exc:  # PathRefused, AccessDenied: one readable line
            return refused(request, str(exc))
        if ctx.jobs is not None:  # inside the server: the writer runs it; the job list shows its progress
            job = ctx.jobs.submit(settings.collection, [str(target)], caller, acl=list(caller.labels))
            return after_change(request, [], f"Queued job **{job.id}** for {render.safe_text(render.file_label(str(target)))}"
                                             " — follow it in the job list below.")
        return run_ingest(request, caller, [target], {}, ctx.ingest_roots, progress)[0]

    def ingest_uploads(files: list | None, request: gr.Request, progress=gr.Progress()):
        if not files:
            return refused(request, "Choose files to upload first.")
        caller = ctx.caller(request)
        sources = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]
        try:
            caller.require(Action.INGEST)
            stored = store_uploads(sources, settings.upload_dir, max_bytes=upload_limit_bytes(settings))
        except (RagError, OSError) as exc:
            return refused(request, str(exc))
        finally:
            for source in sources:  # Gradio's own temp copy: the stored copy is the one indexed
                Path(source).unlink(missing_ok=True)
        display = {str(p): name for name, p in stored}
        outputs, report = run_ingest(request, caller, [p for _, p in stored], display,
                                     [Path(settings.upload_dir).expanduser().resolve()], progress)
        indexed = {str(o.path) for o in report.files if o.status in ("indexed", "skipped")} if report else set()
        for _name, path in stored:  # a copy that could not be indexed is of no use to anyone
            if str(path) not in indexed:
                discard_upload(path, settings.upload_dir)
        return outputs

    def ask_remove(path: str | None):
        if not path:
            gr.Warning("Pick a file to remove first.")
            return gr.update(visible=False), "", None
        return (gr.update(visible=True),
                f"Remove **{render.safe_text(render.file_label(path))}** from the index? Its passages stop "
                "answering questions; the file itself is not deleted.", path)

    def remove_file(path: str | None, pending: str | None, request: gr.Request):
        hide = gr.update(visible=False)
        if not path or path != pending:
            return (*refused(request, "Pick a file, press Remove… and confirm."), hide, None)
        caller = ctx.caller(request)
        try:
            removed = ctx.pipeline.remove_file(path, caller=caller)
        except AccessDenied as exc:
            return (*refused(request, str(exc)), hide, None)
        except RagError:  # not indexed, or not visible: the same answer, so nothing is revealed
            return (*refused(request, f"{render.file_label(path)}: not in the index"), hide, None)
        return (*after_change(request, gr.skip(), f"Removed **{render.safe_text(render.file_label(path))}** "
                                                  f"({removed} chunks)."), hide, None)

    write = dict(concurrency_id="index-write", concurrency_limit=1)
    ingest_folder_btn.click(ingest_folder, [folder], doc_outputs, api_name="ingest_folder", **write)
    folder.submit(ingest_folder, [folder], doc_outputs, api_visibility="private", **write)
    ingest_upload_btn.click(ingest_uploads, [uploads], doc_outputs, api_name="ingest_uploads", **write)
    remove_btn.click(ask_remove, [remove_choice], [confirm_row, confirm_md, pending_remove],
                     api_visibility="private", queue=False)
    cancel_btn.click(lambda: (gr.update(visible=False), None), None, [confirm_row, pending_remove],
                     api_visibility="private", queue=False)
    confirm_btn.click(remove_file, [remove_choice, pending_remove], [*doc_outputs, confirm_row, pending_remove],
                      api_name="remove_file", **write)
    def refresh_all(request: gr.Request):
        return after_change(request, gr.skip(), "")

    refresh_btn.click(refresh_all, None, doc_outputs, api_visibility="private")
    if ctx.jobs is not None:
        running_ids = gr.State([])  # this session's view of the open jobs, to notice one finishing
        jobs_outputs = [jobs_table, cancel_choice, running_ids, summary, *refresh_outputs]
        jobs_timer.tick(jobs_view, [cancel_choice, running_ids], jobs_outputs, api_visibility="private",
                        show_progress="hidden", queue=False)
        cancel_job_btn.click(cancel_job, [cancel_choice], [ingest_status], api_name="cancel_job", queue=False)
        jobs_refresh = lambda request: jobs_view(request, None, [])[:2]  # noqa: E731  (page load: the list)
        return DocumentsTab(refresh=lambda request=None: (*refresh(request), *jobs_refresh(request)),
                            outputs=[*refresh_outputs, jobs_table, cancel_choice])
    return DocumentsTab(refresh=refresh, outputs=refresh_outputs)

