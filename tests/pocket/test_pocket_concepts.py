"""Pocket concepts beyond v1's colours, shapes and textures: implicit nouns and relations, and the
evaluation sets (explicit, synonym, implicit) a report scores."""

from __future__ import annotations

import pytest

from circuits.methods.concept import ConceptError
from circuits.pocket.captions import parse
from circuits.pocket.concepts import attribute_of, concept, evaluation_sets, implied_by
from circuits.pocket.report import score_images
from circuits.pocket.world import IMPLICIT, RELATIONS, render


def _no_dangling(text: str) -> bool:
    words = text.replace(",", " ,").split()
    return bool(words) and words[-1] not in ("a", "an", ",") and all(
        not (w in ("a", "an") and nxt in ("a", "an", ",", "on", "to")) for w, nxt in zip(words, words[1:])
    )


def test_kinds_of_concept_words():
    assert attribute_of("crimson") == ("colour", "red")
    assert attribute_of("Dax") == ("implicit", "dax")
    assert attribute_of("above") == ("relation", "above")
    with pytest.raises(ConceptError, match="did you mean 'dax'"):
        attribute_of("daxx")
    assert implied_by("colour", "red") == ("dax",) and implied_by("shape", "cross") == ("toma",)
    assert implied_by("colour", "orange") == () and implied_by("texture", "striped") == ()


@pytest.mark.parametrize("noun", sorted(IMPLICIT))
def test_implicit_noun_concepts(noun):
    c = concept(noun)
    meaning = IMPLICIT[noun]
    assert (c.target, c.synonyms, c.name) == (noun, (), noun)
    assert all(noun in p for p in c.target_prompts())
    assert not any(noun in p.split() for p in c.preservation)
    # the meaning spelled out must survive the erasure of the noun
    spelled = f"{meaning['colour']} {meaning['shape']}"
    assert any(spelled in p for p in c.preservation)
    assert all(_no_dangling(pair.anchor) for pair in c.pairs())


@pytest.mark.parametrize("relation", RELATIONS)
def test_relation_concepts(relation):
    c = concept(relation)
    assert c.target == relation and len(c.templates) >= 4
    for p in c.target_prompts():
        assert parse(p).relation == relation
    assert {parse(p).relation for p in c.preservation} == set(RELATIONS) - {relation}


def test_evaluation_sets_have_explicit_synonym_and_implicit_prompts():
    red = evaluation_sets("red", n=6)
    assert all("red" in p.split() for p in red.target)
    assert all({"crimson", "scarlet"} & set(p.split()) for p in red.synonyms)
    assert len(red.implicit) == 6 and all("dax" in p.split() and "red" not in p.split() for p in red.implicit)
    assert evaluation_sets("circle").implicit and evaluation_sets("striped").implicit == ()
    assert evaluation_sets("purple").implicit == ()
    dax = evaluation_sets("dax", n=6)
    assert dax.attribute == "implicit" and all("dax" in p.split() for p in dax.target)
    assert [parse(p).scene() for p in dax.spelled] == [parse(p).scene() for p in dax.target]
    assert not any("dax" in p.split() for p in dax.preservation)
    left = evaluation_sets("left", n=6)
    assert {parse(p).relation for p in left.target} == {"left"}
    assert {parse(p).relation for p in left.unnamed} == {None}
    assert len({p for p in left.target}) == 6  # the objects vary
    # every prompt of every set describes a whole scene (so it can be rendered and scored)
    for sets in (red, dax, left):
        for p in (*sets.target, *sets.synonyms, *sets.implicit, *sets.preservation):
            parse(p).scene()


@pytest.mark.parametrize(("word", "set_name"), [("red", "implicit"), ("dax", "target"), ("left", "target"),
                                                ("circle", "target"), ("above", "target")])
def test_reports_score_new_concepts_on_clean_renders(word, set_name):
    """Renders of the prompts that name (or imply) a concept show it; renders of the preservation prompts
    do not; everything the prompts ask for is read back."""
    sets = evaluation_sets(word, n=6)
    attribute, value = attribute_of(word)
    prompts = getattr(sets, set_name)
    images = [render(parse(p).scene(), seed=i) for i, p in enumerate(prompts)]
    rate, per_attribute, rows = score_images(images, prompts, attribute, value, exclude_target=False)
    assert rate == 1.0 and per_attribute["_mean"] >= 0.9 and len(rows) == len(prompts)
    others = [render(parse(p).scene(), seed=i) for i, p in enumerate(sets.preservation)]
    rate, per_attribute, _ = score_images(others, sets.preservation, attribute, value, exclude_target=False)
    assert rate == 0.0 and per_attribute["_mean"] >= 0.85
    if attribute == "relation":
        assert per_attribute["relation"] == 1.0 and per_attribute["binding"] >= 0.9
