"""Eval dataset loaders: BEIR retrieval sets and document-QA sets (the two layouts in evaldata).

* BEIR: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
  `qrels/test.tsv` (`query-id  corpus-id  score`, header row). Queries that have no qrel with
  score > 0 are kept apart in `unjudged_queries`: they cannot be scored (see evals.metrics).
* Document QA, two layouts, detected from the files present:
  - "squad": `docs/` + `questions.jsonl` with `doc` (file name in docs/) and `paragraph` (gold text);
  - "docs-mixed": `files/` + `questions.jsonl` with `file` (path relative to the dataset folder,
    e.g. `files/fake-memo.pdf`) and `evidence` (gold text).
  The dataset may also be named by another questions file of such a folder (e.g.
  `squad/conversations.jsonl`): its questions are used with the folder's documents.
  A question may carry `history`, the user questions asked before it (oldest first), as the rows of
  `conversations.jsonl` do: the evals then ask it as a follow-up (`DocQAQuestion.history_messages`).

Malformed rows raise DatasetError naming the file and line number.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from rag.errors import RagError

log = logging.getLogger(__name__)


# The shared evaluation data (BEIR sets, document-QA sets, faithfulness records) lives beside the repo.
_REPO_ROOT = Path(__file__).resolve().parent.parent


def evaldata_dir() -> Path:
    """The eval data folder: $RAG_EVALDATA, else ../shared/evaldata beside the repo (it may not exist)."""
    return Path(os.environ.get("RAG_EVALDATA") or _REPO_ROOT.parent / "shared" / "evaldata").resolve()


class DatasetError(RagError):
    """An eval dataset is missing files or has a malformed row (the message names file and line)."""


@dataclass
class BeirDataset:
    """A BEIR retrieval set. qrels: {query_id: {doc_id: graded score}} (score 0 = judged non-relevant)."""

    path: Path
    corpus: dict[str, dict[str, str]]  # doc_id -> {"title": ..., "text": ...}
    queries: dict[str, str]  # only queries with at least one relevant doc (score > 0)
    qrels: dict[str, dict[str, int]]
    unjudged_queries: dict[str, str] = field(default_factory=dict)  # no qrel with score > 0

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class DocQAQuestion:
    """One document-QA question with its gold location."""

    id: str
    question: str
    answers: list[str]  # [] = unanswerable: the system should abstain
    is_impossible: bool
    doc: str  # gold document path relative to DocQADataset.docs_dir (e.g. "Apollo.md")
    evidence_text: str  # gold paragraph / evidence text ("" when none given)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    history: list[str] = field(default_factory=list)  # earlier user questions, oldest first ([] = none)

    def history_messages(self) -> list[dict[str, str]]:
        """`history` as the chat messages `Pipeline.ask` / `condense_question` take (user turns only)."""
        return [{"role": "user", "content": turn} for turn in self.history]

    @property
    def doc_name(self) -> str:
        """Base name of the gold document (what relevance matching compares)."""
        return Path(self.doc).name


@dataclass
class DocQADataset:
    """A document-QA set: a folder of files to ingest and questions with gold answers and evidence."""

    path: Path
    docs_dir: Path
    questions: list[DocQAQuestion]
    layout: Literal["squad", "docs-mixed"] = "squad"
    questions_file: Path | None = None  # None = path/questions.jsonl

    @property
    def name(self) -> str:
        """The folder name, plus the questions file's stem when it is not questions.jsonl ("squad-conversations")."""
        if self.questions_file is None or self.questions_file.name == "questions.jsonl":
            return self.path.name
        return f"{self.path.name}-{self.questions_file.stem}"

    @property
    def conversational(self) -> bool:
        """True when some question carries a conversation history."""
        return any(q.history for q in self.questions)

    def doc_path(self, question: DocQAQuestion) -> Path:
        """Absolute path of a question's gold document."""
        return (self.docs_dir / question.doc).resolve()


