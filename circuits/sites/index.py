"""Site names, glob patterns and selectors.

A site is a module's dotted path as in the state dict, prefixed by its component:
``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2`` or
``text_encoder.encoder.layers.3``, plus the hook points that :mod:`circuits.sites.instrument` adds.
transformers 5 dropped the ``text_model`` level of ``CLIPTextModel``; names written the SD /
transformers 4 way (``text_encoder.text_model.encoder.layers.3``) are accepted as aliases. SDXL's
second encoder is ``text_encoder_2`` (a ``CLIPTextModelWithProjection``, which keeps the
``text_model`` level: ``text_encoder_2.text_model.encoder.layers.3``, also written without it). The
value of a site is the module's output (for hook points, the value they name). Patterns use
shell globs where ``*`` also spans dots: ``unet.*attn2``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from circuits.errors import SiteError

Role = Literal["probs", "key_bias", "cross_kv", "text", "unet"]
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2")
# (as written, as the model may spell it): transformers 5 dropped CLIPTextModel's ``text_model`` level, while
# SDXL's CLIPTextModelWithProjection keeps it (``text_encoder_2.text_model.encoder...``): either spelling works
_TEXT_ALIASES = tuple(
    pair for c in TEXT_COMPONENTS for pair in ((f"{c}.text_model.", f"{c}."), (f"{c}.", f"{c}.text_model."))
)


@dataclass(frozen=True)
class SiteInfo:
    """What a site's value looks like.

    ``token_dim`` is the dimension that indexes text tokens (where ``tokens=`` scopes apply), or
    ``None`` when the site's positions are not tokens (UNet spatial positions).
    """

    name: str
    role: Role
    is_cross_attention: bool = False

    def token_dim(self, ndim: int) -> int | None:
        if self.role == "probs":
            return 3 if self.is_cross_attention else None
        if self.role == "key_bias":
            return 1 if self.is_cross_attention else None
        if self.role in ("cross_kv", "text"):
            return 1 if ndim >= 3 else None
        return None

    def axes(self, ndim: int) -> tuple[str, ...]:
        """Names of the value's dimensions, used by capture reductions."""
        if self.role == "probs":
            return ("batch", "heads", "queries", "keys")
        if self.role == "key_bias":
            return ("batch", "keys")
        if ndim == 3:
            return ("batch", "tokens" if self.token_dim(ndim) == 1 else "positions", "channels")
        if ndim == 4:
            return ("batch", "channels", "height", "width")
        return ("batch",) + tuple(f"dim{i}" for i in range(1, ndim))


