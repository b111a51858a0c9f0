"""ANT erases on pocket: a short masked fine-tune lowers the oracle's rate of the erased colour and keeps the
other attributes of other prompts (``circuits.pocket.report.erasure_report``).

The settings are ``ant.Config.pocket()`` made short (250 steps at a higher lr): 61 s of CPU on one
thread (fit and evaluation); ``docs/recipes/ant.md`` has the full-length numbers. The margins come from
a run of this very fit and evaluation (see the constants).
"""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.methods import ant
from circuits.pocket import concept
from circuits.pocket.report import erasure_report

#: a short ANT: Config.pocket()'s mask (12 word maps, the largest half of each tensor), 250 Adam steps at 4x
#: Table 6's lr (earlier measurement with this mask and fine-tune, 4 samples x 25 steps: red 1.00 -> 0.41, ratio
#: 0.99). Eq. 4's one gamma failed this test: 32 maps of prompts in context moved red only to 0.88; 8 maps of the
#: words erased it (0.38) but broke preservation (ratio 0.26)
SHORT = dict(steps=250, lr=2e-3, progress=False)
#: measured (this test's settings) on pocket v2: red 1.00 -> 0.31, synonyms 0.31, preservation 0.98 -> 0.92
#: (ratio 0.936); v1: 0.31, 0.38, ratio 0.957
MAX_TARGET_AFTER = 0.6
MIN_PRESERVATION_RATIO = 0.9


@pytest.fixture(scope="module")
def pocket_model():
    torch.manual_seed(0)
    return circuits.load("pocket")


def test_ant_lowers_the_target_rate_and_keeps_the_rest(pocket_model) -> None:
    erasure = ant.fit(pocket_model, concept("red"), **SHORT)
    assert erasure.notes[0].startswith("config: Config.pocket() defaults")  # model-aware, then SHORT's overrides
    report = erasure_report(pocket_model, "red", erasure, samples=2, steps=15).summary()
    numbers = {k: report[k] for k in ("target_after", "synonyms_after", "preservation_ratio", "kept_after")}
    assert report["target_before"] >= 0.9  # pocket draws red when asked
    assert report["target_after"] <= MAX_TARGET_AFTER, numbers
    assert report["synonyms_after"] <= MAX_TARGET_AFTER, numbers  # crimson / scarlet go too
    assert report["preservation_ratio"] >= MIN_PRESERVATION_RATIO, numbers
