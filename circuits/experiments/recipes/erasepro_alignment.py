"""``erasepro_alignment``: ErasePro Figs. 2c-d and 3a-b, the per-layer trace of ErasePro against UCE.

The paper's claims, each a curve over the edited layers in the order the features flow (text
encoder self-attention, shallow to deep, then the UNet cross-attention K/V):

- Fig. 3a: under ErasePro the target features align with the anchor features progressively: the
  angle and the Frobenius distance between them fall with depth.
- Fig. 2c / 3b: the parameter deviation ``||dW||`` of the text encoder's k-projections shrinks with depth.
- Fig. 2d: the UNet cross-attention carries far less deviation than when it is edited directly (UCE).
- Eq. 3 vs Eq. 5 (Observation 1): UCE leaves a residual ``||W X - W_o Y|| / ||W_o Y||``; ErasePro's
  closed form is exact when ``X`` has full column rank (or its repeated columns agree), so its residual
  is zero there. Where the columns outnumber what the features span it is least squares and the
  residual is not zero: the trace measures it on the edited model and this experiment draws it, it
  does not assume it. On pocket (d = 128, ``positions="prompt_aligned"``) text layer 0 keeps 0.08-0.10
  (its inputs, token + position embeddings, span ~33 dimensions), deeper layers 5e-3 to 3e-2 at
  ``rtol = 1e-3`` (``docs/recipes/erasepro.md`` has the table per layer).

Nothing is recomputed here: every number is a row of the methods' own trace
(:func:`circuits.methods.erasepro.trace`, :class:`circuits.methods.common.LayerFeatures`, the rows
``uce.fit`` writes; ``benchmarks/methods_table.py --trace`` prints the same rows as a table).
Decisions:

- One projection per layer is drawn (``projection="k"``, as Fig. 2c); angle and distance do not
  depend on the projection, residual and ``||dW||`` do; every row of every projection is kept in
  the metrics.
- ``||dW||`` is drawn relative to ``||W||`` so layers of different sizes compare; the absolute norm
  is in the metrics.
- The Frobenius distance is drawn per token column (``||X - Y||_F / sqrt(N)``): the variants pair
  different numbers of columns (ErasePro the prompt's tokens, -w the first 5, UCE from the word to the
  end of the sequence), and the raw distance grows with ``N``.
- UNet layers are ordered as the forward pass runs them (down, mid, up), not as they are registered.
- SDXL: ErasePro aligns both encoders (each progressively on its own), so the layer axis runs
  ``T0..`` (``text_encoder``, CLIP-L; its last layer feeds nothing the UNet reads and is never
  edited), then ``G0..`` (``text_encoder_2``, OpenCLIP-bigG; stage ``text_encoder_2``), then the
  UNet. The depth notes are written per encoder: the two are parallel chains, not one.
- UCE edits no text layer: its curves start at the UNet; its "before" and "after" features are the
  same (the text encoder is untouched).
- On pocket an erasure check follows (:func:`circuits.pocket.report.erasure_report`: erased rate on
  target and synonym prompts, preservation of the other values), and an image grid of a few
  target and preservation prompts under each erasure, sampled as one :func:`circuits.sampling.sweep`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from circuits.analysis.erasepro import draw_alignment
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment, show_progress
from circuits.experiments.result import ExperimentResult
from circuits.methods import erasepro, uce
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.models.diffusion import Diffusion

#: method name -> (legend label, fit function)
METHODS: dict[str, tuple[str, Callable[[Diffusion, Concept], Erasure]]] = {
    "erasepro": ("ErasePro", lambda m, c: erasepro.fit(m, c)),
    "erasepro-w": ("ErasePro-w", lambda m, c: erasepro.fit(m, c, erasepro.weak())),
    "erasepro-s": ("ErasePro-s", lambda m, c: erasepro.fit(m, c, erasepro.strong())),
    "erasepro-eot": ("ErasePro (first [EoT])", lambda m, c: erasepro.fit(m, c, positions="eot")),
    "uce": ("UCE", lambda m, c: uce.fit(m, c, preservation=False)),
    "uce-preserve": ("UCE + preservation", lambda m, c: uce.fit(m, c, preservation=True)),
}
#: templates for a concept off pocket (the pocket concepts bring their own 8)
GENERIC_TEMPLATES = ("a photo of a {}", "a painting of a {}", "a picture of a {}", "{}")


@dataclass(frozen=True)
class EraseProAlignmentConfig:
    #: the concept erased: on pocket a colour, shape or texture (its templates and synonyms come from the world)
    concept: str = "red"
    #: what the concept becomes ("" = nothing, as in the pocket methods table)
    anchor: str = ""
    #: prompt templates with one {} (() = the pocket concept's, or GENERIC_TEMPLATES off pocket)
    templates: tuple[str, ...] = ()
    #: synonyms fitted as well (() = the pocket world's; none off pocket)
    synonyms: tuple[str, ...] = ()
    #: methods compared: erasepro, erasepro-w, erasepro-s, erasepro-eot, uce, uce-preserve
    methods: tuple[str, ...] = ("erasepro", "erasepro-w", "erasepro-s", "erasepro-eot", "uce")
    #: projection drawn per layer (Fig. 2c draws k); the metrics keep every projection
    projection: Literal["k", "v"] = "k"
    #: pocket only: images per prompt of the erasure check (8 prompts per set; 0 = no check)
    check_samples: int = 2
    #: prompts in the image grid (half naming the concept, half its attribute's other values; 0 = none)
    show_prompts: int = 4
    #: sampling steps of the check and the grid
    steps: int = 25
    #: noise seed of the check and the grid
    seed: int = 0


def _check(config: EraseProAlignmentConfig) -> None:
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise ConfigError(f"erasepro_alignment: methods={config.methods!r}; choose from {', '.join(METHODS)}")
    if len(set(config.methods)) != len(config.methods):
        raise ConfigError(f"erasepro_alignment: methods={config.methods!r} names a method twice")
    for name in ("check_samples", "show_prompts", "steps"):
        if getattr(config, name) < (1 if name == "steps" else 0):
            raise ConfigError(f"erasepro_alignment: {name}={getattr(config, name)} is too small")


def build_concept(model: Diffusion, config: EraseProAlignmentConfig) -> Concept:
    """The pocket concept (templates and synonyms from the world) or one built from the config's words."""
    if model.source == "pocket":
        from circuits.pocket import concept as pocket_concept

        base = pocket_concept(config.concept, anchor=config.anchor)
        return replace(base, templates=config.templates or base.templates, synonyms=config.synonyms or base.synonyms)
    return Concept(target=config.concept, synonyms=config.synonyms, anchor=config.anchor,
                   templates=config.templates or GENERIC_TEMPLATES, name=config.concept)  # fmt: skip


