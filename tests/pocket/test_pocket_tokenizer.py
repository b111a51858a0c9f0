"""The pocket tokenizer has CLIP's layout: SoT, word sub-tokens, EoT, padding with the EoT id."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from circuits.pocket import tokenizer as ptok  # noqa: E402
from circuits.pocket.world import SHAPES, SYNONYMS  # noqa: E402

SHIPPED = ptok.Path(__file__).resolve().parents[2] / "circuits" / "pocket" / "pipeline" / "tokenizer"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    if (SHIPPED / "vocab.json").exists():
        return ptok.load(SHIPPED)
    return ptok.build(tmp_path_factory.mktemp("pocket_tok"))


def test_files_and_special_tokens(tok):
    from transformers import CLIPTokenizer

    assert isinstance(tok, CLIPTokenizer)
    assert tok.model_max_length == 32
    vocab = tok.get_vocab()
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id == tok.eos_token_id
    assert vocab["<|startoftext|>"] == len(vocab) - 2 and vocab["<|endoftext|>"] == len(vocab) - 1
    for w in (*SHAPES, *SYNONYMS, "red", "striped"):
        assert f"{w}</w>" in vocab  # world words are whole tokens


@pytest.mark.parametrize(
    "text",
    ["a red circle", "a photo of a striped crimson square on a white background",
     "an unseen zebra, purple", ""],
)
def test_eot_right_after_last_word(tok, text):
    ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    words = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == 32
    assert ids[0] == tok.bos_token_id
    assert ids[1 : 1 + len(words)] == words
    assert ids[1 + len(words)] == tok.eos_token_id  # first EoT right after the last sub-token
    assert all(i == tok.eos_token_id for i in ids[1 + len(words) :])  # padding = EoT id
    toks = tok.convert_ids_to_tokens(words)
    if text:
        assert toks[-1].endswith("</w>")  # a word ends with the </w> sub-token


def test_unknown_words_split_into_subtokens(tok):
    words = tok("zebra", add_special_tokens=False).input_ids
    assert len(words) > 1
    assert tok.decode(words).strip() == "zebra"


def test_v2_corpus_makes_every_world_word_one_token(tmp_path):
    """A tokenizer trained on today's corpus keeps every word of the world whole (implicit nouns and
    spatial words included), so a word's attention map is one token's."""
    from circuits.pocket import world

    tok = ptok.build(tmp_path)
    vocab = tok.get_vocab()
    words = [*world.SHAPES, *world.COLOURS, *world.TEXTURES, *world.BACKGROUNDS, *world.SYNONYMS, *world.IMPLICIT,
             "left", "right", "above", "below", "top", "bottom", "under", "beneath"]
    assert [w for w in words if f"{w}</w>" not in vocab] == []
    assert len(vocab) <= 1002  # 1,000 merges at most, plus SoT and EoT
