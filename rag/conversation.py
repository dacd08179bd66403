"""Follow-up questions: turn the last question of a conversation into the query that is searched.

`condense(question, history, llm=None, idf=None) -> Rewrite` is the one entry point. It returns the
query to search and says how it was made, so the UI, the API and the CLI can show what was searched.

Two ways, tried in this order:

1. With an LLM (`llm`: anything with `complete(messages) -> str`, e.g. `rag.answering.llm.LLMAnswerer`),
   one short call rewrites the conversation into a standalone query. Its output is checked (`check_llm_query`:
   non-empty, bounded length, not an answer or an abstention, shares content words with the conversation);
   on any failure, timeout or rejected output we fall back to the rule.
2. The rule (`rule_rewrite`, no model): a question is a follow-up only when it refers back to something it
   does not name itself:
   - an elliptical form ("What about Krakow?", "And the population?", "How about in 1990?");
   - an anaphor whose referent is missing from the question: a personal or possessive pronoun
     (it, its, they, their, he, his, she, her, ...), a demonstrative used as a pronoun ("What caused this?"),
     a demonstrative with a noun the conversation mentioned ("this war" after a question about a war), or
     locative "there" — but not existential "there" ("will there be"), not expletive "it" ("how long does it
     take"), not a reflexive ("itself": always bound in its own clause), not generic "those" ("those
     responsible for"), and not a pronoun the question resolves itself by the binding rules of English
     (`_antecedent_in_question`): a name or plural noun in another clause or sentence ("Since NASA didn't
     know ..., what did they use"), a possessor ("What did Tesla's father promise him"), a subject "who"
     binding a later pronoun ("Who called their system ...?") — while an object pronoun never refers to the
     subject of its own clause ("When did the Khwarezmian Empire fall to him?" is a follow-up);
   - or nothing searchable at all ("Why?", "When was that?").
   Then only the previous turn's *topic* is merged — one of its names (capitalised spans; with `idf`, the one
   the collection mentions most), or without names up to three content words (with `idf`, the recurring
   ones) — never the whole previous sentence, which would drag the search toward the previous answer. The
   topic must agree with the pronoun in person and number (`_agrees`): he/she needs one singular name that
   can be a person (not "Charles River", "Happy Days" or "Chinese"), they/them a plural, an acronym or content
   words (not "Wardenclyffe"); a name that does not agree is passed over for another name or the turn's
   content words, and when nothing agrees the question is searched as typed (a pronoun that agrees with
   nothing the user said refers to something the user did not say). The topic replaces the anaphor ("its
   growth" -> "Warsaw's growth") so both the dense and the BM25 leg see the question as if it had been typed
   standalone.

   Measured with evals/conversation_eval.py (hybrid, MiniLM, gold passage in the top 10, with the collection
   IDF as `Pipeline.condense_question` passes it). Developed on the tuning set (`--tuning`: 230 follow-ups and
   300 topic switches built from questions_all.jsonl minus questions.jsonl minus conversations.jsonl):
   follow-ups 0.964x their standalone wording (215/223; previous rule 0.955x), topic switches 1.000x no
   history (289/289; previous rule 0.997x). Reported on squad/conversations.jsonl, held-out articles:
   follow-ups 0.952x (60/63; previous rule 0.952x), topic switches 1.000x (66/66; previous rule 0.985x);
   full set 0.954x (125/131) and 1.000x (148/148) (previous rule 0.962x and 0.993x; the one follow-up lost
   is now rewritten exactly to its standalone wording, which misses where the bare question hit by chance).

Why not the old rule (any question of <= 4 words, or containing "it", "there", "and", "this": prepend
the previous question)? It hijacked ordinary questions ("What is LayoutParser?" after a hockey question
searched for hockey; "What activities will there be at family day?" lost its answer), and never showed
the rewrite.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

log = logging.getLogger(__name__)

__all__ = ["Rewrite", "ChatCompleter", "condense", "idf_from_counts", "main_name", "rule_rewrite", "is_follow_up", "topic_terms",
           "check_llm_query", "llm_messages", "condenser_from_settings", "CONDENSE_TIMEOUT_S"]

Method = Literal["none", "rule", "llm"]
Message = Mapping[str, Any]  # {"role": "user"|"assistant", "content": str}

# One short call: the user is waiting for the answer behind it, so the condenser never gets the full answer
# timeout; past this we search with the rule's query instead.
CONDENSE_TIMEOUT_S = 8.0
MAX_QUERY_CHARS = 400  # an LLM "query" longer than this is an answer or a ramble, not a query
HISTORY_TURNS = 4  # user turns the condenser and the rule look back at


@dataclass
class Rewrite:
    """The query that is searched for a question, and how it was obtained.

    `method`: "none" (the question as typed), "rule" (the follow-up rule), "llm" (the LLM condenser).
    `reason`: one line for logs and the UI ("pronoun 'its' without referent; topic: Warsaw").
    """

    query: str
    rewritten: bool
    method: Method
    reason: str
    topic: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "rewritten": self.rewritten, "method": self.method, "reason": self.reason,
                "topic": list(self.topic)}


class ChatCompleter(Protocol):
    """What the LLM condenser needs: one chat completion as text (raises on failure)."""

    def complete(self, messages: list[dict[str, str]]) -> str:
        ...


# --- words ------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[A-Za-z0-9\u00C0-\u024F][A-Za-z0-9\u00C0-\u024F'’\-.]*[A-Za-z0-9\u00C0-\u024F]|[A-Za-z0-9\u00C0-\u024F]")

# Function words and question words: never a topic, never "content" that would retrieve on its own.
STOPWORDS = frozenset("""
a an the and or but nor so yet if then than as of at by for from in into on onto to up down out off over under
with without within about above below between among through during before after since until upon via per
is are was were be been being am do does did done doing have has had having will would shall should can could
may might must ought need
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs itself
himself herself themselves this that these those there here such same other another own
what which who whom whose when where why how whether while also too very just only not no yes any some all each
every both either neither few more most many much several
else ever never again still even well really quite rather please
tell know say said give gets get got make made called call named name
""".split())

_PERSONAL = frozenset({"it", "its", "itself", "they", "them", "their", "theirs", "themselves",
                       "he", "him", "his", "himself", "she", "her", "hers", "herself"})
_PERSON_PRONOUNS = frozenset({"he", "him", "his", "himself", "she", "her", "hers", "herself"})
_REFLEXIVES = frozenset({"itself", "themselves", "himself", "herself"})
_DEMONSTRATIVES = frozenset({"this", "that", "these", "those"})
_BE_FORMS = frozenset({"is", "are", "was", "were", "be", "been", "being", "'s", "’s"})
_MODALS = frozenset({"will", "would", "may", "might", "could", "should", "can", "shall", "must", "do", "does",
                     "did", "have", "has", "had", "used", "seem", "seems", "seemed", "appear", "appears",
                     "remain", "remains", "exist", "exists", "existed"})
# Verbs after which "it" is usually expletive ("how long does it take", "is it true that").
_EXPLETIVE_IT_NEXT = frozenset({"take", "takes", "took", "cost", "costs", "rain", "rains", "rained", "snow"})
_EXPLETIVE_IT_ADJ = frozenset({"true", "possible", "necessary", "likely", "unlikely", "important", "said",
                               "believed", "thought", "known", "estimated", "reported", "hard", "easy",
                               "common", "normal", "legal", "illegal", "safe", "worth"})
_QUESTION_WORDS = frozenset({"what", "which", "who", "whom", "whose", "when", "where", "why", "how"})
# Heads of elliptical follow-ups: "what about X", "how about X", "and X", "same for X", "what else".
_ELLIPSIS_RE = re.compile(r"^\s*(?:(?:and|but|so)\s+)?(?:what|how)\s+about\b|^\s*and\s+(?!the\s+\w+\s+(?:is|are|was|were)\b)"
                          r"|^\s*(?:same|likewise)\s+(?:for|with)\b|^\s*what\s+else\b|^\s*anything\s+else\b",
                          re.IGNORECASE)


def words(text: str) -> list[str]:
    """Word tokens with their case kept (apostrophes and inner hyphens/dots stay inside a word)."""
    return _WORD_RE.findall(text or "")


def _base(word: str) -> str:
    w = word.lower().replace("’", "'")
    return w[:-2] if w.endswith("'s") else w


def content_words(text: str) -> list[str]:
    """Lower-cased words of `text` that are not function or question words, in order, without repeats."""
    out: list[str] = []
    for w in words(text):
        b = _base(w)
        if b not in STOPWORDS and not b.isdigit() and len(b) > 1 and b not in out:
            out.append(b)
    return out


def _is_name_word(word: str, position: int) -> bool:
    """A capitalised word that is part of a name: not the sentence's first word unless it cannot be a
    function word (so "Warsaw" at the start counts, "What" does not)."""
    if not word[:1].isupper() and not (len(word) > 1 and word[1:2].isupper()) \
            and not re.search(r"[-'’][A-Z]", word):  # "iPhone", "eBay", "al-Islamiyya"
        return False
    b = _base(word)
    if b in STOPWORDS or b in _QUESTION_WORDS:
        return False
    return position > 0


def names(text: str, sentence_start: bool = True) -> list[str]:
    """Capitalised spans of `text` ("Baltic Sea", "Warsaw", "Genghis Khan"); a lone "of"/"the"/"de" may join
    two capitalised words ("University of Chicago"). The first word of a sentence is capitalised anyway, so
    it starts a name only when it is possessive ("Warsaw's ...") or the next word is capitalised too
    ("Point Conception is ...")."""
    toks = words(text)
    spans: list[str] = []
    i = 0
    while i < len(toks):
        if i == 0 and not sentence_start and toks[0][:1].isupper() and _base(toks[0]) not in STOPWORDS:
            first = True  # a fragment ("Krakow" after "what about"): its capital is not sentence case
        else:
            first = i == 0 and (toks[0][:1].isupper() and _base(toks[0]) not in STOPWORDS
                                and (toks[0].lower().endswith(("'s", "’s"))
                                     or (len(toks) > 1 and _is_name_word(toks[1], 1))))
        if first or _is_name_word(toks[i], i):
            j = i + 1
            while j < len(toks) and not toks[j - 1].lower().endswith(("'s", "’s")):  # "Warsaw's | Museum"
                if _is_name_word(toks[j], j):
                    j += 1
                elif (toks[j].lower() in {"of", "the", "de", "von", "van", "upon", "la", "du"} and j + 1 < len(toks)
                      and _is_name_word(toks[j + 1], j + 1)):
                    j += 2
                else:
                    break
            span = " ".join(toks[i:j])
            span = re.sub(r"['’]s$", "", span)
            if span not in spans:
                spans.append(span)
            i = j
        else:
            i += 1
    return spans


# --- is it a follow-up? -----------------------------------------------------------------------------

@dataclass
class _Anaphor:
    index: int  # token index in the question
    word: str  # as written
    kind: str  # "pronoun" | "possessive" | "demonstrative" | "there"
    head: str = ""  # a demonstrative's noun ("this war" -> "war"); "" when used as a pronoun ("this")


_POSSESSIVE = frozenset({"its", "their", "his", "her", "theirs", "hers"})


_GENERIC_AFTER_THOSE = frozenset({"who", "whom", "whose", "which", "that", "of", "in", "with", "without", "from",
                                  "at", "on", "under", "over", "for", "responsible", "born", "able", "unable"})


def _demonstrative_head(low: list[str], i: int) -> str:
    """The noun a demonstrative determines ("this war" -> "war", "this type of car" -> "type"), or "" when it
    stands alone as a pronoun ("What caused this?", "When did that happen?", "What is this called?")."""
    if i + 1 >= len(low):
        return ""
    nxt = _base(low[i + 1])
    if nxt in STOPWORDS or nxt in _QUESTION_WORDS or nxt.endswith("ed") or nxt.isdigit():
        return ""
    if i > 0 and low[i - 1] in _MODALS:
        # "did that happen?", "did this cause the war?": the demonstrative is the subject and the next word its
        # verb; "did these uprisings take place?": a noun, then the verb
        after = _base(low[i + 2]) if i + 2 < len(low) else ""
        if not after or after in STOPWORDS:
            return ""
    return nxt


def find_anaphors(question: str) -> list[_Anaphor]:
    """Words of `question` that point back at something the question does not name (see module docstring)."""
    toks = words(question)
    raw_low = [t.lower() for t in toks]
    out: list[_Anaphor] = []
    for i, w in enumerate(raw_low):
        prev = raw_low[i - 1] if i > 0 else ""
        nxt = raw_low[i + 1] if i + 1 < len(raw_low) else ""
        nxt2 = raw_low[i + 2] if i + 2 < len(raw_low) else ""
        if w in _PERSONAL:
            if w in _REFLEXIVES:
                continue  # "The UMC understands itself ...": a reflexive always has its antecedent in its clause
            if w == "it" and (nxt in _EXPLETIVE_IT_NEXT or (nxt in _BE_FORMS and nxt2 in _EXPLETIVE_IT_ADJ)
                              or (prev in _BE_FORMS and nxt in _EXPLETIVE_IT_ADJ)):
                continue  # "how long does it take", "is it true that": no referent needed
            out.append(_Anaphor(i, toks[i], "possessive" if w in _POSSESSIVE else "pronoun"))
        elif w in _DEMONSTRATIVES:
            if w == "that" and prev and prev not in _QUESTION_WORDS and prev not in _BE_FORMS and prev not in _MODALS \
                    and prev not in {"of", "about", "in", "on", "for", "with", "by", "from", "to", "at", "after",
                                     "before", "during", "like"}:
                continue  # "the river that flows ...", "said that ...": a relative pronoun or conjunction
            if w == "those" and (nxt in _GENERIC_AFTER_THOSE or nxt.endswith(("ed", "ing", "ible", "able"))):
                continue  # "those who ...", "those responsible for ...", "those living in ...": generic, no referent
            head = _demonstrative_head(raw_low, i)
            out.append(_Anaphor(i, toks[i], "demonstrative", head))
        elif w == "there":
            if nxt in _BE_FORMS or nxt in _MODALS or prev in _BE_FORMS or prev in _MODALS or i == 0:
                continue  # existential: "are there", "will there be", "there were", "There are ... for what?"
            out.append(_Anaphor(i, toks[i], "there"))
    return out


_SUBORDINATORS = frozenset("""since because when whenever while although though if unless until after before where
whereas so that which who whom whose""".split())
_PREPOSITIONS = frozenset("""of to in on at by for with from about into onto over under against toward towards
between among through during""".split())
_SUBJECT_PRONOUNS = frozenset({"he", "she", "they"})
_OBJECT_PRONOUNS = frozenset({"him", "them", "her", "it"})
_PLURAL_PRONOUNS = frozenset({"they", "them", "their", "theirs", "themselves"})
# A demonym or other -ian/-ese/-ish adjective before a noun ("the Mongolian spelling", "Filipino students") is
# a modifier, not something a pronoun can point back to.
_DEMONYM_RE = re.compile(r"(?:ian|ean|ese|ish|ino|ina)$", re.IGNORECASE)


# A sentence end inside a question: "?"/"!", or "." after a lower-case word (not "U.S." or "y. pestis").
_SENTENCE_END = re.compile(r"(?<=[a-z0-9]{2}\.)\s+(?=[A-Z])|(?<=[?!])\s+")


def _clauses(question: str) -> list[int]:
    """The clause number of each word token: a subordinating word starts a new clause ("Rocks that are at a
    depth where they are ..."), and so does the comma that closes a clause opened that way ("Since NASA didn't
    know ..., what did they use") or a sentence end. A comma after a phrase ("In the Philippines, what ...",
    "Along with Muslims, Jews and ...") does not."""
    out: list[int] = []
    clause = 0
    last_end = 0
    opened = False  # the current clause began with a subordinating word
    for m in _WORD_RE.finditer(question):
        gap = question[last_end:m.start()]
        if out and (re.search(r"[?!;:]", gap) or re.fullmatch(_SENTENCE_END, question[last_end - 3:m.start()] + "")):
            clause += 1
            opened = False
        elif "," in gap and opened:
            clause += 1
            opened = False
        if m.group(0).lower() in _SUBORDINATORS:
            if out:
                clause += 1
            opened = True
        out.append(clause)
        last_end = m.end()
    return out


def _sentence_of(question: str, index: int) -> tuple[int, list[str]]:
    """(sentence number of word `index`, the content words of the sentences before it)."""
    before = question[: list(_WORD_RE.finditer(question))[index].start()]
    parts = re.split(_SENTENCE_END, before)
    return len(parts) - 1, content_words(" ".join(parts[:-1]))


def _looks_plural(name: str) -> bool:
    last = name.split()[-1]
    return last.endswith("s") and not last.endswith(("ss", "us", "is", "'s", "’s"))


def _bound_by_wh(low: list[str], clause: list[int], anaphor: _Anaphor) -> bool:
    """"Who called their system ...?", "Who stated he wanted ...?": a subject "who" followed by a verb binds a
    later person pronoun, possessive or subject (the pronoun is whoever the answer is), so no earlier turn is
    needed. Likewise "Which Belgian footballer claimed that he ...": a "which/what + noun" subject binds a
    subject pronoun of a later clause. Never an object pronoun ("Who succeeded him?": him is someone else),
    never "its"/"it" (who is a person), not "Who did he marry?" (who is the object there), nor "Who was his
    father?" (a copula: who is his father, not a binder)."""
    w = anaphor.word.lower()
    if len(low) < 2 or anaphor.index < 2 or w not in {"he", "she", "they", "his", "her", "their"}:
        return False
    if low[1] in _MODALS or low[1] in _BE_FORMS:
        return False
    if low[0] == "who":
        return w in _SUBJECT_PRONOUNS or (anaphor.kind == "possessive" and w != "her")
    if low[0] in {"which", "what"} and low[1] not in STOPWORDS and clause[anaphor.index] != clause[0]:
        if w in _SUBJECT_PRONOUNS:
            return True
        # a possessive only after such a bound subject: "... claimed that he should ... when his contract ..."
        return anaphor.kind == "possessive" and any(t in _SUBJECT_PRONOUNS and clause[j] != clause[0]
                                                    for j, t in enumerate(low[: anaphor.index]))
    return False


