"""TRCE: textual semantic erasure (stage 1), trajectory steering (stage 2), and the [EoT] probes.

Chen et al., "TRCE: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion Models",
Sec. 4.1 (Eq. 4-5), Sec. 4.2 (Eqs. 6-9), App. A.3, App. B (Figs. 2 and 7).

``fit(model, concept)`` is the paper's TRCE, both stages: :func:`refine_kv` (closed form), then
:func:`~circuits.methods.trce_steering.steer` fine-tunes the stage-1 model's early denoising
predictions (see :mod:`circuits.methods.trce_steering`). ``stages=("text",)`` or
``stages=("trajectory",)`` runs one stage alone. ``Config.paper()`` holds the paper's settings (the
default on Stable Diffusion), ``Config.pocket()`` the ones measured for the pocket model (the default
there); the Erasure's notes say which were used.

- **Closed-form K/V refinement** (Eq. 4-5, normalised as App. C.1 says): every cross-attention
  ``to_k`` / ``to_v`` is refined so that the ``n`` malicious prompts' **first [EoT]** embedding ``e^m`` is
  projected like the safe prompt's ``e^s``, while the ``q`` preservation prompts keep theirs (weight
  ``eta``). Each sum is divided by its number of prompts ("the optimization term ... has been
  normalized, thereby eliminating the effect of the number of prompts"), so ``eta`` means the same
  for 10 prompts or 300::

      min_W' 1/n sum_i ||W' e^m_i - W e^s_i||^2 + eta/q sum_j ||W' e^k_j - W e^k_j||^2
      W' = (1/n sum W e^s e^m^T + eta/q sum W e^k e^k^T)(1/n sum e^m e^m^T + eta/q sum e^k e^k^T)^-1

  With ``A = [e^m / sqrt(n), sqrt(eta/q) e^k]`` and ``B = W [e^s / sqrt(n), sqrt(eta/q) e^k]`` this is
  ``min ||W' A - B||``, Eq. 5 when ``A A^T`` is invertible. The preservation term reads **every
  position** of each preservation prompt by default (``preservation_positions="all"``), as the
  authors' code does (MACE's cache of every token of COCO captions); with only the first [EoT] of
  each (the paper's sentence, ``"same"``) ``A A^T`` is singular unless there are more prompts than
  features, every equation can then be met, and ``eta`` has no effect. When ``A A^T`` is singular
  the least-squares solution nearest ``W`` is taken (``W + (B - W A) A^+``); the notes say so.
- Malicious prompts = templates x (target word and synonyms); safe prompts = the same templates
  with the anchor; preservation prompts = the concept's. The first [EoT] comes from the tokenizer,
  never from word counts (the official code uses ``len(prompt.split()) + 1``, which lands on a
  sub-word). Which positions are mapped is an option (``positions``): Table 4's rows are
  ``"eot"``, ``"keyword"``, ``"eot+key"``, ``"eot+sot"``, ``"eot+sot+key"`` at ``eta=0.001``.
- **Probes**: :func:`eot_probe` zeroes (or masks) the cross-attention to the last ``k`` [EoT]
  positions (both CFG branches by default; the paper does not say which branch it zeroed);
  :func:`eot_similarity` gives the cosine similarity of all token embeddings of a prompt (Fig. 7b).

- **Stage 2** (Sec. 4.2): trains the self-attention projections and the cross-attention ``to_q`` of
  the stage-1 model (stage 1's edits applied with ``intervene`` around training) against Eq. 8 on
  the malicious prompts' early trajectory steps plus ``lambda`` x Eq. 9 on null-text trajectories;
  the result holds stage 1's edits and stage 2's deltas, all ``WeightEdit`` s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.interventions.graph import Graph
from circuits.interventions.weight_edit import WeightEdit
from circuits.interventions.zero_tokens import ZeroTokens
from circuits.methods import trce_steering
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
    text_embeddings,
)
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.methods.features import Positions, check_positions
from circuits.methods.linalg import DEFAULT_RTOL, AnchorMap
from circuits.models.diffusion import Diffusion
from circuits.tokens import layout

STAGES = ("text", "trajectory")
PRESERVATION_POSITIONS = ("all", "same")


@dataclass(frozen=True)
class Config:
    """TRCE settings (field defaults: the paper's, Sec. 5.1 and App. A.3; :meth:`pocket` for the pocket model)."""

    #: which stages run, in order: "text" (Sec. 4.1, closed form) and/or "trajectory" (Sec. 4.2, fine-tune)
    stages: tuple[str, ...] = STAGES

    #: which token positions are mapped: the first [EoT] (the paper); Table 4: "keyword", "eot+key", "eot+sot",
    #: "eot+sot+key"; ours: "eot_all", "all", ...
    positions: Positions = "eot"
    #: k for positions="first_k"
    k: int = 5
    #: weight of the preservation term, after each sum is divided by its prompt count (App. A.3: 0.01; Table 4: 0.001)
    eta: float = 0.01
    #: positions of the preservation prompts kept: "all" (every position, as the authors' COCO cache) or "same"
    #: (those ``positions`` selects: the paper's "first [EoT] of each prompt")
    preservation_positions: Literal["all", "same"] = "all"
    #: cross-attention projections refined
    projections: tuple[str, ...] = ("to_k", "to_v")
    #: which cross-attention layers stage 1 refines: "all", or "encoder" (the UNet's down blocks only: App. F's
    #: setting for SDXL, "to reduce computational cost and minimize the impact on model capacity")
    stage1_layers: Literal["all", "encoder"] = "all"
    #: singular values below rtol * largest count as zero when A A^T is singular
    rtol: float = DEFAULT_RTOL
    #: fit on the synonym prompts too (the paper's concept augmentation; stage 2's malicious prompts too)
    synonyms: bool = True

    # -- stage 2: denoising-trajectory steering (Sec. 4.2, App. A.3) --
    #: guidance scale beta of the enhanced targets f_safe / f_unsafe (Eqs. 6-7; Table 8: 15)
    beta: float = 15.0
    #: weight lambda of the preservation loss (Eq. 9; 100)
    preserve_weight: float = 100.0
    #: Eq. 9's reference null prediction: "original" (the paper's epsilon_theta) or "stage1" (the authors' code)
    preserve_reference: Literal["original", "stage1"] = "original"
    #: margin of the triplet loss (Eq. 8; 0.01), on squared distances taken as means over latent elements
    margin: float = 0.01
    #: Adam learning rate (1e-6; does nothing measurable on pocket, see pocket())
    lr: float = 1e-6
    #: epochs over the malicious trajectories (3)
    epochs: int = 3
    #: malicious trajectories cached, cycling through the target prompts (100 for one concept)
    trajectories: int = 100
    #: null-text trajectories for the preservation term (2000; only the sampled ones are generated)
    null_trajectories: int = 2000
    #: erase steps are drawn from this first fraction of the sampling steps (50%: steps 0-24 of 50)
    early_fraction: float = 0.5
    #: DDIM steps of the cached trajectories (50); preservation steps are drawn from all of them
    sample_steps: int = 50
    #: scheduler of the cached trajectories (DDIM)
    scheduler: str = "ddim"
    #: CFG scale the malicious trajectories are sampled with (not stated in the paper: SD's 7.5)
    guidance_scale: float = 7.5
    #: trajectories (malicious rows; null rows) per training step (not stated in the paper: 1)
    batch_size: int = 1
    #: prompts per sampling call while caching (noise is drawn per call from seed + call index)
    cache_batch: int = 8
    #: seeds the trajectories' noise, the epoch order and every step's draws
    seed: int = 0

    @classmethod
    def paper(cls) -> Config:
        """The paper's settings (Sec. 5.1, App. A.3): the field defaults."""
        return cls()

    @classmethod
    def sdxl(cls) -> Config:
        """App. F on SD-XL: stage 1 on the UNet encoder's cross-attention only. Stage 2 keeps Sec. A.3's
        settings; the paper fine-tunes it with LoRA there, circuits with its usual full-weight steps on
        the same layers (``docs/recipes/trce.md``)."""
        return cls(stage1_layers="encoder")

    @classmethod
    def pocket(cls) -> Config:
        """The paper's TRCE with the settings measured for the pocket model (docs/recipes/trce.md).

        - ``lr=1e-4``: the paper's 1e-6 moves pocket's 390k visual parameters by ||delta|| = 0.03 in 300 steps
          and leaves every oracle read of the ``red`` report unchanged; 1e-5 (||delta|| = 0.27) moves the
          target rate by one image in 32; 1e-4 (||delta|| = 1.5) is the smallest rate that acts.
        - ``sample_steps=25``: pocket samples with 25 DDIM steps, so the trained timesteps are the ones
          used (and caching costs half).
        - ``cache_batch=32``: fewer, larger sampling calls on the CPU (changes only which noise is drawn).
        """
        return cls(lr=1e-4, sample_steps=25, cache_batch=32)


def pocket() -> Config:
    """``Config.pocket()`` (kept as a module-level name for older code)."""
    return Config.pocket()


def check(config: Config) -> None:
    """A clear error for a config no stage can run."""
    bad = [s for s in config.stages if s not in STAGES]
    if bad or not config.stages or len(set(config.stages)) != len(config.stages):
        raise ConfigError(f"trce.Config.stages={config.stages!r}: give one or both of {STAGES}, each once")
    check_positions(config.positions, "trce.Config")
    if config.stage1_layers not in ("all", "encoder"):
        raise ConfigError(f"trce.Config.stage1_layers={config.stage1_layers!r}: give 'all' (every cross-attention) "
                          "or 'encoder' (the UNet's down blocks, App. F on SDXL)")
    if config.preservation_positions not in PRESERVATION_POSITIONS:
        raise ConfigError(f"trce.Config.preservation_positions={config.preservation_positions!r}: give one of "
                          f"{PRESERVATION_POSITIONS} (every position of each preservation prompt, or those "
                          "`positions` selects)")
    if config.preserve_reference not in ("original", "stage1"):
        raise ConfigError(f"trce.Config.preserve_reference={config.preserve_reference!r}: give 'original' (Eq. 9) "
                          "or 'stage1' (the authors' code)")
    if config.eta < 0:
        raise ConfigError(f"trce.Config.eta={config.eta!r} must be >= 0")
    positive = {"lr": config.lr, "epochs": config.epochs, "trajectories": config.trajectories,
                "null_trajectories": config.null_trajectories, "sample_steps": config.sample_steps,
                "batch_size": config.batch_size, "cache_batch": config.cache_batch}
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f"trce.Config.{name}={value!r} must be > 0")
    if not 0 < config.early_fraction <= 1:
        raise ConfigError(f"trce.Config.early_fraction={config.early_fraction!r}: give a fraction in (0, 1]")
    if config.guidance_scale <= 1:
        raise ConfigError(f"trce.Config.guidance_scale={config.guidance_scale!r}: the malicious trajectories need "
                          "CFG (> 1), whose unconditional branch Eqs. 6-7 read")
    if config.margin < 0 or config.preserve_weight < 0:
        raise ConfigError("trce.Config.margin and preserve_weight must be >= 0")


