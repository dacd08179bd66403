"""Embedding-space explorer: the collection's chunks projected to 2-D, coloured by file or by cluster.

- projection: PCA (sklearn); t-SNE (sklearn) on request for up to `TSNE_MAX_POINTS` points;
- clusters: k-means on the normalized dense vectors, each labelled with its top tf-idf terms;
- a query: its embedding is placed in the same 2-D space and its retrieved chunks are marked;
- nearest neighbours (cosine, in the full embedding space, not in 2-D) of every chunk.

Outputs: PNG (matplotlib, Agg backend), a self-contained HTML file (inline SVG + JSON, click a point for
its neighbours; no network, no plotting library), or a matplotlib Figure for the UI.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rag.errors import ConfigError
from rag.models import SearchFilter
from rag.store.catalog import load_chunks

log = logging.getLogger(__name__)

MAX_POINTS = 5000
TSNE_MAX_POINTS = 5000
NEIGHBOURS = 5
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]


@dataclass
class ExploreData:
    """Everything a plot needs, as plain arrays and lists (one entry per chunk)."""

    ids: list[str]
    texts: list[str]
    files: list[str]
    sections: list[str]
    xy: np.ndarray  # (n, 2)
    clusters: list[int]
    cluster_labels: dict[int, str]
    neighbours: list[list[int]]  # row indices of each chunk's nearest neighbours, best first
    method: str = "pca"
    query: str | None = None
    query_xy: tuple[float, float] | None = None
    hit_rows: list[int] = field(default_factory=list)  # retrieved chunks, in rank order

    def __len__(self) -> int:
        return len(self.ids)


def load_vectors(store: Any, limit: int = MAX_POINTS, flt: SearchFilter | None = None) -> tuple[list[Any], np.ndarray]:
    """Up to `limit` chunks matching `flt` (an ACL filter runs inside the store) and their stored dense vectors."""
    chunks, vecs = load_chunks(store, flt, limit)
    if len(chunks) >= limit:
        log.info("explorer shows the first %d chunks of the collection", limit)
    return chunks, vecs


def project(vectors: np.ndarray, method: str = "pca", extra: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """2-D coordinates of `vectors` (and of `extra` rows, e.g. a query, placed in the same space)."""
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2)), None if extra is None else np.zeros((len(extra), 2))
    if method == "tsne" and n > TSNE_MAX_POINTS:
        log.info("t-SNE is limited to %d points; using PCA for %d", TSNE_MAX_POINTS, n)
        method = "pca"
    if n < 3:  # PCA/t-SNE need a few points; lay them on a line
        xy = np.column_stack([np.arange(n, dtype=float), np.zeros(n)])
        return xy, None if extra is None else np.zeros((len(extra), 2))
    if method == "tsne":
        from sklearn.manifold import TSNE  # scikit-learn (and scipy) are heavy: imported when used

        stacked = vectors if extra is None else np.vstack([vectors, extra])
        perplexity = float(max(2, min(30, (len(stacked) - 1) // 3)))
        xy_all = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity, metric="cosine").fit_transform(stacked)
        return xy_all[:n], None if extra is None else xy_all[n:]
    if method != "pca":
        raise ConfigError(f"projection {method!r} is unknown; use pca or tsne")
    from sklearn.decomposition import PCA  # heavy: imported when used

    pca = PCA(n_components=2, random_state=seed).fit(vectors)
    return pca.transform(vectors), None if extra is None else pca.transform(extra)


def default_clusters(n: int) -> int:
    """About sqrt(n/2) clusters, between 2 and 12 (never more than the points)."""
    return max(1, min(n, 12, max(2, int(round(math.sqrt(n / 2))))))


def cluster(vectors: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """k-means labels of the (normalized) vectors."""
    if len(vectors) == 0:
        return []
    k = max(1, min(k, len(vectors)))
    from sklearn.cluster import KMeans  # heavy: imported when used

    return [int(x) for x in KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(vectors)]


def cluster_terms(texts: Sequence[str], labels: Sequence[int], top: int = 3) -> dict[int, str]:
    """Each cluster's label: its `top` highest tf-idf terms, one tf-idf document per cluster."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # heavy: imported when used

    ids = sorted(set(labels))
    docs = [" ".join(t for t, lab in zip(texts, labels) if lab == c) for c in ids]
    try:
        vec = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{3,}\b", sublinear_tf=True)
        matrix = vec.fit_transform(docs)
    except ValueError:  # no usable terms at all (e.g. only numbers)
        return {c: f"cluster {c}" for c in ids}
    vocab = np.asarray(vec.get_feature_names_out())
    out = {}
    for row, c in enumerate(ids):
        weights = matrix[row].toarray().ravel()
        best = [vocab[i] for i in np.argsort(-weights)[:top] if weights[i] > 0]
        out[c] = ", ".join(best) or f"cluster {c}"
    return out


