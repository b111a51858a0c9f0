"""UCE: unified concept editing of the cross-attention key/value projections (the baseline).

Gandikota et al., "Unified Concept Editing in Diffusion Models" (WACV 2024), in the form the
ErasePro paper states it (Eq. 1-2)::

    W* = argmin_W ||W X - W_o Y||^2 + lambda ||W - W_o||^2 (+ preserve ||W P - W_o P||^2)
       = (W_o Y X^T + lambda W_o + preserve W_o P P^T) (X X^T + lambda I + preserve P P^T)^-1

for every cross-attention ``to_k`` / ``to_v`` of the UNet. ``X`` are the text encoder's outputs of
the target prompts (templates x target word and synonyms), ``Y`` those of the anchor prompts, at
the token positions :mod:`circuits.methods.features` pairs up; ``P`` those of the preservation
prompts.

Decisions the paper leaves open:

- positions: ``"keyword+eot"`` by default (the word's last sub-token and every [EoT]/padding
  position; UCE's official code maps the word and every position after it); any mode of
  :data:`~circuits.methods.features.POSITIONS` can be chosen.
- ``lambda = 1`` as in Eq. 1-2; no preservation by default (ErasePro's comparison runs UCE that
  way); ``preserve_weight`` adds it.

The residual ``||W X - W_o Y|| / ||W_o Y||`` stays above zero (ErasePro Eq. 3); the trace records
it per layer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from circuits.interventions.graph import Graph
from circuits.interventions.weight_edit import WeightEdit
from circuits.methods.common import (
    LayerFeatures,
    config_dict,
    cross_attention_params,
    pair_columns,
    prepare,
    preservation_columns,
    resolve_config,
)
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.methods.features import Positions, check_positions
from circuits.methods.linalg import AnchorMap
from circuits.models.diffusion import Diffusion


@dataclass(frozen=True)
class Config:
    """UCE settings (defaults: ErasePro's statement of UCE, Eq. 1-2)."""

    #: cross-attention projections to edit
    projections: tuple[str, ...] = ("to_k", "to_v")
    #: which token positions are mapped (see circuits.methods.features)
    positions: Positions = "keyword+eot"
    #: k for positions="first_k"
    k: int = 5
    #: lambda, the weight of ||W - W_o||^2 (Eq. 1 uses 1)
    reg: float = 1.0
    #: weight of the preservation term (0 = none, as ErasePro runs UCE)
    preserve_weight: float = 0.0
    #: fit on the synonym prompts too
    synonyms: bool = True


def features(model: Diffusion, concept: Concept, config: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``X``, ``Y`` ``[dim, N]`` and the preservation columns ``P`` ``[dim, M]`` (text-encoder outputs)."""
    pairs = concept.pairs(synonyms=config.synonyms)
    x, y = pair_columns(model, pairs, config.positions, config.k)
    p = x.new_zeros(x.shape[0], 0)
    if config.preserve_weight > 0 and concept.preservation:
        prompts = list(concept.preservation)
        p = preservation_columns(model, prompts, config.positions, config.k)
    return x, y, p


def fit(model: Diffusion, concept: Concept | str, config: Config | None = None, **overrides) -> Erasure:
    """Solve Eq. 2 on every cross-attention K/V; returns the edits as an :class:`Erasure`."""
    config = resolve_config(Config, config, overrides)
    check_positions(config.positions, "uce.Config")
    concept = prepare(model, concept)
    start = time.perf_counter()
    x, y, p = features(model, concept, config)
    scale = math.sqrt(config.preserve_weight)
    # one d x d map for every K/V: W* = W_o M with M = (Y X^T + lambda I + w P P^T)(X X^T + lambda I + w P P^T)^-1
    amap = AnchorMap.fit(torch.cat([x, scale * p], dim=1), torch.cat([y, scale * p], dim=1), reg=config.reg)
    stats = LayerFeatures(x, x, y, amap)  # the text encoder is not edited: inputs are the same before and after
    graph, trace = Graph(), []
    for index, param in enumerate(cross_attention_params(model, config.projections)):
        weight = model.parameter(param).detach()
        delta = amap.delta(weight)
        graph.append(WeightEdit(param, delta=delta))
        trace.append(stats.row(param, weight, delta, layer=index // len(config.projections), stage="unet"))
    return Erasure("uce", concept, config_dict(config), graph, trace, seconds=time.perf_counter() - start)
