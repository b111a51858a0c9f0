"""ActErase on pocket: ``fit(model, concept)`` starts from ``Config.pocket()`` and erases, as measured.

One short run (a 10-step collection on the 8 templates of ``red``, 6 evaluation prompts per set, 2
samples, 10 steps; ~30 s on one core). The bounds are the measured values with a margin, recorded by
``benchmarks/acterase_pocket.py --fast`` (``docs/recipes/acterase.md``): with these settings ActErase
takes red's rate from 1.00 to 0.08 on pocket v2 while preservation falls from 1.00 to 0.50 (v1: 0.00 and
the same 0.50). On v1, patching both CFG branches instead (the control) left red at 1.00, so the first
bound fails when the patch does not act where Alg. 1 puts it; masking every entry dropped preservation by
0.72 (to 0.28) and the paper's per-step masks (``masks="step"``) by 0.67 on these settings, so the second
fails for those (the controls were measured on v1).
"""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.methods import acterase
from circuits.pocket import concept, evaluation_sets
from circuits.pocket.report import EvaluationSets, erasure_report

#: measured with these settings on pocket v2: red's rate 1.00 -> 0.08; preservation 1.00 -> 0.50 (drop 0.50)
MAX_TARGET_RATE = 0.25
MAX_PRESERVATION_DROP = 0.65


@pytest.fixture(scope="module")
def pocket():
    torch.set_num_threads(1)
    return circuits.load("pocket")


def test_fit_on_pocket_erases_red_and_keeps_preservation_within_the_measured_margin(pocket) -> None:
    red = concept("red")
    erasure = acterase.fit(pocket, red, steps=10, synonyms=False)
    assert erasure.notes == ["config: Config.pocket() defaults (chosen for model family 'pocket')"]
    assert erasure.config["masks"] == acterase.Config.pocket().masks == "vote"
    full = evaluation_sets(red, n=6)
    sets = EvaluationSets(full.attribute, full.value, full.target, (), full.preservation)
    summary = erasure_report(pocket, red, erasure, sets=sets, samples=2, steps=10).summary()
    assert summary["target_before"] >= 0.9  # the model draws red when asked
    assert summary["target_after"] <= MAX_TARGET_RATE, summary
    assert summary["preservation_before"] - summary["preservation_after"] <= MAX_PRESERVATION_DROP, summary
