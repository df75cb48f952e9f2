"""Run by tests/test_distributed.py under torchrun: one process of a multi-process unlearning run.
Rank 0 writes the trained weights, the history and the evaluations to the file named first; a
sharded run (`shard`) writes the model through `save_pretrained` into the folder `out + ".model"`
and the messages of what a sharded model refuses."""

import sys

import torch

import causal_unlearn as cu
from causal_unlearn.unlearning.processes import Processes


def main(out: str, objective: str, grad_accum: int, shard: bool = False, n_retain: int = 28) -> None:
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    refusals, fact = {}, world.facts_to_trace()[0]
    if shard:
        cu.shard_model(lm)
        refusals = {what: refusal(call) for what, call in [
            ("trace", lambda: cu.trace(lm, fact.prompt, fact.subject, samples=2, progress=False)),
            ("copy", lm.copy),
            ("stand_in", lambda: cu.unlearn(lm, world.forget[:4], world.retain[:4], layers=[1],
                                            objective=cu.unlearning.StandIn(world.stand_ins()), progress=False)),
        ]}
    result = cu.unlearn(lm, world.forget[:20], world.retain[:n_retain], layers=[1, 3], objective=objective, epochs=2,
                        lr=2e-3, batch_size=4, grad_accum=grad_accum, eval_every=2, max_grad_norm=1.0, progress=False)
    if shard:
        result.save_pretrained(out + ".model")  # every process gathers; rank 0 writes
    processes = Processes.current()
    if processes.is_main:
        torch.save(dict(edited=None if shard else result.edited, history=result.history,
                        evaluations=result.evaluations, selected_step=result.selected_step, settings=result.settings,
                        refusals=refusals,
                        frozen={} if shard else {n: p for n, p in lm.model.named_parameters() if n not in result.edited}),
                   out)
    processes.close()


def refusal(call) -> str:
    try:
        call()
    except ValueError as error:
        return str(error)
    return "no error"


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "shard", int(sys.argv[5]))
