"""Finer edits: heads and neurons chosen from a trace of those sites, and a run that changes
nothing outside them."""

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.patching import NEURON, MLPNeurons

QUICK = dict(epochs=1, lr=3e-3, batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False)


@pytest.fixture
def fresh(builtin):
    return builtin.copy()


def test_the_masks_are_the_heads_columns_and_the_neurons_rows_and_columns(builtin):
    parts = cu.Components(heads={2: (1, 3)}, neurons={5: (0, 100, 511)})
    selection = cu.select_components(builtin, parts)
    d_head = builtin.d_model // builtin.n_heads
    expected = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in builtin.model.named_parameters()}
    for head in (1, 3):  # o_proj is nn.Linear(d_model, d_model): weight[out, in], a head's outputs are inputs
        expected["model.layers.2.self_attn.o_proj.weight"][:, head * d_head : (head + 1) * d_head] = True
    for neuron in (0, 100, 511):
        expected["model.layers.5.mlp.down_proj.weight"][:, neuron] = True
        expected["model.layers.5.mlp.gate_proj.weight"][neuron] = True
        expected["model.layers.5.mlp.up_proj.weight"][neuron] = True
    wanted = {name: mask for name, mask in expected.items() if mask.any()}
    assert sorted(selection.masks) == sorted(wanted) == selection.names
    assert all(torch.equal(selection.masks[name], wanted[name]) for name in wanted)
    assert selection.count == 2 * d_head * builtin.d_model + 3 * 3 * builtin.d_model and selection.layers == [2, 5]


def test_a_finer_edit_changes_nothing_outside_its_components(fresh, world):
    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    parts = cu.Components(heads={1: (0, 2)}, neurons={1: (3, 5, 7), 2: (11,)})
    result = cu.unlearn(fresh, world.forget[:8], world.retain[:8], layers=parts, objective="grad_diff",
                        weight_decay=0.1, **QUICK)  # decay would move every entry of a trained weight
    masks = result.selection.masks
    for name, p in fresh.model.named_parameters():
        outside = ~masks[name] if name in masks else torch.ones_like(p, dtype=torch.bool)
        assert torch.equal(p[outside], before[name][outside]), name
    assert all(not torch.equal(p[masks[n]], before[n][masks[n]]) for n, p in result.selection.parameters.items())
    assert result.settings["modules"] == "components"
    assert result.settings["components"] == {"heads": {1: [0, 2]}, "neurons": {1: [3, 5, 7], 2: [11]}}
    result.revert()
    assert all(torch.equal(p, before[n]) for n, p in fresh.model.named_parameters())


def test_localize_components_takes_the_strongest_cells_of_the_token_group(builtin, world):
    traces = cu.trace_facts(builtin, world.facts_to_trace("forget", "city")[:2], kinds=("head", "neuron"),
                            method="attribution", samples=2, progress=False)
    effects = cu.average_effects(traces)
    for kind, field, top in (("head", "heads", 5), ("neuron", "neurons", 12)):
        table = effects.mean[kind][effects.groups.index("last subject token")]
        n_units = table.shape[1]
        ranked = sorted(((float(table[l, u]), l, u) for l in range(table.shape[0]) for u in range(n_units)), reverse=True)
        expected = {}
        for _, layer, unit in ranked[:top]:
            expected.setdefault(layer, set()).add(unit)
        found = cu.localize_components(effects, kind=kind, top_k=top)
        assert {l: set(u) for l, u in getattr(found, field).items()} == expected
    within = cu.localize_components(traces, kind="neuron", top_k=4, layers=[1, 3])
    assert set(within.neurons) <= {1, 3} and sum(map(len, within.neurons.values())) == 4


def test_one_neuron_cell_is_that_neuron(builtin, world):
    """A neuron-site cell attributes exactly what the one-neuron set site does."""
    fact = world.facts_to_trace("forget", "city")[0]
    each = cu.trace(builtin, fact.prompt, fact.subject, kinds=(NEURON,), method="attribution", samples=2,
                    progress=False)
    one = cu.trace(builtin, fact.prompt, fact.subject, kinds=(MLPNeurons([37]),), method="attribution", samples=2,
                   progress=False)
    assert each.scores["neuron"].shape[1:] == (builtin.n_layers, 512)
    torch.testing.assert_close(each.scores["neuron"][..., 37], one.scores["mlp_neurons[37]"])


def test_components_refuse_what_they_cannot_edit(builtin, world):
    with pytest.raises(ValueError, match="names no head and no neuron"):
        cu.Components()
    with pytest.raises(ValueError, match="head 4 of layer 0 is out of range: the model has 4 heads a layer"):
        cu.select_components(builtin, cu.Components(heads={0: (4,)}))
    with pytest.raises(ValueError, match=r"layers \[9\] are out of range"):
        cu.select_components(builtin, cu.Components(neurons={9: (1,)}))
    traces = cu.trace_facts(builtin, world.facts_to_trace("forget", "city")[:1], kinds=("mlp",), samples=2,
                            progress=False)
    with pytest.raises(ValueError, match=r"no 'head' effects here .* trace with kinds=\('head',\)"):
        cu.localize_components(traces, kind="head")
    with pytest.raises(ValueError, match="kind must be one of"):
        cu.localize_components(traces, kind="mlp")
