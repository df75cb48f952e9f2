"""The `causal-unlearn` command line: `demo`, `trace`, `unlearn`, `evaluate`, `audit`, `knowledge`."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import textwrap
import warnings
from pathlib import Path

BUILTIN = "olmo-tiny-bios"


def demo(args: argparse.Namespace) -> int:
    from causal_unlearn.demo import run_demo

    run_demo(args.out, model=args.model, device=args.device, max_facts=args.max_facts, samples=args.samples,
             epochs=args.epochs, max_new_tokens=args.max_new_tokens, export_figures=not args.no_export)
    return 0


def trace_command(args: argparse.Namespace) -> int:
    import torch

    from causal_unlearn.tracing.trace import trace

    lm = _load(args)
    noise = _number_or_text(args.noise)
    if args.replacement is not None:
        from causal_unlearn.tracing import TokenReplacement

        if args.noise != "s3":
            raise ValueError("--replacement corrupts by reading another prompt; leave out --noise with it")
        noise = TokenReplacement(args.replacement)
    result = trace(lm, args.prompt, args.subject, answer=args.answer, kinds=args.kinds.split(","), samples=args.samples,
                   noise=noise, window=args.window, metric=args.metric, foil=args.foil, seed=args.seed,
                   method=args.method)
    print(f"{result.prompt!r} -> {result.answer!r}: clean {result.high:.4f}, corrupted {result.low:.4f}"
          f"{'' if result.known else f' (not known: the model predicts {result.clean_prediction!r})'}")
    for kind in result.kinds:
        effects = result.indirect_effects(kind)
        cell = tuple(int(i) for i in torch.unravel_index(effects.argmax(), effects.shape))
        head = f", head {cell[2]}" if len(cell) > 2 else ""
        print(f"  {kind:>6}: strongest at token {cell[0]} {result.tokens[cell[0]]!r}, layer {cell[1]}{head}: "
              f"{float(result.scores[kind][cell]):.4f}")
    if args.out:
        print(f"saved {result.save(args.out)}")
    if args.figure:
        _write_figure(result.plot(), args.figure)
    return 0


def unlearn_command(args: argparse.Namespace) -> int:
    from causal_unlearn.unlearning.loop import unlearn
    from causal_unlearn.unlearning.processes import Processes
    from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE, PAPER_RECIPE

    lm = _load(args)
    forget, retain = _rows(args, "forget"), _rows(args, "retain")
    layers = [int(layer) for layer in args.layers.split(",")] if args.layers else _localized_layers(lm, args)
    recipe = dict(BUILTIN_RECIPE if _recipe(args) == "builtin" else PAPER_RECIPE)
    recipe.update({k: v for k, v in dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                         grad_accum=args.grad_accum, max_grad_norm=args.max_grad_norm,
                                         mixed_precision=args.mixed_precision,
                                         gradient_checkpointing=args.gradient_checkpointing or None).items()
                   if v is not None})
    objective = _objective(args)
    if args.shard:  # after localizing: tracing needs the whole model
        from causal_unlearn.unlearning.sharding import shard_model

        shard_model(lm)
    if Processes.current().is_main:
        print(f"unlearning {len(forget)} forget rows ({len(retain)} retain) on the {args.modules} of layers {layers}: "
              f"{recipe}")
    result = unlearn(lm, forget, retain, layers=layers, modules=args.modules, objective=objective, seed=args.seed, **recipe)
    processes = Processes.current()
    if args.shard or processes.is_main:  # sharded, every process gathers its shards; rank 0 writes
        folder = result.save_pretrained(args.out)
    if processes.is_main:
        from causal_unlearn.viz.unlearning import plot_unlearning

        plot_unlearning(result).write_html(folder / "unlearning.html", include_plotlyjs=True)
        print(f"{result!r}\nsaved the edited model to {folder} (load it with load_model({str(folder)!r}); "
              f"curves in {folder / 'unlearning.html'})")
    processes.close()
    return 0


def _objective(args: argparse.Namespace):
    """The objective by name; SHA256 with the built-in recipe's retain weight on the built-in
    recipe; StandIn with the stand-in prompts of --stand-ins or, for the built-in task, the world's."""
    from causal_unlearn.unlearning.objectives import StandIn
    from causal_unlearn.unlearning.recipes import builtin_sha256

    if args.objective == "sha256" and _recipe(args) == "builtin":
        return builtin_sha256()
    if args.objective != StandIn.name:
        return args.objective
    if args.stand_ins:
        return StandIn(json.loads(Path(args.stand_ins).read_text()))
    if args.forget:
        raise SystemExit("error: --objective stand_in with your own --forget rows needs --stand-ins, a JSON file "
                         "{row id: the prompt with the subject swapped for someone the model never saw}")
    return StandIn(_builtin_world().stand_ins())


