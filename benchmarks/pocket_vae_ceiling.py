"""The VAE's ceiling on pocket's prompt following: render held-in v2 scenes, pass them through a
pipeline's VAE (encode, take the mode, decode) and let the oracle read both the renders and the
reconstructions against the scenes' captions. No UNet can follow a prompt better than its VAE can
draw the answer, so the reconstruction column bounds every prompt-following number of that model.

    PYTHONPATH=. python benchmarks/pocket_vae_ceiling.py --model circuits/pocket/pipeline [--n 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch
    from diffusers import AutoencoderKL

    from circuits.io import atomic_write
    from circuits.pocket import world
    from circuits.pocket.following import follow_images, summarise
    from circuits.pocket.train_common import to_tensor
    from circuits.pocket.train_vae import psnr

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="circuits/pocket/pipeline", help="a pipeline folder with a vae/ subfolder")
    p.add_argument("--n", type=int, default=256, help="scenes (world.training_examples, seed 7)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args()

    examples = world.training_examples(args.n, seed=7)
    renders = world.render_batch(examples)
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", dtype=torch.float32, local_files_only=True)
    x = to_tensor(renders)
    with torch.no_grad():
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample
    recon_u8 = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    captions = [e.caption for e in examples]
    psnr_db = psnr(vae, renders)  # the training script's measure: mean per-image PSNR of the reconstructions
    result = {"model": args.model, "n": args.n, "psnr_db": psnr_db,
              "renders": summarise(follow_images(captions, renders)),
              "reconstructions": summarise(follow_images(captions, recon_u8))}  # fmt: skip
    print(f"{args.model}: PSNR {psnr_db:.2f} dB over {args.n} renders")
    print(f"{'measure':<16} {'renders':>8} {'VAE recon':>10}")
    for key in result["renders"]:
        print(f"{key:<16} {result['renders'][key]:>8.2f} {result['reconstructions'].get(key, float('nan')):>10.2f}")
    if args.json:
        payload = json.dumps(result, indent=2).encode()
        atomic_write(args.json, lambda f: f.write(payload))


if __name__ == "__main__":
    main()
