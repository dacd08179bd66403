"""A token budget for cross-encoder pairs: the question plus the passage's best window, not its first N tokens.

A cross-encoder's cost grows with pair length (attention quadratically), and a passage's first tokens are
not necessarily where it answers the question. `PassageWindower` cuts each passage that does not fit
`max_tokens` (question + passage + special tokens, counted with the cross-encoder's own tokenizer) down to
the window of tokens holding the most distinct question terms (then the most matches; earliest on ties).
Question terms are the BM25 analyzer's (stop words dropped, stemmed), so "discovered" matches "discovery".
Passages that fit are passed through unchanged.
"""

from __future__ import annotations

import bisect
import re
from typing import Any, Sequence

from rag.lexical import BM25Encoder

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_SPECIAL_TOKENS = 3  # [CLS] question [SEP] passage [SEP]


class PassageWindower:
    """Fits (question, passage) pairs into `max_tokens` by keeping each passage's best-matching window."""

    def __init__(self, tokenizer: Any, max_tokens: int, language: str = "english", stride: int = 8) -> None:
        if max_tokens < 16:
            raise ValueError(f"rerank token budget must be at least 16 tokens, got {max_tokens}")
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)
        self.stride = max(1, int(stride))
        self._analyzer = BM25Encoder(language=language)

    def fit(self, query: str, passages: Sequence[str]) -> list[str]:
        """Each passage, or its best window when question + passage exceed the budget."""
        query_tokens = len(self.tokenizer(query, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
        # Very long questions still leave the passage a quarter of the budget.
        room = max(self.max_tokens - _SPECIAL_TOKENS - query_tokens, self.max_tokens // 4)
        terms = set(self._analyzer.tokenize(query))
        return [self.best_window(passage, terms, room) for passage in passages]

    def pairs(self, query: str, passages: Sequence[str]) -> list[tuple[str, str]]:
        """(query, fitted passage) pairs ready for a cross-encoder."""
        return [(query, p) for p in self.fit(query, passages)]

    def best_window(self, passage: str, terms: set[str], room: int) -> str:
        """The `room`-token window of `passage` with the most distinct query terms (whole passage if it fits)."""
        encoding = self.tokenizer(passage, add_special_tokens=False, truncation=False, return_offsets_mapping=True, verbose=False)
        offsets = encoding["offset_mapping"]
        n = len(offsets)
        if n <= room:
            return passage
        # Term id per token: the analyzed word the token belongs to, when that word is a query term.
        starts = [s for s, _ in offsets]
        token_term: list[str | None] = [None] * n
        for match in _WORD_RE.finditer(passage):
            analyzed = self._analyzer.tokenize(match.group())
            if not analyzed or analyzed[0] not in terms:
                continue
            first = bisect.bisect_left(starts, match.start())
            last = bisect.bisect_left(starts, match.end())
            for i in range(first, min(last, n)):
                token_term[i] = analyzed[0]
        best_start, best_score = 0, (-1, -1)
        candidates = list(range(0, n - room + 1, self.stride))
        if candidates[-1] != n - room:
            candidates.append(n - room)
        for start in candidates:
            window = [t for t in token_term[start:start + room] if t is not None]
            score = (len(set(window)), len(window))
            if score > best_score:  # strict: the earliest window wins ties
                best_start, best_score = start, score
        begin = offsets[best_start][0]
        end = offsets[best_start + room - 1][1]
        return passage[begin:end]
