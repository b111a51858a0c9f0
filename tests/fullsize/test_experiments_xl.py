"""Every registered experiment on the tiny-width SDXL and SD2.1 folders (issue 17, item 2).

The tiny pipelines keep each family's structure (SDXL: two encoders, a 2048-wide context in its tiny
form, pooled embedding and text-time ids; SD2.1: ``!`` padding, v-prediction, linear projections) and
the real 77-token tokenizers, so an experiment written for pocket's 32-token, single-encoder world
fails here where it would fail on a real checkpoint. Cases come from the registry
(``experiment_cases.names()``): a new experiment is covered without editing this file. An experiment
that needs the pocket oracle must refuse a folder with an error saying so.
"""

from __future__ import annotations

import pytest
from experiment_cases import expect_refusal, names, run_case, settings

import circuits
from circuits.experiments import experiments
from circuits.methods import catalog, trce

FAMILIES = ("sdxl", "sd21")
#: the family whose runs write their output folders (figures as PNG and PDF: most of a tiny run's time)
WRITES = "sd21"


@pytest.fixture(scope="module")
def models(xl_model, sd21_dir):
    return {"sdxl": xl_model, "sd21": circuits.load(sd21_dir)}


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("family", FAMILIES)
def test_every_experiment_runs_on_the_family(models, family, name, tmp_path):
    model = models[family]
    if "oracle" in experiments()[name].needs:
        expect_refusal(name, model)
        return
    result = run_case(name, model, tmp_path / "run" if family == WRITES else None)
    assert result.model == model.source
    if name == "eot_zeroing":  # the notes say what the [EoT] columns cannot reach on SDXL
        assert any("pooled embedding" in note for note in result.notes) == (family == "sdxl")
    if name == "depth_sensitivity" and family == "sdxl":  # SDXL's mid block stacks transformer blocks
        assert any("holds" in note and "the first" in note for note in result.notes)
    if name == "erasepro_alignment":  # ErasePro's trace on the layer axis: both encoders on SDXL, labels unique
        layers = result.metrics["layers"]
        assert len({layer["label"] for layer in layers}) == len(layers)
        edited = {layer["stage"] for layer, v in zip(layers, result.metrics["methods"]["erasepro"]["per_layer"][
            "relative_delta"]) if v is not None}  # fmt: skip
        assert edited == ({"text", "text_encoder_2", "unet"} if family == "sdxl" else {"text", "unet"})


def test_settings_reach_every_field_they_name():
    """The overrides are real settings of each experiment (a renamed field breaks this, not a silent skip)."""
    for name in names():
        config = circuits.experiments.resolve_config(name, **experiments()[name].fast)
        circuits.experiments.resolve_config(name, config=config, **settings(name))


def _tiny_trce(model, concept, progress):
    return trce.fit(model, concept, epochs=1, trajectories=1, null_trajectories=1, sample_steps=2, cache_batch=1,
                    progress=progress)  # fmt: skip


def _tiny_ant(model, concept, progress):
    from circuits.methods import ant

    return ant.fit(model, concept, steps=1, seeds=(0,), sample_steps=2, t_prime=300.0, maps=1, progress=progress)


@pytest.fixture()
def trained_methods():
    """TRCE (both stages) and ANT in the catalog at their smallest, for erasure_benchmark's fine-tune rows."""
    catalog.register("trce-tiny", "TRCE stage 1 + 2 (tiny)", _tiny_trce, "both stages, 1 trajectory", trained=True)
    catalog.register("ant-tiny", "ANT (tiny)", _tiny_ant, "1 map, 1 step", trained=True)
    yield ("trce-tiny", "ant-tiny")
    catalog.unregister("trce-tiny")
    catalog.unregister("ant-tiny")


@pytest.mark.parametrize("family", FAMILIES)
def test_erasure_benchmark_with_the_fine_tuned_methods(models, family, trained_methods, tmp_path):
    """TRCE stage 2 and ANT through an experiment: both sample with the pooled embedding on SDXL."""
    from experiment_cases import check_outputs

    result = circuits.run_experiment("erasure_benchmark", model=models[family], fast=True, progress=False,
                                     **{**settings("erasure_benchmark"), "methods": trained_methods})  # fmt: skip
    check_outputs(result, None)
    assert [r["name"] for r in result.metrics["rows"]] == list(trained_methods)
