"""ActErase: training-free concept erasure by masked activation patching.

Sun et al., "ActErase: A Training-Free Paradigm for Precise Concept Erasure via Activation Patching",
Alg. 1 (Eqs. 3-6), Alg. 2 (Eqs. 7-9), App. A.3, and the module comparison (Table 7).

- **Collect** (Alg. 1 step 1, :func:`collect`): source prompts ``c_s`` and target prompts ``c_t`` run
  in ONE batched sampling call from the same noise, the target rows riding the source rows'
  trajectory (``circuits.sample(..., follow=...)``: line 12, ``z_{t-1}`` from the source prediction).
  At every step and layer, ``Capture`` keeps the running mean of the source activation
  (``x_avg``, line 7) and the rule ``M = (I_s >= tau) & (I_s < I_t)`` (Eqs. 4-5) of that step.
- **Patch** (Eq. 6, :func:`patch`): ``MaskedPatch(M_t, x_avg)`` on every layer of the set, at every
  step ``t``.
- **Merge** (Alg. 2, :func:`merge`): ``M = OR_i M_i`` (Eq. 7), ``x = sum_i M_i x_i / max(1, sum_i M_i)`` (Eq. 8).

Roles, as in the paper: the *target* prompt holds the concept (the concept's target prompts), the
*source* prompt is its safe twin (the anchor prompt of the same template); source activations
replace target ones. Decisions the paper leaves open:

- **score** (Eq. 4, ``W_s . |x|`` is dimensionally ambiguous): ``"wanda"`` (default) scores each
  neuron j at each position by ``|x_j| * ||W2[:, j]||`` on the FFN hidden activation (the input of
  ``ff.net.2``), as ConceptPrune does; ``"magnitude"`` is ``|x_j|``, the paper's choice for the UNet
  output ("activation intensity") and the only one defined on sites no linear layer reads.
- **masks over steps** (``masks``): line 10 recomputes ``M`` at every step and line 21 applies it at
  every step, and App. A.3 sets "the patching timesteps the same as denoising timesteps". The default
  ``"step"`` keeps the mask of every collection step and applies it at the matching step of a later
  run (a ``MaskedPatch`` with a ``schedule``: the slice of the nearest timestep). ``"last"`` is the
  literal overwrite (only the final step's mask survives the loop); ``"vote"`` is one static mask,
  an entry masked where the rule holds in at least ``agreement`` of the (step, pair) votes. ``x_avg``
  is the mean over steps in every case (line 7).
- **prompt pairs** (the paper writes one pair): at each step an entry is masked where the rule holds
  for at least ``agreement`` of the pairs (default 0.5, a majority); ``x_avg`` averages over them.
- **CFG branch**: Alg. 1 writes the patched call as ``G(z_t, t, c_t; {x^l <- x_p^l})`` (line 23,
  Eq. 3), the prediction conditioned on the target prompt, so the patch acts on the conditional
  rows (``branch="cond"``); masks and ``x_avg`` are read there (the unconditional rows of a pair are
  identical). ``"both"`` (the patch also written into the unconditional rows) is the measured control.
- **sampler**: App. A.3, DPM-Solver (``scheduler="dpm"``), 30 steps, guidance 7.5, for collection.
- **tau**: App. A.3's 0.01 (0.02 for styles, :func:`style`). On pocket's FFN the wanda scores have a
  median of 0.02-0.035, so 0.01 drops the quietest quarter of entries, as a floor should; not rescaled.
- **defaults per model**: ``Config.paper()`` (the above) everywhere but pocket, ``Config.pocket()``
  on pocket (see its docstring for what differs and the measurement behind it);
  ``fit(model, concept)`` picks them (``circuits.methods.common.resolve_config``) and says which in
  ``Erasure.notes``.

What it does on pocket, with controls and speed: ``docs/recipes/acterase.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from circuits.errors import ShapeError, SiteError
from circuits.interventions.activation import MaskedPatch
from circuits.interventions.capture import Capture
from circuits.interventions.graph import Graph
from circuits.methods.common import ConfigError, config_dict, defaults_note, prepare, resolve_config
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.models.diffusion import Diffusion

LAYER_SETS = {"ffn": "FFN hidden activations", "cross_attention": "cross-attention outputs", "unet_output": "unet.eps"}
STYLE_TAU = 0.02
STATS = ("rule_density", "importance_source", "importance_target", "above_tau")
MASKS = ("step", "last", "vote")


@dataclass(frozen=True)
class Config:
    """ActErase settings. The field defaults are the paper's (App. A.3, Alg. 1); :meth:`paper` and
    :meth:`pocket` are what ``fit`` starts from on Stable Diffusion and on pocket."""

    #: layer set: "ffn" (the paper's), "cross_attention" (attn2 outputs), "unet_output" (unet.eps), or a site glob
    layers: str = "ffn"
    #: importance score (Eq. 4): "wanda" |x_j| * ||W2[:, j]|| (FFN hidden sites only) or "magnitude" |x_j|
    score: Literal["wanda", "magnitude"] = "wanda"
    #: tau, the importance floor of Eq. 5 (App. A.3: 0.01 for objects and NSFW, 0.02 for styles)
    tau: float = 0.01
    #: masks over steps: "step" (Alg. 1 l.10: M_t applied at step t), "last" (the overwrite's survivor), "vote"
    masks: Literal["step", "last", "vote"] = "step"
    #: patch value: "mean" (Alg. 1 l.7: x_avg, the source's mean over steps) or "step" (its mean at each step)
    sources: Literal["mean", "step"] = "mean"
    #: the fraction of prompt pairs (of (step, pair) votes with masks="vote") for which Eq. 5 must hold
    agreement: float = 0.5
    #: CFG branch the patch acts on: "cond" (Alg. 1 l.23, G(z_t, t, c_t)) or "both" (the control)
    branch: Literal["cond", "both"] = "cond"
    #: collection run (App. A.3): DPM-Solver, 30 steps, guidance 7.5; seed
    steps: int = 30
    guidance_scale: float = 7.5
    seed: int = 0
    scheduler: str | None = "dpm"
    #: fit on the synonym prompts too
    synonyms: bool = True

    @classmethod
    def paper(cls) -> "Config":
        """The paper's settings (Alg. 1, App. A.3): FFN, per-step masks, tau 0.01, DPM-Solver 30 steps."""
        return cls()

    @classmethod
    def pocket(cls) -> "Config":
        """Settings for the pocket model: the paper's, except one static mask voted over (step, pair)
        (``masks="vote"``). Measured on pocket (``benchmarks/acterase_pocket.py --fast``): on red and circle
        the per-step masks erase less and keep less than the vote (target rate 0.17 / 0.50 against
        0.00 / 0.25, preservation ratio 0.33 / 0.50 against 0.50 / 0.56); on striped and dotted they erase
        a little more at a larger cost. docs/recipes/acterase.md has the table."""
        return cls(masks="vote")


