"""The shipped oracle reads the world's concepts from clean renders."""

from __future__ import annotations

import numpy as np
import pytest

from circuits.pocket.oracle import DEFAULT_PATH, Oracle, make_set
from circuits.pocket.world import Scene, render


def test_shipped_file_is_plain_arrays():
    z = np.load(DEFAULT_PATH, allow_pickle=False)  # no pickle inside
    assert all(z[k].dtype != object for k in z.files)


def test_accuracy_on_clean_renders():
    oracle = Oracle.load()
    arr, scenes = make_set(300, seed=12345, augment=False)
    acc = oracle.accuracy(arr, scenes)
    assert acc["colour"] >= 0.98
    assert acc["shape"] >= 0.95
    assert acc["texture"] >= 0.95
    assert acc["background"] >= 0.98


def test_read_accepts_pil_and_arrays():
    oracle = Oracle.load()
    scenes = [Scene("circle", "red", "striped", "white"), Scene("cross", "purple", "dotted", "black")]
    imgs = [render(s, seed=5) for s in scenes]
    a = oracle.read(imgs)
    b = oracle.read(np.stack([np.asarray(i) for i in imgs]))
    assert a == b
    assert set(a) == {"colour", "shape", "texture", "background"}
    assert a["colour"] == ["red", "purple"] and a["shape"] == ["circle", "cross"]
    big = [render(s, seed=5, size=64) for s in scenes]
    assert oracle.read(big)["colour"] == ["red", "purple"]
    assert oracle.read([]) == {"colour": [], "shape": [], "texture": [], "background": []}


# ----------------------------------------------------------------------------- v2: object by object


def test_read_objects_finds_and_places_two_objects():
    from circuits.pocket.world import Thing

    oracle = Oracle.load()
    scene = Scene.two(Thing("circle", "red", "solid"), Thing("square", "blue", "solid"), "left", "black")
    for size in (32, 64):
        image = render(scene, seed=3, size=size)
        (read,) = oracle.read_objects([image])  # counted, not told
        assert read.background == "black" and len(read.objects) == 2
        by_colour = {o.colour: o for o in read.objects}
        assert set(by_colour) == {"red", "blue"}
        assert by_colour["red"].shape == "circle" and by_colour["blue"].shape == "square"
        assert by_colour["red"].x < 0.5 < by_colour["blue"].x
        assert by_colour["red"].mask.shape == (size, size)
        # the masks split the foreground: no pixel in both
        assert float((by_colour["red"].mask * by_colour["blue"].mask).sum()) == 0.0
        (one,) = oracle.read_objects([image], n_objects=1)
        assert len(one.objects) == 1
    with pytest.raises(ValueError, match="n_objects"):
        oracle.read_objects([render(scene, seed=3)], n_objects=3)
    with pytest.raises(ValueError, match="2 entries for 1 images"):
        oracle.read_objects([render(scene, seed=3)], n_objects=[1, 2])
    blank = np.full((32, 32, 3), 245, np.uint8)
    assert oracle.read_objects(blank)[0].objects == ()


def test_read_objects_agrees_with_v1_read_on_one_object():
    oracle = Oracle.load()
    arr, scenes = make_set(60, seed=77, augment=False)
    v1 = oracle.read(arr)
    v2 = oracle.read_objects(arr, n_objects=1)
    for i, r in enumerate(v2):
        assert (r.objects[0].colour, r.objects[0].shape, r.objects[0].texture, r.background) == (
            v1["colour"][i], v1["shape"][i], v1["texture"][i], v1["background"][i])
