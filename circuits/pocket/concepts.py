"""Concepts of the pocket world, with good defaults: ``circuits.pocket.concept("red")``.

A concept is named by a word of :mod:`circuits.pocket.world`:

* a colour (or colour synonym), shape or texture, as in v1;
* an **implicit noun** ("dax", always a red circle): erasing it should stop "a dax" drawing red circles
  while "a red circle" still does (its preservation prompts spell the meaning out);
* a **relation** ("left", "right", "above", "below"): the spatial word of two-object prompts.

Fitting templates put the word among the other attributes and backgrounds in the caption forms the model
was trained on; synonyms are the world's (only colours have them); preservation prompts name the
attribute's other values. Articles never stand right before the word, so every word (and the empty
anchor) reads grammatically in every template.

:func:`evaluation_sets` gives separate prompts for measuring an erasure (the canonical
"a striped red circle on a white background" form over scenes the templates do not spell out):
``target`` (naming the concept), ``synonyms``, ``implicit`` (implicit nouns that mean the value without
naming it: "a striped dax ..." for red and for circle), ``spelled`` (for a noun, its meaning written out),
``preservation`` and ``unnamed``, so a report does not score the prompts a method was fitted on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from circuits.errors import did_you_mean
from circuits.methods.concept import Concept, ConceptError, fill
from circuits.pocket.world import (
    BACKGROUNDS,
    COLOURS,
    IMPLICIT,
    RELATIONS,
    SHAPES,
    SYNONYMS,
    TEXTURES,
    Scene,
    Thing,
    prompt,
)

#: what a concept word can be, and the values of each kind
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": COLOURS, "shape": SHAPES, "texture": TEXTURES, "implicit": tuple(IMPLICIT), "relation": RELATIONS,
}  # fmt: skip

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": (
        "{} circle",
        "a striped {} square",
        "a photo of a dotted {} triangle",
        "a solid {} cross on a white background",
        "an outlined {} circle on a black background",
        "a gray background with a striped {} square",
        "a picture of a solid {} triangle",
        "{} cross, dotted, white background",
    ),
    "shape": (
        "a red {}",
        "a striped blue {} on a white background",
        "a photo of a green {}",
        "a dotted yellow {}",
        "an outlined purple {} on a black background",
        "an orange {}",
        "a picture of a solid red {}",
        "a gray background with a striped green {}",
    ),
    "texture": (
        "{} red circle",
        "{} blue square on a white background",
        "a drawing of a green triangle, {}",
        "yellow cross, {}, black background",
        "purple circle, {}, gray background",
        "{} orange square",
        "a drawing of a red triangle, {}",
        "{} blue cross on a black background",
    ),
    # the noun after a texture word, so the empty anchor leaves no article dangling
    "implicit": (
        "a solid {}",
        "a striped {} on a white background",
        "a photo of a dotted {}",
        "an outlined {} on a black background",
        "a gray background with a striped {}",
        "a picture of a solid {} on a gray background",
        "a dotted {} on a white background",
        "a photo of an outlined {}",
    ),
}

#: relation templates: left/right sit in "to the {} of", above/below stand alone
_RELATION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "horizontal": (
        "a red circle to the {} of a blue square",
        "a striped green triangle to the {} of a yellow cross on a white background",
        "a photo of a purple square to the {} of an orange circle",
        "a black background with a dotted blue cross to the {} of a red triangle",
        "a dax to the {} of a wug",
        "a solid yellow circle on the {} of a green square",
    ),
    "vertical": (
        "a red circle {} a blue square",
        "a striped green triangle {} a yellow cross on a white background",
        "a photo of a purple square {} an orange circle",
        "a black background with a dotted blue cross {} a red triangle",
        "a dax {} a wug",
        "a solid yellow circle {} a green square",
    ),
}


def attribute_of(word: str) -> tuple[str, str]:
    """``(kind, canonical value)`` of a pocket word: ``"crimson"`` -> ``("colour", "red")``, ``"dax"`` ->
    ``("implicit", "dax")``, ``"left"`` -> ``("relation", "left")``."""
    word = word.strip().lower()
    canonical = SYNONYMS.get(word, word)
    for attribute, values in ATTRIBUTES.items():
        if canonical in values:
            return attribute, canonical
    known = sorted({*(v for values in ATTRIBUTES.values() for v in values), *SYNONYMS})
    hint = did_you_mean(word, known, n=3)
    raise ConceptError(f"{word!r} is not a pocket colour, shape, texture, implicit noun or relation{hint}; "
                       f"known: {', '.join(known)}")  # fmt: skip


def implied_by(attribute: str, value: str) -> tuple[str, ...]:
    """The implicit nouns whose meaning includes ``attribute = value`` (``("colour", "red")`` -> ``("dax",)``)."""
    return tuple(noun for noun, meaning in IMPLICIT.items() if meaning.get(attribute) == value)


def _noun_scene(noun: str, index: int) -> Scene:
    meaning = IMPLICIT[noun]
    return Scene(meaning["shape"], meaning["colour"], TEXTURES[index % len(TEXTURES)],
                 BACKGROUNDS[(index // 2) % len(BACKGROUNDS)])  # fmt: skip


def _pair_scene(relation: str, index: int) -> Scene:
    """A two-object scene in ``relation``; objects, textures and background drawn from ``index`` (seeded)."""
    rng = random.Random(f"pocket-concept-pair/{index}")
    shapes, colours = rng.sample(SHAPES, 2), rng.sample(COLOURS, 2)
    first, second = (Thing(shapes[k], colours[k], rng.choice(TEXTURES)) for k in (0, 1))
    return Scene.two(first, second, relation, rng.choice(BACKGROUNDS))


def _other_scene(attribute: str, value: str, index: int) -> Scene:
    """A scene with ``attribute = value`` and the other attributes varied with ``index``."""
    parts = {
        "colour": COLOURS[index % len(COLOURS)],
        "shape": SHAPES[index % len(SHAPES)],
        "texture": TEXTURES[(index // 2) % len(TEXTURES)],
        "background": BACKGROUNDS[index % len(BACKGROUNDS)],
    }
    parts[attribute] = value
    return Scene(parts["shape"], parts["colour"], parts["texture"], parts["background"])


def _preservation(attribute: str, value: str, per_value: int = 2) -> tuple[str, ...]:
    others = [v for v in ATTRIBUTES[attribute] if v != value]
    prompts = []
    for i, other in enumerate(others):
        for j in range(per_value):
            if attribute == "implicit":
                prompts.append(prompt(_noun_scene(other, 2 * i + j + 1), implicit=True))
            elif attribute == "relation":
                prompts.append(prompt(_pair_scene(other, 2 * i + j + 1)))
            else:
                scene = _other_scene(attribute, other, 2 * i + j + 1)
                prompts.append(prompt(scene, with_texture=attribute == "texture" or j == 1))
    if attribute == "implicit":  # "a dax" may go, "a red circle" must stay
        prompts += [prompt(_noun_scene(value, j + 5)) for j in range(per_value)]
    return tuple(prompts)


def concept(word: str, *, anchor: str = "") -> Concept:
    """The pocket concept named by ``word`` (a colour, colour synonym, shape, texture, implicit noun or
    relation).

    ``anchor`` is what the word should become: ``""`` (nothing, the default) or another word. With the
    empty anchor an erasure cannot push the target's rate below how often the model draws it unasked
    (``erasure_report`` measures that "unnamed" rate).
    """
    attribute, value = attribute_of(word)
    synonyms = tuple(s for s, c in SYNONYMS.items() if c == value) if attribute == "colour" else ()
    if attribute == "relation":
        templates = _RELATION_TEMPLATES["horizontal" if value in ("left", "right") else "vertical"]
    else:
        templates = _TEMPLATES[attribute]
    return Concept(
        target=value,
        synonyms=synonyms,
        anchor=anchor,
        templates=templates,
        preservation=_preservation(attribute, value),
        name=value,
    )


def _agree(text: str) -> str:
    """Fix a leading article after a word was removed ("an outlined blue ..." -> "a blue ...")."""
    first, _, rest = text.partition(" ")
    if first in ("a", "an") and rest:
        return f"{'an' if rest[0] in 'aeiou' else 'a'} {rest}"
    return text


@dataclass(frozen=True)
class EvaluationSets:
    """Prompts for measuring an erasure on pocket (none of them a fitting template)."""

    attribute: str
    value: str
    target: tuple[str, ...]
    synonyms: tuple[str, ...]
    preservation: tuple[str, ...]
    #: the target prompts with the word removed: how often the model draws the value unasked
    unnamed: tuple[str, ...] = ()
    #: prompts whose implicit noun means the value without naming it ("a striped dax ..." for red)
    implicit: tuple[str, ...] = ()
    #: for an implicit noun: its meaning written out ("a striped red circle ..." for dax)
    spelled: tuple[str, ...] = ()


def evaluation_sets(concept_or_word: Concept | str, n: int = 8) -> EvaluationSets:
    """Canonical-form prompts naming the concept (``target``), its synonyms, implicit nouns that mean it,
    and the attribute's other values (``preservation``); see the module docstring."""
    word = concept_or_word.target if isinstance(concept_or_word, Concept) else concept_or_word
    attribute, value = attribute_of(word)
    others = [v for v in ATTRIBUTES[attribute] if v != value]
    if attribute == "implicit":
        scenes = [_noun_scene(value, 3 * i + 2) for i in range(n)]
        target = tuple(prompt(s, implicit=True) for s in scenes)
        preservation = tuple(prompt(_noun_scene(others[i % len(others)], 3 * i + 1), implicit=True) for i in range(n))
        unnamed = tuple(_agree(fill(p.replace(f" {value} ", " {} ", 1), "")) for p in target)
        return EvaluationSets(attribute, value, target, (), preservation, unnamed, (),
                              tuple(prompt(s) for s in scenes))  # fmt: skip
    if attribute == "relation":
        target = tuple(prompt(_pair_scene(value, 3 * i + 2)) for i in range(n))
        preservation = tuple(prompt(_pair_scene(others[i % len(others)], 3 * i + 1)) for i in range(n))
        unnamed = tuple(_without_relation(_pair_scene(value, 3 * i + 2)) for i in range(n))
        return EvaluationSets(attribute, value, target, (), preservation, unnamed)
    scenes = [_other_scene(attribute, value, 3 * i + 2) for i in range(n)]
    target = tuple(prompt(s) for s in scenes)
    synonyms: tuple[str, ...] = ()
    if attribute == "colour":
        words = [s for s, c in SYNONYMS.items() if c == value]
        synonyms = tuple(prompt(s, colour_word=words[i % len(words)]) for i, s in enumerate(scenes)) if words else ()
    preservation = tuple(prompt(_other_scene(attribute, others[i % len(others)], 3 * i + 1)) for i in range(n))
    unnamed = tuple(_agree(fill(p.replace(f" {value} ", " {} ", 1), "")) for p in target)
    nouns = implied_by(attribute, value)
    implicit = tuple(prompt(_noun_scene(nouns[i % len(nouns)], 3 * i + 2), implicit=True) for i in range(n)) \
        if nouns else ()  # fmt: skip
    return EvaluationSets(attribute, value, target, synonyms, preservation, unnamed, implicit)


def _without_relation(scene: Scene) -> str:
    """The two objects of ``scene`` with no spatial word ("a red circle and a blue square on ...")."""
    first, second = (prompt(Scene(t.shape, t.colour, t.texture, scene.background)).split(" on a")[0]
                     for t in scene.objects)  # fmt: skip
    return f"{first} and {second} on {'an' if scene.background[0] in 'aeiou' else 'a'} {scene.background} background"
