"""Random-weight pipelines with the exact configs of SD1.5, SD2.1 and SDXL, built offline.

No weights reach our machines, but the shapes users run do: :data:`FAMILIES` holds the published
configs of each checkpoint's components as plain data (the ``config.json`` values of the UNet, the
text encoder(s), the VAE and the scheduler), and :func:`build_sd_pipeline` builds them with random
weights, the real CLIP tokenizers (:mod:`circuits.models.sd_tokenizer`), and saves a diffusers
folder that ``circuits.load(folder)`` reads the way it reads a real checkpoint.

========  ==========================================================================================
``sd15``  UNet 860 M (cross-attention 768), CLIP ViT-L/14 text encoder (12 x 768, quick_gelu), VAE
          (128, 256, 512, 512), PNDM, 512 px; tokenizer pads with EoT
``sd21``  UNet 865 M (cross-attention 1024, linear projections, head size 64), OpenCLIP-H text encoder
          (23 of its 24 layers x 1024, gelu), v-prediction DDIM, 768 px; tokenizer pads with ``!``
``sdxl``  UNet 2.6 B (cross-attention 2048 = 768 + 1280, ``text_time`` added conditioning), CLIP-L
          + OpenCLIP-bigG with projection (32 x 1280, pooled embedding), Euler, 1024 px
========  ==========================================================================================

``tiny=True`` keeps every structural choice (block types, number of levels, linear projections,
two encoders, added text-time conditioning, v-prediction, the 77-token real tokenizers) and shrinks
widths and repeats (one layer per block, two text layers), so tests exercise SDXL's code paths in
seconds.
"""

from __future__ import annotations

import os
import tempfile
from copy import deepcopy
from pathlib import Path
from typing import Any, Literal

import torch

from circuits.errors import SettingError
from circuits.models.sd_tokenizer import MAX_LENGTH, VOCAB_SIZE, write_sd_tokenizer
from circuits.models.tiny import TINY_SPLITS, TINY_WORDS
from circuits.models.tiny_tokenizer import EOT, write_clip_tokenizer

Family = Literal["sd15", "sd21", "sdxl"]

_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "act_fn": "silu",
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}  # fmt: skip
_CLIP_L = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "hidden_act": "quick_gelu", "projection_dim": 768,
}  # fmt: skip

