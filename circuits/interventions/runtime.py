"""``intervene``: apply a graph to a model for the duration of a ``with`` block.

Each per-call intervention is bound to every site it matches (:meth:`Intervention.bind`) and
becomes one torch forward hook there; per-context ones (weight edits) are entered
(:meth:`Intervention.enter`). On exit (normal, exception or KeyboardInterrupt) every hook is
removed and every undo runs (weights restored bitwise), in reverse order. Afterwards, interventions
whose site never ran or whose scope matched nothing are reported (a warning, or an error with
``strict=True``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from circuits.context import StepContext, current_context
from circuits.errors import ScopeError, UnmatchedInterventionWarning
from circuits.interventions.base import Intervention, Undo
from circuits.interventions.capture import Captures
from circuits.interventions.graph import Graph, GraphLike
from circuits.interventions.scope import Selection, batch_rows, call_matches
from circuits.models.diffusion import Diffusion
from circuits.sites.index import SiteInfo
from circuits.sites.instrument import _replace_primary
from circuits.tokens import token_mask


@dataclass(eq=False)  # identity: bindings and runs are live objects, not values
class _Binding:
    """One intervention on one site, with its hit counters."""

    intervention: Intervention
    site: str
    info: SiteInfo
    site_calls: int = 0
    hits: int = 0


@dataclass(eq=False)
class Run:
    """What ``intervene`` yields: the captures and, after exit, the report."""

    model: Diffusion
    graph: Graph
    captures: Captures = field(default_factory=Captures)
    bindings: list[_Binding] = field(default_factory=list)
    #: the per-context parts entered (``per_call = False``, e.g. WeightEdits)
    weight_edits: list[Intervention] = field(default_factory=list)

    def unmatched(self) -> list[str]:
        """Descriptions of interventions that did nothing, with the reason."""
        problems: dict[int, str] = {}
        by_origin: dict[int, list[_Binding]] = {}
        for binding in self.bindings:
            by_origin.setdefault(id(binding.intervention.origin), []).append(binding)
        for key, bindings in by_origin.items():
            origin = bindings[0].intervention.origin
            if all(b.site_calls == 0 for b in bindings):
                sites = sorted({b.site for b in bindings})
                problems[key] = f"{origin.describe()}: site {', '.join(sites)} never ran"
            elif all(b.hits == 0 for b in bindings):
                problems[key] = f"{origin.describe()}: its scope matched no call, row or token"
        return list(problems.values())

    def scoped_interventions(self) -> Iterator[Intervention]:
        seen: set[int] = set()
        for binding in self.bindings:
            origin = binding.intervention.origin
            if id(origin) not in seen:
                seen.add(id(origin))
                yield origin


def _as_graph(graph: GraphLike) -> Graph:
    """A Graph from a Graph, an intervention, a list of them, or anything with ``as_graph()`` (an Erasure)."""
    if graph is None:
        return Graph()
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, Intervention):
        return Graph([graph])
    as_graph = getattr(graph, "as_graph", None)
    if callable(as_graph):
        built = as_graph()
        if isinstance(built, Graph):
            return built
        raise TypeError(
            f"{type(graph).__name__}.as_graph() returned a {type(built).__name__}; it must return a circuits.Graph"
        )
    if isinstance(graph, (str, bytes)) or not isinstance(graph, Iterable):
        raise TypeError(
            f"graph is a {type(graph).__name__}; give a circuits.Graph, an intervention, a list of interventions, "
            "or an object with an as_graph() method (e.g. a method's Erasure)"
        )
    return Graph(graph)


@contextlib.contextmanager
def intervene(model: Diffusion, graph: GraphLike = None, *, strict: bool = False) -> Iterator[Run]:
    """Apply ``graph`` to ``model`` inside the block; yields a :class:`Run` holding the captures.

    ``graph`` is a :class:`Graph`, an intervention, a list of them, or an object with an
    ``as_graph()`` method returning a Graph (a method's result).

    Example::

        with circuits.intervene(model, [circuits.Capture("unet.*attn2", mean_over="batch")]) as run:
            circuits.sample(model, ["a red circle"])
        run.captures["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2"]
    """
    run = Run(model=model, graph=_as_graph(graph))
    handles: list[Any] = []
    undos: list[Undo] = []
    completed = False
    active: list[Run] = model.active_runs
    try:
        for intervention in run.graph:
            for part in intervention.expand(model):
                if not part.per_call:
                    undos.append(part.enter(model))
                    run.weight_edits.append(part)
                    continue
                sites = model.sites.resolve(part.site)  # type: ignore[attr-defined]
                for site in sites:
                    binding = _bind(run, part, site, expanded=len(sites) > 1)
                    module = model.sites.module(site)
                    handles.append(module.register_forward_hook(_make_hook(model, binding)))
        active.append(run)
        yield run
        completed = True
    finally:
        if run in active:
            active.remove(run)
        for handle in reversed(handles):
            handle.remove()
        for undo in reversed(undos):
            undo()
    if completed:
        _report(run, strict)


def _bind(run: Run, part: Intervention, site: str, *, expanded: bool) -> _Binding:
    info = run.model.sites.info(site)
    if part.tokens is not None and info.token_dim(3 if info.role != "probs" else 4) is None:
        raise ScopeError(
            f"{part.origin.describe()}: tokens={part.tokens!r} needs a site whose positions are text tokens "
            f"(text_encoder.*, cross-attention to_k/to_v, probs or key_bias), but {site!r} is not one"
        )
    part.check_site(info, run.model)
    binding = _Binding(part.bind(run, site, expanded), site, info)
    run.bindings.append(binding)
    return binding


def _make_hook(model: Diffusion, binding: _Binding):
    intervention = binding.intervention
    selections: dict = {}

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        binding.site_calls += 1
        ctx = current_context()
        if not call_matches(intervention.steps, intervention.timesteps, ctx):
            return None

        def transform(x: Tensor) -> Tensor:
            selection = _select(model, binding, ctx, x, selections)
            if selection is None:
                return x
            binding.hits += 1
            return intervention.apply(x, selection, ctx, binding.site)

        return _replace_primary(output, transform)

    return hook


_MISSING = object()


def _select(model: Diffusion, binding: _Binding, ctx: StepContext | None, x: Tensor, cache: dict) -> Selection | None:
    """The rows/tokens this call selects; cached, since prompts and shapes repeat across steps."""
    key = (
        None if ctx is None else (ctx.prompts, tuple(sorted(ctx.branch_rows.items()))),
        tuple(x.shape),
        x.device,
    )
    found = cache.get(key, _MISSING)
    if found is _MISSING:
        found = cache[key] = _build_selection(model, binding, ctx, x)
    return found  # type: ignore[return-value]


def _build_selection(model: Diffusion, binding: _Binding, ctx: StepContext | None, x: Tensor) -> Selection | None:
    intervention = binding.intervention
    rows = batch_rows(intervention.branch, intervention.rows, ctx, x.shape[0], intervention.origin.describe())
    if not rows:
        return None
    if intervention.tokens is None:
        return Selection(rows)
    token_dim = binding.info.token_dim(x.ndim)
    assert token_dim is not None
    selection = intervention.tokens
    if isinstance(selection, list) and all(isinstance(i, int) for i in selection):
        length = x.shape[token_dim]
        outside = [i for i in selection if not -length <= i < length]
        if outside:
            raise ScopeError(
                f"{intervention.origin.describe()}: tokens={selection} but {binding.site} has {length} token "
                f"positions; positions {outside} do not exist (use 0..{length - 1})"
            )
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        mask[:, selection] = True
    else:
        if ctx is None or not ctx.prompts:
            return None  # token names need the prompts, which only a step context carries
        if len(ctx.prompts) != x.shape[0]:
            raise ScopeError(
                f"{intervention.origin.describe()}: the step context has {len(ctx.prompts)} prompts "
                f"but {binding.site} has {x.shape[0]} rows"
            )
        mask = token_mask(model.tokenizer, ctx.prompts, selection)[list(rows)]
        if mask.shape[1] != x.shape[token_dim]:
            raise ScopeError(
                f"{intervention.origin.describe()}: {binding.site} has {x.shape[token_dim]} token positions, "
                f"the tokenizer {mask.shape[1]}"
            )
    keep = mask.any(dim=1)
    if not bool(keep.any()):
        return None
    kept_rows = tuple(r for r, k in zip(rows, keep.tolist()) if k)
    return Selection(kept_rows, token_dim, mask[keep])


def _report(run: Run, strict: bool) -> None:
    problems = run.unmatched()
    if not problems:
        return
    message = "interventions that did nothing:\n  " + "\n  ".join(problems)
    if strict:
        raise ScopeError(message)
    warnings.warn(message, UnmatchedInterventionWarning, stacklevel=3)


def active_runs(model: Diffusion) -> list[Run]:
    """Runs currently applied to ``model`` (the sampler checks their scopes against its schedule)."""
    return list(model.active_runs)
