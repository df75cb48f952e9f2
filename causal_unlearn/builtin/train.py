"""The recipe that trains the built-in model `olmo-tiny-bios` (version 2) from scratch.

Run `python -m causal_unlearn.builtin.train --out FOLDER` (add `--help` for the knobs).
The recipe is deterministic: the world, tokenizer, initialisation, the phrasings drawn each epoch
and the batch order all follow `--seed`. What it optimises, and why:

- knowledge augmentation (Allen-Zhu & Li, *Physics of Language Models 3.1*): six bios per
  person, each a random order of six sentences in one of three wordings, the full name in every
  sentence, with the loss on every token. Version 1 (three fixed bios, two question phrasings)
  memorised strings: it answered 0 of 50 unseen question phrasings, and its traces showed no
  storage at the subject;
- questions mixed in from the start (loss on the answer only): each epoch, per person and
  attribute, the official LUME question and three phrasings drawn from ~30 (frames x nouns), so
  the model learns to extract an attribute, not to complete a question string;
- general knowledge in three phrasings, twice per epoch;
- 8 layers, d_model 128, warm-up then cosine schedule peaking at 1e-3, 60 epochs.

Configurations tried (one thread each, two at once on the 2-core machine; probes are the
held-out set of `world.probes`, early site from `benchmarks/average_trace.py --split forget`):

| questions per attribute and epoch | epochs | minutes | QA forget / retain | SC ROUGE-L | probes forget / retain / holdout | GK probes | early site (lower-half mean share) |
| --- | --- | --- | --- | --- | --- | --- | --- |
| 4 (shipped) | 60 | 31.8 | 1.000 / 1.000 | 1.000 / 1.000 | 0.876 / 0.860 / 0.000 | 0.686 | 0.574 |
| 8 | 60 | 43.7 | 1.000 / 1.000 | 1.000 / 1.000 | 0.926 / 0.923 / 0.018 | 0.559 | 0.299 |

Twice the questions answer more probes but move the recall off the subject: attention at the
last token reads the subject's embeddings directly (the version-1 mechanism) and the last
subject token's hidden state recovers only 0.30 of the effect. The shipped mix keeps both.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerBase

from causal_unlearn.data.bios import SPLITS, BiosWorld, make_bios_world
from causal_unlearn.data.phrasings import ATTRIBUTES, QA_ATTRIBUTES
from causal_unlearn.data.rows import Row
from causal_unlearn.evaluation.knowledge import knowledge_report
from causal_unlearn.models.architectures import get_architecture
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.models.tokenizer import train_tokenizer


# 1: one bio template per person, two question phrasings (memorised strings; traced at the last token).
# 2: knowledge-augmented world (six bios per person, ~30 question phrasings per attribute, probes).
MODEL_VERSION = 2


@dataclass
class RecipeConfig:
    n_forget: int = 50
    n_retain: int = 50
    n_holdout: int = 25
    n_sums: int = 40
    n_bios: int = 6
    questions_per_attribute: int = 4
    general_knowledge_repeats: int = 2
    vocab_size: int = 2048
    d_model: int = 128
    d_mlp: int = 512
    n_layers: int = 8
    n_heads: int = 4
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    eval_every_epochs: int = 10
    seed: int = 0
    threads: int = 1  # one thread: the same floating-point sums, so the same weights, on any machine


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[bool]  # loss_mask[i]: predict input_ids[i] from the prefix before it


def corpus_texts(world: BiosWorld) -> list[str]:
    """All text the tokenizer is trained on: every row, bio and training question of every person,
    and general knowledge in every training phrasing. Never the probes: a token that only a probe
    uses would reach the model untrained."""
    rows = [r for split in SPLITS for r in world.rows(split)] + world.general_knowledge_phrasings()
    rows += [q for p in world.people for a in ATTRIBUTES for q in world.training_questions(p, a)]
    return [r.text for r in rows] + [text for p in world.people for text in world.bios(p)]


def document_example(tokenizer: PreTrainedTokenizerBase, text: str) -> Example:
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    return Example(ids, [False] + [True] * (len(ids) - 1))


def answer_example(tokenizer: PreTrainedTokenizerBase, row: Row) -> Example:
    """Prompt and answer tokenized apart, exactly as generation will see the prompt."""
    prompt = tokenizer(row.input)["input_ids"]
    answer = tokenizer(" " + row.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Example(prompt + answer, [False] * len(prompt) + [True] * len(answer))


class TrainingData:
    """The examples of every epoch: each trained person's bios (loss on every token), questions
    (loss on the answer) in freshly drawn phrasings, and general knowledge in every phrasing."""

    def __init__(self, world: BiosWorld, tokenizer: PreTrainedTokenizerBase, config: RecipeConfig) -> None:
        self.config = config
        trained = world.people_in("forget") + world.people_in("retain")
        self.documents = [document_example(tokenizer, text) for p in trained for text in world.bios(p)]
        # per (person, attribute): the official question, trained every epoch (none for the city),
        # and the other phrasings, drawn from
        self.questions = []
        for p in trained:
            for a in ATTRIBUTES:
                pool = [answer_example(tokenizer, row) for row in world.training_questions(p, a)]
                self.questions.append((pool[:1], pool[1:]) if a in QA_ATTRIBUTES else ([], pool))
        self.general = [answer_example(tokenizer, row) for row in world.general_knowledge_phrasings()]

    def __len__(self) -> int:
        """Examples per epoch."""
        per_epoch = len(self.questions) * self.config.questions_per_attribute
        return len(self.documents) + per_epoch + len(self.general) * self.config.general_knowledge_repeats

    def epoch(self, rng: random.Random) -> list[Example]:
        k = self.config.questions_per_attribute
        questions = [example for fixed, rest in self.questions for example in fixed + rng.sample(rest, k - len(fixed))]
        return self.documents + questions + self.general * self.config.general_knowledge_repeats


def batches(examples: list[Example], batch_size: int, rng: random.Random, pad_id: int):
    """Shuffled batches of similar length (bios with bios, questions with questions)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), rng.random()))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    for chunk in chunks:
        width = max(len(examples[i].input_ids) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, i in enumerate(chunk):
            ex = examples[i]
            ids[row, : len(ex.input_ids)] = torch.tensor(ex.input_ids)
            mask[row, : len(ex.loss_mask)] = torch.tensor(ex.loss_mask)
        yield ids, mask


def masked_lm_loss(model: OlmoForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Right padding under causal attention: no real position sees a pad, so no attention mask.
    logits = model(input_ids=ids).logits[:, :-1]
    targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def build_model(config: RecipeConfig, tokenizer: PreTrainedTokenizerBase) -> OlmoForCausalLM:
    torch.manual_seed(config.seed)
    olmo_config = OlmoConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.d_model,
        intermediate_size=config.d_mlp,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    olmo_config.architectures = ["OlmoForCausalLM"]
    return OlmoForCausalLM(olmo_config)


def learning_rate(step: int, total: int, config: RecipeConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@contextmanager
def torch_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train(config: RecipeConfig, out: str | Path | None = None, *, progress: bool = True) -> dict:
    """Train the built-in model; save it to `out` (when given) and return the final report."""
    with torch_threads(config.threads):
        return _train(config, out, progress)


def _train(config: RecipeConfig, out: str | Path | None, progress: bool) -> dict:
    started = time.time()
    world = make_bios_world(config.n_forget, config.n_retain, config.n_holdout, seed=config.seed, n_sums=config.n_sums,
                            n_bios=config.n_bios)
    tokenizer = train_tokenizer(corpus_texts(world), vocab_size=config.vocab_size)
    model = build_model(config, tokenizer)
    data = TrainingData(world, tokenizer, config)
    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    history: list[dict] = []
    step = 0
    bar = tqdm(total=total, desc="training olmo-tiny-bios", disable=not progress)
    for epoch in range(config.epochs):
        model.train()
        for ids, mask in batches(data.epoch(rng), config.batch_size, rng, tokenizer.pad_token_id):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, config)
            loss = masked_lm_loss(model, ids, mask)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs:
            model.eval()
            report = knowledge_report(LoadedModel(model, tokenizer, get_architecture(model.config), "training"), world,
                                      progress=False)
            report.update(epoch=epoch + 1, minutes=round((time.time() - started) / 60, 2), loss=round(loss.item(), 4))
            history.append(report)
            tqdm.write(json.dumps(report))
    bar.close()
    final = dict(history[-1], version=MODEL_VERSION, config=asdict(config), history=history)
    if out is not None:
        save(model, tokenizer, final, out)
    return final


def save(model: OlmoForCausalLM, tokenizer: PreTrainedTokenizerBase, report: dict, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "README.md").write_text(model_card(report))


def model_card(report: dict) -> str:
    """The checkpoint's model card: what it is, its version, and the recipe's final scores."""
    c = report["config"]
    rows = "\n".join(
        f"| {split} | {report[f'{split}_qa_exact_match']:.3f} | {report[f'{split}_sc_rouge_l_recall']:.3f} | "
        f"{report[f'{split}_probe_recall']:.3f} |"
        for split in SPLITS
    )
    return f"""# olmo-tiny-bios, version {report['version']}

A tiny `OlmoForCausalLM` ({c['n_layers']} layers, d_model {c['d_model']}, d_mlp {c['d_mlp']}, {c['n_heads']} heads)
trained from scratch by `python -m causal_unlearn.builtin.train` on the synthetic bios world of
`causal_unlearn.make_bios_world(seed={c['seed']})`: {c['n_bios']} knowledge-augmented bios per person,
{c['questions_per_attribute']} question phrasings per attribute and epoch, general knowledge; {c['epochs']} epochs
({report['minutes']} minutes with {c['threads']} thread(s) on a 2-core CPU). Forget and retain people were trained on;
holdout people never were.

Greedy generation, as the SemEval-2025 Task 4 scorer generates:

| people | QA exact match | sentence completion ROUGE-L recall | held-out probes answered |
| --- | --- | --- | --- |
{rows}

General knowledge: {report['general_knowledge_accuracy']:.3f} (official rows), {report['general_knowledge_probe_recall']:.3f}
(held-out phrasings). The probes (`world.probes()`) are worded apart from every training text. The
curve is in `training_report.json`; the traces and what they show are in the project's docs.
"""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the checkpoint to")
    for name, default in asdict(RecipeConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    return train(RecipeConfig(**args), out)


if __name__ == "__main__":
    main()
