"""Every erasure method with the settings measured for the pocket model, by one short name.

The methods table (``benchmarks/methods_table.py``, ``docs/methods.md``) and the
``erasure_benchmark`` experiment fit the same methods the same way; this catalog is where those
settings live, so the two cannot drift apart::

    from circuits.methods import catalog
    catalog.names()                              # ('uce', 'uce+preservation', 'erasepro', ...)
    erasure = catalog.fit("trce1", model, circuits.pocket.concept("red"))
    catalog.get("acterase").label                # 'ActErase (FFN)', the row name in the tables

Each entry: a short ``name`` (no spaces or commas, so ``--set methods=uce,trce1`` works), the
``label`` the tables print, ``fit(model, concept, progress)``, whether it fine-tunes (``trained``:
minutes on a CPU, not seconds) and a one-line ``summary`` of its settings. Where pocket needed
settings other than the paper's, the method's own ``pocket()`` config says why
(``trce.Config.pocket()``, which ``trce.fit`` uses by itself on pocket; ANT's entry is ``ant.fit(model,
concept)`` itself, whose model-aware defaults are ``ant.Config.pocket()`` on pocket); ActErase calls
``acterase.fit(model, concept)``, which picks ``acterase.Config.pocket()`` on pocket itself (App. A.3's tau
0.01 for every concept, one voted mask). TRCE Table 4's rows, at its eta = 0.001: ``trce1-table4-eot``,
``trce1-keyword``, ``trce1-eot-key``, ``trce1-eot-sot``, ``trce1-eot-sot-key`` (``trce1-eot-all`` /
``trce1-all`` are ours). :func:`register` adds a method of your own (any ``fit`` returning an
:class:`~circuits.methods.Erasure`), which the benchmark then accepts by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from circuits.errors import NameNotFoundError, did_you_mean
from circuits.methods.concept import Concept
from circuits.methods.erasure import Erasure
from circuits.models.diffusion import Diffusion

FitFn = Callable[[Diffusion, Concept, bool], Erasure]


class UnknownMethodError(NameNotFoundError):
    """A method name that is not in the catalog (the message lists the close and the valid ones)."""


@dataclass(frozen=True)
class Method:
    """One catalogued method: call it (or ``.fit``) with a model and a concept to get an Erasure."""

    name: str
    label: str
    fit: FitFn
    summary: str
    trained: bool = False

    def __call__(self, model: Diffusion, concept: Concept, progress: bool = False) -> Erasure:
        return self.fit(model, concept, progress)


def _uce(**overrides) -> FitFn:
    def fit(model: Diffusion, concept: Concept, progress: bool) -> Erasure:
        from circuits.methods import uce

        return uce.fit(model, concept, **overrides)

    return fit


def _erasepro(weak: bool = False) -> FitFn:
    def fit(model: Diffusion, concept: Concept, progress: bool) -> Erasure:
        from circuits.methods import erasepro

        return erasepro.fit(model, concept, erasepro.weak() if weak else None)

    return fit


def _trce_stage1(**overrides) -> FitFn:
    def fit(model: Diffusion, concept: Concept, progress: bool) -> Erasure:
        from circuits.methods import trce

        return trce.fit(model, concept, stages=("text",), **overrides)  # the model's defaults (Config.pocket())

    return fit


#: TRCE Table 4's ablation: which tokens stage 1 maps, at eta = 0.001 (the table's caption)
TRCE_TABLE4_ETA = 0.001


def _trce(model: Diffusion, concept: Concept, progress: bool) -> Erasure:
    from circuits.methods import trce

    return trce.fit(model, concept, progress=progress)  # the model's defaults: Config.pocket() on pocket


def _acterase(**overrides) -> FitFn:
    def fit(model: Diffusion, concept: Concept, progress: bool) -> Erasure:
        from circuits.methods import acterase

        return acterase.fit(model, concept, **overrides)  # model-aware defaults: Config.pocket() on pocket

    return fit


def _ant(model: Diffusion, concept: Concept, progress: bool) -> Erasure:
    from circuits.methods import ant

    return ant.fit(model, concept, progress=progress)  # the model-aware defaults: Config.pocket() on pocket


_METHODS: dict[str, Method] = {}


def register(name: str, label: str, fit: FitFn, summary: str, *, trained: bool = False,
             replace: bool = False) -> Method:
    """Add a method: ``fit(model, concept, progress) -> Erasure``; ``name`` is what configs and CLIs take."""
    if not name or any(c in name for c in " ,=") or name != name.strip():
        raise ValueError(f"catalog.register: name={name!r}; use a short name without spaces, commas or '='")
    taken = {m.label: m.name for m in _METHODS.values()}
    if not replace and (name in _METHODS or (label in taken and taken[label] != name)):
        raise ValueError(f"catalog.register: {name!r} / {label!r} is already registered (pass replace=True)")
    _METHODS[name] = Method(name, label, fit, summary, trained)
    return _METHODS[name]


def unregister(name: str) -> None:
    """Remove a method added with :func:`register` (tests, notebooks)."""
    _METHODS.pop(name, None)


register("uce", "UCE", _uce(preservation=False),
         "UCE as the authors' code runs it with no preservation concept (only '' retained), as ErasePro ran it")
register("uce+preservation", "UCE + preservation", _uce(),
         "uce.fit defaults: the authors' code with the concept's preservation prompts retained")
register("erasepro", "ErasePro", _erasepro(), "erasepro.fit defaults: Alg. 1, text Q/K/V then UNet K/V, prompt tokens")
register("erasepro-w", "ErasePro-w", _erasepro(weak=True), "ErasePro-w (App. A.2): Alg. 2, first 5 positions")
register("trce1", "TRCE stage 1", _trce_stage1(), "TRCE stage 1: closed-form K/V at the first [EoT], eta 0.01")
register("trce1-eot-all", "TRCE stage 1, every [EoT]", _trce_stage1(positions="eot_all"),
         "TRCE stage 1 mapping every [EoT] (ours, not one of the paper's ablation rows)")
register("trce1-all", "TRCE stage 1, whole sequence", _trce_stage1(positions="all"),
         "TRCE stage 1 mapping every position (ours, not one of the paper's ablation rows)")
register("trce1-table4-eot", "TRCE stage 1, [EoT] (eta 0.001)", _trce_stage1(eta=TRCE_TABLE4_ETA),
         "TRCE stage 1 mapping the first [EoT] at eta 0.001 (Table 4, [EoT])")
register("trce1-keyword", "TRCE stage 1, keyword", _trce_stage1(positions="keyword", eta=TRCE_TABLE4_ETA),
         "TRCE stage 1 mapping the keyword only, eta 0.001 (Table 4, [KEY])")
register("trce1-eot-key", "TRCE stage 1, [EoT]+[KEY]", _trce_stage1(positions="eot+key", eta=TRCE_TABLE4_ETA),
         "TRCE stage 1 mapping the first [EoT] and the keyword, eta 0.001 (Table 4, [EoT]+[KEY])")
register("trce1-eot-sot", "TRCE stage 1, [EoT]+[SoT]", _trce_stage1(positions="eot+sot", eta=TRCE_TABLE4_ETA),
         "TRCE stage 1 mapping the first [EoT] and the [SoT], eta 0.001 (Table 4, [EoT]+[SoT])")
register("trce1-eot-sot-key", "TRCE stage 1, [EoT]+[SoT]+[KEY]",
         _trce_stage1(positions="eot+sot+key", eta=TRCE_TABLE4_ETA),
         "TRCE stage 1 mapping the first [EoT], the [SoT] and the keyword, eta 0.001 (Table 4, [EoT]+[SoT]+[KEY])")
register("trce", "TRCE stage 1 + 2", _trce, "TRCE both stages, the model's defaults (pocket: Config.pocket(), "
         "stage 2 lr 1e-4, 25 steps)", trained=True)
register("acterase", "ActErase (FFN)", _acterase(),
         "ActErase Alg. 1 on the FFN hidden activations (WANDA score), acterase.Config.pocket() on pocket")
register("acterase-xattn", "ActErase (cross-attention output)", _acterase(layers="cross_attention", score="magnitude"),
         "ActErase, the same settings on the cross-attention outputs (|x| score: WANDA needs a following weight)")
register("ant", "ANT", _ant, "ANT, ant.fit's model-aware defaults (Config.pocket() on pocket)", trained=True)


def names() -> tuple[str, ...]:
    """Every method's short name, in table order."""
    return tuple(_METHODS)


def methods() -> dict[str, Method]:
    """``{name: Method}`` in table order."""
    return dict(_METHODS)


def by_label() -> dict[str, Method]:
    """``{label: Method}`` (the row names of the methods table)."""
    return {m.label: m for m in _METHODS.values()}


def get(name: str) -> Method:
    """The method called ``name`` (a short name or a table label); unknown names list the close ones."""
    if name in _METHODS:
        return _METHODS[name]
    labels = by_label()
    if name in labels:
        return labels[name]
    hint = did_you_mean(name, [*_METHODS, *labels], n=3, cutoff=0.5)
    raise UnknownMethodError(f"no method named {name!r}{hint}; methods: {', '.join(_METHODS)}")


def fit(name: str, model: Diffusion, concept: Concept, *, progress: bool = False) -> Erasure:
    """Fit the catalogued method ``name`` on ``concept`` with its pocket settings."""
    return get(name)(model, concept, progress)
