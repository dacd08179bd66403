"""The reader answerer: an extractive question-answering model finds the exact answer span in the evidence.

How it reads (`ReaderModel.read`):
- each evidence passage is tokenized with the question into windows of `max_length` tokens that overlap by
  `doc_stride` tokens, so a long passage is read whole and a span near a window edge is seen complete in
  the next window;
- every window yields start and end logits per token; a span's score is start logit + end logit (raw
  logits, not per-window softmax probabilities, so spans from different windows and passages are on one
  scale and compare directly — the Hugging Face SQuAD 2.0 post-processing);
- the top-N starts and ends of each window are paired (end >= start, at most `max_answer_tokens` long) and
  mapped back to character offsets in the passage through the tokenizer's offsets mapping;
- the no-answer score of a window is its [CLS] start + end logit. The question's no-answer score is the
  lowest over all windows (the window most sure that the answer is there speaks for the question), and
  the reader answers only when best span score - no-answer score >= `no_answer_margin`
  (`reader_no_answer_margin`; raise it to abstain more).

How it answers (`ReaderAnswerer.answer`): the span, in bold, inside its sentence from the passage (cut to a
readable length), followed by the `[n]` of its passage, e.g. `… in **1905**, Einstein published … [2]`.
Every answer is checked by `validate_citations` (strict), so citations stay inside the evidence allow-list,
and the bold span is verbatim passage text (whitespace collapsed). When the question asks for several things
("which two …", "name three …") it adds further non-overlapping spans that also clear the no-answer margin,
one line each.

Loading: `load_reader(name, device)` loads once per process (cached by name and device; a failure is cached
too, so an offline machine does not retry the Hub on every question). `make_reader_answerer` returns the
sentence answerer (`ExtractiveAnswerer`) with a warning when the reader cannot load, or when the setting is
`none`.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from rag.answering.citations import abstained_answer, checked_answer, split_sentences, validate_citations
from rag.errors import RagError
from rag.models import Answer, Evidence, Hit, TokenCallback

log = logging.getLogger(__name__)

DEFAULT_READER_MODEL = "deepset/minilm-uncased-squad2"
DISABLED = ("", "none", "off")
# Context shown around the span: enough to read the sentence, short enough for a table row or long sentence.
CONTEXT_CHARS = 160
RECENT_READS = 32  # ReaderModel remembers this many reads (see ReaderModel.read)

_COUNT_WORDS = {"two": 2, "both": 2, "pair": 2, "three": 3, "four": 4, "five": 5}
_LIST_RE = re.compile(r"\b(two|both|three|four|five)\b", re.IGNORECASE)


class ReaderUnavailable(RagError):
    """The reader model cannot be loaded (not found, offline, not a question-answering checkpoint)."""


@dataclass
class Span:
    """One candidate answer: where it is (passage index, char offsets) and how sure the reader is."""

    passage: int  # index into the passages given to `read`
    start: int  # char offset in that passage
    end: int  # exclusive
    text: str
    score: float  # start logit + end logit
    window_null: float  # [CLS] score of the window the span came from


@dataclass
class ReadResult:
    """Every candidate span of one question (best first) and the question's no-answer score."""

    spans: list[Span] = field(default_factory=list)
    null_score: float = float("inf")  # lowest [CLS] score over all windows; inf when nothing was read
    windows: int = 0

    @property
    def best(self) -> Span | None:
        return self.spans[0] if self.spans else None

    @property
    def gap(self) -> float:
        """Best span score minus the no-answer score (−inf when there is no span): answer when >= margin."""
        return self.spans[0].score - self.null_score if self.spans else float("-inf")


