"""ANT: auto-steering denoising trajectories to sidestep unwanted concepts.

Li, Lu, Ren, Kong, "Set You Straight: Auto-Steering Denoising Trajectories to Sidestep Unwanted
Concepts" (ACM MM 2025), Secs. 3.1-3.3, Eqs. 1, 3-6, App. B (Table 6), Figs. 3-5. The paper's steps,
one module each (all re-exported here):

- **CFG reversal** (Sec. 3.1, Eq. 1, Fig. 3): :func:`reversal_study` (:mod:`~circuits.methods.ant_reversal`).
- **Trajectory-aware loss** (Sec. 3.2, Eq. 3) on the original model's sampled trajectories (50 DDIM
  steps, as the paper samples): :func:`collect`, :func:`ant_loss` (:mod:`~circuits.methods.ant_trajectory`).
- **Saliency** (Sec. 3.3, Eqs. 4-5, Figs. 4-5): one gradient map per (prompt, seed), thresholded by one
  gamma (Eq. 4), intersected over about 100 maps (Eq. 5): :func:`saliency_mask`
  (:mod:`~circuits.methods.ant_saliency`).
- **Masked fine-tune** (Eq. 6): Adam on the UNet parameters with a non-empty mask, only the masked
  entries moving (:func:`circuits.methods.training.finetune`): :func:`train`; :func:`fit` returns an
  :class:`Erasure` of ``WeightEdit`` deltas.

Defaults depend on the model (:func:`circuits.methods.common.model_defaults`): :meth:`Config.paper`
(Table 6's NSFW row and the official config) on Stable Diffusion, :meth:`Config.pocket` (measured, see
``docs/recipes/ant.md``) on the pocket model; the Erasure's notes say which. Decisions the paper leaves
open, with what the authors' code does, are in the conformance table of ``docs/recipes/ant.md``; the
main ones:

- **Fine-tune prompts.** ``c`` is the concept's words alone by default (target and synonyms, as the
  official code trains on "nudity", "naked", ...), so ``delta(c)`` is the concept's direction;
  ``prompts="templates"`` trains on prompts in context, where ``delta(c)`` also carries the prompt's
  other words and the erase term steers away from them too.
- **t'** is in scheduler timestep units: Table 6's ``t' = 43`` of 50 DDIM steps (the official
  ``before_step = 7``: the first 7 steps are "early") is ``t' = 860``.
- ANT is anchor-free: the concept's anchor and preservation prompts are not used by the loss.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from circuits.interventions.graph import Graph
from circuits.interventions.weight_edit import WeightEdit
from circuits.methods.ant_reversal import ReversalStudy, reversal_study
from circuits.methods.ant_saliency import (
    THRESHOLDS,
    Saliency,
    authors_map,
    calibrate_gamma,
    intersect,
    mask_digest,
    parameter_names,
    saliency,
    saliency_map,
    saliency_mask,
    saliency_prompts,
    saliency_trajectories,
    tensor_map,
)  # fmt: skip
from circuits.methods.ant_trajectory import Trajectories, ant_loss, collect, draw, first_rows, split
from circuits.methods.common import ConfigError, config_dict, defaults_note, prepare, resolve_config
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.methods.training import finetune
from circuits.models.diffusion import Diffusion

__all__ = [
    "PROMPTS", "THRESHOLDS", "Config", "ReversalStudy", "Saliency", "Trajectories", "ant_loss", "authors_map",
    "calibrate_gamma", "check_config", "collect", "concept_prompts", "draw", "first_rows", "fit", "intersect",
    "mask_digest", "parameter_names", "pocket", "reversal_study", "saliency", "saliency_map", "saliency_mask",
    "saliency_prompts", "saliency_trajectories", "split", "tensor_map", "train",
]  # fmt: skip

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


def pocket() -> Config:
    """Alias of :meth:`Config.pocket` (kept for earlier code)."""
    return Config.pocket()


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


# -- the masked fine-tune (Eqs. 3, 6) and fit --------------------------------------------------------
def train(model: Diffusion, traj: Trajectories, mask: Mapping[str, Tensor], config: Config, *,
          checkpoint: Any = None, fingerprint: Mapping[str, Any] | None = None,
          progress: bool = False) -> tuple[dict[str, Tensor], list[float]]:
    """Adam on Eq. 3 for the parameters with a non-empty ``mask``, only masked entries moving (Eq. 6)."""
    params = [n for n, m in mask.items() if bool(m.any())]
    if not params:
        raise ConfigError("ant: the saliency mask is empty: lower gamma (or gamma_density's complement), "
                          "use fewer maps, or threshold='authors' with a larger fraction")
    traj.split(config.t_prime)

    def loss_fn(step: int, generator: Any) -> Tensor:
        return ant_loss(model, traj, *draw(traj, config, generator), config)[0]

    return finetune(model, params, loss_fn, steps=config.steps, lr=config.lr, seed=config.seed,
                    masks={n: mask[n] for n in params}, checkpoint=checkpoint, fingerprint=fingerprint,
                    progress=progress, description="ANT fine-tune")


def concept_prompts(concept: Concept, config: Config) -> list[str]:
    """The fine-tune's prompts ``c`` of Eq. 3: the words alone, or templates x words (``config.prompts``)."""
    if config.prompts == "words":
        return list(concept.words if config.synonyms else (concept.target,))
    return concept.target_prompts(synonyms=config.synonyms)


