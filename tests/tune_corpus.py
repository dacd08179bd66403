"""A tiny three-topic collection written straight into a real store (for the tune and explore tests)."""

from __future__ import annotations

import uuid

from rag.models import Chunk
from rag.store import CollectionInfo, open_store
from rag.store.catalog import write_chunks

TOPICS = {
    "volcano.md": ("Volcanoes", ["magma", "lava", "eruption", "crater", "ash", "basalt", "caldera", "tephra"]),
    "bakery.md": ("Baking bread", ["dough", "yeast", "flour", "oven", "crust", "knead", "sourdough", "loaf"]),
    "orbit.md": ("Orbital mechanics", ["orbit", "satellite", "gravity", "apogee", "perigee", "thrust", "rocket", "velocity"]),
}
TEMPLATES = [
    "The {a} and the {b} are studied together in every serious course on this subject.",
    "Experts measure the {c} carefully because it changes how the {a} behaves over time.",
    "A simple experiment shows that more {b} leads to a stronger {d} in most cases.",
    "Historical records describe the {d} of the {c} in remarkable and vivid detail.",
]


def corpus(chunks_per_section: int = 5) -> list[Chunk]:
    """30 chunks: 3 files x 2 sections x 5 chunks, each 4 sentences built from its topic's words."""
    out = []
    for f, (title, words) in TOPICS.items():
        for s in range(2):
            section = f"{title} part {s + 1}"
            for i in range(chunks_per_section):
                w = words[(i + s) % 8:] + words[: (i + s) % 8]
                text = f"# {section}\n\n" + " ".join(
                    t.format(a=w[0], b=w[1 + j % 3], c=w[4 + (i % 3)], d=w[7 - j]) for j, t in enumerate(TEMPLATES))
                idx = s * chunks_per_section + i
                out.append(Chunk(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{f}#{idx}")), text=text,
                                 file_path=f"/docs/{f}", file_hash="h", file_type="md", chunk_index=idx,
                                 chunk_count=2 * chunks_per_section, char_start=0, char_end=len(text),
                                 section=section, file_name=f))
    return out


def build_store(settings, embedder, chunks: list[Chunk] | None = None):
    """A real embedded store holding `chunks` (default: `corpus()`), embedded with `embedder`."""
    chunks = chunks or corpus()
    store = open_store(settings)
    write_chunks(store, chunks, embedder.embed_passages([c.text for c in chunks]),
                 info=CollectionInfo(name=settings.collection, embed_model=embedder.model_name, dimension=embedder.dimension))
    store.flush()
    return store
