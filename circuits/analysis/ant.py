"""ANT's diagnostic figures: the CFG reversal grid over t' (Fig. 3) and the saliency intersection curve (Fig. 4)."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.ticker import FuncFormatter

from circuits.analysis.style import PALETTE, add_caption, caption_text, curves, image_grid, new_figure, styled


def _nan(values: list[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


@styled
def draw_reversal(result: Any) -> dict[str, Any]:
    """Fig. 3: images (rows: plain CFG and each t'; columns: prompts) and what is kept against t'."""
    metrics = result.metrics
    rows, steps = metrics["rows"], metrics["steps"]
    t_primes = [r["t_prime"] for r in rows]
    ticks = [f"{t:g}\n{r['reversed_steps']}/{steps}" for t, r in zip(t_primes, rows)]
    figures: dict[str, Any] = {}
    if result.images:
        figures["cfg_reversal"] = image_grid(
            result.images, columns=metrics.get("shown_columns"), cell=0.75,
            title="the same noise with the condition direction reversed for t <= t'",
            caption=caption_text(result.config, ("seeds", "steps", "guidance_scale"),
                                 "rows: plain CFG, then t' (reversed steps of the schedule)"),
        )  # fmt: skip

    panels = []
    if metrics["oracle"]:
        panels.append(("kept", "kept vs plain CFG (oracle reads the same)"))
    panels += [("layout", "similarity to plain CFG"), ("pixels", "mean |pixel difference| (0-255)")]
    figure = new_figure(3.0 * len(panels) + 0.4, 3.0)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, ylabel) in zip(axes, panels):
        if key == "kept":
            series = {attr: [r[f"kept_{attr}"] for r in rows] for attr in ("shape", "colour", "texture", "background")}
            curves(ax, t_primes, series, xlabel="t'", ylabel=ylabel, ylim=(-0.03, 1.03),
                   styles={"shape": {"linewidth": 2.5}, "background": {"linestyle": ":"}})  # fmt: skip
        elif key == "layout":
            series = {"latent cosine": [r["latent_cosine"] for r in rows]}
            if metrics["oracle"]:
                series["bounding-box IoU"] = _nan([r.get("box_iou") for r in rows])
                series["silhouette IoU"] = _nan([r.get("silhouette_iou") for r in rows])
                series["foreground-mask IoU"] = _nan([r.get("mask_iou") for r in rows])
            curves(ax, t_primes, series, xlabel="t'", ylabel=ylabel, ylim=(min(-0.05, *series["latent cosine"]), 1.03))
        else:
            curves(ax, t_primes, {"pixel difference": [r["pixel_difference"] for r in rows]}, xlabel="t'",
                   ylabel=ylabel)  # fmt: skip
        ax.set_xticks(t_primes, ticks, fontsize=6)
        ax.set_xlabel("t'  (reversed steps)")
    figure.suptitle("CFG direction reversed for t <= t': what stays as in the plain image")
    add_caption(figure, caption_text(
        result.config, ("seeds", "steps", "guidance_scale"),
        f"{len(metrics['prompts'])} prompts x {len(metrics['seeds'])} seeds = {metrics['images_per_variant']} "
        "images per t'; kept = the pocket oracle reads the same shape / colour / texture / background as on the "
        "plain image of the same noise; silhouette = foreground mask with holes filled; bounding box "
        "of the foreground mask"))  # fmt: skip
    figures["cfg_reversal_measures"] = figure
    return figures


@styled
def draw_saliency(result: Any) -> dict[str, Any]:
    """Fig. 4: active parameters against the number of intersected saliency maps, one panel per concept
    (log y), and the share of each UNet part's parameters still active."""
    metrics = result.metrics
    concepts = metrics["concepts"]
    figure = new_figure(2.8 * (len(concepts) + 2), 3.2)
    axes = figure.subplots(1, len(concepts) + 2, squeeze=False)[0]
    for ax, entry in zip(axes, concepts):
        curve = entry["curve"]
        maps = list(range(1, len(curve) + 1))
        positive = [max(v, 0.5) for v in curve]  # log axis: an empty mask is drawn at 0.5
        ax.plot(maps, positive, color=PALETTE[0], marker="o" if len(curve) <= 24 else None, label="active parameters")
        ax.set_yscale("log")
        ax.set_xlabel("intersected saliency maps")
        ax.set_ylabel("active parameters")
        ax.set_title(f"{entry['concept']}: {entry['maps']} maps ({entry['prompts']} prompts x {entry['seeds']} seeds)")
        ax.axhline(entry["considered"], color="0.5", linewidth=0.8, linestyle=":")
        ax.text(maps[-1], entry["considered"], "all parameters considered", ha="right", va="bottom", fontsize=6,
                color="0.4")  # fmt: skip
        ax.annotate(f"{curve[-1]:,}", (maps[-1], positive[-1]), textcoords="offset points", xytext=(-4, 6),
                    ha="right", fontsize=7)  # fmt: skip
    ax = axes[len(concepts)]  # which kinds of layer the survivors sit in, map after map
    dashes = ("-", "--", ":", "-.")
    for index, entry in enumerate(concepts):
        maps = list(range(1, entry["maps"] + 1))
        for colour, kind in enumerate(metrics["kind_order"]):
            part = entry["kinds"].get(kind)
            if not part or not part["size"]:
                continue
            shares = [a / part["size"] if a > 0 else float("nan") for a in part["active"]]
            ax.plot(maps, shares, color=PALETTE[colour % len(PALETTE)], linestyle=dashes[index % len(dashes)],
                    label=kind if index == 0 else None)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("intersected saliency maps")
    ax.set_ylabel("share of its parameters active")
    styles = ", ".join(f"{e['concept']} {dashes[i % len(dashes)]}" for i, e in enumerate(concepts))
    ax.set_title(f"by kind of layer ({styles})" if len(concepts) > 1 else "by kind of layer")
    ax.legend(frameon=False, fontsize=6)
    ax = axes[len(concepts) + 1]  # where the survivors sit after the last map
    order = metrics["groups"]
    for index, entry in enumerate(concepts):
        by_group = entry["groups"]
        shares = [by_group[g]["active"][-1] / by_group[g]["size"] if g in by_group else 0.0 for g in order]
        ax.plot(range(len(order)), [v if v > 0 else float("nan") for v in shares], color=PALETTE[index % len(PALETTE)],
                marker="o", linestyle=dashes[index % len(dashes)], label=entry["concept"])  # fmt: skip
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xticks(range(len(order)), order, rotation=60, ha="right")
    ax.set_ylabel("share of its parameters active")
    ax.set_title("after the last map, by UNet block")
    if len(concepts) > 1:
        ax.legend(frameon=False)
    figure.suptitle("concept-specific saliency: active parameters against intersected maps")
    add_caption(figure, caption_text(
        result.config, ("maps", "prompts", "threshold", "gamma", "gamma_density", "t_prime", "sample_steps"),
        "one map per (prompt, seed) = |grad of Eq. 3| >= gamma (Eq. 4; None: ANT's defaults for the model), the "
        "mask ant.fit trains; maps intersected in (seed, prompt) order; right: share of each part's parameters "
        "still active (no point: none)"))
    return {"saliency_intersection": figure}


def decay_per_map(curve: list[int], start: int, stop: int) -> float:
    """The mean factor by which the active count shrinks per added map between maps ``start`` and ``stop`` (1-based)."""
    a, b = curve[start - 1], curve[stop - 1]
    if a <= 0 or b <= 0 or stop <= start:
        return float("nan")
    return math.exp(math.log(b / a) / (stop - start))
