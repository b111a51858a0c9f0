"""Train the pocket model: a tiny, real ``StableDiffusionPipeline`` on the pocket world.

Usage (stage 1 of the shipped weights; ``MODEL_CARD.md`` lists every stage's command)::

    mkdir -p runs/pocket
    nohup env OMP_NUM_THREADS=1 python -m circuits.pocket.train --out runs/pocket --phase all \\
        > runs/pocket/train.log 2>&1 &

A later stage continues from an exported pipeline in a new run folder::

    python -m circuits.pocket.train --out runs/pocket2 --phase unet --init-from runs/pocket/pipeline \\
        --unet-continue-steps 3000

Phases (``--phase all`` runs them in order; each can be run alone and resumed with ``--resume``):

1. ``vae``   - trains the BPE tokenizer on the caption corpus (CLIP file layout), renders the
   training set, trains an ``AutoencoderKL`` (32x32x3 -> 8x8x4) with L1 + MSE + 1e-5 KL, then
   caches the latent means of the training set and sets ``scaling_factor = 1 / std(latents)``.
2. ``unet``  - trains ``UNet2DConditionModel`` and ``CLIPTextModel`` jointly on the cached
   latents (eps-prediction, 10% empty captions for classifier-free guidance, AdamW with warm-up
   and cosine decay, EMA 0.999).
3. ``export`` - assembles the EMA weights into a ``StableDiffusionPipeline`` with a
   ``DDIMScheduler``, saves it in fp16 safetensors to ``circuits/pocket/pipeline``, reloads it with
   ``from_pretrained(..., local_files_only=True)`` and samples a few images as a check.

Reproducibility: every random draw comes from a generator seeded by ``--seed`` and the step
number, so a resumed run continues exactly. The defaults are the step counts of the shipped
weights' first stage (VAE 800 + 600 fine-tune steps, UNet 1,800 steps), which gives identical
weights on the same CPU type, thread count and library versions. Alternatively each phase can be sized by a time
budget: ``--vae-steps 0 --vae-minutes M`` / ``--unet-steps 0 --unet-minutes M`` run a few
throw-away steps on a copy of the model to measure the speed, fix the step count that fits once
and write it to ``<out>/plan.json``; the learning-rate schedule (warm-up + cosine) is a function of
that step count, so the run is still step-based.

Checkpoints are written every ``--ckpt-minutes`` atomically (temp file, then ``os.replace``).

Length: over 500 lines because it is one reproducible script (arguments, three phases, checkpoints,
export) that reads top to bottom as the record of how the shipped weights were made.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import tokenizer as pocket_tokenizer
from .world import caption, dataset, render_batch

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PIPELINE_DIR = PACKAGE_DIR / "pipeline"

log = logging.getLogger("circuits.pocket.train")

# ----------------------------------------------------------------------------- model configs

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=32,
)

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=128,
    attention_head_dim=4,  # diffusers' legacy name: the number of heads
)

TEXT_CONFIG = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=pocket_tokenizer.MODEL_MAX_LENGTH,
    projection_dim=128,
)

SCHEDULER_CONFIG = dict(
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
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **TEXT_CONFIG,
    )
    return CLIPTextModel(cfg)


def make_ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        **SCHEDULER_CONFIG, clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )


# ----------------------------------------------------------------------------- helpers


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def load_plan(out: Path) -> dict:
    p = out / "plan.json"
    return json.loads(p.read_text()) if p.exists() else {}


def measure_steps(name: str, step_fn, minutes: float, out: Path, n: int = 8) -> int:
    """Steps of ``step_fn`` (a throw-away copy) that fit in ``minutes``; fixed in plan.json."""
    plan = load_plan(out)
    if name in plan:
        return plan[name]
    step_fn(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        step_fn(i)
    sec = (time.perf_counter() - t0) / n
    steps = max(10, int(minutes * 60 / sec))
    plan[name] = steps
    plan[name + "_sec_per_step_measured"] = sec
    atomic_write_json(plan, out / "plan.json")
    log.info("%s: %.3f s/step measured -> %d steps for %.1f min", name, sec, steps, minutes)
    return steps


def fix_steps(name: str, steps: int, out: Path) -> int:
    plan = load_plan(out)
    plan[name] = steps
    atomic_write_json(plan, out / "plan.json")
    return steps


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def progress(tag: str, step: int, total: int, t0: float, start_step: int, **vals) -> None:
    el = time.perf_counter() - t0
    rate = (step - start_step) / max(el, 1e-9)
    eta = (total - step) / max(rate, 1e-9)
    extra = " ".join(f"{k}={v:.4g}" for k, v in vals.items())
    log.info("%s step %d/%d (%.1f%%) %.2f it/s eta %.1f min %s", tag, step, total,
             100 * step / total, rate, eta / 60, extra)  # fmt: skip


# ----------------------------------------------------------------------------- data


def prepare_data(args, out: Path):
    """Tokenizer + rendered training/validation images, cached in ``out``."""
    tok_dir = out / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        pocket_tokenizer.build(tok_dir, seed=args.seed)
        log.info("tokenizer trained -> %s", tok_dir)
    data_path = out / "data.npz"
    if not data_path.exists():
        t0 = time.perf_counter()
        train = dataset(args.n_train, seed=args.seed)
        val = dataset(args.n_val, seed=args.seed + 1)
        np.savez(
            data_path.with_name("data.tmp.npz"),
            train=render_batch(train),
            val=render_batch(val),
        )
        os.replace(data_path.with_name("data.tmp.npz"), data_path)
        log.info("rendered %d + %d images in %.1fs", len(train), len(val), time.perf_counter() - t0)
    d = np.load(data_path)
    return d["train"], d["val"]


# ----------------------------------------------------------------------------- VAE


def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Latent means of ``images`` (uint8 N, H, W, 3): what the UNet trains on, before scaling."""
    with torch.no_grad():
        return torch.cat([vae.encode(to_tensor(images[i : i + batch])).latent_dist.mean
                          for i in range(0, len(images), batch)])  # fmt: skip


