"""Attach circuits' hook points to a UNet and a CLIP text encoder (once, at load time).

Instrumenting adds parameter-free child modules (state dicts are unchanged) and a few permanent
forward hooks that route values through them, and swaps diffusers' default attention processor
for :class:`~circuits.sites.attention.CircuitsAttnProcessor`, which computes the same thing.

Hook points added (``<x>`` is a module path):

- ``unet.eps``: the UNet's noise prediction (``.sample`` of its output);
- ``unet.<attn>.probs`` / ``unet.<attn>.key_bias``: attention probabilities and key bias;
- ``unet.<block>.ff.hidden``: the FFN hidden activation, i.e. the input of ``ff.net.2``;
- ``text_encoder.encoder.layers.N.resid_post``: the residual stream after layer N (transformers 5
  paths; the SD-era spelling ``text_encoder.text_model.encoder...`` is accepted as an alias).

A pre-hook on the UNet tells the attention processor the latent size of each call, from which it
derives the query grid of ``probs`` (so captured probabilities can be read as maps).

Interventions are *not* installed here: they come and go with :func:`circuits.intervene`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from circuits.sites.attention import CircuitsAttnProcessor
from circuits.sites.hook_point import HookPoint

_MARK = "_circuits_instrumented"


def _replace_primary(output: Any, fn) -> Any:
    """Apply ``fn`` to the main tensor of a module output (tensor, tuple, or diffusers output)."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    if hasattr(output, "sample"):  # diffusers BaseOutput
        output.sample = fn(output.sample)
        return output
    if hasattr(output, "keys") and hasattr(output, "__setitem__"):  # transformers ModelOutput
        first = next(iter(output.keys()))
        output[first] = fn(output[first])
        return output
    raise TypeError(f"cannot find the tensor in a module output of type {type(output).__name__}")


def instrument_unet(unet: nn.Module) -> None:
    """Add hook points and the circuits attention processor to a ``UNet2DConditionModel``."""
    from diffusers.models.attention import FeedForward
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    if getattr(unet, _MARK, False):
        return
    processor = CircuitsAttnProcessor()
    for module in list(unet.modules()):
        if isinstance(module, Attention) and isinstance(module.processor, (AttnProcessor, AttnProcessor2_0)):
            module.add_module("probs", HookPoint())
            module.add_module("key_bias", HookPoint())
            module.set_processor(processor)
        elif isinstance(module, FeedForward):
            out_proj = _ffn_out_projection(module)
            module.add_module("hidden", HookPoint())
            out_proj.register_forward_pre_hook(_route_input_through(module.hidden))
    unet.add_module("eps", HookPoint())
    unet.register_forward_hook(lambda mod, args, out: _replace_primary(out, mod.eps))
    unet.register_forward_pre_hook(_remember_latent_size(processor), with_kwargs=True)
    setattr(unet, _MARK, True)


def instrument_text_encoder(text_encoder: nn.Module) -> None:
    """Add a ``resid_post`` hook point after every layer of a ``CLIPTextModel`` (or ``...WithProjection``)."""
    if getattr(text_encoder, _MARK, False):
        return
    for layer in text_layers_of(text_encoder):
        layer.add_module("resid_post", HookPoint())
        # prepend: transformers 5 records ``output_hidden_states`` with its own forward hooks on these layers,
        # installed when the model is built; ours must run first so the recorded hidden states carry what
        # interventions wrote (SDXL reads the penultimate layer's hidden state, not the last one)
        layer.register_forward_hook(lambda mod, args, out: _replace_primary(out, mod.resid_post), prepend=True)
    setattr(text_encoder, _MARK, True)


def text_layers_of(text_encoder: nn.Module) -> nn.ModuleList:
    """The encoder layers of a CLIP text model (transformers 5 dropped the ``text_model`` level)."""
    root = getattr(text_encoder, "text_model", text_encoder)
    return root.encoder.layers


def _ffn_out_projection(ff: nn.Module) -> nn.Linear:
    linears = [m for m in ff.net if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError("FeedForward without an output nn.Linear: cannot place the ff.hidden hook point")
    return linears[-1]


def _remember_latent_size(processor: CircuitsAttnProcessor):
    """Pre-hook telling the attention processor the latent size of each UNet call (for probs grids)."""

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs.get("sample")
        processor.latent_hw = tuple(sample.shape[-2:]) if isinstance(sample, torch.Tensor) else None

    return pre_hook


def _route_input_through(point: HookPoint):
    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (point(args[0]), *args[1:])

    return pre_hook
