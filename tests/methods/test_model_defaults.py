"""Model-aware defaults: pocket gets ``Config.pocket()``, every other model ``Config.paper()``."""

from __future__ import annotations

import dataclasses

import pytest

import circuits
from circuits.methods.common import defaults_note, model_defaults, resolve_config


@dataclasses.dataclass(frozen=True)
class _Config:
    steps: int = 50

    @classmethod
    def paper(cls) -> "_Config":
        return cls()

    @classmethod
    def pocket(cls) -> "_Config":
        return cls(steps=25)


@dataclasses.dataclass(frozen=True)
class _Plain:
    steps: int = 7


@pytest.fixture(scope="module")
def pocket():
    return circuits.load("pocket")


def test_family_names_pocket_and_other_shapes(pocket, model, sd2_model):
    assert pocket.family == "pocket"
    assert model.family == "sd"  # tiny test pipeline: no SD width
    assert sd2_model.family == "sd"


def test_defaults_follow_the_model(pocket, model):
    assert model_defaults(_Config, pocket).steps == 25
    assert model_defaults(_Config, model).steps == 50
    assert model_defaults(_Plain, pocket).steps == 7
    assert resolve_config(_Config, None, {}, pocket).steps == 25
    assert resolve_config(_Config, None, {"steps": 3}, model).steps == 3
    assert resolve_config(_Config, _Config(steps=9), {}, pocket).steps == 9  # explicit config wins


def test_defaults_note_names_the_choice(pocket, model):
    assert "pocket()" in defaults_note(_Config, pocket, None)
    assert "paper()" in defaults_note(_Config, model, None)
    assert "explicitly" in defaults_note(_Config, model, _Config())
