"""Pocket training, data and VAE phase: tokenizer, rendered training set, ``AutoencoderKL``.

* The BPE tokenizer is trained on the world's caption corpus (:func:`tokenizer.build`).
* ``--n-train`` training and ``--n-val`` validation images are rendered once into ``data.npz``.
* The VAE either trains from scratch (``--vae-steps`` at lr 1e-3, then ``--vae-finetune-steps``
  at lr 5e-4) or starts from the VAE of an exported pipeline (``--vae-from DIR``; v1's VAE is a
  good start for any world drawn with the same palette) and is then fine-tuned for
  ``--vae-finetune-steps`` on this world's renders. Loss L1 + MSE + 1e-5 KL.
* Finally the latent means of the training set are cached (``latents.pt``) and
  ``scaling_factor = 1 / std(latents)`` is fixed, as SD does.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import tokenizer as pocket_tokenizer
from .train_common import (
    Checkpointer,
    Progress,
    atomic_save,
    atomic_write_json,
    fix_steps,
    log,
    lr_at,
    make_vae,
    record_data,
    render_items,
    resume_model,
    set_lr,
    to_tensor,
    world_items,
)


def prepare_data(args: argparse.Namespace, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizer + rendered training/validation images, cached in ``out``."""
    tok_dir = out / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        pocket_tokenizer.build(tok_dir, seed=args.seed)
        log.info("tokenizer trained -> %s", tok_dir)
    data_path = out / "data.npz"
    if not data_path.exists():
        t0 = time.perf_counter()
        train = world_items(args)
        val = world_items(args, args.n_val, args.seed + 1)
        tmp = data_path.with_name("data.tmp.npz")
        np.savez(tmp, train=render_items(train), val=render_items(val))
        os.replace(tmp, data_path)
        record_data(args, out)
        log.info("rendered %d + %d images in %.1fs", len(train), len(val), time.perf_counter() - t0)
    d = np.load(data_path)
    return d["train"], d["val"]


def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Latent means of ``images`` (uint8 N, H, W, 3): what the UNet trains on, before scaling."""
    with torch.no_grad():
        return torch.cat([vae.encode(to_tensor(images[i : i + batch])).latent_dist.mean
                          for i in range(0, len(images), batch)])  # fmt: skip


def vae_loss(vae, x: torch.Tensor, gen: torch.Generator, kl_weight: float) -> torch.Tensor:
    post = vae.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
    rec = vae.decode(z).sample
    kl = post.kl().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
    return F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl


def psnr(vae, images: np.ndarray, bs: int = 128) -> float:
    """Mean per-image PSNR (dB) of the VAE's reconstruction (latent means) of ``images``."""
    errs = []
    with torch.no_grad():
        for i in range(0, len(images), bs):
            x = to_tensor(images[i : i + bs])
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            errs.append(((rec - x) / 2).pow(2).mean(dim=(1, 2, 3)))
    mse = torch.cat(errs)
    return float((10 * torch.log10(1.0 / mse)).mean())


def _vae_stage(args, out: Path, vae, train: np.ndarray, *, name: str, total: int, base_lr: float,
               warm: int, stream: int) -> None:  # fmt: skip
    """Train ``vae`` in place for ``total`` steps (AdamW, warm-up + cosine), resumable from
    ``<out>/<name>_ckpt.pt``. ``stream`` separates the random streams of the stages."""
    bs = args.vae_batch
    opt = torch.optim.AdamW(vae.parameters(), lr=base_lr, weight_decay=0.0)
    ckpt = out / f"{name}_ckpt.pt"
    step = resume_model(ckpt, vae, opt, name, args.resume)
    vae.train()
    prog = Progress(name, total, step, args.log_every)
    cp = Checkpointer(args.ckpt_minutes, None)
    while step < total:
        set_lr(opt, lr_at(step, total, base_lr, warm))
        rng = np.random.default_rng([args.seed, stream, step])
        x = to_tensor(train[rng.integers(len(train), size=bs)])
        gen = torch.Generator().manual_seed(args.seed * 7919 + step + 100_000 * stream)
        loss = vae_loss(vae, x, gen, 1e-5)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        prog(step, loss=loss.item())
        if step < total and cp.due(step):
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
    vae.eval()


def train_vae(args: argparse.Namespace, out: Path) -> None:
    """Writes ``vae.pt`` (weights + scaling factor), ``latents.pt`` and ``vae_metrics.json``."""
    final = out / "vae.pt"
    if final.exists():
        log.info("vae: %s exists, skipping", final)
        return
    train, val = prepare_data(args, out)
    stage1 = out / "vae_stage1.pt"
    if args.vae_from:
        from diffusers import AutoencoderKL

        src = Path(args.vae_from) / "vae"
        if not (src / "config.json").is_file():
            raise SystemExit(f"--vae-from {args.vae_from}: no vae/config.json there (want an exported pipeline)")
        vae = make_vae()
        vae.load_state_dict(AutoencoderKL.from_pretrained(src, dtype=torch.float32, local_files_only=True).state_dict())
        log.info("vae: starting from %s, val PSNR on this world %.2f dB", src, psnr(vae, val))
    elif stage1.exists():
        vae = make_vae()
        vae.load_state_dict(torch.load(stage1, weights_only=False)["model"])
        log.info("vae: loaded stage 1 from %s", stage1)
    else:
        torch.manual_seed(args.seed)
        vae = make_vae()
        total = fix_steps("vae_steps", args.vae_steps, out)
        _vae_stage(args, out, vae, train, name="vae", total=total, base_lr=1e-3, warm=100, stream=1)
        atomic_save({"model": vae.state_dict(), "step": total, "val_psnr_db": psnr(vae, val)}, stage1)
        log.info("vae: stage 1 val PSNR %.2f dB", psnr(vae, val))
    ft = fix_steps("vae_finetune_steps", args.vae_finetune_steps, out)
    if ft:
        _vae_stage(args, out, vae, train, name="vae_ft", total=ft, base_lr=5e-4, warm=20, stream=3)
    val_psnr = psnr(vae, val)
    lat = encode_latents(vae, train)
    std = float(lat.std())
    log.info("vae: val PSNR %.2f dB, latent std %.4f -> scaling_factor %.4f", val_psnr, std, 1 / std)
    atomic_save(lat, out / "latents.pt")
    metrics = {"vae_val_psnr_db": val_psnr, "latent_std": std, "scaling_factor": 1 / std,
               "vae_from": args.vae_from, "vae_steps": None if args.vae_from else args.vae_steps,
               "vae_finetune_steps": ft, "vae_batch": args.vae_batch}  # fmt: skip
    atomic_write_json(metrics, out / "vae_metrics.json")
    atomic_save({"model": vae.state_dict(), "scaling_factor": 1 / std}, final)
