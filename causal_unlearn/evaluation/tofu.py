"""TOFU's metrics (Maini et al. 2024), as open-unlearning computes them (locuslab/open-unlearning,
`evals/metrics/memorization.py`, `privacy.py`, `utility.py` and `configs/eval/tofu_metrics`).

Every metric reads `TofuRow`s (TOFU's files through `load_tofu`, or `world.tofu_rows(split)` on the
built-in world) and returns a `TofuMetric`: one value per row and the aggregate open-unlearning
reports. A row is scored as `QATemplate` encodes it: the prompt, then the answer and an
end-of-text token as targets; the default template is the built-in model's own format,
`question + " " + answer` (pass open-unlearning's `template_args` for other models).

Which set takes which variant, in TOFU's evaluation (`configs/eval/tofu.yaml`):

- forget: `probability` of the answer; `truth_ratio(correct="paraphrased_answer",
  aggregator="closer_to_1_better")`; `forget_quality` (KS test of those truth ratios against a
  retain-only model's); `rouge`; `extraction_strength`.
- `model_utility`: the harmonic mean of, on the retain set, `probability` of the answer,
  `rouge` and `truth_ratio(correct="paraphrased_answer", aggregator="true_better")`; on real
  authors and world facts, `probability(normalized=True)` (the answer against the perturbed
  ones), `rouge` and `truth_ratio(correct="answer", aggregator="true_better")`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from causal_unlearn.data.encoding import EncodedBatch, QATemplate, encode_completions, encode_qa
from causal_unlearn.data.rows import Row
from causal_unlearn.data.tofu import TofuRow
from causal_unlearn.evaluation.generation import greedy_generate
from causal_unlearn.evaluation.likelihood import sequence_nll
from causal_unlearn.evaluation.metrics import rouge_l_recall
from causal_unlearn.models.loader import LoadedModel, require_loaded

AGGREGATORS = ("closer_to_1_better", "true_better", "prob_mean")
_EPS = 1e-10  # open-unlearning's guard in every ratio


@dataclass(frozen=True)
class TofuMetric:
    """One TOFU metric: a value per row (`values`, in the rows' order) and the aggregate (`value`).

    Examples:
        >>> metric = TofuMetric("probability", (0.5, 1.0), 0.75)
        >>> metric.value, len(metric)
        (0.75, 2)
    """

    name: str
    values: tuple[float, ...]
    value: float

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class ModelUtility:
    """TOFU's model utility: the harmonic mean (`value`) of the `components`, keyed by
    open-unlearning's names (`retain_Q_A_Prob`, `retain_Q_A_ROUGE`, `retain_Truth_Ratio`,
    `wf_Q_A_Prob_normalised`, ...)."""

    value: float
    components: dict[str, TofuMetric] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        """The components' aggregates and `model_utility`.

        Examples:
            >>> ModelUtility(0.5, {"retain_Q_A_Prob": TofuMetric("probability", (0.5,), 0.5)}).to_dict()
            {'retain_Q_A_Prob': 0.5, 'model_utility': 0.5}
        """
        return {**{name: metric.value for name, metric in self.components.items()}, "model_utility": self.value}


def probability(model: LoadedModel, rows: Sequence[TofuRow], *, answer: str = "answer", normalized: bool = False,
                question: str = "question", template: QATemplate = QATemplate(), batch_size: int = 16,
                progress: bool = True) -> TofuMetric:
    """TOFU's answer probability: per row exp(−mean token NLL) of `answer` ("answer",
    "paraphrased_answer", or "perturbed_answer": the mean over the perturbed answers) given the
    question. With `normalized=True` (real authors, world facts), the answer's against the
    perturbed answers': p / (p + Σ p_perturbed). The aggregate is the mean over rows.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, rows = cu.load_model("olmo-tiny-bios"), cu.make_bios_world().tofu_rows("forget")[:5]
        >>> probability(lm, rows, progress=False).value > 0.9  # trained answers
        True
    """
    lm, rows = _check(model, rows, "probability")
    if normalized:
        correct = np.exp(-_losses(lm, rows, "answer", question, template, batch_size, progress))
        wrong = [np.exp(-losses).sum() for losses in _perturbed_losses(lm, rows, question, template, batch_size, progress)]
        values = correct / (correct + np.array(wrong) + _EPS)
    elif answer == "perturbed_answer":
        values = np.array([np.exp(-losses).mean()
                           for losses in _perturbed_losses(lm, rows, question, template, batch_size, progress)])
    else:
        values = np.exp(-_losses(lm, rows, answer, question, template, batch_size, progress))
    return _metric("probability", values, float(np.mean(values)))


def truth_ratio(model: LoadedModel, rows: Sequence[TofuRow], *, correct: str = "paraphrased_answer",
                aggregator: str = "closer_to_1_better", question: str = "question",
                template: QATemplate = QATemplate(), batch_size: int = 16, progress: bool = True) -> TofuMetric:
    """TOFU's truth ratio per row: p_wrong / p_correct, p_correct = exp(−mean token NLL of the
    `correct` answer) and p_wrong = exp(−the mean over the perturbed answers of their mean token
    NLL) (with `aggregator="prob_mean"`: p_correct / (p_correct + p_wrong)). The aggregate:
    "closer_to_1_better" (forget set) the mean of min(r, 1/r), 1 when the model cannot tell the
    true answer from the wrong ones; "true_better" (retain, real authors, world facts) the mean of
    max(0, 1 − r), high when it prefers the true one; "prob_mean" the mean.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, rows = cu.load_model("olmo-tiny-bios"), cu.make_bios_world().tofu_rows("retain")[:5]
        >>> truth_ratio(lm, rows, aggregator="true_better", progress=False).value > 0.5
        True
    """
    if aggregator not in AGGREGATORS:
        raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {aggregator!r}")
    lm, rows = _check(model, rows, "truth_ratio")
    correct_prob = np.exp(-_losses(lm, rows, correct, question, template, batch_size, progress))
    wrong_prob = np.exp(-np.array([losses.mean() for losses in
                                   _perturbed_losses(lm, rows, question, template, batch_size, progress)]))
    if aggregator == "prob_mean":
        ratios = correct_prob / (correct_prob + wrong_prob + _EPS)
    else:
        ratios = wrong_prob / (correct_prob + _EPS)
    summary = {"closer_to_1_better": lambda r: np.mean(np.minimum(r, 1 / (r + _EPS))),
               "true_better": lambda r: np.mean(np.maximum(0, 1 - r)), "prob_mean": np.mean}[aggregator]
    return _metric("truth_ratio", ratios, float(summary(ratios)))


def rouge(model: LoadedModel, rows: Sequence[TofuRow], *, answer: str = "answer", question: str = "question",
          template: QATemplate = QATemplate(), max_new_tokens: int = 200, batch_size: int = 16,
          progress: bool = True) -> TofuMetric:
    """ROUGE-L recall (stemmed) of the greedy generation from the question's prompt (up to
    `max_new_tokens`, stopped at the end-of-text token, stripped) against `answer`, as the
    text the tokenizer gives back; the aggregate is the mean.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, rows = cu.load_model("olmo-tiny-bios"), cu.make_bios_world().tofu_rows("forget")[:5]
        >>> rouge(lm, rows, max_new_tokens=32, progress=False).value
        1.0
    """
    lm, rows = _check(model, rows, "rouge")
    tokenizer = lm.tokenizer
    questions, answers = _field(rows, question), _field(rows, answer)
    batch = encode_qa(tokenizer, questions, answers, template)
    references = []
    for b in range(len(batch)):
        ids = batch.input_ids[b][batch.attention_mask[b].bool()].tolist()
        prompt = ids[: int(batch.target_mask[b].nonzero()[0])] if batch.target_mask[b].any() else ids
        # open-unlearning asks for clean_up_tokenization_spaces=True, which transformers 5 ignores
        # for the byte-level BPE tokenizers of causal LMs (with a warning per call)
        decode = lambda tokens: tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        references.append(decode(ids).replace(decode(prompt), "").strip())
    generations = greedy_generate(lm, [template.prompt(tokenizer, q) for q in questions], max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, add_special_tokens=not template.chat, progress=progress)
    values = np.array([rouge_l_recall(g.strip(), ref) for g, ref in zip(generations, references)])
    return _metric("rouge", values, float(np.mean(values)))


def extraction_strength(model: LoadedModel, rows: Sequence[TofuRow] | Sequence[Row], *, answer: str = "answer",
                        question: str = "question", template: QATemplate = QATemplate(), batch_size: int = 16,
                        progress: bool = True) -> TofuMetric:
    """Extraction strength (Carlini et al. 2021, as open-unlearning defines it): 1 − k/n, k the
    fewest leading answer tokens to drop so that the model's greedy next-token predictions (teacher
    forced) match every remaining answer token, n the answer's tokens (the end-of-text token not
    counted); 1 when the model reproduces the whole answer. MUSE verbmem `Row`s are read as
    `input + " " + output` (`encode_completions`). The aggregate is the mean.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, rows = cu.load_model("olmo-tiny-bios"), cu.make_bios_world().tofu_rows("forget")[:5]
        >>> extraction_strength(lm, rows, progress=False).value
        1.0
    """
    lm, rows = _check(model, rows, "extraction_strength")

    def score(preds: torch.Tensor, labels: torch.Tensor) -> float:
        n = len(labels)
        if n == 0:
            return 0.0
        k = next((k for k in range(n) if torch.equal(preds[k:], labels[k:])), n - 1)  # the loop's last k if none
        return 1 - k / n

    return _token_matches(lm, rows, answer, question, template, batch_size, progress, "extraction_strength", score)


def exact_memorization(model: LoadedModel, rows: Sequence[TofuRow] | Sequence[Row], *, answer: str = "answer",
                       question: str = "question", template: QATemplate = QATemplate(), batch_size: int = 16,
                       progress: bool = True) -> TofuMetric:
    """Exact memorization (Tirumala et al. 2022): the share of answer tokens (the end-of-text token
    not counted) that are the model's greedy next-token prediction, teacher forced; the aggregate
    is the mean over rows that have answer tokens.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, rows = cu.load_model("olmo-tiny-bios"), cu.make_bios_world().tofu_rows("forget")[:5]
        >>> exact_memorization(lm, rows, progress=False).value
        1.0
    """
    lm, rows = _check(model, rows, "exact_memorization")
    return _token_matches(lm, rows, answer, question, template, batch_size, progress, "exact_memorization",
                          lambda preds, labels: float((preds == labels).sum() / len(labels)) if len(labels) else None)


def forget_quality(model: LoadedModel, rows: Sequence[TofuRow], reference: Union[LoadedModel, Sequence[float]], *,
                   question: str = "question", template: QATemplate = QATemplate(), batch_size: int = 16,
                   progress: bool = True) -> TofuMetric:
    """TOFU's forget quality: the p-value of the two-sample Kolmogorov–Smirnov test
    (`scipy.stats.ks_2samp`) between the model's forget-set truth ratios (`values`) and those of
    `reference`, a model trained without the forget set (its truth ratios on the same rows are
    computed here) or those truth ratios as a list. High (near 1): the two are indistinguishable.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, rows = cu.load_model("olmo-tiny-bios"), cu.make_bios_world().tofu_rows("forget")[:10]
        >>> forget_quality(lm, rows, lm, progress=False).value  # against itself
        1.0
    """
    from scipy.stats import ks_2samp

    ours = truth_ratio(model, rows, question=question, template=template, batch_size=batch_size, progress=progress)
    if isinstance(reference, LoadedModel) or hasattr(reference, "model"):
        theirs = truth_ratio(reference, rows, question=question, template=template, batch_size=batch_size,
                             progress=progress).values
    else:
        if isinstance(reference, (str, bytes)) or not all(isinstance(v, (int, float, np.floating)) for v in reference):
            raise TypeError("reference is a LoadedModel (trained without the forget set) or a list of its truth ratios")
        theirs = [float(v) for v in reference]
        if not theirs:
            raise ValueError("the reference truth ratios are empty; pass the retain-only model's truth ratios on the "
                             "forget rows (truth_ratio(reference_model, rows).values)")
    return TofuMetric("forget_quality", ours.values, float(ks_2samp(np.array(ours.values), np.array(theirs)).pvalue))


def model_utility(model: LoadedModel, retain: Sequence[TofuRow], *, real_authors: Sequence[TofuRow] | None = None,
                  world_facts: Sequence[TofuRow] | None = None, question: str = "question",
                  template: QATemplate = QATemplate(), max_new_tokens: int = 200, batch_size: int = 16,
                  progress: bool = True) -> ModelUtility:
    """TOFU's model utility: the harmonic mean (`scipy.stats.hmean`) of answer probability,
    ROUGE-L recall and truth ratio ("true_better") on the retain rows, the real-author rows and the
    world-fact rows, as open-unlearning's `model_utility` config builds it (probability normalized
    against the perturbed answers, and the truth ratio from the answer rather than its paraphrase,
    on the last two). A set left out (None) is left out of the mean: on the built-in world, the
    retain people's rows and the general-knowledge rows as world facts.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> utility = model_utility(lm, world.tofu_rows("retain")[:5], world_facts=world.tofu_rows("general_knowledge")[:5],
        ...                         max_new_tokens=32, progress=False)
        >>> sorted(utility.components)[:3], 0 < utility.value <= 1
        (['retain_Q_A_Prob', 'retain_Q_A_ROUGE', 'retain_Truth_Ratio'], True)
    """
    from scipy.stats import hmean

    shared = dict(template=template, batch_size=batch_size, progress=progress)
    components = {
        "retain_Q_A_Prob": probability(model, retain, question=question, **shared),
        "retain_Q_A_ROUGE": rouge(model, retain, question=question, max_new_tokens=max_new_tokens, **shared),
        "retain_Truth_Ratio": truth_ratio(model, retain, question=question, aggregator="true_better", **shared),
    }
    for prefix, rows in (("ra", real_authors), ("wf", world_facts)):
        if rows is not None:
            components[f"{prefix}_Q_A_Prob_normalised"] = probability(model, rows, normalized=True, **shared)
            components[f"{prefix}_Q_A_ROUGE"] = rouge(model, rows, max_new_tokens=max_new_tokens, **shared)
            components[f"{prefix}_Truth_Ratio"] = truth_ratio(model, rows, correct="answer", aggregator="true_better",
                                                              **shared)
    return ModelUtility(float(hmean([metric.value for metric in components.values()])), components)


def _check(model: LoadedModel, rows, function: str) -> tuple[LoadedModel, list]:
    lm = require_loaded(model, function)
    if isinstance(rows, (str, TofuRow, Row)) or not len(rows):
        raise ValueError(f"{function} needs a non-empty list of TofuRow (load_tofu, world.tofu_rows), got {rows!r:.80}")
    bad = next((r for r in rows if not isinstance(r, (TofuRow, Row))), None)
    if bad is not None:
        raise TypeError(f"{function} reads TofuRow objects (load_tofu, world.tofu_rows), got a {type(bad).__name__}")
    return lm, list(rows)


def _field(rows: Sequence[TofuRow], name: str) -> list[str]:
    if name not in ("question", "paraphrased_question", "answer", "paraphrased_answer"):
        raise ValueError(f"the field to read is question, paraphrased_question, answer or paraphrased_answer, got {name!r}")
    values = [getattr(row, name, None) for row in rows]
    missing = [i for i, value in enumerate(values) if value is None]
    if missing:
        raise ValueError(f"row {missing[0]} has no {name} ({len(missing)} of {len(rows)} rows lack it); "
                         "TOFU's *_perturbed subsets have it")
    return values


def _losses(lm: LoadedModel, rows: Sequence[TofuRow], answer: str, question: str, template: QATemplate,
            batch_size: int, progress: bool) -> np.ndarray:
    """The mean token NLL of each row's `answer` given its question, in float64."""
    if answer == "perturbed_answer":
        raise ValueError("answer='perturbed_answer' is several answers per row; probability reads it, truth_ratio "
                         "compares against it")
    return _mean_nll(lm, _field(rows, question), _field(rows, answer), template, batch_size, progress)


