"""Tracing and unlearning at the size of the paper's model, on CPU: an OLMo-1B-shaped model
(16 layers, d_model 2048, MLP 8192, vocabulary 50,304) with random weights.

    python benchmarks/scale.py [--objectives sha256,npo] [--steps 10] [--samples 10] [--layers 16]

Each phase runs in its own process, so its peak memory (max RSS) is its own: one fact traced
(kinds hidden, mlp and attn, `samples` noise copies, window 10), and `steps` unlearning steps on
the MLPs of layers 0-5 with each objective (batches of 4 bios rows, no evaluations). The table
also gives the trained parameters and the AdamW state they carry (AdamW is built on them only).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

FACT = ("Otto Russet lives in", "Otto Russet")
TRAINED_LAYERS = 6  # the MLPs of layers 0-5


def build_model(n_layers: int):
    from transformers import OlmoConfig, OlmoForCausalLM

    import causal_unlearn as cu

    config = OlmoConfig(vocab_size=50304, hidden_size=2048, intermediate_size=8192, num_hidden_layers=n_layers,
                        num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = OlmoForCausalLM(config).eval()
    tokenizer = cu.load_model("olmo-tiny-bios").tokenizer  # its ids are all below the model's vocabulary
    return cu.load_model(model, tokenizer, device="cpu")


def phase(name: str, args: argparse.Namespace) -> dict:
    import causal_unlearn as cu

    lm = build_model(args.layers)
    parameters = sum(p.numel() for p in lm.model.parameters())
    start = time.perf_counter()
    if name == "trace":
        cu.trace(lm, *FACT, samples=args.samples, window=10, progress=False)
        extra = dict(trained="", adamw_state="")
    else:
        world = cu.make_bios_world()
        objective = cu.unlearning.StandIn(world.stand_ins()) if name == "stand_in" else name
        result = cu.unlearn(lm, world.forget[: 2 * args.steps], world.retain[: 2 * args.steps], layers=list(range(min(TRAINED_LAYERS, args.layers))),
                            objective=objective, epochs=1, lr=1e-5, batch_size=4, grad_accum=1, eval_every=None,
                            select="last", progress=False)
        trained = sum(p.numel() for p in result.selection.parameters.values())
        extra = dict(trained=f"{trained / 1e6:.0f}M", adamw_state=f"{2 * 4 * trained / 2**30:.2f} GiB",
                     steps=len(result.history))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return dict(phase=name, parameters=f"{parameters / 1e9:.2f}B", seconds=f"{seconds:.0f}",
                peak_rss=f"{peak:.1f} GiB", **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="sha256,grad_diff,kl,npo,simnpo,stand_in")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args)))
        return
    rows = []
    for name in ["trace", *args.objectives.split(",")]:
        command = [sys.executable, __file__, "--phase", name, "--steps", str(args.steps), "--samples",
                   str(args.samples), "--layers", str(args.layers)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            rows.append(dict(phase=name, seconds="failed", peak_rss=done.stderr.strip().splitlines()[-1][:80]))
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    columns = ["phase", "parameters", "seconds", "peak_rss", "trained", "adamw_state", "steps"]
    print("\n| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")


if __name__ == "__main__":
    main()
