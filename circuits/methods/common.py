"""Pieces every method file shares: config overrides, text conditioning, UNet calls, cross-attention projections.

Kept here once so each paper's file reads like its algorithm box.

Methods with their own denoising loop (TRCE stage 2, ANT) call the UNet through :func:`unet_eps`, which
adds SDXL's pooled embedding and time ids (``added_conditioning``), so one loop serves SD1.x, SD2.x and
SDXL. Their unconditional rows come from :func:`null_conditioning`: exactly what ``circuits.sample`` puts
in its unconditional branch when no negative prompt is given (the encoding of ``""``; on SDXL with
``force_zeros_for_empty_prompt`` a zero context and a zero pooled embedding), so a prediction they
compute at a recorded latent equals the one the sampler recorded there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.checks import check_fields_finite
from circuits.errors import ConfigError, did_you_mean
from circuits.methods.concept import Concept, PromptPair, as_concept
from circuits.methods.features import align, gather_columns, preserved_positions
from circuits.models.diffusion import Diffusion
from circuits.sampling.conditioning import TextConditioning, added_conditioning

C = TypeVar("C")


def defaults_name(cls: type, model: Diffusion | None) -> str:
    """Which constructor gives ``cls``'s defaults for ``model``: ``"pocket"`` on pocket, ``"sdxl"`` on
    SDXL where the paper states SDXL settings (a ``Config.sdxl()``), else ``"paper"``."""
    family = getattr(model, "family", None)
    if family == "pocket":
        return "pocket"
    if family == "sdxl" and callable(getattr(cls, "sdxl", None)):
        return "sdxl"
    return "paper"


def model_defaults(cls: type[C], model: Diffusion | None) -> C:
    """The defaults of a method's ``Config`` for ``model``: ``cls.pocket()`` (settings measured on
    the pocket model) on pocket, ``cls.sdxl()`` on SDXL where the paper gives SDXL settings,
    ``cls.paper()`` (the paper's and its authors' code's) everywhere else; a config class without
    those constructors gives its field defaults."""
    make = getattr(cls, defaults_name(cls, model), None)
    return make() if callable(make) else cls()


def defaults_note(cls: type, model: Diffusion | None, config: Any) -> str:
    """One line for ``Erasure.notes`` saying which defaults a fit started from."""
    if config is not None:
        return f"config: given explicitly ({cls.__module__}.{cls.__qualname__})"
    name = defaults_name(cls, model)
    if not callable(getattr(cls, name, None)):
        return "config: the Config field defaults"
    return f"config: {cls.__qualname__}.{name}() defaults (chosen for model family {getattr(model, 'family', '?')!r})"


def resolve_config(cls: type[C], config: C | None, overrides: dict[str, Any], model: Diffusion | None = None) -> C:
    """``config`` (or the defaults for ``model``, see :func:`model_defaults`) with ``overrides``
    applied; unknown names get a did-you-mean error, NaN or infinite numbers a ConfigError."""
    base = config if config is not None else model_defaults(cls, model)
    if not isinstance(base, cls):
        raise ConfigError(f"config must be a {cls.__module__}.{cls.__qualname__}, got {type(base).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        hints = [f"{key!r}{did_you_mean(key, names)}" for key in unknown]
        raise ConfigError(f"{cls.__qualname__} has no field {', '.join(hints)}; fields: {', '.join(names)}")
    try:
        resolved = dataclasses.replace(base, **overrides)  # type: ignore[type-var]
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{cls.__qualname__}: {error}") from None
    check_fields_finite(resolved, f"{cls.__module__}.{cls.__qualname__}", error=ConfigError)
    return resolved


def config_dict(config: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def text_embeddings(
    model: Diffusion, prompts: Sequence[str], length: int | None = None
) -> Float[Tensor, "batch tokens dim"]:
    """The text encoder's output for ``prompts`` (what the UNet's cross-attention reads), no grad;
    with ``length``, only the first positions (exact: the encoder is causal)."""
    return text_conditioning(model, prompts, length).embeds


def text_conditioning(model: Diffusion, prompts: Sequence[str], length: int | None = None) -> TextConditioning:
    """:func:`text_embeddings` with SDXL's pooled embeddings beside them (``pooled`` is None on SD1.x / SD2.x),
    no grad, in a ``cond`` text-phase context; each distinct prompt is encoded once."""
    from circuits.sampling import encode_text

    unique = list(dict.fromkeys(prompts))  # anchor prompts repeat once per synonym: encode each once
    with torch.no_grad():
        text = encode_text(model, unique, "cond", length=length)
    if len(unique) == len(prompts):
        return text
    index = {p: i for i, p in enumerate(unique)}
    return take(text, torch.tensor([index[p] for p in prompts], device=text.embeds.device))


def take(text: TextConditioning, rows: Tensor) -> TextConditioning:
    """Rows ``rows`` (an index tensor) of a conditioning, pooled embeddings included."""
    pooled = None if text.pooled is None else text.pooled[rows.to(text.pooled.device)]
    return TextConditioning(text.embeds[rows.to(text.embeds.device)], pooled)


def repeat(text: TextConditioning, count: int) -> TextConditioning:
    """A one-row conditioning repeated ``count`` times (a view, as ``expand``)."""
    if text.embeds.shape[0] != 1:
        raise ValueError(f"repeat: give a one-row conditioning, not {text.embeds.shape[0]} rows")
    pooled = None if text.pooled is None else text.pooled.expand(count, -1)
    return TextConditioning(text.embeds.expand(count, -1, -1), pooled)


def zero_null(model: Diffusion) -> bool:
    """Whether ``circuits.sample``'s unconditional branch (no negative prompt) is a zero context: SDXL
    checkpoints with ``force_zeros_for_empty_prompt`` (all of them by default), as diffusers does."""
    return model.is_sdxl and model.force_zeros_for_empty_prompt


def null_conditioning(model: Diffusion, branch: str = "uncond") -> TextConditioning:
    """The unconditional text of ``circuits.sample`` with no negative prompt, one row, no grad: the encoding
    of ``""`` (in a ``branch`` text-phase context), or on SDXL with ``force_zeros_for_empty_prompt`` a zero
    context and a zero pooled embedding, for which no text encoder runs (as in the sampler, so text-encoder
    interventions see no unconditional call)."""
    if not zero_null(model):
        from circuits.sampling import encode_text

        with torch.no_grad():
            return encode_text(model, [""], branch)
    assert model.text_encoder_2 is not None  # zero_null implies SDXL
    dtype = model.text_encoder_2.dtype  # encode_text's dtype for SDXL contexts, so zeros_like would give the same
    tokens, width = model.tokenizer.model_max_length, int(model.unet.config.cross_attention_dim)
    pooled = int(model.text_encoder_2.config.projection_dim)
    return TextConditioning(torch.zeros(1, tokens, width, dtype=dtype, device=model.device),
                            torch.zeros(1, pooled, dtype=dtype, device=model.device))


def unet_eps(
    model: Diffusion,
    latents: Float[Tensor, "batch channels height width"],
    timesteps: Tensor,
    text: TextConditioning,
) -> Float[Tensor, "batch channels height width"]:
    """``model.unet`` on ``latents`` conditioned on ``text``, with SDXL's added conditioning (pooled embedding,
    time ids for the image size the latents stand for); on SD1.x / SD2.x exactly the plain UNet call."""
    factor = model.vae_scale_factor
    extra = added_conditioning(model, text.pooled, latents.shape[-2] * factor, latents.shape[-1] * factor)
    return model.unet(latents, timesteps, encoder_hidden_states=text.embeds, return_dict=False, **extra)[0]


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


def pair_columns(model: Diffusion, pairs: Sequence[PromptPair], positions: str, k: int) -> tuple[Tensor, Tensor]:
    """``X`` (target columns) and ``Y`` (anchor columns) ``[dim, N]`` at the aligned positions.

    The encoder runs only as far as the last position read (often the first [EoT] of the longest prompt).
    """
    aligned = [align(model.tokenizer, pair, positions, k) for pair in pairs]
    length = 1 + max(max(t + a) for t, a in aligned)
    x = gather_columns(text_embeddings(model, [p.target for p in pairs], length), [t for t, _ in aligned])
    y = gather_columns(text_embeddings(model, [p.anchor for p in pairs], length), [a for _, a in aligned])
    return x, y


def preservation_columns(model: Diffusion, prompts: Sequence[str], positions: str, k: int) -> Tensor:
    """The preservation prompts' columns (mapped onto themselves) at the positions ``positions`` selects."""
    selected = [preserved_positions(model.tokenizer, p, positions, k) for p in prompts]
    length = 1 + max(max(s) for s in selected)
    return gather_columns(text_embeddings(model, prompts, length), selected)


