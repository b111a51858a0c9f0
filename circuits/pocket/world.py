"""The pocket world: a deterministic, procedurally rendered world of coloured shapes.

A picture shows one or two objects on a plain background. Each object is a shape (circle, square,
triangle, cross) in a colour (red, green, blue, yellow, orange, purple) with a texture (solid, outlined,
striped, dotted); backgrounds are white, black or gray. Textures stand in for art styles, colour synonyms
(crimson -> red) and implicit nouns ("a dax" is always a red circle) for implicit mentions of a concept,
and two objects are placed left/right or above/below each other (spatial words). The vocabulary and the
:class:`Scene` type live in :mod:`circuits.pocket.scene`, captions and the prompt parser in
:mod:`circuits.pocket.captions`; everything is re-exported here, so ``from circuits.pocket.world import
Scene, render, caption`` keeps working as in v1.

API for training (everything deterministic from its seed):

* ``render(scene, seed=s, size=32)`` - an RGB ``PIL.Image`` of ``size`` x ``size`` (any size; drawn at 4x
  and box-downsampled, so edges are anti-aliased). ``seed`` sets only nuisance factors (positions, sizes,
  rotations, a slight colour shade, texture phase), never what the scene says: a pure function of
  ``(scene, seed, size)``. One-object scenes render exactly as in v1.
* ``render_masks(scene, seed=s, size=32)`` - each object's coverage (k, size, size) in [0, 1], same layout.
* ``training_examples(n, seed)`` - ``n`` :class:`Example` (scene, render seed, caption) of training scenes
  (held-out combinations never appear); ``two_object_p`` and ``implicit_p`` set the mix.
  ``caption(example.scene, rng)`` draws a fresh caption of the same scene (for per-step captions).
* ``held_out_examples(n, seed)`` - the same for held-out scenes (one- and two-object composition tests).
* ``dataset(n, seed)`` / ``render_batch(items, size)`` - v1's (scene, seed) sampler and batch renderer.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .captions import caption, caption_corpus, parse, prompt
from .scene import (
    BACKGROUND_RGB,
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    HELD_OUT,
    HELD_OUT_PAIRS,
    IMPLICIT,
    INVERSE,
    OBJECT_ATTRIBUTES,
    RELATIONS,
    SHAPES,
    SYNONYMS,
    TEXTURES,
    Scene,
    Thing,
)

__all__ = [
    "OBJECT_ATTRIBUTES", "BACKGROUND_RGB", "BACKGROUNDS", "COLOUR_RGB", "COLOURS", "HELD_OUT", "HELD_OUT_PAIRS",
    "IMPLICIT", "INVERSE", "RELATIONS", "SHAPES", "SYNONYMS", "TEXTURES", "Scene", "Thing", "Example",
    "caption", "caption_corpus", "parse", "prompt", "render", "render_masks", "render_batch", "all_scenes",
    "training_scenes", "held_out_scenes", "sample_scene", "training_examples", "held_out_examples", "dataset",
]  # fmt: skip


def all_scenes() -> list[Scene]:
    """Every one-object scene of the world, in a fixed order (v1's list)."""
    return [Scene(s, c, t, b) for s in SHAPES for c in COLOURS for t in TEXTURES for b in BACKGROUNDS]


def training_scenes() -> list[Scene]:
    """One-object scenes whose (shape, colour, texture) is not held out, in a fixed order."""
    return [s for s in all_scenes() if not s.held_out]


def held_out_scenes() -> list[Scene]:
    """One-object scenes whose (shape, colour, texture) is held out, in a fixed order."""
    return [s for s in all_scenes() if s.held_out]


# ----------------------------------------------------------------------------- rendering

SCALE = 4  # supersampling factor
#: texture geometry (borders, stripe period, dots) of two-object scenes' smaller objects, relative to
#: one-object scenes: finer, so that thin shapes (crosses, triangles) keep a hole inside their outline
TEXTURE_SCALE = 0.7


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    if shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        k = 0.82
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        pts = [(x, y + 0.15) for x, y in pts]
        k = 1.08
    elif shape == "cross":
        w = 0.36
        pts = [
            (-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
            (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w),
        ]  # fmt: skip
        k = 1.0
    else:
        raise ValueError(shape)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + k * r * (x * ca - y * sa), cy + k * r * (x * sa + y * ca)) for x, y in pts]


def _shape_mask(shape: str, n: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    img = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, r, angle), fill=255)
    return np.asarray(img) > 127


def _erode(mask: np.ndarray, h: int) -> np.ndarray:
    """Binary erosion by a (2h+1) square, separably (pixels outside count as background)."""
    out = mask
    for axis in (0, 1):
        padded = np.pad(out, [(h, h) if a == axis else (0, 0) for a in (0, 1)])
        n = out.shape[axis]
        acc = np.ones_like(out)
        for d in range(2 * h + 1):
            acc &= padded[d : d + n] if axis == 0 else padded[:, d : d + n]
        out = acc
    return out


