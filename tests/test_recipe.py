"""The training recipe runs end to end on a micro configuration, and learns."""

import json

import torch

from causal_unlearn import load_model
from causal_unlearn.builtin.train import RecipeConfig, answer_example, main, train
from causal_unlearn.data.rows import Row

MICRO = ["--n-forget", "3", "--n-retain", "3", "--n-holdout", "2", "--n-sums", "4", "--d-model", "32",
         "--d-mlp", "64", "--n-layers", "2", "--n-heads", "2", "--epochs", "3", "--eval-every-epochs", "3",
         "--vocab-size", "400"]


# Three people, two bios each, no general knowledge: about 10 s on 2 cores.
LEARNING = RecipeConfig(n_forget=2, n_retain=1, n_holdout=1, n_sums=2, d_model=64, d_mlp=128, n_layers=2, n_heads=2,
                        n_bios=2, questions_per_attribute=2, general_knowledge_repeats=0, vocab_size=400, lr=3e-3,
                        warmup_steps=10, epochs=100, eval_every_epochs=50)


def test_a_few_seconds_of_training_learn_the_trained_facts():
    report = train(LEARNING, progress=False)
    first, last = report["history"]
    assert last["loss"] < 0.2 * first["loss"], report["history"]
    # measured: 1.0 / 1.0 / 0.0 (a fresh model answers none of them)
    assert last["forget_qa_exact_match"] >= 0.8 and last["retain_qa_exact_match"] >= 0.8, last
    assert last["holdout_qa_exact_match"] == 0.0, last


def test_micro_recipe_trains_saves_and_reloads(tmp_path):
    report = main(MICRO + ["--out", str(tmp_path)])
    saved = json.loads((tmp_path / "training_report.json").read_text())
    assert saved["config"]["epochs"] == 3 and saved["history"][-1]["epoch"] == 3
    losses = [h["loss"] for h in report["history"]]
    assert all(loss == loss for loss in losses)
    lm = load_model(tmp_path, device="cpu")
    assert lm.architecture.name == "olmo" and lm.n_layers == 2
    logits = lm.logits(lm.to_tokens("What is the capital of France?"))
    assert torch.isfinite(logits).all()


def test_recipe_is_deterministic(tmp_path):
    main(MICRO + ["--out", str(tmp_path / "a")])
    main(MICRO + ["--out", str(tmp_path / "b")])
    a, b = (load_model(tmp_path / x, device="cpu").model.state_dict() for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_answer_only_loss_mask(builtin):
    example = answer_example(builtin.tokenizer, Row("xqa0", "What is 2 plus 3?", "5", "GeneralKnowledge"))
    answer_ids = [i for i, m in zip(example.input_ids, example.loss_mask) if m]
    assert builtin.tokenizer.decode(answer_ids) == " 5" + builtin.tokenizer.eos_token
    assert RecipeConfig().n_layers >= 8