def style() -> Config:
    """The paper's setting for artistic styles (App. A.3: tau = 0.02)."""
    return Config(tau=STYLE_TAU)


@dataclass
class Collected:
    """What Alg. 1 step 1 returns, per layer: ``x_avg``, the mask(s), the votes and per-step statistics."""

    source: dict[str, Tensor]  # x_avg: mean over steps and source prompts (line 7)
    mask: dict[str, Tensor]  # M, bool: [steps, *shape] with masks="step", else [*shape]
    votes: dict[str, Tensor]  # fraction of (step, pair) votes for which Eq. 5 holds, [*shape]
    stats: dict[str, Tensor]  # [steps, 4]: per-step means of STATS over pairs
    score: str = "wanda"
    masks: str = "step"
    #: the collection run's timesteps, one per step (the schedule of a per-step patch)
    timesteps: Tensor | None = None
    #: with sources="step": the source's mean over pairs at each step, [steps, *shape]
    step_source: dict[str, Tensor] | None = None


def importance(x: Tensor, weight_norm: Tensor | None) -> Tensor:
    """Eq. 4: ``|x_j| * ||W2[:, j]||`` (wanda) or ``|x_j|`` (``weight_norm=None``), per position and neuron."""
    return x.abs() if weight_norm is None else x.abs() * weight_norm


