"""``cfg_reversal`` (ANT Fig. 3): a t' that reverses no step gives the plain images, one that reverses
every step changes them; the rates are rates; every t' runs in one batched call; it runs off pocket too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from circuits.experiments import ConfigError, load_result, run_experiment
from circuits.methods import ant

EXPERIMENT = "cfg_reversal"


def test_fast_run_on_pocket_reads_layout_and_attributes(fast) -> None:
    metrics, config = fast.metrics, fast.config
    rows = metrics["rows"]
    assert [r["t_prime"] for r in rows] == sorted(config.t_primes) and metrics["oracle"]
    assert metrics["sampling_calls"] == 1  # plain CFG and every t' as row blocks of one call
    none, everything = rows[0], rows[-1]
    assert none["reversed_steps"] == 0 and everything["reversed_steps"] == config.steps
    # no reversed step: the very images of plain CFG
    assert none["latent_cosine"] == pytest.approx(1.0, abs=1e-5) and none["pixel_difference"] < 0.5
    assert none["kept_shape"] == none["kept_colour"] == none["kept_texture"] == 1.0 and none["box_iou"] == 1.0
    assert everything["pixel_difference"] > 5 and everything["latent_cosine"] < 0.99
    for row in [metrics["plain"], *rows]:
        for key, value in row.items():
            if key.startswith(("kept_", "changed_", "matches_")) or key.endswith("_iou"):
                # NaN only where nothing was measured: no prompt names that attribute (matches_*), or no image
                # pair with a foreground in both (box IoU)
                undefined = key.startswith("matches_") or key == "box_iou"
                assert (undefined and value != value) or 0.0 <= value <= 1.0, (key, value)
        assert row["kept_attributes"] == pytest.approx((row["kept_colour"] + row["kept_texture"]) / 2)
    assert all(len(v) == metrics["images_per_variant"] for read in metrics["reads"].values() for v in read.values())
    assert list(fast.images) == ["plain CFG", *[f"t'={t:g} ({r['reversed_steps']}/{config.steps} rev.)"
                                                 for t, r in zip(sorted(config.t_primes), rows)]]  # fmt: skip
    assert all(len(images) == len(config.prompts) for images in fast.images.values())
    assert fast.headline and fast.notes and all("t'" in note or "Plain" in note for note in fast.notes)


def test_fast_run_writes_and_redraws(fast) -> None:
    folder = fast.out
    for name in ("cfg_reversal", "cfg_reversal_measures"):
        assert (folder / "figures" / f"{name}.png").stat().st_size > 1000 and (folder / "figures" / f"{name}.pdf").exists()
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["metrics"]["rows"][0]["t_prime"] == 0.0
    again = load_result(folder)
    assert set(again.figures) == {"cfg_reversal", "cfg_reversal_measures"} and again.config == fast.config
    first = np.asarray(again.images["plain CFG"][0], dtype=np.int16)
    assert np.abs(first - np.asarray(fast.images["plain CFG"][0], dtype=np.int16)).max() == 0


def test_study_images_equal_a_call_of_their_own(model) -> None:
    import circuits

    study = ant.reversal_study(model, ["a red circle", "a blue dog"], [300.0], seeds=[4, 5], steps=3)
    assert study.calls == 1 and study.prompts == ["a red circle"] * 2 + ["a blue dog"] * 2
    alone = circuits.sample(model, ["a blue dog"], seed=5, steps=3, guidance=circuits.ReversedCFG(7.5, 300.0),
                            progress=False).images[0]  # fmt: skip
    assert np.abs(np.asarray(study.images[300.0][3], dtype=np.int16) - np.asarray(alone, dtype=np.int16)).max() <= 1


def test_study_samples_ddim_as_the_paper_whatever_the_models_scheduler(model, monkeypatch) -> None:
    from diffusers import DDIMScheduler, PNDMScheduler

    import circuits

    monkeypatch.setattr(model, "scheduler", PNDMScheduler.from_config(model.scheduler.config))  # SD 1.x's own
    study = ant.reversal_study(model, ["a red circle"], [300.0], steps=4)
    ddim = DDIMScheduler.from_config(model.scheduler.config)
    ddim.set_timesteps(4)
    assert study.timesteps == [float(t) for t in ddim.timesteps]
    plain = circuits.sample(model, ["a red circle"], seed=0, steps=4, scheduler="ddim", progress=False).images[0]
    assert np.abs(np.asarray(study.baseline[0], dtype=np.int16) - np.asarray(plain, dtype=np.int16)).max() <= 1
    own = ant.reversal_study(model, ["a red circle"], [300.0], steps=4, scheduler=None)
    assert own.timesteps != study.timesteps


def test_runs_on_a_folder_without_the_oracle(model) -> None:
    result = run_experiment("cfg_reversal", model=model, fast=True, prompts=("a red circle",), progress=False)
    assert not result.metrics["oracle"] and "kept_shape" not in result.metrics["rows"][0]
    assert result.metrics["rows"][0]["latent_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert "no oracle" in " ".join(result.notes) and set(result.figures) == {"cfg_reversal", "cfg_reversal_measures"}


@pytest.mark.parametrize(("overrides", "match"), [
    ({"t_primes": ()}, "at least one prompt, one seed and one t'"),
    ({"seeds": (1, 1)}, "repeats a seed"),
    ({"steps": 1}, "steps=1 >= 2"),
    ({"t_primes": (300.0, -5.0)}, r"t_primes \[-5.0\] outside"),
    ({"t_primes": (300.0, 300.0)}, "repeat a value"),
])  # fmt: skip
def test_bad_settings_are_named(model, overrides, match) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        run_experiment("cfg_reversal", model=model, fast=True, progress=False, **overrides)


def _row(t_prime: float, steps: int, shape: float, colour: float, texture: float) -> dict:
    return {"t_prime": t_prime, "reversed_steps": steps, "latent_cosine": 0.9, "pixel_difference": 10.0,
            "box_iou": 0.5, "centre_shift": 1.0, "changed_background": 0.0, "kept_shape": shape,
            "kept_colour": colour, "kept_texture": texture, "kept_attributes": (colour + texture) / 2}  # fmt: skip


def test_the_widest_gap_is_read_only_where_the_layout_is_kept() -> None:
    """At a t' that redraws the scene, shapes match the plain image by chance: a gap there is not ANT's
    "layout kept, attributes changed", so the summary picks among t' that keep at least half the shapes."""
    from circuits.experiments.recipes.cfg_reversal import summarise

    plain = {"matches_colour": 1.0, "matches_shape": 1.0, "matches_texture": 1.0}
    rows = [_row(100, 5, 0.75, 0.9, 0.5), _row(300, 15, 0.46, 0.5, 0.5), _row(860, 43, 0.33, 0.0, 0.1)]
    metrics = {"plain": plain, "rows": rows, "steps": 50, "oracle": True, "images_per_variant": 24}
    headline, _ = summarise(metrics)
    assert headline["t' with the widest layout-attribute gap"] == 100  # not 860, whose raw gap (+0.28) is wider
    rows = [_row(600, 30, 0.40, 0.1, 0.1), _row(860, 43, 0.33, 0.0, 0.1)]
    headline, notes = summarise({**metrics, "rows": rows})
    assert "t' with the widest layout-attribute gap" not in headline
    assert any(note.startswith("No t' keeps the layout") for note in notes), notes
