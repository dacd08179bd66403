"""The reader answerer (rag.answering.reader) and its training (rag.tuning.reader).

Two kinds of tests:
- behaviour that must not depend on model quality (windows, offsets, window edges, no-answer margin, several
  passages competing, several spans, citations): the real tokenizer with a scripted span head whose logits
  point at chosen words, so the expected span is known exactly;
- wiring: a tiny reader trained here on a few hundred SQuAD questions (a few steps, short windows), loaded the
  way the product loads it, answering with citations inside the allow-list and spans verbatim in the cited
  passage; and the fallback to the sentence answerer when the reader cannot load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.answering.citations import ABSTAIN_TEXT
from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.reader import (ReaderAnswerer, ReaderModel, ReaderUnavailable, answer_spans, load_reader, make_reader_answerer,
                                  wanted_spans)
from rag.config import Settings
from rag.models import Chunk, Evidence, Hit
from rag.tuning.reader import (ReaderExample, ReaderTrainConfig, build_examples, build_features, load_reader_questions,
                               locate_answer, train_reader)

FILLER = ("Meadows stretch across the valley while farmers tend their fields and rivers wind slowly toward "
          "the distant sea. ")


def evidence(*texts: str, numbers: list[int] | None = None) -> list[Evidence]:
    numbers = numbers or list(range(1, len(texts) + 1))
    out = []
    for n, text in zip(numbers, texts):
        chunk = Chunk(id=f"chunk-{n}", text=text, file_path=f"/docs/{n}.md", file_hash="h", file_type="md",
                      chunk_index=0, chunk_count=1, char_start=0, char_end=len(text), file_name=f"{n}.md")
        out.append(Evidence(number=n, hit=Hit(chunk=chunk, score=1.0)))
    return out


class ScriptedHead:
    """Stands in for the QA model: start/end logits point at chosen words, [CLS] gets `null` (split in two).

    Every other token scores -10, so the best span runs from the best start word to the best end word after it.
    """

    def __init__(self, tokenizer, starts: dict[str, float], ends: dict[str, float], null: float = -20.0) -> None:
        def ids(words: dict[str, float]) -> dict[int, float]:
            out = {}
            for word, score in words.items():
                (tid,) = tokenizer(word, add_special_tokens=False)["input_ids"]  # one word piece each
                out[tid] = score
            return out

        self.starts, self.ends, self.null = ids(starts), ids(ends), null

    def __call__(self, input_ids, **_):
        import torch

        def logits(table: dict[int, float]):
            out = torch.full(input_ids.shape, -10.0)
            for tid, score in table.items():
                out[input_ids == tid] = score
            out[:, 0] = self.null / 2
            return out

        return SimpleNamespace(start_logits=logits(self.starts), end_logits=logits(self.ends))


@pytest.fixture(scope="module")
def scripted(minilm_path):
    """A ReaderModel with the real MiniLM tokenizer, short windows, and the scripted head."""
    model = ReaderModel(minilm_path, max_length=64, doc_stride=24, allow_untrained_head=True)
    model.model = ScriptedHead(model.tokenizer, {"zebra": 5.0, "tiger": 3.0}, {"horse": 5.0, "lion": 3.0})
    return model


def _windows(model: ReaderModel, question: str, passage: str) -> list[tuple[int, int]]:
    """(first, last) char offsets of the passage covered by each window, as the reader tokenizes it."""
    enc = model.tokenizer([model._question(question)], [passage], truncation="only_second",
                          max_length=model.max_length, stride=model.doc_stride, return_overflowing_tokens=True,
                          return_offsets_mapping=True)
    spans = []
    for w, offsets in enumerate(enc["offset_mapping"]):
        ctx = [offsets[k] for k, sid in enumerate(enc.sequence_ids(w)) if sid == 1]
        spans.append((ctx[0][0], ctx[-1][1]))
    return spans


# --- behaviour (scripted head) --------------------------------------------------------------------


def test_long_passage_is_read_in_windows_and_span_offsets_are_exact(scripted):
    passage = FILLER * 3 + "Yesterday the zebra horse parade crossed town. " + FILLER * 2
    question = "What crossed town?"
    windows = _windows(scripted, question, passage)
    start = passage.index("zebra horse")
    assert len(windows) >= 3
    assert windows[0][1] < start  # not in the first window: found in a later one
    result = scripted.read(question, [passage])
    assert result.windows == len(windows)
    best = result.best
    assert (best.start, best.end, best.text) == (start, start + len("zebra horse"), "zebra horse")
    assert passage[best.start:best.end] == best.text


def test_span_across_a_window_edge_is_found_whole_in_the_overlapping_window(scripted):
    question = "What crossed town?"
    for n in range(0, 60):
        passage = "word " * n + "zebra horse went home."
        windows = _windows(scripted, question, passage)
        s = passage.index("zebra")
        e = passage.index("horse") + len("horse")
        if len(windows) > 1 and windows[0][0] <= s < windows[0][1] < e:
            break  # the first window ends between "zebra" and "horse"
    else:
        pytest.fail("no filler length put the span across the first window's edge")
    best = scripted.read(question, [passage]).best
    assert (best.start, best.end) == (s, e)
    assert best.text == "zebra horse"


def test_no_answer_margin_forces_abstention(scripted):
    ev = evidence(FILLER + "The zebra horse is tall.")
    assert not ReaderAnswerer(model=scripted, no_answer_margin=0.0).answer("What is tall?", ev).abstained
    # The span scores 10 and [CLS] -20: a margin above the 30-point gap abstains.
    answer = ReaderAnswerer(model=scripted, no_answer_margin=31.0).answer("What is tall?", ev)
    assert answer.abstained and answer.citations == [] and answer.text.startswith(ABSTAIN_TEXT)
    assert answer.provider == "reader"
    # A [CLS] score above the best span abstains at margin 0 (the model's own "no answer").
    loud_null = ReaderModel.__new__(ReaderModel)
    loud_null.__dict__.update(scripted.__dict__)
    loud_null.model = ScriptedHead(scripted.tokenizer, {"zebra": 5.0}, {"horse": 5.0}, null=12.0)
    assert ReaderAnswerer(model=loud_null, no_answer_margin=0.0).answer("What is tall?", ev).abstained
    # No evidence: abstain without reading.
    assert ReaderAnswerer(model=scripted).answer("What is tall?", []).abstained


def test_passages_compete_on_one_scale_and_the_winner_is_cited(scripted):
    weak = FILLER + "A tiger lion hybrid is called a liger."
    strong = FILLER + "The zebra horse is an okapi."
    other = FILLER * 2
    for texts, numbers, winner in [((weak, strong, other), [3, 7, 9], 7), ((strong, weak, other), [4, 2, 8], 4)]:
        ev = evidence(*texts, numbers=numbers)
        answer = ReaderAnswerer(model=scripted).answer("What is an okapi?", ev)
        assert not answer.abstained
        assert [c.number for c in answer.citations] == [winner]
        assert answer_spans(answer.text) == ["zebra horse"]
        assert f"[{winner}]" in answer.text and "zebra horse" in answer.citations[0].passage


def test_answer_quotes_the_span_inside_its_sentence(scripted):
    ev = evidence("First sentence here. In the park the zebra horse sleeps at noon. Last one.")
    answer = ReaderAnswerer(model=scripted).answer("Who sleeps?", ev)
    assert answer.text == "In the park the **zebra horse** sleeps at noon. [1]"
    assert answer.sentences and all(s.supported for s in answer.sentences)


def test_a_span_that_starts_with_initials_is_quoted_whole(scripted):
    # Found in the SQuAD eval: "**E. W. Scripps Company**" was split after "**E." by the citation check, and the
    # answer lost its first half (the bold mark hid the initial from the abbreviation rule).
    model = ReaderModel(scripted.tokenizer.name_or_path, max_length=64, doc_stride=24, allow_untrained_head=True)
    model.model = ScriptedHead(model.tokenizer, {"j": 5.0}, {"horse": 5.0})
    ev = evidence("It rained. The book was written by J. R. Horse in Oxford. Then it stopped.")
    answer = ReaderAnswerer(model=model).answer("Who wrote the book?", ev)
    assert answer.text == "The book was written by **J. R. Horse** in Oxford. [1]"
    assert answer_spans(answer.text) == ["J. R. Horse"]


def test_several_spans_when_the_question_asks_for_several_things(scripted):
    ev = evidence("The zebra horse lives here.", FILLER + "The tiger lion lives there.")
    both = ReaderAnswerer(model=scripted).answer("Which two animals live here?", ev)
    assert answer_spans(both.text) == ["zebra horse", "tiger lion"]
    assert [c.number for c in both.citations] == [1, 2]
    one = ReaderAnswerer(model=scripted).answer("Which animal lives here?", ev)
    assert answer_spans(one.text) == ["zebra horse"]
    assert wanted_spans("Name three rivers") == 3 and wanted_spans("What is it?") == 1


def test_spans_that_run_over_a_sentence_end_are_passed_over(scripted):
    # "zebra. The horse" (10) and "zebra ... lion" (8) score higher but run over sentence ends: the best
    # one-sentence span wins ("tiger lion", 6).
    ev = evidence("It was a zebra. The horse ran. A tiger lion slept.")
    answer = ReaderAnswerer(model=scripted).answer("What slept?", ev)
    assert answer_spans(answer.text) == ["tiger lion"]


# --- training data ---------------------------------------------------------------------------------


def test_training_questions_leave_out_the_eval_questions(evaldata):
    squad = evaldata / "squad"
    rows = load_reader_questions(squad)
    held = [json.loads(line) for line in (squad / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    held_ids = {r["id"] for r in held}
    held_q = {" ".join(r["question"].lower().split()) for r in held}
    assert rows and not {r["id"] for r in rows} & held_ids
    assert not {" ".join(r["question"].lower().split()) for r in rows} & held_q
    assert len(load_reader_questions(squad, limit=50, seed=1)) == 50


def test_answer_location_and_window_targets(minilm_path):
    from transformers import AutoTokenizer

    assert locate_answer("Paris is in France.", "france") == 12
    assert locate_answer("Paris is in France.", "Spain") is None
    tok = AutoTokenizer.from_pretrained(minilm_path)
    context = FILLER * 4 + "The treaty was signed in Lisbon in 2007. " + FILLER * 2
    rows = [{"id": "a", "question": "Where was it signed?", "answers": ["Lisbon"], "is_impossible": False,
             "paragraph": context},
            {"id": "b", "question": "Who cried?", "answers": [], "is_impossible": True, "paragraph": context},
            {"id": "c", "question": "Lost?", "answers": ["not in the text"], "is_impossible": False,
             "paragraph": context}]
    examples, skipped = build_examples(rows)
    assert skipped == 1 and [e.id for e in examples] == ["a", "b"]
    assert isinstance(examples[0], ReaderExample) and examples[0].answer_text == "Lisbon"
    feats = build_features(tok, examples, max_length=64, doc_stride=24)
    targets = [(s, e) for s, e in zip(feats["start_positions"], feats["end_positions"])]
    n_a = sum(1 for ids in feats["input_ids"] if ids)  # every window
    assert n_a > 4  # long context -> several windows per question
    hits = [tok.decode(feats["input_ids"][i][s:e + 1]) for i, (s, e) in enumerate(targets) if s > 0]
    assert hits and set(hits) == {"lisbon"}  # answer windows target exactly the answer; others [CLS]
    assert sum(1 for s, _ in targets if s == 0) >= len(targets) - len(hits)


# --- a tiny trained reader (wiring) --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_reader(tmp_path_factory, evaldata, minilm_path):
    """A MiniLM reader trained for a few steps on a few hundred SQuAD questions (wiring, not quality)."""
    rows = load_reader_questions(evaldata / "squad", limit=240, seed=3)
    out = tmp_path_factory.mktemp("reader")
    cfg = ReaderTrainConfig(batch_size=8, max_length=128, doc_stride=48, max_steps=6, lr=1e-4)
    report = train_reader(rows, evaldata / "squad" / "docs", minilm_path, out, cfg, progress=False)
    return out, report


@pytest.mark.slow  # tiny_reader trains a reader: ~45 s
def test_training_saves_a_loadable_reader(tiny_reader):
    out, report = tiny_reader
    assert report.steps == 6 and report.questions == 240 and report.features >= report.examples
    assert (out / "config.json").is_file() and (out / "reader_train.json").is_file()
    assert json.loads((out / "reader_train.json").read_text())["config"]["max_length"] == 128
    assert load_reader(str(out)) is load_reader(str(out))  # loads once per process


@pytest.mark.slow  # needs tiny_reader (~45 s of training)
def test_trained_reader_cites_inside_the_allow_list_and_quotes_verbatim(tiny_reader, evaldata):
    out, _ = tiny_reader
    settings = Settings(reader_model=str(out), reader_no_answer_margin=-1e9)  # always answer: test every span
    answerer = make_reader_answerer(settings)
    assert isinstance(answerer, ReaderAnswerer)
    rows = [json.loads(line) for line in (evaldata / "squad" / "questions.jsonl").read_text(encoding="utf-8")
            .splitlines()[:12]]
    paragraphs = sorted({r["paragraph"] for r in rows})
    for row in rows:
        ev = evidence(*paragraphs[:3], row["paragraph"], numbers=[5, 2, 11, 8])
        answer = answerer.answer(row["question"], ev)
        assert not answer.abstained and answer.provider == "reader"
        allowed = {e.number for e in ev}
        cited = [c.number for c in answer.citations]
        assert cited and set(cited) <= allowed
        passages = {e.number: " ".join(e.chunk.text.split()) for e in ev}
        for span in answer_spans(answer.text):
            assert any(" ".join(span.split()) in passages[n] for n in cited), (span, cited)
    # A threshold no span can clear: abstains.
    strict = ReaderAnswerer(model=answerer.model, no_answer_margin=1e9)
    assert strict.answer(rows[0]["question"], evidence(rows[0]["paragraph"])).abstained


def test_fallback_to_the_sentence_answerer_when_the_reader_cannot_load(tmp_path, caplog, minilm_path):
    missing = tmp_path / "no-such-reader"
    with caplog.at_level(logging.WARNING, logger="rag.answering.reader"):
        answerer = make_reader_answerer(Settings(reader_model=str(missing)))
    assert isinstance(answerer, ExtractiveAnswerer)
    assert any("no-such-reader" in r.getMessage() and "sentence answerer" in r.getMessage() for r in caplog.records)
    # A folder that is not a QA checkpoint fails the same way.
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{}")
    assert isinstance(make_reader_answerer(Settings(reader_model=str(tmp_path / "junk"))), ExtractiveAnswerer)
    # A backbone without a trained span head would answer noise: refused too.
    with pytest.raises(ReaderUnavailable, match="no trained span head"):
        ReaderModel(minilm_path)
    # `none` keeps the sentence answerer without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag.answering.reader"):
        assert isinstance(make_reader_answerer(Settings(reader_model="none")), ExtractiveAnswerer)
    assert not caplog.records
    answer = make_reader_answerer(Settings(reader_model=str(missing))).answer(
        "What is tall?", evidence("The horse is the tallest living animal on land."))
    assert answer.provider == "extractive"


@pytest.mark.slow  # needs tiny_reader (~45 s of training)
def test_the_product_factory_picks_the_reader_or_falls_back(tiny_reader, tmp_path):
    from rag.answering import make_answerer

    out, _ = tiny_reader
    assert isinstance(make_answerer(Settings(llm_provider="extractive", reader_model=str(out))), ReaderAnswerer)
    assert isinstance(make_answerer(Settings(llm_provider="extractive", reader_model="none")), ExtractiveAnswerer)
    fallback = make_answerer(Settings(llm_provider="extractive", reader_model=str(tmp_path / "missing")))
    assert isinstance(fallback, ExtractiveAnswerer)


def test_rag_tune_reader_cli_needs_a_dataset_and_an_output(tmp_path, capsys):
    from rag.cli import main

    assert main(["tune", "--reader", "--out", str(tmp_path / "r")]) != 0
    assert "--train" in capsys.readouterr().err
    assert main(["tune", "--reader", "--train", str(tmp_path)]) != 0
    assert "--out" in capsys.readouterr().err


# --- the gate can ask the reader (reader_gate) ----------------------------------------------------


@pytest.mark.slow  # needs tiny_reader (~45 s of training)
def test_reader_gate_skips_the_llm_only_when_the_reader_finds_no_answer(tiny_reader, indexed_docs, embedder,
                                                                         fake_llm):
    from rag.answering import make_answerer
    from rag.answering.reader import ReaderGate
    from rag.answering.evidence import select_evidence
    from rag.pipeline import Pipeline
    from tests.fake_llm_server import Reply

    out, _ = tiny_reader
    base = indexed_docs.settings.replace(  # the session's fake-memo store, only read here
        llm_provider="openai", llm_base_url=fake_llm.base_url, llm_model="fake", llm_max_retries=0,
        rerank_model="none", evidence_min_score=-1000.0, reader_model=str(out), reader_gate="on")
    questions = ["How many laptops were delivered?", "Which composer wrote the opera about the moon?"]

    def ask(settings: Settings, question: str):
        pipeline = Pipeline(settings, embedder=embedder)  # one store user at a time: open, ask, close
        try:
            return pipeline.ask(question, mode="hybrid")
        finally:
            pipeline.close()

    # The tiny reader's own verdicts on the evidence the pipeline gives it: the gate margin goes between them,
    # so one question must be gated and the other must reach the LLM.
    gate = make_answerer(base, embedder)
    assert isinstance(gate, ReaderGate)
    pipeline = Pipeline(base, embedder=embedder)
    try:
        gaps = []
        for q in questions:
            hits = pipeline.search(q, mode="hybrid", k=max(base.top_k, base.evidence_max_passages)).hits
            gaps.append(gate.gap(q, select_evidence(hits, base, embedder.count_tokens)))
    finally:
        pipeline.close()
    assert gaps[0] != gaps[1]
    low, high = sorted(range(2), key=lambda i: gaps[i])
    gated_settings = base.replace(reader_gate_margin=(gaps[0] + gaps[1]) / 2)
    fake_llm.responder = lambda body: "Two hundred laptops were delivered [1]."

    gated = ask(gated_settings, questions[low])
    assert gated.abstained and gated.provider == "reader-gate" and gated.citations == []
    assert gated.evidence and "reader_gate" in gated.timings_ms
    assert fake_llm.requests == []  # the LLM was not called

    answered = ask(gated_settings, questions[high])
    assert len(fake_llm.requests) == 1 and questions[high] in json.dumps(fake_llm.requests[0])
    assert answered.provider == "openai" and not answered.abstained
    assert "reader_gate" in answered.timings_ms

    # Off (the default): every question reaches the LLM, whatever the reader would say.
    assert ask(base.replace(reader_gate="off", reader_gate_margin=1e9), questions[low]).provider == "openai"
    assert len(fake_llm.requests) == 2


def test_reader_gate_setting_is_validated_and_falls_back_without_a_reader(tmp_path, caplog):
    from rag.answering import make_answerer
    from rag.answering.llm import LLMAnswerer
    from rag.config import load_settings
    from rag.errors import ConfigError

    with pytest.raises(ConfigError, match="reader_gate"):
        load_settings(config_file=_toml(tmp_path, 'reader_gate = "maybe"'))
    llm = dict(llm_provider="openai", llm_base_url="http://127.0.0.1:9/v1", llm_model="fake")
    assert isinstance(make_answerer(Settings(**llm)), LLMAnswerer)  # off by default
    with caplog.at_level(logging.WARNING, logger="rag.answering.reader"):
        plain = make_answerer(Settings(**llm, reader_gate="on", reader_model=str(tmp_path / "missing")))
    assert isinstance(plain, LLMAnswerer)  # no reader: no gate, the LLM answers as before
    assert any("reader_gate" in r.getMessage() for r in caplog.records)


def _toml(tmp_path, line: str):
    path = tmp_path / "rag.toml"
    path.write_text(line + "\n", encoding="utf-8")
    return path


def test_frozen_layers_stay_as_pretrained_and_the_rest_trains(tmp_path, evaldata, minilm_path):
    import torch
    from transformers import AutoModelForQuestionAnswering

    rows = load_reader_questions(evaldata / "squad", limit=16, seed=2)
    cfg = ReaderTrainConfig(batch_size=8, max_length=128, doc_stride=48, max_steps=1, freeze_layers=4,
                            distractor_share=0.0)
    train_reader(rows, evaldata / "squad" / "docs", minilm_path, tmp_path, cfg, progress=False)
    before = AutoModelForQuestionAnswering.from_pretrained(minilm_path).state_dict()
    after = AutoModelForQuestionAnswering.from_pretrained(str(tmp_path)).state_dict()
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert not {k for k in changed if ".embeddings." in k or any(f"layer.{i}." in k for i in range(4))}
    assert {k for k in changed if "layer.5." in k} and {k for k in changed if "qa_outputs" in k}
    with pytest.raises(Exception, match="freeze_layers"):
        train_reader(rows, evaldata / "squad" / "docs", minilm_path, tmp_path / "x",
                     ReaderTrainConfig(max_length=128, doc_stride=48, max_steps=1, freeze_layers=6), progress=False)


def test_distractor_paragraphs_are_same_article_wrong_passages(evaldata):
    from rag.tuning.reader import distractor_paragraph

    paragraphs = ["The Normans were a people in France.", "Rollo led the Normans to Normandy in 911.",
                  "Normans in Italy fought Byzantine armies.", "The weather in France is mild."]
    row = {"id": "q", "question": "Who led the Normans to Normandy?", "answers": ["Rollo"], "is_impossible": False,
           "paragraph_index": 0, "paragraph": paragraphs[0]}
    # Paragraph 1 shares most words but holds the gold answer: never a distractor (it would be a false negative).
    assert distractor_paragraph(row, paragraphs) == paragraphs[2]
    assert distractor_paragraph({**row, "paragraph_index": 2, "paragraph": paragraphs[2]}, paragraphs) == paragraphs[0]
    assert distractor_paragraph(row, paragraphs[:2]) is None

    rows = load_reader_questions(evaldata / "squad", limit=40, seed=5)
    examples, _ = build_examples(rows, evaldata / "squad" / "docs", distractor_share=1.0)
    distractors = [e for e in examples if e.id.endswith("#distractor")]
    assert len(distractors) == len(rows)  # every SQuAD article has other paragraphs
    by_id = {str(r["id"]): r for r in rows}
    for ex in distractors:
        row = by_id[ex.id.removesuffix("#distractor")]
        assert ex.answer_start is None and ex.context != row["paragraph"]
        assert ex.context in (evaldata / "squad" / "docs" / row["doc"]).read_text(encoding="utf-8")
        assert not any(a.lower() in ex.context.lower() for a in row["answers"])
    assert not [e for e in build_examples(rows, evaldata / "squad" / "docs")[0] if e.id.endswith("#distractor")]


# --- `rag eval answers`: rates and the curve over the no-answer threshold ---------------------------


def test_answer_rates_and_threshold_curve_hand_computed():
    from evals.answers_eval import answer_rates, threshold_curve, threshold_for_answer_rate

    imp = [False, False, False, True, True]
    golds = [["Neil Armstrong"], ["blue"], ["1969"], [], []]
    scores = [5.0, 1.0, None, 3.0, -2.0]
    preds = ["Neil Armstrong", "the blue sky", "", "red", "green"]
    rates = answer_rates(imp, golds, [True, True, False, True, False], preds)
    # F1: 1, 2/3 ("blue sky" vs "blue" after normalization: p=1/2, r=1), 0 (abstained) -> mean
    assert rates["f1"] == round((1 + 2 / 3 + 0) / 3, 4) and rates["em"] == round(1 / 3, 4)
    assert rates["f1_answered"] == round((1 + 2 / 3) / 2, 4) and rates["answer_rate_answerable"] == round(2 / 3, 4)
    assert rates["abstain_rate_unanswerable"] == 0.5
    # Abstentions: q3 (answerable, wrong) and q5 (right): precision 1/2, recall 1/2.
    assert rates["abstention_precision"] == 0.5 and rates["abstention_recall"] == 0.5

    curve = threshold_curve(scores, preds, imp, golds, [-10.0, 2.0, 4.0, 10.0])
    assert [c["answer_rate_answerable"] for c in curve] == [round(2 / 3, 4), round(1 / 3, 4), round(1 / 3, 4), 0.0]
    assert [c["abstain_rate_unanswerable"] for c in curve] == [0.0, 0.5, 1.0, 1.0]
    # At -10 everything with a score answers: the answerable figures are as above, q5 now answers too.
    assert curve[0]["f1"] == rates["f1"] and curve[0]["threshold"] == -10.0
    assert curve[0]["abstention_precision"] == 0.0 and curve[0]["abstention_recall"] == 0.0
    # 0.6 of 3 answerable -> 2 answered: the second-highest answerable score; 0.7 -> 3 needs a score for q3.
    assert threshold_for_answer_rate(scores, imp, 0.6) == 1.0
    assert threshold_for_answer_rate(scores, imp, 0.7) is None


@pytest.fixture()
def squad_mini(tmp_path, evaldata) -> Path:
    """A small real doc-QA set: one SQuAD article cut to the paragraphs of eight of its eval questions."""
    rows = [json.loads(line) for line in (evaldata / "squad" / "questions.jsonl").read_text(encoding="utf-8")
            .splitlines() if line]
    doc = next(r["doc"] for r in rows if r["is_impossible"])
    mine = [r for r in rows if r["doc"] == doc]
    picked = [r for r in mine if r["is_impossible"]][:3] + [r for r in mine if not r["is_impossible"]][:5]
    paragraphs = list(dict.fromkeys(r["paragraph"] for r in picked))
    root = tmp_path / "squad-mini"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / doc).write_text(f"# {picked[0]['title']}\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
    with (root / "questions.jsonl").open("w", encoding="utf-8") as fh:
        for r in picked:
            fh.write(json.dumps({**r, "paragraph_index": paragraphs.index(r["paragraph"])}) + "\n")
    return root


@pytest.mark.slow  # needs tiny_reader, ingests one article and asks eight questions
def test_eval_answers_reports_rates_and_the_no_answer_curve(tiny_reader, squad_mini, make_settings, embedder,
                                                            tmp_path):
    from evals.answers_eval import NO_ANSWER_MARGINS, run_answers

    out, _ = tiny_reader
    settings = make_settings(tmp_path, reader_model=str(out), rerank_model="none", mode="hybrid",
                             reader_no_answer_margin=0.0)
    results = run_answers(squad_mini, settings, out=tmp_path / "answers", progress=False, embedder=embedder)
    answers = results["answers"]
    m = answers["metrics"]
    assert m["questions"] == 8 and m["answerable"] == 5 and m["unanswerable"] == 3
    for key in ("exact_match", "token_f1", "answer_contains_gold", "answer_rate", "answer_rate_answerable",
                "abstain_rate_unanswerable", "abstention_precision", "abstention_recall", "abstention_f1"):
        assert key in m
    assert m["answer_rate"] == m["answered"] / 8
    assert m["citation_validity"] in (None, 1.0)
    rows = [json.loads(line) for line in (tmp_path / "answers" / "answers.partial.jsonl").read_text().splitlines()]
    assert {r["provider"] for r in rows} == {"reader"}
    for r in rows:  # the stored verdict is the one the answer was made from (margin 0)
        if r["reader_gap"] is None or r["reader_gap"] < 0.0:
            assert r["abstained"]
        else:
            assert r["reader_span"]
    curve = answers["threshold_curve"]
    assert [c["threshold"] for c in curve] == NO_ANSWER_MARGINS
    rates = [c["answer_rate_answerable"] for c in curve]
    assert rates == sorted(rates, reverse=True)  # a higher margin never answers more
    abstain = [c["abstain_rate_unanswerable"] for c in curve]
    assert abstain == sorted(abstain)
    assert "at_target_answer_rate" not in answers or answers["at_target_answer_rate"]["answer_rate_answerable"] >= 0.7