def mask_rule(i_s: Tensor, i_t: Tensor, tau: float) -> Tensor:
    """Eq. 5: ``(I_s >= tau) & (I_s < I_t)``."""
    return (i_s >= tau) & (i_s < i_t)


def layer_sites(model: Diffusion, layers: str, score: str) -> list[str]:
    """The sites of a layer set (a name of :data:`LAYER_SETS` or a glob); wanda needs FFN hidden sites."""
    presets = {"ffn": model.sites.ffn_hidden, "cross_attention": model.sites.cross_attention,
               "unet_output": lambda: ["unet.eps"]}
    sites = presets[layers]() if layers in presets else model.sites.resolve(layers)  # unknown: SiteError
    outside = [s for s in sites if not s.startswith("unet.")]
    if outside or not sites:
        raise SiteError(f"layers={layers!r} matches {outside[:3] or 'no site'}: ActErase patches UNet activations")
    not_ffn = [s for s in sites if not s.endswith(".ff.hidden")]
    if score == "wanda" and not_ffn:
        raise SiteError(
            f"layers={layers!r} matches {len(not_ffn)} site(s) that are not FFN hidden activations "
            f"(e.g. {not_ffn[0]!r}); score='wanda' reads W2 of the FFN's ff.net.2, so it needs '*.ff.hidden' "
            "sites (layers='ffn' or e.g. 'unet.up_blocks.*.ff.hidden'); use score='magnitude' for other sites"
        )
    return sites


def _weight_norm(model: Diffusion, site: str, score: str) -> Tensor | None:
    if score == "magnitude":
        return None
    return model.sites.module(site.removesuffix(".hidden") + ".net.2").weight.detach().norm(dim=0)


def _votes(w: Tensor | None, tau: float, n: int):
    return lambda x: mask_rule(importance(x[:n], w), importance(x[n:], w), tau).to(x.dtype)


def _step_mask(w: Tensor | None, tau: float, n: int, agreement: float):
    """This step's mask: Eq. 5 holds for at least ``agreement`` of the ``n`` pairs; ``[1, ...]`` bool."""
    def fn(x: Tensor) -> Tensor:
        rule = mask_rule(importance(x[:n], w), importance(x[n:], w), tau)
        return rule.float().mean(0, keepdim=True) >= agreement

    return fn


def _stats(w: Tensor | None, tau: float, n: int):
    def fn(x: Tensor) -> Tensor:
        i_s, i_t = importance(x[:n], w), importance(x[n:], w)
        dims = tuple(range(1, x.ndim))
        rows = [mask_rule(i_s, i_t, tau).to(x.dtype), i_s, i_t, (i_s >= tau).to(x.dtype)]
        return torch.stack([r.mean(dims) for r in rows], -1).view(n, *[1] * (x.ndim - 2), len(rows))

    return fn


