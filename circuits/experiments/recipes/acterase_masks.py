"""``acterase_masks``: what ActErase's collection step (Alg. 1 step 1, Eqs. 4-5) selects.

Sun et al., *ActErase*, on top of :mod:`circuits.methods.acterase`. For each concept: the combined
mask's density per layer, the rule's density at every step (layer x step heat map), the vote
fractions behind the combined mask and the density each ``agreement`` threshold would give; and how
much the masks of different concepts overlap (Jaccard per layer, against the overlap two independent
masks of the same densities would have). No sampling beyond the collection: it runs on any SD folder
(off pocket, give the concept's ``templates``). Shared decisions: :mod:`.acterase_shared`.

Measured cost of the defaults (``circuits run acterase_masks``, one thread, shared 2-core machine):
22.5 s (23 s CPU time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from circuits.analysis.acterase import draw_masks
from circuits.experiments.recipes.acterase_shared import (
    check_collection,
    check_words,
    collect_timed,
    concept_for,
    forward_order,
    mask_density,
    site_label,
    tau_for,
)
from circuits.experiments.registry import experiment
from circuits.experiments.result import ExperimentResult
from circuits.methods import acterase
from circuits.methods.common import model_defaults
from circuits.models.diffusion import Diffusion

AGREEMENTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class ActEraseMasksConfig:
    #: concepts, each collected on its own (pocket words; off pocket give templates too)
    concepts: tuple[str, ...] = ("red", "circle", "striped")
    #: prompt templates with "{}" for the concept word; () on pocket: circuits.pocket.concept's
    templates: tuple[str, ...] = ()
    #: what the concept word becomes in the source prompts ("" = nothing, the pocket default)
    anchor: str = ""
    #: layer set: "ffn" (the paper's), "cross_attention", "unet_output", or a glob of UNet sites
    layers: str = "ffn"
    #: importance score of Eq. 4: "wanda" (FFN hidden sites only) or "magnitude"
    score: Literal["wanda", "magnitude"] = "wanda"
    #: tau of Eq. 5; None: App. A.3's (0.02 for pocket textures, the "styles"; 0.01 otherwise)
    tau: float | None = None
    #: an entry is masked where Eq. 5 holds in at least this fraction of (step, prompt pair) votes
    agreement: float = 0.5
    #: collection run: denoising steps (App. A.3: 30), guidance scale (7.5), seed
    collect_steps: int = 30
    guidance_scale: float = 7.5
    seed: int = 0
    #: collect on the synonym prompts too
    synonyms: bool = True


def _vote_summary(votes: torch.Tensor) -> dict[str, Any]:
    flat = votes.flatten().float()
    histogram = torch.histc(flat, bins=20, min=0.0, max=1.0)
    return {
        "vote_quantiles": {f"{q:g}": float(torch.quantile(flat, q)) for q in QUANTILES},
        "vote_histogram": [float(v) for v in (histogram / flat.numel())],
        "density_at_agreement": [float((flat >= a).float().mean()) for a in AGREEMENTS],
    }


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Jaccard index of two masks, and the one two independent masks of the same densities would have."""
    union = float((a | b).float().sum())
    observed = float((a & b).float().sum()) / union if union else 0.0
    da, db = float(a.float().mean()), float(b.float().mean())
    denominator = da + db - da * db
    return observed, (da * db / denominator if denominator else 0.0)


@experiment("acterase_masks", ActEraseMasksConfig, draw=draw_masks, paper="ActErase Alg. 1, Eqs. 4-5",
            fast={"concepts": ("red", "circle"), "collect_steps": 3, "synonyms": False})  # fmt: skip
