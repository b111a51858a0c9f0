"""``depth_sensitivity`` (ErasePro Figs. 2e, 5): alpha * ||W|| * I on a shallow and a deep site.

The fast variant samples 2 prompts x 1 seed at 3 steps under alpha 0 and 0.2 on text layer 0 and the
mid-block cross-attention.
"""

from __future__ import annotations

import math

import pytest

from circuits.experiments import ConfigError, run_experiment

EXPERIMENT = "depth_sensitivity"


def test_fast_run_writes_its_folder_and_reads_back(fast, read_back):
    read_back(fast, ("depth_sensitivity", "images"))
    assert len(list((fast.out / "images").iterdir())) == 5  # original + 2 sites x 2 alphas


def test_alpha_zero_is_plain_sampling(fast):
    result = fast
    zero = [r for r in result.metrics["rows"] if r["alpha"] == 0.0]
    assert {r["site"] for r in zero} == {"shallow", "deep:mid_block"}
    for row in zero:
        assert row["pixel_difference"] == 0.0 and row["psnr_db"] is None  # bitwise the unedited images
        assert row["accuracy"] == result.metrics["original"]["accuracy"]
        assert result.images[row["variant"]][0].tobytes() == result.images["original"][0].tobytes()


def test_damage_numbers_are_sane(fast):
    result = fast
    metrics = result.metrics
    assert metrics["sampling_calls"] == 5  # plain rows share a call; each weight edit runs alone
    assert isinstance(metrics["original"]["accuracy"], float)  # pocket: the oracle reads every image
    for row in metrics["rows"]:
        assert isinstance(row["accuracy"], float) and 0.0 <= row["accuracy"] <= 1.0
        assert 0.0 <= row["pixel_difference"] <= 255.0
        assert (row["pixel_difference"] > 0) == (row["alpha"] > 0)  # every non-zero deviation changes the images
        params = metrics["sites"][row["site"]]["params"]
        assert len(params) == 3 and all(p.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight",
                                                    "to_q.weight", "to_k.weight", "to_v.weight")) for p in params)  # fmt: skip
        # ||alpha ||W|| I|| / ||W|| = alpha * sqrt(min(out, in)): pocket's text layers are 128 x 128
        if row["site"] == "shallow":
            assert row["relative_deviation"] == pytest.approx(row["alpha"] * math.sqrt(128))
    edited = [r for r in metrics["rows"] if r["alpha"] == 0.2]
    assert all(r["pixel_difference"] > 0 for r in edited)
    assert metrics["sites"]["deep:mid_block"]["site"].startswith("unet.mid_block.")
    assert list(result.images) == [
        "original", "shallow, α=0", "shallow, α=0.2", "deep mid, α=0", "deep mid, α=0.2"]
    assert all(len(row) == 2 for row in result.images.values())
    assert any("deep sites do more damage" in note for note in result.notes)


def test_bad_settings_say_what_is_valid():
    with pytest.raises(ConfigError, match=r"deep site 'attn2' matches 7 cross-attention layers.*mid_block"):
        run_experiment("depth_sensitivity", deep_sites=("attn2",))
    with pytest.raises(ConfigError, match="matches no cross-attention"):
        run_experiment("depth_sensitivity", deep_sites=("nowhere",))
    with pytest.raises(ConfigError, match="alphas"):
        run_experiment("depth_sensitivity", alphas=(-0.1,))
    with pytest.raises(ConfigError, match="alphas"):
        run_experiment("depth_sensitivity", alphas=())


def test_runs_on_a_tiny_sd_folder(tiny_dir):
    result = run_experiment("depth_sensitivity", model=str(tiny_dir), fast=True, alphas=(0.2,),
                            prompts=("a red circle",), progress=False)  # fmt: skip
    assert result.metrics["original"]["accuracy"] is None  # no oracle off pocket
    assert result.metrics["rows"][0]["accuracy"] is None and result.metrics["rows"][0]["pixel_difference"] >= 0
    assert "depth_sensitivity" in result.figures and not any(k.startswith("accuracy") for k in result.headline)


def test_default_deep_sites_resolve_to_the_highest_resolution_and_mid_layers():
    """'first' / 'last' are the forward pass's first and last cross-attention: on pocket the sites the defaults
    named before they became model-aware (down_blocks.0, up_blocks.2.attentions.1); a module path holding several
    layers takes its first, while a bare part matching several stays an error (test above)."""
    import circuits
    from circuits.experiments.recipes.depth_sensitivity import DepthSensitivityConfig, resolve_deep_site

    model = circuits.load("pocket")
    resolved = [resolve_deep_site(model, name) for name in DepthSensitivityConfig().deep_sites]
    assert resolved == [
        ("unet.mid_block.attentions.0.transformer_blocks.0.attn2", 1),
        ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2", 1),
        ("unet.up_blocks.2.attentions.1.transformer_blocks.0.attn2", 1),
    ]
    assert resolve_deep_site(model, "up_blocks.1") == ("unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2", 2)
