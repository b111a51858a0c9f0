"""``Capture(transform=fn)``: record a function of each call's value, reduced like the value would be."""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.errors import GraphFormatError, ShapeError

SITE = "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.hidden"


def test_a_transform_is_applied_before_the_reductions(model) -> None:
    graph = [
        circuits.Capture(SITE, name="raw"),
        circuits.Capture(SITE, transform=torch.abs, mean_over="batch", over_steps="mean", name="abs"),
        circuits.Capture(SITE, branch="cond", transform=lambda x: x[:1] - x[1:], name="diff"),
    ]
    result = circuits.sample(model, ["a red circle", "a circle"], steps=3, graph=graph, progress=False)
    raw = result.captures["raw"]  # [steps, 4 rows, positions, channels]
    torch.testing.assert_close(result.captures["abs"], raw.abs().mean(dim=(0, 1)))
    diff = result.captures["diff"]  # rows may change: one difference per call
    assert diff.shape == (3, 1, *raw.shape[2:])
    torch.testing.assert_close(diff[:, 0], raw[:, 2] - raw[:, 3])
    assert result.captures.records["diff"].axes == ("call", "batch", "positions", "channels")


def test_a_transform_that_drops_axes_is_an_error_naming_the_site(model) -> None:
    graph = [circuits.Capture(SITE, transform=lambda x: x.mean(dim=1), name="bad")]
    with pytest.raises(ShapeError, match=r"Capture\('.*ff.hidden'\) named 'bad' at .*ff.hidden: transform returned "
                                         r"2 axes .* 3 axes of its input \['batch', 'positions', 'channels'\]"):
        circuits.sample(model, ["a red circle"], steps=1, graph=graph, progress=False)
    with pytest.raises(ShapeError, match="transform=3; give a function"):
        circuits.Capture(SITE, transform=3)


def test_a_graph_with_a_transform_cannot_be_saved_and_one_without_is_unchanged() -> None:
    with pytest.raises(GraphFormatError, match="argument 'transform' is a Python function"):
        circuits.Graph([circuits.Capture(SITE, transform=torch.abs)]).to_json()
    data = circuits.Graph([circuits.Capture(SITE, over_steps="mean")]).to_data()
    assert data["interventions"] == [{"kind": "capture", "site": SITE, "mean_over": [], "over_steps": "mean",
                                      "keep_grad": False}]