def stage1_columns(
    model: Diffusion, concept: Concept, config: Config
) -> tuple[Float[Tensor, "d n"], Float[Tensor, "d n"], int, float]:
    """``A`` and ``Y`` (``B = W Y``) of Eq. 4 as weighted columns (App. C.1's normalisation), how many of
    the columns are malicious ones (they come first; the preservation columns follow), and their weight.

    The malicious columns are divided by ``sqrt(n)`` (``n`` prompt pairs) and the preservation columns
    multiplied by ``sqrt(eta / q)`` (``q`` preservation prompts), so ``A A^T`` is the bracket Eq. 5 inverts
    with both sums normalised. A mode that maps several positions per prompt (Table 4's [EoT]+[SoT]) adds
    them within the prompt's term, as the authors' code does.
    """
    pairs = concept.pairs(synonyms=config.synonyms)
    malicious, safe = pair_columns(model, pairs, config.positions, config.k)
    preserved = malicious.new_zeros(malicious.shape[0], 0)
    prompts = list(concept.preservation)
    if prompts and config.eta > 0:
        where = "all" if config.preservation_positions == "all" else config.positions
        preserved = preservation_columns(model, prompts, where, config.k)
    erase, keep = 1.0 / math.sqrt(len(pairs)), math.sqrt(config.eta / max(len(prompts), 1))
    inputs = torch.cat([erase * malicious, keep * preserved], dim=1)
    wanted = torch.cat([erase * safe, keep * preserved], dim=1)
    return inputs, wanted, malicious.shape[1], erase