def _unet_order(site: str) -> tuple[int, int, int, int]:
    """Forward-pass order of a cross-attention site: down blocks, the mid block, up blocks."""
    numbers = [int(n) for n in re.findall(r"\.(\d+)", site)] + [0, 0, 0]
    kind = 0 if ".down_blocks." in site else 1 if ".mid_block." in site else 2
    return (kind, *numbers[:3])  # type: ignore[return-value]


#: SDXL's second text encoder's stage in ErasePro's trace; the text stages in the order features flow
SECOND = "text_encoder_2"
TEXT_STAGES = ("text", SECOND)


def unet_label(site: str) -> str:
    """``unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2`` -> ``up1.0`` (``mid``, ``down0.0``)."""
    if ".mid_block." in site:  # SDXL stacks up to 10 transformer blocks in the mid block's attention
        match = re.search(r"attentions\.(\d+)\.transformer_blocks\.(\d+)", site)
        if match is None or match.groups() == ("0", "0"):
            return "mid"
        attention, transformer = match.groups()
        return f"mid.{attention}" + (f".{transformer}" if transformer != "0" else "")
    match = re.search(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)", site)
    if match is None:
        return site.rsplit(".", 1)[0]
    kind, block, attention, transformer = match.groups()
    return f"{kind}{block}.{attention}" + (f".{transformer}" if transformer != "0" else "")


def layer_axis(model: Diffusion) -> list[dict[str, Any]]:
    """Every layer an ErasePro or UCE edit can touch, in the order features flow through them."""
    layers = [{"key": f"text.{i}", "stage": "text", "label": f"T{i}"} for i in range(len(model.sites.text_layers()))]
    if model.is_sdxl:
        second = model.sites.text_layers("text_encoder_2")
        layers += [{"key": f"{SECOND}.{i}", "stage": SECOND, "label": f"G{i}"} for i in range(len(second))]
    for site in sorted(model.sites.cross_attention(), key=_unet_order):
        layers.append({"key": f"unet.{site}", "stage": "unet", "label": unet_label(site)})
    return layers