def evaluate_command(args: argparse.Namespace) -> int:
    from causal_unlearn.evaluation.semeval import evaluate

    lm = _load(args)
    splits = ("forget", "retain", "members", "nonmembers", "utility")
    if any(getattr(args, split) for split in splits):  # the user's own data: score what they gave
        if not (args.forget and args.retain):
            raise SystemExit("error: with your own rows files, give at least --forget and --retain")
        scoring = {split: _rows(args, split) if getattr(args, split) else None for split in splits}
    else:
        scoring = {split: _rows(args, split) for split in splits}
    if args.membership and not (scoring["members"] and scoring["nonmembers"]):
        raise SystemExit("error: --membership runs the attacks on --members and --nonmembers; give both")
    membership = None
    if args.membership:
        from causal_unlearn.evaluation.mia import MIAConfig

        membership = MIAConfig()
    scores = evaluate(lm, **scoring, membership=membership, max_new_tokens=args.max_new_tokens).to_dict()
    width = max(map(len, scores))
    for name, value in scores.items():
        print(f"  {name:<{width}}  {'n/a' if value is None else f'{value:.4f}'}")
    if args.out:
        Path(args.out).write_text(json.dumps(scores, indent=1))
        print(f"saved {args.out}")
    return 0


def audit_command(args: argparse.Namespace) -> int:
    from causal_unlearn.auditing import AuditConfig, AuditSkipWarning, RelearnBudget, audit
    from causal_unlearn.models.loader import load_model

    task = _audit_task(args)
    original = _load(args)
    edited = load_model(args.edited, device=args.device, dtype=args.dtype)
    config = AuditConfig(checks=tuple(args.checks.split(",")) if args.checks else None,
                         relearn=RelearnBudget(steps=args.relearn_steps, lr=args.relearn_lr),
                         max_new_tokens=args.max_new_tokens, probes_per_form=args.probes_per_form)
    layers = json.loads((Path(args.edited) / "unlearning.json").read_text()).get("layers", []) \
        if (Path(args.edited) / "unlearning.json").is_file() else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AuditSkipWarning)  # the log says what is skipped
        result = audit(original, edited, task, config=config, layers=layers, log=print)
    with _wide_tables():
        print(result.table().round(3).to_string())
    print(json.dumps({k: round(v, 4) for k, v in result.summary().items()}))
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        result.to_dataframe().to_csv(folder / "audit.csv", index=False)
        (folder / "summary.json").write_text(json.dumps(dict(summary=result.summary(), settings=result.settings,
                                                             seconds=result.seconds), indent=1, default=str))
        print(f"saved {folder / 'audit.csv'}, {folder / 'summary.json'}")
    if args.figure:
        _write_figure(result.plot(), args.figure)
    return 0


def _audit_task(args: argparse.Namespace):
    """The user's own task from --probes (and --forget, --retain, --nonmembers, --labels, --facts),
    or the built-in world's."""
    own = {name: getattr(args, name) for name in ("forget", "retain", "nonmembers", "labels", "facts")
           if getattr(args, name)}
    if not args.probes:
        if own:
            raise ValueError(f"--{', --'.join(own)} describe your own task; give its --probes too (a .jsonl of "
                             "probes: prompt, answers, attribute, form, split, subject)")
        print("auditing with the built-in world's probes (give --probes for your own task)")
        return _builtin_world().unlearning_task()
    from causal_unlearn.data.bios import UnlearningTask
    from causal_unlearn.data.facts import TraceFact
    from causal_unlearn.data.files import read_jsonl
    from causal_unlearn.data.probes import read_probes

    if args.nonmembers and not args.forget:
        raise ValueError("--nonmembers are what the membership check tells the forget rows from; give --forget too")
    labels = json.loads(Path(args.labels).read_text()) if args.labels else {}
    if not isinstance(labels, dict) or not all(isinstance(v, dict) for v in labels.values()):
        raise ValueError(f"--labels {args.labels}: expected a JSON object {{subject: {{attribute: value}}}}")
    return UnlearningTask(forget=_rows(args, "forget") if args.forget else [],
                          retain=_rows(args, "retain") if args.retain else [],
                          members=_rows(args, "forget") if args.nonmembers else [],
                          nonmembers=_rows(args, "nonmembers") if args.nonmembers else [], utility=[],
                          probes=read_probes(args.probes), labels=labels,
                          facts=read_jsonl(args.facts, TraceFact, "trace fact (prompt, subject, answer)") if args.facts else [])


