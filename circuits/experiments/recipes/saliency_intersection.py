"""``saliency_intersection``: ANT Fig. 4, the number of active parameters against the number of
intersected saliency maps (over prompts and seeds).

ANT (Sec. 3.3, Eqs. 4-5) computes one weight-saliency map per (prompt, seed) from the gradient of its
trajectory-aware loss (Eq. 3), keeps the largest gradients of each, and intersects the maps; Fig. 4
shows the count of active parameters levelling off at about 100 maps for four concepts. This recipe
composes the method's pieces: :func:`circuits.methods.ant.collect` samples the concept's trajectories
(prompts x seeds), :func:`~circuits.methods.ant.saliency` makes one map per trajectory and
intersects them (:func:`~circuits.methods.ant.intersect`), and a per-map callback counts the active
parameters in each UNet part (block and kind of layer) along the way.

Decisions:

- **The same mask as the fit.** The curve is drawn while :func:`circuits.methods.ant.saliency_mask`
  computes ``M*``: the function ``ant.fit`` trains, with ANT's model-aware defaults
  (``ant.Config.pocket()`` on pocket, ``ant.Config.paper()`` elsewhere) and this config's non-``None``
  fields as overrides. ``metrics`` records the mask's SHA-256 (``mask_sha256``), which equals the one in
  the Erasure's trace (``kind="mask"``) for the same concept and settings; a test checks it.
- ``maps`` per concept: the prompts are the concept's templates x words (the paper's prompt variants
  in context; ``prompts="words"`` uses the words alone) and the seeds ``first_seed, first_seed + 1, ...``
  as many as ``maps`` needs; the trajectories are cut to the first ``maps`` rows (seed-major). On
  pocket ``red`` has 24 prompts (8 templates x 3 words: 5 seeds for 100 maps), ``circle`` and
  ``striped`` 8 (13 seeds). Fewer maps than prompts take the first prompts with one seed.
- **Eq. 4's gamma**: one threshold for every parameter and map, calibrated on the first map to keep
  ``gamma_density`` of all parameters unless ``gamma`` is given (``threshold="authors"``: the official
  code's smallest half of each tensor). See :mod:`circuits.methods.ant_saliency`.
- "Plateau": the notes call the curve flat at its end when the last quarter of the maps removes less
  than 10 % of what was active; otherwise they give the rate it still shrinks at. They also compare
  with independent maps (``considered x density^k``, the first map's density), which shows how
  correlated the maps are.
- Off pocket a concept is a word; ``templates`` (with ``{}``) put it in context.
- Cost: one UNet forward and backward of 4 rows per map plus sampling the trajectories (pocket, one
  thread: about 30 s for 100 trajectories of 50 steps and 20 s for 100 maps).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuits.analysis.ant import decay_per_map, draw_saliency
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment, show_progress
from circuits.experiments.result import ExperimentResult
from circuits.methods import ant
from circuits.methods.common import config_dict, prepare, resolve_config
from circuits.methods.concept import Concept
from circuits.models.diffusion import Diffusion

#: the UNet parts in the order the data flows (a parameter belongs to the first whose prefix it has);
#: add_embedding is SDXL's text-time conditioning MLP (pooled embedding + size ids)
BLOCKS = ("conv_in", "time_embedding", "add_embedding", "down_blocks.0", "down_blocks.1", "down_blocks.2",
          "down_blocks.3", "mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2", "up_blocks.3",
          "conv_out")  # fmt: skip
KINDS = ("resnets", "self-attention", "cross-attention", "feed-forward", "other")
#: a curve is called flat when its last quarter of maps removes less than this share of what was active
FLAT = 0.10


@dataclass(frozen=True)
class SaliencyIntersectionConfig:
    """The concepts and any ANT settings to override (``None``: ANT's default for the model)."""

    #: concepts, one panel each (pocket words; off pocket any word, put in context by `templates`)
    concepts: tuple[str, ...] = ("red", "circle")
    #: saliency maps intersected per concept (None: ANT's, 100, where the paper's curves converge)
    maps: int | None = None
    #: the maps' prompts: "templates" (templates x words, prompts in context, as the paper's) or "words"
    prompts: Literal["templates", "words"] | None = None
    #: templates with one {} for the word; empty = the pocket concept's own (off pocket: the word alone)
    templates: tuple[str, ...] = ()
    #: use the concept's synonyms as words too
    synonyms: bool | None = None
    #: the first noise seed of the trajectories (as many follow as the maps need)
    first_seed: int | None = None
    #: reversal timestep t' of Eq. 3 (Table 6: 860)
    t_prime: float | None = None
    #: "gamma" (Eq. 4) or "authors" (the official code's smallest `fraction` of each tensor)
    threshold: Literal["gamma", "authors"] | None = None
    #: Eq. 4's absolute gamma (None: calibrated on the first map to keep `gamma_density`)
    gamma: float | None = None
    #: share of all parameters the first map keeps when gamma is calibrated
    gamma_density: float | None = None
    #: per-tensor share of threshold="authors"
    fraction: float | None = None
    #: denoising steps of the trajectories (the paper: 50 DDIM steps)
    sample_steps: int | None = None
    #: CFG scale of the trajectories (official start_guidance = 3)
    sample_guidance: float | None = None
    #: (t1, t2) pairs averaged in one map (Eq. 4: one)
    saliency_draws: int | None = None
    #: UNet parameters the maps cover, as ANT's ``params`` globs (None: ANT's, every UNet parameter). The
    #: gradient of a map is as large as what it covers: the whole SDXL UNet needs 10 GB more in float32, the
    #: cross-attention alone (``("unet.*.attn2.*",)``) a fraction of that
    params: tuple[str, ...] | None = None


#: experiment field -> ant.Config field
FIELDS = {"maps": "maps", "prompts": "saliency_prompts", "synonyms": "synonyms", "first_seed": "saliency_seed",
          "t_prime": "t_prime", "threshold": "threshold", "gamma": "gamma", "gamma_density": "gamma_density",
          "fraction": "fraction", "sample_steps": "sample_steps", "sample_guidance": "sample_guidance",
          "saliency_draws": "saliency_draws", "params": "params"}  # fmt: skip


def ant_config(model: Diffusion, config: SaliencyIntersectionConfig) -> ant.Config:
    """ANT's model-aware defaults with this config's non-``None`` fields: the config ``ant.fit`` would use."""
    overrides = {FIELDS[k]: getattr(config, k) for k in FIELDS if getattr(config, k) is not None}
    acfg = resolve_config(ant.Config, None, overrides, model)
    ant.check_config(acfg)
    return acfg


def _check(config: SaliencyIntersectionConfig) -> None:
    if not config.concepts:
        raise ConfigError("saliency_intersection: concepts is empty; name at least one (e.g. 'red')")
    if len(set(config.concepts)) != len(config.concepts):
        raise ConfigError(f"saliency_intersection: concepts={config.concepts!r} repeats a concept")
    if config.maps is not None and config.maps < 1:
        raise ConfigError(f"saliency_intersection: maps={config.maps}; give at least 1 map per concept")
    for name in ("fraction", "gamma_density"):
        value = getattr(config, name)
        if value is not None and not 0 < value <= 1:
            raise ConfigError(f"saliency_intersection: {name}={value}; give a fraction in (0, 1]")


def concept_for(model: Diffusion, word: str, config: SaliencyIntersectionConfig) -> Concept:
    """The pocket concept named ``word`` (its templates unless ``templates`` are given), or off pocket
    the word in ``templates`` (default: alone)."""
    if model.source == "pocket":
        from circuits.pocket.concepts import concept

        found = concept(word)
        return dataclasses.replace(found, templates=config.templates) if config.templates else found
    return Concept(target=word, templates=config.templates or ("{}",))


def block_of(name: str) -> str:
    """The UNet part of ``unet.<param>`` (one of :data:`BLOCKS`; norms after the last block count as conv_out)."""
    inner = name.removeprefix("unet.")
    for block in BLOCKS:
        if inner == block or inner.startswith(block + "."):
            return block
    return "conv_out" if inner.startswith("conv_norm_out") else inner.split(".")[0]


def kind_of(name: str) -> str:
    """The kind of layer a UNet parameter belongs to (one of :data:`KINDS`)."""
    if ".resnets." in name:
        return "resnets"
    if ".attn1." in name:
        return "self-attention"
    if ".attn2." in name:
        return "cross-attention"
    if ".ff." in name:
        return "feed-forward"
    return "other"


def one_concept(model: Diffusion, word: str, config: SaliencyIntersectionConfig) -> dict[str, Any]:
    """``ant.saliency_mask`` for one concept, with a per-map callback counting each UNet part; the curve and parts."""
    concept = prepare(model, concept_for(model, word, config))
    acfg = ant_config(model, config)
    names = ant.parameter_names(model, acfg.params)
    sizes = {name: model.parameter(name).numel() for name in names}
    groups: dict[str, dict[str, Any]] = {}
    for grouping, key in (("blocks", block_of), ("kinds", kind_of)):
        for name in names:
            entry = groups.setdefault(grouping, {}).setdefault(key(name), {"size": 0, "active": [], "params": []})
            entry["size"] += sizes[name]
            entry["params"].append(name)

    def count(k: int, mask: Any) -> None:
        with torch.no_grad():
            per_param = {name: int(mask[name].sum()) for name in names}
        for parts in groups.values():
            for entry in parts.values():
                entry["active"].append(sum(per_param[n] for n in entry["params"]))

    sal = ant.saliency_mask(model, concept, acfg, progress=show_progress(), on_map=count)
    for parts in groups.values():
        for entry in parts.values():
            del entry["params"]
    curve = sal.curve
    density = sal.densities[0]
    independent = [sal.considered * density**k for k in range(1, len(curve) + 1)]
    return {
        "concept": concept.name, "words": list(concept.words), "prompts": len(set(sal.prompts)),
        "seeds": len(set(sal.seeds)), "maps": len(curve), "considered": sal.considered, "curve": curve,
        "densities": sal.densities, "independent": independent, "gamma": sal.gamma, "threshold": acfg.threshold,
        "mask_sha256": sal.digest, "tensors_active": sum(1 for m in sal.mask.values() if bool(m.any())),
        "tensors": len(sal.mask), "groups": groups["blocks"], "kinds": groups["kinds"],
    }  # fmt: skip


@experiment("saliency_intersection", SaliencyIntersectionConfig, draw=draw_saliency, paper="ANT Fig. 4",
            fast={"concepts": ("red",), "maps": 3, "sample_steps": 6, "t_prime": 500.0})  # fmt: skip
def saliency_intersection(model: Diffusion, config: SaliencyIntersectionConfig) -> ExperimentResult:
    """Active parameters against the number of intersected saliency maps (prompts x seeds): does the count level off?"""
    _check(config)
    entries = [one_concept(model, word, config) for word in config.concepts]
    order = [b for b in BLOCKS if any(b in e["groups"] for e in entries)]
    order += sorted({g for e in entries for g in e["groups"]} - set(order))
    metrics = {"concepts": entries, "groups": order, "kind_order": [k for k in KINDS if k in entries[0]["kinds"]],
               "ant_config": config_dict(ant_config(model, config))}  # fmt: skip
    headline, notes = summarise(metrics)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes)


