"""``circuits.sample``: one sampler over diffusers schedulers, matching ``StableDiffusionPipeline``.

It follows the pipeline's arithmetic step for step (same prompt encoding, same initial noise
for the same seed, batched ``[uncond, cond]`` CFG in one UNet call, same scheduler calls, same
decoding), so with no interventions its images equal the pipeline's. Around every text-encoder
and UNet call it publishes a :class:`~circuits.context.StepContext` that interventions read.

``follow={i: j}`` ties prompt ``i``'s latents to prompt ``j``'s: row ``i`` starts from ``j``'s noise
and takes ``j``'s latents after every scheduler step, so the UNet reads prompt ``i`` on ``j``'s
trajectory in the same batched call (ActErase's collection, Alg. 1 lines 4-5 and 12).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from circuits.checks import real_number
from circuits.context import StepContext, publish_context
from circuits.errors import ScopeError, SettingError
from circuits.interventions.graph import GraphLike
from circuits.interventions.runtime import Run, active_runs, check_token_names, intervene
from circuits.models.diffusion import Diffusion
from circuits.sampling.conditioning import TextConditioning, added_conditioning, encode_text
from circuits.sampling.guidance import CFG
from circuits.sampling.result import SampleResult, Trajectory
from circuits.tokens import check_prompts

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
}


def make_scheduler(model: Diffusion, scheduler: Any = None) -> Any:
    """A fresh scheduler: the model's own (default), a short name (``"ddim"``, ``"dpm"``, ...), or an instance."""
    import diffusers

    if scheduler is None:
        return type(model.scheduler).from_config(model.scheduler.config)
    if isinstance(scheduler, str):
        if scheduler not in SCHEDULERS:
            raise SettingError(f"scheduler={scheduler!r}: use one of {sorted(SCHEDULERS)} or a diffusers scheduler")
        return getattr(diffusers, SCHEDULERS[scheduler]).from_config(model.scheduler.config)
    if not (hasattr(scheduler, "config") and hasattr(type(scheduler), "from_config")):
        raise SettingError(f"scheduler={scheduler!r}: use one of {sorted(SCHEDULERS)} or a diffusers scheduler")
    return type(scheduler).from_config(scheduler.config)


def encode_prompts(model: Diffusion, prompts: Sequence[str], branch: str, *, length: int | None = None) -> torch.Tensor:
    """Text embeddings ``[len(prompts), tokens, dim]`` as the pipeline computes them, in a text-phase context.

    Runs under the caller's grad mode (``sample`` sets it from its ``grad`` argument). ``length``
    encodes only the first ``length`` positions: CLIP's text encoder is causal, so they equal the
    full encoding's first positions (to float rounding), even where they cut a prompt. Closed-form
    methods that read no position past the first [EoT] use it to run the encoder several times shorter.

    On SDXL they are the 2048-wide context the UNet cross-attends to (both encoders' penultimate
    layers, concatenated); the pooled embedding comes with :func:`~circuits.sampling.conditioning.encode_text`.
    """
    return encode_text(model, prompts, branch, length=length).embeds


