"""The configs are the published ones: parameter counts of SD1.5, SD2.1 and SDXL, built on the meta device.

Building on ``torch.device("meta")`` allocates nothing, so the full-size shapes are checked in
seconds against the counts every model card states; ``tiny=True`` keeps the structure.
"""

from __future__ import annotations

import json

import pytest
import torch

import circuits
from circuits.errors import SettingError
from circuits.models.fullsize import FAMILIES, build_sd_pipeline, family_config

#: published parameter counts: UNet, VAE, text encoder(s)
COUNTS = {
    "sd15": (859_520_964, 83_653_863, [123_060_480]),  # CLIP ViT-L/14 text tower
    "sd21": (865_910_724, 83_653_863, [340_387_840]),  # OpenCLIP ViT-H/14, 23 of 24 layers
    "sdxl": (2_567_463_684, 83_653_863, [123_060_480, 694_659_840]),  # + OpenCLIP bigG/14 with projection
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta_components(family: str, tiny: bool = False):
    import diffusers
    import transformers

    spec = family_config(family, tiny=tiny)
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**spec["unet"])
        vae = diffusers.AutoencoderKL(**spec["vae"])
        encoders = [
            getattr(transformers, cls)(transformers.CLIPTextConfig(**cfg, vocab_size=49408, max_position_embeddings=77))
            for cls, cfg in spec["text_encoders"]
        ]
    return unet, vae, encoders


@pytest.mark.parametrize("family", sorted(COUNTS))
def test_full_size_parameter_counts_are_the_published_ones(family):
    unet, vae, encoders = _meta_components(family)
    assert (_count(unet), _count(vae), [_count(e) for e in encoders]) == COUNTS[family]


def test_sdxl_added_conditioning_fits_its_second_encoder():
    for tiny in (False, True):
        spec = family_config("sdxl", tiny=tiny)
        unet, second = spec["unet"], spec["text_encoders"][1][1]
        assert unet["projection_class_embeddings_input_dim"] == 6 * unet["addition_time_embed_dim"] + second["projection_dim"]
        assert unet["cross_attention_dim"] == sum(cfg["hidden_size"] for _, cfg in spec["text_encoders"])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_keeps_the_structure(family):
    full, tiny = family_config(family), family_config(family, tiny=True)
    for key in ("down_block_types", "up_block_types", "use_linear_projection", "addition_embed_type", "upcast_attention"):
        assert full["unet"].get(key) == tiny["unet"].get(key), key
    assert len(full["unet"]["block_out_channels"]) == len(tiny["unet"]["block_out_channels"])
    assert [c for c, _ in full["text_encoders"]] == [c for c, _ in tiny["text_encoders"]]
    assert [cfg["hidden_act"] for _, cfg in full["text_encoders"]] == [cfg["hidden_act"] for _, cfg in tiny["text_encoders"]]
    assert full["scheduler"] == tiny["scheduler"] and full["pad_tokens"] == tiny["pad_tokens"]
    assert _count(_meta_components(family, tiny=True)[0]) < 3_000_000


def test_family_config_is_a_copy_and_unknown_families_are_named():
    family_config("sd15")["unet"]["sample_size"] = 1
    assert FAMILIES["sd15"]["unet"]["sample_size"] == 64
    with pytest.raises(SettingError, match="sd15"):
        family_config("sd3")


def test_sd21_folder_loads_as_an_sd2_model_and_matches_diffusers(sd21_dir):
    """v-prediction, '!' padding, linear projections: the SD1.x sampler path reproduces the pipeline."""
    from diffusers import StableDiffusionPipeline

    index = json.loads((sd21_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    model = circuits.load(sd21_dir)
    assert model.scheduler.config.prediction_type == "v_prediction"
    assert model.tokenizer.pad_token == "!" and len(model.tokenizer) == 49408
    assert model.default_size == 64 and not model.is_sdxl
    pipe = StableDiffusionPipeline.from_pretrained(sd21_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a photo of a cat, trending on artstation", "a red circle"]
    ref = pipe(prompts, num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="latent").images
    ours = circuits.sample(model, prompts, seed=3, steps=2, progress=False)
    torch.testing.assert_close(ours.latents, ref, rtol=0, atol=1e-6)


def test_word_tokenizer_needs_no_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CLIP_BPE", str(tmp_path / "absent.whl"))
    pipe = build_sd_pipeline("sdxl", tiny=True, tokenizer="words")
    assert pipe.tokenizer.model_max_length == 77 and pipe.tokenizer_2.pad_token == "!"
    with pytest.raises(SettingError, match="tokenizer"):
        build_sd_pipeline("sdxl", tiny=True, tokenizer="bpe")
