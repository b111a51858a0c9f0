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


#: ``CIRCUITS_FULLSIZE=sd15,sd21`` (or ``all``) runs the full-size tests of those families; unset: skipped
FULLSIZE_ENV = "CIRCUITS_FULLSIZE"


def fullsize_families() -> tuple[str, ...]:
    import os

    value = os.environ.get(FULLSIZE_ENV, "").strip()
    if value in ("", "0"):
        return ()
    if value in ("1", "all"):
        return ("sd15", "sd21", "sdxl")
    return tuple(v.strip() for v in value.split(",") if v.strip())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Full-size tests (``@pytest.mark.fullsize``) build 860 M - 2.6 B parameter pipelines (5-14 GB): they
    run only when ``CIRCUITS_FULLSIZE`` names their family, so the default run and CI stay fast."""
    chosen = fullsize_families()
    for item in items:
        marker = item.get_closest_marker("fullsize")
        if marker is None:
            continue
        family = item.callspec.params.get("family") if hasattr(item, "callspec") else None
        if family not in chosen:
            item.add_marker(pytest.mark.skip(
                reason=f"full size: set {FULLSIZE_ENV}={family or 'sd15'} (or 'all') to run it (5-14 GB, minutes)"
            ))
