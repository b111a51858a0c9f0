"""The shared figure style: image grids, curves, heat maps and captions, the same everywhere.

Every figure is a ``matplotlib.figure.Figure`` made by :func:`new_figure` (no pyplot: nothing global
is touched, nothing is left open). Conventions: rows of images labelled on the left, prompts under
the images, axes labelled with units, legends outside the data, and a caption built from the
config (:func:`caption_text`) under every figure, so a saved PNG says how it was made.
"""

from __future__ import annotations

import dataclasses
import functools
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import numpy as np
from matplotlib.figure import Figure

STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable in the PDF
}
#: one colour per series, colour-blind safe (Okabe-Ito), in a fixed order
P = ParamSpec("P")
R = TypeVar("R")
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Decorate a drawing function: everything it creates uses :data:`STYLE` (matplotlib reads rc
    settings when an artist is made, so the whole drawing runs inside the style's context)."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches (call it inside a :func:`styled` function)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    figure.set_facecolor("white")
    return figure


def caption_text(config: Any, keys: Sequence[str] | None = None, extra: str = "") -> str:
    """``"steps=25 · seeds=(0, 1) · guidance_scale=7.5"`` from a config dataclass (all fields, or ``keys``)."""
    if config is None:
        return extra
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    shown = [k for k in (keys or values) if k in values]
    text = " · ".join(f"{k}={_compact(values[k])}" for k in shown)
    return f"{extra} — {text}" if extra and text else (extra or text)


def add_caption(figure: Figure, text: str, width: int = 140) -> None:
    if text:
        figure.supxlabel("\n".join(textwrap.wrap(text, width)), fontsize=6, color="0.35")


@styled
def bare(ax: Any) -> None:
    """No ticks, grid or frame: an axes that only shows an image."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def image_grid(
    rows: Mapping[str, Sequence[Any]],
    *,
    columns: Sequence[str] | None = None,
    title: str = "",
    caption: str = "",
    cell: float = 0.9,
    max_columns: int | None = None,
) -> Figure:
    """Rows of images with their label on the left and ``columns`` (prompts) under the last row."""
    labels = list(rows)
    n_cols = max(len(images) for images in rows.values())
    if max_columns is not None:
        n_cols = min(n_cols, max_columns)
    height = 0.45 + cell * len(labels) + (0.35 if columns else 0) + (0.3 if caption else 0)
    figure = new_figure(0.9 + cell * n_cols, height)
    axes = figure.subplots(len(labels), n_cols, squeeze=False, gridspec_kw={"wspace": 0.02, "hspace": 0.02})
    for i, label in enumerate(labels):
        for j in range(n_cols):
            ax = axes[i][j]
            bare(ax)
            images = rows[label]
            if j < len(images):
                ax.imshow(np.asarray(images[j]), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            if columns is not None and i == len(labels) - 1 and j < len(columns):
                ax.set_xlabel("\n".join(textwrap.wrap(columns[j], 14)), fontsize=6)
    if title:
        figure.suptitle(title)
    add_caption(figure, caption)
    return figure


def curves(
    ax: Any,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    ylim: tuple[float, float] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """One line per series on ``ax``, colours from the shared palette, legend outside the lines."""
    for index, (label, values) in enumerate(series.items()):
        kwargs = {"color": PALETTE[index % len(PALETTE)], "marker": "o"}
        kwargs.update((styles or {}).get(label, {}))
        ax.plot(list(x), list(values), label=label, **kwargs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if len(series) > 1:
        ax.legend(loc="best", frameon=False)


def heatmap(
    ax: Any,
    matrix: Any,
    *,
    xlabels: Sequence[str] | None = None,
    ylabels: Sequence[str] | None = None,
    title: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: str | None = None,
    annotate: bool = False,
) -> Any:
    """A labelled matrix on ``ax`` (token labels rotated), optionally with a colour bar and values."""
    data = np.asarray(matrix, dtype=float)
    image = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
    ax.grid(False)
    if xlabels is not None:
        ax.set_xticks(range(len(xlabels)), list(xlabels), rotation=60, ha="right")
    if ylabels is not None:
        ax.set_yticks(range(len(ylabels)), list(ylabels))
    if title:
        ax.set_title(title)
    if annotate:
        for (i, j), value in np.ndenumerate(data):
            shade = "white" if value < 0.5 else "black"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5, color=shade)
    if colorbar is not None:
        ax.figure.colorbar(image, ax=ax, label=colorbar, shrink=0.8)
    return image


def _compact(value: Any) -> str:
    if isinstance(value, tuple) and len(value) > 4:
        return f"({', '.join(repr(v) for v in value[:3])}, ... {len(value)} items)"
    return repr(value) if isinstance(value, str) else str(value)
