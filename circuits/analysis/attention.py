"""Cross-attention heat maps drawn as DAAM draws them, and the numbers behind them (``attention_maps``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from circuits.analysis.style import PALETTE, add_caption, bare, caption_text, new_figure, styled


def _overlay(ax: Any, image: Any, heat: np.ndarray | None, vmin: float, vmax: float, mask: Any = None) -> None:
    """``image`` with ``heat`` stretched over it (jet, alpha 0.5, as DAAM) and the mask's outline."""
    picture = np.asarray(image)
    height, width = picture.shape[:2]
    ax.imshow(picture, interpolation="nearest")
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax, extent=extent, interpolation="bilinear")
    if mask is not None:
        mask = np.asarray(mask, dtype=float)  # row 0 at the top, like the image; pixel centres scaled to it
        xs = (np.arange(mask.shape[1]) + 0.5) * width / mask.shape[1] - 0.5
        ys = (np.arange(mask.shape[0]) + 0.5) * height / mask.shape[0] - 0.5
        ax.contour(xs, ys, mask, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    bare(ax)


@styled
def draw_attention_maps(result: Any) -> dict[str, Any]:
    """A row per prompt: the image (object mask outlined), then each token's map over it with its share of the
    attention and its correlation with the mask; and the share / mask correlation of every key position."""
    metrics, config = result.metrics, result.config
    entries = metrics["prompts"]
    images = result.images.get("images", [])
    columns = 1 + max(len(e["tokens"]) for e in entries)
    figure = new_figure(1.1 + 0.82 * columns, 0.45 + 1.2 * len(entries))
    axes = figure.subplots(len(entries), columns, squeeze=False, gridspec_kw={"wspace": 0.02, "hspace": 0.02})
    normalize = getattr(config, "normalize", "token")
    for row, entry in enumerate(entries):
        image = images[row] if row < len(images) else np.zeros((metrics["size"], metrics["size"], 3), np.uint8)
        maps = [np.asarray(t["map"]) for t in entry["tokens"]]
        low = min(float(m.min()) for m in maps)
        high = max(float(m.max()) for m in maps)
        _overlay(axes[row][0], image, None, 0, 1, entry["mask"])
        axes[row][0].set_ylabel("\n".join(_wrap(entry["prompt"], 18)), rotation=0, ha="right", va="center",
                                fontsize=6.5)  # fmt: skip
        axes[row][0].set_title("image" + (" (mask)" if entry["mask"] is not None else ""), fontsize=6.5)
        for col, (token, heat) in enumerate(zip(entry["tokens"], maps), start=1):
            vmin, vmax = (float(heat.min()), float(heat.max())) if normalize == "token" else (low, high)
            if vmax <= vmin:
                vmax = vmin + 1e-12
            ax = axes[row][col]
            _overlay(ax, image, heat, vmin, vmax)
            ax.set_title(token["label"], fontsize=6.5)
            text = f"share {token['share']:.3f}"
            if token["corr_mask"] is not None:
                text += f"\nr(mask) {token['corr_mask']:+.2f}"
            ax.set_xlabel(text, fontsize=5.5)
        for col in range(1 + len(entry["tokens"]), columns):
            axes[row][col].set_visible(False)
    scale = "each map min-max normalised (DAAM)" if normalize == "token" else "one colour scale per prompt"
    add_caption(figure, caption_text(config, ("seed", "steps", "layers", "upsample"),
                                     f"{result.model}: cross-attention, conditional branch, mean over heads, "
                                     f"{len(metrics['layers'])} layers and every step; {scale}"))  # fmt: skip
    return {"attention_maps": figure, "attention_maps_positions": _positions(result)}


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


def _positions(result: Any) -> Any:
    """Per key position: the share of attention it gets and (pocket) its map's correlation with the object mask."""
    metrics = result.metrics
    entries = metrics["prompts"]
    on_pocket = entries[0]["position_corr_mask"] is not None
    figure = new_figure(6.4, 2.4 * (2 if on_pocket else 1) + 0.4)
    axes = figure.subplots(2 if on_pocket else 1, 1, squeeze=False, sharex=True)[:, 0]
    keys = entries[0]["keys"]
    x = np.arange(keys)
    for index, entry in enumerate(entries):
        colour = PALETTE[index % len(PALETTE)]
        first = entry["first_eot"]
        axes[0].plot(x, entry["position_share"], color=colour, marker=".", label=entry["prompt"])
        axes[0].plot([first], [entry["position_share"][first]], marker="s", color=colour, markersize=6)
        if on_pocket:
            corr = [np.nan if c is None else c for c in entry["position_corr_mask"]]
            axes[1].plot(x, corr, color=colour, marker=".")
            axes[1].plot([first], [corr[first]], marker="s", color=colour, markersize=6)
    axes[0].axhline(1 / keys, color="0.5", linestyle=":", linewidth=1.0, label=f"uniform (1/{keys})")
    axes[0].set_ylabel("share of attention")
    axes[0].legend(loc="upper right", frameon=False, fontsize=6)
    if on_pocket:
        axes[1].axhline(0, color="0.5", linewidth=0.8)
        axes[1].set_ylabel("r(map, object mask)")
        axes[1].set_ylim(-1, 1)
    axes[-1].set_xlabel("key position (0 = SoT; square = first [EoT]; after it: [EoT] padding)")
    add_caption(figure, caption_text(result.config, ("seed", "steps"), f"{result.model}: every key position's map"))
    return figure