def _antecedent_in_question(question: str, anaphor: _Anaphor) -> bool:
    """A pronoun that can refer to something written in the same question needs no history.

    Candidates are the names written before the pronoun, agreeing in number ("Tesla ... him", "the Normans ...
    their"; an acronym, "NASA ... they", agrees with both) and, for he/him/his/she/her, able to be a person
    (not "the Khwarezmian Empire", not a demonym such as "the Mongolian spelling"). Where they may stand
    follows the binding rules of English:
    - in another clause, any candidate ("Since NASA didn't know ..., what did they use"; "Rocks that are at a
      depth where they are stretched": a plural noun also counts for a subject "they" there);
    - in the same clause, a possessive pronoun may refer to the subject ("How did Harvard reduce its holdings");
      a direct object may not ("When did Ogedei succeed him?": him is someone else), but the object of a
      preposition may ("How many soldiers did Genghis Khan take with him?"), and so may a possessor ("What did
      Tesla's father promise him"), except the possessor of the pronoun's own phrase ("What was Kublai Khan's
      relation to him?");
    - a subject "who" (or "which + noun") binds a later person pronoun (`_bound_by_wh`).
    "it" is never resolved inside the question: an object "it" usually refers to the topic of the conversation
    even when the question names another thing ("How much water does the Waal get from it?" is about the Rhine).
    Demonstratives and "there" are not resolved here either (see `_demonstrative_refers_back`).
    """
    if anaphor.kind in {"demonstrative", "there"}:
        return False
    sentence, earlier = _sentence_of(question, anaphor.index)
    if sentence > 0 and len(earlier) >= 2:
        return True  # "Some species of beroe have ... on the stomach wall. What does it do?": the question's own
    w = anaphor.word.lower()
    if w in {"it", "itself"}:
        return False
    toks = words(question)
    low = [t.lower() for t in toks]
    clause = _clauses(question)
    if _bound_by_wh(low, clause, anaphor):
        return True
    plural = w in _PLURAL_PRONOUNS
    person = w in _PERSON_PRONOUNS
    own = clause[anaphor.index]
    after_preposition = anaphor.index > 0 and low[anaphor.index - 1] in _PREPOSITIONS
    # A possessive "her" before a noun behaves as a possessive, otherwise as an object.
    obj = w in _OBJECT_PRONOUNS and not (w == "her" and anaphor.index + 1 < len(low)
                                         and _base(low[anaphor.index + 1]) not in STOPWORDS)
    possessive = anaphor.kind == "possessive" and not obj
    for start, end, name in _name_spans(toks[: anaphor.index]):
        acronym = any(len(t) > 1 and t.isupper() for t in name.split())
        if not acronym and _looks_plural(name) != plural:
            continue
        if person and not _person_compatible(anaphor, [name]):
            continue
        if person and len(name.split()) == 1 and _DEMONYM_RE.search(name) and end < anaphor.index \
                and _base(low[end]) not in STOPWORDS:
            continue  # "the Mongolian spelling of him": an adjective, not a person
        if clause[start] != own or possessive:
            return True
        if w in _SUBJECT_PRONOUNS:
            return True  # "What did Tesla say he ...": a subject pronoun after a verb starts a clause of its own
        owner = toks[end - 1].lower().endswith(("'s", "’s"))
        # the pronoun sits in the name's own phrase: "X's relation to him" (after X's noun), "X for them"
        own_phrase = (any(low[j] in _PREPOSITIONS for j in range(end + 1, min(anaphor.index, end + 3))) if owner
                      else end < anaphor.index and low[end] in _PREPOSITIONS)
        if owner and not own_phrase:
            return True  # "What did Tesla's father promise him": him can be Tesla, not the father
        if not owner and after_preposition and not own_phrase:
            return True  # "How many soldiers did Genghis Khan take with him": a prepositional object may,
            # unless the preposition belongs to the name's own phrase ("the Manual of Regulations for them")
    if w == "they":  # a plural noun in another clause: "Rocks that are at a depth where they are stretched"
        for j in range(anaphor.index):
            b = _base(low[j])
            if clause[j] != own and b not in STOPWORDS and len(b) > 3 and _looks_plural(b):
                return True
    return False


