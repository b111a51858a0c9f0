"""The tiny test tokenizer spells each listed word as one token and each split word as two."""

from __future__ import annotations

from circuits.models.tiny import TINY_SPLITS, TINY_WORDS


def test_every_word_is_one_token(model):
    tok = model.tokenizer
    for word in TINY_WORDS:
        assert tok.tokenize(word) == [word + "</w>"], word


def test_split_words_are_prefix_plus_rest(model):
    tok = model.tokenizer
    for word, prefix in TINY_SPLITS.items():
        assert tok.tokenize(word) == [prefix, word[len(prefix):] + "</w>"], word
