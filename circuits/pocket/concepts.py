"""Concepts of the pocket world, with good defaults: ``circuits.pocket.concept("red")``.

Any colour (or colour synonym), shape or texture of :mod:`circuits.pocket.world` names a concept.
Its fitting templates put the word among the other attributes and backgrounds in the caption
forms the model was trained on; synonyms are the world's (only colours have them); preservation
prompts name the attribute's other values. Articles never stand right before the word, so every
word (and the empty anchor) reads grammatically in every template.

:func:`evaluation_sets` gives separate prompts for measuring an erasure (the canonical
"a striped red circle on a white background" form over scenes the templates do not spell out),
so a report does not score the prompts a method was fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass

from circuits.concept import Concept, ConceptError, fill
from circuits.errors import did_you_mean
from circuits.pocket.world import BACKGROUNDS, COLOURS, SHAPES, SYNONYMS, TEXTURES, Scene, prompt

ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": COLOURS, "shape": SHAPES, "texture": TEXTURES}

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
}


def attribute_of(word: str) -> tuple[str, str]:
    """``(attribute, canonical value)`` of a pocket word: ``"crimson"`` -> ``("colour", "red")``."""
    word = word.strip().lower()
    canonical = SYNONYMS.get(word, word)
    for attribute, values in ATTRIBUTES.items():
        if canonical in values:
            return attribute, canonical
    known = sorted({*COLOURS, *SHAPES, *TEXTURES, *SYNONYMS})
    hint = did_you_mean(word, known, n=3)
    raise ConceptError(f"{word!r} is not a pocket colour, shape or texture{hint}; known: {', '.join(known)}")


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
            scene = _other_scene(attribute, other, 2 * i + j + 1)
            prompts.append(prompt(scene, with_texture=attribute == "texture" or j == 1))
    return tuple(prompts)


def concept(word: str, *, anchor: str = "") -> Concept:
    """The pocket concept named by ``word`` (a colour, colour synonym, shape or texture).

    ``anchor`` is what the word should become: ``""`` (nothing, the default) or another word. With the
    empty anchor an erasure cannot push the target's rate below how often the model draws it unasked
    (``erasure_report`` measures that "unnamed" rate: 0.12 for red, 0.12 for circle, 0.28 for striped).
    """
    attribute, value = attribute_of(word)
    synonyms = tuple(s for s, c in SYNONYMS.items() if c == value) if attribute == "colour" else ()
    return Concept(
        target=value,
        synonyms=synonyms,
        anchor=anchor,
        templates=_TEMPLATES[attribute],
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


def evaluation_sets(concept_or_word: Concept | str, n: int = 8) -> EvaluationSets:
    """Canonical-form prompts naming the concept (``target``), its synonyms, and the attribute's other values."""
    word = concept_or_word.target if isinstance(concept_or_word, Concept) else concept_or_word
    attribute, value = attribute_of(word)
    scenes = [_other_scene(attribute, value, 3 * i + 2) for i in range(n)]
    target = tuple(prompt(s) for s in scenes)
    synonyms: tuple[str, ...] = ()
    if attribute == "colour":
        words = [s for s, c in SYNONYMS.items() if c == value]
        synonyms = tuple(prompt(s, colour_word=words[i % len(words)]) for i, s in enumerate(scenes)) if words else ()
    others = [v for v in ATTRIBUTES[attribute] if v != value]
    preservation = tuple(prompt(_other_scene(attribute, others[i % len(others)], 3 * i + 1)) for i in range(n))
    unnamed = tuple(_agree(fill(p.replace(f" {value} ", " {} ", 1), "")) for p in target)
    return EvaluationSets(attribute, value, target, synonyms, preservation, unnamed)