def _name_spans(toks: list[str]) -> list[tuple[int, int, str]]:
    """(start token, end token, name) of the names in `toks` (as `names` finds them), in order."""
    text = " ".join(toks)
    out: list[tuple[int, int, str]] = []
    pos = 0
    for name in names(text):
        parts = name.split()
        for i in range(pos, len(toks) - len(parts) + 1):
            if [re.sub(r"['’]s$", "", t) for t in toks[i:i + len(parts)]] == parts:
                out.append((i, i + len(parts), name))
                pos = i + len(parts)
                break
    return out


def _demonstrative_refers_back(anaphor: _Anaphor, turns: list[str]) -> bool:
    """A demonstrative with a noun ("this war", "these churches") points back only to an earlier turn that
    mentions that kind of thing (the head noun, singular or plural): "When did this war end?" after "What
    caused the Franco-Prussian War?". Without such a turn it points into a text the question was written
    against, and the question is searched as typed ("What is the present-day location of this church?" after a
    question about chloroplasts). A demonstrative used as a pronoun ("What caused this?") always refers back."""
    if not anaphor.head:
        return True
    head = anaphor.head.rstrip("s") if len(anaphor.head) > 3 else anaphor.head
    for turn in turns[-HISTORY_TURNS:]:
        for w in words(turn):
            b = _base(w)
            if b == anaphor.head or (len(b) > 3 and b.rstrip("s") == head):
                return True
    return False


