"""Token pairing of the two modes issue 14 added: UCE's ``word_to_end`` and ErasePro's ``prompt_aligned``."""

from __future__ import annotations

import pytest

from circuits.methods import ConceptError
from circuits.methods.concept import PromptPair
from circuits.methods.features import align, preserved_positions
from circuits.tokens import layout


def _tokens(model, prompt, positions):
    lay = layout(model.tokenizer, prompt)
    return [lay.tokens[p].replace("</w>", "") for p in positions]


def test_word_to_end_slices_as_the_authors_code(model) -> None:
    length = model.tokenizer.model_max_length
    # template "{}", empty anchor: the word with [SoT], then [EoT] with [EoT] ... (train_erase.py's ' ')
    t, a = align(model.tokenizer, PromptPair("red", "", "red", ""), "word_to_end")
    assert t == list(range(1, length)) and a == list(range(0, length - 1))
    # the word mid-sentence: it starts at the word, not at the prompt's last token ("circle")
    t, a = align(model.tokenizer, PromptPair("a red circle", "a circle", "red", ""), "word_to_end")
    assert _tokens(model, "a red circle", t[:3]) == ["red", "circle", "<|endoftext|>"]
    assert _tokens(model, "a circle", a[:3]) == ["a", "circle", "<|endoftext|>"]
    assert len(t) == len(a) == length - 2
    t, a = align(model.tokenizer, PromptPair("a red circle", "a blue circle", "red", "blue"), "word_to_end")
    assert t == a == list(range(2, length))
    assert preserved_positions(model.tokenizer, "a green square", "word_to_end") == list(range(length))


def test_prompt_aligned_pairs_each_token_with_the_one_that_plays_its_part(model) -> None:
    t, a = align(model.tokenizer, PromptPair("a photo of a red dog", "a photo of a dog", "red", ""), "prompt_aligned")
    pairs = list(zip(_tokens(model, "a photo of a red dog", t), _tokens(model, "a photo of a dog", a)))
    assert pairs == [("<|startoftext|>", "<|startoftext|>"), ("a", "a"), ("photo", "photo"), ("of", "of"),
                     ("a", "a"), ("red", "<|startoftext|>"), ("dog", "dog"), ("<|endoftext|>", "<|endoftext|>")]
    t, a = align(model.tokenizer, PromptPair("a red circle", "a blue circle", "red", "blue"), "prompt_aligned")
    assert t == a == [0, 1, 2, 3, 4]
    with pytest.raises(ConceptError, match="no differing tokens"):
        align(model.tokenizer, PromptPair("a red circle", "a red circle", "red", "red"), "prompt_aligned")
