"""BM25 term weights as sparse vectors, with IDF left to Qdrant (`Modifier.IDF` on the "bm25" vector).

A document's sparse vector holds, per distinct term, the BM25 term-frequency part
    tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avg_doc_len))
and a query's holds 1.0 per distinct term, so Qdrant's dot product times its IDF,
    idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5)),
is the BM25 score. Term ids are a stable 31-bit hash of the token (never Python's salted `hash`).

The tokenizer is ours (not Qdrant's built-in Bm25) so the same terms come out of the embedded and
the server backends, and so tests can compare with `rank_bm25` on the very same tokens.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import snowballstemmer

from rag.text import ENGLISH_STOPWORDS, stopwords  # noqa: F401  (ENGLISH_STOPWORDS: re-exported for callers)


# Scripts written without spaces between words: each character becomes its own token (unigrams),
# otherwise a whole Chinese or Japanese sentence would be one giant "word".
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u31f0-\u31ff\uff66-\uff9f"
# Word runs: letters, digits and combining marks; "_" separates (snake_case -> snake, case).
_TOKEN_RE = re.compile(rf"[{_UNSPACED}]|[^\W_{_UNSPACED}]+")

_MAX_TOKEN_CHARS = 64  # longer runs are base64/hash noise; truncating keeps ids stable and cheap
_TERM_MASK = 0x7FFFFFFF


@dataclass
class SparseVector:
    """A sparse vector: parallel lists of term ids (sorted, unique) and weights."""

    indices: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[int, float]:
        """{term_id: weight}, handy in tests and debugging."""
        return dict(zip(self.indices, self.values))


def term_id(token: str) -> int:
    """Stable 31-bit id of a token: the first 4 bytes of its BLAKE2b digest, masked to 31 bits."""
    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "little") & _TERM_MASK


def available_languages() -> list[str]:
    """Languages accepted by BM25Encoder: the Snowball stemmers plus "none"."""
    return ["none", *snowballstemmer.algorithms()]


class BM25Encoder:
    """Tokenizes text and turns it into BM25 sparse vectors for documents and queries.

    `language` picks the Snowball stemmer ("english", "german", ...); English also drops the Lucene
    stop words. "none" disables stemming and stop words. `avg_doc_len` is fixed when a collection is
    created (recorded in its CollectionInfo), so document weights never need recomputing.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75, avg_doc_len: float = 100.0, language: str = "english") -> None:
        if k1 < 0 or not 0.0 <= b <= 1.0 or not avg_doc_len > 0:
            raise ValueError(f"BM25 parameters out of range: k1={k1} (>= 0), b={b} (0..1), avg_doc_len={avg_doc_len} (> 0)")
        self.k1 = float(k1)
        self.b = float(b)
        self.avg_doc_len = float(avg_doc_len)
        self.language = (language or "none").strip().lower()
        if self.language in ("none", "off", ""):
            self.language = "none"
            self._stemmer = None
        else:
            try:
                self._stemmer = snowballstemmer.stemmer(self.language)
            except KeyError as exc:
                raise ValueError(
                    f"bm25_language {language!r} has no Snowball stemmer; use one of {', '.join(available_languages())}"
                ) from exc
        self._stopwords = stopwords(self.language)
        self._stem_cache: dict[str, str] = {}

    def tokenize(self, text: str) -> list[str]:
        """NFKC-normalize, lower-case, split into word runs, drop stop words, stem."""
        if not text:
            return []
        normalized = unicodedata.normalize("NFKC", text).lower()
        tokens: list[str] = []
        for raw in _TOKEN_RE.findall(normalized):
            if raw in self._stopwords:
                continue
            tokens.append(self._stem(raw[:_MAX_TOKEN_CHARS]))
        return tokens

    def doc_length(self, text: str) -> int:
        """Number of BM25 tokens in `text` (what `avg_doc_len` averages)."""
        return len(self.tokenize(text))

    def term_weights(self, tokens: list[str]) -> dict[str, float]:
        """BM25 term-frequency weights (no IDF) per distinct token of an already tokenized document."""
        if not tokens:
            return {}
        norm = self.k1 * (1.0 - self.b + self.b * len(tokens) / self.avg_doc_len)
        return {tok: tf * (self.k1 + 1.0) / (tf + norm) for tok, tf in Counter(tokens).items()}

    def encode_document(self, text: str) -> SparseVector:
        """Sparse vector of BM25 tf saturation and length normalization; IDF is applied by Qdrant."""
        return _to_sparse(self.term_weights(self.tokenize(text)))

    def encode_query(self, text: str) -> SparseVector:
        """Sparse vector with weight 1.0 per distinct query term."""
        return _to_sparse({tok: 1.0 for tok in self.tokenize(text)})

    def _stem(self, token: str) -> str:
        if self._stemmer is None:
            return token
        stem = self._stem_cache.get(token)
        if stem is None:
            stem = self._stemmer.stemWord(token) or token
            if len(self._stem_cache) < 200_000:  # bounded: a long ingest must not grow memory forever
                self._stem_cache[token] = stem
        return stem

    def __repr__(self) -> str:
        return f"BM25Encoder(k1={self.k1}, b={self.b}, avg_doc_len={self.avg_doc_len}, language={self.language!r})"


def _to_sparse(weights: dict[str, float]) -> SparseVector:
    # Two tokens may hash to the same id; summing keeps the dot product equal to the sum over terms.
    merged: dict[int, float] = {}
    for tok, weight in weights.items():
        tid = term_id(tok)
        merged[tid] = merged.get(tid, 0.0) + weight
    indices = sorted(merged)
    values = [merged[i] for i in indices]
    return SparseVector(indices=indices, values=values)