def collect(model: Diffusion, concept: Concept, config: Config, *, progress: bool = False) -> Collected:
    """Alg. 1 step 1: one batched sampling call, sources leading, targets following their trajectories."""
    pairs = concept.pairs(synonyms=config.synonyms)
    n, sites = len(pairs), layer_sites(model, config.layers, config.score)
    graph = Graph()
    for site in sites:
        w = _weight_norm(model, site, config.score)
        graph.append(Capture(site, branch="cond", rows=range(n), mean_over="batch", name=f"x/{site}",
                             over_steps="stack" if config.sources == "step" else "mean"))
        graph.append(Capture(site, branch="cond", transform=_votes(w, config.tau, n), mean_over="batch",
                             over_steps="mean", name=f"votes/{site}"))
        graph.append(Capture(site, branch="cond", transform=_stats(w, config.tau, n), mean_over="batch",
                             name=f"stats/{site}"))
        if config.masks != "vote":  # the mask of every step, kept as bool (1 byte per entry and step)
            graph.append(Capture(site, branch="cond", transform=_step_mask(w, config.tau, n, config.agreement),
                                 name=f"step/{site}"))
    from circuits.sampling import sample

    result = sample(
        model, [p.anchor for p in pairs] + [p.target for p in pairs], follow={n + i: i for i in range(n)},
        graph=graph, seed=config.seed, steps=config.steps, guidance_scale=config.guidance_scale,
        scheduler=config.scheduler, progress=progress, strict=True,
    )
    caps = result.captures
    votes = {s: caps[f"votes/{s}"] for s in sites}
    timesteps = torch.tensor([float(c.timestep) for c in caps.calls(f"stats/{sites[0]}")])
    if config.masks == "vote":
        mask = {s: v >= config.agreement for s, v in votes.items()}
    else:
        steps = {s: caps[f"step/{s}"][:, 0] for s in sites}  # [steps, *shape]
        mask = steps if config.masks == "step" else {s: m[-1] for s, m in steps.items()}
    step_source = {s: caps[f"x/{s}"] for s in sites} if config.sources == "step" else None  # [steps, *shape]
    return Collected(
        source={s: v.mean(0) for s, v in step_source.items()} if step_source else {s: caps[f"x/{s}"] for s in sites},
        mask=mask, votes=votes, stats={s: caps[f"stats/{s}"].reshape(-1, len(STATS)) for s in sites},
        score=config.score, masks=config.masks, timesteps=timesteps, step_source=step_source,
    )


def patch(collected: Collected, branch: str = "cond") -> Graph:
    """Eq. 6 on every layer: ``x_p = M * x_avg + (1 - M) * x_t`` at every step (``M_t`` with per-step masks)."""
    per_step_mask, per_step_source = collected.masks == "step", collected.step_source is not None
    if not (per_step_mask or per_step_source):
        return Graph(MaskedPatch(s, mask=m, source=collected.source[s], branch=branch)
                     for s, m in collected.mask.items())
    if collected.timesteps is None:
        raise ConfigError("patch(): a per-step patch needs the collection's timesteps (Collected.timesteps is None)")
    graph = Graph()
    for s, m in collected.mask.items():
        source = collected.step_source[s] if collected.step_source else collected.source[s].unsqueeze(0)
        # each patch owns its schedule tensor: erasures are saved with safetensors, which refuses shared storage
        graph.append(MaskedPatch(s, mask=m if per_step_mask else m.unsqueeze(0), source=source, branch=branch,
                                 schedule=collected.timesteps.clone()))
    return graph


def trace(collected: Collected) -> list[dict]:
    """One row per layer: mask density (overall, and per step: the rule's and the applied mask's), importances."""
    rows = []
    for site, mask in collected.mask.items():
        stats = collected.stats[site]
        shape = list(mask.shape[1:] if collected.masks == "step" else mask.shape)
        row = {
            "site": site, "score": collected.score, "masks": collected.masks, "shape": shape,
            "density": float(mask.float().mean()), "density_per_step": [round(float(v), 5) for v in stats[:, 0]],
            **{name: float(stats[:, i].mean()) for i, name in enumerate(STATS)},
        }
        if collected.masks == "step":
            row["mask_density_per_step"] = [round(float(m.float().mean()), 5) for m in mask]
        rows.append(row)
    return rows


def _check(config: Config) -> None:
    if config.score not in ("wanda", "magnitude"):
        raise ConfigError(f"acterase.Config: score={config.score!r}; use 'wanda' or 'magnitude'")
    if config.branch not in ("cond", "both"):
        raise ConfigError(f"acterase.Config: branch={config.branch!r}; use 'cond' or 'both'")
    if config.sources not in ("mean", "step"):
        raise ConfigError(f"acterase.Config: sources={config.sources!r}; use 'mean' or 'step'")
    if config.masks not in MASKS:
        raise ConfigError(f"acterase.Config: masks={config.masks!r}; use one of {MASKS}")
    if not config.tau >= 0:
        raise ConfigError(f"acterase.Config: tau={config.tau} must be >= 0")
    if not 0 < config.agreement <= 1:
        raise ConfigError(f"acterase.Config: agreement={config.agreement} must be in (0, 1]")


