"""Which backend a collection's vectors came from, whether an embedder may add to it, and what `rag stats` shows.

A collection records `CollectionInfo.embed_backend` when it is created (None in collections from before
backends, which torch-fp32 built). An ingest whose embedder runs another backend is allowed only when the
quality guard measured the two backends' vectors within cosine `EMBED_MIN_COSINE` of each other; otherwise
it is refused with ModelMismatchError, like an ingest with another model. When no probe compared the two
yet (e.g. a named backend was set and `auto` never ran), the comparison is measured once on the probe set
and remembered beside the `auto` choices.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

from rag.backends.guard import (
    EMBED_MIN_COSINE,
    REFERENCE,
    ProbeReport,
    choices_path,
    cpu_signature,
    remember_report,
    remembered_report,
    measured_min_cosine,
    model_files_key,
    probe_backends,
)
from rag.backends.runtime import BACKENDS, default_cache_dir, load_backend
from rag.errors import ModelMismatchError

log = logging.getLogger(__name__)

UNRECORDED = f"{REFERENCE} (not recorded: built before backends)"


def vectors_backend(recorded: str | None) -> str:
    """The backend a collection's vectors came from: the recorded one, or torch-fp32 when none was recorded."""
    return recorded or REFERENCE


def embedder_backend(embedder: Any) -> tuple[str, ProbeReport | None, Any]:
    """(backend name, its probe report or None, the underlying sentence-transformers model or None) of an embedder.

    Works for `rag.embedding.Embedder` (its `model` is a backend, or the plain model for torch-fp32) and for
    any object with a `backend` attribute; one without it is taken as torch-fp32.
    """
    name = getattr(embedder, "backend", None) or REFERENCE
    model = getattr(embedder, "model", None)
    report = getattr(model, "report", None) if model is not None else None
    base = getattr(model, "base_model", model) if model is not None else None
    return name, report if isinstance(report, ProbeReport) else None, base


def ensure_collection_backend(collection: str, recorded: str | None, embedder: Any,
                              state_dir: str | os.PathLike[str] | None,
                              probe_texts: Sequence[str] | None = None) -> str:
    """Raise ModelMismatchError unless `embedder`'s vectors may join a collection whose vectors came from `recorded`.

    Both of its uses are checked: the backend that embeds passages and, when `auto` chose another one for
    single queries (`embedder.query_backend`), that one too. Returns the reason they may (for logs). The
    message of a refusal names the collection, both backends, the measured agreement and what to do: set the
    embed backend back, or re-index into a new collection.
    """
    current, report, base_model = embedder_backend(embedder)
    reasons = [_ensure_backend_agrees(collection, recorded, name, report, base_model, embedder, state_dir, probe_texts)
               for name in dict.fromkeys([current, getattr(embedder, "query_backend", None) or current])]
    return "; ".join(reasons)


def _ensure_backend_agrees(collection: str, recorded: str | None, current: str, report: ProbeReport | None,
                           base_model: Any, embedder: Any, state_dir: str | os.PathLike[str] | None,
                           probe_texts: Sequence[str] | None) -> str:
    stored = vectors_backend(recorded)
    if stored == current:
        return f"same backend {stored}"
    value = measured_min_cosine(stored, current, report)
    model_path = str(getattr(embedder, "model_name", "") or "")
    if value is None and state_dir is not None and model_path:
        value = measured_min_cosine(stored, current, remembered_agreement(state_dir, model_path))
    if value is None and base_model is not None and state_dir is not None and stored in BACKENDS and current in BACKENDS:
        measured = measure_vector_agreement(base_model, model_path, [stored, current], state_dir, probe_texts)
        value = measured_min_cosine(stored, current, measured)
    if value is not None and value >= EMBED_MIN_COSINE:
        reason = f"{stored} and {current} vectors agree (min cosine {value:.5f} >= {EMBED_MIN_COSINE} on the probe set)"
        log.info("collection %r: %s", collection, reason)
        return reason
    built = UNRECORDED if recorded is None else stored
    why = (f"their vectors disagree beyond the quality guard (min cosine {value:.4f} < {EMBED_MIN_COSINE} on the probe set)"
           if value is not None else "no quality-guard measurement compares the two, so their vectors may not mix")
    raise ModelMismatchError(
        f"collection {collection!r} holds vectors from the {built} embedding backend, but this process embeds with "
        f"{current}; {why}. Set RAG_EMBED_BACKEND={stored} (embed_backend in rag.toml) to add to this collection, "
        f"or re-index with {current} into a new collection (RAG_COLLECTION=<new name>)")


