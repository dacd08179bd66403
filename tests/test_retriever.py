"""HybridRetriever end to end on a small real corpus: real MiniLM, real Qdrant Edge store, real cross-encoder.

Points are written straight into the store (Chunk payload + MiniLM vector + BM25 sparse vector), so
these tests do not depend on the ingest pipeline.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from rag.errors import ConfigError, EmptyQueryError, ModelMismatchError
from rag.answering.evidence import score_kind
from rag.lexical import BM25Encoder
from rag.models import Chunk, SearchFilter
from rag.rerank import Reranker
from rag.retriever import MAX_QUERY_TERMS, HybridRetriever
from rag.store import CollectionInfo, EdgeStore
from rag.store.catalog import write_chunks

ALL_MODES = ["dense", "bm25", "hybrid", "rerank"]


@dataclass
class Doc:
    key: str
    text: str
    path: str
    date: str
    acl: tuple[str, ...] = ("public",)

    @property
    def id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, self.key))

    @property
    def file_type(self) -> str:
        return self.path.rsplit(".", 1)[-1]


CORPUS = [
    Doc("sales", "The quarterly sales report shows revenue growth of twelve percent in Europe.",
        "/docs/sales/q1.pdf", "2024-01-15"),
    Doc("photo", "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen in plant leaves.",
        "/docs/science/bio.md", "2024-03-01"),
    Doc("eiffel", "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
        "/docs/travel/paris.docx", "2024-05-10"),
    Doc("python", "Python lists are mutable sequences; tuples are immutable.",
        "/docs/code/python.txt", "2024-06-20"),
    Doc("secret", "Executive compensation 2024: the CEO salary is 2 million dollars plus an executive bonus.",
        "/docs/hr/salaries.pdf", "2024-02-01", acl=("hr",)),
    Doc("tips", "Salary negotiation tips for new employees: research market rates before the interview.",
        "/docs/career/tips.md", "2024-04-01"),
    Doc("glacier", "Glacier retreat in the Alps has accelerated since 1980 due to warming.",
        "/docs/science/climate.pdf", "2024-07-01"),
    Doc("cake", "The recipe calls for flour, butter, sugar and two eggs baked at 180 degrees.",
        "/docs/home/cake.txt", "2024-08-01"),
    Doc("zh", "北京是中国的首都，有很多历史名胜和博物馆。", "/docs/intl/beijing.html", "2023-01-01"),
    Doc("ar", "القاهرة هي عاصمة مصر وأكبر مدنها وتقع على نهر النيل.", "/docs/intl/cairo.html", "2023-01-01"),
    Doc("ru", "Москва является столицей России и крупнейшим городом страны.", "/docs/intl/moscow.html", "2023-01-01"),
]
BY_KEY = {d.key: d for d in CORPUS}
KEY_OF_ID = {d.id: d.key for d in CORPUS}
PUBLIC = [d for d in CORPUS if "public" in d.acl]
# A query with at least one BM25 term from every English public document, so every leg sees them all.
BROAD_QUERY = "report sunlight tower python negotiation glacier recipe"
BROAD_KEYS = {"sales", "photo", "eiffel", "python", "tips", "glacier", "cake"}


def chunk_of(doc: Doc) -> Chunk:
    return Chunk(
        id=doc.id, text=doc.text, file_path=doc.path, file_hash=f"hash-{doc.key}", file_type=doc.file_type,
        chunk_index=0, chunk_count=1, char_start=0, char_end=len(doc.text), acl=list(doc.acl),
        ingested_at=f"{doc.date}T12:00:00+00:00", token_count=0, file_name=doc.path.rsplit("/", 1)[-1],
    )


class RecordingReranker(Reranker):
    """The real cross-encoder, also remembering every text it was asked to score."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []

    def score(self, query, texts):
        self.seen.extend(texts)
        return super().score(query, texts)


