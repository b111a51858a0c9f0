"""Every registered experiment off pocket at its smallest settings: shared by the fast tiny-width test
(``test_experiments_xl.py``) and the full-size one (``test_fullsize_slow.py``).

The cases iterate the registry, so a new experiment is covered without touching these tests. Each run
starts from the recipe's own ``fast`` settings (``run_experiment(..., fast=True)``) and overrides, by
field name and only where the config has the field, what a folder needs (templates and preservation
prompts: off pocket a concept is a word) and what makes it smaller (1-2 steps, one seed). Prompts are
I2P-style (punctuation, a ``(word:1.2)`` weight, the sub-worded "artstation") so the token positions
of the real 77-token tokenizers are exercised, not pocket's vocabulary.

An experiment that reads its numbers with the pocket oracle (``needs=("oracle",)``) must refuse a
folder with an error naming the oracle: :func:`expect_refusal` checks that.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from circuits.experiments import ExperimentError, ExperimentResult, experiments, run_experiment

#: I2P-style prompts: commas, a prompt weight, sub-words ("artstation", "rutkowski") in both tokenizers
PROMPTS = ("a red circle, trending on artstation", "portrait of a blue cat, (masterpiece:1.2), by greg rutkowski")
#: what a folder needs that pocket supplies itself (a concept in context, the prompts to leave alone)
OFF_POCKET: dict[str, Any] = {
    "templates": ("a photo of a {}", "a {} on artstation, highly detailed"),
    "preservation": ("a photo of a dog", "a painting of a house, (masterpiece:1.2)"),
}
#: the smallest run: overrides a fast setting only when it is larger
SMALLEST: dict[str, Any] = {"steps": 2, "collect_steps": 2, "sample_steps": 2, "seeds": (0,), "show_prompts": 1}
#: per-experiment settings on top (prompts whose words the experiment looks for)
SPECIFIC: dict[str, dict[str, Any]] = {
    "attention_maps": {"prompts": PROMPTS, "words": ("red", "blue", "artstation")},
    "eot_zeroing": {"prompts": PROMPTS},
    "eot_similarity": {"prompts": PROMPTS[1:]},
    "cfg_reversal": {"prompts": PROMPTS[:1]},
    "depth_sensitivity": {"prompts": PROMPTS[:1]},
}


def names() -> list[str]:
    """Every registered experiment (the registry, not a list kept here)."""
    return list(experiments())


def settings(name: str) -> dict[str, Any]:
    """The overrides of the smallest off-pocket run of ``name``, on top of its ``fast`` settings."""
    entry = experiments()[name]
    fields = {f.name: f for f in dataclasses.fields(entry.config)}
    base = {**{f.name: f.default for f in fields.values()}, **entry.fast}
    out: dict[str, Any] = {}
    for key, value in OFF_POCKET.items():
        if key in fields:
            out[key] = value
    for key, value in SMALLEST.items():
        current = base.get(key)
        if key not in fields or current is None:
            continue
        if isinstance(value, tuple) and len(current) > len(value) or isinstance(value, int) and current > value:
            out[key] = value
    out.update(SPECIFIC.get(name, {}))
    return out


def expect_refusal(name: str, model: Any) -> None:
    """An oracle experiment on a folder: a clear error that names the pocket oracle and the way out."""
    with pytest.raises(ExperimentError, match=rf"experiment '{name}' reads its numbers with the pocket oracle.*"
                                              r"model='pocket'"):  # fmt: skip
        run_experiment(name, model=model, fast=True, progress=False)


def run_case(name: str, model: Any, out: Path | None, **extra: Any) -> ExperimentResult:
    """Run ``name`` at its smallest off-pocket settings (and ``extra``; into ``out`` if given) and check what it
    produced."""
    result = run_experiment(name, model=model, fast=True, progress=False, out=out, **{**settings(name), **extra})
    check_outputs(result, out)
    return result


def _numbers(value: Any, where: str) -> list[tuple[str, float]]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [(where, float(value))]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [n for i, v in enumerate(value) for n in _numbers(v, f"{where}[{i}]")]
    return []


def check_outputs(result: ExperimentResult, out: Path | None) -> None:
    """A non-empty headline and notes (what the run measured, in words), every number in metrics and headline
    finite, figures drawn; with ``out``, config, metrics and every figure (PNG and PDF) written. Saving
    figures is most of a tiny run's time (matplotlib), so the fast test writes one family's folders."""
    if out is None:
        saved = json.loads(json.dumps({"metrics": result.metrics, "headline": result.headline, "notes": result.notes}))
    else:
        config = json.loads((out / "config.json").read_text())
        assert config["experiment"] == result.name and config["model"] == result.model != "pocket"
        saved = json.loads((out / "metrics.json").read_text())
    assert saved["headline"] and saved["notes"], f"{result.name}: empty headline or notes"
    numbers = _numbers(saved["metrics"], "metrics") + _numbers(saved["headline"], "headline")
    assert numbers, f"{result.name}: no numbers measured"
    bad = [(where, v) for where, v in numbers if not math.isfinite(v)]
    assert not bad, f"{result.name}: non-finite numbers {bad[:5]}"
    assert result.figures, f"{result.name}: no figures"
    for figure in result.figures if out is not None else ():
        for suffix in ("png", "pdf"):
            assert (out / "figures" / f"{figure}.{suffix}").stat().st_size > 1000, f"{result.name}: {figure}.{suffix}"
