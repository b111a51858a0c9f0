"""Seconds per pocket UNet training step at 32x32 (8x8 latents) and 64x64 (16x16 latents).

    OMP_NUM_THREADS=1 nice python benchmarks/pocket_unet_step.py [--batch 64] [--steps 5]

A fresh UNet of pocket's configuration (``circuits.pocket.train_common.UNET_CONFIG``) with only its
``sample_size`` changed, a frozen text encoder's forward, eps-prediction loss, AdamW step; the mean of
``--steps`` steps after one warm-up step. Used to choose pocket v2's resolution (MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def main() -> None:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from circuits.pocket.train_common import SCHEDULER_CONFIG, TEXT_CONFIG, UNET_CONFIG

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=700, max_position_embeddings=32, **TEXT_CONFIG)).eval()
    text.requires_grad_(False)
    noise_sched = DDPMScheduler(**SCHEDULER_CONFIG)
    ids = torch.randint(0, 700, (args.batch, 32))
    for lat in (8, 16):
        unet = UNet2DConditionModel(**{**UNET_CONFIG, "sample_size": lat})
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
        times = []
        for _ in range(args.steps + 1):
            t0 = time.perf_counter()
            x0 = torch.randn(args.batch, 4, lat, lat)
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (args.batch,))
            with torch.no_grad():
                ctx = text(ids)[0]
            F.mse_loss(unet(noise_sched.add_noise(x0, noise, t), t, ctx).sample, noise).backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t0)
        sec = sum(times[1:]) / args.steps
        print(f"image {lat * 4}x{lat * 4} (latents {lat}x{lat}): {sec:.3f} s/step, batch {args.batch}, "
              f"{torch.get_num_threads()} thread(s)")  # fmt: skip


if __name__ == "__main__":
    main()
