"""The pocket model: a tiny, real Stable Diffusion pipeline trained on a procedurally rendered world.

* :mod:`circuits.pocket.world` - the renderer, held-out split and training sampler (numpy/PIL only);
  :mod:`~circuits.pocket.scene` (vocabulary, ``Scene``, implicit nouns, relations) and
  :mod:`~circuits.pocket.captions` (captions, canonical prompts, the prompt parser) behind it.
* :mod:`circuits.pocket.tokenizer` - BPE trained with ``tokenizers``, saved in CLIP's layout.
* :mod:`circuits.pocket.oracle` - reads each object's colour / shape / texture / position and the
  background from images (fitted by :mod:`~circuits.pocket.oracle_fit`).
* :mod:`circuits.pocket.following` - how an image follows its prompt: named and implied attributes,
  colour-shape binding, the spatial word.
* :mod:`circuits.pocket.train` - reproducible training script (VAE, contrastive text encoder, then the UNet
  on the frozen encoder, as in SD).
* :mod:`circuits.pocket.evaluate` - prompt following on held-out prompts, synonym gap, speed, grid.
* :mod:`circuits.pocket.concepts` - ``concept("red")``: erasure concepts with templates and preservation prompts.

The shipped pipeline lives in :data:`PIPELINE_DIR` and loads with
``StableDiffusionPipeline.from_pretrained(PIPELINE_DIR, dtype=torch.float32,
local_files_only=True)``; sample with ``height=32, width=32``. See ``MODEL_CARD.md``.
Importing this package is cheap (no torch/diffusers import).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PIPELINE_DIR = PACKAGE_DIR / "pipeline"
ORACLE_PATH = PACKAGE_DIR / "oracle.npz"
IMAGE_SIZE = 32

__all__ = ["PACKAGE_DIR", "PIPELINE_DIR", "ORACLE_PATH", "IMAGE_SIZE", "concept", "evaluation_sets"]


def __getattr__(name: str):
    # concepts import circuits.concept (torch, via the tokenizer helpers); keep ``import circuits.pocket`` cheap
    if name in ("concept", "evaluation_sets"):
        from circuits.pocket import concepts

        return getattr(concepts, name)
    raise AttributeError(f"module 'circuits.pocket' has no attribute {name!r}")