def nearest_neighbours(vectors: np.ndarray, n: int = NEIGHBOURS) -> list[list[int]]:
    """Row indices of each row's `n` most cosine-similar other rows (computed in blocks)."""
    if len(vectors) < 2:
        return [[] for _ in range(len(vectors))]
    norm = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    n = min(n, len(vectors) - 1)
    out: list[list[int]] = []
    for start in range(0, len(norm), 1024):
        sims = norm[start:start + 1024] @ norm.T
        for j in range(len(sims)):
            sims[j, start + j] = -np.inf
        top = np.argpartition(-sims, n - 1, axis=1)[:, :n] if n < len(norm) else np.argsort(-sims, axis=1)[:, :n]
        for j, row in enumerate(top):
            out.append([int(i) for i in row[np.argsort(-sims[j, row])]])
    return out


def build(pipeline: Any, query: str | None = None, method: str = "pca", k: int | None = None,
          limit: int = MAX_POINTS, seed: int = 0, caller: Any = None) -> ExploreData:
    """Project a pipeline's collection (and optionally a query and its hits) for plotting.

    With a `caller` (rag.access.Caller), only the chunks it may see are loaded, clustered and searched.
    """
    flt = caller.search_filter() if caller is not None else None
    chunks, vectors = load_vectors(pipeline.store, limit, flt)
    hit_ids: list[str] = []
    query_vec = None
    if query and query.strip() and chunks:
        result = pipeline.search(query, k=10, caller=caller)
        hit_ids = [h.chunk.id for h in result.hits]
        query_vec = np.asarray(pipeline.embedder.embed_query(query), dtype=np.float32)[None, :]
    xy, extra = project(vectors, method, query_vec, seed)
    labels = cluster(vectors, k or default_clusters(len(chunks)), seed)
    row_of = {c.id: i for i, c in enumerate(chunks)}
    return ExploreData(
        ids=[c.id for c in chunks],
        texts=[c.text for c in chunks],
        files=[c.file_name or Path(c.file_path).name for c in chunks],
        sections=[c.section for c in chunks],
        xy=np.asarray(xy, dtype=float),
        clusters=labels,
        cluster_labels=cluster_terms([c.text for c in chunks], labels) if chunks else {},
        neighbours=nearest_neighbours(vectors),
        method=method,
        query=query if query_vec is not None else None,
        query_xy=(float(extra[0, 0]), float(extra[0, 1])) if extra is not None and query_vec is not None else None,
        hit_rows=[row_of[i] for i in hit_ids if i in row_of],
    )


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


def groups(data: ExploreData, color: str) -> tuple[list[int], list[str]]:
    """(group index per point, group names) for colouring by 'file' or 'cluster'."""
    if color == "file":
        names = sorted(set(data.files))
        index = {n: i for i, n in enumerate(names)}
        return [index[f] for f in data.files], names
    if color == "cluster":
        ids = sorted(data.cluster_labels)
        index = {c: i for i, c in enumerate(ids)}
        return [index[c] for c in data.clusters], [f"{c}: {data.cluster_labels[c]}" for c in ids]
    raise ConfigError(f"--color {color!r} is unknown; use file or cluster")


