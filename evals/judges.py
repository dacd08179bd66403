"""Faithfulness judges: is an answer supported by its context? One interface, three backends.

    judge.score(context, question, answer) -> JudgeResult(score in [0, 1], supported, claims)

* LexicalJudge: offline, no model. Splits the answer into claims (sentences) and checks that each
  claim's content words are present in the context. Cheap and deterministic, blind to paraphrase
  and negation; validate it (evals.judge_validation) before trusting it.
* NLIJudge: a sentence-transformers CrossEncoder NLI model (premise = context, hypothesis = claim);
  the claim score is P(entailment). Loads lazily; ModelLoadError when the weights are unavailable.
* LLMJudge: RAGAS-style, through the openai client: one call splits the answer into atomic claims,
  another gives a verdict per claim against the context. JSON replies are parsed leniently
  (code fences, prose around the JSON, "yes"/"no" verdicts).

`score` is the answer-level faithfulness (share of supported claims for the LLM judge, mean claim
score for the others); `supported` is True when every claim is supported. An answer without claims
(empty) scores 1.0: callers skip abstentions before judging. `judge.entails(premise, hypothesis)`
adapts any judge to the support function of evals.metrics.citation_scores.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from rag.answering.citations import sentences, strip_citation_markers
from rag.errors import ConfigError, LLMError, ModelLoadError
from rag.lexical import BM25Encoder

log = logging.getLogger(__name__)


@dataclass
class ClaimVerdict:
    """One claim of an answer and whether the context supports it."""

    claim: str
    supported: bool
    score: float
    reason: str = ""


@dataclass
class JudgeResult:
    """Answer-level faithfulness with the per-claim verdicts behind it."""

    score: float
    supported: bool
    claims: list[ClaimVerdict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "supported": self.supported,
            "claims": [c.__dict__ for c in self.claims],
        }


def strip_markers(text: str) -> str:
    """Remove citation markers like [1] or [2, 3] from answer text (the product's one marker grammar)."""
    return strip_citation_markers(text)


def split_claims(answer: str) -> list[str]:
    """Answer sentences without citation markers (the product's one sentence splitter)."""
    out = []
    for sent in sentences(answer):
        claim = strip_markers(sent)
        if re.search(r"\w", claim):
            out.append(claim)
    return out


def _aggregate(claims: list[ClaimVerdict], score: float | None = None) -> JudgeResult:
    if not claims:
        return JudgeResult(score=1.0, supported=True, claims=[])
    value = score if score is not None else sum(c.score for c in claims) / len(claims)
    return JudgeResult(score=float(min(max(value, 0.0), 1.0)), supported=all(c.supported for c in claims), claims=claims)


class Judge(ABC):
    """A faithfulness judge. Subclasses implement `score`."""

    name: str = "judge"

    @abstractmethod
    def score(self, context: str, question: str, answer: str) -> JudgeResult:
        """Judge how well `context` supports `answer` (the question is for reference only)."""

    def entails(self, premise: str, hypothesis: str) -> bool:
        """Support function for ALCE citation metrics: does `premise` support `hypothesis`?"""
        return self.score(premise, "", hypothesis).supported

    def config(self) -> dict[str, Any]:
        """The judge's settings, for eval reports."""
        return {"name": self.name}


# --------------------------------------------------------------------------------------------
# Lexical judge
# --------------------------------------------------------------------------------------------

# Function words on top of the BM25 stop list: they carry no claim, so they must not count as
# "unsupported" when the context happens not to contain them.
_EXTRA_STOPWORDS = frozenset(
    """about above after again against all also am any because been before being below between both
    can could did do does doing down during each few from further had has have having he her here
    hers herself him himself his how i its itself just me more most my myself nor now off once only
    other our ours out over own same she should so some than that's them themselves those through
    too under until up very we were what when where which while who whom why would you your yours
    one ones known called named well may might must shall us its""".split()
    # Polarity words: "yes"/"no" answers cannot be checked by word overlap (the context never says
    # "yes"), so they are not content; the claim then has no checkable words and is not penalized.
    + ["yes", "no", "not", "neither", "nor"]
)
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)