class CountingEdgeStore(EdgeStore):
    """The real Edge store, also recording the arguments of every search call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []

    def search(self, dense, sparse, flt, limit, **kwargs):
        self.calls.append((dense, sparse, flt, limit))
        return super().search(dense, sparse, flt, limit, **kwargs)


@pytest.fixture(scope="session")
def reranker(minilm_path) -> RecordingReranker:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)  # fresh classification head: seed it so scores are reproducible
    return RecordingReranker(minilm_path, batch_size=4)


@pytest.fixture(scope="session")
def corpus_vectors(embedder) -> dict[str, list[float]]:
    vectors = embedder.embed_passages([d.text for d in CORPUS])
    return {d.id: [float(x) for x in v] for d, v in zip(CORPUS, vectors)}


def build_store(path, embedder, vectors, docs=CORPUS, **info_overrides) -> CountingEdgeStore:
    store = CountingEdgeStore(path, "test")
    encoder = BM25Encoder()
    avg = sum(encoder.doc_length(d.text) for d in docs) / max(len(docs), 1) if docs else 100.0
    info = CollectionInfo(name="test", embed_model=embedder.model_name, dimension=embedder.dimension,
                          bm25_avg_doc_len=avg or 1.0, **info_overrides)
    write_chunks(store, [chunk_of(d) for d in docs], [vectors[d.id] for d in docs], info=info)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder, corpus_vectors):
    """One store shared by the read-only tests of this module (creating an Edge shard costs ~1 s)."""
    s = build_store(tmp_path_factory.mktemp("shared") / "qdrant", embedder, corpus_vectors)
    yield s
    s.close()


@pytest.fixture()
def retriever(store, embedder, reranker, settings) -> HybridRetriever:
    reranker.seen.clear()
    return HybridRetriever(store, embedder, None, reranker, settings)


def keys(result) -> list[str]:
    return [KEY_OF_ID[h.chunk.id] for h in result.hits]


# -- modes -----------------------------------------------------------------------------------------


def test_dense_mode_finds_the_paraphrase(retriever):
    result = retriever.retrieve("When was the famous iron landmark in France built?", k=3, mode="dense")
    assert keys(result)[0] == "eiffel"
    top = result.hits[0]
    assert top.dense_rank == 1 and top.score == top.dense_score and 0 < top.score <= 1.0
    assert top.bm25_rank is None and top.fused_rank is None and top.rerank_score is None
    assert [h.dense_rank for h in result.hits] == [1, 2, 3]
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


def test_bm25_mode_finds_the_keyword(retriever):
    result = retriever.retrieve("glacier alps", k=5, mode="bm25")
    assert keys(result) == ["glacier"]  # the only chunk holding either term
    hit = result.hits[0]
    assert hit.bm25_rank == 1 and hit.score == hit.bm25_score > 0
    assert hit.dense_rank is None and hit.fused_rank is None


def test_hybrid_mode_obvious_query(retriever):
    result = retriever.retrieve("how do plants turn sunlight into glucose", k=3, mode="hybrid")
    assert keys(result)[0] == "photo"
    top = result.hits[0]
    assert top.dense_rank == 1 and top.bm25_rank == 1 and top.fused_rank == 1
    assert top.score == top.fused_score == pytest.approx(2 / 61)


def test_hybrid_is_union_of_legs_with_correct_ranks_and_rrf_scores(store, embedder, settings):
    s = settings.replace(leg_limit=3)
    r = HybridRetriever(store, embedder, None, None, s)
    query = "mutable revenue in paris"
    dense = r.retrieve(query, k=3, mode="dense")
    bm25 = r.retrieve(query, k=3, mode="bm25")
    hybrid = r.retrieve(query, k=10, mode="hybrid")
    dense_rank = {h.chunk.id: i for i, h in enumerate(dense.hits, 1)}
    bm25_rank = {h.chunk.id: i for i, h in enumerate(bm25.hits, 1)}
    assert len(dense_rank) == 3 and len(bm25_rank) >= 2
    assert {h.chunk.id for h in hybrid.hits} == set(dense_rank) | set(bm25_rank)
    assert len(set(dense_rank) | set(bm25_rank)) > max(len(dense_rank), len(bm25_rank))  # legs really differ
    for pos, h in enumerate(hybrid.hits, 1):
        assert h.fused_rank == pos
        assert h.dense_rank == dense_rank.get(h.chunk.id)
        assert h.bm25_rank == bm25_rank.get(h.chunk.id)
        expected = sum(1 / (60 + r_) for r_ in (h.dense_rank, h.bm25_rank) if r_ is not None)
        assert h.fused_score == pytest.approx(expected) and h.score == h.fused_score
        if h.dense_rank:
            assert h.dense_score == pytest.approx(dense.hits[h.dense_rank - 1].score)
        if h.bm25_rank:
            assert h.bm25_score == pytest.approx(bm25.hits[h.bm25_rank - 1].score)
    assert [h.fused_score for h in hybrid.hits] == sorted((h.fused_score for h in hybrid.hits), reverse=True)


def test_hybrid_uses_rrf_k_and_leg_weights_from_settings(store, embedder, settings):
    query = "salary negotiation and quarterly revenue growth"
    bm25_only = HybridRetriever(store, embedder, None, None, settings.replace(dense_weight=0.0, rrf_k=5))
    fused = bm25_only.retrieve(query, k=20, mode="hybrid")
    bm25 = bm25_only.retrieve(query, k=20, mode="bm25")
    # Dense weight 0: the fused order starts with the BM25 order, dense-only chunks trail with score 0.
    assert keys(fused)[: len(bm25.hits)] == keys(bm25)
    assert fused.hits[0].fused_score == pytest.approx(1 / (5 + 1))
    assert all(h.fused_score == 0 for h in fused.hits[len(bm25.hits):])


def test_one_store_call_per_query_with_only_the_needed_legs(store, retriever):
    flt = SearchFilter(acl=["public"])
    expected = {"dense": (True, False), "bm25": (False, True), "hybrid": (True, True), "rerank": (True, True)}
    for mode, (has_dense, has_sparse) in expected.items():
        store.calls.clear()
        retriever.retrieve("eiffel tower", k=5, mode=mode, flt=flt)
        assert len(store.calls) == 1, mode
        dense, sparse, passed_flt, limit = store.calls[0]
        assert (dense is not None, sparse is not None) == (has_dense, has_sparse), mode
        assert passed_flt is flt and limit == retriever.config.leg_limit


# -- access control ----------------------------------------------------------------------------------

SECRET_QUERY = "CEO salary executive compensation bonus 2024"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_secret_chunk_never_returned_or_reranked_without_its_label(retriever, reranker, mode):
    secret = BY_KEY["secret"]
    for flt in (SearchFilter(acl=["public"]), None):  # None = settings.default_acl = ["public"]
        reranker.seen.clear()
        result = retriever.retrieve(SECRET_QUERY, k=20, mode=mode, flt=flt)
        assert result.hits, mode  # the public salary chunk still matches
        assert secret.id not in {h.chunk.id for h in result.hits}
        assert all("public" in h.chunk.acl for h in result.hits)
        assert secret.text not in reranker.seen
        if mode == "rerank":
            assert len(reranker.seen) == len(result.hits)  # it did run, on visible chunks only
    reranker.seen.clear()
    assert retriever.retrieve(SECRET_QUERY, k=20, mode=mode, flt=SearchFilter(acl=[])).hits == []
    assert reranker.seen == []


@pytest.mark.parametrize("mode", ALL_MODES)
def test_secret_chunk_returned_to_label_holders(retriever, reranker, mode):
    secret = BY_KEY["secret"]
    hr_only = retriever.retrieve(SECRET_QUERY, k=20, mode=mode, flt=SearchFilter(acl=["hr"]))
    assert keys(hr_only) == ["secret"]
    both = retriever.retrieve(SECRET_QUERY, k=20, mode=mode, flt=SearchFilter(acl=["public", "hr"]))
    ids = [h.chunk.id for h in both.hits]
    assert secret.id in ids
    if mode != "rerank":  # the untrained cross-encoder head ranks arbitrarily
        assert ids[0] == secret.id


def test_default_acl_comes_from_settings(store, embedder, settings):
    r = HybridRetriever(store, embedder, None, None, settings.replace(default_acl=["hr"]))
    assert keys(r.retrieve(SECRET_QUERY, k=5, mode="hybrid")) == ["secret"]


# -- metadata filters ----------------------------------------------------------------------------------

FILTERS = {
    "file_types": (SearchFilter(file_types=["pdf"]), {"sales", "glacier"}),
    "file_types_dot_upper": (SearchFilter(file_types=[".MD", "txt"]), {"photo", "tips", "python", "cake"}),
    "file_paths": (SearchFilter(file_paths=["/docs/travel/paris.docx", "/docs/home/cake.txt"]), {"eiffel", "cake"}),
    "path_prefix": (SearchFilter(path_prefix="/docs/science"), {"photo", "glacier"}),
    "date_range": (SearchFilter(ingested_after="2024-03-01", ingested_before="2024-06-01"), {"photo", "eiffel", "tips"}),
    "after_only": (SearchFilter(ingested_after="2024-06-20T12:00:00Z"), {"python", "glacier", "cake"}),
    "acl_and_prefix": (SearchFilter(acl=["public", "hr"], path_prefix="/docs/hr"), {"secret"}),
}


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("name", list(FILTERS))
def test_metadata_filters_in_every_mode(retriever, mode, name):
    flt, expected = FILTERS[name]
    query = BROAD_QUERY + (" salary" if "secret" in expected else "")
    result = retriever.retrieve(query, k=20, mode=mode, flt=flt)
    assert set(keys(result)) == expected


# -- rerank ---------------------------------------------------------------------------------------


def test_rerank_orders_fused_top_m_by_cross_encoder_scores(store, embedder, reranker, settings):
    s = settings.replace(rerank_top_m=6)
    r = HybridRetriever(store, embedder, None, reranker, s)
    query = "salary, sunlight, sales and sugar"
    hybrid = r.retrieve(query, k=6, mode="hybrid")
    assert len(hybrid.hits) == 6
    reranker.seen.clear()
    reranked = r.retrieve(query, k=6, mode="rerank")
    assert reranker.seen == [h.chunk.text for h in hybrid.hits]  # exactly the fused top-M, in fused order
    own = reranker.score(query, [h.chunk.text for h in hybrid.hits])
    expected = [h.chunk.id for _, h in sorted(zip(own, hybrid.hits), key=lambda p: (-p[0], p[1].fused_rank))]
    assert [h.chunk.id for h in reranked.hits] == expected
    assert [h.chunk.id for h in reranked.hits] != [h.chunk.id for h in hybrid.hits]  # the order did change
    for h in reranked.hits:
        assert h.score == h.rerank_score
        assert h.rerank_score == pytest.approx(own[[x.chunk.id for x in hybrid.hits].index(h.chunk.id)], abs=1e-4)
        assert h.fused_rank is not None and h.fused_score is not None  # the fused evidence stays on the hit
    # k below M: the best k of the reranked M, not a rerank of the top k.
    top2 = r.retrieve(query, k=2, mode="rerank")
    assert [h.chunk.id for h in top2.hits] == expected[:2]
    assert reranker.seen[-6:] == [h.chunk.text for h in hybrid.hits]


def test_rerank_fusion_weight_makes_the_cross_encoder_a_third_rrf_leg(store, embedder, reranker, settings):
    query = "salary, sunlight, sales and sugar"
    base = HybridRetriever(store, embedder, None, reranker, settings.replace(rerank_top_m=6))
    hybrid = base.retrieve(query, k=6, mode="hybrid")
    alone = base.retrieve(query, k=6, mode="rerank")
    ce_rank = {h.chunk.id: i for i, h in enumerate(alone.hits, start=1)}
    for weight in (0.0, 0.7, 1000.0):
        s = settings.replace(rerank_top_m=6, rerank_fusion_weight=weight)
        fused = HybridRetriever(store, embedder, None, reranker, s).retrieve(query, k=6, mode="rerank")
        expected = sorted(hybrid.hits, key=lambda h: (-(h.fused_score + weight / (s.rrf_k + ce_rank[h.chunk.id])),
                                                      h.fused_rank))
        assert [h.chunk.id for h in fused.hits] == [h.chunk.id for h in expected]
        for h in fused.hits:
            assert h.score == pytest.approx(h.fused_score + weight / (s.rrf_k + ce_rank[h.chunk.id]))
            assert h.rerank_score is not None and score_kind(h) == "rrf"  # no cross-encoder logit floor applies
        if weight == 0.0:  # no say for the reranker: the hybrid order
            assert [h.chunk.id for h in fused.hits] == [h.chunk.id for h in hybrid.hits]
        if weight == 1000.0:  # the reranker dominates: its own order
            assert [h.chunk.id for h in fused.hits] == [h.chunk.id for h in alone.hits]


def test_rerank_without_reranker_is_a_clear_error(store, embedder, settings):
    r = HybridRetriever(store, embedder, None, None, settings)
    with pytest.raises(ConfigError, match="RAG_RERANK_MODEL"):
        r.retrieve("anything", mode="rerank")


# -- edge cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_empty_collection_gives_empty_results(tmp_path, embedder, reranker, settings, mode):
    empty = build_store(tmp_path / "q", embedder, {}, docs=[])
    r = HybridRetriever(empty, embedder, None, reranker, settings)
    result = r.retrieve("eiffel tower", k=5, mode=mode)
    assert result.hits == [] and result.mode == mode
    empty.close()
    missing = EdgeStore(tmp_path / "nothing", "test")  # collection never created
    assert HybridRetriever(missing, embedder, None, reranker, settings).retrieve("x", mode=mode).hits == []


@pytest.mark.parametrize("query", ["", "   ", "\n\t "])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_empty_query_raises(retriever, query, mode):
    with pytest.raises(EmptyQueryError, match="empty"):
        retriever.retrieve(query, mode=mode)


def test_query_without_bm25_terms_still_runs_dense(retriever):
    query = "the of and ??? !!!"
    assert retriever.encode_bm25_query(query).indices == []
    hybrid = retriever.retrieve(query, k=5, mode="hybrid")
    assert len(hybrid.hits) == 5 and all(h.bm25_rank is None and h.dense_rank for h in hybrid.hits)
    assert retriever.retrieve(query, k=5, mode="bm25").hits == []


def test_very_long_query(retriever):
    filler = "aerodynamic considerations regarding numerous unrelated topics appear here "
    words = ("Eiffel Tower Paris 1889 " + filler * 700).split()
    query = " ".join(words[:5000])
    assert len(query.split()) == 5000
    for mode in ALL_MODES:
        result = retriever.retrieve(query, k=3, mode=mode)
        assert result.hits, mode
        if mode in ("bm25", "hybrid"):
            assert keys(result)[0] == "eiffel"


def test_bm25_query_terms_are_capped(retriever):
    query = " ".join(f"term{i}x" for i in range(1000))
    vec = retriever.encode_bm25_query(query)
    assert len(vec.indices) == MAX_QUERY_TERMS
    assert vec.values == [1.0] * MAX_QUERY_TERMS
    assert retriever.retrieve(query, k=3, mode="bm25").hits == []  # no error, nothing matches


@pytest.mark.parametrize("query,key", [
    ("中国的首都是哪里", "zh"),
    ("ما هي عاصمة مصر", "ar"),
    ("столицей России", "ru"),
])
def test_non_english_queries(retriever, query, key):
    for mode in ALL_MODES:
        result = retriever.retrieve(query, k=3, mode=mode)
        assert result.hits, mode
        if mode in ("bm25", "hybrid"):
            assert keys(result)[0] == key, mode
    assert keys(retriever.retrieve(query, k=1, mode="bm25")) == [key]  # nothing English shares a term


def test_timings_per_stage(retriever):
    for mode in ALL_MODES:
        t = retriever.retrieve("eiffel tower", k=3, mode=mode).timings_ms
        assert set(t) == {"embed", "search", "fuse", "rerank", "total"}
        assert all(v >= 0 for v in t.values())
        assert t["total"] >= t["embed"] + t["search"] + t["fuse"] + t["rerank"] - 0.01
        assert t["embed"] > 0 and t["search"] > 0
        assert (t["fuse"] > 0) == (mode in ("hybrid", "rerank"))
        assert (t["rerank"] > 0) == (mode == "rerank")


def test_unknown_mode_and_bad_k(retriever):
    with pytest.raises(ConfigError, match="mode"):
        retriever.retrieve("x", mode="semantic")
    with pytest.raises(ConfigError, match="k"):
        retriever.retrieve("x", k=0)


# -- collection metadata ------------------------------------------------------------------------------


def test_model_mismatch_raises_on_construction(tmp_path, embedder, corpus_vectors, settings):
    other = build_store(tmp_path / "q", embedder, corpus_vectors, docs=CORPUS[:1])
    other.info().embed_model = "some-other-model"
    with pytest.raises(ModelMismatchError, match="some-other-model"):
        HybridRetriever(other, embedder, None, None, settings)
    other.close()


def test_bm25_parameters_come_from_the_collection(tmp_path, embedder, corpus_vectors, settings):
    st = build_store(tmp_path / "q", embedder, corpus_vectors, bm25_k1=0.9, bm25_b=0.4, bm25_language="none")
    # Settings (and a passed encoder) say English with stemming; the collection was built without.
    r = HybridRetriever(st, embedder, BM25Encoder(language="english"), None, settings)
    enc = r.bm25_encoder
    assert (enc.k1, enc.b, enc.language) == (0.9, 0.4, "none")
    assert enc.avg_doc_len == st.info().bm25_avg_doc_len
    # Unstemmed index: "leaves" matches only literally, and "the" (no stop words) is a real term.
    assert keys(r.retrieve("leaves", k=3, mode="bm25")) == ["photo"]
    assert keys(r.retrieve("leaf", k=3, mode="bm25")) == []
    assert r.encode_bm25_query("the").indices
    st.close()


def test_collection_created_after_the_retriever(tmp_path, embedder, corpus_vectors, settings):
    st = EdgeStore(tmp_path / "late", "test")
    r = HybridRetriever(st, embedder, None, None, settings)
    assert r.retrieve("eiffel", mode="hybrid").hits == []
    st.close()
    late = build_store(tmp_path / "late", embedder, corpus_vectors, bm25_language="none")
    r.store = late
    assert keys(r.retrieve("eiffel", k=1, mode="bm25")) == ["eiffel"]
    assert r.bm25_encoder.language == "none"  # adopted from the collection once it existed
    late.close()


# -- typed components: Mode, score kinds, RetrievalConfig -------------------------------------------


@pytest.mark.parametrize("mode,kind", [("dense", "dense"), ("bm25", "bm25"), ("hybrid", "rrf"), ("rerank", "rerank")])
def test_every_hit_says_which_kind_of_score_it_carries(retriever, mode, kind):
    hits = retriever.retrieve(BROAD_QUERY, k=5, mode=mode).hits
    assert hits and {h.score_kind for h in hits} == {kind}
    assert {score_kind(h) for h in hits} == {kind} and {h.to_dict()["score_kind"] for h in hits} == {kind}


def test_mode_is_validated_once_with_an_error_naming_the_field():
    from rag.models import Mode

    assert Mode.parse(" Hybrid ") is Mode.HYBRID and Mode.parse(Mode.BM25) is Mode.BM25
    assert Mode.values() == ["dense", "bm25", "hybrid", "rerank"] and Mode.RERANK == "rerank"
    with pytest.raises(ConfigError, match=r"^search mode 'fuzzy' is not a retrieval mode; use one of "
                                          r"dense, bm25, hybrid, rerank$"):
        Mode.parse("fuzzy", field="search mode")


def test_retriever_takes_a_typed_config_or_the_settings_it_is_built_from(store, embedder, settings):
    from rag.retriever import RetrievalConfig

    config = RetrievalConfig.from_settings(settings.replace(rrf_k=5, dense_weight=0.5))
    assert config.rrf_k == 5 and config.dense_weight == 0.5 and config.default_acl == ("public",)
    typed = HybridRetriever(store, embedder, None, None, config).retrieve(BROAD_QUERY, k=8, mode="hybrid")
    loose = HybridRetriever(store, embedder, None, None, settings.replace(rrf_k=5, dense_weight=0.5)).retrieve(
        BROAD_QUERY, k=8, mode="hybrid")
    assert [(h.chunk.id, h.score) for h in typed.hits] == [(h.chunk.id, h.score) for h in loose.hits]
