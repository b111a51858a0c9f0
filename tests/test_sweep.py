"""``circuits.sampling.sweep``: variants as row blocks of batched calls give each variant's own images.

The contract: a variant's image for (prompt, seed) equals what ``circuits.sample`` gives for that
variant alone (pixel values within 1 of 255: batched kernels round differently), whatever the
chunking, with ``rows=`` scopes following their prompts, per-variant guidance, and weight-changing
variants kept out of shared batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import circuits
from circuits.sampling import CFG, ReversedCFG, Rowwise, Variant, sweep

PROMPTS = ["a red circle", "a photo of a blue unicorn on a white background", "a cat"]


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _alone(model, graph=None, guidance=None, seed=0):
    return circuits.sample(model, PROMPTS, seed=[seed] * len(PROMPTS), steps=3, graph=graph, guidance=guidance,
                           progress=False).images  # fmt: skip


def _close(a, b) -> bool:
    return bool(np.abs(_pixels(a) - _pixels(b)).max() <= 1)


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.abs(_pixels(x) - _pixels(y)).max() <= 1


def test_per_prompt_seeds_make_an_image_independent_of_its_batch(model):
    together = circuits.sample(model, PROMPTS, seed=[5, 6, 7], steps=3, progress=False).images
    alone = circuits.sample(model, PROMPTS[1:2], seed=[6], steps=3, progress=False).images
    _assert_same(together[1:2], alone)
    one_int = circuits.sample(model, PROMPTS[:1], seed=5, steps=3, progress=False).images
    _assert_same(together[:1], one_int)  # a one-prompt batch with seed=s draws what seed=[s] draws


@pytest.mark.parametrize("seed", [[0, 1], (0,), "0", 1.5, [True, 1, 2]])
def test_bad_seeds_are_rejected(model, seed):
    with pytest.raises(ValueError, match="seed="):
        circuits.sample(model, PROMPTS, seed=seed, steps=1, progress=False)


def test_sweep_variants_equal_their_own_calls_across_chunkings(model):
    zero_eot = circuits.Graph([circuits.ZeroTokens("unet.*attn2", tokens="eot_all")])
    only_row_1 = circuits.Graph([circuits.ZeroTokens("unet.*attn2", tokens="eot_all", rows=[1])])
    variants = {"plain": None, "zero_eot": zero_eot, "row_1": only_row_1, "reversed": ReversedCFG(7.5, 500)}
    expected = {
        "plain": _alone(model), "zero_eot": _alone(model, zero_eot), "row_1": _alone(model, only_row_1),
        "reversed": _alone(model, guidance=ReversedCFG(7.5, 500)),
    }  # fmt: skip
    # every variant acts (else matching its own call would prove nothing), row_1 only on prompt 1
    for name, prompt in (("zero_eot", 0), ("row_1", 1), ("reversed", 0)):
        assert not _close(expected[name][prompt], expected["plain"][prompt]), name
    _assert_same([expected["row_1"][i] for i in (0, 2)], [expected["plain"][i] for i in (0, 2)])
    for max_batch, calls in ((32, 1), (4, 3), (1, 12)):
        result = sweep(model, PROMPTS, variants, seeds=0, steps=3, max_batch=max_batch, progress=False)
        assert result.calls == calls and result.variants == list(variants)
        for name in variants:
            _assert_same(result.images[name], expected[name])


def test_sweep_orders_images_prompt_major_over_seeds(model):
    result = sweep(model, PROMPTS[:2], {"plain": None}, seeds=[3, 4], steps=2, progress=False)
    for p in range(2):
        for s, seed in enumerate((3, 4)):
            alone = circuits.sample(model, PROMPTS[p], seed=seed, steps=2, progress=False).images[0]
            _assert_same([result.image("plain", p, s)], [alone])
            assert result.images["plain"][p * 2 + s] is result.image("plain", p, s)


def test_sweep_keeps_each_images_final_latents(model):
    result = sweep(model, PROMPTS[:2], {"plain": None, "reversed": ReversedCFG(7.5, 500)}, seeds=[3, 4], steps=2,
                   max_batch=3, progress=False)  # fmt: skip
    assert result.latents["plain"].shape[0] == 4 and result.latents["plain"].device.type == "cpu"
    for name, guidance in (("plain", None), ("reversed", ReversedCFG(7.5, 500))):
        alone = circuits.sample(model, PROMPTS[1], seed=4, steps=2, guidance=guidance, progress=False).latents[0]
        assert torch.allclose(result.latents[name][1 * 2 + 1], alone.cpu(), atol=1e-4)  # prompt 1, seed 4


def test_weight_edits_run_in_chunks_of_their_own(model):
    param = model.sites.cross_attention()[0] + ".to_v.weight"
    weight = model.parameter(param)
    edit = circuits.Graph([circuits.WeightEdit(param, delta=torch.randn_like(weight) * weight.std())])
    result = sweep(model, PROMPTS, {"plain": None, "edit": edit}, steps=2, max_batch=32, progress=False)
    assert result.calls == 2
    assert not _close(result.images["edit"][0], result.images["plain"][0])  # the edit acts
    _assert_same(result.images["edit"], circuits.sample(model, PROMPTS, seed=[0] * 3, steps=2, graph=edit,
                                                         progress=False).images)  # fmt: skip
    _assert_same(result.images["plain"], circuits.sample(model, PROMPTS, seed=[0] * 3, steps=2, progress=False).images)
    assert torch.equal(model.parameter(param), weight)


def test_variant_objects_carry_graph_and_guidance(model):
    graph = circuits.Graph([circuits.ZeroTokens("unet.*attn2", tokens="sot")])
    result = sweep(model, PROMPTS[:1], {"both": Variant(graph, ReversedCFG(7.5, 900))}, steps=2, progress=False)
    _assert_same(result.images["both"], circuits.sample(model, PROMPTS[:1], seed=[0], steps=2, graph=graph,
                                                         guidance=ReversedCFG(7.5, 900), progress=False).images)  # fmt: skip


def test_sweep_rejects_captures_and_bad_arguments(model):
    with pytest.raises(ValueError, match="cannot be swept"):
        sweep(model, PROMPTS, {"c": circuits.Capture("unet.*attn2")}, steps=1, progress=False)
    with pytest.raises(ValueError, match="max_batch"):
        sweep(model, PROMPTS, {"p": None}, steps=1, max_batch=0, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        sweep(model, PROMPTS, {"p": None}, seeds=[], steps=1, progress=False)
    with pytest.raises(ValueError, match="variants"):
        sweep(model, PROMPTS, {}, steps=1, progress=False)
    with pytest.raises(ValueError, match="graph="):
        sweep(model, PROMPTS, {"p": None}, steps=1, graph=None, progress=False)


def test_rowwise_guidance_combines_each_block_and_checks_its_size(model):
    guide = Rowwise(((CFG(7.5), 1), (ReversedCFG(7.5, 1000), 2)))
    eps_u, eps_c = torch.zeros(3, 1, 1, 1), torch.ones(3, 1, 1, 1)
    assert guide.combine(eps_u, eps_c, 500.0).flatten().tolist() == [7.5, -7.5, -7.5]
    with pytest.raises(ValueError, match="covers 3 prompts"):
        circuits.sample(model, PROMPTS[:2], steps=1, guidance=guide, progress=False)
    with pytest.raises(ValueError, match="block"):
        Rowwise(((CFG(7.5), 0),))
