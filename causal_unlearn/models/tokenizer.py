"""The built-in model's tokenizer: byte-level BPE with one token per digit.

Digits are split one per token (a leading space stays attached to the first digit, so " 7216"
is " 7", "2", "1", "6"): numbers are then sequences of ten-way choices that a small model can
memorise, and the first token of a number is one digit, which makes it a clean tracing target.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

# GPT-2's split pattern with `\p{N}+` narrowed to a single digit.
_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on `texts`; every call on the same texts gives the same vocabulary.

    Examples:
        >>> tok = train_tokenizer(["Ann Teal was born in 1984."] * 3, vocab_size=300)
        >>> tok.convert_ids_to_tokens(tok(" 1984")["input_ids"])[1:]
        ['Ġ1', '9', '8', '4']
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    # Every sequence starts with BOS, as in training: the model's first position is never content.
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return wrap_tokenizer(tokenizer)


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS_TOKEN, eos_token=BOS_TOKEN, pad_token=PAD_TOKEN,
        padding_side="left",
    )
