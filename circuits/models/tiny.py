"""A tiny, randomly initialised but genuine ``StableDiffusionPipeline``.

Real diffusers/transformers classes at toy sizes (UNet with cross-attention at two resolutions,
a 2-layer CLIP text encoder, a small VAE, SD's DDIM schedule), for tests and examples that must
run offline in seconds. Weights are random: it follows no prompt. For a trained model use
``circuits.load("pocket")``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from circuits.models.tiny_tokenizer import EOT, write_clip_tokenizer

TINY_WORDS = (
    "a", "an", "the", "photo", "of", "on", "in", "with", "and", "background", "picture", "painting",
    "red", "green", "blue", "yellow", "orange", "purple", "white", "black", "crimson", "azure",
    "circle", "square", "triangle", "cross", "cat", "dog", "striped", "dotted", "solid", "outlined",
)
TINY_SPLITS = {"unicorn": "uni", "starfish": "star"}


def build_tiny_pipeline(
    folder: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    pad_token: str = EOT,
    words: Iterable[str] = TINY_WORDS,
    model_max_length: int = 16,
):
    """Build (and, with ``folder``, save with ``save_pretrained``) a tiny random SD pipeline.

    Images are 16x16 (latents 4x8x8). ``pad_token="!"`` gives an SD2.x-style tokenizer.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = write_clip_tokenizer(
            Path(tmp) / "tokenizer", words, split=TINY_SPLITS, pad_token=pad_token, model_max_length=model_max_length
        )
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                projection_dim=32,
            )
        ).eval()
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=2,
            norm_num_groups=8,
        ).eval()
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=8,
            sample_size=16,
        ).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if folder is not None:
        pipe.save_pretrained(folder, safe_serialization=True)
        # transformers 5 saves only tokenizer.json; CLIP checkpoints also carry vocab.json + merges.txt
        write_clip_tokenizer(
            Path(folder) / "tokenizer", words, split=TINY_SPLITS, pad_token=pad_token, model_max_length=model_max_length
        )
    return pipe
