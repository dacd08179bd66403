"""One typed settings object: defaults < rag.toml < RAG_* environment variables < CLI flags.

Every component takes its settings as constructor arguments built from this object, so tests and
evals can build any combination without global state.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from rag.errors import ConfigError
from rag.models import Mode
from rag.secrets import mask_key, redact, redact_data, url_secrets

__all__ = ["Settings", "load_settings", "validate", "redact", "mask_key", "BGE_QUERY_INSTRUCTION"]

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


# Texts per embedding call. 16 measured faster than 32 for every backend on a 2-core EPYC (fp32 1.36x,
# bf16 1.34x, int8 1.56x in one `rag bench --parts backends` run); the embedder's own default too.
DEFAULT_EMBED_BATCH_SIZE = 16


@dataclass
class Settings:
    """All user-facing settings. Field names map to `RAG_<NAME>` env vars and rag.toml keys."""

    # Store: embedded Qdrant Edge under state_dir unless qdrant_url is set.
    qdrant_url: str | None = None
    qdrant_path: str = ".rag/qdrant"
    qdrant_api_key: str | None = None
    collection: str = "default"
    state_dir: str = ".rag"

    # Models.
    embed_model: str = "BAAI/bge-small-en-v1.5"
    # None = pick from the model name (BGE English models get BGE_QUERY_INSTRUCTION); "" = none.
    query_instruction: str | None = None
    embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE
    embed_device: str = "cpu"
    rerank_model: str = "cross-encoder/ms-marco-MiniLM-L-6-v2"  # "none" turns reranking off
    rerank_batch_size: int = 32
    # Model backends (rag.backends): torch-fp32 (the reference) | torch-bf16 | onnx-fp32 | onnx-int8 | auto = the
    # fastest one passing the quality guard on this CPU, probed once (the first model load: an ONNX export, an int8
    # quantization and a probe of each backend) and remembered in <state_dir>/model_backends.json.
    embed_backend: str = "auto"
    rerank_backend: str = "auto"
    # Cross-encoder token budget (question + the passage's best-matching window); unset = the model's max length.
    rerank_max_tokens: int | None = None

    # Chunking (tokens of the embedding model's own tokenizer).
    chunk_tokens: int = 256
    chunk_overlap_tokens: int = 32
    max_file_mb: float = 200.0
    follow_symlinks: bool = False
    pdf_strategy: str = "fast"
    # OCR with Tesseract: auto = image files and PDF pages without a text layer; always = every PDF page too.
    ocr: str = "auto"  # auto | off | always
    # Server ingest jobs: background = parse, chunk and embed in a worker process at the lowest CPU priority, so
    # searches stay fast while a job runs (ingest.priority); normal = in the server process at full priority.
    # A CLI `rag ingest` without a server always runs in-process at normal priority.
    ingest_priority: str = "background"  # background | normal

    # BM25 term weighting (IDF is applied by Qdrant with Modifier.IDF).
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    bm25_language: str = "english"  # stemmer + stopwords; "none" disables both

    # Retrieval.
    top_k: int = 10
    mode: str = "rerank"  # dense | bm25 | hybrid | rerank
    leg_limit: int = 100  # top-N per retrieval leg before fusion
    rrf_k: int = 60
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    rerank_top_m: int = 30
    # None: rerank mode orders the top-M by the cross-encoder alone (right for a strong pretrained
    # reranker). A number w: the cross-encoder's order joins the dense and BM25 legs as a third RRF leg
    # with weight w (right for a weaker, domain-tuned reranker; `rag tune` measures and recommends it).
    rerank_fusion_weight: float | None = None

    # Dense index (rag.store.vector_index; chosen by `rag bench --parts scale`). Quantization and HNSW m /
    # ef_construct apply when a collection is created; rescoring, oversampling, hnsw_ef and ACORN to every query.
    dense_quantization: str = "scalar"  # none | scalar (int8) | binary
    dense_rescore: bool = True  # re-score quantized candidates with the original float vectors
    dense_oversampling: float = 2.0
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    hnsw_payload_m: int | None = None  # extra edges per indexed payload value; 0 = none (ACORN filters); unset = hnsw_m
    hnsw_ef: int | None = 256  # unset = the engine's default; below limit x oversampling the engine uses that
    acorn: bool = True  # ACORN for filters (ACL labels) that pass at most acorn_max_selectivity of the chunks
    acorn_max_selectivity: float = 0.4

    # Answering.
    llm_provider: str = "auto"  # auto | openai | extractive
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None  # falls back to OPENAI_API_KEY
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 2
    llm_temperature: float = 0.0
    evidence_min_score: float | None = None  # None = the answerer's calibrated default
    evidence_max_passages: int = 6
    evidence_token_budget: int = 2500
    strict_citations: bool = True
    # Offline answers: an extractive reader (SQuAD 2.0 style span head) finds the exact answer span; a Hub name
    # or a local folder (`rag tune --reader`); "none" keeps the sentence answerer, which is also the fallback
    # when the reader cannot load. It answers when best span score - no-answer score >= the margin.
    reader_model: str = "deepset/minilm-uncased-squad2"
    reader_no_answer_margin: float = 0.0
    # The gate can ask the reader (LLM answers only): on, the reader reads the evidence first and, when its
    # no-answer score beats the best span by at least -reader_gate_margin (best span - no-answer <
    # reader_gate_margin, a margin well below reader_no_answer_margin = a confident "not in here"), the product
    # abstains without calling the LLM. Off when the reader cannot load (a warning says so).
    reader_gate: str = "off"  # off | on
    reader_gate_margin: float = -4.0
    # Longest question accepted (characters): a pasted book is refused up front instead of being
    # embedded, searched and forwarded whole to the LLM.
    max_question_chars: int = 2000

    # Access control: labels a caller holds when none are given, and labels new chunks get.
    default_acl: list[str] = field(default_factory=lambda: ["public"])

    # UI.
    ui_host: str = "127.0.0.1"
    ui_port: int = 7860
    upload_dir: str = ".rag/uploads"
    # Server folders UI visitors may index (`rag ui --ingest-root DIR`); empty = folder ingest disabled.
    ingest_roots: list[str] = field(default_factory=list)
    # Folders whose `rag eval --out` runs the UI's Eval tab may open (relative to the working directory).
    eval_roots: list[str] = field(default_factory=lambda: ["results"])
    # Watched folders kept in sync (`rag serve`, `rag ingest --watch`): rag.toml `watch = [{path = "docs",
    # acl = ["team"]}]` (acl optional = default_acl; polling = true|false forces polling, default auto);
    # RAG_WATCH = comma-separated folders with the default labels.
    watch: list[dict[str, Any]] = field(default_factory=list)

    # Server (`rag serve`). server_url: a running server the CLI should use (also RAG_SERVER_URL).
    server_url: str | None = None
    server_rate_limit: float = 20.0  # requests per second per API key (token bucket); 0 = no limit
    server_rate_burst: float = 40.0  # bucket size: short bursts above the rate
    server_max_body_mb: float = 16.0  # JSON request bodies
    server_max_upload_mb: float = 200.0  # multipart uploads, counted while receiving

    @property
    def llm_enabled(self) -> bool:
        """True when answers go through an OpenAI-compatible endpoint rather than the extractive answerer."""
        if self.llm_provider == "extractive":
            return False
        if self.llm_provider == "openai":
            return True
        return bool(self.llm_base_url or self.resolved_api_key)

    @property
    def resolved_api_key(self) -> str | None:
        return self.llm_api_key or os.environ.get("OPENAI_API_KEY")

    @property
    def rerank_enabled(self) -> bool:
        return self.rerank_model.strip().lower() not in ("", "none", "off")

    def resolved_query_instruction(self) -> str:
        """The query prefix for the embedding model (BGE English models need one; others none)."""
        if self.query_instruction is not None:
            return self.query_instruction
        name = self.embed_model.lower()
        if "bge" in name and "-en" in name and "m3" not in name:
            return BGE_QUERY_INSTRUCTION
        return ""

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed (None values are ignored, so CLI flags can pass through)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def secrets(self) -> list[str]:
        """Every secret value these settings hold: API keys and the credentials inside the URLs."""
        values = [self.resolved_api_key, self.llm_api_key, self.qdrant_api_key,
                  *url_secrets(self.llm_base_url), *url_secrets(self.qdrant_url)]
        return [v for v in values if v]

    def redact(self, text: object) -> str:
        """`text` with these settings' secrets (and any secret-shaped value) masked; see rag.secrets.redact."""
        return redact(text, self.secrets())

    def public_dict(self) -> dict[str, Any]:
        """Settings as a dict with secrets redacted (keys masked, URL credentials removed), safe to show."""
        return redact_data(dataclasses.asdict(self), self.secrets())

