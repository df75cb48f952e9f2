"""Still decodable? A linear probe on the hidden state at the subject's last token.

Trained on retain subjects (the model still knows them), applied to forget subjects: if it still
reads a forgotten subject's city from the residual stream, the fact is still in the model, only
no longer said (Belrose et al. 2023 on linear read-outs; Lynch et al. 2024 on unlearning)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from causal_unlearn.data.probes import Probe
from causal_unlearn.models.hooks import record
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.tokens import subject_token_range


@torch.no_grad()
def subject_states(model: LoadedModel, probes: Sequence[Probe], *, batch_size: int = 64,
                   progress: bool = True) -> Float[Tensor, "probe layer d_model"]:
    """The residual stream after each layer (the architecture's `block_output`, before any final
    norm) at the last token of each probe's subject.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> subject_states(lm, cu.make_bios_world().probes("forget")[:3], progress=False).shape
        torch.Size([3, 8, 128])
    """
    missing = [p.prompt for p in probes if not p.subject]
    if missing:
        raise ValueError(f"{len(missing)} probe(s) name no subject (first: {missing[0]!r}); decoding reads the "
                         "state at the subject's last token, so give each Probe its subject")
    positions = [subject_token_range(model, p.prompt, p.subject)[1] - 1 for p in probes]
    blocks = [model.architecture.block_output(layer) for layer in range(model.n_layers)]
    previous_side, model.tokenizer.padding_side = model.tokenizer.padding_side, "right"
    states = []
    try:
        starts = range(0, len(probes), batch_size)
        for start in tqdm(starts, desc="hidden states", unit="batch", disable=not progress or len(starts) < 2):
            chunk = probes[start : start + batch_size]
            batch = model.tokenizer([p.prompt for p in chunk], return_tensors="pt", padding=True).to(model.device)
            with record(model.model, blocks) as hidden:
                model.model(**batch)
            at = torch.tensor(positions[start : start + batch_size], device=model.device)
            rows = torch.arange(len(chunk), device=model.device)
            states.append(torch.stack([hidden[block][rows, at] for block in blocks], dim=1).float().cpu())
    finally:
        model.tokenizer.padding_side = previous_side
    return torch.cat(states)


def decoding_accuracy(
    train_states: Float[Tensor, "n layer d_model"],
    train_labels: Sequence[str],
    test_states: Float[Tensor, "m layer d_model"],
    test_labels: Sequence[str],
) -> tuple[list[float], float]:
    """Per layer, the accuracy on the test states of a logistic regression fitted on the train
    states; and the accuracy of always guessing the train set's most common label (chance).

    Examples:
        >>> _ = torch.manual_seed(0); x = torch.randn(40, 1, 4); labels = ["a" if v > 0 else "b" for v in x[:, 0, 0]]
        >>> accuracy, chance = decoding_accuracy(x[:20], labels[:20], x[20:], labels[20:])
        >>> accuracy[0] > chance
        True
    """
    from sklearn.linear_model import LogisticRegression  # scikit-learn loads only when decoding runs
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(train_labels)) < 2:
        raise ValueError("decoding needs at least two distinct labels among the training subjects")
    common = Counter(train_labels).most_common(1)[0][0]
    chance = float(np.mean([label == common for label in test_labels]))
    accuracy = []
    for layer in range(train_states.shape[1]):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        classifier.fit(train_states[:, layer].numpy(), list(train_labels))
        accuracy.append(float(classifier.score(test_states[:, layer].numpy(), list(test_labels))))
    return accuracy, chance