def vae_loss(vae, x, gen, kl_weight):
    post = vae.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
    rec = vae.decode(z).sample
    kl = post.kl().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
    return F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl


def psnr(vae, images: np.ndarray, bs: int = 128) -> float:
    errs = []
    with torch.no_grad():
        for i in range(0, len(images), bs):
            x = to_tensor(images[i : i + bs])
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            errs.append(((rec - x) / 2).pow(2).mean(dim=(1, 2, 3)))
    mse = torch.cat(errs)
    return float((10 * torch.log10(1.0 / mse)).mean())


def _vae_stage(args, out: Path, vae, train, *, name: str, total: int, base_lr: float,
               warm: int, stream: int) -> None:
    """Train ``vae`` in place for ``total`` steps (AdamW, warm-up + cosine), resumable from
    ``<out>/<name>_ckpt.pt``. ``stream`` separates the random streams of the stages."""
    bs = args.vae_batch

    def batch(step):
        rng = np.random.default_rng([args.seed, stream, step])
        return to_tensor(train[rng.integers(len(train), size=bs)])

    opt = torch.optim.AdamW(vae.parameters(), lr=base_lr, weight_decay=0.0)
    ckpt = out / f"{name}_ckpt.pt"
    step = 0
    if ckpt.exists() and args.resume:
        state = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log.info("%s: resumed at step %d", name, step)
    vae.train()
    t0, start, last_ckpt = time.perf_counter(), step, time.perf_counter()
    while step < total:
        set_lr(opt, lr_at(step, total, base_lr, warm))
        gen = torch.Generator().manual_seed(args.seed * 7919 + step + (0 if stream == 1 else 100_000 * stream))
        loss = vae_loss(vae, batch(step), gen, 1e-5)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % args.log_every == 0 or step == total:
            progress(name, step, total, t0, start, loss=loss.item())
        if time.perf_counter() - last_ckpt > args.ckpt_minutes * 60 and step < total:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
            last_ckpt = time.perf_counter()
    vae.eval()


