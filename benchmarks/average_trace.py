"""Trace every known fact of the built-in model and print the averaged effects (ROME Fig. 2).

    python benchmarks/average_trace.py [--split forget] [--samples 10] [--window 10] [--limit N]
"""

from __future__ import annotations

import argparse
import time

import causal_unlearn as cu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default=None, help="forget, retain or holdout (default: forget and retain)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10, help="layers restored around each MLP/attention cell")
    parser.add_argument("--limit", type=int, default=None, help="trace only the first N facts")
    args = parser.parse_args()
    lm = cu.load_model("olmo-tiny-bios", device="cpu")
    world = cu.make_bios_world()
    facts = world.trace_facts(args.split) if args.split else world.trace_facts("forget") + world.trace_facts("retain")
    facts = facts[: args.limit]
    started = time.perf_counter()
    traces = cu.trace_facts(lm, facts, samples=args.samples, window=args.window, require_known=True)
    print(f"traced {len(facts)} facts ({len(traces)} known) in {time.perf_counter() - started:.0f} s, "
          f"noise scale {traces[0].settings.noise_scale:.4f}, samples {args.samples}, window {args.window}\n")
    effects = cu.average_effects(traces)
    for kind in effects.kinds:
        print(f"mean indirect effect on p(answer), {kind} (rows: token group, columns: layer)")
        print(f"{'':>22}" + "".join(f"{layer:>7}" for layer in range(lm.n_layers)) + "   n")
        for g, group in enumerate(effects.groups):
            row = effects.mean[kind][g]
            print(f"{group:>22}" + "".join(f"{v:7.3f}" for v in row.tolist()) + f"  {int(effects.count[kind][g, 0])}")
        best = effects.mean[kind].nan_to_num(-1).flatten().argmax().item()
        g, layer = divmod(best, lm.n_layers)
        print(f"  largest: {effects.groups[g]}, layer {layer}: {effects.mean[kind][g, layer]:.3f} "
              f"[{effects.lower[kind][g, layer]:.3f}, {effects.upper[kind][g, layer]:.3f}]\n")
    by_attribute: dict[str, list] = {}
    for t in traces:
        by_attribute.setdefault(t.meta["attribute"], []).append(t)
    print("per attribute: largest MLP effect (group, layer, mean IE), low -> high")
    for attribute, group in by_attribute.items():
        e = cu.average_effects(group)
        best = e.mean["mlp"].nan_to_num(-1).flatten().argmax().item()
        g, layer = divmod(best, lm.n_layers)
        lows = sum(t.low for t in group) / len(group)
        highs = sum(t.high for t in group) / len(group)
        print(f"  {attribute:<12} {len(group):>3} facts  {e.groups[g]:<20} layer {layer}  {e.mean['mlp'][g, layer]:.3f}"
              f"   {lows:.3f} -> {highs:.3f}")


if __name__ == "__main__":
    main()
