"""The closed-form methods on pocket: erased-concept rate and preservation, before and after.

    HF_HUB_OFFLINE=1 python benchmarks/methods_table.py [--samples 4] [--json benchmarks/results_methods.json]

For each concept (``red``, ``circle``, ``striped``) and each method, fits the erasure, then samples
the pocket evaluation sets (prompts naming the concept, its synonyms, the attribute's other
values; ``circuits.pocket.evaluation_sets``) with and without it and lets the oracle read the
images (``circuits.pocket.report.erasure_report``). Prints the markdown table that
``docs/methods.md`` shows and writes every number to ``--json``.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import torch

import circuits
from circuits.io import write_json
from circuits.methods import erasepro, trce, uce
from circuits.pocket import concept as pocket_concept
from circuits.pocket.report import erasure_report

METHODS = {
    "UCE": lambda m, c: uce.fit(m, c),
    "ErasePro": lambda m, c: erasepro.fit(m, c),
    "ErasePro-w": lambda m, c: erasepro.fit(m, c, erasepro.weak()),
    "TRCE stage 1": lambda m, c: trce.fit(m, c),
    "TRCE stage 1, every [EoT]": lambda m, c: trce.fit(m, c, positions="eot_all"),
    "TRCE stage 1, whole sequence": lambda m, c: trce.fit(m, c, positions="all"),
    "TRCE stage 1, keyword": lambda m, c: trce.fit(m, c, positions="keyword"),
}
CONCEPTS = ("red", "circle", "striped")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4, help="images per prompt (8 prompts per set)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--anchor", default="", help="anchor word for every concept ('' = erase to nothing)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = circuits.load("pocket")
    results = []
    lines = [
        "| concept | method | target rate before → after | synonym rate before → after | kept (other attributes) "
        "| preservation before → after (ratio) | fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.concepts:
        concept = pocket_concept(name, anchor=args.anchor)
        baseline = None
        for method in args.methods:
            erasure = METHODS[method](model, concept)
            report = erasure_report(model, concept, erasure, samples=args.samples, steps=args.steps, baseline=baseline)
            baseline = report
            s = report.summary()
            results.append({"concept": name, "method": method, "fit_seconds": erasure.seconds, **s,
                            "notes": erasure.notes})
            lines.append(
                f"| {name} | {method} | {_fmt(s['target_before'])} → **{_fmt(s['target_after'])}** | "
                f"{_fmt(s['synonyms_before'])} → **{_fmt(s['synonyms_after'])}** | "
                f"{_fmt(s['kept_before'])} → {_fmt(s['kept_after'])} | "
                f"{_fmt(s['preservation_before'])} → **{_fmt(s['preservation_after'])}** "
                f"({s['preservation_ratio']:.2f}) | {erasure.seconds:.2f} |"
            )
            print(lines[-1], flush=True)
    print("\n".join(lines))
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        write_json(Path(args.json), {"command": "benchmarks/methods_table.py", "args": vars(args), "commit": commit,
                                     "date": time.strftime("%Y-%m-%d"), "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