def fit(model: Diffusion, concept: Concept | str, config: Config | None = None, *, checkpoint: Any = None,
        progress: bool = True, **overrides) -> Erasure:
    """ANT: the saliency mask ``M*`` (:func:`saliency_mask`), the concept's trajectories, the masked
    fine-tune; an Erasure of deltas. Without ``config`` the defaults are the model's
    (:meth:`Config.pocket` on pocket, :meth:`Config.paper` otherwise); ``overrides`` replace fields.

    ``checkpoint=folder`` makes the fine-tune resumable (the fingerprint is the config without
    ``steps``, the concept and the model, so a run can also be continued for more steps).
    """
    given = config
    config = resolve_config(Config, config, overrides, model)
    check_config(config)
    concept = prepare(model, concept)
    start = time.perf_counter()
    sal = saliency_mask(model, concept, config, progress=progress)
    prompts = concept_prompts(concept, config)
    traj = collect(model, prompts, config, progress=progress)
    early, late = traj.split(config.t_prime)
    fingerprint = {"method": "ant", "config": {k: v for k, v in config_dict(config).items() if k != "steps"},
                   "concept": concept.to_dict(), "model": str(model.source)}
    deltas, losses = train(model, traj, sal.mask, config, checkpoint=checkpoint, fingerprint=fingerprint,
                           progress=progress)
    graph = Graph([WeightEdit(name, delta=delta) for name, delta in deltas.items()])
    trace: list[dict[str, Any]] = [
        {"kind": "saliency", "maps": k + 1, "active": n, "map_density": d}
        for k, (n, d) in enumerate(zip(sal.curve, sal.densities))
    ]
    trace.append({"kind": "mask", "sha256": sal.digest, "gamma": sal.gamma, "active": sal.active,
                  "considered": sal.considered, "tensors": len(deltas)})  # fmt: skip
    trace += [{"kind": "step", "step": i, "loss": loss} for i, loss in enumerate(losses)]
    rule = {"gamma": f"|grad| >= gamma = {sal.gamma or 0:.3g} (Eq. 4)",
            "tensor": f"the largest {config.fraction:g} of each tensor",
            "authors": f"the smallest {config.fraction:g} of each tensor (official generate_mask.py)"}[config.threshold]
    notes = [
        defaults_note(Config, model, given),
        f"saliency: {len(sal.curve)} maps ({len(set(sal.prompts))} prompts x {len(set(sal.seeds))} seeds), each "
        f"{rule}; {sal.active} of {sal.considered} parameters active ({sal.active / sal.considered:.2%}) in "
        f"{len(deltas)} tensors after the intersection (Eq. 5)",
        f"fine-tune: {len(prompts)} prompts x {len(config.seeds)} seeds = {traj.rows} trajectories of "
        f"{len(traj.timesteps)} {config.scheduler or 'model-scheduler'} steps; t' = {config.t_prime:g}: {len(early)} "
        f"steps with t > t', {len(late)} with t <= t'; {config.steps} Adam steps at lr {config.lr:g}",
        "targets read from the original model's recorded trajectories (no frozen copy, no extra UNet calls)",
    ]
    return Erasure("ant", concept, config_dict(config), graph, trace, notes, time.perf_counter() - start)
