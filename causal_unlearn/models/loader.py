"""`load_model`: one entry point for the built-in model, a local folder, a hub id, an
already-loaded HF model, or a TransformerLens 4 `TransformerBridge`."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import os
import socket
import warnings

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from causal_unlearn.models.architectures import ArchitectureSpec, get_architecture
from causal_unlearn.models.residual import check_addresses, check_residual_stream

BUILTIN_MODELS: dict[str, Path] = {"olmo-tiny-bios": Path(__file__).parent / "olmo_tiny_bios"}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and where its states live; what every stage of the library takes.

    Examples:
        >>> lm = load_model("olmo-tiny-bios")
        >>> lm.n_layers, lm.architecture.name
        (8, 'olmo')
        >>> lm.logits(lm.to_tokens("What is the capital of France?")).shape[-1] == len(lm.tokenizer)
        True
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    architecture: ArchitectureSpec
    name: str
    bridge: Any = field(default=None, repr=False)
    nnsight: Any = field(default=None, repr=False)  # the nnsight wrapper traces run through (backend="nnsight")

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def n_heads(self) -> int:
        """Attention (query) heads per layer."""
        return self.model.config.num_attention_heads

    @property
    def d_model(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        device = next(self.model.parameters()).device
        # a model that lives on a server (nnsight, remote=True) has its weights on meta here
        return torch.device("cpu") if device.type == "meta" else device

    @property
    def is_remote_only(self) -> bool:
        """Whether the weights are not here (an nnsight model on the meta device, to run on NDIF)."""
        return next(self.model.parameters()).device.type == "meta"

    @property
    def is_sharded(self) -> bool:
        """Whether the weights are spread over several processes (`shard_model`, FSDP2 DTensors)."""
        from torch.distributed.tensor import DTensor

        return any(isinstance(p, DTensor) for p in self.model.parameters())

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.name!r}, architecture={self.architecture.name!r}, n_layers={self.n_layers}, "
            f"d_model={self.d_model}, device={str(self.device)!r}, dtype={self.dtype})"
        )

    def copy(self) -> "LoadedModel":
        """An independent copy of the weights (the tokenizer is shared): to edit or audit beside this one.

        Examples:
            >>> lm = load_model("olmo-tiny-bios")
            >>> twin = lm.copy()
            >>> twin.model is lm.model, torch.equal(twin.model.lm_head.weight, lm.model.lm_head.weight)
            (False, True)
        """
        if self.is_sharded:
            raise ValueError(f"{self.name} is sharded over processes (shard_model); copy it before sharding, or save "
                             "the unlearned weights with result.save_pretrained(folder) and load that")
        return dataclasses.replace(self, model=copy.deepcopy(self.model), bridge=None, nnsight=None)

    def module(self, path: str) -> nn.Module:
        """The submodule at a registry address, e.g. `lm.module(lm.architecture.mlp_module(3))`."""
        return self.model.get_submodule(path)

    def to_tokens(self, text: str) -> Int[Tensor, "1 pos"]:
        """Token ids as the model's own tokenizer makes them (BOS only if the tokenizer adds one)."""
        return self.tokenizer(text, return_tensors="pt")["input_ids"].to(self.device)

    def to_str_tokens(self, text: str) -> list[str]:
        return [self.tokenizer.decode([i]) for i in self.to_tokens(text)[0].tolist()]

    @torch.no_grad()
    def logits(self, input_ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos vocab"]:
        return self.model(input_ids=input_ids.to(self.device)).logits

    def unembed(self, states: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch vocab"]:
        """Residual-stream states as the model's last layer turns them into logits: its own final
        norm and unembedding modules, then the final soft-capping where its config asks for one
        (Gemma 2): the logit lens.

        Examples:
            >>> import causal_unlearn as cu
            >>> lm = cu.load_model("olmo-tiny-bios")
            >>> lm.unembed(torch.zeros(3, 2, lm.d_model)).shape == (3, 2, len(lm.tokenizer))
            True
        """
        norm = self.module(self.architecture.final_norm)
        logits = self.module(self.architecture.unembedding)(norm(states)).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def next_token_logits(self, input_ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch vocab"]:
        """The logits at the last position, unembedded there only where the model allows (with a
        large vocabulary the unembedding is a good part of a forward). Unlike `logits`, gradients
        flow where the caller enables them.

        Examples:
            >>> import causal_unlearn as cu, torch
            >>> lm = cu.load_model("olmo-tiny-bios")
            >>> ids = lm.to_tokens("What is the capital of France?")
            >>> with torch.no_grad():
            ...     torch.allclose(lm.next_token_logits(ids), lm.logits(ids)[:, -1], atol=1e-5)
            True
        """
        return self.model(input_ids=input_ids.to(self.device), **last_logits_only(self.model)).logits[:, -1]


def last_logits_only(model: nn.Module) -> dict:
    """The forward's keyword that computes logits for the last position only, where the model has one."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def require_loaded(model: Any, function: str) -> LoadedModel:
    """`model` if it is a `LoadedModel`; otherwise an error saying how to make one.

    Examples:
        >>> require_loaded("gpt2", "greedy_generate")
        Traceback (most recent call last):
        ...
        TypeError: greedy_generate takes a LoadedModel, got a str; load it with causal_unlearn.load_model(...) (a transformers model and its tokenizer: load_model(model, tokenizer))
    """
    if not isinstance(model, LoadedModel):
        raise TypeError(f"{function} takes a LoadedModel, got a {type(model).__name__}; load it with "
                        "causal_unlearn.load_model(...) (a transformers model and its tokenizer: "
                        "load_model(model, tokenizer))")
    return model


def load_model(
    model: str | Path | PreTrainedModel | Any,
    tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> LoadedModel:
    """Load a model for tracing and unlearning.

    `model` is the built-in name ("olmo-tiny-bios"), a local HF folder, a hub id, a loaded
    `transformers` model (then pass its `tokenizer`), or a TransformerLens `TransformerBridge`.
    A model loaded from disk goes to `device` (CUDA when available) in `dtype` (the checkpoint's
    own when None; cast as `from_pretrained` casts, computed buffers such as rotary `inv_freq`
    kept in fp32); an in-memory model is moved or cast only when you ask for it, and its weights
    are never changed otherwise. The model is put in eval mode; a tokenizer without a pad token gets its EOS
    token as pad (left padding is applied only inside generation). The architecture's spec is
    checked on the model with one 6-token forward (`check_residual_stream`): a spec whose
    addresses do not add up to the residual stream is refused, saying what to name instead.

    Examples:
        >>> load_model("olmo-tiny-bios", device="cpu", dtype="float32")
        LoadedModel('olmo-tiny-bios', architecture='olmo', n_layers=8, d_model=128, device='cpu', dtype=torch.float32)
    """
    torch_dtype = _resolve_dtype(dtype)
    device = _resolve_device(device)
    loaded_from_disk = False
    if _is_bridge(model):
        if tokenizer is None:
            tokenizer = model.tokenizer
            _warn_if_retokenized(tokenizer)
        hf_model, name = model.original_model, model.cfg.model_name
    elif _is_nnsight(model):
        hf_model, tokenizer = model._module, tokenizer or model.tokenizer
        name = getattr(model, "repo_id", None) if isinstance(getattr(model, "repo_id", None), str) else None
        name = name or getattr(hf_model, "name_or_path", "") or type(hf_model).__name__
    elif isinstance(model, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("an in-memory model needs its tokenizer: load_model(model, tokenizer)")
        hf_model, name = model, getattr(model, "name_or_path", "") or type(model).__name__
    elif isinstance(model, (str, Path)):
        hf_model, folder_or_id, name = _from_pretrained(model, torch_dtype, device)
        loaded_from_disk = True
        tokenizer = tokenizer if tokenizer is not None else folder_or_id
    else:
        raise TypeError(
            f"load_model cannot load a {type(model).__name__}; pass a built-in name "
            f"({', '.join(BUILTIN_MODELS)}), a folder, a hub id, a transformers model, a TransformerBridge or an "
            "nnsight TransformersModel"
        )
    architecture = get_architecture(hf_model.config)
    if isinstance(tokenizer, (str, Path)):
        tokenizer = _load_tokenizer(tokenizer)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"the tokenizer must be a transformers tokenizer or a folder holding one, got a "
                        f"{type(tokenizer).__name__}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not loaded_from_disk:  # from_pretrained has placed and cast it already
        if device is not None:
            hf_model.to(device=device)
        if torch_dtype is not None:
            cast_like_from_pretrained(hf_model, torch_dtype)
    hf_model.eval()
    if next(hf_model.parameters()).device.type == "meta" and _is_nnsight(model):
        check_addresses(hf_model, architecture)  # no weights here to run the probe on; NDIF runs the traces
    else:
        check_residual_stream(hf_model, architecture)
    return LoadedModel(hf_model, tokenizer, architecture, str(name), bridge=model if _is_bridge(model) else None,
                       nnsight=model if _is_nnsight(model) else None)


@torch.no_grad()
def cast_like_from_pretrained(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the parameters and the saved floating buffers to `dtype`, as `from_pretrained(...,
    dtype=...)` loads them; buffers a model computes for itself and never saves (rotary
    `inv_freq`) keep their own dtype, where `model.to(dtype)` would round them too.

    Examples:
        >>> lm = load_model("olmo-tiny-bios", device="cpu")
        >>> cast_like_from_pretrained(lm.model, torch.bfloat16)
        >>> lm.model.lm_head.weight.dtype, lm.model.model.rotary_emb.inv_freq.dtype
        (torch.bfloat16, torch.float32)
    """
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            if parameter.is_floating_point():
                parameter.data = parameter.data.to(dtype)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_floating_point() and name not in module._non_persistent_buffers_set:
                module.register_buffer(name, buffer.to(dtype))


class BridgeTokenizerWarning(UserWarning):
    """A TransformerBridge's tokenizer splits text otherwise than the model's own (it prepends BOS)."""


def _warn_if_retokenized(tokenizer: PreTrainedTokenizerBase) -> None:
    """TransformerLens reloads a bridge's tokenizer with add_bos_token=True (its default_prepend_bos);
    for a model whose own tokenizer adds none (GPT-2, Pythia) every prompt then has one more token
    than through `load_model(folder)`. Compared with the model's own tokenizer where it is on disk;
    said, not changed, since TransformerLens users index positions with that BOS."""
    source = tokenizer.name_or_path
    try:
        own = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError):
        return  # not on this machine: nothing to compare with
    sample = "The answer is"
    theirs, ours = tokenizer(sample)["input_ids"], own(sample)["input_ids"]
    if theirs != ours:
        warnings.warn(BridgeTokenizerWarning(
            f"the bridge's tokenizer tokenizes otherwise than the model's own ({source}): {sample!r} is {theirs} "
            f"here and {ours} there ({len(theirs) - len(ours):+d} tokens; TransformerLens prepends BOS), so traces "
            "index tokens as TransformerLens does, not as load_model(folder) does; pass "
            f"load_model(bridge, tokenizer=AutoTokenizer.from_pretrained({str(source)!r})) for the model's own"),
            stacklevel=3)


def _is_bridge(obj: Any) -> bool:
    return type(obj).__name__ == "TransformerBridge" and hasattr(obj, "original_model")


def _is_nnsight(obj: Any) -> bool:
    return type(obj).__module__.startswith("nnsight.") and isinstance(getattr(obj, "_module", None), PreTrainedModel)


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or a torch.dtype")
        dtype = _DTYPES[dtype.lower()]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type (float32, bfloat16, float16), got {dtype!r}")
    return dtype


def _resolve_device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return device
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1', 'mps' or a torch.device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this PyTorch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"device={str(device)!r}, but {why}; use device='cpu' (or leave device out: CUDA where present)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r}, but MPS is not available here; use device='cpu'")
    return device


def _default_device() -> str:
    """CUDA where present: under `accelerate launch`/`torchrun`, each process's own GPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"


def _from_pretrained(
    source: str | Path, dtype: torch.dtype | None, device: str | torch.device | None
) -> tuple[PreTrainedModel, str, str]:
    text = str(source)
    name = text
    if text in BUILTIN_MODELS:
        path = BUILTIN_MODELS[text]
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"the built-in model's files are missing from {path}; reinstall causal_unlearn or "
                "retrain them with `python -m causal_unlearn.builtin.train --out <that folder>`"
            )
        text = str(path)
    elif Path(text).expanduser().exists():
        text = str(Path(text).expanduser())
        if not (Path(text) / "config.json").is_file():
            raise FileNotFoundError(
                f"{text} has no config.json, so it is not a saved Hugging Face model folder; "
                "save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)"
            )
    elif text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"no model folder at {text}")
    elif close := difflib.get_close_matches(text, BUILTIN_MODELS, n=1, cutoff=0.8):
        raise ValueError(f"no model {text!r}: not a folder, and not a built-in name; did you mean {close[0]!r}?")
    reachable = _hub_reachable()
    try:
        # without the hub, look in the local cache only: no retries against a host that cannot answer
        with mock.patch.object(hub_constants, "HF_HUB_OFFLINE", hub_constants.HF_HUB_OFFLINE or not reachable):
            model = AutoModelForCausalLM.from_pretrained(text, dtype=dtype or "auto", device_map=None)
    except OSError as error:
        where = "reachable on the Hugging Face hub" if reachable else "in the local cache, and the hub cannot be reached"
        raise OSError(
            f"could not load {name!r}: it is neither a local folder nor {where} "
            f"({error.__class__.__name__}: {str(error).splitlines()[0]}). On a machine with hub access run "
            f"`hf download {name} --local-dir <folder>` (or from_pretrained then save_pretrained), then "
            "pass that folder to load_model."
        ) from error
    model.to(device or _default_device())
    return model, text, name


def _hub_reachable(timeout: float = 1.0) -> bool:
    """Whether the hub's host answers a connection within `timeout` (False in offline mode)."""
    if hub_constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(hub_constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    folder = Path(source)
    # transformers 5 would build an empty tokenizer from config.json alone, silently.
    if folder.is_dir() and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise OSError(
            f"could not load a tokenizer from {str(source)!r}: it has none of {list(_TOKENIZER_FILES)}; "
            "save it beside the model with tokenizer.save_pretrained(folder) or pass tokenizer=..."
        )
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as error:
        raise OSError(
            f"could not load a tokenizer from {str(source)!r} ({str(error).splitlines()[0]}); "
            "save it beside the model with tokenizer.save_pretrained(folder) or pass tokenizer=..."
        ) from error
