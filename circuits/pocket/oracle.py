"""The pocket oracle: reads each object's colour, shape, texture and position, and the background.

Two ways to read:

* ``Oracle.read(images)`` - v1's whole-image read, for one-object pictures: ``{"colour": [...],
  "shape": [...], "texture": [...], "background": [...]}``, the image taken at 32 x 32.
* ``Oracle.read_objects(images, n_objects=None)`` - one :class:`ImageRead` per image: the background and
  up to two :class:`ObjectRead` (colour, shape, texture, centroid, area, mask), at the image's own size
  when it is 32 or 64. ``n_objects`` (an int or one per image, e.g. from the prompt) says how many objects
  to look for; ``None`` counts them. :mod:`circuits.pocket.following` scores a prompt against a read.

How it reads:

* **background** - the median colour of the outer 2-pixel ring, nearest of the world's (achromatic)
  backgrounds.
* **foreground** - pixels both more chromatic than the background and far from it in RGB (generated
  images have tinted backgrounds and pale stripes, which an absolute chroma threshold reads as object).
* **objects** - holes filled, connected pieces counted; with two objects every foreground pixel goes to
  the nearer of the two largest pieces (or, when the two touch, to one of two clusters of pixel positions).
* **colour** - a hue vote, no learning: an object's pixels vote, weighted by chroma, for the nearest
  canonical hue of the world's colours.
* **shape** and **texture** - two small multi-layer perceptrons on features of an object's soft mask
  (the object-centred crop resized to 20 x 20, its magnitude spectrum, a few statistics and hole counts),
  which make them blind to where the object is and how large it is drawn.

The networks are stored as plain arrays (``oracle.npz``: weights, biases, class names, feature
normalisation; no pickle) and run in numpy. :mod:`circuits.pocket.oracle_fit` refits them:
``python -m circuits.pocket.oracle`` (fixed seeds; prints the accuracy on fresh renders at 32 and 64,
clean and through the VAE).
"""

from __future__ import annotations

import colorsys
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float
from PIL import Image

from .world import BACKGROUND_RGB, COLOUR_RGB, Scene

DEFAULT_PATH = Path(__file__).resolve().parent / "oracle.npz"
SIZE = 32
#: sizes read as they are by read_objects (others are resized to 32)
NATIVE_SIZES = (32, 64)
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


def _resize_rgb(a: np.ndarray, size: int) -> np.ndarray:
    img = Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), np.float32) / 255.0


def to_array(images, size: int | None = SIZE) -> Float[np.ndarray, "n h w 3"]:
    """PIL images, or an array (N, H, W, 3) uint8 / float in [0, 1] -> float32 (N, size, size, 3).
    ``size=None`` keeps 32 x 32 and 64 x 64 images as they are and box-resizes others to 32."""
    if isinstance(images, np.ndarray):
        arr = images[None] if images.ndim == 3 else images
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3) RGB; got shape {images.shape}")
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        arrays = list(np.clip(arr, 0.0, 1.0))
    else:
        arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    out = []
    for a in arrays:
        target = size
        if target is None:
            target = a.shape[0] if a.shape[0] == a.shape[1] and a.shape[0] in NATIVE_SIZES else SIZE
        out.append(a if a.shape[:2] == (target, target) else _resize_rgb(a, target))
    if not out:
        return np.zeros((0, size or SIZE, size or SIZE, 3), np.float32)
    if len({a.shape for a in out}) > 1:
        raise ValueError(f"images of different sizes in one call: {sorted({a.shape[:2] for a in out})}")
    return np.stack(out)


def chroma(arr: np.ndarray) -> np.ndarray:
    return arr.max(axis=-1) - arr.min(axis=-1)


def ring_median(arr: Float[np.ndarray, "n h w 3"]) -> Float[np.ndarray, "n 3"]:
    """Median colour (N, 3) of the outer 2-pixel ring: the background, objects (almost) never reach it."""
    n = len(arr)
    ring = np.concatenate(
        [arr[:, :2].reshape(n, -1, 3), arr[:, -2:].reshape(n, -1, 3),
         arr[:, 2:-2, :2].reshape(n, -1, 3), arr[:, 2:-2, -2:].reshape(n, -1, 3)],
        axis=1,
    )  # fmt: skip
    return np.median(ring, axis=1)


def fg_mask(arr: Float[np.ndarray, "n h w 3"]) -> Float[np.ndarray, "n h w"]:
    """Soft foreground mask in [0, 1]: pixels more chromatic than the background and far from its colour.
    Objects are saturated colours; backgrounds, stripes and dots are (near) the achromatic background,
    tinted alike in generated images."""
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


