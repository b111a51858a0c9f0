"""Over-long prompts are cut as diffusers cuts them, and the cut is counted, never silent."""

from __future__ import annotations

import circuits
from circuits.evaluation.truncation import fit_prompt, fit_prompts, summarize

LONG = "a red circle on a white background with a blue square and a green triangle and a cat and a dog"


def test_short_prompt_untouched(model):
    cut = fit_prompt(model.tokenizer, "a red circle")
    assert (cut.prompt, cut.dropped, cut.truncated, cut.exact) == ("a red circle", 0, False, True)


def test_long_prompt_tokenizes_to_diffusers_ids(model):
    tok = model.tokenizer
    cut = fit_prompt(tok, LONG)
    diffusers_ids = tok(LONG, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert cut.truncated and cut.exact
    assert tok(cut.prompt, padding="max_length", max_length=tok.model_max_length).input_ids == diffusers_ids
    assert cut.dropped == len(tok(LONG).input_ids) - tok.model_max_length
    circuits.sample(model, cut.prompt, steps=1, progress=False)  # the sampler accepts the cut prompt


def test_cut_inside_a_split_word_is_marked_inexact(model):
    # 'unicorn' is two tokens in the tiny tokenizer ('uni', 'corn'): the limit falls between them
    prompt = "a red circle on a white background with a blue square and a unicorn"
    tok = model.tokenizer
    assert len(tok(prompt).input_ids) == tok.model_max_length + 1
    cut = fit_prompt(tok, prompt)
    assert cut.prompt == "a red circle on a white background with a blue square and a"
    assert not cut.exact and cut.dropped == 2
    assert summarize(fit_prompts(tok, [prompt, LONG, "a cat"])) == {
        "prompts": 3, "truncated": 2, "inexact": 1, "max_dropped_tokens": 7}
