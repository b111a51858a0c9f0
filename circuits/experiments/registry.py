"""The experiment registry: named recipes, each a frozen config dataclass plus a function.

A recipe module in :mod:`circuits.experiments.recipes` registers itself::

    @dataclass(frozen=True)
    class EotZeroingConfig:
        prompts: tuple[str, ...] = ("a red circle", ...)
        steps: int = 25

    @experiment("eot_zeroing", EotZeroingConfig, draw=analysis.eot.draw_zeroing,
                paper="TRCE Figs. 2, 7a", fast={"steps": 4, ...})
    def eot_zeroing(model: Diffusion, config: EotZeroingConfig) -> ExperimentResult:
        '''Zero the attention maps of the last k [EoT] positions ... (first line: the one-line summary)'''

``run_experiment(name, model="pocket", out=None, **overrides)`` resolves the config (unknown or
mistyped settings raise a :class:`~circuits.experiments.overrides.ConfigError` listing the valid
ones), loads the model once per process, runs the recipe, draws its figures with ``draw`` (from
the result alone), stamps the provenance (package version, git commit, versions, time, command),
and writes the output folder when ``out`` is given. ``fast`` are the overrides of a seconds-long
variant that runs the same code paths (the test suite runs every experiment that way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import os
import pkgutil
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuits.errors import ConfigError, NameNotFoundError, did_you_mean
from circuits.experiments.overrides import apply_overrides
from circuits.experiments.result import ExperimentResult, check_destination
from circuits.version import __version__


class ExperimentError(NameNotFoundError):
    """An experiment name that is not registered."""


@dataclass(frozen=True)
class Experiment:
    name: str
    config: type
    run: Callable[[Any, Any], ExperimentResult]
    draw: Callable[[ExperimentResult], Mapping[str, Any]]
    paper: str = ""
    fast: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        doc = (self.run.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""


_REGISTRY: dict[str, Experiment] = {}
_MODELS: dict[str, Any] = {}
_PROGRESS = [True]


def experiment(
    name: str,
    config: type,
    *,
    draw: Callable[[ExperimentResult], Mapping[str, Any]],
    paper: str = "",
    fast: Mapping[str, Any] | None = None,
    needs: tuple[str, ...] = (),
) -> Callable[[Callable[[Any, Any], ExperimentResult]], Callable[[Any, Any], ExperimentResult]]:
    """Register ``fn(model, config) -> ExperimentResult`` as ``name``. ``needs=("oracle",)`` marks a
    recipe that only runs on pocket (its metrics come from the pocket oracle)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"experiment {name!r}: config must be a dataclass, got {config!r}")

    def register(fn: Callable[[Any, Any], ExperimentResult]) -> Callable[[Any, Any], ExperimentResult]:
        if name in _REGISTRY and _REGISTRY[name].run is not fn:
            first = _REGISTRY[name].run.__module__
            raise ValueError(f"experiment {name!r} is registered twice ({first}, {fn.__module__})")
        apply_overrides(config, config(), dict(fast or {}), owner=f"experiment {name!r} (its fast settings)")
        _REGISTRY[name] = Experiment(name, config, fn, draw, paper, dict(fast or {}), tuple(needs))
        return fn

    return register


_BROKEN_RECIPES: dict[str, str] = {}


class RecipeImportWarning(UserWarning):
    """A recipe module failed to import; the other experiments still run."""


def _load_recipes() -> None:
    # One broken recipe file (a missing optional package, a typo) must not take every experiment down:
    # it is skipped with a warning naming the file, and asking for an experiment that is not found
    # mentions it.
    from circuits.experiments import recipes

    for module in pkgutil.iter_modules(recipes.__path__):
        qualified = f"{recipes.__name__}.{module.name}"
        if qualified in sys.modules or qualified in _BROKEN_RECIPES:
            continue
        try:
            importlib.import_module(qualified)
        except Exception as error:  # noqa: BLE001 -- reported, never swallowed silently
            origin = Path(module.module_finder.path) / f"{module.name}.py"  # type: ignore[union-attr]
            _BROKEN_RECIPES[qualified] = f"{origin}: {type(error).__name__}: {error}"
            warnings.warn(
                f"experiment recipes in {origin} were skipped: {type(error).__name__}: {error}",
                RecipeImportWarning,
                stacklevel=3,
            )


