"""``ZeroTokens``: zero the attention columns of chosen text tokens in cross-attention layers.

A composite: it expands into primitives on hook sites of each attention layer, so the fused
SDPA kernel is kept.

- ``renormalize=False``: zeroing column j of the attention matrix removes ``p_ij * v_j`` from
  every output row, which is exactly zeroing row j of V: ``Ablate(<attn>.to_v, tokens=...)``.
- ``renormalize=True``: zeroing the columns and renormalising each row is a softmax over the
  remaining keys, i.e. masking those keys: ``Replace(<attn>.key_bias, -inf, tokens=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from circuits.errors import ScopeError
from circuits.interventions.activation import Ablate, Replace
from circuits.interventions.base import Intervention

if TYPE_CHECKING:
    from circuits.models.diffusion import Diffusion


@dataclass(eq=False)  # equality: Intervention.__eq__ (tensor-aware)
class ZeroTokens(Intervention):
    """Zero attention to ``tokens`` at cross-attention ``site`` (a name or a glob)."""

    site: str
    renormalize: bool = False
    kind = "zero_tokens"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tokens is None:
            raise ScopeError(f"{self.describe()}: tokens= is required (e.g. tokens='eot_all')")

    def expand(self, model: "Diffusion") -> list[Intervention]:
        from diffusers.models.attention_processor import Attention

        parts: list[Intervention] = []
        for site in model.sites.resolve(self.site):
            module = model.sites.module(site)
            if not isinstance(module, Attention) or not module.is_cross_attention:
                raise ScopeError(
                    f"{self.describe()}: {site!r} is not a cross-attention layer; ZeroTokens acts on text tokens, "
                    f"so use one of model.sites.cross_attention() (e.g. {model.sites.cross_attention()[:1]})"
                )
            if self.renormalize:
                part: Intervention = Replace(f"{site}.key_bias", torch.tensor(float("-inf")), **self.scope_kwargs())
            else:
                part = Ablate(f"{site}.to_v", mode="zero", **self.scope_kwargs())
            part._parent = self
            parts.append(part)
        return parts