def sample(
    model: Diffusion,
    prompts: str | Sequence[str],
    *,
    seed: int | Sequence[int] = 0,
    steps: int = 25,
    guidance_scale: float = 7.5,
    guidance: CFG | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    graph: GraphLike = None,
    record: bool = False,
    scheduler: Any = None,
    eta: float = 0.0,
    strict: bool = False,
    progress: bool = True,
    grad: bool = False,
    follow: Mapping[int, int] | None = None,
    on_step: Callable[[int], None] | None = None,
    generator_device: str | torch.device | None = None,
) -> SampleResult:
    """Generate images for ``prompts``, optionally under an intervention ``graph``.

    ``seed=s`` draws the initial noise exactly as the pipeline does with
    ``generator=torch.Generator(device).manual_seed(s)``; ``seed=[s0, s1, ...]`` (one per prompt)
    as it does with one generator per prompt, so a prompt's image depends on its own seed only, not
    on the batch around it (what batched sweeps rely on). ``guidance`` overrides ``guidance_scale``
    (e.g. ``circuits.ReversedCFG(7.5, t_prime=500)``). ``record=True`` keeps the per-step
    trajectory. ``grad=True`` keeps the autograd graph (for gradient-based methods). ``graph`` is
    anything :func:`circuits.intervene` takes: a Graph, interventions, or an object with ``as_graph()``.

    ``follow={i: j}`` (prompt indices) makes prompt ``i`` ride prompt ``j``'s trajectory: it starts
    from ``j``'s initial noise and its latents are replaced by ``j``'s after every step, so its UNet
    activations are those of its own prompt on ``j``'s latents, and its image is ``j``'s. Prompt ``j``
    is sampled exactly as without followers; a leader cannot itself follow.

    ``on_step(i)`` is called after each denoising step (progress bars spanning several calls).
    ``generator_device`` is where the seeded generators live (default: the model's device); ``"cpu"``
    on a GPU model draws the noise the pipeline draws with ``generator=torch.Generator("cpu")``.

    On SDXL the UNet also gets the pooled embedding and the time ids (see
    :mod:`circuits.sampling.conditioning`), and ``negative_prompt=None`` is a zero unconditional context,
    as in ``StableDiffusionXLPipeline``; ``negative_prompt=""`` encodes the empty prompt instead. The
    default ``guidance_scale`` stays 7.5 (that pipeline's default is 5.0).
    """
    prompts = check_prompts(prompts)
    seed = _check_seed(seed, len(prompts))
    tie = _check_follow(follow, len(prompts))
    if isinstance(negative_prompt, str) or negative_prompt is None:
        negatives = [negative_prompt or ""] * len(prompts)
    else:
        negatives = check_prompts(negative_prompt, argument="negative_prompt")
        if len(negatives) != len(prompts):
            raise SettingError(
                f"negative_prompt has {len(negatives)} entries for {len(prompts)} prompts; give one per prompt"
            )
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise SettingError(f"steps={steps!r}: give a positive int")
    eta = real_number(eta, "eta", "sample")
    if guidance is None:
        guidance = CFG(real_number(guidance_scale, "guidance_scale", "sample"))
    elif not callable(getattr(guidance, "combine", None)):
        raise SettingError(f"guidance={guidance!r}: give circuits.CFG(scale), circuits.ReversedCFG(...) or None")
    covered = getattr(guidance, "rows", None)  # Rowwise guidance names how many prompts it covers
    if covered is not None and covered != len(prompts):
        raise SettingError(f"guidance={guidance!r} covers {covered} prompts but {len(prompts)} were given")
    size = model.default_size
    factor = model.vae_scale_factor
    for name, value in (("height", height), ("width", width)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < factor):
            raise SettingError(f"{name}={value!r}: give a positive int, a multiple of {factor} (or None: {size})")
    height, width = height or size, width or size
    if height % factor or width % factor:
        raise SettingError(
            f"height={height}, width={width}: both must be multiples of {factor} (the VAE's scale factor)"
        )

    with (intervene(model, graph, strict=strict) if graph is not None else contextlib.nullcontext()) as run:
        with torch.set_grad_enabled(grad):
            result = _sample(
                model, prompts, negatives, seed, steps, guidance, height, width, record, scheduler, eta, progress, tie,
                on_step, generator_device, zero_uncond=negative_prompt is None and model.force_zeros_for_empty_prompt,
            )
        if isinstance(run, Run):
            result.captures = run.captures
    return result


def _sample(
    model, prompts, negatives, seed, steps, guidance, height, width, record, scheduler, eta, progress, tie, on_step,
    generator_device=None,
    *, zero_uncond=False,
):
    device, n = model.device, len(prompts)
    cfg = guidance.uses_uncond
    if cfg:
        branch_rows = {"uncond": tuple(range(n)), "cond": tuple(range(n, 2 * n))}
        row_prompts = tuple(negatives) + tuple(prompts)
    else:
        branch_rows = {"cond": tuple(range(n))}
        row_prompts = tuple(prompts)
    check_token_names(model, StepContext(phase="unet", branch_rows=branch_rows, prompts=row_prompts))
    cond = encode_text(model, prompts, "cond")
    if not cfg:
        text = cond
    elif model.is_sdxl and zero_uncond:  # diffusers' force_zeros_for_empty_prompt: no uncond encoder call
        text = TextConditioning.cat([cond.zeros_like(), cond])
    else:
        text = TextConditioning.cat([encode_text(model, negatives, "uncond"), cond])
    embeds = text.embeds
    unet_kwargs = added_conditioning(model, text.pooled, height, width)  # {} on SD1.x / SD2.x

    sched = make_scheduler(model, scheduler)
    sched.set_timesteps(steps, device=device)
    timesteps = [float(t) for t in sched.timesteps]
    _check_scopes(model, len(timesteps), timesteps)

    from diffusers.utils.torch_utils import randn_tensor

    seeded_on = torch.device(generator_device) if generator_device is not None else device
    generator: torch.Generator | list[torch.Generator] = (
        torch.Generator(seeded_on).manual_seed(seed)
        if isinstance(seed, int)
        else [torch.Generator(seeded_on).manual_seed(s) for s in seed]
    )
    shape = (n, model.unet.config.in_channels, height // model.vae_scale_factor, width // model.vae_scale_factor)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=embeds.dtype) * sched.init_noise_sigma
    latents = _tie(latents, tie)
    step_kwargs = _step_kwargs(sched, generator, eta)

    traj_latents, traj_pred, traj_cond, traj_uncond = [], [], [], []
    for i, t in enumerate(tqdm(sched.timesteps, disable=not progress, desc="sampling", leave=False)):
        model_input = torch.cat([latents] * 2) if cfg else latents
        model_input = sched.scale_model_input(model_input, t)
        ctx = StepContext(
            phase="unet",
            branch_rows=branch_rows,
            prompts=row_prompts,
            step=i,
            timestep=float(t),
            num_steps=len(timesteps),
        )
        with publish_context(ctx):
            eps = model.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False, **unet_kwargs)[0]
        if cfg:
            eps_uncond, eps_cond = eps.chunk(2)
            noise_pred = guidance.combine(eps_uncond, eps_cond, float(t))
        else:
            eps_uncond, eps_cond, noise_pred = None, eps, eps
        if record:
            traj_latents.append(latents.detach().cpu())
            traj_pred.append(noise_pred.detach().cpu())
            traj_cond.append(eps_cond.detach().cpu())
            if eps_uncond is not None:
                traj_uncond.append(eps_uncond.detach().cpu())
        latents = _tie(sched.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0], tie)
        if on_step is not None:
            on_step(i)

    images = decode(model, latents)
    trajectory = None
    if record:
        traj_latents.append(latents.detach().cpu())
        trajectory = Trajectory(
            timesteps=timesteps,
            latents=torch.stack(traj_latents),
            noise_pred=torch.stack(traj_pred),
            noise_cond=torch.stack(traj_cond),
            noise_uncond=torch.stack(traj_uncond) if traj_uncond else None,
        )
    return SampleResult(
        images=images, latents=latents, prompts=list(prompts), seed=seed, timesteps=timesteps, trajectory=trajectory
    )


