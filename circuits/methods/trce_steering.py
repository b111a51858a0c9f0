"""TRCE stage 2: denoising-trajectory steering (Sec. 4.2, Eqs. 6-9, App. A.3).

Chen et al., "TRCE: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion Models".
The first-stage model is fine-tuned so that its *early* denoising predictions on the malicious
prompts' own trajectories point to the safe concept and away from the malicious one:

1. **Trajectories** (:func:`cache`): the original model samples the malicious prompts ``P^m`` (the
   concept's target prompts, as in stage 1) with CFG and the null text ``""``, both recorded with
   ``circuits.sample(..., record=True)`` in batches. Erase latents ``z^m_t`` come from the first
   ``early_fraction`` of the steps, preservation latents ``z^u_t`` from any step.
2. **Guidance-enhanced targets** (Eqs. 6-7) from the *original* model:
   ``f_unsafe = e(z, 0) + beta (e(z, c^m) - e(z, 0))`` and ``f_safe = e(z, 0) + beta (e(z, c^s) - e(z, 0))``.
3. **Loss**: the triplet margin loss (Eq. 8, :func:`erase_loss`) on both the conditional and the
   unconditional prediction of the model being trained at ``z^m_t``, plus ``lambda`` times the
   preservation loss (Eq. 9, :func:`preserve_loss`) on the null trajectories, Adam.
4. **Trained parameters** (:func:`visual_params`): every self-attention projection (``attn1``
   ``to_q/to_k/to_v/to_out``) and the cross-attention ``to_q`` (the "visual layers"); the text-side
   ``to_k/to_v`` that stage 1 edits stay fixed. The result is their deltas as ``WeightEdit`` s.

Decisions the paper leaves open, with the choice made here:

- **The frozen reference is cached, never re-run during training.** Training moves the model's
  own parameters in place (:func:`~circuits.methods.training.finetune`), so a reference computed
  inside the loop would need the original weights swapped back (4 extra UNet passes per step).
  Instead the whole run is planned first: every training step's rows (which trajectory, which
  step, which null trajectory) are drawn from that step's seeded generator (:func:`plan`), and only
  those rows' references are computed, in batches, before stage 1's edits are applied.
  ``e(z^m, c^m)`` and ``e(z^m, 0)`` are the sampler's own recorded CFG branches at ``z^m`` (free),
  ``e(z^u, 0)`` is the recorded prediction on the null trajectory (free), and ``e(z^m, c^s)`` costs one
  no-grad UNet pass per planned row. Memory: 5 latent-sized tensors per planned row (pocket: nothing;
  SD at 512 px, 300 steps of batch 1: ~100 MB).
- **Squared norms are means over latent elements** (``F.mse_loss``), so the margin 0.01 and
  ``lambda`` mean the same at every resolution; Eq. 8's expectation is the mean over rows and over
  ``c in {c^m, 0}``.
- **Epochs**: an epoch visits every malicious trajectory once in a seeded random order, each at a
  uniformly drawn early step; preservation rows draw a null trajectory and a step uniformly.
- **Caching cost**: ``circuits.sample`` runs every step although only the first half of a malicious
  trajectory is used. Null trajectories are sampled with ``guidance_scale=1`` (the conditional branch
  on ``""`` *is* the null prediction; SDXL: below), and only those the plan draws: a pool of ``null_trajectories``
  i.i.d. samples of which the plan uses D distinct ones has the same distribution as D samples, so
  the D drawn ids are sampled densely (300 steps of batch 1 draw ~280 of the paper's 2000).
- **The null text** ``0`` of Eqs. 6-9 is the unconditional text ``circuits.sample`` uses with no negative
  prompt (:func:`~circuits.methods.common.null_conditioning`), so ``e(z^m, 0)`` read from the sampler's
  recorded unconditional branch and the model's own ``e(z, 0)`` during training are the same function:
  the encoding of ``""`` on SD1.x / SD2.x; on SDXL (``force_zeros_for_empty_prompt``, every SDXL
  checkpoint's default) a zero context and a zero pooled embedding, which is what SDXL's unconditional
  branch is in ``StableDiffusionXLPipeline``, not the encoding of ``""``. Null
  trajectories then cannot be the conditional branch on ``""``: on SDXL they are sampled following the
  unconditional branch alone (:class:`~circuits.sampling.guidance.Unconditional`: every UNet call also runs
  a wasted conditional row, so null trajectories cost twice as much there), and Eq. 9's reference is the
  recorded unconditional prediction. Every UNet call passes SDXL's pooled embedding and time ids
  (:func:`~circuits.methods.common.unet_eps`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from circuits.interventions.graph import Graph, GraphLike
from circuits.interventions.runtime import intervene
from circuits.interventions.weight_edit import WeightEdit
from circuits.methods.common import (
    ConfigError,
    config_dict,
    null_conditioning,
    repeat,
    take,
    text_conditioning,
    unet_eps,
    zero_null,
)
from circuits.methods.concept import Concept
from circuits.methods.training import finetune, step_generator
from circuits.models.diffusion import Diffusion
from circuits.sampling import CFG, Unconditional, sample
from circuits.sampling.conditioning import TextConditioning


class Config(Protocol):
    """The settings stage 2 reads; :class:`circuits.methods.trce.Config` has them (documented there).
    Named here so this module does not import the one that imports it."""

    trajectories: int
    null_trajectories: int
    batch_size: int
    cache_batch: int
    epochs: int
    early_fraction: float
    sample_steps: int
    scheduler: str
    guidance_scale: float
    beta: float
    margin: float
    preserve_weight: float
    lr: float
    synonyms: bool
    seed: int

Eps = Float[Tensor, "batch channels height width"]


# -- Eqs. 6-9 as pure functions ------------------------------------------------------------
def guided(uncond: Eps, cond: Eps, beta: float) -> Eps:
    """Eqs. 6-7: the guidance-enhanced prediction ``uncond + beta (cond - uncond)``."""
    return uncond + beta * (cond - uncond)


def erase_loss(pred: Eps, safe: Eps, unsafe: Eps, margin: float) -> Float[Tensor, ""]:
    """Eq. 8: ``mean_rows max(||pred - safe||^2 - ||pred - unsafe||^2 + margin, 0)``, norms as element means."""
    to_safe = (pred - safe).pow(2).flatten(1).mean(1)
    to_unsafe = (pred - unsafe).pow(2).flatten(1).mean(1)
    return torch.clamp(to_safe - to_unsafe + margin, min=0).mean()


def preserve_loss(pred: Eps, reference: Eps) -> Float[Tensor, ""]:
    """Eq. 9: ``||pred - reference||^2`` (mean over elements and rows)."""
    return F.mse_loss(pred, reference)


def visual_params(model: Diffusion) -> list[str]:
    """The parameters stage 2 trains: every self-attention projection and every cross-attention ``to_q``."""
    names = []
    for site in model.sites.self_attention():
        names += [f"{site}.{n}" for n, _ in model.sites.module(site).named_parameters() if n.startswith("to_")]
    for site in model.sites.cross_attention():
        names += [f"{site}.to_q.{n}" for n, _ in model.sites.module(site).to_q.named_parameters()]
    return names


# -- the plan: every step's rows, drawn before anything runs --------------------------------
@dataclass(frozen=True)
class Plan:
    """Rows of every training step: ``erase[i]`` (trajectory, step) and ``preserve[i]`` (null trajectory, step)."""

    erase: list[list[tuple[int, int]]]
    preserve: list[list[tuple[int, int]]]
    early_steps: int


def plan(config: "Config") -> Plan:
    """Epochs over the malicious trajectories (seeded order), early steps and null rows from each step's generator."""
    n, batch = config.trajectories, config.batch_size
    early = max(1, round(config.early_fraction * config.sample_steps))
    order: list[int] = []
    for epoch in range(config.epochs):
        key = hashlib.sha256(f"trce-epoch:{config.seed}:{epoch}".encode()).digest()
        order += torch.randperm(n, generator=torch.Generator().manual_seed(int.from_bytes(key[:7], "little"))).tolist()
    erase, preserve = [], []
    for i in range(math.ceil(len(order) / batch)):
        g = step_generator(config.seed, i)
        rows = order[i * batch:(i + 1) * batch]
        steps = torch.randint(early, (len(rows),), generator=g).tolist()
        nulls = torch.randint(config.null_trajectories, (len(rows),), generator=g).tolist()
        null_steps = torch.randint(config.sample_steps, (len(rows),), generator=g).tolist()
        erase.append(list(zip(rows, steps)))
        preserve.append(list(zip(nulls, null_steps)))
    return Plan(erase, preserve, early)