class SiteIndex:
    """All sites of a model; call it with a pattern to list names."""

    def __init__(self, components: dict[str, nn.Module]) -> None:
        self._modules: dict[str, nn.Module] = {}
        self._info: dict[str, SiteInfo] = {}
        from diffusers.models.attention_processor import Attention

        for component, root in components.items():
            for path, module in root.named_modules():
                if not path:
                    continue
                name = f"{component}.{path}"
                self._modules[name] = module
        for name in self._modules:
            parent_name, _, leaf = name.rpartition(".")
            parent = self._modules.get(parent_name)
            is_cross = isinstance(parent, Attention) and bool(parent.is_cross_attention)
            if name.startswith(tuple(f"{c}." for c in TEXT_COMPONENTS)):
                role: Role = "text"
            elif isinstance(parent, Attention) and leaf in ("probs", "key_bias"):
                role = leaf  # type: ignore[assignment]
            elif isinstance(parent, Attention) and leaf in ("to_k", "to_v") and is_cross:
                role = "cross_kv"
            else:
                role = "unet"
            self._info[name] = SiteInfo(name, role, is_cross)

    # -- listing -------------------------------------------------------------------------
    def __call__(self, pattern: str | None = None) -> list[str]:
        """Every site name, or those matching a glob ``pattern`` (``*`` spans dots)."""
        if pattern is None:
            return list(self._modules)
        matched = [n for n in self._modules if fnmatch.fnmatchcase(n, pattern)]
        alias = self._alias(pattern)
        if not matched and alias is not None:
            matched = [n for n in self._modules if fnmatch.fnmatchcase(n, alias)]
        return matched

    def __contains__(self, name: object) -> bool:
        return name in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    @staticmethod
    def _alias(name: str) -> str | None:
        """The other spelling of a text-encoder name (with or without transformers 4's ``text_model``)."""
        for written, real in _TEXT_ALIASES:
            if name.startswith(written):
                return real + name[len(written) :]
        return None

    def canonical(self, name: str) -> str:
        """Map the ``text_model`` alias to the model's own spelling (either direction)."""
        if name in self._modules:
            return name
        alias = self._alias(name)
        return alias if alias is not None and alias in self._modules else name

    def resolve(self, pattern: str) -> list[str]:
        """Names for an exact site or a glob; raises :class:`SiteError` naming close matches."""
        if not isinstance(pattern, str) or not pattern:
            raise SiteError(f"site must be a non-empty string, got {pattern!r}")
        pattern = self.canonical(pattern)
        if pattern in self._modules:
            return [pattern]
        if any(c in pattern for c in "*?["):
            matched = self(pattern)
            if matched:
                return matched
        raise SiteError(self._unknown_message(pattern))

    def module(self, name: str) -> nn.Module:
        name = self.canonical(name)
        if name not in self._modules:
            raise SiteError(self._unknown_message(name))
        return self._modules[name]

    def info(self, name: str) -> SiteInfo:
        self.module(name)
        return self._info[self.canonical(name)]

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._modules), n=5, cutoff=0.6)
        if not close:
            stem = name.replace("*", "")
            close = [n for n in self._modules if stem and stem.split(".")[-1] in n][:5]
        hint = ("closest real sites: " + ", ".join(close)) if close else "list them with model.sites()"
        if not name.startswith(COMPONENTS):
            hint += "; site names start with 'unet.', 'text_encoder.' or (SDXL) 'text_encoder_2.'"
        return f"unknown site {name!r}: {hint}"

    def materialize(self, pattern: str, enabled: bool = True) -> list[str]:
        """Compute the value of lazy hook points (``probs``, ``key_bias``) even without torch hooks.

        Circuits' own interventions never need this; a tracer that reads modules by replacing
        ``forward`` (nnsight) does. Returns the hook points switched.
        """
        from circuits.sites.hook_point import HookPoint

        switched = []
        for name in self.resolve(pattern):
            module = self._modules[name]
            if not isinstance(module, HookPoint):
                raise SiteError(f"{name!r} is not a hook point; materialize() takes e.g. 'unet.*attn2.probs'")
            module.always = enabled
            switched.append(name)
        return switched

    # -- selectors -----------------------------------------------------------------------
    def _attention(self, cross: bool) -> list[str]:
        from diffusers.models.attention_processor import Attention

        return [
            n
            for n, m in self._modules.items()
            if n.startswith("unet.") and isinstance(m, Attention) and bool(m.is_cross_attention) == cross
        ]

    def cross_attention(self) -> list[str]:
        """Every cross-attention layer of the UNet (``attn2`` in SD)."""
        return self._attention(cross=True)

    def self_attention(self) -> list[str]:
        """Every self-attention layer of the UNet (``attn1`` in SD, and the mid-block attention)."""
        return self._attention(cross=False)

    def attention_probs(self, cross: bool = True) -> list[str]:
        """The ``probs`` hook point of each cross- (or self-) attention layer."""
        return [f"{n}.probs" for n in self._attention(cross) if f"{n}.probs" in self._modules]

    def ffn_hidden(self) -> list[str]:
        """The FFN hidden activation (input of ``ff.net.2``) of every transformer block."""
        return [n for n in self._modules if n.startswith("unet.") and n.endswith(".ff.hidden")]

    def text_layers(self, encoder: str = "text_encoder") -> list[str]:
        """Every layer of a text encoder (its output is the residual stream after it); ``encoder=
        "text_encoder_2"`` for SDXL's second (OpenCLIP bigG) encoder."""
        if encoder not in TEXT_COMPONENTS:
            raise SiteError(f"text_layers(encoder={encoder!r}): use one of {TEXT_COMPONENTS}")
        prefix = self.canonical(f"{encoder}.encoder.layers.0")[: -len("0")]
        return [n for n in self._modules if n.startswith(prefix) and n[len(prefix):].isdigit()]

    def text_residual(self, encoder: str = "text_encoder") -> list[str]:
        """The ``resid_post`` hook point after every layer of a text encoder."""
        return [f"{n}.resid_post" for n in self.text_layers(encoder)]


def expand(index: SiteIndex, patterns: Iterable[str]) -> list[str]:
    """Resolve several names/patterns, keeping order and dropping repeats."""
    out: list[str] = []
    for pattern in patterns:
        for name in index.resolve(pattern):
            if name not in out:
                out.append(name)
    return out
