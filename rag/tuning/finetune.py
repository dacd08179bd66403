"""Fine-tune the bi-encoder (InfoNCE) and train a cross-encoder reranker from mined triplets, on CPU.

A plain torch loop instead of `SentenceTransformerTrainer`: the trainer needs `datasets` and
`accelerate`, which the product does not ship, and our batches are built by
`rag.tuning.negatives.no_duplicate_batches` anyway.

- Bi-encoder: `MultipleNegativesRankingLoss` (InfoNCE over in-batch positives and hard negatives,
  similarity x `scale`, i.e. temperature = 1 / scale).
- Cross-encoder: `CrossEncoder(init_model, num_labels=1)` (the embedding model's BERT backbone with a
  fresh one-logit head when no reranker weights exist), listwise softmax cross-entropy over the whole
  positive chunk and several hard negatives.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from rag.tuning.negatives import Triplet, no_duplicate_batches

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training knobs; the defaults finish in minutes on 2 CPU cores for ~2000 pairs."""

    epochs: int = 1
    batch_size: int = 32
    max_seq_length: int = 128
    lr: float = 2e-5
    scale: float = 20.0  # MNRL similarity scale; temperature = 1 / scale
    warmup_ratio: float = 0.1
    rerank_lr: float = 1e-4
    head_lr_factor: float = 20.0  # the fresh classifier head learns faster than the pretrained backbone
    rerank_batch_size: int = 32  # (query, passage) inputs per step: 8 groups of 1 positive + 3 negatives
    rerank_negatives: int = 3
    rerank_max_length: int = 128
    max_steps: int | None = None  # cap per model (tests, smoke runs)
    # Pseudo-query shape (rag.tuning.pairs.inverse_cloze_pairs).
    # Measured on SQuAD with MiniLM (dense nDCG@10, base 0.783): removing the sentence from its positive
    # (classic inverse cloze) 0.778; keeping it half the time 0.774; always keeping it, with 30% query
    # word dropout, 0.792. A pretrained embedder already matches topics; what it gains here is the
    # collection's own wording.
    pairs_per_chunk: int = 3
    keep_prob: float = 1.0
    query_dropout: float = 0.3
    rerank_max_pairs: int = 1000  # the reranker trains on at most this many pairs (the time budget)
    seed: int = 0

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "temperature": self.temperature}


def _scheduler(optimizer: Any, total: int, warmup_ratio: float) -> Any:
    import torch  # heavy: imported where training runs, so `rag tune --help` and --apply stay fast

    warmup = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:  # linear warm-up, then linear decay
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    return tqdm(total=total, desc=desc, disable=not enabled, unit="step")


def train_bi_encoder(model_path: str, triplets: Sequence[Triplet], cfg: TrainConfig, out_dir: str | Path,
                     progress: bool = False, model: Any = None) -> dict[str, Any]:
    """Fine-tune a sentence-transformers model on triplets and save it to `out_dir`.

    `model` may be a loaded SentenceTransformer to train in place (tests); otherwise it is loaded from
    `model_path`. Returns stats: steps, examples, seconds, first/last loss.
    """
    import torch  # heavy (with sentence_transformers): imported only when training runs
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(cfg.seed)
    if model is None:
        model = SentenceTransformer(model_path, device="cpu")
    original_max = model.max_seq_length
    model.max_seq_length = min(cfg.max_seq_length, original_max or cfg.max_seq_length)
    loss_fn = MultipleNegativesRankingLoss(model, scale=cfg.scale)
    batches = [b for e in range(cfg.epochs) for b in no_duplicate_batches(triplets, cfg.batch_size, cfg.seed + e)]
    batches = [b for b in batches if len(b) >= 2]  # one pair has no in-batch negative to learn from
    if cfg.max_steps is not None:
        batches = batches[: cfg.max_steps]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    scheduler = _scheduler(optimizer, len(batches), cfg.warmup_ratio)
    losses: list[float] = []
    started = time.perf_counter()
    model.train()
    bar = _progress(len(batches), "training embedder", progress)
    for batch in batches:
        items = [triplets[i] for i in batch]
        columns = [[t.pair.query for t in items], [t.pair.positive for t in items]]
        if all(t.negative for t in items):  # MNRL needs equal columns: batches with a gap use in-batch only
            columns.append([t.negative for t in items])
        embeddings = [model(model.preprocess(col))["sentence_embedding"] for col in columns]
        loss = loss_fn.compute_loss_from_embeddings(embeddings, None)
        _optimisation_step(loss, model, optimizer, scheduler, losses, bar)
    bar.close()
    model.eval()
    model.max_seq_length = original_max  # retrieval embeds whole chunks, as the base model did
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    return _stats(losses, sum(len(b) for b in batches), started)


