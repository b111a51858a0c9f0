"""ErasePro: zero-residual closed-form edits, applied progressively from shallow to deep layers.

"Erasing Concepts Progressively" (ErasePro), Secs. 3.1-3.2, App. A, Alg. 1 and 2.

- **Zero residual** (Eq. 4-5): for each edited projection, the smallest change of ``W_o`` with
  ``W X = W_o Y`` exactly: ``W* = W_o + (W_o Y - W_o X) X^+`` (:class:`~circuits.methods.linalg.AnchorMap`
  with ``reg = 0``). When ``X`` is not of full column rank (more token columns than features, or
  repeated columns that ask for different targets) no exact solution exists; the pseudo-inverse
  gives the least-squares solution nearest ``W_o`` and the trace records the residual that remains.
- **Progressive alignment** (Alg. 1): the text encoder's self-attention Q, K, V, layer by layer
  from ``start``, then every UNet cross-attention K, V. ``Y`` (anchor features) come from the
  original model; ``X`` (target features) are recomputed through the layers already updated
  (each layer is replayed on the previous layer's edited output, so the whole fit costs one
  text-encoder pass). Alg. 2 (``propagate="original"``) carries ``X`` through the original layers.
- **SDXL** (two text encoders): the UNet's context is both encoders' *penultimate* hidden states
  side by side (the input of each last layer, no final norm), and the pooled embedding comes from
  ``text_encoder_2``'s last layer, final norm and projection. So Alg. 1 aligns ``text_encoder``'s
  layers up to the penultimate (its last layer feeds nothing the UNet reads: skipped, and the
  Erasure's notes say so), every layer of ``text_encoder_2``, each encoder progressively on its own
  (``start_fraction`` of each one's depth; token positions from its own tokenizer), then the UNet's
  K/V on the concatenated edited context (positions from the first tokenizer, as ``tokens=`` scopes).
  Trace rows name the encoder in ``stage``: ``"text"`` (``text_encoder``, as on SD1.x / SD2.x),
  ``"text_encoder_2"``, ``"unet"``.
- **ErasePro-w / -s** (App. A.2): :func:`weak` and :func:`strong` configs: Alg. 2 on the first 5 (8)
  token positions, starting at the 5th of 12 text layers (the 1st). The start is stored as a
  fraction of the depth so the same config fits a 4-layer pocket text encoder.

Decisions the paper leaves open: features are the input of each projection (the layer's
``layer_norm1`` output in the text encoder; the final text embedding for the UNet); biases are
untouched (they cancel in ``W x + b = W_o y + b``). Token columns (App. A.2: "concept features are
constructed by concatenating the token embeddings corresponding to the prompt") are the target
prompt's own tokens, [SoT] to its first [EoT], each paired with the anchor token that plays its part
(``positions="prompt_aligned"``: shared prefix and suffix with themselves, the word with the anchor
word, or with [SoT] for an empty anchor). Not the padded sequence (``"all"``): its 24-28 padding
[EoT]s per prompt outnumber the features (768 columns in 128 dimensions on pocket: least squares,
residual 0.03-0.15), and with an empty anchor position j of "a red circle" meets position j of
"a circle", "red" with "circle". With the prompt's tokens, repeated columns ([SoT], a shared prefix)
carry the same target and the rest fit: on pocket the residual measured on the edited model is 0 to
1e-11 from text layer 1 on for concepts with up to ~60 distinct columns at ``rtol = 1e-4``; text layer
0 keeps 0.08-0.10 (its inputs span ~33 dimensions) and the default ``rtol = 1e-3`` leaves 5e-3 to
3e-2 (the cut-off keeps ``||dW||`` from growing like ``1 / rtol``). The trace measures every residual on
the edited model, never from the solver's own ``X``.

:func:`depth_probe` builds the Fig. 2e / Fig. 5 probe: the same deviation ``alpha * ||W||_F * I``
on a shallow site (text layer 0 Q/K/V) and on a deep one (a UNet cross-attention's Q/K/V).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuits.interventions.capture import Capture
from circuits.interventions.graph import Graph
from circuits.interventions.runtime import intervene
from circuits.interventions.weight_edit import WeightEdit
from circuits.methods.common import (
    ConfigError,
    LayerFeatures,
    config_dict,
    cross_attention_params,
    defaults_note,
    prepare,
    resolve_config,
    text_embeddings,
)
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.methods.features import Positions, align, check_positions, gather_columns
from circuits.methods.linalg import DEFAULT_RTOL, AnchorMap
from circuits.models.diffusion import Diffusion
from circuits.sites.replay import record_calls
from circuits.tokens import layout

TEXT_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class Config:
    """ErasePro settings (defaults: Alg. 1, every text layer, then the UNet)."""

    #: which token positions pair up (App. A.2: "the token embeddings corresponding to the prompt")
    positions: Positions = "prompt_aligned"
    #: k for positions="first_k" (ErasePro-w: 5, -s: 8)
    k: int = 5
    #: first text layer edited, as a fraction of the depth (0 = layer 1; ErasePro-w: 4/12, the 5th of 12)
    start_fraction: float = 0.0
    #: self-attention projections edited in each text layer
    text_projections: tuple[str, ...] = TEXT_PROJECTIONS
    #: cross-attention projections edited in the UNet (() = text encoder only)
    unet_projections: tuple[str, ...] = ("to_k", "to_v")
    #: "updated": X flows through the edited layers (Alg. 1); "original": through the original ones (Alg. 2)
    propagate: Literal["updated", "original"] = "updated"
    #: singular values below rtol * largest count as zero in X^+
    rtol: float = DEFAULT_RTOL
    #: fit on the synonym prompts too
    synonyms: bool = True

    @classmethod
    def paper(cls) -> "Config":
        """Alg. 1 with App. A.2's main setting (the field defaults)."""
        return cls()

    @classmethod
    def pocket(cls) -> "Config":
        """Settings for the pocket model: the paper's. Measured there (red and striped, 2 images x 8 prompts),
        no variant kept the other colours/textures better: text encoder only 0.70 / 0.53 of preservation,
        ``rtol=1e-2`` 0.72 / 0.68 but red stays at 0.44, ``rtol=1e-4`` 0.43 on red (paper 0.57), starting at
        half the depth 0.26 / 0.21 (``docs/recipes/erasepro.md``)."""
        return cls()


