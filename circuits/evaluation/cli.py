"""``circuits generate`` and ``circuits report``: the evaluation layer's command line.

    circuits generate --model DIR --prompts FILE [--erasure DIR] --out DIR [--steps 50] [--batch-size 8] ...
    accelerate launch --multi_gpu --num_processes 2 -m circuits generate ...     (rows split over processes)
    circuits report DIR [DIR ...] --measure nudenet --measure clip_score --clip CLIP_DIR --out TABLE_DIR

``report`` computes the asked measures into each folder (``measures/NAME.json``; a measure already
there is reused unless ``--recompute``) and writes the table. ``circuits.cli.COMMANDS`` lists both.
"""

from __future__ import annotations

import argparse
import os

DTYPES = ("float32", "float16", "bfloat16")


def generate_arguments(gen: argparse.ArgumentParser) -> None:
    """The arguments of ``circuits generate`` (``circuits.cli.COMMANDS`` runs :func:`cmd_generate`)."""
    gen.add_argument("--model", default="pocket", help="'pocket' or a diffusers SD folder")
    gen.add_argument("--prompts", required=True, help="a prompt CSV (ESD/UCE/MACE, I2P, Ring-A-Bell, MMA) or .txt")
    gen.add_argument("--layout", default=None, help="force a prompt layout (default: from the columns)")
    gen.add_argument("--category", default=None, help="keep rows of this category (I2P: e.g. sexual)")
    gen.add_argument("--min-percentage", type=float, default=None, help="keep rows with --percentage-column >= this")
    gen.add_argument("--percentage-column", default="nudity_percentage")
    gen.add_argument("--label", default=None, help="keep rows of this class / artist / concept")
    gen.add_argument("--erasure", default=None, help="a folder written by Erasure.save")
    gen.add_argument("--out", required=True)
    gen.add_argument("--samples", type=int, default=1, help="images per prompt row")
    gen.add_argument("--steps", type=int, default=50)
    gen.add_argument("--guidance", type=float, default=7.5, help="where the row sets none")
    gen.add_argument("--seed", type=int, default=0, help="where the row sets none")
    gen.add_argument("--height", type=int, default=None)
    gen.add_argument("--width", type=int, default=None)
    gen.add_argument("--scheduler", default=None, help="ddim, dpm, euler, pndm (default: the model's)")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--generator-device", default="cpu", help="where seeds live: cpu (ESD/UCE/MACE) or cuda")
    gen.add_argument("--dtype", choices=DTYPES, default="float32")
    gen.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    gen.add_argument("--shard", default=None, metavar="I/N", help="run shard I of N by hand (0-based)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")


def report_arguments(rep: argparse.ArgumentParser) -> None:
    """The arguments of ``circuits report`` (``circuits.cli.COMMANDS`` runs :func:`cmd_report`)."""
    rep.add_argument("folders", nargs="+", help="generation folders (one table row each)")
    rep.add_argument("--measure", action="append", default=[], help="nudenet, clip_score, fid, classifier, oracle")
    rep.add_argument("--clip", default=None, help="CLIPModel folder (clip_score)")
    rep.add_argument("--reference", default=None, help="reference image folder (fid)")
    rep.add_argument("--inception", default=None, help="inception-2015-12-05.pt (fid)")
    rep.add_argument("--classifier", default=None, help="image-classification model folder (classifier)")
    rep.add_argument("--device", default="cpu", help="where CLIP, Inception and the classifier run (cpu, cuda)")
    rep.add_argument("--names", default=None, help="comma-separated row names (default: from each folder)")
    rep.add_argument("--recompute", action="store_true", help="recompute measures already in a folder")
    rep.add_argument("--out", default=None, help="where report.md/.csv/.png go (default: print only)")


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from circuits.evaluation.generation import generate
    from circuits.evaluation.prompts import filter_rows, read_prompts
    from circuits.models.loading import load

    prompts = read_prompts(args.prompts, layout=args.layout)
    if args.category or args.min_percentage is not None or args.label:
        prompts = filter_rows(prompts, category=args.category, min_percentage=args.min_percentage,
                              percentage=args.percentage_column, label=args.label)  # fmt: skip
    shard = None
    if args.shard:
        try:
            index, count = (int(x) for x in args.shard.split("/"))
        except ValueError:
            raise SystemExit(f"--shard {args.shard!r}: write I/N, e.g. 0/4") from None
        shard = (index, count)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # under accelerate launch: one GPU per process
    model = load(args.model, device=device, dtype=getattr(torch, args.dtype))
    result = generate(
        model, prompts, args.out, erasure=args.erasure, samples=args.samples, steps=args.steps,
        guidance=args.guidance, seed=args.seed, height=args.height, width=args.width, scheduler=args.scheduler,
        negative_prompt=args.negative_prompt, batch_size=args.batch_size, generator_device=args.generator_device,
        shard=shard, progress=not args.quiet,
    )  # fmt: skip
    print(result.summary(), flush=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from circuits.evaluation.measures import measure
    from circuits.evaluation.measures.common import read_results
    from circuits.evaluation.reporting import report

    options = {"clip_score": {"clip": args.clip, "device": args.device},
               "fid": {"reference": args.reference, "inception": args.inception, "device": args.device},
               "classifier": {"model": args.classifier, "device": args.device}}  # fmt: skip
    for folder in args.folders:
        done = read_results(folder)
        for name in args.measure:
            if name in done and not args.recompute:
                continue
            result = measure(folder, name, **options.get(name, {}))
            print(f"{folder}: {name} on {result['images']} images in {result['seconds']:.1f}s", flush=True)
    names = args.names.split(",") if args.names else None
    table = report(args.folders, args.out, names=names)
    print(table.markdown)
    if table.files:
        print("wrote " + ", ".join(str(p) for p in table.files.values()))
    return 0
