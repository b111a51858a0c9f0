"""``depth_sensitivity``: ErasePro Figs. 2e and 5, the same parameter deviation on a shallow and a deep layer.

ErasePro's App. A.2 sets ``Delta = alpha * ||W||_F * I`` (the rectangular identity, scaled by the
weight's own norm) on the Q/K/V of the text encoder's first self-attention ("shallow") or on the
Q/K/V of one UNet cross-attention ("deep"), and reports that at ``alpha = 0.2`` the deep deviation
breaks generation while the shallow one barely shows: the reason ErasePro moves its edits towards the
shallow layers. :func:`circuits.methods.erasepro.depth_probe` builds both graphs; this recipe samples
every (site, alpha) as a variant of one :func:`circuits.sampling.sweep` (weight edits cannot share a
batch, so each runs in chunks of its own; the progress bar covers all of them) and measures damage
against the unedited images of the same prompts and seeds.

Decisions:

- Damage on pocket is the oracle's accuracy over every attribute a prompt names (colour, shape,
  texture), as :func:`circuits.pocket.report.damage` measures it, plus the mean absolute pixel
  difference (0-255) and PSNR against the unedited images; off pocket only the latter two.
- The paper edits "a cross-attention block within the U-Net" without saying which; ``deep_sites``
  names several: the mid block's (depth_probe's default) and the highest-resolution ones, ``first``
  and ``last`` (the first and last cross-attention in forward order: down blocks, mid, up blocks),
  so the defaults name real layers on every family (SDXL has no cross-attention at its highest
  resolution level; its first is ``down_blocks.1``). Any other name is a part of a site name that
  matches one layer, or a module path (``mid_block``, ``down_blocks.0``) whose first cross-attention
  is taken: SD1.x/SD2.x stack two per down block, SDXL up to ten transformer blocks per attention.
  The metrics record the resolved site, and a note says when a module held several.
- On SDXL the shallow site is the first encoder's (CLIP-L) layer 0 only: ``text_encoder_2`` and the
  pooled embedding it feeds are left as they are, and a note says so.
- ``||Delta||_F / ||W||_F = alpha * sqrt(min(out, in))``, so the same alpha is the same relative
  deviation only between weights of the same shape; the metrics record the ratio per site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from circuits.analysis.erasepro import draw_depth
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment, show_progress
from circuits.experiments.result import ExperimentResult
from circuits.methods.erasepro import depth_probe
from circuits.models.diffusion import Diffusion

#: 4 pocket prompts each naming a red, a circle and a striped object (circuits.pocket.evaluation_sets(w, n=4).target)
POCKET_PROMPTS = (
    "an outlined red triangle on a gray background", "a striped red square on a gray background",
    "a solid red circle on a gray background", "an outlined red cross on a gray background",
    "an outlined blue circle on a gray background", "a striped purple circle on a gray background",
    "a solid blue circle on a gray background", "an outlined purple circle on a gray background",
    "a striped blue triangle on a gray background", "a striped purple square on a gray background",
    "a striped blue circle on a gray background", "a striped purple cross on a gray background",
)  # fmt: skip


@dataclass(frozen=True)
class DepthSensitivityConfig:
    #: alpha of Delta = alpha * ||W||_F * I (App. A.2; the paper's Fig. 2e uses 0.2)
    alphas: tuple[float, ...] = (0.05, 0.1, 0.2)
    #: deep sites: UNet cross-attention layers, each a unique part of its site name, a module path (its first
    #: cross-attention), or "first" / "last" (in forward order); on pocket the defaults are down_blocks.0 and
    #: up_blocks.2.attentions.1
    deep_sites: tuple[str, ...] = ("mid_block", "first", "last")
    #: prompts (the pocket defaults name a colour, a shape and a texture each)
    prompts: tuple[str, ...] = POCKET_PROMPTS
    #: noise seeds: every prompt is sampled once per seed, edited and unedited alike
    seeds: tuple[int, ...] = (0, 1)
    #: sampling steps
    steps: int = 25
    #: images per sampling call (weight-edit variants never share a call)
    max_batch: int = 32
    #: prompts (seed 0) shown in the image grid, spread evenly over the prompt list
    show_prompts: int = 3


def forward_order(sites: list[str]) -> list[str]:
    """UNet sites in the order a forward pass reaches them: down blocks, mid block, up blocks."""
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}

    def key(site: str) -> tuple[int, list[int]]:
        parts = site.split(".")
        return rank.get(parts[1], 3), [int(p) for p in parts if p.isdigit()]

    return sorted(sites, key=key)


def resolve_deep_site(model: Diffusion, name: str) -> tuple[str, int]:
    """The cross-attention site ``name`` stands for and how many layers it matched: ``first`` / ``last`` in
    forward order, a unique part of a site name, or a module path (the first of its cross-attentions)."""
    crosses = forward_order(model.sites.cross_attention())
    if name in ("first", "last"):
        return crosses[0 if name == "first" else -1], 1
    if name in crosses:
        return name, 1
    found = [site for site in crosses if name in site]
    module = f"unet.{name.removeprefix('unet.').rstrip('.')}."
    if len(found) > 1 and all(site.startswith(module) for site in found):
        return found[0], len(found)  # a module holding several cross-attentions: its first, said in a note
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ConfigError(f"depth_sensitivity: deep site {name!r} matches {what} cross-attention layers; give "
                          f"'first', 'last', a module path (its first cross-attention is taken) or a unique part "
                          f"of one of: {', '.join(crosses)}")  # fmt: skip
    return found[0], 1


def _check(config: DepthSensitivityConfig) -> None:
    if not config.alphas or any(a < 0 for a in config.alphas):
        raise ConfigError(f"depth_sensitivity: alphas={config.alphas!r}; give one or more alphas >= 0")
    if len(set(config.alphas)) != len(config.alphas):
        raise ConfigError(f"depth_sensitivity: alphas={config.alphas!r} repeats a value")
    if not config.deep_sites:
        raise ConfigError("depth_sensitivity: deep_sites is empty; name at least one UNet cross-attention layer")
    if not config.prompts or not config.seeds:
        raise ConfigError("depth_sensitivity: give at least one prompt and one seed")
    if config.steps < 1 or config.max_batch < 1 or config.show_prompts < 0:
        raise ConfigError("depth_sensitivity: steps and max_batch must be >= 1, show_prompts >= 0")


def _short(site: str) -> str:
    from circuits.experiments.recipes.erasepro_alignment import unet_label

    return f"deep {unet_label(site)}"


@experiment("depth_sensitivity", DepthSensitivityConfig, draw=draw_depth, paper="ErasePro Figs. 2e, 5",
            fast={"alphas": (0.0, 0.2), "deep_sites": ("mid_block",), "prompts": POCKET_PROMPTS[:2], "seeds": (0,),
                  "steps": 3, "show_prompts": 2})  # fmt: skip
def depth_sensitivity(model: Diffusion, config: DepthSensitivityConfig) -> ExperimentResult:
    """The same relative deviation alpha*||W||*I on text layer 0 vs a UNet cross-attention: images and damage."""
    from circuits.sampling import sweep

    _check(config)
    resolved = {f"deep:{name}": (name, *resolve_deep_site(model, name)) for name in config.deep_sites}
    deep = {key: site for key, (_, site, _) in resolved.items()}
    if len(set(deep.values())) != len(deep):
        raise ConfigError(f"depth_sensitivity: deep_sites={config.deep_sites!r} name the same layer twice on "
                          f"{model.source!r}: {deep}")  # fmt: skip
    first_text = model.sites.text_layers()[0]
    sites: dict[str, dict[str, Any]] = {
        "shallow": {"label": "shallow: text layer 0 Q/K/V", "short": "shallow", "site": first_text}}
    for key, site in deep.items():
        sites[key] = {"label": f"{_short(site)} Q/K/V", "short": _short(site), "site": site}

    variants: dict[str, Any] = {"original": None}
    names: dict[tuple[str, float], str] = {}
    for key, site in [("shallow", None), *deep.items()]:  # site-major: the grid's rows are site x alpha
        for alpha in config.alphas:
            graphs = depth_probe(model, alpha, deep_site=site)
            graph = graphs["shallow" if key == "shallow" else "deep"]
            name = f"{sites[key]['short']}, α={alpha:g}"
            names[(key, alpha)] = name
            variants[name] = graph
            ratios = [float(torch.linalg.matrix_norm(e.delta.double()) / torch.linalg.matrix_norm(
                model.parameter(e.param).detach().double())) for e in graph]
            sites[key].setdefault("relative_deviation", {})[f"{alpha:g}"] = sum(ratios) / len(ratios)
            sites[key]["params"] = [e.param for e in graph]

    prompts = list(config.prompts)
    swept = sweep(model, prompts, variants, seeds=list(config.seeds), steps=config.steps,
                  max_batch=config.max_batch, progress=show_progress())  # fmt: skip
    rows_prompts = [p for p in prompts for _ in config.seeds]  # sweep's prompt-major order
    on_pocket = model.source == "pocket"

    def accuracy(images: list[Any]) -> tuple[float | None, dict[str, float]]:
        if not on_pocket:
            return None, {}
        from circuits.pocket.report import score_images

        _, per_attribute, _ = score_images(images, rows_prompts, "colour", "", exclude_target=False)
        mean = per_attribute.pop("_mean")
        return mean, per_attribute

    plain = np.stack([np.asarray(i, dtype=np.float64) for i in swept.images["original"]])
    accuracy_before, per_before = accuracy(swept.images["original"])
    rows = []
    for (key, alpha), name in names.items():
        edited = np.stack([np.asarray(i, dtype=np.float64) for i in swept.images[name]])
        mse = float(np.mean((plain - edited) ** 2))
        acc, per_attribute = accuracy(swept.images[name])
        rows.append({
            "site": key, "alpha": alpha, "variant": name,
            "relative_deviation": sites[key]["relative_deviation"][f"{alpha:g}"],
            "accuracy": acc, "per_attribute": per_attribute,
            "pixel_difference": float(np.mean(np.abs(plain - edited))),
            "psnr_db": float(10 * np.log10(255.0**2 / mse)) if mse > 0 else None,  # None: identical images
        })  # fmt: skip

    # the grid: prompts spread over the list (the defaults name red, circle, striped in blocks of 4), seed 0
    count = min(config.show_prompts, len(prompts))
    picked = [round(i * len(prompts) / count) for i in range(count)] if count else []
    shown = [prompts[i] for i in picked]
    images = {name: [swept.images[name][i * len(config.seeds)] for i in picked] for name in variants} if picked else {}
    metrics = {
        "prompts": prompts, "seeds": list(config.seeds), "alphas": list(config.alphas), "sites": sites,
        "site_order": list(sites),
        "original": {"accuracy": accuracy_before, "per_attribute": per_before}, "rows": rows,
        "shown_prompts": shown, "sampling_seconds": swept.seconds, "sampling_calls": swept.calls,
    }  # fmt: skip
    headline, notes = _summarise(metrics)
    for name, site, count in resolved.values():
        if count > 1:
            notes.append(f"Deep site {name!r} holds {count} cross-attention layers on this model; the first, "
                         f"{site}, was edited (name another exactly to choose it).")  # fmt: skip
    if model.is_sdxl:
        notes.append("SDXL: the shallow deviation edits the first text encoder (CLIP-L) only; text_encoder_2, whose "
                     "penultimate layer fills the other context channels and whose last layer gives the "
                     "pooled embedding, is unedited.")  # fmt: skip
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images=images)


def _summarise(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    rows, sites = metrics["rows"], metrics["sites"]
    alpha = max(metrics["alphas"])
    at = {r["site"]: r for r in rows if r["alpha"] == alpha}
    before = metrics["original"]["accuracy"]
    headline: dict[str, Any] = {}
    if before is not None:
        headline["accuracy unedited"] = before
    for key, row in at.items():
        short = sites[key]["short"]
        if row["accuracy"] is not None:
            headline[f"accuracy, {short} α={alpha:g}"] = row["accuracy"]
        headline[f"pixel diff, {short} α={alpha:g}"] = row["pixel_difference"]
    notes = []
    shallow = at["shallow"]
    deep_rows = [r for k, r in at.items() if k != "shallow"]
    worst_deep = max(deep_rows, key=lambda r: r["pixel_difference"])
    measure = "accuracy" if before is not None else "pixel_difference"

    def damage(row: dict[str, Any]) -> float:
        return (before - row["accuracy"]) if measure == "accuracy" else row["pixel_difference"]

    deeper_worse = sum(damage(r) > damage(shallow) for r in deep_rows)
    what = "oracle accuracy" if measure == "accuracy" else "pixel difference"
    desc = ", ".join(
        f"{sites[r['site']]['label']} {r['accuracy']:.2f}" if measure == "accuracy" else
        f"{sites[r['site']]['label']} {r['pixel_difference']:.1f}" for r in deep_rows
    )  # fmt: skip
    shallow_value = f"{shallow['accuracy']:.2f}" if measure == "accuracy" else f"{shallow['pixel_difference']:.1f}"
    start = f"from {before:.2f} " if measure == "accuracy" else ""
    notes.append(
        f"At alpha={alpha:g} the {what} goes {start}to {shallow_value} with the shallow deviation and to {desc} with "
        f"the deep ones: {deeper_worse} of {len(deep_rows)} deep sites do more damage than the shallow one "
        f"(ErasePro Fig. 2e: deep layers break generation, shallow ones barely show)."
    )
    notes.append(
        f"Mean pixel difference at alpha={alpha:g}: shallow {shallow['pixel_difference']:.1f}, largest deep "
        f"{worst_deep['pixel_difference']:.1f} ({sites[worst_deep['site']]['label']}), of 255."
    )
    ratios = {sites[k]["label"]: v["relative_deviation"] for k, v in at.items()}
    notes.append(
        f"||Delta||/||W|| at alpha={alpha:g} (alpha * sqrt(min(out, in))): "
        + ", ".join(f"{label} {value:.2f}" for label, value in ratios.items())
        + "; equal alphas are equal relative deviations only between weights of the same shape."
    )
    monotone = all(
        all(a["pixel_difference"] <= b["pixel_difference"] + 1e-9 for a, b in zip(series, series[1:]))
        for series in ([r for r in rows if r["site"] == key] for key in sites)
    )
    if not monotone:
        notes.append("The pixel difference is not monotone in alpha at every site (see the figure).")
    return headline, notes
