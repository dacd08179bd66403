"""Issue 14, UI items: each hole reproduced against a real UI server, every endpoint called directly.

The server holds a `secret` file (label "secret") and a `public` one; every session is a `public`
caller. Endpoints are called with gradio_client or plain HTTP, never only through the buttons.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import httpx
import pytest

from rag.access import Caller, Role
from tests.ui_app_fixture import start_server, ui_settings, write_eval_run

gradio_client = pytest.importorskip("gradio_client")

SECRET_TEXT = "The falcon bonus: the salary of the chief executive is 912,000 euros per year.\n"
SECRET_MARKS = ["912,000", "salaries", "falcon", "chief executive"]
PUBLIC = Caller("ui", ("public",))
EVERYONE = Caller("auditor", ("public", "secret"))
# Every endpoint the app exposes; a new one fails this list until a test calls it directly.
EXPECTED_ENDPOINTS = {"/chat", "/ingest_folder", "/ingest_uploads", "/remove_file", "/open_eval",
                      "/explore_plot", "/explore_neighbours"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, minilm_path):
    """A UI over one public and one secret file, with ingest and eval roots, as a public session sees it."""
    from rag.pipeline import Pipeline

    root = tmp_path_factory.mktemp("hardened")
    public, secret = root / "docs" / "public", root / "docs" / "secret"
    public.mkdir(parents=True)
    secret.mkdir(parents=True)
    (public / "canteen.txt").write_text("The canteen serves lentil soup on Mondays.\n", encoding="utf-8")
    (secret / "salaries.txt").write_text(SECRET_TEXT, encoding="utf-8")
    allowed = root / "ingestable"
    (allowed / "notes").mkdir(parents=True)
    (allowed / "notes" / "garden.txt").write_text("The garden has 12 apple trees.\n", encoding="utf-8")
    (allowed / ".hidden").mkdir()
    (allowed / ".hidden" / "keys.txt").write_text("hidden keys\n", encoding="utf-8")
    results = root / "results"
    write_eval_run(results / "run1")
    (root / "outside-run").mkdir()
    (root / "outside-run" / "report.md").write_text("# outside report\n", encoding="utf-8")

    settings = ui_settings(root, minilm_path, default_acl=["public"])
    pipeline = Pipeline(settings)
    pipeline.ingest([str(public)], acl=["public"], progress=False)
    pipeline.ingest([str(secret)], acl=["secret"], progress=False)
    server = start_server(settings, None, pipeline=pipeline, ingest_roots=[allowed], eval_roots=[results])
    server.root = root
    yield server
    server.demo.close()
    pipeline.close()


def _client(url: str):
    return gradio_client.Client(url, verbose=False)


def _call(client, *args, api_name: str) -> str:
    """One endpoint call; its outputs (or the error it raised) as one string to search for leaks."""
    try:
        return json.dumps(client.predict(*args, api_name=api_name), default=str)
    except Exception as exc:  # noqa: BLE001 - a refusal is an answer too; it must not leak either
        return f"{type(exc).__name__}: {exc}"


def _secret_still_indexed(site) -> None:
    files = {Path(f["file_path"]).name: f["acl"] for f in site.pipeline.list_files(caller=EVERYONE)}
    assert files.get("salaries.txt") == ["secret"], files


def test_config_lists_no_indexed_file_and_prefills_nothing(site):
    """#2: Gradio's /config shows component values to anyone; file lists are filled per session now."""
    config = httpx.get(site.url + "config", timeout=30).text
    for name in ("salaries.txt", "canteen.txt", "912,000"):
        assert name not in config, name
    remove = next(c for c in json.loads(config)["components"] if c.get("props", {}).get("elem_id") == "remove-choice")
    assert remove["props"]["choices"] == [] and remove["props"].get("value") in (None, [])


