"""Evaluation as the erasure literature measures it.

* :mod:`~circuits.evaluation.prompts` - the field's prompt CSV layouts (ESD/UCE/MACE, I2P, Ring-A-Bell,
  MMA-Diffusion, plain text), filters.
* :mod:`~circuits.evaluation.truncation` - over-long prompts cut as diffusers cuts them, and counted.
* :mod:`~circuits.evaluation.generation` - resumable, sharded generation to a folder of PNGs.
* :mod:`~circuits.evaluation.manifest` - the folder's record: run identity and one line per image.
* :mod:`~circuits.evaluation.measures` - NudeNet, CLIP score, FID/KID, classifier accuracy, pocket oracle.
* :mod:`~circuits.evaluation.reporting` - the literature's table (markdown, CSV, figure) over folders.

The heavy packages (nudenet, accelerate) come with ``pip install 'circuits[eval]'``; every model
weight is a local path. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PromptRow": "circuits.evaluation.prompts",
    "PromptSet": "circuits.evaluation.prompts",
    "read_prompts": "circuits.evaluation.prompts",
    "filter_rows": "circuits.evaluation.prompts",
    "fit_prompt": "circuits.evaluation.truncation",
    "generate": "circuits.evaluation.generation",
    "GenerationResult": "circuits.evaluation.generation",
    "read_records": "circuits.evaluation.manifest",
    "measure": "circuits.evaluation.measures",
    "report": "circuits.evaluation.reporting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'circuits.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