def experiments() -> dict[str, Experiment]:
    """Every registered experiment, by name (recipes are imported on first use)."""
    _load_recipes()
    return dict(sorted(_REGISTRY.items()))


def get_experiment(name: str) -> Experiment:
    registered = experiments()
    if name not in registered:
        hint = did_you_mean(name, registered, n=3)
        broken = "".join(f"; not loaded: {reason}" for reason in _BROKEN_RECIPES.values())
        raise ExperimentError(f"no experiment named {name!r}{hint}; experiments: {', '.join(registered)}{broken}")
    return registered[name]


def list_experiments() -> dict[str, str]:
    """``{name: one-line summary}`` of every experiment (``print`` it, or see ``circuits list``)."""
    return {name: (f"[{e.paper}] " if e.paper else "") + e.summary for name, e in experiments().items()}


def show_progress() -> bool:
    """Whether the running experiment should draw progress bars (recipes pass it to ``sweep``/``sample``)."""
    return _PROGRESS[-1]


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    _PROGRESS.append(enabled)
    try:
        yield
    finally:
        _PROGRESS.pop()


def resolve_model(model: Any) -> Any:
    """A loaded :class:`~circuits.Diffusion` for ``model`` (``"pocket"``, a folder, or a loaded one);
    a name or folder is loaded once per process (experiments never change weights for good)."""
    from circuits.models.diffusion import Diffusion
    from circuits.models.loading import load

    if isinstance(model, Diffusion):
        return model
    key = str(model)
    if key not in _MODELS:
        _MODELS[key] = load(model)
    return _MODELS[key]


def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return {}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": bool(dirty)}


def provenance() -> dict[str, Any]:
    """What produced a result: package and library versions, git commit, machine, time, command."""
    import diffusers
    import torch
    import transformers

    return {
        "circuits": __version__,
        **_git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
    }


def resolve_config(name: str, config: Any = None, **overrides: Any) -> Any:
    """The config ``run_experiment(name, **overrides)`` would use (for inspection before a run)."""
    entry = get_experiment(name)
    base = config if config is not None else entry.config()
    if not isinstance(base, entry.config):
        raise ConfigError(
            f"experiment {name!r}: config must be a {entry.config.__qualname__}, got {type(base).__name__}"
        )
    return apply_overrides(entry.config, base, overrides, owner=f"experiment {name!r}")


def run_experiment(
    name: str,
    model: Any = "pocket",
    out: str | os.PathLike[str] | None = None,
    *,
    config: Any = None,
    fast: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> ExperimentResult:
    """Run the experiment ``name`` and return its result (which renders itself in Jupyter).

    ``model``: ``"pocket"`` (default), a diffusers SD1.x/2.x/SDXL folder, or a loaded ``circuits.Diffusion``.
    ``out``: a folder to write config, metrics, figures (PNG + PDF) and images to. ``fast=True``
    starts from the recipe's seconds-long settings (same code paths, fewer prompts and steps);
    ``overrides`` set config fields by name, e.g. ``steps=10, seeds=(0, 1)``.
    """
    entry = get_experiment(name)
    base = config
    if fast:
        base = apply_overrides(entry.config, base or entry.config(), dict(entry.fast), owner=f"experiment {name!r}")
    resolved = resolve_config(name, base, **overrides)
    if out is not None:
        check_destination(out)  # before the minutes of work, not after
    loaded = resolve_model(model)
    if "oracle" in entry.needs and loaded.source != "pocket":
        raise ExperimentError(
            f"experiment {name!r} reads its numbers with the pocket oracle, which only knows the pocket world; "
            f"run it with model='pocket' (got {loaded.source!r})"
        )
    start = time.perf_counter()
    with _progress(progress):
        result = entry.run(loaded, resolved)
    if not isinstance(result, ExperimentResult):
        raise TypeError(f"experiment {name!r} returned a {type(result).__name__}, not an ExperimentResult")
    result.name, result.config, result.model, result.draw = name, resolved, loaded.source, entry.draw
    result.seconds = time.perf_counter() - start
    result.provenance = provenance()
    result.redraw()
    if out is not None:
        result.save(out)
    return result


def load_result(folder: str | os.PathLike[str], *, redraw: bool = True) -> ExperimentResult:
    """Read an output folder back into an :class:`ExperimentResult` (config, metrics, images); with
    ``redraw`` its figures are drawn again from them."""
    result = ExperimentResult.read(folder, get_experiment)
    if redraw:
        result.redraw()
    return result
