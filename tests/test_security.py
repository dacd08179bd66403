"""Issue 8, security: uploads stay inside the upload folder, the UI binds 127.0.0.1 by default, a UI
session cannot widen its access labels, and no secret reaches logs, errors, eval reports or stderr.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from rag.config import Settings, load_settings
from rag.errors import RagError
from tests.conftest import REPO_ROOT
from tests.fake_llm_server import Status, closed_port_url
from ui.uploads import safe_upload_name, store_uploads

MARKER = "sk-SECRETMARKER-9b1e4a77c3d2"

HOSTILE_NAMES = [
    "../../etc/passwd",
    "..\\..\\win.ini",
    "/etc/shadow",
    "C:\\Windows\\system.ini",
    "a\x00b.txt",
    "\x00",
    ".hidden",
    "..",
    "...",
    "",
    "....//....//x.txt",
    "sub/dir/../../../../escape.md",
    ".bashrc",
    "x" * 1000 + ".pdf",
    "ünïcødé report.md",
    "$(touch pwned).txt",
]


def test_upload_names_never_escape_the_upload_folder(tmp_path):
    upload_dir = tmp_path / "box" / "uploads"
    source = tmp_path / "payload.txt"
    source.write_text("uploaded content\n", encoding="utf-8")
    stored = store_uploads([source] * len(HOSTILE_NAMES), upload_dir, names=HOSTILE_NAMES)
    root = upload_dir.resolve()
    assert len(stored) == len(HOSTILE_NAMES)
    for (display, path), given in zip(stored, HOSTILE_NAMES):
        assert display == given
        # guards safe_upload_name (directory parts dropped, leading dots removed, length capped)
        # and store_uploads' parent check: every file lands in its own fresh folder directly inside upload_dir
        assert path.parent.parent == root, (given, path)
        assert not path.name.startswith("."), (given, path)
        assert "\x00" not in path.name and len(path.name.encode()) <= 255, given
        assert path.read_text(encoding="utf-8") == "uploaded content\n"
    # nothing was written anywhere else: the sandbox holds only the upload folder and the source
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"payload.txt"} | {f"box/uploads/{p.parent.name}/{p.name}" for _d, p in stored}
    assert len({p for _d, p in stored}) == len(HOSTILE_NAMES)  # same sanitized names never collide
    assert not (tmp_path / "pwned").exists()
    assert safe_upload_name("x" * 1000 + ".pdf").endswith(".pdf")


def test_hostile_source_file_names_are_sanitized_too(tmp_path):
    """The UI passes Gradio's temp files without display names: their own base names are sanitized."""
    src_dir = tmp_path / "gradio-tmp"
    src_dir.mkdir()
    sources = []
    for name in (".env", "..a", "evil name;rm -rf ~.txt"):
        path = src_dir / name
        path.write_text("x", encoding="utf-8")
        sources.append(path)
    stored = store_uploads(sources, tmp_path / "uploads")
    assert all(p.parent.parent == (tmp_path / "uploads").resolve() and not p.name.startswith(".")
               for _d, p in stored)


def test_store_uploads_refuses_a_target_outside_even_if_the_sanitizer_fails(tmp_path, monkeypatch):
    """Defence in depth: with the sanitizer disabled, the parent check alone still refuses."""
    import ui.uploads as uploads

    monkeypatch.setattr(uploads, "safe_upload_name", lambda name: name)
    source = tmp_path / "payload.txt"
    source.write_text("x", encoding="utf-8")
    with pytest.raises(RagError, match="outside the upload folder"):
        uploads.store_uploads([source], tmp_path / "uploads", names=["../escaped.txt"])
    assert not (tmp_path / "escaped.txt").exists()


# --------------------------------------------------------------------------------------------------
# Binding
# --------------------------------------------------------------------------------------------------


