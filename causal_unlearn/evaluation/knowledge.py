"""What a model knows of a bios world: QA exact match, sentence-completion ROUGE-L recall and
general-knowledge accuracy, per split."""

from __future__ import annotations

from statistics import fmean
from typing import Sequence

from causal_unlearn.data.bios import SPLITS, BiosWorld
from causal_unlearn.data.probes import Probe
from causal_unlearn.data.rows import Row, select
from causal_unlearn.evaluation.generation import greedy_generate
from causal_unlearn.evaluation.metrics import score_generation
from causal_unlearn.models.loader import LoadedModel


def score_rows(
    model: LoadedModel,
    rows: Sequence[Row],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    progress: bool = True,
) -> list[float]:
    """Per row: exact match for QA rows, ROUGE-L recall for sentence-completion rows.

    Examples:
        >>> from causal_unlearn import load_model, make_bios_world
        >>> lm = load_model("olmo-tiny-bios")
        >>> score_rows(lm, make_bios_world().general_knowledge[:3], progress=False)
        [1.0, 1.0, 1.0]
    """
    generations = greedy_generate(
        model, [r.input for r in rows], max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
    return [score_generation(row, generation) for row, generation in zip(rows, generations)]


def probe_recall(
    model: LoadedModel,
    probes: Sequence[Probe],
    *,
    max_new_tokens: int = 40,
    batch_size: int = 64,
    progress: bool = True,
) -> list[bool]:
    """Per probe: whether the greedy continuation of its prompt states the answer.

    Examples:
        >>> from causal_unlearn import load_model, make_bios_world
        >>> lm = load_model("olmo-tiny-bios")
        >>> probe_recall(lm, make_bios_world().probes("general_knowledge")[:2], progress=False)
        [True, True]
    """
    generations = greedy_generate(
        model, [p.prompt for p in probes], max_new_tokens=max_new_tokens, batch_size=batch_size,
        progress=progress,
    )
    return [probe.recalled_in(generation) for probe, generation in zip(probes, generations)]


def knowledge_report(
    model: LoadedModel,
    world: BiosWorld,
    *,
    max_new_tokens: int = 96,
    probes: bool = True,
    progress: bool = True,
) -> dict[str, float]:
    """Mean QA exact match and SC ROUGE-L recall per split, general-knowledge accuracy and, with
    `probes`, the share of held-out probes answered per split (`forget_probe_recall`, ...).

    Examples:
        >>> from causal_unlearn import load_model, make_bios_world
        >>> lm = load_model("olmo-tiny-bios")
        >>> report = knowledge_report(lm, make_bios_world(), max_new_tokens=32, probes=False,
        ...                           progress=False)
        >>> report["forget_qa_exact_match"], report["holdout_qa_exact_match"]
        (1.0, 0.0)
    """
    groups: dict[str, list[Row]] = {}
    for split in SPLITS:
        for kind, metric in (("qa", "exact_match"), ("sc", "rouge_l_recall")):
            groups[f"{split}_{kind}_{metric}"] = select(world.rows(split), kind=kind)
    groups["general_knowledge_accuracy"] = world.general_knowledge
    groups = {name: rows for name, rows in groups.items() if rows}
    # one generation pass over every row, so one progress bar
    scores = iter(score_rows(model, [r for rows in groups.values() for r in rows],
                             max_new_tokens=max_new_tokens, progress=progress))
    report = {name: round(fmean(next(scores) for _ in rows), 4) for name, rows in groups.items()}
    if probes:
        every_probe = world.probes()
        by_split: dict[str, list[bool]] = {}
        for probe, recalled in zip(every_probe, probe_recall(model, every_probe, progress=progress)):
            by_split.setdefault(probe.split, []).append(recalled)
        report.update({f"{split}_probe_recall": round(fmean(hits), 4) for split, hits in by_split.items()})
    return report