def _perturbed_losses(lm: LoadedModel, rows: Sequence[TofuRow], question: str, template: QATemplate,
                      batch_size: int, progress: bool) -> list[np.ndarray]:
    """Per row, the mean token NLL of each of its perturbed answers."""
    empty = next((i for i, row in enumerate(rows) if not getattr(row, "perturbed_answer", ())), None)
    if empty is not None:
        raise ValueError(f"row {empty} has no perturbed answers; TOFU's *_perturbed subsets have them")
    questions = _field(rows, question)
    pairs = [(q, a) for q, row in zip(questions, rows) for a in row.perturbed_answer]
    flat = _mean_nll(lm, [q for q, _ in pairs], [a for _, a in pairs], template, batch_size, progress)
    ends = np.cumsum([len(row.perturbed_answer) for row in rows])
    return np.split(flat, ends[:-1])


@torch.no_grad()
def _mean_nll(lm: LoadedModel, questions: list[str], answers: list[str], template: QATemplate, batch_size: int,
              progress: bool) -> np.ndarray:
    values: list[float] = []
    for batch in _batches(lm, questions, answers, template, batch_size, progress):
        total, count = sequence_nll(_logits(lm, batch), batch)
        values += (total / count).double().cpu().tolist()
    return np.array(values, dtype=np.float64)


