"""ErasePro's diagnostic figures: the per-layer alignment trace (Figs. 2c-d, 3a-b) and depth sensitivity (Figs. 2e, 5).

Both draw from an experiment result alone (``erasepro_alignment``, ``depth_sensitivity``).
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib.lines import Line2D

from circuits.analysis.style import PALETTE, add_caption, caption_text, image_grid, new_figure, styled

#: the metric panels of the alignment figure: (per-layer key after, key before, y label, log scale)
ALIGNMENT_PANELS = (
    ("angle_after_deg", "angle_before_deg", "target-anchor angle (deg)", False),
    ("distance_after", "distance_before", "distance per token column\n" r"$\|X - Y\|_F\,/\,\sqrt{N}$", False),
    ("residual", "residual_before", "relative residual\n" r"$\|WX - W_oY\|_F\,/\,\|W_oY\|_F$", True),
    ("relative_delta", None, r"$\|\Delta W\|_F\,/\,\|W\|_F$", False),
)
TITLES = (
    "(a) angle of the layer's inputs", "(b) Frobenius distance", "(c) alignment residual", "(d) parameter deviation",
)
#: smallest residual drawn on the log axis (exact solves reach 1e-16)
RESIDUAL_FLOOR = 1e-10


def _nan(values: list[Any], floor: float | None = None) -> list[float]:
    out = []
    for value in values:
        if value is None:
            out.append(math.nan)
        else:
            out.append(max(float(value), floor) if floor is not None else float(value))
    return out


def _ordered(images: dict[str, list[Any]], order: list[str]) -> dict[str, list[Any]]:
    """Image rows in the experiment's order (a saved result's JSON comes back sorted by name)."""
    known = [name for name in order if name in images]
    return {name: images[name] for name in known + [n for n in images if n not in known]}


def _stage_separator(ax: Any, layers: list[dict[str, Any]]) -> None:
    """A dotted line where the layer axis passes from one stage to the next (text encoder(s), UNet)."""
    stages = [layer["stage"] for layer in layers]
    for index in range(1, len(stages)):
        if stages[index] != stages[index - 1]:
            ax.axvline(index - 0.5, color="0.6", linewidth=0.8, linestyle=":")


@styled
def draw_alignment(result: Any) -> dict[str, Any]:
    """Four panels against the layers (text encoder shallow to deep, then UNet cross-attention in
    forward order): angle, distance per column, residual and relative ``||dW||``; one colour per method,
    solid = in the edited model, dashed = in the original model (before the edit)."""
    metrics = result.metrics
    layers = metrics["layers"]
    methods = metrics["methods"]
    x = list(range(len(layers)))
    labels = [layer["label"] for layer in layers]
    second = sum(layer["stage"] == "text_encoder_2" for layer in layers)  # SDXL's OpenCLIP-bigG layers
    figure = new_figure(9.0, 5.6)
    axes = figure.subplots(2, 2, sharex=True).ravel()
    for ax, (after, before, ylabel, log), title in zip(axes, ALIGNMENT_PANELS, TITLES):
        floor = RESIDUAL_FLOOR if log else None
        for index, name in enumerate(metrics.get("order") or list(methods)):
            entry = methods[name]
            colour = PALETTE[index % len(PALETTE)]
            series = entry["per_layer"]
            ax.plot(x, _nan(series[after], floor), color=colour, marker="o", label=entry["label"])
            if before is not None:
                ax.plot(x, _nan(series[before], floor), color=colour, linestyle="--", linewidth=0.9, alpha=0.6,
                        marker=".")  # fmt: skip
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        _stage_separator(ax, layers)
    for ax in axes[2:]:
        ax.set_xticks(x, labels, rotation=45, ha="right")
        ax.set_xlabel("edited layer (T = text encoder" + (", G = text_encoder_2" if second else "") + ", then UNet)")
    handles, names = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.4", linestyle="--", linewidth=0.9, marker="."))
    names.append("dashed: original model\n(before the edit)")
    figure.legend(handles, names, loc="outside right center", frameon=False)
    concept = metrics["concept"]
    anchor = repr(concept["anchor"]) if concept["anchor"] else "nothing"
    config = result.config
    projection = getattr(config, "projection", "k")
    n_text = sum(layer["stage"] == "text" for layer in layers)
    add_caption(figure, caption_text(
        config, ("methods", "projection"),
        f"'{concept['target']}' → {anchor}, {len(concept['templates'])} templates x "
        f"{1 + len(concept['synonyms'])} words; {projection}-projection of each layer; T0-T{n_text - 1}: "
        "text-encoder self-attention, shallow to deep, "
        + (f"G0-G{second - 1}: text_encoder_2's, " if second else "")
        + "then the UNet cross-attention layers in forward order"))
    figures = {"erasepro_alignment": figure}
    if result.images:
        order = ["original"] + [methods[name]["label"] for name in metrics.get("order") or list(methods)]
        figures["images"] = image_grid(
            _ordered(result.images, order), columns=metrics.get("shown_prompts"),
            title=f"erasing '{concept['target']}'",
            caption=caption_text(config, ("steps", "seed")))  # fmt: skip
    return figures


@styled
def draw_depth(result: Any) -> dict[str, Any]:
    """Damage against alpha, one line per site (shallow, deep): oracle accuracy (pocket), pixel
    difference and PSNR against the unedited images of the same noise; and the image grid."""
    metrics = result.metrics
    sites = metrics["sites"]
    alphas = metrics["alphas"]
    rows = metrics["rows"]
    has_accuracy = metrics["original"].get("accuracy") is not None
    panels = [("pixel_difference", "mean |pixel difference| (0-255)"), ("psnr_db", "PSNR vs unedited (dB)")]
    if has_accuracy:
        panels.insert(0, ("accuracy", "oracle accuracy (named attributes)"))
    figure = new_figure(3.0 * len(panels) + 1.6, 3.0)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, ylabel) in zip(axes, panels):
        for index, site in enumerate(metrics.get("site_order") or list(sites)):
            entry = sites[site]
            values = {r["alpha"]: r[key] for r in rows if r["site"] == site}
            style = {"linestyle": "-", "marker": "o"} if site == "shallow" else {"linestyle": "--", "marker": "s"}
            ax.plot(alphas, _nan([values.get(a) for a in alphas]), color=PALETTE[index % len(PALETTE)],
                    label=entry["label"], **style)  # fmt: skip
        if key == "accuracy":
            ax.axhline(metrics["original"]["accuracy"], color="0.4", linewidth=0.8, linestyle=":", label="unedited")
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(r"$\alpha$  ($\Delta = \alpha\,\|W\|_F\,I$)")
        ax.set_ylabel(ylabel)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside right center", frameon=False)
    figure.suptitle("the same relative deviation on a shallow and on deep layers")
    add_caption(figure, caption_text(
        result.config, ("seeds", "steps"),
        f"{len(metrics['prompts'])} prompts x {len(metrics['seeds'])} seeds; shallow = text layer 0 Q/K/V, "
        "deep = one UNet cross-attention's Q/K/V"))
    figures = {"depth_sensitivity": figure}
    if result.images:
        order = ["original"] + [row["variant"] for row in rows]
        figures["images"] = image_grid(
            _ordered(result.images, order), columns=metrics.get("shown_prompts"),
            title="images under each deviation (same noise)",
            caption=caption_text(result.config, ("steps",), "rows: site, α"))  # fmt: skip
    return figures
