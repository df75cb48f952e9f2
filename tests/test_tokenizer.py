from transformers import AutoTokenizer, PreTrainedTokenizerFast

from causal_unlearn.models.loader import _load_tokenizer
from causal_unlearn.models.tokenizer import train_tokenizer
import pytest


def test_builtin_tokenizer_splits_digits_and_round_trips(builtin, world):
    tok = builtin.tokenizer
    assert isinstance(tok, PreTrainedTokenizerFast)
    pieces = tok.convert_ids_to_tokens(tok("Otto Russet's phone number is 7216253765.")["input_ids"])
    assert pieces == [tok.bos_token, "Otto", "ĠRusset", "'s", "Ġphone", "Ġnumber", "Ġis",
                      "Ġ7", "2", "1", "6", "2", "5", "3", "7", "6", "5", "."]
    for row in world.forget[:30] + world.general_knowledge[:10]:
        assert tok.decode(tok(row.text)["input_ids"], skip_special_tokens=True) == row.text
    # every bios name is one or two whole-word tokens, never split through a digit rule
    assert len(tok(" Magenta", add_special_tokens=False)["input_ids"]) == 1


def test_saved_tokenizer_reloads_identically(tmp_path, world):
    tok = train_tokenizer([r.text for r in world.forget], vocab_size=400)
    tok.save_pretrained(tmp_path)
    for reloaded in (_load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):  # ours is load_model's
        for row in world.forget[:20]:
            assert reloaded(row.text)["input_ids"] == tok(row.text)["input_ids"]
        assert reloaded.bos_token == tok.bos_token and reloaded.pad_token == tok.pad_token


def test_training_is_deterministic(world):
    texts = [r.text for r in world.retain]
    assert train_tokenizer(texts, vocab_size=500).get_vocab() == train_tokenizer(texts, vocab_size=500).get_vocab()


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(OSError, match="has none of"):
        _load_tokenizer(tmp_path)
