"""Fixtures of the method tests."""

from __future__ import annotations

import pytest
import torch

import circuits


@pytest.fixture(scope="module")
def model64(tiny_dir):
    """The tiny model in float64, so exactness is checked to 1e-5 and beyond.

    Its final layer norm gets a random affine part, as a trained model has: a fresh LayerNorm's
    outputs all lie in the hyperplane sum(x) = 0, so every feature matrix would be rank-deficient.
    """
    model = circuits.load(tiny_dir, dtype=torch.float64)
    norm = model.text_encoder.final_layer_norm
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        norm.weight.copy_(1 + 0.3 * torch.randn(norm.weight.shape, generator=generator, dtype=torch.float64))
        norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=generator, dtype=torch.float64))
    return model
