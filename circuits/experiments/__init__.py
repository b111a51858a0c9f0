"""Experiments: the papers' diagnostic figures and tables as named, repeatable recipes.

    import circuits
    circuits.list_experiments()                       # {name: one-line summary}
    result = circuits.run_experiment("eot_zeroing")   # renders in Jupyter: figures, headline table
    result = circuits.run_experiment("eot_zeroing", out="outputs/eot", steps=10, seeds=(0, 1))
    circuits.experiments.load_result("outputs/eot")   # read a folder back, figures redrawn

The same registry backs the command line: ``circuits list`` and ``circuits run NAME --set k=v``.
Recipes live one per file in :mod:`circuits.experiments.recipes`; figures are drawn by
:mod:`circuits.analysis` from results alone.
"""

from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import (
    Experiment,
    ExperimentError,
    experiment,
    experiments,
    get_experiment,
    list_experiments,
    load_result,
    resolve_config,
    resolve_model,
    run_experiment,
    show_progress,
)
from circuits.experiments.result import ExperimentResult, save_figure

__all__ = [
    "ConfigError", "Experiment", "ExperimentError", "ExperimentResult", "experiment", "experiments", "get_experiment",
    "list_experiments", "load_result", "resolve_config", "resolve_model", "run_experiment", "save_figure",
    "show_progress",
]