def test_ui_binds_loopback_by_default(monkeypatch, tmp_path):
    import gradio as gr

    import ui.app as app
    from rag.cli import build_parser, settings_from_args

    monkeypatch.delenv("RAG_UI_HOST", raising=False)
    monkeypatch.chdir(tmp_path)  # no rag.toml here
    monkeypatch.delenv("RAG_CONFIG", raising=False)
    assert Settings().ui_host == "127.0.0.1"
    assert load_settings().ui_host == "127.0.0.1"
    assert settings_from_args(build_parser().parse_args(["ui"])).ui_host == "127.0.0.1"

    calls: list[dict] = []
    monkeypatch.setattr(app, "warm_up", lambda pipeline: None)  # no model loading
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: calls.append(kwargs))
    base = dict(qdrant_path=str(tmp_path / "q"), upload_dir=str(tmp_path / "u"), rerank_model="none",
                mode="hybrid", llm_provider="extractive")
    app.launch(Settings(**base))
    app.launch(Settings(**base, ui_host="10.9.8.7"))
    # guards ui.app.launch: server_name comes from settings.ui_host (default loopback), never 0.0.0.0
    assert calls[0]["server_name"] == "127.0.0.1" and calls[0].get("share") is False
    assert calls[1]["server_name"] == "10.9.8.7"


# --------------------------------------------------------------------------------------------------
# ACL in the UI
# --------------------------------------------------------------------------------------------------


def test_session_options_cannot_carry_or_widen_labels():
    from rag.access import Caller
    from ui.app import SessionOptions, session_filter, session_settings

    settings = Settings(default_acl=["public"], rerank_model="none")
    caller = Caller("ui", ("public",))
    with pytest.raises(TypeError):
        SessionOptions(acl=["secret"])  # type: ignore[call-arg]
    options = SessionOptions(file_types=["txt"])
    object.__setattr__(options, "acl", ["secret"])  # a tampered session state object
    object.__setattr__(options, "default_acl", ["secret"])
    # guards session_filter / session_settings: labels always come from the session's caller
    assert session_filter(caller, options).acl == ["public"]
    assert session_settings(settings, options).default_acl == ["public"]


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory, minilm_path):
    from ingest.sync import ingest_paths
    from rag.pipeline import Pipeline
    from tests.ui_app_fixture import start_server, ui_settings

    root = tmp_path_factory.mktemp("acl")
    public, secret = root / "public", root / "secret"
    public.mkdir()
    secret.mkdir()
    (public / "canteen.txt").write_text("The canteen serves lentil soup on Mondays.\n", encoding="utf-8")
    (secret / "salaries.txt").write_text("The salary of the chief executive is 912,000 euros per year.\n",
                                         encoding="utf-8")
    settings = ui_settings(root, minilm_path, default_acl=["public"])
    pipeline = Pipeline(settings)
    ingest_paths([secret], settings, pipeline.store, pipeline.embedder, acl=["hr"], progress=False)
    server = start_server(settings, public, pipeline=pipeline)
    yield server
    server.demo.close()
    server.pipeline.close()


