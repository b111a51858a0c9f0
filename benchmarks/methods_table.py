"""The erasure methods on pocket: erased-concept rate and preservation, before and after.

    HF_HUB_OFFLINE=1 python benchmarks/methods_table.py [--samples 4] [--json benchmarks/results_methods_table.json]
    HF_HUB_OFFLINE=1 python benchmarks/methods_table.py --trace      # per-layer trace of UCE and ErasePro on red
    HF_HUB_OFFLINE=1 python benchmarks/methods_table.py --depth      # ErasePro's depth-sensitivity probe
    python benchmarks/methods_table.py --render a.json b.json [--goal] # one table from saved runs

For each concept (``red``, ``circle``, ``striped``) and each method, fits the erasure, then samples
the pocket evaluation sets (prompts naming the concept, its synonyms, the attribute's other
values; ``circuits.pocket.evaluation_sets``) with and without it and lets the oracle read the
images (``circuits.pocket.report.erasure_report``). Prints the markdown table that
``docs/methods.md`` shows and writes every number to ``--json``. The methods and their pocket
settings come from ``circuits.methods.catalog`` (shared with ``circuits run erasure_benchmark``, the
same comparison as an experiment with its figure); ``--methods`` takes table labels or catalog names.

``--trace`` prints the per-layer trace (angle, distance, residual, ``||dW||``) of UCE and ErasePro
for ``red`` (ErasePro Figs. 2c-d, 3a-b); ``--depth`` adds ``alpha * ||W|| * I`` to text layer 0's Q/K/V
and to the mid-block cross-attention's Q/K/V and measures the damage (Figs. 2e, 5).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

import circuits
from circuits.analysis.benchmark import GOAL_ERASED, GOAL_PRESERVATION, markdown_table
from circuits.io import write_json
from circuits.methods import catalog, erasepro, uce
from circuits.pocket import concept as pocket_concept
from circuits.pocket.report import erasure_report

# the methods and their pocket settings live in circuits.methods.catalog (shared with the erasure_benchmark
# experiment); here they are keyed by their table labels ("UCE + preservation"), as the saved JSON rows are
METHODS = catalog.by_label()
CONCEPTS = ("red", "circle", "striped")


def render(rows: list[dict], header: bool = True, goal: bool = False) -> str:
    """The markdown table of result rows (as written to --json); ``goal`` adds the met / missed column."""
    return markdown_table(rows, header, goal=(GOAL_ERASED, GOAL_PRESERVATION) if goal else None)


def render_files(paths: list[str], goal: bool = False) -> int:
    """Print one table from several --json files (a later file's row replaces an earlier one's)."""
    rows: dict[tuple[str, str], dict] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["rows"]:
            rows[(row["concept"], row["method"])] = row
    order = {c: i for i, c in enumerate(CONCEPTS)}
    for concept, _ in rows:  # other concepts after the table's own, in the order the files give them
        order.setdefault(concept, len(order))
    methods = {m: i for i, m in enumerate(METHODS)}
    ordered = sorted(rows.values(), key=lambda r: (order[r["concept"]], methods.get(r["method"], 99)))
    print(render(ordered, goal=goal))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4, help="images per prompt (8 prompts per set)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *catalog.names()],
                        metavar="METHOD", help="table labels or catalog names (circuits.methods.catalog)")
    parser.add_argument("--anchor", default="", help="anchor word for every concept ('' = erase to nothing)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--trace", action="store_true", help="print the per-layer trace of UCE and ErasePro on red")
    parser.add_argument("--depth", action="store_true", help="run ErasePro's depth-sensitivity probe")
    parser.add_argument("--render", nargs="+", metavar="JSON", help="print one table from saved --json files")
    parser.add_argument("--goal", action="store_true", help="with --render: a column saying which rows meet the goal "
                        "(erased rate <= 0.2, preservation ratio >= 0.9)")
    args = parser.parse_args(argv)
    if args.render:
        return render_files(args.render, goal=args.goal)
    torch.set_num_threads(args.threads)
    model = circuits.load("pocket")
    if args.trace:
        return print_trace(model)
    if args.depth:
        return print_depth(model, args.samples, args.steps)
    results = []
    for name in args.concepts:
        concept = pocket_concept(name, anchor=args.anchor)
        baseline = None
        for method in args.methods:
            entry = catalog.get(method)
            method = entry.label
            erasure = entry(model, concept)
            report = erasure_report(model, concept, erasure, samples=args.samples, steps=args.steps, baseline=baseline)
            baseline = report
            results.append({"concept": name, "method": method, "fit_seconds": erasure.seconds, **report.summary(),
                            "notes": erasure.notes})
            print(render(results[-1:], header=len(results) == 1), flush=True)
    print(render(results))
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        write_json(Path(args.json), {"command": "benchmarks/methods_table.py", "args": vars(args), "commit": commit,
                                     "date": time.strftime("%Y-%m-%d"), "rows": results})
    return 0


def print_trace(model) -> int:
    red = pocket_concept("red")
    runs = {
        "UCE": uce.fit(model, red),
        "ErasePro (all positions)": erasepro.fit(model, red),
        "ErasePro (first [EoT])": erasepro.fit(model, red, positions="eot"),
    }
    print("| method | stage | layer | param | angle before → after (deg) | distance before → after | residual "
          "(unedited → edited) | ‖dW‖ / ‖W‖ | solver |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, erasure in runs.items():
        for row in erasure.trace:
            if not row["param"].endswith(("k_proj.weight", "to_k.weight")):
                continue  # one projection per layer keeps the table readable (q/v behave alike)
            print(f"| {name} | {row['stage']} | {row['layer']} | {row['param'].rsplit('.', 2)[-2]} | "
                  f"{row['angle_before_deg']:.1f} → {row['angle_after_deg']:.1f} | "
                  f"{row['distance_before']:.1f} → {row['distance_after']:.1f} | "
                  f"{row['residual_before']:.3f} → {row['residual']:.2e} | "
                  f"{row['delta_norm'] / row['weight_norm']:.2f} | {row['solver']} |")
    return 0


def print_depth(model, samples: int, steps: int) -> int:
    from circuits.pocket.report import damage

    prompts = list(dict.fromkeys(p for w in CONCEPTS for p in evaluation_sets_for(w)))
    print("| alpha | site | oracle accuracy before → after | mean pixel difference | PSNR dB |")
    print("|---|---|---|---|---|")
    for alpha in (0.05, 0.1, 0.2):
        for site, graph in erasepro.depth_probe(model, alpha).items():
            hurt = damage(model, prompts, graph, samples=samples, steps=steps)
            print(f"| {alpha} | {site} | {hurt['accuracy_before']:.2f} → {hurt['accuracy_after']:.2f} | "
                  f"{hurt['pixel_difference']:.1f} | {hurt['psnr_db']:.1f} |", flush=True)
    return 0


def evaluation_sets_for(word: str) -> tuple[str, ...]:
    from circuits.pocket import evaluation_sets

    return evaluation_sets(word, n=4).target


if __name__ == "__main__":
    raise SystemExit(main())
