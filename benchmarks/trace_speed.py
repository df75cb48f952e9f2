"""Speed of causal tracing: the textbook ROME loop, a loop over TransformerLens patching, and
our engine, on a GPT-2-small-sized random model (12 layers, d_model 768, vocabulary 50,257), one ~12-token prompt,
all three kinds, 10 noise samples, window 1 (TransformerLens patches one layer per cell); and the
engine on the head site alone (a cell per token, layer and head: `engine_head`).

    python benchmarks/trace_speed.py [--samples 10] [--layers 12] [--d-model 768]

Each method runs in its own process, so "peak MB" is that process's peak resident memory (the
same model in each); the table checks that every method's numbers equal the engine's.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the naive reference lives with the tests

PROMPT, SUBJECT = "Otto Russet lives in Houston, TX, and was born in", "Otto Russet"
KINDS = ("hidden", "mlp", "attn")
METHODS = ("naive", "transformer_lens", "engine", "engine_head")  # engine_head: the head site alone


def build(layers: int, d_model: int):
    import causal_unlearn as cu
    from causal_unlearn.models.loader import BUILTIN_MODELS
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = cu.load_model("olmo-tiny-bios", device="cpu").tokenizer
    torch.manual_seed(0)
    # GPT-2's own vocabulary size; the built-in tokenizer uses the first ids of it
    config = GPT2Config(vocab_size=50257, n_embd=d_model, n_layer=layers, n_head=d_model // 64, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    model.config.architectures = ["GPT2LMHeadModel"]
    return cu.load_model(model, tokenizer), BUILTIN_MODELS["olmo-tiny-bios"]


class Counter:
    """Forwards, rows and token positions fed to a model, counted where every forward starts: at
    its token embedding."""

    def __init__(self, embedding: torch.nn.Module):
        self.forwards = self.rows = self.positions = 0
        embedding.register_forward_pre_hook(self)

    def __call__(self, module, args):
        ids = args[0] if args[0].ndim == 2 else args[0][None]
        self.forwards += 1
        self.rows += ids.shape[0]
        self.positions += ids.shape[0] * ids.shape[1]


def run(method: str, args: argparse.Namespace) -> dict:
    from causal_unlearn.tracing import trace
    from causal_unlearn.tracing.corruption import GaussianNoise, corrupted_embeddings, embeddings_of
    from causal_unlearn.tracing.metrics import Probability

    lm, tokenizer_folder = build(args.layers, args.d_model)
    ids = lm.to_tokens(PROMPT)[0]
    setup = trace(lm, PROMPT, SUBJECT, kinds=("hidden",), samples=1, window=1, progress=False)  # answer, scale, range
    scale, answer = setup.settings.noise_scale, setup.answer_id
    corrupted = corrupted_embeddings(embeddings_of(lm, ids), setup.subject_range, GaussianNoise(scale),
                                     samples=args.samples, scale=scale, seed=0)
    metric = Probability().bind(answer, token_id=int)
    embedding = lm.module(lm.architecture.embedding)  # where forwards are counted
    if method == "engine":

        def compute():
            return trace(lm, PROMPT, SUBJECT, answer=answer, kinds=KINDS, samples=args.samples, window=1, noise=scale,
                         progress=False).scores
    elif method == "engine_head":

        def compute():
            return trace(lm, PROMPT, SUBJECT, answer=answer, kinds=("head",), samples=args.samples, noise=scale,
                         progress=False).scores
    elif method == "naive":
        from naive_trace import naive_trace

        def compute():
            return {kind: naive_trace(lm, ids, corrupted, metric, kind, 1)[0] for kind in KINDS}
    else:
        compute, embedding = transformer_lens_patching(lm, ids, corrupted, metric, args.samples)
    counter = Counter(embedding)
    started = time.perf_counter()
    scores = compute()
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the whole process, model included
    return dict(method=method, seconds=seconds, forwards=counter.forwards, rows=counter.rows,
                positions=counter.positions, peak_mb=peak_mb, tokens=int(ids.shape[0]),
                # counting under TransformerLens's hooks runs out of memory; it does the naive loop's work per cell
                tflop=count_flops(compute) / 1e12 if args.flops and method != "transformer_lens" else float("nan"),
                scores={k: v.float().tolist() for k, v in scores.items()})


def transformer_lens_patching(lm, ids, corrupted, metric, samples: int):
    """(b): TransformerLens 4's own patching functions on a `TransformerBridge` of the same
    model, the same noise on the subject embeddings of every corrupted row."""
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    folder = Path(tempfile.mkdtemp())
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=copy.deepcopy(lm.model),
                                                 tokenizer=lm.tokenizer, device="cpu")
    embedding = bridge.original_model.get_submodule(lm.architecture.embedding)
    embedding.register_forward_hook(lambda module, inputs, output: corrupted if output.shape[0] == samples else output)

    def mean_prob(logits):
        return metric(logits[:, -1]).mean()

    def compute():
        _, clean_cache = bridge.run_with_cache(ids[None])
        corrupted_tokens = ids[None].repeat(samples, 1)
        scores = {
            "hidden": patching.get_act_patch_resid_pre(bridge, corrupted_tokens, clean_cache, mean_prob)[1:].T,
            "mlp": patching.get_act_patch_mlp_out(bridge, corrupted_tokens, clean_cache, mean_prob).T,
            "attn": patching.get_act_patch_attn_out(bridge, corrupted_tokens, clean_cache, mean_prob).T,
        }
        # resid_pre of layer l + 1 is our hidden state after layer l; the last layer has no successor
        scores["hidden"] = torch.cat([scores["hidden"], torch.full((ids.shape[0], 1), float("nan"))], dim=1)
        return scores

    return compute, embedding


def count_flops(compute) -> int:
    """Floating-point operations of one more (untimed) run, as PyTorch's FLOP counter counts
    them (matrix products and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        compute()
    return counter.get_total_flops()


def gemm_peak_gflops() -> float:
    """This CPU's fp32 matrix-product throughput at a transformer MLP's shape, the ceiling any
    method here can reach."""
    a, b = torch.randn(2048, 768), torch.randn(768, 3072)
    a @ b
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    return 10 * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--flops", action="store_true", help="also count the FLOPs of the naive loop and the engine (one more untimed run each)")
    parser.add_argument("--run", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run(args.run, args)))
        return
    rows = {}
    for method in args.methods.split(","):
        command = [sys.executable, __file__, "--run", method, "--samples", str(args.samples), "--layers",
                   str(args.layers), "--d-model", str(args.d_model)] + ["--flops"] * args.flops
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows[method] = json.loads(output.strip().splitlines()[-1])
        print(f"  ran {method}: {rows[method]['seconds']:.1f} s", file=sys.stderr)
    reference = rows.get("engine")
    print(f"\ncausal tracing, {args.layers} layers x d_model {args.d_model}, {next(iter(rows.values()))['tokens']} tokens, "
          f"kinds {'/'.join(KINDS)}, samples {args.samples}, window 1, {torch.get_num_threads()} CPU threads\n")
    print(f"{'method':<18}{'seconds':>9}{'forwards':>10}{'rows':>8}{'positions':>11}{'peak MB':>9}"
          f"{'x engine':>10}{'max |diff|':>12}{'TFLOP':>8}{'GFLOP/s':>9}")
    for method, row in rows.items():
        diff = float("nan")
        if reference:
            diffs = [(torch.tensor(row["scores"][k]) - torch.tensor(reference["scores"][k])).abs().nan_to_num(0).max()
                     for k in KINDS if k in row["scores"]]
            diff = max((d.item() for d in diffs), default=float("nan"))
        ratio = row["seconds"] / reference["seconds"] if reference else float("nan")
        print(f"{method:<18}{row['seconds']:>9.1f}{row['forwards']:>10}{row['rows']:>8}{row['positions']:>11}"
              f"{row['peak_mb']:>9.0f}{ratio:>10.1f}{diff:>12.1e}{row['tflop']:>8.2f}{row['tflop'] * 1e3 / row['seconds']:>9.0f}")
    if args.flops:
        print(f"\nthis CPU's fp32 matrix-product peak: {gemm_peak_gflops():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