class LexicalJudge(Judge):
    """Offline judge: a claim is supported when the context covers its content words.

    Content words are the BM25 tokens (stemmed, stop words removed) of rag.lexical.BM25Encoder,
    minus a few more function words. Each answer token has a weight: numbers `number_weight`,
    capitalized words inside a sentence (names) `entity_weight`, others 1. The claim score is the
    weighted share of its tokens found in the context (or, optionally, the question):
        claim score = sum(w_t for t in claim if t in context) / sum(w_t for t in claim)
    A claim is supported when its score >= `threshold`. The answer score is the mean claim score
    times a penalty for unsupported *extra* material: `novel_penalty` ** (number of distinct
    content tokens absent from the context), so one invented name or number in a long sentence
    still lowers the score where a plain ratio would hide it.
    """

    name = "lexical"

    def __init__(
        self,
        threshold: float = 0.8,
        number_weight: float = 3.0,
        entity_weight: float = 2.0,
        question_credit: bool = False,
        novel_penalty: float = 1.0,
        language: str = "english",
    ) -> None:
        self.threshold = threshold
        self.number_weight = number_weight
        self.entity_weight = entity_weight
        self.question_credit = question_credit
        self.novel_penalty = novel_penalty
        self._encoder = BM25Encoder(language=language)
        self._word_cache: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "threshold": self.threshold,
            "number_weight": self.number_weight,
            "entity_weight": self.entity_weight,
            "question_credit": self.question_credit,
            "novel_penalty": self.novel_penalty,
        }

    def _term(self, word: str) -> str | None:
        """The BM25 token of one word, or None for stop/function words."""
        lower = word.lower()
        if lower in _EXTRA_STOPWORDS:
            return None
        cached = self._word_cache.get(lower, "")
        if cached != "":
            return cached
        toks = self._encoder.tokenize(lower)
        term = toks[0] if len(toks) == 1 else (" ".join(toks) or None)
        with self._lock:
            self._word_cache[lower] = term
        return term

    def _terms(self, text: str) -> set[str]:
        return {t for w in _WORD_RE.findall(text) if (t := self._term(w))}

    def weighted_terms(self, claim: str) -> dict[str, float]:
        """Content terms of a claim with their weights (the max weight when a term repeats)."""
        weights: dict[str, float] = {}
        for i, match in enumerate(_WORD_RE.finditer(claim)):
            word = match.group(0)
            term = self._term(word)
            if not term:
                continue
            if any(ch.isdigit() for ch in word):
                w = self.number_weight
            elif word[0].isupper() and i > 0:
                w = self.entity_weight
            else:
                w = 1.0
            weights[term] = max(weights.get(term, 0.0), w)
        return weights

    def score(self, context: str, question: str, answer: str) -> JudgeResult:
        known = self._terms(context)
        if self.question_credit:
            known |= self._terms(question)
        verdicts: list[ClaimVerdict] = []
        novel: set[str] = set()
        for claim in split_claims(answer):
            weights = self.weighted_terms(claim)
            if not weights:
                verdicts.append(ClaimVerdict(claim, True, 1.0, "no content words"))
                continue
            total = sum(weights.values())
            missing = [t for t in weights if t not in known]
            novel.update(missing)
            value = 1.0 - sum(weights[t] for t in missing) / total
            reason = "all content words in context" if not missing else "not in context: " + ", ".join(missing[:8])
            verdicts.append(ClaimVerdict(claim, value >= self.threshold, value, reason))
        if not verdicts:
            return _aggregate(verdicts)
        mean = sum(c.score for c in verdicts) / len(verdicts)
        return _aggregate(verdicts, mean * (self.novel_penalty ** len(novel)))


# --------------------------------------------------------------------------------------------
# NLI judge
# --------------------------------------------------------------------------------------------


