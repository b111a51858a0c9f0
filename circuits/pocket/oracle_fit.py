"""Fitting and validating the pocket oracle's shape and texture heads (``python -m circuits.pocket.oracle``).

The fitting data are renders of the whole world (held-out combinations included: the oracle is a
measuring instrument, not part of the model), one- and two-object, at 32 x 32 and 64 x 64. Half of them
get mild zoom, blur and noise; the other half pass through the pocket VAE with noise added to their
latents, so that the oracle reads what a decoder produces (soft edges, tints, imperfect latents) and not
only clean renders. Every image is segmented exactly as :meth:`Oracle.read_objects` segments it, and each
piece is labelled with the object whose true centroid (from :func:`world.render_masks`) is nearest.
Refit when the VAE changes (``--vae``).

Validation (:func:`validate`) reads fresh renders, clean and decoded, at both sizes, and compares with
the scenes: per-object colour / shape / texture, the object count, and for two objects whether the
first object's centroid lies on the side of the second that the relation names.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .oracle import DEFAULT_PATH, DEFAULT_VAE, Oracle, fg_mask, mask_features, segment
from .scene import SHAPES, TEXTURES, Scene
from .world import all_scenes, render, render_masks, sample_scene

SIZES = (32, 64)


def _zoom(img: Image.Image, factor: float) -> Image.Image:
    """The image scaled by ``factor`` about its centre, cropped or padded (with its own border
    colour) back to its size: objects larger and smaller than the world draws them."""
    w, h = img.size
    big = img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
    if factor >= 1:
        left, top = (big.width - w) // 2, (big.height - h) // 2
        return big.crop((left, top, left + w, top + h))
    out = Image.new("RGB", (w, h), img.getpixel((0, 0)))
    out.paste(big, ((w - big.width) // 2, (h - big.height) // 2))
    return out


def _augment(img: Image.Image, rng: random.Random, zoom: bool = True) -> np.ndarray:
    if zoom and rng.random() < 0.5:
        img = _zoom(img, rng.uniform(0.8, 1.3))
    if rng.random() < 0.6:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8) * img.width / 32))
    a = np.asarray(img, np.float32) / 255.0
    if rng.random() < 0.6:
        nrng = np.random.default_rng(rng.randrange(2**31))
        a = a + nrng.normal(0, rng.uniform(0.005, 0.04), a.shape).astype(np.float32)
    return np.clip(a, 0, 1)


def make_set(n: int, seed: int, augment: bool) -> tuple[np.ndarray, list[Scene]]:
    """v1's set: ``n`` one-object renders at 32 x 32 (float in [0, 1]) and their scenes."""
    rng = random.Random(f"pocket-oracle/{seed}")
    scenes = all_scenes()
    items = [(rng.choice(scenes), rng.randrange(2**31)) for _ in range(n)]
    imgs = []
    for sc, s in items:
        im = render(sc, seed=s)
        imgs.append(_augment(im, rng) if augment else np.asarray(im, np.float32) / 255.0)
    return np.stack(imgs), [sc for sc, _ in items]


def make_scenes(n: int, seed: int, *, size: int, two_object_p: float = 0.5, augment: bool = False
                ) -> tuple[np.ndarray, list[Scene], list[int]]:  # fmt: skip
    """``n`` renders (float (n, size, size, 3)) of random scenes of the whole world, with scenes and seeds.
    Two-object images are never zoomed (their true masks must stay aligned)."""
    rng = random.Random(f"pocket-oracle2/{seed}/{size}")
    scenes = [sample_scene(rng, two_object_p=two_object_p, implicit_p=0.0, held_out=rng.random() < 0.1)
              for _ in range(n)]  # fmt: skip
    seeds = [rng.randrange(2**31) for _ in range(n)]
    imgs = []
    for sc, s in zip(scenes, seeds):
        im = render(sc, seed=s, size=size)
        imgs.append(_augment(im, rng, zoom=sc.second is None) if augment else np.asarray(im, np.float32) / 255)
    return np.stack(imgs), scenes, seeds


def decoded(arr: np.ndarray, vae_dir: str | Path, seed: int, max_noise: float = 0.6) -> np.ndarray:
    """``arr`` (N, H, W, 3) in [0, 1] through the VAE: encode, add Gaussian noise of a random
    strength up to ``max_noise`` latent standard deviations per image, decode."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(vae_dir), dtype=torch.float32, local_files_only=True).eval()
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, len(arr), 128):
            x = torch.from_numpy(np.ascontiguousarray(arr[i : i + 128])).permute(0, 3, 1, 2).mul(2).sub(1)
            z = vae.encode(x).latent_dist.mean
            strength = torch.rand(len(z), 1, 1, 1, generator=generator) * max_noise
            z = z + strength * z.std() * torch.randn(z.shape, generator=generator)
            y = vae.decode(z).sample.clamp(-1, 1).add(1).div(2)
            out.append(y.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out).astype(np.float32)


def _centroids(masks: np.ndarray) -> np.ndarray:
    """(k, 2) centroids (x, y) of (k, H, W) masks."""
    ys, xs = np.mgrid[0 : masks.shape[1], 0 : masks.shape[2]]
    total = masks.sum((1, 2)) + 1e-9
    return np.stack([(masks * xs).sum((1, 2)) / total, (masks * ys).sum((1, 2)) / total], 1)


def labelled_objects(arr: np.ndarray, scenes: list[Scene], seeds: list[int]) -> tuple[np.ndarray, list, list]:
    """Segment every image as the oracle does, with the scene's object count; label each piece with the
    nearest true object. Returns the pieces' masks, their objects, and (image index, object index)."""
    masks, things, where = [], [], []
    size = arr.shape[1]
    soft = fg_mask(arr)
    for i, (m, sc, s) in enumerate(zip(soft, scenes, seeds)):
        pieces = segment(m, len(sc.objects))
        if len(pieces) == 0:
            continue
        if len(sc.objects) == 1:
            owners = [0]
        else:
            truth = _centroids(render_masks(sc, seed=s, size=size))
            found = _centroids(pieces)
            direct = np.linalg.norm(found - truth, axis=1).sum()
            swapped = np.linalg.norm(found[::-1] - truth, axis=1).sum()
            owners = [0, 1] if direct <= swapped else [1, 0]
        for piece, owner in zip(pieces, owners):
            masks.append(piece)
            things.append(sc.objects[owner])
            where.append((i, owner))
    return np.stack(masks), things, where


