"""Locating the subject and the answer in token space."""

from __future__ import annotations

import warnings

from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.validation import integer


class MultiTokenAnswerWarning(UserWarning):
    """The answer is several tokens; the trace scores the first."""


class AnswerSpacingWarning(UserWarning):
    """The answer follows the prompt without a space, which is probably not what was meant."""


class UnknownFactWarning(UserWarning):
    """The model's clean top-1 is not the answer: it does not know the fact being traced."""


def subject_token_range(lm: LoadedModel, prompt: str, subject: str) -> tuple[int, int]:
    """[start, end) of the tokens that cover the first occurrence of `subject` in `prompt`.

    Examples:
        >>> from causal_unlearn import load_model
        >>> lm = load_model("olmo-tiny-bios")
        >>> subject_token_range(lm, "What is Otto Russet's phone number?", "Otto Russet")
        (3, 5)
    """
    if not subject:
        raise ValueError("the subject is empty; pass the words of the prompt to corrupt, e.g. 'Otto Russet'")
    if subject != subject.strip():
        where = "ends" if subject[-1:].isspace() else "starts"
        raise ValueError(
            f"subject {subject!r} {where} with whitespace, which tokenizers attach to the neighbouring word, so a "
            f"token outside the subject would be corrupted; pass {subject.strip()!r}")
    start_char = prompt.find(subject)
    encoding = lm.tokenizer(prompt, return_offsets_mapping=True)
    if start_char < 0:
        tokens = [lm.tokenizer.decode([i]) for i in encoding["input_ids"]]  # as text, not BPE glyphs
        raise ValueError(
            f"subject {subject!r} does not occur in prompt {prompt!r} (searched the prompt text; the prompt "
            f"tokenizes as {tokens}). Pass the subject exactly as it is written in the prompt."
        )
    end_char = start_char + len(subject)
    covering = [
        i for i, (a, b) in enumerate(encoding["offset_mapping"])
        if b > a and a < end_char and b > start_char  # special tokens have empty spans
    ]
    if not covering:  # a tokenizer that drops text it has no tokens for, or one without offsets
        raise ValueError(f"no token of the prompt covers the subject {subject!r} (the prompt tokenizes as "
                         f"{encoding['input_ids']}, offsets {encoding['offset_mapping']}); check that the tokenizer "
                         "encodes this text and reports character offsets")
    occurrences = prompt.count(subject)
    if occurrences > 1:
        pieces = ", ".join(repr(lm.tokenizer.decode([encoding["input_ids"][i]])) for i in covering)
        warnings.warn(f"subject {subject!r} occurs {occurrences} times in the prompt; the first (tokens "
                      f"{covering[0]}-{covering[-1] + 1}: {pieces}) is corrupted", stacklevel=3)
    return covering[0], covering[-1] + 1


def answer_token_id(lm: LoadedModel, prompt: str, answer: str | int) -> int:
    """The token the trace scores: an id as given, or the first token of `answer` as it follows
    `prompt` (tokenized together, so a leading space is handled as the model sees it)."""
    if not isinstance(answer, str):
        try:
            answer = integer("answer", answer)
        except TypeError:
            raise TypeError(f"the answer must be text or a token id (an integer), got {answer!r:.60}") from None
        vocabulary = getattr(lm.model.config, "vocab_size", None) or len(lm.tokenizer)
        if not 0 <= answer < vocabulary:
            raise ValueError(f"answer token id {answer} is outside the model's vocabulary (size {vocabulary})")
        return answer
    if not answer:
        raise ValueError("the answer is an empty string; give the text that follows the prompt, e.g. ' Paris'")
    prompt_ids = lm.tokenizer(prompt)["input_ids"]
    full_ids = lm.tokenizer(prompt + answer)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(
            f"appending answer {answer!r} changes how the prompt tokenizes; start the answer at a token "
            "boundary (usually with a leading space) or pass the answer token id"
        )
    answer_ids = full_ids[len(prompt_ids):]
    spaced = _spaced_alternative(lm, prompt, answer, prompt_ids)
    if spaced is not None and spaced[0] != answer_ids[0]:
        pieces = [lm.tokenizer.decode([i]) for i in answer_ids]
        warnings.warn(
            f"answer {answer!r} follows the prompt without a space, so it is scored as the token {pieces[0]!r} "
            f"(of {pieces}); did you mean {' ' + answer!r}, which is {len(spaced)} token(s) "
            f"{[lm.tokenizer.decode([i]) for i in spaced]}?", AnswerSpacingWarning, stacklevel=4)
        return answer_ids[0]
    if len(answer_ids) > 1:
        pieces = [lm.tokenizer.decode([i]) for i in answer_ids]
        warnings.warn(
            f"answer {answer!r} is {len(answer_ids)} tokens {pieces}; tracing scores the first, {pieces[0]!r}",
            MultiTokenAnswerWarning,
            stacklevel=3,
        )
    return answer_ids[0]


def _spaced_alternative(lm: LoadedModel, prompt: str, answer: str, prompt_ids: list[int]) -> list[int] | None:
    """The answer's tokens with a leading space, where the answer starts a word right after the
    prompt's last one (" Houston" meant, "Houston" written); None otherwise."""
    if not (answer[:1].isalpha() and prompt[-1:].isalpha()):  # a word glued to the last one: "inHouston"
        return None
    spaced = lm.tokenizer(prompt + " " + answer)["input_ids"]
    return spaced[len(prompt_ids):] if spaced[: len(prompt_ids)] == prompt_ids else None
