"""The attention processor circuits installs on every diffusers ``Attention`` module.

It computes exactly what ``AttnProcessor2_0`` computes (fused scaled-dot-product attention)
and adds two hook points per attention layer:

- ``<attn>.key_bias``: an additive bias on the attention logits, one value per batch row and key,
  ``[batch, keys]``. Passed through only when observed; setting entries to ``-inf`` masks those keys
  (the softmax renormalises over the rest) and keeps the fused kernel.
- ``<attn>.probs``: the attention probabilities ``[batch, heads, queries, keys]``. Materialised
  (explicit softmax and matmul) only when observed, so the fast path stays fused otherwise. The
  queries are image positions flattened row by row; before each call the processor sets
  ``probs.grid = (height, width)``, read from a 4-D input or, for the 3-D input of a transformer
  block, from the latent size of the UNet call in progress (:func:`query_grid`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from circuits.sites.hook_point import HookPoint


def query_grid(queries: int, latent_hw: tuple[int, int] | None) -> tuple[int, int] | None:
    """The ``(height, width)`` of a UNet level with ``queries`` positions, for a latent of ``latent_hw``.

    Each UNet level halves the latent with a stride-2 convolution (padding 1, so odd sides round
    up). Without the latent size only a square grid can be inferred.
    """
    if latent_hw is not None:
        height, width = latent_hw
        while True:
            if height * width == queries:
                return (height, width)
            if height * width < queries or (height == 1 and width == 1):
                break
            height, width = -(-height // 2), -(-width // 2)
    side = math.isqrt(queries)
    return (side, side) if side * side == queries else None


class CircuitsAttnProcessor:
    """SDPA attention with ``key_bias`` and ``probs`` hook points."""

    def __init__(self) -> None:
        #: ``(height, width)`` of the latent of the UNet call in progress, set by a pre-hook on the UNet
        self.latent_hw: tuple[int, int] | None = None

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        grid = None
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            grid = (height, width)
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        key_bias: HookPoint = attn.key_bias
        if key_bias.observed:
            bias = key_bias(query.new_zeros(batch_size, key.shape[2]))
            bias = bias[:, None, None, :]
            attention_mask = bias if attention_mask is None else attention_mask + bias

        probs_point: HookPoint = attn.probs
        if probs_point.observed:
            probs_point.grid = grid or query_grid(query.shape[2], self.latent_hw)
            scale = 1.0 / math.sqrt(head_dim)
            logits = torch.matmul(query, key.transpose(-1, -2)) * scale
            if attention_mask is not None:
                logits = logits + attention_mask
            probs = probs_point(logits.softmax(dim=-1))
            hidden_states = torch.matmul(probs.to(value.dtype), value)
        else:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