def _layer_key(row: dict[str, Any]) -> str:
    if row["stage"] in TEXT_STAGES:
        return f"{row['stage']}.{row['layer']}"
    return "unet." + row["param"].rsplit(".", 2)[0]


def _is_projection(row: dict[str, Any], projection: str) -> bool:
    suffix = ("k_proj.weight", "to_k.weight") if projection == "k" else ("v_proj.weight", "to_v.weight")
    return row["param"].endswith(suffix)


def per_layer(trace: list[dict[str, Any]], layers: list[dict[str, Any]], projection: str) -> dict[str, list]:
    """The trace rows of one projection laid out on the layer axis (``None`` where the method edits nothing)."""
    rows = {_layer_key(r): r for r in trace if _is_projection(r, projection)}
    out: dict[str, list] = {k: [] for k in (
        "angle_before_deg", "angle_after_deg", "distance_before", "distance_after", "residual_before", "residual",
        "delta_norm", "relative_delta", "columns", "rank", "solver")}  # fmt: skip
    for layer in layers:
        row = rows.get(layer["key"])
        for key in out:
            if row is None:
                out[key].append(None)
            elif key == "relative_delta":
                out[key].append(row["delta_norm"] / row["weight_norm"] if row["weight_norm"] else None)
            elif key.startswith("distance"):  # per token column: methods pair different numbers of columns
                out[key].append(row[key] / math.sqrt(row["columns"]) if row["columns"] else None)
            else:
                out[key].append(row[key])
    return out


def _values(series: list) -> list[float]:
    return [v for v in series if v is not None]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stage_values(layers: list[dict], series: list, stage: str) -> list[float]:
    return [v for layer, v in zip(layers, series) if layer["stage"] == stage and v is not None]


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


@experiment("erasepro_alignment", EraseProAlignmentConfig, draw=draw_alignment, paper="ErasePro Figs. 2c-d, 3a-b",
            fast={"methods": ("erasepro", "uce"), "check_samples": 0, "show_prompts": 2, "steps": 3})  # fmt: skip
def erasepro_alignment(model: Diffusion, config: EraseProAlignmentConfig) -> ExperimentResult:
    """Per-layer target-anchor angle, distance, residual and ||dW|| of ErasePro against UCE (the methods' traces)."""
    _check(config)
    concept = build_concept(model, config)
    layers = layer_axis(model)
    fitted: dict[str, Erasure] = {}
    methods: dict[str, Any] = {}
    for name in config.methods:
        label, fit = METHODS[name]
        erasure = fit(model, concept)
        fitted[name] = erasure
        methods[name] = {
            "label": label,
            "fit_seconds": erasure.seconds,
            "config": erasure.config,
            "notes": list(erasure.notes),
            "edits": len(erasure.graph),
            "per_layer": per_layer(erasure.trace, layers, config.projection),
            "trace": erasure.trace,
        }
    metrics: dict[str, Any] = {"concept": concept.to_dict(), "layers": layers, "methods": methods,
                               "order": list(config.methods)}  # fmt: skip

    check = _erasure_check(model, concept, fitted, config) if model.source == "pocket" and config.check_samples else {}
    metrics["check"] = check
    images, shown = _image_grid(model, concept, fitted, methods, config)
    metrics["shown_prompts"] = shown
    headline, notes = _summarise(layers, methods, check, config)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images=images)


def _erasure_check(model: Diffusion, concept: Concept, fitted: dict[str, Erasure],
                   config: EraseProAlignmentConfig) -> dict[str, Any]:  # fmt: skip
    from circuits.pocket.report import erasure_report

    check: dict[str, Any] = {}
    baseline = None
    for name, erasure in fitted.items():
        report = erasure_report(model, concept, erasure, samples=config.check_samples, seed=config.seed,
                                steps=config.steps, baseline=baseline, progress=show_progress())  # fmt: skip
        baseline = report
        check[name] = report.summary()
    return check


