"""Sampling at the shapes users run: SD1.5, SD2.1 and SDXL with random weights, circuits vs diffusers.

Issue 17, item 4 (the intervention-free path). For each family: build the full-size pipeline
(:func:`circuits.models.fullsize.build_sd_pipeline`, real tokenizers), save the diffusers folder,
load it with diffusers, and time

- ``diffusers``        the pristine pipeline (``from_pretrained(folder)``), before circuits touches it;
- ``circuits``         ``circuits.sample(graph=None)`` after ``circuits.load(pipe)`` instruments the
                       same modules in place (one copy of the weights: SDXL is 14 GB in float32);
- ``diffusers_instr``  the pipeline again on the instrumented modules, interleaved with ``circuits``
                       round by round (a paired ratio that machine drift hits alike).

The pristine baseline cannot be interleaved (instrumenting is permanent), so ``circuits / diffusers``
compares phases run one after the other; ``circuits / diffusers_instr`` is the paired one. Images
are small and steps few (default 64 px, 2 steps, one prompt with CFG): the cost is the UNet at
full width, not the resolution.

Run (the numbers in docs/performance.md come from this)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice python benchmarks/bench_fullsize.py --families sd15,sd21 \
        --json benchmarks/results_fullsize.json

``--families sdxl`` needs about 16 GB free (the UNet alone is 10 GB in float32).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

PROMPT = "portrait of a woman, (masterpiece:1.2), highly detailed, by greg rutkowski, trending on artstation"


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def bench_family(family: str, *, steps: int, size: int, rounds: int) -> dict[str, object]:
    import circuits
    from circuits.models.fullsize import build_sd_pipeline
    from circuits.models.loading import _pretrained

    out: dict[str, object] = {"family": family, "steps": steps, "size": size, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / family
        start = time.perf_counter()
        pipe = build_sd_pipeline(family, folder)
        out["build_and_save_s"] = time.perf_counter() - start
        out["unet_params"] = sum(p.numel() for p in pipe.unet.parameters())
        del pipe
        gc.collect()
        start = time.perf_counter()
        pipe = _pretrained(folder, None, local_files_only=True, xl=family == "sdxl")
        out["load_s"] = time.perf_counter() - start
    pipe.set_progress_bar_config(disable=True)
    extra = {"negative_prompt": None} if family == "sdxl" else {}

    def run_diffusers() -> None:
        with torch.no_grad():
            pipe(PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
                 generator=torch.Generator().manual_seed(0), **extra)

    run_diffusers()  # warm-up
    pristine = [_time(run_diffusers) for _ in range(rounds)]
    model = circuits.load(pipe)  # instruments the same modules in place

    def run_circuits() -> None:
        circuits.sample(model, PROMPT, seed=0, steps=steps, height=size, width=size, progress=False)

    run_circuits()  # warm-up
    ours, instrumented = [], []
    for i in range(rounds):  # interleaved, alternating which goes first
        pair = [(ours, run_circuits), (instrumented, run_diffusers)]
        for bucket, fn in pair if i % 2 == 0 else pair[::-1]:
            bucket.append(_time(fn))
    out.update(
        diffusers_s=pristine, circuits_s=ours, diffusers_instr_s=instrumented,
        ratio_vs_pristine=statistics.median(ours) / statistics.median(pristine),
        ratio_paired=statistics.median(o / d for o, d in zip(ours, instrumented)),
        peak_rss_gb=_peak_gb(),
    )
    return out  # the model and pipeline go with this frame; main() collects before the next family


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15,sd21", help="comma-separated: sd15, sd21, sdxl")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    results = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "families": [],
    }
    for family in args.families.split(","):
        row = bench_family(family.strip(), steps=args.steps, size=args.size, rounds=args.rounds)
        results["families"].append(row)
        gc.collect()
        print(
            f"{row['family']:5s} unet {row['unet_params'] / 1e6:7.1f} M  build+save {row['build_and_save_s']:5.1f} s  "
            f"load {row['load_s']:5.1f} s  diffusers {statistics.median(row['diffusers_s']):6.2f} s  "
            f"circuits {statistics.median(row['circuits_s']):6.2f} s  "
            f"ratio {row['ratio_vs_pristine']:.3f}x (paired vs instrumented pipeline {row['ratio_paired']:.3f}x)  "
            f"peak RSS {row['peak_rss_gb']:.1f} GB",
            flush=True,
        )
        if args.json:  # written after each family, so a long run keeps what it measured
            args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
