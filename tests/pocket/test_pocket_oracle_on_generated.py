"""The oracle reads *generated* images the way a person does, not only clean renders.

``data/eye_labels.npz`` holds real pocket-model samples (32x32, prompts of the world, see the
JSON's ``prompt_scene``); ``data/eye_labels.json`` holds what a person read in each, shape and
texture, ``"?"`` where the image is too garbled to say. The ``dev`` set guided the oracle's
design; the ``test`` set was labelled blind afterwards, before the oracle's reads were looked at.
The bars are the agreement measured when the labels were made, less a small margin.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from circuits.pocket.oracle import Oracle

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def labelled():
    images = np.load(DATA / "eye_labels.npz")["images"]
    records = json.loads((DATA / "eye_labels.json").read_text())
    assert len(images) == len(records)
    return images, records, Oracle.load().read(images)


@pytest.mark.parametrize("concept, bar", [("shape", 0.92), ("texture", 0.72)])
def test_oracle_agrees_with_the_eye(labelled, concept, bar):
    images, records, read = labelled
    known = [i for i, r in enumerate(records) if r[f"eye_{concept}"] != "?"]
    assert len(known) >= 30
    agreement = np.mean([read[concept][i] == records[i][f"eye_{concept}"] for i in known])
    assert agreement >= bar, f"{concept}: the oracle agrees with the eye on {agreement:.2f} of {len(known)} images"