def _image_grid(model: Diffusion, concept: Concept, fitted: dict[str, Erasure], methods: dict[str, Any],
                config: EraseProAlignmentConfig) -> tuple[dict[str, list[Any]], list[str]]:  # fmt: skip
    if not config.show_prompts:
        return {}, []
    from circuits.sampling import sweep

    if model.source == "pocket":
        from circuits.pocket import evaluation_sets

        sets = evaluation_sets(concept)
        named = (config.show_prompts + 1) // 2
        prompts = list(sets.target[:named]) + list(sets.preservation[: config.show_prompts - named])
    else:
        prompts = (concept.target_prompts(synonyms=False) + list(concept.preservation))[: config.show_prompts]
    variants: dict[str, Any] = {"original": None}
    variants.update({methods[name]["label"]: erasure for name, erasure in fitted.items()})
    result = sweep(model, prompts, variants, seeds=[config.seed], steps=config.steps, progress=show_progress())
    return result.images, prompts


def _sequence(layers: list[dict], series: list, fmt: str, stage: str = "text") -> list[tuple[str, float]]:
    """(label, value) per layer of one text encoder (``stage``) the method edits, then the UNet once when every
    UNet layer shares the value."""
    text = [(layer["label"], v) for layer, v in zip(layers, series) if layer["stage"] == stage and v is not None]
    unet = [(layer["label"], v) for layer, v in zip(layers, series) if layer["stage"] == "unet" and v is not None]
    if unet and len({format(v, fmt) for _, v in unet}) == 1:
        unet = [("UNet", unet[0][1])]
    return text + unet


def _trend(values: list[float]) -> str:
    if len(values) < 2:
        return "one layer only"
    if all(b <= a for a, b in zip(values, values[1:])):
        return "falls at every step"
    if all(b >= a for a, b in zip(values, values[1:])):
        return "rises at every step"
    peak = max(range(len(values)), key=values.__getitem__)
    if peak > 0 and all(b <= a for a, b in zip(values[peak:], values[peak + 1:])):
        return f"rises to layer {peak + 1} of {len(values)}, then falls at every step"
    return "not monotone"


def _depth_notes(pro: dict[str, Any], series: dict[str, list], layers: list[dict], stage: str, proj: str,
                 headline: dict[str, Any], notes: list[str]) -> None:
    """Fig. 2c (||dW|| with depth) and Fig. 3a (angle, distance with depth) along one encoder's chain to the UNet."""
    which = "" if stage == "text" else f" ({stage})"
    text = [(layer["label"], v) for layer, v in zip(layers, series["relative_delta"]) if layer["stage"] == stage
            and v is not None]  # fmt: skip
    if text:
        trend = _trend([v for _, v in text])
        notes.append(f"{pro['label']}: ||dW||/||W|| of the text {proj}-projections{which}, shallow to deep: "
                     + ", ".join(f"{label} {v:.2f}" for label, v in text)
                     + f" ({trend}; Fig. 2c has it falling with depth).")  # fmt: skip
    angles = _sequence(layers, series["angle_after_deg"], ".4f", stage)
    distances = _sequence(layers, series["distance_after"], ".4f", stage)
    if not angles:
        return
    headline[f"{pro['label']} angle, first edited layer -> UNet (deg){which}"] = (
        f"{angles[0][1]:.1f} -> {angles[-1][1]:.1f}")
    before_unet = _stage_values(layers, series["angle_before_deg"], "unet")
    unet_part = (f"; at the UNet input the edit brings it from {before_unet[0]:.1f} deg (original model) to "
                 f"{angles[-1][1]:.1f}" if before_unet else "")  # fmt: skip
    notes.append(
        f"{pro['label']}: target-anchor angle of each edited layer's inputs in the edited model{which}: "
        + ", ".join(f"{label} {v:.1f}" for label, v in angles) + f" deg ({_trend([v for _, v in angles])})"
        + unet_part + "; distance per token column: "
        + ", ".join(f"{label} {v:.2f}" for label, v in distances)
        + f" ({_trend([v for _, v in distances])}). Fig. 3a: both fall with depth."
    )  # fmt: skip


