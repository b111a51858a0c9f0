"""The shipped oracle reads the world's concepts from clean renders."""

from __future__ import annotations

import numpy as np

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
