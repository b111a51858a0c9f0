"""``Concept``: what an erasure method erases, what it maps it to, and what it must keep.

A concept is plain data a user writes by hand (no LLM calls anywhere): the target word and its
synonyms, an anchor (the word the target should become, or ``""`` for nothing), prompt templates
that put the word in context (``"a {} circle"``), and preservation prompts whose images must not
change. ``circuits.pocket.concept("red")`` builds one from the pocket world.

It lives at the bottom of the package (it needs only the tokenizer) so that a model can carry the
concepts its world names (``model.concepts("red")`` on pocket) and a world can build them, without
either importing the methods that erase them; :mod:`circuits.methods.concept` re-exports it.

Target and anchor prompts come in aligned pairs: template ``i`` filled with a target word, and
the same template filled with the anchor. An empty anchor removes the word and the space before
it (``"a {} circle"`` -> ``"a circle"``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from circuits.errors import CircuitsError
from circuits.tokens import layout


class ConceptError(CircuitsError, ValueError):
    """A concept that cannot be used: empty words, templates without ``{}``, words the tokenizer does not know."""


@dataclass(frozen=True)
class PromptPair:
    """One target prompt, its anchor twin, and the words that differ between them."""

    target: str
    anchor: str
    word: str
    anchor_word: str


@dataclass(frozen=True)
class Concept:
    """A concept to erase.

    Attributes:
        target: the word (or words) to erase, e.g. ``"red"``.
        synonyms: other words for the same concept (``("crimson", "scarlet")``); methods fit on
            them too, and reports measure erasure on them separately.
        anchor: what the target should become: a word, or ``""`` for nothing.
        templates: prompts with one ``{}`` where the word goes.
        preservation: prompts whose images the erasure must leave alone.
    """

    target: str
    synonyms: tuple[str, ...] = ()
    anchor: str = ""
    templates: tuple[str, ...] = ("{}",)
    preservation: tuple[str, ...] = ()
    name: str = field(default="")

    def __post_init__(self) -> None:
        for attr in ("synonyms", "templates", "preservation"):
            value = getattr(self, attr)
            if isinstance(value, str):
                raise ConceptError(f"Concept.{attr} must be a list of strings, got the string {value!r}")
            object.__setattr__(self, attr, tuple(value))
        if not isinstance(self.target, str) or not self.target.strip():
            raise ConceptError(f"Concept.target={self.target!r}: give the word to erase, e.g. 'red'")
        if not isinstance(self.anchor, str):
            raise ConceptError(f"Concept.anchor={self.anchor!r}: give a word, or '' to map the concept to nothing")
        bad = [s for s in self.synonyms if not isinstance(s, str) or not s.strip()]
        if bad:
            raise ConceptError(f"Concept.synonyms holds empty or non-string entries {bad!r}")
        if not self.templates:
            raise ConceptError("Concept.templates is empty: give at least one template, e.g. 'a photo of {}'")
        for template in self.templates:
            if not isinstance(template, str) or template.count("{}") != 1:
                raise ConceptError(
                    f"Concept template {template!r} must contain exactly one '{{}}' where the word goes, "
                    "e.g. 'a {} circle'"
                )
        bad = [p for p in self.preservation if not isinstance(p, str)]
        if bad:
            raise ConceptError(f"Concept.preservation holds non-string entries {bad!r}")
        if not self.name:
            object.__setattr__(self, "name", self.target)

    # -- prompts -------------------------------------------------------------------------
    @property
    def words(self) -> tuple[str, ...]:
        """The target word first, then its synonyms."""
        return (self.target, *self.synonyms)

    def prompts(self, word: str | None = None) -> list[str]:
        """Every template filled with ``word`` (default: the target word)."""
        return [fill(t, self.target if word is None else word) for t in self.templates]

    def target_prompts(self, *, synonyms: bool = True) -> list[str]:
        """Templates x words (the target, then each synonym when ``synonyms``)."""
        words = self.words if synonyms else (self.target,)
        return [fill(t, w) for w in words for t in self.templates]

    def anchor_prompts(self) -> list[str]:
        """Every template filled with the anchor (one per template)."""
        return self.prompts(self.anchor)

    def pairs(self, *, synonyms: bool = True) -> list[PromptPair]:
        """Aligned (target prompt, anchor prompt) pairs: templates x words."""
        words = self.words if synonyms else (self.target,)
        return [PromptPair(fill(t, w), fill(t, self.anchor), w, self.anchor) for w in words for t in self.templates]

    # -- checks --------------------------------------------------------------------------
    def check(self, tokenizer: Any) -> None:
        """Raise :class:`ConceptError` if a word is not in the tokenizer's vocabulary.

        CLIP's BPE never fails: an unknown or misspelt word is spelled out in tiny pieces
        (``'rde'`` -> ``r``, ``d``, ``e``). A word split into three or more pieces of at most two
        characters each is taken as unknown; real sub-word splits (``uni`` + ``corn``) pass.
        """
        for word in (*self.words, *([self.anchor] if self.anchor.strip() else [])):
            for piece in word.split():
                pieces = word_pieces(tokenizer, piece)
                clean = [p.replace("</w>", "") for p in pieces]
                if not clean:
                    raise ConceptError(f"concept word {word!r}: the tokenizer gives no tokens for {piece!r}")
                if len(clean) >= 3 and all(len(p) <= 2 for p in clean):
                    raise ConceptError(
                        f"concept word {word!r}: the tokenizer does not know {piece!r} (it spells it out as "
                        f"{' + '.join(clean)}); check the spelling or use a word from its vocabulary"
                    )

    # -- data ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Concept":
        if not isinstance(data, dict):
            raise ConceptError(f"a concept must be a JSON object, got {type(data).__name__}")
        allowed = {"target", "synonyms", "anchor", "templates", "preservation", "name"}
        unknown = set(data) - allowed
        if unknown:
            raise ConceptError(f"concept has unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**data)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Concept":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as error:
            raise ConceptError(f"concept JSON does not parse: {error}") from None


def fill(template: str, word: str) -> str:
    """``template`` with ``word`` in its ``{}``; an empty word takes the space before it along."""
    text = template.replace("{}", word)
    return re.sub(r"\s+", " ", text).strip(" ,")


def word_pieces(tokenizer: Any, word: str) -> list[str]:
    """The sub-tokens ``word`` is spelled with (no SoT/EoT)."""
    lay = layout(tokenizer, word)
    return list(lay.tokens[1 : lay.first_eot])
