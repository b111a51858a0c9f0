"""``intervene``: apply a graph to a model for the duration of a ``with`` block.

Each per-call intervention is bound to every site it matches (:meth:`Intervention.bind`) and
becomes one torch forward hook there; per-context ones (weight edits) are entered
(:meth:`Intervention.enter`). On exit (normal, exception or KeyboardInterrupt) every hook is
removed and every undo runs (weights restored bitwise), in reverse order. Afterwards, interventions
whose site never ran or whose scope matched nothing are reported (a warning, or an error with
``strict=True``), with the cause when no step context was published.
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
from circuits.interventions.graph import Graph, GraphLike
from circuits.interventions.records import Captures
from circuits.interventions.scope import Selection, batch_rows, call_matches
from circuits.models.diffusion import Diffusion
from circuits.sites.index import SiteInfo
from circuits.sites.instrument import _replace_primary
from circuits.tokens import closest_selections, token_mask


@dataclass(eq=False)  # identity: bindings and runs are live objects, not values
class _Binding:
    """One intervention on one site, with its hit counters."""

    intervention: Intervention
    site: str
    info: SiteInfo
    site_calls: int = 0
    hits: int = 0
    #: the site ran at least once with no step context published (recorded off the hot path)
    bare_calls: bool = False


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
                problems[key] = _no_match_reason(origin, any(b.bare_calls for b in bindings))
        return list(problems.values())

    def scoped_interventions(self) -> Iterator[Intervention]:
        seen: set[int] = set()
        for binding in self.bindings:
            origin = binding.intervention.origin
            if id(origin) not in seen:
                seen.add(id(origin))
                yield origin


def _context_scopes(intervention: Intervention) -> list[str]:
    """The scope fields of ``intervention`` that only a step context can satisfy."""
    scopes = [f"{name}={getattr(intervention, name)!r}" for name in ("steps", "timesteps")
              if getattr(intervention, name) is not None]
    if intervention.branch != "both":
        scopes.append(f"branch={intervention.branch!r}")
    tokens = intervention.tokens
    if isinstance(tokens, str) or (isinstance(tokens, list) and any(isinstance(t, str) for t in tokens)):
        scopes.append(f"tokens={tokens!r}")
    return scopes


def _no_match_reason(origin: Intervention, bare_calls: bool) -> str:
    scopes = _context_scopes(origin)
    if bare_calls and scopes:
        return (
            f"{origin.describe()}: its site ran with no step context published, so its scope "
            f"({', '.join(scopes)}) could not apply; call the model through circuits.sample(...), or wrap "
            "hand-written calls in `with circuits.step_context(step=..., prompts=...)` "
            "(circuits.context.publish_context for a full StepContext)"
        )
    return f"{origin.describe()}: its scope matched no call, row or token"


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
            if ctx is None:
                binding.bare_calls = True
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
    if ctx is None:
        binding.bare_calls = True  # once per cached selection, not per call
    rows = batch_rows(intervention.branch, intervention.rows, ctx, x.shape[0], intervention.origin.describe())
    if not rows:
        return None
    if intervention.tokens is None:
        return Selection(rows)
    token_dim = binding.info.token_dim(x.ndim)
    assert token_dim is not None
    if _is_positions(intervention.tokens):
        mask = _position_mask(binding, rows, x.shape[token_dim])
    else:
        if ctx is None or not ctx.prompts:
            return None  # token names need the prompts, which only a step context carries
        mask = _named_mask(model, binding, ctx, rows, x.shape[0], x.shape[token_dim])
    keep = mask.any(dim=1)
    if not bool(keep.any()):
        return None
    kept_rows = tuple(r for r, k in zip(rows, keep.tolist()) if k)
    return Selection(kept_rows, token_dim, mask[keep])


def _is_positions(selection: Any) -> bool:
    return isinstance(selection, list) and all(isinstance(i, int) for i in selection)


def _position_mask(binding: _Binding, rows: tuple[int, ...], length: int) -> Tensor:
    """``[rows, length]`` mask of explicit positions, which must exist at this site."""
    intervention, selection = binding.intervention, binding.intervention.tokens
    outside = [i for i in selection if not -length <= i < length]  # type: ignore[union-attr]
    if outside:
        raise ScopeError(
            f"{intervention.origin.describe()}: tokens={selection} but {binding.site} has {length} token "
            f"positions; positions {outside} do not exist (use 0..{length - 1})"
        )
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    mask[:, selection] = True
    return mask


def _named_mask(
    model: Diffusion, binding: _Binding, ctx: StepContext, rows: tuple[int, ...], batch: int, length: int
) -> Tensor:
    """``[rows, tokens]`` mask of a named selection read from the prompts of the step context."""
    intervention = binding.intervention
    if len(ctx.prompts) != batch:
        raise ScopeError(
            f"{intervention.origin.describe()}: the step context has {len(ctx.prompts)} prompts "
            f"but {binding.site} has {batch} rows"
        )
    every_row = token_mask(model.tokenizer, ctx.prompts, intervention.tokens)  # type: ignore[arg-type]
    if every_row.shape[1] != length:
        raise ScopeError(
            f"{intervention.origin.describe()}: {binding.site} has {length} token positions, "
            f"the tokenizer {every_row.shape[1]}"
        )
    mask = every_row[list(rows)]
    if not bool(mask.any()) and _sees_every_prompt(intervention, ctx):
        _require_some_match(intervention, ctx, rows, every_row)
    return mask


def _sees_every_prompt(intervention: Intervention, ctx: StepContext) -> bool:
    """Does ``ctx`` show every prompt ``intervention``'s token names could match?

    Not in a text-encoder call that lacks the cond rows or a branch the intervention selects: the
    text encoder runs once per CFG branch, so the other branch's prompts are in another call. (The
    sampler checks every selection against the whole batch before its first call.)
    """
    if not ctx.branch_rows:
        return True  # every row is cond
    if not ctx.rows_of("cond"):
        return False
    wanted = ("uncond", "cond") if intervention.branch == "both" else (intervention.branch,)
    return ctx.phase != "text" or all(branch in ctx.branch_rows for branch in wanted)


def check_token_names(model: Diffusion, ctx: StepContext) -> None:
    """Raise for a named ``tokens=`` selection of an active run that matches no prompt of the batch ``ctx``.

    The sampler calls this before its first model call, with the UNet's batch layout (every row's
    prompt, negative prompts included), so a typo fails before any compute.
    """
    for run in active_runs(model):
        for intervention in run.scoped_interventions():
            if intervention.tokens is None or _is_positions(intervention.tokens):
                continue
            rows = batch_rows(intervention.branch, intervention.rows, ctx, ctx.batch_size, intervention.describe())
            every_row = token_mask(model.tokenizer, ctx.prompts, intervention.tokens)
            _require_some_match(intervention, ctx, rows, every_row)


def _require_some_match(intervention: Intervention, ctx: StepContext, rows: tuple[int, ...], every_row: Tensor) -> None:
    """A named selection that matches nothing in the selected rows' prompts nor the cond prompts is a typo.

    A keyword held by some rows only is legitimate (it selects those rows), and so is one that the
    cond prompts hold while the selected uncond rows (negative prompts) do not.
    """
    cond = ctx.rows_of("cond") if ctx.branch_rows else tuple(range(len(ctx.prompts)))
    reference = sorted(set(rows) | set(cond))
    if bool(every_row[reference].any()):
        return
    prompts = list(dict.fromkeys(ctx.prompts[r] for r in reference))
    shown = ", ".join(repr(p) for p in prompts[:4]) + (f" and {len(prompts) - 4} more" if len(prompts) > 4 else "")
    close = closest_selections(intervention.tokens, prompts)  # type: ignore[arg-type]
    hint = (
        f"closest valid selections: {', '.join(repr(c) for c in close)}"
        if close
        else "valid selections: 'sot', 'eot', 'eot_all', 'padding', 'last_eot:K', or a word of the prompts"
    )
    raise ScopeError(
        f"{intervention.origin.describe()}: tokens={intervention.tokens!r} selects no position in any prompt "
        f"({shown}); {hint}"
    )


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