@dataclass
class FollowUp:
    """Why a question was judged a follow-up (or not)."""

    follow_up: bool
    reason: str
    anaphor: _Anaphor | None = None


def is_follow_up(question: str, idf: Callable[[str], float] | None = None, common_idf: float = 1.5,
                 turns: Sequence[str] | None = None) -> FollowUp:
    """Does `question` depend on the conversation? (see module docstring for the rule)

    `idf(term)`, when given (e.g. BM25 IDF over the collection), refines the "nothing searchable" test: a
    question whose content words are all common (IDF below `common_idf`) has nothing to retrieve on.
    `turns`, the earlier user questions when known, let a demonstrative with a noun ("this church") count only
    when an earlier turn mentions such a thing (`_demonstrative_refers_back`).
    """
    q = question.strip()
    if not q:
        return FollowUp(False, "empty question")
    if _ELLIPSIS_RE.search(q):
        return FollowUp(True, "elliptical follow-up ('what about', 'and ...')")
    content = content_words(q)
    if not content:
        return FollowUp(True, "no searchable words of its own")
    for anaphor in find_anaphors(q):
        if anaphor.kind == "demonstrative" and turns is not None and not _demonstrative_refers_back(anaphor, list(turns)):
            continue
        if not _antecedent_in_question(q, anaphor):
            return FollowUp(True, f"{anaphor.kind} {anaphor.word!r} without a referent in the question", anaphor)
    if idf is not None and all(idf(t) < common_idf for t in content) and not names(q):
        return FollowUp(True, "only common words of its own")
    return FollowUp(False, "standalone")


