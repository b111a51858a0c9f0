"""``ExperimentResult``: what an experiment returns, writes to its folder, and shows in Jupyter.

An output folder holds everything needed to read, redraw and repeat a run::

    config.json        experiment name, resolved config, model, package version, git commit, command
    metrics.json       the numbers (metrics), the headline table, notes in words, seconds
    figures/NAME.png   each figure, also as NAME.pdf (drawn by circuits.analysis from this result)
    images/ROW/000.png the sampled images, one folder per named row (prompt-major order)

The folder is written next to its destination and renamed into place, so an interrupted run leaves
the previous output (or nothing), never a mix. :func:`circuits.experiments.load_result` reads a
folder back, and ``result.redraw()`` draws its figures again without a model, with the drawing
function the registry handed the result (``draw``): this module knows nothing of the registry.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from circuits.errors import OutputExistsError
from circuits.experiments.display import result_html
from circuits.experiments.overrides import config_from_json, config_to_json
from circuits.io import atomic_write, check_writable, save_image, write_json


class Drawn(Protocol):
    """What reading a folder back needs to know of its experiment (a registry entry has both)."""

    config: type
    draw: Callable[["ExperimentResult"], Mapping[str, Any]]


@dataclass
class ExperimentResult:
    """An experiment's numbers, images and figures, with the config and provenance that made them.

    ``metrics``: JSON-ready numbers (everything the figures are drawn from). ``headline``: a few
    numbers worth quoting, shown as a table. ``notes``: what the numbers show, in sentences.
    ``images``: named rows of PIL images. ``figures``: matplotlib figures drawn from the rest.
    ``draw``: the experiment's drawing function (set by the registry when it runs or loads one).
    """

    metrics: dict[str, Any]
    headline: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    images: dict[str, list[Any]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    config: Any = None
    model: str = ""
    seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    draw: Callable[["ExperimentResult"], Mapping[str, Any]] | None = field(default=None, repr=False, compare=False)

    # -- reading ------------------------------------------------------------------------
    def __repr__(self) -> str:
        head = ", ".join(f"{k}={_short(v)}" for k, v in self.headline.items())
        where = f", out={str(self.out)!r}" if self.out else ""
        return f"ExperimentResult({self.name!r} on {self.model!r}: {head}{where})"

    def summary(self) -> str:
        """The headline table and the notes as plain text (what the CLI prints)."""
        lines = [f"{self.name} on {self.model} ({self.seconds:.1f} s)"]
        width = max((len(k) for k in self.headline), default=0)
        lines += [f"  {k:<{width}}  {_short(v)}" for k, v in self.headline.items()]
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)

    def redraw(self) -> dict[str, Any]:
        """Draw the figures again from this result alone (no model), with the experiment's drawing
        function; replaces ``self.figures``."""
        if self.draw is None:
            raise ValueError(
                f"result {self.name!r} has no drawing function: results from run_experiment or "
                "circuits.experiments.load_result carry their experiment's; set result.draw to redraw this one"
            )
        self.figures = dict(self.draw(self))
        return self.figures

    def _repr_html_(self) -> str:
        return result_html(self)

    # -- writing ------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the whole result to ``folder`` (replacing what a previous run left there) and return it."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
        try:
            write_json(staging / "config.json", {
                "experiment": self.name,
                "config": config_to_json(self.config) if self.config is not None else None,
                "model": self.model,
                "provenance": self.provenance,
            }, sort_keys=False)  # fmt: skip
            rows = {}
            for index, (row, images) in enumerate(self.images.items()):
                stem = f"{index:02d}_{_safe(row)}"
                rows[row] = stem
                for i, image in enumerate(images):
                    save_image(staging / "images" / stem / f"{i:03d}.png", image)
            # Insertion order is meaning here (table rows, curve order, image rows), so keys stay unsorted.
            write_json(staging / "metrics.json", {
                "metrics": self.metrics, "headline": self.headline, "notes": self.notes,
                "seconds": round(self.seconds, 3), "image_rows": rows, "figures": list(self.figures),
            }, sort_keys=False)  # fmt: skip
            for name, figure in self.figures.items():
                save_figure(figure, staging / "figures", name)
            _swap_into_place(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.out = folder
        return folder

    # -- reading a folder back -------------------------------------------------------------
    @classmethod
    def read(cls, folder: str | os.PathLike[str], experiment: Callable[[str], Drawn]) -> "ExperimentResult":
        """The result :meth:`save` wrote to ``folder`` (figures not drawn); ``experiment(name)`` gives
        the config class and drawing function of the experiment named in its ``config.json``."""
        from PIL import Image

        folder = Path(folder)
        for required in ("config.json", "metrics.json"):
            if not (folder / required).is_file():
                raise FileNotFoundError(f"{folder} is not an experiment output folder: it has no {required}")
        config_data = json.loads((folder / "config.json").read_text())
        metrics_data = json.loads((folder / "metrics.json").read_text())
        name = config_data["experiment"]
        entry = experiment(name)
        images = {}
        # Older folders were written with sorted keys: the numbered folder stems still give the order.
        rows = sorted(metrics_data.get("image_rows", {}).items(), key=lambda item: int(item[1].split("_")[0]))
        for row, stem in rows:
            files = sorted((folder / "images" / stem).glob("*.png"))
            images[row] = [Image.open(path).convert("RGB") for path in files]
        return cls(
            metrics=metrics_data["metrics"], headline=metrics_data.get("headline", {}),
            notes=metrics_data.get("notes", []), images=images, name=name,
            config=config_from_json(entry.config, config_data["config"] or {}), model=config_data.get("model", ""),
            seconds=metrics_data.get("seconds", 0.0), provenance=config_data.get("provenance", {}), out=folder,
            draw=entry.draw,
        )  # fmt: skip


def save_figure(figure: Any, folder: str | os.PathLike[str], name: str) -> list[Path]:
    """``figure`` as ``folder/name.png`` (150 dpi) and ``folder/name.pdf``, each written atomically."""
    paths = []
    for suffix, kwargs in (("png", {"dpi": 150}), ("pdf", {})):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=suffix, bbox_inches="tight", **kwargs)
        data = buffer.getvalue()
        paths.append(atomic_write(Path(folder) / f"{_safe(name)}.{suffix}", lambda f, d=data: f.write(d)))
    return paths


def check_destination(folder: str | os.PathLike[str]) -> Path:
    """Raise before any work when ``folder`` cannot take a result: it cannot be written
    (:class:`~circuits.errors.OutputError`), or it exists and holds something other than an experiment
    output, which :meth:`ExperimentResult.save` refuses to replace (:class:`~circuits.errors.OutputExistsError`)."""
    folder = Path(folder)
    _refuse_foreign(folder)
    return check_writable(folder)


def _refuse_foreign(folder: Path) -> None:
    if folder.is_dir() and not (folder / "config.json").is_file() and any(folder.iterdir()):
        raise OutputExistsError(
            f"out={str(folder)!r} exists and is not an experiment output folder; choose another out= "
            "(nothing was written)"
        )


def _swap_into_place(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; a previous ``folder`` is moved aside first and removed after."""
    old = None
    if folder.exists():
        _refuse_foreign(folder)
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
        os.replace(folder, old / "previous")
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "row"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def escape(text: Any) -> str:
    return html.escape(str(text))
