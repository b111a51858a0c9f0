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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from circuits.context import StepContext
from circuits.errors import ScopeError, ShapeError
from circuits.interventions.base import Intervention, RunView
from circuits.interventions.records import CaptureCall, CaptureRecord, Captures, to_maps
from circuits.interventions.scope import Selection

if TYPE_CHECKING:
    from circuits.sites.index import SiteInfo

# the store lives in records.py; these names stay importable from here, where users met them first
__all__ = ["Capture", "CaptureCall", "CaptureRecord", "Captures", "to_maps"]

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

    def bind(self, run: RunView, site: str, expanded: bool) -> "Capture":
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
