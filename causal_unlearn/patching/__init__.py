"""Patching any component: sites (where a state lives in every block) and the interventions that
read, replace, patch, add to or skip it, by `Site` or by module path.

    >>> import torch, causal_unlearn as cu
    >>> from causal_unlearn import patching
    >>> lm = cu.load_model("olmo-tiny-bios")
    >>> ids = lm.to_tokens("Otto Russet lives in")
    >>> head = patching.HEAD.point(lm, layer=5, unit=2)           # one head's output, before o_proj
    >>> with patching.record(lm.model, [head]) as seen:
    ...     _ = lm.model(ids)
    >>> with patching.replace_state(lm.model, head, torch.zeros(1)):  # zero-ablate it
    ...     ablated = lm.model(ids).logits
    >>> seen[head].shape[-1] == lm.d_model // lm.n_heads
    True
"""

from causal_unlearn.models.hooks import (
    HookPoint,
    add,
    deferred,
    edit,
    edit_attention,
    last_position_only,
    patch,
    record,
    record_attention,
    replace_state,
    skip,
)
from causal_unlearn.patching.sites import (
    ATTN,
    HEAD,
    HIDDEN,
    KINDS,
    MLP,
    NEURON,
    RESID_PRE,
    SITES,
    ArchitectureSite,
    AttentionHeads,
    EachNeuron,
    MLPNeurons,
    ModuleSite,
    Site,
    resolve_site,
)
from causal_unlearn.patching.relevance import RelevanceRules, half_rule, relevance_rules

__all__ = ["ATTN", "HEAD", "HIDDEN", "KINDS", "MLP", "NEURON", "RESID_PRE", "SITES", "ArchitectureSite", "AttentionHeads",
           "EachNeuron", "HookPoint", "MLPNeurons", "ModuleSite", "RelevanceRules", "Site", "add", "deferred", "edit", "edit_attention",
           "half_rule", "last_position_only", "patch", "record", "record_attention", "relevance_rules", "replace_state",
           "resolve_site", "skip"]