def weak() -> Config:
    """ErasePro-w (App. A.2): Alg. 2, the first five token positions, from the 5th of 12 text layers."""
    return Config(positions="first_k", k=5, start_fraction=4 / 12, propagate="original")


def strong() -> Config:
    """ErasePro-s (App. A.2): Alg. 2, the first eight token positions, from the 1st text layer."""
    return Config(positions="first_k", k=8, start_fraction=0.0, propagate="original")


@dataclass
class _Step:
    """One solved projection, before its trace row is written."""

    param: str
    stage: str
    layer: int
    input_site: str | None  # whose input features X are (None: the final text embedding)
    weight: torch.Tensor
    delta: torch.Tensor
    amap: AnchorMap  # shared by the projections that read the same features
    x: torch.Tensor  # target features the solve saw
    x_before: torch.Tensor  # the same in the original model
    y: torch.Tensor
    positions: list[list[int]]  # the target prompts' columns X was gathered at (per prompt)


def _check(config: Config) -> None:
    check_positions(config.positions, "erasepro.Config")
    if not 0.0 <= config.start_fraction < 1.0:
        raise ConfigError(f"erasepro.Config: start_fraction={config.start_fraction} must be in [0, 1)")
    if config.propagate not in ("updated", "original"):
        raise ConfigError(
            f"erasepro.Config: propagate={config.propagate!r}; use 'updated' (Alg. 1) or 'original' (Alg. 2)"
        )
    bad = [p for p in config.text_projections if p not in TEXT_PROJECTIONS]
    if bad:
        raise ConfigError(f"erasepro.Config: text_projections {bad} not in {TEXT_PROJECTIONS}")


def _final_norm(model: Diffusion) -> str:
    return model.sites.canonical("text_encoder.final_layer_norm")


@dataclass(frozen=True)
class _Encoder:
    """One text encoder as Alg. 1 walks it: the layers it edits, and whose output the UNet reads."""

    stage: str  # the trace's stage: "text" (text_encoder, the only or first encoder), "text_encoder_2"
    tokenizer: Any  # its own: SDXL's second pads with "!" and splits a prompt's "!" into pad tokens
    layers: list[str]  # every layer, in order
    edited: list[str]  # the layers Alg. 1 aligns (a prefix of ``layers``)
    context: int  # the UNet reads the output of layers[context] (-1: the token embeddings)


def _encoders(model: Diffusion) -> list[_Encoder]:
    """SD1.x / SD2.x: every layer of the one encoder; its last layer's output (after the final norm) is the
    context. SDXL: the context is both encoders' penultimate hidden states, so the first encoder's last layer
    feeds nothing the UNet reads (skipped), while the second's feeds the pooled embedding (aligned)."""
    first = model.sites.text_layers()
    if not model.is_sdxl:
        return [_Encoder("text", model.tokenizer, first, first, len(first) - 1)]
    second = model.sites.text_layers("text_encoder_2")
    return [
        _Encoder("text", model.tokenizer, first, first[:-1], len(first) - 2),
        _Encoder("text_encoder_2", model.tokenizer_2, second, second, len(second) - 2),
    ]


