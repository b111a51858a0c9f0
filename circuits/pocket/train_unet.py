"""Pocket training, UNet phase: a ``UNet2DConditionModel`` learns to read the text encoder.

Two ways to get the text encoder, chosen by ``--text-mode``:

* ``frozen`` (the default, as Stable Diffusion): the encoder of the contrastive phase
  (``clip_final.pt``) is loaded, put in eval mode and never updated; the UNet trains on its final
  layer norm output (``last_hidden_state``), computed without gradient.
* ``joint`` (pocket v1's recipe, kept for the ablation): a fresh encoder trains together with the
  UNet on the diffusion loss alone. This is the recipe that makes the UNet read the prompt from
  the [EoT]s only.

Loss: eps-prediction MSE at uniform timesteps of SD's scaled-linear schedule, 10% of captions
replaced by "" for classifier-free guidance, AdamW with warm-up and cosine decay, gradient clip 1,
EMA of the trained weights (decay min(ema, (1+s)/(10+s))). Every batch, caption, noise and
timestep comes from a generator seeded by (seed, step), so a resumed run continues bitwise.
Output: ``unet_final.pt`` with the EMA UNet and the text encoder the export ships; while the
phase runs, ``unet_ckpt.pt`` (written every ``--ckpt-minutes``) can be exported as it stands.
"""

from __future__ import annotations

import argparse
import copy
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .train_common import (
    LATENT_SIZE,
    SCHEDULER_CONFIG,
    Checkpointer,
    Progress,
    atomic_save,
    check_data,
    draw_caption,
    fix_steps,
    load_tokenizer,
    log,
    lr_at,
    make_text_encoder,
    make_unet,
    set_lr,
    tokenize,
    world_items,
)


def train_unet(args: argparse.Namespace, out: Path) -> bool:
    """Train the UNet for ``--unet-steps``; returns False when stopped at ``--stop-after``."""
    from diffusers import DDPMScheduler

    final = out / "unet_final.pt"
    if final.exists():
        log.info("unet: %s exists, skipping", final)
        return True
    check_data(args, out)
    total = fix_steps("unet_steps", args.unet_steps, out)
    joint = args.text_mode == "joint"
    tok = load_tokenizer(out)
    sf = torch.load(out / "vae.pt", weights_only=False)["scaling_factor"]
    latents = torch.load(out / "latents.pt") * sf
    scenes = [sc for sc, _ in world_items(args)]  # order of the cached latents
    if len(scenes) != len(latents):
        raise SystemExit(f"{out / 'latents.pt'}: {len(latents)} latents but --n-train {args.n_train}")
    noise_sched = DDPMScheduler(**SCHEDULER_CONFIG)
    torch.manual_seed(args.seed + 1)
    unet = make_unet()
    text = make_text_encoder(tok)
    if not joint:
        clip = out / "clip_final.pt"
        if not clip.exists():
            raise SystemExit(f"--text-mode frozen needs {clip}: run --phase clip first")
        text.load_state_dict(torch.load(clip, weights_only=False)["text"])
        text.eval().requires_grad_(False)
    if args.unet_init:
        # a second cosine cycle from an earlier run's EMA weights (fresh optimiser, new batches)
        init = torch.load(args.unet_init, weights_only=False)
        unet.load_state_dict(init["ema_unet"])
        if joint:
            text.load_state_dict(init["ema_text"])
        log.info("unet: starting from %s (its step %s)", args.unet_init, init.get("step"))
    trained = [unet, text] if joint else [unet]
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    emas = [copy.deepcopy(m).eval().requires_grad_(False) for m in trained]
    ema_params = [p for m in emas for p in m.parameters()]
    ckpt = out / "unet_ckpt.pt"
    step = 0
    if ckpt.exists() and args.resume:
        s = torch.load(ckpt, weights_only=False)
        for m, sd in zip(trained, s["models"]):
            m.load_state_dict(sd)
        for m, sd in zip(emas, s["emas"]):
            m.load_state_dict(sd)
        opt.load_state_dict(s["opt"])
        step = s["step"]
        log.info("unet: resumed at step %d", step)
    for m in trained:
        m.train()

    def state(step: int) -> dict:
        """The EMA weights in the layout export reads, plus what resuming needs."""
        ema_text = emas[1].state_dict() if joint else text.state_dict()
        return {"ema_unet": emas[0].state_dict(), "ema_text": ema_text, "step": step,
                "text_mode": args.text_mode, "models": [m.state_dict() for m in trained],
                "emas": [m.state_dict() for m in emas], "opt": opt.state_dict()}  # fmt: skip

    bs, n_lat = args.unet_batch, LATENT_SIZE
    prog = Progress("unet", total, step, args.log_every)
    cp = Checkpointer(args.ckpt_minutes, args.stop_after)
    while step < total:
        set_lr(opt, lr_at(step, total, args.unet_lr, args.unet_warmup))
        rng = np.random.default_rng([args.seed, 3 if args.unet_init else 2, step])
        idx = rng.integers(len(latents), size=bs)
        crng = random.Random(f"pocket-captions/{args.seed}/{step}" + ("/continued" if args.unet_init else ""))
        caps = ["" if crng.random() < args.caption_dropout else draw_caption(scenes[i], crng) for i in idx]
        ids = tokenize(tok, caps)
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step + (500_000_000 if args.unet_init else 0))
        noise = torch.randn(bs, 4, n_lat, n_lat, generator=g)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (bs,), generator=g)
        xt = noise_sched.add_noise(latents[torch.from_numpy(idx)], noise, t)
        with torch.set_grad_enabled(joint):
            ctx = text(ids)[0]
        loss = F.mse_loss(unet(xt, t, ctx).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, decay)
            torch._foreach_add_(ema_params, params, alpha=1 - decay)
        step += 1
        prog(step, loss=loss.item(), lr=opt.param_groups[0]["lr"])
        if step < total and cp.due(step):
            atomic_save(state(step), ckpt)
            log.info("unet: checkpoint at step %d", step)
            if cp.stop(step):
                log.info("unet: stopping at step %d as asked (--stop-after)", step)
                return False
    final_state = state(total)
    for k in ("models", "opt"):  # the final file is what export reads: EMA weights only
        del final_state[k]
    atomic_save(final_state, final)
    log.info("unet: done, %d steps", total)
    return True