def acterase_masks(model: Diffusion, config: ActEraseMasksConfig) -> ExperimentResult:
    """ActErase's masks: density per layer and per step, vote fractions, overlap between concepts."""
    owner = "acterase_masks"
    check_words(owner, config.concepts, model)
    check_collection(owner, config.tau, config.agreement, config.collect_steps)
    entries, masks = [], {}
    for word in config.concepts:
        concept = concept_for(model, word, config.anchor, config.templates, owner)
        tau = tau_for(model, concept, config.tau)
        settings = replace(model_defaults(acterase.Config, model),  # paper() on SD, pocket() on pocket
                           layers=config.layers, score=config.score, tau=tau, agreement=config.agreement,
                           steps=config.collect_steps, guidance_scale=config.guidance_scale,
                           seed=config.seed, synonyms=config.synonyms)  # fmt: skip
        collected, seconds = collect_timed(model, concept, settings, owner)
        sites = sorted(collected.mask, key=forward_order)
        layers = []
        for row in sorted(acterase.trace(collected), key=lambda r: forward_order(r["site"])):
            site = row["site"]
            stats = collected.stats[site]
            chance = [0.5 * float(v) for v in stats[:, 3]]  # a coin flip between I_s and I_t above tau
            layers.append({**row, "label": site_label(site), "entries": collected.mask[site].numel(),
                           "chance_density_per_step": chance, **_vote_summary(collected.votes[site])})  # fmt: skip
        masks[concept.name] = {s: collected.mask[s] for s in sites}
        total = sum(layer["entries"] for layer in layers)
        per_step = [sum(layer["entries"] * layer["density_per_step"][i] for layer in layers) / total
                    for i in range(config.collect_steps)]  # fmt: skip
        chance = [sum(layer["entries"] * layer["chance_density_per_step"][i] for layer in layers) / total
                  for i in range(config.collect_steps)]  # fmt: skip
        entries.append({
            "concept": concept.name, "tau": tau, "pairs": len(concept.pairs(synonyms=config.synonyms)),
            "seconds": seconds, "density": mask_density(masks[concept.name]), "entries": total,
            "density_per_step": per_step, "chance_density_per_step": chance,
            "density_at_agreement": [sum(la["entries"] * la["density_at_agreement"][i] for la in layers) / total
                                     for i in range(len(AGREEMENTS))],
            "layers": layers,
        })  # fmt: skip
    overlap = []
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            per_layer = {site_label(s): _jaccard(masks[a][s], masks[b][s]) for s in masks[a]}
            union = sum(float((masks[a][s] | masks[b][s]).float().sum()) for s in masks[a])
            both = sum(float((masks[a][s] & masks[b][s]).float().sum()) for s in masks[a])
            da, db = mask_density(masks[a]), mask_density(masks[b])
            overlap.append({
                "concepts": [a, b], "jaccard": both / union if union else 0.0,
                "independent": da * db / (da + db - da * db) if da + db > 0 else 0.0,
                "per_layer": {k: {"jaccard": v[0], "independent": v[1]} for k, v in per_layer.items()},
            })  # fmt: skip
    metrics = {"concepts": entries, "overlap": overlap, "agreements": list(AGREEMENTS),
               "quantiles": list(QUANTILES), "layers": config.layers, "score": config.score}  # fmt: skip
    headline, notes = _masks_summary(metrics, config)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes)


def _masks_summary(metrics: dict[str, Any], config: ActEraseMasksConfig) -> tuple[dict[str, Any], list[str]]:
    headline: dict[str, Any] = {}
    notes = []
    for entry in metrics["concepts"]:
        layers = entry["layers"]
        low = min(layers, key=lambda r: r["density"])
        high = max(layers, key=lambda r: r["density"])
        rule = sum(entry["density_per_step"]) / len(entry["density_per_step"])
        chance = sum(entry["chance_density_per_step"]) / len(entry["chance_density_per_step"])
        headline[f"mask density, {entry['concept']}"] = entry["density"]
        headline[f"rule density per step, {entry['concept']}"] = rule
        middle = [sum(layer["entries"] * layer["vote_histogram"][k] for layer in layers) / entry["entries"]
                  for k in (8, 9, 10, 11)]  # fmt: skip
        notes.append(
            f"{entry['concept']} (tau {entry['tau']:g}, {entry['pairs']} prompt pairs, collected in "
            f"{entry['seconds']:.1f} s): the combined mask (agreement {config.agreement:g}) covers "
            f"{entry['density']:.3f} of the entries, from {low['density']:.3f} ({low['label']}) to "
            f"{high['density']:.3f} ({high['label']}). At a single step the rule (Eq. 5) holds for "
            f"{min(entry['density_per_step']):.3f}-{max(entry['density_per_step']):.3f} of the entries (mean "
            f"{rule:.3f}); a coin flip between I_s and I_t above tau would give {chance:.3f}. "
            f"{sum(middle):.2f} of the entries have vote fractions between 0.4 and 0.6, so the density moves "
            f"with the agreement threshold: {entry['density_at_agreement'][2]:.3f} at 0.3, "
            f"{entry['density_at_agreement'][4]:.3f} at 0.5, {entry['density_at_agreement'][6]:.3f} at 0.7."
        )  # fmt: skip
    for pair in metrics["overlap"]:
        a, b = pair["concepts"]
        ratio = pair["jaccard"] / pair["independent"] if pair["independent"] else float("nan")
        headline[f"Jaccard {a} / {b}"] = pair["jaccard"]
        notes.append(
            f"The masks of {a} and {b} overlap with Jaccard {pair['jaccard']:.3f}; two independent masks of the "
            f"same densities would give {pair['independent']:.3f} ({ratio:.2f}x): "
            + ("they share more entries than chance, so part of what each selects is common to both concepts "
               "(what naming any word in the prompt raises), not specific to one."
               if ratio > 1.2 else "about as related as independent masks.")
        )  # fmt: skip
    return headline, notes