# --- the topic of the previous turn ------------------------------------------------------------------

def topic_terms(previous: str, idf: Callable[[str], float] | None = None, max_terms: int = 3,
                common_idf: float = 1.5, use_names: bool = True) -> list[str]:
    """What the previous question was about: its names, or without names at most `max_terms` content words,
    in their order in the question.

    With `idf`, the words the collection mentions most, short of the generic ones (IDF below `common_idf`):
    the subject of a document ("immune system") recurs across its passages, while the detail a question
    asks about ("recognized as foreign") is rare, and it is the subject a pronoun points back to. Without
    `idf`, the longest words. `use_names=False`: content words even when the question has names (the names a
    pronoun cannot refer to: "they" after "What do Canada and the United Kingdom call private schools?").
    """
    found = names(previous)
    if found and use_names:
        return found[:max_terms]
    in_names = {_base(w) for n in found for w in words(n)}
    content = [w for w in content_words(previous) if w not in in_names]
    if idf is not None:
        specific = [t for t in content if idf(t) >= common_idf] or content
        ranked = sorted(specific, key=lambda t: (idf(t), content.index(t)))
    else:
        ranked = sorted(content, key=lambda t: (-len(t), content.index(t)))
    keep = set(ranked[:max_terms])
    return [t for t in content if t in keep]


