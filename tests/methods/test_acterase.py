"""ActErase: the mask rule, Eq. 6 and the Alg. 2 merge on hand-made tensors; collection in one sampling
call; layer sets and bad input; erasures that save, reload and reverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from model_state import assert_same_state, snapshot

import circuits
from circuits.errors import ShapeError, SiteError
from circuits.interventions.scope import Selection
from circuits.methods import Concept, Erasure, acterase, load
from circuits.methods.common import ConfigError
from circuits.sampling import make_scheduler

CONCEPT = Concept("red", synonyms=("crimson",), templates=["a {} circle", "a photo of a {} dog"])
STEPS = 3


@pytest.fixture(scope="module")
def erasure(model):
    return acterase.fit(model, CONCEPT, steps=STEPS)


# -- Eqs. 4-9 on hand-made tensors ----------------------------------------------------------
def test_importance_is_wanda_or_magnitude() -> None:
    x = torch.tensor([[-2.0, 1.0, 0.5]])
    norms = torch.tensor([0.5, 2.0, 0.0])
    torch.testing.assert_close(acterase.importance(x, norms), torch.tensor([[1.0, 2.0, 0.0]]))
    torch.testing.assert_close(acterase.importance(x, None), torch.tensor([[2.0, 1.0, 0.5]]))


def test_the_mask_rule_is_eq_5() -> None:
    i_s = torch.tensor([0.005, 0.01, 0.01, 0.3, 0.3, 0.3])
    i_t = torch.tensor([0.900, 0.02, 0.01, 0.2, 0.3, 0.4])
    # below tau | at tau, target higher | equal | source higher | equal | target higher
    assert acterase.mask_rule(i_s, i_t, tau=0.01).tolist() == [False, True, False, False, False, True]


def test_eq_6_patches_masked_entries_on_the_selected_rows_only() -> None:
    x = torch.arange(12, dtype=torch.float32).view(2, 2, 3)  # [rows, positions, channels]
    mask = torch.tensor([[True, False, False], [False, False, True]])
    source = torch.full((2, 3), -1.0)
    patch = circuits.MaskedPatch("site", mask=mask, source=source)
    out = patch.apply(x, Selection((1,)), None, "site")
    expected = x.clone()
    expected[1] = torch.where(mask, source, x[1])  # M * x_avg + (1 - M) * x_t
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[0], x[0])


def test_merge_is_eqs_7_and_8() -> None:
    m1 = torch.tensor([True, True, False, False])
    m2 = torch.tensor([True, False, True, False])
    x1 = torch.tensor([1.0, 2.0, 3.0, 4.0])
    x2 = torch.tensor([3.0, 5.0, 7.0, 9.0])
    mask, source = acterase.merge_masks([m1, m2], [x1, x2])
    assert mask.tolist() == [True, True, True, False]  # OR (Eq. 7)
    # both: the mean; concept 1 only: its value, not halved; concept 2 only: its value; none: 0 (max(1, 0) = 1)
    assert source.tolist() == [2.0, 2.0, 7.0, 0.0]
    assert torch.isfinite(source).all()


def _patch_erasure(name: str, mask: torch.Tensor, source: torch.Tensor, site: str = "unet.x.ff.hidden"):
    concept = Concept(name, templates=["a {} circle"])
    graph = circuits.Graph([circuits.MaskedPatch(site, mask=mask, source=source, branch="cond")])
    return Erasure("acterase", concept, {}, graph)


def test_merge_of_erasures_applies_eq_8_per_site_and_names_a_mismatch() -> None:
    a = _patch_erasure("red", torch.tensor([[True, False]]), torch.tensor([[2.0, 2.0]]))
    b = _patch_erasure("circle", torch.tensor([[True, True]]), torch.tensor([[4.0, 6.0]]))
    merged = acterase.merge([a, b])
    (item,) = merged.graph
    assert item.mask.tolist() == [[True, True]] and item.source.tolist() == [[3.0, 6.0]]
    assert merged.concept.name == "red + circle" and merged.trace[0]["density_per_concept"] == {"red": 0.5,
                                                                                               "circle": 1.0}
    other = _patch_erasure("dog", torch.ones(3, 2, dtype=torch.bool), torch.zeros(3, 2))
    with pytest.raises(ShapeError, match=r"disagree at unet.x.ff.hidden \(red: mask \(1, 2\).*dog: mask \(3, 2\)"):
        acterase.merge([a, other])
    with pytest.raises(ConfigError, match="holds a WeightEdit"):
        acterase.merge([a, Erasure("uce", a.concept, {}, circuits.Graph(
            [circuits.WeightEdit("unet.conv_in.bias", delta=torch.zeros(1))]))])


# -- collection -----------------------------------------------------------------------------
def test_collect_runs_sources_and_targets_in_one_sampling_call(model) -> None:
    calls: list[int] = []
    handle = model.unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        acterase.fit(model, CONCEPT, steps=STEPS)
    finally:
        handle.remove()
    pairs = len(CONCEPT.pairs())
    assert calls == [2 * 2 * pairs] * STEPS  # one UNet call per step: [uncond, cond] x [sources, targets]


def _full_rule(model, config):
    """Eq. 5 for every (step, pair) and x_avg, from stacked activations of the same collection run."""
    pairs = CONCEPT.pairs()
    n = len(pairs)
    sites = model.sites.ffn_hidden()
    result = circuits.sample(model, [p.anchor for p in pairs] + [p.target for p in pairs], steps=config.steps,
                             scheduler=config.scheduler, follow={n + i: i for i in range(n)}, progress=False,
                             graph=[circuits.Capture(s, branch="cond") for s in sites])
    out = {}
    for site in sites:
        x = result.captures[site]  # [steps, 2n, positions, channels]
        norms = model.sites.module(site.removesuffix(".hidden") + ".net.2").weight.norm(dim=0)
        i_s, i_t = x[:, :n].abs() * norms, x[:, n:].abs() * norms
        out[site] = (((i_s >= config.tau) & (i_s < i_t)).float(), x[:, :n].mean(dim=(0, 1)))  # [steps, n, ...]
    timesteps = [float(c.timestep) for c in result.captures.calls(sites[0])]
    return out, timesteps


def test_the_default_mask_is_recomputed_at_every_step_as_alg_1_line_10(model) -> None:
    """masks="step": M_t is Eq. 5 at step t (majority of pairs), kept per step and applied at that step."""
    config = acterase.Config(steps=STEPS)
    assert config.masks == "step"
    collected = acterase.collect(model, CONCEPT, config)
    full, timesteps = _full_rule(model, config)
    assert collected.timesteps.tolist() == timesteps
    for site, (rule, x_avg) in full.items():
        torch.testing.assert_close(collected.source[site], x_avg)  # line 7
        assert collected.mask[site].shape == (STEPS, *x_avg.shape)
        assert torch.equal(collected.mask[site], rule.mean(1) >= config.agreement)
        torch.testing.assert_close(collected.votes[site], rule.mean(dim=(0, 1)))
        torch.testing.assert_close(collected.stats[site][:, 0], rule.mean(dim=(1, 2, 3)))
    steps = [m for m in collected.mask.values()]
    assert any(not torch.equal(m[0], m[-1]) for m in steps), "the per-step masks should differ between steps"
    for item in acterase.patch(collected):
        assert item.schedule.tolist() == timesteps and torch.equal(item.mask, collected.mask[item.site])


@pytest.mark.parametrize("masks", ["vote", "last"])
def test_the_vote_and_last_step_options(model, masks) -> None:
    config = acterase.Config(steps=STEPS, masks=masks)
    collected = acterase.collect(model, CONCEPT, config)
    full, _ = _full_rule(model, config)
    for site, (rule, _) in full.items():
        expected = rule.mean(dim=(0, 1)) >= config.agreement if masks == "vote" else rule[-1].mean(0) >= config.agreement
        assert torch.equal(collected.mask[site], expected)
    graph = acterase.patch(collected)
    assert all(item.schedule is None and item.mask.shape == item.source.shape for item in graph)


def test_per_step_sources_patch_each_step_with_that_steps_source_mean(model) -> None:
    config = acterase.Config(steps=STEPS, sources="step")
    collected = acterase.collect(model, CONCEPT, config)
    pairs = CONCEPT.pairs()
    n = len(pairs)
    sites = model.sites.ffn_hidden()
    x = circuits.sample(model, [p.anchor for p in pairs] + [p.target for p in pairs], steps=STEPS,
                        scheduler=config.scheduler, follow={n + i: i for i in range(n)}, progress=False,
                        graph=[circuits.Capture(s, branch="cond", rows=range(n)) for s in sites]).captures
    for item in acterase.patch(collected):
        per_step = x[item.site].mean(1)  # [steps, positions, channels]: the sources' mean at each step
        torch.testing.assert_close(item.source, per_step)
        torch.testing.assert_close(collected.source[item.site], per_step.mean(0))  # x_avg stays line 7's
        assert item.mask.shape[0] == STEPS and len(item.schedule) == STEPS


def test_the_trace_has_mask_density_per_layer_and_per_step(erasure, model) -> None:
    assert [row["site"] for row in erasure.trace] == model.sites.ffn_hidden()
    for row, item in zip(erasure.trace, erasure.graph):
        assert row["density"] == pytest.approx(float(item.mask.float().mean()))
        assert len(row["density_per_step"]) == STEPS and row["score"] == "wanda" and row["masks"] == "step"
        assert row["mask_density_per_step"] == pytest.approx(item.mask.float().mean(dim=(1, 2)).tolist(), abs=1e-5)
        assert 0 < row["above_tau"] <= 1 and row["importance_source"] > 0
    assert all(isinstance(item, circuits.MaskedPatch) and item.branch == "cond" and item.mask.dtype == torch.bool
               for item in erasure.graph)


@pytest.mark.parametrize(("layers", "score", "shape"), [
    ("cross_attention", "magnitude", (64, 32)),
    ("unet_output", "magnitude", (4, 8, 8)),
    ("unet.up_blocks.*.ff.hidden", "wanda", None),
])
def test_layer_sets(model, layers, score, shape) -> None:
    erasure = acterase.fit(model, CONCEPT, layers=layers, score=score, steps=2)
    sites = [item.site for item in erasure.graph]
    if shape is None:
        assert sites and all(s.startswith("unet.up_blocks.") and s.endswith(".ff.hidden") for s in sites)
    else:
        assert sites and tuple(erasure.graph[0].mask.shape) == (2, *shape)  # [steps, *site shape]
    circuits.sample(model, ["a red circle"], steps=2, graph=erasure, progress=False, strict=True)


def test_fit_without_config_uses_the_papers_sampler_and_says_so(model) -> None:
    """App. A.3: DPM-Solver, 30 steps, CFG 7.5; Alg. 1: per-step masks, patch on G(z_t, t, c_t) (cond)."""
    paper = acterase.Config.paper()
    assert (paper.scheduler, paper.steps, paper.guidance_scale, paper.masks, paper.branch, paper.tau) == (
        "dpm", 30, 7.5, "step", "cond", 0.01)
    erasure = acterase.fit(model, Concept("red", templates=["a {} circle"]))  # tiny SD: family "sd"
    assert erasure.notes == ["config: Config.paper() defaults (chosen for model family 'sd')"]
    dpm = make_scheduler(model, "dpm")
    dpm.set_timesteps(30)
    assert isinstance(dpm, DPMSolverMultistepScheduler)
    for item in erasure.graph:
        assert item.schedule.tolist() == [float(t) for t in dpm.timesteps] and item.branch == "cond"
    explicit = acterase.fit(model, Concept("red", templates=["a {} circle"]), acterase.Config(steps=2))
    assert "given explicitly" in explicit.notes[0] and len(explicit.graph[0].schedule) == 2


def test_the_catalog_entries_call_fit_with_its_model_aware_defaults(monkeypatch, model) -> None:
    """The catalog's pocket rows and ``fit(model, concept)`` are one entry point (Table 7: the same
    settings on FFN and cross-attention, only the score differs, since WANDA needs a following weight)."""
    from circuits.methods import catalog

    calls = []
    monkeypatch.setattr(acterase, "fit", lambda m, c, config=None, **kw: calls.append((config, kw)))
    catalog.fit("acterase", model, CONCEPT)
    catalog.fit("acterase-xattn", model, CONCEPT)
    assert calls == [(None, {}), (None, {"layers": "cross_attention", "score": "magnitude"})]


def test_merge_of_per_step_erasures_is_eq_8_at_every_step_and_needs_one_schedule() -> None:
    schedule = torch.tensor([900.0, 100.0])
    a = _patch_erasure("red", torch.tensor([[[True, False]], [[False, False]]]), torch.tensor([[[2.0, 2.0]]]))
    b = _patch_erasure("circle", torch.tensor([[[True, True]], [[False, True]]]), torch.tensor([[[4.0, 6.0]]]))
    for erasure in (a, b):
        erasure.graph[0].schedule = schedule
        erasure.graph[0]._check_schedule()
    (item,) = acterase.merge([a, b]).graph
    assert item.mask.tolist() == [[[True, True]], [[False, True]]]
    assert item.source.tolist() == [[[3.0, 6.0]], [[0.0, 6.0]]]  # per step: the mean of the masks that hold
    assert item.schedule.tolist() == [900.0, 100.0]
    b.graph[0].schedule = torch.tensor([800.0, 100.0])
    with pytest.raises(ShapeError, match="same masks setting and collection schedule"):
        acterase.merge([a, b])


# -- bad input -------------------------------------------------------------------------------
def test_bad_layer_sets_and_configs_are_clear_errors(model) -> None:
    with pytest.raises(SiteError, match=r"layers='unet.\*attn2' matches .* not FFN hidden activations .*"
                                        r"score='magnitude'"):
        acterase.fit(model, CONCEPT, layers="unet.*attn2", steps=1)
    with pytest.raises(SiteError, match="unknown site 'unet.*.fff.hidden'"):
        acterase.fit(model, CONCEPT, layers="unet.*.fff.hidden", steps=1)
    with pytest.raises(SiteError, match="ActErase patches UNet activations"):
        acterase.fit(model, CONCEPT, layers="text_encoder.*.mlp", score="magnitude", steps=1)
    with pytest.raises(ConfigError, match="masks='majority'; use one of"):
        acterase.fit(model, CONCEPT, masks="majority")
    with pytest.raises(ConfigError, match="sources='avg'; use 'mean' or 'step'"):
        acterase.fit(model, CONCEPT, sources="avg")
    with pytest.raises(ConfigError, match="agreement=0"):
        acterase.fit(model, CONCEPT, agreement=0)
    with pytest.raises(ConfigError, match="did you mean 'score'"):
        acterase.fit(model, CONCEPT, scroe="wanda")
    with pytest.raises(ConfigError, match="score='wanda '"):
        acterase.fit(model, CONCEPT, score="wanda ")


def test_masks_of_another_shape_are_an_error_naming_the_site(model, erasure) -> None:
    before = snapshot(model)
    with pytest.raises(ShapeError, match=r"MaskedPatch\('unet\.down_blocks\.0\..*ff\.hidden'\) at .*: mask has shape "
                                         r"\(64, 128\), which does not broadcast"):
        circuits.sample(model, ["a red circle"], steps=1, height=32, width=32, graph=erasure, progress=False)
    assert_same_state(before, snapshot(model))


# -- an Erasure like every other -------------------------------------------------------------
def test_the_erasure_changes_images_and_leaves_nothing_behind(model, erasure) -> None:
    before = snapshot(model)
    plain = circuits.sample(model, ["a red circle"], steps=STEPS, progress=False)
    edited = circuits.sample(model, ["a red circle"], steps=STEPS, graph=erasure, progress=False, strict=True)
    assert not torch.equal(plain.latents, edited.latents)
    assert_same_state(before, snapshot(model))


def test_save_and_load_into_a_fresh_model_gives_identical_images(model, erasure, tiny_dir, tmp_path) -> None:
    folder = erasure.save(tmp_path / "red")
    loaded = load(folder)
    assert loaded.method == "acterase" and loaded.trace == erasure.trace and loaded.graph == erasure.graph
    assert loaded.graph[0].mask.dtype == torch.bool
    fresh = circuits.load(tiny_dir)
    prompts = ["a red circle", "a photo of a crimson dog"]
    a = circuits.sample(model, prompts, steps=STEPS, graph=erasure, progress=False)
    b = circuits.sample(fresh, prompts, steps=STEPS, graph=loaded, progress=False)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))
    merged = acterase.merge([erasure, loaded])  # the same concept twice: Eq. 8 gives it back
    for one, both in zip(erasure.graph, merged.graph):
        assert torch.equal(one.mask, both.mask)
        torch.testing.assert_close(both.source * both.mask, one.source * one.mask)
