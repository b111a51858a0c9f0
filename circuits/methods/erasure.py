"""``Erasure``: what every method's ``fit`` returns, and how it is saved and loaded.

An erasure is data, never a changed model: the method's name, the concept, the resolved config,
a :class:`~circuits.Graph` (weight edits as deltas, activation patches, ...) and a diagnostics
trace (one row per edited layer or training step). It is accepted wherever a graph is::

    erasure = circuits.methods.uce.fit(model, concept)
    circuits.sample(model, prompts, graph=erasure)       # edited for this call only
    with circuits.intervene(model, erasure): ...          # weights restored bitwise on exit
    circuits.sample(model, prompts, graph=erasure.graph + [circuits.Capture(...)])

``erasure.save(folder)`` writes ``erasure.json`` (method, concept, config, trace, the graph with
tensors replaced by references) and ``tensors.safetensors``; ``circuits.methods.load(folder)``
reads them back. No pickle; the folder is replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuits.errors import CircuitsError
from circuits.interventions.graph import Graph
from circuits.methods.concept import Concept

FORMAT = "circuits-erasure"
FORMAT_VERSION = 1
JSON_NAME = "erasure.json"
TENSORS_NAME = "tensors.safetensors"


class ErasureFormatError(CircuitsError, ValueError):
    """A folder that is not a saved erasure, or one written by an incompatible version."""


@dataclass(eq=False)
class Erasure:
    """A fitted erasure: apply it by passing it as a graph."""

    method: str
    concept: Concept
    config: dict[str, Any]
    graph: Graph
    trace: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_graph(self) -> Graph:
        """The interventions that apply this erasure (the protocol ``intervene``/``sample`` read)."""
        return self.graph

    def __add__(self, other: Any) -> Graph:
        """Compose with another erasure or a list of interventions into one graph."""
        rest = other.as_graph() if hasattr(other, "as_graph") else other
        return Graph([*self.graph, *rest])

    # -- saving --------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the erasure to ``folder`` (replaced atomically if it exists)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        tensors: dict[str, torch.Tensor] = {}
        data = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": self.method,
            "concept": self.concept.to_dict(),
            "config": self.config,
            "graph": self.graph.to_data(tensors=tensors),
            "trace": self.trace,
            "notes": self.notes,
            "seconds": self.seconds,
        }
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            (staging / JSON_NAME).write_text(json.dumps(data, indent=1, default=_jsonable))
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / TENSORS_NAME))
            _swap_in(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "Erasure":
        return load(folder)

    # -- display -------------------------------------------------------------------------
    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for item in self.graph:
            kinds[type(item).__name__] = kinds.get(type(item).__name__, 0) + 1
        parts = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "empty graph"
        return (
            f"Erasure(method={self.method!r}, concept={self.concept.name!r} -> {self.concept.anchor!r}, "
            f"{parts}, {len(self.trace)} trace rows, fit in {self.seconds:.2f}s)"
        )


def load(folder: str | os.PathLike[str]) -> Erasure:
    """Read an erasure written by :meth:`Erasure.save`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    json_path, tensor_path = folder / JSON_NAME, folder / TENSORS_NAME
    if not folder.is_dir():
        raise ErasureFormatError(f"{folder} is not a folder; pass the folder that Erasure.save(...) wrote")
    if not json_path.is_file() or not tensor_path.is_file():
        found = sorted(p.name for p in folder.iterdir())[:8]
        raise ErasureFormatError(
            f"{folder} is not a saved erasure: it needs {JSON_NAME} and {TENSORS_NAME}, found {found or 'nothing'}"
        )
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        raise ErasureFormatError(f"{json_path} does not parse as JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ErasureFormatError(f"{json_path} is not a circuits erasure (no \"format\": \"{FORMAT}\")")
    if data.get("version") != FORMAT_VERSION:
        raise ErasureFormatError(
            f"{json_path} has erasure format version {data.get('version')!r}; this circuits reads {FORMAT_VERSION}"
        )
    try:
        tensors = load_file(str(tensor_path))
    except Exception as error:  # safetensors raises its own error classes
        raise ErasureFormatError(f"{tensor_path} is not a readable safetensors file: {error}") from None
    return Erasure(
        method=data["method"],
        concept=Concept.from_dict(data["concept"]),
        config=data.get("config", {}),
        graph=Graph.from_data(data["graph"], tensors=tensors),
        trace=data.get("trace", []),
        notes=data.get("notes", []),
        seconds=float(data.get("seconds", 0.0)),
    )


def _swap_in(staging: Path, folder: Path) -> None:
    """Move ``staging`` to ``folder``; an existing ``folder`` is replaced only once the new one is complete."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    if not folder.is_dir():
        raise ErasureFormatError(f"cannot save an erasure to {folder}: it exists and is not a folder")
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    with contextlib.suppress(OSError):
        shutil.rmtree(old)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
