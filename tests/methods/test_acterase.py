"""ActErase: the mask rule, Eq. 6 and the Alg. 2 merge on hand-made tensors; collection in one sampling
call; layer sets and bad input; erasures that save, reload and reverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_state import assert_same_state, snapshot

import circuits
from circuits.errors import ShapeError, SiteError
from circuits.interventions.scope import Selection
from circuits.methods import Concept, Erasure, acterase, load
from circuits.methods.common import ConfigError

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


def test_collect_equals_alg_1_computed_from_full_captures(model) -> None:
    """x_avg (line 7) and the votes of Eq. 5 match the same quantities computed from stacked activations."""
    config = acterase.Config(steps=STEPS)
    collected = acterase.collect(model, CONCEPT, config)
    pairs = CONCEPT.pairs()
    n = len(pairs)
    sites = model.sites.ffn_hidden()
    result = circuits.sample(model, [p.anchor for p in pairs] + [p.target for p in pairs], steps=STEPS,
                             follow={n + i: i for i in range(n)}, progress=False,
                             graph=[circuits.Capture(s, branch="cond") for s in sites])
    for site in sites:
        x = result.captures[site]  # [steps, 2n, positions, channels]
        norms = model.sites.module(site.removesuffix(".hidden") + ".net.2").weight.norm(dim=0)
        i_s, i_t = x[:, :n].abs() * norms, x[:, n:].abs() * norms
        votes = ((i_s >= config.tau) & (i_s < i_t)).float().mean(dim=(0, 1))
        torch.testing.assert_close(collected.source[site], x[:, :n].mean(dim=(0, 1)))
        torch.testing.assert_close(collected.votes[site], votes)
        assert torch.equal(collected.mask[site], votes >= config.agreement)
        torch.testing.assert_close(collected.stats[site][:, 0], ((i_s >= config.tau) & (i_s < i_t)).float().mean(
            dim=(1, 2, 3)))


def test_the_trace_has_mask_density_per_layer_and_per_step(erasure, model) -> None:
    assert [row["site"] for row in erasure.trace] == model.sites.ffn_hidden()
    for row, item in zip(erasure.trace, erasure.graph):
        assert row["density"] == pytest.approx(float(item.mask.float().mean()))
        assert len(row["density_per_step"]) == STEPS and row["score"] == "wanda"
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
        assert sites and tuple(erasure.graph[0].mask.shape) == shape
    circuits.sample(model, ["a red circle"], steps=2, graph=erasure, progress=False, strict=True)


# -- bad input -------------------------------------------------------------------------------
def test_bad_layer_sets_and_configs_are_clear_errors(model) -> None:
    with pytest.raises(SiteError, match=r"layers='unet.\*attn2' matches .* not FFN hidden activations .*"
                                        r"score='magnitude'"):
        acterase.fit(model, CONCEPT, layers="unet.*attn2", steps=1)
    with pytest.raises(SiteError, match="unknown site 'unet.*.fff.hidden'"):
        acterase.fit(model, CONCEPT, layers="unet.*.fff.hidden", steps=1)
    with pytest.raises(SiteError, match="ActErase patches UNet activations"):
        acterase.fit(model, CONCEPT, layers="text_encoder.*.mlp", score="magnitude", steps=1)
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
