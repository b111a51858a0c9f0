"""``eot_zeroing``: TRCE Figs. 2 and 7a, images with the cross-attention maps of the last k [EoT]s zeroed.

TRCE's observation (Sec. 4.1, App. B): setting the attention maps of a prompt's [EoT] tokens to zero
in every cross-attention layer changes the image dramatically (Fig. 2); zeroing all K of them
removes the concept the prompt implies, while leaving just one or two brings it back (Fig. 7a).
This recipe samples every prompt under a grid of k (the number of [EoT] positions zeroed, counted
from the end) with :func:`circuits.methods.trce.eot_probe`, twice: zeroed (the columns set to zero,
as the paper does) and masked (the softmax renormalised over the remaining tokens), plus two
controls, the word tokens and the SoT zeroed or masked. Every variant is a block of rows of the same
batched sampling calls (:func:`circuits.sampling.sweep`), on the same prompts and noise. On pocket
the oracle reads each image's colour, shape, texture and background, and the rate at which it reads
the value the prompt names is the curve against k.

Decisions:

- **k is counted per prompt.** K (the number of [EoT] positions: the first [EoT] and the padding
  after it) depends on the prompt's length. ``ks`` zero the *last* k positions of every prompt
  (``tokens="last_eot:k"``, capped at K); ``all_but`` zero all but the first n of each prompt's K, so
  that "every [EoT]" (n = 0) and "one left" (n = 1) mean the same for every prompt. Those variants
  scope one :func:`eot_probe` per group of prompts sharing a K with ``rows=``.
- **Both CFG branches** by default (``branch``): TRCE says only "setting the attention map corresponding
  to [EoT] to 0" (Fig. 2; Fig. 7a "following the same approach"), not in which CFG branch, and its public
  code has no probe. Both is our choice: zeroing the conditional branch alone makes CFG extrapolate
  along a skewed direction (see :func:`eot_probe`).
- **Controls**: "words" zeroes positions 1 .. first [EoT] - 1 (every sub-token of the prompt's words,
  from the tokenizer); "sot" zeroes position 0. Each runs in the same modes as the [EoT]s.
- **What the oracle scores**: the attributes each prompt names (colour, with synonyms; shape;
  texture; background), each image against its own prompt. A **chance floor** says how often an
  image drawn with no prompt (the unconditional model, ``floor_images`` seeds) shows each prompt's
  values: a variant at the floor has lost the prompt. The share of the prompt removed is
  (plain - variant) / (plain - floor).
- **Attention share**: one extra plain call at the first seed captures every cross-attention's
  probabilities (conditional branch, mean over heads, image positions and steps), so the metrics say
  what share of the attention each variant's positions hold (``attention_removed``: zeroed, that share
  of the attention output is removed; masked, it goes to the remaining tokens). On today's pocket
  weights attention is near uniform over the 32 positions, so zeroing every [EoT] removes most of the
  attention output, which the masked mode (renormalised, the same total) separates from the [EoT]s'
  content.
- Off pocket (any SD folder) everything runs the same except the oracle: the curve is the mean pixel
  change against the plain images instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from circuits.analysis.trce import draw_eot_zeroing
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment, show_progress
from circuits.experiments.result import ExperimentResult
from circuits.interventions.capture import Capture
from circuits.interventions.graph import Graph
from circuits.interventions.zero_tokens import ZeroTokens
from circuits.methods.trce import eot_probe
from circuits.models.diffusion import Diffusion
from circuits.tokens import layout

#: pocket prompts: every colour, shape and texture, some backgrounds, K from 23 to 28
POCKET_PROMPTS = (
    "a red circle", "a blue square", "a striped green triangle", "a yellow cross on a black background",
    "an outlined orange circle", "a dotted purple square on a white background", "a solid red triangle",
    "a striped blue cross",
)  # fmt: skip
MODES = ("zero", "mask")
CONTROLS = ("words", "sot")
ATTRIBUTES = ("colour", "shape", "texture", "background")


@dataclass(frozen=True)
class EotZeroingConfig:
    #: prompts (the pocket defaults name a colour and a shape each, some a texture or a background)
    prompts: tuple[str, ...] = POCKET_PROMPTS
    #: noise seeds: every prompt is sampled once per seed under every variant
    seeds: tuple[int, ...] = (0, 1)
    #: sampling steps (DDIM)
    steps: int = 25
    #: classifier-free guidance scale
    guidance_scale: float = 7.5
    #: k: zero the last k [EoT] positions of every prompt (capped at its K); k = 0 is plain sampling
    ks: tuple[int, ...] = (0, 1, 2, 4, 8, 16)
    #: n: zero all but the first n of each prompt's K [EoT] positions (k = K - n); n = 0 zeroes every [EoT]
    all_but: tuple[int, ...] = (8, 4, 2, 1, 0)
    #: "zero": the attention columns set to zero (TRCE); "mask": renormalised over the remaining tokens
    modes: tuple[str, ...] = MODES
    #: controls run in every mode: "words" (every word token zeroed), "sot" (the start-of-text token)
    controls: tuple[str, ...] = CONTROLS
    #: CFG branches the zeroing acts on (TRCE's Figs. 2 and 7a do not say; both is our choice, see the module doc)
    branch: Literal["both", "cond", "uncond"] = "both"
    #: cross-attention layers zeroed (a glob of site names)
    site: str = "unet.*attn2"
    #: unconditional images (no prompt) for the oracle's chance floor, pocket only (0: no floor)
    floor_images: int = 16
    #: images per sampling call
    max_batch: int = 64
    #: prompts (first seed) shown in the image grid
    show_prompts: int = 8


def _check(model: Diffusion, config: EotZeroingConfig) -> None:
    if not config.prompts or not config.seeds:
        raise ConfigError("eot_zeroing: give at least one prompt and one seed")
    for name in ("ks", "all_but"):
        values = getattr(config, name)
        if any(v < 0 for v in values) or len(set(values)) != len(values):
            raise ConfigError(f"eot_zeroing: {name}={values!r}; give distinct ints >= 0")
    if not config.ks and not config.all_but:
        raise ConfigError("eot_zeroing: ks and all_but are both empty; give at least one k")
    bad = [m for m in config.modes if m not in MODES]
    if bad or not config.modes or len(set(config.modes)) != len(config.modes):
        raise ConfigError(f"eot_zeroing: modes={config.modes!r}; give one or both of {MODES}, each once")
    bad = [c for c in config.controls if c not in CONTROLS]
    if bad or len(set(config.controls)) != len(config.controls):
        raise ConfigError(f"eot_zeroing: controls={config.controls!r}; give any of {CONTROLS}, each once")
    if config.steps < 1 or config.max_batch < 1 or config.floor_images < 0 or config.show_prompts < 0:
        raise ConfigError("eot_zeroing: steps and max_batch must be >= 1, floor_images and show_prompts >= 0")
    model.sites.resolve(config.site)  # an unknown site is an error listing the closest names


def named_attributes(prompt: str) -> dict[str, str]:
    """The pocket attributes ``prompt`` names: colour (synonyms mapped), shape, texture, background."""
    from circuits.pocket.report import named_attributes as named
    from circuits.pocket.world import BACKGROUNDS

    out = named(prompt)
    words = prompt.lower().replace(",", " ").split()
    for i, word in enumerate(words[:-1]):
        if word in BACKGROUNDS and words[i + 1] == "background":
            out["background"] = word
    return out


@dataclass
class _Arm:
    """One variant: its graph and, per prompt, the token positions it zeroes or masks."""

    name: str
    group: str  # "plain", "eot" or "control"
    mode: str | None
    point: int | None  # index into the k grid (eot variants and plain)
    graph: Graph
    positions: list[list[int]]


def _grid(config: EotZeroingConfig) -> list[dict[str, Any]]:
    """The x points of the curve: k = 0 (plain), the ``ks``, then K - n for the ``all_but``."""
    points = [{"label": "0", "kind": "last", "value": 0}]
    points += [{"label": str(k), "kind": "last", "value": k} for k in sorted(set(config.ks) - {0})]
    points += [{"label": "K" if n == 0 else f"K-{n}", "kind": "all_but", "value": n}
               for n in sorted(config.all_but, reverse=True)]  # fmt: skip
    return points


def _by_value(values: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(value, []).append(index)
    return groups


def _arms(model: Diffusion, config: EotZeroingConfig, points: list[dict[str, Any]]) -> list[_Arm]:
    lays = [layout(model.tokenizer, p) for p in config.prompts]
    counts = [len(lay.eot_all) for lay in lays]
    arms = [_Arm("plain", "plain", None, 0, Graph(), [[] for _ in lays])]
    for mode in config.modes:
        renormalize = mode == "mask"
        for index, point in enumerate(points[1:], start=1):
            if point["kind"] == "last":
                k = point["value"]
                graph = eot_probe(k, renormalize=renormalize, site=config.site, branch=config.branch)
                positions = [lay.last_eot(k) for lay in lays]
            else:
                graph, positions = Graph(), [[] for _ in lays]
                for count, rows in _by_value(counts).items():
                    k = max(count - point["value"], 0)
                    graph += eot_probe(k, renormalize=renormalize, site=config.site, branch=config.branch, rows=rows)
                    for row in rows:
                        positions[row] = lays[row].last_eot(k) if k else []
            arms.append(_Arm(f"{mode} k={point['label']}", "eot", mode, index, graph, positions))
        for control in config.controls:
            if control == "sot":
                graph = Graph([ZeroTokens(config.site, tokens="sot", renormalize=renormalize, branch=config.branch)])
                positions = [[0] for _ in lays]
            else:
                graph, positions = Graph(), [lay.words for lay in lays]
                for first_eot, rows in _by_value([lay.first_eot for lay in lays]).items():
                    if first_eot > 1:
                        graph.append(ZeroTokens(config.site, tokens=list(range(1, first_eot)),
                                                renormalize=renormalize, branch=config.branch, rows=rows))  # fmt: skip
            label = "SoT" if control == "sot" else "words"
            arms.append(_Arm(f"{mode} {label}", "control", mode, None, graph, positions))
    return arms


def attention_share(model: Diffusion, config: EotZeroingConfig) -> list[list[float]]:
    """Per prompt, the mean share of cross-attention each key position gets (conditional branch, every
    layer, head, image position and step of one plain sampling call at the first seed)."""
    from circuits.sampling import sample

    sites = [f"{site}.probs" for site in model.sites.resolve(config.site)]
    graph = Graph([Capture(site, mean_over=("heads", "queries"), over_steps="mean", branch="cond") for site in sites])
    seeds = [config.seeds[0]] * len(config.prompts)
    result = sample(model, list(config.prompts), seed=seeds, steps=config.steps,
                    guidance_scale=config.guidance_scale, graph=graph, progress=False)  # fmt: skip
    mean = sum(result.captures[site] for site in sites) / len(sites)
    return mean.double().tolist()


def _rates(reads: list[dict[str, str]], prompts: Sequence[str]) -> dict[str, float | None]:
    """Share of (image, named attribute) pairs the oracle reads as named: per attribute and "all"."""
    hits: dict[str, list[bool]] = {}
    for read, prompt in zip(reads, prompts):
        for attribute, wanted in named_attributes(prompt).items():
            hits.setdefault(attribute, []).append(read[attribute] == wanted)
    out: dict[str, float | None] = {a: float(np.mean(hits[a])) if a in hits else None for a in ATTRIBUTES}
    pooled = [h for values in hits.values() for h in values]
    out["all"] = float(np.mean(pooled)) if pooled else None
    return out


def _floor(reads: list[dict[str, str]], prompts: Sequence[str]) -> dict[str, float | None]:
    """Chance: how often an image drawn without a prompt shows each prompt's named values (pooled like _rates)."""
    hits: dict[str, list[float]] = {}
    for prompt in prompts:
        for attribute, wanted in named_attributes(prompt).items():
            hits.setdefault(attribute, []).append(float(np.mean([r[attribute] == wanted for r in reads])))
    out: dict[str, float | None] = {a: float(np.mean(hits[a])) if a in hits else None for a in ATTRIBUTES}
    pooled = [h for values in hits.values() for h in values]
    out["all"] = float(np.mean(pooled)) if pooled else None
    return out


