"""What every measure shares: the images of a generation folder, local weight files, the result file.

A measure reads a folder written by :func:`circuits.evaluation.generate` (its manifest says which
prompt, label and categories each image has), computes its numbers, and writes
``measures/{name}.json`` into the folder: the headline ``values``, per-image results, and the
``provenance`` a reader needs to compare with a paper (package version, weight file hash,
thresholds, class lists). Weights are always local paths; a missing one is a
:class:`MissingWeightsError` saying which file to get and how.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from circuits.errors import CircuitsError
from circuits.evaluation.manifest import file_order, read_records, read_run
from circuits.io import write_json

MEASURES_DIR = "measures"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".npz")


class MissingWeightsError(CircuitsError, FileNotFoundError):
    """A measure's local weights are missing; the message says which file and how to get it."""


class MissingPackageError(CircuitsError, ImportError):
    """A measure's package is not installed (``pip install 'circuits[eval]'``)."""


def require(path: str | os.PathLike[str] | None, what: str, how: str) -> Path:
    """``path`` if it exists, else an error naming ``what`` is needed and ``how`` to get it."""
    if path is None or not Path(path).exists():
        given = f" (given: {path})" if path is not None else ""
        raise MissingWeightsError(f"{what} not found{given}; {how}")
    return Path(path)


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a weight file, or of a folder's weight files (names and bytes, sorted)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def records(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The image records of a generation folder in file order, each with its ``path``; only images on disk."""
    folder = Path(folder)
    read_run(folder)  # a clear error for a folder that is no generation folder
    out = []
    for name, record in sorted(read_records(folder).items(), key=lambda kv: file_order(kv[0])):
        if (folder / name).is_file():
            out.append({**record, "path": str(folder / name)})
    if not out:
        raise CircuitsError(f"{folder} holds no generated images yet; run `circuits generate` first")
    return out


def load_images(rows: list[dict[str, Any]]) -> list[Any]:
    from PIL import Image

    images = []
    for row in rows:
        with Image.open(row["path"]) as image:
            images.append(image.convert("RGB"))
    return images


def write_result(folder: str | os.PathLike[str], name: str, result: dict[str, Any]) -> Path:
    """``measures/{name}.json`` in the generation folder (atomically)."""
    return write_json(Path(folder) / MEASURES_DIR / f"{name}.json", {"measure": name, **result}, sort_keys=False)


def read_results(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Every measure written into a generation folder, by name."""
    out = {}
    for path in sorted((Path(folder) / MEASURES_DIR).glob("*.json")):
        out[path.stem] = json.loads(path.read_text())
    return out