def test_every_endpoint_called_directly_hides_the_secret_file(site, tmp_path):
    """#1, #2: chat, explore, ingest, remove, eval and upload endpoints called with forged inputs."""
    client = _client(site.url)
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == EXPECTED_ENDPOINTS
    secret_dir = site.root / "docs" / "secret"
    upload = tmp_path / "mine.txt"
    upload.write_text("My own note about the canteen menu.\n", encoding="utf-8")
    # (the questions avoid the secret's words: the chat shows the question itself)
    calls = [
        ("/chat", ("How much is the CEO paid per year?", [])),
        ("/explore_plot", ("CEO pay per year", "cluster", "pca")),
        ("/explore_plot", ("salary", "file", "pca")),
        ("/explore_neighbours", (0,)),
        ("/ingest_folder", (str(secret_dir),)),
        ("/remove_file", (str(secret_dir / "salaries.txt"),)),
        ("/open_eval", (str(secret_dir),)),
        ("/ingest_uploads", ([gradio_client.handle_file(str(upload))],)),
    ]
    outputs = []
    for api_name, args in calls:
        out = _call(client, *args, api_name=api_name)
        outputs.append(out)
        # the secret's text never; its file name only where the request itself named it
        marks = SECRET_MARKS if "salaries" not in json.dumps(args, default=str) else SECRET_MARKS[2:] + ["912,000"]
        for mark in marks:
            assert mark not in out, (api_name, mark, out[:500])
    assert "Traceback" not in "".join(outputs)
    _secret_still_indexed(site)
    # the upload went through and lists only what the session may see
    assert "mine.txt" in outputs[-1] and "canteen.txt" in outputs[-1]


def test_explore_scans_only_the_callers_chunks(site):
    """#1: the scan, clusters, labels and neighbours come from visible chunks only."""
    from rag import explore

    visible = explore.build(site.pipeline, query="salary chief executive", caller=PUBLIC)
    assert visible.texts and not any("912,000" in t for t in visible.texts)
    assert not any(m in " ".join(visible.cluster_labels.values()) for m in ("falcon", "salary", "bonus"))
    hr = explore.build(site.pipeline, caller=Caller("hr", ("secret",)))
    assert any("912,000" in t for t in hr.texts)  # the secret chunk exists; a holder of its label sees it


def test_remove_needs_visibility_and_a_confirmation(site):
    """#2 and issue 17: a direct remove call is refused (no confirmation step, not a visible file)."""
    client = _client(site.url)
    out = _call(client, str(site.root / "docs" / "public" / "canteen.txt"), api_name="/remove_file")
    assert "Removed" not in out
    _secret_still_indexed(site)
    assert any(Path(f["file_path"]).name == "canteen.txt" for f in site.pipeline.list_files(caller=PUBLIC))
    # the pipeline itself refuses an invisible file exactly like a missing one
    from rag.errors import RagError

    with pytest.raises(RagError, match="not in collection"):
        site.pipeline.remove_file(str(site.root / "docs" / "secret" / "salaries.txt"),
                                  caller=Caller("ui", ("public",), role=Role.EDITOR))
    _secret_still_indexed(site)


def _status(out: str) -> str:
    return json.loads(out)[1]  # (summary, status, files, choices, stats, file types, models)


def test_folder_ingest_is_confined_to_the_ingest_roots(site, caplog):
    """#6: outside paths, hidden folders, NUL bytes and 5,000-character paths get one readable line."""
    caplog.set_level(logging.WARNING)
    client = _client(site.url)
    before = len(site.pipeline.list_files(caller=EVERYONE))
    allowed = site.root / "ingestable"
    cases = {
        "/etc": "outside the folders",
        str(site.root / "docs" / "secret"): "outside the folders",
        str(allowed / ".hidden"): "hidden",
        str(allowed / "notes" / ".." / ".hidden" / "keys.txt"): "hidden",
        str(allowed) + "/a\x00b": "NUL byte",
        "/" + "x" * 5000: "characters long",
        str(allowed / "missing"): "no such file",
    }
    for path, expected in cases.items():
        status = _status(_call(client, path, api_name="/ingest_folder"))
        assert expected in status and "Traceback" not in status, (path[:60], status)
    assert len(site.pipeline.list_files(caller=EVERYONE)) == before
    assert not [r for r in caplog.records if r.exc_info], "a refused path logged a traceback"
    # inside the root it works, relative paths are taken from the first root
    status = _status(_call(client, "notes", api_name="/ingest_folder"))
    assert "1 indexed" in status, status
    assert "garden.txt" in {Path(f["file_path"]).name for f in site.pipeline.list_files(caller=PUBLIC)}


def test_folder_ingest_is_disabled_without_roots(site):
    """#6: no roots configured = no folder ingest, and the message says how to enable it."""
    server = start_server(site.settings, None, pipeline=site.pipeline, ingest_roots=[])
    try:
        before = len(site.pipeline.list_files(caller=EVERYONE))
        status = _status(_call(_client(server.url), "/etc", api_name="/ingest_folder"))
        assert "disabled" in status and "rag ui --ingest-root DIR" in status
        assert len(site.pipeline.list_files(caller=EVERYONE)) == before
    finally:
        server.demo.close()


