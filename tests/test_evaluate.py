import dataclasses

import pytest

from causal_unlearn import exact_match, greedy_generate, rouge_l_recall


def test_rouge_l_recall_by_hand():
    # LCS of "the cat sat on the mat" against reference "the cat on a mat": the cat on mat (4 of 5)
    assert rouge_l_recall("the cat sat on the mat", "the cat on a mat") == pytest.approx(4 / 5)
    assert rouge_l_recall("", "anything at all") == 0.0
    assert rouge_l_recall("running dogs", "run dog") == 1.0  # Porter stemming
    assert rouge_l_recall("5611 Oak Lane", "5611 Oak Lane, Denver") == pytest.approx(3 / 4)


def test_exact_match_by_hand():
    assert exact_match(" Paris\n", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert exact_match("", "") == 1.0


def test_batched_generation_equals_one_at_a_time(builtin, world):
    prompts = [world.forget[0].input, world.forget[1].input, "What is 2 plus 3?", world.retain[4].input]
    batched = greedy_generate(builtin, prompts, max_new_tokens=40, batch_size=4, progress=False)
    single = [greedy_generate(builtin, [p], max_new_tokens=40, progress=False)[0] for p in prompts]
    assert batched == single
    assert batched[1].strip() == world.forget[1].output
    assert builtin.tokenizer.padding_side == "left"


def test_generation_needs_a_pad_token(builtin):
    import copy

    tokenizer = copy.deepcopy(builtin.tokenizer)
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        greedy_generate(dataclasses.replace(builtin, tokenizer=tokenizer), ["x"], max_new_tokens=1)
