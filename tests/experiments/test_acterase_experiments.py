"""ActErase's experiments: ``acterase_masks``, ``patch_modules``, ``multi_concept`` (fast settings, real code paths)."""

from __future__ import annotations

import json

import pytest
import torch

from circuits.experiments import ConfigError, load_result, run_experiment
from circuits.methods import Concept, acterase


def _files(out, figures):
    assert (out / "config.json").is_file() and (out / "metrics.json").is_file()
    for name in figures:
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.pdf").is_file()
    return json.loads((out / "metrics.json").read_text())


def _unit(value) -> bool:
    """A rate the oracle read: a float in [0, 1] (None would mean no oracle, which pocket always has)."""
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_acterase_masks_fast_densities_votes_and_overlap(tmp_path):
    out = tmp_path / "masks"
    result = run_experiment("acterase_masks", fast=True, out=out, progress=False)
    saved = _files(out, ["acterase_masks"])
    assert saved["metrics"]["concepts"][0]["concept"] == "red"
    config = result.config
    entries = result.metrics["concepts"]
    assert [e["concept"] for e in entries] == list(config.concepts)
    agreements = result.metrics["agreements"]
    for entry in entries:
        assert entry["tau"] == 0.01 and entry["pairs"] == 8  # App. A.3; 8 templates, no synonyms in the fast run
        assert len(entry["layers"]) == 7 and len(entry["density_per_step"]) == config.collect_steps
        for layer in entry["layers"]:
            assert 0.0 <= layer["density"] <= 1.0 and len(layer["density_per_step"]) == config.collect_steps
            assert all(0.0 <= d <= c * 2 + 1e-6 for d, c in zip(layer["density_per_step"],
                                                                layer["chance_density_per_step"]))
            assert abs(sum(layer["vote_histogram"]) - 1.0) < 1e-4
            curve = layer["density_at_agreement"]
            assert all(a >= b for a, b in zip(curve, curve[1:]))  # a higher threshold never masks more
            # the combined mask is the votes at the configured agreement
            assert layer["density"] == pytest.approx(curve[agreements.index(config.agreement)], abs=1e-6)
        total = sum(layer["entries"] for layer in entry["layers"])
        assert entry["density"] == pytest.approx(sum(la["entries"] * la["density"] for la in entry["layers"]) / total)
    (pair,) = result.metrics["overlap"]
    assert pair["concepts"] == ["red", "circle"] and 0.0 <= pair["jaccard"] <= 1.0 and 0.0 < pair["independent"] < 1.0
    again = load_result(out)
    assert set(again.figures) == {"acterase_masks"} and again.metrics == saved["metrics"]


def test_acterase_masks_runs_off_pocket_with_templates_and_says_what_is_missing(tiny_dir, tmp_path):
    result = run_experiment("acterase_masks", model=tiny_dir, concepts=("red",), templates=("a {} circle",),
                            collect_steps=2, synonyms=False, progress=False)  # fmt: skip
    (entry,) = result.metrics["concepts"]
    assert entry["pairs"] == 1 and entry["layers"] and result.metrics["overlap"] == []
    assert "acterase_masks" in result.figures
    with pytest.raises(ConfigError, match=r"bare word names a concept only on pocket; give templates"):
        run_experiment("acterase_masks", model=tiny_dir, concepts=("red",), collect_steps=1, progress=False)


def test_acterase_masks_bad_settings():
    with pytest.raises(ConfigError, match=r"agreement=0.0 must be in \(0, 1\]"):
        run_experiment("acterase_masks", agreement=0.0)
    with pytest.raises(ConfigError, match=r"names no concept"):
        run_experiment("acterase_masks", concepts=())
    with pytest.raises(ConfigError, match=r"'rde' is not a pocket colour.*did you mean 'red'"):
        run_experiment("acterase_masks", concepts=("rde",), collect_steps=1)
    with pytest.raises(ConfigError, match=r"score='wanda' reads W2"):
        run_experiment("acterase_masks", concepts=("red",), layers="cross_attention", collect_steps=1)


