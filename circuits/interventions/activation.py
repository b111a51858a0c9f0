"""Interventions that change a site's value on the selected rows and tokens.

``Replace`` (a tensor or a function), ``Ablate`` (zero or mean), ``Scale`` and ``MaskedPatch``
(ActErase's ``M * source + (1 - M) * x``). Each computes a new value for the selected rows
``x[rows]``; positions outside the ``tokens=`` selection keep their value. All are differentiable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Union

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from circuits.context import StepContext
from circuits.errors import ScopeError, ShapeError
from circuits.interventions.base import Intervention
from circuits.interventions.scope import Selection

ReplaceFn = Callable[..., Tensor]


def _check_broadcast(value: Tensor, target: Tensor, owner: str, site: str, argument: str) -> Tensor:
    """``value`` must broadcast to ``target`` (the selected rows) without growing it."""
    if not isinstance(value, Tensor):
        raise ShapeError(f"{owner} at {site}: {argument} must be a torch.Tensor, got {type(value).__name__}")
    if not (value.dtype.is_floating_point or value.dtype == torch.bool):
        raise ShapeError(f"{owner} at {site}: {argument} has dtype {value.dtype}; use a floating-point tensor")
    try:
        shape = torch.broadcast_shapes(value.shape, target.shape)
    except RuntimeError:
        shape = None
    if shape != target.shape:
        raise ShapeError(
            f"{owner} at {site}: {argument} has shape {tuple(value.shape)}, which does not broadcast to the "
            f"selected activation {tuple(target.shape)} (rows x {tuple(target.shape[1:])}); "
            f"give shape {tuple(target.shape[1:])} or {tuple(target.shape)}"
        )
    return value.to(device=target.device, dtype=target.dtype)


def _scatter(x: Tensor, selection: Selection, new_rows: Tensor) -> Tensor:
    """``x`` with the selected rows (and tokens) taken from ``new_rows``."""
    full = x.index_copy(0, selection.index(x), new_rows.expand(len(selection.rows), *x.shape[1:]).to(x.dtype))
    if selection.token_mask is None:
        return full
    return torch.where(selection.where(x), full, x)


def _takes_context(fn: ReplaceFn) -> bool:
    """Does ``fn`` want the step context? Yes if it has a parameter named ``ctx`` or two required
    positional parameters; ``nn.Module``s, ``lambda x, k=2: ...`` and builtins get ``x`` alone."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature take one argument
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.name == "ctx" for p in positional[1:]):
        return True
    required = [p for p in positional if p.default is p.empty]
    return len(required) >= 2


def _rows(x: Tensor, selection: Selection) -> Tensor:
    return x.index_select(0, selection.index(x))


@dataclass(eq=False)  # equality: Intervention.__eq__ (tensor-aware)
class Replace(Intervention):
    """Replace the value at ``site`` by a tensor (broadcast over selected rows) or ``fn(x[rows])``.

    A function (or ``nn.Module``) takes ``x`` and returns a tensor of the same shape; it also gets the
    :class:`~circuits.context.StepContext` when it has a second required parameter or one named ``ctx``.
    """

    site: str
    value: Union[Shaped[Tensor, "..."], ReplaceFn, float]
    kind = "replace"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.value, (int, float)) and not isinstance(self.value, bool):
            self.value = torch.tensor(float(self.value))
        if not (isinstance(self.value, Tensor) or callable(self.value)):
            raise ShapeError(f"{self.describe()}: value must be a tensor, a number or a function")
        self._takes_ctx = callable(self.value) and not isinstance(self.value, Tensor) and _takes_context(self.value)

    def apply(self, x: Tensor, selection: Selection, ctx: StepContext | None, site: str) -> Tensor:
        selected = _rows(x, selection)
        if isinstance(self.value, Tensor):
            new = _check_broadcast(self.value, selected, self.describe(), site, "value")
        else:
            new = self.value(selected, ctx) if self._takes_ctx else self.value(selected)
            if not isinstance(new, Tensor) or new.shape != selected.shape:
                got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                raise ShapeError(
                    f"{self.describe()} at {site}: the function returned {got}; "
                    f"it must return a tensor of the input's shape {tuple(selected.shape)}"
                )
        return _scatter(x, selection, new)


@dataclass(eq=False)  # equality: Intervention.__eq__ (tensor-aware)
class Ablate(Intervention):
    """Set the value to zero (``mode="zero"``) or to a mean (``mode="mean"``).

    For ``"mean"``, ``mean`` is a reference tensor (e.g. a Capture's running mean); without it, the
    mean of this call's selected entries is used: over the selected rows, or with ``tokens=``, over
    every selected (row, token) position, so an EoT is replaced by the mean EoT, not by whatever
    other tokens share its position. A mean over a single entry would change nothing, so it is an error.
    """

    site: str
    mode: Literal["zero", "mean"] = "zero"
    mean: Float[Tensor, "..."] | None = None
    kind = "ablate"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("zero", "mean"):
            raise ScopeError(f"{self.describe()}: mode={self.mode!r}; use 'zero' or 'mean'")
        if self.mode == "zero" and self.mean is not None:
            raise ScopeError(f"{self.describe()}: mean= is only used with mode='mean'")

    def apply(self, x: Tensor, selection: Selection, ctx: StepContext | None, site: str) -> Tensor:
        if self.mode == "zero":  # one fused op: this is ZeroTokens' hot path
            return x.masked_fill(selection.where(x), 0.0)
        selected = _rows(x, selection)
        if self.mean is not None:
            return _scatter(x, selection, _check_broadcast(self.mean, selected, self.describe(), site, "mean"))
        if selection.token_mask is None:
            entries, what = len(selection.rows), "row"
            new = selected.mean(dim=0, keepdim=True)
        else:
            dim = selection.token_dim
            assert dim is not None
            view = [len(selection.rows)] + [1] * (x.ndim - 1)
            view[dim] = x.shape[dim]
            weights = selection.token_mask.view(view).to(device=x.device, dtype=x.dtype)
            entries, what = int(selection.token_mask.sum()), "(row, token) position"
            new = (selected * weights).sum(dim=(0, dim), keepdim=True) / max(entries, 1)
        if entries < 2:
            raise ScopeError(
                f"{self.describe()} at {site}: mode='mean' without mean= averages this call's selected entries, "
                f"but only 1 {what} is selected, so nothing would change; pass mean= (e.g. a Capture with "
                "over_steps='mean') or widen branch=/rows=/tokens="
            )
        return _scatter(x, selection, new)