def test_eval_tab_opens_only_runs_under_the_eval_roots(site):
    """#7: one answer for outside/missing/hidden folders, secrets redacted, no temp copies, no remote images."""
    client = _client(site.url)
    temp = Path(tempfile.gettempdir())
    copies_before = {p.name for p in temp.glob("rag-eval-*")}
    refused = [_call(client, folder, api_name="/open_eval") for folder in (
        str(site.root / "outside-run"), "/etc", str(site.root / "results" / "nope"), "/no/such/dir",
        str(site.root / "results" / ".." / "outside-run"), "", "a\x00b")]
    assert len(set(refused)) == 1 and "not available" in refused[0]
    report, plots, results = client.predict(str(site.root / "results" / "run1"), api_name="/open_eval")
    assert "hybrid | 0.61" in report and "](http" not in report and "beacon" not in report
    assert len(plots) == 1
    text = json.dumps(results)
    assert "LEAKEDKEY" not in text and "hunter2pw" not in text and results["modes"]["hybrid"]["ndcg@10"] == 0.61
    assert {p.name for p in temp.glob("rag-eval-*")} == copies_before


def test_same_named_uploads_never_replace_each_other(site, tmp_path):
    """#8: two visitors upload report.txt; both files stay indexed under their own paths."""
    paths = []
    for i, text in enumerate(["Alpha visitor: the boat is red.\n", "Beta visitor: the boat is green.\n"]):
        folder = tmp_path / f"v{i}"
        folder.mkdir()
        (folder / "report.txt").write_text(text, encoding="utf-8")
        _call(_client(site.url), [gradio_client.handle_file(str(folder / "report.txt"))], api_name="/ingest_uploads")
    for f in site.pipeline.list_files(caller=PUBLIC):
        if Path(f["file_path"]).name == "report.txt":
            paths.append(Path(f["file_path"]))
    assert len(paths) == 2 and paths[0] != paths[1]
    assert sorted(p.read_text() for p in paths) == ["Alpha visitor: the boat is red.\n",
                                                    "Beta visitor: the boat is green.\n"]


def test_upload_size_limit_and_origin_check(site, minilm_path, tmp_path):
    """#8: an oversize upload is stopped while receiving (413, nothing kept); cross-origin posts are refused."""
    settings = site.settings.replace(server_max_upload_mb=0.01)  # 10 KB
    server = start_server(settings, None, pipeline=site.pipeline)
    try:
        upload_url = server.url + "gradio_api/upload"
        big = b"x" * 50_000
        reply = httpx.post(upload_url, files=[("files", ("big-upload.txt", big))], timeout=60)
        assert reply.status_code == 413, reply.text
        upload_dir = Path(server.demo.server_app.uploaded_file_dir)
        assert not [p for p in upload_dir.rglob("big-upload.txt")]
        small = [("files", ("small-upload.txt", b"small file\n"))]
        evil = httpx.post(upload_url, files=small, headers={"Origin": "http://evil.example"}, timeout=60)
        assert evil.status_code == 403
        null = httpx.post(upload_url, files=small, headers={"Origin": "null"}, timeout=60)
        assert null.status_code == 403
        own = httpx.post(upload_url, files=small, headers={"Origin": server.url.rstrip("/")}, timeout=60)
        assert own.status_code == 200, own.text
        # queued events are state-changing too: a foreign page cannot start an ingest
        join = httpx.post(server.url + "gradio_api/queue/join", json={}, headers={"Origin": "http://evil.example"},
                          timeout=60)
        assert join.status_code == 403
    finally:
        server.demo.close()


def test_overlong_questions_and_histories_are_bounded(site, monkeypatch):
    """#13: a question over max_question_chars never reaches the pipeline; a forged chat list is capped."""
    from rag.pipeline import Pipeline

    calls = []
    original = Pipeline.ask
    monkeypatch.setattr(Pipeline, "ask", lambda self, q, *a, **kw: calls.append(q) or original(self, q, *a, **kw))
    client = _client(site.url)
    question = "Why? " * 1000  # 5,000 characters; the limit is 2,000
    messages, _evidence, box, answer = client.predict(question, [], api_name="/chat")
    text = json.dumps(messages)
    assert "limit is 2,000" in text and not calls and "error" in answer
    assert len(text) < 2_000  # the question is not echoed back
    forged = [{"role": "user", "content": [{"type": "text", "text": f"q{i}"}]} for i in range(300)]
    messages, _evidence, _box, _answer = client.predict("What is served on Mondays?", forged, api_name="/chat")
    assert len(messages) <= 42 and calls == ["What is served on Mondays?"]
