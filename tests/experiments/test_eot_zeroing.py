"""``eot_zeroing`` (TRCE Figs. 2, 7a): the last k of K [EoT] maps zeroed and masked, words and SoT as controls.

The fast variant samples two prompts of different K ("a red circle": 28, "a yellow cross on a black
background": 24, of pocket's 32 positions) at 3 steps, k in {0, 4, K-1, K}, both modes, both controls.
"""

from __future__ import annotations

import numpy as np
import pytest

import circuits
from circuits.experiments import ConfigError, run_experiment
from circuits.experiments.registry import resolve_model
from circuits.tokens import layout

EXPERIMENT = "eot_zeroing"


def test_fast_run_writes_its_folder_and_reads_back(fast, read_back):
    again = read_back(fast, ("eot_zeroing", "eot_zeroing_images"))
    order = fast.metrics["order"]
    assert order == ["plain", "zero k=4", "zero k=K-1", "zero k=K", "zero words", "zero SoT",
                     "mask k=4", "mask k=K-1", "mask k=K", "mask words", "mask SoT"]  # fmt: skip
    assert len(list((fast.out / "images").iterdir())) == len(order) and again.metrics["order"] == order


def test_variants_zero_the_positions_the_tokenizer_gives(fast):
    result = fast
    metrics, variants = result.metrics, result.metrics["variants"]
    lays = [layout(resolve_model("pocket").tokenizer, p) for p in result.config.prompts]
    K, first = [len(lay.eot_all) for lay in lays], [lay.first_eot for lay in lays]
    assert metrics["K"] == K and metrics["first_eot"] == first and K[0] != K[1]  # two different K
    assert [p["label"] for p in metrics["grid"]] == ["0", "4", "K-1", "K"]
    for mode in ("zero", "mask"):
        assert variants[f"{mode} k=4"]["zeroed"] == [4, 4]
        assert variants[f"{mode} k=K-1"]["zeroed"] == [k - 1 for k in K]  # all but one, per prompt's own K
        assert variants[f"{mode} k=K"]["zeroed"] == K
        assert variants[f"{mode} words"]["zeroed"] == [f - 1 for f in first]  # positions 1 .. first EoT - 1
        assert variants[f"{mode} SoT"]["zeroed"] == [1, 1]
    assert variants["plain"]["zeroed"] == [0, 0] and variants["plain"]["pixel_difference"] == 0.0
    # the attention each variant removes grows with k, and every [EoT] takes the [EoT]s' whole share
    removed = [variants[n]["attention_removed"] for n in ("plain", "zero k=4", "zero k=K-1", "zero k=K")]
    assert removed == sorted(removed) and removed[0] == 0.0
    assert removed[-1] == pytest.approx(metrics["attention"]["eot_all"])
    shares = metrics["attention"]["per_prompt"]
    assert all(sum(row) == pytest.approx(1.0, abs=1e-3) for row in shares)  # probabilities over the 32 keys
    assert variants["zero k=K"]["pixel_difference"] > 0


def test_oracle_rates_are_rates(fast):
    result = fast
    metrics = result.metrics
    assert metrics["named"][1] == {"colour": "yellow", "shape": "cross", "background": "black"}
    for name, entry in metrics["variants"].items():
        kept = entry["kept"]
        assert set(kept) == {"colour", "shape", "texture", "background", "all"}
        assert kept["texture"] is None  # neither prompt names a texture
        assert all(0.0 <= v <= 1.0 for v in kept.values() if v is not None), name
        assert len(metrics["reads"][name]) == 2
    assert 0.0 <= metrics["floor"]["all"] <= 1.0
    assert result.headline["kept, plain"] == metrics["variants"]["plain"]["kept"]["all"]
    assert any(note.startswith("With every [EoT] map zeroed (both CFG branches)") for note in result.notes)
    assert result.headline["kept, every [EoT] zeroed"] == metrics["variants"]["zero k=K"]["kept"]["all"]


def test_rows_scoped_all_but_variants_match_their_own_call(fast):
    """'all but n' zeroes each prompt's own K - n through rows= scopes inside the sweep: the image equals the
    image of that prompt sampled alone with last_eot:(K - n) (to float rounding of batched kernels)."""
    result = fast
    model = circuits.experiments.resolve_model("pocket")
    prompt = result.metrics["prompts"][1]
    k = len(layout(model.tokenizer, prompt).eot_all) - 1
    alone = circuits.sample(model, [prompt], seed=0, steps=3, graph=circuits.methods.trce.eot_probe(k), progress=False)
    swept = result.images["zero k=K-1"][1]
    difference = np.abs(np.asarray(alone.images[0], dtype=float) - np.asarray(swept, dtype=float)).mean()
    assert difference < 1.0


def test_bad_settings_say_what_is_valid():
    with pytest.raises(ConfigError, match=r"modes=\('zeroed',\).*'zero', 'mask'"):
        run_experiment("eot_zeroing", modes=("zeroed",))
    with pytest.raises(ConfigError, match=r"ks=\(-1,\); give distinct ints >= 0"):
        run_experiment("eot_zeroing", ks=(-1,))
    with pytest.raises(ConfigError, match=r"controls=\('eot',\).*'words', 'sot'"):
        run_experiment("eot_zeroing", controls=("eot",))
    with pytest.raises(ConfigError, match="ks and all_but are both empty"):
        run_experiment("eot_zeroing", ks=(), all_but=())
    with pytest.raises(circuits.errors.CircuitsError, match="unknown site 'unet.*atn2'"):
        run_experiment("eot_zeroing", site="unet.*atn2")


@pytest.mark.parametrize("folder", ["tiny_dir", "tiny_sd2_dir"])
def test_runs_on_a_tiny_sd_folder(folder, request):
    """SD1.x (padding with the EoT id) and SD2.x (padding with '!') layouts: K is every position after the words."""
    tiny = request.getfixturevalue(folder)
    result = run_experiment("eot_zeroing", model=str(tiny), fast=True, prompts=("a red circle",), progress=False)
    variants = result.metrics["variants"]
    assert variants["plain"]["kept"] is None and result.metrics["floor"] is None  # no oracle off pocket
    model = circuits.experiments.resolve_model(str(tiny))
    count = len(layout(model.tokenizer, "a red circle").eot_all)
    assert result.metrics["K"] == [count] and count == model.tokenizer.model_max_length - 4
    assert variants["zero k=K"]["zeroed"] == [count] and variants["zero k=K"]["pixel_difference"] >= 0
    assert set(result.figures) == {"eot_zeroing", "eot_zeroing_images"}
    assert any(key.startswith("pixel change") for key in result.headline)