def _questions_file(path: str | Path) -> tuple[Path, Path]:
    """(dataset folder, questions file): a folder means its questions.jsonl; a .jsonl file inside a document-QA
    folder (beside docs/ or files/) means that file with the folder's documents."""
    given = Path(path)
    if given.is_file():
        root = given.parent
        if given.suffix != ".jsonl" or not ((root / "docs").is_dir() or (root / "files").is_dir()):
            raise DatasetError(f"{given} is a file, but not a .jsonl questions file beside a docs/ or files/ "
                               "folder; give the dataset folder, or a questions file of a document-QA folder")
        return root, given
    return given, given / "questions.jsonl"


def detect_dataset_kind(path: str | Path) -> Literal["beir", "docqa"]:
    """'beir' when the folder has corpus.jsonl, 'docqa' when it has questions.jsonl plus docs/ or files/
    (or `path` is a questions file of such a folder, e.g. squad/conversations.jsonl)."""
    if Path(path).is_file():
        _questions_file(path)  # raises unless it is a questions file beside docs/ or files/
        return "docqa"
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if (root / "corpus.jsonl").is_file():
        return "beir"
    if (root / "questions.jsonl").is_file() and ((root / "docs").is_dir() or (root / "files").is_dir()):
        return "docqa"
    raise DatasetError(
        f"{root} is neither a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv) nor a "
        "document-QA dataset (questions.jsonl with docs/ or files/)"
    )