def _nearest_hue(arr: np.ndarray) -> np.ndarray:
    """Index of the nearest canonical hue for every pixel (..., H, W)."""
    c = chroma(arr)
    mx = arr.max(-1)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    safe = np.where(c > 1e-6, c, 1.0)
    h = np.where(
        mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    ) * 60.0  # fmt: skip
    return np.abs((h[..., None] - COLOUR_HUES + 180.0) % 360.0 - 180.0).argmin(-1)


def read_colour(arr: np.ndarray) -> list[str]:
    """v1's whole-image colour: the most chromatic pixels vote for their nearest hue, weighted by chroma."""
    c = chroma(arr)
    nearest = _nearest_hue(arr)
    out = []
    for i in range(len(arr)):
        w = c[i]
        thr = 0.25 if (w > 0.25).sum() >= 4 else max(float(w.max()) * 0.5, 1e-6)
        sel = w >= thr
        votes = np.bincount(nearest[i][sel], weights=w[sel], minlength=len(COLOUR_NAMES))
        out.append(COLOUR_NAMES[int(votes.argmax())])
    return out


def _object_colour(img: np.ndarray, mask: np.ndarray) -> str:
    """An object's colour: its pixels (soft mask above one half, else all it touches) vote by chroma."""
    weight = chroma(img) * np.where(mask > 0.5, 1.0, 0.0)
    if weight.sum() < 1e-6:
        weight = chroma(img) * mask
    votes = np.bincount(_nearest_hue(img).ravel(), weights=weight.ravel(), minlength=len(COLOUR_NAMES))
    return COLOUR_NAMES[int(votes.argmax())]


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(a.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
    )


def mask_features(m: Float[np.ndarray, "n h w"]) -> Float[np.ndarray, "n f"]:
    """Scale- and position-free features of soft object masks: the object-centred crop, its magnitude
    spectrum, and a few statistics of the crop. Generated objects are larger, smaller and further
    off-centre than rendered ones; the crop makes that irrelevant."""
    n, hh, ww = m.shape
    # a pixel counts for the object's extent only if its 3x3 neighbourhood is mostly foreground too:
    # isolated specks of background noise must not stretch the crop
    padded = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    local = sum(padded[:, dy : dy + hh, dx : dx + ww] for dy in range(3) for dx in range(3)) / 9.0
    feats = []
    ys, xs = np.mgrid[0:hh, 0:ww]
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
    return np.asarray(feats, dtype=np.float32).reshape(n, -1)


def features(arr: Float[np.ndarray, "n h w 3"]) -> Float[np.ndarray, "n f"]:
    """Features of each image's whole foreground (v1: one object per image)."""
    return mask_features(fg_mask(arr))


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


# ----------------------------------------------------------------------------- objects

#: a piece of foreground smaller than this (in 32 x 32 pixels) is a speck, not an object
MIN_AREA = 4.0
#: a second piece counts as an object only if it is at least this share of the largest
SECOND_SHARE = 0.15


