"""The shipped pocket's text pathway works like Stable Diffusion's (issue 15): its encoder was trained
contrastively and frozen, so different prompts' [EoT]s differ and the implicit nouns mean their objects.

v1's jointly trained encoder failed every check here: its first-[EoT] cosine between "a red circle" and
"a blue circle" was 0.993 (v2: see ``MODEL_CARD.md``), and it had never seen an implicit noun.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import circuits
from circuits.methods.common import text_embeddings
from circuits.pocket import PIPELINE_DIR
from circuits.tokens import layout


@pytest.fixture(scope="module")
def pocket():
    torch.set_num_threads(1)
    return circuits.load("pocket")


def first_eot_states(model, prompts: list[str]) -> torch.Tensor:
    embeds = text_embeddings(model, prompts).double()
    return torch.stack([embeds[i, layout(model.tokenizer, p).first_eot] for i, p in enumerate(prompts)])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1))


def test_the_shipped_encoder_was_trained_frozen_and_contrastive() -> None:
    provenance = json.loads((PIPELINE_DIR / "pocket_train.json").read_text())
    assert provenance["text_mode"] == "frozen", provenance


def test_different_prompts_have_different_first_eots(pocket) -> None:
    red, blue = first_eot_states(pocket, ["a red circle", "a blue circle"])
    assert cosine(red, blue) < 0.8  # v1: 0.993
    prompts = ["a red circle", "a striped blue square on a white background", "an outlined green triangle",
               "a yellow cross on a black background", "a dotted purple circle", "an orange square"]  # fmt: skip
    eots = first_eot_states(pocket, prompts)
    pairs = [cosine(eots[i], eots[j]) for i, j in itertools.combinations(range(len(prompts)), 2)]
    assert sum(pairs) / len(pairs) < 0.5  # v1: 0.95


def test_an_implicit_noun_means_its_object(pocket) -> None:
    """'a dax' (a red circle, never named) lands nearer 'a red circle' than any other object's prompt."""
    prompts = ["a dax", "a red circle", "a blue square", "a green triangle", "a yellow cross", "a red square"]
    eots = first_eot_states(pocket, prompts)
    sims = [cosine(eots[0], eots[i]) for i in range(1, len(prompts))]
    assert max(range(len(sims)), key=sims.__getitem__) == 0, dict(zip(prompts[1:], sims))