@dataclass(eq=False)  # equality: Intervention.__eq__ (tensor-aware)
class Scale(Intervention):
    """Multiply the value by ``factor`` (a number, or a tensor broadcast over the selected rows)."""

    site: str
    factor: Union[float, Float[Tensor, "..."]]
    kind = "scale"

    def __post_init__(self) -> None:
        super().__post_init__()
        number = isinstance(self.factor, (int, float)) and not isinstance(self.factor, bool)
        if not (number or isinstance(self.factor, Tensor)):
            raise ShapeError(f"{self.describe()}: factor={self.factor!r}; give a number or a floating-point tensor")

    def apply(self, x: Tensor, selection: Selection, ctx: StepContext | None, site: str) -> Tensor:
        if not isinstance(self.factor, Tensor):
            return torch.where(selection.where(x), x * self.factor, x)
        selected = _rows(x, selection)
        factor = _check_broadcast(self.factor, selected, self.describe(), site, "factor")
        return _scatter(x, selection, selected * factor)


@dataclass(eq=False)  # equality: Intervention.__eq__ (tensor-aware)
class MaskedPatch(Intervention):
    """``M * source + (1 - M) * x`` on the selected rows (ActErase's activation patch).

    ``mask`` (bool or float in [0, 1]) and ``source`` broadcast to the selected activation,
    e.g. ``[positions, channels]`` for an FFN hidden site.

    A patch that changes over the denoising run gives ``schedule``, the scheduler timesteps ``[K]``
    its slices were made at: ``mask`` and ``source`` then have a leading axis of length ``K`` (or 1,
    the same slice at every step), and each UNet call uses the slice whose timestep is nearest the
    call's (so a patch collected on 30 steps also serves a run of 25, or of another scheduler).
    """

    site: str
    mask: Shaped[Tensor, "..."]
    source: Float[Tensor, "..."]
    #: timesteps ``[K]`` indexing the leading axis of ``mask`` and ``source``; None: one static patch
    schedule: Float[Tensor, " K"] | None = None
    kind = "masked_patch"

    def __post_init__(self) -> None:
        super().__post_init__()
        mask = self.mask
        if isinstance(mask, Tensor) and mask.dtype.is_floating_point and mask.numel():
            low, high = (float(v) for v in torch.aminmax(mask.detach()))
            if not (0.0 <= low and high <= 1.0):  # NaN fails too
                raise ShapeError(
                    f"{self.describe()}: mask values lie in [{low:g}, {high:g}], outside [0, 1]; a mask weighs "
                    "source against the activation, so give values in [0, 1] (or a bool mask), e.g. mask.clamp(0, 1)"
                )
        if self.schedule is not None:
            self._check_schedule()

    def _check_schedule(self) -> None:
        schedule = self.schedule
        if not isinstance(schedule, Tensor) or schedule.ndim != 1 or not len(schedule):
            got = tuple(schedule.shape) if isinstance(schedule, Tensor) else type(schedule).__name__
            raise ShapeError(f"{self.describe()}: schedule must be a 1-D tensor of timesteps [K], got {got}")
        for argument in ("mask", "source"):
            value = getattr(self, argument)
            if isinstance(value, Tensor) and (value.ndim == 0 or value.shape[0] not in (1, len(schedule))):
                raise ShapeError(
                    f"{self.describe()}: with a schedule of {len(schedule)} timesteps, {argument} needs a leading "
                    f"axis of length {len(schedule)} (or 1); it has shape {tuple(value.shape)}"
                )
        # the nearest-timestep lookup runs on every call: keep a CPU float copy
        self._timesteps = schedule.detach().to("cpu", torch.float64)

    def _slice(self, ctx: StepContext | None, site: str) -> tuple[Tensor, Tensor]:
        """``mask`` and ``source`` for this call (the slice of the nearest timestep when scheduled)."""
        if self.schedule is None:
            return self.mask, self.source
        if ctx is None or ctx.timestep is None:
            raise ScopeError(
                f"{self.describe()} at {site}: a scheduled patch picks its slice by the step's timestep, but this "
                "call has none (it runs outside the sampler); sample with circuits.sample, or give a static patch"
            )
        k = int(torch.argmin((self._timesteps - float(ctx.timestep)).abs()))
        return (self.mask[k if len(self.mask) > 1 else 0], self.source[k if len(self.source) > 1 else 0])

    def apply(self, x: Tensor, selection: Selection, ctx: StepContext | None, site: str) -> Tensor:
        selected = _rows(x, selection)
        mask, source = self._slice(ctx, site)
        mask = _check_broadcast(mask, selected, self.describe(), site, "mask")
        source = _check_broadcast(source, selected, self.describe(), site, "source")
        return _scatter(x, selection, mask * source + (1 - mask) * selected)