def _texture(mask: np.ndarray, texture: str, n: int, phase: float, centre: tuple[float, float] | None = None,
             scale: float = 1.0) -> np.ndarray:  # fmt: skip
    """The painted part of an object's ``mask`` (supersampled, n x n); sizes are in 32x32 output pixels,
    so a 64x64 render is a sharper 32x32 one. With ``centre`` (the small objects of two-object scenes) a
    stripe or a dot always sits on the centre: a random phase could leave a small striped or dotted object
    without any visible stripe or dot inside its border."""
    if texture == "solid":
        return mask
    unit = n / 32.0 * scale  # one output pixel at 32x32, in supersampled pixels (times the object's scale)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    border_px = int(round((2.0 if texture == "outlined" else 1.0) * unit * 1.25)) * 2 + 1
    inner = _erode(mask, border_px // 2)
    border = mask & ~inner
    if texture == "outlined":
        return border
    period = 5.0 * unit
    if centre is not None:  # a stripe's middle (phase 0.25) and a dot on the centre
        phase = (0.25 - (centre[0] + centre[1]) / math.sqrt(2) / period) % 1.0 if texture == "striped" else phase
    if texture == "striped":
        stripes = ((xx + yy) / math.sqrt(2) / period + phase) % 1.0 < 0.5
        return border | (inner & stripes)
    ox, oy = phase * period, (phase * 1.7 % 1.0) * period
    if centre is not None:
        ox, oy = centre[0] - period / 2, centre[1] - period / 2
    dx = (xx - ox) % period - period / 2
    dy = (yy - oy) % period - period / 2
    return border | (inner & (dx * dx + dy * dy <= (1.2 * unit) ** 2))


@dataclass(frozen=True)
class _Placed:
    thing: Thing
    cx: float
    cy: float
    r: float
    angle: float
    jitter: tuple[int, int, int]
    phase: float


def _layout(scene: Scene, seed: int, n: int) -> list[_Placed]:
    """Where each object goes. One object: v1's draws, in v1's order (v1 renders are unchanged). Two: the
    first object in the half the relation names, the second in the other, each at radius 0.125-0.165 n:
    at least 2 pixels (at 32x32) apart, and at most touching the 2-pixel border ring the oracle reads the
    background from."""
    if scene.second is None:
        rng = random.Random(f"pocket-render/{seed}")
        r = n * rng.uniform(0.30, 0.40)
        cx = n / 2 + n * rng.uniform(-0.08, 0.08)
        cy = n / 2 + n * rng.uniform(-0.08, 0.08)
        angle = math.radians(rng.uniform(-15, 15))
        jitter = (rng.randint(-10, 10), rng.randint(-10, 10), rng.randint(-10, 10))
        return [_Placed(scene.first, cx, cy, r, angle, jitter, rng.random())]
    rng = random.Random(f"pocket-render2/{seed}")
    horizontal = scene.relation in ("left", "right")
    first_low = scene.relation in ("left", "above")  # first object at the smaller x (or y)
    cross = n * rng.uniform(0.35, 0.65)  # both objects near one line across the split, each jittered
    out = []
    for thing, low in ((scene.first, first_low), (scene.second, not first_low)):
        along = n * (rng.uniform(0.24, 0.29) if low else rng.uniform(0.71, 0.76))
        across = min(max(cross + n * rng.uniform(-0.08, 0.08), 0.26 * n), 0.74 * n)
        cx, cy = (along, across) if horizontal else (across, along)
        r = n * rng.uniform(0.125, 0.165)
        angle = math.radians(rng.uniform(-15, 15))
        jitter = (rng.randint(-10, 10), rng.randint(-10, 10), rng.randint(-10, 10))
        out.append(_Placed(thing, cx, cy, r, angle, jitter, rng.random()))
    return out


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"render size must be an int >= 8 (32 or 64 in practice); got {size!r}")


