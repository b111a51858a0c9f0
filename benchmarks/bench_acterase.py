"""Speed of ActErase: collection against plain sampling, and sampling under the patch against plain sampling.

Issue 8 ("Speed"). One process, one model, one seed, one thread; every variant samples the same N
prompts with the same schedule, and the variants are *interleaved* (each round runs every variant once,
in a rotated order) so slow drift of a shared machine hits them all alike. Reported per variant: the
median wall time, the ratio of medians to plain sampling and the median of per-round ratios (paired).

Variants (goal in brackets):

- ``plain``    ``circuits.sample(model, N target prompts)`` -- the baseline
- ``collect``  ``acterase.collect`` for the N (target, source) pairs: one sampling call of 2N prompts
               (sources leading, targets following), with the captures of x_avg, the mask votes and the
               per-step statistics on every FFN hidden site                        [<= 2.2x]
- ``patched``  ``circuits.sample(model, N target prompts, graph=acterase erasure)``: a MaskedPatch on
               every FFN hidden site at every step                                  [<= 1.10x]

The concept is pocket's ``red`` without synonyms (8 templates: N = 8 pairs); ``--pairs`` takes fewer.

Run (the numbers in docs/recipes/acterase.md come from this)::

    HF_HUB_OFFLINE=1 python benchmarks/bench_acterase.py --json benchmarks/results_acterase.json

``--model tiny`` uses the tiny random pipeline (and the tiny vocabulary); ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

GOALS = {"collect": 2.2, "patched": 1.10}


def build(args: argparse.Namespace) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    import circuits
    from circuits.methods import Concept, acterase

    if args.model == "tiny":
        keeper = tempfile.TemporaryDirectory(prefix="bench_acterase_")
        circuits.build_tiny_pipeline(Path(keeper.name))
        model = circuits.load(keeper.name)
        concept = Concept("red", templates=["a {} circle", "a {} square on a white background", "a photo of a {} dog",
                                            "a {} cross", "a dotted {} triangle", "a picture of a {} cat",
                                            "an outlined {} circle", "a striped {} square"])
    else:
        from circuits.pocket import concept as pocket_concept

        keeper = None
        model = circuits.load("pocket")
        concept = pocket_concept("red")
    concept = replace(concept, synonyms=(), templates=concept.templates[: args.pairs])
    config = acterase.Config(steps=args.steps, seed=args.seed, synonyms=False)
    erasure = acterase.fit(model, concept, config)
    prompts = concept.target_prompts(synonyms=False)

    variants: dict[str, Callable[[], Any]] = {
        "plain": lambda: circuits.sample(model, prompts, seed=args.seed, steps=args.steps, progress=False),
        "collect": lambda: acterase.collect(model, concept, config),
        "patched": lambda: circuits.sample(model, prompts, seed=args.seed, steps=args.steps, graph=erasure,
                                           progress=False),
    }
    info = {
        "model": args.model,
        "unet_params_M": round(sum(p.numel() for p in model.unet.parameters()) / 1e6, 2),
        "image_size": model.default_size,
        "pairs": len(prompts),
        "prompts": prompts,
        "steps": args.steps,
        "ffn_sites": len(erasure.graph),
        "mask_density": {row["site"]: round(row["density"], 4) for row in erasure.trace},
        "_keeper": keeper,
    }
    return variants, info


def time_variants(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, list[float]]:
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate: no variant always goes first
            gc.collect()
            start = time.perf_counter()
            variants[name]()
            wall[name].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n}={wall[n][-1]:.3f}s" for n in names), flush=True)
    return wall


def _median_ci(values: list[float], level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """Seeded bootstrap interval of the median."""
    import random

    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    base = times["plain"]
    out = {}
    for name, ts in times.items():
        paired = [t / b for t, b in zip(ts, base)]
        goal = GOALS.get(name)
        ratio = statistics.median(ts) / statistics.median(base)
        out[name] = {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "ratio_of_medians": ratio,
            "median_paired_ratio": statistics.median(paired),
            "paired_ratio_ci95": _median_ci(paired),
            "goal": goal,
            "met": None if goal is None else ratio <= goal,
            "times_s": ts,
        }
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg(),
    }
    try:
        root = Path(__file__).resolve().parent.parent
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                            check=True).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no", "circuits"]
        info["circuits_dirty"] = bool(subprocess.run(status, cwd=root, capture_output=True, text=True).stdout)
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("pocket", "tiny"), default="pocket")
    parser.add_argument("--pairs", type=int, default=8, help="(target, source) prompt pairs, at most 8")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (each runs every variant once)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 pairs, 3 steps, 2 rounds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.steps, args.repeats = 2, 3, 2
    torch.set_num_threads(args.threads)
    command = "HF_HUB_OFFLINE=1 python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else argv)
    )
    info_machine = machine()
    variants, info = build(args)
    info.pop("_keeper")
    print(f"command: {command}\n{args.model}: {info['pairs']} pairs, {args.steps} steps, {args.repeats} rounds",
          flush=True)
    summary = summarise(time_variants(variants, args.repeats, args.warmup))
    info_machine["loadavg_end"] = os.getloadavg()
    print(f"\n{'variant':10s} {'median s':>9s} {'ratio':>7s} {'paired':>7s} {'paired 95% CI':>15s}  goal")
    for name, s in summary.items():
        verdict = "" if s["goal"] is None else f"<= {s['goal']:.2f}x " + ("met" if s["met"] else "MISSED")
        low, high = s["paired_ratio_ci95"]
        print(f"{name:10s} {s['median_s']:9.3f} {s['ratio_of_medians']:7.3f} {s['median_paired_ratio']:7.3f} "
              f"{low:7.3f}-{high:<7.3f}  {verdict}")
    print(f"(collect: {info['pairs']} targets + {info['pairs']} sources in one call; plain and patched: "
          f"{info['pairs']} prompts; CFG doubles every batch)")
    if args.json:
        from circuits.io import write_json

        write_json(Path(args.json), {"command": command, "date": time.strftime("%Y-%m-%d"), "args": vars(args),
                                     "machine": info_machine, "info": info, "summary": summary})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