# -- cache: trajectories and the frozen reference --------------------------------------------
@dataclass
class Cache:
    """Per training step: erase latents, timesteps, prompts, f_safe, f_unsafe; null latents, timesteps, reference."""

    z: list[Tensor]
    t: list[Tensor]
    prompt: list[Tensor]
    safe: list[Tensor]
    unsafe: list[Tensor]
    null_z: list[Tensor]
    null_t: list[Tensor]
    null_ref: list[Tensor]
    seconds: float


def _record(model, prompts, seed, config, guidance):
    result = sample(model, prompts, seed=seed, steps=config.sample_steps, guidance=guidance,
                    scheduler=config.scheduler, record=True, progress=False)
    return result.trajectory


def null_guidance(model: Diffusion) -> CFG | Unconditional:
    """How null trajectories are sampled: the conditional branch on ``""`` (``CFG(1)``), or, where the null text
    is SDXL's zero context, the unconditional branch alone; either way the ``e_uncond`` that :func:`_rows` reads
    (the recorded conditional prediction where the sampler ran no unconditional branch) is the null prediction."""
    return Unconditional() if zero_null(model) else CFG(1.0)


def _rows(model, wanted: dict[int, list[int]], prompts: Sequence[str], seed: int, config, guidance):
    """Sample the trajectories ``wanted`` names (``{id: [steps]}``): the i-th id (in order) is row
    ``i % cache_batch`` of sampling call ``i // cache_batch`` (noise from ``seed +`` call), with prompt
    ``prompts[id % len(prompts)]``. Returns ``{(id, step): (z, t, e_cond, e_uncond)}``."""
    out, ids = {}, sorted(wanted)
    for call in range(math.ceil(len(ids) / config.cache_batch)):
        chunk = ids[call * config.cache_batch:(call + 1) * config.cache_batch]
        traj = _record(model, [prompts[k % len(prompts)] for k in chunk], seed + call, config, guidance)
        for j, k in enumerate(chunk):
            for step in wanted[k]:
                uncond = traj.noise_uncond if traj.noise_uncond is not None else traj.noise_cond
                out[(k, step)] = (traj.latents[step, j], traj.timesteps[step], traj.noise_cond[step, j],
                                  uncond[step, j])
    return out


