"""ANT's settings: the ``Config`` every ANT module reads (``circuits.methods.ant`` re-exports it).

Kept apart so that the trajectory, saliency and fine-tune modules can all import it without importing
each other (the method itself lives in ``ant.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circuits.methods.common import ConfigError

#: how a saliency map keeps parameters (Eq. 4's gamma, the largest share per tensor, the official code's rule)
THRESHOLDS = ("gamma", "tensor", "authors")
#: which prompts the fine-tune and the maps use
PROMPTS = ("templates", "words")


@dataclass(frozen=True)
class Config:
    """ANT settings. Field defaults are the paper's (Table 6, NSFW row, and the official config where the
    paper is silent): :meth:`paper`. :meth:`pocket` changes what was measured for the pocket model."""

    #: reversal timestep t' in scheduler timestep units (Table 6: 43 of 50 steps -> 860; 40 -> 800; 47 -> 940)
    t_prime: float = 860.0
    #: lambda1, weight of the mid-to-late erase term (Table 6: 1.0 NSFW, 0.4 celebrity / art style)
    lambda1: float = 1.0
    #: lambda2, weight of the early unconditional term (Table 6: 0.5)
    lambda2: float = 0.5
    #: lambda3, weight of the late unconditional term (Table 6: 0.5 NSFW, 0.2 celebrity / art style)
    lambda3: float = 0.5
    #: eta, the guidance of the targets (official negative_guidance = 1.0; not in the paper's table)
    eta: float = 1.0
    #: Adam learning rate (Table 6: 5e-4)
    lr: float = 5e-4
    #: fine-tuning steps (Table 6 "epochs" = the official iterations: 250 NSFW, 400 celebrity / art style)
    steps: int = 250
    #: trajectories per step (official: 1)
    batch: int = 1
    #: seeds of the fine-tune's trajectories, one per (prompt, seed)
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    #: denoising steps of every trajectory z_t lies on (Sec. 4.1: 50 DDIM steps)
    sample_steps: int = 50
    #: CFG scale of the trajectories (official start_guidance = 3.0)
    sample_guidance: float = 3.0
    #: scheduler of the trajectories (Sec. 4.1: DDIM); None = the model's own, or a name circuits.sample takes
    scheduler: str | None = "ddim"
    #: globs over UNet parameter names considered for the saliency map (official "full": every one)
    params: tuple[str, ...] = ("unet.*",)
    #: saliency maps intersected (Fig. 4: the count converges at about 100)
    maps: int = 100
    #: the maps' prompts C (Fig. 5): "templates" (templates x words, prompt variants) or "words" (alone)
    saliency_prompts: str = "templates"
    #: first seed of the maps' trajectories (as many follow as `maps` needs)
    saliency_seed: int = 0
    #: "gamma" (Eq. 4: |grad| >= gamma), "tensor" (the largest `fraction` of each tensor) or "authors" (the
    #: official generate_mask.py: the smallest `fraction` of each tensor)
    threshold: str = "gamma"
    #: Eq. 4's gamma (paper: no value given); None = calibrated on the first map to keep `gamma_density`
    gamma: float | None = None
    #: share of all considered parameters the first map keeps when gamma is calibrated (official share: 0.5)
    gamma_density: float = 0.5
    #: per-tensor share of threshold="tensor" / "authors" (official threshold 0.5)
    fraction: float = 0.5
    #: (t1, t2) pairs averaged in one saliency map (Eq. 4: one)
    saliency_draws: int = 1
    #: the fine-tune's prompts c: "words" (the concept's words alone, as the official "nudity", "naked",
    #: "erotic", "sexual") or "templates" (templates x words: prompts in context)
    prompts: str = "words"
    #: use the synonyms too (fine-tune and maps)
    synonyms: bool = True
    #: seed of the fine-tune's and the maps' draws (rows, timesteps)
    seed: int = 0

    @classmethod
    def paper(cls) -> Config:
        """The paper's settings (Table 6, NSFW row; Sec. 4.1's 50 DDIM steps; Fig. 4's ~100 maps) and the
        official config's where the paper is silent (eta 1, CFG 3 trajectories, every UNet parameter)."""
        return cls()

    @classmethod
    def pocket(cls) -> Config:
        """The paper's ANT with the settings measured for the pocket model (``docs/recipes/ant.md``)."""
        return cls(**POCKET)


#: what Config.pocket() changes from paper(), and why (docs/recipes/ant.md (c)):
#: - steps 2000: with Table 6's 250 steps at lr 5e-4 the masked parameters barely move on pocket (red 0.81 -> 0.03
#:   from 250 to 2000 steps; a higher lr erases less than more steps at the same product);
#: - the mask of the earlier catalog entry, measured to erase red and striped: 12 maps of the words alone, each the
#:   largest half of every tensor (threshold="tensor"). paper()'s mask (Eq. 4's gamma, 100 maps) left green at 1.00
#:   after 2000 steps; over 32 maps of prompts in context it moved red to 0.88 only in a short fine-tune, and over 8
#:   word maps (11 % of the UNet) it erased red but broke preservation (ratio 0.26); pocket has no plateau (b)
POCKET: dict[str, Any] = {"steps": 2000, "maps": 12, "saliency_prompts": "words", "threshold": "tensor"}


def check_config(config: Config) -> None:
    """Reject values no run can use, naming the field."""
    if config.gamma is not None and not config.gamma > 0:
        raise ConfigError(f"ant.Config.gamma={config.gamma!r}: give a threshold > 0 (Eq. 4), or None to calibrate")
    for name in ("fraction", "gamma_density"):
        if not 0 < getattr(config, name) <= 1:
            raise ConfigError(f"ant.Config.{name}={getattr(config, name)!r}: give a fraction in (0, 1]")
    for name in ("lambda1", "lambda2", "lambda3", "eta"):
        if getattr(config, name) < 0:
            raise ConfigError(f"ant.Config.{name}={getattr(config, name)!r} must be >= 0")
    if config.steps < 0 or config.lr <= 0 or config.batch < 1 or config.saliency_draws < 1 or config.maps < 1:
        raise ConfigError(f"ant.Config: steps={config.steps} >= 0, lr={config.lr} > 0, batch={config.batch} >= 1, "
                          f"saliency_draws={config.saliency_draws} >= 1 and maps={config.maps} >= 1 are required")
    for name, allowed in (("prompts", PROMPTS), ("saliency_prompts", PROMPTS), ("threshold", THRESHOLDS)):
        if getattr(config, name) not in allowed:
            raise ConfigError(f"ant.Config.{name}={getattr(config, name)!r}: choose one of {allowed}")
    if not config.seeds or config.sample_steps < 2:
        raise ConfigError(f"ant.Config: give at least one seed (seeds={config.seeds!r}) and sample_steps >= 2")