def _wide_tables():
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_columns", None)


def knowledge(args: argparse.Namespace) -> int:
    from causal_unlearn.data.bios import make_bios_world
    from causal_unlearn.evaluation.knowledge import knowledge_report

    lm = _load(args)
    print(f"model: {lm.name} ({lm.architecture.name}, {lm.n_layers} layers, d_model {lm.d_model}, "
          f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.1f}M parameters) on {lm.device}, {lm.dtype}")
    world = make_bios_world(seed=args.seed)
    report = knowledge_report(lm, world, max_new_tokens=args.max_new_tokens, probes=not args.no_probes)
    width = max(map(len, report))
    print("what the model knows of the built-in world (greedy generation)")
    for key, value in report.items():
        print(f"  {key:<{width}}  {value:.3f}")
    if args.json:
        print(json.dumps(report))
    return 0


def _load(args: argparse.Namespace):
    from causal_unlearn.models.loader import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype)


def _rows(args: argparse.Namespace, split: str):
    """Rows from the file given for `split`, or the built-in task's when none is."""
    file = getattr(args, split)
    if file:
        from causal_unlearn.data.semeval import read_rows

        return read_rows(file)
    return getattr(_builtin_world().unlearning_task(), split)


@functools.cache
def _builtin_world():
    """The world the built-in model knows, generated once per command however many splits use it."""
    from causal_unlearn.data.bios import make_bios_world

    return make_bios_world()


def _localized_layers(lm, args: argparse.Namespace) -> list[int]:
    if args.forget:
        raise SystemExit("error: with your own --forget rows, give --layers (trace your facts with `causal-unlearn "
                         "trace` or cu.trace_facts, then cu.localize); only the built-in task is traced automatically")
    from causal_unlearn.localization.layers import localize
    from causal_unlearn.tracing.trace import trace_facts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multi-token answers are traced on their first token
        traces = trace_facts(lm, _builtin_world().facts_to_trace("forget"), kinds=("mlp",), window=1, samples=2)
    layers = localize(traces, kind="mlp")
    print(f"localized MLP layers {layers.layers} ({layers.rule})")
    return layers.layers


