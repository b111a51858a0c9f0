"""TRCE stage 1 as the paper defines it: Eq. 5 with both sums normalised (App. C.1), Table 4's positions,
model-aware defaults, and an erasure that acts on pocket.

The exactness checks use the tiny model in float64 against a direct transcription of Eq. 5; the pocket
test samples and lets the oracle read (about 25 s on one core).
"""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.methods import Concept, catalog, trce
from circuits.methods.common import ConfigError
from circuits.methods.features import align
from circuits.sampling import encode_prompts
from circuits.tokens import layout

# three templates of three lengths; three preservation prompts x 16 positions = 48 columns > 32 features,
# so the normalised A A^T of Eq. 5 is invertible and eta acts
CONCEPT = Concept("red", anchor="blue", templates=["{}", "a {} circle", "a photo of a {} dog"],
                  preservation=["a green square", "a photo of a cat", "a striped triangle on a white background"])


def _embed(model, prompts):
    with torch.no_grad():
        return encode_prompts(model, prompts, "cond").to(torch.float64)


def _assert_first_eots_mapped(model, erasure, pairs) -> None:
    """Every edited projection maps each target prompt's first [EoT] exactly where the original maps the
    anchor's (Eq. 5 solved without residual), positions read from the tokenizer."""
    tok = model.tokenizer
    m, s = _embed(model, [p.target for p in pairs]), _embed(model, [p.anchor for p in pairs])
    x = torch.stack([m[i, layout(tok, p.target).first_eot] for i, p in enumerate(pairs)], 1)
    y = torch.stack([s[i, layout(tok, p.anchor).first_eot] for i, p in enumerate(pairs)], 1)
    for edit in erasure.graph:
        w = model.parameter(edit.param).detach()
        torch.testing.assert_close((w + edit.delta) @ x, w @ y, rtol=1e-5, atol=1e-8)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||``: the tiny model's Gram matrices have condition numbers near 1e10, so elementwise
    float64 agreement stops near 1e-7 of the weight; an unnormalised sum or a wrong eta is off by O(1)."""
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


def _eq5(model, concept: Concept, eta: float, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 5 transcribed, with App. C.1's normalisation: each sum divided by its number of prompts.

    e^m / e^s: the first [EoT] of every malicious / safe prompt; e^k: every position of every
    preservation prompt (the authors' code keeps every token of its preservation captions).
    """
    tok, pairs = model.tokenizer, concept.pairs()
    m, s = _embed(model, [p.target for p in pairs]), _embed(model, [p.anchor for p in pairs])
    k = _embed(model, list(concept.preservation))
    n, q = len(pairs), len(concept.preservation)
    w = weight.to(torch.float64)
    mat1 = torch.zeros_like(w)
    mat2 = torch.zeros(w.shape[1], w.shape[1], dtype=torch.float64)
    for i, pair in enumerate(pairs):
        em = m[i, layout(tok, pair.target).first_eot][:, None]
        es = s[i, layout(tok, pair.anchor).first_eot][:, None]
        mat1 += (w @ es @ em.T) / n
        mat2 += (em @ em.T) / n
    for j in range(q):
        for position in range(k.shape[1]):
            ek = k[j, position][:, None]
            mat1 += eta / q * (w @ ek @ ek.T)
            mat2 += eta / q * (ek @ ek.T)
    return mat1 @ torch.linalg.inv(mat2)


@pytest.mark.parametrize("eta", [0.01, 1.0])
def test_stage1_is_eq5_with_both_sums_normalised(model64, eta: float) -> None:
    erasure = trce.fit(model64, CONCEPT, stages=("text",), eta=eta, rtol=1e-12)
    assert not any("singular" in note for note in erasure.notes)  # the invertible case Eq. 5 writes
    assert len(erasure.graph) == 2 * len(model64.sites.cross_attention())
    for edit in erasure.graph:
        w = model64.parameter(edit.param).detach()
        assert _relative(w + edit.delta, _eq5(model64, CONCEPT, eta, w)) < 1e-5


def test_the_number_of_prompts_does_not_change_the_solution_but_eta_does(model64) -> None:
    """App. C.1: "normalized, thereby eliminating the effect of the number of prompts on optimization"."""
    twice = Concept("red", anchor="blue", templates=list(CONCEPT.templates) * 2,
                    preservation=list(CONCEPT.preservation) * 3)
    once = trce.fit(model64, CONCEPT, stages=("text",), rtol=1e-12)
    repeated = trce.fit(model64, twice, stages=("text",), rtol=1e-12)
    stronger = trce.fit(model64, CONCEPT, stages=("text",), rtol=1e-12, eta=1.0)
    for a, b, c in zip(once.graph, repeated.graph, stronger.graph, strict=True):
        assert _relative(a.delta, b.delta) < 1e-5
        # eta acts: a 100x heavier preservation term changes every edit by far more than rounding
        assert torch.linalg.matrix_norm(a.delta - c.delta) > 1e-2 * torch.linalg.matrix_norm(a.delta)