def test_patch_modules_fast_one_batched_call_and_sane_rates(tmp_path):
    out = tmp_path / "modules"
    result = run_experiment("patch_modules", fast=True, out=out, progress=False)
    _files(out, ["patch_modules", "images"])
    metrics, config = result.metrics, result.config
    assert metrics["order"] == list(config.modules) == ["ffn", "unet_output"] and metrics["measure"] == "oracle"
    assert metrics["sampling_calls"] == 1  # every module's patch and no patch: row blocks of one call
    assert metrics["images_per_variant"] == 4 * config.prompts_per_set * len(config.seeds)
    ffn, output = metrics["modules"]["ffn"], metrics["modules"]["unet_output"]
    assert ffn["score"] == "wanda" and output["score"] == "magnitude"
    assert [layer["label"] for layer in output["layers"]] == ["eps"] and len(ffn["layers"]) == 7
    for entry in (metrics["before"], ffn, output):
        for key in ("target", "synonyms", "unnamed", "kept", "preservation"):
            assert _unit(entry[key]), (key, entry[key])
    assert list(result.images) == ["no patch", "FFN", "UNet output"]
    shown = config.show_prompts + min(2, config.prompts_per_set)  # target prompts, then up to 2 preservation ones
    assert all(len(row) == shown for row in result.images.values()) and len(metrics["shown_prompts"]) == shown
    assert metrics["before"]["pixel_change"] == {name: 0.0 for name in metrics["before"]["pixel_change"]}
    assert ffn["pixel_change"]["target"] > 0 and output["pixel_change"]["target"] > 0  # each patch acts


def test_patch_modules_bad_settings():
    with pytest.raises(ConfigError, match=r"modules=\('ffn', 'attention'\); give each of ffn, cross_attention"):
        run_experiment("patch_modules", modules=("ffn", "attention"))
    with pytest.raises(ConfigError, match=r"seeds=\(\) gives no images"):
        run_experiment("patch_modules", seeds=())


TEMPLATES = ("a {} circle", "a {} square")
PRESERVATION = ("a green square", "a photo of a dog")


def _pixel_sane(change: dict) -> None:
    assert set(change) == {"target", "preservation"} and all(v >= 0 for v in change.values())


def test_patch_modules_off_pocket_measures_pixel_change_and_redraws(model, tmp_path):
    out = tmp_path / "modules_sd"
    result = run_experiment("patch_modules", model=model, fast=True, out=out, progress=False, templates=TEMPLATES,
                            preservation=PRESERVATION)  # fmt: skip
    saved = _files(out, ["patch_modules", "images"])
    metrics, config = result.metrics, result.config
    assert metrics["measure"] == "pixel_change" and metrics["sampling_calls"] == 1
    # the first prompts_per_set templates filled with the word; every preservation prompt
    assert {k: list(v) for k, v in metrics["prompts"].items()} == {"target": ["a red circle"],
                                                                  "preservation": list(PRESERVATION)}  # fmt: skip
    assert metrics["images_per_variant"] == (1 + len(PRESERVATION)) * len(config.seeds)
    assert metrics["before"]["pixel_change"] == {"target": 0.0, "preservation": 0.0}  # no patch against itself
    for entry in metrics["modules"].values():
        _pixel_sane(entry["pixel_change"])
        assert 0.0 <= entry["density"] <= 1.0 and all(0.0 <= la["density"] <= 1.0 for la in entry["layers"])
        ratio = entry["pixel_change"]["target"] / entry["pixel_change"]["preservation"]
        assert entry["selectivity"] == pytest.approx(ratio)
        assert "target" not in entry and "preservation_ratio" not in entry  # no oracle rates off pocket
    # something is patched: the UNet output mask covers part of the noise prediction and changes the images
    assert metrics["modules"]["unet_output"]["pixel_change"]["target"] > 0
    assert any("erased rates need the pocket oracle" in note for note in result.notes)
    assert list(result.images) == ["no patch", "FFN", "UNet output"]
    assert metrics["shown_prompts"] == ["a red circle", *PRESERVATION]
    again = load_result(out)
    assert set(again.figures) == {"patch_modules", "images"} and again.metrics == saved["metrics"]
    label = again.figures["patch_modules"].axes[0].get_ylabel()
    assert "pixel change" in label and "0-255" in label


def test_off_pocket_runs_say_what_is_missing(model):
    for name in ("patch_modules", "multi_concept"):
        with pytest.raises(ConfigError, match=rf"{name}: concept 'red' .*give templates="):
            run_experiment(name, model=model, fast=True, preservation=PRESERVATION, progress=False)
        with pytest.raises(ConfigError, match=rf"{name}: preservation=\(\) on .*give preservation="):
            run_experiment(name, model=model, fast=True, templates=TEMPLATES, progress=False)