class NLIJudge(Judge):
    """NLI cross-encoder judge: claim score = P(entailment | premise=context, hypothesis=claim).

    `model_name` is any sentence-transformers CrossEncoder NLI checkpoint (name or local path) whose
    config names an "entailment" label. The model loads on first use.
    """

    name = "nli"

    def __init__(self, model_name: str = "cross-encoder/nli-deberta-v3-small", threshold: float = 0.5,
                 device: str = "cpu", batch_size: int = 16) -> None:
        self.model_name = model_name
        self.threshold = threshold
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._entail_index: int | None = None
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_name, "threshold": self.threshold}

    def load(self) -> None:
        """Load the model now (raises ModelLoadError with what to do when it cannot)."""
        with self._lock:
            if self._model is not None:
                return
            try:
                from sentence_transformers import CrossEncoder  # heavy (torch): only when the NLI judge loads

                model = CrossEncoder(self.model_name, device=self.device)
            except Exception as exc:  # noqa: BLE001 - OSError, HF hub errors, ValueError: all mean "no weights"
                raise ModelLoadError(
                    f"NLI judge model {self.model_name!r} could not be loaded ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); download it or pass a local path, "
                    "or use the lexical or LLM judge"
                ) from exc
            id2label = getattr(model.config, "id2label", None) or getattr(model.model.config, "id2label", {})
            labels = {int(i): str(name).lower() for i, name in dict(id2label).items()}
            entail = [i for i, name in labels.items() if name.startswith("entail")]
            if not entail:
                raise ModelLoadError(
                    f"NLI judge model {self.model_name!r} has no 'entailment' label (labels: {labels}); "
                    "use an NLI cross-encoder such as cross-encoder/nli-deberta-v3-small"
                )
            self._entail_index = entail[0]
            self._model = model

    def score(self, context: str, question: str, answer: str) -> JudgeResult:
        claims = split_claims(answer)
        if not claims:
            return _aggregate([])
        self.load()
        logits = np.asarray(
            self._model.predict([(context, c) for c in claims], batch_size=self.batch_size, show_progress_bar=False,
                                apply_softmax=False),
            dtype=float,
        )
        logits = logits.reshape(len(claims), -1)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        verdicts = []
        for claim, row in zip(claims, probs):
            p = float(row[self._entail_index])
            verdicts.append(ClaimVerdict(claim, p >= self.threshold, p, f"P(entailment)={p:.3f}"))
        return _aggregate(verdicts)


# --------------------------------------------------------------------------------------------
# LLM judge
# --------------------------------------------------------------------------------------------

CLAIMS_PROMPT = """Break the ANSWER to the QUESTION into short, self-contained factual claims.
Each claim must be understandable without the others (replace pronouns with the names they refer to).
Do not add facts that are not in the answer.
Reply with JSON only: {{"claims": ["claim 1", "claim 2", ...]}}

QUESTION: {question}
ANSWER: {answer}"""

VERDICT_PROMPT = """Decide for each CLAIM whether it can be directly inferred from the CONTEXT.
Verdict 1 if the context supports the claim, 0 if the context does not support it or contradicts it.
Use only the context, not your own knowledge.
Reply with JSON only: {{"verdicts": [{{"claim": "...", "reason": "...", "verdict": 1 or 0}}, ...]}}
with one verdict per claim, in the same order.

CONTEXT:
{context}

CLAIMS:
{claims}"""

_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_json_reply(text: str) -> Any:
    """Parse JSON from an LLM reply: plain, inside ``` fences, or the first {...}/[...] in prose.

    Raises ValueError when no JSON value can be found.
    """
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE_RE.findall(text)]
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    decoder = json.JSONDecoder()
    for cand in candidates:
        if not cand:
            continue
        try:
            return json.loads(cand)
        except json.JSONDecodeError:
            pass
        # a valid JSON value followed by trailing prose
        for i, ch in enumerate(cand):
            if ch in "{[":
                try:
                    return decoder.raw_decode(cand[i:])[0]
                except json.JSONDecodeError:
                    continue
    raise ValueError(f"no JSON found in reply: {text[:120]!r}")


def _verdict_value(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value >= 0.5
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "yes", "true", "supported", "support", "entailed", "faithful"):
            return True
        if v in ("0", "no", "false", "unsupported", "not supported", "contradicted", "unfaithful"):
            return False
    return None


