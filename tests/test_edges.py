"""The edges a new user meets: each bad input is refused with the exact error class and a message
naming the input and what would be right, and the command line answers in one line, never a traceback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import circuits
from circuits.cli import COMMANDS, Command, main
from circuits.errors import ConfigError, ModelLoadError, OutputError, OutputExistsError, PromptError, SettingError
from circuits.experiments import resolve_config, run_experiment
from circuits.methods import acterase
from circuits.methods.common import resolve_config as resolve_method_config
from circuits.tokens import layout, truncate

NAN, INF = float("nan"), float("inf")


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's stderr, checked to be exactly one ``error: ...`` line; returned for further checks."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[transformers]")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- a folder whose model_index.json is not a pipeline index ------------------------------------------
@pytest.mark.parametrize("text, found", [
    ('{"a": 1}', "no '_class_name'; found keys ['a']"),
    ("[1, 2]", "found a JSON list"),
    ("not json {", "cannot be read as JSON"),
    ('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}',
     "names no tokenizer, text_encoder, vae, scheduler"),
])
def test_a_model_index_that_is_not_a_pipeline_index(tmp_path: Path, text: str, found: str) -> None:
    (tmp_path / "model_index.json").write_text(text)
    with pytest.raises(ModelLoadError) as info:
        circuits.load(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "model_index.json") in message and found in message
    assert "a pipeline folder holds model_index.json" in message and "save_pretrained" in message


def test_cli_run_with_a_folder_that_is_not_a_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_index.json").write_text('{"a": 1}')
    assert main(["run", "eot_similarity", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")]) == 2
    assert str(tmp_path / "model" / "model_index.json") in one_line_error(capsys)


# -- an output folder that cannot be written -----------------------------------------------------------
def unwritable(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    places = [blocker / "out"]
    if Path("/proc/self").is_dir():  # where mkdtemp used to fail with a bare FileNotFoundError
        places.append(Path("/proc/circuits-edge-test/out"))
    return places


def test_run_experiment_checks_out_before_any_work(tmp_path: Path) -> None:
    for out in unwritable(tmp_path):
        # the model is not even loaded: a bad model name would otherwise be the error
        with pytest.raises(OutputError) as info:
            run_experiment("eot_similarity", "no/such-model-anywhere", out=out)
        assert f"out={str(out)!r} cannot be written" in str(info.value)
        assert "give a folder you can write to" in str(info.value)


def test_run_experiment_refuses_a_foreign_out_folder_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=rf"out={str(tmp_path)!r} exists and is not an experiment output"):
        run_experiment("eot_similarity", "no/such-model-anywhere", out=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli_run_with_an_out_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = unwritable(tmp_path)[0]
    assert main(["run", "eot_similarity", "--out", str(out)]) == 2
    assert str(out) in one_line_error(capsys)


def test_cli_run_checks_out_before_building_the_tiny_model(tmp_path: Path, capsys, monkeypatch) -> None:
    import circuits.cli

    built = []
    monkeypatch.setattr(circuits.cli, "_load", lambda source: built.append(source))
    assert main(["run", "eot_similarity", "--model", "tiny", "--out", str(unwritable(tmp_path)[0])]) == 2
    assert built == [] and "cannot be written" in one_line_error(capsys)


def test_check_writable_leaves_no_trace(tmp_path: Path) -> None:
    from circuits.io import check_writable

    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert list(tmp_path.iterdir()) == []  # the folders it made to try are gone again


# -- NaN and infinity in sampling settings ---------------------------------------------------------------
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_sample_refuses_a_guidance_scale_that_is_not_finite(model, value: float) -> None:
    with pytest.raises(SettingError, match=rf"sample: guidance_scale={value!r} holds {value!r}; give a finite"):
        circuits.sample(model, ["a red circle"], steps=1, guidance_scale=value, progress=False)


def test_sample_refuses_other_settings_that_are_not_numbers(model) -> None:
    with pytest.raises(SettingError, match=r"sample: eta=nan holds nan"):
        circuits.sample(model, ["a red circle"], steps=1, eta=NAN, progress=False)
    with pytest.raises(SettingError, match=r"sample: guidance_scale='7.5' is not a number"):
        circuits.sample(model, ["a red circle"], steps=1, guidance_scale="7.5", progress=False)
    with pytest.raises(SettingError, match=r"height=-8: give a positive int"):
        circuits.sample(model, ["a red circle"], steps=1, height=-8, progress=False)
    with pytest.raises(SettingError, match=r"seed=1\.5: give a 64-bit int"):
        circuits.sample(model, ["a red circle"], steps=1, seed=1.5, progress=False)
    with pytest.raises(SettingError, match=r"scheduler=3: use one of"):
        circuits.sample(model, ["a red circle"], steps=1, scheduler=3, progress=False)


def test_guidance_strategies_refuse_numbers_that_are_not_finite() -> None:
    with pytest.raises(SettingError, match=r"CFG: scale=nan holds nan"):
        circuits.CFG(NAN)
    with pytest.raises(SettingError, match=r"ReversedCFG: t_prime=inf holds inf"):
        circuits.ReversedCFG(7.5, INF)
    assert circuits.CFG(7).scale == 7.0


# -- NaN and infinity in configs -----------------------------------------------------------------------
def test_experiment_configs_refuse_numbers_that_are_not_finite(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"experiment 'eot_zeroing': guidance_scale=nan holds nan"):
        resolve_config("eot_zeroing", guidance_scale=NAN)
    whole = resolve_config("eot_zeroing").__class__(guidance_scale=INF)
    with pytest.raises(ConfigError, match=r"guidance_scale=inf holds inf"):  # a config passed in whole
        resolve_config("eot_zeroing", whole)
    assert main(["run", "eot_zeroing", "--show-config", "--set", "guidance_scale=NaN"]) == 2
    assert "guidance_scale=nan holds nan" in one_line_error(capsys)


def test_method_configs_refuse_numbers_that_are_not_finite() -> None:
    with pytest.raises(ConfigError, match=r"circuits.methods.acterase.Config: tau=nan holds nan"):
        resolve_method_config(acterase.Config, None, {"tau": NAN})
    with pytest.raises(ConfigError, match=r"guidance_scale=-inf holds -inf"):
        resolve_method_config(acterase.Config, acterase.Config(guidance_scale=-INF), {})
    assert math.isclose(resolve_method_config(acterase.Config, None, {"tau": 0.5}).tau, 0.5)


# -- prompts longer than the tokenizer -------------------------------------------------------------------
def test_a_long_prompt_is_refused_with_the_way_to_cut_it(model) -> None:
    prompt = " ".join(["red"] * 20)  # the tiny tokenizer allows 16 positions
    with pytest.raises(PromptError) as info:
        circuits.sample(model, [prompt], steps=1, progress=False)
    assert repr(prompt) in str(info.value) and "circuits.tokens.truncate(model.tokenizer, prompt)" in str(info.value)
    cut = truncate(model.tokenizer, prompt)
    assert cut == " ".join(["red"] * 14)  # SoT + 14 words + EoT = 16
    assert layout(model.tokenizer, cut).first_eot == 15
    assert truncate(model.tokenizer, "a red circle") == "a red circle"  # a prompt that fits is kept as is
    assert circuits.sample(model, [cut], steps=1, progress=False).images


# -- the command line: one line per error ------------------------------------------------------------------
@pytest.mark.parametrize("argv, names", [
    (["run", "no_such_experiment"], "no experiment named 'no_such_experiment'"),
    (["run", "eot_zeroing", "--show-config", "--set", "steps"], "--set 'steps': write key=value"),
    (["run", "eot_zeroing", "--show-config", "--set", "stepz=3"], "no setting 'stepz' (did you mean 'steps'?)"),
    (["run", "eot_zeroing", "--show-config", "--set", "steps=ten"], "steps='ten' is not a int"),
    (["sample", "--steps", "x", "a red circle"], "argument --steps: invalid int value: 'x'"),
    (["no_such_command"], "invalid choice: 'no_such_command'"),
    (["run"], "the following arguments are required: name"),
    (["sites", "--model", "no/such-model-here"], "cannot load 'no/such-model-here'"),
    (["sample", "a red circle", "--model", "tiny", "--out", "grid.txt"], "--out 'grid.txt': give an image file name"),
])
def test_cli_errors_are_one_line(argv: list[str], names: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert names in one_line_error(capsys)


def test_a_bug_is_one_line_too_and_debug_shows_it(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr("circuits.cli.COMMANDS", (*COMMANDS, Command("broken", broken, lambda p: None, "breaks")))
    assert main(["broken"]) == 1
    line = one_line_error(capsys)
    assert "unexpected RuntimeError: a bug over two lines" in line and "--debug" in line
    with pytest.raises(RuntimeError, match="a bug"):
        main(["--debug", "broken"])


def test_missing_pocket_weights_point_to_a_reinstall_not_the_v2_trainer(tmp_path, monkeypatch):
    """``train.py`` now trains the v2 recipe, so the message must not offer it as the way to rebuild v1."""
    from circuits.models import loading

    monkeypatch.setattr(loading, "POCKET_DIR", tmp_path / "pipeline")
    with pytest.raises(ModelLoadError, match="reinstall") as info:
        circuits.load("pocket")
    assert "--phase all" not in str(info.value) and "MODEL_CARD.md" in str(info.value)