def cache(model: Diffusion, concept: Concept, config: "Config", the_plan: Plan) -> Cache:
    """Sample the planned trajectories with the original model and compute the reference targets (no grad)."""
    start = time.perf_counter()
    pairs = concept.pairs(synonyms=config.synonyms)
    _check_scheduler(model, config)
    wanted: dict[int, list[int]] = {}
    for rows in the_plan.erase:
        for k, s in rows:
            wanted.setdefault(k, []).append(s)
    nulls: dict[int, list[int]] = {}
    for rows in the_plan.preserve:
        for k, s in rows:
            nulls.setdefault(k, []).append(s)
    with torch.no_grad():
        erase_rows = _rows(model, wanted, [p.target for p in pairs], config.seed, config, CFG(config.guidance_scale))
        null_rows = _rows(model, nulls, [""], config.seed + 1_000_003, config, null_guidance(model))
        keys = sorted(erase_rows)
        anchors = text_conditioning(model, [p.anchor for p in pairs])
        safe_cond = {}
        for i in range(0, len(keys), 64):  # e(z^m, c^s) for the planned rows only, in batches
            chunk = keys[i:i + 64]
            z = torch.stack([erase_rows[key][0] for key in chunk]).to(model.device, model.dtype)
            t = torch.tensor([erase_rows[key][1] for key in chunk], device=model.device).long()
            text = take(anchors, torch.tensor([k % len(pairs) for k, _ in chunk]))
            pred = unet_eps(model, z, t, text).cpu()
            safe_cond.update(zip(chunk, pred))
    fields: dict[str, list[Tensor]] = {name: [] for name in ("z", "t", "prompt", "safe", "unsafe",
                                                              "null_z", "null_t", "null_ref")}
    for erase, preserve in zip(the_plan.erase, the_plan.preserve):
        rows = [erase_rows[key] for key in erase]
        uncond = torch.stack([r[3] for r in rows])
        fields["z"].append(torch.stack([r[0] for r in rows]))
        fields["t"].append(torch.tensor([r[1] for r in rows]).long())
        fields["prompt"].append(torch.tensor([k % len(pairs) for k, _ in erase]))
        fields["unsafe"].append(guided(uncond, torch.stack([r[2] for r in rows]), config.beta))
        fields["safe"].append(guided(uncond, torch.stack([safe_cond[key] for key in erase]), config.beta))
        null = [null_rows[key] for key in preserve]
        fields["null_z"].append(torch.stack([r[0] for r in null]))
        fields["null_t"].append(torch.tensor([r[1] for r in null]).long())
        fields["null_ref"].append(torch.stack([r[3] for r in null]))  # the recorded null prediction
    return Cache(**fields, seconds=time.perf_counter() - start)


