"""UCE and ErasePro with ``fit(model, concept)`` defaults on every colour, shape and texture of pocket.

    HF_HUB_OFFLINE=1 nice python benchmarks/closed_form_defaults.py --json benchmarks/results_closed_form_defaults.json

For each pocket concept (empty anchor) and each method, fits with no config (so ``Config.pocket()``,
:func:`circuits.methods.common.model_defaults`) and measures the erased rate and the preservation
ratio with :func:`circuits.pocket.report.erasure_report` (the same measure as ``docs/methods.md``).
``--set uce:reg=1.0`` style overrides try a variant. The goal: erased rate <= 0.2, preservation ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import torch

import circuits
from circuits.methods import erasepro, uce
from circuits.pocket import concept as pocket_concept
from circuits.pocket.concepts import ATTRIBUTES
from circuits.pocket.report import erasure_report

FITS = {"uce": uce.fit, "erasepro": erasepro.fit}


def _overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        method, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(method, {})[key] = parsed
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=[v for values in ATTRIBUTES.values() for v in values])
    parser.add_argument("--methods", nargs="+", default=list(FITS), choices=list(FITS))
    parser.add_argument("--set", nargs="*", default=[], metavar="METHOD:FIELD=VALUE")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = _overrides(args.set)
    model = circuits.load("pocket")
    rows = []
    for name in args.concepts:
        concept = pocket_concept(name)
        baseline = None
        for method in args.methods:
            erasure = FITS[method](model, concept, **overrides.get(method, {}))
            report = erasure_report(model, concept, erasure, samples=args.samples, steps=args.steps, baseline=baseline)
            baseline = report
            summary = report.summary()
            rows.append({"concept": name, "method": method, "overrides": overrides.get(method, {}), **summary,
                         "notes": erasure.notes, "time": time.strftime("%H:%M:%S")})
            print(json.dumps(rows[-1], default=str), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