def main_name(candidates: list[str], idf: Callable[[str], float] | None = None) -> str:
    """The name a pronoun most likely points back to: the one the collection mentions most (lowest IDF of its
    rarest word: the subject of a document, "Warsaw", rather than a detail, "Baltic Sea"), or without `idf` the
    first one (questions usually name their subject first)."""
    if idf is None or len(candidates) == 1:
        return candidates[0]

    def name_idf(name: str) -> float:
        return max((idf(w) for w in content_words(name)), default=float("inf"))

    return min(candidates, key=lambda n: (name_idf(n), candidates.index(n)))


def idf_from_counts(doc_count: Callable[[str], int], total: int) -> Callable[[str], float]:
    """A cached BM25 IDF, ln(1 + (N - n + 0.5) / (n + 0.5)), from a document-frequency function (e.g. the number
    of chunks a BM25-only search for the word returns) and the number of chunks N."""
    cache: dict[str, float] = {}

    def idf(word: str) -> float:
        key = word.lower()
        if key not in cache:
            try:
                n = max(0, int(doc_count(key)))
            except Exception:  # noqa: BLE001 - an IDF is a hint: a failing count must not fail the question
                log.debug("idf: no document count for %r", key, exc_info=True)
                n = 0
            cache[key] = math.log(1 + (max(total, n) - n + 0.5) / (n + 0.5))
        return cache[key]

    return idf


# Head nouns that make a name a place, body, work or event, never a "he" or "she" ("Charles River",
# "University of Chicago", "Treaty of Rome"): a person pronoun cannot point back to such a name.
_NON_PERSON_HEADS = frozenset("""
river rivers sea ocean lake lakes bay gulf island islands mountain mountains valley desert forest park street
road bridge square gate tower castle palace church cathedral museum library hall center centre station airport
university college school institute academy city town state states county province republic kingdom empire
union council commission committee parliament congress court party army navy company corporation group
network channel act treaty law convention agreement declaration war revolution program programme project
mission age period era system report
""".split())


def _person_compatible(anaphor: "_Anaphor | None", topic: list[str]) -> bool:
    """False when a he/him/his/she/her pronoun would point back to a name that cannot be a person."""
    if anaphor is None or anaphor.word.lower() not in _PERSON_PRONOUNS or not topic:
        return True
    heads = {w.lower() for t in topic for w in words(t)}
    return not (heads & _NON_PERSON_HEADS)


def _user_turns(history: Sequence[Message]) -> list[str]:
    out: list[str] = []
    for m in history or []:
        try:
            if m.get("role") == "user" and isinstance(m.get("content"), str) and m["content"].strip():
                out.append(m["content"].strip())
        except AttributeError:  # a malformed history entry: ignore it rather than fail the question
            continue
    return out


def _demonym(name: str) -> bool:
    """A one-word name shaped like a demonym or nationality adjective ("Mongolian", "Chinese", "Filipino")."""
    return len(name.split()) == 1 and bool(_DEMONYM_RE.search(name))


def _agrees(anaphor: "_Anaphor | None", topic: list[str], is_name: bool) -> bool:
    """Can the pronoun point back to this topic? Agreement in person and number, as a reader would check:
    he/him/his/she/her need one singular name that can be a person (not "Charles River", not "Happy Days",
    not a demonym such as "Chinese", not a list of content words); they/them/their need a plural, an acronym
    (organisations take "they": "NASA", "IPCC") or content words, not a singular name ("Wardenclyffe").
    it/its, demonstratives, "there" and ellipsis take any topic."""
    if anaphor is None or anaphor.kind in {"demonstrative", "there"} or not topic:
        return True
    w = anaphor.word.lower()
    text = " ".join(topic)
    if w in _PERSON_PRONOUNS:
        return (is_name and len(topic) == 1 and not _looks_plural(text) and not _demonym(text)
                and _person_compatible(anaphor, topic))
    if w in _PLURAL_PRONOUNS:
        return not is_name or _looks_plural(text) or any(len(t) > 1 and t.isupper() for t in text.split())
    return True


