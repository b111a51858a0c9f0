"""ANT's trajectories and trajectory-aware loss (Sec. 3.2, Eq. 3).

On noisy latents ``z_t`` of the concept's prompts (``eps*``, ``delta*``: the frozen original model)::

    L = ||eps(z_t1, t1, c) - sg[eps*(z_t1, t1) + eta delta*]||^2        t1 ~ U(t', T)   (preserve)
      + l1 ||eps(z_t2, t2, c) - sg[eps*(z_t2, t2) - eta delta*]||^2     t2 ~ U(0, t')   (erase)
      + l2 ||eps(z_t1, t1) - sg[eps*(z_t1, t1)]||^2 + l3 ||eps(z_t2, t2) - sg[eps*(z_t2, t2)]||^2

(MSE means). One UNet call per step holds the four rows.

- **Targets: cached, not recomputed.** ``z_t`` are points of the original model's sampled trajectories
  (:func:`collect`: CFG ``sample_guidance``, seeded noise, 50 DDIM steps by default as the paper); the
  sampler records ``eps*(z_t, t)`` and ``eps*(z_t, t, c)`` at each of them, so the stop-gradient
  targets are read from that record: zero extra UNet calls per step and no frozen copy of the model,
  at the cost of ``3 x steps x rows`` latents of memory and of ``z_t`` lying on the *original*
  model's trajectories (the official code re-samples ``z_t`` with the model being trained).
- **Timesteps on the sampling grid.** ``t1``/``t2`` are drawn uniformly from the grid points with
  ``t > t'`` / ``t <= t'``, and the UNet sees each latent at its own timestep. (The official code,
  from ESD, feeds the UNet ``t ~ 1000 k / 50`` for the latent sampled ``till_T = k`` DDIM steps; read
  as steps from the noise, an early, noisy latent is labelled with a small timestep; see
  ``docs/recipes/ant.md``.)
- **The unconditional rows** ``eps(z_t)`` read the sampler's unconditional text (no negative prompt,
  :func:`~circuits.methods.common.null_conditioning`): the encoding of ``""``, or on SDXL a zero context and
  zero pooled embedding, so at the original weights ``eps(z_t) = eps*(z_t)`` and the ``l2`` / ``l3`` terms start
  at zero. Every UNet call passes SDXL's pooled embedding and time ids
  (:func:`~circuits.methods.common.unet_eps`).

The config is an ``ant.Config`` (defined in ``ant_config``, which every ANT module imports).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.context import StepContext, publish_context
from circuits.methods.ant_config import Config
from circuits.methods.common import ConfigError, null_conditioning, unet_eps
from circuits.models.diffusion import Diffusion
from circuits.sampling.conditioning import TextConditioning


@dataclass
class Trajectories:
    """The original model's sampled trajectories: ``z_t`` and the frozen predictions at each of them.

    Row ``j * len(prompts) + i`` is prompt ``i`` sampled with seed ``seeds[j]`` (one sampling call per
    seed). ``latents[s]`` enters step ``s`` at ``timesteps[s]``; ``input_scale[s]`` is the
    scheduler's ``scale_model_input`` factor there. ``cond`` / ``uncond`` are the contexts the sampler
    used (``uncond``: its unconditional text, a zero context on SDXL); ``cond_pooled`` / ``uncond_pooled``
    are SDXL's pooled embeddings beside them (None on SD1.x / SD2.x).
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
    cond_pooled: Float[Tensor, "prompts pooled"] | None = None
    uncond_pooled: Float[Tensor, "one pooled"] | None = None

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
    from circuits.sampling import encode_text, make_scheduler, sample

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
        cond = encode_text(model, prompts, "cond")
    uncond = null_conditioning(model, "uncond")  # what the sampler's unconditional branch read
    return Trajectories(
        prompts, list(config.seeds), timesteps,
        torch.cat([p.latents[:-1] for p in parts], dim=1), torch.cat([p.noise_cond for p in parts], dim=1),
        torch.cat([p.noise_uncond for p in parts], dim=1), torch.tensor(scales), cond.embeds.detach(),
        uncond.embeds.detach(), _detached(cond.pooled), _detached(uncond.pooled),
    )


def _detached(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach()


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
    cond = TextConditioning(traj.cond[prompt_of].to(device),
                            None if traj.cond_pooled is None else traj.cond_pooled[prompt_of].to(device))
    uncond = TextConditioning(traj.uncond.expand(2 * n, -1, -1).to(device),
                              None if traj.uncond_pooled is None else traj.uncond_pooled.expand(2 * n, -1).to(device))
    text = TextConditioning.cat([cond, cond, uncond])
    names = tuple(traj.prompts[int(i)] for i in prompt_of)
    ctx = StepContext(phase="unet", branch_rows={"cond": tuple(range(2 * n)), "uncond": tuple(range(2 * n, 4 * n))},
                      prompts=names * 2 + ("",) * (2 * n))
    with publish_context(ctx):
        eps = unet_eps(model, latents, t, text)
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




def first_rows(traj: Trajectories, count: int) -> Trajectories:
    """The first ``count`` (prompt, seed) rows of ``traj`` (seed-major, as :func:`collect` orders them)."""
    if not 1 <= count <= traj.rows:
        raise ConfigError(f"first_rows: count={count}; the trajectories have {traj.rows} rows")
    return dataclasses.replace(traj, latents=traj.latents[:, :count], eps_cond=traj.eps_cond[:, :count],
                               eps_uncond=traj.eps_uncond[:, :count])  # fmt: skip