class ReaderModel:
    """A loaded question-answering checkpoint (`AutoModelForQuestionAnswering`) and its fast tokenizer."""

    def __init__(self, name_or_path: str, device: str = "cpu", max_length: int = 384, doc_stride: int = 128,
                 max_query_length: int = 64, batch_size: int = 16, bf16: bool = False,
                 allow_untrained_head: bool = False) -> None:
        # Lazy: torch and transformers load only when a reader is configured.
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        self.name = name_or_path
        self.device = device
        self.max_length = int(max_length)
        self.doc_stride = int(doc_stride)
        self.max_query_length = int(max_query_length)
        self.batch_size = int(batch_size)
        self.bf16 = bool(bf16)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model, info = AutoModelForQuestionAnswering.from_pretrained(name_or_path, output_loading_info=True)
        except Exception as exc:  # OSError (missing/offline), ValueError (not a QA model), HTTP errors ...
            raise ReaderUnavailable(f"reader model {name_or_path!r} cannot be loaded ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}); set RAG_READER_MODEL to a "
                                    "local folder (see `rag tune --reader`) or to 'none'") from exc
        fresh = [k for k in info.get("missing_keys", []) if "qa_outputs" in k]
        if fresh and not allow_untrained_head:
            # A plain BERT / sentence-transformers folder loads with a random span head: its "answers" would be
            # noise, so refuse it (and fall back) rather than answer nonsense.
            raise ReaderUnavailable(f"reader model {name_or_path!r} has no trained span head ({', '.join(fresh)} "
                                    "missing); train one with `rag tune --reader` and point RAG_READER_MODEL at it")
        if not getattr(self.tokenizer, "is_fast", True):
            raise ReaderUnavailable(f"reader model {name_or_path!r} has no fast tokenizer; offsets are needed "
                                    "to map spans back to the passage")
        self.model.to(device).eval()
        self._torch = torch
        # One forward at a time per model: the pipeline serves concurrent questions from one cached model.
        self._lock = threading.Lock()
        # The last few reads: the gate and an eval asking for the scores of an answer just given read the same
        # question and passages again; a repeat costs nothing.
        self._recent: collections.OrderedDict[tuple[Any, ...], ReadResult] = collections.OrderedDict()

    def _question(self, question: str) -> str:
        ids = self.tokenizer(question, add_special_tokens=False)["input_ids"]
        return question if len(ids) <= self.max_query_length else self.tokenizer.decode(ids[: self.max_query_length])

    def read(self, question: str, passages: Sequence[str], top_n: int = 20, max_answer_tokens: int = 30) -> ReadResult:
        """Candidate spans over all `passages` (best first, one per distinct passage/offset pair) and the
        no-answer score. Passages longer than one window are read in overlapping windows. The last
        `RECENT_READS` results are remembered (same question, passages and limits: the same result)."""

        idx = [i for i, p in enumerate(passages) if p and p.strip()]
        if not idx or not question.strip():
            return ReadResult()
        key = (id(self.model), question, tuple(passages), top_n, max_answer_tokens)
        with self._lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return self._recent[key]
        result = self._read(question, passages, idx, top_n, max_answer_tokens)
        with self._lock:
            self._recent[key] = result
            while len(self._recent) > RECENT_READS:
                self._recent.popitem(last=False)
        return result

    def _read(self, question: str, passages: Sequence[str], idx: list[int], top_n: int,
              max_answer_tokens: int) -> ReadResult:
        import numpy as np

        q = self._question(question)
        enc = self.tokenizer([q] * len(idx), [passages[i] for i in idx], truncation="only_second",
                             max_length=self.max_length, stride=self.doc_stride, return_overflowing_tokens=True,
                             return_offsets_mapping=True, padding="longest")
        n = len(enc["input_ids"])
        names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        starts, ends = [], []
        torch = self._torch
        with self._lock, torch.inference_mode():
            for b in range(0, n, self.batch_size):
                batch = {k: torch.tensor(enc[k][b:b + self.batch_size], device=self.device) for k in names}
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16 and self.device == "cpu"):
                    out = self.model(**batch)
                starts.append(out.start_logits.float().cpu().numpy())
                ends.append(out.end_logits.float().cpu().numpy())
        start_logits, end_logits = np.concatenate(starts), np.concatenate(ends)

        best: dict[tuple[int, int, int], Span] = {}
        null = float("inf")
        for w in range(n):
            passage = idx[enc["overflow_to_sample_mapping"][w]]
            offsets = enc["offset_mapping"][w]
            ctx = np.array([k for k, sid in enumerate(enc.sequence_ids(w)) if sid == 1])
            if ctx.size == 0:
                continue
            s_log, e_log = start_logits[w], end_logits[w]
            w_null = float(s_log[0] + e_log[0])
            null = min(null, w_null)
            top_s = ctx[np.argsort(-s_log[ctx])[:top_n]]
            top_e = ctx[np.argsort(-e_log[ctx])[:top_n]]
            for s in top_s:
                for e in top_e:
                    if e < s or e - s + 1 > max_answer_tokens:
                        continue
                    c0, c1 = offsets[s][0], offsets[e][1]
                    if c1 <= c0:
                        continue
                    score = float(s_log[s] + e_log[e])
                    key = (passage, c0, c1)
                    if key not in best or score > best[key].score:
                        best[key] = Span(passage, c0, c1, passages[passage][c0:c1], score, w_null)
        spans = sorted(best.values(), key=lambda sp: (-sp.score, sp.passage, sp.start))
        return ReadResult(spans=spans, null_score=null, windows=n)