def _candidate_names(turn: str, anaphor: "_Anaphor | None") -> list[str]:
    """The names of an earlier turn a pronoun may point back to: not a demonym used as an adjective ("an Indian
    private school"), and for he/she a place named after a person names the person ("Nikola Tesla Museum" ->
    "Nikola Tesla"; two words at least, so "Charles River" does not become a person "Charles")."""
    out: list[str] = []
    low = turn.lower()
    for name in names(turn):
        at = low.find(name.lower())
        after = words(turn[at + len(name):])[:1] if at >= 0 else []
        if _demonym(name) and after and after[0].islower() and _base(after[0]) not in STOPWORDS:
            continue
        if anaphor is not None and anaphor.word.lower() in _PERSON_PRONOUNS and not _person_compatible(anaphor, [name]):
            toks = words(name)
            while toks and toks[-1].lower() in _NON_PERSON_HEADS:
                toks.pop()
            if len(toks) >= 2:
                name = " ".join(toks)
        if name not in out:
            out.append(name)
    return out


def _previous_topic(turns: list[str], idf: Callable[[str], float] | None,
                    anaphor: "_Anaphor | None" = None) -> tuple[list[str], str, list[str]]:
    """Topic of the latest user turn that has one the pronoun agrees with (`_agrees`); a turn that was itself a
    follow-up without names inherits the topic of the turn before it (up to HISTORY_TURNS back). Returns
    (terms, the turn they came from, the names passed over because the pronoun cannot refer to them)."""
    rejected: list[str] = []
    for back in range(1, min(HISTORY_TURNS, len(turns)) + 1):
        turn = turns[-back]
        found = _candidate_names(turn, anaphor)
        agreeing = [n for n in found if _agrees(anaphor, [n], True)]
        if agreeing:
            return [main_name(agreeing, idf)], turn, rejected
        rejected += [n for n in found if n not in rejected]
        if not is_follow_up(turn, idf).follow_up:
            # no name it agrees with: the turn's recurring content words ("private schools"), unless the pronoun
            # needs a person
            terms = topic_terms(turn, idf, use_names=False)
            if terms and _agrees(anaphor, terms, False):
                return terms, turn, rejected
            if anaphor is not None and anaphor.word.lower() not in _PERSON_PRONOUNS:
                break  # the previous question's own topic does not fit: do not reach further back
    else:
        if turns and not rejected:  # every turn looked like a follow-up itself: the latest one's words
            terms = topic_terms(turns[-1], idf)
            if _agrees(anaphor, terms, False):
                return terms, turns[-1], rejected
    return [], "", rejected


def _substitute(question: str, anaphor: _Anaphor | None, topic: list[str]) -> str:
    """Put the topic where the anaphor was ("its growth" -> "Warsaw's growth"); append it when there is no
    single anaphor to replace (ellipsis, bare questions) or it is a demonstrative with a noun after it."""
    phrase = " ".join(topic)
    if anaphor is None or anaphor.kind == "demonstrative":
        return f"{question.rstrip()} {phrase}".strip()
    toks = list(re.finditer(_WORD_RE, question))
    m = toks[anaphor.index]
    if anaphor.kind == "possessive" and anaphor.word.lower() in {"its", "their", "his"}:
        repl = f"{phrase}'s"
    elif anaphor.kind == "possessive" and anaphor.word.lower() == "her":
        repl = phrase  # "her" is possessive or object; the bare name reads well in both for retrieval
    elif anaphor.kind == "there":
        repl = f"in {phrase}"
    else:
        repl = phrase
    return question[: m.start()] + repl + question[m.end():]


def rule_rewrite(question: str, history: Sequence[Message], idf: Callable[[str], float] | None = None) -> Rewrite:
    """The rule (no model): rewrite a real follow-up with the previous turn's topic; leave the rest as typed."""
    q = (question or "").strip()
    turns = _user_turns(history)
    if not turns:
        return Rewrite(q, False, "none", "no earlier question")
    verdict = is_follow_up(q, idf, turns=turns)
    if not verdict.follow_up:
        return Rewrite(q, False, "none", verdict.reason)
    topic, _source, rejected = _previous_topic(turns, idf, verdict.anaphor)
    q_low = {_base(w) for w in words(q)}
    topic = [t for t in topic if not all(_base(w) in q_low for w in words(t))]  # already named in the question
    if not topic and rejected and verdict.anaphor is not None:
        return Rewrite(q, False, "none", f"{verdict.reason}; '{verdict.anaphor.word}' cannot refer to "
                       f"{', '.join(rejected)}")
    if not topic:
        return Rewrite(q, False, "none", f"{verdict.reason}; the previous question has no topic to add")
    ellipsis = _ELLIPSIS_RE.search(q)
    if ellipsis:
        # "What about Krakow?" after "What is the population of Warsaw?": the new name takes the old one's
        # place in the previous question, which carries what is being asked.
        rest = q[ellipsis.end():].strip(" ?!.,")
        new_names = names(rest, sentence_start=False)
        prev_names = names(turns[-1])
        if new_names and prev_names and prev_names[0] in turns[-1]:
            query = turns[-1].replace(prev_names[0], " ".join(new_names), 1)
            return Rewrite(query, True, "rule", f"{verdict.reason}; '{prev_names[0]}' replaced by "
                           f"'{' '.join(new_names)}' in the previous question", new_names)
    query = _substitute(q, verdict.anaphor, topic)
    return Rewrite(query, True, "rule", f"{verdict.reason}; topic: {', '.join(topic)}", topic)


