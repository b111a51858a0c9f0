"""The runtime's protocol with interventions: per-call kinds are bound to each site (``bind``),
per-context kinds are entered and undone (``enter``), with no special cases for particular kinds;
and anything with ``as_graph()`` is accepted wherever a graph is."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from model_state import assert_same_state, snapshot

import circuits
from circuits import Capture, Graph, Scale
from circuits.errors import UnmatchedInterventionWarning
from circuits.interventions.base import Intervention


def unet_call(model):
    x = torch.randn(2, 4, 8, 8)
    embeds = torch.randn(2, model.tokenizer.model_max_length, model.text_encoder.config.hidden_size)
    with torch.no_grad():
        return model.unet(x, 500, encoder_hidden_states=embeds).sample


# -- interventions bind and enter themselves; the runtime has no special kinds ----------------------
@dataclass(eq=False)
class _Shift(Intervention):
    """A per-context kind defined outside the core: adds ``amount`` to a parameter for the context."""

    param: str
    amount: float = 1.0
    per_call = False

    def enter(self, model):
        parameter = model.parameter(self.param)
        original = parameter.detach().clone()
        with torch.no_grad():
            parameter.add_(self.amount)

        def undo():
            with torch.no_grad():
                parameter.copy_(original)

        return undo


@dataclass(eq=False)
class _CountSites(Intervention):
    """A per-call kind that keeps per-site state through bind()."""

    site: str
    bound: tuple = ()

    def bind(self, run, site, expanded):
        bound = _CountSites(site, name=site)
        bound._parent = self
        self.bound = (*self.bound, (site, expanded))
        return bound

    def apply(self, x, selection, ctx, site):
        assert self.name == site  # the per-site copy acts
        return x


def test_custom_kinds_enter_and_bind_without_runtime_special_cases(model):
    before = snapshot(model)
    bias = model.unet.conv_in.bias
    original = bias.detach().clone()
    counter = _CountSites("unet.*attn2")
    with pytest.raises(RuntimeError, match="body"):
        with circuits.intervene(model, [_Shift("unet.conv_in.bias", 2.0), counter]) as run:
            torch.testing.assert_close(bias.detach(), original + 2.0)
            unet_call(model)
            raise RuntimeError("body")
    assert torch.equal(bias, original)
    assert [s for s, _ in counter.bound] == model.sites.cross_attention() and all(e for _, e in counter.bound)
    assert run.bindings[0].intervention.origin is counter
    assert_same_state(before, snapshot(model))
    source = (Path(circuits.__file__).parent / "interventions" / "runtime.py").read_text()
    names = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    assert not names & {"Capture", "WeightEdit"}


def test_intervention_defaults_for_bind_and_enter(model):
    scale = Scale("unet.eps", 2.0)
    with circuits.intervene(model, []) as run:
        assert scale.bind(run, "unet.eps", False) is scale
    with pytest.raises(NotImplementedError, match="per call"):
        scale.enter(model)


# -- anything with as_graph() is a graph --------------------------------------------------------
class _Erasure:
    def __init__(self, graph):
        self.graph = graph

    def as_graph(self):
        return self.graph


def test_objects_with_as_graph_are_accepted_as_graphs(model, prompts):
    erasure = _Erasure(Graph([Scale("unet.eps", 0.0, steps=[0], branch="cond"), Capture("unet.eps", name="e")]))
    result = circuits.sample(model, prompts, steps=2, progress=False, record=True, graph=erasure)
    assert torch.count_nonzero(result.trajectory.noise_cond[0]) == 0 and "e" in result.captures
    with pytest.warns(UnmatchedInterventionWarning, match="Scale"):  # step-scoped: no step outside the sampler
        with circuits.intervene(model, erasure) as run:
            unet_call(model)
    assert run.captures["e"].shape[0] == 1
    assert Graph().as_graph() == Graph()
    with pytest.raises(TypeError, match="_Erasure.as_graph\\(\\) returned a int"):
        with circuits.intervene(model, _Erasure(3)):
            pass
    with pytest.raises(TypeError, match="as_graph"):
        with circuits.intervene(model, 3.5):
            pass
