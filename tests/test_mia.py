"""The six membership-inference attacks against open-unlearning's definitions, written out here from
their code (evals/metrics/mia and evals/metrics/utils: one text at a time, labels with -100)."""

from __future__ import annotations

import copy
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from causal_unlearn.evaluation import mia

TEXTS = ["What is the capital of France? Paris", "Otto Russet lives in Houston, TX.", "zq xv kw rr",
         "The sum of 3 and 4 is 7."]
IGNORE = -100


def _batch(lm, text):
    ids = lm.tokenizer(text + lm.tokenizer.eos_token, return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[:, 0] = IGNORE  # the first token has nothing to predict it
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)


def _avg_loss(model, batch):  # evaluate_probability
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    shifted = batch["labels"][..., 1:]
    losses = nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="none")(logits[..., :-1, :].transpose(-1, -2), shifted)
    return float(losses.sum(-1) / (batch["labels"] != IGNORE).sum(-1))


def _tokenwise(model, batch, grad=False):  # tokenwise_logprobs and tokenwise_vocab_logprobs, one row
    with torch.set_grad_enabled(grad):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    log_probs = torch.log_softmax(logits, -1)[:, :-1, :]
    target = torch.gather(log_probs, 2, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    actual = (batch["labels"][0] != IGNORE).nonzero(as_tuple=True)[0][:-1]  # -1: the end-of-text prediction
    start, end = actual[0].item(), actual[-1].item()
    return target[0, start - 1 : end], log_probs[0, start - 1 : end]


def _min_k(lp, k):
    lp = lp.float().numpy()
    return -np.mean(np.sort(lp)[: max(1, int(len(lp) * k))])


def _min_k_plus_plus(lp, vocab, k):
    mu = (vocab.exp() * vocab).sum(-1)
    sigma = torch.clamp((vocab.exp() * vocab.square()).sum(-1) - mu.square(), min=1e-6)
    scores = (lp.numpy() - mu.numpy()) / torch.sqrt(sigma).numpy()
    return -np.mean(sorted(scores)[: max(1, int(len(scores) * k))])


def _gradnorm(lm, batch, p):
    model = copy.deepcopy(lm.model)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    lp, _ = _tokenwise(model, batch, grad=True)
    model.zero_grad()
    (-torch.mean(lp)).backward()
    return float(torch.stack([q.grad.norm(p=p) for q in model.parameters() if q.grad is not None]).mean())


@pytest.fixture(scope="module")
def other(builtin):
    """A reference model: the built-in one with its last MLP scaled."""
    model = builtin.copy()
    with torch.no_grad():
        model.model.model.layers[-1].mlp.down_proj.weight.mul_(0.5)
    return model


def test_each_attack_equals_open_unlearnings_definition(builtin, other):
    batches = [_batch(builtin, text) for text in TEXTS]
    expected = dict(
        loss=[_avg_loss(builtin.model, b) for b in batches],
        zlib=[_avg_loss(builtin.model, b) / len(zlib.compress(t.encode("utf-8"))) for b, t in zip(batches, TEXTS)],
        reference=[_avg_loss(builtin.model, b) - _avg_loss(other.model, b) for b in batches],
        min_k=[_min_k(_tokenwise(builtin.model, b)[0], 0.2) for b in batches],
        min_k_plus_plus=[_min_k_plus_plus(*_tokenwise(builtin.model, b), 0.2) for b in batches],
        gradnorm=[_gradnorm(builtin, b, 2) for b in batches],
    )
    got = dict(
        loss=mia.loss(builtin, TEXTS, batch_size=3, progress=False),
        zlib=mia.zlib(builtin, TEXTS, batch_size=3, progress=False),
        reference=mia.reference(builtin, TEXTS, reference_model=other, batch_size=3, progress=False),
        min_k=mia.min_k(builtin, TEXTS, batch_size=3, progress=False),
        min_k_plus_plus=mia.min_k_plus_plus(builtin, TEXTS, batch_size=3, progress=False),
        gradnorm=mia.gradnorm(builtin, TEXTS, progress=False),
    )
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert set(mia.ATTACKS) == set(expected)


def test_gradnorm_leaves_the_model_as_it_was(builtin):
    flags = {name: p.requires_grad for name, p in builtin.model.named_parameters()}
    before = {name: p.detach().clone() for name, p in builtin.model.named_parameters()}
    mia.gradnorm(builtin, TEXTS[:1], progress=False)
    for name, p in builtin.model.named_parameters():
        assert p.grad is None and p.requires_grad == flags[name] and torch.equal(p, before[name])


def test_the_auc_tells_trained_text_from_text_never_seen(builtin, world):
    """open-unlearning's convention: 1 when members (the forget rows, trained) score lower."""
    members = [f"{row.input} {row.output}" for row in world.forget[:12]]
    strangers = [f"{row.input} {row.output}" for row in world.holdout[:12]]
    assert mia.auc(mia.loss(builtin, members, progress=False), mia.loss(builtin, strangers, progress=False)) > 0.8
    assert mia.auc([1.0, 2.0], [0.5, 0.7]) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda lm: mia.min_k(lm, TEXTS, k=0), "k is the share"),
    (lambda lm: mia.gradnorm(lm, TEXTS, p=3), "1-, 2- or inf-norm"),
    (lambda lm: mia.loss(lm, "one text"), "list of strings"),
    (lambda lm: mia.gradnorm(lm, "one text"), "list of strings"),
    (lambda lm: mia.auc([], [0.1]), "needs members and non-members"),
])
def test_bad_input(builtin, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(builtin)