def _coerce(name: str, raw: Any, type_hint: Any, source: str) -> Any:
    """Convert a TOML or environment value to the field's type, with an error naming the setting."""
    text = str(type_hint)
    try:
        if raw is None:
            return None
        if name == "watch":
            return _watch_entries(raw)
        if "list" in text:
            if isinstance(raw, list):
                return [str(x) for x in raw]
            return [part.strip() for part in str(raw).split(",") if part.strip()]
        if "bool" in text:
            if isinstance(raw, bool):
                return raw
            value = str(raw).strip().lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if "float" in text:
            if "None" in text and str(raw).strip().lower() in ("", "none"):
                return None
            return float(raw)
        if "int" in text:
            return int(raw)
        if "None" in text and str(raw).strip() == "" and name != "query_instruction":
            return None
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r} from {source}: {exc}; fix the value and retry") from exc


def _watch_entries(raw: Any) -> list[dict[str, Any]]:
    """The `watch` setting as a list of {path, acl?, polling?} tables (a bare string is a path)."""
    items = raw if isinstance(raw, list) else [p.strip() for p in str(raw).split(",") if p.strip()]
    entries = []
    for item in items:
        entry = {"path": item} if isinstance(item, str) else dict(item) if isinstance(item, dict) else None
        if entry is None or not isinstance(entry.get("path"), str) or not entry["path"].strip():
            raise ValueError(f"each watched folder needs a path, e.g. {{path = \"docs\", acl = [\"team\"]}}; "
                             f"got {item!r}")
        unknown = set(entry) - {"path", "acl", "polling"}
        if unknown:
            raise ValueError(f"watched folder {entry['path']!r}: unknown keys {sorted(unknown)} (path, acl, polling)")
        if "acl" in entry:
            acl = entry["acl"]
            entry["acl"] = [str(x) for x in acl] if isinstance(acl, list) else [str(acl)]
        if entry.get("polling") not in (None, True, False, "auto"):
            raise ValueError(f"watched folder {entry['path']!r}: polling is true, false or \"auto\"")
        entries.append(entry)
    return entries


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults, then rag.toml, then RAG_* env vars, then keyword overrides.

    `config_file` defaults to $RAG_CONFIG or ./rag.toml when present. Unknown keys are errors
    (a typo should never be silently ignored).
    """
    hints = get_type_hints(Settings)
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = Path(config_file or os.environ.get("RAG_CONFIG", "rag.toml"))
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc}); fix the file or remove it") from exc
        table = data.get("rag", data)
        for key, raw in table.items():
            if key not in names:
                raise ConfigError(f"{path}: unknown setting {key!r}; known settings: {', '.join(sorted(names))}")
            values[key] = _coerce(key, raw, hints[key], str(path))
    elif config_file is not None:
        raise ConfigError(f"config file {path} does not exist")

    for name in names:
        env_name = f"RAG_{name.upper()}"
        if env_name in os.environ:
            values[name] = _coerce(name, os.environ[env_name], hints[name], f"${env_name}")

    for key, raw in overrides.items():
        if raw is None:
            continue
        if key not in names:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = raw

    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Reject values that cannot work, naming the setting and what to do."""
    Mode.parse(settings.mode, field="setting 'mode'")
    if settings.llm_provider not in ("auto", "openai", "extractive"):
        raise ConfigError(f"setting 'llm_provider' is {settings.llm_provider!r}; use auto, openai or extractive")
    if settings.ocr not in ("auto", "off", "always"):
        raise ConfigError(f"setting 'ocr' is {settings.ocr!r}; use auto, off or always")
    if settings.reader_gate not in ("off", "on"):
        raise ConfigError(f"setting 'reader_gate' is {settings.reader_gate!r}; use off or on")
    if settings.ingest_priority not in ("background", "normal"):
        raise ConfigError(f"setting 'ingest_priority' is {settings.ingest_priority!r}; use background or normal")
    if settings.chunk_tokens < 16:
        raise ConfigError(f"setting 'chunk_tokens' is {settings.chunk_tokens}; use at least 16")
    if not 0 <= settings.chunk_overlap_tokens < settings.chunk_tokens:
        raise ConfigError("setting 'chunk_overlap_tokens' must be >= 0 and smaller than 'chunk_tokens'")
    if settings.rerank_fusion_weight is not None and not settings.rerank_fusion_weight >= 0:
        raise ConfigError(f"setting 'rerank_fusion_weight' is {settings.rerank_fusion_weight}; use a number >= 0 "
                          "or leave it unset to order by the cross-encoder alone")
    if settings.max_question_chars <= 0:
        raise ConfigError(f"setting 'max_question_chars' is {settings.max_question_chars}; it must be positive")
    for name in ("embed_backend", "rerank_backend"):
        if getattr(settings, name) not in ("auto", "torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"):
            raise ConfigError(f"setting {name!r} is {getattr(settings, name)!r}; use auto, torch-fp32, torch-bf16, "
                              "onnx-fp32 or onnx-int8")
    if settings.rerank_max_tokens is not None and settings.rerank_max_tokens < 32:
        raise ConfigError(f"setting 'rerank_max_tokens' is {settings.rerank_max_tokens}; use at least 32 or leave it unset")
    from rag.store.vector_index import VectorIndexConfig  # lazy: the store package is not needed to load settings

    VectorIndexConfig.from_settings(settings)  # raises ConfigError naming the dense-index setting
    if settings.rrf_k <= 0:
        raise ConfigError(f"setting 'rrf_k' is {settings.rrf_k}; it must be positive")
    if settings.top_k <= 0 or settings.leg_limit <= 0 or settings.rerank_top_m <= 0:
        raise ConfigError("settings 'top_k', 'leg_limit' and 'rerank_top_m' must be positive")
    if not settings.collection or not all(c.isalnum() or c in "-_" for c in settings.collection):
        raise ConfigError(
            f"setting 'collection' is {settings.collection!r}; use letters, digits, '-' and '_' only"
        )