def null_text(model: Diffusion) -> TextConditioning:
    """The null text ``0`` of Eqs. 6-9, one row: the unconditional text of ``circuits.sample`` (the encoding of
    ``""``; SDXL's zero context and pooled embedding), so ``e(z, 0)`` is the prediction the sampler recorded."""
    return null_conditioning(model, "cond")


def null_predictions(model: Diffusion, z: Eps, t: Tensor, null: TextConditioning) -> Eps:
    """``e(z, 0)``: the model's null prediction (``null``: :func:`~circuits.methods.common.null_conditioning`) at
    latents ``z`` and timesteps ``t``, in batches of 64, no grad, on the CPU."""
    out = []
    with torch.no_grad():
        for i in range(0, len(z), 64):
            x, steps = z[i:i + 64].to(model.device, model.dtype), t[i:i + 64].to(model.device)
            out.append(unet_eps(model, x, steps, repeat(null, len(x))).cpu())
    return torch.cat(out)


def _null_reference(model: Diffusion, data: Cache, null: TextConditioning) -> list[Tensor]:
    """Eq. 9's reference as the authors' code takes it: the null prediction of the model as it is now
    (the stage-1 model, inside ``intervene(model, base)``) at every planned null row, no grad."""
    sizes = [len(z) for z in data.null_z]
    return list(null_predictions(model, torch.cat(data.null_z), torch.cat(data.null_t), null).split(sizes))


def _check_scheduler(model: Diffusion, config: "Config") -> None:
    from circuits.sampling import make_scheduler

    sched = make_scheduler(model, config.scheduler)
    sched.set_timesteps(config.sample_steps)
    x = torch.ones(1)
    if not torch.equal(sched.scale_model_input(x, sched.timesteps[0]), x):
        raise ConfigError(
            f"trce: scheduler {config.scheduler!r} scales the UNet input; stage 2 feeds cached latents to the UNet "
            "directly, so use one that does not ('ddim', the paper's, 'pndm' or 'dpm')"
        )