# --- the LLM condenser --------------------------------------------------------------------------------

CONDENSE_PROMPT = """You rewrite the last question of a conversation into one standalone search query.
Resolve pronouns and references ("it", "they", "there", "what about X") with the earlier questions.
If the last question already stands alone, return it unchanged.
Never answer the question. Reply with the query only, on one line, no quotes, no explanation."""

_ANSWER_OPENERS = re.compile(r"^\s*(?:yes|no|sure|certainly|sorry|i\s|i'm|as an ai|the answer|answer:|based on)\b",
                             re.IGNORECASE)
_PREFIX_RE = re.compile(r"^\s*(?:standalone\s+)?(?:query|question|rewritten(?:\s+question)?)\s*:\s*", re.IGNORECASE)


def llm_messages(question: str, history: Sequence[Message]) -> list[dict[str, str]]:
    """The condenser prompt: the rules, then the earlier user questions (oldest first) and the last one."""
    turns = _user_turns(history)[-HISTORY_TURNS:]
    lines = [f"{i}. {t}" for i, t in enumerate(turns, 1)]
    user = ("Earlier questions:\n" + ("\n".join(lines) if lines else "(none)")
            + f"\n\nLast question: {question.strip()}\n\nStandalone query:")
    return [{"role": "system", "content": CONDENSE_PROMPT}, {"role": "user", "content": user}]


def check_llm_query(output: str, question: str, history: Sequence[Message]) -> tuple[str | None, str]:
    """The cleaned query, or (None, why it was rejected). Accepted: non-empty, one line, at most
    MAX_QUERY_CHARS and at most 3x the question plus 120 characters, not an answer (no citation markers,
    no abstention, no "Yes,"/"The answer ..."), and sharing a content word with the question or, when the
    question has none of its own, with the earlier questions."""
    from rag.answering.citations import SENTINEL, is_abstention  # core module; lazy to keep import light

    text = (output or "").strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None, "empty output"
    if len(lines) > 1:
        return None, "more than one line"
    text = _PREFIX_RE.sub("", lines[0]).strip().strip("\"'“”‘’`").strip()
    if not text:
        return None, "empty output"
    if len(text) > MAX_QUERY_CHARS or len(text) > 3 * len(question.strip()) + 120:
        return None, f"too long ({len(text)} characters)"
    if SENTINEL in text or is_abstention(text) or re.search(r"\[\d+\]", text) or _ANSWER_OPENERS.search(text):
        return None, "looks like an answer, not a query"
    q_content = set(content_words(question))
    out_content = set(content_words(text))
    if q_content:
        if not (q_content & out_content):
            return None, "shares no content word with the question"
    else:
        h_content = {w for t in _user_turns(history) for w in content_words(t)}
        if not (h_content & out_content):
            return None, "shares no content word with the conversation"
    return text, "ok"


def condense(question: str, history: Sequence[Message] | None, llm: ChatCompleter | None = None,
             idf: Callable[[str], float] | None = None) -> Rewrite:
    """The query to search for `question` in this conversation (see module docstring).

    Never raises for LLM trouble: an LLM error, timeout or a rejected output falls back to the rule, and
    the Rewrite's `reason` says why.
    """
    q = (question or "").strip()
    history = list(history or [])
    if not _user_turns(history):
        return Rewrite(q, False, "none", "no earlier question")
    if llm is None:
        return rule_rewrite(q, history, idf)
    try:
        raw = llm.complete(llm_messages(q, history))
    except Exception as exc:  # noqa: BLE001 - any LLM trouble: the rule still gives a usable query
        fallback = rule_rewrite(q, history, idf)
        fallback.reason = f"LLM condenser failed ({type(exc).__name__}: {str(exc)[:160]}); rule: {fallback.reason}"
        log.warning("follow-up condenser: %s", fallback.reason)
        return fallback
    query, why = check_llm_query(raw, q, history)
    if query is None:
        fallback = rule_rewrite(q, history, idf)
        fallback.reason = f"LLM output rejected ({why}); rule: {fallback.reason}"
        log.info("follow-up condenser: %s", fallback.reason)
        return fallback
    same = " ".join(query.split()).lower() == " ".join(q.split()).lower()
    return Rewrite(q if same else query, not same, "llm", "the LLM kept the question" if same else "rewritten by the LLM")


def condenser_from_settings(settings: Any) -> ChatCompleter | None:
    """An LLM condenser for these settings (one attempt, at most CONDENSE_TIMEOUT_S), or None without an LLM.

    It reuses the answerer's client code (`LLMAnswerer.complete`), so the endpoint, model, key, secret
    redaction and error handling are the same as for answers.
    """
    if not getattr(settings, "llm_enabled", False):
        return None
    from rag.answering.llm import LLMAnswerer  # imports `openai`: only when an LLM is configured

    short = settings.replace(llm_max_retries=0, llm_timeout_s=min(float(settings.llm_timeout_s), CONDENSE_TIMEOUT_S),
                             llm_temperature=0.0)
    return LLMAnswerer(short)
