"""``erasepro_alignment`` (ErasePro Figs. 2c-d, 3a-b): the methods' own traces laid out per layer.

The fast variant fits ErasePro and UCE on pocket's ``red`` and samples a 2-prompt grid at 3 steps.
"""

from __future__ import annotations

import math

import pytest

from circuits.experiments import ConfigError, run_experiment
from circuits.experiments.recipes.erasepro_alignment import unet_label

EXPERIMENT = "erasepro_alignment"


def test_fast_run_writes_its_folder_and_reads_back(fast, read_back):
    again = read_back(fast, ("erasepro_alignment", "images"))
    assert sorted(p.name for p in (fast.out / "images").iterdir()) == ["00_original", "01_ErasePro", "02_UCE"]
    assert again.metrics["order"] == ["erasepro", "uce"]


def test_layers_run_text_encoder_then_unet_in_forward_order(fast):
    result = fast
    layers = result.metrics["layers"]
    assert [layer["label"] for layer in layers] == [
        "T0", "T1", "T2", "T3", "down0.0", "down1.0", "mid", "up1.0", "up1.1", "up2.0", "up2.1"]  # fmt: skip
    assert unet_label("unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2") == "down2.1"


def test_per_layer_values_are_the_trace_rows(fast):
    result = fast
    layers = result.metrics["layers"]
    for name, entry in result.metrics["methods"].items():
        series, trace = entry["per_layer"], entry["trace"]
        k_rows = [r for r in trace if r["param"].endswith(("k_proj.weight", "to_k.weight"))]
        drawn = [i for i, v in enumerate(series["residual"]) if v is not None]
        assert len(drawn) == len(k_rows), name
        for index, row in zip(drawn, k_rows):  # same order: text layers, then the UNet in forward order
            assert layers[index]["stage"] == row["stage"]
        by_residual = {r["residual"] for r in k_rows}
        assert set(series["residual"]) - {None} == by_residual
        for i in drawn:
            row = next(r for r in k_rows if r["residual"] == series["residual"][i])
            assert series["relative_delta"][i] == pytest.approx(row["delta_norm"] / row["weight_norm"])
            assert series["distance_after"][i] == pytest.approx(row["distance_after"] / math.sqrt(row["columns"]))


def test_numbers_are_sane(fast):
    result = fast
    methods, layers = result.metrics["methods"], result.metrics["layers"]
    uce, pro = methods["uce"]["per_layer"], methods["erasepro"]["per_layer"]
    text = [i for i, layer in enumerate(layers) if layer["stage"] == "text"]
    unet = [i for i, layer in enumerate(layers) if layer["stage"] == "unet"]
    assert all(uce["residual"][i] is None for i in text)  # UCE edits no text layer
    assert all(uce["angle_before_deg"][i] == uce["angle_after_deg"][i] for i in unet)  # nor its inputs
    for series in (uce, pro):
        edited = [i for i in range(len(layers)) if series["residual"][i] is not None]
        assert edited and all(series["residual"][i] < series["residual_before"][i] for i in edited)  # edits help
        assert all(0 <= series["angle_after_deg"][i] <= 180 for i in edited)
        assert all(series["relative_delta"][i] > 0 for i in edited)
    assert len({pro["angle_after_deg"][i] for i in unet}) == 1  # every UNet K/V reads the same final embedding
    # the images: one row per method plus the original, the same prompts, and the erasures change them
    assert list(result.images) == ["original", "ErasePro", "UCE"]
    assert all(len(row) == 2 for row in result.images.values())
    assert result.images["original"][0].tobytes() != result.images["UCE"][0].tobytes()
    assert result.metrics["check"] == {}  # fast: no erasure check
    assert any("UCE leaves a relative residual" in note for note in result.notes)


def test_erasure_check_on_pocket(tmp_path):
    result = run_experiment("erasepro_alignment", methods=("uce",), check_samples=1, steps=2, show_prompts=0,
                            progress=False)  # fmt: skip
    summary = result.metrics["check"]["uce"]
    for key in ("target_before", "target_after", "preservation_before", "preservation_after"):
        assert 0.0 <= summary[key] <= 1.0
    assert result.images == {} and "images" not in result.figures
    assert any(key.startswith("UCE: erased rate") for key in result.headline)


def test_bad_settings_say_what_is_valid():
    with pytest.raises(ConfigError, match=r"methods=\('ucee',\); choose from erasepro, erasepro-w, .*uce"):
        run_experiment("erasepro_alignment", methods=("ucee",))
    with pytest.raises(ConfigError, match="names a method twice"):
        run_experiment("erasepro_alignment", methods=("uce", "uce"))
    with pytest.raises(ConfigError, match="projection"):
        run_experiment("erasepro_alignment", projection="q")


def test_runs_on_a_tiny_sd_folder(tiny_dir, tmp_path):
    result = run_experiment("erasepro_alignment", model=str(tiny_dir), fast=True, out=tmp_path / "tiny", progress=False)
    assert result.metrics["check"] == {}  # no oracle off pocket
    assert result.metrics["concept"]["templates"][0] == "a photo of a {}"
    labels = [layer["label"] for layer in result.metrics["layers"]]
    assert labels[:2] == ["T0", "T1"] and "mid" in labels
    assert (tmp_path / "tiny" / "figures" / "erasepro_alignment.png").exists()