def _summarise(layers: list[dict], methods: dict[str, Any], check: dict[str, Any],
               config: EraseProAlignmentConfig) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    headline: dict[str, Any] = {}
    notes: list[str] = []
    proj = config.projection
    pros = {n: m for n, m in methods.items() if n.startswith("erasepro")}
    pro = methods.get("erasepro") or next(iter(pros.values()), None)
    base = methods.get("uce") or methods.get("uce-preserve")

    # residual (Observation 1 against Eq. 5)
    for entry in methods.values():
        residuals = _values(entry["per_layer"]["residual"])
        if residuals:
            headline[f"{entry['label']} residual (max)"] = max(residuals)
    if base is not None:
        unet = _stage_values(layers, base["per_layer"]["residual"], "unet")
        if unet:
            notes.append(f"{base['label']} leaves a relative residual ||W X - W_o Y|| / ||W_o Y|| of "
                         f"{min(unet):.3f}-{max(unet):.3f} at the UNet {proj}-projections (ErasePro's Observation 1: "
                         "the ridge solution cannot reach zero).")  # fmt: skip
    for entry in pros.values():
        series = entry["per_layer"]
        residuals = _values(series["residual"])
        if not residuals:
            continue
        solved = [(c, r, s) for c, r, s in zip(series["columns"], series["rank"], series["solver"]) if s is not None]
        short = [(c, r) for c, r, s in solved if s != "exact"]
        zero = sum(r < 1e-8 for r in residuals)
        if not short:
            why = "every layer was solved exactly"
        else:
            ranks = [r for _, r in short]
            why = (f"at {len(short)} of {len(solved)} layers the {short[0][0]} token columns have rank {min(ranks)}-"
                   f"{max(ranks)} (Eq. 5's X^+ needs full column rank), so the solver takes least squares and the "
                   f"residual is zero (< 1e-8) only where the system is consistent: {zero} of {len(residuals)} layers")
        if entry["config"].get("propagate") == "original":
            why += ("; Alg. 2 solves each layer on the original model's features, and the trace measures the residual "
                    "on the edited model's own, which earlier edits have moved")
        notes.append(f"{entry['label']}: residual {min(residuals):.1e} to {max(residuals):.1e} over the edited layers; "
                     f"{why}.")  # fmt: skip

    if pro is not None:
        series = pro["per_layer"]
        for stage in dict.fromkeys(layer["stage"] for layer in layers if layer["stage"] in TEXT_STAGES):
            _depth_notes(pro, series, layers, stage, proj, headline, notes)
    # the UNet burden (Fig. 2d)
    burden = {}
    for entry in methods.values():
        mean = _mean(_stage_values(layers, entry["per_layer"]["relative_delta"], "unet"))
        if mean is not None:
            burden[entry["label"]] = mean
            headline[f"{entry['label']} ||dW||/||W|| UNet"] = mean
    if base is not None and base["label"] in burden and len(burden) > 1:
        reference = burden[base["label"]]
        lower = [label for label, v in burden.items() if label != base["label"] and v < reference]
        notes.append(
            "Mean ||dW||/||W|| at the UNet cross-attention: " + ", ".join(f"{k} {v:.2f}" for k, v in burden.items())
            + f"; {len(lower)} of {len(burden) - 1} ErasePro variants put less on the UNet than {base['label']}"
            + (f" ({', '.join(lower)})" if lower else "") + " (Fig. 2d: ErasePro's UNet burden is far below UCE's)."
        )
    # the erasure check
    for name, summary in check.items():
        label = methods[name]["label"]
        headline[f"{label}: erased rate / preservation ratio"] = (
            f"{_fmt(summary['target_after'], '.2f')} / {_fmt(summary['preservation_ratio'], '.2f')}"
        )
    if check:
        rates = ", ".join(
            f"{methods[n]['label']} {_fmt(s['target_after'], '.2f')} "
            f"(preservation {_fmt(s['preservation_after'], '.2f')})" for n, s in check.items()
        )
        first = next(iter(check.values()))
        notes.append(
            f"Erasure check on pocket ({config.check_samples} images per prompt, 8 prompts per set): the rate of "
            f"'{first['concept']}' on prompts naming it falls from {_fmt(first['target_before'], '.2f')} to {rates}; "
            f"preservation before {_fmt(first['preservation_before'], '.2f')}; the model draws it unasked at "
            f"{_fmt(first['unnamed_rate'], '.2f')}."
        )
    return headline, notes
