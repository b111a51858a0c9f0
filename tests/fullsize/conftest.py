"""Fixtures for the real SD tokenizers and the SD1.5 / SD2.1 / SDXL-shaped pipelines.

The tokenizers are rebuilt from OpenAI's BPE merges in the ``clip-anytorch`` wheel, which must be in
the cache first (``.ci/run`` fetches it; by hand: ``python -m circuits.models.sd_tokenizer``). A
missing wheel fails these tests with that command in the message rather than skipping them, so a CI
run cannot pass without them.

Pipelines here are ``tiny=True`` (exact structure, small widths: seconds to build); the full-size
ones are built only by the slow test and the benchmark.
"""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.models.fullsize import build_sd_pipeline
from circuits.models.sd_tokenizer import load_sd_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sd_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """SD1.x's tokenizer (and SDXL's first): 49,408 tokens, pads with EoT."""
    return load_sd_tokenizer(tmp_path_factory.mktemp("sd_tokenizer"))


@pytest.fixture(scope="session")
def sd2_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """SD2.x's tokenizer (and SDXL's second): the same BPE, pads with '!' (id 0)."""
    return load_sd_tokenizer(tmp_path_factory.mktemp("sd2_tokenizer"), pad_token="!")


@pytest.fixture(scope="session")
def xl_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny-width SDXL folder: two encoders (3 layers for the second), text-time conditioning, real tokenizers."""
    folder = tmp_path_factory.mktemp("tiny_sdxl")
    build_sd_pipeline("sdxl", folder, tiny=True)
    return folder


@pytest.fixture(scope="session")
def xl_model(xl_dir):
    return circuits.load(xl_dir)


@pytest.fixture(scope="session")
def sd21_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny-width SD2.1 folder: OpenCLIP-style encoder, '!' padding, v-prediction, linear projections."""
    folder = tmp_path_factory.mktemp("tiny_sd21")
    build_sd_pipeline("sd21", folder, tiny=True)
    return folder
