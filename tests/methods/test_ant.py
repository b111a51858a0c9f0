"""ANT: the saliency mask keeps the largest gradients, the intersection curve never rises, the masked
fine-tune moves only masked entries, the erasure is reversible, reloads identically and resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_state import assert_same_state, snapshot

import circuits
from circuits.methods import Concept, ant, load
from circuits.methods.common import ConfigError
from circuits.methods.training import CheckpointError

CONCEPT = Concept("red", synonyms=("crimson",), templates=["a {} circle", "a photo of a {} dog"], preservation=["a blue square"])
FAST = dict(steps=3, seeds=(0, 1), sample_steps=8, progress=False)


@pytest.fixture(scope="module")
def erasure(model):
    return ant.fit(model, CONCEPT, **FAST)


def test_saliency_map_keeps_the_largest_gradients() -> None:
    grads = {"a": torch.tensor([0.1, -5.0, 0.0, 2.0, -0.3, 0.2]), "b": torch.tensor([[1e-3, -1e-4], [0.0, 0.0]])}
    top = ant.saliency_map(grads, fraction=0.5)
    assert top["a"].tolist() == [False, True, False, True, True, False]  # |-5|, |2|, |-0.3|: the top half
    assert top["b"].tolist() == [[True, True], [False, False]]  # zero gradients are never salient
    assert ant.saliency_map(grads, fraction=1.0)["a"].tolist() == [True, True, False, True, True, True]
    by_gamma = ant.saliency_map(grads, gamma=0.25)
    assert by_gamma["a"].tolist() == [False, True, False, True, True, False]
    assert not by_gamma["b"].any()
    assert ant.saliency_map(grads, gamma=0.2)["a"].tolist() == [False, True, False, True, True, True]  # >= gamma


def test_saliency_map_rejects_bad_thresholds() -> None:
    grads = {"a": torch.ones(3)}
    for kwargs in ({"fraction": 0.0}, {"fraction": 1.5}, {"gamma": 0.0}, {}, {"gamma": 0.1, "fraction": 0.5}):
        with pytest.raises(ConfigError, match="fraction|gamma"):
            ant.saliency_map(grads, **kwargs)


def test_intersection_curve_is_non_increasing() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = [{"w": torch.rand(50, 20, generator=generator) > 0.3, "b": torch.rand(7, generator=generator) > 0.2}
            for _ in range(12)]
    mask, curve = ant.intersect(maps)
    assert len(curve) == 12 and all(a >= b for a, b in zip(curve, curve[1:]))
    assert curve[0] == int(maps[0]["w"].sum() + maps[0]["b"].sum())
    expected = torch.stack([m["w"] for m in maps]).all(0)
    assert torch.equal(mask["w"], expected) and curve[-1] == int(expected.sum() + mask["b"].sum())
    assert maps[0]["w"].sum() == curve[0] - maps[0]["b"].sum()  # the inputs are not changed in place


def test_saliency_on_the_model_gives_a_non_increasing_curve(model) -> None:
    config = ant.Config(seeds=(0, 1), sample_steps=8, fraction=0.3)
    traj = ant.collect(model, CONCEPT.target_prompts(synonyms=False), config)  # prompts in context
    assert traj.rows == 4 and traj.latents.shape[:2] == (8, 4)
    sal = ant.saliency(model, traj, config)
    assert len(sal.curve) == 4 and all(a >= b for a, b in zip(sal.curve, sal.curve[1:]))
    assert 0 < sal.active < sal.considered and all(0 < d <= 0.3 + 1e-3 for d in sal.densities)


def test_fine_tune_changes_only_masked_parameters(model, erasure) -> None:
    config = ant.Config(**{k: v for k, v in FAST.items() if k != "progress"})
    traj = ant.collect(model, ant.concept_prompts(CONCEPT, config), config)
    assert traj.prompts == ["red", "crimson"]  # the words alone, by default
    sal = ant.saliency(model, traj, config)
    before = snapshot(model)
    deltas, losses = ant.train(model, traj, sal.mask, config)
    assert_same_state(before, snapshot(model))
    assert len(losses) == 3 and set(deltas) == {n for n, m in sal.mask.items() if m.any()}
    moved = 0
    for name, delta in deltas.items():
        outside = delta[~sal.mask[name]]
        assert torch.equal(outside, torch.zeros_like(outside)), f"{name} moved outside its mask"
        moved += int(torch.count_nonzero(delta))
    assert moved > 0
    # the erasure edits exactly those parameters; every other weight stays bitwise equal while it is applied
    assert {edit.param for edit in erasure.graph} == set(deltas)
    with circuits.intervene(model, erasure):
        inside = snapshot(model)["weights"]
    for key, value in before["weights"].items():
        if key not in deltas:
            assert torch.equal(value.view(torch.uint8), inside[key].view(torch.uint8)), f"{key} changed"
        else:
            assert torch.equal(value[~sal.mask[key]], inside[key][~sal.mask[key]]), f"{key} changed outside its mask"


def test_erasure_is_reversible_and_reloads_into_a_fresh_model(model, erasure, tiny_dir, tmp_path) -> None:
    before = snapshot(model)
    prompts = ["a red circle", "a blue dog"]
    plain = circuits.sample(model, prompts, steps=3, progress=False)
    edited = circuits.sample(model, prompts, steps=3, graph=erasure, progress=False)
    assert not torch.equal(plain.latents, edited.latents)
    assert_same_state(before, snapshot(model))
    loaded = load(erasure.save(tmp_path / "ant"))
    assert loaded.method == "ant" and loaded.graph == erasure.graph and loaded.trace == erasure.trace
    fresh = circuits.load(tiny_dir)
    again = circuits.sample(fresh, prompts, steps=3, graph=loaded, progress=False)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(edited.images, again.images))
    curve = [row["active"] for row in erasure.trace if row["kind"] == "saliency"]
    assert len(curve) == 4 and curve == sorted(curve, reverse=True)


def test_fit_is_reproducible_and_a_resumed_run_equals_an_uninterrupted_one(model, erasure, tmp_path) -> None:
    folder = tmp_path / "ckpt"
    ant.fit(model, CONCEPT, **{**FAST, "steps": 2}, checkpoint=folder)  # stopped after 2 of 3 steps
    resumed = ant.fit(model, CONCEPT, **FAST, checkpoint=folder)
    assert resumed.graph == erasure.graph and resumed.trace == erasure.trace
    with pytest.raises(CheckpointError, match="another run"):
        ant.fit(model, CONCEPT, **{**FAST, "lr": 1e-3}, checkpoint=folder)


def test_bad_input_is_a_clear_error(model) -> None:
    with pytest.raises(ConfigError, match="t_prime=2000 lies outside.*schedule"):
        ant.fit(model, CONCEPT, **{**FAST, "t_prime": 2000})
    with pytest.raises(ConfigError, match="t_prime=0 lies outside"):
        ant.fit(model, CONCEPT, **{**FAST, "t_prime": 0})
    with pytest.raises(ConfigError, match=r"fraction=1.5.*\(0, 1\]"):
        ant.fit(model, CONCEPT, fraction=1.5)
    with pytest.raises(ConfigError, match="gamma"):
        ant.fit(model, CONCEPT, gamma=-1.0)
    with pytest.raises(ConfigError, match="matches no UNet parameter"):
        ant.fit(model, CONCEPT, **{**FAST, "params": ("unet.nothing.*",)})
    with pytest.raises(ConfigError, match="did you mean 'lambda1'"):
        ant.fit(model, CONCEPT, lambda_1=1.0)
    with pytest.raises(ConfigError, match=r"t_primes \[-5.0\] outside"):
        ant.reversal_study(model, ["a red circle"], [500, -5])


def test_reversal_study_keeps_everything_with_no_reversed_step(model) -> None:
    study = ant.reversal_study(model, ["a red circle", "a blue dog"], [0, 999], steps=4)
    assert len(study.images[0.0]) == 2 and [r["reversed_steps"] for r in study.rows] == [0, 4]
    assert study.rows[0]["latent_cosine"] == pytest.approx(1.0) and study.rows[0]["pixel_difference"] == 0.0
    assert study.rows[1]["latent_cosine"] < 1.0 and "mask_iou" not in study.rows[0]  # no oracle off pocket
    assert "| t' |" in study.table()
