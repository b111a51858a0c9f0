"""Shared fixtures: tiny random SD pipelines built offline (SD1.x and SD2.x tokenizer layouts)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import circuits

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random pipeline saved with save_pretrained (SD1.x layout: padding with the EoT id)."""
    folder = tmp_path_factory.mktemp("tiny_sd")
    circuits.build_tiny_pipeline(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd2_dir(tmp_path_factory: pytest.TempPathFactory):
    """The same architecture with an SD2.x-style tokenizer (padding with '!')."""
    folder = tmp_path_factory.mktemp("tiny_sd2")
    circuits.build_tiny_pipeline(folder, pad_token="!")
    return folder


@pytest.fixture(scope="session")
def model(tiny_dir):
    return circuits.load(tiny_dir)


@pytest.fixture(scope="session")
def sd2_model(tiny_sd2_dir):
    return circuits.load(tiny_sd2_dir)


@pytest.fixture()
def prompts():
    return ["a red circle", "a photo of a blue unicorn on a white background"]
