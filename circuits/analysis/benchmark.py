"""The erasure methods compared: the markdown table and the paper-style comparison figure.

Rows are dicts as ``benchmarks/methods_table.py`` writes them to JSON and the ``erasure_benchmark``
experiment keeps in ``metrics["rows"]``: ``concept``, ``method`` (the table label), ``fit_seconds``
and the numbers of :meth:`circuits.pocket.report.ErasureReport.summary` (``target_before``,
``target_after``, ``synonyms_after``, ``unnamed_rate``, ``kept_*``, ``preservation_*``,
``preservation_ratio``, ``sampling_seconds``). :func:`markdown_table` prints them (the table in
``docs/methods.md``); :func:`benchmark_figure` draws erased rate against preservation per method and
concept with the goal region shaded, next to the same table.

Off pocket there is no oracle (``metrics["measure"] == "pixel_change"``): rows hold, per set
(``target``, ``synonyms``, ``preservation``), ``<set>_change`` (mean absolute pixel change, 0-255,
against the unedited images of the same noise) and ``<set>_latent_cos`` (cosine of the final
latents), and ``selectivity`` (target / preservation change). :func:`change_table` prints them and
:func:`benchmark_figure` draws target change against preservation change, with no goal region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from circuits.analysis.style import PALETTE, add_caption, caption_text, image_grid, new_figure, styled

#: the goal of the method issues: erased rate <= 0.2 on target and synonym prompts, preservation ratio >= 0.9
GOAL_ERASED, GOAL_PRESERVATION = 0.2, 0.9
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def meets_goal(row: Mapping[str, Any], erased: float = GOAL_ERASED, preservation: float = GOAL_PRESERVATION) -> bool:
    """Target (and synonym, where there are any) rate <= ``erased`` and preservation ratio >= ``preservation``."""
    rates = [row["target_after"]] + ([row["synonyms_after"]] if row.get("synonyms_after") is not None else [])
    return all(r is not None and r <= erased + 1e-9 for r in rates) and row["preservation_ratio"] >= preservation - 1e-9


def markdown_table(rows: Sequence[Mapping[str, Any]], header: bool = True, *, timing: bool = False,
                   goal: tuple[float, float] | None = None) -> str:
    """The methods table in markdown; ``timing`` adds the sampling time (and its ratio to plain sampling),
    ``goal=(erased, preservation)`` a column saying which rows meet it."""
    unnamed = {r["concept"]: r["unnamed_rate"] for r in rows if r.get("unnamed_rate") is not None}
    columns = ["concept", "method", "target rate before → after", "synonym rate before → after", "rate unnamed",
               "kept (other attributes)", "preservation before → after (ratio)", "fit s"]
    if timing:
        columns.append("sampling s (× plain)")
    if goal is not None:
        columns.append("goal")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] if header else []
    for r in rows:
        cells = [
            r["concept"], r["method"], f"{fmt(r['target_before'])} → **{fmt(r['target_after'])}**",
            f"{fmt(r['synonyms_before'])} → **{fmt(r['synonyms_after'])}**", fmt(unnamed.get(r["concept"])),
            f"{fmt(r['kept_before'])} → {fmt(r['kept_after'])}",
            f"{fmt(r['preservation_before'])} → **{fmt(r['preservation_after'])}** ({r['preservation_ratio']:.2f})",
            f"{r['fit_seconds']:.2f}",
        ]  # fmt: skip
        if timing:
            ratio = r.get("sampling_ratio")
            cells.append(f"{r['sampling_seconds']:.1f}" + (f" ({ratio:.2f}×)" if ratio is not None else ""))
        if goal is not None:
            cells.append("met" if meets_goal(r, *goal) else "missed")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def change_table(rows: Sequence[Mapping[str, Any]], header: bool = True, *, timing: bool = False) -> str:
    """The off-pocket table in markdown: pixel change per set, selectivity, latent cosine, fit (and sampling) time."""
    columns = ["concept", "method", "target change", "synonym change", "preservation change",
               "selectivity (target / preservation)", "latent cos (target / preservation)", "fit s"]  # fmt: skip
    if timing:
        columns.append("sampling s (× plain)")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] if header else []
    for r in rows:
        cells = [
            r["concept"], r["method"], f"**{_px(r['target_change'])}**", _px(r.get("synonyms_change")),
            f"**{_px(r['preservation_change'])}**", fmt(r.get("selectivity")),
            f"{_cos(r['target_latent_cos'])} / {_cos(r['preservation_latent_cos'])}", f"{r['fit_seconds']:.2f}",
        ]  # fmt: skip
        if timing:
            ratio = r.get("sampling_ratio")
            cells.append(f"{r['sampling_seconds']:.1f}" + (f" ({ratio:.2f}×)" if ratio is not None else ""))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _short(model: str) -> str:
    """A model folder's last part (captions stay short)."""
    return Path(model).name or model if model and model != "pocket" else (model or "?")