def _check_seed(seed: Any, n: int) -> int | list[int]:
    """An int, or a list of one int per prompt; anything else is a clear error."""
    def fits(s: Any) -> bool:  # torch.Generator.manual_seed takes a signed or unsigned 64-bit int
        return isinstance(s, int) and not isinstance(s, bool) and -(2**63) <= s < 2**64

    if fits(seed):
        return seed
    if isinstance(seed, Sequence) and not isinstance(seed, str):
        seeds = list(seed)
        if len(seeds) == n and all(fits(s) for s in seeds):
            return seeds
        raise SettingError(
            f"seed={seed!r}: give one 64-bit int per prompt ({n} prompts), or a single int for the batch"
        )
    raise SettingError(f"seed={seed!r}: give a 64-bit int (-2**63 <= seed < 2**64), or a list of one int per prompt")


def _check_follow(follow: Mapping[int, int] | None, n: int) -> tuple[list[int], list[int]] | None:
    """``(followers, leaders)`` prompt indices from ``follow={follower: leader}``; clear errors for bad maps."""
    if follow is None:
        return None
    if not isinstance(follow, Mapping):
        raise SettingError(f"follow={follow!r}: give a dict {{follower: leader}} of prompt indices, e.g. {{1: 0}}")
    for follower, leader in follow.items():
        for name, index in (("follower", follower), ("leader", leader)):
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
                raise SettingError(
                    f"follow={dict(follow)!r}: {name} {index!r} is not a prompt index "
                    f"(there are {n} prompts: 0..{n - 1})"
                )
        if follower == leader:
            raise SettingError(f"follow={dict(follow)!r}: prompt {follower} cannot follow itself")
        if leader in follow:
            raise SettingError(
                f"follow={dict(follow)!r}: prompt {follower} follows {leader}, which itself follows {follow[leader]}; "
                f"point it at the leader ({follow[leader]}) directly"
            )
    pairs = sorted(follow.items())
    return ([f for f, _ in pairs], [lead for _, lead in pairs]) if pairs else None


def _tie(latents: torch.Tensor, tie: tuple[list[int], list[int]] | None) -> torch.Tensor:
    """``latents`` with each follower row replaced by its leader's (out of place: autograd-safe)."""
    if not tie:
        return latents
    followers, leaders = (torch.tensor(rows, device=latents.device) for rows in tie)
    return latents.index_copy(0, followers, latents.index_select(0, leaders))


def decode(model: Diffusion, latents: torch.Tensor) -> list[Any]:
    """Latents to PIL images, as the pipeline's VAE decode and post-processing do."""
    from diffusers.image_processor import VaeImageProcessor

    with torch.no_grad():
        image = model.vae.decode(latents / model.vae.config.scaling_factor, return_dict=False)[0]
    processor = VaeImageProcessor(vae_scale_factor=model.vae_scale_factor)
    return processor.postprocess(image.detach(), output_type="pil", do_denormalize=[True] * image.shape[0])


def _step_kwargs(sched: Any, generator: torch.Generator, eta: float) -> dict[str, Any]:
    import inspect

    accepted = set(inspect.signature(sched.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _check_scopes(model: Diffusion, num_steps: int, timesteps: list[float]) -> None:
    """Reject step/timestep scopes that lie outside this schedule (before any compute)."""
    low, high = min(timesteps), max(timesteps)
    for run in active_runs(model):
        for intervention in run.scoped_interventions():
            if intervention.steps is not None:
                outside = [s for s in intervention.steps if s >= num_steps]
                if outside:
                    raise ScopeError(
                        f"{intervention.describe()}: steps {outside} are outside this {num_steps}-step schedule "
                        f"(valid: 0..{num_steps - 1})"
                    )
            if intervention.timesteps is not None:
                t_low, t_high = intervention.timesteps
                if t_high < low or t_low > high:
                    raise ScopeError(
                        f"{intervention.describe()}: timesteps ({t_low}, {t_high}) miss this schedule, "
                        f"which runs from {high:g} down to {low:g}"
                    )
