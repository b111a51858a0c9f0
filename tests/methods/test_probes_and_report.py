"""TRCE's [EoT] probes, ErasePro's depth probe, and the pocket erasure report (tiny settings)."""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.methods import erasepro, trce
from circuits.tokens import layout


def test_eot_probe_zeroes_the_last_k_eot_columns_in_both_branches(model) -> None:
    assert trce.eot_probe(0) == circuits.Graph()
    graph = trce.eot_probe(3, renormalize=True)
    (zero,) = graph
    assert zero.tokens == "last_eot:3" and zero.branch == "both" and zero.renormalize
    k = trce.eot_count(model, "a red circle")
    assert k == layout(model.tokenizer, "a red circle").length - layout(model.tokenizer, "a red circle").first_eot
    full = circuits.sample(model, ["a red circle"], steps=2, graph=trce.eot_probe(k), progress=False)
    plain = circuits.sample(model, ["a red circle"], steps=2, progress=False)
    assert not torch.equal(full.latents, plain.latents)
    with pytest.raises(ValueError, match="k=-1"):
        trce.eot_probe(-1)


def test_eot_similarity_is_a_cosine_matrix_over_every_token(model) -> None:
    tokens, sim = trce.eot_similarity(model, "a red circle")
    assert len(tokens) == sim.shape[0] == sim.shape[1] == model.tokenizer.model_max_length
    torch.testing.assert_close(sim.diagonal(), torch.ones(len(tokens)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sim, sim.T)
    assert tokens[0] == "<|startoftext|>" and tokens[4] == "<|endoftext|>"


def test_depth_probe_adds_the_same_relative_deviation_shallow_and_deep(model) -> None:
    probes = erasepro.depth_probe(model, alpha=0.2)
    assert set(probes) == {"shallow", "deep"}
    for graph in probes.values():
        assert len(graph) == 3
        for edit in graph:
            weight = model.parameter(edit.param).detach()
            eye = torch.eye(*weight.shape)
            torch.testing.assert_close(edit.delta, 0.2 * torch.linalg.matrix_norm(weight) * eye)
    assert all(e.param.startswith("text_encoder.encoder.layers.0.") for e in probes["shallow"])
    assert all(".attn2." in e.param for e in probes["deep"])


@pytest.mark.slow
def test_pocket_erasure_report_reads_before_and_after() -> None:
    from circuits.pocket import concept, evaluation_sets
    from circuits.pocket.report import EvaluationSets, damage, erasure_report

    model = circuits.load("pocket")
    red = concept("red")
    full = evaluation_sets(red, n=2)
    sets = EvaluationSets(full.attribute, full.value, full.target, full.synonyms, full.preservation)
    erasure = trce.fit(model, red, stages=("text",))
    report = erasure_report(model, red, erasure, sets=sets, samples=1, steps=8)
    summary = report.summary()
    assert set(report.before) == set(report.after) == {"target", "synonyms", "preservation"}
    assert report.before["target"].images == 2 and report.after["preservation"].erased_rate is None
    for key in ("target_before", "target_after", "synonyms_after", "preservation_before", "preservation_after"):
        assert 0.0 <= summary[key] <= 1.0
    again = erasure_report(model, red, circuits.Graph(), sets=sets, samples=1, steps=8, baseline=report)
    assert again.before is report.before  # the baseline's "before" is reused, not resampled
    assert again.after["target"].erased_rate == report.before["target"].erased_rate  # empty graph = no edit
    hurt = damage(model, ["a red circle"], erasepro.depth_probe(model, 0.2)["deep"], samples=1, steps=8)
    assert hurt["pixel_difference"] > 0 and 0.0 <= hurt["accuracy_after"] <= 1.0