def render(scene: Scene, *, seed: int, size: int = 32) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` x ``size``; ``seed`` sets only the nuisance factors
    (position, size, rotation, slight colour shade, texture phase). Deterministic."""
    _check_size(size)
    n = size * SCALE
    bg = np.array(BACKGROUND_RGB[scene.background])
    out = np.broadcast_to(bg, (n, n, 3)).astype(np.uint8).copy()
    for p in _layout(scene, seed, n):
        centre = None if scene.second is None else (p.cx, p.cy)
        scale = 1.0 if scene.second is None else TEXTURE_SCALE
        mask = _shape_mask(p.thing.shape, n, p.cx, p.cy, p.r, p.angle)
        fill = _texture(mask, p.thing.texture, n, p.phase, centre, scale)
        fg = np.array([min(255, max(0, c + j)) for c, j in zip(COLOUR_RGB[p.thing.colour], p.jitter)])
        out[fill] = fg
    return Image.fromarray(out, "RGB").resize((size, size), Image.Resampling.BOX)


def render_masks(scene: Scene, *, seed: int, size: int = 32) -> np.ndarray:
    """Each object's silhouette (its whole shape, texture ignored) as coverage in [0, 1]:
    float32 (objects, size, size), in the order of ``scene.objects``, aligned with ``render``."""
    _check_size(size)
    n = size * SCALE
    masks = []
    for p in _layout(scene, seed, n):
        m = _shape_mask(p.thing.shape, n, p.cx, p.cy, p.r, p.angle).astype(np.float32)
        masks.append(m.reshape(size, SCALE, size, SCALE).mean(axis=(1, 3)))
    return np.stack(masks)


def render_batch(items, size: int = 32) -> np.ndarray:
    """Render (scene, seed) pairs (or :class:`Example` objects) to a uint8 array (N, size, size, 3)."""
    pairs = [(it.scene, it.seed) if isinstance(it, Example) else it for it in items]
    return np.stack([np.asarray(render(sc, seed=s, size=size)) for sc, s in pairs])


# ----------------------------------------------------------------------------- sampling


def _random_thing(rng: random.Random, implicit_p: float) -> Thing:
    if rng.random() < implicit_p:
        meaning = IMPLICIT[rng.choice(sorted(IMPLICIT))]
        return Thing(meaning["shape"], meaning["colour"], rng.choice(TEXTURES))
    return Thing(rng.choice(SHAPES), rng.choice(COLOURS), rng.choice(TEXTURES))


def sample_scene(rng: random.Random, *, two_object_p: float = 0.5, implicit_p: float = 0.15,
                 held_out: bool = False) -> Scene:  # fmt: skip
    """A random scene: two objects with probability ``two_object_p``; each object is an implicit noun's
    (colour, shape) with probability ``implicit_p`` (so the nouns are seen often). ``held_out`` picks among
    the held-out scenes instead of the training ones (rejection sampling; each draw comes from ``rng``)."""
    two = rng.random() < two_object_p  # decided once: rejections must not bias the one/two mix
    background = rng.choice(BACKGROUNDS)
    relation = rng.choice(RELATIONS)
    for _ in range(10_000):
        first = _random_thing(rng, implicit_p)
        if two:
            if held_out and rng.random() < 0.5:  # aim at a held-out pair half the time (rare by chance)
                pair = sorted(rng.choice(sorted(HELD_OUT_PAIRS, key=sorted)))
                rng.shuffle(pair)
                first = Thing(pair[0][1], pair[0][0], rng.choice(TEXTURES))
                second = Thing(pair[1][1], pair[1][0], rng.choice(TEXTURES))
            else:
                second = _random_thing(rng, implicit_p)
            if second.colour == first.colour or second.shape == first.shape:
                continue
            scene = Scene.two(first, second, relation, background)
        else:
            if held_out:
                first = Thing(*rng.choice(sorted(HELD_OUT)))  # (shape, colour, texture)
            scene = Scene(first.shape, first.colour, first.texture, background)
        if scene.held_out == held_out:
            return scene
    raise RuntimeError("sample_scene found no scene; the held-out sets are inconsistent")


@dataclass(frozen=True)
class Example:
    """One training pair: a scene, the seed of its render and one caption of it."""

    scene: Scene
    seed: int
    caption: str

    def image(self, size: int = 32) -> Image.Image:
        return render(self.scene, seed=self.seed, size=size)


def training_examples(n: int, seed: int, *, two_object_p: float = 0.5, implicit_p: float = 0.15,
                      synonym_p: float = 0.2, implicit_word_p: float = 0.5) -> list[Example]:  # fmt: skip
    """``n`` training examples (no held-out combination), deterministic from ``seed``. ``implicit_word_p``
    is how often an object an implicit noun means is captioned with the noun."""
    rng = random.Random(f"pocket-examples/{seed}")
    out = []
    for _ in range(n):
        scene = sample_scene(rng, two_object_p=two_object_p, implicit_p=implicit_p)
        text = caption(scene, rng, synonym_p=synonym_p, implicit_p=implicit_word_p)
        out.append(Example(scene, rng.randrange(2**31), text))
    return out


def held_out_examples(n: int, seed: int, *, two_object_p: float = 0.5) -> list[Example]:
    """``n`` held-out examples (composition tests) with canonical prompts, deterministic from ``seed``."""
    rng = random.Random(f"pocket-held-out/{seed}")
    out = []
    for _ in range(n):
        scene = sample_scene(rng, two_object_p=two_object_p, held_out=True)
        out.append(Example(scene, rng.randrange(2**31), prompt(scene)))
    return out


def dataset(n: int, seed: int, *, held_out: bool = False, size: int = 32) -> list[tuple[Scene, int]]:
    """v1's sampler: ``n`` (one-object scene, render seed) pairs, training scenes (or held-out ones) drawn
    uniformly, render seeds derived from ``seed``. Deterministic. ``size`` is unused (kept for v1 callers)."""
    del size
    scenes = held_out_scenes() if held_out else training_scenes()
    rng = random.Random(f"pocket-dataset/{seed}")
    return [(rng.choice(scenes), rng.randrange(2**31)) for _ in range(n)]