def train_vae(args, out: Path) -> None:
    """Stage 1: ``--vae-steps`` at lr 1e-3 (-> vae_stage1.pt); stage 2 (fine-tune):
    ``--vae-finetune-steps`` at lr 5e-4 from stage 1; then latents + scaling factor (-> vae.pt)."""
    final = out / "vae.pt"
    if final.exists():
        log.info("vae: %s exists, skipping", final)
        return
    train, val = prepare_data(args, out)
    stage1 = out / "vae_stage1.pt"
    vae = make_vae()
    if stage1.exists():
        vae.load_state_dict(torch.load(stage1, weights_only=False)["model"])
        log.info("vae: loaded stage 1 from %s", stage1)
    else:
        torch.manual_seed(args.seed)
        vae = make_vae()
        if args.vae_steps:
            total = fix_steps("vae_steps", args.vae_steps, out)
        else:
            probe = copy.deepcopy(vae)
            popt = torch.optim.AdamW(probe.parameters(), lr=1e-3)
            rng = np.random.default_rng(0)

            def probe_step(i):
                x = to_tensor(train[rng.integers(len(train), size=args.vae_batch)])
                vae_loss(probe, x, torch.Generator().manual_seed(i), 1e-5).backward()
                popt.step()
                popt.zero_grad(set_to_none=True)

            total = measure_steps("vae_steps", probe_step, args.vae_minutes, out)
            del probe, popt
        _vae_stage(args, out, vae, train, name="vae", total=total, base_lr=1e-3, warm=100, stream=1)
        atomic_save({"model": vae.state_dict(), "step": total, "val_psnr_db": psnr(vae, val)}, stage1)
    log.info("vae: stage 1 val PSNR %.2f dB", psnr(vae, val))
    ft = fix_steps("vae_finetune_steps", args.vae_finetune_steps, out)
    if ft:
        _vae_stage(args, out, vae, train, name="vae_ft", total=ft, base_lr=5e-4, warm=20, stream=3)
    val_psnr = psnr(vae, val)
    # cache latent means of the training set, set scaling_factor = 1 / std
    lat = encode_latents(vae, train)
    std = float(lat.std())
    log.info("vae: val PSNR %.2f dB, latent std %.4f -> scaling_factor %.4f", val_psnr, std, 1 / std)
    atomic_save(lat, out / "latents.pt")
    metrics = {"vae_val_psnr_db": val_psnr, "latent_std": std, "scaling_factor": 1 / std,
               "vae_steps": load_plan(out).get("vae_steps"), "vae_finetune_steps": ft,
               "vae_batch": args.vae_batch}  # fmt: skip
    atomic_write_json(metrics, out / "vae_metrics.json")
    atomic_save({"model": vae.state_dict(), "scaling_factor": 1 / std}, final)


# ----------------------------------------------------------------------------- seeding from a pipeline


def seed_from_pipeline(args, out: Path, source: Path) -> None:
    """Fill a run folder from an exported pipeline so that later phases continue from it.

    Writes ``tokenizer/`` (the pipeline's own files: the text encoder's embedding rows follow its
    vocabulary), ``vae.pt`` and ``latents.pt`` (the pipeline's VAE, the training set re-rendered
    and encoded) and ``unet_final.pt`` (the pipeline's UNet and text encoder as stage-1 EMA
    weights). With ``--unet-continue-steps`` the second UNet stage then starts from the shipped
    model. The shipped weights are fp16, so this continues from their rounding of the original
    fp32 EMA weights, not bitwise from the original run.
    """
    import shutil

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    if (out / "unet_final.pt").exists():
        log.info("init-from: %s already seeded, skipping", out)
        return
    if not (source / "model_index.json").is_file():
        raise SystemExit(f"--init-from {source}: not a pipeline folder (no model_index.json)")
    tok_dir = out / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    shutil.copytree(source / "tokenizer", tok_dir)
    train, _ = prepare_data(args, out)
    vae = AutoencoderKL.from_pretrained(source / "vae", dtype=torch.float32, local_files_only=True)
    atomic_save(encode_latents(vae, train), out / "latents.pt")
    atomic_save({"model": vae.state_dict(), "scaling_factor": float(vae.config.scaling_factor)}, out / "vae.pt")
    unet = UNet2DConditionModel.from_pretrained(source / "unet", dtype=torch.float32, local_files_only=True)
    text = CLIPTextModel.from_pretrained(source / "text_encoder", dtype=torch.float32, local_files_only=True)
    atomic_save({"ema_unet": unet.state_dict(), "ema_text": text.state_dict(), "step": None,
                 "seeded_from": str(source)}, out / "unet_final.pt")  # fmt: skip
    log.info("init-from: seeded %s from %s (tokenizer, VAE, latents, UNet + text encoder)", out, source)


# ----------------------------------------------------------------------------- UNet + text


def train_unet(args, out: Path) -> None:
    """Stage 1: UNet + text encoder from scratch; stage 2 (``--unet-continue-steps``): a second
    cosine cycle started from stage 1's EMA weights, with fresh optimiser state and new batches."""
    if args.unet_steps:
        total = fix_steps("unet_steps", args.unet_steps, out)
    else:
        total = 0  # measured inside the stage
    _unet_stage(args, out, name="unet", total=total, base_lr=args.unet_lr, warmup=200, init=None)
    if args.unet_continue_steps:
        fix_steps("unet_continue_steps", args.unet_continue_steps, out)
        _unet_stage(args, out, name="unet2", total=args.unet_continue_steps, base_lr=args.unet_continue_lr,
                    warmup=50, init=out / "unet_final.pt")  # fmt: skip