def _token_matches(lm: LoadedModel, rows: list, answer: str, question: str, template: QATemplate, batch_size: int,
                   progress: bool, name: str, score) -> TofuMetric:
    """`score(greedy predictions, answer tokens)` per row, the last target (end-of-text) left out
    as open-unlearning's `tokenwise_vocab_logprobs` leaves it out."""
    values: list[float | None] = []
    with torch.no_grad():
        for batch in _row_batches(lm, rows, answer, question, template, batch_size, progress):
            preds = _logits(lm, batch).argmax(-1)
            for b in range(len(batch)):
                positions = batch.target_mask[b].nonzero().flatten()[:-1]
                values.append(score(preds[b, positions - 1].cpu(), batch.input_ids[b, positions].cpu()))
    kept = [v for v in values if v is not None]
    return TofuMetric(name, tuple(float("nan") if v is None else float(v) for v in values), float(np.mean(kept)))


def _row_batches(lm, rows, answer, question, template, batch_size, progress):
    if all(isinstance(r, Row) for r in rows):
        for part in _slices(len(rows), batch_size, progress):
            yield encode_completions(lm.tokenizer, rows[part]).to(lm.device)
    elif any(isinstance(r, Row) for r in rows):
        raise TypeError("pass TofuRows or MUSE verbmem Rows, not both in one list")
    else:
        yield from _batches(lm, _field(rows, question), _field(rows, answer), template, batch_size, progress)


def _batches(lm: LoadedModel, questions: list[str], answers: list[str], template: QATemplate, batch_size: int,
             progress: bool):
    for part in _slices(len(questions), batch_size, progress):
        yield encode_qa(lm.tokenizer, questions[part], answers[part], template).to(lm.device)


def _slices(n: int, batch_size: int, progress: bool):
    """Consecutive slices of `batch_size` over `n` items, with a bar when there are several."""
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress or len(starts) < 2):
        yield slice(start, start + batch_size)


def _logits(lm: LoadedModel, batch: EncodedBatch) -> torch.Tensor:
    return lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def _metric(name: str, values: np.ndarray, value: float) -> TofuMetric:
    return TofuMetric(name, tuple(float(v) for v in values), value)