def align_progressively(model: Diffusion, concept: Concept, config: Config) -> tuple[Graph, list[_Step]]:
    """Alg. 1 / 2: solve Eq. 5 layer by layer, shallow to deep. Returns the edits and the solved steps.

    On SDXL each text encoder is aligned progressively on its own (they read the prompt side by side),
    then the UNet's K/V on the concatenation of their edited penultimate hidden states."""
    pairs = concept.pairs(synonyms=config.synonyms)
    encoders = _encoders(model)
    # anchor prompts repeat once per synonym; the recorded layer inputs hold each once, so index back
    anchors = list(dict.fromkeys(p.anchor for p in pairs))
    rows = torch.tensor([anchors.index(p.anchor) for p in pairs])
    recorded = [layer for encoder in encoders for layer in encoder.layers]
    with record_calls(model.sites, recorded) as anchor_calls:
        anchor_out = text_embeddings(model, anchors)[rows]
    with record_calls(model.sites, recorded) as target_calls:
        target_out = text_embeddings(model, [p.target for p in pairs])

    graph, steps, contexts = Graph(), [], []
    with torch.no_grad():
        for encoder in encoders:
            aligned = [align(encoder.tokenizer, pair, config.positions, config.k) for pair in pairs]
            t_pos, a_pos = [t for t, _ in aligned], [a for _, a in aligned]
            start = round(config.start_fraction * len(encoder.layers))
            hiddens = [target_calls[encoder.layers[0]][0].input]  # the token embeddings: no layer has acted yet
            for index, layer in enumerate(encoder.edited):
                call = target_calls[layer][0]
                edits: list[WeightEdit] = []
                if index >= start:
                    norm = model.sites.module(f"{layer}.layer_norm1")
                    x = gather_columns(norm(hiddens[-1]), t_pos)
                    y = gather_columns(norm(anchor_calls[layer][0].input[rows]), a_pos)
                    x_before = gather_columns(norm(call.input), t_pos)
                    params = [f"{layer}.self_attn.{projection}.weight" for projection in config.text_projections]
                    solved = _solve(model, params, encoder.stage, index, f"{layer}.layer_norm1", x, x_before, y,
                                    config, t_pos)
                    for step in solved:
                        steps.append(step)
                        edits.append(WeightEdit(step.param, delta=step.delta))
                    graph.extend(edits)
                with intervene(model, edits if config.propagate == "updated" else []):
                    hiddens.append(call.replay(hiddens[-1]))
            contexts.append(hiddens[encoder.context + 1])
        if config.unet_projections:
            aligned = [align(model.tokenizer, pair, config.positions, config.k) for pair in pairs]  # tokens= follow
            t_pos, a_pos = [t for t, _ in aligned], [a for _, a in aligned]  # the first tokenizer (encode_text)
            if model.is_sdxl:  # the context is the two penultimate hidden states side by side, as encode_text
                context = torch.cat(contexts, dim=-1).to(anchor_out.dtype)
            else:
                context = model.sites.module(_final_norm(model))(contexts[0])
            x = gather_columns(context, t_pos)
            y, x_before = gather_columns(anchor_out, a_pos), gather_columns(target_out, t_pos)
            per_layer = len(config.unet_projections)
            params = cross_attention_params(model, config.unet_projections)
            for number, step in enumerate(_solve(model, params, "unet", None, None, x, x_before, y, config, t_pos)):
                step.layer = number // per_layer
                steps.append(step)
                graph.append(WeightEdit(step.param, delta=step.delta))
    return graph, steps


def _solve(model, params, stage, layer, input_site, x, x_before, y, config, positions) -> list[_Step]:
    """Eq. 5 for every projection reading ``x``: one map ``M`` (``W* = W_o M``), one delta per weight."""
    amap = AnchorMap.fit(x, y, reg=0.0, rtol=config.rtol)
    steps = []
    for param in params:
        weight = model.parameter(param).detach()
        steps.append(_Step(param, stage, layer, input_site, weight, amap.delta(weight), amap, x, x_before, y,
                           positions))
    return steps


def trace(model: Diffusion, concept: Concept, config: Config, graph: Graph, steps: list[_Step]) -> list[dict]:
    """Per edited projection: target-anchor angle and distance of its input features before (original
    model) and after (edited model), the relative residual ``||W X - W_o Y|| / ||W_o Y||`` and ``||dW||``."""
    pairs = concept.pairs(synonyms=config.synonyms)
    positions = {s.input_site: s.positions for s in steps}  # the UNet's (input_site None): the first tokenizer's
    inputs = sorted(site for site in positions if site is not None)
    # measured on the edited model, not taken from the solver's own X: a solver that read the wrong features
    # (the original model's where Alg. 1 wants the edited one's) shows up here as a residual
    with torch.no_grad(), intervene(model, graph + [Capture(site) for site in inputs]) as run:
        edited_out = text_embeddings(model, [p.target for p in pairs])
    seen = {site: gather_columns(run.captures[site][0], positions[site]) for site in inputs}
    final = gather_columns(edited_out, positions[None]) if None in positions else None
    features: dict[int, LayerFeatures] = {}
    rows = []
    for s in steps:
        x_after = seen[s.input_site] if s.input_site else final
        assert x_after is not None
        if id(s.amap) not in features:  # one per feature set, not per projection (setdefault would build 68)
            features[id(s.amap)] = LayerFeatures(s.x_before, x_after, s.y, s.amap)
        stats = features[id(s.amap)]
        rows.append(stats.row(s.param, s.weight, s.delta, stage=s.stage, layer=s.layer))
    return rows


