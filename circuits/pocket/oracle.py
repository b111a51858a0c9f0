"""The pocket oracle: reads colour, shape, texture and background back from an image.

* **background** - the median colour of the outer ring of pixels, nearest of the world's
  (achromatic) backgrounds.
* **colour** - a hue vote, no learning: pixels with enough chroma (max - min of RGB) vote, weighted
  by chroma, for the nearest canonical hue of the world's colours.
* **shape** and **texture** - two small multi-layer perceptrons fitted with scikit-learn on
  foreground-mask features (the mask, a crop of it centred on the object and resized, and the
  magnitude spectrum of that crop, which sees stripes and dots wherever they are). The foreground
  is what is both more chromatic than the background and far from it in RGB, the background being
  the median of the outer ring: generated images have tinted backgrounds and pale stripes, which an
  absolute chroma threshold reads as object.

The fitted networks are shipped as plain arrays (``oracle.npz``: weights, biases, class names and
the feature normalisation), and the forward pass is numpy, so reading does not depend on the
scikit-learn version and no pickle is ever loaded. Refit with ``python -m circuits.pocket.oracle``
(fixed seeds; it prints the accuracy on fresh clean renders).

The fitting data are renders of every scene of the world (held-out combinations included: the
oracle is a measuring instrument, not part of the model): half with mild blur and noise, half
passed through the pocket VAE with noise added to their latents, so that the oracle reads what the
decoder produces (soft edges, tints, imperfect latents) and not only clean renders. Refit it when
the VAE changes.
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .world import BACKGROUND_RGB, COLOUR_RGB, SHAPES, TEXTURES, Scene, all_scenes, render

DEFAULT_PATH = Path(__file__).resolve().parent / "oracle.npz"
SIZE = 32
CROP = 20
# foreground ramps: chroma above the background's, and RGB distance from it (both in [0, 1] units)
CHROMA_LO, CHROMA_HI = 0.06, 0.22
DIST_LO, DIST_HI = 0.10, 0.28
DEFAULT_VAE = Path(__file__).resolve().parent / "pipeline" / "vae"


def _hue_deg(rgb) -> float:
    h, _, _ = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    return h * 360.0


COLOUR_NAMES = tuple(COLOUR_RGB)
COLOUR_HUES = np.array([_hue_deg(COLOUR_RGB[c]) for c in COLOUR_NAMES])
BACKGROUND_NAMES = tuple(BACKGROUND_RGB)
BACKGROUND_VALUES = np.array([BACKGROUND_RGB[b] for b in BACKGROUND_NAMES], dtype=np.float32) / 255


def to_array(images) -> np.ndarray:
    """PIL images, or an array (N, H, W, 3) uint8 / float in [0, 1] -> float32 (N, 32, 32, 3)."""
    if isinstance(images, np.ndarray):
        arr = images
        if arr.ndim == 3:
            arr = arr[None]
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        if arr.shape[1:3] != (SIZE, SIZE):
            arr = np.stack(
                [
                    np.asarray(
                        Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).resize(
                            (SIZE, SIZE), Image.Resampling.BOX
                        )
                    )
                    for a in arr
                ]
            ).astype(np.float32) / 255.0
        return np.clip(arr, 0.0, 1.0)
    out = []
    for im in images:
        im = im.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.Resampling.BOX)
        out.append(np.asarray(im, dtype=np.float32) / 255.0)
    return np.stack(out) if out else np.zeros((0, SIZE, SIZE, 3), np.float32)


def chroma(arr: np.ndarray) -> np.ndarray:
    return arr.max(axis=-1) - arr.min(axis=-1)


def ring_median(arr: np.ndarray) -> np.ndarray:
    """Median colour (N, 3) of the outer 2-pixel ring: the background, objects never reach it."""
    ring = np.concatenate(
        [arr[:, :2].reshape(len(arr), -1, 3), arr[:, -2:].reshape(len(arr), -1, 3),
         arr[:, 2:-2, :2].reshape(len(arr), -1, 3), arr[:, 2:-2, -2:].reshape(len(arr), -1, 3)],
        axis=1,
    )  # fmt: skip
    return np.median(ring, axis=1)


def fg_mask(arr: np.ndarray) -> np.ndarray:
    """Soft foreground mask in [0, 1] (N, 32, 32): pixels more chromatic than the background and far
    from its colour. Objects are saturated colours; backgrounds, stripes and dots are (near) the
    achromatic background, tinted alike in generated images."""
    bg = ring_median(arr)[:, None, None, :]
    more_chroma = chroma(arr) - chroma(bg)
    distance = np.sqrt(((arr - bg) ** 2).sum(-1) / 3.0)
    by_chroma = np.clip((more_chroma - CHROMA_LO) / (CHROMA_HI - CHROMA_LO), 0.0, 1.0)
    by_distance = np.clip((distance - DIST_LO) / (DIST_HI - DIST_LO), 0.0, 1.0)
    return np.minimum(by_chroma, by_distance)


def read_background(arr: np.ndarray) -> list[str]:
    med = ring_median(arr)
    d = ((med[:, None, :] - BACKGROUND_VALUES[None]) ** 2).sum(-1)
    return [BACKGROUND_NAMES[i] for i in d.argmin(1)]


def read_colour(arr: np.ndarray) -> list[str]:
    c = chroma(arr)
    mx = arr.max(-1)
    mn = arr.min(-1)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    safe = np.where(c > 1e-6, c, 1.0)
    h = np.where(
        mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    ) * 60.0  # fmt: skip
    del mn
    # circular distance to each canonical hue -> nearest colour per pixel
    dist = np.abs((h[..., None] - COLOUR_HUES + 180.0) % 360.0 - 180.0)
    nearest = dist.argmin(-1)  # (N, 32, 32)
    out = []
    for i in range(len(arr)):
        w = c[i]
        thr = 0.25 if (w > 0.25).sum() >= 4 else max(float(w.max()) * 0.5, 1e-6)
        sel = w >= thr
        votes = np.bincount(nearest[i][sel], weights=w[sel], minlength=len(COLOUR_NAMES))
        out.append(COLOUR_NAMES[int(votes.argmax())])
    return out


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(a.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
    )


def features(arr: np.ndarray) -> np.ndarray:
    """Scale- and position-free features (N, F) of the foreground mask: the object-centred crop,
    its magnitude spectrum, and a few statistics of the crop. Generated objects are larger,
    smaller and further off-centre than rendered ones; the crop makes that irrelevant."""
    m = fg_mask(arr)
    # a pixel counts for the object's extent only if its 3x3 neighbourhood is mostly foreground too:
    # isolated specks of background noise must not stretch the crop
    padded = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    local = sum(padded[:, dy : dy + SIZE, dx : dx + SIZE] for dy in range(3) for dx in range(3)) / 9.0
    feats = []
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    for mi, li in zip(m, local):
        if mi.sum() < 1e-3:
            crop = np.zeros((CROP, CROP), np.float32)
        else:
            sel = (mi > 0.5) & (li > 0.5)
            if sel.sum() < 2:
                sel = mi > 0
            y0, y1 = ys[sel].min(), ys[sel].max() + 1
            x0, x1 = xs[sel].min(), xs[sel].max() + 1
            side = max(y1 - y0, x1 - x0) + 2
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
            pad = np.pad(mi, side)
            crop = _resize(pad[top + side : top + 2 * side, left + side : left + 2 * side], CROP)
        spec = np.abs(np.fft.rfft2(crop - crop.mean())) / (CROP * CROP / 4)
        stats = [float(crop.mean()), float((crop > 0.5).mean()),
                 float(np.abs(np.diff(crop, axis=0)).mean()), float(np.abs(np.diff(crop, axis=1)).mean())]  # fmt: skip
        feats.append(np.concatenate([crop.ravel(), spec.ravel(), stats, _topology(crop)]))
    return np.asarray(feats, dtype=np.float32)


def _topology(crop: np.ndarray) -> list[float]:
    """Holes and pieces of the crop at three thresholds: outlined, striped and dotted objects enclose
    background, solid ones do not, however small and faint the hole (decoders shrink them)."""
    from scipy import ndimage

    out = []
    for threshold in (0.35, 0.5, 0.65):
        solid = crop > threshold
        filled = ndimage.binary_fill_holes(solid)
        holes = filled & ~solid
        out += [float(holes.sum() / max(filled.sum(), 1)), float(np.log1p(ndimage.label(holes)[1])),
                float(np.log1p(ndimage.label(solid)[1]))]  # fmt: skip
    return out


class Oracle:
    """Reads the pocket world's concepts from images. ``Oracle.load()`` gives the shipped one."""

    def __init__(self, heads: dict[str, dict]):
        self.heads = heads  # name -> {"mean", "std", "W": [...], "b": [...], "classes": [...]}

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> "Oracle":
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        heads = {}
        for name, info in meta["heads"].items():
            heads[name] = {
                "mean": z[f"{name}_mean"],
                "std": z[f"{name}_std"],
                "W": [z[f"{name}_W{i}"] for i in range(info["layers"])],
                "b": [z[f"{name}_b{i}"] for i in range(info["layers"])],
                "classes": info["classes"],
            }
        return cls(heads)

    def save(self, path: str | Path = DEFAULT_PATH) -> None:
        arrays, meta = {}, {"heads": {}}
        for name, h in self.heads.items():
            arrays[f"{name}_mean"] = h["mean"].astype(np.float32)
            arrays[f"{name}_std"] = h["std"].astype(np.float32)
            for i, (w, b) in enumerate(zip(h["W"], h["b"])):
                arrays[f"{name}_W{i}"] = np.asarray(w, np.float32)
                arrays[f"{name}_b{i}"] = np.asarray(b, np.float32)
            meta["heads"][name] = {"layers": len(h["W"]), "classes": list(h["classes"])}
        arrays["meta"] = np.array(json.dumps(meta))
        np.savez_compressed(path, **arrays)

    def _predict(self, name: str, feats: np.ndarray) -> list[str]:
        h = self.heads[name]
        x = (feats - h["mean"]) / h["std"]
        for i, (w, b) in enumerate(zip(h["W"], h["b"])):
            x = x @ w + b
            if i < len(h["W"]) - 1:
                x = np.maximum(x, 0.0)
        return [h["classes"][i] for i in x.argmax(1)]

    def read(self, images: Sequence[Image.Image] | np.ndarray) -> dict[str, list[str]]:
        """Concepts of each image: {"colour": [...], "shape": [...], "texture": [...],
        "background": [...]}."""
        arr = to_array(images)
        if len(arr) == 0:
            return {"colour": [], "shape": [], "texture": [], "background": []}
        f = features(arr)
        return {
            "colour": read_colour(arr),
            "shape": self._predict("shape", f),
            "texture": self._predict("texture", f),
            "background": read_background(arr),
        }

    def accuracy(self, images, scenes: Sequence[Scene]) -> dict[str, float]:
        r = self.read(images)
        return {
            k: float(np.mean([p == getattr(s, k) for p, s in zip(r[k], scenes)]))
            for k in ("colour", "shape", "texture", "background")
        }