def prepare(model: Diffusion, concept: Concept | str | dict) -> Concept:
    concept = as_concept(concept, model)
    concept.check(model.tokenizer)
    return concept


class LayerFeatures:
    """One edited feature set: target (``x``) and anchor (``y``) input features, before and after.

    The numbers behind ErasePro Figs. 2c-d and 3a-b. Angles and distances compare target and
    anchor inputs of the layer in the original model (before) and in the edited one (after); they do
    not depend on the projection. Residuals ``||W X - W_o Y|| / ||W_o Y||`` do, and are read from
    ``d x d`` Gram matrices computed once here, so a row per projection costs one small matmul.
    Differences are taken in float64 (a zero-residual edit leaves ~1e-9 of the anchor's norm); the
    Grams of those differences are float32, which keeps each norm to ~1e-6 relative at half the cost.
    """

    def __init__(self, x_before: Tensor, x_after: Tensor, y: Tensor, amap: Any) -> None:
        from circuits.methods.linalg import column_angle_deg, frobenius_distance

        xb, xa, y64 = (t.to(torch.float64) for t in (x_before, x_after, y))
        self.amap = amap
        self.common = {
            "angle_before_deg": column_angle_deg(xb, y64),
            "angle_after_deg": column_angle_deg(xa, y64),
            "distance_before": frobenius_distance(xb, y64),
            "distance_after": frobenius_distance(xa, y64),
        }
        grams = []
        for columns in (y64, xa - y64, amap.matrix @ xa - y64):
            single = columns.to(torch.float32)
            grams.append(single @ single.T)
        self._anchor_gram, self._before_gram, self._after_gram = grams

    def row(self, param: str, weight: Tensor, delta: Tensor, **extra: Any) -> dict[str, Any]:
        from circuits.methods.linalg import quadratic_norms

        anchor, after, before = quadratic_norms(weight, (self._anchor_gram, self._after_gram, self._before_gram))
        scale = anchor or 1.0
        return {
            "param": param,
            **extra,
            **self.common,
            "residual": after / scale,
            "residual_before": before / scale,
            "delta_norm": float(torch.linalg.matrix_norm(delta.to(torch.float64))),
            "weight_norm": float(torch.linalg.matrix_norm(weight.detach().to(torch.float64))),
            "rank": self.amap.rank,
            "columns": self.amap.columns,
            "solver": self.amap.solver,
        }
