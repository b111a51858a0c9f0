"""Guidance strategies: how the sampler combines the unconditional and conditional predictions.

``CFG(s)`` is classifier-free guidance, ``eps_u + s * (eps_c - eps_u)``. ``ReversedCFG(s, t_prime)``
is ANT's Eq. 1: the condition direction ``delta = eps_c - eps_u`` flips sign for timesteps
``t <= t_prime`` (mid-to-late steps), ``eps_u + s * sgn(t - t') * delta`` with sgn = -1 at t <= t'.
Both are data (dataclasses) so experiments can record them.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

Eps = Float[Tensor, "batch channels height width"]


@dataclass(frozen=True)
class CFG:
    """Classifier-free guidance with scale ``scale``; ``scale <= 1`` runs the conditional branch only,
    as ``StableDiffusionPipeline`` does."""

    scale: float = 7.5

    @property
    def uses_uncond(self) -> bool:
        return self.scale > 1.0

    def direction_sign(self, timestep: float) -> float:
        return 1.0

    def combine(self, eps_uncond: Eps, eps_cond: Eps, timestep: float) -> Eps:
        return eps_uncond + self.scale * self.direction_sign(timestep) * (eps_cond - eps_uncond)


@dataclass(frozen=True)
class ReversedCFG(CFG):
    """ANT's guidance (Eq. 1): ordinary CFG while ``t > t_prime``, reversed direction for ``t <= t_prime``."""

    t_prime: float = 500.0

    @property
    def uses_uncond(self) -> bool:
        return True

    def direction_sign(self, timestep: float) -> float:
        return -1.0 if float(timestep) <= self.t_prime else 1.0