# Failures are remembered too (lru_cache does not cache exceptions): an offline machine with the default Hub
# name must not retry the download for every question.
_FAILED: dict[tuple[str, str], ReaderUnavailable] = {}
_FAILED_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, device: str) -> ReaderModel:
    return ReaderModel(name, device=device)


def load_reader(name: str, device: str = "cpu") -> ReaderModel:
    """The reader model `name` (Hub name or local folder) on `device`, loaded once per process.

    Raises ReaderUnavailable (cached: later calls fail at once) when it cannot load.
    """
    key = (name, device)
    with _FAILED_LOCK:
        if key in _FAILED:
            raise _FAILED[key]
    try:
        return _load_cached(name, device)
    except ReaderUnavailable as exc:
        with _FAILED_LOCK:
            _FAILED[key] = exc
        raise


def reader_enabled(settings: Any) -> bool:
    """True when the settings name a reader model (not `none`/`off`/empty)."""
    name = getattr(settings, "reader_model", None)
    return bool(name) and str(name).strip().lower() not in DISABLED


def wanted_spans(question: str) -> int:
    """How many things the question asks for: "which two …" -> 2, "name three …" -> 3; else 1."""
    m = _LIST_RE.search(question)
    return _COUNT_WORDS[m.group(1).lower()] if m else 1


def _overlaps(a: Span, b: Span) -> bool:
    return a.passage == b.passage and a.start < b.end and b.start < a.end


def _quote_in_sentence(passage: str, start: int, end: int, context_chars: int = CONTEXT_CHARS) -> str:
    """The span in bold inside the sentence(s) it sits in, cut to about `context_chars` on each side.

    Whitespace is collapsed (a span across a line break reads as one line); cuts happen at word boundaries
    and are marked with "…".
    """
    s0, s1 = start, end
    for a, b in split_sentences(passage):
        if a < end and start < b:
            s0, s1 = min(s0, a), max(s1, b)
    left, span, right = passage[s0:start], passage[start:end], passage[end:s1]
    if len(left) > context_chars:
        cut = left[-context_chars:]
        left = "… " + (cut.split(" ", 1)[1] if " " in cut else cut)
    if len(right) > context_chars:
        cut = right[:context_chars]
        right = (cut.rsplit(" ", 1)[0] if " " in cut else cut) + " …"
    left, span, right = (" ".join(x.split()) for x in (left, span, right))
    # Keep the spaces the passage had around the span (no space inside a word, "1,000**s**" stays glued).
    lsp = " " if left and passage[start - 1:start].isspace() else ""
    rsp = " " if right and passage[end:end + 1].isspace() else ""
    return f"{left}{lsp}**{span}**{rsp}{right}".strip()


