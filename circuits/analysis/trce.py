"""TRCE's diagnostic figures: the [EoT] similarity matrix (Fig. 7b) and the [EoT] zeroing sweep (Figs. 2, 7a)."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from circuits.analysis.style import PALETTE, add_caption, bare, caption_text, heatmap, new_figure, styled


@styled
def similarity_figure(result: Any) -> dict[str, Any]:
    """One heat map per prompt: cosine similarity of every pair of token embeddings (Fig. 7b)."""
    prompts = result.metrics["prompts"]
    figure = new_figure(3.2 * len(prompts), 3.4)
    axes = figure.subplots(1, len(prompts), squeeze=False)[0]
    for ax, entry in zip(axes, prompts):
        shown = entry["shown"]
        labels = [token.replace("</w>", "").replace("<|startoftext|>", "[SoT]").replace("<|endoftext|>", "[EoT]")
                  for token in entry["tokens"][:shown]]  # fmt: skip
        matrix = [row[:shown] for row in entry["similarity"][:shown]]
        heatmap(ax, matrix, xlabels=labels, ylabels=labels, vmin=-0.2, vmax=1.0, title=entry["prompt"],
                colorbar="cosine similarity" if ax is axes[-1] else None)  # fmt: skip
    add_caption(figure, caption_text(result.config, ("show_positions",), "token embeddings of the text encoder"))
    return {"eot_similarity": figure}


#: line styles of the eot_zeroing curves: one per mode, one colour per control
_MODE_STYLE = {"zero": "-", "mask": "--"}
_CONTROL_COLOUR = {"words": PALETTE[2], "SoT": PALETTE[3]}


@styled
def draw_eot_zeroing(result: Any) -> dict[str, Any]:
    """TRCE Figs. 2 / 7a: the oracle's rate of each named attribute against k (zeroed and masked, controls as
    reference lines; the mean pixel change off pocket), and the image grid (rows = variants)."""
    metrics, config = result.metrics, result.config
    variants, grid, modes = metrics["variants"], metrics["grid"], metrics["modes"]
    on_pocket = variants["plain"]["kept"] is not None
    x = list(range(len(grid)))
    first = modes[0]
    names = ["plain"] + [f"{first} k={p['label']}" for p in grid[1:]]
    removed = [variants[name]["attention_removed"] for name in names]
    ticks = [f"{p['label']}\n{100 * r:.0f}%" for p, r in zip(grid, removed)]
    if on_pocket:
        plain = variants["plain"]["kept"]
        panels = ["all"] + [a for a in metrics["attributes"] if plain.get(a) is not None]
        titles = {"all": "every named attribute", "colour": "colour", "shape": "shape", "texture": "texture",
                  "background": "background"}  # fmt: skip
    else:
        panels, titles = ["pixels"], {"pixels": "mean pixel change vs plain"}

    def value(name: str, panel: str) -> float:
        entry = variants[name]
        if panel == "pixels":
            return entry["pixel_difference"]
        got = entry["kept"][panel]
        return float("nan") if got is None else got

    figure = new_figure(1.9 + 2.7 * len(panels), 3.1)
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=on_pocket)[0]
    handles: dict[str, Any] = {}
    for ax, panel in zip(axes, panels):
        for mode in modes:
            ys = [value("plain" if i == 0 else f"{mode} k={p['label']}", panel) for i, p in enumerate(grid)]
            (line,) = ax.plot(x, ys, _MODE_STYLE[mode], marker="o", color=PALETTE[0] if mode == "zero" else PALETTE[1])
            handles[f"[EoT] {mode}ed (last k)"] = line
        for mode in modes:
            for control, colour in _CONTROL_COLOUR.items():
                name = f"{mode} {control}"
                if name in variants:
                    # words drawn wide and pale under the thin SoT line: both stay visible where they coincide
                    width, alpha = (3.0, 0.45) if control == "words" else (1.0, 1.0)
                    line = ax.axhline(value(name, panel), color=colour, alpha=alpha, linestyle=_MODE_STYLE[mode],
                                      linewidth=width)  # fmt: skip
                    handles[f"{control} {mode}ed"] = line
        if panel != "pixels" and metrics.get("floor") and metrics["floor"].get(panel) is not None:
            handles["no prompt (chance)"] = ax.axhline(metrics["floor"][panel], color="0.55", linestyle=":",
                                                       linewidth=1.2)  # fmt: skip
        ax.set_xticks(x, ticks, fontsize=5.5)
        ax.set_title(titles[panel])
        ax.set_xlabel("k [EoT]s zeroed (share of attention)")
        if panel == "pixels":
            ax.set_ylabel("mean |pixel change| (0-255)")
        elif ax is axes[0]:
            ax.set_ylabel("rate the oracle reads the prompt's value")
            ax.set_ylim(-0.03, 1.03)
    figure.legend(list(handles.values()), list(handles), loc="outside right upper", frameon=False)
    k_range = sorted(set(metrics["K"]))
    add_caption(figure, caption_text(
        config, ("steps", "seeds", "guidance_scale", "branch", "site"),
        f"TRCE Figs. 2/7a on {result.model}: last k of each prompt's K = {k_range[0]}-{k_range[-1]} [EoT] "
        f"positions zeroed; K-n: all but the first n; {len(metrics['prompts'])} prompts",
    ))  # fmt: skip
    figures = {"eot_zeroing": figure}
    if result.images:
        figures["eot_zeroing_images"] = _zeroing_grid(result)
    return figures


def _zeroing_grid(result: Any) -> Any:
    """Rows = k (then the controls), one block of prompts per mode (zeroed | masked), prompts under the images."""
    metrics, images = result.metrics, result.images
    grid, modes = metrics["grid"], metrics["modes"]
    rows: list[tuple[str, dict[str, str]]] = [("k=0 (plain)", {mode: "plain" for mode in modes})]
    rows += [(f"k={p['label']}", {mode: f"{mode} k={p['label']}" for mode in modes}) for p in grid[1:]]
    rows += [(f"{control}", {mode: f"{mode} {control}" for mode in modes})
             for control in ("words", "SoT") if f"{modes[0]} {control}" in images]  # fmt: skip
    columns = metrics["shown_prompts"]
    cell = 0.55
    figure = new_figure(0.9 + len(modes) * (cell * len(columns) + 0.15), 0.8 + cell * len(rows))
    blocks = figure.subfigures(1, len(modes), squeeze=False, wspace=0.02)[0]
    for b, (block, mode) in enumerate(zip(blocks, modes)):
        block.suptitle(f"[EoT]s {mode}ed (last k of K); controls: words, SoT {mode}ed", fontsize=8)
        axes = block.subplots(len(rows), len(columns), squeeze=False, gridspec_kw={"wspace": 0.03, "hspace": 0.03})
        for i, (label, names) in enumerate(rows):
            for j in range(len(columns)):
                ax = axes[i][j]
                bare(ax)
                row = images.get(names[mode], [])
                if j < len(row):
                    ax.imshow(np.asarray(row[j]), interpolation="nearest")
                if j == 0 and b == 0:
                    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
                if i == len(rows) - 1:
                    ax.set_xlabel("\n".join(textwrap.wrap(columns[j], 13)), fontsize=5.5)
    add_caption(figure, caption_text(result.config, ("steps", "branch"), f"{result.model}: rows k = the last k of "
                                     f"each prompt's K [EoT]s (K-n: all but the first n); seed {metrics['seeds'][0]}"))
    return figure
