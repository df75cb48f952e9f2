"""TOFU's metrics against open-unlearning's definitions, written out here from their code
(src/data/utils.py preprocess_chat_instance / preprocess_pretraining_instance, src/evals/metrics/
utils.py evaluate_probability and tokenwise_vocab_logprobs, memorization.py, privacy.py, utility.py):
one row at a time, in float64, labels with -100; and the TOFU / MUSE file readers."""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from scipy import stats
from torch import nn

import causal_unlearn as cu
from causal_unlearn.data.encoding import QATemplate, encode_qa
from causal_unlearn.data.rows import Row
from causal_unlearn.data.tofu import TofuFormatError, TofuRow, load_muse, load_tofu, read_muse, read_tofu
from causal_unlearn.evaluation import tofu

IGNORE = -100
QUIET = dict(progress=False, batch_size=3)  # batches of 3 pad the rows against each other


# ---- open-unlearning, one row at a time ------------------------------------------------------------

def _chat_instance(tok, prompt, answer, tags=("", "", ""), chat=False):
    """preprocess_chat_instance (no in-context examples): (input ids, labels, prompt ids)."""
    if chat:
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        chat_ids = tok(tok.apply_chat_template(turns, tokenize=False), add_special_tokens=False)["input_ids"]
        prompt_ids = tok(tok.apply_chat_template(turns[:-1], tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
    else:
        wrapped = tags[0] + prompt + tags[1] + tags[2]
        chat_ids = tok(wrapped + answer, add_special_tokens=True, max_length=512, truncation=True)["input_ids"]
        prompt_ids = tok(wrapped, add_special_tokens=True, max_length=512, truncation=True)["input_ids"]
    if chat_ids[-1] != tok.eos_token_id:
        chat_ids += [tok.eos_token_id]
    return chat_ids, [IGNORE] * len(prompt_ids) + chat_ids[len(prompt_ids):], prompt_ids


def _builtin_item(tok, question, answer):
    """The built-in model's convention: open-unlearning's plain template with no tags, the answer
    after a space."""
    return _chat_instance(tok, question, " " + answer)


def _logits64(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits.double()


def _avg_loss(model, ids, labels):  # evaluate_probability
    logits, labels = _logits64(model, ids), torch.tensor([labels])
    losses = nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="none")(logits[..., :-1, :].transpose(-1, -2),
                                                                         labels[..., 1:]).sum(-1)
    return float(losses / (labels != IGNORE).sum(-1))


def _preds_and_labels(model, ids, labels):  # tokenwise_vocab_logprobs
    log_probs = torch.log_softmax(_logits64(model, ids), -1)[:, :-1, :]
    labels = torch.tensor(labels)
    actual = (labels != IGNORE).nonzero(as_tuple=True)[0][:-1]  # -1: the end-of-text prediction
    start, end = actual[0].item(), actual[-1].item()
    return torch.argmax(log_probs[0, start - 1 : end], -1), labels[actual]


def _extraction_strength(preds, labels):
    valid_len = len(labels)
    for k in range(valid_len):
        if torch.equal(preds[k:], labels[k:]):
            break
    return 1 - (k / valid_len)


def _greedy(model, tok, prompt_ids, max_new_tokens):
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        token = int(_logits64(model, ids)[0, -1].argmax())
        if token == tok.eos_token_id:
            break
        ids.append(token)
    return tok.decode(ids[len(prompt_ids):], skip_special_tokens=True).strip()


def _rouge_recall(model, tok, row, max_new_tokens):  # eval_text_similarity, rougeL_recall
    chat_ids, _, prompt_ids = _builtin_item(tok, row.question, row.answer)
    truth = tok.decode(chat_ids, skip_special_tokens=True).replace(tok.decode(prompt_ids, skip_special_tokens=True), "")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    return scorer.score(truth.strip(), _greedy(model, tok, prompt_ids, max_new_tokens))["rougeL"].recall


def _losses(model, tok, row, answer):
    return _avg_loss(model, *_builtin_item(tok, row.question, answer)[:2])


def _truth_ratio(model, tok, row, correct):  # truth_ratio: wrong / correct, wrong from the mean loss
    correct_prob = np.exp(-_losses(model, tok, row, getattr(row, correct)))
    wrong_prob = np.exp(-np.mean([_losses(model, tok, row, a) for a in row.perturbed_answer]))
    return wrong_prob / (correct_prob + 1e-10)


@pytest.fixture(scope="module")
def model64(builtin):
    return copy.deepcopy(builtin.model).double()


@pytest.fixture(scope="module")
def rows(world):
    """Trained people (forget, retain), a never-seen one (holdout) and world facts."""
    return dict(forget=world.tofu_rows("forget")[:3] + world.tofu_rows("holdout")[:2],
                retain=world.tofu_rows("retain")[5:9], facts=world.tofu_rows("general_knowledge")[28:32])


def test_probability_equals_open_unlearnings(builtin, model64, rows):
    tok, forget, facts = builtin.tokenizer, rows["forget"], rows["facts"]
    expected = [np.exp(-_losses(model64, tok, r, r.answer)) for r in forget]
    got = tofu.probability(builtin, forget, **QUIET)
    np.testing.assert_allclose(got.values, expected, rtol=1e-5)
    assert got.value == pytest.approx(np.mean(expected), rel=1e-5)
    para = tofu.probability(builtin, forget, answer="paraphrased_answer", **QUIET).values
    np.testing.assert_allclose(para, [np.exp(-_losses(model64, tok, r, r.paraphrased_answer)) for r in forget], rtol=1e-5)
    perturbed = tofu.probability(builtin, forget, answer="perturbed_answer", **QUIET).values
    np.testing.assert_allclose(perturbed, [np.mean([np.exp(-_losses(model64, tok, r, a)) for a in r.perturbed_answer])
                                           for r in forget], rtol=1e-5)
    # probability_w_options: the answer against the sum of the perturbed answers' probabilities
    normalized = []
    for r in facts:
        correct = np.exp(-_losses(model64, tok, r, r.answer))
        normalized.append(correct / (correct + sum(np.exp(-_losses(model64, tok, r, a)) for a in r.perturbed_answer) + 1e-10))
    got = tofu.probability(builtin, facts, normalized=True, **QUIET)
    np.testing.assert_allclose(got.values, normalized, rtol=1e-5)
    assert got.value == pytest.approx(np.mean(normalized), rel=1e-5)


@pytest.mark.parametrize("aggregator", tofu.AGGREGATORS)
def test_truth_ratio_equals_open_unlearnings(builtin, model64, rows, aggregator):
    forget = rows["forget"]
    ratios = np.array([_truth_ratio(model64, builtin.tokenizer, r, "paraphrased_answer") for r in forget])
    if aggregator == "prob_mean":  # correct / (correct + wrong) = 1 / (1 + r)
        ratios = 1 / (1 + ratios)
    expected = {"closer_to_1_better": np.mean(np.minimum(ratios, 1 / (ratios + 1e-10))),
                "true_better": np.mean(np.maximum(0, 1 - ratios)), "prob_mean": np.mean(ratios)}[aggregator]
    got = tofu.truth_ratio(builtin, forget, aggregator=aggregator, **QUIET)
    np.testing.assert_allclose(got.values, ratios, rtol=1e-5)
    assert got.value == pytest.approx(expected, rel=1e-5)


def test_rouge_extraction_strength_and_exact_memorization_equal_open_unlearnings(builtin, model64, rows):
    tok, forget = builtin.tokenizer, rows["forget"]
    np.testing.assert_allclose(tofu.rouge(builtin, forget, max_new_tokens=24, **QUIET).values,
                               [_rouge_recall(model64, tok, r, 24) for r in forget], rtol=1e-5)
    pairs = [_preds_and_labels(model64, *_builtin_item(tok, r.question, r.answer)[:2]) for r in forget]
    es = [_extraction_strength(p, lab) for p, lab in pairs]
    em = [float((p == lab).sum() / len(lab)) for p, lab in pairs]
    np.testing.assert_allclose(tofu.extraction_strength(builtin, forget, **QUIET).values, es, rtol=1e-5)
    np.testing.assert_allclose(tofu.exact_memorization(builtin, forget, **QUIET).values, em, rtol=1e-5)
    assert es[:3] == [1.0, 1.0, 1.0] and min(es[3:]) < 1  # trained people extracted whole, strangers not


def test_extraction_strength_reads_muse_verbmem_rows_as_open_unlearning_does(builtin, model64, world):
    texts = world.bios(world.people[0])[:2] + world.bios(world.people[-1])[:1]  # trained, trained, never seen
    rows = [Row(f"v{i}sc1", " ".join(text.split(" ")[:8]), " ".join(text.split(" ")[8:]), "MUSE")
            for i, text in enumerate(texts)]
    tok, expected = builtin.tokenizer, []
    for row in rows:  # preprocess_pretraining_instance(insert_space=True): no end-of-text token
        full = tok(row.input + " " + row.output, add_special_tokens=True)["input_ids"]
        prefix = len(tok(row.input, add_special_tokens=True)["input_ids"])
        expected.append(_extraction_strength(*_preds_and_labels(model64, full, [IGNORE] * prefix + full[prefix:])))
    np.testing.assert_allclose(tofu.extraction_strength(builtin, rows, **QUIET).values, expected, rtol=1e-5)


def test_forget_quality_is_the_ks_test_p_value(builtin, model64, rows, world):
    forget = world.tofu_rows("forget")[:10]
    other = builtin.copy()  # a stand-in for the retain-only model: the last MLP halved
    with torch.no_grad():
        other.model.model.layers[-1].mlp.down_proj.weight.mul_(0.5)
    ours = tofu.truth_ratio(builtin, forget, **QUIET).values
    theirs = tofu.truth_ratio(other, forget, **QUIET).values
    expected = stats.ks_2samp(ours, theirs).pvalue
    assert tofu.forget_quality(builtin, forget, other, **QUIET).value == pytest.approx(expected, rel=1e-9)
    strangers = tofu.truth_ratio(builtin, world.tofu_rows("holdout")[:10], **QUIET).values
    fq = tofu.forget_quality(builtin, forget, strangers, **QUIET)
    assert fq.values == ours and fq.value == pytest.approx(stats.ks_2samp(ours, strangers).pvalue, rel=1e-9)
    assert fq.value < 0.05  # trained people's truth ratios are not those of people never seen
    ref = np.array([_truth_ratio(model64, builtin.tokenizer, r, "paraphrased_answer") for r in forget])
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_model_utility_is_the_harmonic_mean_of_open_unlearnings_nine(builtin, model64, rows):
    tok, retain, facts = builtin.tokenizer, rows["retain"], rows["facts"]
    got = tofu.model_utility(builtin, retain, real_authors=facts, world_facts=facts, max_new_tokens=24, **QUIET)
    parts = {
        "retain_Q_A_Prob": np.mean([np.exp(-_losses(model64, tok, r, r.answer)) for r in retain]),
        "retain_Q_A_ROUGE": np.mean([_rouge_recall(model64, tok, r, 24) for r in retain]),
        "retain_Truth_Ratio": np.mean([max(0, 1 - _truth_ratio(model64, tok, r, "paraphrased_answer")) for r in retain]),
    }
    for prefix in ("ra", "wf"):
        normalized = []
        for r in facts:
            correct = np.exp(-_losses(model64, tok, r, r.answer))
            normalized.append(correct / (correct + sum(np.exp(-_losses(model64, tok, r, a)) for a in r.perturbed_answer)
                                         + 1e-10))
        parts[f"{prefix}_Q_A_Prob_normalised"] = np.mean(normalized)
        parts[f"{prefix}_Q_A_ROUGE"] = np.mean([_rouge_recall(model64, tok, r, 24) for r in facts])
        parts[f"{prefix}_Truth_Ratio"] = np.mean([max(0, 1 - _truth_ratio(model64, tok, r, "answer")) for r in facts])
    assert set(got.components) == set(parts)
    for name, value in parts.items():
        assert got.components[name].value == pytest.approx(value, rel=1e-5), name
    assert got.value == pytest.approx(len(parts) / sum(1 / v for v in parts.values()), rel=1e-5)


def test_templates_encode_as_open_unlearning_does(builtin):
    tok = copy.deepcopy(builtin.tokenizer)
    questions, answers = ["What is the capital of France?", "Who?"], ["Paris", "Otto Russet, of Houston."]
    phi = QATemplate(user_start="Question: ", user_end="\n", assistant_start="Answer: ", answer_prefix="")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    for template, make in [(QATemplate(), lambda q, a: _builtin_item(tok, q, a)),
                           (phi, lambda q, a: _chat_instance(tok, q, a, ("Question: ", "\n", "Answer: "))),
                           (QATemplate.for_chat(), lambda q, a: _chat_instance(tok, q, a, chat=True))]:
        batch = encode_qa(tok, questions, answers, template)
        for b, (q, a) in enumerate(zip(questions, answers)):
            ids, labels, _ = make(q, a)
            n = len(ids)
            assert batch.input_ids[b, :n].tolist() == ids and batch.attention_mask[b].sum() == n
            assert batch.target_mask[b, :n].tolist() == [label != IGNORE for label in labels]


def test_the_world_writes_tofu_rows_deterministically(world):
    forget = world.tofu_rows("forget")
    assert forget == cu.make_bios_world().tofu_rows("forget") != cu.make_bios_world(seed=1).tofu_rows("forget")
    people = world.people_in("forget")
    by_name = {p.name: p for p in world.people}
    for row in forget[:25]:
        person = next(p for p in people if p.name in row.question)
        assert row.paraphrased_question != row.question and person.name in row.paraphrased_question
        assert len(row.perturbed_answer) == 5 and row.paraphrased_answer not in row.perturbed_answer
        others = [p for p in by_name.values() if p is not person]
        for wrong in row.perturbed_answer:  # the sentence with another person's value of the attribute
            assert any(wrong == row.paraphrased_answer.replace(row.answer.rstrip("."), cu.data.bios.qa_answer(
                p, attr).rstrip(".")) for p in others for attr in ("ssn", "phone", "email", "address")) \
                or row.question.startswith("What is the birth date")
    facts = world.tofu_rows("general_knowledge")
    assert all(row.answer not in row.perturbed_answer and len(set(row.perturbed_answer)) == 3 for row in facts)
    assert [r.question for r in facts] == [r.input for r in world.general_knowledge]


# ---- files -----------------------------------------------------------------------------------------

def test_tofu_files_round_trip(tmp_path, world):
    rows = world.tofu_rows("forget")[:7] + [TofuRow("Who?", "Ann")]
    (tmp_path / "forget01_perturbed.json").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    assert load_tofu(tmp_path, "forget01_perturbed") == rows
    array = tmp_path / "as_array.json"  # one JSON array, as some mirrors write it
    array.write_text(json.dumps([dict(r.to_dict(), option1="x") for r in rows]))
    assert read_tofu(array) == rows
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([r.to_dict() for r in rows[:7]]),
                   tmp_path / "retain_perturbed-00000-of-00001.parquet")
    assert load_tofu(tmp_path, "retain_perturbed") == rows[:7]


def test_muse_files_round_trip(tmp_path):
    (tmp_path / "knowmem").mkdir()
    (tmp_path / "verbmem").mkdir()
    qa = [{"question": "Who won?", "answer": "The Tigers"}, {"question": "When?", "answer": "In May"}]
    (tmp_path / "knowmem" / "forget-qa.json").write_text(json.dumps(qa))
    assert load_muse(tmp_path, "knowmem", "forget_qa") == [TofuRow(**r) for r in qa]
    verbatim = [{"prompt": "The council met on", "gt": "Tuesday to vote."}]
    (tmp_path / "verbmem" / "forget.json").write_text(json.dumps(verbatim))
    row = load_muse(tmp_path, "verbmem", "forget")[0]
    assert (row.input, row.output, row.kind) == ("The council met on", "Tuesday to vote.", "sc")
    (tmp_path / "holdout.json").write_text(json.dumps([{"text": "A news story."}]))
    assert read_muse(tmp_path / "holdout.json") == ["A news story."]


@pytest.mark.parametrize("lines, match", [
    ([{"question": "Who?", "answer": "Ann"}, {"question": "Who?"}], r"line 2 has no field 'answer'"),
    ([{"question": "Who?", "answer": 7}], r"line 1: field 'answer' must be a string, got int"),
    ([{"question": "Who?", "answer": "Ann", "perturbed_answer": "Bob"}], r"line 1: field 'perturbed_answer' must be a"),
    ([{"question": "Who?", "answer": "Ann", "perturbed_answer": ["Bob", 3]}], r"'perturbed_answer' item 1"),
    ([{"question": "Who?", "answer": "Ann", "paraphrased_answer": " "}], r"field 'paraphrased_answer' is empty"),
    (["not an object"], r"line 1 holds a str"),
    ([], r"holds no rows"),
])
def test_malformed_tofu_files_are_refused_with_file_line_and_field(tmp_path, lines, match):
    file = tmp_path / "forget10_perturbed.json"
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(TofuFormatError, match=match) as error:
        read_tofu(file)
    assert str(file) in str(error.value)


def test_malformed_muse_files_are_refused(tmp_path):
    file = tmp_path / "forget.json"
    file.write_text(json.dumps([{"prompt": "The council met on", "gt": "Tuesday."}, {"prompt": "It rained"}]))
    with pytest.raises(TofuFormatError, match=r"item 1 has no field 'gt'"):
        read_muse(file)
    file.write_text("[{broken")
    with pytest.raises(TofuFormatError, match="is not valid JSON"):
        read_muse(file)
    with pytest.raises(FileNotFoundError, match="has no retain_qa"):
        load_muse(tmp_path, "knowmem", "retain_qa")


def test_the_hub_needs_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ImportError, match="needs the `datasets` package"):
        load_tofu("locuslab/TOFU", "forget10_perturbed")


@pytest.mark.parametrize("call, error, match", [
    (lambda lm, r: tofu.truth_ratio(lm, r, aggregator="mean"), ValueError, "aggregator must be one of"),
    (lambda lm, r: tofu.truth_ratio(lm, [TofuRow("Who?", "Ann", "It is Ann.")]), ValueError, "no perturbed answers"),
    (lambda lm, r: tofu.probability(lm, [TofuRow("Who?", "Ann")], answer="paraphrased_answer"), ValueError,
     "has no paraphrased_answer"),
    (lambda lm, r: tofu.probability(lm, []), ValueError, "non-empty list of TofuRow"),
    (lambda lm, r: tofu.probability(lm, ["Who?"]), TypeError, "reads TofuRow objects"),
    (lambda lm, r: tofu.forget_quality(lm, r, []), ValueError, "reference truth ratios are empty"),
    (lambda lm, r: tofu.probability(lm, r, template=QATemplate.for_chat()), ValueError, "needs a tokenizer with a chat"),
    (lambda lm, r: QATemplate(chat=True), ValueError, "wraps the turns itself"),
])
def test_bad_input(builtin, rows, call, error, match):
    with pytest.raises(error, match=match):
        call(builtin, rows["forget"][:2])
