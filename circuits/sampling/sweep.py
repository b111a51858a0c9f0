"""``circuits.sampling.sweep``: several graphs (or guidances) over the same prompts and seeds, batched.

An experiment that compares variants (k of K [EoT] maps zeroed, ANT's t' values, layer sets) wants
every variant on the same prompts and the same initial noise. Sampling each variant in its own call
wastes the batch: a pocket UNet call on 8 rows costs little more than on 1. ``sweep`` lays the
variants out as blocks of rows of one batch and re-scopes each variant's interventions to its own
block with the core's ``rows=`` scope, so nothing new is hooked:

    variants = {f"k={k}": Graph([ZeroTokens("unet.*attn2", tokens=f"eot_last:{k}")]) for k in (1, 2, 4)}
    result = sweep(model, prompts, {"plain": None, **variants}, seeds=[0, 1])
    result.images["k=2"]          # prompt-major: prompt i, seed j at index i * len(seeds) + j

Each image uses its own seed's noise (``sample(seed=[...])``, one generator per row), so it equals
the image the same variant gives in a call of its own, to float rounding of batched kernels.
Guidance can differ per variant (:class:`~circuits.sampling.guidance.Rowwise` combines each
block's rows). Batches are cut into chunks of at most ``max_batch`` images to bound memory; a
variant's ``rows=`` refer to prompt indices and follow its rows into whichever chunk they land in.
Variants that change weights (a ``WeightEdit``, an erasure's edit) cannot share a batch with others;
they run in chunks of their own. One progress bar covers the whole sweep.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuits.interventions.base import Intervention
from circuits.interventions.capture import Capture
from circuits.interventions.graph import Graph, GraphLike
from circuits.interventions.runtime import _as_graph
from circuits.models.diffusion import Diffusion
from circuits.sampling.guidance import CFG, Rowwise
from circuits.sampling.sampler import sample
from circuits.tokens import check_prompts


@dataclass(frozen=True)
class Variant:
    """One arm of a sweep: a graph and/or a guidance (``None``: the sweep's plain CFG)."""

    graph: GraphLike = None
    guidance: CFG | None = None


@dataclass
class SweepResult:
    """Images per variant, prompt-major (prompt ``i``, seed ``j`` at ``i * len(seeds) + j``), and the
    final latents in the same order (``latents[name]``: one tensor, images x channels x h x w, on CPU)."""

    prompts: list[str]
    seeds: list[int]
    images: dict[str, list[Any]]
    calls: int
    seconds: float
    latents: dict[str, Tensor] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return list(self.images)

    def image(self, variant: str, prompt: int, seed: int = 0) -> Any:
        return self.images[variant][prompt * len(self.seeds) + seed]


@dataclass(frozen=True)
class _Unit:
    variant: int
    prompt: int
    seed: int


def _as_variant(value: Any) -> Variant:
    if isinstance(value, Variant):
        return value
    if isinstance(value, CFG):
        return Variant(guidance=value)
    return Variant(graph=value)


def _interventions(name: str, variant: Variant) -> list[Intervention]:
    items = list(_as_graph(variant.graph))
    for item in items:
        if isinstance(item, Capture):
            raise ValueError(
                f"sweep variant {name!r}: {item.describe()} cannot be swept (its record would mix variants); "
                "run captures with circuits.sample, one call per variant"
            )
    return items


def _changes_weights(model: Diffusion, items: list[Intervention]) -> bool:
    return any(not part.per_call for item in items for part in item.expand(model))


def _rescoped(item: Intervention, positions: Mapping[int, list[int]]) -> Intervention | None:
    """``item`` acting on the batch rows its variant's prompts occupy in this chunk (None: none do)."""
    wanted = positions if item.rows is None else item.rows
    rows = sorted(row for prompt in wanted for row in positions.get(prompt, ()))
    return dataclasses.replace(item, rows=rows) if rows else None


def _chunks(units: list[_Unit], solo: set[int], max_batch: int) -> list[list[_Unit]]:
    """Consecutive units in chunks of at most ``max_batch``; a weight-changing variant never shares one."""
    chunks: list[list[_Unit]] = []
    for unit in units:
        current = chunks[-1] if chunks else None
        fits = current is not None and len(current) < max_batch
        same_kind = current is not None and (
            (unit.variant in solo and current[0].variant == unit.variant)
            or (unit.variant not in solo and current[0].variant not in solo)
        )
        if fits and same_kind:
            current.append(unit)
        else:
            chunks.append([unit])
    return chunks


def sweep(
    model: Diffusion,
    prompts: str | Sequence[str],
    variants: Mapping[str, GraphLike | Variant | CFG],
    *,
    seeds: int | Sequence[int] = 0,
    steps: int = 25,
    guidance_scale: float = 7.5,
    max_batch: int = 32,
    progress: bool = True,
    **sample_kwargs: Any,
) -> SweepResult:
    """Sample every variant on every prompt and seed, as rows of as few batched calls as ``max_batch`` allows.

    ``variants`` maps a name to a graph (anything ``circuits.sample`` takes as ``graph=``), a guidance
    (``ReversedCFG(7.5, 300)``), a :class:`Variant` with both, or ``None`` for plain sampling.
    ``sample_kwargs`` go to every call (``height``, ``scheduler``, ``negative_prompt`` as one string).
    """
    prompts = check_prompts(prompts)
    seed_list = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seed_list or not all(isinstance(s, int) and not isinstance(s, bool) for s in seed_list):
        raise ValueError(f"sweep: seeds={seeds!r}; give an int or a non-empty list of ints")
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("sweep: variants must be a non-empty dict {name: graph | guidance | Variant | None}")
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"sweep: max_batch={max_batch!r}; give a positive int (images per sampling call)")
    for reserved in ("seed", "graph", "guidance", "follow", "on_step", "record"):
        if reserved in sample_kwargs:
            raise ValueError(f"sweep: {reserved}= is set per variant or by the sweep itself; remove it")
    names = list(variants)
    arms = [_as_variant(variants[name]) for name in names]
    items = [_interventions(name, arm) for name, arm in zip(names, arms)]
    solo = {v for v, parts in enumerate(items) if _changes_weights(model, parts)}
    default_guidance = CFG(guidance_scale)
    units = [_Unit(v, p, s) for v in range(len(names)) for p in range(len(prompts)) for s in range(len(seed_list))]
    chunks = _chunks(units, solo, max_batch)

    images: dict[str, list[Any]] = {name: [] for name in names}
    latents: dict[str, list[Tensor]] = {name: [] for name in names}
    start = time.perf_counter()
    with tqdm(total=len(chunks) * steps, desc="sweep", disable=not progress, leave=False) as bar:
        for chunk in chunks:
            graph, blocks = Graph(), []
            for v in dict.fromkeys(unit.variant for unit in chunk):
                positions: dict[int, list[int]] = {}
                for row, unit in enumerate(chunk):
                    if unit.variant == v:
                        positions.setdefault(unit.prompt, []).append(row)
                for item in items[v]:
                    scoped = item if v in solo else _rescoped(item, positions)
                    if scoped is not None:
                        graph.append(scoped)
                count = sum(len(rows) for rows in positions.values())
                blocks.append((arms[v].guidance or default_guidance, count))
            same = all(guide == blocks[0][0] for guide, _ in blocks)
            guidance = blocks[0][0] if same else Rowwise(tuple(blocks))
            result = sample(
                model,
                [prompts[unit.prompt] for unit in chunk],
                seed=[seed_list[unit.seed] for unit in chunk],
                steps=steps,
                guidance=guidance,
                graph=graph or None,
                progress=False,
                on_step=lambda _: bar.update(1),
                **sample_kwargs,
            )
            for unit, image, latent in zip(chunk, result.images, result.latents.detach().cpu()):
                images[names[unit.variant]].append(image)
                latents[names[unit.variant]].append(latent)
    return SweepResult(
        prompts=list(prompts), seeds=seed_list, images=images, calls=len(chunks),
        seconds=time.perf_counter() - start, latents={k: torch.stack(v) for k, v in latents.items()},
    )  # fmt: skip