def test_with_first_eot_preservation_every_equation_is_met_and_the_notes_say_eta_is_idle(model64) -> None:
    erasure = trce.fit(model64, CONCEPT, stages=("text",), preservation_positions="same")
    pairs = CONCEPT.pairs()
    _assert_first_eots_mapped(model64, erasure, pairs)
    assert any("eta has no effect" in note for note in erasure.notes)


def test_trce_maps_the_tokenizers_first_eot_not_a_word_count(model64) -> None:
    concept = Concept("red", anchor="blue", templates=["a {} unicorn!", "a photo of a {} circle, striped"])
    erasure = trce.fit(model64, concept, stages=("text",), eta=0.0)
    tok = model64.tokenizer
    for pair in concept.pairs():
        assert layout(tok, pair.target).first_eot != len(pair.target.split()) + 1  # the official count misses
    pairs = concept.pairs()
    _assert_first_eots_mapped(model64, erasure, pairs)


def test_table4_position_sets(model64) -> None:
    """Table 4's rows: [EoT], [KEY], [EoT]+[KEY], [EoT]+[SoT], [EoT]+[SoT]+[KEY]."""
    tok = model64.tokenizer
    pair = Concept("red", anchor="blue", templates=["a photo of a {} dog"]).pairs()[0]
    t, a = layout(tok, pair.target), layout(tok, pair.anchor)
    key_t, key_a = t.keyword("red")[-1], a.keyword("blue")[-1]
    assert align(tok, pair, "eot") == ([t.first_eot], [a.first_eot])
    assert align(tok, pair, "keyword") == ([key_t], [key_a])
    assert align(tok, pair, "eot+key") == ([key_t, t.first_eot], [key_a, a.first_eot])
    assert align(tok, pair, "eot+sot") == ([0, t.first_eot], [0, a.first_eot])
    assert align(tok, pair, "eot+sot+key") == ([0, key_t, t.first_eot], [0, key_a, a.first_eot])


def test_catalog_table4_entries_are_the_papers_rows_at_eta_0001(model) -> None:
    concept = Concept("red", anchor="blue", templates=["a {} circle"], preservation=["a green square"])
    rows = {"trce1-table4-eot": "eot", "trce1-keyword": "keyword", "trce1-eot-key": "eot+key",
            "trce1-eot-sot": "eot+sot", "trce1-eot-sot-key": "eot+sot+key"}
    for name, positions in rows.items():
        entry = catalog.get(name)
        assert "Table 4" in entry.summary, name
        erasure = entry(model, concept)
        assert (erasure.config["positions"], erasure.config["eta"], erasure.config["stages"]) == (
            positions, 0.001, ["text"]), name
    for ours in ("trce1-eot-all", "trce1-all"):
        assert "Table 4" not in catalog.get(ours).summary and "ours" in catalog.get(ours).summary


def test_model_aware_defaults(model) -> None:
    assert trce.Config.paper() == trce.Config()
    assert trce.pocket() == trce.Config.pocket() != trce.Config.paper()
    erasure = trce.fit(model, CONCEPT, stages=("text",))
    assert erasure.config["lr"] == trce.Config.paper().lr and "Config.paper()" in erasure.notes[0]
    given = trce.fit(model, CONCEPT, trce.Config.pocket(), stages=("text",))
    assert given.config["lr"] == trce.Config.pocket().lr and "explicitly" in given.notes[0]
    with pytest.raises(ConfigError, match="preservation_positions"):
        trce.fit(model, CONCEPT, preservation_positions="first")
    with pytest.raises(ConfigError, match="eta"):
        trce.fit(model, CONCEPT, eta=-1.0)


def test_pocket_defaults_and_stage1_erases_red_and_keeps_the_rest() -> None:
    """On pocket, ``fit`` with no config starts from ``Config.pocket()``; stage 1 lowers red's rate and the
    other colours survive. Measured on pocket v2 (2 images per prompt, seed 0): red 1.00 -> 0.12, preservation
    ratio 0.92 (v1: 0.56 and 0.94); on v1 the fit before App. C.1's normalisation and the all-position
    preservation term kept 0.69 of the preservation (4 images), which the 0.85 bound catches."""
    from circuits.pocket.report import erasure_report

    model = circuits.load("pocket")
    erasure = trce.fit(model, "red", stages=("text",))
    assert "Config.pocket()" in erasure.notes[0] and erasure.config["lr"] == trce.Config.pocket().lr
    summary = erasure_report(model, "red", erasure, samples=2).summary()
    assert summary["target_before"] >= 0.9
    assert summary["target_after"] <= summary["target_before"] - 0.3
    assert summary["preservation_ratio"] >= 0.85
