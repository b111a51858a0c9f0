"""Experiment costs on pocket: each experiment's wall time at its default settings, and what a batched
sweep costs against plain sampling of the same number of images.

Goals (issue 9): every experiment <= 120 s on 2 CPU cores; a batched sweep <= 1.15x plain sampling of
the same number of images in one run.

The sweep part times, in interleaved rounds in one process, (a) ``circuits.sample`` of N images in
one call (the prompts repeated per variant, one seed per image) and (b) ``sweep`` of the same N images
as V variants of ``ZeroTokens`` graphs (the eot_zeroing workload), and prints the paired ratio.

    python benchmarks/bench_experiments.py                          # both parts, every experiment
    python benchmarks/bench_experiments.py --skip experiments       # the sweep ratio only
    python benchmarks/bench_experiments.py --experiments eot_zeroing cfg_reversal --json out.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hooks import _median_ci, machine, time_variants  # noqa: E402

import circuits  # noqa: E402
from circuits.sampling import sweep  # noqa: E402

PROMPTS = ["a red circle", "a blue striped square", "a green triangle on a white background", "a yellow dotted cross"]
GOAL_SECONDS, GOAL_SWEEP = 120.0, 1.15


def sweep_ratio(model, args: argparse.Namespace) -> dict:
    ks = [0, 1, 2, 4, 8, 16, 32][: args.variants]
    variants = {
        f"k={k}": (circuits.Graph([circuits.ZeroTokens("unet.*attn2", tokens=f"last_eot:{k}")]) if k else None)
        for k in ks
    }
    seeds = list(range(args.seeds))
    flat_prompts = [p for _ in variants for p in PROMPTS for _ in seeds]
    flat_seeds = [s for _ in variants for _ in PROMPTS for s in seeds]
    images = len(flat_prompts)

    def plain() -> None:
        circuits.sample(model, flat_prompts, seed=flat_seeds, steps=args.steps, progress=False)

    def swept() -> None:
        sweep(model, PROMPTS, variants, seeds=seeds, steps=args.steps, max_batch=args.max_batch, progress=False)

    wall, _ = time_variants({"plain": plain, "sweep": swept}, repeats=args.rounds, warmup=1)
    paired = [s / p for s, p in zip(wall["sweep"], wall["plain"])]
    out = {
        "images": images, "variants": len(variants), "steps": args.steps, "max_batch": args.max_batch,
        "plain_median_s": statistics.median(wall["plain"]), "sweep_median_s": statistics.median(wall["sweep"]),
        "paired_ratio": statistics.median(paired), "paired_ratio_ci95": _median_ci(paired),
        "goal": GOAL_SWEEP, "met": statistics.median(paired) <= GOAL_SWEEP,
    }  # fmt: skip
    print(f"sweep of {images} images ({len(variants)} variants) vs plain sampling of {images} images: "
          f"{out['paired_ratio']:.3f}x [{out['paired_ratio_ci95'][0]:.3f}-{out['paired_ratio_ci95'][1]:.3f}] "
          f"(goal <= {GOAL_SWEEP}: {'met' if out['met'] else 'MISSED'})")  # fmt: skip
    return out


def experiment_times(names: list[str], out_root: Path) -> dict:
    results = {}
    for name in names:
        start = time.perf_counter()
        result = circuits.run_experiment(name, out=out_root / name, progress=False)
        seconds = time.perf_counter() - start
        headline = {k: v for k, v in result.headline.items() if isinstance(v, (int, float, str))}
        results[name] = {"seconds": round(seconds, 1), "met": seconds <= GOAL_SECONDS, "headline": headline}
        print(f"  {name:<22} {seconds:7.1f} s  {'ok' if seconds <= GOAL_SECONDS else 'OVER 120 s'}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--experiments", nargs="*", default=None, help="names (default: every experiment)")
    parser.add_argument("--skip", nargs="*", default=(), choices=("sweep", "experiments"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_experiments"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict = {"machine": machine()}
    model = circuits.experiments.resolve_model("pocket")
    if "sweep" not in args.skip:
        report["sweep"] = sweep_ratio(model, args)
    if "experiments" not in args.skip:
        names = args.experiments or list(circuits.list_experiments())
        print(f"experiments at default settings on pocket, {args.threads} threads (goal <= {GOAL_SECONDS:.0f} s):")
        report["experiments"] = experiment_times(names, args.out)
    if args.json:
        from circuits.io import write_json

        write_json(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
