"""Words for pocket pictures: captions for training, canonical prompts for evaluation, and the parser
that reads a prompt back into what it asks for.

* :func:`caption` - a random caption of a :class:`~circuits.pocket.scene.Scene`, varying word order and
  phrasing ("a red circle", "a circle that is red", "red circle, striped, white background",
  "a blue square to the left of a yellow triangle", "a dax on the left and a wug on the right").
  Captions may leave out texture, background or (rarely) the relation; they never contradict the scene.
* :func:`prompt` - the canonical evaluation prompt ("a striped red circle on a white background").
* :func:`parse` - what a prompt asks for: per object the attributes it *names* and those it only
  *implies* through an implicit noun, the relation, the background. ``parse(prompt(s)).scene() == s``.
* :func:`caption_corpus` - text for training the tokenizer: every word of the world at least once.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .scene import BACKGROUNDS, COLOURS, IMPLICIT, INVERSE, RELATIONS, SHAPES, SYNONYMS, TEXTURES, Scene, Thing

# v1's single-object templates (indices are part of the API: ``caption(..., template=i)``), then v2's
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
    # v2: more word orders
    "{a} {s} that is {c}",
    "{a} {t} {s} that is {c}",
    "{a} {s} that is {c} on {ab} {b} background",
    "{c} {s} on {ab} {b} background",
    "on {ab} {b} background, {a} {t} {c} {s}",
)

#: object phrases for two-object captions ({a} is the article agreeing with the next word)
_OBJECT_FORMS: tuple[str, ...] = ("{a} {c} {s}", "{a} {t} {c} {s}", "{a} {s} in {c}", "{a} {t} {s} that is {c}")
_NOUN_FORMS: tuple[str, ...] = ("{a} {n}", "{a} {t} {n}")

#: relation words placing the first-named object relative to the second
_BETWEEN: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of", "on the left of"),
    "right": ("to the right of", "right of", "on the right of"),
    "above": ("above", "on top of"),
    "below": ("below", "under", "beneath"),
}
#: where one object is in the frame ("a dax on the left and a wug on the right")
_PLACE: dict[str, str] = {
    "left": "on the left", "right": "on the right", "above": "at the top", "below": "at the bottom"
}

_PAIR_FRAMES: tuple[str, ...] = (
    "{A} {rel} {B}",
    "{A} {rel} {B} on {ab} {b} background",
    "a photo of {A} {rel} {B}",
    "a {b} background with {A} {rel} {B}",
    "{A} {here} and {B} {there}",
    "{A} {here} and {B} {there}, {b} background",
    "{A} and {B}",  # relation left unsaid
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fill(template: str, words: dict[str, str]) -> str:
    """Format ``template``; each ``{a}`` becomes the article agreeing with the word formatted after it."""
    out = template.format(a="\0", ab=_article(words.get("b", "x")), **words)
    return re.sub(r"\0 (\w)", lambda m: f"{_article(m.group(1))} {m.group(1)}", out)


def _colour_word(colour: str, rng: random.Random, synonym_p: float) -> str:
    syns = [k for k, v in SYNONYMS.items() if v == colour]
    return rng.choice(syns) if syns and rng.random() < synonym_p else colour


def _object_phrase(thing: Thing, rng: random.Random, *, synonym_p: float, implicit_p: float) -> str:
    noun = thing.implicit_noun
    if noun is not None and rng.random() < implicit_p:
        return _fill(rng.choice(_NOUN_FORMS), {"n": noun, "t": thing.texture})
    c = _colour_word(thing.colour, rng, synonym_p)
    return _fill(rng.choice(_OBJECT_FORMS), {"c": c, "s": thing.shape, "t": thing.texture})


def caption(
    scene: Scene,
    rng_or_seed: random.Random | int,
    *,
    synonym_p: float = 0.2,
    implicit_p: float = 0.5,
    colour_word: str | None = None,
    template: int | None = None,
) -> str:
    """A random caption of ``scene``. With probability ``synonym_p`` a colour is named by a synonym, with
    ``implicit_p`` an object that an implicit noun means is named by the noun. ``colour_word`` forces the
    (first) colour word and ``template`` the single-object template index (both as in v1; ``template``
    turns implicit nouns off)."""
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else random.Random(rng_or_seed)
    if scene.second is not None:
        return _pair_caption(scene, rng, synonym_p=synonym_p, implicit_p=implicit_p)
    if colour_word is None:
        colour_word = _colour_word(scene.colour, rng, synonym_p)
    idx = rng.randrange(len(_TEMPLATES)) if template is None else template
    tpl = _TEMPLATES[idx]
    noun = scene.first.implicit_noun
    if template is None and noun is not None and "{c} {s}" in tpl and rng.random() < implicit_p:
        return _fill(tpl.replace("{c} {s}", "{n}"), {"n": noun, "t": scene.texture, "b": scene.background})
    return _fill(tpl, {"c": colour_word, "t": scene.texture, "s": scene.shape, "b": scene.background})


def _pair_caption(scene: Scene, rng: random.Random, *, synonym_p: float, implicit_p: float) -> str:
    if rng.random() < 0.5:  # name either object first
        scene = scene.swapped()
    assert scene.second is not None and scene.relation is not None
    frame = rng.choice(_PAIR_FRAMES)
    first = _object_phrase(scene.first, rng, synonym_p=synonym_p, implicit_p=implicit_p)
    second = _object_phrase(scene.second, rng, synonym_p=synonym_p, implicit_p=implicit_p)
    words = {
        "A": first,
        "B": second,
        "rel": rng.choice(_BETWEEN[scene.relation]),
        "here": _PLACE[scene.relation],
        "there": _PLACE[INVERSE[scene.relation]],
        "b": scene.background,
    }
    return _fill(frame, words)


def prompt(
    scene: Scene, *, colour_word: str | None = None, with_texture: bool = True, implicit: bool = False
) -> str:
    """The canonical evaluation prompt: 'a striped red circle on a white background', or for two objects
    'a striped red circle to the left of a dotted blue square on a white background'. ``colour_word``
    replaces the first object's colour; ``implicit`` names objects by their implicit noun where one exists."""

    def phrase(thing: Thing, colour: str) -> str:
        t = f"{thing.texture} " if with_texture else ""
        noun = thing.implicit_noun if implicit else None
        body = f"{t}{noun}" if noun else f"{t}{colour} {thing.shape}"
        return f"{_article(body)} {body}"

    first = phrase(scene.first, colour_word or scene.colour)
    where = f" on {_article(scene.background)} {scene.background} background"
    if scene.second is None:
        return first + where
    return f"{first} {_BETWEEN[str(scene.relation)][0]} {phrase(scene.second, scene.second.colour)}{where}"


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Mention:
    """One object a prompt asks for: attributes it names, and attributes implied by an implicit noun."""

    named: dict[str, str] = field(default_factory=dict)
    implied: dict[str, str] = field(default_factory=dict)
    noun: str | None = None

    @property
    def wanted(self) -> dict[str, str]:
        return {**self.implied, **self.named}


