"""``circuits generate`` per image against plain ``circuits.sample``, and the measures' throughput.

Issue 16. One process, the pocket model, the same prompts, seeds, steps and batches for both: the
baseline samples each batch with ``circuits.sample`` (one seed per prompt, as ``generate`` passes
them) and keeps the images in memory; ``generate`` does the same sampling plus everything around it
(the prompt plan and truncation check, the PNG written atomically, the manifest line with the file's
sha256, the run file) into a fresh folder each round. Rounds interleave the two (rotated order) so a
shared machine's drift hits both; reported: median seconds per image of each, the ratio of medians
and the median of per-round ratios (goal <= 1.05x). Then images/s of each measure on the folder:
the pocket oracle, NudeNet 3.4.2 (real detector), CLIP score (a tiny random CLIP: the model's cost
is not SD's CLIP-L's, the pipeline around it is), and the FID/KID statistics on 2048-d features.

Run (the numbers in docs/performance.md come from this)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_generate.py --json benchmarks/results_generate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    import circuits
    from circuits.evaluation.generation import generate
    from circuits.evaluation.measures import measure
    from circuits.evaluation.measures.clip_score import build_tiny_clip
    from circuits.evaluation.measures.fid import fid_from_features, kid_from_features
    from circuits.evaluation.prompts import PromptRow
    from circuits.pocket import evaluation_sets
    from circuits.pocket.report import named_attributes

    model = circuits.load("pocket")
    sets = evaluation_sets("red", n=args.prompts)
    prompts = list(sets.target + sets.preservation + sets.synonyms)[: args.prompts]
    seeds = list(range(len(prompts)))
    # the same prompts and per-prompt seeds for both; the label is what the oracle measure checks
    rows = [PromptRow(str(i), p, seed=i, label=named_attributes(p)["colour"]) for i, p in enumerate(prompts)]
    size = model.default_size

    def plain() -> None:
        for start in range(0, len(prompts), args.batch_size):
            batch = slice(start, start + args.batch_size)
            circuits.sample(model, prompts[batch], seed=seeds[batch], steps=args.steps, progress=False)

    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))

    def gen(round_index: int) -> None:
        generate(model, rows, work / f"round{round_index}", steps=args.steps, batch_size=args.batch_size,
                 progress=False)  # fmt: skip

    plain()  # warm-up: the first call of a freshly loaded model is slower
    times: dict[str, list[float]] = {"sample": [], "generate": []}
    for r in range(args.rounds):
        order = ["sample", "generate"] if r % 2 == 0 else ["generate", "sample"]
        for name in order:
            start = time.perf_counter()
            plain() if name == "sample" else gen(r)
            times[name].append((time.perf_counter() - start) / len(prompts))
    ratios = [g / s for g, s in zip(times["generate"], times["sample"])]
    folder = work / "round0"
    print({k: statistics.median(v) for k, v in times.items()}, ratios, flush=True)
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "settings": {"prompts": len(prompts), "steps": args.steps, "batch_size": args.batch_size, "size": size,
                     "rounds": args.rounds},
        "per_image_seconds": {k: statistics.median(v) for k, v in times.items()},
        "ratio_of_medians": statistics.median(times["generate"]) / statistics.median(times["sample"]),
        "median_paired_ratio": statistics.median(ratios),
        "measures_images_per_second": {},
    }  # fmt: skip
    clip = build_tiny_clip(work / "clip")
    for name, options in (("oracle", {}), ("nudenet", {}), ("clip_score", {"clip": clip})):
        try:
            result["measures_images_per_second"][name] = measure(folder, name, **options)["images_per_second"]
        except ImportError as error:
            result["measures_images_per_second"][name] = f"skipped: {error}"
    rng = __import__("numpy").random.default_rng(0)
    a, b = rng.normal(size=(1000, 2048)), rng.normal(size=(1000, 2048))
    start = time.perf_counter()
    fid_from_features(a, b)
    kid_from_features(a, b, subsets=100, subset_size=1000)
    result["fid_kid_statistics_seconds_1000x2048"] = time.perf_counter() - start
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
