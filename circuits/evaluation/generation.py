"""``generate``: one PNG per (prompt row, sample), resumable, sharded over processes, with a manifest.

::

    from circuits.evaluation import generate, read_prompts
    generate("path/to/sd-v1-4", read_prompts("nudity.csv"), "out/sd14", steps=50)
    generate(model, prompts, "out/esd", erasure="erasures/esd-nudity")   # a saved or in-memory Erasure

    accelerate launch --multi_gpu --num_processes 2 -m circuits generate --model DIR --prompts FILE --out DIR

**Every image is a function of its row alone.** Sample ``k`` of a row is drawn from a generator
seeded with the row's seed (from the file; else the run's ``seed``) plus ``k``, with ``guidance``,
``height`` and ``width`` from the row where the file sets them. Rows are cut into batches of
``batch_size`` consecutive images in file order (a new batch starts where guidance or size
changes), and whole batches go to processes (batch ``b`` to process ``b % N``), so a batch is
computed the same way whatever the number of processes: N processes and one give the same bytes.
(Different batch sizes give the same PNGs too in practice — a row's noise is its own — but float
rounding in batched kernels may differ in the last bit, which the 8-bit PNG almost always hides.)

**Resumable.** Images are written atomically (``circuits.io``); a batch whose images all exist is
skipped, and a batch with some missing is recomputed whole (same arithmetic as the first time) and
only the missing files written. A killed run loses at most the batch in flight.

**Sharded on accelerate.** Under ``accelerate launch`` (``WORLD_SIZE`` > 1) the process index and
count come from ``accelerate.PartialState``; ``shard=(i, n)`` sets them by hand (a SLURM array).
Each process appends its images' records to its own part of the manifest; process 0 merges them
when all are done (:mod:`circuits.evaluation.manifest`).

**Truncation.** Prompts longer than the tokenizer are cut as diffusers cuts them
(:mod:`circuits.evaluation.truncation`), recorded per image and counted in ``generation.json``.

Precedence of settings: the row's seed and guidance over the run's (the files are the protocol);
the run's ``height``/``width`` over the row's (a size belongs to the model: I2P's 512 px rows on a
32 px pocket model), then the model's default size.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuits.errors import CircuitsError
from circuits.evaluation import manifest
from circuits.evaluation.prompts import PromptRow, PromptSet, as_prompt_set
from circuits.evaluation.truncation import Cut, fit_prompts, summarize
from circuits.io import remove_stale_temporaries


@dataclass(frozen=True)
class Item:
    """One image to make: the row, the sample index, and its resolved settings."""

    row: PromptRow
    sample: int
    cut: Cut
    seed: int
    guidance: float
    height: int
    width: int

    @property
    def file(self) -> str:
        return f"{self.row.case}_{self.sample}.png"


@dataclass
class GenerationResult:
    """What one call of :func:`generate` did (in this process)."""

    out: Path
    images: int  # images of the whole run (every process)
    written: int  # images this process wrote now
    skipped: int  # images this process found finished
    shard: tuple[int, int]
    truncation: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        index, count = self.shard
        part = f" (process {index + 1} of {count})" if count > 1 else ""
        cut = self.truncation.get("truncated", 0)
        return (f"{self.out}: wrote {self.written}, {self.skipped} already there{part}, of {self.images} images "
                f"in {self.seconds:.1f}s; {cut} prompt(s) truncated to the tokenizer")  # fmt: skip


def plan(
    prompts: PromptSet, tokenizer: Any, *, samples: int, seed: int, guidance: float, height: int | None,
    width: int | None, default_size: int,
) -> list[Item]:
    """Every image of the run, in file order, with its resolved settings (see the module doc)."""
    cuts = fit_prompts(tokenizer, [row.prompt for row in prompts.rows])
    items = []
    for row, cut in zip(prompts.rows, cuts):
        for k in range(samples):
            items.append(Item(
                row=row, sample=k, cut=cut,
                seed=(row.seed if row.seed is not None else seed) + k,
                guidance=row.guidance if row.guidance is not None else guidance,
                height=height or row.height or default_size,
                width=width or row.width or default_size,
            ))  # fmt: skip
    return items


def batches(items: Sequence[Item], batch_size: int) -> list[list[Item]]:
    """Consecutive images, at most ``batch_size`` each, cut where guidance or size changes."""
    out: list[list[Item]] = []
    for item in items:
        last = out[-1] if out else None
        if last and len(last) < batch_size and _key(last[0]) == _key(item):
            last.append(item)
        else:
            out.append([item])
    return out


def _key(item: Item) -> tuple[float, int, int]:
    return (item.guidance, item.height, item.width)


def resolve_shard(shard: tuple[int, int] | None) -> tuple[int, int, Any]:
    """``(index, count, accelerate_state_or_None)``: from ``shard``, accelerate's launcher, or one process."""
    if shard is not None:
        index, count = shard
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise ValueError(f"shard={shard!r}: give (index, count) with 0 <= index < count")
        return index, count, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        try:
            import torch
            from accelerate import PartialState
        except ImportError:
            raise CircuitsError(
                "WORLD_SIZE > 1 (a distributed launch) but accelerate is not installed; "
                "pip install 'circuits[eval]'"
            ) from None
        # on a machine without CUDA, PartialState() alone reports one process per process; cpu=True
        # gives the gloo group torchrun set up
        state = PartialState(cpu=not torch.cuda.is_available())
        return state.process_index, state.num_processes, state
    return 0, 1, None


