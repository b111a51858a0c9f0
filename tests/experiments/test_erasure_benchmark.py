"""``erasure_benchmark``: the methods compared on pocket and on a tiny random SD folder (pixel change, no oracle),
and the catalog it shares with benchmarks/methods_table.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from circuits.analysis.benchmark import markdown_table, meets_goal
from circuits.experiments import ConfigError, load_result, run_experiment
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
def test_methods():
    catalog.register("noop", "no-op (test)", _noop, "an empty graph")
    catalog.register("eot-probe", "[EoT] zeroed (test)", _probe, "zero the cross-attention to every [EoT]")
    try:
        yield
    finally:
        catalog.unregister("noop")
        catalog.unregister("eot-probe")


@pytest.fixture(scope="module")
def run(tmp_path_factory, test_methods):
    out = tmp_path_factory.mktemp("bench") / "out"
    return out, run_experiment("erasure_benchmark", fast=True, out=out, progress=False,
                               methods=("uce", "trce1", "noop", "eot-probe"),
                               preservation=("a blue square",))  # an off-pocket setting: unused here, and said so


@pytest.fixture(scope="module")
def off_pocket(tmp_path_factory, test_methods, model):
    out = tmp_path_factory.mktemp("bench_sd") / "out"
    return out, run_experiment("erasure_benchmark", model=model, fast=True, out=out, progress=False,
                               concepts=("cat", "red"), synonyms=("red:crimson",),
                               methods=("uce", "uce+preservation", "noop", "eot-probe"),
                               preservation=("a photo of a dog", "a blue circle", "a painting of a square"))


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
    assert result.metrics["measure"] == "oracle"
    assert any(n.startswith("Not used on pocket: preservation") for n in result.notes)


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


CHANGES = ("target_change", "synonyms_change", "preservation_change")


def test_off_pocket_rows_pixel_changes_and_timings(off_pocket, model):
    _, result = off_pocket
    assert result.model == model.source and result.metrics["measure"] == "pixel_change"
    rows = result.metrics["rows"]
    assert [(r["concept"], r["name"]) for r in rows] == [
        (c, m) for c in ("cat", "red") for m in ("uce", "uce+preservation", "noop", "eot-probe")]
    assert result.metrics["prompts"]["red"] == {
        "target": ["a photo of a red", "a painting of a red"],
        "synonyms": ["a photo of a crimson", "a painting of a crimson"],
        "preservation": ["a photo of a dog", "a blue circle"]}  # prompts_per_set=2 of each set
    assert "synonyms" not in result.metrics["prompts"]["cat"]
    for row in rows:
        assert "target_after" not in row and "meets_goal" not in row  # no oracle rates, no goal verdict
        has_synonyms = row["concept"] == "red"
        assert row["images"] == (3 if has_synonyms else 2) * 2 == row["plain_images"]
        assert (row["synonyms_change"] is not None) == has_synonyms
        for key in CHANGES:
            assert row[key] is None or 0.0 <= row[key] <= 255.0, (row["method"], key)
            cos = row[key.replace("change", "latent_cos")]
            assert (cos is None) == (row[key] is None) and (cos is None or -1.0 - 1e-9 <= cos <= 1.0 + 1e-9)
        assert row["fit_seconds"] >= 0 and row["sampling_seconds"] > 0 and row["sampling_ratio"] > 0
    # the same noise, the same batches: an empty graph changes nothing, to the bit
    for noop in (r for r in rows if r["name"] == "noop"):
        assert all(noop[k] in (None, 0.0) for k in CHANGES) and noop["selectivity"] is None
        assert noop["target_latent_cos"] == pytest.approx(1.0) and noop["preservation_latent_cos"] == pytest.approx(1.0)
    for probe in (r for r in rows if r["name"] == "eot-probe"):  # zeroing every [EoT] map changes every prompt
        assert probe["target_change"] > 1 and probe["preservation_change"] > 1 and probe["target_latent_cos"] < 1
        assert probe["selectivity"] == pytest.approx(probe["target_change"] / probe["preservation_change"])
    plain = np.stack([np.asarray(i, dtype=float) for i in result.images["red/no erasure"]])
    same = np.stack([np.asarray(i, dtype=float) for i in result.images["red/no-op (test)"]])
    assert np.array_equal(plain, same) and len(result.images) == 2 * 5
    assert all(len(v) == 2 + 2 for v in result.images.values())  # 2 target + 2 preservation prompts


def test_off_pocket_table_notes_files_and_redraw(off_pocket):
    out, result = off_pocket
    table = result.metrics["table_markdown"]
    assert table.count("\n") == 2 + 8 - 1 and "| cat | UCE |" in table and "selectivity" in table
    assert "| red | no-op (test) | **0.0** | 0.0 | **0.0** | – | 1.000 / 1.000 |" in table
    assert result.notes[-1].endswith(table) and "goal" not in result.metrics
    assert any(n.startswith("No goal verdict on this model") for n in result.notes)
    assert any("Unchanged images (change 0): no-op (test)" in n for n in result.notes)
    assert "rows meeting the goal" not in result.headline and "pixel change" in result.headline["measure"]
    for suffix in ("png", "pdf"):
        for name in ("erasure_benchmark", "images_cat", "images_red"):
            assert (out / "figures" / f"{name}.{suffix}").stat().st_size > 1000
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["measure"] == "pixel_change" and saved["metrics"]["table_markdown"] == table
    again = load_result(out)
    assert set(again.figures) == {"erasure_benchmark", "images_cat", "images_red"}


def test_off_pocket_settings_errors_name_the_field(model):
    def check(match, **overrides):
        settings = {"concepts": ("red",), "preservation": ("a photo of a dog",), **overrides}
        with pytest.raises(ConfigError, match=match):
            run_experiment("erasure_benchmark", model=model, fast=True, **settings)

    check(r"templates=\(\) on .*not pocket: a concept is a word.*templates=\('a photo of a \{\}'", templates=())
    check(r"templates: 'a photo of a cat' must contain exactly one '\{\}'", templates=("a photo of a cat",))
    check(r"preservation=\(\) on .*leave alone, e\.g\. preservation=", preservation=())
    check(r"preservation prompt 'a Red square' names 'red' \(concept 'red'\)", preservation=("a Red square",))
    check(r"preservation prompt 'a crimson dog' names 'crimson'", synonyms=("crimson",), preservation=("a crimson dog",))
    check(r"synonyms: 'crimson' does not say whose .* write it as 'red:crimson'", concepts=("red", "cat"),
          synonyms=("crimson",))  # fmt: skip
    check(r"synonyms: 'blue:azure' names the concept 'blue', which is not in concepts", synonyms=("blue:azure",))
    check(r"concepts=\('red', 'Red'\) names a concept twice", concepts=("red", "Red"))
    check(r"concepts/synonyms/anchor: concept word 'rde': the tokenizer does not know", concepts=("rde",))


def test_the_pocket_word_check_stays_on_pocket():
    with pytest.raises(ConfigError, match=r"'rde' is not a pocket colour"):  # the pocket word check stays on pocket
        run_experiment("erasure_benchmark", concepts=("rde",), templates=())


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
    # the first row as the committed results_methods_table.json holds it (red, UCE: rates 1.00 -> 0.03, unnamed 0.12)
    assert lines[2].startswith("| red | UCE | 1.00 → **0.03** | 1.00 → **0.03** | 0.12 |")


def test_methods_table_renders_the_goal_column(capsys):
    spec = importlib.util.spec_from_file_location("methods_table", ROOT / "benchmarks" / "methods_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = ROOT / "benchmarks" / "results_conformance_methods_table.json"
    assert module.main(["--render", str(saved), "--goal"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(saved.read_text())["rows"]
    assert lines[0].endswith("| fit s | goal |") and len(lines) == 2 + len(rows)
    verdicts = [line.rsplit("|", 2)[-2].strip() for line in lines[2:]]
    assert verdicts.count("met") == sum(meets_goal(r) for r in rows) and set(verdicts) <= {"met", "missed"}


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