class LLMJudge(Judge):
    """RAGAS-style faithfulness through an OpenAI-compatible endpoint (base_url/model/key from Settings)."""

    name = "llm"

    def __init__(self, settings: Any = None, *, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, timeout_s: float | None = None, max_retries: int | None = None,
                 client: Any = None) -> None:
        self.base_url = base_url or (settings.llm_base_url if settings is not None else None)
        self.model = model or (settings.llm_model if settings is not None else "gpt-4o-mini")
        key = api_key or (settings.resolved_api_key if settings is not None else None)
        timeout = timeout_s if timeout_s is not None else (settings.llm_timeout_s if settings is not None else 60.0)
        retries = max_retries if max_retries is not None else (settings.llm_max_retries if settings is not None else 2)
        if client is None:
            if not self.base_url and not key:
                raise ConfigError(
                    "LLM judge needs an endpoint: set RAG_LLM_BASE_URL (any OpenAI-compatible server) "
                    "or OPENAI_API_KEY, or use the lexical judge"
                )
            import openai  # a slow import, needed only by the LLM judge

            # Local OpenAI-compatible servers accept any key; the client insists on one being set.
            client = openai.OpenAI(base_url=self.base_url, api_key=key or "not-needed", timeout=timeout,
                                   max_retries=retries)
        self._client = client

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "base_url": self.base_url}

    def _chat(self, prompt: str) -> str:
        try:
            resp = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=0.0,
            )
        except Exception as exc:  # noqa: BLE001 - openai raises many types; all mean "the judge call failed"
            raise LLMError(f"LLM judge call to {self.base_url or 'OpenAI'} (model {self.model}) failed: {exc}") from exc
        content = resp.choices[0].message.content if resp.choices else None
        if not content:
            raise LLMError(f"LLM judge got an empty reply from {self.base_url or 'OpenAI'} (model {self.model})")
        return content

    def extract_claims(self, question: str, answer: str) -> list[str]:
        """Atomic claims from the LLM; falls back to sentences when the reply has no usable JSON."""
        reply = self._chat(CLAIMS_PROMPT.format(question=question, answer=strip_markers(answer)))
        try:
            data = parse_json_reply(reply)
            items = data.get("claims", data.get("statements")) if isinstance(data, dict) else data
            claims = [str(c).strip() for c in items if str(c).strip()] if isinstance(items, list) else []
        except (ValueError, AttributeError, TypeError):
            claims = []
        if not claims:
            log.warning("LLM judge: claims reply unusable (%r); using answer sentences", reply[:80])
            claims = split_claims(answer)
        return claims

    def judge_claims(self, context: str, claims: list[str]) -> list[ClaimVerdict]:
        """One verdict per claim; a claim without a usable verdict counts as unsupported."""
        numbered = "\n".join(f"{i}. {c}" for i, c in enumerate(claims, start=1))
        reply = self._chat(VERDICT_PROMPT.format(context=context, claims=numbered))
        try:
            data = parse_json_reply(reply)
        except ValueError:
            data = None
        items = data.get("verdicts", data.get("statements")) if isinstance(data, dict) else data
        items = items if isinstance(items, list) else []
        verdicts = []
        for i, claim in enumerate(claims):
            item = items[i] if i < len(items) else None
            value: bool | None = None
            reason = ""
            if isinstance(item, dict):
                value = _verdict_value(item.get("verdict", item.get("supported")))
                reason = str(item.get("reason", ""))
            elif item is not None:
                value = _verdict_value(item)
            if value is None:
                reason = reason or "no usable verdict in the judge's reply"
                value = False
            verdicts.append(ClaimVerdict(claim, value, 1.0 if value else 0.0, reason))
        return verdicts

    def score(self, context: str, question: str, answer: str) -> JudgeResult:
        if not split_claims(answer):
            return _aggregate([])
        claims = self.extract_claims(question, answer)
        verdicts = self.judge_claims(context, claims)
        return _aggregate(verdicts, sum(v.supported for v in verdicts) / len(verdicts))


JUDGES: dict[str, Callable[..., Judge]] = {"lexical": LexicalJudge, "nli": NLIJudge, "llm": LLMJudge}


def make_judge(name: str, settings: Any = None, **kwargs: Any) -> Judge:
    """Build a judge by name: "lexical", "nli" (kwargs: model_name) or "llm" (uses settings)."""
    key = name.strip().lower()
    if key == "lexical":
        return LexicalJudge(**kwargs)
    if key == "nli":
        return NLIJudge(**kwargs)
    if key == "llm":
        return LLMJudge(settings, **kwargs)
    raise ConfigError(f"unknown judge {name!r}; use one of: {', '.join(JUDGES)}")