def generate(
    model: Any,
    prompts: PromptSet | str | os.PathLike[str] | Sequence[str] | Sequence[PromptRow],
    out: str | os.PathLike[str],
    *,
    erasure: Any = None,
    samples: int = 1,
    steps: int = 50,
    guidance: float = 7.5,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    scheduler: str | None = None,
    negative_prompt: str = "",
    batch_size: int = 8,
    generator_device: str = "cpu",
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> GenerationResult:
    """Generate the images of ``prompts`` into ``out`` (see the module doc); rerunning resumes.

    ``model``: a loaded :class:`~circuits.Diffusion`, ``"pocket"`` or a diffusers folder. ``erasure``:
    an :class:`~circuits.methods.Erasure` or the folder it was saved to. ``samples`` images per row.
    ``generator_device``: where the seeded generators live (``"cpu"``, as the ESD/UCE/MACE scripts'
    ``torch.manual_seed``; ``"cuda"`` to match repos that seed a CUDA generator).
    """
    from circuits.experiments.registry import provenance as registry_provenance
    from circuits.interventions.runtime import intervene
    from circuits.io import save_image
    from circuits.models.diffusion import Diffusion
    from circuits.models.loading import load
    from circuits.sampling import make_scheduler, sample

    start = time.perf_counter()
    if samples < 1 or batch_size < 1 or steps < 1:
        raise ValueError(f"samples={samples}, batch_size={batch_size}, steps={steps}: each must be >= 1")
    if str(generator_device).startswith("cuda") and not _cuda_available():
        raise ValueError(f"generator_device={generator_device!r}, but this machine has no CUDA device; use 'cpu'")
    index, count, state = resolve_shard(shard)
    if not isinstance(model, Diffusion):
        model = load(model)
    if state is not None and state.device.type == "cuda" and model.device != state.device:
        model.to(device=state.device)  # each process its own GPU (accelerate's LOCAL_RANK)
    seeded_on = str(generator_device)
    if seeded_on == "cuda" and model.device.type == "cuda":
        seeded_on = str(model.device)  # the GPU this process samples on, not always cuda:0
    if isinstance(erasure, (str, os.PathLike)):
        from circuits.methods import load as load_erasure

        erasure = load_erasure(erasure)
    prompt_set = as_prompt_set(prompts)
    items = plan(prompt_set, model.tokenizer, samples=samples, seed=seed, guidance=guidance, height=height,
                 width=width, default_size=model.default_size)  # fmt: skip
    sched = make_scheduler(model, scheduler)
    identity = {
        "model": model.source, "family": model.family, "dtype": str(model.dtype).removeprefix("torch."),
        "erasure": manifest.erasure_fingerprint(erasure), "steps": steps, "scheduler": type(sched).__name__,
        "negative_prompt": negative_prompt, "generator_device": str(generator_device), "samples": samples,
        "default_seed": seed, "default_guidance": guidance, "height": height, "width": width,
        "prompts": _prompts_identity(prompt_set),
    }  # fmt: skip
    truncation = summarize([item.cut for item in items[::samples]])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # images a killed earlier run was writing (it rewrites them: they are missing)
    provenance = registry_provenance()
    manifest.check_or_write_run(out, identity, {"prompt_file": prompt_set.describe(), "truncation": truncation,
                                                "batch_size": batch_size, "provenance": provenance})  # fmt: skip
    common = {**identity, "device": str(model.device), "circuits": provenance.get("circuits"),
              "git_commit": provenance.get("git_commit")}  # fmt: skip
    del common["prompts"]
    common["scheduler_config"] = dict(sched.config)

    mine = [batch for b, batch in enumerate(batches(items, batch_size)) if b % count == index]
    known = manifest.read_records(out)
    part = manifest.part_path(out, index, count)
    written = skipped = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(len(b) for b in mine), disable=not progress, desc=f"generate {index + 1}/{count}")
    # the erasure is applied once for the whole run (weight edits are made and undone once, not per batch)
    context = intervene(model, erasure) if erasure is not None else contextlib.nullcontext()
    with context:
        for batch in mine:
            missing = [item for item in batch if not (out / item.file).is_file()]
            if missing:
                result = sample(
                    model, [item.cut.prompt for item in batch], seed=[item.seed for item in batch], steps=steps,
                    guidance_scale=batch[0].guidance, negative_prompt=negative_prompt, height=batch[0].height,
                    width=batch[0].width, scheduler=sched, progress=False, generator_device=seeded_on,
                )  # fmt: skip
                for item, image in zip(batch, result.images):
                    if item in missing:
                        save_image(out / item.file, image)
            records = [_record(item, out, common) for item in batch if item in missing or item.file not in known]
            manifest.append_records(part, records)
            written += len(missing)
            skipped += len(batch) - len(missing)
            bar.update(len(batch))
    bar.close()
    if state is not None:
        state.wait_for_everyone()
    if index == 0:
        manifest.merge(out)
    return GenerationResult(out, len(items), written, skipped, (index, count), truncation,
                            time.perf_counter() - start)  # fmt: skip


def _record(item: Item, out: Path, common: dict[str, Any]) -> dict[str, Any]:
    return {
        **common, "file": item.file, "case": item.row.case, "sample": item.sample, "prompt": item.cut.prompt,
        "truncation": item.cut.to_json() if item.cut.truncated else None, "seed": item.seed,
        "guidance": item.guidance, "height": item.height, "width": item.width, "label": item.row.label,
        "categories": list(item.row.categories), "sha256": manifest.file_sha256(out / item.file),
    }  # fmt: skip


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _prompts_identity(prompts: PromptSet) -> dict[str, Any]:
    """The rows themselves (hashed), not where the file lies: a run resumes from a copy elsewhere."""
    import hashlib
    import json

    rows = json.dumps([row.to_json() for row in prompts.rows], sort_keys=True).encode()
    return {"layout": prompts.layout, "rows": len(prompts.rows), "filters": list(prompts.filters),
            "sha256": hashlib.sha256(rows).hexdigest()}  # fmt: skip
