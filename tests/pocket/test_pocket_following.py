"""Prompt following, object by object: the checks a prompt implies and how a read satisfies them."""

from __future__ import annotations

import numpy as np
import pytest

from circuits.pocket import world
from circuits.pocket.following import follow, follow_images, summarise
from circuits.pocket.oracle import ImageRead, ObjectRead
from circuits.pocket.world import Scene, Thing, prompt, render


def _obj(colour: str, shape: str, x: float, y: float = 0.5, texture: str = "solid") -> ObjectRead:
    return ObjectRead(colour, shape, texture, x, y, 0.1, np.zeros((1, 1)))


def _kinds(f) -> dict[str, bool]:
    return {f"{c.kind}:{c.attribute}:{c.object}": c.ok for c in f.checks}


def test_two_objects_all_followed():
    read = ImageRead("white", (_obj("red", "circle", 0.2), _obj("blue", "square", 0.8, texture="dotted")))
    f = follow("a red circle to the left of a dotted blue square on a white background", read)
    assert all(c.ok for c in f.checks)
    assert {c.kind for c in f.checks} == {"named", "binding", "relation", "background"}
    assert f.matched == (0, 1)


def test_swapped_colours_fail_binding_but_not_shapes():
    read = ImageRead("white", (_obj("blue", "circle", 0.2), _obj("red", "square", 0.8)))
    f = follow("a red circle to the left of a blue square", read)
    k = _kinds(f)
    assert k["named:shape:0"] and k["named:shape:1"]  # matched by shape
    assert not k["named:colour:0"] and not k["named:colour:1"]
    assert not k["binding:binding:0"] and not k["binding:binding:1"]
    assert k["relation:relation:None"]


def test_relation_read_from_centroids():
    left = ImageRead("white", (_obj("red", "circle", 0.8), _obj("blue", "square", 0.2)))
    assert follow("a red circle to the left of a blue square", left).rate("relation") == 0.0
    assert follow("a blue square to the left of a red circle", left).rate("relation") == 1.0
    above = ImageRead("white", (_obj("red", "circle", 0.5, 0.2), _obj("blue", "square", 0.55, 0.8)))
    assert follow("a red circle above a blue square", above).rate("relation") == 1.0
    assert follow("a blue square above a red circle", above).rate("relation") == 0.0
    assert follow("a red circle on the left and a blue square on the right", above).checks[-1].read == "above"


def test_missing_object_fails_its_checks():
    read = ImageRead("white", (_obj("red", "circle", 0.3),))
    f = follow("a red circle below a blue square", read)
    assert f.matched == (0, None)
    assert f.rate("named", "colour") == 0.5 and f.rate("relation") == 0.0


def test_implicit_nouns_are_implied_checks():
    read = ImageRead("black", (_obj("red", "circle", 0.5, texture="striped"),))
    f = follow("a striped dax on a black background", read)
    assert {(c.kind, c.attribute) for c in f.checks} == {
        ("named", "texture"), ("implied", "colour"), ("implied", "shape"), ("binding", "binding"),
        ("background", "background"),
    }
    assert all(c.ok for c in f.checks)
    wrong = ImageRead("black", (_obj("blue", "circle", 0.5, texture="striped"),))
    assert follow("a striped dax on a black background", wrong).rate("implied", "colour") == 0.0


@pytest.mark.parametrize("size", [32, 64])
def test_clean_renders_follow_their_prompts(size):
    examples = world.held_out_examples(60, seed=5) + world.training_examples(60, seed=5)
    scenes = [e.scene for e in examples]
    prompts = [prompt(s, implicit=i % 2 == 0) for i, s in enumerate(scenes)]
    images = [render(s, seed=e.seed, size=size) for s, e in zip(scenes, examples)]
    summary = summarise(follow_images(prompts, images))
    assert summary["relation"] == 1.0 and summary["background"] == 1.0
    assert summary["named.colour"] >= 0.98 and summary["binding"] >= 0.95
    assert summary["named.shape"] >= 0.95
    # a prompt of another scene is not followed
    other = [prompt(Scene.two(Thing("cross", "green"), Thing("circle", "orange"), "below", "gray"))] * len(images)
    assert summarise(follow_images(other, images))["binding"] < 0.3


def test_evaluation_sets_for_the_v2_targets():
    from circuits.pocket.evaluate import following_sets

    sets = following_sets(n=12)
    assert following_sets(n=12) == sets
    for name in ("one_object", "two_objects", "implicit"):
        assert len(sets[name]) == 12
    scenes = {name: [parse_scene(p) for p in prompts] for name, prompts in sets.items()}
    assert all(s.held_out and s.second is None for s in scenes["one_object"])
    assert all(s.held_out and s.second is not None for s in scenes["two_objects"])
    assert all(any(w in world.IMPLICIT for w in p.split()) for p in sets["implicit"])
    assert sets["two_objects_implicit"] and all(
        any(w in world.IMPLICIT for w in p.split()) for p in sets["two_objects_implicit"]
    )


def parse_scene(text: str) -> Scene:
    from circuits.pocket.captions import parse

    return parse(text).scene()