def iter_jsonl(path: str | Path, skip_invalid: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file: the one JSONL reader of the evals.

    A line that is not a JSON object raises DatasetError naming the file and line, or, with
    `skip_invalid`, is skipped (for append-only logs whose last line a kill may have torn).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if skip_invalid:
                    continue
                raise DatasetError(f"{path}:{lineno}: invalid JSON ({exc.msg}); fix or remove the line") from exc
            if not isinstance(row, dict):
                if skip_invalid:
                    continue
                raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _require(row: dict[str, Any], key: str, path: Path, lineno: int, kind: type | tuple = str) -> Any:
    if key not in row:
        raise DatasetError(f"{path}:{lineno}: missing field {key!r}")
    value = row[key]
    if not isinstance(value, kind):
        raise DatasetError(f"{path}:{lineno}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {value!r:.60}")
    return value


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Load a BEIR folder. Raises DatasetError on missing files or malformed rows."""
    root = Path(path)
    corpus: dict[str, dict[str, str]] = {}
    corpus_file = root / "corpus.jsonl"
    for lineno, row in iter_jsonl(corpus_file):
        doc_id = str(_require(row, "_id", corpus_file, lineno, (str, int)))
        title = row.get("title") or ""
        text = row.get("text")
        if not isinstance(text, str) or not isinstance(title, str):
            raise DatasetError(f"{corpus_file}:{lineno}: 'text' and 'title' must be strings")
        if doc_id in corpus:
            raise DatasetError(f"{corpus_file}:{lineno}: duplicate _id {doc_id!r}")
        corpus[doc_id] = {"title": title, "text": text}

    all_queries: dict[str, str] = {}
    queries_file = root / "queries.jsonl"
    for lineno, row in iter_jsonl(queries_file):
        qid = str(_require(row, "_id", queries_file, lineno, (str, int)))
        all_queries[qid] = _require(row, "text", queries_file, lineno)

    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise DatasetError(f"{qrels_file} is missing")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_file.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for lineno, cols in enumerate(reader, start=1):
            if not cols or not "".join(cols).strip():
                continue
            if lineno == 1 and not cols[-1].strip().lstrip("-").isdigit():
                continue  # header row (query-id, corpus-id, score)
            if len(cols) != 3:
                raise DatasetError(f"{qrels_file}:{lineno}: expected 3 tab-separated columns, got {len(cols)}")
            qid, doc_id, score_text = (c.strip() for c in cols)
            try:
                score = int(float(score_text))
            except ValueError as exc:
                raise DatasetError(f"{qrels_file}:{lineno}: score {score_text!r} is not a number") from exc
            if doc_id not in corpus:
                log.warning("%s:%d: corpus-id %s is not in corpus.jsonl; kept (counts as unretrievable)",
                            qrels_file, lineno, doc_id)
            qrels.setdefault(qid, {})[doc_id] = score

    judged = {qid: text for qid, text in all_queries.items() if any(s > 0 for s in qrels.get(qid, {}).values())}
    unjudged = {qid: text for qid, text in all_queries.items() if qid not in judged}
    missing = sorted(set(qrels) - set(all_queries))
    if missing:
        log.warning("%s: %d qrels query ids are not in queries.jsonl (e.g. %s); ignored",
                    qrels_file, len(missing), missing[0])
    return BeirDataset(
        path=root,
        corpus=corpus,
        queries=judged,
        qrels={qid: qrels[qid] for qid in judged},
        unjudged_queries=unjudged,
    )


def load_doc_qa(path: str | Path) -> DocQADataset:
    """Load a document-QA folder in the squad layout (docs/, `doc`, `paragraph`) or the docs-mixed
    layout (files/, `file`, `evidence`). `path` may also be a questions file of such a folder (e.g.
    squad/conversations.jsonl). Raises DatasetError on malformed rows or missing gold files."""
    root, qfile = _questions_file(path)
    if (root / "docs").is_dir():
        layout, docs_dir = "squad", root / "docs"
    elif (root / "files").is_dir():
        layout, docs_dir = "docs-mixed", root / "files"
    else:
        raise DatasetError(f"{root}: document-QA dataset needs a docs/ or files/ folder")

    questions: list[DocQAQuestion] = []
    seen: set[str] = set()
    for lineno, row in iter_jsonl(qfile):
        qid = str(_require(row, "id", qfile, lineno, (str, int)))
        if qid in seen:
            raise DatasetError(f"{qfile}:{lineno}: duplicate id {qid!r}")
        seen.add(qid)
        question = _require(row, "question", qfile, lineno)
        answers = _require(row, "answers", qfile, lineno, list)
        if not all(isinstance(a, str) for a in answers):
            raise DatasetError(f"{qfile}:{lineno}: 'answers' must be a list of strings")
        is_impossible = bool(row.get("is_impossible", not answers))
        if "doc" in row:
            doc = _require(row, "doc", qfile, lineno)
        elif "file" in row:
            file_rel = Path(_require(row, "file", qfile, lineno))
            # `file` is relative to the dataset folder ("files/x.pdf"); store it relative to docs_dir
            try:
                doc = str((root / file_rel).relative_to(docs_dir))
            except ValueError:
                raise DatasetError(f"{qfile}:{lineno}: file {str(file_rel)!r} is not under {docs_dir.name}/") from None
        else:
            raise DatasetError(f"{qfile}:{lineno}: missing gold document field 'doc' or 'file'")
        evidence = row.get("paragraph", row.get("evidence", "")) or ""
        if not isinstance(evidence, str):
            raise DatasetError(f"{qfile}:{lineno}: 'paragraph'/'evidence' must be a string")
        if not (docs_dir / doc).is_file():
            raise DatasetError(f"{qfile}:{lineno}: gold document {docs_dir / doc} does not exist")
        history = row.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, str) and h.strip() for h in history):
            raise DatasetError(f"{qfile}:{lineno}: 'history' must be a list of the earlier user questions "
                               f"(non-empty strings, oldest first), got {history!r:.60}")
        questions.append(DocQAQuestion(qid, question, list(answers), is_impossible, doc, evidence, row,
                                       [h.strip() for h in history]))
    return DocQADataset(path=root, docs_dir=docs_dir, questions=questions, layout=layout,  # type: ignore[arg-type]
                        questions_file=qfile)


def dataset_hash(path: str | Path) -> str:
    """sha256 over the dataset's files (relative path + bytes, in sorted path order): stable across
    machines and copies, changes when any file is added, removed, renamed or edited. For a questions file
    of a document-QA folder: that file and the folder's documents (its other questions files do not count)."""
    root = Path(path)
    digest = hashlib.sha256()
    if root.is_file():
        root, qfile = _questions_file(root)
        docs = root / "docs" if (root / "docs").is_dir() else root / "files"
        files = [qfile, *sorted(p for p in docs.rglob("*") if p.is_file() and not p.name.startswith("."))]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for file in files:
        rel = file.relative_to(root).as_posix()
        digest.update(rel.encode("utf-8") + b"\0")
        file_digest = hashlib.sha256()
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                file_digest.update(block)
        digest.update(file_digest.digest())
    return digest.hexdigest()
