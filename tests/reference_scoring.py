"""The official SemEval-2025 Task 4 regurgitation and knowledge scores, computed the plain way
from DESIGN.md §4 (one prompt at a time through `transformers.generate`, ROUGE-L from
rouge-score), to check `evaluate` and whatever reports its numbers against."""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean

import torch
from rouge_score import rouge_scorer


@torch.no_grad()
def official_task_scores(model, tokenizer, splits: dict, max_new_tokens: int) -> dict[str, float]:
    """{"<task>/<split>_<regurgitation|knowledge>": mean}, as the official scorer names them:
    greedy, raw input, ROUGE-L recall with stemming for `sc` rows, exact match after strip and
    lowercase for `qa` rows."""
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    values = defaultdict(list)
    for split, rows in splits.items():
        for row in rows:
            ids = tokenizer(row.input, return_tensors="pt").input_ids.to(model.device)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            generation = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            if row.id.rstrip("0123456789").endswith("qa"):
                value, measure = float(generation.strip().lower() == row.output.strip().lower()), "knowledge"
            else:
                value, measure = rouge.score(row.output, generation)["rougeL"].recall, "regurgitation"
            values[f"{row.task}/{split}_{measure}"].append(value)
    return {name: fmean(v) for name, v in values.items()}
