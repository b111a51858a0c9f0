"""Train pocket v2: a tiny, real ``StableDiffusionPipeline`` whose text encoder is trained as CLIP.

Usage: the shipped run is in ``MODEL_CARD.md`` (``runs/`` is git-ignored). In short, with v1's VAE
checked out (``git worktree add /tmp/pocket-v1 bd28389``)::

    python -m circuits.pocket.train --out runs/v2l --phase all --n-train 24000 \\
        --vae-from /tmp/pocket-v1/circuits/pocket/pipeline --vae-finetune-steps 600 \\
        --unet-steps 5000 --unet-batch 64 --pipeline-out circuits/pocket/pipeline

The defaults are the sizes of the ablation's short runs (12,000 renders, 1,000 contrastive steps at
batch 128, 1,500 UNet steps at batch 32; those runs also passed ``--vae-finetune-steps 0``).

Phases (``--phase all`` runs them in order; each runs alone too, and ``--resume`` continues one
from its last checkpoint):

1. ``vae``    - :mod:`train_vae`: BPE tokenizer on the caption corpus, rendered training set,
   ``AutoencoderKL`` (from scratch, or from ``--vae-from PIPELINE`` and fine-tuned), cached
   latents and ``scaling_factor``.
2. ``clip``   - :mod:`train_clip`: the causal ``CLIPTextModel`` trained with symmetric InfoNCE
   against a small image encoder on captioned renders (skipped with ``--text-mode joint``).
3. ``unet``   - :mod:`train_unet`: the UNet on the frozen encoder's outputs (or, with
   ``--text-mode joint``, UNet and a fresh encoder together, v1's recipe). ``--unet-init
   OTHER_RUN/unet_final.pt`` starts a new cosine cycle from an earlier run's EMA weights (copy that
   run's tokenizer, data, VAE, latents and ``clip_final.pt`` into the new ``--out`` first).
4. ``export`` - EMA weights into a ``StableDiffusionPipeline`` with a ``DDIMScheduler``, fp16
   safetensors in ``--pipeline-out`` (default ``<out>/pipeline``), reloaded offline and sampled as
   a check. ``--from-checkpoint`` exports the UNet phase's latest checkpoint before it finishes.

Reproducibility: schedules are step-based (``plan.json`` records each phase's step count and a
resumed run must match it); every random draw comes from a generator seeded by ``--seed`` and
the step, so a resumed run continues bitwise on the same CPU type, thread count and library
versions. Checkpoints are written atomically every ``--ckpt-minutes``; ``--stop-after N`` stops
the clip or unet phase at step N with a checkpoint (an interruption on purpose).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

from . import tokenizer as pocket_tokenizer
from .train_clip import train_clip
from .train_common import (
    LATENT_SIZE,
    atomic_write_json,
    load_tokenizer,
    log,
    make_ddim,
    make_text_encoder,
    make_unet,
    make_vae,
)
from .train_unet import train_unet
from .train_vae import train_vae

PHASES = ("vae", "clip", "unet", "export")


def export(args: argparse.Namespace, out: Path) -> Path:
    """Assemble the trained weights into a pipeline folder (fp16), reload it offline, sample."""
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    dst = Path(args.pipeline_out) if args.pipeline_out else out / "pipeline"
    src = out / ("unet_ckpt.pt" if args.from_checkpoint else "unet_final.pt")
    if not src.exists():
        hint = "" if args.from_checkpoint else " (--from-checkpoint exports the running phase's latest checkpoint)"
        raise SystemExit(f"export: {src} does not exist; train the unet phase first{hint}")
    tok = load_tokenizer(out)
    vstate = torch.load(out / "vae.pt", weights_only=False)
    vae = make_vae(scaling_factor=float(vstate["scaling_factor"]))
    vae.load_state_dict(vstate["model"])
    ustate = torch.load(src, weights_only=False)
    unet = make_unet()
    unet.load_state_dict(ustate["ema_unet"])
    text = make_text_encoder(tok)
    text.load_state_dict(ustate["ema_text"])
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=make_ddim(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.to(torch.float16)
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    pocket_tokenizer.fix_saved_tokenizer(out / "tokenizer", tmp / "tokenizer")
    atomic_write_json({"unet_step": ustate["step"], "text_mode": ustate.get("text_mode"),
                       "source": str(src)}, tmp / "pocket_train.json")  # fmt: skip
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    log.info("export: wrote %s (%.2f MB) from %s (unet step %s)", dst, size / 1e6, src, ustate["step"])
    pipe = StableDiffusionPipeline.from_pretrained(dst, dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle", "a striped blue square on a white background",
               "an outlined green triangle", "a dotted yellow cross on a black background"]  # fmt: skip
    px = LATENT_SIZE * 4
    imgs = pipe(prompts, height=px, width=px, num_inference_steps=25, guidance_scale=7.5,
                generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    grid = Image.new("RGB", (px * len(imgs), px))
    for i, im in enumerate(imgs):
        grid.paste(im, (px * i, 0))
    grid.resize((grid.width * 4, px * 4), Image.Resampling.NEAREST).save(out / "export_check.png")
    log.info("export: reloaded and sampled %d images -> %s", len(imgs), out / "export_check.png")
    return dst


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m circuits.pocket.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", default="runs/pocket", help="run folder (checkpoints, logs, caches)")
    p.add_argument("--phase", choices=[*PHASES, "all"], default="all")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints in --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (fixed, for determinism)")
    p.add_argument("--n-train", type=int, default=12000, help="rendered training images")
    p.add_argument("--n-val", type=int, default=512)
    p.add_argument("--world-sampler", choices=["v1", "v2"], default="v2",
                   help="v2: world.training_examples (one/two objects, implicit nouns); v1: one object only")
    p.add_argument("--two-object-p", type=float, default=0.5, help="v2 sampler: share of two-object scenes")
    p.add_argument("--implicit-p", type=float, default=0.15, help="v2 sampler: share of implicit-noun objects")
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="stop the clip/unet phase at this step, leaving a checkpoint (resume with --resume)")
    g = p.add_argument_group("vae")
    g.add_argument("--vae-from", default=None, metavar="PIPELINE_DIR",
                   help="start from this exported pipeline's VAE instead of training one from scratch")
    g.add_argument("--vae-steps", type=int, default=800, help="from-scratch steps at lr 1e-3")
    g.add_argument("--vae-finetune-steps", type=int, default=600, help="then steps at lr 5e-4")
    g.add_argument("--vae-batch", type=int, default=32)
    g = p.add_argument_group("clip (contrastive text encoder)")
    g.add_argument("--text-mode", choices=["frozen", "joint"], default="frozen",
                   help="frozen: contrastive encoder, frozen for the UNet (SD); joint: v1's recipe (ablation)")
    g.add_argument("--clip-steps", type=int, default=1000)
    g.add_argument("--clip-batch", type=int, default=128)
    g.add_argument("--clip-lr", type=float, default=1e-3)
    g.add_argument("--clip-warmup", type=int, default=100)
    g.add_argument("--clip-dim", type=int, default=128, help="shared embedding width")
    g = p.add_argument_group("unet")
    g.add_argument("--unet-steps", type=int, default=1500)
    g.add_argument("--unet-batch", type=int, default=32)
    g.add_argument("--unet-lr", type=float, default=4e-4)
    g.add_argument("--unet-warmup", type=int, default=200)
    g.add_argument("--unet-init", default=None, metavar="UNET_FINAL_PT",
                   help="start the UNet from an earlier run's unet_final.pt (EMA weights; new batches and noise)")
    g.add_argument("--ema", type=float, default=0.999)
    g.add_argument("--caption-dropout", type=float, default=0.1)
    g = p.add_argument_group("export")
    g.add_argument("--pipeline-out", default=None, help="pipeline folder (default <out>/pipeline)")
    g.add_argument("--from-checkpoint", action="store_true", help="export unet_ckpt.pt instead of unet_final.pt")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    """Run the phases ``args.phase`` names, in order; stop after one that was interrupted."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(vars(args), out / f"args_{args.phase}.json")
    log.info("args: %s", vars(args))
    log.info("torch %s, threads %d", torch.__version__, torch.get_num_threads())
    phases = PHASES if args.phase == "all" else (args.phase,)
    for phase in phases:
        if phase == "vae":
            train_vae(args, out)
        elif phase == "clip" and args.text_mode == "frozen":
            if not train_clip(args, out):
                return
        elif phase == "unet":
            if not train_unet(args, out):
                return
        elif phase == "export":
            export(args, out)
    log.info("done: %s", ", ".join(phases))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(out / "log.txt")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers)
    run(args)


if __name__ == "__main__":
    main()
