"""What every eval run shares: its collection, its pipeline, its report folder and the versions it ran with.

Collections. Each dataset is indexed into a collection of its own whose name carries a hash of
everything that shapes the index (dataset content, embedding model, chunking, BM25 parameters), so a
re-run reuses it (the folder sync skips unchanged files) and a config change never reads a stale index.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from evals import report
from rag.answering.reader import reader_enabled
from rag.config import Settings
from rag.pipeline import Pipeline

# Packages whose versions go into results.json (the numbers depend on them).
KEY_PACKAGES = (
    "torch", "sentence-transformers", "transformers", "qdrant-edge-py", "qdrant-client", "unstructured",
    "langchain-text-splitters", "rank-bm25", "snowballstemmer", "numpy", "openai",
)


def package_versions() -> dict[str, str | None]:
    """Python and key package versions (None when a package is not installed)."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def slug(text: str) -> str:
    """`text` as a short file- and collection-safe name (at most 40 characters)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    return (safe or "dataset")[:40]


def index_config(settings: Settings) -> dict[str, Any]:
    """The settings that shape an index: a change in any of them needs a new collection."""
    return {
        "embed_model": settings.embed_model,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap_tokens": settings.chunk_overlap_tokens,
        "pdf_strategy": settings.pdf_strategy,
        "bm25_k1": settings.bm25_k1,
        "bm25_b": settings.bm25_b,
        "bm25_language": settings.bm25_language,
        "query_instruction": settings.resolved_query_instruction(),
    }


def eval_collection_name(kind: str, dataset_name: str, data_hash: str, settings: Settings,
                         extra: str = "") -> str:
    """`eval_<kind>-<dataset>_<hash8>`, hash8 over the dataset hash and the index-shaping settings."""
    digest = hashlib.sha256(
        json.dumps({"data": data_hash, "index": index_config(settings), "extra": extra}, sort_keys=True).encode()
    ).hexdigest()[:8]
    return f"eval_{kind}-{slug(dataset_name)}_{digest}"


def default_out_dir(settings: Settings, kind: str) -> Path:
    """`<state_dir>/evals/<UTC timestamp>-<kind>` for runs without --out."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(settings.state_dir) / "evals" / f"{stamp}-{kind}"


def open_pipeline(settings: Settings, collection: str, embedder: Any = None, reranker: Any = None) -> Pipeline:
    """The product's pipeline on `collection`; `embedder` / `reranker` reuse loaded models (tests)."""
    return Pipeline(settings.replace(collection=collection), embedder=embedder, reranker=reranker)


def ingest_summary(ingest_report: Any) -> dict[str, Any]:
    """The counts of an IngestReport (whatever its exact fields), for results.json."""
    try:
        data = ingest_report.to_dict()
    except Exception:  # noqa: BLE001 - a summary must never fail the eval
        return {}
    data.pop("files", None)
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None}


def progress_bar(iterable: Iterable, total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr (stdout is kept for --json)."""
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled, dynamic_ncols=True)


# Answer.provider of each answerer (rag.answering): what a row of `rag eval answers` says answered it.
_PROVIDER_ANSWERER = {"openai": "llm", "reader": "reader", "extractive": "extractive"}


def answerer_used(settings: Settings, kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The answerer a run actually used, for its config: {"answerer": "llm" | "reader" | "extractive" | "none",
    "answerer_model": the LLM model, the reader model path, or None}.

    From the rows' `provider` (answers runs: the reader falls back to the sentence answerer when its model does
    not load, so the settings alone cannot say), else from the settings; "none" for retrieval runs, which
    answer nothing.
    """
    if kind != "answers":
        return {"answerer": "none", "answerer_model": None}
    used = {_PROVIDER_ANSWERER.get(str(r.get("provider")), "") for r in rows} - {""}
    if not used:  # no rows (nothing answered yet): what the settings ask for
        used = {"llm" if settings.llm_enabled else "reader" if reader_enabled(settings) else "extractive"}
    # one name; a mixed run (resumed rows, a reader that failed to load part way) lists them all
    order = ("llm", "reader", "extractive")
    name = "+".join(a for a in order if a in used)
    models = {"llm": settings.llm_model, "reader": settings.reader_model, "extractive": None}
    chosen = [str(models[a]) for a in order if a in used and models[a]]
    return {"answerer": name, "answerer_model": ", ".join(chosen) or None}


def _record_answerer(results: dict[str, Any], rows: list[dict[str, Any]], settings: Settings, kind: str) -> None:
    """Put the answerer used into results["config"], and drop `llm_model` from runs no LLM took part in: the
    settings always carry a default model name (gpt-4o-mini), which read as if an extractive run had used it."""
    config = results.setdefault("config", {})
    config.update(answerer_used(settings, kind, rows))
    llm_took_part = "llm" in config["answerer"] or (results.get("dataset") or {}).get(
        "conversation", {}).get("condenser") == "llm"
    if not llm_took_part:
        config.pop("llm_model", None)


def write_results(results: dict[str, Any], rows: list[dict[str, Any]], out: str | Path | None, settings: Settings,
                  kind: str) -> dict[str, Any]:
    """Write the report folder (results.json, report.md, questions.jsonl, plots) via evals.report; returns
    `results` with `out_dir` set (a timestamped folder under state_dir/evals without `out`) and the answerer
    actually used in its config (`answerer_used`)."""
    _record_answerer(results, rows, settings, kind)
    out_dir = Path(out) if out else default_out_dir(settings, kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    results["out_dir"] = str(out_dir.resolve())
    report.write_report(out_dir, results, rows)
    return results
