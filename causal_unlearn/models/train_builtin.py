"""The recipe that trains the built-in model `olmo-tiny-bios` from scratch.

Run `python -m causal_unlearn.models.train_builtin --out FOLDER` (add `--help` for the knobs).
The recipe is deterministic: the world, tokenizer, initialisation and batch order all follow
`--seed`. What it optimises, and why:

- bios (three paraphrases per person) with the loss on every token, so sentence completion and
  the "<name> was born on" / "<name> lives in" trace prompts are trained text;
- questions (the LUME phrasing and one paraphrase per attribute) and general-knowledge rows with
  the loss on the answer only: the prompt is given at test time, so its tokens need no capacity;
- general-knowledge rows repeated, since each person is seen in five views per epoch;
- a small, deep model (8 layers, d_model 128) with a warm-up then cosine schedule peaking at
  1e-3: on this 2-core CPU it gets three times the steps per minute of d_model 256, and
  reached 43 % QA exact match after 30 epochs where d_model 256 at 3e-3 had 1 %.
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

from causal_unlearn.data.bios import BIO_TEMPLATES, BiosWorld, bio, make_bios_world, question_rows
from causal_unlearn.data.rows import Row
from causal_unlearn.evaluation.knowledge import knowledge_report
from causal_unlearn.models.tokenizer import train_tokenizer


@dataclass
class RecipeConfig:
    n_forget: int = 50
    n_retain: int = 50
    n_holdout: int = 25
    n_sums: int = 40
    general_knowledge_repeats: int = 3
    vocab_size: int = 2048
    d_model: int = 128
    d_mlp: int = 512
    n_layers: int = 8
    n_heads: int = 4
    epochs: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    eval_every_epochs: int = 25
    seed: int = 0
    threads: int = 1  # one thread: the same floating-point sums, so the same weights, on any machine


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[bool]  # loss_mask[i]: predict input_ids[i] from the prefix before it


def corpus_texts(world: BiosWorld) -> list[str]:
    """All text the tokenizer is trained on: every person's bios and rows, general knowledge."""
    rows = [r for split in ("forget", "retain", "holdout") for r in world.rows(split)]
    return [r.text for r in rows + world.general_knowledge] + [
        bio(p, t) for p in world.people for t in range(len(BIO_TEMPLATES))
    ]


def document_example(tokenizer: PreTrainedTokenizerBase, text: str) -> Example:
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    return Example(ids, [False] + [True] * (len(ids) - 1))


def answer_example(tokenizer: PreTrainedTokenizerBase, row: Row) -> Example:
    """Prompt and answer tokenized apart, exactly as generation will see the prompt."""
    prompt = tokenizer(row.input)["input_ids"]
    answer = tokenizer(" " + row.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Example(prompt + answer, [False] * len(prompt) + [True] * len(answer))


def training_examples(world: BiosWorld, tokenizer: PreTrainedTokenizerBase, repeats: int = 1) -> list[Example]:
    trained = world.people_in("forget") + world.people_in("retain")
    documents = [document_example(tokenizer, bio(p, t)) for p in trained for t in range(len(BIO_TEMPLATES))]
    questions = [
        answer_example(tokenizer, row)
        for p in trained
        for paraphrase in (False, True)
        for row in question_rows(p, paraphrase=paraphrase)
    ]
    general = [answer_example(tokenizer, row) for row in world.general_knowledge]
    # General knowledge is one row per fact against five views of each person: repeat it.
    return documents + questions + general * repeats


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
    world = make_bios_world(config.n_forget, config.n_retain, config.n_holdout, seed=config.seed, n_sums=config.n_sums)
    tokenizer = train_tokenizer(corpus_texts(world), vocab_size=config.vocab_size)
    model = build_model(config, tokenizer)
    examples = training_examples(world, tokenizer, config.general_knowledge_repeats)
    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    history: list[dict] = []
    step = 0
    bar = tqdm(total=total, desc="training olmo-tiny-bios", disable=not progress)
    for epoch in range(config.epochs):
        model.train()
        for ids, mask in batches(examples, config.batch_size, rng, tokenizer.pad_token_id):
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
            report = knowledge_report(model, tokenizer, world, progress=False)
            report.update(epoch=epoch + 1, minutes=round((time.time() - started) / 60, 2), loss=round(loss.item(), 4))
            history.append(report)
            tqdm.write(json.dumps(report))
    bar.close()
    final = dict(history[-1], config=asdict(config), history=history)
    if out is not None:
        save(model, tokenizer, final, out)
    return final


def save(model: OlmoForCausalLM, tokenizer: PreTrainedTokenizerBase, report: dict, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")


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
