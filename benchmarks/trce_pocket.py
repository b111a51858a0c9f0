"""TRCE on every pocket concept with ``trce.fit``'s own defaults: erased rate and preservation, before and after.

    HF_HUB_OFFLINE=1 nice python benchmarks/trce_pocket.py --runs trce1 > trce1.jsonl        # stage 1, 14 concepts
    HF_HUB_OFFLINE=1 nice python benchmarks/trce_pocket.py --runs trce trce:stage1ref --concepts red circle
    python benchmarks/trce_pocket.py --render trce1.jsonl trce.jsonl                          # the markdown table

A run is a catalog name (``trce1``: stage 1 alone; ``trce``: both stages, what ``trce.fit(model, concept)``
does with no config on pocket) with an optional ``:stage1ref`` (Eq. 9's reference taken from the stage-1
model, as the authors' code does; only for ``trce``). Runs go in the outer loop, concepts in the inner one,
so a cheap run covers every concept before an expensive one starts; each concept's "before" scores are
sampled once and reused. One JSON line per (run, concept) on stdout, as soon as it is measured.
The measure is ``circuits.pocket.report.erasure_report`` (8 prompts per set x 4 images, 25 DDIM steps),
the same as ``benchmarks/methods_table.py``; the goal is rate <= 0.2 at preservation ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import circuits
from circuits.analysis.benchmark import markdown_table
from circuits.methods import catalog, trce
from circuits.pocket import concept as pocket_concept
from circuits.pocket.report import erasure_report
from circuits.pocket.world import COLOURS, SHAPES, TEXTURES

#: interleaved, so a run cut short still covers each kind of concept
CONCEPTS = ("red", "circle", "striped", "green", "square", "dotted", "blue", "triangle", "solid", "yellow",
            "cross", "outlined", "orange", "purple")
assert sorted(CONCEPTS) == sorted(COLOURS + SHAPES + TEXTURES)
GOAL = (0.2, 0.9)


def fit(run: str, model, concept):
    name, _, variant = run.partition(":")
    if variant == "stage1ref":
        if name != "trce":
            raise SystemExit(f"--runs {run}: ':stage1ref' changes stage 2, so it only goes with 'trce'")
        return trce.fit(model, concept, progress=False, preserve_reference="stage1")
    if variant:
        raise SystemExit(f"--runs {run}: the only variant is ':stage1ref'")
    return catalog.fit(name, model, concept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["trce1", "trce"])
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render", nargs="+", metavar="JSONL", help="print the markdown table of saved rows")
    args = parser.parse_args(argv)
    if args.render:
        rows = [json.loads(line) for path in args.render for line in Path(path).read_text().splitlines() if line]
        print(markdown_table(rows, goal=GOAL))
        return 0
    torch.set_num_threads(args.threads)
    model = circuits.load("pocket")
    baselines: dict[str, object] = {}
    for run in args.runs:
        for name in args.concepts:
            concept = pocket_concept(name)
            start = time.perf_counter()
            erasure = fit(run, model, concept)
            seconds = time.perf_counter() - start
            report = erasure_report(model, concept, erasure, baseline=baselines.get(name))
            baselines[name] = report
            summary = report.summary()
            meets = summary["target_after"] <= GOAL[0] and summary["preservation_ratio"] >= GOAL[1]
            print(json.dumps({"concept": name, "method": run, "fit_seconds": seconds, **summary, "meets_goal": meets,
                              "notes": erasure.notes}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
