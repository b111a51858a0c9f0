"""Methods on SDXL's structure (tiny widths): the closed forms on the 2048-wide context and ActErase's patch.

UCE and TRCE stage 1 edit the UNet's cross-attention K/V from the text embeddings, which on SDXL
are both encoders' penultimate layers concatenated (``encode_prompts``); ActErase collects and
patches FFN activations through ``circuits.sample``, which conditions on the pooled embedding and
time ids. Loops written for SD1.x that call the UNet without that conditioning get a clear error.
"""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.concept import Concept
from circuits.errors import SettingError
from circuits.methods import acterase, trce, uce

CONCEPT = Concept("cat", anchor="dog", templates=("a photo of a {}", "a {} on artstation"), preservation=("a red circle",))


@pytest.mark.parametrize("fit", [
    lambda m: uce.fit(m, CONCEPT),
    lambda m: trce.fit(m, CONCEPT, stages=("text",), progress=False),
    lambda m: acterase.fit(m, CONCEPT, steps=2),
], ids=["uce", "trce-stage1", "acterase"])
def test_erasures_fit_and_change_the_target_on_sdxl(xl_model, fit):
    erasure = fit(xl_model)
    plain = circuits.sample(xl_model, ["a photo of a cat"], seed=0, steps=2, progress=False)
    erased = circuits.sample(xl_model, ["a photo of a cat"], seed=0, steps=2, graph=erasure, progress=False)
    assert not torch.equal(plain.latents, erased.latents)
    again = circuits.sample(xl_model, ["a photo of a cat"], seed=0, steps=2, progress=False)
    assert torch.equal(plain.latents, again.latents)  # nothing outlives the graph


def test_closed_form_edits_are_2048_wide_on_sdxl(xl_model):
    erasure = uce.fit(xl_model, CONCEPT)
    edits = [i for i in erasure.as_graph() if isinstance(i, circuits.WeightEdit)]
    assert edits and all(".attn2.to_" in e.param for e in edits)
    for edit in edits:
        change = edit.delta if edit.delta is not None else edit.value
        assert change.shape == xl_model.parameter(edit.param).shape
        assert change.shape[-1] == xl_model.unet.config.cross_attention_dim  # 32 + 48: both encoders


def test_unet_without_added_conditioning_is_a_clear_error(xl_model):
    embeds = circuits.sampling.encode_prompts(xl_model, ["a cat"], "cond")
    latents = torch.zeros(1, 4, 8, 8)
    with pytest.raises(SettingError, match="added_conditioning"):
        xl_model.unet(latents, 999, encoder_hidden_states=embeds)
    text = circuits.sampling.encode_text(xl_model, ["a cat"], "cond")
    kwargs = circuits.sampling.added_conditioning(xl_model, text.pooled, 64, 64)
    assert xl_model.unet(latents, 999, encoder_hidden_states=text.embeds, **kwargs).sample.shape == (1, 4, 8, 8)
