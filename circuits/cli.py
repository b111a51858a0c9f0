"""Command line: a thin shell over the library.

    circuits demo   [--model pocket] [--out outputs/demo]    sample, then the same with EoT attention zeroed
    circuits sample "a red circle" [--seed 0] [--out outputs/sample.png]
    circuits sites  [PATTERN] [--model pocket]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEMO_PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow cross"]


def _load(source: str):
    import circuits

    if source == "tiny":
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="circuits_tiny_"))
        circuits.build_tiny_pipeline(folder)
        return circuits.load(folder)
    return circuits.load(source)


def cmd_demo(args: argparse.Namespace) -> int:
    """Sample a few prompts, then again with every cross-attention's EoT columns zeroed (cond branch)."""
    import circuits
    from circuits.io import image_grid, save_image, write_json

    model = _load(args.model)
    start = time.perf_counter()
    plain = circuits.sample(model, DEMO_PROMPTS, seed=args.seed, steps=args.steps, progress=not args.quiet)
    graph = circuits.Graph([circuits.ZeroTokens("unet.*attn2", tokens="eot_all", branch="cond")])
    zeroed = circuits.sample(
        model, DEMO_PROMPTS, seed=args.seed, steps=args.steps, graph=graph, progress=not args.quiet
    )
    seconds = time.perf_counter() - start
    out = Path(args.out)
    save_image(out / "grid.png", image_grid([plain.images, zeroed.images], scale=4))
    summary = {"model": model.source, "prompts": DEMO_PROMPTS, "seed": args.seed, "steps": args.steps,
               "graph": graph.to_json(), "seconds": round(seconds, 2)}
    reads = _oracle_reads(model, plain.images, zeroed.images)
    if reads:
        summary["oracle"] = reads
    write_json(out / "summary.json", summary)
    print(f"model: {model.source}; {len(DEMO_PROMPTS)} prompts x 2 runs in {seconds:.1f}s")
    if reads:
        for prompt, a, b in zip(DEMO_PROMPTS, reads["plain"], reads["eot_zeroed"]):
            print(f"  {prompt:<20} plain: {a:<28} EoT zeroed: {b}")
    print(f"wrote {out / 'grid.png'} (top: plain, bottom: EoT attention zeroed) and {out / 'summary.json'}")
    return 0


def _oracle_reads(model, plain, zeroed):
    if model.source != "pocket":
        return None
    try:
        from circuits.pocket.oracle import Oracle
    except ImportError:
        return None
    oracle = Oracle.load()

    def describe(images):
        read = oracle.read(images)
        return [f"{c} {t} {s}" for c, t, s in zip(read["colour"], read["texture"], read["shape"])]

    return {"plain": describe(plain), "eot_zeroed": describe(zeroed)}


def cmd_sample(args: argparse.Namespace) -> int:
    import circuits
    from circuits.io import image_grid, save_image

    model = _load(args.model)
    result = circuits.sample(model, args.prompts, seed=args.seed, steps=args.steps,
                             guidance_scale=args.guidance, progress=not args.quiet)
    save_image(args.out, image_grid([result.images], scale=4))
    print(f"wrote {args.out}")
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    model = _load(args.model)
    for name in model.sites(args.pattern):
        print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="circuits", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model", default="pocket", help="'pocket', 'tiny' (random, for smoke tests), a folder or a hub id"
    )
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--steps", type=int, default=25)
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    demo = sub.add_parser("demo", parents=[common], help=cmd_demo.__doc__)
    demo.add_argument("--out", default="outputs/demo")
    demo.set_defaults(func=cmd_demo)
    sample = sub.add_parser("sample", parents=[common], help="sample prompts to a PNG grid")
    sample.add_argument("prompts", nargs="+")
    sample.add_argument("--guidance", type=float, default=7.5)
    sample.add_argument("--out", default="outputs/sample.png")
    sample.set_defaults(func=cmd_sample)
    sites = sub.add_parser("sites", parents=[common], help="list site names")
    sites.add_argument("pattern", nargs="?", default=None)
    sites.set_defaults(func=cmd_sites)

    args = parser.parse_args(argv)
    import circuits.errors

    try:
        return args.func(args)
    except circuits.errors.CircuitsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
