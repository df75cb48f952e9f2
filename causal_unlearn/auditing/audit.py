"""`audit`: did the model really forget, and what else did it lose?

Each check asks about the task's subjects in a way the unlearning never saw, for the original and
the edited model, per split (forget, retain, holdout) and attribute:

    probes      greedy recall on held-out phrasings                  (generation_recall)
    choice      rank of the true answer among candidates             (choice_ranks)
    relearning  fine-tune briefly on half the forget rows, or on retain rows, then recall (relearned)
    precision   int8 dynamic quantization, bf16 round trip, 4-bit NF4 weights, then recall
                                                                     (int8_dynamic, round_trip, nf4_weights)
    decoding    linear read-out of categorical attributes at the subject's last token (subject_states)
    retrace     the forget facts traced again                        (compare_traces)
    head_projection    the answer among the logit lens' top B at some layer (lens_ranks; Patil et al. 2024)
    probability_delta  the answer among the top B risers between consecutive layers' lens (lens_ranks)
    bio_openings       greedy recall after the bios' own text, cut right before each answer (bio_openings)
    membership  the six membership-inference attacks' AUC, members against non-members (membership_inference)

Holdout subjects are people the model never knew: their numbers are what "forgotten" looks like.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

from causal_unlearn.auditing.decoding import decoding_accuracy, subject_states
from causal_unlearn.auditing.precision import int8_dynamic, nf4_missing, nf4_weights, round_trip
from causal_unlearn.auditing.probing import answer_pool, choice_ranks, generation_recall
from causal_unlearn.auditing.relearning import RelearnBudget, relearned, rows_about
from causal_unlearn.auditing.result import AuditResult, mean_records
from causal_unlearn.auditing.whitebox import LensRanks, lens_ranks
from causal_unlearn.data.bios import UnlearningTask
from causal_unlearn.data.facts import TraceFact
from causal_unlearn.data.probes import Probe
from causal_unlearn.evaluation.mia import MIAConfig, membership_inference
from causal_unlearn.localization.verify import compare_traces
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.tokens import MultiTokenAnswerWarning
from causal_unlearn.tracing.trace import trace_facts

CHECKS = ("probes", "choice", "relearning", "precision", "decoding", "retrace", "head_projection", "probability_delta",
          "bio_openings", "membership")
LENS_CHECKS = ("head_projection", "probability_delta")
# the lower-precision copies of the edited model the precision check asks, by variant name
PRECISIONS = {"edited, int8": int8_dynamic, "edited, bf16": round_trip, "edited, nf4": nf4_weights}
SPLITS = ("forget", "retain", "holdout")


class AuditSkipWarning(UserWarning):
    """The audit skips a check the task cannot support (it says what the task lacks)."""


@dataclass(frozen=True)
class AuditConfig:
    """The audit's settings. `checks=None` runs every check the task supports and skips the rest
    with a note (`AuditResult.skipped`); checks named here must be possible, or `audit` says why
    before it starts. `decode_attributes=None` reads out every labelled attribute with at least
    two values among the retain subjects. `probes_per_form` keeps at most that many probes per
    (subject, attribute, form) for a quicker audit (None: every probe); multiple choice always
    asks the first of each, since every choice costs a forward pass. `lens_top` is the B of the
    whitebox attacks (the answer's first token among the top B tokens at some layer counts as
    extracted); `opening_tokens` is how many tokens the model may generate after a bio opening,
    whose answer comes next (an address is 16 tokens on the built-in tokenizer). `membership`
    sets the membership-inference attacks (which, Min-K's k, batch size, a retain model's AUC for
    privleak) run on the task's members (its forget rows) and non-members (never-seen rows)."""

    checks: tuple[str, ...] | None = None
    probes_per_form: int | None = None
    max_new_tokens: int = 40
    n_choices: int = 10
    relearn: RelearnBudget = field(default_factory=RelearnBudget)
    decode_attributes: tuple[str, ...] | None = None
    trace_samples: int = 2
    seed: int = 0
    lens_top: int = 1
    opening_tokens: int = 24
    membership: MIAConfig = field(default_factory=MIAConfig)

    def __post_init__(self) -> None:
        if self.checks is not None:
            unknown = [c for c in self.checks if c not in CHECKS]
            if unknown or not self.checks:
                raise ValueError(f"unknown audit check(s) {unknown or self.checks!r}; choose from {CHECKS} "
                                 "(or checks=None: every check the task supports)")
        if self.probes_per_form is not None and (not isinstance(self.probes_per_form, int) or self.probes_per_form < 1):
            raise ValueError(f"probes_per_form must be a positive integer or None, got {self.probes_per_form!r}")
        for name in ("lens_top", "opening_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.decode_attributes is not None and isinstance(self.decode_attributes, str):
            raise TypeError(f"decode_attributes is a tuple of attribute names, e.g. ({self.decode_attributes!r},)")
        if not isinstance(self.membership, MIAConfig):
            raise TypeError(f"membership is a causal_unlearn.MIAConfig, got a {type(self.membership).__name__}")


@dataclass(frozen=True)
class AuditPlan:
    """What an audit of this task runs: its checks, the attributes it decodes, and why it skips
    the others (check -> reason; "precision: nf4" where bitsandbytes is missing: the precision
    check then asks the int8 and bf16 copies only)."""

    checks: tuple[str, ...]
    decode_attributes: tuple[str, ...]
    skipped: dict[str, str]


def plan_audit(task: UnlearningTask, config: AuditConfig = AuditConfig()) -> AuditPlan:
    """Which checks `audit` can run on `task`, decided before any work: an explicitly requested
    check the task cannot support is an error that says what the task lacks; with `checks=None`
    it is skipped with that reason.

    Examples:
        >>> import dataclasses, causal_unlearn as cu
        >>> task = dataclasses.replace(cu.make_bios_world().unlearning_task(), facts=[])
        >>> cu.plan_audit(task).skipped["retrace"]
        'the task has no trace facts (UnlearningTask(facts=[TraceFact(...)]))'
    """
    probes = _task_probes(task, config.probes_per_form)
    wanted = CHECKS if config.checks is None else config.checks
    attributes = _decodable(task, probes, config.decode_attributes) if "decoding" in wanted else ()
    reasons: dict[str, str] = {}
    for check in wanted:
        reason = _unsupported(check, task, probes, attributes)
        if reason and config.checks is not None:
            raise ValueError(f"the audit cannot run its {check!r} check: {reason}; drop it from AuditConfig(checks=...) "
                             "or leave checks=None to run what the task supports")
        if reason:
            reasons[check] = reason
    checks = tuple(c for c in wanted if c not in reasons)
    if "precision" in checks and nf4_missing():  # int8 and bf16 still run
        reasons["precision: nf4"] = nf4_missing()
    return AuditPlan(checks, attributes if "decoding" in checks else (), reasons)


def _unsupported(check: str, task: UnlearningTask, probes: list[Probe], attributes) -> str | None:
    """Why the task cannot support `check`, or None."""
    if check == "choice" and not _choice_probes(probes):
        return "no attribute's probes have two different answers (multiple choice draws its distractors from them)"
    if check == "relearning":
        subjects = _forget_subjects(probes)
        if len(subjects) < 2:
            return "the probes ask about fewer than two forget subjects (it relearns one half and asks about the other)"
        if not _relearning_rows(task, subjects):
            return "no forget row names a forget probe's subject (it fine-tunes on the rows about half the subjects)"
        if not task.retain:
            return "the task has no retain rows (the benign attack fine-tunes on them)"
    if check == "decoding" and not attributes:
        return ("no labelled attribute has two values among the retain subjects' probes "
                "(UnlearningTask(labels={subject: {attribute: value}}); the read-out trains on retain subjects)")
    if check == "retrace" and not task.facts:
        return "the task has no trace facts (UnlearningTask(facts=[TraceFact(...)]))"
    if check in LENS_CHECKS and not _lens_facts(task):
        return ("the task has no facts for the logit lens (UnlearningTask(lens_facts=[TraceFact(...)]): prompts that "
                "end right before the answer; its trace facts serve where it has none)")
    if check == "bio_openings" and not _task_openings(task, None):
        return ("the task has no bio openings (Probe(..., form='opening'): a training text cut right before the "
                "answer; world.unlearning_task() carries them)")
    if check == "membership" and not (task.members and task.nonmembers):
        missing = "non-member" if task.members else "member"
        return (f"the task has no {missing} rows (UnlearningTask(members=[...], nonmembers=[...]): the forget rows "
                "and rows the model never saw, which the attacks tell apart)")
    return None


def _decodable(task: UnlearningTask, probes: list[Probe], wanted: tuple[str, ...] | None) -> tuple[str, ...]:
    """The attributes the read-out can learn: at least two labels among the retain subjects with
    probes and at least one labelled forget or holdout subject. Named ones must qualify."""
    subjects = {split: {p.subject for p in probes if p.split == split and p.subject in task.labels}
                for split in SPLITS}
    known = list(dict.fromkeys(a for labels in task.labels.values() for a in labels))
    fine = []
    for attribute in known if wanted is None else wanted:
        values = {task.labels[s][attribute] for s in subjects["retain"] if attribute in task.labels[s]}
        tested = any(attribute in task.labels[s] for s in subjects["forget"] | subjects["holdout"])
        if len(values) >= 2 and tested:
            fine.append(attribute)
        elif wanted is not None:
            raise ValueError(f"decode_attributes names {attribute!r}, but the task labels it with {len(values)} "
                             f"value(s) among the retain subjects' probes{'' if tested else ' and no forget or holdout subject'};"
                             f" the read-out needs two values to train on and a subject to test (labelled: {known})")
    return tuple(fine)


def audit(
    original: LoadedModel,
    edited: LoadedModel,
    task: UnlearningTask,
    *,
    config: AuditConfig = AuditConfig(),
    layers: Sequence[int] = (),
    baseline: AuditResult | None = None,
    reference_model: LoadedModel | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> AuditResult:
    """Run the audit's checks on `original` and `edited` (two models, e.g. `result.edited_model()`
    beside the original) with the task's probes, labels and facts. Neither model is changed.
    `layers` marks the edited layers in the re-trace. `baseline`, an earlier audit of the same
    original with the same task and settings, supplies the original's numbers (auditing many
    edits of one model measures it once). `reference_model` is the membership check's reference
    attack's (without it that attack is skipped, with the reason in `AuditResult.skipped`).

    Examples:
        >>> import dataclasses, causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> task = world.unlearning_task()
        >>> two_people = dataclasses.replace(task, probes=task.probes[:72])  # a quick look
        >>> result = cu.audit(lm, lm.copy(), two_people, config=cu.AuditConfig(checks=("probes",)), progress=False)
        >>> result.value("probes", "recall", "forget", "edited") == result.value("probes", "recall", "forget", "original")
        True
    """
    _check_pair(original, edited)
    plan = plan_audit(task, config)
    config = replace(config, checks=plan.checks, decode_attributes=plan.decode_attributes)
    for check, reason in plan.skipped.items():
        log(f"audit: skipping {check}: {reason}")
        warnings.warn(AuditSkipWarning(f"the audit skips its {check!r} check: {reason}"), stacklevel=2)
    probes = _task_probes(task, config.probes_per_form)
    settings = {**asdict(config), "relearn": config.relearn.describe(), "n_probes": len(probes),
                "n_openings": len(_task_openings(task, config.probes_per_form)), "n_lens_facts": len(_lens_facts(task)),
                "n_members": len(task.members), "n_nonmembers": len(task.nonmembers),
                "reference_model": None if reference_model is None else reference_model.name}
    if baseline is not None:
        _check_baseline(baseline, settings, original)
    records: list[dict] = [r for r in baseline.records if r["variant"].startswith("original")] if baseline else []
    seconds: dict[str, float] = {}
    skipped = dict(plan.skipped)
    comparison, ranks = None, None
    models = {"edited": edited} if baseline else {"original": original, "edited": edited}
    for check in config.checks:
        log(f"audit: {check}")
        started = time.perf_counter()
        if check == "retrace":
            before = baseline.comparison.traces_before if baseline else None
            comparison = _retrace(models, task, config, layers, progress, before)
        elif check in LENS_CHECKS:  # both attacks read the same lens: one pass per model
            ranks = ranks or {variant: lens_ranks(model, _lens_facts(task), progress=progress)
                              for variant, model in models.items()}
            records += _lens_records(check, ranks, _lens_facts(task), config.lens_top)
        elif check == "membership":
            results = {variant: membership_inference(model, task.members, task.nonmembers, config=config.membership,
                                                     reference_model=reference_model, progress=progress)
                       for variant, model in models.items()}
            records += _membership_records(results, len(task.members) + len(task.nonmembers),
                                           config.membership.privleak_attack)
            for attack, reason in next(iter(results.values())).skipped.items():
                log(f"audit: membership: skipping the {attack} attack: {reason}")
                skipped[f"membership: {attack}"] = reason
        else:
            records += CHECK_FUNCTIONS[check](models, task, probes, config, progress)
        seconds[check] = time.perf_counter() - started
    settings.update(layers=list(layers), original=original.name, edited=edited.name)
    return AuditResult(records, settings, comparison, seconds, skipped=skipped)


def _check_baseline(baseline: AuditResult, settings: dict, original: LoadedModel) -> None:
    differing = [k for k, v in settings.items() if baseline.settings.get(k) != v]
    if differing or baseline.settings.get("original") != original.name:
        raise ValueError(f"the baseline audit was made with other settings ({differing or ['original model']}); "
                         "a baseline must audit the same original with the same task and AuditConfig")
    if "retrace" in settings["checks"] and baseline.comparison is None:
        raise ValueError("the baseline audit has no re-trace; run it with 'retrace' among its checks")


def _probe_check(models, task, probes, config, progress) -> list[dict]:
    records = []
    for variant, model in models.items():
        hits = generation_recall(model, probes, max_new_tokens=config.max_new_tokens, progress=progress)
        records += mean_records("probes", "recall", variant, probes, hits)
    return records


def _choice_check(models, task, probes, config, progress) -> list[dict]:
    asked = per_form(_choice_probes(probes), 1)
    pool = answer_pool(probes)
    records = []
    for variant, model in models.items():
        ranks = choice_ranks(model, asked, pool=pool, n_choices=config.n_choices, seed=config.seed, progress=progress)
        records += mean_records("choice", "top-1", variant, asked, [rank == 0 for rank, _ in ranks])
        records += mean_records("choice", "chance", variant, asked, [1 / n for _, n in ranks])
    return records


def _relearning_check(models, task, probes, config, progress) -> list[dict]:
    """(a) Fine-tune on the forget rows of half the forget subjects, recall the other half's
    probes; (b) fine-tune on retain rows only, recall every forget probe."""
    forget_probes = [p for p in probes if p.split == "forget"]
    subjects = _forget_subjects(probes)
    rows, held_out = _relearning_rows(task, subjects), set(subjects[1::2])
    asked = [p for p in forget_probes if p.subject in held_out]
    renamed = [_in_split(p, "forget, held-out half") for p in asked]
    records = []
    for variant, model in models.items():
        records += mean_records("relearning", "recall", variant, renamed,
                                generation_recall(model, asked, max_new_tokens=config.max_new_tokens, progress=progress))
        # the same attacks on the original say what they do to a model that never forgot
        with relearned(model, rows, config.relearn, progress=progress) as tuned:
            records += mean_records("relearning", "recall", f"{variant}, relearned", renamed,
                                    generation_recall(tuned, asked, max_new_tokens=config.max_new_tokens,
                                                      progress=progress))
        with relearned(model, task.retain, config.relearn, progress=progress) as tuned:
            records += mean_records("relearning", "recall", f"{variant}, relearned on retain", forget_probes,
                                    generation_recall(tuned, forget_probes, max_new_tokens=config.max_new_tokens,
                                                      progress=progress))
    return records


def _precision_check(models, task, probes, config, progress) -> list[dict]:
    asked = [p for p in probes if p.split in ("forget", "retain")]
    records = []
    for variant, make in PRECISIONS.items():
        if make is nf4_weights and nf4_missing():  # the plan noted it
            continue
        copy = make(models["edited"])
        records += mean_records("precision", "recall", variant, asked,
                                generation_recall(copy, asked, max_new_tokens=config.max_new_tokens, progress=progress))
        del copy
    return records


def _decoding_check(models, task, probes, config, progress) -> list[dict]:
    """A read-out fitted on retain subjects' states, scored on forget and holdout subjects'."""
    by_split = {split: [p for p in probes if p.split == split and p.subject in task.labels] for split in SPLITS}
    records = []
    for variant, model in models.items():
        states = {split: subject_states(model, asked, progress=progress) for split, asked in by_split.items() if asked}
        for attribute in config.decode_attributes:
            train = _labelled_states(states["retain"], by_split["retain"], task.labels, attribute)
            for split in ("forget", "holdout"):
                if split not in states:
                    continue
                test = _labelled_states(states[split], by_split[split], task.labels, attribute)
                if not test[1]:
                    continue
                accuracy, chance = decoding_accuracy(*train, *test)
                common = dict(check="decoding", split=split, attribute=attribute, variant=variant, n=len(test[1]))
                records += [dict(common, measure="accuracy", layer=layer, value=value) for layer, value in enumerate(accuracy)]
                records.append(dict(common, measure="chance", layer=None, value=chance))
    return records


def _openings_check(models, task, probes, config, progress) -> list[dict]:
    """Greedy recall after the bios' own openings, a few tokens long (the answer comes next)."""
    asked = _task_openings(task, config.probes_per_form)
    return [record for variant, model in models.items()
            for record in mean_records("bio_openings", "recall", variant, asked,
                                       generation_recall(model, asked, max_new_tokens=config.opening_tokens,
                                                         progress=progress))]


def _lens_records(check: str, ranks: dict[str, LensRanks], facts: list[TraceFact], top: int) -> list[dict]:
    """Head projection: the share of facts whose answer is in the lens' top `top` at some layer,
    and at each layer; probability delta: among the top risers somewhere, and the top risers or
    fallers (Patil et al. count both)."""
    groups = [replace(f, split=f.split or "forget") for f in facts]  # trace facts are about forget subjects
    records = []
    for variant, ranked in ranks.items():
        if check == "head_projection":
            records += mean_records(check, f"top-{top}", variant, groups, ranked.head_projection(top))
            for layer in range(ranked.lens.shape[1]):
                records += mean_records(check, f"top-{top}, per layer", variant, groups,
                                        (ranked.lens[:, layer] < top).tolist(), layer=layer)
        else:
            records += mean_records(check, f"top-{top} rise", variant, groups, ranked.probability_delta(top))
            records += mean_records(check, f"top-{top} rise or fall", variant, groups,
                                    ranked.probability_delta(top, falls=True))
    return records


def _membership_records(results: dict, n: int, privleak_attack: str) -> list[dict]:
    """Each attack's AUC (members: the forget rows, against the never-seen non-members) and privleak."""
    records = []
    for variant, result in results.items():
        common = dict(check="membership", split="forget", attribute="all", variant=variant, layer=None, n=n)
        records += [dict(common, measure=f"{attack} AUC", value=value) for attack, value in result.aucs.items()]
        if result.privleak is not None:
            records.append(dict(common, measure=f"privleak ({privleak_attack}), %", value=result.privleak))
    return records


def _lens_facts(task: UnlearningTask) -> list[TraceFact]:
    """The facts the logit-lens attacks read: the task's lens facts, else its trace facts."""
    return list(task.lens_facts or task.facts)


def _labelled_states(states, probes, labels, attribute):
    keep = [i for i, p in enumerate(probes) if attribute in labels[p.subject]]
    return states[keep], [labels[probes[i].subject][attribute] for i in keep]


def _retrace(models, task, config, layers, progress, before=None):
    with warnings.catch_warnings():  # multi-token answers are traced on their first token, as documented
        warnings.simplefilter("ignore", MultiTokenAnswerWarning)
        traces = {variant: trace_facts(model, task.facts, kinds=("mlp",), window=1, samples=config.trace_samples,
                                       progress=progress)
                  for variant, model in models.items()}
    return compare_traces(traces["original"] if before is None else before, traces["edited"], layers=layers)


def _choice_probes(probes: Sequence[Probe]) -> list[Probe]:
    """The probes whose attribute has another answer to offer as a distractor."""
    pool = answer_pool(probes)
    return [p for p in probes if len(pool[p.attribute]) > 1]


def _forget_subjects(probes: Sequence[Probe]) -> list[str]:
    return list(dict.fromkeys(p.subject for p in probes if p.split == "forget" and p.subject))


def _relearning_rows(task: UnlearningTask, subjects: list[str]) -> list:
    """The forget rows about every other forget subject (the taught half) that name none of the
    others (the half asked about)."""
    taught, held_out = subjects[::2], subjects[1::2]
    return [r for r in rows_about(task.forget, taught) if not any(s in r.text for s in held_out)]


CHECK_FUNCTIONS = dict(probes=_probe_check, choice=_choice_check, relearning=_relearning_check,
                       precision=_precision_check, decoding=_decoding_check, bio_openings=_openings_check)


def _in_split(probe: Probe, split: str) -> Probe:
    return replace(probe, split=split)


def per_form(probes: Sequence[Probe], n: int | None) -> list[Probe]:
    """The first `n` probes of each (subject, attribute, form), in order (all when `n` is None)."""
    if n is None:
        return list(probes)
    seen: dict[tuple[str, str, str], int] = {}
    kept = []
    for probe in probes:
        key = (probe.subject, probe.attribute, probe.form)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= n:
            kept.append(probe)
    return kept


def _task_openings(task: UnlearningTask, per_form_limit: int | None) -> list[Probe]:
    """The task's bio openings (probes of form "opening") about forget, retain and holdout subjects."""
    return per_form([p for p in task.probes if p.split in SPLITS and p.form == "opening"], per_form_limit)


def _task_probes(task: UnlearningTask, per_form_limit: int | None) -> list[Probe]:
    """The held-out probes every other check asks (bio openings have their own check)."""
    probes = per_form([p for p in task.probes if p.split in SPLITS and p.form != "opening"], per_form_limit)
    if not probes:
        raise ValueError("the task has no probes about forget, retain or holdout subjects; the audit asks held-out "
                         "questions (world.unlearning_task() carries them; for your own task pass "
                         "UnlearningTask(..., probes=[Probe(...), ...]))")
    if not any(p.split == "forget" for p in probes):
        raise ValueError("the task's probes ask about no forget subject (Probe.split == 'forget'); nothing to audit")
    return probes


def _check_pair(original: LoadedModel, edited: LoadedModel) -> None:
    for name, model in (("original", original), ("edited", edited)):
        if not isinstance(model, LoadedModel):
            raise TypeError(f"audit takes two LoadedModels; the {name} model is a {type(model).__name__} "
                            "(load it with cu.load_model; an UnlearnResult gives result.edited_model())")
    if original.model is edited.model:
        raise ValueError("the original and the edited model are the same object; audit a copy "
                         "(result.edited_model() after unlearn, or lm.copy() before it)")
    if type(original.model) is not type(edited.model) or original.n_layers != edited.n_layers \
            or original.d_model != edited.d_model:
        raise ValueError(f"the edited model ({type(edited.model).__name__}, {edited.n_layers} layers, d_model "
                         f"{edited.d_model}) is not the same architecture as the original "
                         f"({type(original.model).__name__}, {original.n_layers} layers, d_model {original.d_model})")
    if original.tokenizer.get_vocab() != edited.tokenizer.get_vocab():
        raise ValueError("the edited model's tokenizer has another vocabulary than the original's; an audit "
                         "compares answers token for token, so both must share one tokenizer")
