"""The pocket world: a deterministic, procedurally rendered world of coloured shapes.

Every image shows one shape (circle, square, triangle, cross) in one colour (red, green, blue,
yellow, orange, purple) with one texture (solid, outlined, striped, dotted) on one plain
background (white, black, gray). Textures stand in for art styles, colour synonyms
(crimson, scarlet -> red, azure -> blue, ...) for implicit mentions of a concept.

Rendering is pure numpy/PIL: the scene is drawn at 4x the output size and box-downsampled, so
edges are anti-aliased. ``seed`` controls only nuisance factors (position, size, rotation,
a small colour jitter), never the concept, so ``render(scene, seed=s)`` is a pure function.

Some (shape, colour, texture) combinations are in :data:`HELD_OUT`: they never appear in the
training data, so prompt-following on them measures composition, not memorisation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple")
TEXTURES: tuple[str, ...] = ("solid", "outlined", "striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray")

#: synonym -> canonical colour
SYNONYMS: dict[str, str] = {
    "crimson": "red",
    "scarlet": "red",
    "azure": "blue",
    "cobalt": "blue",
    "emerald": "green",
    "golden": "yellow",
    "tangerine": "orange",
    "violet": "purple",
}

#: canonical RGB of each colour (hues roughly 0, 125, 225, 53, 32, 280 degrees)
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 50),
    "blue": (40, 80, 225),
    "yellow": (235, 210, 30),
    "orange": (245, 135, 20),
    "purple": (145, 50, 195),
}

BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}

#: (shape, colour, texture) combinations never shown in training (any background)
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("circle", "red", "striped"),
        ("square", "blue", "dotted"),
        ("triangle", "green", "outlined"),
        ("cross", "yellow", "solid"),
        ("circle", "purple", "dotted"),
        ("square", "orange", "striped"),
        ("triangle", "yellow", "striped"),
        ("cross", "purple", "outlined"),
    }
)


@dataclass(frozen=True)
class Scene:
    """One concept combination of the pocket world."""

    shape: str
    colour: str
    texture: str
    background: str

    def __post_init__(self) -> None:
        colour = SYNONYMS.get(self.colour, self.colour)
        if colour != self.colour:
            object.__setattr__(self, "colour", colour)
        for value, allowed, what in (
            (self.shape, SHAPES, "shape"),
            (self.colour, COLOURS, "colour"),
            (self.texture, TEXTURES, "texture"),
            (self.background, BACKGROUNDS, "background"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {allowed}")

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.texture)

    @property
    def held_out(self) -> bool:
        return self.combo in HELD_OUT


def all_scenes() -> list[Scene]:
    """Every scene of the world, in a fixed order."""
    return [
        Scene(s, c, t, b) for s in SHAPES for c in COLOURS for t in TEXTURES for b in BACKGROUNDS
    ]


def training_scenes() -> list[Scene]:
    """Scenes whose (shape, colour, texture) is not held out, in a fixed order."""
    return [s for s in all_scenes() if not s.held_out]


def held_out_scenes() -> list[Scene]:
    """Scenes whose (shape, colour, texture) is held out, in a fixed order."""
    return [s for s in all_scenes() if s.held_out]


# ----------------------------------------------------------------------------- rendering

SCALE = 4  # supersampling factor


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
    return img


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


def render(scene: Scene, *, seed: int, size: int = 32) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` x ``size``; ``seed`` sets only the jitter
    (position, size, rotation, slight colour shade). Deterministic."""
    rng = random.Random(f"pocket-render/{seed}")
    n = size * SCALE
    r = n * rng.uniform(0.30, 0.40)
    cx = n / 2 + n * rng.uniform(-0.08, 0.08)
    cy = n / 2 + n * rng.uniform(-0.08, 0.08)
    angle = math.radians(rng.uniform(-15, 15))
    jitter = [rng.randint(-10, 10) for _ in range(3)]
    phase = rng.random()

    mask_img = _shape_mask(scene.shape, n, cx, cy, r, angle)
    mask = np.asarray(mask_img) > 127
    unit = n / 32.0  # one output pixel at 32x32, in supersampled pixels
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)

    if scene.texture == "solid":
        fill = mask
    else:
        border_px = int(round((2.0 if scene.texture == "outlined" else 1.0) * unit * 1.25)) * 2 + 1
        inner = _erode(mask, border_px // 2)
        border = mask & ~inner
        if scene.texture == "outlined":
            fill = border
        elif scene.texture == "striped":
            period = 5.0 * unit
            stripes = ((xx + yy) / math.sqrt(2) / period + phase) % 1.0 < 0.5
            fill = border | (inner & stripes)
        else:  # dotted
            period = 5.0 * unit
            ox, oy = phase * period, (phase * 1.7 % 1.0) * period
            dx = (xx - ox) % period - period / 2
            dy = (yy - oy) % period - period / 2
            dots = dx * dx + dy * dy <= (1.2 * unit) ** 2
            fill = border | (inner & dots)

    fg = np.array([min(255, max(0, c + j)) for c, j in zip(COLOUR_RGB[scene.colour], jitter)])
    bg = np.array(BACKGROUND_RGB[scene.background])
    out = np.where(fill[..., None], fg[None, None, :], bg[None, None, :]).astype(np.uint8)
    return Image.fromarray(out, "RGB").resize((size, size), Image.Resampling.BOX)


# ----------------------------------------------------------------------------- captions

_TEMPLATES: tuple[str, ...] = (
    "{a} {c} {s}",
    "{a} {t} {c} {s}",
    "{a} {c} {s} on {ab} {b} background",
    "{a} {t} {c} {s} on {ab} {b} background",
    "a photo of {a} {c} {s}",
    "a photo of {a} {t} {c} {s} on {ab} {b} background",
    "a picture of {a} {t} {c} {s}",
    "a drawing of {a} {c} {s}, {t}",
    "{c} {s}",
    "{t} {c} {s}",
    "{c} {s}, {t}, {b} background",
    "an image of {a} {c} {s} on {b}",
    "{a} {c} {t} {s}",
    "a {b} background with {a} {c} {s}",
    "a {b} background with {a} {t} {c} {s}",
    "{a} {s} in {c}",
    "{a} {t} {s} in {c} on {ab} {b} background",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(
    scene: Scene,
    rng_or_seed: random.Random | int,
    *,
    synonym_p: float = 0.2,
    colour_word: str | None = None,
    template: int | None = None,
) -> str:
    """A caption of ``scene`` from one of many templates; some omit texture and/or background,
    and with probability ``synonym_p`` the colour is named by a synonym. ``colour_word`` forces
    the colour word, ``template`` the template index."""
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else random.Random(rng_or_seed)
    if colour_word is None:
        syns = [k for k, v in SYNONYMS.items() if v == scene.colour]
        colour_word = rng.choice(syns) if syns and rng.random() < synonym_p else scene.colour
    idx = rng.randrange(len(_TEMPLATES)) if template is None else template
    tpl = _TEMPLATES[idx]
    first = tpl.split("}")[0].lstrip("{")
    first_word = {"c": colour_word, "t": scene.texture, "s": scene.shape}.get(first, "")
    words = {"c": colour_word, "t": scene.texture, "s": scene.shape, "b": scene.background}
    # the article agrees with the word right after it
    after_a = tpl.split("{a} ", 1)[1].split("}")[0].lstrip("{") if "{a}" in tpl else first
    a = _article(words.get(after_a, first_word or "x"))
    return tpl.format(a=a, ab=_article(scene.background), **words)


def prompt(scene: Scene, *, colour_word: str | None = None, with_texture: bool = True) -> str:
    """The canonical evaluation prompt: 'a striped red circle on a white background'."""
    c = colour_word or scene.colour
    t = f"{scene.texture} " if with_texture else ""
    first = t or c
    return f"{_article(first)} {t}{c} {scene.shape} on {_article(scene.background)} {scene.background} background"


def named_attributes(prompt: str) -> dict[str, str]:
    """The pocket attributes a prompt names: ``{"colour": "red", "shape": "circle", ...}``."""
    named: dict[str, str] = {}
    for word in prompt.lower().replace(",", " ").split():
        word = SYNONYMS.get(word, word)
        for attribute, values in (("colour", COLOURS), ("shape", SHAPES), ("texture", TEXTURES)):
            if word in values and attribute not in named:
                named[attribute] = word
    return named


def caption_corpus(n: int = 20000, seed: int = 0) -> Iterator[str]:
    """Captions for tokenizer training: every template x every word at least once, then random."""
    scenes = all_scenes()
    for i in range(len(_TEMPLATES)):
        for sc in scenes:
            yield caption(sc, i, synonym_p=0.0, template=i)
        for syn, canon in SYNONYMS.items():
            yield caption(Scene("circle", canon, "solid", "white"), 0, colour_word=syn, template=i)
    rng = random.Random(seed)
    for _ in range(n):
        yield caption(rng.choice(scenes), rng)


def dataset(n: int, seed: int, *, held_out: bool = False, size: int = 32):
    """``n`` (scene, render seed) pairs: training scenes (or held-out ones) drawn uniformly,
    with render seeds derived from ``seed``. Deterministic."""
    scenes = held_out_scenes() if held_out else training_scenes()
    rng = random.Random(f"pocket-dataset/{seed}")
    return [(rng.choice(scenes), rng.randrange(2**31)) for _ in range(n)]


def render_batch(items, size: int = 32) -> np.ndarray:
    """Render (scene, seed) pairs to a uint8 array (N, size, size, 3)."""
    return np.stack([np.asarray(render(sc, seed=s, size=size)) for sc, s in items])
