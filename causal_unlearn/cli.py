"""The `causal-unlearn` command line."""

from __future__ import annotations

import argparse
import json
import sys

from causal_unlearn.data.bios import make_bios_world
from causal_unlearn.evaluation.knowledge import knowledge_report
from causal_unlearn.models.loader import load_model


def demo(args: argparse.Namespace) -> int:
    """Load the model and print what it knows of the built-in bios world."""
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"model: {lm.name} ({lm.architecture.name}, {lm.n_layers} layers, d_model {lm.d_model}, "
          f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.1f}M parameters) on {lm.device}, {lm.dtype}")
    world = make_bios_world(seed=args.seed)
    print(f"world: {len(world.people_in('forget'))} forget / {len(world.people_in('retain'))} retain / "
          f"{len(world.people_in('holdout'))} holdout people, {len(world.general_knowledge)} general-knowledge questions")
    report = knowledge_report(lm.model, lm.tokenizer, world, max_new_tokens=args.max_new_tokens)
    width = max(map(len, report))
    print("\nwhat the model knows (greedy generation)")
    for key, value in report.items():
        print(f"  {key:<{width}}  {value:.3f}")
    if args.json:
        print(json.dumps(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="causal-unlearn", description="Causal tracing and targeted unlearning.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the main job on the built-in model", description=demo.__doc__)
    demo_parser.add_argument("--model", default="olmo-tiny-bios", help="built-in name, local folder or hub id")
    demo_parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    demo_parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the checkpoint's)")
    demo_parser.add_argument("--seed", type=int, default=0, help="seed of the bios world (the built-in model knows seed 0)")
    demo_parser.add_argument("--max-new-tokens", type=int, default=256, help="generation budget per row (SemEval uses 256)")
    demo_parser.add_argument("--json", action="store_true", help="also print the report as one JSON line")
    demo_parser.set_defaults(run=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