class ReaderAnswerer:
    """Answers with the exact span a question-answering model finds in the evidence, cited; abstains when the
    no-answer score wins by the margin. Same `Answer` shape and abstention conventions as ExtractiveAnswerer."""

    provider = "reader"

    def __init__(self, settings: Any = None, model: ReaderModel | None = None, no_answer_margin: float | None = None,
                 max_answer_tokens: int = 30, top_n: int = 20, multi_span: bool = True) -> None:
        if model is None:
            name = getattr(settings, "reader_model", None) or DEFAULT_READER_MODEL
            model = load_reader(name, getattr(settings, "embed_device", "cpu"))
        self.settings = settings
        self.model = model
        if no_answer_margin is None:
            no_answer_margin = getattr(settings, "reader_no_answer_margin", 0.0)
        self.no_answer_margin = float(no_answer_margin or 0.0)
        self.max_answer_tokens = int(max_answer_tokens)
        self.top_n = int(top_n)
        self.multi_span = bool(multi_span)

    def read(self, question: str, evidence: list[Evidence]) -> ReadResult:
        """Raw reader output over the evidence passages (span passage indices follow `evidence` order)."""
        return self.model.read(question, [e.chunk.text for e in evidence], top_n=self.top_n,
                               max_answer_tokens=self.max_answer_tokens)

    def select(self, result: ReadResult, question: str = "", passages: Sequence[str] | None = None) -> list[Span]:
        """The spans to answer with: empty when the best span does not beat no-answer by the margin; more than
        one only when the question asks for several things and the others clear the margin too. With the
        `passages` read, a span running over a sentence end is passed over for the next candidate."""
        if not result.spans or result.gap < self.no_answer_margin:
            return []
        chosen: list[Span] = []
        want = wanted_spans(question) if self.multi_span else 1
        for sp in result.spans:
            if len(chosen) >= want:
                break
            if sp.score - result.null_score < self.no_answer_margin:
                break  # best first: nothing further clears the margin
            if passages is not None and _crosses_sentence(passages[sp.passage], sp.start, sp.end):
                continue  # an answer is a phrase inside one sentence; the next candidate usually is that phrase
            # A second "thing" is a separate span, not a longer or shorter variant of one already chosen.
            if any(_overlaps(sp, c) or sp.text.lower() in c.text.lower() or c.text.lower() in sp.text.lower()
                   for c in chosen):
                continue
            chosen.append(sp)
        return chosen

    def answer(self, question: str, evidence: list[Evidence], on_token: TokenCallback | None = None,
               related: list[Hit] | None = None) -> Answer:
        """The span(s) quoted in their sentence with [n] citations, or an abstention listing related passages."""
        started = time.perf_counter()
        result = self.read(question, evidence) if evidence else ReadResult()
        answer = self.compose(question, evidence, result, on_token=on_token, related=related)
        answer.timings_ms = {"reader": round((time.perf_counter() - started) * 1000.0, 2)}
        return answer

    def compose(self, question: str, evidence: list[Evidence], result: ReadResult,
                on_token: TokenCallback | None = None, related: list[Hit] | None = None) -> Answer:
        """The Answer for an already computed `read` result (lets an eval try margins without re-reading)."""
        related = list(related) if related is not None else [e.hit for e in evidence[:3]]
        chosen = self.select(result, question, [e.chunk.text for e in evidence])
        timings: dict[str, float] = {}
        if not chosen:
            return abstained_answer(question, evidence, related, self.provider, timings, on_token)
        lines = []
        for sp in chosen:
            ev = evidence[sp.passage]
            lines.append(f"{_quote_in_sentence(ev.chunk.text, sp.start, sp.end)} [{ev.number}]")
        text = "\n\n".join(lines)
        check = validate_citations(text, evidence, strict=True)
        if check.removed_sentences or not all(f"**{' '.join(sp.text.split())}**" in check.text for sp in chosen):
            # The passage's own punctuation split a quoted sentence (or looked like a marker): fall back to the
            # bare spans, which always carry their marker.
            text = "\n\n".join(f"**{' '.join(sp.text.split())}** [{evidence[sp.passage].number}]" for sp in chosen)
            check = validate_citations(text, evidence, strict=True)
        return checked_answer(question, check, evidence, related, self.provider, timings, on_token)


@functools.lru_cache(maxsize=256)
def _sentence_spans(passage: str) -> tuple[tuple[int, int], ...]:
    return tuple(split_sentences(passage))


def _crosses_sentence(passage: str, start: int, end: int) -> bool:
    """True when passage[start:end] runs from one sentence into the next."""
    return any(a <= start < b < end and passage[b:end].strip() for a, b in _sentence_spans(passage))


_SPAN_RE = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)


