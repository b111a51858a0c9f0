"""ActErase: training-free concept erasure by masked activation patching.

Sun et al., "ActErase: A Training-Free Paradigm for Precise Concept Erasure via Activation Patching",
Alg. 1 (Eqs. 3-6), Alg. 2 (Eqs. 7-9), App. A.3, and the module comparison (Table 7).

- **Collect** (Alg. 1 step 1, :func:`collect`): source prompts ``c_s`` and target prompts ``c_t`` run
  in ONE batched sampling call from the same noise, the target rows riding the source rows'
  trajectory (``circuits.sample(..., follow=...)``: line 12, ``z_{t-1}`` from the source prediction).
  At every step and layer, ``Capture`` keeps the running mean of the source activation
  (``x_avg``, line 7) and the votes of the rule ``M = (I_s >= tau) & (I_s < I_t)`` (Eqs. 4-5).
- **Patch** (Eq. 6, :func:`patch`): ``MaskedPatch(M, x_avg)`` on every layer of the set, at every step.
- **Merge** (Alg. 2, :func:`merge`): ``M = OR_i M_i`` (Eq. 7), ``x = sum_i M_i x_i / max(1, sum_i M_i)`` (Eq. 8).

Roles, as in the paper: the *target* prompt holds the concept (the concept's target prompts), the
*source* prompt is its safe twin (the anchor prompt of the same template); source activations
replace target ones. Decisions the paper leaves open:

- **score** (Eq. 4, ``W_s . |x|`` is dimensionally ambiguous): ``"wanda"`` (default) scores each
  neuron j at each position by ``|x_j| * ||W2[:, j]||`` on the FFN hidden activation (the input of
  ``ff.net.2``), as ConceptPrune does; ``"magnitude"`` is ``|x_j|``, the paper's choice for the UNet
  output ("activation intensity") and the only one defined on sites no linear layer reads.
- **masks over steps and prompt pairs**: line 10 recomputes ``M`` at every step. Here the rule is
  evaluated at every step for every pair and an entry is masked where it holds in at least
  ``agreement`` of those (step, pair) votes (default 0.5, a majority). The patch is one static
  tensor (``x_avg`` is a mean over steps), so the mask is one too; a vote keeps entries the concept
  raises consistently, not at a single step (the literal overwrite keeps only the last step's).
  Only running sums are kept, so memory does not grow with steps. The trace has the rule's density
  at every step and the combined mask's density per layer.
- **CFG branch**: masks and ``x_avg`` are read on the conditional branch (where the prompts differ;
  the unconditional rows of a pair are identical) and the patch acts there (``branch="cond"``).
- **tau**: App. A.3's 0.01 (0.02 for styles, :func:`style`). On pocket's FFN the wanda scores have a
  median of 0.02-0.035, so 0.01 drops the quietest quarter of entries, as a floor should; not rescaled.
- **prompts**: the concept's aligned pairs (templates x target word and synonyms); ``x_avg`` and the
  votes average over them, so one patch serves every prompt.

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
from circuits.methods.common import ConfigError, config_dict, prepare, resolve_config
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.models.diffusion import Diffusion

LAYER_SETS = {"ffn": "FFN hidden activations", "cross_attention": "cross-attention outputs", "unet_output": "unet.eps"}
STYLE_TAU = 0.02
STATS = ("rule_density", "importance_source", "importance_target", "above_tau")


@dataclass(frozen=True)
class Config:
    """ActErase settings (defaults: the paper's, App. A.3)."""

    #: layer set: "ffn" (the paper's), "cross_attention" (attn2 outputs), "unet_output" (unet.eps), or a site glob
    layers: str = "ffn"
    #: importance score (Eq. 4): "wanda" |x_j| * ||W2[:, j]|| (FFN hidden sites only) or "magnitude" |x_j|
    score: Literal["wanda", "magnitude"] = "wanda"
    #: tau, the importance floor of Eq. 5 (App. A.3: 0.01 for objects and NSFW, 0.02 for styles)
    tau: float = 0.01
    #: an entry is masked where Eq. 5 holds in at least this fraction of (step, prompt pair) votes
    agreement: float = 0.5
    #: CFG branch the patch acts on: "cond" (where masks and x_avg were read) or "both"
    branch: Literal["cond", "both"] = "cond"
    #: collection run: denoising steps (App. A.3: 30), guidance scale (7.5), seed, scheduler (None: the model's)
    steps: int = 30
    guidance_scale: float = 7.5
    seed: int = 0
    scheduler: str | None = None
    #: fit on the synonym prompts too
    synonyms: bool = True


def style() -> Config:
    """The paper's setting for artistic styles (App. A.3: tau = 0.02)."""
    return Config(tau=STYLE_TAU)


@dataclass
class Collected:
    """What Alg. 1 step 1 returns, per layer: ``x_avg``, the mask, its votes and per-step statistics."""

    source: dict[str, Tensor]  # x_avg: mean over steps and source prompts (line 7)
    mask: dict[str, Tensor]  # M, bool (Eq. 5 combined over steps and pairs)
    votes: dict[str, Tensor]  # fraction of (step, pair) votes for which Eq. 5 holds
    stats: dict[str, Tensor]  # [steps, 4]: per-step means of STATS over pairs
    score: str = "wanda"


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
        graph.append(Capture(site, branch="cond", rows=range(n), mean_over="batch", over_steps="mean",
                             name=f"x/{site}"))
        graph.append(Capture(site, branch="cond", transform=_votes(w, config.tau, n), mean_over="batch",
                             over_steps="mean", name=f"votes/{site}"))
        graph.append(Capture(site, branch="cond", transform=_stats(w, config.tau, n), mean_over="batch",
                             name=f"stats/{site}"))
    from circuits.sampling import sample

    result = sample(
        model, [p.anchor for p in pairs] + [p.target for p in pairs], follow={n + i: i for i in range(n)},
        graph=graph, seed=config.seed, steps=config.steps, guidance_scale=config.guidance_scale,
        scheduler=config.scheduler, progress=progress, strict=True,
    )
    caps = result.captures
    votes = {s: caps[f"votes/{s}"] for s in sites}
    return Collected(
        source={s: caps[f"x/{s}"] for s in sites},
        mask={s: v >= config.agreement for s, v in votes.items()},
        votes=votes,
        stats={s: caps[f"stats/{s}"].reshape(-1, len(STATS)) for s in sites},
        score=config.score,
    )


def patch(collected: Collected, branch: str = "cond") -> Graph:
    """Eq. 6 on every layer: ``x_p = M * x_avg + (1 - M) * x_t`` at every step."""
    return Graph(MaskedPatch(s, mask=m, source=collected.source[s], branch=branch) for s, m in collected.mask.items())


def trace(collected: Collected) -> list[dict]:
    """One row per layer: mask density (combined, and the rule's at every step) and mean importances."""
    rows = []
    for site, mask in collected.mask.items():
        stats = collected.stats[site]
        rows.append({
            "site": site, "score": collected.score, "shape": list(mask.shape),
            "density": float(mask.float().mean()), "density_per_step": [round(float(v), 5) for v in stats[:, 0]],
            **{name: float(stats[:, i].mean()) for i, name in enumerate(STATS)},
        })
    return rows


def _check(config: Config) -> None:
    if config.score not in ("wanda", "magnitude"):
        raise ConfigError(f"acterase.Config: score={config.score!r}; use 'wanda' or 'magnitude'")
    if config.branch not in ("cond", "both"):
        raise ConfigError(f"acterase.Config: branch={config.branch!r}; use 'cond' or 'both'")
    if not config.tau >= 0:
        raise ConfigError(f"acterase.Config: tau={config.tau} must be >= 0")
    if not 0 < config.agreement <= 1:
        raise ConfigError(f"acterase.Config: agreement={config.agreement} must be in (0, 1]")


def fit(model: Diffusion, concept: Concept | str, config: Config | None = None, **overrides) -> Erasure:
    """ActErase (Alg. 1): collect masks and source activations, return the patch as an :class:`Erasure`."""
    config = resolve_config(Config, config, overrides)
    _check(config)
    concept = prepare(model, concept)
    start = time.perf_counter()
    collected = collect(model, concept, config)
    graph = patch(collected, config.branch)
    return Erasure("acterase", concept, config_dict(config), graph, trace(collected),
                   seconds=time.perf_counter() - start)


def merge_masks(masks: Sequence[Tensor], sources: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Eqs. 7-8: ``OR_i M_i`` and ``sum_i M_i x_i / max(1, sum_i M_i)`` (entries no mask holds get 0)."""
    weights = torch.stack([m.to(sources[0].dtype) for m in masks])
    count = weights.sum(0)
    return count > 0, (weights * torch.stack(list(sources))).sum(0) / count.clamp(min=1)


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
        kinds = [(tuple(p.mask.shape), tuple(p.source.shape), p.branch) for _, p in items]
        if len(set(kinds)) > 1:
            found = "; ".join(f"{n}: mask {m}, source {s}, branch {b!r}" for (n, _), (m, s, b) in zip(items, kinds))
            raise ShapeError(f"merge(): the erasures disagree at {site} ({found}); merge erasures fitted on one model")
        mask, source = merge_masks([p.mask for _, p in items], [p.source for _, p in items])
        graph.append(MaskedPatch(site, mask=mask, source=source, branch=items[0][1].branch))
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
