"""The fast run every experiment test module shares: set ``EXPERIMENT = "name"`` in the module and take
the ``fast`` fixture (the result of ``run_experiment(name, fast=True)``, written to ``fast.out``)."""

from __future__ import annotations

import pytest

from circuits.experiments import run_experiment


@pytest.fixture(scope="module")
def fast(request, tmp_path_factory):
    name = request.module.EXPERIMENT
    return run_experiment(name, fast=True, out=tmp_path_factory.mktemp(name) / "run", progress=False)
