"""Domain tuning: pair generation, hard-negative filtering, duplicate-free batches, a tiny real tune."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from rag.tuning.finetune import TrainConfig, train_bi_encoder, train_cross_encoder
from rag.tuning.negatives import (Triplet, filter_candidates, is_false_negative, jaccard, mine_hard_negatives,
                             no_duplicate_batches)
from rag.tuning.pairs import TrainPair, generate_pairs, inverse_cloze_pairs, split_holdout, split_sentences, title_pairs
from rag.errors import RagError
from rag.lexical import BM25Encoder
from rag.models import Chunk
from tests.tune_corpus import build_store, corpus


def _chunk(cid: str, text: str, file_path: str = "/d/a.md", section: str = "S", index: int = 0) -> Chunk:
    return Chunk(id=cid, text=text, file_path=file_path, file_hash="h", file_type="md", chunk_index=index,
                 chunk_count=index + 1, char_start=0, char_end=len(text), section=section)


# -- pairs -----------------------------------------------------------------------------------------


def test_inverse_cloze_query_is_a_sentence_removed_from_its_positive():
    rng = random.Random(3)
    for chunk in corpus():
        pairs = inverse_cloze_pairs(chunk, rng)
        assert len(pairs) == 1
        pair = pairs[0]
        assert pair.kind == "cloze" and pair.chunk_id == chunk.id
        assert pair.query in split_sentences(chunk.text)
        assert pair.query not in pair.positive
        assert len(pair.positive.split()) >= 12
        assert not pair.query.startswith("#")  # headings are never cloze queries


def test_inverse_cloze_skips_repeated_sentences_and_short_chunks():
    repeated = "The turbine blades spin faster in strong wind. "
    chunk = _chunk("c1", repeated * 3 + "Engineers inspect every single blade before winter storms arrive each year.")
    for seed in range(10):
        pairs = inverse_cloze_pairs(chunk, random.Random(seed), per_chunk=3)
        assert [p.query[:9] for p in pairs] == ["Engineers"]  # the repeated sentence is never picked
    assert inverse_cloze_pairs(_chunk("c2", "Too short to split. Really."), random.Random(0)) == []


def test_cloze_pairs_per_chunk_keep_and_dropout():
    chunk = corpus()[0]
    sentences = split_sentences(chunk.text)
    pairs = inverse_cloze_pairs(chunk, random.Random(0), per_chunk=3)
    assert len({p.query for p in pairs}) == 3  # three different sentences of one chunk
    assert all(p.chunk_text == chunk.text and p.chunk_index == chunk.chunk_index for p in pairs)
    kept = inverse_cloze_pairs(chunk, random.Random(0), per_chunk=3, keep_prob=1.0)
    assert all(p.positive == chunk.text and p.query in p.positive for p in kept)
    dropped = inverse_cloze_pairs(chunk, random.Random(0), per_chunk=3, query_dropout=0.5)
    for p in dropped:
        source = next(s for s in sentences if all(w in s.split() for w in p.query.split()))
        words = source.split()
        assert 3 <= len(p.query.split()) < len(words)  # words were dropped, never below three
        rest = iter(words)
        assert all(w in rest for w in p.query.split())  # a subsequence: the kept words keep their order


def test_sentences_of_tokenized_lower_case_text_are_split():
    text = ("experimental investigation of the aerodynamics of a wing in a slipstream . an experimental study of "
            "a wing in a propeller slipstream was made . the results were intended in part as an evaluation basis .")
    assert split_sentences(text) == [
        "experimental investigation of the aerodynamics of a wing in a slipstream .",
        "an experimental study of a wing in a propeller slipstream was made .",
        "the results were intended in part as an evaluation basis .",
    ]
    assert split_sentences("Mach 1 .3 flow. It was fast, e.g. here. Ok.") == ["Mach 1 .3 flow.", "It was fast, e.g. here. Ok."]


def test_titles_are_queries_for_their_own_section_only():
    chunks = corpus()
    pairs = title_pairs(chunks, per_section=2)
    assert len(pairs) == 12  # 3 files x 2 sections x 2 chunks
    by_id = {c.id: c for c in chunks}
    for p in pairs:
        chunk = by_id[p.chunk_id]
        assert p.kind == "title" and p.query == chunk.section and chunk.chunk_index % 5 < 2


def test_generate_pairs_caps_and_holdout_is_disjoint_by_chunk():
    pairs = generate_pairs(corpus(), max_pairs=25, seed=1)
    assert len(pairs) == 25 and {p.kind for p in pairs} <= {"cloze", "title"}
    train, held = split_holdout(pairs, 0.2, seed=1)
    assert held and train
    assert not {p.chunk_id for p in held} & {p.chunk_id for p in train}
    assert all(p.kind == "cloze" for p in held)


# -- negatives ------------------------------------------------------------------------------------


def test_false_negative_filter_drops_neighbours_and_near_duplicates_but_keeps_far_chunks_of_the_section():
    tok = BM25Encoder().tokenize
    positive = "Sourdough bread needs a lively starter, patient kneading and a very hot oven for the crust."
    pair = TrainPair(query="How is sourdough baked?", positive=positive, chunk_id="p", file_path="/d/bread.md",
                     section="Sourdough", kind="cloze", chunk_index=5)
    itself = _chunk("p", positive, "/d/bread.md", "Sourdough", index=5)
    neighbour = _chunk("s", "Rye flour changes the taste of a loaf.", "/d/bread.md", "Sourdough", index=6)
    far = _chunk("x", "Sourdough starters are fed with flour and water every day.", "/d/bread.md", "Sourdough", index=9)
    near_dup = _chunk("n", positive + " Really.", "/d/copy.md", "Other")  # same tokens, another file
    other_section = _chunk("o", "Yeast breads rise faster than sourdough in a warm kitchen.", "/d/bread.md", "Yeast",
                           index=4)
    other_file = _chunk("f", "Orbital velocity depends on the altitude of the satellite.", "/d/orbit.md", "Orbits")
    assert jaccard(tok(positive), tok(near_dup.text)) > 0.8
    kept = filter_candidates(pair, [itself, neighbour, far, near_dup, other_section, other_file], tok)
    # The neighbour may hold the rest of the passage; a far chunk of a long section is a useful hard negative.
    assert [c.id for c in kept] == ["x", "o", "f"]
    assert is_false_negative(pair, near_dup, tok) and not is_false_negative(pair, other_file, tok)
    # A title describes its whole section: no chunk of that section is a negative for it.
    title = TrainPair(query="Sourdough", positive=positive, chunk_id="p", file_path="/d/bread.md",
                      section="Sourdough", kind="title", chunk_index=5)
    assert [c.id for c in filter_candidates(title, [far, other_section], tok)] == ["o"]


def test_mined_negatives_come_from_bm25_and_pass_the_filter(settings, embedder):
    store = build_store(settings, embedder)
    try:
        chunks = {c.id: c for c in corpus()}
        pairs = [p for p in generate_pairs(corpus(), max_pairs=30, seed=0) if p.kind == "cloze"][:10]
        triplets = mine_hard_negatives(pairs, store, BM25Encoder(), ["public"])
        assert len(triplets) == len(pairs)
        for t in triplets:
            assert t.negative_id is not None
            neg = chunks[t.negative_id]
            assert t.negative == neg.text
            assert neg.id != t.pair.chunk_id
            same_section = neg.file_path == t.pair.file_path and neg.section == t.pair.section
            assert not (same_section and abs(neg.chunk_index - t.pair.chunk_index) <= 1)
    finally:
        store.close()


def _triplet(query: str, pos: str, neg: str | None) -> Triplet:
    return Triplet(TrainPair(query=query, positive="text " + pos, chunk_id=pos, file_path="/f", section="",
                             kind="cloze"), None if neg is None else "text " + neg, neg)


def test_batches_never_repeat_a_chunk_or_a_query():
    rng = random.Random(7)
    # 200 triplets over only 40 chunks and 60 query texts: collisions are everywhere.
    triplets = [_triplet(f"q{rng.randrange(60)}", f"c{rng.randrange(40)}", rng.choice([None, f"c{rng.randrange(40)}"]))
                for _ in range(200)]
    triplets = [t for t in triplets if t.negative_id != t.pair.chunk_id]
    batches = no_duplicate_batches(triplets, batch_size=8, seed=1)
    placed = sorted(i for b in batches for i in b)
    assert placed == list(range(len(triplets)))  # every triplet exactly once
    assert max(len(b) for b in batches) == 8
    for b in batches:
        chunks = [triplets[i].pair.chunk_id for i in b] + [triplets[i].negative_id for i in b if triplets[i].negative_id]
        queries = [triplets[i].pair.query for i in b]
        assert len(chunks) == len(set(chunks)), "a positive is another pair's in-batch negative"
        assert len(queries) == len(set(queries))


# -- held-out check --------------------------------------------------------------------------------


def test_heldout_check_reports_the_products_retriever_as_eval_retrieval_does(settings, embedder):
    from rag.metrics import mean_ranking_metrics, metric_names, ranking_metrics
    from rag.models import SearchFilter
    from rag.retriever import HybridRetriever
    from rag.tuning.heldout import heldout_check

    chunks = corpus()
    vectors = embedder.embed_passages([c.text for c in chunks])  # what build_store stores
    held = [p for p in generate_pairs(chunks, max_pairs=30, seed=0) if p.kind == "cloze"][:6]
    qrels = {str(i): {p.chunk_id: 1} for i, p in enumerate(held)}
    store = build_store(settings, embedder)
    try:
        # The figures `rag eval retrieval` would report: the product's retriever over the real collection.
        retriever = HybridRetriever(store, embedder, None, None, settings)
        expected = {}
        for mode in ("dense", "hybrid"):
            per_query = {qid: ranking_metrics([h.chunk.id for h in retriever.retrieve(
                held[int(qid)].query, k=100, mode=mode, flt=SearchFilter(acl=["public"])).hits], q)
                for qid, q in qrels.items()}
            expected[mode] = mean_ranking_metrics(per_query, qrels, metric_names())
        # The untrained model as "tuned": before and after must then be the same figures.
        result = heldout_check(held, chunks, vectors, store.info(), ["public"], embedder, embedder, settings)
    finally:
        store.close()
    assert result["queries"] == 6 and result["corpus_chunks"] == 30 and result["rerank"] is None
    by_mode = result["by_mode"]
    assert by_mode["before"]["dense"] == by_mode["after"]["dense"] == expected["dense"]
    assert result["before"] == result["after"] == expected["dense"]
    assert by_mode["deltas"]["dense"] == dict.fromkeys(metric_names(), 0.0)
    # Hybrid is not compared value for value: this templated corpus has many equal BM25 scores, and Qdrant
    # Edge orders equal scores differently in two collections built alike. 30 chunks < 100: all retrieved.
    for side in ("before", "after"):
        assert list(by_mode[side]["hybrid"]) == metric_names() and by_mode[side]["hybrid"]["recall@100"] == 1.0


# -- training ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_triplets():
    pairs = generate_pairs(corpus(), max_pairs=24, seed=0)
    chunks = corpus()
    # Hard negative: the same-position chunk of another topic (a safe negative by construction).
    triplets = []
    for p in pairs:
        neg = next(c for c in chunks if c.file_path != p.file_path)
        triplets.append(Triplet(p, neg.text, neg.id))
    return triplets


def test_tiny_tune_changes_the_model_and_round_trips(tmp_path, minilm_path, tiny_triplets):
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(minilm_path, device="cpu")
    model = SentenceTransformer(minilm_path, device="cpu")
    cfg = TrainConfig(batch_size=8, max_seq_length=32, max_steps=2, lr=1e-4)
    stats = train_bi_encoder(minilm_path, tiny_triplets, cfg, tmp_path / "emb", model=model)
    assert stats["steps"] == 2 and stats["finite"]
    probe = ["How does magma reach the crater?", "Kneading dough develops gluten."]
    tuned = model.encode(probe, normalize_embeddings=True)
    before = base.encode(probe, normalize_embeddings=True)
    assert not np.allclose(tuned, before, atol=1e-4)  # training moved the weights
    assert model.max_seq_length == base.max_seq_length  # restored for retrieval after training at 32
    loaded = SentenceTransformer(str(tmp_path / "emb"), device="cpu")
    np.testing.assert_allclose(loaded.encode(probe, normalize_embeddings=True), tuned, atol=1e-5)


@pytest.mark.slow  # trains a listwise reranker: ~170 s on 2 busy cores
def test_listwise_reranker_learns_its_training_groups_and_round_trips(tmp_path, minilm_path, tiny_triplets):
    from sentence_transformers import CrossEncoder

    chunks = corpus()
    for t in tiny_triplets:  # a pool of other-topic chunks: safe negatives by construction
        t.pool = [c.text for c in chunks if c.file_path != t.pair.file_path][:6]
    cfg = TrainConfig(rerank_batch_size=16, rerank_max_length=64, rerank_lr=2e-4, epochs=3, max_steps=12)
    stats = train_cross_encoder(minilm_path, tiny_triplets, cfg, tmp_path / "rr")
    assert stats["steps"] == 12 and stats["finite"] and stats["loss_last"] < stats["loss_first"]
    model = CrossEncoder(str(tmp_path / "rr"), num_labels=1, device="cpu")
    assert model.max_seq_length > cfg.rerank_max_length  # saved with the model's own limit, not the training cut
    t = tiny_triplets[0]
    scores = model.predict([(t.pair.query, t.pair.full_positive), *[(t.pair.query, n) for n in t.pool]])
    assert scores[0] > max(scores[1:])  # the trained query's own chunk first
    again = CrossEncoder(str(tmp_path / "rr"), num_labels=1, device="cpu").predict([(t.pair.query, t.pool[0])])
    np.testing.assert_allclose(again, scores[1:2], atol=1e-5)


@pytest.mark.slow  # a whole `rag tune` run: ~60 s
def test_tune_end_to_end_writes_models_report_and_apply_makes_a_new_collection(tmp_path, settings, embedder):
    from rag.tuning.tune import REPORT_FILE, apply_tuned, tune
    from sentence_transformers import CrossEncoder
    from rag.store import open_store

    store = build_store(settings, embedder)
    try:
        cfg = TrainConfig(batch_size=8, max_seq_length=32, max_steps=1, rerank_batch_size=8, rerank_max_length=48)
        report = tune(settings, tmp_path / "model", cfg, max_pairs=30, progress=False, store=store)
    finally:
        store.close()
    saved = json.loads((tmp_path / "model" / REPORT_FILE).read_text())
    assert saved["pairs"]["train"] == report["pairs"]["train"] == 26 and saved["pairs"]["held_out"] == 4
    # Measured through the product's retriever on the 30-chunk corpus (the 4 held-out positives at ranks
    # 1, 1, 4 and 6); one training step at lr 2e-5 leaves the dense ranking as it was.
    heldout = report["heldout"]
    assert heldout["queries"] == 4 and heldout["corpus_chunks"] == 30
    assert heldout["before"] == heldout["by_mode"]["before"]["dense"] == pytest.approx(
        {"ndcg@10": 0.69672, "recall@1": 0.5, "recall@5": 0.75, "recall@10": 1.0, "recall@100": 1.0,
         "mrr@10": (1 + 1 + 1 / 4 + 1 / 6) / 4}, abs=1e-5)
    assert heldout["after"]["mrr@10"] == pytest.approx((1 + 1 + 1 / 4 + 1 / 6) / 4)
    assert set(heldout["by_mode"]["after"]) == {"dense", "hybrid"}
    assert heldout["by_mode"]["deltas"]["dense"]["mrr@10"] == pytest.approx(
        heldout["after"]["mrr@10"] - heldout["before"]["mrr@10"], abs=1e-4)
    assert report["training"]["embedder"]["steps"] == 1 and report["training"]["reranker"]["steps"] == 1
    held = report["rerank_heldout"]
    assert held["queries"] == 4 and held["top_m"] == settings.rerank_top_m
    assert held["fusion_weight"] == report["rerank_fusion_weight"] == 1.0
    # A one-step reranker head scores this templated corpus's near-duplicate chunks almost alike, and Qdrant
    # orders its many equal BM25 scores differently in two collections built alike: only ranges are fixed.
    assert all(0 <= held[f"{name}_mrr@10"] <= 1 for name in ("hybrid", "rerank_alone", "rerank_fused"))
    assert {name: m["mrr@10"] for name, m in held["modes"].items()} == {
        name: held[f"{name}_mrr@10"] for name in ("hybrid", "rerank_alone", "rerank_fused")}
    reranker = CrossEncoder(report["reranker"], num_labels=1, device="cpu")  # saved head loads (no MISSING keys)
    scores = reranker.predict([("magma eruption", "lava and ash"), ("magma eruption", "bread dough")])
    assert len(scores) == 2 and np.isfinite(scores).all()

    # A model that did not win is refused unless forced; forced, every chunk lands in a new collection.
    (tmp_path / "model" / REPORT_FILE).write_text(json.dumps({**saved, "tuned_wins": False}))
    with pytest.raises(RagError, match="did not beat"):
        apply_tuned(settings, tmp_path / "model", progress=False)
    result = apply_tuned(settings, tmp_path / "model", force=True, progress=False)
    assert result["collection"] == "test_tuned" and result["points"] == 30
    assert result["env"]["RAG_EMBED_MODEL"] == report["embedder"]
    assert result["env"]["RAG_RERANK_MODEL"] == report["reranker"] and result["env"]["RAG_RERANK_FUSION_WEIGHT"] == "1.0"
    target = open_store(settings.replace(collection="test_tuned"))
    try:
        assert target.count() == 30 and target.info().embed_model == report["embedder"]
    finally:
        target.close()
