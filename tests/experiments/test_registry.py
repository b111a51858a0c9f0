"""The experiment registry, its output folders and its CLI: what a user running experiments relies on.

Uses ``eot_similarity`` (no sampling: a fraction of a second) as the experiment under test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import circuits
from circuits.cli import main
from circuits.experiments import (
    ConfigError,
    ExperimentError,
    ExperimentResult,
    experiments,
    list_experiments,
    load_result,
    resolve_config,
    run_experiment,
)
from circuits.experiments.overrides import parse_assignments

ISSUE_EXPERIMENTS = {
    "eot_zeroing", "eot_similarity", "attention_maps", "erasepro_alignment", "depth_sensitivity", "cfg_reversal",
    "saliency_intersection", "acterase_masks", "patch_modules", "multi_concept", "erasure_benchmark", "erasure_eval",
}  # fmt: skip


def test_every_experiment_has_a_summary_a_paper_and_valid_fast_settings():
    registered = experiments()
    assert "eot_similarity" in registered
    listing = list_experiments()
    for name, entry in registered.items():
        assert entry.summary and entry.summary.endswith((".", "?", ")")), name
        assert entry.paper, f"{name} names no paper figure"
        resolve_config(name, **entry.fast)  # the fast settings are real settings
        assert listing[name].startswith(f"[{entry.paper}]")
    assert set(registered) - {"demo"} == ISSUE_EXPERIMENTS  # a renamed or lost experiment breaks this, not a script


def test_circuits_exports_the_registry():
    assert circuits.run_experiment is run_experiment and circuits.list_experiments is list_experiments


def test_unknown_names_and_settings_list_the_valid_ones():
    with pytest.raises(ExperimentError, match=r"did you mean 'eot_similarity'.*experiments: .*eot_similarity"):
        run_experiment("eot_similarty")
    with pytest.raises(ConfigError, match=r"no setting 'prompt' \(did you mean 'prompts'\?\).*show_positions"):
        run_experiment("eot_similarity", prompt=("a red circle",))
    with pytest.raises(ConfigError, match=r"show_positions='many' is not a int"):
        run_experiment("eot_similarity", show_positions="many")
    with pytest.raises(ConfigError, match=r"prompts='a red circle' is not a tuple\[str, \.\.\.\]"):
        run_experiment("eot_similarity", prompts="a red circle")
    assert resolve_config("eot_similarity", prompts=["a red circle"]).prompts == ("a red circle",)  # lists become tuples


def test_a_run_writes_config_provenance_metrics_and_figures_and_reads_back(tmp_path):
    out = tmp_path / "sim"
    result = run_experiment("eot_similarity", out=out, prompts=("a red circle",), show_positions=6)
    assert isinstance(result, ExperimentResult) and result.out == out and result.model == "pocket"
    config = json.loads((out / "config.json").read_text())
    assert config["experiment"] == "eot_similarity"
    assert config["config"] == {"prompts": ["a red circle"], "show_positions": 6}
    assert config["provenance"]["circuits"] == circuits.__version__ and config["provenance"]["torch"]
    checkout = Path(circuits.__file__).resolve().parents[1]
    assert ("git_commit" in config["provenance"]) == (checkout / ".git").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["headline"] == pytest.approx(result.headline) and metrics["notes"] == result.notes
    for suffix in ("png", "pdf"):
        assert (out / "figures" / f"eot_similarity.{suffix}").stat().st_size > 1000
    again = load_result(out)
    assert again.config == result.config and again.metrics == json.loads(json.dumps(result.metrics))
    assert set(again.figures) == set(result.figures)  # redrawn from the saved numbers alone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_rerunning_replaces_the_folder_and_a_failed_save_keeps_the_old_one(tmp_path):
    out = tmp_path / "sim"
    run_experiment("eot_similarity", out=out, fast=True)
    (out / "figures" / "stale.png").write_bytes(b"old")
    run_experiment("eot_similarity", out=out, fast=True)
    assert not (out / "figures" / "stale.png").exists()

    result = run_experiment("eot_similarity", fast=True)
    before = (out / "metrics.json").read_text()

    class Broken:
        def savefig(self, *args, **kwargs):
            raise RuntimeError("disk on fire")

    result.figures["broken"] = Broken()
    with pytest.raises(RuntimeError, match="disk on fire"):
        result.save(out)
    assert (out / "metrics.json").read_text() == before and (out / "figures" / "eot_similarity.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]


def test_reading_back_keeps_the_order_of_rows_tables_and_notes(tmp_path):
    from PIL import Image

    result = run_experiment("eot_similarity", fast=True)
    names = [f"row {letter}" for letter in "zyxwvutsrqponm"]  # 14 rows, reverse-alphabetical on purpose
    result.images = {name: [Image.new("RGB", (4, 4), (i * 15, 0, 0))] for i, name in enumerate(names)}
    result.headline = {"zeta": 1.0, "alpha": 2.0, "mid": 3.0}
    result.notes = ["| a | b |\n|---|---|\n| 1 | 2 |"]
    result.save(tmp_path / "ordered")
    again = load_result(tmp_path / "ordered", redraw=False)
    assert list(again.images) == names and [im[0].getpixel((0, 0))[0] for im in again.images.values()] == [
        i * 15 for i in range(len(names))
    ]
    assert list(again.headline) == ["zeta", "alpha", "mid"] and list(again.metrics) == list(result.metrics)
    assert "white-space:pre-wrap" in again._repr_html_()  # a table in a note keeps its line breaks


def test_a_recipe_file_that_fails_to_import_is_named_and_the_others_still_run(tmp_path, monkeypatch):
    from circuits.experiments import recipes, registry

    (tmp_path / "broken_recipe.py").write_text("import a_package_nobody_installed\n")
    monkeypatch.setattr(recipes, "__path__", [*recipes.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_BROKEN_RECIPES", {})
    with pytest.warns(registry.RecipeImportWarning, match=r"broken_recipe\.py.*a_package_nobody_installed"):
        assert "eot_similarity" in experiments()
    with pytest.raises(ExperimentError, match=r"no experiment named 'broken'.*not loaded: .*broken_recipe\.py"):
        run_experiment("broken")
    assert run_experiment("eot_similarity", fast=True).metrics


def test_refuses_to_replace_a_folder_that_is_not_an_experiment_output(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an experiment output folder"):
        run_experiment("eot_similarity", out=tmp_path, fast=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_result_renders_in_jupyter_with_escaped_prompts():
    result = run_experiment("eot_similarity", prompts=("a <b>red</b> circle",))
    page = result._repr_html_()
    assert "<b>red</b>" not in page and "&lt;b&gt;" in page
    assert "data:image/png;base64," in page and "mean cos" in page
    assert "eot_similarity on pocket" in result.summary() and "eot_similarity" in repr(result)


def test_oracle_experiments_refuse_other_models(model, monkeypatch):
    needs_oracle = [name for name, e in experiments().items() if "oracle" in e.needs]
    assert "erasure_benchmark" not in needs_oracle  # it measures pixel change off pocket
    if not needs_oracle:  # every recipe runs off pocket now: the refusal is still the registry's, test it on a stub
        from circuits.experiments import registry

        stub = registry.Experiment("oracle_stub", registry.get_experiment("eot_similarity").config,
                                   lambda model, config: pytest.fail("ran off pocket"), lambda result: {},
                                   paper="-", needs=("oracle",))  # fmt: skip
        monkeypatch.setitem(registry._REGISTRY, "oracle_stub", stub)
        needs_oracle = ["oracle_stub"]
    with pytest.raises(ExperimentError, match="pocket oracle"):
        run_experiment(needs_oracle[0], model=model, fast=True)


def test_experiments_run_on_a_loaded_sd_folder(model):
    result = run_experiment("eot_similarity", model=model, prompts=("a photo of a cat",))
    assert result.model == model.source and result.metrics["prompts"][0]["tokens"][0] == "<|startoftext|>"


@pytest.mark.parametrize(
    ("assignments", "expected"),
    [
        (["show_positions=5"], {"show_positions": 5}),
        (["prompts=a red circle,a blue square"], {"prompts": ["a red circle", "a blue square"]}),
        (['prompts=["a, b"]'], {"prompts": ["a, b"]}),
    ],
)
def test_cli_assignments_parse_by_the_field_type(assignments, expected):
    from circuits.experiments.recipes.eot_similarity import EotSimilarityConfig

    assert parse_assignments(EotSimilarityConfig, assignments, owner="x") == expected


def test_cli_list_and_run(tmp_path, capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "eot_similarity" in listing and "TRCE Fig. 7b" in listing
    out = tmp_path / "run"
    assert main(["run", "eot_similarity", "--set", "show_positions=4", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean cos(EoT, EoT)" in printed and f"wrote {out}" in printed
    assert json.loads((out / "config.json").read_text())["config"]["show_positions"] == 4
    assert main(["run", "eot_similarity", "--set", "show_positions=3", "--show-config"]) == 0
    assert json.loads(capsys.readouterr().out)["show_positions"] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "eot_simlarity"], "did you mean 'eot_similarity'"),
        (["run", "eot_similarity", "--set", "bogus=1"], "no setting 'bogus'"),
        (["run", "eot_similarity", "--set", "show_positions"], "write key=value"),
        (["run", "eot_similarity", "--set", "show_positions=many"], "is not a int"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_loading_prints_nothing_a_user_cannot_act_on(tmp_path):
    code = "import circuits; circuits.load('pocket')"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    noise = done.stdout + done.stderr
    for phrase in ("torchvision", "accelerate", "Loading pipeline components", "Loading weights"):
        assert phrase not in noise


def test_every_experiment_is_documented_and_has_a_gallery_page():
    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "experiments.md").read_text()
    gallery = (root / "analyses" / "README.md").read_text()
    for name in experiments():
        if name == "demo":
            continue
        assert f"### {name}\n" in docs and f"[`{name}`](#{name})" in docs, f"docs/experiments.md lacks {name}"
        page = root / "analyses" / f"{name}.md"
        assert page.is_file() and f"]({name}.md)" in gallery, f"analyses/README.md lacks a page for {name}"
        for figure in re.findall(r"\]\((figures/[^)]+\.png)\)", page.read_text()):
            assert (root / "analyses" / figure).is_file(), f"{page.name} shows {figure}, which is missing"