# ----------------------------------------------------------------------------- fitting


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


def _augment(img: Image.Image, rng: random.Random) -> np.ndarray:
    if rng.random() < 0.5:
        img = _zoom(img, rng.uniform(0.8, 1.3))
    if rng.random() < 0.6:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8)))
    a = np.asarray(img, np.float32) / 255.0
    if rng.random() < 0.6:
        nrng = np.random.default_rng(rng.randrange(2**31))
        a = a + nrng.normal(0, rng.uniform(0.005, 0.04), a.shape).astype(np.float32)
    return np.clip(a, 0, 1)


def make_set(n: int, seed: int, augment: bool) -> tuple[np.ndarray, list[Scene]]:
    rng = random.Random(f"pocket-oracle/{seed}")
    scenes = all_scenes()
    items = [(rng.choice(scenes), rng.randrange(2**31)) for _ in range(n)]
    imgs = []
    for sc, s in items:
        im = render(sc, seed=s)
        imgs.append(_augment(im, rng) if augment else np.asarray(im, np.float32) / 255.0)
    return np.stack(imgs), [sc for sc, _ in items]


def decoded(arr: np.ndarray, vae_dir: str | Path, seed: int, max_noise: float = 0.6) -> np.ndarray:
    """``arr`` (N, 32, 32, 3) in [0, 1] through the VAE: encode, add Gaussian noise of a random
    strength up to ``max_noise`` latent standard deviations per image, decode."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(vae_dir), dtype=torch.float32, local_files_only=True).eval()
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, len(arr), 256):
            x = torch.from_numpy(arr[i : i + 256]).permute(0, 3, 1, 2).mul(2).sub(1)
            z = vae.encode(x).latent_dist.mean
            strength = torch.rand(len(z), 1, 1, 1, generator=generator) * max_noise
            z = z + strength * z.std() * torch.randn(z.shape, generator=generator)
            y = vae.decode(z).sample.clamp(-1, 1).add(1).div(2)
            out.append(y.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out).astype(np.float32)


def fit(n: int = 8000, seed: int = 0, hidden: int = 128, vae_dir: str | Path | None = DEFAULT_VAE) -> Oracle:
    """Fit the shape and texture heads on ``n`` renders; with ``vae_dir``, half of them are decoded."""
    from sklearn.neural_network import MLPClassifier

    arr, scenes = make_set(n, seed, augment=True)
    if vae_dir is not None:
        half = n // 2
        clean, clean_scenes = make_set(half, seed + 500, augment=False)
        arr[:half] = decoded(clean, vae_dir, seed)
        scenes[:half] = clean_scenes
    f = features(arr)
    mean, std = f.mean(0), f.std(0) + 1e-3
    x = (f - mean) / std
    heads = {}
    for name, classes in (("shape", SHAPES), ("texture", TEXTURES)):
        y = np.array([classes.index(getattr(s, name)) for s in scenes])
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=60,
                            early_stopping=True, n_iter_no_change=8, random_state=seed)  # fmt: skip
        clf.fit(x, y)
        heads[name] = {
            "mean": mean, "std": std, "W": clf.coefs_, "b": clf.intercepts_,
            "classes": [classes[i] for i in clf.classes_],
        }  # fmt: skip
    return Oracle(heads)


@functools.lru_cache(maxsize=1)
def shared_oracle() -> Oracle:
    """The shipped oracle, loaded once per process (every report and experiment reads with it)."""
    return Oracle.load()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m circuits.pocket.oracle",
                                description="Fit the pocket oracle and report its accuracy.")  # fmt: skip
    p.add_argument("--n", type=int, default=8000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_PATH))
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--vae", default=str(DEFAULT_VAE),
                   help="VAE folder whose decodings half the fitting images pass through ('none': renders only)")
    args = p.parse_args(argv)
    import time

    t0 = time.perf_counter()
    if args.eval_only:
        oracle = Oracle.load(args.out)
    else:
        oracle = fit(args.n, args.seed, vae_dir=None if args.vae == "none" else args.vae)
        oracle.save(args.out)
        print(f"fitted in {time.perf_counter() - t0:.1f}s -> {args.out}")
    arr, scenes = make_set(1000, args.seed + 1000, augment=False)
    print("clean renders (1000):", oracle.accuracy(arr, scenes))
    if args.vae != "none":
        print("decoded renders (1000):", oracle.accuracy(decoded(arr, args.vae, args.seed + 1000), scenes))


if __name__ == "__main__":
    main()
