"""Paper-style figures drawn from experiment results (never from models), in one consistent style.

:mod:`circuits.analysis.style` holds the shared pieces (image grids with labelled rows and prompts
under the images, curves, heat maps, captions from a config); one module per paper topic turns a
result's metrics and images into the figures of that paper. Figures are ``matplotlib.figure.Figure``
objects built without pyplot, so drawing never opens a window or leaks global state; save them with
:func:`circuits.experiments.save_figure` (PNG + PDF).
"""

from circuits.analysis.style import (
    PALETTE,
    STYLE,
    add_caption,
    caption_text,
    curves,
    heatmap,
    image_grid,
    new_figure,
    styled,
)

__all__ = ["PALETTE", "STYLE", "add_caption", "caption_text", "curves", "heatmap", "image_grid", "new_figure", "styled"]
