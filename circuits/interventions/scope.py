"""Scopes: which calls, CFG branches, batch rows and token positions an intervention touches.

Every intervention carries the same five scope fields:

- ``steps``: denoising step indices (0 = first, noisiest), or ``None`` for all;
- ``timesteps``: an inclusive ``(low, high)`` range of scheduler timestep values, or ``None``;
- ``branch``: ``"cond"``, ``"uncond"`` or ``"both"`` (classifier-free-guidance half of the batch);
- ``rows``: prompt indices *within each selected branch* (row ``i`` = the i-th prompt), or ``None``;
- ``tokens``: a token selection (see :mod:`circuits.tokens`) on sites whose positions are text tokens.

Scopes are read against the :class:`~circuits.context.StepContext` the sampler publishes. Outside
the sampler (no context) only ``branch="both"`` without step/timestep/token-name scopes applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from circuits.context import StepContext
from circuits.errors import ScopeError, did_you_mean
from circuits.tokens import check_selection

BRANCH_CHOICES = ("cond", "uncond", "both")


def check_branch(branch: Any, owner: str) -> str:
    if branch in BRANCH_CHOICES:
        return branch
    hint = did_you_mean(branch, BRANCH_CHOICES)
    raise ScopeError(f"{owner}: branch={branch!r} is not one of {BRANCH_CHOICES}{hint}")


def check_int_list(values: Any, argument: str, owner: str) -> tuple[int, ...] | None:
    if values is None:
        return None
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    try:
        items = tuple(values)
    except TypeError:
        raise ScopeError(f"{owner}: {argument}={values!r} must be an int or a list of ints") from None
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
        raise ScopeError(f"{owner}: {argument}={values!r} must be a non-empty list of non-negative ints")
    return items


def check_timesteps(values: Any, owner: str) -> tuple[float, float] | None:
    if values is None:
        return None
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ScopeError(f"{owner}: timesteps={values!r} must be a (low, high) pair of numbers") from None
    if low > high:
        raise ScopeError(f"{owner}: timesteps=({low}, {high}) has low > high; write (low, high)")
    return (low, high)


class Selection:
    """Where an intervention applies in one call: batch rows, and a token mask over those rows.

    The runtime caches one Selection per prompt set and shape, so the index and mask tensors
    below are built once per sampling run, not once per step.
    """

    def __init__(
        self, rows: tuple[int, ...], token_dim: int | None = None, token_mask: Bool[Tensor, "rows tokens"] | None = None
    ) -> None:
        self.rows = rows
        self.token_dim = token_dim
        self.token_mask = token_mask
        self._index: Tensor | None = None
        self._where: Tensor | None = None

    def index(self, x: Tensor) -> Tensor:
        """The selected rows as a long tensor on ``x``'s device."""
        if self._index is None or self._index.device != x.device:
            self._index = torch.tensor(self.rows, device=x.device)
        return self._index

    def where(self, x: Tensor) -> Bool[Tensor, "..."]:
        """A boolean mask broadcastable to ``x``: True on the selected rows (and tokens)."""
        if self._where is not None and self._where.device == x.device:
            return self._where
        shape = [x.shape[0]] + [1] * (x.ndim - 1)
        view = [len(self.rows)] + [1] * (x.ndim - 1)
        if self.token_mask is None:
            rows_value = torch.ones(view, dtype=torch.bool, device=x.device)
        else:
            shape[self.token_dim] = view[self.token_dim] = x.shape[self.token_dim]
            rows_value = self.token_mask.to(x.device).view(view)
        mask = torch.zeros(shape, dtype=torch.bool, device=x.device)
        mask[self.index(x)] = rows_value
        self._where = mask
        return mask


def call_matches(steps: Sequence[int] | None, timesteps: tuple[float, float] | None, ctx: StepContext | None) -> bool:
    """Does a step/timestep scope include the call described by ``ctx``?"""
    if steps is None and timesteps is None:
        return True
    if ctx is None or ctx.step is None:
        return False
    if steps is not None and ctx.step not in steps:
        return False
    if timesteps is not None:
        low, high = timesteps
        if ctx.timestep is None or not low <= ctx.timestep <= high:
            return False
    return True


def batch_rows(
    branch: str, rows: Sequence[int] | None, ctx: StepContext | None, batch_size: int, owner: str
) -> tuple[int, ...]:
    """Absolute batch rows selected by ``branch`` and ``rows`` in this call."""
    if ctx is None:
        if branch != "both":
            return ()
        selected = tuple(range(batch_size))
        return selected if rows is None else tuple(r for r in rows if r < batch_size)
    branches = ("uncond", "cond") if branch == "both" else (branch,)
    known = ctx.branch_rows or {"cond": tuple(range(batch_size))}  # no rows published: all are cond
    out: list[int] = []
    for name in branches:
        branch_rows = known.get(name, ())
        if rows is None:
            out.extend(branch_rows)
            continue
        too_big = [r for r in rows if r >= len(branch_rows)]
        if too_big and branch_rows:
            raise ScopeError(
                f"{owner}: rows={list(rows)} but the {name!r} branch has {len(branch_rows)} prompt(s); "
                f"use rows in 0..{len(branch_rows) - 1}"
            )
        out.extend(branch_rows[r] for r in rows if r < len(branch_rows))
    return tuple(sorted(out))


def normalise_tokens(tokens: Any) -> Any:
    return None if tokens is None else check_selection(tokens)