@dataclass(frozen=True)
class Parsed:
    """What a prompt asks for. ``relation`` places ``objects[0]`` relative to ``objects[1]``."""

    objects: tuple[Mention, ...]
    relation: str | None = None
    background: str | None = None

    def scene(self) -> Scene:
        """The scene a fully specified prompt describes (every attribute named or implied)."""
        things = []
        for m in self.objects:
            w = m.wanted
            if not {"colour", "shape", "texture"} <= set(w) or self.background is None:
                raise ValueError(f"the prompt does not specify a whole scene: {self}")
            things.append(Thing(w["shape"], w["colour"], w["texture"]))
        if len(things) == 1:
            t = things[0]
            return Scene(t.shape, t.colour, t.texture, self.background)  # type: ignore[arg-type]
        if len(things) != 2 or self.relation is None:
            raise ValueError(f"the prompt does not specify a whole scene: {self}")
        return Scene.two(things[0], things[1], self.relation, self.background)  # type: ignore[arg-type]


_WORD = re.compile(r"[a-z]+|,")
_BETWEEN_RE = {rel: [p.split() for p in phrases] for rel, phrases in _BETWEEN.items()}
_PLACE_RE = {rel: p.split() for rel, p in _PLACE.items()}


def _attribute(word: str) -> tuple[str, str] | None:
    word = SYNONYMS.get(word, word)
    for name, values in (("colour", COLOURS), ("shape", SHAPES), ("texture", TEXTURES)):
        if word in values:
            return name, word
    return None