def final_unet_state(out: Path) -> Path:
    """The checkpoint export uses: the last finished UNet stage."""
    second = out / "unet2_final.pt"
    return second if second.exists() else out / "unet_final.pt"


def _unet_stage(args, out: Path, *, name: str, total: int, base_lr: float, warmup: int, init: Path | None) -> None:
    from diffusers import DDPMScheduler

    final = out / f"{name}_final.pt"
    if final.exists():
        log.info("%s: %s exists, skipping", name, final)
        return
    tok = pocket_tokenizer.load(out / "tokenizer")
    vstate = torch.load(out / "vae.pt", weights_only=False)
    sf = vstate["scaling_factor"]
    latents = torch.load(out / "latents.pt") * sf
    items = dataset(args.n_train, seed=args.seed)  # same order as the rendered/cached images
    scenes = [sc for sc, _ in items]
    noise_sched = DDPMScheduler(**SCHEDULER_CONFIG)
    torch.manual_seed(args.seed + 1)
    unet = make_unet()
    text = make_text_encoder(tok)
    if init is not None:
        start_state = torch.load(init, weights_only=False)
        unet.load_state_dict(start_state["ema_unet"])
        text.load_state_dict(start_state["ema_text"])
        log.info("%s: starting from %s", name, init)
    bs = args.unet_batch
    n_tok = tok.model_max_length
    # stage 2 draws batches from a different stream than stage 1
    stream = 2 if init is None else 3

    def batch(step):
        rng = np.random.default_rng([args.seed, stream, step])
        idx = rng.integers(len(latents), size=bs)
        crng = random.Random(f"pocket-captions/{args.seed}/{step}" + ("" if init is None else f"/{name}"))
        caps = [
            "" if crng.random() < args.caption_dropout else caption(scenes[i], crng) for i in idx
        ]
        ids = tok(caps, padding="max_length", max_length=n_tok, truncation=True,
                  return_tensors="pt").input_ids  # fmt: skip
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step + (0 if init is None else 500_000_000))
        noise = torch.randn(bs, 4, 8, 8, generator=g)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (bs,), generator=g)
        return latents[torch.from_numpy(idx)], ids, noise, t

    def loss_fn(u, te, b):
        x0, ids, noise, t = b
        xt = noise_sched.add_noise(x0, noise, t)
        ctx = te(ids)[0]
        return F.mse_loss(u(xt, t, ctx).sample, noise)

    params = list(unet.parameters()) + list(text.parameters())
    if not total:
        pu, pt = copy.deepcopy(unet), copy.deepcopy(text)
        popt = torch.optim.AdamW(list(pu.parameters()) + list(pt.parameters()), lr=base_lr)

        def probe_step(i):
            loss_fn(pu, pt, batch(i)).backward()
            popt.step()
            popt.zero_grad(set_to_none=True)

        # the EMA update and clipping cost a little too: measure with 5% margin
        total = measure_steps(f"{name}_steps", probe_step, args.unet_minutes * 0.95, out)
        del pu, pt, popt
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=0.01)
    ema_u, ema_t = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    ema_params = list(ema_u.parameters()) + list(ema_t.parameters())
    for p in ema_params:
        p.requires_grad_(False)
    ckpt = out / f"{name}_ckpt.pt"
    step = 0
    if ckpt.exists() and args.resume:
        s = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(s["unet"])
        text.load_state_dict(s["text"])
        ema_u.load_state_dict(s["ema_unet"])
        ema_t.load_state_dict(s["ema_text"])
        opt.load_state_dict(s["opt"])
        step = s["step"]
        log.info("%s: resumed at step %d", name, step)
    unet.train()
    text.train()
    t0, start, last_ckpt = time.perf_counter(), step, time.perf_counter()
    losses = []
    while step < total:
        set_lr(opt, lr_at(step, total, base_lr, warmup))
        loss = loss_fn(unet, text, batch(step))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        # a continued stage starts from EMA weights, so its EMA need not warm up
        decay = args.ema if init is not None else min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, decay)
            torch._foreach_add_(ema_params, params, alpha=1 - decay)
        step += 1
        losses.append(loss.item())
        if step % args.log_every == 0 or step == total:
            progress(name, step, total, t0, start, loss=float(np.mean(losses[-args.log_every :])),
                     lr=opt.param_groups[0]["lr"])  # fmt: skip
        if time.perf_counter() - last_ckpt > args.ckpt_minutes * 60 and step < total:
            state = {"unet": unet.state_dict(), "text": text.state_dict(),
                     "ema_unet": ema_u.state_dict(), "ema_text": ema_t.state_dict(),
                     "opt": opt.state_dict(), "step": step}  # fmt: skip
            atomic_save(state, ckpt)
            last_ckpt = time.perf_counter()
            log.info("%s: checkpoint at step %d", name, step)
    atomic_save(
        {"ema_unet": ema_u.state_dict(), "ema_text": ema_t.state_dict(), "step": total,
         "final_loss": float(np.mean(losses[-200:])) if losses else None},
        final,
    )  # fmt: skip
    log.info("%s: done, %d steps", name, total)


