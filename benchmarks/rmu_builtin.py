"""RMU on the built-in model: the built-in recipe on the traced layers, scored the official way
and on the held-out probes (research log, "RMU on the built-in model").

    python benchmarks/rmu_builtin.py [--steering-coeff 2] [--alpha 1] [--layers 0,7] [--epochs 10]
                                     [--retain-loss embed_diff] [--seed 0]

Prints the mean norm of the steered layer's output on the forget answers (what the steering
coefficient is measured against), the run's last loss terms, the official scores
(`cu.evaluate(lm, **task.scoring())`), and greedy recall of every held-out probe per split
(`world.probes`), then one markdown row for the research log.
"""

from __future__ import annotations

import argparse
import time
from statistics import fmean

import torch

import causal_unlearn as cu
from causal_unlearn.auditing import generation_recall
from causal_unlearn.data.encoding import encode_rows
from causal_unlearn.models.hooks import record
from causal_unlearn.unlearning import RMU
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE

SHOWN = {"Task2/forget_knowledge": "forget QA", "Task2/retain_knowledge": "retain QA",
         "Task2/forget_regurgitation": "forget SC", "Task2/retain_regurgitation": "retain SC",
         "utility": "GK held out", "mia_score": "MIA", "final": "final"}


@torch.no_grad()
def answer_state_norm(lm: cu.LoadedModel, rows, layer: int) -> float:
    """Mean norm of the layer's output (the residual stream after it) over the rows' answer tokens."""
    address = lm.architecture.block_output(layer)
    norms = []
    for start in range(0, len(rows), 50):
        batch = encode_rows(lm.tokenizer, rows[start : start + 50])
        with record(lm.model, [address]) as seen:
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        norms.append(seen[address][batch.target_mask].norm(dim=-1))
    return float(torch.cat(norms).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steering-coeff", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--retain-loss", default="embed_diff")
    parser.add_argument("--layer", type=int, default=None, help="steered layer (default: the deepest trained)")
    parser.add_argument("--layers", default="0,7", help="trained layers (the demo's localization)")
    parser.add_argument("--epochs", type=int, default=BUILTIN_RECIPE["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    task = world.unlearning_task()
    layers = [int(x) for x in args.layers.split(",")]
    objective = RMU(args.layer, steering_coeff=args.steering_coeff, alpha=args.alpha, retain_loss=args.retain_loss)
    steered = max(layers) if args.layer is None else args.layer
    print(f"layer {steered} output norm on forget answers: {answer_state_norm(lm, task.forget, steered):.1f}; "
          f"{objective.label}", flush=True)
    started = time.perf_counter()
    result = cu.unlearn(lm, task.forget, task.retain, layers=layers, objective=objective, progress=False,
                        **{**BUILTIN_RECIPE, "epochs": args.epochs, "seed": args.seed})
    print(f"unlearned in {result.seconds:.0f} s; last step: "
          f"{ {k: round(v, 3) for k, v in result.history[-1].items() if k not in ('step', 'epoch', 'lr')} }", flush=True)
    print(f"layer {steered} output norm on forget answers after: {answer_state_norm(lm, task.forget, steered):.1f}")
    scores = cu.evaluate(lm, **task.scoring(), progress=False).to_dict()
    recall = {split: fmean(generation_recall(lm, world.probes(split), progress=False)) for split in ("forget", "retain")}
    print({label: round(scores[key], 3) for key, label in SHOWN.items()}, flush=True)
    print(f"probe recall: forget {recall['forget']:.3f}, retain {recall['retain']:.3f}; "
          f"total {time.perf_counter() - started:.0f} s")
    cells = [objective.label, str(layers)] + [f"{scores[key]:.3f}" for key in SHOWN] + \
            [f"{recall['forget']:.3f}", f"{recall['retain']:.3f}", f"{result.seconds:.0f}"]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