def _oracle_reads(images: list[Any]) -> list[dict[str, str]]:
    from circuits.pocket.oracle import shared_oracle

    reads = shared_oracle().read(list(images))
    return [{k: reads[k][i] for k in ATTRIBUTES} for i in range(len(images))]


@experiment("eot_zeroing", EotZeroingConfig, draw=draw_eot_zeroing, paper="TRCE Figs. 2, 7a",
            fast={"prompts": POCKET_PROMPTS[0:4:3], "seeds": (0,), "steps": 3, "ks": (0, 4), "all_but": (1, 0),
                  "floor_images": 2, "show_prompts": 2})  # fmt: skip
def eot_zeroing(model: Diffusion, config: EotZeroingConfig) -> ExperimentResult:
    """The last k of K [EoT] cross-attention maps zeroed (and masked): what the oracle still reads, against k."""
    from circuits.sampling import sample, sweep

    _check(model, config)
    prompts, seeds = list(config.prompts), list(config.seeds)
    lays = [layout(model.tokenizer, p) for p in prompts]
    points = _grid(config)
    arms = _arms(model, config, points)
    swept = sweep(model, prompts, {arm.name: arm.graph for arm in arms}, seeds=seeds, steps=config.steps,
                  guidance_scale=config.guidance_scale, max_batch=config.max_batch,
                  progress=show_progress())  # fmt: skip
    row_prompts = [p for p in prompts for _ in seeds]  # the sweep's prompt-major order
    shares = attention_share(model, config)
    on_pocket = model.source == "pocket"

    plain = np.stack([np.asarray(i, dtype=np.float64) for i in swept.images["plain"]])
    variants: dict[str, dict[str, Any]] = {}
    reads: dict[str, list[dict[str, str]]] = {}
    for arm in arms:
        images = swept.images[arm.name]
        pixels = np.stack([np.asarray(i, dtype=np.float64) for i in images])
        removed = [sum(share[p] for p in pos) for share, pos in zip(shares, arm.positions)]
        entry: dict[str, Any] = {
            "group": arm.group, "mode": arm.mode, "point": arm.point,
            "zeroed": [len(pos) for pos in arm.positions],
            "attention_removed": float(np.mean(removed)),
            "pixel_difference": float(np.mean(np.abs(pixels - plain))),
            "kept": None,
        }  # fmt: skip
        if on_pocket:
            reads[arm.name] = _oracle_reads(images)
            entry["kept"] = _rates(reads[arm.name], row_prompts)
        variants[arm.name] = entry

    floor = None
    if on_pocket and config.floor_images:
        n = config.floor_images
        unconditional = sample(model, [""] * n, seed=list(range(n)), steps=config.steps,
                               guidance_scale=config.guidance_scale, progress=False).images  # fmt: skip
        floor = _floor(_oracle_reads(unconditional), row_prompts)

    shown = prompts[: config.show_prompts]
    step = len(seeds)
    images = {arm.name: swept.images[arm.name][: len(shown) * step : step] for arm in arms} if shown else {}
    metrics = {
        "prompts": prompts, "seeds": seeds, "shown_prompts": shown,
        "K": [len(lay.eot_all) for lay in lays], "first_eot": [lay.first_eot for lay in lays],
        "grid": points, "modes": list(config.modes), "branch": config.branch, "controls": list(config.controls),
        "variants": variants, "order": [arm.name for arm in arms], "floor": floor, "attributes": list(ATTRIBUTES),
        "named": [named_attributes(p) for p in prompts] if on_pocket else None,
        "attention": {
            "sot": float(np.mean([s[0] for s in shares])),
            "words": float(np.mean([sum(s[p] for p in lay.words) for s, lay in zip(shares, lays)])),
            "eot_all": float(np.mean([sum(s[p] for p in lay.eot_all) for s, lay in zip(shares, lays)])),
            "per_prompt": [[round(v, 5) for v in s] for s in shares],
        },
        "reads": reads or None,
        "sampling_seconds": swept.seconds, "sampling_calls": swept.calls,
        # SDXL also conditions on a pooled embedding (added conditioning), which no attention column reaches
        "pooled_embedding": model.is_sdxl,
    }  # fmt: skip
    headline, notes = summarise(metrics)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images=images)


