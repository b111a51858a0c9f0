"""Methods on SDXL's structure (tiny widths): every method fits, erases and leaves no trace.

UCE and TRCE stage 1 edit the UNet's cross-attention K/V from the text embeddings, which on SDXL
are both encoders' penultimate layers concatenated (``encode_prompts``); ActErase collects and
patches FFN activations through ``circuits.sample``, which conditions on the pooled embedding and
time ids. TRCE stage 2 and ANT call the UNet in their own loops, with the pooled embedding and time
ids beside the context, and read the sampler's own unconditional text (a zero context on SDXL).
ErasePro aligns both text encoders progressively, then the UNet's K/V on the 2048-wide context. A
UNet called without the added conditioning is a clear error.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import circuits
from circuits.concept import Concept
from circuits.errors import SettingError
from circuits.methods import acterase, ant, erasepro, trce, uce
from circuits.methods.common import pair_columns, text_conditioning
from circuits.methods.trce_steering import cache, null_predictions, null_text, plan

CONCEPT = Concept("cat", anchor="dog", templates=("a photo of a {}", "a {} on artstation"), preservation=("a red circle",))
#: stage 2 in a second on the tiny model; margin 1 keeps Eq. 8's hinge open, so the one Adam step moves the weights
#: (at the paper's 0.01 a random tiny model's rows can already satisfy the triplet, and nothing moves)
TRCE_SMALL = dict(trajectories=2, null_trajectories=2, sample_steps=2, epochs=1, batch_size=2, cache_batch=2,
                  lr=1e-3, margin=1.0, progress=False)
#: 4 DDIM steps run from 751 down to 1: t' = 500 leaves two on each side of Eq. 3
ANT_SMALL = dict(steps=2, seeds=(0,), sample_steps=4, maps=2, t_prime=500, progress=False)


@pytest.fixture(scope="module")
def erasepro_fit(xl_model):
    return erasepro.fit(xl_model, CONCEPT)


@pytest.mark.parametrize("fit", [
    lambda m: uce.fit(m, CONCEPT),
    lambda m: trce.fit(m, CONCEPT, stages=("text",), progress=False),
    lambda m: trce.fit(m, CONCEPT, **TRCE_SMALL),
    lambda m: ant.fit(m, CONCEPT, **ANT_SMALL),
    lambda m: erasepro.fit(m, CONCEPT),
    lambda m: acterase.fit(m, CONCEPT, steps=2),
], ids=["uce", "trce-stage1", "trce-both-stages", "ant", "erasepro", "acterase"])
def test_erasures_fit_and_change_the_target_on_sdxl(xl_model, fit):
    erasure = fit(xl_model)
    plain = circuits.sample(xl_model, ["a photo of a cat"], seed=0, steps=2, progress=False)
    erased = circuits.sample(xl_model, ["a photo of a cat"], seed=0, steps=2, graph=erasure, progress=False)
    assert not torch.equal(plain.latents, erased.latents)
    again = circuits.sample(xl_model, ["a photo of a cat"], seed=0, steps=2, progress=False)
    assert torch.equal(plain.latents, again.latents)  # nothing outlives the graph


def test_trce_stage2_trains_the_visual_layers_on_sdxl(xl_model):
    erasure = trce.fit(xl_model, CONCEPT, **{**TRCE_SMALL, "stages": ("trajectory",)})
    edits = [i for i in erasure.as_graph() if isinstance(i, circuits.WeightEdit)]
    assert edits and all(".attn1." in e.param or ".attn2.to_q." in e.param for e in edits)
    assert sum(float(e.delta.abs().sum()) for e in edits) > 0  # Adam moved them: the UNet calls had gradients


def test_closed_form_edits_are_2048_wide_on_sdxl(xl_model):
    erasure = uce.fit(xl_model, CONCEPT)
    edits = [i for i in erasure.as_graph() if isinstance(i, circuits.WeightEdit)]
    assert edits and all(".attn2.to_" in e.param for e in edits)
    for edit in edits:
        change = edit.delta if edit.delta is not None else edit.value
        assert change.shape == xl_model.parameter(edit.param).shape
        assert change.shape[-1] == xl_model.unet.config.cross_attention_dim  # 32 + 48: both encoders


def test_erasepro_aligns_both_encoders_then_the_unet(xl_model, erasepro_fit):
    first = xl_model.sites.text_layers()
    second = xl_model.sites.text_layers("text_encoder_2")
    params = {i.param for i in erasepro_fit.as_graph()}
    for layer in first[:-1] + second:  # every layer whose output the UNet or the pooled embedding reads
        assert {f"{layer}.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj")} <= params
    assert not any(p.startswith(first[-1] + ".") for p in params)  # its output feeds nothing: skipped, noted
    assert any(first[-1] in note for note in erasepro_fit.notes)
    assert {f"{site}.{p}.weight" for site in xl_model.sites.cross_attention() for p in ("to_k", "to_v")} <= params
    stages = {}
    for row in erasepro_fit.trace:
        stages.setdefault(row["stage"], set()).add(row["layer"])
    assert stages["text"] == set(range(len(first) - 1))
    assert stages["text_encoder_2"] == set(range(len(second)))
    assert len(stages["unet"]) == len(xl_model.sites.cross_attention())
    assert all(row["residual"] < row["residual_before"] for row in erasepro_fit.trace)


def test_erasepro_moves_the_target_context_toward_the_anchors_on_sdxl(xl_model, erasepro_fit):
    """The 2048-wide context at the aligned positions, and the pooled embedding (text_encoder_2's last layer,
    aligned too), of the target prompts move toward the original anchor prompts' (measured: 3.6 -> 0.54, and
    2.1 -> 2e-6 for the pooled: "cat" and "dog" are one token each, so the [EoT]s share their position)."""
    pairs = CONCEPT.pairs(synonyms=True)
    x_before, y = pair_columns(xl_model, pairs, "prompt_aligned", 5)
    pooled_target, pooled_anchor = (text_conditioning(xl_model, [getattr(p, side) for p in pairs]).pooled
                                    for side in ("target", "anchor"))
    with circuits.intervene(xl_model, erasepro_fit):
        x_after, _ = pair_columns(xl_model, pairs, "prompt_aligned", 5)
        pooled_after = text_conditioning(xl_model, [p.target for p in pairs]).pooled
    assert x_before.shape[0] == xl_model.unet.config.cross_attention_dim
    before, after = float((x_before - y).norm()), float((x_after - y).norm())
    assert after < 0.5 * before, (before, after)
    before, after = float((pooled_target - pooled_anchor).norm()), float((pooled_after - pooled_anchor).norm())
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("name", ["xl_model", "model"])
def test_the_unconditional_predictions_are_the_samplers(request, name):
    """TRCE's null text and ANT's unconditional rows give, at a recorded latent, the sampler's recorded
    ``noise_uncond``: on SDXL a zero context and pooled embedding (force_zeros_for_empty_prompt), not the
    encoding of ""; on SD1.x the encoding of ""."""
    model = request.getfixturevalue(name)
    recorded = circuits.sample(model, ["a photo of a cat"], seed=3, steps=4, scheduler="ddim", record=True,
                               progress=False).trajectory
    z = recorded.latents[:-1, 0]  # DDIM does not scale the UNet input: the recorded latent is what it read
    t = torch.tensor(recorded.timesteps).long()
    ours = null_predictions(model, z, t, null_text(model))
    torch.testing.assert_close(ours, recorded.noise_uncond[:, 0], rtol=1e-4, atol=1e-5)

    config = dataclasses.replace(ant.Config.paper(), sample_steps=4, seeds=(3,), t_prime=500, scheduler="ddim")
    traj = ant.collect(model, ["a photo of a cat"], config)
    rows = torch.zeros(2, dtype=torch.long)
    _, terms = ant.ant_loss(model, traj, rows, torch.tensor([0, 1]), torch.tensor([2, 3]), config)
    scale = float(traj.eps_uncond.pow(2).mean())
    assert terms["uncond_early"] < 1e-9 * scale and terms["uncond_late"] < 1e-9 * scale, (terms, scale)

    trce_config = trce.Config(trajectories=2, null_trajectories=2, sample_steps=2, epochs=1, batch_size=2)
    data = cache(model, CONCEPT, trce_config, plan(trce_config))  # the null trajectories' recorded predictions
    again = null_predictions(model, torch.cat(data.null_z), torch.cat(data.null_t), null_text(model))
    torch.testing.assert_close(again, torch.cat(data.null_ref), rtol=1e-4, atol=1e-5)


def test_unet_without_added_conditioning_is_a_clear_error(xl_model):
    embeds = circuits.sampling.encode_prompts(xl_model, ["a cat"], "cond")
    latents = torch.zeros(1, 4, 8, 8)
    with pytest.raises(SettingError, match="added_conditioning"):
        xl_model.unet(latents, 999, encoder_hidden_states=embeds)
    text = circuits.sampling.encode_text(xl_model, ["a cat"], "cond")
    kwargs = circuits.sampling.added_conditioning(xl_model, text.pooled, 64, 64)
    assert xl_model.unet(latents, 999, encoder_hidden_states=text.embeds, **kwargs).sample.shape == (1, 4, 8, 8)


def test_trainable_freezes_the_second_text_encoder_too(xl_model):
    """Only the named parameters get gradients on SDXL: text_encoder_2 would otherwise keep its flags and
    build a graph through 700 M parameters at full size."""
    from circuits.methods.training import trainable

    param = f"{xl_model.sites.cross_attention()[0]}.to_k.weight"
    for p in xl_model.text_encoder_2.parameters():
        p.requires_grad_(True)  # as a freshly loaded module has them
    try:
        with trainable(xl_model, [param]):
            assert not any(p.requires_grad for p in xl_model.text_encoder_2.parameters())
            assert xl_model.parameter(param).requires_grad
        assert all(p.requires_grad for p in xl_model.text_encoder_2.parameters())  # flags restored
    finally:
        for p in xl_model.text_encoder_2.parameters():
            p.requires_grad_(False)


def test_trainable_without_restore_keeps_no_copy_and_leaves_weights_alone(xl_model):
    from circuits.methods.training import trainable

    param = f"{xl_model.sites.cross_attention()[0]}.to_k.weight"
    before = xl_model.parameter(param).detach().clone()
    with trainable(xl_model, [param], restore=False) as named:
        loss = (named[param] ** 2).sum()
        (grad,) = torch.autograd.grad(loss, [named[param]])
    assert torch.equal(grad, 2 * before) and torch.equal(xl_model.parameter(param), before)


def test_trce_stage1_on_sdxl_refines_the_unet_encoder_only(xl_model, model):
    """TRCE App. F: on SD-XL stage 1 is applied to the UNet encoder (down blocks) only; SD1.x keeps every layer."""
    erasure = trce.fit(xl_model, CONCEPT, stages=("text",), progress=False)
    edited = {e.param for e in erasure.as_graph() if isinstance(e, circuits.WeightEdit)}
    crosses = xl_model.sites.cross_attention()
    assert edited == {f"{s}.{p}.weight" for s in crosses if ".down_blocks." in s for p in ("to_k", "to_v")}
    assert any(".up_blocks." in s or ".mid_block." in s for s in crosses)  # something was left out
    assert erasure.config["stage1_layers"] == "encoder" and any("sdxl()" in n for n in erasure.notes)
    everywhere = trce.fit(xl_model, CONCEPT, stages=("text",), progress=False, stage1_layers="all")
    assert len([e for e in everywhere.as_graph() if isinstance(e, circuits.WeightEdit)]) == 2 * len(crosses)
    sd1 = trce.fit(model, CONCEPT, stages=("text",), progress=False)
    assert sd1.config["stage1_layers"] == "all" and any("paper()" in n for n in sd1.notes)


def test_erasepro_notes_prompts_whose_eot_the_two_tokenizers_place_apart(xl_model, erasepro_fit):
    """'!' is tokenizer_2's pad token: the UNet columns then meet the second encoder's shifted tokens, which
    the saved Erasure must say (the warning alone is gone once a notebook cell has run)."""
    from circuits.sampling.conditioning import TokenMismatchWarning

    shouting = Concept("cat", anchor="dog", templates=("a photo of a {} !!!",), preservation=("a red circle",))
    with pytest.warns(TokenMismatchWarning):
        erasure = erasepro.fit(xl_model, shouting)
    assert any("place the [EoT] differently" in n and "!!!" in n for n in erasure.notes)
    assert not any("place the [EoT] differently" in n for n in erasepro_fit.notes)
