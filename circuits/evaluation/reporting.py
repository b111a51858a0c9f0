"""The literature's table over generation folders: one row per model or erasure, one column per measure.

``report(["out/sd14", "out/esd"], out="out/table")`` (or ``circuits report out/sd14 out/esd --out
out/table``) reads each folder's ``generation.json`` and ``measures/*.json`` (written by
:func:`circuits.evaluation.measure`) and writes ``report.md`` (the table, its caption naming every
setting and measure version the rows share, and the settings where they differ), ``report.csv``
(the same numbers, one column per value) and ``report.png`` (one bar panel per headline measure).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuits.evaluation.manifest import read_run
from circuits.evaluation.measures.common import read_results

#: the columns a paper's table leads with, in order (others follow alphabetically)
HEADLINE = ("attack_success_rate", "exposed_total", "clip_score", "fid", "kid", "accuracy", "rate")
_SETTINGS = ("model", "steps", "scheduler", "default_guidance", "generator_device", "dtype", "samples", "height",
             "width", "negative_prompt")  # fmt: skip


@dataclass
class Report:
    rows: list[dict[str, Any]]  # {"name", "images", **values}
    columns: list[str]
    caption: str
    markdown: str
    csv: str
    files: dict[str, Path]


def _row_name(run: dict[str, Any], folder: Path) -> str:
    erasure = run["identity"].get("erasure")
    if erasure:
        return f"{erasure['method']} ({erasure['concept']})"
    return f"{Path(str(run['identity'].get('model'))).name} (no erasure)"


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"
    return str(value)


def report(folders: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str] | None = None,
           *, names: Sequence[str] | None = None) -> Report:  # fmt: skip
    """The table over ``folders`` (see the module doc); ``names`` overrides the row names."""
    if not folders:
        raise ValueError("report: give at least one generation folder")
    rows, runs, provenance = [], [], {}
    for i, folder in enumerate(folders):
        folder = Path(folder)
        run = read_run(folder)
        results = read_results(folder)
        row: dict[str, Any] = {"name": names[i] if names else _row_name(run, folder), "folder": str(folder)}
        row["images"] = max([r.get("images", 0) for r in results.values()], default=0)
        for result in results.values():
            row.update(result["values"])
        rows.append(row)
        runs.append(run)
        for measure, result in results.items():
            provenance.setdefault(measure, result.get("provenance", {}))
    values = sorted({k for row in rows for k in row} - {"name", "folder", "images"})
    columns = [c for c in HEADLINE if c in values] + [c for c in values if c not in HEADLINE]
    caption = _caption(runs, provenance, [row["name"] for row in rows])
    header = ["name", "images", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_format(row.get(c)) for c in header) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n\n" + caption + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*header, "folder"])
    for row in rows:
        writer.writerow([row.get(c, "") for c in header] + [row["folder"]])
    files: dict[str, Path] = {}
    if out is not None:
        from circuits.io import atomic_write

        out = Path(out)
        for name, text in (("report.md", markdown), ("report.csv", buffer.getvalue())):
            files[name] = atomic_write(out / name, lambda f, t=text: f.write(t.encode()))
        files["report.png"] = _figure(rows, [c for c in columns if c in HEADLINE] or columns[:4], out / "report.png")
    return Report(rows, columns, caption, markdown, buffer.getvalue(), files)


def _caption(runs: list[dict[str, Any]], provenance: dict[str, dict[str, Any]], names: list[str]) -> str:
    shared, differ = [], []
    for key in _SETTINGS:
        seen = [run["identity"].get(key) for run in runs]
        if all(v == seen[0] for v in seen):
            if seen[0] not in (None, ""):
                shared.append(f"{key} {seen[0]}")
        else:
            differ.append(f"{key}: " + ", ".join(f"{n} {v}" for n, v in zip(names, seen)))
    prompts = runs[0].get("prompt_file", {})
    cut = [run.get("truncation", {}).get("truncated", 0) for run in runs]
    parts = [f"Prompts: {prompts.get('source')} ({prompts.get('layout')}, {prompts.get('rows')} rows"
             + (f", {', '.join(prompts.get('filters', []))}" if prompts.get("filters") else "") + ")",
             "Settings: " + "; ".join(shared) + ".",
             f"Prompts truncated to the tokenizer: {max(cut)}."]  # fmt: skip
    if differ:
        parts.append("Differing: " + "; ".join(differ) + ".")
    for measure, info in sorted(provenance.items()):
        keep = {k: v for k, v in info.items() if k not in ("classes",) and not isinstance(v, dict)}
        parts.append(f"{measure}: " + ", ".join(f"{k} {v}" for k, v in keep.items()) + ".")
    return " ".join(parts)


def _figure(rows: list[dict[str, Any]], columns: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from circuits.io import atomic_write

    columns = [c for c in columns if any(isinstance(r.get(c), (int, float)) for r in rows)] or ["images"]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.bar(range(len(rows)), [float(r.get(column) or 0) for r in rows], color="tab:blue")
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_title(column, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))
