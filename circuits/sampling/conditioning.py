"""What the UNet is conditioned on: text embeddings, and on SDXL the pooled embedding and time ids.

SD1.x / SD2.x condition the UNet on the last hidden state of one CLIP text encoder. SDXL
(``StableDiffusionXLPipeline.encode_prompt``) runs two encoders on the same prompt, takes the
*penultimate* layer's hidden state of each, concatenates them into a 2048-wide context (768 + 1280),
and adds a second conditioning through ``added_cond_kwargs``: the pooled, projected embedding of the
second encoder (``text_embeds``) and six time ids (original size, crop corner, target size).

Decisions:

- The penultimate hidden state is read as the *input of the last layer* (a forward pre-hook) rather
  than from ``output_hidden_states``: transformers 5 records hidden states with its own forward
  hooks, which run before the hooks an intervention adds to a layer later, so an edit of the
  penultimate layer would be missing from the recorded value. Without interventions the two are the
  same tensor.
- Token positions (``tokens=`` scopes) are read from ``model.tokenizer``. SDXL's second tokenizer
  pads with ``!`` and, as transformers treats its pad token as special, splits every ``!`` of a
  prompt into its own pad id (huggingface/diffusers#4153): for prompts with ``!`` the second
  encoder's positions shift, which :func:`encode_text` reports with a :class:`TokenMismatchWarning`.
- An empty negative prompt on SDXL is a zero context and a zero pooled embedding, as diffusers does
  with ``force_zeros_for_empty_prompt`` (the default of every SDXL checkpoint): the unconditional
  branch then runs no text encoder, so text-encoder interventions scoped to it match nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.context import StepContext, publish_context
from circuits.errors import SettingError
from circuits.models.diffusion import Diffusion
from circuits.tokens import layout


class TokenMismatchWarning(UserWarning):
    """SDXL's two tokenizers put a prompt's tokens at different positions (a ``!`` in the prompt)."""


@dataclass
class TextConditioning:
    """Text conditioning of a batch: ``embeds`` for cross-attention, ``pooled`` for SDXL's added conditioning."""

    embeds: Float[Tensor, "batch tokens dim"]
    pooled: Float[Tensor, "batch pooled"] | None = None

    @staticmethod
    def cat(parts: Sequence["TextConditioning"]) -> "TextConditioning":
        pooled = [p.pooled for p in parts]
        return TextConditioning(
            torch.cat([p.embeds for p in parts]),
            None if any(p is None for p in pooled) else torch.cat(pooled),  # type: ignore[arg-type]
        )

    def zeros_like(self) -> "TextConditioning":
        return TextConditioning(
            torch.zeros_like(self.embeds), None if self.pooled is None else torch.zeros_like(self.pooled)
        )


def encode_text(
    model: Diffusion, prompts: Sequence[str], branch: str, *, length: int | None = None
) -> TextConditioning:
    """Encode ``prompts`` as the model's pipeline does, in a text-phase step context for ``branch``.

    SD1.x / SD2.x: the last hidden state of ``text_encoder``. SDXL: the penultimate hidden states of
    ``text_encoder`` and ``text_encoder_2`` concatenated (``[batch, 77, 2048]``), and the pooled
    projection of ``text_encoder_2``. ``length`` encodes only the first positions (see
    ``circuits.sampling.encode_prompts``); on SDXL the pooled embedding then reads the last position.
    """
    for prompt in prompts:
        layout(model.tokenizer, prompt)  # raises a clear PromptError for over-long prompts
    max_length = model.tokenizer.model_max_length
    if length is not None and not 1 <= length <= max_length:
        raise SettingError(f"encode_prompts: length={length}; use 1..{max_length}")
    ctx = StepContext(phase="text", branch_rows={branch: tuple(range(len(prompts)))}, prompts=tuple(prompts))
    if not model.is_sdxl:
        ids = _ids(model.tokenizer, prompts, max_length, length).to(model.device)
        with publish_context(ctx):
            embeds = model.text_encoder(ids, attention_mask=None)[0]
        return TextConditioning(embeds.to(dtype=model.text_encoder.dtype, device=model.device))
    for prompt in prompts:
        first, second = layout(model.tokenizer, prompt), layout(model.tokenizer_2, prompt)
        if first.first_eot != second.first_eot:
            warnings.warn(
                f"prompt {prompt!r}: SDXL's second tokenizer splits each '!' into its own pad token, so its EoT is at "
                f"{second.first_eot}, not {first.first_eot}; tokens= selections follow the first tokenizer, and the "
                "second encoder's positions after a '!' are shifted (as in diffusers). Drop the '!' to align them",
                TokenMismatchWarning,
                stacklevel=3,
            )
    parts, pooled = [], None
    with publish_context(ctx):
        for tokenizer, encoder in ((model.tokenizer, model.text_encoder), (model.tokenizer_2, model.text_encoder_2)):
            ids = _ids(tokenizer, prompts, max_length, length).to(model.device)
            hidden, output = _penultimate(encoder, ids)
            if output[0].ndim == 2:  # the projected pooled embedding (CLIPTextModelWithProjection)
                pooled = output[0]
            parts.append(hidden)
    embeds = torch.concat(parts, dim=-1).to(dtype=model.text_encoder_2.dtype, device=model.device)
    if pooled is None:
        raise SettingError("SDXL's text_encoder_2 gave no pooled embedding; it must be a CLIPTextModelWithProjection")
    return TextConditioning(embeds, pooled)


def added_conditioning(
    model: Diffusion, pooled: Float[Tensor, "batch pooled"] | None, height: int, width: int
) -> dict[str, Any]:
    """The UNet's extra keyword arguments: ``{}`` for SD1.x / SD2.x; on SDXL ``added_cond_kwargs`` with
    ``text_embeds`` (the pooled embeddings of the batch, ``[uncond, cond]`` rows as the context) and
    ``time_ids`` = (height, width, 0, 0, height, width) per row, as the pipeline builds them by default.

    Methods with their own denoising loop pass it to ``model.unet(...)`` so they run on SDXL too.
    """
    if not model.is_sdxl:
        return {}
    if pooled is None:
        raise SettingError(
            "added_conditioning: an SDXL model needs the pooled text embeddings (encode_text(...).pooled)"
        )
    expected = model.unet.add_embedding.linear_1.in_features
    passed = model.unet.config.addition_time_embed_dim * 6 + int(model.text_encoder_2.config.projection_dim)
    if expected != passed:
        raise SettingError(
            f"SDXL UNet expects an added embedding of {expected} (projection_class_embeddings_input_dim) but "
            f"6 time ids x {model.unet.config.addition_time_embed_dim} + text_encoder_2's projection_dim give {passed}"
        )
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=pooled.dtype)
    time_ids = time_ids.to(model.device).repeat(pooled.shape[0], 1)
    return {"added_cond_kwargs": {"text_embeds": pooled.to(model.device), "time_ids": time_ids}}


def _ids(tokenizer: Any, prompts: Sequence[str], max_length: int, length: int | None) -> Tensor:
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return ids[:, : length or max_length]


def _penultimate(encoder: torch.nn.Module, ids: Tensor) -> tuple[Tensor, Any]:
    """The input of the encoder's last layer (= ``hidden_states[-2]``, with interventions applied) and its output."""
    from circuits.sites.instrument import text_layers_of

    seen: list[Tensor] = []
    handle = text_layers_of(encoder)[-1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        output = encoder(ids)
    finally:
        handle.remove()
    return seen[-1], output
