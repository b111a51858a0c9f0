"""The shipped pocket pipeline loads offline with from_pretrained and follows colour and shape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PIPE = Path(
    os.environ.get("POCKET_PIPELINE", Path(__file__).resolve().parents[2] / "circuits" / "pocket" / "pipeline")
)

pytestmark = pytest.mark.skipif(
    not (PIPE / "model_index.json").exists(),
    reason="circuits/pocket/pipeline not exported yet (python -m circuits.pocket.train --phase export)",
)


@pytest.fixture(scope="module")
def pipe():
    from circuits.pocket.evaluate import load_pipeline

    torch.set_num_threads(1)
    return load_pipeline(PIPE)


def test_layout_and_contract(pipe):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    assert isinstance(pipe.scheduler, DDIMScheduler)
    DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    te = pipe.text_encoder.config
    assert te.max_position_embeddings == pipe.tokenizer.model_max_length
    assert te.eos_token_id == pipe.tokenizer.eos_token_id
    assert te.bos_token_id == pipe.tokenizer.bos_token_id
    assert pipe.unet.config.sample_size * (2 ** (len(pipe.vae.config.block_out_channels) - 1)) == 32
    names = dict(pipe.unet.named_modules())
    attn2 = [n for n in names if n.endswith("attn2")]
    assert any(n.startswith("down_blocks.0") for n in attn2) and any(n.startswith("down_blocks.1") for n in attn2)
    assert any(n.endswith("ff.net.2") for n in names)
    te_names = dict(pipe.text_encoder.named_modules())
    # transformers 5 flattens CLIPTextModel (``encoder.layers.N``); 4.x nests it under ``text_model``
    assert "encoder.layers.3" in te_names or "text_model.encoder.layers.3" in te_names
    pkg = Path(__file__).resolve().parents[2] / "circuits" / "pocket"
    files = [f for f in pkg.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    if PIPE.resolve().is_relative_to(pkg):
        assert sum(f.stat().st_size for f in files) <= 25e6  # all pocket files together


def test_follows_colour_and_shape(pipe):
    from circuits.pocket.evaluate import sample
    from circuits.pocket.oracle import Oracle
    from circuits.pocket.world import Scene, prompt

    wanted = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross"),
              ("purple", "circle"), ("orange", "square"), ("blue", "triangle"), ("red", "cross")]
    # the canonical prompt form ("a solid red circle on a white background"); prompts that leave
    # texture and background unnamed are followed less well (see MODEL_CARD.md)
    prompts = [prompt(Scene(s, c, "solid", "white")) for c, s in wanted]
    imgs = sample(pipe, prompts, list(range(len(prompts))), steps=25)
    read = Oracle.load().read(imgs)
    colour_ok = sum(r == c for r, (c, _) in zip(read["colour"], wanted))
    shape_ok = sum(r == s for r, (_, s) in zip(read["shape"], wanted))
    assert colour_ok >= 6, (prompts, read)
    assert shape_ok >= 6, (prompts, read)
