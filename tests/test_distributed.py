"""Two processes (gloo on 127.0.0.1, launched by torchrun) end with the weights one process gets
with the same global batch, each holding the whole model or, sharded with FSDP2, half of it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import causal_unlearn as cu
from distributed_worker import main as run_here
from local_processes import free_port

WORKER = Path(__file__).with_name("distributed_worker.py")


def run_two_processes(out: Path, objective: str, *, shard: bool = False, n_retain: int = 28) -> dict:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(WORKER), str(out), objective, "1",
               "shard" if shard else "replicate", str(n_retain)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)


@pytest.mark.parametrize("objective", ["sha256", "npo"])  # an adaptive alpha gathered; a reference model
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, builtin, objective):
    two = run_two_processes(tmp_path / "two.pt", objective)
    run_here(str(tmp_path / "one.pt"), objective, 2)  # one process, twice the accumulation
    one = torch.load(tmp_path / "one.pt")
    assert two["settings"]["processes"] == 2 and one["settings"]["processes"] == 1
    assert two["settings"]["total_steps"] == one["settings"]["total_steps"] == len(one["history"])
    assert two["selected_step"] == one["selected_step"]
    for name, weight in one["edited"].items():
        torch.testing.assert_close(two["edited"][name], weight, atol=1e-6, rtol=0)
    original = dict(builtin.model.named_parameters())
    for name, weight in two["frozen"].items():  # frozen parameters untouched
        assert torch.equal(weight, original[name])
    assert all(not torch.equal(two["edited"][name], original[name]) for name in two["edited"])  # it trained
    for ours, theirs in zip(two["evaluations"], one["evaluations"], strict=True):
        assert ours.keys() == theirs.keys()
        assert all(ours[k] == pytest.approx(theirs[k], rel=1e-5, abs=1e-6) for k in ours)
    for ours, theirs in zip(two["history"], one["history"], strict=True):
        assert all(ours[k] == pytest.approx(theirs[k], rel=1e-5, abs=1e-6) for k in ours)


def test_a_sharded_model_trains_to_the_weights_of_one_process(tmp_path, builtin):
    # 44 rows make 11 batches: the last step and the evaluation give one process a micro-batch
    # fewer, which it must still run (idle) for the other's gathers to complete
    two = run_two_processes(tmp_path / "two.pt", "npo", shard=True, n_retain=24)
    run_here(str(tmp_path / "one.pt"), "npo", 2, n_retain=24)
    one = torch.load(tmp_path / "one.pt")
    assert two["settings"]["total_steps"] == one["settings"]["total_steps"] == len(one["history"]) == 12
    saved = dict(cu.load_model(str(tmp_path / "two.pt.model")).model.named_parameters())
    original = dict(builtin.model.named_parameters())
    for name, weight in one["edited"].items():
        torch.testing.assert_close(saved[name], weight, atol=1e-6, rtol=0)
        assert not torch.equal(saved[name], original[name])
    for name, weight in original.items():
        if name not in one["edited"]:
            assert torch.equal(saved[name], weight), name
    for ours, theirs in zip(two["evaluations"], one["evaluations"], strict=True):
        assert all(ours[k] == pytest.approx(theirs[k], rel=1e-5, abs=1e-6) for k in ours)
    refusals = two["refusals"]
    assert "sharded over processes" in refusals["trace"] and "trace an unsharded model" in refusals["trace"]
    assert "copy it before sharding" in refusals["copy"]
    assert "the stand_in objective runs forwards of its own" in refusals["stand_in"]
