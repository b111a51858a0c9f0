"""SD1.5, SD2.1 and SDXL at full size: built, saved, loaded through ``circuits.load(folder)``, sampled, erased.

Skipped unless ``CIRCUITS_FULLSIZE`` names the family (see ``conftest.py``); the command::

    CIRCUITS_FULLSIZE=sd15,sd21 nice python -m pytest -q -p no:cacheprovider tests/fullsize/test_fullsize_slow.py

Memory: about 5 GB for SD1.5 / SD2.1, 16 GB for SDXL (float32). Images are 64 px, 1-2 steps: the
point is the shapes (77-token real tokenizers, 768 / 1024 / 2048-wide contexts), not the pictures.
Parity here compares ``circuits.sample`` with the diffusers pipeline built on the *same* modules
(``model.pipeline()``), so one copy of the weights is enough; the tiny tests compare with a pipeline
loaded separately.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import circuits
from circuits.concept import Concept
from circuits.methods import acterase, trce, uce
from circuits.models.fullsize import build_sd_pipeline

FAMILIES = ["sd15", "sd21", "sdxl"]
WIDTH = {"sd15": 768, "sd21": 1024, "sdxl": 2048}
CONCEPT = Concept("cat", anchor="dog", templates=("a photo of a {}",), preservation=("a red circle",))
PROMPTS = ["a photo of a cat, trending on artstation", "portrait of a woman, (masterpiece:1.2), by greg rutkowski"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def full_model(family, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"full_{family}")
    build_sd_pipeline(family, folder)
    return circuits.load(folder)


@pytest.mark.slow
@pytest.mark.fullsize
def test_full_size_loads_samples_and_erases(family, full_model):
    model = full_model
    assert model.family == {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl"}[family]
    assert model.unet.config.cross_attention_dim == WIDTH[family]
    assert len(model.tokenizer) == 49408 and model.tokenizer.model_max_length == 77
    embeds = circuits.sampling.encode_prompts(model, PROMPTS, "cond")
    assert embeds.shape == (2, 77, WIDTH[family])

    pipe = model.pipeline()
    pipe.set_progress_bar_config(disable=True)
    extra = {"negative_prompt": None} if model.is_sdxl else {}
    ref = pipe(PROMPTS, height=64, width=64, num_inference_steps=2, guidance_scale=7.5,
               generator=torch.Generator().manual_seed(0), output_type="pil", **extra).images
    ours = circuits.sample(model, PROMPTS, seed=0, steps=2, height=64, width=64, progress=False)
    for a, b in zip(ours.images, ref):
        assert np.array_equal(np.asarray(a), np.asarray(b))

    # ActErase's masks and mean activations are per spatial position: its patch applies at the size it was
    # collected at (the model's default, 512-1024 px), the closed forms at any size
    for erasure, size in (
        (uce.fit(model, CONCEPT), 64),
        (trce.fit(model, CONCEPT, stages=("text",), progress=False), 64),
        (acterase.fit(model, CONCEPT, steps=1), None),
    ):
        erased = circuits.sample(model, PROMPTS[:1], seed=0, steps=1, height=size, width=size, graph=erasure,
                                 progress=False)
        plain = circuits.sample(model, PROMPTS[:1], seed=0, steps=1, height=size, width=size, progress=False)
        assert not torch.equal(erased.latents, plain.latents)