def fit(n: int = 8000, seed: int = 0, hidden: int = 128, vae_dir: str | Path | None = DEFAULT_VAE) -> Oracle:
    """Fit the shape and texture heads on ``n`` images per size (32 and 64); with ``vae_dir`` half decoded."""
    from sklearn.neural_network import MLPClassifier

    feats, things = [], []
    for size in SIZES:
        arr, scenes, seeds = make_scenes(n, seed, size=size, augment=True)
        if vae_dir is not None:
            half = n // 2
            clean, clean_scenes, clean_seeds = make_scenes(half, seed + 500, size=size)
            arr[:half] = decoded(clean, vae_dir, seed + size)
            scenes[:half], seeds[:half] = clean_scenes, clean_seeds
        masks, objs, _ = labelled_objects(arr, scenes, seeds)
        feats.append(mask_features(masks))
        things += objs
    f = np.concatenate(feats)
    mean, std = f.mean(0), f.std(0) + 1e-3
    x = (f - mean) / std
    heads = {}
    for name, classes in (("shape", SHAPES), ("texture", TEXTURES)):
        y = np.array([classes.index(getattr(t, name)) for t in things])
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=80,
                            early_stopping=True, n_iter_no_change=8, random_state=seed)  # fmt: skip
        clf.fit(x, y)
        heads[name] = {
            "mean": mean, "std": std, "W": clf.coefs_, "b": clf.intercepts_,
            "classes": [classes[i] for i in clf.classes_],
        }  # fmt: skip
    return Oracle(heads)


def score(oracle: Oracle, arr: np.ndarray, scenes: list[Scene], seeds: list[int]) -> dict[str, float]:
    """Per-object accuracy of ``read_objects`` (told the object count) against the scenes, split by one- and
    two-object images, with the relation read from the centroids."""
    reads = oracle.read_objects(arr, [len(sc.objects) for sc in scenes])
    size = arr.shape[1]
    hits: dict[str, list[bool]] = {}
    for read, sc, s in zip(reads, scenes, seeds):
        kind = "one" if sc.second is None else "two"
        hits.setdefault("background", []).append(read.background == sc.background)
        hits.setdefault(f"{kind}_count", []).append(len(read.objects) == len(sc.objects))
        if len(read.objects) != len(sc.objects):
            continue
        truth = _centroids(render_masks(sc, seed=s, size=size)) / size
        found = np.array([[o.x, o.y] for o in read.objects])
        order = [0]
        if kind == "two":
            swapped = np.linalg.norm(found[::-1] - truth, axis=1).sum() < np.linalg.norm(found - truth, axis=1).sum()
            order = [1, 0] if swapped else [0, 1]
        for obj, k in zip(read.objects, order):
            for attribute in ("colour", "shape", "texture"):
                ok = obj.get(attribute) == getattr(sc.objects[k], attribute)
                hits.setdefault(f"{kind}_{attribute}", []).append(ok)
        if kind == "two":
            first, second = read.objects[order.index(0)], read.objects[order.index(1)]
            placed = {"left": first.x < second.x, "right": first.x > second.x,
                      "above": first.y < second.y, "below": first.y > second.y}[str(sc.relation)]  # fmt: skip
            hits.setdefault("two_relation", []).append(placed)
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(hits.items())}


def validate(oracle: Oracle, n: int = 600, seed: int = 1000, vae_dir: str | Path | None = DEFAULT_VAE) -> dict:
    """Accuracy on fresh renders at each size, clean and (with ``vae_dir``) through the VAE."""
    out = {}
    for size in SIZES:
        arr, scenes, seeds = make_scenes(n, seed, size=size)
        out[f"clean_{size}"] = score(oracle, arr, scenes, seeds)
        if vae_dir is not None:
            out[f"vae_{size}"] = score(oracle, decoded(arr, vae_dir, seed + size), scenes, seeds)
    arr1, scenes1 = make_set(n, seed, augment=False)
    out["v1_read_clean_32"] = oracle.accuracy(arr1, scenes1)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m circuits.pocket.oracle",
                                description="Fit the pocket oracle and report its accuracy.")  # fmt: skip
    p.add_argument("--n", type=int, default=8000, help="fitting images per size (32 and 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_PATH))
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--n-eval", type=int, default=600)
    p.add_argument("--vae", default=str(DEFAULT_VAE),
                   help="VAE folder whose decodings half the fitting images pass through ('none': renders only)")
    args = p.parse_args(argv)
    vae = None if args.vae == "none" else args.vae
    t0 = time.perf_counter()
    if args.eval_only:
        oracle = Oracle.load(args.out)
    else:
        oracle = fit(args.n, args.seed, vae_dir=vae)
        oracle.save(args.out)
        print(f"fitted in {time.perf_counter() - t0:.1f}s -> {args.out}")
    for name, acc in validate(oracle, args.n_eval, args.seed + 1000, vae).items():
        print(f"{name}: {acc}")


if __name__ == "__main__":
    main()