def test_multi_concept_fast_merge_grows_and_marks_what_is_erased(tmp_path):
    out = tmp_path / "multi"
    result = run_experiment("multi_concept", fast=True, out=out, progress=False)
    _files(out, ["multi_concept", "images"])
    metrics = result.metrics
    rows = {row["variant"]: row for row in metrics["rows"]}
    assert list(rows) == ["no erasure", "n=1", "n=2", "blue alone"] and metrics["sampling_calls"] == 1
    assert metrics["measure"] == "oracle"
    assert [rows[v]["kind"] for v in rows] == ["none", "merged", "merged", "single"]
    single = {f["concept"]: f["density"] for f in metrics["fits"]}
    merged = {m["n"]: m for m in metrics["merged"]}
    assert merged[1]["density"] == pytest.approx(single["red"])  # merging one concept is that concept's mask
    assert max(single.values()) <= merged[2]["density"] <= sum(single.values()) + 1e-9  # Eq. 7: OR
    erased = {v: [k for k, s in row["sets"].items() if s["erased"]] for v, row in rows.items()}
    assert erased == {"no erasure": [], "n=1": ["red"], "n=2": ["red", "blue"], "blue alone": ["blue"]}
    assert {"other:green", "other:orange"} <= set(rows["no erasure"]["sets"])  # the colours never erased
    for row in rows.values():
        assert all(_unit(v["rate"]) and _unit(v["kept"]) for v in row["sets"].values())
    assert list(result.images) == list(rows)


def test_multi_concept_off_pocket_measures_pixel_change_and_redraws(model, tmp_path):
    out = tmp_path / "multi_sd"
    result = run_experiment("multi_concept", model=model, fast=True, out=out, progress=False, templates=TEMPLATES,
                            preservation=PRESERVATION)  # fmt: skip
    saved = _files(out, ["multi_concept", "images"])
    metrics = result.metrics
    assert metrics["measure"] == "pixel_change" and metrics["sampling_calls"] == 1
    assert metrics["set_names"] == ["red", "blue", "preservation"]
    rows = {row["variant"]: row for row in metrics["rows"]}
    assert list(rows) == ["no erasure", "n=1", "n=2", "blue alone"]
    base = rows["no erasure"]
    assert all(s["pixel_change"] == 0.0 for s in base["sets"].values()) and base["erased_change"] is None
    erased = {v: [k for k, s in row["sets"].items() if s["erased"]] for v, row in rows.items()}
    assert erased == {"no erasure": [], "n=1": ["red"], "n=2": ["red", "blue"], "blue alone": ["blue"]}
    for row in list(rows.values())[1:]:
        assert any(s["pixel_change"] > 0 for s in row["sets"].values()) and 0.0 < row["density"] <= 1.0
        own = [row["sets"][name]["pixel_change"] for name in erased[row["variant"]]]
        assert row["erased_change"] == pytest.approx(sum(own) / len(own))
        assert row["preservation_change"] == row["sets"]["preservation"]["pixel_change"]
        assert row["selectivity"] == pytest.approx(row["erased_change"] / row["preservation_change"])
    assert rows["n=1"]["rest_change"] == rows["n=1"]["sets"]["blue"]["pixel_change"] and rows["n=2"]["rest_change"] is None
    single = {f["concept"]: f["density"] for f in metrics["fits"]}
    merged = {m["n"]: m for m in metrics["merged"]}
    assert merged[1]["density"] == pytest.approx(single["red"])
    assert max(single.values()) <= merged[2]["density"] <= sum(single.values()) + 1e-9
    assert any("erased rates need the pocket oracle" in note for note in result.notes)
    again = load_result(out)
    assert set(again.figures) == {"multi_concept", "images"} and again.metrics == saved["metrics"]
    assert any("pixel change" in ax.get_ylabel() and "0-255" in ax.get_ylabel()
               for ax in again.figures["multi_concept"].axes)  # fmt: skip


def test_multi_concept_bad_settings():
    with pytest.raises(ConfigError, match=r"counts=\(3,\); give distinct numbers of concepts in 1..2"):
        run_experiment("multi_concept", concepts=("red", "blue"), counts=(3,))
    with pytest.raises(ConfigError, match=r"names a concept twice \(synonyms are one concept\)"):
        run_experiment("multi_concept", concepts=("red", "crimson"), counts=(1,), collect_steps=1)


def test_merge_of_one_erasure_patches_like_the_erasure(model):
    erasure = acterase.fit(model, Concept("red", templates=["a {} circle"]), steps=2)
    merged = acterase.merge([erasure])
    assert len(merged.graph) == len(erasure.graph) > 0
    assert [item.site for item in merged.graph] == [item.site for item in erasure.graph]
    for single, item in zip(erasure.graph, merged.graph):
        assert torch.equal(single.mask, item.mask)
        torch.testing.assert_close(single.source * single.mask, item.source * item.mask)  # masks may be per step
