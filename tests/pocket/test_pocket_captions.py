"""Captions, canonical prompts and the prompt parser of the pocket world agree with the scenes."""

from __future__ import annotations

import random

import pytest

from circuits.pocket import world
from circuits.pocket.captions import Mention, parse
from circuits.pocket.world import IMPLICIT, INVERSE, RELATIONS, Scene, Thing, caption, prompt


def _consistent(scene: Scene, text: str) -> bool:
    """Whether everything ``text`` asks for holds in ``scene`` (objects in either order)."""
    p = parse(text)
    if len(p.objects) != len(scene.objects) or p.background not in (None, scene.background):
        return False

    def holds(order: tuple[Thing, ...], relation: str | None) -> bool:
        fits = all(getattr(t, a) == v for m, t in zip(p.objects, order) for a, v in m.wanted.items())
        return fits and p.relation in (None, relation)

    if holds(scene.objects, scene.relation):
        return True
    return scene.second is not None and holds(scene.objects[::-1], INVERSE[str(scene.relation)])


def test_prompts_round_trip_to_scenes():
    for scene in world.all_scenes():
        assert parse(prompt(scene)).scene() == scene
    rng = random.Random(0)
    for _ in range(300):
        scene = world.sample_scene(rng, two_object_p=1.0, implicit_p=0.5)
        assert parse(prompt(scene)).scene() == scene
        assert parse(prompt(scene, implicit=True)).scene() == scene
    assert prompt(Scene("circle", "red", "striped", "white")) == "a striped red circle on a white background"
    two = Scene.two(Thing("circle", "red", "solid"), Thing("square", "blue", "dotted"), "left", "gray")
    assert prompt(two) == "a solid red circle to the left of a dotted blue square on a gray background"
    assert prompt(two, implicit=True) == "a solid dax to the left of a dotted wug on a gray background"


def test_captions_never_contradict_their_scene():
    for example in world.training_examples(3000, seed=7):
        assert _consistent(example.scene, example.caption), example


@pytest.mark.parametrize(
    ("text", "objects", "relation", "background"),
    [
        ("a circle that is red", [{"shape": "circle", "colour": "red"}], None, None),
        ("red circle on a black background", [{"shape": "circle", "colour": "red"}], None, "black"),
        ("a drawing of a crimson square, striped", [{"shape": "square", "colour": "red", "texture": "striped"}],
         None, None),
        ("a blue square to the left of a yellow triangle",
         [{"shape": "square", "colour": "blue"}, {"shape": "triangle", "colour": "yellow"}], "left", None),
        ("a circle in green below a striped cross that is purple",
         [{"shape": "circle", "colour": "green"}, {"shape": "cross", "colour": "purple", "texture": "striped"}],
         "below", None),
        ("a red circle on the right and a blue cross on the left, white background",
         [{"shape": "circle", "colour": "red"}, {"shape": "cross", "colour": "blue"}], "right", "white"),
        ("a red circle at the bottom and a blue cross at the top",
         [{"shape": "circle", "colour": "red"}, {"shape": "cross", "colour": "blue"}], "below", None),
        ("a green square and an orange circle",
         [{"shape": "square", "colour": "green"}, {"shape": "circle", "colour": "orange"}], None, None),
        ("a red circle on the left of a blue cross",
         [{"shape": "circle", "colour": "red"}, {"shape": "cross", "colour": "blue"}], "left", None),
    ],
)
def test_parse_reads_word_orders(text, objects, relation, background):
    p = parse(text)
    assert [m.named for m in p.objects] == objects
    assert (p.relation, p.background) == (relation, background)


def test_implicit_nouns_imply_their_attributes_without_naming_them():
    assert len(IMPLICIT) >= 4
    assert {m["colour"] for m in IMPLICIT.values()} >= {"red", "blue", "green", "yellow"}
    assert {m["shape"] for m in IMPLICIT.values()} == set(world.SHAPES)
    for noun, meaning in IMPLICIT.items():
        assert Thing(meaning["shape"], meaning["colour"]).implicit_noun == noun
        p = parse(f"a striped {noun} on a white background")
        assert p.objects == (Mention({"texture": "striped"}, meaning, noun),)
        assert p.objects[0].wanted == {"texture": "striped", **meaning}
    assert Thing("circle", "blue").implicit_noun is None
    # a caption that uses the noun never also names what it implies
    for example in world.training_examples(2000, seed=2):
        for m in parse(example.caption).objects:
            if m.noun is not None:
                assert not {"colour", "shape"} & set(m.named), example.caption


def test_relations_cover_every_phrasing():
    seen = {r: set() for r in RELATIONS}
    rng = random.Random(1)
    scene = Scene.two(Thing("circle", "red"), Thing("square", "blue"), "above", "white")
    for _ in range(400):
        text = caption(scene, rng)
        p = parse(text)
        if p.relation is not None:
            seen[p.relation].add(text.split(" a ")[0] if " a " in text else text)
    assert seen["above"] and seen["below"]  # the scene is described from either object
    assert not seen["left"] and not seen["right"]


def test_corpus_has_every_word():
    corpus = list(world.caption_corpus(n=500))
    words = {w for c in corpus for w in c.replace(",", " ").split()}
    expected = {*world.SHAPES, *world.COLOURS, *world.TEXTURES, *world.BACKGROUNDS, *world.SYNONYMS, *IMPLICIT,
                "left", "right", "above", "below", "top", "bottom", "under", "beneath"}
    assert expected <= words
    assert corpus == list(world.caption_corpus(n=500))
