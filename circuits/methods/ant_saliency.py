"""ANT's concept-specific weight saliency (Sec. 3.3, Eqs. 4-5, Figs. 4-5).

One gradient map of Eq. 3 per (prompt, seed), thresholded (Eq. 4)::

    M_{c_i, s_j} = 1(|grad_theta L(z_t1, z_t2, t1, t2, c_i, s_j)| >= gamma)

and intersected over every prompt and seed (Eq. 5, ``M* = AND_i AND_j M_{c_i, s_j}``); Fig. 4 shows
the count of active parameters levelling off at about 100 maps. :func:`saliency_mask` is the one
function that computes ``M*`` for a concept: ``ant.fit`` trains it and the ``saliency_intersection``
experiment draws it (a test checks that the two are equal, :func:`mask_digest`).

Decisions the paper leaves open (or the official code answers differently):

- **gamma.** Eq. 4 applies one threshold to every parameter; the paper gives no value. ``gamma=None``
  (the default) calibrates it once, on the first map: gamma is the ``gamma_density``-th largest
  ``|grad|`` pooled over every considered parameter, so the first map keeps that fraction of them
  (0.5 in ``paper()``, the share the official code keeps) and every later map is thresholded by the same
  gamma. ``gamma=<float>`` gives it absolutely. Large-gradient tensors thus keep more entries than
  small-gradient ones, unlike a fixed share of each tensor.
- **threshold="tensor"** keeps the largest ``fraction`` of each tensor (circuits' earlier rule): on the
  small pocket model it is what erases (``Config.pocket()``); Eq. 4's one gamma concentrates the mask in
  few tensors, and at equal size that mask moved the concept less (``docs/recipes/ant.md`` (c)).
- **threshold="authors"** reproduces the official ``generate_mask.py``: per tensor, the *smallest*
  ``fraction`` of ``|grad|`` (an ascending rank below ``fraction x size``), the opposite of Eq. 4 and
  of SalUn; kept as a named option to compare with the authors' released masks.
- **The maps' prompts and seeds** (Fig. 5): ``saliency_prompts="templates"`` is the concept's templates
  x words (the paper's prompt variants in context), ``"words"`` the words alone (the official NSFW
  list); the seeds ``saliency_seed, saliency_seed + 1, ...`` as many as ``maps`` needs, cut to the first
  ``maps`` rows (seed-major). Fewer maps than prompts take the first prompts with one seed.
- **One map** is the gradient of Eq. 3 at the original weights on that trajectory for
  ``saliency_draws`` ``(t1, t2)`` pairs (Eq. 4: one). The official code instead sums ``|grad|`` over 10
  iterations of training at lr 1e-2 (``ant_gradient.yaml``). A zero gradient is never salient.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuits.methods.ant_config import Config
from circuits.methods.ant_trajectory import Trajectories, ant_loss, collect, draw, first_rows
from circuits.methods.common import ConfigError
from circuits.methods.concept import Concept
from circuits.methods.training import step_generator, trainable
from circuits.models.diffusion import Diffusion

#: torch.kthvalue on more entries than this is slow and memory-hungry: calibrate gamma on a fixed sample
EXACT_LIMIT = 1 << 24


def saliency_map(grads: Mapping[str, Tensor], gamma: float) -> dict[str, Tensor]:
    """Eq. 4: ``|grad| >= gamma`` (bool masks of the gradients' shapes)."""
    if not gamma > 0:
        raise ConfigError(f"saliency_map: gamma={gamma!r} must be > 0 (Eq. 4)")
    return {name: grad.detach().abs() >= gamma for name, grad in grads.items()}


def authors_map(grads: Mapping[str, Tensor], fraction: float) -> dict[str, Tensor]:
    """The official ``generate_mask.py``: per tensor, the *smallest* ``fraction`` of ``|grad|``.

    Ranks come from a stable ascending sort, so ties keep the earlier entries as theirs do (a
    ``torch.argsort`` of the flat tensor); ``floor(fraction x size)`` entries are kept.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"authors_map: fraction={fraction!r} must lie in (0, 1]")
    masks = {}
    for name, grad in grads.items():
        flat = grad.detach().abs().flatten()
        keep = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
        keep[torch.argsort(flat, stable=True)[: int(flat.numel() * fraction)]] = True
        masks[name] = keep.view(grad.shape)
    return masks


def tensor_map(grads: Mapping[str, Tensor], fraction: float) -> dict[str, Tensor]:
    """The largest ``fraction`` of ``|grad|`` in *each* tensor (``ceil(fraction x size)`` entries; a zero
    gradient is never kept): circuits' earlier rule, kept as ``threshold="tensor"`` because it is what
    erases on pocket (``docs/recipes/ant.md`` (c))."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"tensor_map: fraction={fraction!r} must lie in (0, 1]")
    masks = {}
    for name, grad in grads.items():
        flat = grad.detach().abs().flatten()
        keep = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
        keep[torch.topk(flat, math.ceil(fraction * flat.numel()), sorted=False).indices] = True
        masks[name] = (keep & (flat > 0)).view(grad.shape)
    return masks


def calibrate_gamma(grads: Mapping[str, Tensor], density: float) -> float:
    """The ``ceil(density x N)``-th largest ``|grad|`` over all ``N`` entries (the smallest positive one if
    that is zero), so that ``|grad| >= gamma`` keeps at least that share. Over ``EXACT_LIMIT`` entries the
    quantile is read from a fixed random sample of that size."""
    if not 0 < density <= 1:
        raise ConfigError(f"ant.Config.gamma_density={density!r}: give a fraction in (0, 1]")
    flat = torch.cat([g.detach().abs().flatten().float() for g in grads.values()])
    if flat.numel() > EXACT_LIMIT:
        pick = torch.randint(flat.numel(), (EXACT_LIMIT,), generator=torch.Generator().manual_seed(0))
        flat = flat[pick.to(flat.device)]
    keep = math.ceil(density * flat.numel())
    gamma = float(torch.kthvalue(flat, flat.numel() - keep + 1).values)
    if gamma <= 0:
        positive = flat[flat > 0]
        if not len(positive):
            raise ConfigError("ant saliency: the first map's gradient is zero everywhere; no gamma can be calibrated")
        gamma = float(positive.min())
    return gamma


def intersect(
    maps: Iterable[Mapping[str, Tensor]], *, on_map: Callable[[int, Mapping[str, Tensor]], None] | None = None
) -> tuple[dict[str, Tensor], list[int]]:
    """Eq. 5: the running intersection of ``maps`` and the number of active entries after each map.

    ``on_map(k, mask)`` sees the running intersection after ``k`` maps (k = 1, 2, ...; read it, do not
    keep or change it: it is updated in place), e.g. to count the active entries per layer.
    """
    mask: dict[str, Tensor] | None = None
    curve = []
    for item in maps:
        if mask is None:
            mask = {k: v.clone() for k, v in item.items()}
        else:
            if set(item) != set(mask):
                raise ValueError(f"intersect: a map covers other tensors ({sorted(set(item) ^ set(mask))[:3]} ...)")
            for k, v in item.items():
                mask[k] &= v
        curve.append(int(sum(int(v.sum()) for v in mask.values())))
        if on_map is not None:
            on_map(len(curve), mask)
    if mask is None:
        raise ValueError("intersect: no maps given")
    return mask, curve


def parameter_names(model: Diffusion, globs: Sequence[str]) -> list[str]:
    """UNet parameters (``unet.<name>``) matching any of ``globs``."""
    names = [f"unet.{n}" for n, _ in model.unet.named_parameters()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise ConfigError(f"ant.Config.params={list(globs)!r} matches no UNet parameter (e.g. {names[0]!r})")
    return chosen


def mask_digest(mask: Mapping[str, Tensor]) -> str:
    """SHA-256 of a mask (names in order, shapes, packed bits): equal digests mean equal masks."""
    digest = hashlib.sha256()
    for name in sorted(mask):
        bits = mask[name].detach().to("cpu", torch.bool).flatten()
        digest.update(f"{name}{tuple(mask[name].shape)}".encode())
        digest.update(bits.numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Saliency:
    """The concept-specific mask ``M*`` and how it came about."""

    mask: dict[str, Tensor]
    curve: list[int]  # active parameters after 1, 2, ... intersected maps
    densities: list[float]  # fraction of the considered parameters each single map keeps
    considered: int
    gamma: float | None = None  # Eq. 4's threshold (None with threshold="authors")
    prompts: list[str] = dataclasses.field(default_factory=list)  # the maps' prompts (one per map)
    seeds: list[int] = dataclasses.field(default_factory=list)  # the maps' seeds (one per map)

    @property
    def active(self) -> int:
        return self.curve[-1]

    @property
    def digest(self) -> str:
        return mask_digest(self.mask)


def saliency(
    model: Diffusion, traj: Trajectories, config: Config, *, progress: bool = False,
    on_map: Callable[[int, Mapping[str, Tensor]], None] | None = None,
) -> Saliency:
    """One map per (prompt, seed) row of ``traj`` (Eq. 4), intersected in row order (Eq. 5).

    ``on_map(k, mask)`` sees the running intersection after each map (see :func:`intersect`).
    """
    params = parameter_names(model, config.params)
    densities: list[float] = []
    considered = sum(model.parameter(n).numel() for n in params)
    gamma = [config.gamma]

    def maps(named: dict[str, torch.nn.Parameter]):
        for row in tqdm(range(traj.rows), disable=not progress, desc="saliency maps"):
            generator = step_generator(config.seed + 7919, row)  # its own stream, apart from the fine-tune's
            rows, i1, i2 = draw(traj, config, generator, torch.full((config.saliency_draws,), row))
            loss, _ = ant_loss(model, traj, rows, i1, i2, config)
            grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
            grads = {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(named.items(), grads)}
            if config.threshold == "authors":
                item = authors_map(grads, config.fraction)
            elif config.threshold == "tensor":
                item = tensor_map(grads, config.fraction)
            else:
                if gamma[0] is None:
                    gamma[0] = calibrate_gamma(grads, config.gamma_density)
                item = saliency_map(grads, gamma[0])
            densities.append(sum(int(v.sum()) for v in item.values()) / considered)
            yield item

    with trainable(model, params, restore=False) as named:  # gradients only: no weight changes
        mask, curve = intersect(maps(named), on_map=on_map)
    prompts = [traj.prompts[r % len(traj.prompts)] for r in range(traj.rows)]
    seeds = [traj.seeds[r // len(traj.prompts)] for r in range(traj.rows)]
    return Saliency(mask, curve, densities, considered, gamma[0] if config.threshold == "gamma" else None,
                    prompts, seeds)  # fmt: skip


def saliency_prompts(concept: Concept, config: Config) -> list[str]:
    """The maps' prompts ``C`` (Fig. 5): the concept's templates x words, or its words alone."""
    words = list(concept.words if config.synonyms else (concept.target,))
    return words if config.saliency_prompts == "words" else concept.target_prompts(synonyms=config.synonyms)


def saliency_trajectories(model: Diffusion, concept: Concept, config: Config, *,
                          progress: bool = False) -> Trajectories:
    """The ``config.maps`` (prompt, seed) trajectories the maps are computed on, seed-major."""
    prompts = saliency_prompts(concept, config)[: config.maps]  # fewer maps than prompts: first prompts, one seed
    n_seeds = math.ceil(config.maps / len(prompts))
    seeds = tuple(range(config.saliency_seed, config.saliency_seed + n_seeds))
    traj = collect(model, prompts, dataclasses.replace(config, seeds=seeds), progress=progress)
    return first_rows(traj, config.maps)


def saliency_mask(model: Diffusion, concept: Concept, config: Config, *, progress: bool = False,
                  on_map: Callable[[int, Mapping[str, Tensor]], None] | None = None) -> Saliency:
    """``M*`` for ``concept`` (Eqs. 4-5): the one function ``ant.fit`` and the ``saliency_intersection``
    experiment both call, so the mask a figure shows is the mask a fit trains."""
    traj = saliency_trajectories(model, concept, config, progress=progress)
    return saliency(model, traj, config, progress=progress, on_map=on_map)
