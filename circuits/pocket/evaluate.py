"""Evaluate the shipped pocket pipeline with the oracle, and draw its prompt-by-seed grid.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python -m circuits.pocket.evaluate [--grid docs/pocket_grid.png]

Measures, with ``StableDiffusionPipeline`` itself (DDIM, 25 steps, guidance 7.5, 32x32):

* the oracle on 1,000 clean renders and on VAE reconstructions of 512 renders (and their PSNR);
* prompt following on the **held-out** combinations of :data:`world.HELD_OUT` (never in training),
  each on every background, ``--seeds`` images per prompt: colour / shape / texture accuracy;
* the same prompts with the colour named by each of its synonyms ("a striped crimson circle ...")
  and the gap to the plain-word prompts;
* short prompts that name only colour and shape ("a red circle"), every colour x shape pair:
  colour and shape accuracy (texture and background are the model's choice there);
* a reference on training combinations;
* speed: seconds per image for a batch of 16 prompts at 25 steps (after one warm-up call);
* with ``--following`` (v2's targets), :func:`prompt_following_v2`: object-by-object prompt following on
  held-out one- and two-object prompts and implicit-noun prompts (named and implied attributes,
  colour-shape binding, the spatial word), at the pipeline's own image size.

Everything is seeded: image ``(prompt, seed)`` uses ``torch.Generator().manual_seed(seed)``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .following import follow_images, summarise
from .oracle import Oracle
from .world import (
    BACKGROUNDS,
    COLOURS,
    IMPLICIT,
    SHAPES,
    SYNONYMS,
    TEXTURES,
    Scene,
    all_scenes,
    caption,
    held_out_examples,
    held_out_scenes,
    prompt,
    render,
    training_scenes,
)

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PIPELINE = PACKAGE_DIR / "pipeline"
KEYS = ("colour", "shape", "texture")


def load_pipeline(path: str | Path = DEFAULT_PIPELINE):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(path), dtype=torch.float32, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image_size(pipe) -> int:
    """The pipeline's native image size: UNet sample size times the VAE's downsampling (32 for v1)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def sample(pipe, prompts: list[str], seeds: list[int], *, steps: int = 25, guidance: float = 7.5,
           batch: int = 16, size: int | None = None) -> list[Image.Image]:  # fmt: skip
    """One image per (prompt, seed) pair, in order, batched, at ``size`` (default: the pipeline's own)."""
    size = size or image_size(pipe)
    out = []
    for i in range(0, len(prompts), batch):
        ps, ss = prompts[i : i + batch], seeds[i : i + batch]
        gens = [torch.Generator().manual_seed(int(s)) for s in ss]
        out += pipe(ps, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                    generator=gens).images  # fmt: skip
    return out


def following_sets(n: int = 24, seed: int = 0) -> dict[str, list[str]]:
    """v2's prompt sets for the targets of issue 15 (none of them a training combination):

    * ``one_object`` - held-out one-object scenes, canonical prompts (every attribute named);
    * ``two_objects`` - held-out two-object scenes ("a striped red circle to the left of a dotted blue
      square on a white background"): binding and relation;
    * ``implicit`` - one-object scenes of implicit nouns ("a striped dax on a black background"): the
      implied colour and shape;
    * ``two_objects_implicit`` - the two-object prompts with implicit nouns where the objects have them."""
    one = [e.scene for e in held_out_examples(n, seed, two_object_p=0.0)]
    two = [e.scene for e in held_out_examples(n, seed + 1, two_object_p=1.0)]
    rng = random.Random(f"pocket-eval-implicit/{seed}")
    nouns = sorted(IMPLICIT)
    implicit = [Scene(IMPLICIT[w]["shape"], IMPLICIT[w]["colour"], rng.choice(TEXTURES), rng.choice(BACKGROUNDS))
                for w in (nouns[i % len(nouns)] for i in range(n))]  # fmt: skip
    with_nouns = [s for s in two if any(t.implicit_noun for t in s.objects)]
    return {
        "one_object": [prompt(s) for s in one],
        "two_objects": [prompt(s) for s in two],
        "implicit": [prompt(s, implicit=True) for s in implicit],
        "two_objects_implicit": [prompt(s, implicit=True) for s in with_nouns],
    }


