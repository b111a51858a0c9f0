"""The pocket world: deterministic renders, captions and the held-out split."""

from __future__ import annotations

import random

import numpy as np
import pytest

from circuits.pocket import world
from circuits.pocket.world import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    SHAPES,
    SYNONYMS,
    TEXTURES,
    Scene,
    caption,
    render,
)


def test_vocabulary():
    assert {"circle", "square", "triangle", "cross"} <= set(SHAPES)
    assert {"red", "green", "blue", "yellow", "orange", "purple"} <= set(COLOURS)
    assert {"solid", "outlined", "striped", "dotted"} <= set(TEXTURES)
    assert {"white", "black", "gray"} <= set(BACKGROUNDS)
    assert SYNONYMS["crimson"] == SYNONYMS["scarlet"] == "red"
    assert SYNONYMS["azure"] == "blue"
    assert set(SYNONYMS.values()) <= set(COLOURS)


def test_render_is_deterministic():
    sc = Scene("triangle", "orange", "striped", "gray")
    a = np.asarray(render(sc, seed=3))
    b = np.asarray(render(sc, seed=3))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.asarray(render(sc, seed=4)))  # the seed moves the shape


def test_render_size_and_concepts_differ():
    base = np.asarray(render(Scene("circle", "red", "solid", "white"), seed=0))
    for other in (Scene("square", "red", "solid", "white"), Scene("circle", "blue", "solid", "white"),
                  Scene("circle", "red", "dotted", "white"), Scene("circle", "red", "solid", "black")):
        assert not np.array_equal(base, np.asarray(render(other, seed=0)))
    assert render(Scene("cross", "green", "outlined", "black"), seed=1, size=64).size == (64, 64)


def test_scene_validates_and_canonicalises_synonyms():
    assert Scene("circle", "crimson", "solid", "white").colour == "red"
    with pytest.raises(ValueError):
        Scene("hexagon", "red", "solid", "white")


def test_held_out_never_in_training():
    train = world.training_scenes()
    assert HELD_OUT and all(sc.combo not in HELD_OUT for sc in train)
    assert all(sc.combo not in HELD_OUT for sc, _ in world.dataset(2000, seed=0))
    assert {sc.combo for sc in world.held_out_scenes()} == set(HELD_OUT)
    # every single concept still appears in training
    for attr, values in (("shape", SHAPES), ("colour", COLOURS), ("texture", TEXTURES)):
        assert {getattr(sc, attr) for sc in train} == set(values)


def test_captions_name_the_concepts_and_are_seeded():
    sc = Scene("square", "blue", "striped", "white")
    caps = [caption(sc, random.Random(i)) for i in range(300)]
    assert caps == [caption(sc, i) for i in range(300)]
    assert len(set(caps)) > 20
    blue_words = {"blue"} | {w for w, c in SYNONYMS.items() if c == "blue"}
    for c in caps:
        words = c.replace(",", " ").split()
        assert "square" in words and blue_words & set(words)
    assert any("striped" not in c for c in caps) and any("background" in c for c in caps)
    assert any(w in c.split() for c in caps for w in ("azure", "cobalt"))
    assert caption(Scene("circle", "orange", "outlined", "white"), 0, template=0) == "an orange circle"
