"""Generation: one PNG per row and sample, a complete manifest, resumable, and the same bytes however
the rows are split over processes (in-process shards and two real processes under accelerate)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import circuits
from circuits.evaluation import generation
from circuits.evaluation.generation import generate
from circuits.evaluation.manifest import GenerationFolderError, erasure_fingerprint, read_records
from circuits.evaluation.prompts import PromptRow

LONG = "a red circle on a white background with a blue square and a green triangle and a cat and a dog"
ROWS = [PromptRow("3", "a red circle", seed=11), PromptRow("7", "a cat", seed=12, guidance=3.0),
        PromptRow("8", LONG), PromptRow("9", "a dog on a white background")]
SETTINGS = {"steps": 2, "samples": 2, "progress": False}


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    result = generate(model, ROWS, out, batch_size=3, **SETTINGS)
    return out, result


def test_files_and_manifest(reference):
    out, result = reference
    assert sorted(files(out)) == sorted(f"{c}_{k}.png" for c in ("3", "7", "8", "9") for k in (0, 1))
    assert (result.images, result.written, result.skipped) == (8, 8, 0)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == ["3_0.png", "3_1.png", "7_0.png", "7_1.png", "8_0.png", "8_1.png",
                                            "9_0.png", "9_1.png"]
    by_file = {r["file"]: r for r in records}
    # the row's seed (+ sample index), the row's guidance, the run's defaults elsewhere
    assert (by_file["3_1.png"]["seed"], by_file["7_0.png"]["guidance"]) == (12, 3.0)
    assert (by_file["8_0.png"]["seed"], by_file["8_0.png"]["guidance"]) == (0, 7.5)
    for key in ("steps", "scheduler", "height", "width", "generator_device", "dtype", "model", "erasure",
                "circuits", "git_commit", "sha256", "negative_prompt", "scheduler_config"):
        assert key in by_file["3_0.png"], key
    assert by_file["8_0.png"]["truncation"]["dropped"] == 7 and by_file["8_0.png"]["prompt"] != LONG
    assert by_file["3_0.png"]["truncation"] is None
    run = json.loads((out / "generation.json").read_text())
    assert run["truncation"]["truncated"] == 1 and result.truncation["truncated"] == 1


def test_image_equals_plain_sample(model, reference):
    out, _ = reference
    plain = circuits.sample(model, "a red circle", seed=[12], steps=2, progress=False).images[0]
    from PIL import Image

    assert Image.open(out / "3_1.png").tobytes() == plain.tobytes()


def test_rerun_skips_everything(model, reference, tmp_path):
    out, _ = reference
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = generate(model, ROWS, copy, batch_size=3, **SETTINGS)
    assert (again.written, again.skipped) == (0, 8)
    assert files(copy) == files(out)


def test_killed_run_resumes_to_the_same_files(model, reference, tmp_path, monkeypatch):
    out, _ = reference
    real, calls = circuits.sampling.sample, []

    def dies_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while the second batch is in flight
        return real(*args, **kwargs)

    monkeypatch.setattr(circuits.sampling, "sample", dies_on_second_batch)  # generate reads it at call time
    with pytest.raises(KeyboardInterrupt):
        generate(model, ROWS, tmp_path, batch_size=3, **SETTINGS)
    # batches: [3_0 3_1] [7_0 7_1] (row 7 has its own guidance) [8_0 8_1 9_0] [9_1]; only the first survived
    assert sorted(files(tmp_path)) == ["3_0.png", "3_1.png"]
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "3_1.png").unlink()  # and one image of a finished batch lost too
    # a SIGKILL mid-write cannot clean up: leave the temporary file a dead writer on this host would leave
    import subprocess
    import sys

    from circuits import io

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".7_0.png.{io._host()}~{dead.pid}.k1ll3d00.tmp").write_bytes(b"half an image")
    monkeypatch.setattr(circuits.sampling, "sample", real)
    resumed = generate(model, ROWS, tmp_path, batch_size=3, **SETTINGS)
    assert not list(tmp_path.rglob("*.tmp"))
    assert (resumed.written, resumed.skipped) == (7, 1)
    assert files(tmp_path) == files(out)
    assert sorted(read_records(tmp_path)) == sorted(files(out))


def test_shards_equal_one_process(model, reference, tmp_path):
    out, _ = reference
    for index in (1, 0):  # shard 0 last: it merges the manifest parts
        generate(model, ROWS, tmp_path, batch_size=3, shard=(index, 2), **SETTINGS)
    assert files(tmp_path) == files(out)
    assert not (tmp_path / "manifest.parts").exists()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["sha256"] for x in lines] == [json.loads(x)["sha256"] for x in
                                                        (out / "manifest.jsonl").read_text().splitlines()]


def test_batch_size_does_not_change_the_files(model, reference, tmp_path):
    out, _ = reference
    generate(model, ROWS, tmp_path, batch_size=1, **SETTINGS)
    assert files(tmp_path) == files(out)


def test_generator_device(model, tmp_path):
    # seeding on the CPU explicitly is what the CPU model does anyway: same noise, same image
    explicit = circuits.sample(model, "a cat", seed=5, steps=2, progress=False, generator_device="cpu")
    default = circuits.sample(model, "a cat", seed=5, steps=2, progress=False)
    assert explicit.images[0].tobytes() == default.images[0].tobytes()
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator_device='cuda'.*no CUDA device"):
            generate(model, ["a cat"], tmp_path, generator_device="cuda", steps=2, progress=False)


def test_other_settings_refuse_the_folder(model, reference):
    out, _ = reference
    with pytest.raises(GenerationFolderError, match="steps: folder 2, now 3"):
        generate(model, ROWS, out, batch_size=3, **{**SETTINGS, "steps": 3})


def test_batches_split_where_guidance_changes():
    cut = generation.fit_prompts.__globals__["Cut"]("p", "p", 3, 0, True)
    items = [generation.Item(PromptRow(str(i), "p"), 0, cut, i, g, 16, 16)
             for i, g in enumerate([7.5, 7.5, 3.0, 7.5, 7.5, 7.5])]
    assert [[it.seed for it in b] for b in generation.batches(items, 2)] == [[0, 1], [2], [3, 4], [5]]


def test_erasure_fingerprint_survives_save_and_load(model, tmp_path):
    concept = circuits.methods.Concept(target="red", anchor="", templates=("a {} circle",), name="red")
    erasure = circuits.methods.uce.fit(model, concept)
    loaded = circuits.methods.load(erasure.save(tmp_path / "e"))
    assert erasure_fingerprint(erasure) == erasure_fingerprint(loaded)
    assert erasure_fingerprint(erasure)["sha256"] != erasure_fingerprint(
        circuits.methods.uce.fit(model, concept, lam=0.5) if "lam" in circuits.methods.uce.Config.__dataclass_fields__
        else circuits.methods.uce.fit(model, concept.__class__(target="blue", anchor="", templates=("a {} circle",),
                                                              name="blue")))["sha256"]
    out = generate(model, ["a red circle"], tmp_path / "gen", erasure=tmp_path / "e", steps=2, progress=False).out
    plain = generate(model, ["a red circle"], tmp_path / "plain", steps=2, progress=False).out
    record = read_records(out)["0_0.png"]
    assert record["erasure"] == erasure_fingerprint(erasure)
    assert files(out) != files(plain)


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


def test_cli_generate(tiny_dir, tmp_path):
    prompts = tmp_path / "p.csv"
    prompts.write_text("case_number,prompt,evaluation_seed\n0,a red circle,4\n1,a cat,5\n")
    out = tmp_path / "out"
    from circuits.cli import main

    assert main(["generate", "--model", str(tiny_dir), "--prompts", str(prompts), "--out", str(out), "--steps", "2",
                 "--quiet"]) == 0
    assert sorted(files(out)) == ["0_0.png", "1_0.png"]
    assert main(["generate", "--model", str(tiny_dir), "--prompts", str(tmp_path / "nope.csv"), "--out", str(out)]) == 2


@pytest.mark.slow
def test_accelerate_two_processes_equal_one(tiny_dir, tmp_path):
    pytest.importorskip("accelerate")
    prompts = tmp_path / "p.csv"
    prompts.write_text("case_number,prompt,evaluation_seed\n" + "".join(
        f"{i},{p},{i}\n" for i, p in enumerate(["a red circle", "a cat", "a dog", "a blue square", "a green cross"])))
    common = ["generate", "--model", str(tiny_dir), "--prompts", str(prompts), "--steps", "2", "--batch-size", "2",
              "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "circuits", *common, "--out", str(one)], check=True, env=_env(),
                   capture_output=True, timeout=300)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "circuits"]
    done = subprocess.run([*launch, *common, "--out", str(two)], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 1 of 2" in done.stdout and "process 2 of 2" in done.stdout  # really two processes
    assert files(two) == files(one) and len(files(one)) == 5
    assert read_records(two).keys() == read_records(one).keys()
    assert not (two / "manifest.parts").exists()


@pytest.mark.slow
def test_sigkilled_process_resumes_to_the_same_files(model, tiny_dir, tmp_path):
    import signal
    import time

    rows = [PromptRow(str(i), p, seed=i) for i, p in enumerate(["a red circle", "a cat", "a dog", "a blue square"] * 2)]
    prompts = tmp_path / "p.csv"
    from circuits.evaluation.prompts import read_prompts, write_esd_csv

    write_esd_csv(prompts, rows)
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "circuits", "generate", "--model", str(tiny_dir), "--prompts", str(prompts),
            "--out", str(out), "--steps", "12", "--batch-size", "2", "--quiet"]
    process = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.png")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 0 < len(files(out)) < len(rows), "the kill should land mid-run"
    resumed = generate(model, read_prompts(prompts), out, steps=12, batch_size=2, progress=False)
    assert resumed.skipped >= 1
    fresh = generate(model, read_prompts(prompts), tmp_path / "fresh", steps=12, batch_size=2, progress=False).out
    assert files(out) == files(fresh) and len(files(out)) == len(rows)
    assert sorted(read_records(out)) == sorted(files(fresh))
