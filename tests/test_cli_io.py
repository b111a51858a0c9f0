"""The command line demo and atomic output writing."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    """A writer killed mid-write leaves its temporary file; the next run's sweep removes it, but never a
    file a live process (or a process on another host) may still be writing."""
    import subprocess
    import sys

    from circuits import io

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = io._host()
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / f".img_0001.png.{host}~{dead.pid}.abc123de.tmp"
    live = tmp_path / f".img_0002.png.{host}~{os.getpid()}.zz9_x8yw.tmp"
    elsewhere = tmp_path / f".img_0003.png.otherhost~{dead.pid}.abc123de.tmp"
    unrelated = tmp_path / "notes.tmp"
    for path in (stale, live, elsewhere, unrelated):
        path.write_bytes(b"partial")
    assert io.remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and elsewhere.exists() and unrelated.exists()


def test_atomic_write_names_its_temporary_with_host_and_pid(tmp_path, monkeypatch):
    from circuits import io

    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", spy)
    io.atomic_write(tmp_path / "a.png", lambda f: f.write(b"x"))
    assert io._TEMP_NAME.match(seen[0]) and f"~{os.getpid()}." in seen[0]


def test_no_sweep_where_process_ids_cannot_be_probed(tmp_path, monkeypatch):
    """Off POSIX ``os.kill(pid, 0)`` is no probe (on Windows it sends a console Ctrl+C): keep every file."""
    from circuits import io

    stale = tmp_path / f".a.png.{io._host()}~999999999.abc123de.tmp"
    stale.write_bytes(b"partial")
    monkeypatch.setattr(io, "_PROBES_PIDS", False)
    assert io.remove_stale_temporaries(tmp_path) == [] and stale.exists()
