"""``Capture``: record a site's value, in full or reduced on the fly.

Reductions keep memory flat: ``mean_over=("batch", "positions")`` averages those named axes of
each call's value (axis names come from the site: ``batch``, ``positions`` or ``tokens``,
``channels``, ``heads``, ``queries``, ``keys``, ``height``, ``width``); ``over_steps="mean"``
keeps a running mean across calls instead of one tensor per call. Values stay on the model's
device and are detached unless ``keep_grad=True``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
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
    With ``tokens=``, rows that hold none of the tokens are left out;
    ``run.captures.records[key].rows`` lists the batch rows each call kept.
    """

    site: str
    mean_over: Sequence[str] = ()
    over_steps: Literal["stack", "mean"] = "stack"
    keep_grad: bool = False
    kind = "capture"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.mean_over, str):
            self.mean_over = (self.mean_over,)
        self.mean_over = tuple(self.mean_over)
        if self.over_steps not in ("stack", "mean"):
            raise ScopeError(f"{self.describe()}: over_steps={self.over_steps!r}; use 'stack' or 'mean'")
        # set by bind() on the per-site copy the runtime hooks
        self._sink: CaptureRecord | None = None
        self._info: SiteInfo | None = None
        self._site_axes: tuple[str, ...] = ()

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
        return bound

    def apply(self, x: Tensor, selection: Selection, ctx: StepContext | None, site: str) -> Tensor:
        # selections covering every row (the common reduced capture) read x itself: no copy
        all_rows = len(selection.rows) == x.shape[0] and selection.token_mask is None
        value = x if all_rows else x.index_select(0, selection.index(x))
        if not self._site_axes:
            assert self._info is not None, "Capture.apply runs on the copy bind() returns"
            self._site_axes = self._info.axes(x.ndim)
        axes = list(self._site_axes)
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
        dims = []
        for name in self.mean_over:
            wanted = _AXIS_ALIASES.get(name, (name,))
            hit = [i for i, a in enumerate(axes) if a in wanted]
            if not hit:
                raise ShapeError(
                    f"{self.describe()} at {site}: cannot average over {name!r}; this site's axes are {axes}"
                )
            dims.extend(hit)
        if dims:
            value = value.mean(dim=tuple(sorted(set(dims))))
        if not self.keep_grad:
            value = value.detach()
        if value.data_ptr() == x.data_ptr():  # unreduced: never keep a view a later in-place op could change
            value = value.clone()
        assert self._sink is not None
        self._sink.add(value, ctx, selection.rows)
        return x


class CaptureRecord:
    """What one capture collected: one value per matched call, or their running mean."""

    def __init__(self, key: str, over_steps: str) -> None:
        self.key = key
        self.over_steps = over_steps
        self.values: list[Tensor] = []
        self.steps: list[int | None] = []
        #: the batch rows each call kept (all selected rows, or those holding the ``tokens=``)
        self.rows: list[tuple[int, ...]] = []
        self._sum: Tensor | None = None
        self.count = 0

    def add(self, value: Tensor, ctx: StepContext | None, rows: tuple[int, ...]) -> None:
        self.count += 1
        self.steps.append(ctx.step if ctx is not None else None)
        self.rows.append(rows)
        if self.over_steps == "mean":
            self._sum = value.clone() if self._sum is None else self._sum + value
        else:
            self.values.append(value)

    @property
    def value(self) -> Tensor:
        """``[calls, ...]`` stacked values, or the running mean for ``over_steps="mean"``."""
        if self.count == 0:
            raise KeyError(f"capture {self.key!r} recorded nothing: its site never ran inside its scope")
        if self.over_steps == "mean":
            assert self._sum is not None
            return self._sum / self.count
        try:
            return torch.stack(self.values)
        except RuntimeError as error:
            raise ShapeError(
                f"capture {self.key!r}: values of different shapes cannot be stacked ({error}); "
                f"read .records[{self.key!r}].values for the list"
            ) from None


class Captures(Mapping[str, Tensor]):
    """Read-only mapping ``key -> tensor`` of a run's captures (key = the capture's name or site)."""

    def __init__(self) -> None:
        self.records: dict[str, CaptureRecord] = {}

    def _record(self, key: str, over_steps: str) -> CaptureRecord:
        if key in self.records:
            raise ScopeError(f"two captures share the key {key!r}; give them different name= values")
        record = self.records[key] = CaptureRecord(key, over_steps)
        return record

    def __getitem__(self, key: str) -> Tensor:
        if key not in self.records:
            raise KeyError(f"no capture {key!r}; captured keys: {sorted(self.records)}")
        return self.records[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Captures({sorted(self.records)})"
