"""ActErase's diagnostic figures: the masks (Alg. 1 step 1), the module comparison (Table 7) and the merge (Alg. 2).

Each function draws from an experiment result alone (``acterase_masks``, ``patch_modules``,
``multi_concept``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.patches import Rectangle

from circuits.analysis.style import PALETTE, add_caption, caption_text, curves, heatmap, image_grid, new_figure, styled


def _bars(ax: Any, groups: list[str], series: dict[str, list[float | None]], *, ylabel: str, title: str = "",
          ylim: tuple[float, float] | None = None, values: bool = False) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar (colour) per series."""
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for index, (label, ys) in enumerate(series.items()):
        heights = [np.nan if y is None else y for y in ys]
        offset = (index - (len(series) - 1) / 2) * width
        bars = ax.bar(x + offset, heights, width, label=label, color=PALETTE[index % len(PALETTE)])
        if values:
            for bar, h in zip(bars, heights):
                if not np.isnan(h):
                    ax.text(bar.get_x() + bar.get_width() / 2, h, f"{h:.2f}", ha="center", va="bottom", fontsize=5)
    ax.set_xticks(x, groups, rotation=30 if max(len(g) for g in groups) > 6 else 0, ha="right" if max(
        len(g) for g in groups) > 6 else "center")  # fmt: skip
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, loc="left")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="x", visible=False)
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=6)


