"""The command line demo and atomic output writing."""

from __future__ import annotations

import json

import pytest

from circuits.cli import main
from circuits.io import atomic_write, write_json


def test_demo_on_a_tiny_model_writes_grid_and_summary(tmp_path, capsys):
    assert main(["demo", "--model", "tiny", "--steps", "2", "--quiet", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["rows"] == ["plain", "eot_zeroed", "eot_masked"]
    assert "zero_tokens" in summary["graphs"]["eot_zeroed"] and '"renormalize": true' in summary["graphs"]["eot_masked"]
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_bad_input_without_a_traceback(capsys):
    assert main(["sites", "--model", "no/such-model-here"]) == 2
    assert "error:" in capsys.readouterr().err


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = write_json(tmp_path / "metrics.json", {"ok": 1})

    def broken(handle):
        handle.write(b'{"half": ')
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_atomic_write_gives_the_file_the_usual_permissions(tmp_path):
    import stat

    path = atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
    (tmp_path / "plain.bin").write_bytes(b"x")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)  # what open() gives, not mkstemp's 0600
