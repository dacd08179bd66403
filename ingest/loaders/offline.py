"""Make unstructured run with no network: telemetry off, and spaCy without a model download.

Importing this module sets the telemetry switches before anything imports unstructured (which
sends a request on import unless DO_NOT_TRACK is set). `configure_offline()` is called by
`parse_file` before the first parse.
"""

from __future__ import annotations

import rag  # noqa: F401  (sets DO_NOT_TRACK and friends before unstructured is imported)

import functools
import logging
import os
import threading
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

log = logging.getLogger(__name__)

_offline_lock = threading.Lock()
_offline_done = False

# A tiny stand-in for a POS tagger: unstructured only asks "does this text contain a verb?" to
# tell narrative text from titles. Auxiliaries, common verbs and -ed/-ing forms are enough.
_COMMON_VERBS = frozenset(
    """is are was were be been being am has have had do does did can could will would shall should
    may might must says said make makes made take takes took get gets got go goes went see sees saw
    know knows knew think thinks thought use uses used provide provides include includes show shows
    find finds found give gives gave come comes came become becomes became need needs want wants
    like likes help helps run runs ran keep keeps kept let lets seem seems feel feels felt try tries
    leave leaves left call calls ask asks work works tell tells told believe believes hold holds held
    bring brings brought begin begins began write writes wrote read reads set sets put puts mean means
    require requires allow allows remain remains consider considers contain contains describe describes
    represent represents offer offers create creates support supports apply applies add adds""".split()
)


def _verb_tag(word: str) -> str:
    low = word.lower()
    if low in _COMMON_VERBS:
        return "VB"
    if word.islower() and len(word) >= 5 and (low.endswith("ed") or low.endswith("ing")):
        return "VBD" if low.endswith("ed") else "VBG"
    return "NN"


def _blank_pipeline() -> Any:
    # Lazy: spaCy is heavy and only needed once a document is parsed.
    import spacy
    from spacy.language import Language

    if "rag_verb_tagger" not in Language.factories:

        @Language.component("rag_verb_tagger")
        def _tagger(doc):  # type: ignore[no-untyped-def]
            for token in doc:
                token.tag_ = _verb_tag(token.text)
            return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("rag_verb_tagger")
    return nlp


def configure_offline() -> None:
    """Make unstructured work without network access. Idempotent; called by `parse_file`.

    unstructured 0.27 loads spaCy `en_core_web_sm` on first use and downloads it from GitHub when
    missing (there is no setting to turn that off). Offline the download fails: DOCX/PPTX/HTML/MD
    raise and PDF silently returns nothing. We replace its cached loader `_get_nlp` with one that
    uses the installed model when present and otherwise a blank English pipeline with a sentencizer
    and a small rule-based verb tagger.
    """
    global _offline_done
    if _offline_done:
        return
    with _offline_lock:
        if _offline_done:
            return
        # Lazy: spaCy and unstructured take seconds to import; fast commands never need them.
        import spacy
        import unstructured.nlp.tokenize as tokenize

        @functools.lru_cache(maxsize=1)
        def _get_nlp() -> Any:
            try:
                return spacy.load("en_core_web_sm", exclude=["ner", "lemmatizer", "attribute_ruler"])
            except OSError:
                log.debug("spaCy en_core_web_sm not installed; using a blank English pipeline")
                return _blank_pipeline()

        # `_run_pipeline` looks `_get_nlp` up in the module globals at call time, and
        # `_load_spacy_model` (the downloader) is only reached through it.
        tokenize._get_nlp = _get_nlp
        tokenize._load_spacy_model = _get_nlp
        _offline_done = True
