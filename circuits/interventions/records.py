"""What captures collect: one :class:`CaptureRecord` per capture key, read through :class:`Captures`.

The store is separate from the :class:`~circuits.interventions.capture.Capture` intervention that
fills it, so the intervention base class and the runtime can name the store (a run owns one) without
importing an intervention kind.

How to read them: the docstring of :mod:`circuits.interventions.capture`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.context import StepContext
from circuits.errors import ScopeError, ShapeError


class CaptureCall(NamedTuple):
    """Where one captured value came from.

    Attributes:
        phase: ``"text"`` (text encoder) or ``"unet"``; ``None`` when no step context was published.
        step: the denoising step (0 = first, noisiest); ``None`` in the text phase.
        timestep: the scheduler's timestep at that step; ``None`` in the text phase.
        branch: ``"cond"`` or ``"uncond"`` when every kept row belongs to that CFG branch, ``"both"``
            when the call kept rows of both; ``None`` without a step context.
        rows: the batch rows this call kept (all selected rows, or those holding the ``tokens=``).
        grid: ``(height, width)`` of the image positions behind the ``queries`` axis of attention
            probabilities; ``None`` for other sites.
    """

    phase: str | None
    step: int | None
    timestep: float | None
    branch: str | None
    rows: tuple[int, ...]
    grid: tuple[int, int] | None


def _branch_of(ctx: StepContext | None, rows: tuple[int, ...]) -> str | None:
    if ctx is None:
        return None
    if not ctx.branch_rows:  # a context without branch rows: every row is cond
        return "cond"
    names = [name for name, members in ctx.branch_rows.items() if set(rows) & set(members)]
    return names[0] if len(names) == 1 else ("both" if names else None)


def to_maps(
    probs: Float[Tensor, "... queries keys"], height: int, width: int, *, dim: int = -2
) -> Float[Tensor, "... height width keys"]:
    """Unflatten the ``queries`` axis (``dim``) of attention probabilities into the image grid.

    diffusers flattens a ``[batch, channels, height, width]`` feature map row by row, so query
    ``i`` is the position ``(i // width, i % width)``; ``height * width`` must equal the axis length.
    """
    dim = dim % probs.ndim
    if probs.shape[dim] != height * width:
        raise ShapeError(
            f"to_maps: axis {dim} of a {tuple(probs.shape)} tensor has {probs.shape[dim]} queries, not "
            f"height x width = {height} x {width} = {height * width}; pass the grid of that layer "
            "(captures.calls(key)[i].grid)"
        )
    return probs.unflatten(dim, (height, width))


class CaptureRecord:
    """What one capture collected: one value per matched call, or their running mean."""

    def __init__(self, key: str, over_steps: str) -> None:
        self.key = key
        self.over_steps = over_steps
        self.values: list[Tensor] = []
        self._calls: list[tuple[StepContext | None, tuple[int, ...], tuple[int, int] | None]] = []
        self._axes: tuple[str, ...] = ()
        self._sum: Tensor | None = None
        self._value: Tensor | None = None  # the stacked values or the mean, until the next add
        self.count = 0

    def add(
        self,
        value: Tensor,
        ctx: StepContext | None,
        rows: tuple[int, ...],
        grid: tuple[int, int] | None = None,
        axes: tuple[str, ...] = (),
    ) -> None:
        self.count += 1
        self._calls.append((ctx, rows, grid))  # CaptureCalls are built when read, not per call
        self._axes = axes
        self._value = None
        if self.over_steps == "mean":
            self._sum = value.clone() if self._sum is None else self._sum + value
        else:
            self.values.append(value)

    # -- where each value came from ------------------------------------------------------
    @property
    def calls(self) -> list[CaptureCall]:
        """One :class:`CaptureCall` per recorded call, in order (the first axis of :attr:`value`)."""
        return [
            CaptureCall(
                phase=ctx.phase if ctx is not None else None,
                step=ctx.step if ctx is not None else None,
                timestep=ctx.timestep if ctx is not None else None,
                branch=_branch_of(ctx, rows),
                rows=rows,
                grid=grid,
            )
            for ctx, rows, grid in self._calls
        ]

    @property
    def steps(self) -> list[int | None]:
        """The denoising step of each call (``None`` for text-encoder calls and calls without a context)."""
        return [ctx.step if ctx is not None else None for ctx, _, _ in self._calls]

    @property
    def rows(self) -> list[tuple[int, ...]]:
        """The batch rows each call kept (all selected rows, or those holding the ``tokens=``)."""
        return [rows for _, rows, _ in self._calls]

    @property
    def axes(self) -> tuple[str, ...]:
        """Names of the axes of :attr:`value`: ``("call", "batch", ...)``, without ``"call"`` for a mean."""
        return self._axes if self.over_steps == "mean" else ("call",) + self._axes

    # -- values --------------------------------------------------------------------------
    @property
    def value(self) -> Tensor:
        """``[calls, ...]`` stacked values, or the running mean for ``over_steps="mean"`` (computed once)."""
        if self.count == 0:
            raise KeyError(f"capture {self.key!r} recorded nothing: its site never ran inside its scope")
        if self._value is None:
            self._value = self._mean() if self.over_steps == "mean" else self._stack()
        return self._value

    def _mean(self) -> Tensor:
        assert self._sum is not None
        return self._sum / self.count

    def _stack(self) -> Tensor:
        try:
            return torch.stack(self.values)
        except RuntimeError as error:
            raise ShapeError(
                f"capture {self.key!r}: values of different shapes cannot be stacked ({error}); "
                f"read .records[{self.key!r}].values for the list"
            ) from None

    def by_step(self) -> dict[int, Tensor]:
        """``{step: value}`` for the UNet calls (text-encoder calls have no step)."""
        if self.over_steps == "mean":
            raise ScopeError(
                f"capture {self.key!r} has over_steps='mean': it keeps one running mean, not a value per step; "
                "capture with over_steps='stack' (the default) to read steps"
            )
        out: dict[int, Tensor] = {}
        for (ctx, _, _), value in zip(self._calls, self.values):
            if ctx is None or ctx.step is None:
                continue
            if ctx.step in out:
                raise ScopeError(
                    f"capture {self.key!r}: step {ctx.step} was recorded more than once (several sampling runs "
                    "in one context, or a site called twice per step); index captures[key] with captures.calls(key)"
                )
            out[ctx.step] = value
        return out

    def maps(self) -> Tensor:
        """Attention probabilities with ``queries`` unflattened to ``(height, width)``."""
        if "queries" not in self.axes:
            raise ShapeError(
                f"capture {self.key!r} has axes {list(self.axes)}; maps need attention probabilities with their "
                "queries axis: capture '<attn>.probs' without averaging 'queries' or 'positions'"
            )
        grids = {grid for _, _, grid in self._calls}
        if len(grids) != 1 or None in grids:
            raise ShapeError(
                f"capture {self.key!r}: its calls have query grids {sorted(grids, key=str)}; maps need one "
                "(height, width) for every call (sample one image size per context)"
            )
        height, width = grids.pop()  # type: ignore[misc]
        return to_maps(self.value, height, width, dim=self.axes.index("queries"))


class Captures(Mapping[str, Tensor]):
    """Read-only mapping ``key -> tensor`` of a run's captures (key = the capture's name or site).

    Besides ``captures[key]``: :meth:`calls`, :meth:`steps`, :meth:`by_step` and :meth:`maps` (see
    :class:`Capture`); ``records[key]`` holds the :class:`CaptureRecord` behind them.
    """

    def __init__(self) -> None:
        self.records: dict[str, CaptureRecord] = {}

    def _record(self, key: str, over_steps: str) -> CaptureRecord:
        if key in self.records:
            raise ScopeError(f"two captures share the key {key!r}; give them different name= values")
        record = self.records[key] = CaptureRecord(key, over_steps)
        return record

    def record(self, key: str) -> CaptureRecord:
        """The record behind ``captures[key]``; a missing key is a KeyError listing the keys."""
        if key not in self.records:
            raise KeyError(f"no capture {key!r}; captured keys: {sorted(self.records)}")
        return self.records[key]

    def __getitem__(self, key: str) -> Tensor:
        return self.record(key).value

    def calls(self, key: str) -> list[CaptureCall]:
        """Where each entry of ``captures[key]`` came from: phase, step, timestep, branch, rows, grid."""
        return self.record(key).calls

    def steps(self, key: str) -> list[int | None]:
        """The denoising step of each entry of ``captures[key]`` (``None`` for text-encoder calls)."""
        return self.record(key).steps

    def by_step(self, key: str) -> dict[int, Tensor]:
        """``{step: value}`` of the UNet calls of ``captures[key]``, each value ``[rows, ...]``."""
        return self.record(key).by_step()

    def maps(self, key: str) -> Tensor:
        """Attention probabilities as maps: ``[calls, rows, heads, height, width, keys]`` (fewer axes when reduced)."""
        return self.record(key).maps()

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Captures({sorted(self.records)})"
