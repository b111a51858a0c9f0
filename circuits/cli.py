"""Command line: a thin shell over the library.

    circuits list                                     the experiments, one line each
    circuits run NAME [--model pocket] [--set key=value ...] [--out outputs/NAME] [--fast]
    circuits demo   [--model pocket] [--out outputs/demo]    sample; again with [EoT] attention zeroed; masked
    circuits sample "a red circle" [--seed 0] [--out outputs/sample.png]
    circuits sites  [PATTERN] [--model pocket]
    circuits generate --model DIR --prompts FILE [--erasure DIR] --out DIR     (see circuits.evaluation.cli)
    circuits report DIR [DIR ...] [--measure NAME ...] [--out DIR]

Every error is one line on stderr naming the input and what to do, with exit status 2 (bad input)
or 1 (a bug: ``circuits --debug ...`` shows its traceback). A subcommand is one entry of
:data:`COMMANDS`: a ``cmd_x(args) -> int`` function and the function that adds its arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from circuits.evaluation.cli import cmd_generate, cmd_report, generate_arguments, report_arguments

DEMO_PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow cross",
                "an orange circle", "a purple square", "a red triangle", "a blue cross"]


def _load(source: str):
    import circuits

    if source == "tiny":
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="circuits_tiny_"))
        circuits.build_tiny_pipeline(folder)
        return circuits.load(folder)
    return circuits.load(source)


def demo_variants() -> dict[str, object]:
    """The demo's rows: plain sampling, then TRCE's probe (Fig. 2): the cross-attention every layer
    pays to the [EoT] tokens set to zero, in both CFG branches, once as is and once renormalised
    over the remaining tokens (i.e. the EoT keys masked)."""
    import circuits

    return {
        "plain": None,
        "eot_zeroed": circuits.Graph([circuits.ZeroTokens("unet.*attn2", tokens="eot_all")]),
        "eot_masked": circuits.Graph([circuits.ZeroTokens("unet.*attn2", tokens="eot_all", renormalize=True)]),
    }


def cmd_demo(args: argparse.Namespace) -> int:
    """Sample a few prompts plainly, with the [EoT] tokens' cross-attention zeroed, and with it masked."""
    import circuits
    from circuits.io import check_writable, image_grid, save_image, write_json

    out = check_writable(args.out)
    model = _load(args.model)
    start = time.perf_counter()
    variants = demo_variants()
    images = {
        name: circuits.sample(model, DEMO_PROMPTS, seed=args.seed, steps=args.steps, graph=graph,
                              progress=not args.quiet).images  # fmt: skip
        for name, graph in variants.items()
    }
    seconds = time.perf_counter() - start
    save_image(out / "grid.png", image_grid(list(images.values()), scale=4))
    summary = {"model": model.source, "prompts": DEMO_PROMPTS, "seed": args.seed, "steps": args.steps,
               "rows": list(variants), "seconds": round(seconds, 2),
               "graphs": {name: g.to_json() for name, g in variants.items() if g is not None}}  # fmt: skip
    reads = _oracle_reads(model, images)
    if reads:
        summary["oracle"] = reads
    write_json(out / "summary.json", summary)
    print(f"model: {model.source}; {len(DEMO_PROMPTS)} prompts x {len(variants)} runs in {seconds:.1f}s")
    if reads:
        for name, read in reads.items():
            print(f"  {name:<11} colour kept {read['colour_kept']:.2f}, shape kept {read['shape_kept']:.2f}: "
                  + "; ".join(read["read"]))  # fmt: skip
    print(f"wrote {out / 'grid.png'} (rows: {', '.join(variants)}) and {out / 'summary.json'}")
    return 0


def _oracle_reads(model, images: dict[str, list]) -> dict[str, dict] | None:
    """What the pocket oracle reads in each row, and how much of each prompt's colour and shape survives."""
    if model.source != "pocket":
        return None
    from circuits.pocket.oracle import Oracle

    oracle = Oracle.load()
    wanted = [prompt.split()[1:3] for prompt in DEMO_PROMPTS]  # "a red circle" -> colour, shape
    out = {}
    for name, row in images.items():
        read = oracle.read(row)
        out[name] = {
            "read": [f"{c} {t} {s}" for c, t, s in zip(read["colour"], read["texture"], read["shape"])],
            "colour_kept": sum(r == c for r, (c, _) in zip(read["colour"], wanted)) / len(wanted),
            "shape_kept": sum(r == s for r, (_, s) in zip(read["shape"], wanted)) / len(wanted),
        }
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    import circuits
    from circuits.io import check_writable, image_grid, save_image

    _check_image_path(args.out)
    check_writable(Path(args.out).parent, argument="out's folder")
    model = _load(args.model)
    result = circuits.sample(model, args.prompts, seed=args.seed, steps=args.steps,
                             guidance_scale=args.guidance, progress=not args.quiet)
    save_image(args.out, image_grid([result.images], scale=4))
    print(f"wrote {args.out}")
    return 0


