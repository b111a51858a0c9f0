"""circuits.load: folders, pipeline objects, hub ids offline, the pocket model, bad sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import circuits
from circuits.errors import ModelLoadError


def test_load_folder_returns_real_components(tiny_dir):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    model = circuits.load(tiny_dir)
    assert isinstance(model.unet, UNet2DConditionModel) and isinstance(model.vae, AutoencoderKL)
    assert isinstance(model.text_encoder, CLIPTextModel) and isinstance(model.tokenizer, CLIPTokenizer)
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert "unet.eps" in model.sites() and model.default_size == 16


def test_load_pipeline_object_shares_components(tiny_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, local_files_only=True)
    model = circuits.load(pipe)
    assert model.unet is pipe.unet and model.text_encoder is pipe.text_encoder
    again = circuits.load(pipe)  # instrumenting twice is harmless
    assert len(again.sites()) == len(model.sites())


def test_dtype_argument(tiny_dir):
    model = circuits.load(tiny_dir, dtype=torch.float64)
    assert model.dtype == torch.float64


def test_hub_id_offline_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        circuits.load("runwayml/stable-diffusion-v1-5")
    message = str(info.value)
    assert "offline" in message and "save_pretrained" in message and "circuits.load('some/folder')" in message


def test_bad_sources(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        circuits.load("definitely not a model")
    with pytest.raises(ModelLoadError, match="model_index.json"):
        circuits.load(tmp_path)
    with pytest.raises(ModelLoadError, match="lacks"):
        circuits.load(object())


def test_pocket_loads_offline():
    from circuits.models.loading import POCKET_DIR

    if not (POCKET_DIR / "model_index.json").is_file():
        pytest.skip("the pocket model has not been built into circuits/pocket/pipeline yet")
    model = circuits.load("pocket")
    assert model.source == "pocket" and model.sites.cross_attention()


def test_readme_shows_the_diffusers_pipeline(model):
    assert "model.pipeline()" in (Path(__file__).parents[1] / "README.md").read_text()
    from diffusers import StableDiffusionPipeline

    pipe = model.pipeline()
    assert isinstance(pipe, StableDiffusionPipeline) and pipe.unet is model.unet
