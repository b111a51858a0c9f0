"""TRCE stage 2 (trajectory steering): Eq. 8 on a worked example, exactly the visual layers train,
stage 1 + 2 is reversible and reloads identically, resume equals an uninterrupted run, a checkpoint
from another config is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_state import assert_same_state, snapshot

import circuits
from circuits.methods import Concept, load, trce
from circuits.methods.common import ConfigError
from circuits.methods.training import CheckpointError
from circuits.methods.trce_steering import erase_loss, guided, plan, preserve_loss, visual_params

CONCEPT = Concept("red", anchor="blue", templates=["a {} circle", "a photo of a {} dog"], preservation=["a blue square"])
#: a few seconds on the tiny model: 4 malicious + 4 null trajectories of 4 steps, 4 Adam steps
SMALL = dict(trajectories=4, null_trajectories=4, sample_steps=4, epochs=2, batch_size=2, cache_batch=4, lr=1e-3)


def test_the_erase_loss_is_eq8_on_a_worked_example() -> None:
    # one row of two elements; squared norms are element means (||v||^2 / 2)
    pred = torch.tensor([[1.0, 2.0]]).view(1, 2, 1, 1)
    safe = torch.tensor([[0.0, 2.0]]).view(1, 2, 1, 1)  # ||pred - safe||^2 = (1 + 0) / 2 = 0.5
    unsafe = torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1)  # ||pred - unsafe||^2 = (0 + 4) / 2 = 2.0
    assert erase_loss(pred, safe, unsafe, margin=0.01).item() == 0.0  # 0.5 - 2.0 + 0.01 < 0: hinge off
    assert erase_loss(pred, unsafe, safe, margin=0.01).item() == pytest.approx(2.0 - 0.5 + 0.01)
    # a batch: the mean over rows of the hinged rows
    both = erase_loss(torch.cat([pred, pred]), torch.cat([safe, unsafe]), torch.cat([unsafe, safe]), margin=0.25)
    assert both.item() == pytest.approx((0.0 + (1.5 + 0.25)) / 2)
    # Eqs. 6-7 and 9
    u, c = torch.tensor([1.0]), torch.tensor([3.0])
    assert guided(u, c, 15.0).item() == 1.0 + 15.0 * 2.0
    assert preserve_loss(pred, safe).item() == pytest.approx(0.5)


def test_the_plan_visits_every_trajectory_each_epoch_at_early_steps() -> None:
    config = trce.Config(trajectories=5, null_trajectories=7, sample_steps=10, epochs=3, batch_size=2)
    p = plan(config)
    visits = [k for rows in p.erase for k, _ in rows]
    assert sorted(visits) == sorted(list(range(5)) * 3) and len(p.erase) == 8
    assert p.early_steps == 5 and all(0 <= s < 5 for rows in p.erase for _, s in rows)
    assert all(0 <= k < 7 and 0 <= s < 10 for rows in p.preserve for k, s in rows)
    assert plan(config) == p


def test_only_the_visual_layers_train(model) -> None:
    expected = {n[len("unet."):] for n in visual_params(model)}
    assert {n.rsplit(".", 2)[-2] if "to_out" not in n else "to_out" for n in expected} == {
        "to_q", "to_k", "to_v", "to_out"}
    assert not any("attn2.to_k" in n or "attn2.to_v" in n for n in expected)
    assert sum("attn2.to_q" in n for n in expected) == len(model.sites.cross_attention())
    seen = []

    def check(step: int, loss: float) -> None:
        seen.append({n for n, p in model.unet.named_parameters() if p.requires_grad})
        assert not any(p.requires_grad for p in model.text_encoder.parameters())

    before = snapshot(model)
    erasure = trce.fit(model, CONCEPT, stages=("trajectory",), progress=False, on_step=check, **SMALL)
    assert seen and all(s == expected for s in seen)
    assert_same_state(before, snapshot(model))
    assert erasure.method == "trce-stage2" and len(erasure.graph) == len(expected)
    rows = [r for r in erasure.trace if r.get("stage") == "trajectory"]
    assert len(rows) == 4 and {"loss", "erase", "preserve"} <= set(rows[0])
    assert rows[0]["loss"] == pytest.approx(rows[0]["erase"] + 100.0 * rows[0]["preserve"], rel=1e-5)


@pytest.fixture(scope="module")
def both(model):
    return trce.fit(model, CONCEPT, progress=False, **SMALL)


def test_stage1_plus_stage2_is_reversible_and_reloads_identically(model, both, tiny_dir, tmp_path) -> None:
    text = trce.fit(model, CONCEPT, stages=("text",), **SMALL)
    assert both.method == "trce" and both.graph[: len(text.graph)] == text.graph  # stage 1's edits first
    assert len(both.graph) == len(text.graph) + len(visual_params(model))
    before = snapshot(model)
    names = [visual_params(model)[0], text.graph[0].param]  # a stage-2 and a stage-1 parameter
    originals = [model.parameter(n).detach().clone() for n in names]
    with circuits.intervene(model, both):
        assert not any(torch.equal(model.parameter(n), o) for n, o in zip(names, originals))
    assert_same_state(before, snapshot(model))
    fresh = circuits.load(tiny_dir)
    loaded = load(both.save(tmp_path / "trce"))
    assert loaded.graph == both.graph and loaded.trace == both.trace
    prompts = ["a red circle", "a blue dog"]
    a = circuits.sample(model, prompts, steps=3, graph=both, progress=False)
    b = circuits.sample(fresh, prompts, steps=3, graph=loaded, progress=False)
    plain = circuits.sample(model, prompts, steps=3, progress=False)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))
    assert not torch.equal(a.latents, plain.latents)


def test_a_resumed_run_equals_an_uninterrupted_one(model, both, tmp_path) -> None:
    folder = tmp_path / "ckpt"

    def crash(step: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    before = snapshot(model)
    with pytest.raises(KeyboardInterrupt):
        trce.fit(model, CONCEPT, progress=False, checkpoint=folder, checkpoint_every=1, on_step=crash, **SMALL)
    assert_same_state(before, snapshot(model))
    resumed = trce.fit(model, CONCEPT, progress=False, checkpoint=folder, checkpoint_every=1, **SMALL)
    assert resumed.graph == both.graph
    assert [r for r in resumed.trace if "step" in r] == [r for r in both.trace if "step" in r]
    with pytest.raises(CheckpointError, match="another run.*config"):
        trce.fit(model, CONCEPT, progress=False, checkpoint=folder, **{**SMALL, "lr": 2e-3})


def test_bad_configs_are_named(model) -> None:
    with pytest.raises(ConfigError, match="stages"):
        trce.fit(model, CONCEPT, stages=("txt",))
    with pytest.raises(ConfigError, match="guidance_scale"):
        trce.fit(model, CONCEPT, stages=("trajectory",), guidance_scale=1.0)
    with pytest.raises(ConfigError, match="early_fraction"):
        trce.fit(model, CONCEPT, early_fraction=0.0)


def test_preserve_reference_stage1_is_the_stage1_models_null_prediction(model) -> None:
    """``preserve_reference="stage1"`` (the authors' code): Eq. 9 holds the stage-1 model's null prediction, so
    at step 0 (no delta yet) the preservation term is exactly zero; the paper's original reference is not."""
    config = {**SMALL, "epochs": 1, "trajectories": 2, "batch_size": 1}
    code = trce.fit(model, CONCEPT, progress=False, preserve_reference="stage1", **config)
    paper = trce.fit(model, CONCEPT, progress=False, **config)
    first = [r for r in code.trace if r.get("stage") == "trajectory"][0]
    assert first["preserve"] == pytest.approx(0.0, abs=1e-12)
    assert [r for r in paper.trace if r.get("stage") == "trajectory"][0]["preserve"] > 1e-8
    with pytest.raises(ConfigError, match="preserve_reference"):
        trce.fit(model, CONCEPT, preserve_reference="reg")
