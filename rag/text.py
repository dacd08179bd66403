"""Text primitives shared by the product, each written once: stop lists per language, and making
untrusted text safe to print on a terminal.

(The one sentence splitter and the one citation-marker grammar live in `rag.answering.citations`, which
validates answers with them; everything else imports them from there.)
"""

from __future__ import annotations

import re

# --- stop lists -------------------------------------------------------------------------------------
# One list per language, with named extensions for the jobs that need to drop more than BM25 does.
# BM25 keeps the classic Lucene English stop set (StandardAnalyzer / EnglishAnalyzer): small on purpose,
# so content words that matter in questions ("how", "what", "which", "between") stay searchable.
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then
    there these they this to was will with""".split()
)

# Pronouns, auxiliaries and question words: no content when matching a claim to the passage it cites.
ENGLISH_FUNCTION_WORDS: frozenset[str] = ENGLISH_STOPWORDS | frozenset(
    """been can could did do does from had has have he her his how i its may might she should so them
    those were what when where which who why would""".split()
)
# Negations change what a sentence says, so quote matching keeps them.
ENGLISH_NEGATIONS: frozenset[str] = frozenset({"no", "not"})
# Words that shape a question but are not what it asks about ("what year" -> only "year" matters).
ENGLISH_QUESTION_WORDS: frozenset[str] = frozenset(
    """what which who whom whose when where why how many much did does do was were is are can could would
    should has have had kind type name named called the a an of in on to for by with from at""".split()
)

STOPWORDS: dict[str, frozenset[str]] = {"english": ENGLISH_STOPWORDS}


def stopwords(language: str) -> frozenset[str]:
    """The BM25 stop list of a language (empty for languages without one, and for "none")."""
    return STOPWORDS.get((language or "none").strip().lower(), frozenset())


# --- terminal output ----------------------------------------------------------------------------------
# ANSI/VT escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST; OSC 0 sets the window title,
# OSC 52 writes the clipboard), DCS/SOS/PM/APC strings, and two-character ESC sequences; plus their 8-bit
# C1 forms (\x9b = CSI, \x9d = OSC ...).
_ESCAPE_RE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI, e.g. SGR 8 (hidden text)
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC, DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]?"  # other ESC sequences (and a lone ESC)
)
# Remaining C0 and C1 controls except tab and newline, and DEL.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """`text` with terminal control sequences and control characters removed (tabs and newlines kept).

    Document text and model replies are untrusted: printed raw, an OSC 52 sequence writes the user's
    clipboard, OSC 0 retitles the window and SGR 8 hides text. Carriage returns go too (they let a line
    overwrite what was printed before it).
    """
    return _CONTROL_RE.sub("", _ESCAPE_RE.sub("", text))
