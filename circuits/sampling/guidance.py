"""Guidance strategies: how the sampler combines the unconditional and conditional predictions.

``CFG(s)`` is classifier-free guidance, ``eps_u + s * (eps_c - eps_u)``; ``Unconditional()`` follows the
unconditional branch alone. ``ReversedCFG(s, t_prime)``
is ANT's Eq. 1: the condition direction ``delta = eps_c - eps_u`` flips sign for timesteps
``t <= t_prime`` (mid-to-late steps), ``eps_u + s * sgn(t - t') * delta`` with sgn = -1 at t <= t'.
Both are data (dataclasses) so experiments can record them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.checks import real_number
from circuits.errors import SettingError

Eps = Float[Tensor, "batch channels height width"]


@dataclass(frozen=True)
class CFG:
    """Classifier-free guidance with scale ``scale``; ``scale <= 1`` runs the conditional branch only,
    as ``StableDiffusionPipeline`` does."""

    scale: float = 7.5

    def __post_init__(self) -> None:
        # a NaN scale compares false with everything and would silently give NaN images
        object.__setattr__(self, "scale", real_number(self.scale, "scale", type(self).__name__))

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

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "t_prime", real_number(self.t_prime, "t_prime", "ReversedCFG"))

    @property
    def uses_uncond(self) -> bool:
        return True

    def direction_sign(self, timestep: float) -> float:
        return -1.0 if float(timestep) <= self.t_prime else 1.0


@dataclass(frozen=True)
class Unconditional:
    """The unconditional branch alone (``eps_uncond``, bitwise): how a null trajectory is sampled where the
    null text is no prompt the conditional branch could encode (SDXL's zero context; TRCE stage 2)."""

    @property
    def uses_uncond(self) -> bool:
        return True

    def combine(self, eps_uncond: Eps, eps_cond: Eps, timestep: float) -> Eps:
        return eps_uncond


@dataclass(frozen=True)
class Rowwise:
    """A different guidance for each block of prompts in one batch: ``Rowwise(((CFG(7.5), 4),
    (ReversedCFG(7.5, 300), 4)))`` guides prompts 0-3 by plain CFG and 4-7 by ANT's reversal.

    How a sweep over guidance settings (ANT's t') runs as one batched sampling call: the UNet sees
    the whole batch once per step, and each block combines its own rows. Every block computes the
    unconditional branch when any block needs it (``CFG(s <= 1)`` then returns the conditional
    prediction, as without it).
    """

    blocks: tuple[tuple[CFG, int], ...]

    def __post_init__(self) -> None:
        for block in self.blocks:
            if not (isinstance(block, tuple) and len(block) == 2 and isinstance(block[0], CFG)
                    and isinstance(block[1], int) and block[1] > 0):  # fmt: skip
                raise SettingError(f"Rowwise: block {block!r} must be (guidance, number_of_prompts > 0)")

    @property
    def rows(self) -> int:
        return sum(count for _, count in self.blocks)

    @property
    def uses_uncond(self) -> bool:
        return any(guide.uses_uncond for guide, _ in self.blocks)

    def combine(self, eps_uncond: Eps, eps_cond: Eps, timestep: float) -> Eps:
        if eps_cond.shape[0] != self.rows:
            raise ValueError(f"Rowwise guidance covers {self.rows} prompts but the batch has {eps_cond.shape[0]}")
        parts, start = [], 0
        for guide, count in self.blocks:
            stop = start + count
            parts.append(guide.combine(eps_uncond[start:stop], eps_cond[start:stop], timestep))
            start = stop
        return torch.cat(parts)
