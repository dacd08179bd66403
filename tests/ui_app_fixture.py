"""A real UI server for tests: a small real folder ingested, the Gradio app on 127.0.0.1:<free port>.

Registered by tests/conftest.py (`pytest_plugins`): `ui_docs` and `ui_server` are visible to every test
module without an import. `ui_server` is session-scoped (one ingest, one server for the whole run; test_ui_api
runs first, read-only): a test that adds files asserts on the files it added, never on totals.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

UI_FILES = ["fake-memo.pdf", "family-day.eml", "stanley-cups.csv", "book-war-and-peace-1p.txt"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui_settings(root: Path, minilm_path: str, **changes):
    """The shared test settings (tests/conftest.py `settings_for`) for a UI: collection "ui", no
    reranker, hybrid mode."""
    from tests.conftest import settings_for

    return settings_for(root, minilm_path, **{"collection": "ui", "rerank_model": "none", "mode": "hybrid",
                                              **changes})


@dataclass
class UIServer:
    url: str
    demo: object
    pipeline: object
    settings: object
    docs: Path


def start_server(settings, docs: Path | None, pipeline=None, **app_options) -> UIServer:
    """Ingest `docs` (if given) and launch the app without blocking, as `rag ui` does.

    `app_options` go to `build_app` (ingest_roots, eval_roots, caller).
    """
    from rag.pipeline import Pipeline
    from ui.app import build_app, server_options

    pipeline = pipeline or Pipeline(settings)
    if docs is not None:
        report = pipeline.ingest([str(docs)], progress=False)
        assert report.failed == 0, report.failures
    demo = build_app(settings, pipeline, **app_options)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True,
                **server_options(settings, demo))
    return UIServer(url=f"http://127.0.0.1:{port}/", demo=demo, pipeline=pipeline, settings=settings, docs=docs)


def write_eval_run(run: Path) -> Path:
    """A `rag eval --out` folder: report.md (with a plot link and a remote image), results.json holding
    secrets (an API key, URL credentials), one PNG plot."""
    import json

    from PIL import Image

    run.mkdir(parents=True)
    (run / "report.md").write_text("# Retrieval\n\n| mode | nDCG@10 |\n|---|---|\n| hybrid | 0.61 |\n\n"
                                   "![recall@k](recall.png)\n\n![x](http://127.0.0.1:9/beacon?d=report)\n",
                                   encoding="utf-8")
    (run / "results.json").write_text(json.dumps({"config": {
        "llm_api_key": "sk-LEAKEDKEY1234567890", "llm_base_url": "http://alice:hunter2pw@llm.local/v1",
        "embed_model": "minilm"}, "modes": {"hybrid": {"ndcg@10": 0.61}}}), encoding="utf-8")
    Image.new("RGB", (400, 300), "steelblue").save(run / "recall.png")
    return run


@pytest.fixture(scope="session")
def ui_docs(evaldata, tmp_path_factory) -> Path:
    """Four small real files of different types, copied so the store records a tmp path."""
    src = evaldata / "docs-mixed" / "files"
    dst = tmp_path_factory.mktemp("ui-docs")
    for name in UI_FILES:
        shutil.copy(src / name, dst / name)
    return dst


@pytest.fixture(scope="session")
def ui_server(ui_docs, minilm_path, tmp_path_factory):
    """One running UI over `ui_docs` for the whole session (test_ui_api and test_ui_browser share it)."""
    root = tmp_path_factory.mktemp("ui-state")
    server = start_server(ui_settings(root, minilm_path), ui_docs)
    yield server
    server.demo.close()
    server.pipeline.close()


def llm_ui_server(ui_server, fake_llm, **changes):
    """A second app over the same store and embedder, answering through the fake LLM endpoint."""
    from rag.pipeline import Pipeline

    settings = ui_server.settings.replace(llm_provider="openai", llm_base_url=fake_llm.base_url,
                                          llm_model="fake-model", llm_max_retries=0, llm_timeout_s=10.0,
                                          **changes)
    pipeline = Pipeline(settings, store=ui_server.pipeline.store, embedder=ui_server.pipeline.embedder)
    return start_server(settings, None, pipeline=pipeline)
