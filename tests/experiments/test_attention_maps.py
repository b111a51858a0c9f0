"""``attention_maps``: DAAM-style per-token cross-attention maps and their numbers.

The fast variant samples "a red circle" and "a striped blue square on a white background" at 3 steps
and maps the SoT, the words red / blue / circle, the first [EoT] and all [EoT]s.
"""

from __future__ import annotations

import numpy as np
import pytest

import circuits
from circuits.experiments import ConfigError, run_experiment
from circuits.experiments.recipes.attention_maps import position_spread, word_positions
from circuits.experiments.registry import resolve_model
from circuits.tokens import layout

EXPERIMENT = "attention_maps"


def test_fast_run_writes_its_folder_and_reads_back(fast, read_back):
    read_back(fast, ("attention_maps", "attention_maps_positions"))
    assert len(list((fast.out / "images" / "00_images").iterdir())) == 2


def test_maps_and_shares_add_up(fast):
    result = fast
    metrics = result.metrics
    assert metrics["size"] == 32 and len(metrics["layers"]) == 7
    first, second = metrics["prompts"]
    lays = [layout(resolve_model("pocket").tokenizer, entry["prompt"]) for entry in (first, second)]
    assert [t["label"] for t in first["tokens"]] == ["[SoT]", "red", "circle", "[EoT]",
                                                    f"all {len(lays[0].eot_all)} [EoT]s"]  # fmt: skip
    assert [t["label"] for t in second["tokens"]] == ["[SoT]", "blue", "[EoT]", f"all {len(lays[1].eot_all)} [EoT]s"]
    for entry in metrics["prompts"]:
        shares = entry["position_share"]
        assert len(shares) == entry["keys"] == 32
        assert sum(shares) == pytest.approx(1.0, abs=2e-3)  # probabilities over the keys, averaged
        for token in entry["tokens"]:
            heat = np.asarray(token["map"])
            assert heat.shape == (32, 32) and heat.min() >= 0
            assert token["share"] == pytest.approx(heat.mean(), rel=1e-4)
            assert token["share"] == pytest.approx(sum(shares[p] for p in token["positions"]), rel=1e-3, abs=1e-5)
            assert -1.0 <= token["corr_mask"] <= 1.0 and 0.0 <= token["iou"] <= 1.0
            assert -1.0 <= token["corr_sot"] <= 1.0
        eot_all = entry["tokens"][-1]
        assert eot_all["positions"] == list(range(entry["first_eot"], 32))
        mask = np.asarray(entry["mask"])
        assert mask.shape == (32, 32) and 0.05 < entry["mask_fraction"] < 0.9  # an object, not the whole image
    for name in ("SoT", "a word", "first [EoT]", "all [EoT]s"):
        assert 0.0 <= result.headline[f"share, {name}"] <= 1.0 and -1.0 <= result.headline[f"r(mask), {name}"] <= 1.0


def test_shares_match_a_direct_capture(fast):
    """The share read off the upsampled, layer-averaged maps is the probability captured without maps."""
    result = fast
    model = circuits.experiments.resolve_model("pocket")
    sites = model.sites.attention_probs()
    graph = circuits.Graph([circuits.Capture(s, mean_over=("heads", "queries"), over_steps="mean", branch="cond")
                            for s in sites])  # fmt: skip
    prompts = [e["prompt"] for e in result.metrics["prompts"]]
    run = circuits.sample(model, prompts, seed=[0, 0], steps=3, graph=graph, progress=False)
    direct = (sum(run.captures[s] for s in sites) / len(sites)).numpy()
    for entry, row in zip(result.metrics["prompts"], direct):
        np.testing.assert_allclose(entry["position_share"], row, rtol=0.05, atol=2e-4)


def test_word_positions_group_sub_tokens_by_word():
    model = circuits.experiments.resolve_model("pocket")
    lay = layout(model.tokenizer, "a striped blue square on a white background")
    words = word_positions(lay)
    assert [w for w, _ in words] == ["a", "striped", "blue", "square", "on", "a", "white", "background"]
    assert [p for _, positions in words for p in positions] == lay.words  # every word token, once, in order


def test_position_spread_tells_absolute_from_relative():
    by_position = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    entries = [{"first_eot": f, "position_corr_mask": by_position} for f in (1, 3)]
    absolute, relative = position_spread(entries)
    assert absolute == 0.0 and relative > 0.0
    assert position_spread([{"first_eot": 2, "position_corr_mask": by_position}] * 2) is None


def test_bad_settings_say_what_is_valid():
    with pytest.raises(ConfigError, match=r"words \['cat'\] occur in none of the prompts"):
        run_experiment("attention_maps", words=("cat",))
    with pytest.raises(ConfigError, match="not a cross-attention layer"):
        run_experiment("attention_maps", layers="unet.*attn1")
    with pytest.raises(ConfigError, match="threshold in"):
        run_experiment("attention_maps", threshold=1.5)


def test_runs_on_a_tiny_sd_folder(tiny_dir):
    result = run_experiment("attention_maps", model=str(tiny_dir), fast=True, progress=False)
    entry = result.metrics["prompts"][0]
    assert entry["mask"] is None and entry["position_corr_mask"] is None  # no mask off pocket
    assert all(t["corr_mask"] is None and t["iou"] is None for t in entry["tokens"])
    assert sum(entry["position_share"]) == pytest.approx(1.0, abs=2e-3)
    assert not any(key.startswith("r(mask)") for key in result.headline)
    assert set(result.figures) == {"attention_maps", "attention_maps_positions"}
