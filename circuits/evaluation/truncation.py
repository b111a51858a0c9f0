"""Prompts longer than the text encoder, cut as diffusers cuts them, and counted.

``StableDiffusionPipeline`` tokenizes with ``truncation=True``: it keeps the start-of-text token
and the first ``model_max_length - 2`` tokens of the prompt, ends with the end-of-text token, and
only logs what it dropped. Many I2P and MMA-Diffusion prompts are longer than SD's 77 tokens, so
every evaluation in the literature runs on cut prompts. ``circuits.sample`` refuses them (it never
truncates silently); this module cuts them *before* sampling and says so: each cut is recorded
per image in the manifest and counted in the run's summary.

The cut is made on the text (``circuits.sample`` takes text), at the character where diffusers' last
kept token ends, so the cut text tokenizes to exactly diffusers' ids. One case cannot be matched by
any text: when the last kept token is the first piece of a word split into several (``uni`` of
``unicorn``), text can only end with a word-final token. There the whole split word is dropped and
the cut is marked ``exact=False`` (the positions before it are the same as diffusers'; the text
encoder is causal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cut:
    """One prompt after fitting: ``prompt`` is what is sampled, ``original`` what the file said."""

    prompt: str
    original: str
    tokens: int  # the original's length with SoT and EoT
    dropped: int  # tokens of the original that the sampled prompt lacks (0: not cut)
    exact: bool  # the sampled prompt tokenizes to exactly diffusers' truncated ids

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def to_json(self) -> dict[str, Any]:
        return {"original": self.original, "tokens": self.tokens, "dropped": self.dropped, "exact": self.exact}


def fit_prompt(tokenizer: Any, prompt: str) -> Cut:
    """``prompt`` cut to ``tokenizer.model_max_length`` tokens as diffusers cuts it (see the module doc)."""
    limit = tokenizer.model_max_length
    encoded = tokenizer(prompt, truncation=False, add_special_tokens=True, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    if len(ids) <= limit:
        return Cut(prompt, prompt, len(ids), 0, True)
    target = ids[: limit - 1] + [ids[-1]]  # diffusers: SoT + the first limit-2 tokens + EoT
    text = prompt[: offsets[limit - 2][1]].rstrip()
    exact = _ids(tokenizer, text) == target
    while not exact and text:
        # the cut fell inside a word BPE splits: back off to the previous word boundary until it fits
        shorter = text.rsplit(None, 1)[0] if " " in text.strip() else ""
        text = shorter.rstrip()
        if len(_ids(tokenizer, text)) <= limit:
            break
    kept = len(_ids(tokenizer, text))
    return Cut(text, prompt, len(ids), len(ids) - kept, exact)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"])


def fit_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[Cut]:
    """:func:`fit_prompt` for each prompt (cached per distinct prompt)."""
    cache: dict[str, Cut] = {}
    for prompt in prompts:
        if prompt not in cache:
            cache[prompt] = fit_prompt(tokenizer, prompt)
    return [cache[p] for p in prompts]


def summarize(cuts: Sequence[Cut]) -> dict[str, Any]:
    """How many prompts were cut, how many inexactly, and the most tokens dropped from one."""
    cut = [c for c in cuts if c.truncated]
    return {
        "prompts": len(cuts),
        "truncated": len(cut),
        "inexact": sum(not c.exact for c in cut),
        "max_dropped_tokens": max((c.dropped for c in cut), default=0),
    }
