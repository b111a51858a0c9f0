"""Token positions come from the tokenizer: SoT, sub-words, keywords, EoT, padding."""

from __future__ import annotations

import pytest

from circuits.errors import PromptError, ScopeError
from circuits.tokens import check_prompts, layout, token_mask


def test_sd1_layout_and_eot(model):
    tok = model.tokenizer
    lay = layout(tok, "a red circle")
    assert lay.input_ids[0] == tok.bos_token_id
    assert lay.first_eot == 4  # SoT a red circle EoT
    assert lay.input_ids[4] == tok.eos_token_id
    assert all(i == tok.eos_token_id for i in lay.input_ids[4:])  # SD1.x pads with EoT
    assert lay.select("eot") == [4]
    assert lay.select("eot_all") == list(range(4, 16))
    assert lay.select("padding") == list(range(5, 16))
    assert lay.select("last_eot:3") == [13, 14, 15]
    assert lay.select("sot") == [0]


def test_subword_split_keyword_spans_all_pieces(model):
    lay = layout(model.tokenizer, "a photo of a blue unicorn")
    pieces = list(range(6, lay.first_eot))
    assert len(pieces) >= 2 and lay.tokens[6] == "uni" and lay.tokens[lay.first_eot - 1].endswith("</w>")
    assert "".join(lay.tokens[p] for p in pieces).replace("</w>", "") == "unicorn"
    assert lay.select("unicorn") == pieces
    assert lay.select("word:unicorn") == pieces
    # the word-count heuristic (len(prompt.split()) + 1) lands on a sub-token, not on EoT
    assert len("a photo of a blue unicorn".split()) + 1 in pieces


def test_punctuation_and_case(model):
    lay = layout(model.tokenizer, "A Red, circle!")
    assert lay.tokens[1:6] == ("a</w>", "red</w>", ",</w>", "circle</w>", "!</w>")
    assert lay.select("red") == [2]
    assert lay.select("circle") == [4]
    assert lay.first_eot == 6


def test_multiword_keyword_and_repeats(model):
    lay = layout(model.tokenizer, "a red circle and a red square")
    assert lay.select("red") == [2, 6]
    assert lay.select("red circle") == [2, 3]
    assert lay.select("cat") == []  # absent keyword selects nothing


def test_sd2_padding_with_exclamation(sd2_model):
    tok = sd2_model.tokenizer
    lay = layout(tok, "a red circle")
    assert tok.pad_token == "!"
    assert lay.input_ids[4] == tok.eos_token_id
    assert all(i == tok.pad_token_id for i in lay.input_ids[5:])
    assert lay.select("eot") == [4]
    assert lay.select("eot_all") == list(range(4, 16))
    # a prompt ending in "!" (the pad token's text): EoT still comes right after it
    lay2 = layout(tok, "a red circle!")
    assert lay2.first_eot == 5 and lay2.input_ids[5] == tok.eos_token_id
    assert lay2.select("eot_all") == list(range(5, 16))


def test_token_mask_per_row(model):
    mask = token_mask(model.tokenizer, ["a red circle", "a photo of a red circle"], "eot")
    assert mask.shape == (2, 16)
    assert mask[0].nonzero().flatten().tolist() == [4]
    assert mask[1].nonzero().flatten().tolist() == [7]


def test_over_long_prompt_is_an_error_naming_it(model):
    prompt = " ".join(["red"] * 20)
    with pytest.raises(PromptError, match="20 tokens|22 tokens") as info:
        layout(model.tokenizer, prompt)
    assert "allows 16" in str(info.value)


def test_bad_selections(model):
    lay = layout(model.tokenizer, "a red circle")
    with pytest.raises(ScopeError, match="last_eot:K"):
        lay.select("last_eot:x")
    with pytest.raises(ScopeError, match="outside"):
        lay.select([40])


def test_check_prompts():
    assert check_prompts("a") == ["a"]
    with pytest.raises(PromptError, match="empty"):
        check_prompts([])
    with pytest.raises(PromptError, match=r"prompts\[1\]"):
        check_prompts(["a", 3])
