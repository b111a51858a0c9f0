"""TRCE's diagnostic figures: the [EoT] similarity matrix (Fig. 7b) and the [EoT] zeroing sweep (Figs. 2, 7a)."""

from __future__ import annotations

from typing import Any

from circuits.analysis.style import add_caption, caption_text, heatmap, new_figure, styled


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
