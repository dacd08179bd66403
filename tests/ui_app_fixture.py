"""A real UI server for tests: a small real folder ingested, the Gradio app on 127.0.0.1:<free port>.

Import the fixtures into a test module: `from tests.ui_app_fixture import ui_server, ui_docs  # noqa: F401`.
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
    """Settings like the shared `settings` fixture, for a module-scoped server."""
    from rag.config import Settings

    base = dict(
        qdrant_path=str(root / "qdrant"), state_dir=str(root / "state"), upload_dir=str(root / "uploads"),
        collection="ui", embed_model=minilm_path, rerank_model="none", mode="hybrid",
        llm_provider="extractive", chunk_tokens=128, chunk_overlap_tokens=16,
    )
    base.update(changes)
    return Settings(**base)


@dataclass
class UIServer:
    url: str
    demo: object
    pipeline: object
    settings: object
    docs: Path


def start_server(settings, docs: Path | None, pipeline=None) -> UIServer:
    """Ingest `docs` (if given) and launch the app without blocking."""
    from rag.pipeline import Pipeline
    from ui.app import build_app

    pipeline = pipeline or Pipeline(settings)
    if docs is not None:
        report = pipeline.ingest([str(docs)], progress=False)
        assert report.failed == 0, report.failures
    demo = build_app(settings, pipeline)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    return UIServer(url=f"http://127.0.0.1:{port}/", demo=demo, pipeline=pipeline, settings=settings, docs=docs)


@pytest.fixture(scope="module")
def ui_docs(evaldata, tmp_path_factory) -> Path:
    """Four small real files of different types, copied so the store records a tmp path."""
    src = evaldata / "docs-mixed" / "files"
    dst = tmp_path_factory.mktemp("ui-docs")
    for name in UI_FILES:
        shutil.copy(src / name, dst / name)
    return dst


@pytest.fixture(scope="module")
def ui_server(ui_docs, minilm_path, tmp_path_factory):
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