#: the published configs (``config.json`` values) of each checkpoint's components
FAMILIES: dict[str, dict[str, Any]] = {
    "sd15": {
        "pipeline": "StableDiffusionPipeline",
        "pad_tokens": (EOT,),
        "unet": {
            "sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8, "layers_per_block": 2,
            "block_out_channels": [320, 640, 1280, 1280],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        },
        "text_encoders": [("CLIPTextModel", _CLIP_L)],
        "vae": {**_VAE, "sample_size": 512, "scaling_factor": 0.18215},
        "scheduler": ("PNDMScheduler", {
            **_BETAS, "skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1,
        }),
    },
    "sd21": {
        "pipeline": "StableDiffusionPipeline",
        "pad_tokens": ("!",),
        "unet": {
            "sample_size": 96, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": True, "upcast_attention": True, "layers_per_block": 2,
            "block_out_channels": [320, 640, 1280, 1280],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        },
        "text_encoders": [("CLIPTextModel", {
            "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
            "hidden_act": "gelu", "projection_dim": 512,
        })],
        "vae": {**_VAE, "sample_size": 768, "scaling_factor": 0.18215},
        "scheduler": ("DDIMScheduler", {
            **_BETAS, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
            "prediction_type": "v_prediction",
        }),
    },
    "sdxl": {
        "pipeline": "StableDiffusionXLPipeline",
        "pad_tokens": (EOT, "!"),
        "unet": {
            "sample_size": 128, "cross_attention_dim": 2048, "attention_head_dim": [5, 10, 20],
            "use_linear_projection": True, "layers_per_block": 2, "transformer_layers_per_block": [1, 2, 10],
            "block_out_channels": [320, 640, 1280],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + the pooled 1280
        },
        "text_encoders": [
            ("CLIPTextModel", _CLIP_L),
            ("CLIPTextModelWithProjection", {
                "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
                "hidden_act": "gelu", "projection_dim": 1280,
            }),
        ],
        "vae": {**_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        "scheduler": ("EulerDiscreteScheduler", {
            **_BETAS, "steps_offset": 1, "timestep_spacing": "leading", "interpolation_type": "linear",
            "use_karras_sigmas": False, "prediction_type": "epsilon",
        }),
    },
}  # fmt: skip

#: what ``tiny=True`` changes: widths and repeats only (64 px images: latents 8 x 8)
_TINY_TEXT = {"intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
_TINY: dict[str, dict[str, Any]] = {
    "sd15": {
        "unet": {"sample_size": 8, "cross_attention_dim": 32, "attention_head_dim": 4, "layers_per_block": 1,
                 "block_out_channels": [32, 32, 64, 64], "norm_num_groups": 8},
        "text_encoders": [{**_TINY_TEXT, "hidden_size": 32, "projection_dim": 32}],
    },
    "sd21": {
        "unet": {"sample_size": 8, "cross_attention_dim": 48, "attention_head_dim": [2, 2, 4, 4],
                 "layers_per_block": 1, "block_out_channels": [32, 32, 64, 64], "norm_num_groups": 8},
        "text_encoders": [{**_TINY_TEXT, "hidden_size": 48, "projection_dim": 16}],
    },
    "sdxl": {
        "unet": {"sample_size": 8, "cross_attention_dim": 80, "attention_head_dim": [2, 4, 4], "layers_per_block": 1,
                 "transformer_layers_per_block": [1, 1, 2], "block_out_channels": [32, 32, 64],
                 "norm_num_groups": 8, "addition_time_embed_dim": 8,
                 "projection_class_embeddings_input_dim": 6 * 8 + 48},
        "text_encoders": [{**_TINY_TEXT, "hidden_size": 32, "projection_dim": 32},
                          {**_TINY_TEXT, "hidden_size": 48, "projection_dim": 48, "num_hidden_layers": 3}],
    },
    "vae": {"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64},
}  # fmt: skip


def family_config(family: str, *, tiny: bool = False) -> dict[str, Any]:
    """The component configs of ``family`` (a deep copy: callers may edit it), shrunk with ``tiny``."""
    if family not in FAMILIES:
        raise SettingError(f"family={family!r}: use one of {sorted(FAMILIES)}")
    spec = deepcopy(FAMILIES[family])
    if tiny:
        small = _TINY[family]
        spec["unet"].update(small["unet"])
        spec["text_encoders"] = [
            (cls, {**cfg, **over}) for (cls, cfg), over in zip(spec["text_encoders"], small["text_encoders"])
        ]
        spec["vae"].update(_TINY["vae"])
    return spec


def build_sd_pipeline(
    family: Family,
    folder: str | os.PathLike[str] | None = None,
    *,
    tiny: bool = False,
    seed: int = 0,
    tokenizer: Literal["clip", "words"] = "clip",
):
    """Build (and, with ``folder``, save) a random-weight pipeline in the exact shapes of ``family``.

    Args:
        family: ``"sd15"``, ``"sd21"`` or ``"sdxl"``.
        folder: where to ``save_pretrained`` it (a folder ``circuits.load`` takes).
        tiny: keep the structure, shrink widths and repeats (see the module docstring).
        seed: seeds the random weights (the global RNG is restored afterwards).
        tokenizer: ``"clip"``, the real 49,408-token BPE (needs the cached wheel, see
            :mod:`circuits.models.sd_tokenizer`); ``"words"``, the tiny word-list tokenizer of the
            tiny test pipelines at 77 positions (no wheel needed).

    Full size needs memory: about 5 GB for ``sd15`` / ``sd21`` and 14 GB for ``sdxl`` in float32.
    """
    import diffusers
    import transformers

    if tokenizer not in ("clip", "words"):
        raise SettingError(f"tokenizer={tokenizer!r}: use 'clip' (SD's real BPE) or 'words' (tiny word list)")
    spec = family_config(family, tiny=tiny)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizers = [
            transformers.CLIPTokenizer.from_pretrained(_write_tokenizer(Path(tmp) / f"tok{i}", pad, tokenizer))
            for i, pad in enumerate(spec["pad_tokens"])
        ]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        encoders = [
            getattr(transformers, cls)(transformers.CLIPTextConfig(**_text_config(cfg, tok)))
            for (cls, cfg), tok in zip(spec["text_encoders"], tokenizers)
        ]
        unet = diffusers.UNet2DConditionModel(**spec["unet"])
        vae = diffusers.AutoencoderKL(**spec["vae"])
    finally:
        torch.random.set_rng_state(state)
    scheduler_class, scheduler_config = spec["scheduler"]
    scheduler = getattr(diffusers, scheduler_class)(**scheduler_config)
    for component in (*encoders, unet, vae):
        component.eval()
    if spec["pipeline"] == "StableDiffusionXLPipeline":
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=tokenizers[0],
            tokenizer_2=tokenizers[1], unet=unet, scheduler=scheduler, add_watermarker=False,
        )  # fmt: skip
    else:
        pipe = diffusers.StableDiffusionPipeline(
            vae=vae, text_encoder=encoders[0], tokenizer=tokenizers[0], unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    if folder is not None:
        pipe.save_pretrained(folder, safe_serialization=True)
        # transformers 5 saves only tokenizer.json; SD checkpoints also carry vocab.json + merges.txt
        for name, pad in zip(("tokenizer", "tokenizer_2"), spec["pad_tokens"]):
            _write_tokenizer(Path(folder) / name, pad, tokenizer)
    return pipe


def _write_tokenizer(folder: Path, pad_token: str, kind: str) -> Path:
    if kind == "clip":
        return write_sd_tokenizer(folder, pad_token=pad_token)
    return write_clip_tokenizer(folder, TINY_WORDS, split=TINY_SPLITS, pad_token=pad_token, model_max_length=MAX_LENGTH)


def _text_config(config: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """A CLIP text config for ``tokenizer``: 77 positions, its vocabulary and special ids.

    ``eos_token_id`` is the real EoT id, so the pooled output is read at the first EoT (the
    published SD configs carry the legacy id 2, which makes transformers take the argmax id: the
    same position for these tokenizers, whose EoT is the largest id).
    """
    vocab = len(tokenizer)
    if tokenizer.eos_token_id == VOCAB_SIZE - 1 and vocab != VOCAB_SIZE:
        raise SettingError(f"the CLIP tokenizer has {vocab} tokens, expected {VOCAB_SIZE}")
    return {
        **config,
        "vocab_size": vocab,
        "max_position_embeddings": MAX_LENGTH,
        "layer_norm_eps": 1e-5,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
