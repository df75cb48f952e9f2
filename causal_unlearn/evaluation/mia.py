"""Membership inference: six standard attacks, each a score per text (lower: more likely a member),
and the AUC that separates members from non-members.

The scores follow open-unlearning's definitions and sign conventions (locuslab/open-unlearning,
`evals/metrics/mia`): LOSS (Yeom et al. 2018), ZLib (Carlini et al. 2021), Reference, GradNorm
(Wang et al. 2024), Min-K % (Shi et al. 2024) and Min-K %++ (Zhang et al. 2024). A text is scored
as its tokens followed by the end-of-text token, every token after the first a target (as
open-unlearning's collators label an answer); the token-wise attacks leave that last target out.
"""

from __future__ import annotations

import zlib as zlib_module
from typing import Callable, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from causal_unlearn.data.encoding import encode_documents
from causal_unlearn.evaluation.likelihood import target_logprobs
from causal_unlearn.models.loader import LoadedModel, require_loaded
from causal_unlearn.models.weights import trainable_only

Scores = list[float]


def loss(model: LoadedModel, texts: Sequence[str], *, batch_size: int = 16, progress: bool = True) -> Scores:
    """Mean negative log-likelihood per target token.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> trained, never_seen = world.forget[0], world.holdout[0]  # a member and a non-member
        >>> texts = [f"{row.input} {row.output}" for row in (trained, never_seen)]
        >>> member, nonmember = loss(lm, texts, progress=False)
        >>> member < nonmember
        True
    """
    return _per_text(model, texts, batch_size, progress, lambda lp, mask, logits: _mean(lp, mask))


def zlib(model: LoadedModel, texts: Sequence[str], *, batch_size: int = 16, progress: bool = True) -> Scores:
    """`loss` divided by the text's zlib-compressed length in bytes.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> len(zlib(lm, ["Paris is the capital of France."], progress=False))
        1
    """
    losses = loss(model, texts, batch_size=batch_size, progress=progress)
    return [value / len(zlib_module.compress(text.encode("utf-8"))) for value, text in zip(losses, texts)]


def reference(model: LoadedModel, texts: Sequence[str], *, reference_model: LoadedModel, batch_size: int = 16,
              progress: bool = True) -> Scores:
    """`loss` minus the reference model's `loss` on the same text.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> reference(lm, ["Paris is the capital of France."], reference_model=lm, progress=False)
        [0.0]
    """
    ours = loss(model, texts, batch_size=batch_size, progress=progress)
    theirs = loss(reference_model, texts, batch_size=batch_size, progress=progress)
    return [a - b for a, b in zip(ours, theirs)]


def min_k(model: LoadedModel, texts: Sequence[str], *, k: float = 0.2, batch_size: int = 16,
          progress: bool = True) -> Scores:
    """Minus the mean of the lowest `k` share of the token log-probabilities (at least one).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> texts = [f"{row.input} {row.output}" for row in (world.forget[0], world.holdout[0])]
        >>> member, nonmember = min_k(lm, texts, progress=False)
        >>> member < nonmember
        True
    """
    _check_k(k)
    return _per_text(model, texts, batch_size, progress,
                     lambda lp, mask, logits: _lowest_mean(lp[_token_wise(mask)], k))


def min_k_plus_plus(model: LoadedModel, texts: Sequence[str], *, k: float = 0.2, batch_size: int = 16,
                    progress: bool = True) -> Scores:
    """`min_k` of each token's log-probability standardized by the mean and variance of the
    log-probability under the model's own next-token distribution there.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> len(min_k_plus_plus(lm, ["Paris is the capital of France."], progress=False))
        1
    """
    _check_k(k)

    def score(lp, mask, logits):
        logprobs = logits[:-1].float().log_softmax(-1)  # the distribution that predicts token t + 1
        mu = (logprobs.exp() * logprobs).sum(-1)
        sigma = ((logprobs.exp() * logprobs.square()).sum(-1) - mu.square()).clamp_min(1e-6)
        standardized = torch.nn.functional.pad((lp[1:] - mu) / sigma.sqrt(), (1, 0))
        return _lowest_mean(standardized[_token_wise(mask)], k)

    return _per_text(model, texts, batch_size, progress, score)


