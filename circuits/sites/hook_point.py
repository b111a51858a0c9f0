"""Identity modules that give a name to values that are not a module's output.

A :class:`HookPoint` is attached as a parameter-free child module (so state dicts do not change)
and called on the value it names: attention probabilities, the additive key bias of an
attention layer, the FFN hidden activation, the text encoder's residual stream, the UNet's noise
prediction. Because it is a real module call, plain torch hooks, circuits interventions and
nnsight traces all see it, under a dotted name like any other site.
"""

from __future__ import annotations

import torch
from torch import nn


class HookPoint(nn.Module):
    """``forward(x) = x``; exists to be hooked."""

    def __init__(self) -> None:
        super().__init__()
        #: set by ``model.sites.materialize(...)`` for tracers (nnsight) that read without torch hooks
        self.always: bool = False
        #: ``(height, width)`` of the image positions behind the value's ``queries`` axis, left by the
        #: attention processor on ``probs`` before each call (``None`` when unknown or not a map)
        self.grid: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def observed(self) -> bool:
        """True when something reads this point: a torch hook (every circuits intervention is one),
        or ``always`` set explicitly.

        Values that are expensive to materialise (attention probabilities, a key bias) are computed
        only then. Tracers that replace ``forward`` (nnsight) do not count, so wrapping a model in
        nnsight keeps the fused attention kernel; call ``model.sites.materialize("unet.*attn2.probs")``
        to read probabilities there.
        """
        return bool(self._forward_hooks or self._forward_pre_hooks or self.always)
