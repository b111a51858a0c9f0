"""How an :class:`~circuits.experiments.result.ExperimentResult` looks in Jupyter: its figures inline,
the headline numbers as a table, the notes, and where the outputs were written.

Kept apart from the result so rendering stays in one place; every user-supplied string (prompts,
names, config values) is HTML-escaped. It reads the fields named by :class:`Shown` and imports
neither the result nor the registry (the result imports this module, not the reverse).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Protocol

from circuits.experiments.overrides import config_to_json


class Shown(Protocol):
    """What rendering reads of a result (:class:`~circuits.experiments.result.ExperimentResult` has it all)."""

    name: str
    model: str
    seconds: float
    headline: dict[str, Any]
    notes: list[str]
    figures: dict[str, Any]
    config: Any
    out: Path | None


def _figure_png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return html.escape(f"{value:.3g}")
    return html.escape(str(value))


def result_html(result: Shown) -> str:
    parts = [f"<div><h4 style='margin:4px 0'>{html.escape(result.name)} on {html.escape(result.model)} "
             f"<span style='font-weight:normal;font-size:80%'>({result.seconds:.1f} s)</span></h4>"]  # fmt: skip
    if result.headline:
        left, right = "style='text-align:left'", "style='text-align:right'"
        rows = "".join(
            f"<tr><td {left}>{html.escape(str(k))}</td><td {right}>{_cell(v)}</td></tr>"
            for k, v in result.headline.items()
        )
        parts.append(f"<table style='font-size:90%'>{rows}</table>")
    if result.notes:
        # pre-wrap: a note may hold a small plain-text table whose line breaks and alignment matter.
        items = "".join(f"<li style='white-space:pre-wrap'>{html.escape(note)}</li>" for note in result.notes)
        parts.append(f"<ul style='font-size:90%'>{items}</ul>")
    for name, figure in result.figures.items():
        parts.append(
            f"<figure style='margin:4px 0'><img alt='{html.escape(name)}' "
            f"src='data:image/png;base64,{_figure_png(figure)}'/>"
            f"<figcaption style='font-size:80%'>{html.escape(name)}</figcaption></figure>"
        )
    if result.config is not None:
        text = json.dumps(config_to_json(result.config), indent=1)
        summary = "<summary>config</summary>"
        parts.append(f"<details style='font-size:80%'>{summary}<pre>{html.escape(text)}</pre></details>")
    if result.out is not None:
        parts.append(f"<p style='font-size:80%'>written to <code>{html.escape(str(result.out))}</code></p>")
    parts.append("</div>")
    return "".join(parts)
