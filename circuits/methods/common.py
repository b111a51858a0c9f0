"""Pieces every method file shares: config overrides, text embeddings, cross-attention projections.

Kept here once so each paper's file reads like its algorithm box.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.errors import CircuitsError
from circuits.methods.concept import Concept, PromptPair, as_concept
from circuits.methods.features import align, gather_columns, preserved_positions
from circuits.models.diffusion import Diffusion

C = TypeVar("C")


class ConfigError(CircuitsError, ValueError):
    """An unknown or mistyped config field."""


def resolve_config(cls: type[C], config: C | None, overrides: dict[str, Any]) -> C:
    """``config`` (or the defaults) with ``overrides`` applied; unknown names get a did-you-mean error."""
    base = config if config is not None else cls()
    if not isinstance(base, cls):
        raise ConfigError(f"config must be a {cls.__module__}.{cls.__qualname__}, got {type(base).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{cls.__qualname__} has no field {', '.join(hints)}; fields: {', '.join(names)}")
    try:
        return dataclasses.replace(base, **overrides)  # type: ignore[type-var]
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{cls.__qualname__}: {error}") from None


def config_dict(config: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def text_embeddings(model: Diffusion, prompts: Sequence[str]) -> Float[Tensor, "batch tokens dim"]:
    """The text encoder's output for ``prompts`` (what the UNet's cross-attention reads), no grad."""
    from circuits.sampling import encode_prompts

    with torch.no_grad():
        return encode_prompts(model, list(prompts), "cond")


def cross_attention_params(model: Diffusion, projections: Sequence[str]) -> list[str]:
    """Parameter names ``<attn2>.<projection>.weight`` of every UNet cross-attention layer."""
    allowed = ("to_k", "to_v")
    bad = [p for p in projections if p not in allowed]
    if bad or not projections:
        raise ConfigError(f"projections={list(projections)!r}: choose from {allowed} (the text-side projections)")
    names = []
    for site in model.sites.cross_attention():
        if getattr(model.sites.module(site), "norm_cross", None) is not None:
            raise ConfigError(f"{site} normalises its text input (norm_cross); closed-form edits assume it does not")
        names.extend(f"{site}.{p}.weight" for p in projections)
    return names


def pair_columns(
    model: Diffusion,
    pairs: Sequence[PromptPair],
    positions: str,
    k: int,
    target_features: Tensor,
    anchor_features: Tensor,
) -> tuple[Tensor, Tensor]:
    """``X`` (target columns) and ``Y`` (anchor columns) ``[dim, N]`` at the aligned positions."""
    aligned = [align(model.tokenizer, pair, positions, k) for pair in pairs]
    x = gather_columns(target_features, [t for t, _ in aligned])
    y = gather_columns(anchor_features, [a for _, a in aligned])
    return x, y


def preservation_columns(
    model: Diffusion, prompts: Sequence[str], positions: str, k: int, features: Tensor
) -> Tensor:
    return gather_columns(features, [preserved_positions(model.tokenizer, p, positions, k) for p in prompts])


def prepare(model: Diffusion, concept: Concept | str | dict) -> Concept:
    concept = as_concept(concept, model)
    concept.check(model.tokenizer)
    return concept


def edit_row(
    param: str,
    weight: Tensor,
    solution: Any,
    x_before: Tensor,
    x_after: Tensor,
    y: Tensor,
    **extra: Any,
) -> dict[str, Any]:
    """One trace row for an edited projection (the numbers behind ErasePro Figs. 2c-d and 3a-b).

    Angles and distances compare the layer's input features, target (``x``) against anchor (``y``),
    in the original model (before) and in the edited one (after); ``residual`` is
    ``||W X - W_o Y||_F / ||W_o Y||_F`` on the target columns; ``delta_norm`` is ``||dW||_F``.
    """
    from circuits.methods.linalg import column_angle_deg, frobenius_distance, relative_residual

    w0 = weight.detach().to(torch.float64)
    new = w0 + solution.delta.to(torch.float64)
    return {
        "param": param,
        **extra,
        "angle_before_deg": column_angle_deg(x_before, y),
        "angle_after_deg": column_angle_deg(x_after, y),
        "distance_before": frobenius_distance(x_before, y),
        "distance_after": frobenius_distance(x_after, y),
        "residual": relative_residual(new, x_after, w0 @ y.to(torch.float64)),
        "residual_before": relative_residual(w0, x_after, w0 @ y.to(torch.float64)),
        "delta_norm": float(torch.linalg.matrix_norm(solution.delta.to(torch.float64))),
        "weight_norm": float(torch.linalg.matrix_norm(w0)),
        "rank": solution.rank,
        "columns": solution.columns,
        "solver": solution.solver,
    }