def figure(data: ExploreData, color: str = "cluster") -> Any:
    """A matplotlib Figure of the projection (Agg backend, no display needed)."""
    import matplotlib  # heavy: imported only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gidx, names = groups(data, color)
    fig, ax = plt.subplots(figsize=(10, 7), dpi=100)
    g = np.asarray(gidx)
    for i, name in enumerate(names):
        mask = g == i
        ax.scatter(data.xy[mask, 0], data.xy[mask, 1], s=12, alpha=0.75, color=PALETTE[i % len(PALETTE)],
                   label=name[:50])
    if data.hit_rows:
        hits = data.xy[data.hit_rows]
        ax.scatter(hits[:, 0], hits[:, 1], s=90, facecolors="none", edgecolors="black", linewidths=1.5,
                   label="retrieved")
    if data.query_xy is not None:
        ax.scatter([data.query_xy[0]], [data.query_xy[1]], s=260, marker="*", color="black",
                   label=f"query: {data.query[:40]}")
    ax.set_title(f"{len(data)} chunks, {data.method.upper()} projection, coloured by {color}")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def write_png(data: ExploreData, path: str | Path, color: str = "cluster") -> Path:
    """Save the plot as a PNG."""
    import matplotlib.pyplot as plt  # heavy: imported only when a plot is drawn

    fig = figure(data, color)
    fig.savefig(str(path), bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def html_payload(data: ExploreData, color: str) -> dict[str, Any]:
    """The JSON embedded in the HTML page."""
    gidx, names = groups(data, color)
    return {
        "points": [{"id": data.ids[i], "x": round(float(data.xy[i, 0]), 5), "y": round(float(data.xy[i, 1]), 5),
                    "g": gidx[i], "file": data.files[i], "section": data.sections[i],
                    "cluster": data.clusters[i], "text": " ".join(data.texts[i].split())[:400],
                    "nn": data.neighbours[i]} for i in range(len(data))],
        "groups": [{"name": n, "color": PALETTE[i % len(PALETTE)]} for i, n in enumerate(names)],
        "query": data.query,
        "query_xy": data.query_xy,
        "hits": data.hit_rows,
        "method": data.method,
        "color_by": color,
    }


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Embedding explorer</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;height:100vh}
#plot{flex:3;min-width:0} #side{flex:1;overflow:auto;padding:12px;border-left:1px solid #ddd;font-size:13px}
svg{width:100%;height:100%} circle.pt{cursor:pointer} circle.sel{stroke:#000;stroke-width:2}
.legend span{display:inline-block;width:10px;height:10px;margin-right:4px} li{margin-bottom:8px}
</style></head><body>
<div id="plot"><svg id="svg" viewBox="0 0 1000 700" preserveAspectRatio="xMidYMid meet"></svg></div>
<div id="side"><h3>__TITLE__</h3><div class="legend" id="legend"></div><div id="info"><p>Click a point to see the chunk and its nearest neighbours.</p></div></div>
<script id="data" type="application/json">__DATA__</script>
<script>
const D = JSON.parse(document.getElementById('data').textContent);
const svg = document.getElementById('svg'), NS = 'http://www.w3.org/2000/svg';
const xs = D.points.map(p => p.x).concat(D.query_xy ? [D.query_xy[0]] : []);
const ys = D.points.map(p => p.y).concat(D.query_xy ? [D.query_xy[1]] : []);
const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
const sx = x => 30 + 940 * (x - x0) / ((x1 - x0) || 1), sy = y => 670 - 640 * (y - y0) / ((y1 - y0) || 1);
function esc(s) { const d = document.createElement('div'); d.textContent = s == null ? '' : String(s); return d.innerHTML; }
const circles = D.points.map((p, i) => {
  const c = document.createElementNS(NS, 'circle');
  c.setAttribute('cx', sx(p.x)); c.setAttribute('cy', sy(p.y)); c.setAttribute('r', 4);
  c.setAttribute('fill', D.groups[p.g].color); c.setAttribute('fill-opacity', 0.8); c.setAttribute('class', 'pt');
  c.dataset.index = i;
  const t = document.createElementNS(NS, 'title'); t.textContent = p.file + ': ' + p.text.slice(0, 120); c.appendChild(t);
  c.addEventListener('click', () => show(i)); svg.appendChild(c); return c;
});
D.hits.forEach(i => { const c = document.createElementNS(NS, 'circle');
  c.setAttribute('cx', sx(D.points[i].x)); c.setAttribute('cy', sy(D.points[i].y)); c.setAttribute('r', 9);
  c.setAttribute('fill', 'none'); c.setAttribute('stroke', '#000'); c.setAttribute('class', 'hit'); svg.appendChild(c); });
if (D.query_xy) { const q = document.createElementNS(NS, 'text'); q.setAttribute('x', sx(D.query_xy[0]));
  q.setAttribute('y', sy(D.query_xy[1])); q.setAttribute('font-size', 26); q.setAttribute('text-anchor', 'middle');
  q.setAttribute('class', 'query'); q.textContent = '\\u2605'; svg.appendChild(q); }
document.getElementById('legend').innerHTML = D.groups.map(g => '<div><span style="background:' + g.color + '"></span>' + esc(g.name) + '</div>').join('')
  + (D.query ? '<div>\\u2605 query: ' + esc(D.query) + ' (circled: retrieved)</div>' : '');
function show(i) {
  circles.forEach(c => c.classList.remove('sel')); circles[i].classList.add('sel');
  const p = D.points[i];
  document.getElementById('info').innerHTML = '<h4>' + esc(p.file) + (p.section ? ' \\u2014 ' + esc(p.section) : '') + '</h4><p>' + esc(p.text) + '</p>'
    + '<h4>Nearest neighbours</h4><ol id="nn">' + p.nn.map(j => '<li><a href="#" data-j="' + j + '">' + esc(D.points[j].file) + '</a>: '
    + esc(D.points[j].text.slice(0, 160)) + '</li>').join('') + '</ol>';
  document.querySelectorAll('#nn a').forEach(a => a.addEventListener('click', e => { e.preventDefault(); show(+a.dataset.j); }));
}
</script></body></html>
"""


def write_html(data: ExploreData, path: str | Path, color: str = "cluster") -> Path:
    """Save a self-contained interactive HTML page (inline SVG, click a point for its neighbours)."""
    payload = json.dumps(html_payload(data, color), ensure_ascii=False).replace("</", "<\\/")
    title = html.escape(f"{len(data)} chunks, {data.method.upper()}, coloured by {color}")
    Path(path).write_text(_HTML.replace("__TITLE__", title).replace("__DATA__", payload), encoding="utf-8")
    return Path(path)


def neighbour_rows(data: ExploreData, row: int) -> list[dict[str, Any]]:
    """A chunk's nearest neighbours as table rows (for the UI)."""
    return [{"rank": r, "file": data.files[j], "section": data.sections[j], "text": " ".join(data.texts[j].split())[:300]}
            for r, j in enumerate(data.neighbours[row], start=1)]


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace, settings: Any, open_pipeline: Callable[[Any], Any]) -> int:
    """`rag explore --out FILE.png|FILE.html [--color file|cluster] [--query Q]`.

    `open_pipeline(settings)` gives the pipeline facade (`rag.pipeline.Pipeline`, which sits above this
    library): the CLI, the composition root, passes it in.
    """
    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise ConfigError(f"--out {args.out}: use a .png or .html file name")
    if args.clusters is not None and args.clusters <= 0:
        raise ConfigError(f"--clusters is {args.clusters}; it must be positive")
    pipeline = open_pipeline(settings)
    try:
        if pipeline.store.info() is None:
            raise ConfigError(f"collection {settings.collection!r} does not exist; run `rag ingest` first or pass --collection")
        data = build(pipeline, query=args.query, method=args.method, k=args.clusters)
    finally:
        pipeline.close()
    if suffix == ".png":
        write_png(data, out, args.color)
    else:
        write_html(data, out, args.color)
    summary = {"out": str(out.resolve()), "points": len(data), "method": data.method, "color": args.color,
               "clusters": {str(k): v for k, v in data.cluster_labels.items()}, "query": data.query,
               "retrieved": len(data.hit_rows)}
    if args.json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    else:
        print(f"wrote {summary['out']} ({len(data)} chunks)")
        for k, label in data.cluster_labels.items():
            print(f"  cluster {k}: {label}")
    return 0
