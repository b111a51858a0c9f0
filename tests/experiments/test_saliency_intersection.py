"""``saliency_intersection`` (ANT Fig. 4): the mask it draws is the mask ``ant.fit`` trains; the curve never
rises, the first map keeps gamma_density of the parameters (Eq. 4's gamma calibrated on it), and the per-part
counts add up to it after every map; it runs off pocket; bad settings are named."""

from __future__ import annotations

import json
import math

import pytest

import circuits
import circuits.pocket
from circuits.experiments import ConfigError, load_result, run_experiment
from circuits.experiments.recipes.saliency_intersection import BLOCKS, KINDS, block_of, kind_of
from circuits.methods import ant
from circuits.methods.common import config_dict

EXPERIMENT = "saliency_intersection"


def _check_entry(entry: dict, maps: int, acfg: dict) -> None:
    curve = entry["curve"]
    assert len(curve) == entry["maps"] == maps and len(entry["densities"]) == maps
    assert all(a >= b >= 0 for a, b in zip(curve, curve[1:]))
    assert entry["threshold"] == acfg["threshold"] and len(entry["mask_sha256"]) == 64
    if acfg["threshold"] == "gamma":  # Eq. 4: gamma calibrated so that the first map keeps gamma_density of all
        density = acfg["gamma_density"]
        assert math.ceil(density * entry["considered"]) <= curve[0] <= 1.001 * density * entry["considered"] + 1
        assert entry["gamma"] > 0
    else:  # a share of each tensor: at most ceil(fraction x size) per tensor
        assert entry["gamma"] is None
        assert 0 < curve[0] <= acfg["fraction"] * entry["considered"] + entry["tensors"]
    assert all(0 <= d <= 1 for d in entry["densities"])
    for grouping in ("groups", "kinds"):
        parts = entry[grouping]
        assert sum(p["size"] for p in parts.values()) == entry["considered"]
        for k in range(maps):  # the parts partition the parameters after every map
            assert sum(p["active"][k] for p in parts.values()) == curve[k]
    assert entry["independent"][0] == pytest.approx(entry["densities"][0] * entry["considered"])


def test_fast_run_on_pocket(fast) -> None:
    config, metrics = fast.config, fast.metrics
    (entry,) = metrics["concepts"]
    assert entry["concept"] == "red" and entry["words"] == ["red", "crimson", "scarlet"]
    assert entry["prompts"] == config.maps and entry["seeds"] == 1  # fewer maps than prompts: first prompts, one seed
    _check_entry(entry, config.maps, metrics["ant_config"])
    pocket = config_dict(ant.Config.pocket())  # on pocket: its defaults, with the fast run's overrides
    assert metrics["ant_config"] == {**pocket, "maps": config.maps, "sample_steps": 6, "t_prime": 500.0}
    assert set(entry["kinds"]) <= set(KINDS) and metrics["groups"][0] == "conv_in"
    assert fast.headline == {f"red: active after {config.maps} maps": entry["curve"][-1]}
    assert any("too few maps" in note for note in fast.notes)
    saved = json.loads((fast.out / "metrics.json").read_text())
    assert saved["metrics"]["concepts"][0]["curve"] == entry["curve"]
    assert (fast.out / "figures" / "saliency_intersection.png").stat().st_size > 1000
    assert set(load_result(fast.out).figures) == {"saliency_intersection"}


def test_the_experiment_draws_the_mask_fit_trains(fast) -> None:
    config, (entry,) = fast.config, fast.metrics["concepts"]
    model = circuits.load("pocket")
    erasure = ant.fit(model, circuits.pocket.concept("red"), maps=config.maps, sample_steps=config.sample_steps,
                      t_prime=config.t_prime, steps=1, progress=False)  # fmt: skip
    mask = next(row for row in erasure.trace if row["kind"] == "mask")
    assert mask["sha256"] == entry["mask_sha256"] and mask["gamma"] == entry["gamma"]
    assert [row["active"] for row in erasure.trace if row["kind"] == "saliency"] == entry["curve"]
    other = run_experiment(EXPERIMENT, model=model, fast=True, maps=config.maps - 1, progress=False)
    assert other.metrics["concepts"][0]["mask_sha256"] != mask["sha256"]  # the digest tells masks apart


