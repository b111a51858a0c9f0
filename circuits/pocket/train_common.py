"""Shared pieces of pocket training: model configurations, factories, the world adapter, and the
small utilities every phase uses (atomic checkpoints, learning-rate schedule, progress lines).

Every phase module (:mod:`train_vae`, :mod:`train_clip`, :mod:`train_unet`) imports from here and
from nowhere else in the training package, so the phases stay independent and each can be read
alone. :mod:`circuits.pocket.train` is the command line that runs them in order.

The world adapter (:func:`world_items`, :func:`render_items`, :func:`draw_caption`,
:func:`scene_key`) is the only place training touches :mod:`circuits.pocket.world`: a richer
world changes these four functions, not the phases.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, UInt8

from . import tokenizer as pocket_tokenizer
from . import world

log = logging.getLogger("circuits.pocket.train")

# ----------------------------------------------------------------------------- model configs

#: training image side in pixels (32: measured choice, see MODEL_CARD.md)
IMAGE_SIZE = 32

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=IMAGE_SIZE,
)

#: latents are image / 4 (two stride-2 stages of the VAE): 32x32 images -> 8x8 latents
LATENT_SIZE = IMAGE_SIZE // 4

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=LATENT_SIZE,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=128,
    attention_head_dim=4,  # diffusers' legacy name: the number of heads
)

TEXT_CONFIG: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    projection_dim=128,
)

SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
)


def make_vae(scaling_factor: float = 1.0):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def make_text_encoder(tok):
    """A causal ``CLIPTextModel`` in SD1.x layout for ``tok``.

    ``eos_token_id`` is the tokenizer's real [EoT] id, so ``pooler_output`` is the *first* [EoT]
    (with the config default 2, transformers would take the argmax id instead), and
    ``max_position_embeddings`` is the tokenizer's ``model_max_length`` (one position per token).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_position_embeddings=tok.model_max_length,
        **TEXT_CONFIG,
    )
    return CLIPTextModel(cfg)


def make_ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def load_tokenizer(out: Path):
    return pocket_tokenizer.load(out / "tokenizer")


def tokenize(tok, captions: list[str]) -> torch.Tensor:
    """Ids padded with [EoT] to ``model_max_length``, as SD1.x's pipeline does."""
    return tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids  # fmt: skip


# ----------------------------------------------------------------------------- world adapter


def world_items(args: Any, n: int | None = None, seed: int | None = None) -> list[tuple[Any, int]]:
    """(scene, render seed) pairs of training scenes, deterministic in the seed.

    ``args.world_sampler`` picks the sampler: ``v2`` draws :func:`world.training_examples` (one or two
    objects with probability ``args.two_object_p``, implicit-noun objects with ``args.implicit_p``);
    ``v1`` draws v1's one-object :func:`world.dataset` (the one-object arm of the ablation).
    ``n`` and ``seed`` default to ``args.n_train`` and ``args.seed``.
    """
    n = args.n_train if n is None else n
    seed = args.seed if seed is None else seed
    if args.world_sampler == "v1":
        return world.dataset(n, seed=seed)
    if args.world_sampler == "v2":
        examples = world.training_examples(n, seed, two_object_p=args.two_object_p, implicit_p=args.implicit_p)
        return [(ex.scene, ex.seed) for ex in examples]
    raise ValueError(f"world_sampler {args.world_sampler!r}: expected 'v1' or 'v2'")


def render_items(items: list[tuple[Any, int]]) -> UInt8[np.ndarray, "n h w 3"]:
    return world.render_batch(items, size=IMAGE_SIZE)


def draw_caption(scene: Any, rng: random.Random) -> str:
    """One caption of ``scene`` (templates, synonyms, implicit nouns, word order vary with ``rng``)."""
    return world.caption(scene, rng)


def scene_key(scene: Any) -> Any:
    """What makes two training items the *same* picture for the contrastive targets: the scene up to
    which object is named first (render seeds only jitter positions, sizes and shades)."""
    swapped = scene.swapped() if hasattr(scene, "swapped") else scene
    return frozenset((scene, swapped))


