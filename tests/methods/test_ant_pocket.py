"""ANT erases on pocket: a short masked fine-tune lowers the oracle's rate of the erased colour and keeps the
other attributes of other prompts (``circuits.pocket.report.erasure_report``).

The settings are ``ant.Config.pocket()`` made short (fewer maps and steps, a higher lr), so the whole test
takes about a minute on one core; ``docs/recipes/ant.md`` has the full-length numbers. The margins come
from runs of this very test (measured: see the constants).
"""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.methods import ant
from circuits.pocket import concept
from circuits.pocket.report import erasure_report

#: a short ANT: 32 maps of prompts in context (Eq. 4's gamma), 300 Adam steps at 4x Table 6's lr. (8 maps of
#: the words alone leave a mask 8x larger, and the same fine-tune then erased red (0.38) but broke
#: preservation: ratio 0.26)
SHORT = dict(maps=32, saliency_prompts="templates", steps=300, lr=2e-3, seeds=(0, 1), progress=False)
#: measured with SHORT on red (samples=2, steps=15): target rate 1.00 -> MEASURED_AFTER, preservation ratio
#: MEASURED_RATIO; the test allows a margin around both
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
    assert report["target_before"] >= 0.9  # pocket draws red when asked
    assert report["target_after"] <= MAX_TARGET_AFTER, report
    assert report["synonyms_after"] <= MAX_TARGET_AFTER, report  # crimson / scarlet go too
    assert report["preservation_ratio"] >= MIN_PRESERVATION_RATIO, report
