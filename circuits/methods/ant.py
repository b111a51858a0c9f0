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
from typing import Any

from torch import Tensor

from circuits.interventions.graph import Graph
from circuits.interventions.weight_edit import WeightEdit
from circuits.methods.ant_config import PROMPTS, THRESHOLDS, Config, check_config
from circuits.methods.ant_reversal import ReversalStudy, reversal_study
from circuits.methods.ant_saliency import (
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

def pocket() -> Config:
    """Alias of :meth:`Config.pocket` (kept for earlier code)."""
    return Config.pocket()


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
