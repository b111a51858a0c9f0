"""Interventions: the primitives, graphs of them, and the context manager that applies them."""

from circuits.interventions.activation import Ablate, MaskedPatch, Replace, Scale
from circuits.interventions.base import Intervention
from circuits.interventions.capture import Capture
from circuits.interventions.graph import Graph, GraphLike, HasGraph
from circuits.interventions.records import CaptureCall, Captures, to_maps
from circuits.interventions.weight_edit import WeightEdit
from circuits.interventions.zero_tokens import ZeroTokens

__all__ = [
    "Ablate", "Capture", "CaptureCall", "Captures", "Graph", "GraphLike", "HasGraph", "Intervention", "MaskedPatch",
    "Replace", "Scale", "WeightEdit", "ZeroTokens", "to_maps",
]
