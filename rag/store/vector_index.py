"""How the dense leg is indexed and searched: quantization, HNSW, ACORN for filtered queries.

One `VectorIndexConfig` drives both drivers (Edge and the qdrant-client server), so a collection is
built and searched alike on either backend:

- build time (fixed when the collection is created, recorded by the engine with the collection):
  `quantization` (none | scalar = int8 | binary), `hnsw_m`, `hnsw_ef_construct`;
- search time (every dense query): `rescore` + `oversampling` (the quantized candidates re-scored with
  the original float vectors), `hnsw_ef`, and `acorn` (ACORN filtered HNSW traversal, used by the
  engine only when the filter passes at most `acorn_max_selectivity` of the points, e.g. an ACL
  label few chunks carry).

The defaults were chosen by `rag bench --parts scale` at 100k and 1M chunks (see README "Scale").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag.errors import ConfigError

QUANTIZATIONS = ("none", "scalar", "binary")


@dataclass(frozen=True)
class VectorIndexConfig:
    """Dense-vector index settings (the `Settings` fields dense_quantization, dense_rescore,
    dense_oversampling, hnsw_*, acorn*)."""

    quantization: str = "scalar"  # none | scalar (int8, 4x smaller) | binary (1 bit, 32x smaller)
    rescore: bool = True  # re-score the quantized candidates with the float vectors
    oversampling: float = 2.0  # candidates taken from the quantized index per result before rescoring
    hnsw_m: int = 16  # graph edges per node
    hnsw_ef_construct: int = 100  # candidate list while building the graph
    # Extra graph edges per indexed payload value ("filterable HNSW"); None: the engine default (= m);
    # 0: none, filtered queries rely on ACORN instead (the build skips one sub-graph per frequent value).
    hnsw_payload_m: int | None = None
    hnsw_ef: int | None = 256  # candidate list while searching (None: the engine's default)
    acorn: bool = True  # ACORN traversal for restrictive filters (ACL labels few chunks carry)
    acorn_max_selectivity: float = 0.4  # ACORN only when the filter passes at most this share of points
    # Engine thresholds (not user settings; tests lower them to get an HNSW graph from a few points):
    # segments above indexing_threshold_kb of vectors get HNSW (None: the engine default), and a
    # search whose filter passes fewer than full_scan_threshold_kb of vectors scans them instead.
    full_scan_threshold_kb: int = 10_000
    indexing_threshold_kb: int | None = None

    def __post_init__(self) -> None:
        check(self)

    @classmethod
    def from_settings(cls, settings: Any) -> "VectorIndexConfig":
        """The config the settings describe (`dense_quantization`, `hnsw_*`, `acorn*` ...); a settings-like
        object without some of these fields gets the defaults for them."""
        names = {"quantization": "dense_quantization", "rescore": "dense_rescore", "oversampling": "dense_oversampling",
                 "hnsw_m": "hnsw_m", "hnsw_ef_construct": "hnsw_ef_construct", "hnsw_payload_m": "hnsw_payload_m",
                 "hnsw_ef": "hnsw_ef", "acorn": "acorn", "acorn_max_selectivity": "acorn_max_selectivity"}
        return cls(**{ours: getattr(settings, theirs) for ours, theirs in names.items() if hasattr(settings, theirs)})

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for reports and `rag stats`."""
        return {"quantization": self.quantization, "rescore": self.rescore, "oversampling": self.oversampling,
                "hnsw_m": self.hnsw_m, "hnsw_ef_construct": self.hnsw_ef_construct,
                "hnsw_payload_m": self.hnsw_payload_m, "hnsw_ef": self.hnsw_ef,
                "acorn": self.acorn, "acorn_max_selectivity": self.acorn_max_selectivity}


def check(cfg: Any) -> None:
    """Raise ConfigError naming the setting when a value cannot work (`rag.config.validate` runs it too)."""
    if cfg.quantization not in QUANTIZATIONS:
        raise ConfigError(f"setting 'dense_quantization' is {cfg.quantization!r}; use none, scalar or binary")
    if not 1.0 <= float(cfg.oversampling) <= 16.0:
        raise ConfigError(f"setting 'dense_oversampling' is {cfg.oversampling}; use a number from 1 to 16")
    if not 4 <= int(cfg.hnsw_m) <= 128:
        raise ConfigError(f"setting 'hnsw_m' is {cfg.hnsw_m}; use 4 to 128 (16 is usual)")
    if not 8 <= int(cfg.hnsw_ef_construct) <= 1024:
        raise ConfigError(f"setting 'hnsw_ef_construct' is {cfg.hnsw_ef_construct}; use 8 to 1024 (100 is usual)")
    if cfg.hnsw_payload_m is not None and not 0 <= int(cfg.hnsw_payload_m) <= 128:
        raise ConfigError(f"setting 'hnsw_payload_m' is {cfg.hnsw_payload_m}; use 0 to 128, or leave it unset (= hnsw_m)")
    if cfg.hnsw_ef is not None and not 1 <= int(cfg.hnsw_ef) <= 4096:
        raise ConfigError(f"setting 'hnsw_ef' is {cfg.hnsw_ef}; use 1 to 4096, or leave it unset for the engine default")
    if not 0.0 <= float(cfg.acorn_max_selectivity) <= 1.0:
        raise ConfigError(f"setting 'acorn_max_selectivity' is {cfg.acorn_max_selectivity}; use a share from 0 to 1")


def dense_search_params(models: Any, index: VectorIndexConfig, exact: bool, filtered: bool) -> Any:
    """The dense leg's SearchParams (HNSW ef, quantization rescoring, ACORN on filtered queries).

    `models` is the engine's model module (qdrant_edge, or qdrant_client.models): both name these
    classes and their fields alike. `exact` searches exhaustively on the float vectors (recall checks).
    """
    if exact:
        return models.SearchParams(exact=True, quantization=models.QuantizationSearchParams(ignore=True))
    return models.SearchParams(
        hnsw_ef=index.hnsw_ef,
        # "none" on a collection built quantized: search the float vectors only.
        quantization=(models.QuantizationSearchParams(rescore=index.rescore, oversampling=index.oversampling)
                      if index.quantization != "none" else models.QuantizationSearchParams(ignore=True)),
        acorn=(models.AcornSearchParams(enable=True, max_selectivity=index.acorn_max_selectivity)
               if index.acorn and filtered else None),
    )
