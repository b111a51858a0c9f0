"""CLIP score: 100 x the cosine of a generated image's and its prompt's CLIP embeddings (floored at 0).

As torchmetrics' ``CLIPScore`` and the erasure papers' COCO tables compute it (usually with
``openai/clip-vit-large-patch14``): image and text embeddings from a local transformers ``CLIPModel``
folder, the prompt as sampled (after any truncation to the diffusion model's tokenizer), cut again to
CLIP's own 77 tokens. The mean over images is the headline; the result records the folder's weight
hash and the image size CLIP's processor resizes to.

:func:`build_tiny_clip` writes a small random ``CLIPModel`` folder, so tests and the pocket
experiment run the whole path offline (its scores mean nothing).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from circuits.evaluation.measures.common import load_images, package_version, records, require, weights_sha256

_HOW = ("give the folder of a transformers CLIPModel, e.g. `huggingface-cli download openai/clip-vit-large-patch14 "
        "--local-dir clip-l14` on a machine with the hub, then copy it here")  # fmt: skip


def _image_processor(folder: Path) -> Any:
    import transformers

    # the default CLIPImageProcessor wants torchvision; the PIL one gives the same pixels without it
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls.from_pretrained(folder, local_files_only=True)


def clip_score(folder: str | os.PathLike[str], *, clip: str | os.PathLike[str] | None, batch_size: int = 32,
               device: str = "cpu") -> dict[str, Any]:  # fmt: skip
    """Mean and per-image CLIP score of a generation folder against each image's prompt."""
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    path = require(clip, "CLIP model folder (--clip)", _HOW)
    model = CLIPModel.from_pretrained(path, local_files_only=True).eval().to(device)
    tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
    processor = _image_processor(path)
    rows = records(folder)
    scores: list[float] = []
    cosines: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        pixels = processor(images=load_images(chunk), return_tensors="pt")["pixel_values"].to(device)
        text = tokenizer([r["prompt"] for r in chunk], padding=True, truncation=True, return_tensors="pt").to(device)
        with torch.no_grad():
            image_embeds = model.get_image_features(pixel_values=pixels)
            text_embeds = model.get_text_features(**text)
        image_embeds = _tensor(image_embeds)
        text_embeds = _tensor(text_embeds)
        cosine = torch.nn.functional.cosine_similarity(image_embeds, text_embeds, dim=-1)
        cosines.extend(cosine.tolist())
        scores.extend((100 * cosine.clamp(min=0)).tolist())
    return {
        "values": {"clip_score": sum(scores) / len(scores)},
        "images": len(rows),
        "per_image": {row["file"]: {"clip_score": s, "cosine": c} for row, s, c in zip(rows, scores, cosines)},
        "provenance": {"package": "transformers", "version": package_version("transformers"), "weights": str(path),
                       "weights_sha256": weights_sha256(path), "formula": "100 * max(cos(image, text), 0)",
                       "name_or_path": model.config.name_or_path, "text_max_length": tokenizer.model_max_length},
    }  # fmt: skip


def _tensor(output: Any) -> Any:
    # transformers 5 may return a model output with pooler_output instead of a bare tensor
    return output if hasattr(output, "norm") else output.pooler_output


def build_tiny_clip(folder: str | os.PathLike[str], *, words: Iterable[str] | None = None, image_size: int = 32,
                    seed: int = 0) -> Path:  # fmt: skip
    """Save a small random ``CLIPModel`` with its tokenizer and image processor to ``folder``."""
    import tempfile

    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from circuits.models.tiny import TINY_WORDS
    from circuits.models.tiny_tokenizer import write_clip_tokenizer

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = write_clip_tokenizer(Path(tmp) / "tok", list(words or TINY_WORDS), model_max_length=77)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": image_size, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIPModel(config).eval()
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor = cls(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor.save_pretrained(folder)
    return folder