def _px(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _cos(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _scatter(ax: Any, rows: Sequence[Mapping[str, Any]], goal: tuple[float, float]) -> None:
    erased, preservation = goal
    methods = list(dict.fromkeys(r["method"] for r in rows))
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    ratios = [r["preservation_ratio"] for r in rows]
    top = max(1.1, max(ratios, default=1.0) + 0.05)
    goal_patch = ax.fill_between([0, erased], preservation, top, color="#009E73", alpha=0.15, lw=0,
                                 label=f"goal: erased ≤ {erased:g}, preservation ≥ {preservation:g}")
    for c_index, concept in enumerate(concepts):
        marker = MARKERS[c_index % len(MARKERS)]
        first = next(r for r in rows if r["concept"] == concept)
        if first.get("target_before") is not None:
            ax.plot([first["target_before"]], [1.0], marker=marker, color="0.5", ms=7, ls="none", mfc="white",
                    label=f"{concept}: no erasure")
        if first.get("unnamed_rate") is not None:
            ax.axvline(first["unnamed_rate"], color="0.6", ls=":", lw=1)
            ax.text(first["unnamed_rate"], 0.02, f" {concept} unnamed", rotation=90, va="bottom", ha="right",
                    fontsize=6, color="0.45", transform=ax.get_xaxis_transform())
        _points(ax, [r for r in rows if r["concept"] == concept], methods, marker,
                "target_after", "synonyms_after", "preservation_ratio")
    handles = _handles(ax, methods, concepts, any(r.get("synonyms_after") is not None for r in rows))
    handles.append(ax.plot([], [], marker="o", color="0.5", mfc="white", ls="none", label="no erasure")[0])
    handles.append(goal_patch)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=6)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(0, top)
    ax.set_xlabel("erased-concept rate after erasure (filled: target prompts)")
    ax.set_ylabel("preservation (accuracy after / before)")
    ax.set_title("erasure against preservation")


def _table(ax: Any, rows: Sequence[Mapping[str, Any]], goal: tuple[float, float]) -> None:
    ax.axis("off")
    columns = ["concept", "method", "target", "synonyms", "preservation (ratio)", "fit s", "sampling s", "goal"]
    cells, colours = [], []
    for r in rows:
        ok = meets_goal(r, *goal)
        cells.append([
            r["concept"], r["method"], f"{fmt(r['target_before'])} → {fmt(r['target_after'])}",
            "–" if r.get("synonyms_after") is None else f"{fmt(r['synonyms_before'])} → {fmt(r['synonyms_after'])}",
            f"{fmt(r['preservation_before'])} → {fmt(r['preservation_after'])} ({r['preservation_ratio']:.2f})",
            f"{r['fit_seconds']:.1f}", f"{r.get('sampling_seconds', float('nan')):.1f}", "met" if ok else "missed",
        ])  # fmt: skip
        colours.append(["#e5f5ef" if ok else "white"] * len(columns))
    table = ax.table(cellText=cells, colLabels=columns, cellColours=colours, loc="upper center", cellLoc="center",
                     colLoc="center")  # fmt: skip
    _style_table(table, len(columns))
    ax.set_title("erased rate before → after, preservation accuracy before → after")


def _points(ax: Any, rows: Sequence[Mapping[str, Any]], methods: list[str], marker: str, x: str, x_synonyms: str,
            y: str) -> None:
    """One filled marker per row at (``x``, ``y``), coloured by method; a hollow one at the synonym prompts' ``x``."""
    for row in rows:
        colour = PALETTE[methods.index(row["method"]) % len(PALETTE)]
        ax.plot([row[x]], [row[y]], marker=marker, color=colour, ms=7, ls="none", mec="black", mew=0.5)
        if row.get(x_synonyms) is not None:
            ax.plot([row[x_synonyms]], [row[y]], marker=marker, color=colour, ms=5, ls="none", mfc="none")
            ax.plot([row[x], row[x_synonyms]], [row[y], row[y]], color=colour, lw=0.8, alpha=0.6)


def _handles(ax: Any, methods: list[str], concepts: list[str], synonyms: bool) -> list[Any]:
    """Legend entries: a colour per method, a marker per concept, and the hollow synonym marker if drawn."""
    handles = [ax.plot([], [], marker="o", color=PALETTE[i % len(PALETTE)], ls="none", mec="black", mew=0.5,
                       label=m)[0] for i, m in enumerate(methods)]  # fmt: skip
    handles += [ax.plot([], [], marker=MARKERS[i % len(MARKERS)], color="0.3", ls="none", label=f"concept: {c}")[0]
                for i, c in enumerate(concepts)]  # fmt: skip
    if synonyms:
        handles.append(ax.plot([], [], marker="o", color="0.3", mfc="none", ls="none", label="synonym prompts")[0])
    return handles


def _style_table(table: Any, columns: int) -> None:
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.auto_set_column_width(list(range(columns)))
    table.scale(1.0, 1.35)
    for (i, _), cell in table.get_celld().items():
        cell.set_edgecolor("0.8")
        if i == 0:
            cell.set_text_props(weight="bold")


def _change_scatter(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    values = [v for r in rows for v in (r["target_change"], r["preservation_change"], r.get("synonyms_change"))
              if v is not None]  # fmt: skip
    top = max(1.0, max(values, default=1.0)) * 1.1
    ax.plot([0, top], [0, top], color="0.6", ls=":", lw=1, label="selectivity 1")
    for c_index, concept in enumerate(concepts):
        marker = MARKERS[c_index % len(MARKERS)]
        _points(ax, [r for r in rows if r["concept"] == concept], methods, marker,
                "target_change", "synonyms_change", "preservation_change")
    handles = _handles(ax, methods, concepts, any(r.get("synonyms_change") is not None for r in rows))
    handles.append(ax.get_lines()[0])
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=6)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("|pixel change| on target prompts (0-255)")
    ax.set_ylabel("|pixel change| on preservation prompts")
    ax.set_title("change to the concept vs to the rest")


def _change_table_ax(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    ax.axis("off")
    columns = ["concept", "method", "target", "synonyms", "preservation", "selectivity", "latent cos t / p", "fit s",
               "sampling s"]  # fmt: skip
    cells = [[
        r["concept"], r["method"], _px(r["target_change"]), _px(r.get("synonyms_change")),
        _px(r["preservation_change"]), fmt(r.get("selectivity")),
        f"{_cos(r['target_latent_cos'])} / {_cos(r['preservation_latent_cos'])}", f"{r['fit_seconds']:.1f}",
        f"{r.get('sampling_seconds', float('nan')):.1f}",
    ] for r in rows]  # fmt: skip
    table = ax.table(cellText=cells, colLabels=columns, loc="upper center", cellLoc="center", colLoc="center")
    _style_table(table, len(columns))
    ax.set_title("mean |pixel change| (0-255) per prompt set vs unedited; no oracle on this model")


@styled
def benchmark_figure(result: Any) -> dict[str, Any]:
    """The comparison figure (scatter + table) and, per concept, images of the target prompts under each method.

    On pocket the oracle's rates with the goal region; on other models (``metrics["measure"] ==
    "pixel_change"``) the pixel change of each prompt set, without a goal."""
    rows = result.metrics["rows"]
    config = result.config
    figure = new_figure(11.0, max(3.4, 1.4 + 0.2 * len(rows)))
    scatter_ax, table_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.55]})
    keys = ("concepts", "methods", "prompts_per_set", "seeds", "steps")
    off_pocket = result.metrics.get("measure", "oracle") == "pixel_change"
    if off_pocket:
        _change_scatter(scatter_ax, rows)
        _change_table_ax(table_ax, rows)
        model = _short(getattr(result, "model", ""))
        caption = caption_text(config, (*keys, "templates"),
                               f"model {model}: no oracle, so no erased rate and no goal; "
                               "change = mean |pixel difference| (0-255) against the images of the same noise "
                               "without erasure, per prompt set; selectivity = target / preservation change; "
                               "fit and sampling seconds measured in this run")  # fmt: skip
    else:
        goal = (getattr(config, "goal_erased", GOAL_ERASED), getattr(config, "goal_preservation", GOAL_PRESERVATION))
        _scatter(scatter_ax, rows, goal)
        _table(table_ax, rows, goal)
        caption = caption_text(config, keys,
                               f"goal: erased ≤ {goal[0]:g} on target and synonym prompts, preservation ratio ≥ "
                               f"{goal[1]:g}; fit and sampling seconds measured in this run")  # fmt: skip
    add_caption(figure, caption, width=180)
    figures = {"erasure_benchmark": figure}
    for concept, prompts in result.metrics.get("image_prompts", {}).items():
        order = ["no erasure"] + [r["method"] for r in rows if r["concept"] == concept]  # saved folders lose the order
        grid = {label: result.images[f"{concept}/{label}"] for label in order if f"{concept}/{label}" in result.images}
        if grid:
            figures[f"images_{concept}"] = image_grid(
                grid, columns=prompts, title=f"erasing {concept!r}: the same noise under each method",
                caption=caption_text(config, ("steps",), "target prompts, then 2 " + (
                    "preservation prompts" if off_pocket else "prompts of other values (preservation)")
                    + "; seed = the first of seeds"),
            )  # fmt: skip
    return figures
