"""The record a generation folder keeps: ``generation.json`` (the run) and ``manifest.jsonl`` (the images).

A folder written by :func:`circuits.evaluation.generate` holds::

    generation.json        the settings that decide every image (the run's identity), the prompt file,
                           the truncation summary, and the provenance of the first run
    manifest.jsonl         one JSON line per image: its file, case, sample, prompt as sampled (and the
                           original when it was cut), seed, guidance, size, steps, scheduler, generator
                           device, dtype, model, erasure fingerprint, circuits version and commit, sha256
    manifest.parts/        one file per process while processes write in parallel; merged into
                           manifest.jsonl (sorted by file name) when the run ends
    {case}_{sample}.png    the images

A rerun into the same folder must have the same identity (the same model, erasure, steps, ...): a
different one is an error naming the settings that differ, never a folder of mixed images. The
record of an image is written after its PNG (written atomically), so a killed run leaves finished
images with or without their line; a rerun writes the missing lines from the files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from circuits.errors import CircuitsError
from circuits.io import atomic_write, write_json

RUN_FILE = "generation.json"
MANIFEST = "manifest.jsonl"
PARTS = "manifest.parts"


class GenerationFolderError(CircuitsError, ValueError):
    """A generation folder that holds another run, or no run at all."""


def erasure_fingerprint(erasure: Any) -> dict[str, Any] | None:
    """``{"method", "concept", "sha256"}`` of an erasure: a hash of its config, graph and tensor bytes,
    equal for an erasure in memory and the same erasure saved and loaded again."""
    if erasure is None:
        return None
    import torch

    tensors: dict[str, torch.Tensor] = {}
    data = {"method": erasure.method, "concept": erasure.concept.to_dict(), "config": erasure.config,
            "graph": erasure.graph.to_data(tensors=tensors)}  # fmt: skip
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return {"method": erasure.method, "concept": erasure.concept.name, "sha256": digest.hexdigest()}


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_or_write_run(out: Path, identity: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """Write ``generation.json`` in a new folder; in an existing one, require the same ``identity``."""
    path = out / RUN_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text()).get("identity", {})
        except json.JSONDecodeError as error:
            raise GenerationFolderError(
                f"{path} does not parse ({error}); remove the folder or pick another --out"
            ) from None
        now = json.loads(json.dumps(dict(identity), default=str))
        differ = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
        if differ:
            detail = "; ".join(f"{k}: folder {previous.get(k)!r}, now {now.get(k)!r}" for k in differ[:6])
            raise GenerationFolderError(
                f"{out} holds a different generation run ({detail}); resume it with the same settings or pick "
                "another output folder"
            )
        return
    write_json(path, {"identity": dict(identity), **extra}, sort_keys=False)


def part_path(out: Path, index: int, count: int) -> Path:
    return out / PARTS / f"process-{index}-of-{count}.jsonl"


def append_records(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append JSON lines (one ``write`` per batch; a line is only ever appended whole or cut at the end,
    which :func:`read_records` skips)."""
    text = "".join(json.dumps(dict(r), sort_keys=True, default=str) + "\n" for r in records)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the unfinished last line of a killed process
        if isinstance(record, dict) and "file" in record:
            out.append(record)
    return out


def read_records(out: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Every image record of a folder, merged manifest and unmerged parts, by file name."""
    out = Path(out)
    records: dict[str, dict[str, Any]] = {}
    sources = [out / MANIFEST] + sorted((out / PARTS).glob("*.jsonl")) if (out / PARTS).is_dir() else [out / MANIFEST]
    for source in sources:
        if source.is_file():
            for record in _lines(source):
                records[record["file"]] = record
    return records


def merge(out: str | os.PathLike[str]) -> Path:
    """Fold the per-process parts into ``manifest.jsonl`` (sorted by file name, atomically) and remove them."""
    out = Path(out)
    records = read_records(out)
    text = "".join(json.dumps(records[name], sort_keys=True) + "\n" for name in sorted(records, key=file_order))
    path = atomic_write(out / MANIFEST, lambda f: f.write(text.encode()))
    parts = out / PARTS
    if parts.is_dir():
        for part in parts.glob("*.jsonl"):
            part.unlink(missing_ok=True)
        try:
            parts.rmdir()
        except OSError:
            pass  # another process's part appeared meanwhile; the next merge folds it in
    return path


def file_order(name: str) -> tuple:
    """Sort key of image file names: numeric cases and samples in number order, then any other names."""
    stem = name.rsplit(".", 1)[0]
    case, _, sample = stem.rpartition("_")
    return (0, int(case), int(sample)) if case.isdigit() and sample.isdigit() else (1, case, sample)


def read_run(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``generation.json`` of a folder, or an error saying the folder is not a generation folder."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        raise GenerationFolderError(
            f"{out} is not a generation folder (no {RUN_FILE}); write one with `circuits generate` first"
        )
    return json.loads(path.read_text())