def parse(text: str) -> Parsed:
    """Read a pocket prompt: objects are delimited by shape words and implicit nouns; a colour or texture
    word belongs to the next object, unless it follows "in"/"is"/a comma after an object or no object
    follows it (then it belongs to the previous one). Relation phrases ("to the left of", "above", ...)
    between two objects place the first; "on the left" / "at the top" after an object place that one."""
    words = _WORD.findall(text.lower())
    objects: list[tuple[dict[str, str], dict[str, str], str | None]] = []
    pending: dict[str, str] = {}
    background = None
    positions: dict[int, str] = {}  # object index -> place in the frame
    relation = None
    i = 0
    while i < len(words):
        w = words[i]
        if w in BACKGROUNDS:
            background = w
        elif w in IMPLICIT or w in SHAPES:
            named = {**pending, "shape": w} if w in SHAPES else dict(pending)
            objects.append((named, dict(IMPLICIT.get(w, {})), w if w in IMPLICIT else None))
            pending = {}
        elif (attr := _attribute(w)) is not None:
            backward = objects and (i > 0 and words[i - 1] in ("in", "is", "and", ","))
            later_noun = any(x in SHAPES or x in IMPLICIT for x in words[i + 1 :])
            if objects and (backward or not later_noun):
                objects[-1][0].setdefault(attr[0], attr[1])
            else:
                pending.setdefault(attr[0], attr[1])
        elif objects:
            for rel, phrases in _BETWEEN_RE.items():
                if len(objects) == 1 and any(words[i : i + len(p)] == p for p in phrases) and relation is None:
                    relation = rel
            for rel, p in _PLACE_RE.items():
                if words[i : i + len(p)] == p and not (words[i + len(p) : i + len(p) + 1] == ["of"]):
                    positions.setdefault(len(objects) - 1, rel)
        i += 1
    if pending and objects:
        for k, v in pending.items():
            objects[-1][0].setdefault(k, v)
    if relation is None and len(objects) == 2:
        if 0 in positions:
            relation = positions[0]
        elif 1 in positions:
            relation = INVERSE[positions[1]]
    mentions = tuple(Mention(named, {k: v for k, v in implied.items() if k not in named}, noun)
                     for named, implied, noun in objects)  # fmt: skip
    return Parsed(mentions, relation if len(mentions) == 2 else None, background)


# ----------------------------------------------------------------------------- corpus


def caption_corpus(n: int = 20000, seed: int = 0) -> Iterator[str]:
    """Captions for tokenizer training: every single-object template x every scene, every implicit noun
    and relation phrase, then ``n`` random captions of one- and two-object training scenes."""
    from .world import all_scenes, sample_scene

    scenes = all_scenes()
    for i in range(len(_TEMPLATES)):
        for sc in scenes:
            yield caption(sc, i, synonym_p=0.0, template=i)
        for syn, canon in SYNONYMS.items():
            yield caption(Scene("circle", canon, "solid", "white"), 0, colour_word=syn, template=i)
    for meaning in IMPLICIT.values():
        for tex in TEXTURES:
            yield prompt(Scene(meaning["shape"], meaning["colour"], tex, "white"), implicit=True)
    for rel in RELATIONS:
        for phrase in (*_BETWEEN[rel], _PLACE[rel]):
            yield f"a red circle {phrase} a blue square"
    rng = random.Random(f"pocket-corpus/{seed}")
    for _ in range(n):
        yield caption(sample_scene(rng, two_object_p=0.5), rng)
