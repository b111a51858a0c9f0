"""``erasure_benchmark``: the methods compared on pocket, and the catalog it shares with benchmarks/methods_table.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from circuits.analysis.benchmark import markdown_table, meets_goal
from circuits.experiments import ConfigError, ExperimentError, load_result, run_experiment
from circuits.interventions.graph import Graph
from circuits.methods import Erasure, catalog, trce

ROOT = Path(__file__).resolve().parents[2]
RATES = ("target_before", "target_after", "synonyms_before", "synonyms_after", "unnamed_rate", "kept_before",
         "kept_after", "preservation_before", "preservation_after")  # fmt: skip


def _noop(model, concept, progress):
    return Erasure("noop", concept, {}, Graph(), seconds=0.0)


def _probe(model, concept, progress):  # an activation-level graph (no weight edit): zero every [EoT] map
    return Erasure("probe", concept, {}, trce.eot_probe(model.tokenizer.model_max_length), seconds=0.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    catalog.register("noop", "no-op (test)", _noop, "an empty graph")
    catalog.register("eot-probe", "[EoT] zeroed (test)", _probe, "zero the cross-attention to every [EoT]")
    try:
        out = tmp_path_factory.mktemp("bench") / "out"
        yield out, run_experiment("erasure_benchmark", fast=True, out=out, progress=False,
                                  methods=("uce", "trce1", "noop", "eot-probe"))  # fmt: skip
    finally:
        catalog.unregister("noop")
        catalog.unregister("eot-probe")


def test_fast_run_rows_rates_and_timings(run):
    _, result = run
    rows = result.metrics["rows"]
    assert [r["name"] for r in rows] == ["uce", "trce1", "noop", "eot-probe"]
    assert [r["method"] for r in rows] == ["UCE", "TRCE stage 1", "no-op (test)", "[EoT] zeroed (test)"]
    for row in rows:
        assert row["concept"] == "red" and row["images"] == 3 * 2  # target, synonyms, preservation x 2 prompts x 1 seed
        for key in RATES:
            assert 0.0 <= row[key] <= 1.0, (row["method"], key)
        assert row["fit_seconds"] >= 0 and row["sampling_seconds"] > 0 and row["sampling_ratio"] > 0
        assert row["meets_goal"] == meets_goal(row)
        assert row["plain_images"] == 4 * 2  # the baseline also samples the unnamed set
    # the same noise before and after: an empty graph changes nothing, to the image
    noop = rows[2]
    assert noop["target_after"] == noop["target_before"] and noop["preservation_ratio"] == 1.0
    assert noop["kept_after"] == noop["kept_before"] and noop["synonyms_after"] == noop["synonyms_before"]
    plain = np.stack([np.asarray(i, dtype=float) for i in result.images["red/no erasure"]])
    same = np.stack([np.asarray(i, dtype=float) for i in result.images["red/no-op (test)"]])
    zeroed = np.stack([np.asarray(i, dtype=float) for i in result.images["red/[EoT] zeroed (test)"]])
    assert np.abs(same - plain).max() <= 2  # batches of other sizes round differently, nothing more
    assert np.abs(zeroed - plain).mean() > 5
    assert set(result.metrics["left_out"]) == {"trce", "ant"}  # the fine-tunes, not asked for


def test_table_headline_notes_and_files(run):
    out, result = run
    table = result.metrics["table_markdown"]
    assert table.count("\n") == 2 + 4 - 1 and "| red | UCE |" in table and "sampling s" in table
    assert result.notes[-1].endswith(table) and any("Not run here: trce, ant" in n for n in result.notes)
    met = sum(r["meets_goal"] for r in result.metrics["rows"])
    assert result.headline["rows meeting the goal"] == f"{met} of 4"
    assert table.count("| met |") == met
    for suffix in ("png", "pdf"):
        assert (out / "figures" / f"erasure_benchmark.{suffix}").stat().st_size > 1000
        assert (out / "figures" / f"images_red.{suffix}").stat().st_size > 1000
    assert len(result.images) == 5 and all(len(v) == 2 + 2 for v in result.images.values())  # 2 target + 2 kept
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["table_markdown"] == table
    again = load_result(out)
    assert set(again.figures) == {"erasure_benchmark", "images_red"}


def test_bad_settings_name_the_valid_ones():
    with pytest.raises(ConfigError, match=r"no method named 'ucee' \(did you mean 'uce'.*methods: uce, "):
        run_experiment("erasure_benchmark", methods=("ucee",))
    with pytest.raises(ConfigError, match=r"'rde' is not a pocket colour.*did you mean 'red'"):
        run_experiment("erasure_benchmark", concepts=("rde",))
    with pytest.raises(ConfigError, match="names a method twice"):
        run_experiment("erasure_benchmark", methods=("uce", "UCE"))
    with pytest.raises(ConfigError, match="names a concept twice"):
        run_experiment("erasure_benchmark", concepts=("red", "crimson"))
    with pytest.raises(ConfigError, match="seeds=()"):
        run_experiment("erasure_benchmark", seeds=())
    with pytest.raises(ConfigError, match="prompts_per_set=0"):
        run_experiment("erasure_benchmark", prompts_per_set=0)


def test_needs_the_pocket_oracle(tiny_dir):
    with pytest.raises(ExperimentError, match="pocket oracle"):
        run_experiment("erasure_benchmark", model=tiny_dir, fast=True)


def test_catalog_names_labels_and_errors():
    assert catalog.names()[:5] == ("uce", "uce+preservation", "erasepro", "erasepro-w", "trce1")
    assert catalog.get("UCE + preservation") is catalog.get("uce+preservation")
    assert {m.name for m in catalog.methods().values() if m.trained} == {"trce", "ant"}
    with pytest.raises(catalog.UnknownMethodError, match=r"did you mean 'acterase'"):
        catalog.get("acterse")
    with pytest.raises(ValueError, match="without spaces"):
        catalog.register("my method", "Mine", _noop, "")
    with pytest.raises(ValueError, match="already registered"):
        catalog.register("uce", "UCE again", _noop, "")


def test_methods_table_uses_the_catalog_and_still_renders_saved_runs(capsys):
    spec = importlib.util.spec_from_file_location("methods_table", ROOT / "benchmarks" / "methods_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert list(module.METHODS) == [m.label for m in catalog.methods().values()]
    files = sorted(str(p) for p in (ROOT / "benchmarks").glob("results_methods_table*.json"))
    assert module.main(["--render", *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = sum(len(json.loads(Path(f).read_text())["rows"]) for f in files)
    assert lines[0].startswith("| concept | method | target rate before → after |") and len(lines) == 2 + rows
    assert lines[2].startswith("| red | UCE | 1.00 → **0.03** | 1.00 → **0.03** | 0.12 |")


def test_goal_and_markdown_columns():
    row = {"concept": "red", "method": "M", "target_before": 1.0, "target_after": 0.2, "synonyms_before": 1.0,
           "synonyms_after": 0.25, "unnamed_rate": 0.1, "kept_before": 0.9, "kept_after": 0.9,
           "preservation_before": 0.9, "preservation_after": 0.9, "preservation_ratio": 1.0, "fit_seconds": 1.0,
           "sampling_seconds": 2.0, "sampling_ratio": 1.1}  # fmt: skip
    assert not meets_goal(row)  # the synonyms are not erased enough
    assert meets_goal({**row, "synonyms_after": None}) and meets_goal({**row, "synonyms_after": 0.2})
    assert not meets_goal({**row, "synonyms_after": 0.0, "preservation_ratio": 0.89})
    plain = markdown_table([row])
    assert plain.splitlines()[0].count("|") == 9 and "sampling" not in plain
    full = markdown_table([row], timing=True, goal=(0.3, 0.9))
    assert full.splitlines()[2].endswith("| 2.0 (1.10×) | met |")
