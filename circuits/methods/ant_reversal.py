"""ANT's CFG-reversal study (Sec. 3.1, Eq. 1, Fig. 3): the same noise, unreversed and reversed at several t'.

:func:`reversal_study` samples the same noise with :class:`~circuits.ReversedCFG` (the condition
direction ``delta = eps_c - eps_u`` flips for ``t <= t'``) for several ``t'`` (the unreversed and
every reversed variant as row blocks of batched calls, :func:`circuits.sampling.sweep`) and
measures, against the unreversed images, how much layout is kept (cosine of the final latents, mean
absolute pixel difference; from the pocket oracle's foreground masks: their IoU, that of the filled
silhouettes, the IoU of their bounding boxes and the shift of their centres) and which attributes the
oracle reads. The paper samples with DDIM, 50 steps (Sec. 4.1): ``scheduler="ddim"`` by default.
Re-exported as ``circuits.methods.ant.reversal_study``; the ``cfg_reversal`` experiment runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from circuits.methods.common import ConfigError
from circuits.models.diffusion import Diffusion


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
    scheduler: str | None = "ddim",
    oracle: bool | None = None,
    progress: bool = False,
) -> ReversalStudy:
    """Fig. 3: the same noise sampled with CFG and with ``ReversedCFG(guidance_scale, t')`` for each ``t'``.

    Each prompt is sampled with ``seeds`` (default ``seed, seed + 1, ... seed + samples - 1``), one
    seed per image, with ``scheduler`` (default DDIM, as the paper; ``None``: the model's own). Per
    ``t'``: the cosine of the final latents with the unreversed ones, the mean
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
    sched = make_scheduler(model, scheduler)
    sched.set_timesteps(steps)
    timesteps = [float(t) for t in sched.timesteps]

    names = {t: f"t'={t:g}" for t in t_primes}
    variants = {"plain": CFG(guidance_scale), **{names[t]: ReversedCFG(guidance_scale, t) for t in t_primes}}
    swept = sweep(model, prompts, variants, seeds=seeds, steps=steps, guidance_scale=guidance_scale,
                  max_batch=max_batch, progress=progress, scheduler=scheduler)  # fmt: skip
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
