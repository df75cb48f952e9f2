"""Rows as token batches: prompt and continuation in one sequence, a mask on the continuation.

Training and likelihood scoring both read a row as the model saw it in training, `input + " " +
output`, and score only the `output` tokens (the loss mask); membership inference scores whole
documents, which is the same thing with an empty prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from causal_unlearn.data.rows import Row


@dataclass
class EncodedBatch:
    """Right-padded token ids; `target_mask[b, t]` marks tokens whose log-probability counts."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    target_mask: Bool[Tensor, "batch pos"]

    def to(self, device: torch.device | str) -> "EncodedBatch":
        return EncodedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.target_mask.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def encode_continuations(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    max_length: int | None = None,
) -> EncodedBatch:
    """Tokenize `prompt + " " + continuation` (just the continuation when the prompt is empty)
    and mask the continuation's tokens, found by character offsets so that a token straddling
    the boundary (byte-level BPE's " 900") counts as continuation.

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> batch = encode_continuations(tok, ["What is 2 + 2?"], ["4"])
        >>> [tok.decode(i) for i in batch.input_ids[batch.target_mask].tolist()]
        [' 4']
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
    if not prompts:
        raise ValueError("nothing to encode: the list of rows is empty")
    if not tokenizer.is_fast:
        raise TypeError("encoding needs a fast tokenizer (character offsets); load it with use_fast=True")
    texts = [f"{p} {c}" if p else c for p, c in zip(prompts, continuations)]
    starts = [len(p) if p else 0 for p in prompts]
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        encoded = tokenizer(
            texts, return_tensors="pt", padding=True, return_offsets_mapping=True,
            truncation=max_length is not None, max_length=max_length,
        )
    finally:
        tokenizer.padding_side = previous_side
    offsets = encoded["offset_mapping"]  # batch pos 2; special and pad tokens have (0, 0)
    begin, end = offsets[..., 0], offsets[..., 1]
    target_mask = (begin >= torch.tensor(starts)[:, None]) & (end > begin) & encoded["attention_mask"].bool()
    # the first token has no prediction to score
    target_mask[:, 0] = False
    empty = (~target_mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"{len(empty)} row(s) have no continuation token to score (first: {texts[empty[0]][:80]!r}); "
            "check for empty outputs or a max_length that cuts the output off"
        )
    return EncodedBatch(encoded["input_ids"], encoded["attention_mask"], target_mask)


def encode_documents(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_length: int | None = None
) -> EncodedBatch:
    """Whole documents as the official SemEval membership-inference loss reads them: every token
    the tokenizer returns after the first is a target, special tokens (a BOS, an appended EOS)
    included, as `model(ids, labels=ids).loss` counts them.

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> batch = encode_documents(tok, ["the capital", "Paris is the capital"])
        >>> [tok.decode(i) for i in batch.input_ids[0][batch.target_mask[0]].tolist()]  # no padding
        ['the', ' capital']
    """
    if not texts:
        raise ValueError("nothing to encode: the list of documents is empty")
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        encoded = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=max_length is not None,
                            max_length=max_length)
    finally:
        tokenizer.padding_side = previous_side
    target_mask = encoded["attention_mask"].bool()
    target_mask[:, 0] = False  # the first token has no prediction to score
    empty = (~target_mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{len(empty)} document(s) are a single token or empty (first: {texts[empty[0]][:80]!r}); "
                         "a likelihood needs at least two tokens")
    return EncodedBatch(encoded["input_ids"], encoded["attention_mask"], target_mask)


def encode_rows(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row], *, max_length: int | None = None, whole_text: bool = False
) -> EncodedBatch:
    """`encode_continuations` of the rows' inputs and outputs; with `whole_text`, every token of
    the row (prompt included) is a target."""
    if whole_text:
        return encode_continuations(tokenizer, [""] * len(rows), [r.text for r in rows], max_length=max_length)
    return encode_continuations(tokenizer, [r.input for r in rows], [r.output for r in rows], max_length=max_length)


def prompt_vocabulary(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row]) -> Int[Tensor, " ids"]:
    """Every token id that occurs in the rows' prompts (`input`s).

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> ids = prompt_vocabulary(tok, [Row("a1qa1", "Where is Paris?", "France", "T")])
        >>> sorted(tok.decode([i]) for i in ids.tolist())
        [' Paris', ' is', '<|endoftext|>', '?', 'Where']
    """
    return torch.tensor(sorted({i for ids in tokenizer([r.input for r in rows])["input_ids"] for i in ids}))


def with_distinct_prompt_tokens(
    batch: EncodedBatch, rows: Bool[Tensor, " batch"], common: Int[Tensor, " ids"]
) -> EncodedBatch:
    """Also mark, in the chosen `rows`, the prompt tokens whose id is not in `common`: with the
    retain prompts' vocabulary as `common`, what is left of a forget prompt is what is specific
    to it (in LUME, the person's name), while the shared question template stays unmarked.

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> forget, retain = Row("f1qa1", "Where does Otto Russet live?", "Houston", "Task2"), Row(
        ...     "r1qa1", "Where does Ann Teal live?", "Denver", "Task2")
        >>> batch = with_distinct_prompt_tokens(encode_rows(tok, [forget]), torch.tensor([True]),
        ...                                     prompt_vocabulary(tok, [retain]))
        >>> [tok.decode(i) for i in batch.input_ids[batch.target_mask].tolist()]
        [' Otto', ' Russet', ' Houston']
    """
    distinct = batch.attention_mask.bool() & ~torch.isin(batch.input_ids, common.to(batch.input_ids.device))
    distinct &= rows.to(distinct.device)[:, None]
    distinct[:, 0] = False  # the first token has no prediction to score
    return EncodedBatch(batch.input_ids, batch.attention_mask, batch.target_mask | distinct)


@dataclass(frozen=True)
class QATemplate:
    """How a question and its answer become one token sequence, as open-unlearning's
    `template_args` say (and its `preprocess_chat_instance` does): the prompt is
    `system_prompt + user_start + question + user_end + assistant_start`, the sequence is the
    prompt followed by `answer_prefix + answer` and an end-of-text token (added where the
    tokenizer does not end with one), both tokenized with the tokenizer's special tokens and cut
    at `max_length` tokens; the targets are the sequence's tokens past the prompt's token count.
    With `chat=True` the tokenizer's chat template wraps a user and an assistant turn instead
    (`QATemplate.for_chat()`).

    The default is the built-in model's training format, `question + " " + answer` with no tags
    (the project's rows). open-unlearning's phi-1_5 template is
    `QATemplate(user_start="Question: ", user_end="\\n", assistant_start="Answer: ", answer_prefix="")`.

    Examples:
        >>> QATemplate().prompt(None, "What is the capital of France?")
        'What is the capital of France?'
        >>> QATemplate(user_start="Question: ", user_end="\\n", assistant_start="Answer: ").prompt(None, "Why?")
        'Question: Why?\\nAnswer: '
    """

    user_start: str = ""
    user_end: str = ""
    assistant_start: str = ""
    answer_prefix: str = " "
    chat: bool = False
    system_prompt: str | None = None
    date_string: str | None = None
    max_length: int = 512

    def __post_init__(self) -> None:
        if self.chat and (self.user_start or self.user_end or self.assistant_start or self.answer_prefix):
            raise ValueError("a chat template wraps the turns itself: leave user_start, user_end, assistant_start and "
                             "answer_prefix empty (QATemplate.for_chat())")
        if not self.chat and self.date_string is not None:
            raise ValueError("date_string fills a chat template's date; it needs chat=True")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length must be a positive number of tokens, got {self.max_length!r}")

    @classmethod
    def for_chat(cls, system_prompt: str | None = None, *, date_string: str | None = None,
                 max_length: int = 512) -> "QATemplate":
        """The tokenizer's own chat template, with an optional system turn.

        Examples:
            >>> QATemplate.for_chat("You are helpful.").chat
            True
        """
        return cls(answer_prefix="", chat=True, system_prompt=system_prompt, date_string=date_string,
                   max_length=max_length)

    def prompt(self, tokenizer: PreTrainedTokenizerBase | None, question: str) -> str:
        """The text the model reads before the answer (with a chat template: rendered, special
        tokens as text, to be tokenized without adding more)."""
        if not self.chat:
            return (self.system_prompt or "") + self.user_start + question + self.user_end + self.assistant_start
        return _render_chat(tokenizer, self._turns(question, None), self.date_string)

    def _turns(self, question: str, answer: str | None) -> list[dict[str, str]]:
        turns = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        turns.append({"role": "user", "content": question})
        if answer is not None:
            turns.append({"role": "assistant", "content": answer})
        return turns


def encode_qa(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    answers: Sequence[str],
    template: QATemplate = QATemplate(),
) -> EncodedBatch:
    """Questions and answers as open-unlearning's `QADataset` encodes them for scoring: the answer's
    tokens and the end-of-text token are the targets (see `QATemplate`), right-padded.

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> batch = encode_qa(tok, ["What is the capital of France?"], ["Paris"])
        >>> [tok.decode(i) for i in batch.input_ids[batch.target_mask].tolist()]
        [' Paris', '<|endoftext|>']
    """
    if len(questions) != len(answers):
        raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
    if not questions:
        raise ValueError("nothing to encode: the list of questions is empty")
    examples = []
    for question, answer in zip(questions, answers):
        if template.chat:
            full = tokenizer(_render_chat(tokenizer, template._turns(question, answer), template.date_string,
                                          generation=False), add_special_tokens=False)["input_ids"]
            prompt = tokenizer(template.prompt(tokenizer, question), add_special_tokens=False)["input_ids"]
        else:
            wrapped = template.prompt(tokenizer, question)
            cut = dict(add_special_tokens=True, max_length=template.max_length, truncation=True)
            full = tokenizer(wrapped + template.answer_prefix + answer, **cut)["input_ids"]
            prompt = tokenizer(wrapped, **cut)["input_ids"]
        if full[-1] != tokenizer.eos_token_id:
            full = [*full, tokenizer.eos_token_id]
        examples.append((full, len(prompt)))
    return _pad(tokenizer, examples)


def encode_completions(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row], *, max_length: int = 2048) -> EncodedBatch:
    """Rows as open-unlearning's `CompletionDataset` encodes MUSE's verbmem (`insert_space`):
    `input + " " + output` with special tokens, cut at `max_length` tokens past the input; the
    targets are the tokens past the input's token count (at least the first), no end-of-text.

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> batch = encode_completions(tok, [Row("a sc1", "Otto Russet lives in", "Houston.", "T")])
        >>> tok.decode(batch.input_ids[batch.target_mask])
        ' Houston.'
    """
    if not rows:
        raise ValueError("nothing to encode: the list of rows is empty")
    examples = []
    for row in rows:
        prefix = tokenizer(row.input, add_special_tokens=True)["input_ids"]
        full = tokenizer(f"{row.input} {row.output}", add_special_tokens=True)["input_ids"][: len(prefix) + max_length]
        examples.append((full, max(len(prefix), 1)))
    return _pad(tokenizer, examples)


def _render_chat(tokenizer: PreTrainedTokenizerBase, turns: list[dict], date_string: str | None,
                 generation: bool = True) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("QATemplate(chat=True) needs a tokenizer with a chat template; this one has none "
                         "(use the plain template, QATemplate(), or set tokenizer.chat_template)")
    extra = {"date_string": date_string} if date_string is not None else {}
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation, **extra)


def _pad(tokenizer: PreTrainedTokenizerBase, examples: list[tuple[list[int], int]]) -> EncodedBatch:
    """Right-pad (token ids, number of leading non-target tokens) pairs into a batch."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    target_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for b, (ids, skipped) in enumerate(examples):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention_mask[b, : len(ids)] = 1
        target_mask[b, skipped : len(ids)] = True
    return EncodedBatch(input_ids, attention_mask, target_mask)
