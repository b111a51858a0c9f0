"""circuits: mechanistic interpretability of text-to-image diffusion models.

Public API is imported lazily (diffusers/transformers take seconds to import), so
``import circuits`` is cheap and ``circuits.load`` pulls in the heavy stack on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from circuits.version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "load": "circuits.models.loading",
    "Diffusion": "circuits.models.diffusion",
    "build_tiny_pipeline": "circuits.models.tiny",
    "Capture": "circuits.interventions.capture",
    "Replace": "circuits.interventions.activation",
    "Ablate": "circuits.interventions.activation",
    "Scale": "circuits.interventions.activation",
    "MaskedPatch": "circuits.interventions.activation",
    "ZeroTokens": "circuits.interventions.zero_tokens",
    "WeightEdit": "circuits.interventions.weight_edit",
    "Graph": "circuits.interventions.graph",
    "intervene": "circuits.interventions.runtime",
    "sample": "circuits.sampling.sampler",
    "CFG": "circuits.sampling.guidance",
    "ReversedCFG": "circuits.sampling.guidance",
    "step_context": "circuits.context",
    "current_context": "circuits.context",
    "layout": "circuits.tokens",
    "token_mask": "circuits.tokens",
    "run_experiment": "circuits.experiments.registry",
    "list_experiments": "circuits.experiments.registry",
}

__all__ = sorted(_EXPORTS)


#: subpackages reachable as attributes without an explicit import (``circuits.pocket.concept("red")``)
_SUBPACKAGES = ("methods", "pocket", "sampling", "interventions", "sites", "experiments", "analysis", "evaluation")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"circuits.{name}")
        globals()[name] = module
        return module
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'circuits' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from circuits.context import current_context, step_context
    from circuits.experiments.registry import list_experiments, run_experiment
    from circuits.interventions.activation import Ablate, MaskedPatch, Replace, Scale
    from circuits.interventions.capture import Capture
    from circuits.interventions.graph import Graph
    from circuits.interventions.runtime import intervene
    from circuits.interventions.weight_edit import WeightEdit
    from circuits.interventions.zero_tokens import ZeroTokens
    from circuits.models.diffusion import Diffusion
    from circuits.models.loading import load
    from circuits.models.tiny import build_tiny_pipeline
    from circuits.sampling.guidance import CFG, ReversedCFG
    from circuits.sampling.sampler import sample
    from circuits.tokens import layout, token_mask