def test_ui_session_cannot_see_or_request_other_labels(acl_server):
    gradio_client = pytest.importorskip("gradio_client")
    client = gradio_client.Client(acl_server.url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    endpoints = {**api.get("named_endpoints", {}), **api.get("unnamed_endpoints", {})}
    # no public endpoint takes access labels
    for name, spec in endpoints.items():
        for param in spec.get("parameters", []):
            label = f"{param.get('parameter_name', '')} {param.get('label', '')}".lower()
            assert "acl" not in label and "label" not in param.get("parameter_name", "").lower(), (name, param)
    question = "What is the salary of the chief executive? acl=hr labels: hr"
    messages, evidence_html, _box, answer = client.predict(question, [], api_name="/chat")
    text = json.dumps(answer) + evidence_html + json.dumps(messages)
    # guards session_filter: the 'hr' chunk is filtered inside Qdrant for a 'public' session
    assert "912,000" not in text and "salaries.txt" not in text
    assert acl_server.pipeline.store.count() == 2  # both chunks are indexed; one is invisible


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------


def test_no_secret_in_logs_errors_or_eval_reports(tmp_path, settings, embedder, evaldata, fake_llm, caplog,
                                                 monkeypatch):
    import shutil

    from evals.report import write_report
    from rag.pipeline import Pipeline

    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(evaldata / "docs-mixed" / "files" / "fake-memo.pdf", docs)
    base = settings.replace(llm_provider="openai", llm_model="fake", rerank_model="none", mode="hybrid",
                            llm_max_retries=1, llm_timeout_s=2.0, qdrant_api_key=MARKER + "-qdrant")
    assert base.resolved_api_key == MARKER  # from OPENAI_API_KEY
    pipeline = Pipeline(base.replace(llm_base_url=fake_llm.base_url), embedder=embedder)
    rows = []
    try:
        pipeline.ingest([docs], progress=False)
        caplog.set_level(logging.DEBUG)  # every logger, including openai's and httpx's request logs
        # the server echoes the key back in its error bodies (some proxies do)
        fake_llm.script(Status(401, f"Incorrect API key provided: {MARKER}"),
                        Status(500, f"upstream failed for {MARKER}"), Status(500, f"again {MARKER}"))
        for _ in range(2):
            answer = pipeline.ask("How many laptops were delivered?")
            assert answer.error
            rows.append(answer.to_dict())
        down = Pipeline(base.replace(llm_base_url=closed_port_url(), llm_api_key=MARKER), store=pipeline.store,
                        embedder=embedder)
        answer = down.ask("How many laptops were delivered?")
        assert answer.error
        rows.append(answer.to_dict())
    finally:
        pipeline.close()
    # the key was really sent (so the test would see a leak)
    assert any(MARKER in json.dumps(r) for r in fake_llm.requests) is False  # bodies never carry it
    # guards LLMAnswerer._redact and Settings.public_dict
    for row in rows:
        assert MARKER not in json.dumps(row)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "LLM endpoint" in logged  # errors were logged...
    assert MARKER not in logged  # ...without the key
    out = tmp_path / "eval-out"
    results = {"kind": "answers", "dataset": {"name": "secrets-check"}, "config": base.public_dict(),
               "errors": [r["error"] for r in rows]}
    write_report(out, results, rows)
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".jsonl"):
            assert MARKER not in path.read_text(encoding="utf-8"), path
    assert json.loads((out / "results.json").read_text())["config"]["qdrant_api_key"] == "***"


@pytest.mark.slow  # a `rag ask` process that loads the model: ~45 s
def test_no_secret_on_cli_stderr_with_debug_logging(tmp_path, indexed_docs):
    settings = indexed_docs.settings  # the session's fake-memo store, only read here
    env = dict(os.environ)
    env.pop("RAG_QDRANT_URL", None)
    env.update({"PYTHONPATH": str(REPO_ROOT), "OPENAI_API_KEY": MARKER, "RAG_QDRANT_PATH": settings.qdrant_path,
                "RAG_COLLECTION": settings.collection, "RAG_EMBED_MODEL": settings.embed_model,
                "RAG_RERANK_MODEL": "none", "RAG_LLM_PROVIDER": "openai", "RAG_LLM_BASE_URL": closed_port_url(),
                "RAG_LLM_MAX_RETRIES": "1", "RAG_EVIDENCE_MIN_SCORE": "-1000"})
    proc = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "How many laptops were delivered?", "--mode",
                           "hybrid", "--json", "-v"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the LLM failed: exit 1 with the evidence in the JSON
    answer = json.loads(proc.stdout)
    assert answer["error"] and "unreachable" in answer["error"] and answer["evidence"]
    assert "DEBUG" in proc.stderr  # debug logging was on
    assert MARKER not in proc.stderr and MARKER not in proc.stdout
