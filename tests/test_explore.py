"""Embedding explorer: projection, labelled clusters, query marking, PNG and HTML output."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rag import explore
from rag.errors import ConfigError
from tests.tune_corpus import TOPICS, build_store


@pytest.fixture()
def data(settings, embedder):
    from rag.pipeline import Pipeline

    store = build_store(settings, embedder)
    pipeline = Pipeline(settings.replace(mode="hybrid"), store=store, embedder=embedder)
    try:
        yield explore.build(pipeline, query="volcanic eruption of lava and ash", k=3)
    finally:
        pipeline.close()


def test_build_projects_every_chunk_and_labels_clusters_by_topic(data):
    assert len(data) == 30 and data.xy.shape == (30, 2) and np.isfinite(data.xy).all()
    assert len(set(data.clusters)) == 3
    # Three well-separated topics: each cluster is one file, and its label names that topic's words.
    for c, label in data.cluster_labels.items():
        files = {f for f, k in zip(data.files, data.clusters) if k == c}
        assert len(files) == 1
        words = TOPICS[files.pop()][1]
        assert any(term in words for term in label.split(", ")), label
    assert data.query_xy is not None and len(data.hit_rows) == 10
    assert data.files[data.hit_rows[0]] == "volcano.md"
    assert all(len(nn) == 5 and i not in nn for i, nn in enumerate(data.neighbours))


def test_png_has_every_point_and_the_query(data, tmp_path):
    fig = explore.figure(data, "file")
    offsets = [c.get_offsets() for c in fig.axes[0].collections]
    assert sum(len(o) for o in offsets[:3]) == 30  # one scatter per file
    assert len(offsets[3]) == 10 and len(offsets[4]) == 1  # retrieved ring + query star
    path = explore.write_png(data, tmp_path / "map.png", "cluster")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained_with_points_neighbours_and_hits(data, tmp_path):
    path = explore.write_html(data, tmp_path / "map.html", "cluster")
    text = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # no external assets
    payload = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S).group(1))
    assert len(payload["points"]) == 30 and payload["hits"] == data.hit_rows
    assert payload["query"] and all(len(p["nn"]) == 5 for p in payload["points"])
    assert {g["name"].split(": ", 1)[1] for g in payload["groups"]} == set(data.cluster_labels.values())


def test_tsne_and_tiny_inputs():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(12, 8)).astype(np.float32)
    xy, q = explore.project(vecs, "tsne", extra=vecs[:1])
    assert xy.shape == (12, 2) and q.shape == (1, 2)
    xy, _ = explore.project(vecs[:2], "pca")
    assert xy.shape == (2, 2)
    assert explore.nearest_neighbours(vecs[:1]) == [[]]


def test_cli_adapter_uses_the_pipeline_it_is_given(settings, embedder, tmp_path, capsys):
    from rag.cli import build_parser
    from rag.pipeline import Pipeline

    store = build_store(settings, embedder)
    opened = []

    def open_pipeline(s):
        opened.append(Pipeline(s, store=store, embedder=embedder))
        return opened[-1]

    out = tmp_path / "map.html"
    args = build_parser().parse_args(["explore", "--out", str(out), "--clusters", "3", "--json"])
    assert explore.main(args, settings, open_pipeline=open_pipeline) == 0
    summary = json.loads(capsys.readouterr().out)  # one JSON object on stdout
    assert len(opened) == 1 and summary["out"] == str(out.resolve()) and summary["points"] == 30
    assert len(summary["clusters"]) == 3 and summary["query"] is None and summary["retrieved"] == 0
    args = build_parser().parse_args(["explore", "--out", str(tmp_path / "map.svg")])
    with pytest.raises(ConfigError, match="use a .png or .html"):
        explore.main(args, settings, open_pipeline=open_pipeline)
