"""What the erasure methods accept as a concept: a :class:`~circuits.concept.Concept`, its dict
form, or a word the model names a concept by (:func:`as_concept`).

``Concept`` itself is plain data in :mod:`circuits.concept` (re-exported here, where methods and
users import it). A bare word becomes a concept through the model (``model.concepts``, which the
pocket model fills from its world), so the methods know nothing of any particular world.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from circuits.concept import Concept, ConceptError, PromptPair, fill, word_pieces

__all__ = ["Concept", "ConceptError", "PromptPair", "as_concept", "check_prompt_list", "fill", "word_pieces"]


def as_concept(concept: Concept | str | dict, model: Any = None) -> Concept:
    """Accept a Concept, its dict form, or a word that ``model`` names a concept by (``model.concepts``:
    the pocket model knows its colours, shapes and textures)."""
    if isinstance(concept, Concept):
        return concept
    if isinstance(concept, dict):
        return Concept.from_dict(concept)
    if isinstance(concept, str):
        named = getattr(model, "concepts", None)
        if named is not None:
            return named(concept)
        raise ConceptError(
            f"concept={concept!r}: a bare word names a concept only on a model that knows its world's concepts "
            f"(the pocket model); build one with circuits.methods.Concept(target={concept!r}, templates=[...], "
            "anchor='')"
        )
    raise ConceptError(f"concept must be a circuits.methods.Concept, got {type(concept).__name__}")


def check_prompt_list(prompts: Sequence[str], what: str) -> list[str]:
    prompts = list(prompts)
    if not prompts:
        raise ConceptError(f"{what} is empty: give at least one prompt")
    return prompts