def fit(model: Diffusion, concept: Concept | str, config: Config | None = None, **overrides) -> Erasure:
    """ActErase (Alg. 1): collect masks and source activations, return the patch as an :class:`Erasure`.

    Without ``config``, starts from :meth:`Config.pocket` on pocket and :meth:`Config.paper` elsewhere.
    """
    note = defaults_note(Config, model, config)
    config = resolve_config(Config, config, overrides, model)
    _check(config)
    concept = prepare(model, concept)
    start = time.perf_counter()
    collected = collect(model, concept, config)
    graph = patch(collected, config.branch)
    return Erasure("acterase", concept, config_dict(config), graph, trace(collected), notes=[note],
                   seconds=time.perf_counter() - start)


def merge_masks(masks: Sequence[Tensor], sources: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Eqs. 7-8: ``OR_i M_i`` and ``sum_i M_i x_i / max(1, sum_i M_i)`` (entries no mask holds get 0).

    Masks and sources broadcast together (a per-step mask ``[K, ...]`` with a static source ``[1, ...]``
    gives a per-step mean ``[K, ...]``)."""
    weights = torch.stack([m.to(sources[0].dtype) for m in masks])
    count = weights.sum(0)
    return count > 0, (weights * torch.stack(list(sources))).sum(0) / count.clamp(min=1)


def _schedule_key(item: MaskedPatch) -> tuple | None:
    return None if item.schedule is None else tuple(float(t) for t in item.schedule)


def merge(erasures: Sequence[Erasure]) -> Erasure:
    """Alg. 2: one erasure for several concepts from their single-concept ActErase erasures (Eq. 9 applies it)."""
    if not erasures:
        raise ConfigError("merge() needs at least one ActErase erasure")
    by_site: dict[str, list[tuple[str, MaskedPatch]]] = {}
    for erasure in erasures:
        for item in erasure.graph:
            if not isinstance(item, MaskedPatch):
                raise ConfigError(f"merge(): erasure {erasure.concept.name!r} holds a {type(item).__name__}; "
                                  "merge takes ActErase erasures (MaskedPatch graphs)")
            by_site.setdefault(item.site, []).append((erasure.concept.name, item))
    graph, rows = Graph(), []
    for site, items in by_site.items():
        kinds = [(tuple(p.mask.shape), tuple(p.source.shape), p.branch, _schedule_key(p)) for _, p in items]
        if len(set(kinds)) > 1:
            found = "; ".join(f"{n}: mask {m}, source {s}, branch {b!r}, {'per-step' if k else 'static'}"
                              for (n, _), (m, s, b, k) in zip(items, kinds))
            raise ShapeError(f"merge(): the erasures disagree at {site} ({found}); merge erasures fitted on one "
                             "model with the same masks setting and collection schedule")
        mask, source = merge_masks([p.mask for _, p in items], [p.source for _, p in items])
        schedule = items[0][1].schedule
        graph.append(MaskedPatch(site, mask=mask, source=source, branch=items[0][1].branch,
                                 schedule=None if schedule is None else schedule.clone()))
        rows.append({"site": site, "density": float(mask.float().mean()),
                     "density_per_concept": {n: float(p.mask.float().mean()) for n, p in items}})
    concepts = [e.concept for e in erasures]
    merged = Concept(
        target=concepts[0].target, synonyms=tuple(w for c in concepts for w in c.words)[1:],
        anchor=concepts[0].anchor, templates=concepts[0].templates,
        preservation=tuple(p for c in concepts for p in c.preservation), name=" + ".join(c.name for c in concepts),
    )
    config = {"merged": [{"concept": c.to_dict(), "config": e.config} for c, e in zip(concepts, erasures)]}
    return Erasure("acterase-merge", merged, config, graph, rows, seconds=sum(e.seconds for e in erasures))