def _ordered(images: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """Image rows in the run's order (a result read back from disk may list them in another)."""
    return {name: images[name] for name in order if name in images} | {
        name: rows for name, rows in images.items() if name not in order}


# -- acterase_masks --------------------------------------------------------------------------
@styled
def draw_masks(result: Any) -> dict[str, Any]:
    """(a) combined-mask density per layer, per concept; (b) density against the agreement threshold;
    (c) vote fractions; (d) mask overlap between concepts; bottom: the rule's density, layer x step."""
    metrics = result.metrics
    entries = metrics["concepts"]
    agreement = getattr(result.config, "agreement", None)
    figure = new_figure(10.0, 3.0 + 2.3)
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.25, 1.0])
    panels = 4 if metrics["overlap"] else 3
    axes = top.subplots(1, panels)
    labels = [layer["label"] for layer in entries[0]["layers"]]
    _bars(axes[0], labels, {e["concept"]: [layer["density"] for layer in e["layers"]] for e in entries},
          ylabel="fraction of entries masked", title="(a) mask density per layer")  # fmt: skip
    curves(axes[1], metrics["agreements"], {e["concept"]: e["density_at_agreement"] for e in entries},
           xlabel="agreement threshold", ylabel="mask density", title="(b) density vs agreement")
    if agreement is not None:
        axes[1].axvline(agreement, color="0.5", linestyle=":", linewidth=0.9)
    bins = np.linspace(0, 1, 21)
    centres = (bins[:-1] + bins[1:]) / 2
    for index, entry in enumerate(entries):
        total = entry["entries"]
        hist = [sum(layer["entries"] * layer["vote_histogram"][k] for layer in entry["layers"]) / total
                for k in range(20)]  # fmt: skip
        axes[2].step(centres, hist, where="mid", color=PALETTE[index % len(PALETTE)], label=entry["concept"])
    if agreement is not None:
        axes[2].axvline(agreement, color="0.5", linestyle=":", linewidth=0.9)
    axes[2].set_xlabel("vote fraction (Eq. 5 over steps, pairs)")
    axes[2].set_ylabel("fraction of entries")
    axes[2].set_title("(c) vote fractions", loc="left")
    if len(entries) > 1:
        axes[2].legend(frameon=False)
    if metrics["overlap"]:
        pairs = [" / ".join(p["concepts"]) for p in metrics["overlap"]]
        _bars(axes[3], pairs, {"observed": [p["jaccard"] for p in metrics["overlap"]],
                               "independent masks": [p["independent"] for p in metrics["overlap"]]},
              ylabel="Jaccard index of the masks", title="(d) overlap between concepts", values=True)  # fmt: skip
        axes[3].set_ylim(0, 1.35 * max(max(p["jaccard"], p["independent"]) for p in metrics["overlap"]) + 1e-3)
        axes[3].legend(frameon=False, fontsize=6, loc="upper right", ncols=2)
    maps = bottom.subplots(1, len(entries), squeeze=False)[0]
    vmax = max(max(layer["density_per_step"]) for e in entries for layer in e["layers"])
    for ax, entry in zip(maps, entries):
        matrix = [layer["density_per_step"] for layer in entry["layers"]]
        heatmap(ax, matrix, ylabels=[layer["label"] for layer in entry["layers"]], vmin=0.0, vmax=vmax,
                title=f"{entry['concept']}: rule density (Eq. 5) per step", cmap="magma",
                colorbar="fraction of entries" if ax is maps[-1] else None)  # fmt: skip
        steps = len(entry["density_per_step"])
        ticks = sorted({0, steps // 2, steps - 1})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("denoising step (0 = first, noisiest)")
    taus = ", ".join(f"{e['concept']} {e['tau']:g}" for e in entries)
    keys = ("layers", "score", "tau", "agreement", "collect_steps", "synonyms")
    add_caption(figure, caption_text(result.config, keys, f"ActErase masks (tau used: {taus})"))
    return {"acterase_masks": figure}


# -- patch_modules ---------------------------------------------------------------------------
@styled
def draw_modules(result: Any) -> dict[str, Any]:
    """(a) erased rate and preservation per patched module against no patch; (b) mask density per
    module; and the images of every module's patch."""
    metrics = result.metrics
    if metrics.get("measure") == "pixel_change":
        return _draw_modules_pixels(result)
    order = metrics["order"]
    modules = metrics["modules"]
    before = metrics["before"]
    variants = {"no patch": before, **{modules[m]["label"]: modules[m] for m in order}}
    groups = {"target rate": "target", "synonym rate": "synonyms", "unnamed rate": "unnamed",
              "kept (other attributes)": "kept", "preservation accuracy": "preservation"}  # fmt: skip
    groups = {k: v for k, v in groups.items() if before.get(v) is not None}
    figure = new_figure(9.0, 3.2)
    axes = figure.subplots(1, 2, width_ratios=[3.0, 1.2])
    _bars(axes[0], list(groups), {name: [entry[key] for key in groups.values()] for name, entry in variants.items()},
          ylabel="fraction of images (oracle)", title=f"(a) erasing {metrics['concept']}: rates and preservation",
          ylim=(0, 1.1), values=True)  # fmt: skip
    handles, names = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    figure.legend(handles, names, loc="outside upper center", ncols=len(variants), frameon=False, fontsize=7)
    labels = [modules[m]["label"] for m in order]
    axes[1].bar(range(len(order)), [modules[m]["density"] for m in order],
                color=[PALETTE[(i + 1) % len(PALETTE)] for i in range(len(order))])
    for i, m in enumerate(order):
        layer_densities = [layer["density"] for layer in modules[m]["layers"]]
        axes[1].scatter([i] * len(layer_densities), layer_densities, color="0.2", s=6, zorder=3,
                        label="per layer" if i == 0 else None)  # fmt: skip
    axes[1].set_xticks(range(len(order)), [label.replace(" ", "\n", 1) for label in labels])
    axes[1].set_ylabel("fraction of entries masked")
    axes[1].set_title("(b) mask density", loc="left")
    axes[1].set_ylim(0, 1)
    axes[1].grid(axis="x", visible=False)
    axes[1].legend(frameon=False, fontsize=6)
    caption = caption_text(result.config, ("concept", "ffn_score", "tau", "agreement", "branch", "collect_steps",
                                           "prompts_per_set", "seeds", "steps"), "ActErase module comparison")
    add_caption(figure, caption)
    figures = {"patch_modules": figure}
    if result.images:
        figures["images"] = image_grid(
            _ordered(result.images, list(variants)), columns=metrics["shown_prompts"],
            caption=caption + " · images: first seed",
            title=f"ActErase on {metrics['concept']}: patched module (rows), target then preservation prompts",
        )  # fmt: skip
    return figures


PIXEL_LABEL = "mean |pixel change| vs no patch (0-255)"


def _density_panel(ax: Any, modules: dict[str, Any], order: list[str], title: str) -> None:
    labels = [modules[m]["label"] for m in order]
    ax.bar(range(len(order)), [modules[m]["density"] for m in order],
           color=[PALETTE[i % len(PALETTE)] for i in range(len(order))])  # fmt: skip
    for i, m in enumerate(order):
        layer_densities = [layer["density"] for layer in modules[m]["layers"]]
        ax.scatter([i] * len(layer_densities), layer_densities, color="0.2", s=6, zorder=3,
                   label="per layer" if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(order)), [label.replace(" ", "\n", 1) for label in labels])
    ax.set_ylabel("fraction of entries masked")
    ax.set_title(title, loc="left")
    ax.set_ylim(0, 1)
    ax.grid(axis="x", visible=False)
    ax.legend(frameon=False, fontsize=6)


def _draw_modules_pixels(result: Any) -> dict[str, Any]:
    """Off pocket (no oracle): pixel change per prompt set, selectivity, mask density per module."""
    metrics = result.metrics
    order = metrics["order"]
    modules = metrics["modules"]
    labels = [modules[m]["label"] for m in order]
    figure = new_figure(9.0, 3.2)
    axes = figure.subplots(1, 3, width_ratios=[2.0, 1.2, 1.2])
    _bars(axes[0], ["target prompts", "preservation prompts"],
          {modules[m]["label"]: [modules[m]["pixel_change"]["target"], modules[m]["pixel_change"]["preservation"]]
           for m in order}, ylabel=PIXEL_LABEL, values=True,
          title=f"(a) erasing {metrics['concept']!r}: pixel change")  # fmt: skip
    axes[0].set_xticks(range(2), ["target prompts", "preservation prompts"], rotation=0, ha="center")
    axes[0].set_ylim(0, 1.2 * max([1e-3] + [v for m in order for v in modules[m]["pixel_change"].values()]))
    selectivity = [modules[m]["selectivity"] for m in order]
    heights = [np.nan if v is None else v for v in selectivity]
    bars = axes[1].bar(range(len(order)), heights, color=[PALETTE[i % len(PALETTE)] for i in range(len(order))])
    for bar, value in zip(bars, selectivity):
        axes[1].text(bar.get_x() + bar.get_width() / 2, 0 if value is None else value,
                     "n/a" if value is None else f"{value:.2f}", ha="center", va="bottom", fontsize=6)  # fmt: skip
    axes[1].axhline(1.0, color="0.5", linestyle=":", linewidth=0.9)
    axes[1].set_xticks(range(len(order)), [label.replace(" ", "\n", 1) for label in labels])
    axes[1].set_ylabel("target change / preservation change")
    axes[1].set_title("(b) selectivity", loc="left")
    axes[1].set_ylim(0, 1.15 * max([1.0] + [v for v in selectivity if v is not None]))
    axes[1].grid(axis="x", visible=False)
    _density_panel(axes[2], modules, order, "(c) mask density")
    caption = caption_text(result.config, ("concept", "ffn_score", "tau", "agreement", "branch", "collect_steps",
                                           "prompts_per_set", "seeds", "steps"),
                           "ActErase module comparison, pixel measures (no oracle off pocket)")  # fmt: skip
    add_caption(figure, caption)
    figures = {"patch_modules": figure}
    if result.images:
        figures["images"] = image_grid(
            _ordered(result.images, ["no patch", *labels]), columns=metrics["shown_prompts"],
            caption=caption + " · images: first seed",
            title=f"ActErase on {metrics['concept']!r}: patched module (rows), target then preservation prompts",
        )  # fmt: skip
    return figures


# -- multi_concept ---------------------------------------------------------------------------
@styled
def draw_multi(result: Any) -> dict[str, Any]:
    """(a) each prompt set's rate of its own value under 0..n merged concepts (erased cells boxed);
    (b) the means against n; (c) merged mask density against n; and the images."""
    metrics = result.metrics
    if metrics.get("measure") == "pixel_change":
        return _draw_multi_pixels(result)
    rows = metrics["rows"]
    names = metrics["set_names"]
    figure = new_figure(10.5, max(3.3, 1.6 + 0.32 * len(rows)))
    axes = figure.subplots(1, 3, width_ratios=[1.6, 1.1, 0.9])
    matrix = [[row["sets"][name]["rate"] for name in names] for row in rows]
    heatmap(axes[0], matrix, xlabels=[n.replace("other:", "other: ") for n in names],
            ylabels=[row["variant"] for row in rows], vmin=0.0, vmax=1.0, annotate=True, cmap="viridis",
            title="(a) rate of each set's own value", colorbar="fraction of images")  # fmt: skip
    _box_erased(axes[0], rows, names)
    rows = [row for row in rows if row.get("kind") != "single"]
    ns = [row["n"] for row in rows]
    series = {
        "erased concepts (rate)": [row["erased_rate"] for row in rows],
        "listed, not yet erased (rate)": [row["rest_rate"] for row in rows],
        "never-erased values (accuracy)": [row["others_accuracy"] for row in rows],
        "other attributes kept": [row["kept"] for row in rows],
    }
    series = _present(series)
    curves(axes[1], ns, series, xlabel="number of merged concepts n", ylabel="fraction of images (oracle)",
           title="(b) erasure and preservation", ylim=(-0.02, 1.05))
    axes[1].legend(frameon=False, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2)
    axes[1].set_xticks(ns)
    _merged_density(axes[2], metrics["merged"], "(c) mask density")
    caption = caption_text(result.config, ("concepts", "layers", "tau", "agreement", "collect_steps",
                                           "prompts_per_concept", "seeds", "steps"), "ActErase Alg. 2 merge")
    add_caption(figure, caption)
    return _with_multi_images(result, {"multi_concept": figure}, caption)


def _draw_multi_pixels(result: Any) -> dict[str, Any]:
    """Off pocket (no oracle): (a) each set's pixel change under every variant (erased cells boxed); (b) the
    means against n; (c) selectivity against n; (d) merged mask density against n; and the images."""
    metrics = result.metrics
    rows = metrics["rows"]
    names = metrics["set_names"]
    label = "mean |pixel change| vs no erasure (0-255)"
    figure = new_figure(12.0, max(3.3, 1.6 + 0.32 * len(rows)))
    axes = figure.subplots(1, 4, width_ratios=[1.5, 1.1, 0.9, 0.9])
    matrix = [[row["sets"][name]["pixel_change"] for name in names] for row in rows]
    top = max([1e-3] + [v for line in matrix for v in line])
    heatmap(axes[0], matrix, xlabels=names, ylabels=[row["variant"] for row in rows], vmin=0.0, vmax=top,
            cmap="viridis", title="(a) mean |pixel change| per prompt set", colorbar="0-255")  # fmt: skip
    for (i, j), value in np.ndenumerate(np.asarray(matrix)):
        axes[0].text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=5,
                     color="white" if value < 0.5 * top else "black")  # fmt: skip
    _box_erased(axes[0], rows, names)
    rows = [row for row in rows if row.get("kind") != "single"]
    ns = [row["n"] for row in rows]
    series = {
        "erased concepts' prompts": [row["erased_change"] for row in rows],
        "listed, not yet erased": [row["rest_change"] for row in rows],
        "preservation prompts": [row["preservation_change"] for row in rows],
    }
    series = _present(series)
    curves(axes[1], ns, series, xlabel="number of merged concepts n", ylabel=label, title="(b) change against n")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(frameon=False, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2)
    axes[1].set_xticks(ns)
    merged_rows = rows[1:]
    curves(axes[2], [row["n"] for row in merged_rows],
           {"selectivity": [np.nan if row["selectivity"] is None else row["selectivity"] for row in merged_rows]},
           xlabel="number of merged concepts n", ylabel="erased-prompt change / preservation change",
           title="(c) selectivity")  # fmt: skip
    axes[2].axhline(1.0, color="0.5", linestyle=":", linewidth=0.9)
    axes[2].set_ylim(0, 1.15 * max([1.0] + [row["selectivity"] or 0.0 for row in merged_rows]))
    axes[2].set_xticks([row["n"] for row in merged_rows])
    _merged_density(axes[3], metrics["merged"], "(d) mask density")
    caption = caption_text(result.config, ("concepts", "layers", "tau", "agreement", "collect_steps",
                                           "prompts_per_concept", "seeds", "steps"),
                           "ActErase Alg. 2 merge, pixel measures (no oracle off pocket)")  # fmt: skip
    add_caption(figure, caption)
    return _with_multi_images(result, {"multi_concept": figure}, caption)