#: what zeroing cross-attention columns cannot reach on SDXL
POOLED_NOTE = ("SDXL: the pooled embedding (text_encoder_2's projected [EoT]) reaches the UNet through its added "
               "conditioning, not through cross-attention, so even with every [EoT] column zeroed the prompt still "
               "steers the image through it; the changes above are the cross-attention's part only.")


def _fmt(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:.2f}"


def describe(name: str) -> str:
    """A variant's name in words: "zero k=K-1" -> "all but 1 [EoT] zeroed", "mask words" -> "words masked"."""
    if name == "plain":
        return name
    mode, what = name.split(" ", 1)
    done = f"{mode}ed"
    if not what.startswith("k="):
        return f"{what} {done}"
    k = what[2:]
    if k == "K":
        return f"every [EoT] {done}"
    if k.startswith("K-"):
        n = int(k[2:])
        return f"all but {n} [EoT]{'s' if n > 1 else ''} {done}"
    return f"last {k} [EoT]{'s' if k != '1' else ''} {done}"


def summarise(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Headline numbers and notes, computed from the metrics."""
    variants, grid, modes = metrics["variants"], metrics["grid"], metrics["modes"]
    attention = metrics["attention"]
    last = f"k={grid[-1]['label']}"
    names = {mode: ["plain"] + [f"{mode} k={p['label']}" for p in grid[1:]] for mode in modes}
    controls = [f"{m} {c}" for m in modes for c in ("words", "SoT") if f"{m} {c}" in variants]
    ks = ", ".join(p["label"] for p in grid)
    counts = sorted(set(metrics["K"]))
    keys = len(attention["per_prompt"][0])
    share = (f"Cross-attention share (conditional branch, plain): the [EoT]s get {attention['eot_all']:.2f}, the "
             f"words {attention['words']:.2f}, the SoT {attention['sot']:.3f} (K = {counts[0]}"
             + (f"–{counts[-1]}" if len(counts) > 1 else "") + f" [EoT] positions of {keys}; uniform attention "
             f"would give each position {1 / keys:.3f}).")  # fmt: skip
    headline: dict[str, Any] = {}
    notes: list[str] = []

    if variants["plain"]["kept"] is None:  # off pocket: pixel changes only
        for name in [f"{m} {last}" for m in modes] + controls:
            headline[f"pixel change, {describe(name)}"] = variants[name]["pixel_difference"]
        for mode in modes:
            pixels = [variants[n]["pixel_difference"] for n in names[mode]]
            curve = ", ".join(f"k={p['label']} {value:.1f}" for p, value in zip(grid, pixels))
            notes.append(f"No oracle off pocket: mean absolute pixel change (0-255) against the plain images, "
                         f"[EoT]s {mode}ed at k = {ks}: {curve}.")  # fmt: skip
        notes.append(share)
        if metrics.get("pooled_embedding"):
            notes.append(POOLED_NOTE)
        return headline, notes

    def kept(name: str) -> float:
        return variants[name]["kept"]["all"]

    plain = kept("plain")
    floor = metrics["floor"]["all"] if metrics["floor"] else None
    base = floor if floor is not None else 0.0
    headline["kept, plain"] = plain
    for name in [f"{m} {last}" for m in modes] + controls:
        headline[f"kept, {describe(name)}"] = kept(name)
    if "zero k=K-1" in variants:
        headline[f"kept, {describe('zero k=K-1')}"] = kept("zero k=K-1")
    if floor is not None:
        headline["chance (no prompt)"] = floor

    def removed(value: float) -> str:
        if floor is None or plain - floor <= 0:
            return ""
        return f"; {100 * (plain - value) / (plain - floor):.0f}% of what the prompt adds over chance is removed"

    mode = modes[0]
    end = f"{mode} {last}"
    before = {a: v for a, v in variants["plain"]["kept"].items() if a != "all" and v is not None}
    attrs = ", ".join(f"{a} {_fmt(v)} → {_fmt(variants[end]['kept'][a])}" for a, v in before.items())
    branch = {"both": "both CFG branches", "cond": "the conditional branch", "uncond": "the unconditional branch"}
    floor_text = f", chance (an image drawn with no prompt) {floor:.2f}" if floor is not None else ""
    notes.append(
        f"With {describe(end).replace(f' {mode}ed', '')} map {mode}ed ({branch[metrics.get('branch', 'both')]}) the "
        f"oracle reads {kept(end):.2f} of the prompts' named attributes, against {plain:.2f} plain{floor_text}"
        f"{removed(kept(end))} (per attribute, plain → {mode}ed: {attrs})."
    )
    if controls:
        words = [n for n in controls if n.endswith(" words")]
        verdict = (": the attributes do not need the words' own attention maps" if words and
                   all(kept(n) >= plain - 0.1 * (plain - base) for n in words) else "")  # fmt: skip
        text = ", ".join(f"{describe(n)} keeps {kept(n):.2f}" for n in controls)
        notes.append(f"Controls: {text} (plain {plain:.2f}){verdict}.")
    for m in modes:
        curve = [(p["label"], kept(n)) for p, n in zip(grid, names[m])]
        held = []
        for label, value in curve:
            if value < plain - 0.1 * (plain - base):
                break
            held.append(label)
        drop = next((label for label, value in curve if value < plain - 0.5 * (plain - base)), None)
        text = ", ".join(f"k={label} {value:.2f}" for label, value in curve)
        tail = (f"; they hold (within 10% of the way to {'chance' if floor is not None else 0}) up to "
                f"k={held[-1] if held else '0'} and "
                + (f"fall past half-way at k={drop}" if drop else "never fall past half-way"))  # fmt: skip
        notes.append(f"[EoT]s {m}ed, attributes kept against k (the last k of each prompt's K): {text}{tail}.")
    first_upper = describe(end)[0].upper() + describe(end)[1:]
    notes.append(share + f" {first_upper} removes {variants[end]['attention_removed']:.2f} of it, the words "
                 f"{attention['words']:.2f}.")  # fmt: skip
    if "zero" in modes and "mask" in modes and f"mask {last}" in variants:
        masked, zeroed = kept(f"mask {last}"), kept(f"zero {last}")
        if masked >= plain - 0.5 * (plain - base) > zeroed:
            which = describe(f"zero {last}").removesuffix(" zeroed")
            notes.append(
                f"Masked instead of zeroed (the softmax renormalised over the SoT and the words), {which} keeps "
                f"{masked:.2f} against {zeroed:.2f}: once the [EoT]s' share of the "
                "attention goes to the words, the words' values carry most of the attributes. Zeroing removes that "
                "share of the attention output outright, so its effect mixes what the [EoT]s hold with how much "
                "attention they hold."
            )
    if "zero k=K-1" in variants and "zero k=K" in variants:
        notes.append(
            "TRCE (Fig. 7a, SD1.4): with every [EoT] map zeroed the implied concept leaves, and one or two [EoT]s left "
            f"bring it back. On pocket one [EoT] left keeps {kept('zero k=K-1'):.2f}"
            + (f", two {kept('zero k=K-2'):.2f}" if "zero k=K-2" in variants else "")
            + f", none {kept('zero k=K'):.2f} (plain {plain:.2f})"
            + (": the first [EoT]s do not bring the attributes back on pocket." if
               kept("zero k=K-1") < plain - 0.5 * (plain - base) else ".")
        )
    return headline, notes
