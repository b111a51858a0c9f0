"""UCE and ErasePro with ``fit(model, concept)`` defaults on every colour, shape and texture of pocket.

    HF_HUB_OFFLINE=1 nice python benchmarks/closed_form_defaults.py --json benchmarks/results_closed_form_defaults.json

For each pocket concept (empty anchor) and each method, fits with no config (so ``Config.pocket()``,
:func:`circuits.methods.common.model_defaults`) and measures the erased rate and the preservation
ratio with :func:`circuits.pocket.report.erasure_report` (the same measure as ``docs/methods.md``).
``--set uce:reg=1.0`` style overrides try a variant. The goal: erased rate <= 0.2, preservation ratio >= 0.9.

    HF_HUB_OFFLINE=1 python benchmarks/closed_form_defaults.py --residuals [--set erasepro:rtol=1e-4]

    python benchmarks/closed_form_defaults.py --render benchmarks/results_closed_form_defaults.json

prints the markdown table of a saved run; ``--residuals`` prints ErasePro's residual per layer (k
projections), measured on the edited model, for red, circle and striped with the default columns
and with ``positions="all"`` (the table in ``docs/recipes/erasepro.md``).
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
    parser.add_argument("--residuals", action="store_true", help="print ErasePro's residual per layer and stop")
    parser.add_argument("--render", metavar="JSON", help="print the markdown table of a saved --json run")
    args = parser.parse_args(argv)
    if args.render:
        return render(json.loads(Path(args.render).read_text())["rows"])
    torch.set_num_threads(1)
    overrides = _overrides(args.set)
    model = circuits.load("pocket")
    if args.residuals:
        return print_residuals(model, overrides.get("erasepro", {}))
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


def render(rows: list[dict]) -> int:
    """One markdown row per (concept, method); "goal" when erased <= 0.2 and preservation ratio >= 0.9."""
    print("| concept | method | target before → after | synonyms after | unnamed (floor) | preservation before → after "
          "(ratio) | goal |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        synonyms = "–" if r["synonyms_after"] is None else f"{r['synonyms_after']:.2f}"
        goal = "met" if r["target_after"] <= 0.2 and r["preservation_ratio"] >= 0.9 else "missed"
        print(f"| {r['concept']} | {r['method']} | {r['target_before']:.2f} → **{r['target_after']:.2f}** | "
              f"{synonyms} | "
              f"{r['unnamed_rate']:.2f} | {r['preservation_before']:.2f} → {r['preservation_after']:.2f} "
              f"(**{r['preservation_ratio']:.2f}**) | {goal} |")
    return 0


def print_residuals(model, overrides: dict) -> int:
    runs = {}
    for word in ("red", "circle", "striped"):
        for label, positions in (("default", {}), ("`\"all\"`", {"positions": "all"})):
            erasure = erasepro.fit(model, pocket_concept(word), **{**overrides, **positions})
            keys = ("k_proj.weight", "to_k.weight")
            runs[f"{word} ({label})"] = [r for r in erasure.trace if r["param"].endswith(keys)]
    first = next(iter(runs.values()))
    print("| layer | " + " | ".join(runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    for i, row in enumerate(first):
        cells = [f"{rows[i]['residual']:.1e} (rank {rows[i]['rank']}/{rows[i]['columns']})" for rows in runs.values()]
        print(f"| {row['stage']} {row['layer']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
