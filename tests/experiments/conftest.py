"""The fast run every experiment test module shares: set ``EXPERIMENT = "name"`` in the module and take
the ``fast`` fixture (the result of ``run_experiment(name, fast=True)``, written to ``fast.out``)."""

from __future__ import annotations

import json

import pytest

from circuits.experiments import load_result, run_experiment


@pytest.fixture(scope="module")
def fast(request, tmp_path_factory):
    name = request.module.EXPERIMENT
    return run_experiment(name, fast=True, out=tmp_path_factory.mktemp(name) / "run", progress=False)


def _read_back(result, figures: tuple[str, ...]):
    """Check what every output folder holds (metrics, notes and headline as returned, each figure as PNG and
    PDF) and return the folder read back with its figures redrawn from the saved numbers alone."""
    out = result.out
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["notes"] == result.notes and saved["headline"] == pytest.approx(result.headline)
    for name in figures:
        for suffix in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{suffix}").stat().st_size > 1000, f"{name}.{suffix}"
    again = load_result(out)
    assert set(again.figures) == set(result.figures) == set(figures)
    return again


@pytest.fixture()
def read_back():
    return _read_back