def summarise(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Headline numbers and notes from the curves (plateau or not, correlation, where the survivors sit)."""
    headline: dict[str, Any] = {}
    notes: list[str] = []
    for entry in metrics["concepts"]:
        curve, name, k = entry["curve"], entry["concept"], entry["maps"]
        headline[f"{name}: active after {k} maps"] = curve[-1]
        share = curve[-1] / entry["considered"]
        if k >= 4:
            quarter = max(1, k // 4)
            start = k - quarter
            drop = 1 - curve[-1] / curve[start - 1] if curve[start - 1] else 0.0
            rate = decay_per_map(curve, start, k)
            headline[f"{name}: shrink per map, maps {start}-{k}"] = rate
            if drop < FLAT:
                shape = (f"levels off: maps {start + 1}-{k} remove {drop:.1%} of the {curve[start - 1]:,} active "
                         f"after {start} maps (under the {FLAT:.0%} this recipe calls flat)")  # fmt: skip
            else:
                halving = math.log(0.5) / math.log(rate) if 0 < rate < 1 else float("inf")
                shape = (f"has no plateau: maps {start + 1}-{k} still remove {drop:.0%} of the "
                         f"{curve[start - 1]:,} active after {start} maps (x{rate:.3f} per map, halving every "
                         f"{halving:.0f} maps)")  # fmt: skip
            early = decay_per_map(curve, 1, min(4, k))
            notes.append(
                f"{name} ({entry['prompts']} prompts x {entry['seeds']} seeds): {curve[0]:,} of "
                f"{entry['considered']:,} parameters in one map, {curve[-1]:,} ({share:.4%}) after {k}; the count "
                f"shrinks x{early:.2f} per map over the first {min(4, k)} maps and {shape}."
            )
            at = min(8, k)
            ratio = curve[at - 1] / max(entry["independent"][at - 1], 1e-12)
            overlap = "the maps overlap more than chance" if ratio > 1 else "the maps overlap no more than chance"
            notes.append(
                f"{name}: after {at} maps {curve[at - 1]:,} stay active, {ratio:.1f}x what independent maps of the "
                f"same density would leave ({entry['independent'][at - 1]:,.0f}): {overlap}."
            )
        else:
            notes.append(f"{name}: {curve[0]:,} active in one map, {curve[-1]:,} after {k} (too few maps for a shape).")
        parts = {g: v["active"][-1] / v["size"] for g, v in entry["groups"].items() if v["size"]}
        top = max(parts, key=parts.get)
        kinds = {g: v["active"][-1] / v["size"] for g, v in entry["kinds"].items() if v["size"]}
        densest = max(kinds, key=kinds.get)
        overall = curve[-1] / entry["considered"]
        times = f", {kinds[densest] / overall:.1f}x the overall share" if overall > 0 else ""
        notes.append(
            f"{name}: after {k} maps the densest kind of layer is {densest} ({kinds[densest]:.4%} of its parameters "
            f"active, {entry['kinds'][densest]['active'][-1]:,} of the {curve[-1]:,}{times}) and the densest block "
            f"{top} ({parts[top]:.4%}); {entry['tensors_active']} of {entry['tensors']} tensors keep an active entry."
        )
    notes.append("ANT's Fig. 4 reports the count converging at about 100 intersected maps for each of its four "
                 "concepts on SD 1.4.")
    return headline, notes