def measure_vector_agreement(model: Any, model_path: str, names: Sequence[str], state_dir: str | os.PathLike[str],
                             probe_texts: Sequence[str] | None = None) -> ProbeReport:
    """Probe torch-fp32 and `names` over the same loaded model, remember the pairwise cosines, return the report.

    Kept apart from the `auto` choice (another key in the same file), so measuring two named backends
    never changes which backend `auto` picked.
    """
    cache_dir = default_cache_dir(state_dir)
    backends = {name: load_backend(name, model_path, "embedder", cache_dir, model=model)
                for name in dict.fromkeys([REFERENCE, *names])}
    report = probe_backends("embedder", backends, texts=probe_texts)
    _remember_agreement(state_dir, model_path, report)
    log.info("measured embedder backend agreement for %s: %s", model_path, {
        a: {b: round(v, 5) for b, v in row.items() if b != a} for a, row in report.pairwise_min_cosine.items()})
    return report


def _agreement_key(model_path: str) -> str:
    return f"agreement:embedder:{model_files_key(model_path)}"


def remembered_agreement(state_dir: str | os.PathLike[str], model_path: str) -> ProbeReport | None:
    """The remembered backend-agreement probe for this model and CPU, or None."""
    return remembered_report(state_dir, _agreement_key(model_path))


def _remember_agreement(state_dir: str | os.PathLike[str], model_path: str, report: ProbeReport) -> None:
    remember_report(state_dir, _agreement_key(model_path), "agreement", model_path, report)


def describe_backend(setting: str, model_path: str, role: str, state_dir: str | os.PathLike[str],
                     loaded: str | None = None, loaded_query: str | None = None) -> str:
    """One line for `rag stats` / the UI: the backend in use (or configured), and for `auto` the probe's note.

    Cheap: loads no model and hashes no model file (the remembered probe is found by model name and CPU).
    `loaded` is the backend of an already loaded model, when there is one, and `loaded_query` the one its
    single queries run on (embedder), when it differs.
    """
    entry = _latest_probe(state_dir, role, model_path) if setting == "auto" else None
    refused = ""
    if entry is not None:
        results = entry.get("report", {}).get("results", {})
        names = [name for name, r in results.items() if not r.get("passed", True)]
        if names:
            refused = "; refused by the quality guard: " + ", ".join(names)
    if loaded:
        uses = loaded if not loaded_query or loaded_query == loaded else f"{loaded}, queries {loaded_query}"
        return f"{uses} (auto: fastest passing the quality guard{refused})" if setting == "auto" else uses
    if setting != "auto":
        return setting
    if entry is None:
        return "auto (not probed yet: the first model load measures the backends)"
    chosen = entry.get("report", {}).get("chosen", "?")
    query = entry.get("report", {}).get("chosen_query") or chosen
    uses = chosen if query == chosen else f"{chosen}, queries {query}"
    return f"{uses} (auto: fastest passing the quality guard, probed {entry.get('probed_at', '?')}{refused})"


def _latest_probe(state_dir: str | os.PathLike[str], role: str, model_path: str) -> dict[str, Any] | None:
    try:
        data = json.loads(choices_path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cpu = cpu_signature()
    entries = [e for e in data.values() if isinstance(e, dict) and e.get("role") == role
               and e.get("model") == str(model_path) and e.get("cpu") == cpu]
    return max(entries, key=lambda e: e.get("probed_at", "")) if entries else None
