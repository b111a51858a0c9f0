"""ANT: Eq. 4 thresholds every map by one gamma, the intersection curve never rises, the trajectories are
50 DDIM steps whatever the model's own scheduler, the masked fine-tune moves only masked entries, the
erasure is reversible, reloads identically and resumes exactly; defaults follow the model.
(The pocket erasure test is in ``test_ant_pocket.py``.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from model_state import assert_same_state, snapshot

import circuits
from circuits.methods import Concept, ant, load
from circuits.methods.common import ConfigError, resolve_config
from circuits.methods.training import CheckpointError

CONCEPT = Concept("red", synonyms=("crimson",), templates=["a {} circle", "a photo of a {} dog"], preservation=["a blue square"])
FAST = dict(steps=3, seeds=(0, 1), sample_steps=8, maps=4, progress=False)


@pytest.fixture(scope="module")
def erasure(model):
    return ant.fit(model, CONCEPT, **FAST)


def test_saliency_map_is_eq4_one_gamma_for_every_tensor() -> None:
    grads = {"a": torch.tensor([0.1, -5.0, 0.0, 2.0, -0.3, 0.2]), "b": torch.tensor([[1e-3, -1e-4], [0.0, 0.0]])}
    by_gamma = ant.saliency_map(grads, 0.25)
    assert by_gamma["a"].tolist() == [False, True, False, True, True, False]
    assert not by_gamma["b"].any()  # a tensor of small gradients keeps nothing (not a share of its own)
    assert ant.saliency_map(grads, 0.2)["a"].tolist() == [False, True, False, True, True, True]  # >= gamma
    # gamma calibrated on the pooled |grad|: keep 3 of the 10 entries -> the 3rd largest, 0.3
    assert ant.calibrate_gamma(grads, 0.3) == pytest.approx(0.3)
    assert ant.calibrate_gamma(grads, 1.0) == pytest.approx(1e-4)  # never 0: a zero gradient is never salient
    with pytest.raises(ConfigError, match="gamma_density"):
        ant.calibrate_gamma(grads, 0.0)


def test_authors_map_keeps_the_smallest_share_of_each_tensor() -> None:
    grads = {"a": torch.tensor([0.1, -5.0, 0.0, 2.0, -0.3, 0.2]), "b": torch.tensor([[1e-3, -1e-4], [0.0, 0.0]])}
    low = ant.authors_map(grads, 0.5)  # generate_mask.py: ascending rank < int(size * threshold)
    assert low["a"].tolist() == [True, False, True, False, False, True]
    assert low["b"].tolist() == [[False, False], [True, True]]  # the zero gradients: the opposite of Eq. 4


def test_tensor_map_keeps_the_largest_share_of_each_tensor() -> None:
    grads = {"a": torch.tensor([0.1, -5.0, 0.0, 2.0, -0.3, 0.2]), "b": torch.tensor([[1e-3, -1e-4], [0.0, 0.0]])}
    top = ant.tensor_map(grads, 0.5)
    assert top["a"].tolist() == [False, True, False, True, True, False]  # |-5|, |2|, |-0.3|: the top half
    assert top["b"].tolist() == [[True, True], [False, False]]  # every tensor keeps its share; zeros never
    assert ant.Config.pocket().threshold == "tensor" and ant.Config.paper().threshold == "gamma"


def test_saliency_thresholds_reject_bad_values() -> None:
    grads = {"a": torch.ones(3)}
    for call in (lambda: ant.saliency_map(grads, 0.0), lambda: ant.authors_map(grads, 0.0),
                 lambda: ant.authors_map(grads, 1.5), lambda: ant.tensor_map(grads, 0.0)):
        with pytest.raises(ConfigError, match="fraction|gamma"):
            call()


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


def test_saliency_on_the_model_uses_one_gamma_over_about_100_maps(model) -> None:
    config = ant.Config(maps=6, sample_steps=8, gamma_density=0.3)
    traj = ant.saliency_trajectories(model, CONCEPT, config)
    assert traj.rows == 6 and traj.prompts == CONCEPT.target_prompts()  # 4 prompt variants x 2 seeds, cut to 6
    sal = ant.saliency(model, traj, config)
    assert len(sal.curve) == 6 and all(a >= b for a, b in zip(sal.curve, sal.curve[1:]))
    assert sal.prompts[:5] == [*CONCEPT.target_prompts(), CONCEPT.target_prompts()[0]] and sal.seeds[4] == 1
    assert 0 < sal.active < sal.considered
    assert sal.densities[0] == pytest.approx(0.3, abs=1e-3)  # gamma calibrated on the first map's pooled |grad|
    # Eq. 4: one gamma for all tensors, so the first map's share differs between tensors (a share per tensor
    # would keep 0.3 of each); the mask is |grad| >= gamma on every map, intersected
    first = {}

    def keep_first(k, mask):
        if k == 1:
            first.update({n: m.clone() for n, m in mask.items()})

    again = ant.saliency(model, traj, config, on_map=keep_first)
    shares = [float(m.float().mean()) for m in first.values() if m.numel() > 100]
    assert max(shares) - min(shares) > 0.3
    assert again.digest == sal.digest and again.gamma == sal.gamma  # deterministic
    assert ant.Config.paper().maps == 100 and ant.Config.paper().threshold == "gamma"


def test_trajectories_are_50_ddim_steps_whatever_the_models_scheduler(model, monkeypatch) -> None:
    from diffusers import DDIMScheduler, PNDMScheduler

    monkeypatch.setattr(model, "scheduler", PNDMScheduler.from_config(model.scheduler.config))  # SD 1.x's own
    config = ant.Config(seeds=(0,), t_prime=500)
    assert config.sample_steps == 50 and config.scheduler == "ddim"
    traj = ant.collect(model, ["red"], config)
    ddim = DDIMScheduler.from_config(model.scheduler.config)
    ddim.set_timesteps(50)
    assert traj.timesteps.tolist() == [float(t) for t in ddim.timesteps] and traj.latents.shape[0] == 50
    own = ant.collect(model, ["red"], dataclasses.replace(config, scheduler=None))
    assert own.timesteps.tolist() != traj.timesteps.tolist()  # PNDM's grid differs: the default is not it


def test_defaults_follow_the_model(model) -> None:
    pocket_model = circuits.load("pocket")
    assert resolve_config(ant.Config, None, {}, pocket_model) == ant.Config.pocket() == ant.pocket()
    assert resolve_config(ant.Config, None, {}, model) == ant.Config.paper() != ant.Config.pocket()
    paper = ant.Config.paper()  # Table 6, NSFW row; Sec. 4.1; Fig. 4
    assert (paper.lr, paper.steps, paper.lambda1, paper.lambda2, paper.lambda3, paper.t_prime) == (
        5e-4, 250, 1.0, 0.5, 0.5, 860.0)
    assert (paper.sample_steps, paper.scheduler, paper.maps) == (50, "ddim", 100)


def test_catalog_fits_with_the_same_model_aware_defaults(model, monkeypatch) -> None:
    from circuits.methods import catalog

    seen = {}

    def spy(model_, concept, config=None, **kwargs):
        seen.update(config=config, kwargs=kwargs)
        return "erasure"

    monkeypatch.setattr(ant, "fit", spy)
    assert catalog.fit("ant", model, CONCEPT) == "erasure"
    assert seen["config"] is None and set(seen["kwargs"]) <= {"progress"}  # no settings of its own


def test_fine_tune_changes_only_masked_parameters(model, erasure) -> None:
    config = ant.Config(**{k: v for k, v in FAST.items() if k != "progress"})
    traj = ant.collect(model, ant.concept_prompts(CONCEPT, config), config)
    assert traj.prompts == ["red", "crimson"]  # the words alone, by default
    sal = ant.saliency_mask(model, CONCEPT, config)
    assert sal.digest == next(r["sha256"] for r in erasure.trace if r["kind"] == "mask")  # what fit trained
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
    assert erasure.notes[0].startswith("config: Config.paper() defaults")  # the tiny model is not pocket


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
    with pytest.raises(ConfigError, match="threshold='top'.*'gamma', 'tensor', 'authors'"):
        ant.fit(model, CONCEPT, threshold="top")
    with pytest.raises(ConfigError, match="gamma_density=0"):
        ant.fit(model, CONCEPT, gamma_density=0)
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
