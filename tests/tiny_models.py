"""Tiny randomly initialised models of every supported architecture, saved like hub checkpoints."""

from __future__ import annotations

import copy

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    FalconConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Olmo3Config,
    OlmoConfig,
    PretrainedConfig,
    Qwen2Config,
)

from causal_unlearn.models.tokenizer import train_tokenizer

VOCAB = 300
_IDS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=1)
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, **_IDS)

CONFIGS: dict[str, PretrainedConfig] = {
    "gpt2": GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64, **_IDS),
    "gpt_neox": GPTNeoXConfig(**_COMMON, max_position_embeddings=64, use_parallel_residual=True),
    "llama": LlamaConfig(**_COMMON, max_position_embeddings=64, num_key_value_heads=2),
    "qwen2": Qwen2Config(**_COMMON, max_position_embeddings=64, num_key_value_heads=2),
    "olmo": OlmoConfig(**_COMMON, max_position_embeddings=64),
    "olmo2": Olmo2Config(**_COMMON, max_position_embeddings=64),
    "falcon": FalconConfig(**_COMMON, max_position_embeddings=64),
    "gemma2": Gemma2Config(**_COMMON, max_position_embeddings=64, num_key_value_heads=2, head_dim=8),
}

# Attention that sees only the last few positions: the test prompts (15 tokens) are longer.
WINDOW = 4
SLIDING: dict[str, PretrainedConfig] = {
    "qwen2": Qwen2Config(**_COMMON, max_position_embeddings=64, num_key_value_heads=2, use_sliding_window=True,
                         sliding_window=WINDOW, max_window_layers=1),
    "mistral": MistralConfig(**_COMMON, max_position_embeddings=64, num_key_value_heads=2, sliding_window=WINDOW),
    "gemma3_text": Gemma3TextConfig(**_COMMON, max_position_embeddings=64, num_key_value_heads=2, head_dim=8,
                                    sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention",
                                                                         "sliding_attention"]),
    "olmo3": Olmo3Config(**_COMMON, max_position_embeddings=64, sliding_window=WINDOW,
                         layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
}


def tiny_tokenizer():
    return train_tokenizer(["Ann Teal was born in Denver on May 3, 1984. What is the capital of France? Paris"] * 4, vocab_size=VOCAB)


def tiny_tokenizer_without_bos():
    """The tiny tokenizer as GPT-2's is: byte-level BPE that adds no BOS token of its own."""
    from tokenizers import processors
    from transformers import GPT2TokenizerFast

    backend = copy.deepcopy(tiny_tokenizer().backend_tokenizer)
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    special = "<|endoftext|>"
    return GPT2TokenizerFast(tokenizer_object=backend, bos_token=special, eos_token=special, unk_token=special)


def tiny_model(model_type: str, seed: int = 0, *, sliding: bool = False):
    torch.manual_seed(seed)
    config = (SLIDING if sliding else CONFIGS)[model_type]
    model = AutoModelForCausalLM.from_config(config)
    model.config.architectures = [type(model).__name__]
    return model.eval()


def save_tiny_model(model_type: str, folder: Path) -> Path:
    tiny_model(model_type).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