def train_cross_encoder(init_model_path: str, triplets: Sequence[Triplet], cfg: TrainConfig, out_dir: str | Path,
                        progress: bool = False) -> dict[str, Any]:
    """Train a one-logit CrossEncoder listwise and save it to `out_dir`.

    Each query is scored against its whole positive chunk (as search will show it) and
    `cfg.rerank_negatives` hard negatives drawn from its pool; softmax cross-entropy over the group
    puts the positive first. Listwise learns the within-list order a reranker is used for, where
    pointwise BCE spends its capacity on absolute scores. Pairs without any negative are skipped.
    """
    import torch  # heavy (with sentence_transformers): imported only when training runs
    from sentence_transformers import CrossEncoder

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = CrossEncoder(init_model_path, num_labels=1, device="cpu")
    original_max = model.max_seq_length
    model.max_seq_length = cfg.rerank_max_length
    usable = [t for t in triplets if t.pool or t.negative][: cfg.rerank_max_pairs]
    group = cfg.rerank_negatives + 1
    per_step = max(1, cfg.rerank_batch_size // group)  # rerank_batch_size counts (query, passage) inputs
    order = [i for _ in range(cfg.epochs) for i in rng.sample(range(len(usable)), len(usable))]
    batches = [order[i:i + per_step] for i in range(0, len(order), per_step)]
    if cfg.max_steps is not None:
        batches = batches[: cfg.max_steps]
    head = [p for n, p in model.named_parameters() if "classifier" in n]
    body = [p for n, p in model.named_parameters() if "classifier" not in n]
    optimizer = torch.optim.AdamW([{"params": body, "lr": cfg.rerank_lr},
                                   {"params": head, "lr": cfg.rerank_lr * cfg.head_lr_factor}], weight_decay=0.01)
    scheduler = _scheduler(optimizer, len(batches), cfg.warmup_ratio)
    losses: list[float] = []
    started = time.perf_counter()
    model.train()
    bar = _progress(len(batches), "training reranker", progress)
    for batch in batches:
        inputs: list[tuple[str, str]] = []
        for i in batch:
            t = usable[i]
            pool = t.pool or [t.negative]
            negatives = rng.sample(pool, min(len(pool), cfg.rerank_negatives))
            while len(negatives) < cfg.rerank_negatives:  # a short pool repeats: every group has one shape
                negatives.append(rng.choice(pool))
            inputs.extend((t.pair.query, text) for text in [t.pair.full_positive, *negatives])
        logits = model(model.preprocess(inputs))["scores"].view(len(batch), group)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        _optimisation_step(loss, model, optimizer, scheduler, losses, bar)
    bar.close()
    model.eval()
    model.max_seq_length = original_max  # search scores whole chunks
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return _stats(losses, sum(len(b) for b in batches), started)


def _stats(losses: list[float], examples: int, started: float) -> dict[str, Any]:
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]
    return {
        "steps": len(losses),
        "examples": examples,
        "seconds": round(time.perf_counter() - started, 1),
        "loss_first": round(sum(head) / len(head), 4) if losses else None,
        "loss_last": round(sum(tail) / len(tail), 4) if losses else None,
        "finite": all(math.isfinite(x) for x in losses),
    }


def _optimisation_step(loss, model, optimizer, scheduler, losses: list[float], bar) -> None:
    """Backward, clip, step, schedule; record the loss on the progress bar."""
    import torch  # heavy: imported only when training runs

    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    losses.append(float(loss.detach()))
    bar.update(1)
    bar.set_postfix(loss=f"{losses[-1]:.3f}")
