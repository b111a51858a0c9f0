"""ActErase on every pocket concept: the defaults ``fit(model, concept)`` picks, and the controls.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/acterase_pocket.py \
        --json benchmarks/results_acterase_pocket.jsonl
    python benchmarks/acterase_pocket.py --render benchmarks/results_acterase_pocket.jsonl

Each row: one concept, one variant (``default`` is ``acterase.fit(model, concept)`` with no config;
the others override one setting), scored by ``circuits.pocket.report.erasure_report`` (4 samples per
prompt, 25 steps, seed 0; the "before" scores are shared by the variants of a concept). Rows are
appended to ``--json`` as they finish (one JSON object a line), so a run can be stopped and resumed
(``--skip-done``). The numbers in ``docs/recipes/acterase.md`` ("Measured on pocket") come from here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

VARIANTS: dict[str, dict] = {
    "default": {},
    "paper": {"config": "paper"},
    "step": {"masks": "step"},
    "vote": {"masks": "vote"},
    "last": {"masks": "last"},
    "both": {"branch": "both"},
    "sources-step": {"sources": "step"},
    "agreement0.6": {"agreement": 0.6},
    "agreement0.75": {"agreement": 0.75},
    "vote-agreement0.6": {"masks": "vote", "agreement": 0.6},
    "tau0.02": {"tau": 0.02},
    "tau0.01": {"tau": 0.01},
    "tau0.05": {"tau": 0.05},
    "up-blocks": {"layers": "unet.up_blocks.*.ff.hidden"},
    "down-mid-blocks": {"layers": "unet.[dm]*.ff.hidden"},
    "ffn-magnitude": {"score": "magnitude"},
    "xattn-magnitude": {"layers": "cross_attention", "score": "magnitude"},
    "model-scheduler": {"scheduler": None, "steps": 25},
}
#: --fast: a short collection (10 steps, no synonyms) and 6 evaluation prompts per set, 2 samples, 10 steps
FAST_FIT = {"steps": 10, "synonyms": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=None, help="pocket words (default: all)")
    parser.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--fast", action="store_true", help="short collection and evaluation (the controls)")
    parser.add_argument("--json", default=None, help="append one JSON row per (concept, variant) here")
    parser.add_argument("--skip-done", action="store_true", help="skip (concept, variant) rows already in --json")
    parser.add_argument("--render", nargs="+", default=None, help="print the table of --json files and exit")
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render)
    torch.set_num_threads(1)
    import circuits
    from circuits.methods import acterase
    from circuits.pocket import concept as pocket_concept
    from circuits.pocket import evaluation_sets
    from circuits.pocket.report import EvaluationSets, erasure_report
    from circuits.pocket.world import COLOURS, SHAPES, TEXTURES

    model = circuits.load("pocket")
    words = args.concepts or [*COLOURS, *SHAPES, *TEXTURES]
    done = set()
    if args.skip_done and args.json and Path(args.json).exists():
        done = {(r["concept"], r["variant"]) for r in map(json.loads, Path(args.json).read_text().splitlines())}
    for word in words:
        concept = pocket_concept(word)
        baseline, sets, evaluate = None, None, {"samples": args.samples}
        if args.fast:
            full = evaluation_sets(concept, n=6)
            sets = EvaluationSets(full.attribute, full.value, full.target, (), full.preservation)
            evaluate = {"samples": 2, "steps": 10}
        for variant in args.variants:
            if (concept.name, variant) in done:
                continue
            start = time.perf_counter()
            overrides = {k: v for k, v in VARIANTS[variant].items() if k != "config"}
            config = acterase.Config.paper() if VARIANTS[variant].get("config") == "paper" else None
            erasure = acterase.fit(model, concept, config, **{**(FAST_FIT if args.fast else {}), **overrides})
            fit_s = time.perf_counter() - start
            report = erasure_report(model, concept, erasure, sets=sets, baseline=baseline, **evaluate)
            baseline = report
            row = {"concept": concept.name, "variant": variant, "overrides": VARIANTS[variant], "fast": args.fast,
                   "config": erasure.config, "notes": erasure.notes, "fit_s": round(fit_s, 2),
                   "density": sum(r["density"] for r in erasure.trace) / len(erasure.trace), **report.summary()}
            print(json.dumps({k: row[k] for k in ("concept", "variant", "target_after", "preservation_ratio",
                                                   "density", "fit_s")}), flush=True)
            if args.json:
                with open(args.json, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
    return 0


def render(paths: list[str]) -> int:
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]
    print("| concept | variant | target before → after | synonyms after | rate unnamed | kept after | "
          "preservation ratio | mean mask density | fit s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        syn = "–" if r.get("synonyms_after") is None else f"{r['synonyms_after']:.2f}"
        unnamed = "–" if r.get("unnamed_rate") is None else f"{r['unnamed_rate']:.2f}"
        print(f"| {r['concept']} | {r['variant']} | {r['target_before']:.2f} → **{r['target_after']:.2f}** | "
              f"{syn} | {unnamed} | {r['kept_after']:.2f} | **{r['preservation_ratio']:.2f}** | {r['density']:.3f} | "
              f"{r['fit_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
