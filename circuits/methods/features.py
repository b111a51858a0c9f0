"""Token features for closed-form edits: which positions are mapped, and their text embeddings.

Every closed-form method maps target-prompt token columns ``X`` onto anchor-prompt columns ``Y``.
Which positions pair up is a named choice (:data:`POSITIONS`), because the papers differ exactly
there (TRCE Table 4 ablates it):

=================  ==================================================================================
``"eot"``          the first [EoT] of each prompt (TRCE stage 1).
``"eot_all"``      the k-th [EoT]/padding position of the target with the k-th of the anchor.
``"keyword"``      the last sub-token of the target word with the last sub-token of the anchor word
                   (under causal attention the last piece has seen the whole word). An empty
                   anchor maps the word onto the anchor prompt's [SoT], the one token that carries no
                   content (it sees only itself), as UCE's official code does.
``"keyword+eot"``  ``"keyword"`` and ``"eot_all"`` together (UCE's code maps the word and every
                   position after it; this keeps the word and the [EoT]s that summarise it).
``"prompt"``       every position from [SoT] to the first [EoT], position by position; target and
                   anchor must have the same token count (ErasePro's "token embeddings of the prompt").
``"first_k"``      the first ``k`` positions, position by position (ErasePro Alg. 2, -w / -s).
``"all"``          every position of the padded sequence, position by position.
``"word_to_end"``  UCE's official code: from the target word's last sub-token to the end of the padded
                   sequence, paired with the anchor from the anchor word's last sub-token on (for an
                   empty anchor, the token just before the gap: [SoT] when the template is ``"{}"``);
                   ``len - max(start_t, start_a)`` pairs, as ``train_erase.py`` slices them.
``"prompt_aligned"`` the target prompt's own tokens, [SoT] to its first [EoT] (ErasePro App. A.2's "token
                   embeddings corresponding to the prompt"), each paired with the anchor token that
                   plays its part: the shared prefix with itself, the shared suffix and [EoT] with the
                   anchor's (shifted when the words differ in length), every piece of the target word
                   with the anchor word's last piece (empty anchor: the [SoT], as ``"keyword"``).
``"eot+key"``      the first [EoT] and the keyword (its last sub-token, paired as in ``"keyword"``):
                   TRCE Table 4's [EoT]+[KEY] row.
``"eot+sot"``      the first [EoT] and the [SoT] (TRCE Table 4's [EoT]+[SoT]).
``"eot+sot+key"``  the first [EoT], the [SoT] and the keyword (TRCE Table 4's [EoT]+[SoT]+[KEY]).
=================  ==================================================================================

The last two find the word as the tokens where target and anchor prompts differ (the longest common
token prefix and suffix), so they need no word search and work for any template.

Preservation prompts map onto themselves at the positions the same mode selects (words for the
keyword modes; every position for ``"word_to_end"``, as UCE's code keeps them). Positions always
come from the tokenizer, never from word counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.errors import did_you_mean
from circuits.methods.concept import ConceptError, PromptPair
from circuits.tokens import TokenLayout, layout

Positions = Literal[
    "eot", "eot_all", "keyword", "keyword+eot", "prompt", "first_k", "all", "word_to_end", "prompt_aligned",
    "eot+key", "eot+sot", "eot+sot+key",
]
#: the TRCE Table 4 modes: which of [SoT], first [EoT], [KEY] each maps (in that column order)
_TABLE4: dict[str, tuple[bool, bool]] = {"eot+key": (False, True), "eot+sot": (True, False),
                                         "eot+sot+key": (True, True)}
POSITIONS: tuple[str, ...] = get_args(Positions)


def check_positions(positions: str, owner: str) -> str:
    if positions not in POSITIONS:
        hint = did_you_mean(positions, POSITIONS)
        raise ConceptError(f"{owner}: positions={positions!r} is not one of {POSITIONS}{hint}")
    return positions


def _last_piece(lay: TokenLayout, word: str) -> int:
    found = lay.keyword(word)
    if not found:
        raise ConceptError(f"the word {word!r} does not occur in the prompt {lay.prompt!r}")
    return found[-1]


def _eot_pairs(t: TokenLayout, a: TokenLayout) -> tuple[list[int], list[int]]:
    count = t.length - max(t.first_eot, a.first_eot)
    return [t.first_eot + j for j in range(count)], [a.first_eot + j for j in range(count)]


def word_spans(t: TokenLayout, a: TokenLayout) -> tuple[int, int, int]:
    """``(prefix, end_t, end_a)``: target and anchor share tokens ``[0, prefix)`` and everything from
    ``end_t`` (target) / ``end_a`` (anchor) to their first [EoT]; the words are ``[prefix, end_t)`` and
    ``[prefix, end_a)`` (the anchor's may be empty). [SoT] always counts as shared."""
    ids_t, ids_a = t.input_ids[: t.first_eot], a.input_ids[: a.first_eot]
    prefix = 1
    while prefix < min(len(ids_t), len(ids_a)) and ids_t[prefix] == ids_a[prefix]:
        prefix += 1
    suffix = 0
    while (suffix < min(len(ids_t), len(ids_a)) - prefix
           and ids_t[len(ids_t) - 1 - suffix] == ids_a[len(ids_a) - 1 - suffix]):
        suffix += 1
    end_t, end_a = len(ids_t) - suffix, len(ids_a) - suffix
    if end_t == prefix:
        raise ConceptError(
            f"the target prompt {t.prompt!r} and its anchor {a.prompt!r} have no differing tokens: "
            "the target word must change the prompt"
        )
    return prefix, end_t, end_a


def _word_to_end(t: TokenLayout, a: TokenLayout) -> tuple[list[int], list[int]]:
    # train_erase.py: old_emb[f_t : L - max(0, far - f_t)] with new_emb[f_a : L - max(0, far - f_a)], f the
    # prompt's last word token (attention_mask.sum() - 2); its templates end with the concept, so that token
    # is the word's last piece, and an empty anchor (' ') gives f_a = 0, the [SoT]
    prefix, end_t, end_a = word_spans(t, a)
    start_t, start_a = end_t - 1, end_a - 1  # end_a - 1 = prefix - 1 (the token before the gap) when empty
    count = t.length - max(start_t, start_a)
    return [start_t + j for j in range(count)], [start_a + j for j in range(count)]


def _prompt_aligned(t: TokenLayout, a: TokenLayout) -> tuple[list[int], list[int]]:
    prefix, end_t, end_a = word_spans(t, a)
    target = list(range(t.first_eot + 1))
    # the anchor word's last piece; for an empty anchor the [SoT], which carries no content. Not the token
    # before the gap: at text layer 0 a column is (token, position) alone, so "circle" at position 4 would be
    # sent to "yellow" by one template and to "blue" by another, and Eq. 5 would have no exact solution
    anchor_word = end_a - 1 if end_a > prefix else 0
    anchor = [p if p < prefix else anchor_word if p < end_t else p - end_t + end_a for p in target]
    return target, anchor


def align(tokenizer: Any, pair: PromptPair, positions: str, k: int = 5) -> tuple[list[int], list[int]]:
    """Target and anchor positions that pair up for ``pair`` (equal-length lists)."""
    t, a = layout(tokenizer, pair.target), layout(tokenizer, pair.anchor)
    if positions == "eot":
        return [t.first_eot], [a.first_eot]
    if positions == "eot_all":
        return _eot_pairs(t, a)
    if positions in ("keyword", "keyword+eot"):
        target_pos = [_last_piece(t, pair.word)]
        anchor_pos = [_last_piece(a, pair.anchor_word) if pair.anchor_word.strip() else 0]
        if positions == "keyword+eot":
            eot_t, eot_a = _eot_pairs(t, a)
            target_pos, anchor_pos = target_pos + eot_t, anchor_pos + eot_a
        return target_pos, anchor_pos
    if positions == "prompt":
        if t.first_eot != a.first_eot:
            raise ConceptError(
                f"positions='prompt' pairs the tokens of {pair.target!r} ({t.first_eot + 1} tokens) and "
                f"{pair.anchor!r} ({a.first_eot + 1} tokens) one by one, so they need the same token count; "
                "use an anchor with as many tokens, or positions='all' / 'first_k' / 'eot'"
            )
        span = list(range(t.first_eot + 1))
        return span, span
    if positions == "first_k":
        if not 1 <= k <= t.length:
            raise ConceptError(f"positions='first_k' with k={k}: use 1 <= k <= {t.length}")
        return list(range(k)), list(range(k))
    if positions == "all":
        return list(range(t.length)), list(range(a.length))
    if positions == "word_to_end":
        return _word_to_end(t, a)
    if positions == "prompt_aligned":
        return _prompt_aligned(t, a)
    if positions in _TABLE4:
        sot, key = _TABLE4[positions]
        target_pos, anchor_pos = ([0], [0]) if sot else ([], [])
        if key:
            key_t, key_a = align(tokenizer, pair, "keyword", k)
            target_pos, anchor_pos = target_pos + key_t, anchor_pos + key_a
        return target_pos + [t.first_eot], anchor_pos + [a.first_eot]
    check_positions(positions, "align")
    raise AssertionError("unreachable")


def preserved_positions(tokenizer: Any, prompt: str, positions: str, k: int = 5) -> list[int]:
    """Positions of a preservation prompt that are kept (mapped onto themselves)."""
    lay = layout(tokenizer, prompt)
    if positions == "keyword":
        return lay.words or [lay.first_eot]
    if positions == "keyword+eot":
        return lay.words + lay.eot_all
    if positions in ("prompt", "prompt_aligned"):
        return list(range(lay.first_eot + 1))
    if positions == "word_to_end":  # UCE's code keeps its retain prompts at every position
        return list(range(lay.length))
    if positions in _TABLE4:  # the same kinds of token: [SoT], the words (as "keyword"), the first [EoT]
        sot, key = _TABLE4[positions]
        return ([0] if sot else []) + (lay.words if key else []) + [lay.first_eot]
    pair = PromptPair(prompt, prompt, "", "")
    return align(tokenizer, pair, positions, k)[0]


def gather_columns(
    features: Float[Tensor, "batch tokens dim"], positions: Sequence[Sequence[int]]
) -> Float[Tensor, "dim n"]:
    """Columns ``features[b, positions[b]]`` of every row, concatenated: ``[dim, sum(len(positions[b]))]``."""
    if len(positions) != features.shape[0]:
        raise ValueError(f"gather_columns: {len(positions)} position lists for {features.shape[0]} rows")
    columns = [features[row, list(pos)] for row, pos in enumerate(positions) if len(pos)]
    if not columns:
        return features.new_zeros(features.shape[-1], 0)
    return torch.cat(columns).T
