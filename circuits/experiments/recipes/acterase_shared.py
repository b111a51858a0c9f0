"""Pieces the three ActErase experiments share (``acterase_masks``, ``patch_modules``, ``multi_concept``).

Sun et al., *ActErase*, on top of :mod:`circuits.methods.acterase` (collect, patch, merge): naming and
ordering sites for figures, the concept a word names, App. A.3's tau, the collection step with its
errors turned into ``ConfigError`` of the experiment, one :func:`circuits.sampling.sweep` over named
prompt sets, the oracle and pixel measures, and the config checks the experiments have in common.

Decisions shared by the three:

- ``tau=None`` is the model's ActErase default (``acterase.Config.paper()`` / ``.pocket()``: 0.01 for
  every concept, pocket's textures included), as :mod:`circuits.methods.catalog` fits ActErase; App.
  A.3's 0.02 for styles is ``acterase.style()``, a choice the user makes.
- Collection keeps App. A.3's 30 steps and CFG 7.5 (a 24-pair concept collects in ~10 s on one
  pocket thread); evaluation samples 25 steps.
- Oracle numbers only exist on pocket. Off pocket the experiments that sample report pixel change
  instead (:func:`pixel_note`): it shows where a patch acts (and whether it spares the preservation
  prompts), not whether the concept is gone. Off pocket a concept word needs ``templates`` and the
  sampling experiments need ``preservation`` (a ``ConfigError`` names the missing field).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from circuits.errors import SiteError
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import show_progress
from circuits.methods import acterase
from circuits.methods.common import model_defaults
from circuits.methods.concept import Concept, ConceptError
from circuits.models.diffusion import Diffusion


def site_label(site: str) -> str:
    """``unet.up_blocks.1.attentions.0.transformer_blocks.0.ff.hidden`` -> ``up1.0`` (``mid``, ``eps``)."""
    if site == "unet.eps":
        return "eps"
    if ".mid_block." in site:
        match = re.search(r"attentions\.(\d+)", site)
        return "mid" if match is None or match.group(1) == "0" else f"mid.{match.group(1)}"
    match = re.search(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)", site)
    if match is None:
        return site.removeprefix("unet.")
    kind, block, attention, transformer = match.groups()
    return f"{kind}{block}.{attention}" + (f".{transformer}" if transformer != "0" else "")


def forward_order(site: str) -> tuple[int, int, int, int]:
    """Sort key: down blocks, mid block, up blocks (the UNet's forward order), then the output."""
    if site == "unet.eps":
        return (3, 0, 0, 0)
    numbers = [int(n) for n in re.findall(r"\.(\d+)", site)] + [0, 0, 0]
    stage = 0 if ".down_blocks." in site else 1 if ".mid_block." in site else 2
    return (stage, *numbers[:3])  # type: ignore[return-value]


def tau_for(model: Diffusion, concept: Concept, tau: float | None) -> float:
    """``tau`` if given, else the method's default for this model (``acterase.Config.paper()`` /
    ``.pocket()``; App. A.3's 0.02 for styles is ``acterase.style()``, a choice the user makes)."""
    if tau is not None:
        return tau
    return model_defaults(acterase.Config, model).tau


def concept_for(model: Diffusion, word: str, anchor: str, templates: Sequence[str], owner: str) -> Concept:
    if templates:
        return Concept(target=word, anchor=anchor, templates=tuple(templates))
    if model.source != "pocket":
        raise ConfigError(f"{owner}: concept {word!r} on {model.source!r}: a bare word names a concept only on "
                          "pocket; give templates=('a photo of a {}', ...) for the prompts it is collected on")
    from circuits.pocket.concepts import concept as pocket_concept

    try:
        return pocket_concept(word, anchor=anchor)
    except ConceptError as error:
        raise ConfigError(f"{owner}: {error}") from None


def check_collection(owner: str, tau: float | None, agreement: float, steps: int) -> None:
    """A ``ConfigError`` of ``owner`` for a tau, agreement or number of collection steps no collection can use."""
    if tau is not None and not tau >= 0:
        raise ConfigError(f"{owner}: tau={tau} must be >= 0 (or None for App. A.3's)")
    if not 0 < agreement <= 1:
        raise ConfigError(f"{owner}: agreement={agreement} must be in (0, 1]")
    if steps < 1:
        raise ConfigError(f"{owner}: collect_steps={steps} must be >= 1")


def check_words(owner: str, words: Sequence[str], model: Diffusion) -> None:
    """A ``ConfigError`` of ``owner`` for an empty or repeating list of concept words."""
    if not words:
        raise ConfigError(f"{owner}: concepts=() names no concept; give e.g. ('red',)")
    if len(set(words)) != len(words):
        raise ConfigError(f"{owner}: concepts={tuple(words)!r} names a concept twice")


def sweep_sets(model: Diffusion, sets: dict[str, Sequence[str]], variants: dict[str, Any], *, seeds: Sequence[int],
               steps: int, guidance_scale: float, max_batch: int) -> tuple[dict[str, dict[str, list[Any]]], Any]:
    """Every set's prompts x seeds under every variant, as row blocks of one sweep; images by variant and set."""
    from circuits.sampling import sweep

    prompts = [p for ps in sets.values() for p in ps]
    result = sweep(model, prompts, variants, seeds=list(seeds), steps=steps, guidance_scale=guidance_scale,
                   max_batch=max_batch, progress=show_progress())  # fmt: skip
    per = len(seeds)
    out: dict[str, dict[str, list[Any]]] = {}
    for name in variants:
        images, start = result.images[name], 0
        out[name] = {}
        for set_name, ps in sets.items():
            out[name][set_name] = images[start:start + len(ps) * per]
            start += len(ps) * per
    return out, result


def _rows(prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
    return [p for p in prompts for _ in seeds]


def oracle_score(images: list[Any], prompts: Sequence[str], seeds: Sequence[int], attribute: str, value: str, *,
                 exclude_target: bool) -> dict[str, Any]:
    """What the pocket oracle reads on ``images`` (prompt-major, one per prompt and seed): the rate of
    ``value`` for ``attribute``, the accuracy over the named attributes and that accuracy per attribute."""
    from circuits.pocket.report import score_images

    erased, per_attribute, _ = score_images(images, _rows(prompts, seeds), attribute, value,
                                            exclude_target=exclude_target)  # fmt: skip
    accuracy = per_attribute.pop("_mean")
    return {"rate": erased, "accuracy": accuracy, "per_attribute": per_attribute}


def to_pixels(images: list[Any]) -> np.ndarray:
    """``images`` as one float64 array ``[image, height, width, channel]`` (0-255)."""
    return np.stack([np.asarray(image, dtype=np.float64) for image in images])


def collect_timed(model: Diffusion, concept: Concept, settings: acterase.Config, owner: str) -> tuple[Any, float]:
    """ActErase's collection step and its seconds; a bad word or layer set becomes a ConfigError of ``owner``."""
    start = time.perf_counter()
    try:
        collected = acterase.collect(model, concept, settings, progress=show_progress())
    except (ConceptError, SiteError) as error:
        raise ConfigError(f"{owner}: {error}") from None
    return collected, time.perf_counter() - start


def mask_density(masks: dict[str, torch.Tensor]) -> float:
    """The fraction of masked entries over every site of ``masks`` (0 when there are none)."""
    total = sum(m.numel() for m in masks.values())
    return float(sum(m.float().sum() for m in masks.values()) / total) if total else 0.0



def check_evaluation(owner: str, per_set: int, seeds: Sequence[int], steps: int, max_batch: int, show: int) -> None:
    """A ``ConfigError`` of ``owner`` for evaluation settings that would sample nothing."""
    for name, value in (("prompts", per_set), ("steps", steps), ("max_batch", max_batch)):
        if value < 1:
            raise ConfigError(f"{owner}: {name} setting {value} must be >= 1")
    if not seeds:
        raise ConfigError(f"{owner}: seeds=() gives no images; give at least one seed")
    if show < 0:
        raise ConfigError(f"{owner}: show_prompts={show} must be >= 0")


def fmt(value: float | None) -> str:
    """Two decimals, or a dash for a number that does not exist."""
    return "–" if value is None else f"{value:.2f}"


def ratio_or_none(a: float, b: float) -> float | None:
    """Selectivity: the change on the concept's prompts over the change on the preservation prompts."""
    return a / b if b > 0 else None


def check_preservation(owner: str, prompts: Sequence[str], model: Diffusion) -> None:
    """Off pocket the preservation prompts are the only measure of damage: a ``ConfigError`` without them."""
    if not prompts:
        raise ConfigError(f"{owner}: preservation=() on {model.source!r}: off pocket there is no oracle and no "
                          "evaluation set; give preservation=('a photo of a dog', ...), prompts the erasure should "
                          "leave alone (their pixel change is the measure of damage)")  # fmt: skip
    bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ConfigError(f"{owner}: preservation holds empty prompts {bad!r}")


def pixel_note(edited: str, plain: str) -> str:
    """The sentence that says what the pixel measure shows off pocket (and what it does not)."""
    return (f"there is no oracle off pocket, so the numbers are the mean absolute pixel change (0-255) of each "
            f"{edited} image against the {plain} image of the same prompt and noise; a change shows that a patch acts "
            "on a prompt, not that the concept is gone, and erased rates need the pocket oracle (model='pocket').")


def plural(n: int, thing: str) -> str:
    """``"1 prompt"``, ``"3 prompts"``."""
    return f"{n} {thing}" + ("" if n == 1 else "s")
