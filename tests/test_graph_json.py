"""Graphs are data: JSON round-trip, and clear errors for JSON that is not a graph."""

from __future__ import annotations

import json

import pytest
import torch

import circuits
from circuits import Ablate, Capture, Graph, MaskedPatch, Replace, Scale, WeightEdit, ZeroTokens
from circuits.errors import GraphFormatError


def full_graph() -> Graph:
    return Graph([
        Capture("unet.*attn2.probs", mean_over=("batch", "heads"), over_steps="mean", name="p"),
        Replace("unet.eps", torch.arange(6, dtype=torch.float32).view(2, 3), steps=[0, 2], branch="cond"),
        Replace("unet.conv_in", 1.5, tokens=None),  # a number becomes a 0-dim tensor
        Scale("unet.conv_out", torch.tensor(2.0, dtype=torch.bfloat16)),
        Ablate("text_encoder.encoder.layers.0", mode="mean", mean=torch.ones(4), tokens="eot_all"),
        Scale("unet.conv_in", 0.5, timesteps=(100, 900), rows=[1]),
        MaskedPatch("unet.conv_out", torch.tensor([True, False]), torch.zeros(2, dtype=torch.float16)),
        MaskedPatch("unet.conv_out", torch.tensor(0.5), torch.tensor(1.0)),
        ZeroTokens("unet.*attn2", tokens=["eot", "red"], renormalize=True),
        WeightEdit("unet.conv_in.bias", delta=torch.full((3,), 0.25, dtype=torch.float64)),
    ])


def assert_same(a: Graph, b: Graph) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        for key, value in x.to_dict().items():
            other = y.to_dict()[key]
            assert other == value, key


def test_round_trip_preserves_everything():
    graph = full_graph()
    again = Graph.from_json(graph.to_json())
    assert_same(graph, again)
    assert again == graph
    replace = again[1]
    assert torch.equal(replace.value, graph[1].value) and replace.value.dtype == torch.float32
    assert again[2].value.shape == () and float(again[2].value) == 1.5
    assert again[3].factor.dtype == torch.bfloat16 and again[3].factor.shape == ()
    assert again[6].mask.dtype == torch.bool and again[6].source.dtype == torch.float16
    assert again[7].mask.shape == () and again[7].source.shape == ()
    assert again[9].delta.dtype == torch.float64
    assert again[5].timesteps == (100.0, 900.0) and again[5].rows == (1,)
    assert again.to_json() == graph.to_json()


def test_equality_compares_arguments_and_tensor_values():
    assert full_graph() == full_graph()
    changed = full_graph()
    changed[1] = Replace("unet.eps", torch.arange(6, dtype=torch.float64).view(2, 3), steps=[0, 2], branch="cond")
    assert changed != full_graph()  # same values, other dtype
    assert Scale("unet.eps", 2.0) != Scale("unet.eps", 2.0, steps=[0])
    assert Capture("unet.eps") != Scale("unet.eps", 1.0)


def test_graph_is_an_ordered_list():
    graph = full_graph()
    assert [type(i).__name__ for i in graph][:2] == ["Capture", "Replace"]
    assert isinstance(graph + [Capture("unet.eps")], Graph)
    with pytest.raises(TypeError, match="not an intervention"):
        graph.append("unet.eps")


def test_functions_cannot_be_saved():
    with pytest.raises(GraphFormatError, match="Python function"):
        Graph([Replace("unet.eps", lambda x: x)]).to_json()


@pytest.mark.parametrize(
    "text, match",
    [
        ("not json", "does not parse"),
        ("[]", "must be an object"),
        ('{"circuits_graph": 9, "interventions": []}', "format 9"),
        ('{"circuits_graph": 1, "interventions": [{"site": "unet.eps"}]}', "intervention 0: must be an object with a 'kind'"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "zap", "site": "x"}]}', "unknown kind 'zap'"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "capture", "site": "x", "colour": 1}]}', "unknown fields"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "scale", "site": "x"}]}', "factor"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "scale", "site": "x", "factor": 1, "branch": "cnd"}]}',
         r"intervention 0 \(scale\): .*branch='cnd'.*did you mean 'cond'"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "scale", "site": "x", "factor": "two"}]}',
         r"intervention 0 \(scale\): .*factor='two'"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "capture", "site": 5}]}', r"\(capture\): .*site=5"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "ablate", "site": "x", "mode": "bogus"}]}', "mode='bogus'"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "capture", "site": "x", "steps": [-1]}]}', "steps="),
        ('{"circuits_graph": 1, "interventions": [{"kind": "weight_edit", "param": "unet.conv_in.bias", '
         '"value": [1.0]}]}', "value must be a floating-point torch.Tensor"),
        ('{"circuits_graph": 1, "interventions": [{"kind": "replace", "site": "x", "value": {"__tensor__": {"dtype": "float32"}}}]}', "malformed tensor"),
    ],
)
def test_malformed_json_names_the_problem(text, match):
    with pytest.raises(GraphFormatError, match=match):
        Graph.from_json(text)


def test_loaded_graph_runs(model):
    graph = Graph.from_json(json.dumps({"circuits_graph": 1, "interventions": [
        {"kind": "zero_tokens", "site": "unet.*attn2", "tokens": "eot_all", "branch": "cond"},
        {"kind": "capture", "site": "unet.eps", "name": "eps", "steps": [0]},
    ]}))
    result = circuits.sample(model, ["a red circle"], steps=2, graph=graph, progress=False)
    assert result.captures["eps"].shape == (1, 2, 4, 8, 8)
