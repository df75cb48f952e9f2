"""Run by tests/test_distributed.py under torchrun: one process of a multi-process unlearning run.
Rank 0 writes the trained weights, the history and the evaluations to the file named first."""

import sys

import torch

import causal_unlearn as cu


def main(out: str, objective: str, grad_accum: int) -> None:
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    result = cu.unlearn(lm, world.forget[:20], world.retain[:28], layers=[1, 3], objective=objective, epochs=2,
                        lr=2e-3, batch_size=4, grad_accum=grad_accum, eval_every=2, max_grad_norm=1.0, progress=False)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    torch.save(dict(edited=result.edited, history=result.history, evaluations=result.evaluations,
                    selected_step=result.selected_step, settings=result.settings,
                    frozen={n: p for n, p in lm.model.named_parameters() if n not in result.edited}), out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
