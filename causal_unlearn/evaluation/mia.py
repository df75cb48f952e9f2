"""Membership inference: six standard attacks, each a score per text (lower: more likely a member),
and the AUC that separates members from non-members.

The scores follow open-unlearning's definitions and sign conventions (locuslab/open-unlearning,
`evals/metrics/mia`): LOSS (Yeom et al. 2018), ZLib (Carlini et al. 2021), Reference, GradNorm
(Wang et al. 2024), Min-K % (Shi et al. 2024) and Min-K %++ (Zhang et al. 2024). A text is scored
as its tokens followed by the end-of-text token, every token after the first a target (as
open-unlearning's collators label an answer); the token-wise attacks leave that last target out.

`membership_inference` runs the chosen attacks on members and non-members (`MIAConfig`) and
returns their AUCs (`MIAResult`); `privleak` compares an AUC with a retain model's.
"""

from __future__ import annotations

import zlib as zlib_module
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from causal_unlearn.data.encoding import encode_documents
from causal_unlearn.data.rows import Row
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


NO_REFERENCE = "no reference model (pass reference_model=: e.g. a model trained without the members)"


@dataclass(frozen=True)
class MIAConfig:
    """Settings of `membership_inference`. `attacks=None` runs all six, `reference` only where a
    reference model is given (else it is skipped with the reason in `MIAResult.skipped`); an
    attack named in `attacks` must be able to run. `k` is the share of the lowest token scores
    Min-K and Min-K++ average (0.4, open-unlearning's TOFU setting), `p` gradnorm's norm,
    `batch_size` the texts per forward. `reference_auc`, the AUC of `privleak_attack` for a
    retain model (one never trained on the members) on the same texts, adds `MIAResult.privleak`.

    Examples:
        >>> MIAConfig(attacks=("loss", "min_k"), k=0.2).attacks
        ('loss', 'min_k')
    """

    attacks: tuple[str, ...] | None = None
    k: float = 0.4
    p: float = 2.0
    batch_size: int = 16
    reference_auc: float | None = None
    privleak_attack: str = "min_k"

    def __post_init__(self) -> None:
        if isinstance(self.attacks, str):
            raise TypeError(f"attacks is a tuple of attack names, e.g. ({self.attacks!r},)")
        if self.attacks is not None:
            unknown = [a for a in self.attacks if a not in ATTACKS]
            if unknown or not self.attacks:
                raise ValueError(f"unknown membership attack(s) {unknown or self.attacks!r}; choose from "
                                 f"{tuple(ATTACKS)} (or attacks=None: all of them)")
        _check_k(self.k)
        if self.p not in (1, 2, float("inf")):
            raise ValueError(f"gradnorm takes the 1-, 2- or inf-norm (p=1, 2 or float('inf')), got p={self.p!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.privleak_attack not in ATTACKS:
            raise ValueError(f"privleak_attack must be one of {tuple(ATTACKS)}, got {self.privleak_attack!r}")
        if self.reference_auc is not None:
            if not 0 <= self.reference_auc < 1:
                raise ValueError(f"reference_auc is the retain model's AUC, in [0, 1); got {self.reference_auc!r}")
            if self.attacks is not None and self.privleak_attack not in self.attacks:
                raise ValueError(f"privleak compares the {self.privleak_attack!r} AUC, which attacks={self.attacks!r} "
                                 "leaves out; add it or set privleak_attack to one of them")


@dataclass(frozen=True)
class MIAResult:
    """What `membership_inference` measured: `aucs` (attack -> AUC; 1 where every member scores
    as more likely than every non-member, 0.5 where the attack cannot tell them apart), each
    text's score per attack (`member_scores`, `nonmember_scores`; lower: more likely a member),
    the attacks `skipped` and why, and `privleak` where `MIAConfig.reference_auc` was given.

    Examples:
        >>> MIAResult({"loss": 0.75}, {"loss": [0.5, 2.0]}, {"loss": [1.0]}).aucs["loss"]
        0.75
    """

    aucs: dict[str, float]
    member_scores: dict[str, Scores] = field(repr=False)
    nonmember_scores: dict[str, Scores] = field(repr=False)
    skipped: dict[str, str] = field(default_factory=dict)
    privleak: float | None = None


def membership_inference(model: LoadedModel, members: Sequence[Row | str], nonmembers: Sequence[Row | str], *,
                         config: MIAConfig = MIAConfig(), reference_model: LoadedModel | None = None,
                         progress: bool = True) -> MIAResult:
    """Run `config.attacks` on the member and non-member texts (rows are read as `row.text`,
    prompt and answer) and return each attack's `auc`. For unlearning, as open-unlearning does
    for TOFU, the members are the forget rows and the non-members rows the model never saw: an
    AUC near 0.5 says the forget rows look as unseen as they do.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> result = cu.membership_inference(lm, world.forget[:6], world.holdout[:6],
        ...                                  config=cu.MIAConfig(attacks=("loss", "min_k")), progress=False)
        >>> result.aucs["loss"] > 0.8, result.skipped
        (True, {})
    """
    lm = require_loaded(model, "membership_inference")
    if isinstance(members, str) or isinstance(nonmembers, str):
        raise TypeError("members and nonmembers are lists of rows or texts; wrap a single text as [text]")
    if not members or not nonmembers:
        raise ValueError(f"membership inference needs members and non-members, got {len(members)} and "
                         f"{len(nonmembers)} (for unlearning: the forget rows and rows the model never saw)")
    wanted, skipped = config.attacks or tuple(ATTACKS), {}
    if reference_model is not None:
        require_loaded(reference_model, "the reference attack")
    elif "reference" in wanted:
        if config.attacks is not None:
            raise ValueError("the 'reference' attack needs reference_model= (e.g. a model trained without the "
                             "members); pass one or leave it out of MIAConfig(attacks=...)")
        skipped["reference"] = NO_REFERENCE
    if config.reference_auc is not None and config.privleak_attack in skipped:
        raise ValueError(f"privleak compares the {config.privleak_attack!r} AUC, which is skipped: "
                         f"{skipped[config.privleak_attack]}")
    texts = [[_text(item) for item in group] for group in (members, nonmembers)]
    scores: dict[str, tuple[Scores, Scores]] = {}
    for name in (a for a in wanted if a not in skipped):
        options = dict(p=config.p) if name == "gradnorm" else dict(batch_size=config.batch_size)
        if name in ("min_k", "min_k_plus_plus"):
            options["k"] = config.k
        if name == "reference":
            options["reference_model"] = reference_model
        scores[name] = tuple(ATTACKS[name](lm, group, progress=progress, **options) for group in texts)
    aucs = {name: auc(*pair) for name, pair in scores.items()}
    leak = None if config.reference_auc is None else privleak(aucs[config.privleak_attack], config.reference_auc)
    return MIAResult(aucs, {name: pair[0] for name, pair in scores.items()},
                     {name: pair[1] for name, pair in scores.items()}, skipped, leak)


def privleak(auc_value: float, reference_auc: float) -> float:
    """open-unlearning's (and MUSE's) PrivLeak: the relative gap, in percent, between an AUC and
    a retain model's on the same texts, in MUSE's terms (1 - AUC): ((1 - auc) - (1 - ref)) /
    (1 - ref) * 100. Near 0: the members look as unseen as to a model that never saw them;
    negative: they still look trained (under-unlearned); positive: less likely than unseen texts
    (over-unlearned).

    Examples:
        >>> privleak(0.5, 0.5), privleak(0.75, 0.5), privleak(0.25, 0.5)
        (0.0, -50.0, 50.0)
    """
    if not 0 <= reference_auc < 1:
        raise ValueError(f"reference_auc is the retain model's AUC, in [0, 1); got {reference_auc!r}")
    return ((1 - auc_value) - (1 - reference_auc)) / (1 - reference_auc) * 100


def _text(item: Row | str) -> str:
    if isinstance(item, Row):
        return item.text
    if isinstance(item, str):
        return item
    raise TypeError(f"members and nonmembers hold rows (causal_unlearn.Row) or texts, got a {type(item).__name__}")
