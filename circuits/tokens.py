"""Token positions read from the tokenizer, never from word counts.

A CLIP prompt is laid out as ``[SoT, sub-tokens of each word..., EoT, padding...]``. SD1.x
tokenizers pad with the EoT id, SD2.x ones with ``!``; either way the first EoT sits right after
the last word's last sub-token, so it is found by tokenizing the prompt without padding.

Selections (the ``tokens=`` scope of every intervention) are strings or position lists:

========================  ==========================================================
``"sot"``                 the start-of-text token (position 0)
``"eot"``                 the first end-of-text token
``"eot_all"``             the first EoT and every padding position after it
``"padding"``             the positions after the first EoT
``"last_eot:K"``          the last K positions of ``eot_all``
``"word:cat"`` / ``"cat"`` the sub-tokens of a keyword (one or more words) in the prompt
``[3, 4]``                explicit positions
a list of strings         the union of the selections
========================  ==========================================================

A keyword held by some prompts only selects those rows. A named selection that matches no
position of any prompt (``"eos"``, ``"EOT"``, ``"word:rde"``) is a typo: the runtime raises a
:class:`~circuits.errors.ScopeError` on the first call that sees the prompts, naming the closest
valid selections (:func:`closest_selections`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union

import torch
from jaxtyping import Bool
from torch import Tensor

from circuits.errors import PromptError, ScopeError

TokenSelection = Union[str, Sequence[int], Sequence[str]]
RESERVED = ("sot", "eot", "eot_all", "padding")


@dataclass(frozen=True)
class TokenLayout:
    """Where everything sits in one tokenized prompt."""

    prompt: str
    input_ids: tuple[int, ...]  # padded to the tokenizer's max length
    tokens: tuple[str, ...]
    first_eot: int
    offsets: tuple[tuple[int, int], ...]  # character span of each non-special token, (0, 0) else

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def eot_all(self) -> list[int]:
        return list(range(self.first_eot, self.length))

    @property
    def padding(self) -> list[int]:
        return list(range(self.first_eot + 1, self.length))

    @property
    def words(self) -> list[int]:
        return list(range(1, self.first_eot))

    def last_eot(self, k: int) -> list[int]:
        if k < 1:
            raise ScopeError(f"last_eot:{k}: K must be >= 1")
        eots = self.eot_all
        return eots[-k:] if k <= len(eots) else eots

    def keyword(self, keyword: str) -> list[int]:
        """Positions of the sub-tokens that spell ``keyword`` (every occurrence)."""
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in keyword.split()) + r"(?!\w)"
        spans = [m.span() for m in re.finditer(pattern, self.prompt, flags=re.IGNORECASE)]
        if not spans:
            return []
        positions = []
        for pos in self.words:
            start, end = self.offsets[pos]
            if any(start < s_end and end > s_start for s_start, s_end in spans):
                positions.append(pos)
        return positions

    def select(self, selection: TokenSelection) -> list[int]:
        """Positions picked by a selection (see the module docstring)."""
        if isinstance(selection, str):
            return self._select_one(selection)
        items = list(selection)
        if all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            bad = [i for i in items if not -self.length <= i < self.length]
            if bad:
                raise ScopeError(f"tokens={items}: positions {bad} outside a prompt of {self.length} tokens")
            return sorted({i % self.length for i in items})
        if all(isinstance(i, str) for i in items):
            return sorted({p for s in items for p in self._select_one(s)})
        raise ScopeError(f"tokens={selection!r}: use a selector string, a list of them, or a list of int positions")

    def _select_one(self, name: str) -> list[int]:
        if name == "sot":
            return [0]
        if name == "eot":
            return [self.first_eot]
        if name == "eot_all":
            return self.eot_all
        if name == "padding":
            return self.padding
        if name.startswith("last_eot:"):
            k = name.split(":", 1)[1]
            if not k.isdigit():
                raise ScopeError(f"tokens={name!r}: write last_eot:K with an integer K, e.g. 'last_eot:3'")
            return self.last_eot(int(k))
        keyword = name[len("word:"):] if name.startswith("word:") else name
        if not keyword.strip():
            raise ScopeError(f"tokens={name!r}: empty keyword")
        return self.keyword(keyword)


def check_prompts(prompts: Any, *, argument: str = "prompts") -> list[str]:
    """Normalise ``prompts`` to a non-empty list of strings, or raise naming the problem."""
    if isinstance(prompts, str):
        prompts = [prompts]
    try:
        prompts = list(prompts)
    except TypeError:
        raise PromptError(f"{argument} must be a string or a list of strings, got {type(prompts).__name__}") from None
    if not prompts:
        raise PromptError(f"{argument} is empty: give at least one prompt")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise PromptError(f"{argument}[{bad[0]}] is {type(prompts[bad[0]]).__name__}, expected str")
    return prompts


def truncate(tokenizer: Any, prompt: str) -> str:
    """``prompt`` cut to the whole words that fit ``tokenizer.model_max_length`` with SoT/EoT (unchanged
    when it fits; ``""`` when not even the first word does). What to pass where a long prompt should
    be cut on purpose: :func:`layout` and ``circuits.sample`` refuse prompts that do not fit."""
    if not isinstance(prompt, str):
        raise PromptError(f"truncate: prompt is {type(prompt).__name__}, expected str")
    limit = tokenizer.model_max_length
    words = prompt.split()

    def fits(k: int) -> bool:
        return len(tokenizer(" ".join(words[:k]), truncation=False).input_ids) <= limit

    if fits(len(words)):
        return prompt
    low, high = 0, len(words)  # fits(low) holds (no words: SoT + EoT), fits(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return " ".join(words[:low])


def layout(tokenizer: Any, prompt: str) -> TokenLayout:
    """Tokenize one prompt and locate SoT, words, EoT and padding.

    Raises :class:`PromptError` when the prompt does not fit ``tokenizer.model_max_length``.
    """
    return _layout_cached(tokenizer, prompt)


@lru_cache(maxsize=4096)
def _layout_cached(tokenizer: Any, prompt: str) -> TokenLayout:
    max_length = tokenizer.model_max_length
    bare = tokenizer(prompt, truncation=False, add_special_tokens=True, return_offsets_mapping=True)
    n = len(bare["input_ids"])
    if n > max_length:
        raise PromptError(
            f"prompt {prompt!r} is {n} tokens long with SoT/EoT, but the tokenizer allows {max_length}; "
            "shorten it, or cut it on purpose with circuits.tokens.truncate(model.tokenizer, prompt) "
            "(keeps the whole words that fit; circuits never truncates silently)"
        )
    padded = tokenizer(prompt, padding="max_length", max_length=max_length, truncation=True).input_ids
    offsets = [tuple(o) for o in bare["offset_mapping"]] + [(0, 0)] * (max_length - n)
    return TokenLayout(
        prompt=prompt,
        input_ids=tuple(padded),
        tokens=tuple(tokenizer.convert_ids_to_tokens(padded)),
        first_eot=n - 1,
        offsets=tuple(offsets),  # type: ignore[arg-type]
    )


def token_mask(
    tokenizer: Any, prompts: Sequence[str], selection: TokenSelection
) -> Bool[Tensor, "batch tokens"]:
    """Boolean mask ``[len(prompts), max_length]``: True at the selected positions of each prompt."""
    mask = torch.zeros(len(prompts), tokenizer.model_max_length, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        positions = layout(tokenizer, prompt).select(selection)
        if positions:
            mask[row, positions] = True
    return mask


def closest_selections(selection: TokenSelection, prompts: Sequence[str], n: int = 3) -> list[str]:
    """Valid selections that look like ``selection``, for did-you-mean messages.

    Candidates are the reserved names (``sot``, ``eot``, ``eot_all``, ``padding``, ``last_eot:K``) and
    the words (or runs of as many words as the keyword has) of ``prompts``; a ``word:`` prefix is kept.
    """
    names = [selection] if isinstance(selection, str) else [s for s in selection if isinstance(s, str)]
    out: list[str] = []
    for name in names:
        prefix = "word:" if name.startswith("word:") else ""
        query = name[len(prefix):].lower()
        size = max(1, len(query.split()))
        words = list(dict.fromkeys(w for p in prompts for w in _word_runs(p, size)))
        candidates = words if prefix else [*RESERVED, "last_eot:K", *words]
        for match in difflib.get_close_matches(query, candidates, n=n, cutoff=0.6):
            if prefix + match not in out:
                out.append(prefix + match)
    return out[:n]


def _word_runs(prompt: str, size: int) -> list[str]:
    """Runs of ``size`` consecutive words of ``prompt`` (lower case), the forms a keyword can take."""
    words = re.findall(r"\w+", prompt.lower())
    return [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]


def check_selection(selection: Any) -> TokenSelection:
    """Validate a selection's form (not its positions) when an intervention is built."""
    if isinstance(selection, str):
        if selection.startswith("last_eot:"):
            k = selection.split(":", 1)[1]
            if not k.isdigit() or int(k) < 1:
                raise ScopeError(f"tokens={selection!r}: write last_eot:K with an integer K >= 1, e.g. 'last_eot:3'")
        return selection
    if isinstance(selection, (list, tuple)) and selection and (
        all(isinstance(i, int) and not isinstance(i, bool) for i in selection)
        or all(isinstance(i, str) for i in selection)
    ):
        for item in selection:
            if isinstance(item, str):
                check_selection(item)
        return list(selection)
    raise ScopeError(
        f"tokens={selection!r}: use 'sot', 'eot', 'eot_all', 'padding', 'last_eot:K', a keyword, "
        "a list of those, or a non-empty list of int positions"
    )