# ----------------------------------------------------------------------------- utilities


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def resume_model(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, name: str, resume: bool) -> int:
    """Load ``{"model", "opt", "step"}`` from ``ckpt`` into ``model`` and ``opt`` when ``resume`` is set and the
    file exists; the step to continue from (0 for a fresh start)."""
    if not (resume and ckpt.exists()):
        return 0
    state = torch.load(ckpt, weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    log.info("%s: resumed at step %d", name, state["step"])
    return int(state["step"])


def atomic_write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5% of ``base`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def load_plan(out: Path) -> dict:
    p = out / "plan.json"
    return json.loads(p.read_text()) if p.exists() else {}


def fix_steps(name: str, steps: int, out: Path) -> int:
    """Record a phase's step count in ``plan.json``: a resumed run must use the same schedule."""
    plan = load_plan(out)
    if name in plan and plan[name] != steps:
        raise SystemExit(f"{out / 'plan.json'}: {name} was {plan[name]} when this run started, now {steps}; "
                         "resume with the same step counts or use a new --out")  # fmt: skip
    plan[name] = steps
    atomic_write_json(plan, out / "plan.json")
    return steps


def data_identity(args: Any) -> dict:
    """What decides which scenes the cached renders and latents hold, in their order."""
    return {"world_sampler": args.world_sampler, "seed": args.seed, "n_train": args.n_train,
            "two_object_p": args.two_object_p, "implicit_p": args.implicit_p}  # fmt: skip


def record_data(args: Any, out: Path) -> None:
    plan = load_plan(out)
    plan["data"] = data_identity(args)
    atomic_write_json(plan, out / "plan.json")


def check_data(args: Any, out: Path) -> None:
    """The clip and unet phases pair cached images/latents with scenes re-drawn from ``args``: refuse
    arguments that would draw other scenes than the ones rendered (captions would not match images)."""
    recorded = load_plan(out).get("data")
    if recorded is None:
        return
    now = data_identity(args)
    diff = {k: (recorded.get(k), v) for k, v in now.items() if recorded.get(k) != v}
    if diff:
        said = ", ".join(f"{k}: rendered with {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise SystemExit(f"{out / 'data.npz'} was rendered for other scenes ({said}); use the same data "
                         "arguments (--seed, --n-train, --world-sampler, --two-object-p, --implicit-p) or a new --out")


def to_tensor(images: UInt8[np.ndarray, "n h w 3"]) -> Float[torch.Tensor, "n 3 h w"]:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class Progress:
    """Rate, ETA and the mean of the logged values since the last line, every ``every`` steps."""

    def __init__(self, tag: str, total: int, start: int, every: int) -> None:
        self.tag, self.total, self.start, self.every = tag, total, start, every
        self.t0 = time.perf_counter()
        self.vals: dict[str, list[float]] = {}

    def __call__(self, step: int, **vals: float) -> None:
        for k, v in vals.items():
            self.vals.setdefault(k, []).append(float(v))
        if step % self.every and step != self.total:
            return
        el = time.perf_counter() - self.t0
        rate = (step - self.start) / max(el, 1e-9)
        eta = (self.total - step) / max(rate, 1e-9)
        extra = " ".join(f"{k}={np.mean(v):.4g}" for k, v in self.vals.items())
        log.info("%s step %d/%d (%.1f%%) %.3f s/step eta %.1f min %s", self.tag, step, self.total,
                 100 * step / self.total, 1 / max(rate, 1e-9), eta / 60, extra)  # fmt: skip
        self.vals = {}


class Checkpointer:
    """Decides when a phase writes its checkpoint: every ``minutes`` of wall time, and at
    ``stop_after`` (a deliberate interruption, used by tests and to split a run across sessions)."""

    def __init__(self, minutes: float, stop_after: int | None) -> None:
        self.minutes, self.stop_after = minutes, stop_after
        self.last = time.perf_counter()

    def due(self, step: int) -> bool:
        if self.stop_after is not None and step >= self.stop_after:
            return True
        if time.perf_counter() - self.last > self.minutes * 60:
            self.last = time.perf_counter()
            return True
        return False

    def stop(self, step: int) -> bool:
        return self.stop_after is not None and step >= self.stop_after
