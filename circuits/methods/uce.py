"""UCE: unified concept editing of the cross-attention key/value projections (the baseline).

Gandikota et al., "Unified Concept Editing in Diffusion Models" (WACV 2024). The default is the
authors' main path, ``train-scripts/train_erase.py`` (``edit_model`` as its ``__main__`` calls it),
for every cross-attention ``to_k`` and ``to_v`` of the UNet::

    W* = (lamb W_o + e sum W_o y x^T + p sum W_o c c^T) (lamb I + e sum x x^T + p sum c c^T)^-1

``x`` are the text encoder's outputs of the target prompts (templates x target word and synonyms),
``y`` the anchor prompts' at the paired positions, ``c`` the retained prompts' (mapped onto
themselves). As the code does:

- ``lamb = 0.5`` (``Config.reg``; the ``__main__`` call passes ``lamb=0.5``), ``e = erase_scale = 1``;
- positions ``"word_to_end"``: from the word's last sub-token to the end of the padded sequence,
  paired with the anchor's from its word's last sub-token (``[SoT]`` for an empty anchor, which the
  code encodes as ``' '``), :mod:`circuits.methods.features`;
- retained prompts are always ``['']`` plus the preservation prompts (``retain_texts = [''] +
  preserve_concepts``), every one at every position of the padded sequence, with
  ``p = preserve_scale = max(0.1, 1 / len(retain_texts))`` (1.0 when no prompt is preserved, 0.1 from
  nine on); the null text keeps the unconditional branch of classifier-free guidance in place.

Where the code is silent, because it has no such notion: synonyms are fitted like the target word
(``Concept.pairs``); templates whose word is not the last one start at the word, not at the prompt's
last token (the code's ``attention_mask.sum() - 2`` is the word's last piece for all its templates).

:meth:`Config.eq2` is UCE as the ErasePro paper prints it (Eq. 1-2: ``lambda = 1``, no retained
prompts, word and [EoT] positions), kept because ErasePro's Eq. 3 residual is stated for it.
:meth:`Config.pocket` holds the settings measured on the pocket model (``fit`` picks them there).

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
    ConfigError,
    LayerFeatures,
    config_dict,
    cross_attention_params,
    defaults_note,
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
    """UCE settings; the field defaults are the authors' main path (``train_erase.py``)."""

    #: cross-attention projections to edit (the code: ``to_v`` and, with ``with_to_k=True``, ``to_k``)
    projections: tuple[str, ...] = ("to_k", "to_v")
    #: which token positions of target and anchor pair up (see circuits.methods.features)
    positions: Positions = "word_to_end"
    #: k for positions="first_k"
    k: int = 5
    #: lamb, the weight of ||W - W_o||^2 (the code's __main__: 0.5)
    reg: float = 0.5
    #: weight of the erase term (the code: erase_scale, default 1)
    erase_scale: float = 1.0
    #: keep the concept's preservation prompts (the code: --preserve_concepts)
    preservation: bool = True
    #: always keep the empty prompt '' too (the code: retain_texts = [''] + preserve_concepts)
    null_text: bool = True
    #: weight of the retained prompts; None: the code's max(0.1, 1 / number of retained prompts)
    preserve_scale: float | None = None
    #: positions of the retained prompts that are kept (the code: every position of the padded sequence)
    preserve_positions: Positions = "all"
    #: fit on the synonym prompts too
    synonyms: bool = True

    @classmethod
    def paper(cls) -> "Config":
        """The authors' main path (the field defaults)."""
        return cls()

    @classmethod
    def eq2(cls) -> "Config":
        """UCE as ErasePro's Eq. 1-2 prints it: lambda 1, no retained prompt, the word and every [EoT]."""
        return cls(positions="keyword+eot", reg=1.0, preservation=False, null_text=False, preserve_scale=0.0,
                   preserve_positions="keyword+eot")

    @classmethod
    def pocket(cls) -> "Config":
        """Settings for the pocket model: the authors' path, which reaches each concept's floor (the rate
        at which pocket draws it unasked) on most of them while keeping 0.85-1.00 of preservation
        (every colour, shape and texture measured: ``docs/recipes/uce.md``)."""
        return cls()

    def retained_scale(self, count: int) -> float:
        """The preservation weight for ``count`` retained prompts (the code's rule when ``preserve_scale`` is None)."""
        if self.preserve_scale is not None:
            return self.preserve_scale
        return max(0.1, 1.0 / count) if count else 0.0


