"""Erasures are reversible, compose with probes, save as safetensors + JSON and reload identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_state import assert_same_state, snapshot

import circuits
from circuits.methods import Concept, ErasureFormatError, erasepro, load, trce, uce

CONCEPT = Concept("red", templates=["a {} circle", "a photo of a {} dog"], preservation=["a blue square"])


@pytest.fixture(scope="module")
def erasure(model):
    return erasepro.fit(model, CONCEPT, positions="eot")


def test_an_erasure_is_accepted_wherever_a_graph_is_and_leaves_nothing_behind(model, erasure) -> None:
    before = snapshot(model)
    plain = circuits.sample(model, ["a red circle"], steps=3, progress=False)
    edited = circuits.sample(model, ["a red circle"], steps=3, graph=erasure, progress=False)
    assert not torch.equal(plain.latents, edited.latents)
    with circuits.intervene(model, erasure):
        inside = circuits.sample(model, ["a red circle"], steps=3, progress=False)
    torch.testing.assert_close(inside.latents, edited.latents, rtol=0, atol=0)
    assert_same_state(before, snapshot(model))
    with pytest.raises(RuntimeError, match="boom"), circuits.intervene(model, erasure):
        raise RuntimeError("boom")
    assert_same_state(before, snapshot(model))


def test_an_erasure_composes_with_probes(model, erasure) -> None:
    graph = erasure + [circuits.Capture("unet.*attn2", mean_over=("batch",), over_steps="mean", name="x")]
    result = circuits.sample(model, ["a red circle"], steps=2, graph=graph, progress=False)
    assert len(result.captures) == len(model.sites.cross_attention())
    stacked = erasure + trce.fit(model, CONCEPT, stages=("text",))  # two erasures: their deltas add up
    assert len(stacked) == len(erasure.graph) + 2 * len(model.sites.cross_attention())


def test_save_and_load_into_a_fresh_model_gives_identical_images(model, erasure, tiny_dir, tmp_path) -> None:
    folder = erasure.save(tmp_path / "red")
    assert sorted(p.name for p in folder.iterdir()) == ["erasure.json", "tensors.safetensors"]
    data = json.loads((folder / "erasure.json").read_text())
    assert "__tensor__" not in json.dumps(data)  # tensors live in the safetensors file, not in JSON
    loaded = load(folder)
    assert loaded.method == erasure.method and loaded.concept == erasure.concept and loaded.trace == erasure.trace
    assert loaded.graph == erasure.graph
    fresh = circuits.load(tiny_dir)
    a = circuits.sample(model, ["a red circle", "a blue dog"], steps=3, graph=erasure, progress=False)
    b = circuits.sample(fresh, ["a red circle", "a blue dog"], steps=3, graph=loaded, progress=False)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))
    erasure.save(folder)  # saving over an existing erasure replaces it whole
    assert load(folder).graph == erasure.graph


def test_loading_something_else_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ErasureFormatError, match="is not a folder"):
        load(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ErasureFormatError, match="not a saved erasure.*notes.txt"):
        load(tmp_path)
    (tmp_path / "erasure.json").write_text('{"format": "other"}')
    (tmp_path / "tensors.safetensors").write_bytes(b"")
    with pytest.raises(ErasureFormatError, match="not a circuits erasure"):
        load(tmp_path)


def test_synonyms_share_anchor_prompts(model) -> None:
    concept = Concept("red", synonyms=["crimson"], templates=["a {} circle", "a photo of a {} dog"])
    fits = (uce.fit, erasepro.fit, lambda m, c, **kw: trce.fit(m, c, stages=("text",), **kw))
    for fit in fits:
        erasure = fit(model, concept, positions="eot")  # 4 target prompts, 2 distinct anchor prompts
        assert len(erasure.trace) == len(erasure.graph) > 0
    assert erasepro.fit(model, concept, positions="eot").trace[0]["columns"] == 4


def test_uce_trace_and_repr(model) -> None:
    erasure = uce.fit(model, CONCEPT)
    assert "uce" in repr(erasure) and "WeightEdit" in repr(erasure)
    row = erasure.trace[0]
    for key in ("angle_before_deg", "distance_before", "residual", "delta_norm", "rank", "solver"):
        assert key in row
