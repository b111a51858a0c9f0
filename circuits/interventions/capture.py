"""``Capture``: record a site's value, in full or reduced on the fly.

Reductions keep memory flat: ``mean_over=("batch", "positions")`` averages those named axes of
each call's value (axis names come from the site: ``batch``, ``positions`` or ``tokens``,
``channels``, ``heads``, ``queries``, ``keys``, ``height``, ``width``); ``over_steps="mean"``
keeps a running mean across calls instead of one tensor per call. ``transform=fn`` records
``fn(value)`` instead of the value (before those reductions), e.g. ``torch.abs`` for mean magnitudes
or a statistic comparing rows of the same call. Values stay on the model's device and are detached
unless ``keep_grad=True``.

Reading a run's captures (``captures = run.captures`` or ``result.captures``)::

    captures[key]             # [calls, rows, ...]: one entry per call the scope matched
    captures.calls(key)       # one CaptureCall per entry: phase, step, timestep, branch, rows, grid
    captures.steps(key)       # the denoising step of each entry (None for text-encoder calls)
    captures.by_step(key)     # {step: [rows, ...]} for the UNet calls
    captures.maps(key)        # attention probs as maps: [calls, rows, heads, height, width, keys]
    captures.records[key].axes  # names of the axes of captures[key], e.g. ("call", "batch", "heads", ...)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.context import StepContext
from circuits.errors import ScopeError, ShapeError
from circuits.interventions.base import Intervention
from circuits.interventions.scope import Selection

if TYPE_CHECKING:
    from circuits.interventions.runtime import Run
    from circuits.sites.index import SiteInfo

_AXIS_ALIASES = {"positions": ("positions", "tokens", "queries", "height", "width")}


@dataclass(eq=False)  # equality: Intervention.__eq__ (tensor-aware)
class Capture(Intervention):
    """Record the value at ``site`` (for the selected rows; with ``tokens=``, those positions only).

    Read it as ``run.captures[key]``: ``[calls, rows, ...]`` stacked, or the running mean with
    ``over_steps="mean"``. The key is ``name`` when given, else the site. A glob site records one
    entry per matched site, keyed by the site's name (``"<name>/<site>"`` when ``name`` is given).

    The first axis counts the *calls* the scope matched, not denoising steps: the text encoder
    runs once per CFG branch (step ``None``), the UNet once per step, and ``steps=``/``branch=``
    scopes skip calls. ``run.captures.calls(key)`` says where each entry came from, one
    :class:`CaptureCall` ``(phase, step, timestep, branch, rows, grid)`` per call;
    ``run.captures.steps(key)`` lists the steps and ``run.captures.by_step(key)`` maps each
    denoising step to its value. With ``tokens=``, rows that hold none of the tokens are left out
    (``CaptureCall.rows`` lists the batch rows each call kept).

    Attention probabilities (``<attn>.probs``, ``[batch, heads, queries, keys]``) flatten the image
    positions into ``queries``; each call's ``grid`` is the ``(height, width)`` they came from, and
    ``run.captures.maps(key)`` unflattens them to ``[calls, rows, heads, height, width, keys]`` (also
    for non-square images), as :func:`to_maps` does for any tensor.

    ``transform`` is a function applied to each call's selected value ``[rows, ...]`` before
    ``mean_over`` and ``over_steps``: the record holds ``fn(value)``. It must return a new tensor
    with as many axes as its input (the site's axis names carry over; lengths, e.g. the number of
    rows, may change) and leave its input unchanged. A graph holding a function cannot be saved.
    """

    site: str
    mean_over: Sequence[str] = ()
    over_steps: Literal["stack", "mean"] = "stack"
    keep_grad: bool = False
    transform: Callable[[Tensor], Tensor] | None = None
    kind = "capture"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.mean_over, str):
            self.mean_over = (self.mean_over,)
        self.mean_over = tuple(self.mean_over)
        if self.over_steps not in ("stack", "mean"):
            raise ScopeError(f"{self.describe()}: over_steps={self.over_steps!r}; use 'stack' or 'mean'")
        if self.transform is not None and not callable(self.transform):
            raise ShapeError(f"{self.describe()}: transform={self.transform!r}; give a function of the value, or None")
        # set by bind() on the per-site copy the runtime hooks
        self._sink: CaptureRecord | None = None
        self._info: SiteInfo | None = None
        self._grid_point: torch.nn.Module | None = None
        self._reductions: dict[int, tuple[tuple[int, ...], tuple[str, ...]]] = {}

    def key(self, site: str, expanded: bool) -> str:
        if self.name:
            return f"{self.name}/{site}" if expanded else self.name
        return site

    def bind(self, run: "Run", site: str, expanded: bool) -> "Capture":
        """A copy for ``site`` that writes to its own record in ``run.captures`` (and reports as this one)."""
        bound = copy.copy(self)
        bound._parent = self
        bound._sink = run.captures._record(self.key(site, expanded), self.over_steps)
        bound._info = run.model.sites.info(site)
        # the attention processor leaves each call's query grid on the probs hook point
        bound._grid_point = run.model.sites.module(site) if bound._info.role == "probs" else None
        bound._reductions = {}
        return bound

    def _reduction(self, ndim: int, site: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """Dimensions ``mean_over`` averages for a value with ``ndim`` axes, and the axis names left."""
        found = self._reductions.get(ndim)
        if found is not None:
            return found
        assert self._info is not None, "Capture.apply runs on the copy bind() returns"
        axes = self._info.axes(ndim)
        dims: set[int] = set()
        for name in self.mean_over:
            wanted = _AXIS_ALIASES.get(name, (name,))
            hit = [i for i, a in enumerate(axes) if a in wanted]
            if not hit:
                raise ShapeError(
                    f"{self.describe()} at {site}: cannot average over {name!r}; this site's axes are {list(axes)}"
                )
            dims.update(hit)
        found = self._reductions[ndim] = (tuple(sorted(dims)), tuple(a for i, a in enumerate(axes) if i not in dims))
        return found

    def apply(self, x: Tensor, selection: Selection, ctx: StepContext | None, site: str) -> Tensor:
        # selections covering every row (the common reduced capture) read x itself: no copy
        all_rows = len(selection.rows) == x.shape[0] and selection.token_mask is None
        value = x if all_rows else x.index_select(0, selection.index(x))
        if selection.token_mask is not None:
            counts = selection.token_mask.sum(dim=1)
            if not bool((counts == counts[0]).all()):
                raise ShapeError(
                    f"{self.describe()} at {site}: tokens={self.tokens!r} selects {counts.tolist()} positions "
                    "in different rows; capture a selection with the same count per row (e.g. 'eot', 'sot')"
                )
            dim = selection.token_dim
            positions = selection.token_mask.nonzero()[:, 1].view(len(selection.rows), -1).to(x.device)
            shape = [len(selection.rows)] + [1] * (x.ndim - 1)
            shape[dim] = positions.shape[1]
            sizes = [s if i != dim else positions.shape[1] for i, s in enumerate(value.shape)]
            index = positions.view(shape).expand(*sizes)
            value = value.gather(dim, index)
        if self.transform is not None:
            ndim = value.ndim
            value = self.transform(value)
            if not isinstance(value, Tensor) or value.ndim != ndim:
                got = f"{value.ndim} axes {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
                raise ShapeError(
                    f"{self.describe()} at {site}: transform returned {got}; it must return a tensor with the "
                    f"{ndim} axes of its input {list(self._info.axes(ndim)) if self._info else ''}"
                )
        dims, axes = self._reduction(x.ndim, site)
        if dims:
            value = value.mean(dim=dims)
        if not self.keep_grad:
            value = value.detach()
        if value.data_ptr() == x.data_ptr():  # unreduced: never keep a view a later in-place op could change
            value = value.clone()
        grid = getattr(self._grid_point, "grid", None) if self._grid_point is not None else None
        assert self._sink is not None
        self._sink.add(value, ctx, selection.rows, grid, axes)
        return x

    def to_dict(self, tensors: dict[str, Tensor] | None = None) -> dict[str, Any]:
        out = super().to_dict(tensors)  # a transform function raises there: JSON cannot hold it
        out.pop("transform", None)
        return out


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