def gradnorm(model: LoadedModel, texts: Sequence[str], *, p: float = 2.0, progress: bool = True) -> Scores:
    """The mean over the model's parameters of the p-norm of the gradient of the text's mean
    token loss (token-wise targets). The model is left as it was: no `.grad`, the same flags.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> gradnorm(lm, ["Paris is the capital of France."], progress=False)[0] > 0
        True
    """
    if p not in (1, 2, float("inf")):
        raise ValueError(f"gradnorm takes the 1-, 2- or inf-norm (p=1, 2 or float('inf')), got p={p!r}")
    lm = require_loaded(model, "gradnorm")
    _check_texts(texts)
    parameters = dict(lm.model.named_parameters())
    scores = []
    with trainable_only(lm.model, parameters):
        for text in tqdm(texts, desc="gradnorm", unit="text", disable=not progress or len(texts) < 8):
            batch = _encode(lm, [text])
            with torch.enable_grad():
                logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                lp = target_logprobs(logits, batch.input_ids)[0]
                grads = torch.autograd.grad(-lp[_token_wise(batch.target_mask[0])].mean(), list(parameters.values()),
                                            allow_unused=True)
            scores.append(float(torch.stack([g.norm(p=p) for g in grads if g is not None]).mean()))
    return scores


def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """The ROC AUC of telling members from non-members by score, 1 where every member scores
    lower (more likely) than every non-member, 0.5 where the scores say nothing.

    Examples:
        >>> auc([0.1, 0.2], [0.5, 0.9]), auc([0.5], [0.5])
        (1.0, 0.5)
    """
    from sklearn.metrics import roc_auc_score

    if not member_scores or not nonmember_scores:
        raise ValueError(f"an AUC needs members and non-members, got {len(member_scores)} and {len(nonmember_scores)}")
    labels = [0] * len(member_scores) + [1] * len(nonmember_scores)
    return float(roc_auc_score(labels, [*member_scores, *nonmember_scores]))


ATTACKS: dict[str, Callable[..., Scores]] = dict(loss=loss, zlib=zlib, reference=reference, gradnorm=gradnorm,
                                                  min_k=min_k, min_k_plus_plus=min_k_plus_plus)


def _encode(lm: LoadedModel, texts: Sequence[str]):
    eos = lm.tokenizer.eos_token or ""
    return encode_documents(lm.tokenizer, [text + eos for text in texts]).to(lm.device)


@torch.no_grad()
def _per_text(model: LoadedModel, texts: Sequence[str], batch_size: int, progress: bool,
              score: Callable[[Tensor, Tensor, Tensor], float]) -> Scores:
    """`score(token log-probs, target mask, logits)` of each text, one row at a time after a
    batched forward."""
    lm = require_loaded(model, "membership inference")
    _check_texts(texts)
    scores: Scores = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="membership", unit="batch", disable=not progress or len(starts) < 2):
        batch = _encode(lm, texts[start : start + batch_size])
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        lp = target_logprobs(logits, batch.input_ids)
        scores += [float(score(lp[row], batch.target_mask[row], logits[row])) for row in range(len(lp))]
    return scores


def _mean(lp: Float[Tensor, " pos"], mask: Bool[Tensor, " pos"]) -> float:
    return float(-(lp * mask).sum() / mask.sum())


def _token_wise(mask: Bool[Tensor, " pos"]) -> Bool[Tensor, " pos"]:
    """The targets but the last (the end-of-text token), as open-unlearning's token-wise attacks read them."""
    kept = mask.clone()
    kept[int(mask.nonzero().max())] = False
    return kept


def _lowest_mean(values: Float[Tensor, " n"], k: float) -> float:
    if values.numel() == 0:
        return 0.0
    n = max(1, int(values.numel() * k))
    return float(-values.float().sort().values[:n].mean())


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("texts is a list of strings; wrap a single text as [text]")


def _check_k(k: float) -> None:
    if not 0 < k <= 1:
        raise ValueError(f"k is the share of the lowest token scores to average, in (0, 1]; got {k!r}")
