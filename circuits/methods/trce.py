"""TRCE stage 1 (textual semantic erasure) and its [EoT] probes.

Chen et al., "TRCE: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion Models",
Sec. 4.1 (Eq. 4-5), App. A.3, App. B (Figs. 2 and 7).

- **Closed-form K/V refinement** (Eq. 4-5): every cross-attention ``to_k`` / ``to_v`` is refined so
  that the malicious prompts' **first [EoT]** embedding ``e^m`` is projected like the safe prompt's
  ``e^s``, while preservation prompts keep theirs (weight ``eta``)::

      min_W' sum ||W' e^m_i - W e^s_i||^2 + eta sum ||W' e^p_j - W e^p_j||^2

  With ``A = [e^m, sqrt(eta) e^p]`` and ``B = W [e^s, sqrt(eta) e^p]`` this is ``min ||W' A - B||``.
  When the normal matrix ``A A^T`` is invertible the answer is Eq. 5, ``B A^T (A A^T)^-1``. With fewer
  token columns than features (pocket: 128 features) it is singular, the equations can be met
  exactly, and the solution nearest ``W`` is taken (``W + (B - W A) A^+``); the trace says so.
- Malicious prompts = templates x (target word and synonyms); safe prompts = the same templates
  with the anchor; preservation prompts = the concept's. The first [EoT] comes from the tokenizer,
  never from word counts (the official code uses ``len(prompt.split()) + 1``, which lands on a
  sub-word). Which positions are mapped is an option (``positions``; the paper's Table 4 ablates
  exactly this).
- **Probes**: :func:`eot_probe` zeroes (or masks) the cross-attention to the last ``k`` [EoT]
  positions in both CFG branches; :func:`eot_similarity` gives the cosine similarity of all token
  embeddings of a prompt (Fig. 7b).

Stage 2 (trajectory steering, Sec. 4.2) builds on this stage's erasure.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.interventions.graph import Graph
from circuits.interventions.weight_edit import WeightEdit
from circuits.interventions.zero_tokens import ZeroTokens
from circuits.methods.common import (
    config_dict,
    cross_attention_params,
    pair_columns,
    prepare,
    preservation_columns,
    resolve_config,
    text_embeddings,
)
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.methods.features import Positions, check_positions
from circuits.methods.linalg import DEFAULT_RTOL, relative_residual, solve_edit
from circuits.models.diffusion import Diffusion
from circuits.tokens import layout


@dataclass(frozen=True)
class Config:
    """TRCE stage-1 settings (defaults: the paper's)."""

    #: which token positions are mapped: the first [EoT] (the paper), "eot_all", "all", "keyword", ...
    positions: Positions = "eot"
    #: k for positions="first_k"
    k: int = 5
    #: weight of the preservation term (App. A.3: 0.01)
    eta: float = 0.01
    #: cross-attention projections refined
    projections: tuple[str, ...] = ("to_k", "to_v")
    #: singular values below rtol * largest count as zero when A A^T is singular
    rtol: float = DEFAULT_RTOL
    #: fit on the synonym prompts too (the paper's concept augmentation)
    synonyms: bool = True


def refine_kv(model: Diffusion, concept: Concept, config: Config) -> tuple[Graph, list[dict], list[str]]:
    """Eq. 5 on every cross-attention K/V: the edits, a trace row per projection, and notes."""
    pairs = concept.pairs(synonyms=config.synonyms)
    malicious, safe = pair_columns(
        model,
        pairs,
        config.positions,
        config.k,
        text_embeddings(model, [p.target for p in pairs]),
        text_embeddings(model, [p.anchor for p in pairs]),
    )
    preserved = malicious.new_zeros(malicious.shape[0], 0)
    if concept.preservation and config.eta > 0:
        prompts = list(concept.preservation)
        preserved = preservation_columns(model, prompts, config.positions, config.k, text_embeddings(model, prompts))
    scale = math.sqrt(config.eta)
    inputs = torch.cat([malicious, scale * preserved], dim=1)
    wanted = torch.cat([safe, scale * preserved], dim=1)

    graph, rows, notes = Graph(), [], []
    for number, param in enumerate(cross_attention_params(model, config.projections)):
        weight = model.parameter(param).detach()
        w64 = weight.to(torch.float64)
        solution = solve_edit(weight, inputs, w64 @ wanted.to(torch.float64), reg=0.0, rtol=config.rtol)
        graph.append(WeightEdit(param, delta=solution.delta))
        new = w64 + solution.delta.to(torch.float64)
        rows.append({
            "param": param,
            "stage": "unet",
            "layer": number // len(config.projections),
            "residual": relative_residual(new, malicious, w64 @ safe.to(torch.float64)),
            "residual_before": relative_residual(w64, malicious, w64 @ safe.to(torch.float64)),
            "preservation_change": (
                relative_residual(new, preserved, w64 @ preserved.to(torch.float64)) if preserved.shape[1] else 0.0
            ),
            "delta_norm": float(torch.linalg.matrix_norm(solution.delta.to(torch.float64))),
            "weight_norm": float(torch.linalg.matrix_norm(w64)),
            "rank": solution.rank,
            "columns": solution.columns,
            "solver": solution.solver,
        })
    features = inputs.shape[0]
    if inputs.shape[1] < features or rows and rows[0]["rank"] < features:
        notes.append(
            f"the normal matrix A A^T is singular (rank {rows[0]['rank'] if rows else 0} of {features} features, "
            f"{inputs.shape[1]} columns): solved by least squares nearest W (W + (B - W A) A^+)"
            + ("; every equation is met exactly, so eta has no effect" if rows and rows[0]["rank"] == inputs.shape[1]
               else "")
        )
    return graph, rows, notes


def fit(model: Diffusion, concept: Concept | str, config: Config | None = None, **overrides) -> Erasure:
    """TRCE stage 1: closed-form refinement of the cross-attention K/V at the first [EoT]."""
    config = resolve_config(Config, config, overrides)
    check_positions(config.positions, "trce.Config")
    concept = prepare(model, concept)
    start = time.perf_counter()
    graph, rows, notes = refine_kv(model, concept, config)
    return Erasure("trce-stage1", concept, config_dict(config), graph, rows, notes, time.perf_counter() - start)


# -- probes ---------------------------------------------------------------------------------
def eot_count(model: Diffusion, prompt: str) -> int:
    """How many [EoT] positions (the first [EoT] and the padding after it) ``prompt`` has."""
    return len(layout(model.tokenizer, prompt).eot_all)


def eot_probe(
    k: int, *, renormalize: bool = False, site: str = "unet.*attn2", branch: str = "both", **scope
) -> Graph:
    """TRCE Fig. 2 / 7a: zero the cross-attention maps of the last ``k`` [EoT] positions (``k = 0``: none).

    Both CFG branches by default: zeroing the conditional branch alone makes CFG extrapolate along a
    skewed direction (on pocket every image degenerates to the same one). ``renormalize=True``
    masks those keys instead (the softmax renormalises over the remaining tokens).
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"eot_probe: k={k!r}; give an int >= 0 (0 leaves the model alone)")
    if k == 0:
        return Graph()
    return Graph([ZeroTokens(site, tokens=f"last_eot:{k}", renormalize=renormalize, branch=branch, **scope)])


def eot_similarity(model: Diffusion, prompt: str) -> tuple[list[str], Float[Tensor, "tokens tokens"]]:
    """TRCE Fig. 7b: the tokens of ``prompt`` and the cosine similarity of all their text embeddings."""
    lay = layout(model.tokenizer, prompt)
    embeds = text_embeddings(model, [prompt])[0].to(torch.float64)
    unit = torch.nn.functional.normalize(embeds, dim=-1)
    return list(lay.tokens), (unit @ unit.T).float()