def test_runs_on_a_folder_with_templates(model) -> None:
    result = run_experiment("saliency_intersection", model=model, fast=True, concepts=("cat", "dog"), maps=5,
                            templates=("a photo of a {}", "a {} on a white background"), progress=False)  # fmt: skip
    cat, dog = result.metrics["concepts"]
    assert cat["words"] == ["cat"] and cat["prompts"] == 2 and cat["seeds"] == 3 and dog["concept"] == "dog"
    for entry in (cat, dog):
        _check_entry(entry, 5, result.metrics["ant_config"])
    assert result.metrics["ant_config"] == {**config_dict(ant.Config.paper()), **{
        "maps": 5, "sample_steps": 6, "t_prime": 500.0}}  # off pocket: the paper's defaults  # fmt: skip
    assert any("shrinks" in note for note in result.notes) and "cat: active after 5 maps" in result.headline


def test_authors_threshold_is_a_named_option(model) -> None:
    result = run_experiment("saliency_intersection", model=model, fast=True, concepts=("cat",), maps=2,
                            threshold="authors", progress=False)  # fmt: skip
    (entry,) = result.metrics["concepts"]
    assert entry["threshold"] == "authors" and entry["gamma"] is None
    assert entry["densities"][0] == pytest.approx(0.5, abs=0.01)  # floor(size / 2) of each tensor


def test_params_restrict_the_maps_to_those_parameters(model) -> None:
    """``params`` (ANT's globs) bounds what a map covers, and so its gradient's memory (SDXL at full size)."""
    result = run_experiment("saliency_intersection", model=model, fast=True, concepts=("cat",), maps=2,
                            params=("unet.*.attn2.*",), progress=False)  # fmt: skip
    (entry,) = result.metrics["concepts"]
    attn2 = ant.parameter_names(model, ("unet.*.attn2.*",))
    assert entry["considered"] == sum(model.parameter(n).numel() for n in attn2)
    assert entry["tensors"] == len(attn2) and result.metrics["ant_config"]["params"] == ["unet.*.attn2.*"]


def test_parts_name_every_unet_parameter(model) -> None:
    names = [f"unet.{n}" for n, _ in model.unet.named_parameters()]
    assert {block_of(n) for n in names} <= set(BLOCKS) and {kind_of(n) for n in names} <= set(KINDS)
    assert block_of("unet.conv_norm_out.weight") == "conv_out" and kind_of("unet.mid_block.attentions.0."
                                                                          "transformer_blocks.0.attn2.to_k.weight") == (
        "cross-attention")  # fmt: skip


@pytest.mark.parametrize(("overrides", "match"), [
    ({"concepts": ()}, "concepts is empty"),
    ({"concepts": ("red", "red")}, "repeats a concept"),
    ({"maps": 0}, "at least 1 map"),
    ({"fraction": 0.0}, r"fraction in \(0, 1\]"),
    ({"gamma_density": 1.5}, r"gamma_density=1.5; give a fraction in \(0, 1\]"),
    ({"threshold": "top"}, "threshold"),
    ({"prompts": "sentences"}, "prompts"),
])  # fmt: skip
def test_bad_settings_are_named(overrides, match) -> None:
    with pytest.raises(ConfigError, match=match):
        run_experiment("saliency_intersection", fast=True, progress=False, **overrides)


def test_unknown_pocket_concept_is_named() -> None:
    with pytest.raises(ValueError, match="'banana' is not a pocket colour, shape, texture"):
        run_experiment("saliency_intersection", fast=True, concepts=("banana",), progress=False)