def _recipe(args: argparse.Namespace) -> str:
    return args.recipe or ("builtin" if args.model == BUILTIN else "paper")


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _write_figure(fig, path: str) -> None:
    if path.endswith(".html"):
        fig.write_html(path, include_plotlyjs=True)
        print(f"saved {path}")
    else:
        from causal_unlearn.viz.static_export import export

        print("saved", ", ".join(map(str, export(fig, path))))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows a default only where it says something the help text does not."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" not in text and action.default is not None and action.default is not False \
                and action.default != argparse.SUPPRESS:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="causal-unlearn", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find where a language model stores a fact (causal tracing) and remove it (targeted unlearning).",
        epilog=textwrap.dedent("""\
            examples:
              causal-unlearn demo                                   # the whole pipeline on the built-in model
              causal-unlearn trace --prompt "Otto Russet lives in" --subject "Otto Russet" --figure trace.pdf
              causal-unlearn unlearn --layers 0,7 --out edited/     # the built-in task, the built-in recipe
              causal-unlearn evaluate --model edited/ --out scores.json
              causal-unlearn audit --edited edited/ --figure audit.pdf   # asked in ways unlearning never saw
            """))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=description,
                                  formatter_class=_HelpFormatter)
        sub.add_argument("--model", default=BUILTIN, help="built-in name, local folder or hub id")
        sub.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
        sub.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the checkpoint's)")
        sub.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
        sub.set_defaults(run=run)
        return sub

    sub = command("demo", demo, "run the whole pipeline on the built-in model and write a report",
                  "Trace the built-in world's forget facts, localize, unlearn those layers, score the official way, "
                  "re-trace, and write a report folder: report.html (self-contained), scores.json, figures/*.pdf "
                  "and the edited model. The model you load is left as it was.")
    sub.add_argument("--out", default="causal_unlearn_report", help="report folder")
    sub.add_argument("--max-facts", type=int, default=None, help="trace only the first N forget facts (quicker look)")
    sub.add_argument("--samples", type=int, default=2, help="noise samples per traced fact")
    sub.add_argument("--epochs", type=int, default=None, help="unlearning epochs (default: the built-in recipe's 10)")
    sub.add_argument("--max-new-tokens", type=int, default=64, help="generation budget per row when scoring")
    sub.add_argument("--no-export", action="store_true", help="skip the PDFs (they need Chrome or Chromium)")

    sub = command("trace", trace_command, "causally trace one fact (ROME's recipe)",
                  "Corrupt the subject's embeddings and restore each (token, layer) state of each kind; print the "
                  "strongest cells, and optionally save the trace and its figure.")
    sub.add_argument("--prompt", required=True, help="text before the answer, e.g. 'Otto Russet lives in'")
    sub.add_argument("--subject", required=True, help="the subject, exactly as written in the prompt")
    sub.add_argument("--answer", default=None, help="the answer's text (default: the model's top-1 next token)")
    sub.add_argument("--kinds", default="hidden,mlp,attn", help="comma-separated sites to restore: hidden, mlp, attn, "
                     "head (each attention head), resid_pre")
    sub.add_argument("--samples", type=int, default=10, help="corrupted copies")
    sub.add_argument("--window", type=int, default=None, help="layers restored around each MLP / attention cell "
                     "(default: about a fifth of the model's depth)")
    sub.add_argument("--noise", default="s3", help="'s3' (3 x the subject embeddings' std), 'uniform' or a scale")
    sub.add_argument("--replacement", default=None, metavar="PROMPT", help="corrupt by token replacement instead: "
                     "the corrupted run reads this prompt (same token length), e.g. 'Ada Cobalt lives in'")
    sub.add_argument("--metric", default="prob", choices=["prob", "logprob", "logit_diff"],
                     help="score of the answer token (logit_diff: against --foil)")
    sub.add_argument("--foil", default=None, help="the token logit_diff compares the answer with, e.g. ' Paris'")
    sub.add_argument("--method", default="exact", choices=["exact", "attribution"], help="exact patching or its "
                     "gradient approximation")
    sub.add_argument("--seed", type=int, default=0, help="noise seed")
    sub.add_argument("--out", default=None, help="save the trace (.safetensors; TraceResult.load reads it)")
    sub.add_argument("--figure", default=None, help="save the heatmaps: .html (interactive), .pdf, .svg or .png")

    sub = command("unlearn", unlearn_command, "unlearn a forget set by editing only some layers",
                  "Unlearn the forget rows and keep the retain rows, training only the given layers' modules. Rows "
                  "are LUME-format .jsonl/.parquet files (id, input, output, task); without them, the built-in "
                  "task. Without --layers, the built-in task's forget facts are traced and localized first.")
    sub.add_argument("--out", required=True, help="folder for the edited model (+ unlearning.json and curves)")
    sub.add_argument("--forget", default=None, help="forget rows file (default: the built-in task's)")
    sub.add_argument("--retain", default=None, help="retain rows file (default: the built-in task's)")
    sub.add_argument("--layers", default=None, help="comma-separated layers to edit (default: localize by tracing)")
    sub.add_argument("--modules", default="mlp", choices=["mlp", "attn", "all"], help="which weights of those layers")
    sub.add_argument("--objective", default="sha256",
                     choices=["sha256", "sha256_kl", "grad_ascent", "grad_diff", "kl", "npo", "simnpo", "rmu",
                              "stand_in"],
                     help="the loss: sha256 (the paper's -CE forget + adaptive alpha x CE retain), sha256_kl (with a "
                          "KL retain term), grad_ascent, grad_diff, kl, npo, simnpo (the organizers' baselines), rmu "
                          "(the deepest edited layer's output on forget answers steered to a random vector), "
                          "stand_in (answer about a forget subject as the original model answers about a stranger)")
    sub.add_argument("--stand-ins", default=None,
                     help="for --objective stand_in with your own rows: JSON {forget row id: stand-in prompt}")
    sub.add_argument("--recipe", default=None, choices=["builtin", "paper"],
                     help="hyper-parameters (default: builtin for the built-in model, else the paper's)")
    sub.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    sub.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    sub.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    sub.add_argument("--grad-accum", type=int, default=None, help="override the recipe's gradient accumulation")
    sub.add_argument("--max-grad-norm", type=float, default=None,
                     help="clip the gradient norm (the paper recipe: 1.0; the built-in recipe: none)")
    sub.add_argument("--mixed-precision", choices=["no", "bf16"], default=None, help="bf16 autocast, fp32 weights")
    sub.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward")
    sub.add_argument("--shard", action="store_true",
                     help="under torchrun: shard the model over the processes with FSDP2 (see docs/scale.md)")
    sub.add_argument("--seed", type=int, default=0, help="shuffling seed")

    sub = command("evaluate", evaluate_command, "score a model the official SemEval-2025 Task 4 way",
                  "Regurgitation (ROUGE-L recall) and knowledge (exact match) per task and split, the task "
                  "aggregate, the MIA score and utility. Without rows files, the built-in task; with them, only "
                  "the parts they allow (MIA needs --members and --nonmembers, utility --utility).")
    for split in ("forget", "retain", "members", "nonmembers", "utility"):
        sub.add_argument(f"--{split}", default=None, help=f"{split} rows file")
    sub.add_argument("--membership", action="store_true", help="also the membership-inference attacks' AUCs on the "
                     "members and non-members (loss, zlib, gradnorm, min_k, min_k_plus_plus; more than doubles "
                     "the time)")
    sub.add_argument("--max-new-tokens", type=int, default=256, help="generation budget per row (SemEval uses 256)")
    sub.add_argument("--out", default=None, help="also write the scores as JSON")

    sub = command("audit", audit_command, "audit an edited model: held-out probes, relearning, quantization, ...",
                  "Compare the edited model with the original (--model) on held-out probes: greedy recall, "
                  "multiple-choice ranks, recall after brief relearning on half the forget rows and on retain "
                  "rows, after int8 quantization, a bf16 round trip and 4-bit NF4 weights (bitsandbytes), a linear read-out of labelled attributes "
                  "at the subject, the forget facts re-traced, the logit-lens attacks (head projection, "
                  "probability delta), recall after the bios' own openings and membership inference (forget "
                  "rows against never-seen rows). Without --probes, the built-in "
                  "world's task; with them, your own (checks your files cannot support are skipped with a note). "
                  "Neither model is changed.")
    sub.add_argument("--edited", required=True, help="folder of the edited model (what `unlearn --out` wrote)")
    sub.add_argument("--checks", default=None, help="comma-separated checks to run: probes, choice, relearning, "
                     "precision, decoding, retrace, head_projection, probability_delta, bio_openings, membership "
                     "(default: every check the task supports)")
    sub.add_argument("--probes", default=None, help="your own probes: .jsonl, one per line with prompt, answers "
                     "(a list), attribute, form (question, cloze or opening: a training text cut before the answer, "
                     "for bio_openings), split (forget, retain, holdout) and subject")
    sub.add_argument("--forget", default=None, help="with --probes: forget rows file (relearning fine-tunes on them)")
    sub.add_argument("--retain", default=None, help="with --probes: retain rows file (the benign relearning attack)")
    sub.add_argument("--nonmembers", default=None, help="with --probes and --forget: rows file of texts the model "
                     "never saw; the membership check tells the forget rows from them")
    sub.add_argument("--labels", default=None, help="with --probes: JSON {subject: {attribute: value}} for the "
                     "read-out")
    sub.add_argument("--facts", default=None, help="with --probes: .jsonl of trace facts (prompt, subject, answer) "
                     "to re-trace and to read with the logit lens")
    sub.add_argument("--relearn-steps", type=int, default=100, help="relearning budget: optimizer steps")
    sub.add_argument("--relearn-lr", type=float, default=3e-4, help="relearning budget: learning rate")
    sub.add_argument("--max-new-tokens", type=int, default=40, help="generation budget per probe")
    sub.add_argument("--probes-per-form", type=int, default=None,
                     help="at most N probes per subject, attribute and form (quicker; default: all)")
    sub.add_argument("--out", default=None, help="folder for audit.csv (every measurement) and summary.json")
    sub.add_argument("--figure", default=None, help="save the audit figure: .html, .pdf, .svg or .png")

    sub = command("knowledge", knowledge, "print what the model knows of the built-in world",
                  "Greedy-generate every row of the built-in world and report QA exact match and sentence-completion "
                  "ROUGE-L recall per split, general-knowledge accuracy, and the share of held-out probes (questions "
                  "and cloze prompts in wordings never trained) answered per split.")
    sub.add_argument("--no-probes", action="store_true", help="skip the held-out probes (faster)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the bios world (the built-in model knows seed 0)")
    sub.add_argument("--max-new-tokens", type=int, default=256, help="generation budget per row")
    sub.add_argument("--json", action="store_true", help="also print the report as one JSON line")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; a mistake in what was asked (a subject not in the prompt, a missing file)
    prints one line, `error: ...`, and exits with status 2, as argparse does for bad options
    (`--debug` shows the traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, KeyError) as error:
        if args.debug:
            raise
        message = " ".join(str(error.args[0] if isinstance(error, KeyError) and error.args else error).split())
        print(f"error: {message} (--debug shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
