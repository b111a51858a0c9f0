"""``attention_maps``: per-token cross-attention heat maps, as DAAM draws them, and what they show in numbers.

DAAM (Tang et al., "What the DAAM: Interpreting Stable Diffusion Using Cross Attention", 2023) sums
each token's cross-attention map over heads, layers and denoising steps, upsamples it to the image
and overlays it. This recipe captures every cross-attention's probabilities with
:class:`circuits.Capture` on the ``<attn2>.probs`` sites (conditional CFG branch, reduced on the fly:
mean over heads, running mean over steps), unflattens them with ``captures.maps(key)``, upsamples
each layer's map to a common grid and averages the layers. The maps shown are the SoT, every word
(or the chosen ``words``), the first [EoT] and the sum over every [EoT].

The numbers, per token and prompt:

- **share**: the mean attention probability the token gets (over image positions, heads, layers and
  steps; a word's sub-tokens summed). Uniform attention would give each position 1 / (number of keys).
- **contrast**: std / mean of the map over the image (0: flat).
- **r(mask)**: Pearson correlation of the map with the object mask (pocket only); **IoU**: the map
  min-max normalised and thresholded at ``threshold`` (DAAM's tau = 0.4) against the mask.
- **r(SoT)**: correlation with the SoT's map, which says whether two maps look alike.

Decisions:

- **The object mask** comes from the generated image itself, not from a rendered scene: the model
  places its object where it likes, so a scene rendered by :mod:`circuits.pocket.world` would not
  line up. The pocket oracle's foreground mask (:func:`circuits.pocket.oracle.fg_mask`, pixels more
  chromatic than the background and far from its colour) is thresholded at 0.5 and its holes filled,
  so an outlined or striped shape counts as its whole silhouette.
- Layers are averaged with equal weight after upsampling each to ``min(image size, resolution)``
  (``upsample``, DAAM: bicubic; negative overshoot clipped); the maps are drawn over the image with
  DAAM's per-token min-max normalisation (``normalize="token"``) or one scale per prompt
  (``"prompt"``), which shows how flat they are.
- Off pocket (any SD folder) everything but the mask numbers runs the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from circuits.analysis.attention import draw_attention_maps
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment
from circuits.experiments.result import ExperimentResult
from circuits.interventions.capture import Capture
from circuits.interventions.graph import Graph
from circuits.models.diffusion import Diffusion
from circuits.tokens import TokenLayout, layout

POCKET_PROMPTS = (
    "a red circle", "a striped blue square on a white background", "an outlined green triangle",
    "a yellow cross on a black background",
)  # fmt: skip


@dataclass(frozen=True)
class AttentionMapsConfig:
    #: prompts, one row of maps each
    prompts: tuple[str, ...] = POCKET_PROMPTS
    #: words mapped, in each prompt that holds them (sub-tokens summed); empty: every word of every prompt
    words: tuple[str, ...] = ()
    #: noise seed (one image per prompt)
    seed: int = 0
    #: sampling steps; the maps average all of them
    steps: int = 25
    #: classifier-free guidance scale (the maps are read on the conditional branch)
    guidance_scale: float = 7.5
    #: cross-attention layers aggregated (a glob of site names)
    layers: str = "unet.*attn2"
    #: side of the grid the layers are upsampled to and averaged on (capped at the image size)
    resolution: int = 64
    #: interpolation of each layer's map to that grid (DAAM: bicubic)
    upsample: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    #: DAAM's tau: a min-max normalised map above it counts as the token's region (IoU with the object mask)
    threshold: float = 0.4
    #: how the figure scales the maps: each token on its own (DAAM) or one scale per prompt
    normalize: Literal["token", "prompt"] = "token"


def _check(model: Diffusion, config: AttentionMapsConfig) -> list[str]:
    if not config.prompts:
        raise ConfigError("attention_maps: give at least one prompt")
    if config.steps < 1 or config.resolution < 2 or not 0 < config.threshold < 1:
        raise ConfigError("attention_maps: steps must be >= 1, resolution >= 2 and threshold in (0, 1)")
    sites = [f"{site}.probs" for site in model.sites.resolve(config.layers)]
    crosses = set(model.sites.attention_probs(cross=True))
    bad = [site for site in sites if site not in crosses]
    if bad:
        raise ConfigError(f"attention_maps: layers={config.layers!r} matches {bad[0].removesuffix('.probs')!r}, "
                          f"not a cross-attention layer; use e.g. 'unet.*attn2'")  # fmt: skip
    lays = [layout(model.tokenizer, p) for p in config.prompts]
    missing = [w for w in config.words if not any(lay.keyword(w) for lay in lays)]
    if missing:
        raise ConfigError(f"attention_maps: words {missing} occur in none of the prompts {list(config.prompts)}")
    return sites


def word_positions(lay: TokenLayout) -> list[tuple[str, list[int]]]:
    """Every whitespace-separated word of the prompt and its sub-token positions, in order."""
    spans = [(m.group(), m.span()) for m in re.finditer(r"\S+", lay.prompt)]
    out: list[tuple[str, list[int]]] = []
    for word, (start, end) in spans:
        positions = [p for p in lay.words if lay.offsets[p][0] < end and lay.offsets[p][1] > start]
        if positions:
            out.append((word, positions))
    return out


def _tokens(lay: TokenLayout, words: tuple[str, ...]) -> list[tuple[str, str, list[int]]]:
    """(label, role, positions) of the maps drawn for one prompt."""
    items: list[tuple[str, str, list[int]]] = [("[SoT]", "sot", [0])]
    if words:
        items += [(w, "word", lay.keyword(w)) for w in words if lay.keyword(w)]
    else:
        items += [(w, "word", positions) for w, positions in word_positions(lay)]
    items.append(("[EoT]", "eot", [lay.first_eot]))
    items.append((f"all {len(lay.eot_all)} [EoT]s", "eot_all", lay.eot_all))
    return items


def object_mask(images: list[Any], size: int) -> np.ndarray:
    """The object's silhouette in each pocket image, ``[n, size, size]`` bool (see the module docstring)."""
    from PIL import Image
    from scipy import ndimage

    from circuits.pocket.oracle import fg_mask, to_array

    soft = fg_mask(to_array(images))
    out = []
    for mask in soft:
        filled = ndimage.binary_fill_holes(mask > 0.5)
        if filled.shape != (size, size):
            filled = np.asarray(Image.fromarray(filled.astype(np.uint8) * 255).resize((size, size))) > 127
        out.append(filled)
    return np.stack(out)


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _iou(heat: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    span = heat.max() - heat.min()
    region = (heat - heat.min()) / span > threshold if span > 0 else np.zeros_like(mask)
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else 0.0


def aggregate(model: Diffusion, captures: Any, sites: list[str], size: int, mode: str) -> torch.Tensor:
    """Every layer's head- and step-averaged maps upsampled to ``size`` and averaged: ``[rows, keys, size, size]``."""
    total = None
    for site in sites:
        maps = captures.maps(site).float()  # [rows, height, width, keys]
        maps = maps.permute(0, 3, 1, 2)
        kwargs = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
        up = torch.nn.functional.interpolate(maps, size=(size, size), mode=mode, **kwargs).clamp_min(0)
        total = up if total is None else total + up
    assert total is not None
    return total / len(sites)


@experiment("attention_maps", AttentionMapsConfig, draw=draw_attention_maps, paper="DAAM; TRCE Fig. 2",
            fast={"prompts": POCKET_PROMPTS[:2], "steps": 3, "words": ("red", "blue", "circle")})  # fmt: skip
def attention_maps(model: Diffusion, config: AttentionMapsConfig) -> ExperimentResult:
    """Per-token cross-attention heat maps (heads, layers, steps aggregated, DAAM-style) with their numbers."""
    from circuits.sampling import sample

    sites = _check(model, config)
    prompts = list(config.prompts)
    graph = Graph([Capture(site, mean_over=("heads",), over_steps="mean", branch="cond") for site in sites])
    result = sample(model, prompts, seed=[config.seed] * len(prompts), steps=config.steps,
                    guidance_scale=config.guidance_scale, graph=graph, progress=False)  # fmt: skip
    images = list(result.images)
    size = min(images[0].size[0], images[0].size[1], config.resolution)
    maps = aggregate(model, result.captures, sites, size, config.upsample).double().numpy()
    on_pocket = model.source == "pocket"
    masks = object_mask(images, size) if on_pocket else None

    entries = []
    for row, prompt in enumerate(prompts):
        lay = layout(model.tokenizer, prompt)
        keys = maps[row]  # [keys, size, size]
        sot_map = keys[0]
        mask = masks[row] if masks is not None else None
        tokens = []
        for label, role, positions in _tokens(lay, config.words):
            heat = keys[positions].sum(axis=0)
            tokens.append({
                "label": label, "role": role, "positions": positions,
                "share": float(heat.mean()),
                "contrast": float(heat.std() / heat.mean()) if heat.mean() > 0 else 0.0,
                "corr_sot": _corr(heat, sot_map) if role != "sot" else 1.0,
                "corr_mask": _corr(heat, mask) if mask is not None else None,
                "iou": _iou(heat, mask, config.threshold) if mask is not None else None,
                "map": np.round(heat, 6).tolist(),
            })  # fmt: skip
        entries.append({
            "prompt": prompt, "first_eot": lay.first_eot, "keys": len(lay.tokens),
            "tokens": tokens,
            "position_share": [round(float(k.mean()), 6) for k in keys],
            "position_corr_mask": [_corr(k, mask) for k in keys] if mask is not None else None,
            "mask": mask.astype(int).tolist() if mask is not None else None,
            "mask_fraction": float(mask.mean()) if mask is not None else None,
        })  # fmt: skip
    metrics = {"prompts": entries, "size": size, "layers": [s.removesuffix(".probs") for s in sites]}
    headline, notes = summarise(metrics)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images={"images": images})


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarise(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Headline numbers and notes, computed from the metrics."""
    entries = metrics["prompts"]
    by_role: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        for token in entry["tokens"]:
            by_role.setdefault(token["role"], []).append(token)
    keys = entries[0]["keys"]
    names = {"sot": "SoT", "word": "a word", "eot": "first [EoT]", "eot_all": "all [EoT]s"}
    headline: dict[str, Any] = {}
    for role in ("sot", "word", "eot", "eot_all"):
        if role in by_role:
            headline[f"share, {names[role]}"] = _mean([t["share"] for t in by_role[role]])
    words = by_role.get("word", [])
    on_pocket = entries[0]["mask"] is not None
    if on_pocket:
        for role in ("sot", "word", "eot", "eot_all"):
            if role in by_role:
                headline[f"r(mask), {names[role]}"] = _mean([t["corr_mask"] for t in by_role[role]])
    notes = []
    word_shares = [t["share"] for t in words]
    if word_shares:
        notes.append(
            f"Each word gets {min(word_shares):.3f}–{max(word_shares):.3f} of the cross-attention (mean "
            f"{np.mean(word_shares):.3f}; uniform over the {keys} positions would be {1 / keys:.3f}); the SoT "
            f"{headline['share, SoT']:.3f}, the first [EoT] {headline['share, first [EoT]']:.3f}, all [EoT]s together "
            f"{headline['share, all [EoT]s']:.2f}."
        )
        alike = [t for t in words if t["corr_sot"] is not None and t["corr_sot"] >= 0.9]
        others = [f"{t['label']!r} (position {t['positions'][0]}, r = {t['corr_sot']:+.2f})" for t in words
                  if t not in alike]  # fmt: skip
        contrast = _mean([t["contrast"] for t in words])
        notes.append(
            f"{len(alike)} of {len(words)} word maps correlate with the SoT's map at r >= 0.9 (the same picture up to "
            f"scale)" + (f"; the others: {', '.join(others)}" if others else "") + f". The word maps vary over the "
            f"image by {100 * contrast:.0f}% of their mean (std / mean)"
            + (", so a per-token min-max normalised overlay mostly shows the normalisation." if contrast < 0.2 else ".")
        )
    if on_pocket:
        per_role = ", ".join(f"{names[r]} {headline[f'r(mask), {names[r]}']:+.2f}" for r in ("sot", "word", "eot",
                             "eot_all") if f"r(mask), {names[r]}" in headline and headline[f"r(mask), {names[r]}"]
                             is not None)  # fmt: skip
        iou = ", ".join(f"{names[r]} {_mean([t['iou'] for t in by_role[r]]):.2f}" for r in ("sot", "word", "eot_all")
                        if r in by_role)  # fmt: skip
        notes.append(f"Correlation with the object mask (the oracle's foreground, holes filled): {per_role}; IoU "
                     f"of the thresholded maps: {iou} (mean object area "
                     f"{np.mean([e['mask_fraction'] for e in entries]):.2f} of the image).")  # fmt: skip
        best = []
        for entry in entries:
            corr = entry["position_corr_mask"]
            valid = [(c, p) for p, c in enumerate(corr) if c is not None]
            if valid:
                c, p = max(valid)
                best.append((c, p, entry["first_eot"]))
        spread = position_spread(entries)
        if spread is not None:
            absolute, relative = spread
            which = ("the absolute position, not the token there" if absolute < relative else
                     "the token, not its absolute position")  # fmt: skip
            notes.append(
                f"Across prompts of different lengths the per-position r(mask) curves differ by {absolute:.2f} on "
                f"average (std across prompts) aligned by position and by {relative:.2f} aligned at their first "
                f"[EoT]: which positions follow the object is set by {which}."
            )
        if best:
            eot_best = sum(p >= first for _, p, first in best)
            sot = headline.get("r(mask), SoT")
            tail = (": the object draws more attention to those positions and, the probabilities summing to one, "
                    "less to the SoT and the rest" if sot is not None and sot < 0 else "")
            notes.append(
                f"The position whose map follows the object best is an [EoT]/padding position in {eot_best} of "
                f"{len(best)} prompts (mean r = {np.mean([c for c, _, _ in best]):.2f}){tail}."
            )
    return headline, notes


def position_spread(entries: list[dict[str, Any]]) -> tuple[float, float] | None:
    """Mean std across prompts of the per-position r(mask), aligned by absolute position and at the first [EoT]
    (over the positions every prompt has under both alignments); None for fewer than two prompt lengths."""
    firsts = [e["first_eot"] for e in entries]
    if len(set(firsts)) < 2 or entries[0]["position_corr_mask"] is None:
        return None
    curves = [np.array([np.nan if c is None else c for c in e["position_corr_mask"]]) for e in entries]
    keys = min(len(c) for c in curves)
    absolute = np.nanmean(np.nanstd(np.stack([c[:keys] for c in curves]), axis=0))
    low, high = -min(firsts), keys - max(firsts)  # offsets from the first [EoT] every prompt has
    relative = np.stack([c[f + low : f + high] for c, f in zip(curves, firsts)])
    return float(absolute), float(np.nanmean(np.nanstd(relative, axis=0)))