# ----------------------------------------------------------------------------- export


def export(args, out: Path) -> Path:
    from diffusers import StableDiffusionPipeline

    dst = Path(args.pipeline_out)
    tok = pocket_tokenizer.load(out / "tokenizer")
    vstate = torch.load(out / "vae.pt", weights_only=False)
    vae = make_vae(scaling_factor=float(vstate["scaling_factor"]))
    vae.load_state_dict(vstate["model"])
    ustate = torch.load(final_unet_state(out), weights_only=False)
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
        import shutil

        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    pocket_tokenizer.fix_saved_tokenizer(out / "tokenizer", tmp / "tokenizer")
    if dst.exists():
        import shutil

        shutil.rmtree(dst)
    os.replace(tmp, dst)
    size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    log.info("export: wrote %s (%.2f MB)", dst, size / 1e6)
    # check: reload offline in fp32 and sample
    pipe = StableDiffusionPipeline.from_pretrained(
        dst, dtype=torch.float32, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle", "a striped blue square on a white background",
               "an outlined green triangle", "a dotted yellow cross on a black background"]  # fmt: skip
    imgs = pipe(prompts, height=32, width=32, num_inference_steps=25, guidance_scale=7.5,
                generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    from PIL import Image

    grid = Image.new("RGB", (32 * len(imgs), 32))
    for i, im in enumerate(imgs):
        grid.paste(im, (32 * i, 0))
    grid.resize((grid.width * 4, 128), Image.Resampling.NEAREST).save(out / "export_check.png")
    log.info("export: reloaded and sampled %d images -> %s", len(imgs), out / "export_check.png")
    return dst


# ----------------------------------------------------------------------------- CLI


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m circuits.pocket.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", default="runs/pocket", help="run folder (checkpoints, logs, caches)")
    p.add_argument("--phase", choices=["vae", "unet", "export", "all"], default="all")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints in --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=20000, help="rendered training images")
    p.add_argument("--n-val", type=int, default=512)
    p.add_argument("--vae-minutes", type=float, default=8.0)
    p.add_argument("--vae-steps", type=int, default=800, help="stage-1 steps (0: as many as fit in --vae-minutes)")
    p.add_argument("--vae-finetune-steps", type=int, default=600,
                   help="second VAE stage (lr 5e-4) from the stage-1 weights")
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--unet-minutes", type=float, default=45.0)
    p.add_argument("--unet-steps", type=int, default=1800, help="steps (0: as many as fit in --unet-minutes)")
    p.add_argument("--unet-continue-steps", type=int, default=0,
                   help="second UNet stage from stage 1's EMA weights (fresh AdamW, new cosine cycle)")
    p.add_argument("--unet-continue-lr", type=float, default=2e-4)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=4e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 for determinism)")
    p.add_argument("--pipeline-out", default=str(DEFAULT_PIPELINE_DIR))
    p.add_argument("--init-from", default=None, metavar="PIPELINE_DIR",
                   help="seed --out from an exported pipeline (e.g. circuits/pocket/pipeline) and continue "
                        "from it: use with --phase unet --unet-continue-steps N")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(out / "log.txt")],
    )
    log.info("args: %s", vars(args))
    log.info("torch %s, threads %d", torch.__version__, torch.get_num_threads())
    atomic_write_json(vars(args), out / f"args_{args.phase}.json")
    if args.init_from:
        seed_from_pipeline(args, out, Path(args.init_from))
    if args.phase in ("vae", "all"):
        train_vae(args, out)
    if args.phase in ("unet", "all"):
        train_unet(args, out)
    if args.phase in ("export", "all"):
        export(args, out)
    log.info("done")


if __name__ == "__main__":
    main()
