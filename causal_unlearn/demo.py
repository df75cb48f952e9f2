"""The whole pipeline on the built-in model, written up as a report folder.

    trace the forget facts -> localize -> unlearn those layers -> score -> audit (re-trace too) -> report

`causal-unlearn demo` runs it; `run_demo` is the same from Python.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import plotly.graph_objects as go

from causal_unlearn.auditing import CHECKS, AuditConfig, AuditResult, audit
from causal_unlearn.data.bios import make_bios_world
from causal_unlearn.evaluation.semeval import evaluate
from causal_unlearn.localization.layers import Localization, localize
from causal_unlearn.localization.verify import TraceComparison
from causal_unlearn.models.loader import load_model
from causal_unlearn.tracing.average import average_effects
from causal_unlearn.tracing.trace import trace, trace_facts
from causal_unlearn.unlearning.loop import unlearn
from causal_unlearn.unlearning.objectives import StandIn
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE
from causal_unlearn.unlearning.result import UnlearnResult
from causal_unlearn.viz.comparison import SCORE_LABELS, plot_trace_comparison
from causal_unlearn.viz.effects import plot_average_effects
from causal_unlearn.viz.static_export import BrowserNotFoundError, export
from causal_unlearn.viz.report import Section, write_report
from causal_unlearn.viz.trace import plot_trace
from causal_unlearn.viz.unlearning import plot_unlearning


@dataclass
class DemoResult:
    """What the demo made: the report's paths, the figures, and the objects behind them (the
    unlearning run is reverted; `unlearning.apply()` puts the edit back)."""

    folder: Path
    report: Path
    localization: Localization
    unlearning: UnlearnResult
    comparison: TraceComparison
    audit: AuditResult
    scores_before: dict[str, float | None]
    scores_after: dict[str, float | None]
    figures: dict[str, go.Figure]
    exported: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    out: str | Path = "causal_unlearn_report",
    *,
    model: str = "olmo-tiny-bios",
    device: str | None = None,
    max_facts: int | None = None,
    samples: int = 2,
    epochs: int | None = None,
    max_new_tokens: int = 64,
    export_figures: bool = True,
    audit_config: AuditConfig = AuditConfig(probes_per_form=1),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Trace the built-in world's forget facts, localize the MLP layers that carry them, unlearn
    the forget set there with the `stand_in` objective (the built-in recipe), score before and after the official
    way, audit the edit (`cu.audit`: held-out probes, multiple choice, relearning, int8, bf16 and 4-bit,
    a linear read-out, and the forgotten city facts re-traced), and write `out/` with
    `report.html`, `scores.json`, `audit.csv` and the figures as PDF. The audit asks one
    question and one cloze prompt per person and attribute (`audit_config` to change it). The model is restored at the end (its edited copy is in `out/model`).
    `max_facts` and `epochs` shrink the run (for a quick look; the defaults are the real run).

    Examples:
        >>> from causal_unlearn.demo import run_demo
        >>> demo = run_demo("report", max_facts=30, epochs=1, export_figures=False, progress=False,
        ...                 log=lambda line: None)  # doctest: +SKIP
        >>> demo.localization.layers, demo.report  # doctest: +SKIP
        ([0, 7], PosixPath('report/report.html'))
    """
    folder = Path(out)
    clock: dict[str, float] = {}
    started = time.perf_counter()
    lm = load_model(model, device=device)
    world = make_bios_world()
    task = world.unlearning_task()
    forget_facts = world.facts_to_trace("forget")[:max_facts]
    city_facts = [f for f in forget_facts if f.attribute == "city"]

    log(f"[1/7] tracing one fact, then {len(forget_facts)} forget facts (MLP, window 1, {samples} noise samples)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multi-token answers: traced on their first token, as documented
        traces = trace_facts(lm, forget_facts, kinds=("mlp",), window=1, samples=samples, progress=progress)
        city_before = trace_facts(lm, city_facts, window=1, samples=samples, progress=False)
    # the example: among the first ten city facts, the one the corruption hides best (a city the
    # model also guesses for an unreadable name would leave little to restore)
    low = {fact.prompt: result.low for fact, result in zip(city_facts, city_before)}
    example = min(city_facts[:10], key=lambda fact: low[fact.prompt])
    example_trace = trace(lm, example.prompt, example.subject, answer=example.answer, samples=10, window=3, progress=False)
    clock["trace"] = time.perf_counter() - started

    log("[2/7] localizing")
    layers = localize(traces, kind="mlp")
    log(f"      MLP layers {layers.layers} ({layers.rule})")

    log("[3/7] scoring the original model")
    scores_before = evaluate(lm, **task.scoring(), max_new_tokens=max_new_tokens, progress=False).to_dict()

    log(f"[4/7] unlearning {len(task.forget)} forget rows on MLP layers {layers.layers}")
    recipe = {**BUILTIN_RECIPE, **({"epochs": epochs} if epochs else {})}
    result = unlearn(lm, task.forget, task.retain, layers=layers, objective=StandIn(world.stand_ins()),
                     progress=progress, **recipe)
    clock["unlearn"] = result.seconds

    log("[5/7] scoring the edited model")
    edited = result.edited_model()
    result.save_pretrained(folder / "model")
    result.revert()
    scores_after = evaluate(edited, **task.scoring(), max_new_tokens=max_new_tokens, progress=False).to_dict()

    log(f"[6/7] auditing the edit ({', '.join(audit_config.checks or CHECKS)}; the city facts re-traced)")
    audited = audit(lm, edited, dataclasses.replace(task, facts=city_facts), config=audit_config, layers=layers.layers,
                    progress=progress)
    comparison = audited.comparison
    del edited

    log(f"[7/7] writing {folder}/")
    scores = pd.DataFrame([{"model": "before", **scores_before}, {"model": "after", **scores_after}])
    scores = scores.rename(columns=SCORE_LABELS)[["model", *SCORE_LABELS.values(), "mia_auc"]]
    figures = {
        "trace": plot_trace(example_trace),
        "average_effects": plot_average_effects(average_effects(city_before)),
        "unlearning": plot_unlearning(result),
        "before_after": plot_trace_comparison(comparison),
        "audit": audited.plot(),
    }
    summary = comparison.summary()
    audit_table = audited.table().reset_index()
    sections = [
        Section("One fact's causal trace", f"{example.prompt!r} → {example.answer!r}: p(answer) with each state "
                "restored after corrupting the subject (ROME's recipe; window 3 for MLP and attention).",
                figures["trace"]),
        Section("Averaged effects", f"The forget set's {len(city_facts)} city facts, by token group and layer "
                "(indirect effect, window 1, 95 % interval).", figures["average_effects"]),
        Section("Localization", f"Mean MLP effect per layer over {len(traces)} forget facts; rule: {layers.rule}. "
                f"Chosen layers: {layers.layers}.", table=layers.to_dataframe()),
        Section("Unlearning", f"stand_in (each forget person answered about as a never-seen stand-in) on the MLPs "
                f"of layers {layers.layers}: {result.selection.count:,} parameters ({result.selection.share:.1%}), "
                f"{len(result.history)} steps in {result.seconds:.0f} s.", figures["unlearning"]),
        Section("Official SemEval-2025 Task 4 scores", "Regurgitation (ROUGE-L recall) and knowledge (exact match) "
                "per split, the harmonic-mean task aggregate, MIA score, utility (held-out general knowledge).",
                table=scores),
        Section("Before and after", f"The same city facts re-traced: effect at the localized layers "
                f"{summary['effect_before']:.3f} → {summary['effect_after']:.3f}; p(answer) "
                f"{summary['p_answer_before']:.3f} → {summary['p_answer_after']:.3f}.", figures["before_after"]),
        Section("Audit: asked in ways unlearning never saw", _audit_caption(audited), figures["audit"],
                table=audit_table),
    ]
    report = write_report(folder, f"causal_unlearn demo: {lm.name}", sections,
                          scores=dict(layers=layers.layers, before=scores_before, after=scores_after,
                                      trace_comparison=summary, audit=audited.summary(), unlearn_seconds=result.seconds))
    audited.to_dataframe().to_csv(folder / "audit.csv", index=False)
    exported = _export_all(figures, folder / "figures", log) if export_figures else []
    clock["total"] = time.perf_counter() - started
    (folder / "timings.json").write_text(json.dumps(clock, indent=1))
    log(f"done in {clock['total']:.0f} s: forget QA {scores_before['Task2/forget_knowledge']:.3f} → "
        f"{scores_after['Task2/forget_knowledge']:.3f}, retain QA {scores_after['Task2/retain_knowledge']:.3f}, "
        f"final {scores_before['final']:.3f} → {scores_after['final']:.3f}\nopen {report}")
    return DemoResult(folder, report, layers, result, comparison, audited, scores_before, scores_after, figures,
                      exported, clock)


def _audit_caption(audited: AuditResult) -> str:
    s = audited.summary()
    parts = [f"{audited.settings['n_probes']:,} held-out probes (questions and cloze prompts in wordings never "
             "trained) about forget, retain and holdout people (holdout: never known, what forgotten looks like)"]
    if "probe_recall_forget" in s:
        value = audited.value
        parts.append(f"greedy recall of forget people {value('probes', 'recall', 'forget', 'original'):.3f} → "
                     f"{s['probe_recall_forget']:.3f}, of retain people {value('probes', 'recall', 'retain', 'original'):.3f}"
                     f" → {s['probe_recall_retain']:.3f}")
    if "relearn_forget_half" in s:
        parts.append(f"after {audited.settings['relearn']} on half the forget people's rows, the other half's "
                     f"recall is {s['relearn_forget_half']:.3f}")
    if "int8_recall_forget" in s:
        nf4 = f", 4-bit NF4: {s['nf4_recall_forget']:.3f}" if "nf4_recall_forget" in s else ""
        parts.append(f"int8: {s['int8_recall_forget']:.3f}, bf16: {s['bf16_recall_forget']:.3f}{nf4}")
    for key, check, what in (("head_projection_forget", "head_projection", "the logit lens finds"),
                             ("bio_openings_forget", "bio_openings", "the bios' own openings bring back")):
        if key in s:
            measure = audited.first_measure(check)
            parts.append(f"{what} {audited.value(check, measure, 'forget', 'original'):.3f} → {s[key]:.3f} of forget "
                         f"answers ({measure}; holdout, chance: {audited.value(check, measure, 'holdout', 'edited'):.3f})")
    return "; ".join(parts) + ". The table has every check per split (decoding: best layer)."


def _export_all(figures: dict, folder: Path, log: Callable[[str], None]) -> list[Path]:
    try:
        return [path for name, fig in figures.items() for path in export(fig, folder / f"{name}.pdf")]
    except BrowserNotFoundError as error:  # the HTML report is still complete; say why the PDFs are missing
        log(f"no PDFs: {error}")
        return []