def answer_spans(text: str) -> list[str]:
    """The bold answer spans of a reader answer's text (what an eval scores with EM / token F1)."""
    return [m.group(1) for m in _SPAN_RE.finditer(text)]


def reader_scores(settings: Any, question: str, evidence: list[Evidence]) -> tuple[float | None, str] | None:
    """The configured reader's (best span score - no-answer score, best span text) on `evidence`, (None, "")
    when it finds no span, None when no reader loads. Right after an answer on the same evidence this is the
    reader's remembered read (ReaderModel.read), not a second one."""
    if not reader_enabled(settings):
        return None
    try:
        result = ReaderAnswerer(settings).read(question, evidence)
    except ReaderUnavailable:
        return None
    best = result.best
    return (round(result.gap, 4), best.text) if best is not None else (None, "")


class ReaderGate:
    """The gate can ask the reader: abstain without calling the (LLM) answerer behind it when the reader is
    confident the evidence holds no answer (`reader_gate = on`).

    The reader reads every evidence passage; when best span score - no-answer score < `margin` (the
    `reader_gate_margin` setting, far below the reader's own answer margin: only a clear "not in here"), the
    answer is an abstention with provider `reader-gate` and timing `reader_gate`; otherwise the wrapped answerer
    answers as usual (its answer carries the gate's timing too). No evidence goes straight to the wrapped
    answerer, which has its own rule for that.
    """

    def __init__(self, inner: Any, reader: ReaderAnswerer, margin: float) -> None:
        self.inner = inner
        self.reader = reader
        self.margin = float(margin)
        self.provider = getattr(inner, "provider", "llm")

    def gap(self, question: str, evidence: list[Evidence]) -> float:
        """Best span score minus the no-answer score over the evidence (−inf when no span)."""
        return self.reader.read(question, evidence).gap

    def answer(self, question: str, evidence: list[Evidence], on_token: TokenCallback | None = None,
               related: list[Hit] | None = None) -> Answer:
        """An abstention when the reader finds no answer with confidence, else the wrapped answerer's answer."""
        if not evidence:
            return self.inner.answer(question, evidence, on_token=on_token, related=related)
        started = time.perf_counter()
        gap = self.gap(question, evidence)
        gate_ms = round((time.perf_counter() - started) * 1000.0, 2)
        if gap < self.margin:
            log.info("reader gate: no answer in %d passages (gap %.2f < %.2f); the LLM is not called",
                     len(evidence), gap, self.margin)
            related = list(related) if related is not None else [e.hit for e in evidence[:3]]
            return abstained_answer(question, evidence, related, "reader-gate", {"reader_gate": gate_ms}, on_token)
        answer = self.inner.answer(question, evidence, on_token=on_token, related=related)
        answer.timings_ms = {"reader_gate": gate_ms, **answer.timings_ms}
        return answer


def gate_with_reader(answerer: Any, settings: Any) -> Any:
    """`answerer` behind a ReaderGate when `reader_gate` is on and the reader loads; else `answerer` itself
    (with a warning when the gate was asked for but the reader cannot load)."""
    if str(getattr(settings, "reader_gate", "off")).lower() != "on":
        return answerer
    if not reader_enabled(settings):
        log.warning("reader_gate is on but reader_model is %r: no gate", getattr(settings, "reader_model", None))
        return answerer
    try:
        reader = ReaderAnswerer(settings)
    except ReaderUnavailable as exc:
        log.warning("%s; reader_gate is off for this answer", exc)
        return answerer
    return ReaderGate(answerer, reader, getattr(settings, "reader_gate_margin", -4.0))


def make_reader_answerer(settings: Any, embedder: Any = None) -> Any:
    """The reader answerer for `settings.reader_model`, or the sentence answerer when it is `none` or cannot
    load (then a warning names the model and the reason)."""
    from rag.answering.extractive import ExtractiveAnswerer

    if not reader_enabled(settings):
        return ExtractiveAnswerer(settings, embedder=embedder)
    try:
        return ReaderAnswerer(settings)
    except ReaderUnavailable as exc:
        log.warning("%s; answering with the sentence answerer instead", exc)
        return ExtractiveAnswerer(settings, embedder=embedder)
