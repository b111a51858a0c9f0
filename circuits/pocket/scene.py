"""What the pocket world contains: its vocabulary, objects (:class:`Thing`) and pictures (:class:`Scene`).

The world's words (everything the captions, the oracle and the concepts agree on):

* attributes of an object: :data:`SHAPES`, :data:`COLOURS` (with :data:`SYNONYMS`), :data:`TEXTURES`;
  a picture's :data:`BACKGROUNDS`;
* **implicit nouns** (:data:`IMPLICIT`): made-up words that always mean one colour *and* shape without
  naming either ("a dax" is always a red circle): pocket's stand-in for I2P's implicit prompts, where
  the concept is implied by the prompt but never written;
* **relations** (:data:`RELATIONS`): where the first of two objects sits with respect to the second
  (``"left"``: the first is to the left of the second).

A :class:`Scene` is one picture: one object (v1's four fields, unchanged) or two objects and a relation.
``Scene("circle", "red", "striped", "white")`` is v1's scene; ``Scene.two(Thing("circle", "red", "solid"),
Thing("square", "blue", "dotted"), "left", "white")`` is a red circle to the left of a blue square. The two
objects of a scene always differ in colour and in shape, so "which colour is bound to which shape" and
"which object is where" are both well defined for the oracle.

Held-out combinations (never in training, so prompt following on them measures composition):
:data:`HELD_OUT` (shape, colour, texture) of any object, and :data:`HELD_OUT_PAIRS`, pairs of
(colour, shape) objects never shown together.
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple")
TEXTURES: tuple[str, ...] = ("solid", "outlined", "striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray")
OBJECT_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "texture")

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

#: implicit noun -> the attributes it always means (never named in a caption that uses the noun).
#: Together they cover four colours and every shape; textures stay free ("a striped dax").
IMPLICIT: dict[str, dict[str, str]] = {
    "dax": {"colour": "red", "shape": "circle"},
    "wug": {"colour": "blue", "shape": "square"},
    "blicket": {"colour": "green", "shape": "triangle"},
    "toma": {"colour": "yellow", "shape": "cross"},
}

#: relation of the first object to the second, and the relation seen from the second object
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
INVERSE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}

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

#: (shape, colour, texture) combinations never shown in training (any background, either object)
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

#: unordered pairs of (colour, shape) objects never shown together in one training picture
HELD_OUT_PAIRS: frozenset[frozenset[tuple[str, str]]] = frozenset(
    frozenset(pair)
    for pair in (
        (("red", "circle"), ("blue", "square")),
        (("green", "triangle"), ("yellow", "cross")),
        (("orange", "square"), ("purple", "circle")),
        (("blue", "triangle"), ("red", "cross")),
        (("yellow", "circle"), ("green", "square")),
        (("purple", "cross"), ("orange", "triangle")),
    )
)


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Thing:
    """One object: shape, colour (a synonym is stored as its canonical colour) and texture."""

    shape: str
    colour: str
    texture: str = "solid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "colour", SYNONYMS.get(self.colour, self.colour))
        _check(self.shape, SHAPES, "shape")
        _check(self.colour, COLOURS, "colour")
        _check(self.texture, TEXTURES, "texture")

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.texture)

    @property
    def implicit_noun(self) -> str | None:
        """The implicit noun meaning this object's colour and shape, if there is one."""
        for noun, meaning in IMPLICIT.items():
            if meaning == {"colour": self.colour, "shape": self.shape}:
                return noun
        return None


@dataclass(frozen=True)
class Scene:
    """One picture: v1's single object (``shape``, ``colour``, ``texture``) on ``background``, or with
    ``second`` a second object and ``relation`` where the first object sits relative to it."""

    shape: str
    colour: str
    texture: str
    background: str
    second: Thing | None = None
    relation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "colour", SYNONYMS.get(self.colour, self.colour))
        _check(self.shape, SHAPES, "shape")
        _check(self.colour, COLOURS, "colour")
        _check(self.texture, TEXTURES, "texture")
        _check(self.background, BACKGROUNDS, "background")
        if (self.second is None) != (self.relation is None):
            raise ValueError("a two-object Scene needs both `second` and `relation`; a one-object Scene neither")
        if self.second is not None:
            _check(str(self.relation), RELATIONS, "relation")
            if self.second.colour == self.colour or self.second.shape == self.shape:
                raise ValueError(
                    f"the two objects of a Scene must differ in colour and in shape; got {self.first} and {self.second}"
                )

    @classmethod
    def two(cls, first: Thing, second: Thing, relation: str, background: str) -> Scene:
        """``first`` placed ``relation`` (left/right/above/below) of ``second`` on ``background``."""
        return cls(first.shape, first.colour, first.texture, background, second, relation)

    @property
    def first(self) -> Thing:
        return Thing(self.shape, self.colour, self.texture)

    @property
    def objects(self) -> tuple[Thing, ...]:
        return (self.first,) if self.second is None else (self.first, self.second)

    @property
    def combo(self) -> tuple[str, str, str]:
        """The first object's (shape, colour, texture) (v1's API)."""
        return (self.shape, self.colour, self.texture)

    @property
    def held_out(self) -> bool:
        """Whether any object's combination, or the pair of objects, is held out of training."""
        if any(t.combo in HELD_OUT for t in self.objects):
            return True
        return self.second is not None and frozenset((t.colour, t.shape) for t in self.objects) in HELD_OUT_PAIRS

    def swapped(self) -> Scene:
        """The same picture described from the second object (``a left of b`` == ``b right of a``)."""
        if self.second is None:
            return self
        return Scene.two(self.second, self.first, INVERSE[str(self.relation)], self.background)

    def same_picture(self, other: Scene) -> bool:
        """Equal up to which object is named first."""
        return self == other or self.swapped() == other