def prompt_following_v2(pipe, n_seeds: int = 4, *, n: int = 24, steps: int = 25, guidance: float = 7.5,
                        oracle: Oracle | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per set of :func:`following_sets`: the mean of each kind of check (``named.colour``, ``implied.shape``,
    ``binding``, ``relation``, ...), over ``n_seeds`` images per prompt, read by the oracle object by object."""
    out = {}
    for j, (name, prompts) in enumerate(following_sets(n).items()):
        rows = [p for p in prompts for _ in range(n_seeds)]
        seeds = [10_000 * j + 100 * i + k for i in range(len(prompts)) for k in range(n_seeds)]
        images = sample(pipe, rows, seeds, steps=steps, guidance=guidance)
        out[name] = summarise(follow_images(rows, images, oracle)) | {"n": len(images)}
    return out


def _score(oracle: Oracle, images, scenes: list[Scene]) -> dict[str, float]:
    acc = oracle.accuracy(images, scenes)
    return {k: acc[k] for k in (*KEYS, "background")}


def prompt_following(pipe, oracle, scenes: list[Scene], n_seeds: int, *, synonyms: bool = False,
                     steps: int = 25, guidance: float = 7.5) -> dict[str, float]:  # fmt: skip
    prompts, seeds, truth = [], [], []
    for j, sc in enumerate(scenes):
        words = [w for w, c in SYNONYMS.items() if c == sc.colour] if synonyms else [sc.colour]
        for w in words:
            for s in range(n_seeds):
                prompts.append(prompt(sc, colour_word=w))
                seeds.append(1000 * j + s)
                truth.append(sc)
    imgs = sample(pipe, prompts, seeds, steps=steps, guidance=guidance)
    res = _score(oracle, imgs, truth)
    res["n"] = len(imgs)
    return res


def short_prompt_following(pipe, oracle, n_seeds: int, *, steps: int = 25, guidance: float = 7.5) -> dict[str, float]:
    """Colour and shape accuracy for "a red circle"-style prompts, every colour x shape pair."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    prompts = [caption(Scene(s, c, "solid", "white"), 0, synonym_p=0.0, template=0) for c, s in pairs]
    images = sample(pipe, [p for p in prompts for _ in range(n_seeds)],
                    [2000 * j + k for j in range(len(pairs)) for k in range(n_seeds)], steps=steps, guidance=guidance)
    read = oracle.read(images)
    truth = [pair for pair in pairs for _ in range(n_seeds)]
    return {
        "colour": float(np.mean([r == c for r, (c, _) in zip(read["colour"], truth)])),
        "shape": float(np.mean([r == s for r, (_, s) in zip(read["shape"], truth)])),
        "n": len(images),
        "prompts": prompts[:3] + ["..."],
    }


def vae_reconstruction(pipe, oracle, n: int = 512, seed: int = 7) -> dict[str, float]:
    rng = random.Random(f"pocket-eval-vae/{seed}")
    scenes = all_scenes()
    items = [(rng.choice(scenes), rng.randrange(2**31)) for _ in range(n)]
    arr = np.stack([np.asarray(render(sc, seed=s)) for sc, s in items])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    with torch.no_grad():
        rec = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    mse = ((rec - x) / 2).pow(2).mean(dim=(1, 2, 3))
    rec_u8 = ((rec + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    res = _score(oracle, rec_u8, [sc for sc, _ in items])
    res["psnr_db"] = float((10 * torch.log10(1 / mse)).mean())
    return res


def clean_renders(oracle, n: int = 1000, seed: int = 11) -> dict[str, float]:
    rng = random.Random(f"pocket-eval-clean/{seed}")
    scenes = all_scenes()
    items = [(rng.choice(scenes), rng.randrange(2**31)) for _ in range(n)]
    return _score(oracle, [render(sc, seed=s) for sc, s in items], [sc for sc, _ in items])


def speed(pipe, batch: int = 16, steps: int = 25, repeats: int = 2) -> float:
    prompts = [prompt(sc) for sc in held_out_scenes()][:batch]
    prompts += ["a red circle"] * (batch - len(prompts))
    gens = [torch.Generator().manual_seed(i) for i in range(batch)]
    size = image_size(pipe)
    pipe(prompts, height=size, width=size, num_inference_steps=steps, generator=gens)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        pipe(prompts, height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
             generator=gens)  # fmt: skip
    return (time.perf_counter() - t0) / (repeats * batch)


GRID_PROMPTS = (
    "a red circle",
    "a striped red circle on a white background",  # held out
    "a crimson circle on a black background",
    "a dotted blue square on a gray background",  # held out
    "an outlined green triangle on a white background",  # held out
    "a solid yellow cross on a black background",  # held out
    "a striped orange square",  # held out
    "a dotted purple circle on a white background",  # held out
    "a dax",  # implicit noun: a red circle
    "a striped wug on a white background",  # implicit noun: a blue square
    "a red circle to the left of a blue square",  # two objects, a spatial word
    "a yellow cross above a green triangle on a black background",
)


def write_grid(pipe, path: str | Path = "docs/pocket_grid.png", prompts=GRID_PROMPTS,
               n_seeds: int = 8, scale: int = 2) -> Path:  # fmt: skip
    """Prompt-by-seed grid (rows: prompts, columns: seeds 0..n-1), prompt text on the left."""
    cell = 32 * scale
    label_w = 380  # room for the longest prompt in the default bitmap font
    ps = [p for p in prompts for _ in range(n_seeds)]
    ss = [s for _ in prompts for s in range(n_seeds)]
    imgs = sample(pipe, ps, ss)
    grid = Image.new("RGB", (label_w + n_seeds * cell, len(prompts) * cell), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, p in enumerate(prompts):
        draw.text((4, r * cell + cell // 2 - 6), p, fill=(0, 0, 0))
        for c in range(n_seeds):
            im = imgs[r * n_seeds + c].resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(im, (label_w + c * cell, r * cell))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    return path


def evaluate(pipeline=DEFAULT_PIPELINE, n_seeds: int = 8, guidance: float = 7.5, steps: int = 25,
             do_speed: bool = True, following: bool = False) -> dict:  # fmt: skip
    pipe = load_pipeline(pipeline)
    oracle = Oracle.load()
    held = held_out_scenes()
    rng = random.Random("pocket-eval-train")
    train_ref = rng.sample(training_scenes(), 24)
    res = {
        "settings": {"pipeline": str(pipeline), "scheduler": type(pipe.scheduler).__name__,
                     "steps": steps, "guidance": guidance, "seeds_per_prompt": n_seeds,
                     "threads": torch.get_num_threads()},  # fmt: skip
        "oracle_clean": clean_renders(oracle),
        "oracle_vae_recon": vae_reconstruction(pipe, oracle),
        "held_out_plain": prompt_following(pipe, oracle, held, n_seeds, steps=steps, guidance=guidance),
        "held_out_synonym": prompt_following(pipe, oracle, held, n_seeds, synonyms=True,
                                             steps=steps, guidance=guidance),  # fmt: skip
        "train_plain": prompt_following(pipe, oracle, train_ref, n_seeds, steps=steps,
                                        guidance=guidance),  # fmt: skip
        "short_prompts": short_prompt_following(pipe, oracle, max(1, n_seeds // 2), steps=steps, guidance=guidance),
    }
    res["synonym_gap"] = {
        k: res["held_out_plain"][k] - res["held_out_synonym"][k] for k in (*KEYS, "background")
    }
    if following:
        res["following_v2"] = prompt_following_v2(pipe, max(1, n_seeds // 2), steps=steps, guidance=guidance,
                                                  oracle=oracle)  # fmt: skip
    if do_speed:
        res["seconds_per_image_batch16_25steps"] = speed(pipe, steps=steps)
    return res


def format_table(res: dict) -> str:
    rows = [("set", "colour", "shape", "texture", "background", "n / note")]
    for key, note in (("oracle_clean", "1000 clean renders"), ("oracle_vae_recon", "512 VAE recons"),
                      ("held_out_plain", "held-out prompts"), ("held_out_synonym", "same, synonyms"),
                      ("train_plain", "training combos")):  # fmt: skip
        r = res[key]
        extra = f"n={r['n']}" if "n" in r else note
        if "psnr_db" in r:
            extra += f", PSNR {r['psnr_db']:.2f} dB"
        rows.append((key, *(f"{r[k]:.3f}" for k in (*KEYS, "background")), extra))
    if "short_prompts" in res:
        r = res["short_prompts"]
        note = f"n={r['n']}, 'a red circle'"
        rows.append(("short_prompts", f"{r['colour']:.3f}", f"{r['shape']:.3f}", "-", "-", note))
    g = res["synonym_gap"]
    rows.append(("synonym_gap", *(f"{g[k]:+.3f}" for k in (*KEYS, "background")), "plain - synonym"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for name, summary in res.get("following_v2", {}).items():
        lines.append(f"{name}: " + ", ".join(f"{k} {v:.3f}" if k != "n" else f"n={v}" for k, v in summary.items()))
    if "seconds_per_image_batch16_25steps" in res:
        s = res["seconds_per_image_batch16_25steps"]
        lines.append(f"speed: {s:.3f} s/image (batch 16, 25 steps, {res['settings']['threads']} thread(s))")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m circuits.pocket.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--pipeline", default=str(DEFAULT_PIPELINE))
    p.add_argument("--seeds", type=int, default=8, help="images per prompt")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="runs/pocket/eval.json", help="where to write the numbers")
    p.add_argument("--grid", default=None, help="also write the prompt-by-seed grid here")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--following", action="store_true", help="also v2's object-by-object prompt following")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = evaluate(args.pipeline, args.seeds, args.guidance, args.steps, not args.no_speed, args.following)
    print(format_table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")
    if args.grid:
        print(f"wrote {write_grid(load_pipeline(args.pipeline), args.grid)}")


if __name__ == "__main__":
    main()
