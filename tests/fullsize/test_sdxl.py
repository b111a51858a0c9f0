"""SDXL as a first-class model: loading, sites of both text encoders, conditioning, and diffusers parity.

The folder is SDXL's exact structure at tiny widths (``build_sd_pipeline("sdxl", tiny=True)``): two
encoders (32 and 48 wide; the second with 3 layers and a projection), a 2-level cross-attention UNet
with ``text_time`` added conditioning, Euler, the real tokenizers, 64 px images.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import circuits
from circuits.errors import ModelLoadError, SiteError
from circuits.sampling import CFG, ReversedCFG, encode_prompts, encode_text
from circuits.sampling.conditioning import TokenMismatchWarning

PROMPTS = ["a photo of a cat, trending on artstation", "a (red:1.2) circle by greg rutkowski"]


@pytest.fixture(scope="module")
def xl_reference(xl_dir):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(xl_dir, local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _uint8(images) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images])


def test_loads_as_sdxl(xl_model, xl_dir):
    from diffusers import StableDiffusionXLPipeline

    assert json.loads((xl_dir / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    assert xl_model.is_sdxl and xl_model.family == "sdxl"
    assert xl_model.tokenizer.pad_token_id == 49407 and xl_model.tokenizer_2.pad_token_id == 0
    assert isinstance(xl_model.pipeline(), StableDiffusionXLPipeline)
    assert "text_encoders=" in repr(xl_model)
    assert xl_model.default_size == 64


@pytest.mark.parametrize(("kwargs", "what"), [
    ({}, "zero negative (force_zeros_for_empty_prompt)"),
    ({"negative_prompt": ["blurry", "a dog"]}, "encoded negatives"),
    ({"guidance_scale": 1.0}, "no CFG"),
])
def test_images_equal_diffusers_sdxl_pipeline(xl_model, xl_reference, kwargs, what):
    """Tolerance: bitwise-equal uint8 images and latents equal to 1e-6 (same ops, same order, CPU).
    The pipeline's default guidance is 5.0 on SDXL, ``sample``'s 7.5 everywhere: both are given."""
    kwargs = {"guidance_scale": 7.5, **kwargs}
    ref = xl_reference(PROMPTS, num_inference_steps=3, generator=torch.Generator("cpu").manual_seed(11),
                       output_type="latent", **kwargs).images
    ref_images = xl_reference(PROMPTS, num_inference_steps=3, generator=torch.Generator("cpu").manual_seed(11),
                              output_type="pil", **kwargs).images
    ours = circuits.sample(xl_model, PROMPTS, seed=11, steps=3, progress=False, **kwargs)
    torch.testing.assert_close(ours.latents, ref, rtol=0, atol=1e-6)
    assert np.array_equal(_uint8(ours.images), _uint8(ref_images)), what
    assert not np.array_equal(np.asarray(ours.images[0]), np.asarray(ours.images[1]))  # the prompts matter


def test_absent_and_empty_negative_prompts_differ(xl_model):
    """None is a zero unconditional context (as diffusers); "" encodes the empty prompt."""
    zero = circuits.sample(xl_model, PROMPTS[:1], seed=1, steps=2, progress=False)
    empty = circuits.sample(xl_model, PROMPTS[:1], seed=1, steps=2, negative_prompt="", progress=False)
    assert not torch.equal(zero.latents, empty.latents)


def test_sites_of_both_text_encoders(xl_model):
    sites = xl_model.sites
    assert len(sites.text_layers()) == 2 and len(sites.text_layers("text_encoder_2")) == 3
    assert sites.text_residual("text_encoder_2")[-1].endswith("layers.2.resid_post")
    # CLIPTextModelWithProjection keeps transformers' text_model level; both spellings name the same module
    short, long = "text_encoder_2.encoder.layers.1", "text_encoder_2.text_model.encoder.layers.1"
    assert sites.resolve(short) == sites.resolve(long) == [long]
    assert sites.info(short).role == "text"
    assert xl_model.parameter("text_encoder_2.encoder.layers.0.mlp.fc1.weight").shape == (37, 48)
    with pytest.raises(SiteError, match="text_encoder_2"):
        sites.text_layers("text_encoder_3")
    with pytest.raises(SiteError, match="text_encoder_2"):
        sites.resolve("encoder_2.layers.1")


def test_context_is_both_penultimate_layers(xl_model):
    """Only the penultimate layers reach the context; the last layer of the second encoder reaches the pooled
    embedding, the last layer of the first reaches nothing. Edits of a layer are seen downstream."""
    with torch.no_grad():
        base = encode_text(xl_model, PROMPTS, "cond")
        assert base.embeds.shape == (2, 77, 80) and base.pooled.shape == (2, 48)
        assert torch.equal(encode_prompts(xl_model, PROMPTS, "cond"), base.embeds)

        def edited(site: str):
            with circuits.intervene(xl_model, [circuits.Ablate(site)]):
                return encode_text(xl_model, PROMPTS, "cond")

        penultimate_2 = edited("text_encoder_2.encoder.layers.1")
        assert torch.equal(penultimate_2.embeds[..., :32], base.embeds[..., :32])
        assert torch.count_nonzero(penultimate_2.embeds[..., 32:]) == 0  # the ablated value itself
        assert not torch.equal(penultimate_2.pooled, base.pooled)
        last_2 = edited("text_encoder_2.encoder.layers.2")
        assert torch.equal(last_2.embeds, base.embeds) and not torch.equal(last_2.pooled, base.pooled)
        last_1 = edited("text_encoder.encoder.layers.1")
        assert torch.equal(last_1.embeds, base.embeds) and torch.equal(last_1.pooled, base.pooled)
        penultimate_1 = edited("text_encoder.encoder.layers.0.resid_post")
        assert torch.count_nonzero(penultimate_1.embeds[..., :32]) == 0


def test_text_contexts_and_captures_on_both_encoders(xl_model):
    graph = [circuits.Capture("text_encoder_2.encoder.layers.0", name="t2"), circuits.Capture("text_encoder.encoder.layers.0", name="t1")]
    zero = circuits.sample(xl_model, PROMPTS, seed=0, steps=1, graph=graph, progress=False)
    assert [c.branch for c in zero.captures.records["t2"].calls] == ["cond"]  # no uncond encoder call
    assert zero.captures["t2"].shape[-1] == 48 and zero.captures["t1"].shape[-1] == 32
    both = circuits.sample(xl_model, PROMPTS, seed=0, steps=1, graph=graph, negative_prompt="", progress=False)
    assert [c.branch for c in both.captures.records["t2"].calls] == ["cond", "uncond"]
    assert all(c.phase == "text" for c in both.captures.records["t1"].calls)


def test_token_scoped_interventions_reach_the_2048_wide_context(xl_model):
    graph = [circuits.ZeroTokens("unet.*attn2", tokens="eot")]
    plain = circuits.sample(xl_model, PROMPTS, seed=4, steps=2, progress=False)
    zeroed = circuits.sample(xl_model, PROMPTS, seed=4, steps=2, graph=graph, progress=False)
    again = circuits.sample(xl_model, PROMPTS, seed=4, steps=2, graph=graph, progress=False)
    assert not torch.equal(plain.latents, zeroed.latents)
    assert torch.equal(zeroed.latents, again.latents)
    # the same selection on the second encoder's residual stream, at the first tokenizer's positions
    text = [circuits.Ablate("text_encoder_2.encoder.layers.1", tokens="artstation")]
    edited = circuits.sample(xl_model, PROMPTS, seed=4, steps=2, graph=text, progress=False)
    assert not torch.equal(plain.latents[0], edited.latents[0]) and torch.equal(plain.latents[1], edited.latents[1])


def test_guidance_strategies_on_sdxl(xl_model):
    cfg = circuits.sample(xl_model, PROMPTS, seed=2, steps=3, guidance=CFG(7.5), progress=False)
    never = circuits.sample(xl_model, PROMPTS, seed=2, steps=3, guidance=ReversedCFG(7.5, t_prime=-1), progress=False)
    always = circuits.sample(xl_model, PROMPTS, seed=2, steps=3, guidance=ReversedCFG(7.5, t_prime=2000), progress=False)
    assert torch.equal(cfg.latents, never.latents)
    assert not torch.equal(cfg.latents, always.latents)


def test_exclamation_marks_warn_that_the_encoders_disagree(xl_model):
    with pytest.warns(TokenMismatchWarning, match="'!'"):
        encode_text(xl_model, ["a circle!!"], "cond")


def test_an_sdxl_index_without_its_second_encoder_is_named(xl_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(xl_dir, broken)
    index = json.loads((broken / "model_index.json").read_text())
    del index["text_encoder_2"]
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="text_encoder_2"):
        circuits.load(broken)


def test_an_sdxl_pipeline_object_loads_in_place(xl_reference):
    from circuits.models.diffusion import Diffusion

    model = circuits.load(xl_reference)
    assert model.is_sdxl and model.text_encoder_2 is xl_reference.text_encoder_2
    assert model.sites.resolve("text_encoder_2.encoder.layers.0.resid_post")
    with pytest.raises(ModelLoadError, match="tokenizer_2 and text_encoder_2 together"):
        Diffusion(tokenizer=model.tokenizer, text_encoder=model.text_encoder, unet=model.unet, vae=model.vae,
                  scheduler=model.scheduler, text_encoder_2=model.text_encoder_2)
