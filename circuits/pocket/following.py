"""How well an image follows its prompt, object by object (the pocket world's prompt-following measure).

:func:`follow` takes a prompt (parsed with :func:`circuits.pocket.captions.parse`) and what the oracle read
in the image (:meth:`Oracle.read_objects`), matches the prompt's objects to the objects found, and returns
one :class:`Check` per thing the prompt asks for:

* ``named`` - an attribute the prompt writes ("red", "crimson", "circle", "striped"), on its object;
* ``implied`` - an attribute an implicit noun means without naming it ("dax": red and circle);
* ``binding`` - for every object with a colour and a shape (named or implied): some object in the image
  has both (a red circle and a blue square, not a blue circle and a red square);
* ``relation`` - the spatial word: the first object's centroid is on the named side of the second's;
* ``background`` - the named background.

Matching: each prompt object goes to a different found object, choosing the assignment with the most
shape agreements, then the most attribute agreements (shapes are nouns: "the circle" is the object that
is a circle). A prompt object with no found object fails every check.

:func:`follow_images` reads a batch (telling the oracle how many objects each prompt has) and
:func:`summarise` averages the checks: ``{"named.colour": 0.97, "implied.shape": 0.88, "binding": 0.85,
"relation": 0.9, ...}``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .captions import Mention, Parsed, parse
from .oracle import ImageRead, ObjectRead, Oracle, shared_oracle


@dataclass(frozen=True)
class Check:
    """One thing a prompt asks for, and whether the image does it."""

    kind: str  # "named" | "implied" | "binding" | "relation" | "background"
    attribute: str  # colour / shape / texture for named and implied; else the kind
    wanted: str
    read: str | None
    ok: bool
    object: int | None = None  # the prompt object (0 or 1) the check is about


@dataclass(frozen=True)
class Following:
    """Every check of one (prompt, image) pair, and which found object each prompt object was matched to."""

    prompt: str
    checks: tuple[Check, ...]
    matched: tuple[int | None, ...]

    def rate(self, kind: str, attribute: str | None = None) -> float:
        """Share of this image's checks of ``kind`` (and ``attribute``) that hold; NaN when there are none."""
        hits = [c.ok for c in self.checks if c.kind == kind and (attribute is None or c.attribute == attribute)]
        return float(np.mean(hits)) if hits else float("nan")


def _match(mentions: Sequence[Mention], found: Sequence[ObjectRead]) -> tuple[int | None, ...]:
    best: tuple[int | None, ...] = tuple(None for _ in mentions)
    best_key = (-1, -1)
    slots: list[int | None] = [*range(len(found)), *([None] * len(mentions))]
    for assignment in itertools.permutations(slots, len(mentions)):
        shapes = total = 0
        for m, a in zip(mentions, assignment):
            if a is None:
                continue
            for attribute, value in m.wanted.items():
                hit = found[a].get(attribute) == value
                total += hit
                shapes += hit and attribute == "shape"
        key = (shapes + 1000 * sum(a is not None for a in assignment), total)
        if key > best_key:
            best, best_key = tuple(assignment), key
    return best


def follow(prompt: str | Parsed, read: ImageRead) -> Following:
    """The checks of one prompt against one image's read (see the module docstring)."""
    parsed = parse(prompt) if isinstance(prompt, str) else prompt
    text = prompt if isinstance(prompt, str) else ""
    matched = _match(parsed.objects, read.objects)
    checks: list[Check] = []
    for i, (mention, a) in enumerate(zip(parsed.objects, matched)):
        obj = read.objects[a] if a is not None else None
        for kind, attributes in (("named", mention.named), ("implied", mention.implied)):
            for attribute, value in attributes.items():
                got = obj.get(attribute) if obj is not None else None
                checks.append(Check(kind, attribute, value, got, got == value, i))
        wanted = mention.wanted
        if "colour" in wanted and "shape" in wanted:
            pairs = [(o.colour, o.shape) for o in read.objects]
            ok = (wanted["colour"], wanted["shape"]) in pairs
            got = f"{obj.colour} {obj.shape}" if obj is not None else None
            checks.append(Check("binding", "binding", f"{wanted['colour']} {wanted['shape']}", got, ok, i))
    if parsed.relation is not None:
        a, b = matched
        if a is None or b is None:
            checks.append(Check("relation", "relation", parsed.relation, None, False))
        else:
            first, second = read.objects[a], read.objects[b]
            dx, dy = first.x - second.x, first.y - second.y
            got = ("left" if dx < 0 else "right") if abs(dx) >= abs(dy) else ("above" if dy < 0 else "below")
            ok = {"left": dx < 0, "right": dx > 0, "above": dy < 0, "below": dy > 0}[parsed.relation]
            checks.append(Check("relation", "relation", parsed.relation, got, ok))
    if parsed.background is not None:
        checks.append(Check("background", "background", parsed.background, read.background,
                            read.background == parsed.background))  # fmt: skip
    return Following(text, tuple(checks), matched)


def follow_images(prompts: Sequence[str], images: Any, oracle: Oracle | None = None) -> list[Following]:
    """Read ``images`` (looking for as many objects as each prompt names) and check each against its prompt."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    reads = (oracle or shared_oracle()).read_objects(images, object_counts([parse(p) for p in prompts]))
    return [follow(p, r) for p, r in zip(prompts, reads)]


def object_counts(parsed: Sequence[Parsed]) -> list[int]:
    """How many objects to look for in each image: as many as its prompt names (1 or 2; 1 for none)."""
    return [min(max(len(p.objects), 1), 2) for p in parsed]


def summarise(followings: Sequence[Following]) -> dict[str, float]:
    """Mean of every kind of check over images: ``named.<attribute>``, ``implied.<attribute>``, ``binding``,
    ``relation``, ``background`` (only the kinds that occur)."""
    hits: dict[str, list[bool]] = {}
    for f in followings:
        for c in f.checks:
            key = f"{c.kind}.{c.attribute}" if c.kind in ("named", "implied") else c.kind
            hits.setdefault(key, []).append(c.ok)
    return {k: float(np.mean(v)) for k, v in sorted(hits.items())}
