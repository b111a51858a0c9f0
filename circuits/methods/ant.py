"""ANT: auto-steering denoising trajectories to sidestep unwanted concepts.

Li, Lu, Ren, Kong, "Set You Straight: Auto-Steering Denoising Trajectories to Sidestep Unwanted
Concepts" (ACM MM 2025), Secs. 3.1-3.3, Eqs. 1, 3-6, App. B (Table 6), Figs. 3-4.

- **CFG reversal** (Sec. 3.1, Eq. 1, Fig. 3): :func:`reversal_study` samples the same noise with
  :class:`~circuits.ReversedCFG` (the condition direction ``delta = eps_c - eps_u`` flips for
  ``t <= t'``) for several ``t'`` (the unreversed and every reversed variant as row blocks of batched
  calls, :func:`circuits.sampling.sweep`) and measures, against the unreversed images, how much
  layout is kept (cosine of the final latents, mean absolute pixel difference; from the pocket
  oracle's foreground masks: their IoU, that of the filled silhouettes, the IoU of their bounding
  boxes and the shift of their centres) and which attributes the oracle reads.
- **Trajectory-aware loss** (Sec. 3.2, Eq. 3), on noisy latents ``z_t`` of the concept's prompts::

      L = ||eps(z_t1, t1, c) - sg[eps*(z_t1, t1) + eta delta*]||^2        t1 ~ U(t', T)   (preserve)
        + l1 ||eps(z_t2, t2, c) - sg[eps*(z_t2, t2) - eta delta*]||^2     t2 ~ U(0, t')   (erase)
        + l2 ||eps(z_t1, t1) - sg[eps*(z_t1, t1)]||^2 + l3 ||eps(z_t2, t2) - sg[eps*(z_t2, t2)]||^2

  (``eps*``, ``delta*``: the frozen original model; MSE means). One UNet call per step holds the
  four rows.
- **Saliency** (Sec. 3.3, Eqs. 4-5, Fig. 4): one gradient map of Eq. 3 per (prompt, seed),
  thresholded (:func:`saliency_map`), intersected over prompts x seeds (:func:`intersect`), with
  the curve of active parameters against the number of intersected maps.
- **Masked fine-tune** (Eq. 6): Adam on the UNet parameters with a non-empty mask, only the masked
  entries moving (:func:`circuits.methods.training.finetune`); the result is an :class:`Erasure`
  of ``WeightEdit`` deltas.

Decisions the paper leaves open (or the official code answers differently):

- **Largest gradients.** Eq. 4 keeps ``|grad| >= gamma``; the per-tensor top fraction keeps the
  *largest* ``fraction`` of each tensor (the official ``generate_mask.py`` keeps the smallest half,
  the opposite of the paper and of SalUn). A zero gradient is never salient.
- **Targets: cached, not recomputed.** ``z_t`` are points of the original model's sampled
  trajectories (:func:`collect`, CFG ``sample_guidance`` from seeded noise); the sampler records
  ``eps*(z_t, t)`` and ``eps*(z_t, t, c)`` at every one of them, so the stop-gradient targets are
  read from that record and never recomputed: zero extra UNet calls per step and no frozen copy of
  the model, at the cost of memory for ``3 x steps x rows`` latents (pocket, 12 rows x 50 steps:
  1.8 MB; SD 1.x, 16 rows: 150 MB) and of ``z_t`` lying on the *original* model's trajectories. The
  official code (from ESD) samples ``z_t`` with the model being trained, re-running up to 50
  denoising steps every iteration, and also computes the unconditional terms under ``no_grad``
  (they never train anything there); here they train, as Eq. 3 says.
- **Timesteps.** ``t1``/``t2`` are drawn uniformly from the trajectory's grid points with
  ``t > t'`` / ``t <= t'`` (``t <= t'`` as Eq. 2 flips). ``t'`` is in the scheduler's timestep units:
  Table 6's ``t' = 43`` of 50 DDIM steps (the official ``before_step = 7``) is ``t' = 860``.
- **Saliency gradient** of Eq. 3 at the original weights, averaged over ``saliency_draws``
  ``(t1, t2)`` pairs (Eq. 4 writes one). At the original weights only the erase term has a
  gradient (the others are zero when ``eta = 1``). The official code instead sums gradients while
  training for 250 iterations. Maps are intersected in (seed, prompt) order.
- **Defaults** (Table 6, NSFW row; the official config): lr 5e-4, 250 steps, l1 = 1, l2 = l3 = 0.5,
  eta = 1 (``negative_guidance``, not in the table), trajectories at CFG 3 (``start_guidance``),
  50 DDIM steps, every UNet parameter considered (``train_method="full"``), fraction 0.5.
- **Prompts.** ``c`` is the concept's words alone by default (target and synonyms, as the official
  code trains and computes its maps on "nudity", "naked", ...), so ``delta(c)`` is the concept's
  direction. ``prompts="templates"`` uses the concept's templates (the paper's prompts in context),
  where ``delta(c)`` also carries the other words of each prompt, and the erase term steers away
  from them too. On pocket that breaks preservation, see ``docs/recipes/ant.md``.
- ANT is anchor-free: the concept's anchor and preservation prompts are not used by the loss.

Length: over 500 lines because it holds the method (collect, saliency, fine-tune) and the CFG-reversal
study with its layout measures (:func:`reversal_study`); the study is the piece to move out next.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from circuits.context import StepContext, publish_context
from circuits.interventions.graph import Graph
from circuits.interventions.weight_edit import WeightEdit
from circuits.methods.common import ConfigError, config_dict, prepare, resolve_config
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.methods.training import finetune, step_generator, trainable
from circuits.models.diffusion import Diffusion


@dataclass(frozen=True)
class Config:
    """ANT settings (defaults: the paper's Table 6, NSFW row, and the official config)."""

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
    #: seeds of the trajectories: one per (prompt, seed); used for the saliency maps and the fine-tune
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    #: denoising steps of the trajectories z_t lies on (the paper: 50 DDIM steps)
    sample_steps: int = 50
    #: CFG scale of the trajectories (official start_guidance = 3.0)
    sample_guidance: float = 3.0
    #: scheduler of the trajectories: None = the model's own, or a name circuits.sample takes
    scheduler: str | None = None
    #: globs over UNet parameter names considered for the saliency map (official "full": every one)
    params: tuple[str, ...] = ("unet.*",)
    #: Eq. 4's absolute threshold gamma; None = keep the top `fraction` of each tensor instead
    gamma: float | None = None
    #: per-tensor fraction of the largest |grad| kept in each map (official threshold 0.5)
    fraction: float = 0.5
    #: (t1, t2) pairs averaged in one saliency map (Eq. 4: one)
    saliency_draws: int = 1
    #: the prompts c: "words" (the concept's words alone, as the official code uses "nudity", "naked",
    #: "erotic", "sexual") or "templates" (templates x words: prompts in context, like the paper's GPT-4 ones)
    prompts: str = "words"
    #: fit on the synonyms too
    synonyms: bool = True
    #: seed of the fine-tune's draws (rows, timesteps)
    seed: int = 0


PROMPTS = ("templates", "words")


def pocket() -> Config:
    """The paper's ANT with the one setting measured for the pocket model (docs/recipes/ant.md).

    ``steps=2000``: with Table 6's 250 steps (lr 5e-4) the masked parameters barely move on pocket
    and 81 % of ``red`` images stay red; 1000 steps give 16 %, 2000 give 3 % (preservation ratio
    0.95 and 0.94). A higher lr instead (2e-3 x 250 steps, 1e-3 x 500) erases less (41 %, 28 %).
    """
    return Config(steps=2000)


def check_config(config: Config) -> None:
    """Reject values no run can use, naming the field."""
    if config.gamma is not None and not config.gamma > 0:
        raise ConfigError(f"ant.Config.gamma={config.gamma!r}: give a threshold > 0, or None for fraction")
    if not 0 < config.fraction <= 1:
        raise ConfigError(f"ant.Config.fraction={config.fraction!r}: give a fraction in (0, 1]")
    for name in ("lambda1", "lambda2", "lambda3", "eta"):
        if getattr(config, name) < 0:
            raise ConfigError(f"ant.Config.{name}={getattr(config, name)!r} must be >= 0")
    if config.steps < 0 or config.lr <= 0 or config.batch < 1 or config.saliency_draws < 1:
        raise ConfigError(f"ant.Config: steps={config.steps} >= 0, lr={config.lr} > 0, batch={config.batch} >= 1 "
                          f"and saliency_draws={config.saliency_draws} >= 1 are required")
    if config.prompts not in PROMPTS:
        raise ConfigError(f"ant.Config.prompts={config.prompts!r}: choose one of {PROMPTS}")
    if not config.seeds or config.sample_steps < 2:
        raise ConfigError(f"ant.Config: give at least one seed (seeds={config.seeds!r}) and sample_steps >= 2")


# -- trajectories and the loss (Eq. 3) -------------------------------------------------------
@dataclass
class Trajectories:
    """The original model's sampled trajectories: ``z_t`` and the frozen predictions at each of them.

    Row ``j * len(prompts) + i`` is prompt ``i`` sampled with seed ``seeds[j]`` (one sampling call per
    seed). ``latents[s]`` enters step ``s`` at ``timesteps[s]``; ``input_scale[s]`` is the
    scheduler's ``scale_model_input`` factor there.
    """

    prompts: list[str]
    seeds: list[int]
    timesteps: Tensor
    latents: Float[Tensor, "steps rows channels height width"]
    eps_cond: Float[Tensor, "steps rows channels height width"]
    eps_uncond: Float[Tensor, "steps rows channels height width"]
    input_scale: Tensor
    cond: Float[Tensor, "prompts tokens dim"]
    uncond: Float[Tensor, "one tokens dim"]

    @property
    def rows(self) -> int:
        return self.latents.shape[1]

    def split(self, t_prime: float) -> tuple[Tensor, Tensor]:
        """Grid indices with ``t > t'`` (early) and ``t <= t'`` (mid-to-late); both must be non-empty."""
        return split(self.timesteps, t_prime)


def split(timesteps: Tensor, t_prime: float) -> tuple[Tensor, Tensor]:
    """Indices of ``timesteps`` with ``t > t'`` and with ``t <= t'``; an error names the schedule if one is empty."""
    early = torch.nonzero(timesteps > t_prime).flatten()
    late = torch.nonzero(timesteps <= t_prime).flatten()
    if not len(early) or not len(late):
        grid = timesteps.tolist()
        raise ConfigError(
            f"ant: t_prime={t_prime:g} lies outside this {len(grid)}-step schedule, which runs from "
            f"{grid[0]:g} down to {grid[-1]:g}: Eq. 3 needs steps on both sides (t > t' and t <= t'); "
            f"choose {grid[-1]:g} <= t_prime < {grid[0]:g}"
        )
    return early, late


def collect(model: Diffusion, prompts: Sequence[str], config: Config, *, progress: bool = False) -> Trajectories:
    """Sample ``prompts`` once per seed with the original model (CFG ``sample_guidance``), recording everything."""
    from circuits.sampling import encode_prompts, make_scheduler, sample

    if config.sample_guidance <= 1.0:
        raise ConfigError(f"ant.Config.sample_guidance={config.sample_guidance}: Eq. 3 needs both branches (> 1)")
    sched = make_scheduler(model, config.scheduler)
    sched.set_timesteps(config.sample_steps, device=model.device)
    timesteps = torch.tensor([float(t) for t in sched.timesteps])
    split(timesteps, config.t_prime)  # fail before sampling
    scales = []
    for t in sched.timesteps:  # a fresh scheduler per step: some keep a step index inside
        fresh = make_scheduler(model, config.scheduler)
        fresh.set_timesteps(config.sample_steps, device=model.device)
        scales.append(float(fresh.scale_model_input(torch.ones(1, device=model.device), t)[0]))
    prompts = list(prompts)
    parts = [
        sample(model, prompts, seed=seed, steps=config.sample_steps, guidance_scale=config.sample_guidance,
               scheduler=config.scheduler, record=True, progress=progress).trajectory
        for seed in config.seeds
    ]
    assert parts[0].timesteps == timesteps.tolist(), "the sampler ran another schedule"
    with torch.no_grad():
        cond = encode_prompts(model, prompts, "cond").detach()
        uncond = encode_prompts(model, [""], "uncond").detach()
    return Trajectories(
        prompts, list(config.seeds), timesteps,
        torch.cat([p.latents[:-1] for p in parts], dim=1), torch.cat([p.noise_cond for p in parts], dim=1),
        torch.cat([p.noise_uncond for p in parts], dim=1), torch.tensor(scales), cond, uncond,
    )


def draw(traj: Trajectories, config: Config, generator: torch.Generator, rows: Tensor | None = None) -> tuple:
    """Rows (``batch`` of them unless given), ``t1`` indices with ``t > t'`` and ``t2`` indices with ``t <= t'``."""
    early, late = traj.split(config.t_prime)
    if rows is None:
        rows = torch.randint(traj.rows, (config.batch,), generator=generator)
    n = len(rows)
    i1 = early[torch.randint(len(early), (n,), generator=generator)]
    i2 = late[torch.randint(len(late), (n,), generator=generator)]
    return rows, i1, i2


def ant_loss(
    model: Diffusion, traj: Trajectories, rows: Tensor, i1: Tensor, i2: Tensor, config: Config
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 3 on ``rows`` at grid indices ``i1`` (``t > t'``) and ``i2`` (``t <= t'``): the loss and its terms."""
    n, device = len(rows), model.device
    z1, z2 = traj.latents[i1, rows], traj.latents[i2, rows]
    scale = torch.cat([traj.input_scale[i1], traj.input_scale[i2]]).view(-1, 1, 1, 1)
    zz = (torch.cat([z1, z2]) * scale).to(device)
    latents = torch.cat([zz, zz])
    t = torch.cat([traj.timesteps[i1], traj.timesteps[i2]] * 2).to(device)
    prompt_of = rows % len(traj.prompts)
    cond = traj.cond[prompt_of].to(device)
    embeds = torch.cat([cond, cond, traj.uncond.expand(2 * n, -1, -1).to(device)])
    names = tuple(traj.prompts[int(i)] for i in prompt_of)
    ctx = StepContext(phase="unet", branch_rows={"cond": tuple(range(2 * n)), "uncond": tuple(range(2 * n, 4 * n))},
                      prompts=names * 2 + ("",) * (2 * n))
    with publish_context(ctx):
        eps = model.unet(latents, t, encoder_hidden_states=embeds, return_dict=False)[0]
    c1, c2, u1, u2 = eps.chunk(4)
    star_c1, star_c2 = traj.eps_cond[i1, rows].to(device), traj.eps_cond[i2, rows].to(device)
    star_u1, star_u2 = traj.eps_uncond[i1, rows].to(device), traj.eps_uncond[i2, rows].to(device)
    mse = torch.nn.functional.mse_loss
    terms = {
        "preserve": mse(c1, star_u1 + config.eta * (star_c1 - star_u1)),
        "erase": mse(c2, star_u2 - config.eta * (star_c2 - star_u2)),
        "uncond_early": mse(u1, star_u1),
        "uncond_late": mse(u2, star_u2),
    }
    loss = (terms["preserve"] + config.lambda1 * terms["erase"] + config.lambda2 * terms["uncond_early"]
            + config.lambda3 * terms["uncond_late"])
    return loss, {k: float(v.detach()) for k, v in terms.items()}


# -- saliency (Eqs. 4-5) -------------------------------------------------------------------------
def saliency_map(
    grads: Mapping[str, Tensor], *, gamma: float | None = None, fraction: float | None = None
) -> dict[str, Tensor]:
    """Eq. 4: keep ``|grad| >= gamma``, or the largest ``fraction`` of each tensor (exactly one of the two).

    The largest gradients are kept (never the smallest, as the official code does); a zero gradient
    is never kept. Returns bool masks of the gradients' shapes.
    """
    if (gamma is None) == (fraction is None):
        raise ConfigError("saliency_map: give exactly one of gamma= (Eq. 4's threshold) or fraction= (per tensor)")
    if gamma is not None and not gamma > 0:
        raise ConfigError(f"saliency_map: gamma={gamma!r} must be > 0")
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError(f"saliency_map: fraction={fraction!r} must lie in (0, 1]")
    masks = {}
    for name, grad in grads.items():
        size = grad.detach().abs()
        if gamma is not None:
            masks[name] = size >= gamma
            continue
        flat = size.flatten()
        keep = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
        keep[torch.topk(flat, math.ceil(fraction * flat.numel()), sorted=False).indices] = True
        masks[name] = (keep & (flat > 0)).view(size.shape)
    return masks


def intersect(
    maps: Iterable[Mapping[str, Tensor]], *, on_map: Callable[[int, Mapping[str, Tensor]], None] | None = None
) -> tuple[dict[str, Tensor], list[int]]:
    """Eq. 5: the running intersection of ``maps`` and the number of active entries after each map.

    ``on_map(k, mask)`` sees the running intersection after ``k`` maps (k = 1, 2, ...; read it, do not
    keep or change it: it is updated in place), e.g. to count the active entries per layer.
    """
    mask: dict[str, Tensor] | None = None
    curve = []
    for item in maps:
        if mask is None:
            mask = {k: v.clone() for k, v in item.items()}
        else:
            if set(item) != set(mask):
                raise ValueError(f"intersect: a map covers other tensors ({sorted(set(item) ^ set(mask))[:3]} ...)")
            for k, v in item.items():
                mask[k] &= v
        curve.append(int(sum(int(v.sum()) for v in mask.values())))
        if on_map is not None:
            on_map(len(curve), mask)
    if mask is None:
        raise ValueError("intersect: no maps given")
    return mask, curve


def parameter_names(model: Diffusion, globs: Sequence[str]) -> list[str]:
    """UNet parameters (``unet.<name>``) matching any of ``globs``."""
    names = [f"unet.{n}" for n, _ in model.unet.named_parameters()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise ConfigError(f"ant.Config.params={list(globs)!r} matches no UNet parameter (e.g. {names[0]!r})")
    return chosen


@dataclass
class Saliency:
    """The concept-specific mask ``M*`` and how it came about."""

    mask: dict[str, Tensor]
    curve: list[int]  # active parameters after 1, 2, ... intersected maps
    densities: list[float]  # fraction of the considered parameters each single map keeps
    considered: int

    @property
    def active(self) -> int:
        return self.curve[-1]


def saliency(
    model: Diffusion, traj: Trajectories, config: Config, *, progress: bool = False,
    on_map: Callable[[int, Mapping[str, Tensor]], None] | None = None,
) -> Saliency:
    """One map per (prompt, seed) row of ``traj`` (Eq. 4), intersected in row order (Eq. 5).

    ``on_map(k, mask)`` sees the running intersection after each map (see :func:`intersect`).
    """
    params = parameter_names(model, config.params)
    densities: list[float] = []
    considered = sum(model.parameter(n).numel() for n in params)

    def maps(named: dict[str, torch.nn.Parameter]):
        for row in tqdm(range(traj.rows), disable=not progress, desc="saliency maps"):
            generator = step_generator(config.seed + 7919, row)  # its own stream, apart from the fine-tune's
            rows, i1, i2 = draw(traj, config, generator, torch.full((config.saliency_draws,), row))
            loss, _ = ant_loss(model, traj, rows, i1, i2, config)
            grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
            grads = {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(named.items(), grads)}
            by_gamma = config.gamma is not None
            item = saliency_map(grads, gamma=config.gamma, fraction=None if by_gamma else config.fraction)
            densities.append(sum(int(v.sum()) for v in item.values()) / considered)
            yield item

    with trainable(model, params) as named:
        mask, curve = intersect(maps(named), on_map=on_map)
    return Saliency(mask, curve, densities, considered)


# -- the masked fine-tune (Eqs. 3, 6) and fit --------------------------------------------------------
def train(model: Diffusion, traj: Trajectories, mask: Mapping[str, Tensor], config: Config, *,
          checkpoint: Any = None, fingerprint: Mapping[str, Any] | None = None,
          progress: bool = False) -> tuple[dict[str, Tensor], list[float]]:
    """Adam on Eq. 3 for the parameters with a non-empty ``mask``, only masked entries moving (Eq. 6)."""
    params = [n for n, m in mask.items() if bool(m.any())]
    if not params:
        raise ConfigError("ant: the saliency mask is empty: lower gamma, raise fraction, or use fewer seeds/prompts")
    traj.split(config.t_prime)

    def loss_fn(step: int, generator: torch.Generator) -> Tensor:
        return ant_loss(model, traj, *draw(traj, config, generator), config)[0]

    return finetune(model, params, loss_fn, steps=config.steps, lr=config.lr, seed=config.seed,
                    masks={n: mask[n] for n in params}, checkpoint=checkpoint, fingerprint=fingerprint,
                    progress=progress, description="ANT fine-tune")


def concept_prompts(concept: Concept, config: Config) -> list[str]:
    """The prompts ``c`` of Eq. 3: templates x words, or the words alone (``config.prompts``)."""
    if config.prompts == "words":
        return list(concept.words if config.synonyms else (concept.target,))
    return concept.target_prompts(synonyms=config.synonyms)


def fit(model: Diffusion, concept: Concept | str, config: Config | None = None, *, checkpoint: Any = None,
        progress: bool = True, **overrides) -> Erasure:
    """ANT: trajectories of the concept's prompts, saliency mask ``M*``, masked fine-tune; an Erasure of deltas.

    ``checkpoint=folder`` makes the fine-tune resumable (the fingerprint is the config without
    ``steps``, the concept and the model, so a run can also be continued for more steps).
    """
    config = resolve_config(Config, config, overrides)
    check_config(config)
    concept = prepare(model, concept)
    start = time.perf_counter()
    prompts = concept_prompts(concept, config)
    traj = collect(model, prompts, config, progress=progress)
    early, late = traj.split(config.t_prime)
    sal = saliency(model, traj, config, progress=progress)
    fingerprint = {"method": "ant", "config": {k: v for k, v in config_dict(config).items() if k != "steps"},
                   "concept": concept.to_dict(), "model": str(model.source)}
    deltas, losses = train(model, traj, sal.mask, config, checkpoint=checkpoint, fingerprint=fingerprint,
                           progress=progress)
    graph = Graph([WeightEdit(name, delta=delta) for name, delta in deltas.items()])
    trace = [{"kind": "saliency", "maps": k + 1, "active": n, "map_density": d}
             for k, (n, d) in enumerate(zip(sal.curve, sal.densities))]
    trace += [{"kind": "step", "step": i, "loss": loss} for i, loss in enumerate(losses)]
    notes = [
        f"{len(prompts)} prompts x {len(config.seeds)} seeds = {traj.rows} trajectories of {len(traj.timesteps)} "
        f"steps; t' = {config.t_prime:g}: {len(early)} steps with t > t', {len(late)} with t <= t'",
        f"saliency: {sal.active} of {sal.considered} parameters active ({sal.active / sal.considered:.2%}) "
        f"in {len(deltas)} tensors after {len(sal.curve)} intersected maps",
        "targets read from the original model's recorded trajectories (no frozen copy, no extra UNet calls)",
    ]
    return Erasure("ant", concept, config_dict(config), graph, trace, notes, time.perf_counter() - start)


# -- the CFG reversal study (Sec. 3.1, Fig. 3) ----------------------------------------------------
@dataclass
class ReversalStudy:
    """Images under ``ReversedCFG`` per ``t'`` and how they compare with the unreversed ones (same noise).

    Images are prompt-major: prompt ``i``, seed ``j`` at ``i * len(seeds) + j`` (``prompts`` names each).
    """

    prompts: list[str]  # one per image (prompts x seeds)
    t_primes: list[float]
    timesteps: list[float]
    baseline: list[Any]
    images: dict[float, list[Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: the unreversed images compared with themselves (what the oracle reads without reversal)
    reference: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    #: what the oracle read on each image: {"plain" or t': {attribute: [one per image]}} (pocket only)
    reads: dict[Any, dict[str, list[str]]] = field(default_factory=dict)
    #: sampling calls the study took (variants share batches)
    calls: int = 0

    def table(self) -> str:
        """A markdown table: the unreversed images, then one row per t'."""
        attrs = [k[len("changed_"):] for k in self.rows[0] if k.startswith("changed_")] if self.rows else []
        head = ["t'", "reversed steps", "latent cosine", "pixel diff", "mask IoU", "silhouette IoU", "box IoU",
                "centre shift"]
        head += [f"{a} changed / as prompted" for a in attrs]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in [self.reference, *self.rows]:
            cells = ["none" if row.get("t_prime") is None else f"{row['t_prime']:g}",
                     f"{row['reversed_steps']}/{len(self.timesteps)}", f"{row['latent_cosine']:.3f}",
                     f"{row['pixel_difference']:.1f}", _fmt(row.get("mask_iou")), _fmt(row.get("silhouette_iou")),
                     _fmt(row.get("box_iou")), _fmt(row.get("centre_shift"))]  # fmt: skip
            cells += [f"{_fmt(row.get(f'changed_{a}'))} / {_fmt(row.get(f'matches_{a}'))}" for a in attrs]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"


def reversal_study(
    model: Diffusion,
    prompts: Sequence[str],
    t_primes: Sequence[float],
    *,
    samples: int = 1,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    steps: int = 50,
    guidance_scale: float = 7.5,
    max_batch: int = 64,
    oracle: bool | None = None,
    progress: bool = False,
) -> ReversalStudy:
    """Fig. 3: the same noise sampled with CFG and with ``ReversedCFG(guidance_scale, t')`` for each ``t'``.

    Each prompt is sampled with ``seeds`` (default ``seed, seed + 1, ... seed + samples - 1``), one
    seed per image. Per ``t'``: the cosine of the final latents with the unreversed ones, the mean
    absolute pixel difference (0-255), and with the pocket oracle (``oracle=None``: on the pocket
    model) the IoU of the foreground masks and of the silhouettes (the masks with their holes
    filled: striped and outlined objects cover their inside), the IoU of the masks' bounding boxes
    and the shift of the masks' centres (pixels), the fraction of images whose colour / shape /
    texture / background read changed, and the fraction still reading what the prompt names. The
    unreversed and every reversed variant run as row blocks of batched calls
    (:func:`circuits.sampling.sweep`, at most ``max_batch`` images each).
    """
    from circuits.sampling import CFG, ReversedCFG, make_scheduler, sweep

    seeds = list(seeds) if seeds is not None else [seed + j for j in range(samples)]
    if not seeds:
        raise ConfigError("reversal_study: give at least one seed (samples >= 1 or seeds=[...])")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    rows = [p for p in prompts for _ in seeds]
    t_primes = [float(t) for t in t_primes]
    total = int(make_scheduler(model).config.num_train_timesteps)
    bad = [t for t in t_primes if not 0 <= t <= total]
    if bad or not t_primes:
        raise ConfigError(f"reversal_study: t_primes {bad or '[]'} outside the schedule's timesteps 0..{total}")
    if len(set(t_primes)) != len(t_primes):
        raise ConfigError(f"reversal_study: t_primes {t_primes} repeat a value; give each t' once")
    if oracle is None:
        oracle = getattr(model, "source", None) == "pocket"
    sched = make_scheduler(model)
    sched.set_timesteps(steps)
    timesteps = [float(t) for t in sched.timesteps]

    names = {t: f"t'={t:g}" for t in t_primes}
    variants = {"plain": CFG(guidance_scale), **{names[t]: ReversedCFG(guidance_scale, t) for t in t_primes}}
    swept = sweep(model, prompts, variants, seeds=seeds, steps=steps, guidance_scale=guidance_scale,
                  max_batch=max_batch, progress=progress)  # fmt: skip
    base_images, base_latents = swept.images["plain"], swept.latents["plain"]
    study = ReversalStudy(rows, t_primes, timesteps, base_images, {}, seeds=seeds, calls=swept.calls)
    base_px = np.stack([np.asarray(im, dtype=np.float64) for im in base_images])
    base_read = _read(base_images) if oracle else None
    study.reference = {"t_prime": None, "reversed_steps": 0, "latent_cosine": 1.0, "pixel_difference": 0.0}
    if oracle:
        study.reference.update(_compare(base_read, base_read, rows))
        study.reads["plain"] = {k: v for k, v in base_read.items() if isinstance(v, list)}
    for t_prime in t_primes:
        images, latents = swept.images[names[t_prime]], swept.latents[names[t_prime]]
        study.images[t_prime] = images
        px = np.stack([np.asarray(im, dtype=np.float64) for im in images])
        cosine = torch.nn.functional.cosine_similarity(latents.flatten(1), base_latents.flatten(1), dim=1)
        row: dict[str, Any] = {
            "t_prime": t_prime,
            "reversed_steps": sum(t <= t_prime for t in timesteps),
            "latent_cosine": float(cosine.mean()),
            "pixel_difference": float(np.abs(px - base_px).mean()),
        }
        if oracle:
            read = _read(images)
            row.update(_compare(base_read, read, rows))
            study.reads[t_prime] = {k: v for k, v in read.items() if isinstance(v, list)}
        study.rows.append(row)
    return study


def _read(images: Sequence[Any]) -> dict[str, Any]:
    from scipy import ndimage

    from circuits.pocket.oracle import fg_mask, shared_oracle, to_array

    mask = fg_mask(to_array(list(images))) > 0.5
    silhouette = np.stack([ndimage.binary_fill_holes(m) for m in mask]) if len(mask) else mask
    return {**shared_oracle().read(list(images)), "mask": mask, "silhouette": silhouette}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter, union = (a & b).sum((1, 2)), (a | b).sum((1, 2))
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    return (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1) if len(ys) else None


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU of the bounding boxes of two sets of masks; images where either is empty are left out."""
    values = []
    for p, q in zip(map(_box, a), map(_box, b)):
        if p is None or q is None:
            continue
        inter = max(0, min(p[1], q[1]) - max(p[0], q[0])) * max(0, min(p[3], q[3]) - max(p[2], q[2]))
        union = (p[1] - p[0]) * (p[3] - p[2]) + (q[1] - q[0]) * (q[3] - q[2]) - inter
        values.append(inter / union)
    return float(np.mean(values)) if values else float("nan")


def _centre_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance (pixels) between the centres of two sets of masks; images where either is empty are left out."""
    ys, xs = np.mgrid[0 : a.shape[1], 0 : a.shape[2]]
    shifts = []
    for m, n in zip(a, b):
        if m.any() and n.any():
            shifts.append(np.hypot(ys[m].mean() - ys[n].mean(), xs[m].mean() - xs[n].mean()))
    return float(np.mean(shifts)) if shifts else float("nan")


def _compare(base: dict[str, Any], other: dict[str, Any], prompts: Sequence[str]) -> dict[str, float]:
    from circuits.pocket.world import BACKGROUNDS, named_attributes

    def named(prompt: str) -> dict[str, str]:
        backgrounds = [b for b in BACKGROUNDS if f"{b} background" in prompt.lower()]
        return named_attributes(prompt) | ({"background": backgrounds[0]} if backgrounds else {})

    out = {
        "mask_iou": _iou(base["mask"], other["mask"]),
        "silhouette_iou": _iou(base["silhouette"], other["silhouette"]),
        "box_iou": _box_iou(base["mask"], other["mask"]),
        "centre_shift": _centre_shift(base["mask"], other["mask"]),
    }
    for attr in ("colour", "shape", "texture", "background"):
        out[f"changed_{attr}"] = float(np.mean([a != b for a, b in zip(base[attr], other[attr])]))
        wanted = [(named(p).get(attr), r) for p, r in zip(prompts, other[attr])]
        hits = [want == r for want, r in wanted if want is not None]
        out[f"matches_{attr}"] = float(np.mean(hits)) if hits else float("nan")
    return out