def stage1_params(model: Diffusion, config: Config) -> list[str]:
    """The K/V weights stage 1 refines: every cross-attention's, or (``stage1_layers="encoder"``) those of the
    UNet's down blocks."""
    params = cross_attention_params(model, config.projections)
    if config.stage1_layers == "encoder":
        params = [p for p in params if ".down_blocks." in p]
        if not params:
            raise ConfigError("trce.Config.stage1_layers='encoder' (the SDXL default, Config.sdxl()): this UNet has "
                              "no cross-attention in its down blocks; use stage1_layers='all'")
    return params


def refine_kv(model: Diffusion, concept: Concept, config: Config) -> tuple[Graph, list[dict], list[str]]:
    """Eq. 5 (normalised) on the cross-attention K/V of :func:`stage1_params`: the edits, a trace row per
    projection, and notes."""
    inputs, wanted, split, weight = stage1_columns(model, concept, config)
    graph, rows, notes = Graph(), [], []
    amap = AnchorMap.fit(inputs, wanted, reg=0.0, rtol=config.rtol)  # one W' = W M for every K/V
    # the trace's distances are read on the embeddings themselves, without the 1/sqrt(n) weight
    target, anchor = inputs[:, :split] / weight, wanted[:, :split] / weight
    erased = LayerFeatures(target, target, anchor, amap)
    preserved = inputs[:, split:]
    kept = LayerFeatures(preserved, preserved, preserved, amap) if preserved.shape[1] else None
    for number, param in enumerate(stage1_params(model, config)):
        weight = model.parameter(param).detach()
        delta = amap.delta(weight)
        graph.append(WeightEdit(param, delta=delta))
        row = erased.row(param, weight, delta, stage="unet", layer=number // len(config.projections))
        row["preservation_change"] = kept.row(param, weight, delta)["residual"] if kept is not None else 0.0
        rows.append(row)
    features = inputs.shape[0]
    rank = rows[0]["rank"] if rows else 0
    if rank < features:
        exact = rank == inputs.shape[1]
        notes.append(
            f"A A^T is singular (rank {rank} of {features} features, {inputs.shape[1]} columns): solved by least "
            "squares nearest W (W + (B - W A) A^+)"
            + ("; every equation is met exactly, so eta has no effect" if exact else "")
        )
    return graph, rows, notes


def fit(
    model: Diffusion,
    concept: Concept | str,
    config: Config | None = None,
    *,
    checkpoint: Any = None,
    checkpoint_every: int = 50,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    **overrides: Any,
) -> Erasure:
    """TRCE: stage 1 (closed-form K/V at the first [EoT]), then stage 2 (trajectory steering) on its model.

    ``checkpoint=folder`` saves stage 2's training state every ``checkpoint_every`` steps; calling again
    with the same folder resumes it (another config, concept or model is a CheckpointError).
    ``on_step(step, loss)`` is called after every training step.
    """
    note = defaults_note(Config, model, config)
    config = resolve_config(Config, config, overrides, model)
    check(config)
    concept = prepare(model, concept)
    start = time.perf_counter()
    graph, rows, notes = Graph(), [], []
    if "text" in config.stages:
        graph, rows, notes = refine_kv(model, concept, config)
    if "trajectory" in config.stages:
        steered, steps, more = trce_steering.steer(
            model, concept, config, base=graph, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
            progress=progress, on_step=on_step,
        )
        graph, rows, notes = graph + steered, rows + steps, notes + more
    notes = [note, *notes]
    method = {("text",): "trce-stage1", ("trajectory",): "trce-stage2"}.get(tuple(config.stages), "trce")
    return Erasure(method, concept, config_dict(config), graph, rows, notes, time.perf_counter() - start)


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
