"""``MaskedPatch(schedule=...)``: a patch whose mask and source change over the denoising run
(ActErase's per-step masks, Alg. 1 l.10): the slice of the nearest timestep acts at each call."""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits import Capture, Graph, MaskedPatch
from circuits.context import StepContext
from circuits.errors import ScopeError, ShapeError
from circuits.interventions.scope import Selection

STEPS = 3


def _ctx(timestep: float) -> StepContext:
    return StepContext(phase="unet", branch_rows={"cond": (0,)}, step=0, timestep=timestep)


def test_each_call_uses_the_slice_of_the_nearest_timestep() -> None:
    mask = torch.tensor([[True, False], [False, True], [True, True]])  # one row per timestep
    source = torch.tensor([[10.0, 20.0]])  # leading axis 1: the same source at every step
    patch = MaskedPatch("site", mask=mask, source=source, schedule=torch.tensor([900.0, 500.0, 100.0]))
    x = torch.zeros(1, 2)
    expected = {950: [10.0, 0.0], 701: [10.0, 0.0], 699: [0.0, 20.0], 480: [0.0, 20.0], 0: [10.0, 20.0]}
    for timestep, value in expected.items():
        assert patch.apply(x, Selection((0,)), _ctx(timestep), "site").tolist() == [value], timestep


def test_a_scheduled_patch_in_a_run_matches_eq_6_at_every_step(model, prompts) -> None:
    site = model.sites.ffn_hidden()[1]
    plain = circuits.sample(model, prompts, steps=STEPS, progress=False, graph=[Capture(site, name="h")])
    hidden = plain.captures["h"]  # [steps * 1 call, rows (both branches), positions, channels]
    timesteps = torch.tensor([float(c.timestep) for c in plain.captures.calls("h")])
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(STEPS, *hidden.shape[2:], generator=g) > 0.5
    source = torch.randn(STEPS, *hidden.shape[2:], generator=g)
    graph = [MaskedPatch(site, mask=mask, source=source, schedule=timesteps, steps=[1]),
             Capture(site, name="h", steps=[1])]
    patched = circuits.sample(model, prompts, steps=STEPS, progress=False, graph=graph).captures["h"][0]
    # step 1 runs at timesteps[1]: slice 1, not the first or last (what a static or off-by-one lookup gives)
    torch.testing.assert_close(patched, torch.where(mask[1], source[1], hidden[1]))
    assert not torch.equal(mask[1], mask[0]) and not torch.equal(mask[1], mask[2])


def test_schedule_shapes_are_checked_and_a_call_without_timestep_is_an_error() -> None:
    with pytest.raises(ShapeError, match="schedule must be a 1-D tensor"):
        MaskedPatch("site", mask=torch.ones(2, 3), source=torch.zeros(2, 3), schedule=torch.zeros(2, 1))
    with pytest.raises(ShapeError, match="with a schedule of 2 timesteps, mask needs a leading axis of length 2"):
        MaskedPatch("site", mask=torch.ones(3, 3), source=torch.zeros(1, 3), schedule=torch.tensor([1.0, 2.0]))
    patch = MaskedPatch("site", mask=torch.ones(2, 3), source=torch.zeros(2, 3), schedule=torch.tensor([1.0, 2.0]))
    with pytest.raises(ScopeError, match="picks its slice by the step's timestep"):
        patch.apply(torch.ones(1, 3), Selection((0,)), None, "site")


def test_a_scheduled_patch_round_trips_through_json() -> None:
    patch = MaskedPatch("unet.x", mask=torch.tensor([[True], [False]]), source=torch.zeros(1, 1),
                        schedule=torch.tensor([800.0, 200.0]), branch="cond")
    again = Graph.from_json(Graph([patch]).to_json())
    assert again == Graph([patch]) and again[0].schedule.tolist() == [800.0, 200.0]
    assert again[0].apply(torch.ones(1, 1), Selection((0,)), _ctx(790), "unet.x").tolist() == [[0.0]]