def _check_image_path(path: str) -> None:
    from PIL import Image

    from circuits.errors import OutputError

    suffix = Path(path).suffix.lower()
    if suffix not in Image.registered_extensions():
        raise OutputError(f"--out {path!r}: give an image file name, e.g. outputs/sample.png (.png, .jpg, .webp)")


def cmd_list(args: argparse.Namespace) -> int:
    from circuits.experiments import experiments

    registered = experiments()
    width = max(len(name) for name in registered)
    for name, entry in registered.items():
        paper = f"[{entry.paper}] " if entry.paper else ""
        print(f"{name:<{width}}  {paper}{entry.summary}")
    print("\nrun one with: circuits run NAME [--set key=value ...]; settings: circuits run NAME --show-config")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a named experiment; write its config, metrics, figures and images to --out."""
    import json

    from circuits.experiments import get_experiment, resolve_config, run_experiment
    from circuits.experiments.overrides import config_to_json, parse_assignments

    entry = get_experiment(args.name)
    overrides = parse_assignments(entry.config, args.set or [], owner=f"experiment {args.name!r}")
    if args.show_config:
        base = None
        if args.fast:
            base = resolve_config(args.name, **entry.fast)
        config = resolve_config(args.name, base, **overrides)
        print(json.dumps(config_to_json(config), indent=2))
        return 0
    out = Path(args.out or Path("outputs") / args.name)
    from circuits.experiments.result import check_destination

    check_destination(out)  # before building a model, not only before the experiment's work
    model = _load(args.model) if args.model == "tiny" else args.model
    changed = ", ".join(f"{key}={value!r}" for key, value in overrides.items())
    print(f"{args.name} [{entry.paper}]: {entry.summary}" + (f"\n  settings: {changed}" if changed else ""), flush=True)
    result = run_experiment(args.name, model, out, fast=args.fast, progress=not args.quiet, **overrides)
    print(result.summary())
    figures = ", ".join(f"{name}.png" for name in result.figures)
    rows = len(result.images)
    print(f"wrote {out}/ (config.json, metrics.json, figures/: {figures or 'none'}; images/: {rows} rows)")
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    model = _load(args.model)
    for name in model.sites(args.pattern):
        print(name)
    return 0


# -- the subcommands --------------------------------------------------------------------------------
def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="pocket", help="'pocket', 'tiny' (random, for smoke tests), a folder or a hub id"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
    parser.add_argument("--out", default="outputs/demo")


def _sample_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--out", default="outputs/sample.png")


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="an experiment name (see: circuits list)")
    parser.add_argument("--model", default="pocket", help="'pocket' or a diffusers SD1.x/2.x folder")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config setting, e.g. --set steps=10 --set seeds=0,1 (repeatable)")  # fmt: skip
    parser.add_argument("--out", default=None, help="output folder (default: outputs/NAME)")
    parser.add_argument("--fast", action="store_true", help="the recipe's seconds-long settings (same code paths)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _sites_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
    parser.add_argument("pattern", nargs="?", default=None)


@dataclass(frozen=True)
class Command:
    """One subcommand: ``circuits NAME ...`` parses with ``arguments`` and runs ``run``."""

    name: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None]
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("demo", cmd_demo, _demo_arguments, cmd_demo.__doc__ or ""),
    Command("sample", cmd_sample, _sample_arguments, "sample prompts to a PNG grid"),
    Command("list", cmd_list, _list_arguments, "list the experiments"),
    Command("run", cmd_run, _run_arguments, cmd_run.__doc__ or ""),
    Command("sites", cmd_sites, _sites_arguments, "list site names"),
    Command("generate", cmd_generate, generate_arguments, "generate a prompt file's images (resumable, sharded)"),
    Command("report", cmd_report, report_arguments, "measure generation folders and write the literature's table"),
)


class UsageError(Exception):
    """A command line argparse cannot parse (raised instead of argparse's usage text and exit)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see: {self.prog} --help)")


def build_parser(commands: tuple[Command, ...] = COMMANDS) -> argparse.ArgumentParser:
    parser = _Parser(prog="circuits", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        child = sub.add_parser(command.name, help=command.help)
        command.arguments(child)
        child.set_defaults(func=command.run)
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every error is one line on stderr (exit 2: bad input, 1: a bug)."""
    from circuits.errors import CircuitsError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(COMMANDS).parse_args(argv)  # read at call time: tests and plug-ins add commands
        return args.func(args)
    except (UsageError, CircuitsError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # a file or folder the user named (FileExistsError, permissions, a full disk)
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if "--debug" in argv:
            raise
        print(f"error: unexpected {type(error).__name__}: {_one_line(error)} (a bug in circuits; "
              "rerun with circuits --debug ... for the traceback and report it)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
