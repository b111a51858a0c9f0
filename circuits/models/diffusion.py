"""The :class:`Diffusion` object: one Stable Diffusion model, instrumented for circuits.

It holds the real diffusers/transformers components (nothing is re-implemented) and an index
of their sites. ``circuits.load`` builds it; interventions and the sampler take it.

SDXL carries a second tokenizer and text encoder (``tokenizer_2``, ``text_encoder_2``: OpenCLIP
bigG with a projection, whose pooled output conditions the UNet with the time ids). Both
tokenizers share one BPE and differ only in padding, so token positions (``circuits.tokens``) read
from ``model.tokenizer`` are the positions of either encoder and of the UNet's 2048-wide context.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from circuits.concept import Concept
from circuits.errors import ModelLoadError, SettingError, SiteError
from circuits.pocket.concepts import concept as pocket_concept
from circuits.sites.index import SiteIndex
from circuits.sites.instrument import instrument_text_encoder, instrument_unet


def _require_added_conditioning(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """SDXL's UNet called without its added conditioning: a clear error instead of diffusers' ``TypeError:
    argument of type 'NoneType' is not iterable`` (a denoising loop written for SD1.x / SD2.x)."""
    added = kwargs.get("added_cond_kwargs")
    if not added or "text_embeds" not in added or "time_ids" not in added:
        raise SettingError(
            "this SDXL UNet was called without added_cond_kwargs (text_embeds, time_ids): a denoising loop written "
            "for SD1.x / SD2.x. Encode with circuits.sampling.encode_text (context and pooled embedding) and pass "
            "**circuits.sampling.added_conditioning(model, pooled, height, width) to model.unet(...)"
        )


@dataclass(eq=False)
class Diffusion:
    """A text-to-image diffusion model: tokenizer, text encoder, UNet, VAE and scheduler.

    ``sites`` lists and selects hook sites: ``model.sites("unet.*attn2")``,
    ``model.sites.cross_attention()``, ``model.sites.ffn_hidden()``, ``model.sites.text_layers()``.
    """

    tokenizer: Any
    text_encoder: nn.Module
    unet: nn.Module
    vae: nn.Module
    scheduler: Any
    source: str = "<pipeline>"
    #: the concept a word names on this model (``model.concepts("red")``), for methods given a bare
    #: word; the pocket model's are its world's colours, shapes and textures; ``None``: none by name
    concepts: Callable[[str], Concept] | None = field(default=None, repr=False)
    #: SDXL's second tokenizer and text encoder (``None`` for SD1.x / SD2.x)
    tokenizer_2: Any = field(default=None, repr=False)
    text_encoder_2: nn.Module | None = field(default=None, repr=False)
    #: SDXL: an absent negative prompt is a zero context (diffusers' pipeline option of that name)
    force_zeros_for_empty_prompt: bool = field(default=True, repr=False)
    sites: SiteIndex = field(init=False, repr=False)
    #: intervention runs applied right now (the sampler checks their scopes against its schedule)
    active_runs: list[Any] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.concepts is None and self.source == "pocket":
            self.concepts = pocket_concept
        instrument_unet(self.unet)
        if (self.tokenizer_2 is None) != (self.text_encoder_2 is None):
            raise ModelLoadError(
                "Diffusion: give tokenizer_2 and text_encoder_2 together (SDXL) or neither (SD1.x / SD2.x)"
            )
        for encoder in self.text_encoders.values():
            instrument_text_encoder(encoder)
        if getattr(self.unet.config, "addition_embed_type", None) == "text_time" and not getattr(
            self.unet, "_circuits_checks_added_cond", False
        ):
            self.unet.register_forward_pre_hook(_require_added_conditioning, with_kwargs=True)
            self.unet._circuits_checks_added_cond = True
        for component in self._modules():
            component.eval()
        self.sites = SiteIndex({"unet": self.unet, **self.text_encoders})

    @property
    def text_encoders(self) -> dict[str, nn.Module]:
        """The text encoders by site prefix: ``{"text_encoder": ...}``, plus ``"text_encoder_2"`` on SDXL."""
        encoders = {"text_encoder": self.text_encoder}
        if self.text_encoder_2 is not None:
            encoders["text_encoder_2"] = self.text_encoder_2
        return encoders

    @property
    def is_sdxl(self) -> bool:
        """Two text encoders and the UNet's added text-time conditioning (pooled embedding, time ids)."""
        return self.text_encoder_2 is not None

    def _modules(self) -> list[nn.Module]:
        return [self.unet, *self.text_encoders.values(), self.vae]

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def family(self) -> str:
        """Which kind of model this is, for defaults that depend on it: ``"pocket"`` (the built-in
        model), ``"sd1"`` (768-wide context), ``"sd2"`` (1024), ``"sdxl"`` (added text-time
        conditioning) or ``"sd"`` (any other shape: tiny test pipelines, custom widths)."""
        if self.source == "pocket":
            return "pocket"
        config = self.unet.config
        if getattr(config, "addition_embed_type", None) == "text_time":
            return "sdxl"
        return {768: "sd1", 1024: "sd2"}.get(int(config.cross_attention_dim), "sd")

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        """Image side length the UNet was configured for."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def parameter(self, name: str) -> nn.Parameter:
        """A parameter by its prefixed state-dict name, e.g. ``unet.conv_in.weight``."""
        module_path, _, leaf = name.rpartition(".")
        if module_path:
            name = f"{self.sites.canonical(module_path)}.{leaf}"
        component, _, path = name.partition(".")
        roots = {"unet": self.unet, **self.text_encoders}
        root = roots.get(component)
        if root is not None:
            try:  # walks the module path: no dict of every parameter per lookup (SD1.5 has ~1,000)
                return root.get_parameter(path)
            except AttributeError:
                pass
        all_names = [f"{prefix}.{n}" for prefix, module in roots.items() for n, _ in module.named_parameters()]
        close = difflib.get_close_matches(name, all_names, n=5, cutoff=0.6)
        hint = ("closest: " + ", ".join(close)) if close else "names start with " + " or ".join(map(repr, roots))
        raise SiteError(f"unknown parameter {name!r}: {hint}")

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Diffusion":
        for component in self._modules():
            component.to(device=device, dtype=dtype)
        return self

    def pipeline(self):
        """A ``StableDiffusionPipeline`` (``StableDiffusionXLPipeline`` on SDXL) sharing these components
        (for diffusers-native use)."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        if self.is_sdxl:
            return StableDiffusionXLPipeline(
                vae=self.vae, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2,
                tokenizer=self.tokenizer, tokenizer_2=self.tokenizer_2, unet=self.unet, scheduler=self.scheduler,
                add_watermarker=False,
            )  # fmt: skip
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def __repr__(self) -> str:
        n_unet = sum(p.numel() for p in self.unet.parameters()) / 1e6
        n_text = sum(p.numel() for e in self.text_encoders.values() for p in e.parameters()) / 1e6
        text = "text_encoders" if self.is_sdxl else "text_encoder"
        return (
            f"Diffusion(source={self.source!r}, unet={n_unet:.1f}M params, {text}={n_text:.1f}M params, "
            f"scheduler={type(self.scheduler).__name__}, device={self.device}, dtype={self.dtype}, "
            f"sites={len(self.sites)})"
        )
