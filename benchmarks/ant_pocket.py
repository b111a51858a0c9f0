"""ANT on pocket, concept by concept: erased rate and preservation of ``ant.fit(model, concept)``.

    HF_HUB_OFFLINE=1 python benchmarks/ant_pocket.py green square dotted [--set steps=1000 ...] [--json out.jsonl]

Fits ANT with its model-aware defaults (``ant.Config.pocket()`` on pocket, the catalog's entry too)
plus any ``--set name=value`` overrides (Python literals), reads the pocket evaluation sets with and
without the erasure (``circuits.pocket.report.erasure_report``, the methods table's settings: 4 samples
per prompt, 25 steps) and prints one line per concept, appending it as JSON to ``--json``. One thread,
so several can run beside other work; each fit takes minutes on a CPU.
"""

from __future__ import annotations

import argparse
import ast
import json
import time

import torch

import circuits
from circuits.methods import ant
from circuits.pocket import concept as pocket_concept
from circuits.pocket.report import erasure_report


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("concepts", nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="ant.Config override")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = circuits.load("pocket")
    overrides = parse_set(args.set)
    for word in args.concepts:
        start = time.perf_counter()
        erasure = ant.fit(model, pocket_concept(word), progress=False, **overrides)
        report = erasure_report(model, word, erasure, samples=args.samples, steps=args.steps)
        mask = next(row for row in erasure.trace if row["kind"] == "mask")
        row = {"concept": word, "overrides": overrides, "active": mask["active"], "gamma": mask["gamma"],
               "tensors": mask["tensors"], "fit_seconds": round(erasure.seconds, 1),
               "total_seconds": round(time.perf_counter() - start, 1), **report.summary()}
        print(f"{word} {overrides}: target {row['target_before']:.2f} -> {row['target_after']:.2f}, synonyms "
              f"{row['synonyms_after']}, kept {row['kept_before']:.2f} -> {row['kept_after']:.2f}, preservation "
              f"{row['preservation_before']:.2f} -> {row['preservation_after']:.2f} (ratio "
              f"{row['preservation_ratio']:.3f}), active {row['active']} in {row['tensors']} tensors, "
              f"fit {row['fit_seconds']} s", flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