# -- training ---------------------------------------------------------------------------------
def loss_function(
    model: Diffusion, data: Cache, cond: TextConditioning, null: TextConditioning, config: "Config"
) -> Callable:
    """``loss(step, generator) -> (L_erase + lambda L_preserve, terms)`` for :func:`finetune` (one UNet call).

    ``cond``: the target prompts' conditioning (one row per prompt pair), ``null``: the one-row null text."""
    device, dtype = model.device, model.dtype

    def loss(step: int, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        z, null_z = data.z[step].to(device, dtype), data.null_z[step].to(device, dtype)
        b, bn = len(z), len(null_z)
        x = torch.cat([z, z, null_z])
        t = torch.cat([data.t[step], data.t[step], data.null_t[step]]).to(device)
        text = TextConditioning.cat([take(cond, data.prompt[step]), repeat(null, b + bn)])
        pred_cond, pred_uncond, pred_null = unet_eps(model, x, t, text).split([b, b, bn])
        safe, unsafe = data.safe[step].to(device, dtype), data.unsafe[step].to(device, dtype)
        erase = (erase_loss(pred_cond, safe, unsafe, config.margin)
                 + erase_loss(pred_uncond, safe, unsafe, config.margin)) / 2
        preserve = preserve_loss(pred_null, data.null_ref[step].to(device, dtype))
        return erase + config.preserve_weight * preserve, {"erase": erase.detach(), "preserve": preserve.detach()}

    return loss


def fingerprint(model: Diffusion, concept: Concept, config: "Config", base: Graph) -> dict[str, Any]:
    """What a checkpoint must match: the config, the concept, the model's source and the base graph's tensors."""
    digest = hashlib.sha256()
    tensors: dict[str, Tensor] = {}
    digest.update(repr(base.to_data(tensors=tensors)).encode())
    for key in sorted(tensors):
        digest.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return {"config": config_dict(config), "concept": concept.to_dict(), "model": model.source,
            "base": digest.hexdigest()}


def steer(
    model: Diffusion,
    concept: Concept,
    config: "Config",
    base: GraphLike = None,
    *,
    checkpoint: Any = None,
    checkpoint_every: int = 50,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Graph, list[dict[str, Any]], list[str]]:
    """Stage 2 on top of ``base`` (stage 1's graph, or nothing): the deltas as WeightEdits, trace rows, notes."""
    base = Graph() if base is None else (base.as_graph() if hasattr(base, "as_graph") else Graph(base))
    params = visual_params(model)
    the_plan = plan(config)
    data = cache(model, concept, config, the_plan)  # the original model: the frozen reference
    pairs = concept.pairs(synonyms=config.synonyms)
    start = time.perf_counter()
    terms: list[dict[str, float]] = []
    with intervene(model, base):  # the model trained is the stage-1 model
        cond = text_conditioning(model, [p.target for p in pairs])
        null = null_text(model)
        if config.preserve_reference == "stage1":
            data.null_ref = _null_reference(model, data, null)
        deltas, losses = finetune(
            model, params, loss_function(model, data, cond, null, config), steps=len(the_plan.erase), lr=config.lr,
            seed=config.seed, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
            fingerprint=fingerprint(model, concept, config, base), progress=progress, description="trce stage 2",
            on_step=on_step, terms=terms,
        )
    seconds = time.perf_counter() - start
    graph = Graph([WeightEdit(name, delta=deltas[name]) for name in params])
    rows = [{"stage": "trajectory", "step": i, "loss": loss, **parts} for i, (loss, parts) in
            enumerate(zip(losses, terms))]
    moved = math.sqrt(sum(float(d.double().pow(2).sum()) for d in deltas.values()))
    notes = [
        f"stage 2: {config.trajectories} malicious and {config.null_trajectories} null trajectories planned "
        f"({config.sample_steps} {config.scheduler} steps, erase rows from the first {the_plan.early_steps}); "
        f"cached with the reference in {data.seconds:.1f}s; {len(losses)} Adam steps (lr {config.lr:g}) on "
        f"{len(params)} visual parameters in {seconds:.1f}s; ||delta|| = {moved:.3g}",
    ]
    return graph, rows, notes
