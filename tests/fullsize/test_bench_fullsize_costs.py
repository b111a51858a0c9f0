"""``benchmarks/bench_fullsize_costs.py`` on a tiny SD1.5-shaped folder: the report's structure, never its times.

The full-size run takes tens of minutes and 5-16 GB (its numbers are in docs/performance.md); this runs every
piece of it (build, load, the interleaved arms, the sweep at two ``max_batch``, the fits, the JSON) in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_fullsize_costs", ROOT / "benchmarks" / "bench_fullsize_costs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("costs")
    argv = ["--tiny", "--families", "sd15", "--rounds", "2", "--steps", "1", "--fit-repeats", "1",
            "--folder", str(out / "folders"), "--json", str(out / "costs.json")]
    assert bench.main(argv) == 0
    return json.loads((out / "costs.json").read_text())


def test_report_has_every_arm_fit_and_sweep_memory(bench, report):
    machine = report["machine"]
    assert "bench_fullsize_costs.py --tiny --families sd15" in machine["command"]
    assert machine["git_commit"] and len(machine["loadavg_start"]) == 3 and len(machine["loadavg_end"]) == 3
    (row,) = report["families"]
    assert row["family"] == "sd15" and row["tiny"] is True and row["ffn_sites"] > 0

    assert list(row["arms"]) == ["baseline", *bench.ARMS]
    for name, arm in row["arms"].items():
        assert len(arm["s"]) == 2 and all(_positive(s) for s in arm["s"]), name
        assert _positive(arm["median_s"]) and _positive(arm["ratio"]) and _positive(arm["peak_gb"]), name
        assert arm["extra_gb"] >= 0, name
    assert row["arms"]["baseline"]["ratio"] == 1.0  # each round's baseline against itself
    assert _positive(row["sweep_vs_one_by_one"])

    n = len(row["sweep_variants"])
    memory = row["sweep_memory"]
    assert n > 1 and list(memory) == ["size", "steps", "1", str(n)] and memory["size"] == 128
    assert _positive(row["rss_model_gb"])
    for entry in (memory["1"], memory[str(n)], row["acterase_fit"]):
        assert _positive(entry["s"]) and _positive(entry["peak_gb"]) and entry["extra_gb"] >= 0
    assert row["acterase_fit"]["patches"] == row["ffn_sites"]

    assert list(row["fits"]) == list(bench.FIT_METHODS)
    for name, fit in row["fits"].items():
        assert "error" not in fit, (name, fit.get("error"))
        assert _positive(fit["median_s"]) and _positive(fit["warmup_s"]) and _positive(fit["peak_gb"]), name
        assert _positive(fit["median_cpu_s"]), name


def test_the_built_folder_is_reused(bench, report, tmp_path_factory):
    """A second run on the same ``--folder`` loads what the first built (``build_and_save_s`` is None)."""
    (row,) = report["families"]
    assert _positive(row["build_and_save_s"])
    folder = Path(report["machine"]["command"].split("--folder ")[1].split()[0])
    again = bench._folder("sd15", folder, True, {})
    assert again == folder / "sd15-tiny" and (again / "model_index.json").is_file()
    record: dict = {}
    bench._folder("sd15", folder, True, record)
    assert record["build_and_save_s"] is None


def test_a_half_built_folder_is_built_again(bench, tmp_path):
    """A build killed after ``model_index.json`` but before the end (no marker) is not loaded as if complete."""
    half = tmp_path / "sd15-tiny"
    half.mkdir()
    (half / "model_index.json").write_text("{}")
    record: dict = {}
    folder = bench._folder("sd15", tmp_path, True, record)
    assert record["build_and_save_s"] is not None and (folder / bench.BUILT).is_file()
    assert (folder / "unet" / "config.json").is_file()


def test_default_size_is_restored_even_when_the_body_raises(bench):
    import circuits

    model = circuits.load(circuits.build_tiny_pipeline(seed=0))
    before = model.default_size
    with pytest.raises(RuntimeError):
        with bench.default_size(model, 2 * before):
            assert model.default_size == 2 * before
            raise RuntimeError("inside")
    assert model.default_size == before


def test_measure_reports_the_memory_a_phase_allocates(bench):
    import torch

    def allocate() -> None:
        block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        assert float(block[-1]) == 1.0

    row = bench.measure(allocate)
    assert _positive(row["s"]) and _positive(row["peak_gb"])
    if bench.memory_method().startswith("VmHWM"):  # resettable: the phase's own 64 MiB shows
        assert row["extra_gb"] >= 0.05