def _check(config: Config) -> None:
    check_positions(config.positions, "uce.Config")
    check_positions(config.preserve_positions, "uce.Config.preserve_positions")
    if config.reg <= 0:
        raise ConfigError(f"uce.Config: reg={config.reg} must be > 0 (UCE's lamb; the authors use 0.5)")
    if config.erase_scale <= 0:
        raise ConfigError(f"uce.Config: erase_scale={config.erase_scale} must be > 0 (the authors use 1)")
    if config.preserve_scale is not None and config.preserve_scale < 0:
        raise ConfigError(f"uce.Config: preserve_scale={config.preserve_scale} must be >= 0 or None")


def retained_prompts(concept: Concept, config: Config) -> list[str]:
    """The prompts kept in place: ``''`` (with ``null_text``) and the concept's preservation prompts."""
    prompts = [""] if config.null_text else []
    if config.preservation:
        prompts += [p for p in concept.preservation if p not in prompts]
    return prompts


def features(model: Diffusion, concept: Concept, config: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``X``, ``Y`` ``[dim, N]`` and the retained columns ``C`` ``[dim, M]`` (text-encoder outputs), unweighted."""
    pairs = concept.pairs(synonyms=config.synonyms)
    x, y = pair_columns(model, pairs, config.positions, config.k)
    kept = retained_prompts(concept, config)
    if not kept or config.retained_scale(len(kept)) == 0:
        return x, y, x.new_zeros(x.shape[0], 0)
    return x, y, preservation_columns(model, kept, config.preserve_positions, config.k)


def fit(model: Diffusion, concept: Concept | str, config: Config | None = None, **overrides) -> Erasure:
    """UCE on every cross-attention K/V (the authors' closed form); returns the edits as an :class:`Erasure`.

    With no ``config``, ``Config.pocket()`` on the pocket model and ``Config.paper()`` elsewhere.
    """
    note = defaults_note(Config, model, config)
    config = resolve_config(Config, config, overrides, model)
    _check(config)
    concept = prepare(model, concept)
    start = time.perf_counter()
    x, y, c = features(model, concept, config)
    retained = len(retained_prompts(concept, config))
    erase, keep = math.sqrt(config.erase_scale), math.sqrt(config.retained_scale(retained))
    # lamb W + W (e Y X^T + p C C^T) = W (lamb I + Y' X'^T) with X' = [sqrt(e) X, sqrt(p) C] and
    # Y' = [sqrt(e) Y, sqrt(p) C]: one d x d map M for every K/V, W* = W_o M
    inputs, anchors = torch.cat([erase * x, keep * c], dim=1), torch.cat([erase * y, keep * c], dim=1)
    amap = AnchorMap.fit(inputs, anchors, reg=config.reg)
    stats = LayerFeatures(x, x, y, amap)  # the text encoder is not edited: inputs are the same before and after
    graph, trace = Graph(), []
    for index, param in enumerate(cross_attention_params(model, config.projections)):
        weight = model.parameter(param).detach()
        delta = amap.delta(weight)
        graph.append(WeightEdit(param, delta=delta))
        trace.append(stats.row(param, weight, delta, layer=index // len(config.projections), stage="unet"))
    notes = [note, f"retained prompts: {retained} (weight {config.retained_scale(retained):g})"]
    return Erasure("uce", concept, config_dict(config), graph, trace, notes=notes, seconds=time.perf_counter() - start)