def fit(model: Diffusion, concept: Concept | str, config: Config | None = None, **overrides) -> Erasure:
    """ErasePro (Alg. 1; Alg. 2 with ``propagate="original"``): returns the edits as an :class:`Erasure`.

    With no ``config``, ``Config.pocket()`` on the pocket model and ``Config.paper()`` elsewhere.
    """
    note = defaults_note(Config, model, config)
    config = resolve_config(Config, config, overrides, model)
    _check(config)
    concept = prepare(model, concept)
    start = time.perf_counter()
    graph, steps = align_progressively(model, concept, config)
    seconds = time.perf_counter() - start
    rows = trace(model, concept, config, graph, steps)
    notes = [note, *sorted({f"{r['stage']} layer {r['layer']}: {r['solver']}" for r in rows if r["solver"] != "exact"})]
    if model.is_sdxl:
        first = model.sites.text_layers()
        notes.append(f"SDXL: text_encoder's last layer ({first[-1]}) is not edited: the UNet reads both encoders' "
                     "penultimate hidden states, so its output feeds nothing; text_encoder_2's last layer is (it "
                     "feeds the pooled embedding); the UNet K/V are solved on the edited 2048-wide context")
        notes.extend(_tokenizer_disagreements(model, concept, config))
    method = "erasepro" if config.propagate == "updated" else "erasepro-alg2"
    return Erasure(method, concept, config_dict(config), graph, rows, notes=notes, seconds=seconds)


def _tokenizer_disagreements(model: Diffusion, concept: Concept, config: Config) -> list[str]:
    """SDXL: prompts whose [EoT] the two tokenizers put at different positions (each '!' is its own pad token
    in the second), so the UNet columns, taken at the first tokenizer's positions, meet shifted tokens of the
    second encoder there. Each encoder's own layers use its own positions and are unaffected."""
    prompts = dict.fromkeys(p for pair in concept.pairs(synonyms=config.synonyms) for p in (pair.target, pair.anchor))
    shifted = [p for p in prompts if layout(model.tokenizer, p).first_eot != layout(model.tokenizer_2, p).first_eot]
    if not shifted:
        return []
    return [f"SDXL: the two tokenizers place the [EoT] differently in {len(shifted)} prompt(s) (a '!' is a pad token "
            f"for tokenizer_2), e.g. {shifted[0]!r}: the UNet K/V columns follow tokenizer's positions, where the "
            "second encoder's half of the context is shifted; drop the '!' to align them"]


def depth_probe(model: Diffusion, alpha: float = 0.2, deep_site: str | None = None) -> dict[str, Graph]:
    """ErasePro Fig. 2e / Fig. 5: the same deviation on a shallow and on a deep site.

    Each edited projection gets ``delta = alpha * ||W||_F * I`` (App. A.2; ``I`` the rectangular
    identity for non-square ``W``), so the deviation relative to each weight is the same.
    ``"shallow"``: Q, K, V of the first text-encoder layer; ``"deep"``: Q, K, V of one UNet
    cross-attention (default: the mid block's, the deepest).
    """
    first = model.sites.text_layers()[0]
    shallow = [f"{first}.self_attn.{p}.weight" for p in TEXT_PROJECTIONS]
    crosses = model.sites.cross_attention()
    site = deep_site or next((s for s in crosses if ".mid_block." in s), crosses[len(crosses) // 2])
    if site not in crosses:
        raise ConfigError(f"deep_site={site!r} is not a cross-attention layer; choose from {crosses}")
    deep = [f"{site}.{p}.weight" for p in ("to_q", "to_k", "to_v")]

    def deviations(params: list[str]) -> Graph:
        graph = Graph()
        for param in params:
            weight = model.parameter(param).detach()
            eye = torch.eye(*weight.shape, dtype=weight.dtype, device=weight.device)
            graph.append(WeightEdit(param, delta=alpha * torch.linalg.matrix_norm(weight) * eye))
        return graph

    return {"shallow": deviations(shallow), "deep": deviations(deep)}
