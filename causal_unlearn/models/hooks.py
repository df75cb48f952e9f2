"""Interventions by module address, as plain forward hooks and forward replacements.

A state is a `HookPoint`: a module's output (a plain path string) or input, optionally narrowed
to some features. `edit` passes states through functions; on it are built reading (`record`) and
writing (`replace_state`: a state is a given tensor; `patch`: given states at one position;
`add`: a delta). `record_attention` reads attention probabilities. The engine's shortcuts:
`skip` (modules do not run; the last returns a given output), `last_position_only` (a module
computes the last position only), `deferred` (a module stores its input to run later, on many
calls' inputs at once). Each is a context manager that undoes itself, so a model is never left
changed. `prefilled_cache` is a KV cache that already holds a prefix's keys and values, so a
forward feeds only the positions after it. `causal_unlearn.patching` is the public face of these.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

from jaxtyping import Float
from torch import Tensor, nn
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import AttentionMaskInterface, eager_mask


def residual_tensor(output: Tensor | tuple) -> Tensor:
    """The tensor a module hands to the residual stream (first element of a tuple output)."""
    return output[0] if isinstance(output, tuple) else output


ForwardHook = Callable[[nn.Module, tuple, "Tensor | tuple"], "Tensor | tuple | None"]


@contextmanager
def forward_hooks(model: nn.Module, hooks: dict[str, ForwardHook]) -> Iterator[None]:
    """Forward hooks on the modules at the given addresses, removed when the block ends.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> with forward_hooks(net, {"0": lambda module, args, output: output * 0}):
        ...     net(torch.ones(1, 2)).abs().sum().item()
        0.0
    """
    handles = [model.get_submodule(a).register_forward_hook(h) for a, h in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class HookPoint:
    """A state in a model's module tree: the output of the module at `module` (what it hands to
    the residual stream: the first element of a tuple), or with `input=True` its first input,
    optionally narrowed to some `features` of the last dimension (a range or indices: one
    attention head's columns, a set of MLP neurons). A plain string is the module's output.

    Examples:
        >>> HookPoint("model.layers.3.self_attn.o_proj", input=True, features=range(8, 16))
        HookPoint('model.layers.3.self_attn.o_proj', input=True, features=range(8, 16))
    """

    module: str
    input: bool = False
    features: range | tuple[int, ...] | None = None

    def __post_init__(self):
        if isinstance(self.features, slice):  # kept as a range: a slice cannot be hashed
            object.__setattr__(self, "features", range(self.features.start or 0, self.features.stop,
                                                       self.features.step or 1))
        elif self.features is not None and not isinstance(self.features, range):
            object.__setattr__(self, "features", tuple(int(f) for f in self.features))

    def __repr__(self) -> str:
        extra = (", input=True" if self.input else "") + (f", features={self.features!r}" if self.features is not None else "")
        return f"HookPoint({self.module!r}{extra})"

    @property
    def whole(self) -> HookPoint:
        """The same state with all its features."""
        return replace(self, features=None)

    @property
    def index(self) -> slice | list[int]:
        """The features as an index of the last dimension."""
        features = self.features
        return slice(features.start, features.stop, features.step) if isinstance(features, range) else list(features)

    def select(self, state: Tensor) -> Tensor:
        """The point's features of a state of the whole module (last dimension)."""
        return state if self.features is None else state[..., self.index]


StateEdit = Callable[[Tensor], "Tensor | None"]


def hook_point(point: str | HookPoint) -> HookPoint:
    """`point` as a HookPoint (a string is a module's output)."""
    if isinstance(point, HookPoint):
        return point
    if isinstance(point, str):
        return HookPoint(point)
    raise TypeError(f"a hook point is a module path such as 'model.layers.3.mlp' or a HookPoint, got {point!r:.80}")


def _with_features(state: Tensor, point: HookPoint, fn: StateEdit) -> Tensor | None:
    """`fn` applied to the point's features of `state`; None where it changed nothing."""
    if point.features is None:
        return fn(state)
    part = fn(point.select(state))
    if part is None:
        return None
    state = state.clone()
    state[..., point.index] = part.to(state.dtype)
    return state


def with_residual(output: Tensor | tuple, tensor: Tensor) -> Tensor | tuple:
    """`output` with `tensor` in place of what the module hands to the residual stream."""
    return (tensor, *output[1:]) if isinstance(output, tuple) else tensor


def _module(model: nn.Module, address: str) -> nn.Module:
    try:
        return model.get_submodule(address)
    except AttributeError:
        raise ValueError(f"the model has no module {address!r}; module paths are those of "
                         "model.named_modules() (e.g. 'model.layers.0.mlp')") from None


@contextmanager
def edit(model: nn.Module, points: dict[str | HookPoint, StateEdit]) -> Iterator[None]:
    """Inside the block, each point's state passes through its function, which returns the state
    to hand on (or None: unchanged; it may only read). Every other primitive here is one such
    function; write your own intervention the same way.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> with edit(net, {"0": lambda state: state * 0}):
        ...     net(torch.ones(1, 2)).abs().sum().item()
        0.0
        >>> with edit(net, {HookPoint("1", input=True, features=[0]): lambda state: state - 100}):
        ...     net(torch.ones(1, 2))[0, 0].item()
        0.0
    """

    def output_hook(point: HookPoint, fn: StateEdit):
        def hook(module, args, output):
            state = _with_features(residual_tensor(output), point, fn)
            return None if state is None else with_residual(output, state)

        return hook

    def input_hook(point: HookPoint, fn: StateEdit):
        def hook(module, args, kwargs):
            if args:
                state = _with_features(args[0], point, fn)
                return None if state is None else ((state, *args[1:]), kwargs)
            if "hidden_states" not in kwargs:
                raise ValueError(f"{point.module!r} got no positional input and no hidden_states to read")
            state = _with_features(kwargs["hidden_states"], point, fn)
            return None if state is None else (args, {**kwargs, "hidden_states": state})

        return hook

    handles = []
    try:
        for point, fn in points.items():
            point = hook_point(point)
            module = _module(model, point.module)
            handles.append(module.register_forward_pre_hook(input_hook(point, fn), with_kwargs=True) if point.input
                           else module.register_forward_hook(output_hook(point, fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def record(model: nn.Module, points: Sequence[str | HookPoint]) -> Iterator[dict]:
    """Record the points' states during the forwards inside the block (the last call of each),
    keyed as given.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> with record(net, ["0", HookPoint("1", input=True)]) as seen:
        ...     out = net(torch.ones(1, 2))
        >>> seen["0"].shape, bool((seen[HookPoint("1", input=True)].relu() == out).all())
        (torch.Size([1, 3]), True)
    """
    recorded: dict = {}

    def keep(key):
        def store(state: Tensor) -> None:
            # a copy: some blocks add into a sublayer's output in place (Falcon's parallel MLP)
            recorded[key] = state.detach().clone()

        return store

    with edit(model, {point: keep(point) for point in points}):
        yield recorded


def replace_state(model: nn.Module, point: str | HookPoint, value: Tensor):
    """The point's state is `value` inside the block (e.g. corrupted embeddings in place of the
    token embeddings); with features, only those are replaced.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> with replace_state(net, "0", -torch.ones(1, 3)):
        ...     net(torch.ones(1, 2)).sum().item()
        0.0
    """
    return edit(model, {point: lambda state: value.to(state.dtype).expand_as(state)})


def patch(model: nn.Module, point: str | HookPoint, value: Tensor, *, position: int,
          rows: Tensor | None = None):
    """At sequence `position`, the point's state becomes `value` (one state per row of `rows`,
    or for every row): the activation patch of one token.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Identity())
        >>> with patch(net, "0", torch.full((1, 2), 7.0), position=1, rows=torch.tensor([0])):
        ...     net(torch.zeros(2, 3, 2))[:, 1].tolist()
        [[7.0, 7.0], [0.0, 0.0]]
    """

    def write(state: Tensor) -> Tensor:
        state = state.clone()
        if rows is None:
            state[:, position] = value.to(state.dtype)
        else:
            state[rows.to(state.device), position] = value.to(state.dtype)
        return state

    return edit(model, {point: write})


def add(model: nn.Module, point: str | HookPoint, delta: Tensor, *, position: int | None = None):
    """`delta` is added to the point's state (at `position` only, if given): a steering vector.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Identity())
        >>> with add(net, "0", torch.ones(2), position=0):
        ...     net(torch.zeros(1, 2, 2)).tolist()
        [[[1.0, 1.0], [0.0, 0.0]]]
    """

    def shift(state: Tensor) -> Tensor:
        if position is None:
            return state + delta.to(state.dtype)
        state = state.clone()
        state[:, position] += delta.to(state.dtype)
        return state

    return edit(model, {point: shift})


@contextmanager
def replaced_forward(module: nn.Module, forward: Callable) -> Iterator[None]:
    """`module` runs `forward` instead of its own inside the block (its hooks still fire).

    Examples:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2)
        >>> with replaced_forward(layer, lambda x: x * 0):
        ...     layer(torch.ones(1, 2)).tolist()
        [[0.0, 0.0]]
    """
    # through the instance dict: wrappers such as TransformerLens's BlockBridge redirect setattr
    saved = module.__dict__.get("forward")
    module.__dict__["forward"] = forward
    try:
        yield
    finally:
        if saved is None:
            del module.__dict__["forward"]
        else:
            module.__dict__["forward"] = saved


@contextmanager
def skip(model: nn.Module, addresses: Sequence[str], output: Tensor, arity: int = 0) -> Iterator[None]:
    """The modules at `addresses` (consecutive blocks) do not run: each passes its input on and
    the last returns `output`, as a tuple of `arity` (hidden states first, then None) where the
    blocks return tuples. Like nnsight's `skip`.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Identity())
        >>> with skip(net, ["0", "1"], torch.full((1, 2), 3.0)):
        ...     net(torch.ones(1, 2)).tolist()
        [[3.0, 3.0]]
    """

    def as_output(hidden_states: Tensor) -> Tensor | tuple:
        return (hidden_states, *[None] * (arity - 1)) if arity else hidden_states

    def passthrough(hidden_states, *args, **kwargs):
        return as_output(hidden_states)

    with ExitStack() as stack:
        for address in addresses[:-1]:
            stack.enter_context(replaced_forward(model.get_submodule(address), passthrough))
        stack.enter_context(replaced_forward(model.get_submodule(addresses[-1]), lambda *a, **k: as_output(output)))
        yield


def last_position_only(module: nn.Module):
    """`module` (a position-wise sublayer, such as a block's MLP) computes the last position only;
    zeros stand in for the others. Where the module flattens positions into rows or returns
    another shape, it runs in full.

    Examples:
        >>> import torch
        >>> mlp = torch.nn.Linear(2, 2, bias=False)
        >>> with last_position_only(mlp):
        ...     out = mlp(torch.ones(1, 3, 2))
        >>> out[0, :2].abs().sum().item(), torch.equal(out[0, 2], mlp(torch.ones(2)))
        (0.0, True)
    """
    full = module.forward

    def last_position(hidden_states, *args, **kwargs):
        if hidden_states.dim() != 3:  # positions flattened into rows (OPT's MLP): no shortcut
            return full(hidden_states, *args, **kwargs)
        last = full(hidden_states[:, -1:], *args, **kwargs)
        if not isinstance(last, Tensor) or last.shape[-1] != hidden_states.shape[-1]:
            return full(hidden_states, *args, **kwargs)  # an MLP of another shape: no shortcut
        output = last.new_zeros(hidden_states.shape)
        output[:, -1:] = last
        return output

    return replaced_forward(module, last_position)


@contextmanager
def deferred(module: nn.Module) -> Iterator[list[Tensor]]:
    """`module` does not run inside the block: each call stores its input's last position in the
    yielded list and returns a placeholder, so that the caller runs it once on all of them. With
    a large vocabulary, unembedding a few dozen rows costs as much as reading the whole weight
    matrix, so one product over the rows of many forwards is several times faster.

    Examples:
        >>> import torch
        >>> head = torch.nn.Linear(2, 3)
        >>> with deferred(head) as inputs:
        ...     _ = head(torch.ones(1, 4, 2)), head(torch.zeros(2, 4, 2))
        >>> head(torch.cat(inputs)).shape
        torch.Size([3, 3])
    """
    inputs: list[Tensor] = []

    def store(hidden_states, *args, **kwargs):
        inputs.append(hidden_states[:, -1])
        return hidden_states[..., :1]

    with replaced_forward(module, store):
        yield inputs


def keys_and_values(output) -> list[tuple[Tensor, Tensor]]:
    """Each layer's keys and values from a forward's output that used a cache (`cache` in
    transformers 5.2x, earlier `past_key_values`)."""
    cache = output.cache if getattr(output, "cache", None) is not None else output.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def prefilled_cache(layers: Sequence[tuple[Tensor, Tensor]], filled: int) -> DynamicCache:
    """A KV cache whose buffers hold each layer's keys and values at the first `filled`
    positions and room after them: a forward fed the next positions writes its keys and values
    in place instead of concatenating (which would copy every row's prefix again).

    Examples:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
        ...                                      num_hidden_layers=2, num_attention_heads=2)).eval()
        >>> ids = torch.tensor([[1, 2, 3, 4, 5]])
        >>> prefix = keys_and_values(model(ids, use_cache=True))  # the positions after 2 are overwritten
        >>> rest = model(ids[:, 2:], past_key_values=prefilled_cache(prefix, filled=2)).logits
        >>> torch.allclose(rest, model(ids).logits[:, 2:], atol=1e-6)
        True
    """
    cache = DynamicCache()
    cache.layers = [_FilledLayer(keys, values, filled) for keys, values in layers]
    return cache


class _FilledLayer(DynamicLayer):
    def __init__(self, keys: Tensor, values: Tensor, filled: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values, self.filled = keys, values, filled

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        end = self.filled + key_states.shape[-2]
        self.keys[:, :, self.filled : end] = key_states
        self.values[:, :, self.filled : end] = value_states
        self.filled = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.filled


@dataclass
class AttentionCall:
    """One attention module's call: its queries, keys and values as the attention function got
    them (rotary applied, key/value heads not yet repeated) and its probabilities, all in the
    autograd graph of the forward; `pattern` recomputes the probabilities for other queries and keys."""

    module: nn.Module
    query: Float[Tensor, "batch heads pos d_head"]
    key: Float[Tensor, "batch kv_heads pos d_head"]
    value: Float[Tensor, "batch kv_heads pos d_head"]
    probabilities: Float[Tensor, "batch heads pos pos"]
    mask: Tensor | None
    settings: dict
    eager: Callable

    def first_rows(self, n: int) -> AttentionCall:
        """The call of the batch's first `n` rows, outside the autograd graph."""
        mask = self.mask[:n] if self.mask is not None and self.mask.shape[0] > 1 else self.mask
        return replace(self, query=self.query[:n].detach(), key=self.key[:n].detach(), value=self.value[:n].detach(),
                       probabilities=self.probabilities[:n].detach(), mask=mask)

    def pattern(self, query: Tensor, key: Tensor) -> Float[Tensor, "rows heads pos pos"]:
        """The probabilities the module's own eager attention gives `query` and `key`, whose rows
        repeat the call's batch (row i is batch row i % batch)."""
        repeats = query.shape[0] // self.query.shape[0]
        mask = self.mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask.repeat(repeats, *[1] * (mask.dim() - 1))
        value = self.value.detach().repeat(repeats, 1, 1, 1)
        return self.eager(self.module, query, key, value, mask, **self.settings)[1]


_RECORDING = "causal_unlearn_recording"
_attention_calls: tuple[dict[nn.Module, str], dict[str, AttentionCall]] | None = None  # inside `record_attention`
AttentionEdit = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
_attention_edits: list[tuple[set[nn.Module], AttentionEdit]] = []  # inside `edit_attention`, innermost last


def _eager_attention(module: nn.Module) -> Callable | None:
    """The eager attention function of the module's modeling file, where it has one."""
    return getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)


def attention_recordable(model: nn.Module, address: str) -> bool:
    """Whether `record_attention` can record the attention module at `address`: its modeling file
    runs attention through transformers' `AttentionInterface` with an eager function (Falcon's
    does not).

    Examples:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
        ...                                      num_hidden_layers=1, num_attention_heads=2))
        >>> attention_recordable(model, "model.layers.0.self_attn")
        True
    """
    return _eager_attention(model.get_submodule(address)) is not None


def _recording_attention(module, query, key, value, attention_mask, **settings):
    eager = _eager_attention(module)
    if eager is None:
        raise ValueError(f"{type(module).__name__} has no eager attention in its modeling file, so its attention "
                         "probabilities cannot be recorded")
    for modules, fn in _attention_edits:
        if module in modules:
            query, key, value = fn(query, key, value)
    output, probabilities = eager(module, query, key, value, attention_mask, **settings)
    if _attention_calls is not None and module in _attention_calls[0]:
        modules, calls = _attention_calls
        calls[modules[module]] = AttentionCall(module, query, key, value, probabilities, attention_mask, settings, eager)
    return output, probabilities


AttentionInterface.register(_RECORDING, _recording_attention)
AttentionMaskInterface.register(_RECORDING, eager_mask)


@contextmanager
def edit_attention(model: nn.Module, addresses: Sequence[str], fn: AttentionEdit) -> Iterator[None]:
    """Inside, the attention modules at `addresses` compute with `fn(query, key, value)` (as the
    attention function gets them: rotary applied, key/value heads not yet repeated) in their own
    eager attention: e.g. `lambda q, k, v: (q.detach(), k.detach(), v)` holds the attention
    probabilities constant for gradients. A model whose attention does not run through
    transformers' `AttentionInterface` (Falcon) is refused.

    Examples:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        ...                      num_attention_heads=2, num_key_value_heads=2)
        >>> model, ids = LlamaForCausalLM(config).eval(), torch.tensor([[1, 2, 3]])
        >>> with edit_attention(model, ["model.layers.0.self_attn"], lambda q, k, v: (q.detach(), k.detach(), v)):
        ...     held = model(ids).logits
        >>> torch.allclose(held, model(ids).logits, atol=1e-6)  # the same values, other gradients
        True
    """
    refused = [a for a in addresses if not attention_recordable(model, a)]
    if refused:
        raise ValueError(f"the attention at {refused[0]!r} does not run through transformers' AttentionInterface, "
                         "so its queries, keys and values cannot be edited")
    saved = model.config._attn_implementation
    model.config._attn_implementation = _RECORDING
    _attention_edits.append(({model.get_submodule(a) for a in addresses}, fn))
    try:
        yield
    finally:
        _attention_edits.pop()
        model.config._attn_implementation = saved


@contextmanager
def record_attention(model: nn.Module, addresses: Sequence[str]) -> Iterator[dict[str, AttentionCall]]:
    """Record the calls of the attention modules at `addresses` during the forwards inside the
    block (the last call of each). The model runs its own eager attention (through transformers'
    `AttentionInterface`), so the probabilities are a tensor gradients reach. A model whose
    attention does not go through that interface (Falcon, remote code) raises a ValueError.

    Examples:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        ...                      num_attention_heads=2, num_key_value_heads=2)
        >>> model = LlamaForCausalLM(config).eval()
        >>> with record_attention(model, ["model.layers.0.self_attn"]) as calls:
        ...     _ = model(torch.tensor([[1, 2, 3]]))
        >>> calls["model.layers.0.self_attn"].probabilities.shape, model.config._attn_implementation
        (torch.Size([1, 2, 3, 3]), 'sdpa')
    """
    global _attention_calls
    calls: dict[str, AttentionCall] = {}
    if not addresses:  # the model keeps its own attention implementation
        yield calls
        return
    saved, outer = model.config._attn_implementation, _attention_calls
    model.config._attn_implementation = _RECORDING
    _attention_calls = ({model.get_submodule(a): a for a in addresses}, calls)
    try:
        yield calls
    finally:
        model.config._attn_implementation, _attention_calls = saved, outer
    missing = [a for a in addresses if a not in calls]
    if missing:
        raise ValueError(f"no attention call was recorded at {missing[0]!r}: this model's attention does not run "
                         "through transformers' AttentionInterface, so its probabilities cannot be recorded")