def _box_erased(ax: Any, rows: list[dict[str, Any]], names: list[str]) -> None:
    """Outline the heat-map cells of the sets each row erased."""
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            if row["sets"][name]["erased"]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#D55E00", linewidth=1.6))
    ax.set_xlabel("prompt set (boxed: erased in this row)")


def _present(series: dict[str, list[Any]]) -> dict[str, list[float]]:
    """The series that have any value, with missing values as NaN (gaps in the curve)."""
    return {k: [np.nan if v is None else v for v in vs] for k, vs in series.items() if any(v is not None for v in vs)}


def _merged_density(ax: Any, merged: list[dict[str, Any]], title: str) -> None:
    """Density of the merged mask (Eq. 7) against n, next to the sum of the single masks' densities."""
    ns = [m["n"] for m in merged]
    curves(ax, ns, {"merged mask (Eq. 7)": [m["density"] for m in merged],
                    "sum of single masks": [m["sum_of_single_densities"] for m in merged]},
           xlabel="number of merged concepts n", ylabel="fraction of entries masked", title=title,
           styles={"sum of single masks": {"linestyle": "--"}})  # fmt: skip
    ax.set_xticks(ns)


def _with_multi_images(result: Any, figures: dict[str, Any], caption: str) -> dict[str, Any]:
    """``figures`` plus the grid of each variant's images, when the result has images."""
    if result.images:
        figures["images"] = image_grid(
            _ordered(result.images, [row["variant"] for row in result.metrics["rows"]]),
            columns=result.metrics["shown_prompts"], caption=caption + " · images: first prompt, first seed",
            title="ActErase merge of the first n concepts (rows) on each set's first prompt",
        )  # fmt: skip
    return figures