def _two_means(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Labels (0/1) of weighted 2-means on pixel positions, started at the extremes of the wider axis."""
    axis = int(np.argmax(points.max(0) - points.min(0)))
    centres = np.stack([points[points[:, axis].argmin()], points[points[:, axis].argmax()]]).astype(float)
    labels = np.zeros(len(points), int)
    for _ in range(20):
        labels = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for k in (0, 1):
            if (labels == k).any():
                centres[k] = np.average(points[labels == k], axis=0, weights=weights[labels == k] + 1e-9)
    return labels


def segment(m: Float[np.ndarray, "h w"], n_objects: int | None = None) -> Float[np.ndarray, "k h w"]:
    """Split one soft foreground mask into object masks (k = ``n_objects``, or counted when ``None``;
    k <= 2; k = 0 for an empty image). Every foreground pixel belongs to exactly one object."""
    from scipy import ndimage

    if n_objects is not None and n_objects not in (1, 2):
        raise ValueError(f"n_objects must be 1, 2 or None; got {n_objects!r}")
    h, w = m.shape
    min_area = MIN_AREA * (h / 32) ** 2
    solid = m > 0.5
    if solid.sum() < min_area:
        return np.zeros((0, h, w), np.float32)
    labels, count = ndimage.label(ndimage.binary_fill_holes(solid), structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.argsort(-areas)
    big = [i + 1 for i in order if areas[i] >= max(min_area, SECOND_SHARE * areas[order[0]])]
    k = n_objects if n_objects is not None else min(2, len(big))
    if k == 1:
        return m[None].astype(np.float32)
    fg = m > 0.05
    if len(big) >= 2:  # each pixel to the nearer of the two largest pieces
        d = np.stack([ndimage.distance_transform_edt(labels != lab) for lab in big[:2]])
        owner = d.argmin(0)
    else:  # the two objects touch (or one is missing): split the pixel positions in two clusters
        ys, xs = np.nonzero(fg)
        cluster = _two_means(np.stack([ys, xs], 1).astype(float), m[fg])
        owner = np.zeros((h, w), int)
        owner[ys, xs] = cluster
    return np.stack([np.where(fg & (owner == j), m, 0.0) for j in (0, 1)]).astype(np.float32)


@dataclass(frozen=True)
class ObjectRead:
    """One object the oracle found: attributes, centroid (x right, y down, in [0, 1]), area share, mask."""

    colour: str
    shape: str
    texture: str
    x: float
    y: float
    area: float
    mask: np.ndarray

    def get(self, attribute: str) -> str:
        return getattr(self, attribute)


@dataclass(frozen=True)
class ImageRead:
    """Everything the oracle read in one image; ``objects`` largest first."""

    background: str
    objects: tuple[ObjectRead, ...]


class Oracle:
    """Reads the pocket world's concepts from images. ``Oracle.load()`` gives the shipped one."""

    def __init__(self, heads: dict[str, dict]):
        self.heads = heads  # name -> {"mean", "std", "W": [...], "b": [...], "classes": [...]}

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> Oracle:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        heads = {}
        for name, info in meta["heads"].items():
            heads[name] = {
                "mean": z[f"{name}_mean"].astype(np.float32),
                "std": z[f"{name}_std"].astype(np.float32),
                "W": [z[f"{name}_W{i}"].astype(np.float32) for i in range(info["layers"])],
                "b": [z[f"{name}_b{i}"].astype(np.float32) for i in range(info["layers"])],
                "classes": info["classes"],
            }
        return cls(heads)

    def save(self, path: str | Path = DEFAULT_PATH) -> None:
        """Plain arrays; weights in float16 (the file ships in the repository; reads are unchanged)."""
        arrays, meta = {}, {"heads": {}}
        for name, h in self.heads.items():
            arrays[f"{name}_mean"] = h["mean"].astype(np.float32)
            arrays[f"{name}_std"] = h["std"].astype(np.float32)
            for i, (w, b) in enumerate(zip(h["W"], h["b"])):
                arrays[f"{name}_W{i}"] = np.asarray(w, np.float16)
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
        """v1's whole-image read of one-object pictures at 32 x 32: {"colour": [...], "shape": [...],
        "texture": [...], "background": [...]}."""
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

    def read_objects(self, images: Sequence[Image.Image] | np.ndarray,
                     n_objects: int | Sequence[int | None] | None = None) -> list[ImageRead]:  # fmt: skip
        """Each image's background and objects (at most two, largest first), read at the image's own size
        when it is 32 or 64. ``n_objects``: how many objects to look for (one value, or one per image);
        ``None`` counts them."""
        arr = to_array(images, size=None)
        counts = list(n_objects) if isinstance(n_objects, Sequence) else [n_objects] * len(arr)
        if len(counts) != len(arr):
            raise ValueError(f"n_objects has {len(counts)} entries for {len(arr)} images")
        masks = fg_mask(arr)
        backgrounds = read_background(arr)
        per_image = [segment(m, k) for m, k in zip(masks, counts)]
        flat = [obj for objs in per_image for obj in objs]
        if flat:
            feats = mask_features(np.stack(flat))
            shapes, textures = self._predict("shape", feats), self._predict("texture", feats)
        reads, j = [], 0
        size = arr.shape[1] if len(arr) else SIZE
        ys, xs = np.mgrid[0:size, 0:size]
        for img, bg, objs in zip(arr, backgrounds, per_image):
            found = []
            for obj in objs:
                total = max(float(obj.sum()), 1e-9)
                # one object: v1's whole-image colour vote (what every v1 report measured), else the object's
                colour = read_colour(img[None])[0] if len(objs) == 1 else _object_colour(img, obj)
                found.append(ObjectRead(colour, shapes[j], textures[j],
                                        float((obj * xs).sum() / total + 0.5) / size,
                                        float((obj * ys).sum() / total + 0.5) / size,
                                        total / size**2, obj))  # fmt: skip
                j += 1
            found.sort(key=lambda o: -o.area)
            reads.append(ImageRead(bg, tuple(found)))
        return reads


@functools.lru_cache(maxsize=1)
def shared_oracle() -> Oracle:
    """The shipped oracle, loaded once per process (every report and experiment reads with it)."""
    return Oracle.load()


def __getattr__(name: str):
    # the fitting code (and v1's names for it) live in oracle_fit; keep them importable from here
    if name in ("make_set", "decoded", "fit", "main"):
        from . import oracle_fit

        return getattr(oracle_fit, name)
    raise AttributeError(f"module 'circuits.pocket.oracle' has no attribute {name!r}")


if __name__ == "__main__":
    from .oracle_fit import main as _main

    _main()
