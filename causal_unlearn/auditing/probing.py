"""Asking in other ways: recall by greedy generation on held-out probes, and multiple-choice
ranking by likelihood, which finds knowledge that generation hides."""

from __future__ import annotations

import random
from typing import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from causal_unlearn.data.encoding import encode_continuations
from causal_unlearn.data.probes import Probe
from causal_unlearn.evaluation.knowledge import probe_recall
from causal_unlearn.evaluation.likelihood import sequence_nll
from causal_unlearn.models.loader import LoadedModel

AnswerPool = Mapping[str, Sequence[tuple[str, ...]]]  # attribute -> every distinct answer (all its forms)


def generation_recall(model: LoadedModel, probes: Sequence[Probe], *, max_new_tokens: int = 40,
                      progress: bool = True) -> list[bool]:
    """Per probe: whether the greedy continuation states its answer (`Probe.recalled_in`).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> generation_recall(lm, cu.make_bios_world().probes("forget", attribute="city")[:2], progress=False)
        [True, True]
    """
    return probe_recall(model, probes, max_new_tokens=max_new_tokens, progress=progress)


def answer_pool(probes: Sequence[Probe]) -> dict[str, list[tuple[str, ...]]]:
    """Every distinct answer per attribute among `probes`, in first-seen order: the candidates of
    multiple-choice probing (a city question chooses among all the world's cities).

    Examples:
        >>> import causal_unlearn as cu
        >>> pool = answer_pool(cu.make_bios_world().probes())
        >>> len(pool["city"]), pool["birth_date"][0]
        (12, ('1952-02-23', 'February 23, 1952'))
    """
    pool: dict[str, dict[str, tuple[str, ...]]] = {}
    for probe in probes:
        pool.setdefault(probe.attribute, {}).setdefault(probe.answers[0], probe.answers)
    return {attribute: list(answers.values()) for attribute, answers in pool.items()}


def choices(probe: Probe, pool: AnswerPool, n_choices: int, seed: int = 0) -> list[tuple[str, ...]]:
    """The probe's true answer first, then up to `n_choices - 1` other answers of its attribute,
    drawn the same way every time for the same probe and seed."""
    others = [answers for answers in pool.get(probe.attribute, ()) if answers[0] != probe.answers[0]]
    rng = random.Random(f"{seed}-{probe.prompt}")
    return [probe.answers, *rng.sample(others, min(n_choices - 1, len(others)))]


@torch.no_grad()
def choice_ranks(
    model: LoadedModel,
    probes: Sequence[Probe],
    *,
    pool: AnswerPool | None = None,
    n_choices: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
) -> list[tuple[int, int]]:
    """Per probe: (rank of the true answer, number of choices) when its `n_choices` candidates
    (`choices`) are ordered by the mean log-likelihood per token of `prompt + " " + answer`;
    rank 0 is the model's choice. An answer with several forms (a date written two ways)
    counts by its likeliest form. Chance of rank 0 is 1 / choices.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> probes = world.probes("forget", attribute="city")
        >>> choice_ranks(lm, probes[:2], pool=answer_pool(probes), progress=False)
        [(0, 10), (0, 10)]
    """
    if n_choices < 2:
        raise ValueError(f"n_choices must be at least 2 (the true answer and a distractor), got {n_choices}")
    pool = answer_pool(probes) if pool is None else pool
    options = [choices(probe, pool, n_choices, seed) for probe in probes]
    # one (probe, candidate, form) triple per sequence to score
    triples = [(p, c, form) for p, (probe, candidates) in enumerate(zip(probes, options))
               for c, answers in enumerate(candidates) for form in answers]
    scores = torch.full((len(probes), max(map(len, options))), -torch.inf)
    starts = range(0, len(triples), batch_size)
    for start in tqdm(starts, desc="multiple choice", unit="batch", disable=not progress or len(starts) < 2):
        chunk = triples[start : start + batch_size]
        batch = encode_continuations(model.tokenizer, [probes[p].prompt for p, _, _ in chunk],
                                     [form for _, _, form in chunk]).to(model.device)
        logits = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        total, count = sequence_nll(logits, batch)
        for (p, c, _), score in zip(chunk, (-total / count).cpu().tolist()):
            scores[p, c] = max(float(scores[p, c]), score)
    return [(int((scores[p, 1 : len(candidates)] > scores[p, 0]).sum()), len(candidates))
            for p, candidates in enumerate(options)]

