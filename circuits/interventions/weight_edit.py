"""``WeightEdit``: set a parameter for the duration of a context, restored bitwise on exit.

Closed-form editing methods (UCE, ErasePro, TRCE stage 1) produce new projection matrices;
applying them as a ``WeightEdit`` makes the edit reversible and composable with every other
intervention. The original tensor is cloned on entry and copied back on exit, exceptions included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.errors import ScopeError, ShapeError
from circuits.interventions.base import SCOPE_FIELDS, Intervention, Undo

if TYPE_CHECKING:
    from circuits.models.diffusion import Diffusion


@dataclass(eq=False)  # equality: Intervention.__eq__ (tensor-aware)
class WeightEdit(Intervention):
    """Set parameter ``param`` (e.g. ``"unet.<attn2>.to_k.weight"``) to ``value``, or add ``delta``."""

    param: str
    value: Float[Tensor, "..."] | None = None
    delta: Float[Tensor, "..."] | None = None
    kind = "weight_edit"
    per_call = False

    def __post_init__(self) -> None:
        super().__post_init__()
        scoped = [f for f in SCOPE_FIELDS if f != "branch" and getattr(self, f) is not None] + (
            ["branch"] if self.branch != "both" else []
        )
        if scoped:
            raise ScopeError(
                f"{self.describe()}: a weight edit holds for the whole context and takes no {', '.join(scoped)} scope"
            )
        if (self.value is None) == (self.delta is None):
            raise ShapeError(f"{self.describe()}: give exactly one of value= or delta=")
        given, argument = (self.value, "value") if self.value is not None else (self.delta, "delta")
        if not isinstance(given, Tensor) or not given.dtype.is_floating_point:
            got = given.dtype if isinstance(given, Tensor) else type(given).__name__
            raise ShapeError(f"{self.describe()}: {argument} must be a floating-point torch.Tensor, got {got}")

    def enter(self, model: "Diffusion") -> Undo:
        """Copy the new value in; the undo copies the original back bitwise."""
        parameter, new = self.new_value(model)
        original = parameter.detach().clone()
        with torch.no_grad():
            parameter.copy_(new)

        def undo() -> None:
            with torch.no_grad():
                parameter.copy_(original)

        return undo

    def new_value(self, model: "Diffusion") -> tuple[torch.nn.Parameter, Tensor]:
        """The parameter and the tensor to copy into it (checked against its shape)."""
        parameter = model.parameter(self.param)
        given, argument = (self.value, "value") if self.value is not None else (self.delta, "delta")
        assert isinstance(given, Tensor)  # checked in __post_init__
        if tuple(given.shape) != tuple(parameter.shape):
            raise ShapeError(
                f"{self.describe()}: {argument} has shape {tuple(given.shape)} but {self.param} has shape "
                f"{tuple(parameter.shape)}"
            )
        given = given.to(device=parameter.device, dtype=parameter.dtype)
        return parameter, (given if self.value is not None else parameter.detach() + given)
