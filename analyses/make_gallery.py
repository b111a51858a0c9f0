"""Rebuild the gallery's figures: run experiments at their default settings on pocket and save small
copies of their figures in ``analyses/figures/`` (the full outputs go to ``outputs/gallery/NAME``).

    python analyses/make_gallery.py                      # every experiment (about 10-20 minutes on 2 cores)
    python analyses/make_gallery.py eot_zeroing          # some
    python analyses/make_gallery.py --redraw             # only redraw from outputs/gallery (no sampling)

The pages next to this script (``analyses/NAME.md``) quote the numbers of these runs; rerun and
compare after changing a method. Figures are drawn from the saved results, so ``--redraw`` picks up a
change of style without sampling again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
#: dots per inch of the gallery copies: small enough to commit (< 150 KB each), sharp enough to read
GALLERY_DPI = 80


def save_small(result, names: list[str] | None = None) -> list[Path]:
    import io

    from circuits.io import atomic_write

    written = []
    for index, (figure_name, figure) in enumerate(result.figures.items()):
        if names is not None and figure_name not in names:
            continue
        stem = result.name if index == 0 else f"{result.name}_{figure_name}"
        path = HERE / "figures" / f"{stem}.png"
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=GALLERY_DPI, bbox_inches="tight")
        data = buffer.getvalue()
        written.append(atomic_write(path, lambda f, d=data: f.write(d)))
    return written


def main(argv: list[str] | None = None) -> int:
    import circuits
    from circuits.experiments import load_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="experiments (default: all)")
    parser.add_argument("--out", type=Path, default=Path("outputs/gallery"))
    parser.add_argument("--redraw", action="store_true", help="redraw from saved outputs instead of running")
    args = parser.parse_args(argv)
    names = args.names or list(circuits.list_experiments())
    for name in names:
        folder = args.out / name
        result = load_result(folder) if args.redraw else circuits.run_experiment(name, out=folder)
        paths = save_small(result)
        sizes = ", ".join(f"{p.name} ({p.stat().st_size // 1024} KB)" for p in paths)
        print(f"{name}: {result.seconds:.0f} s; {sizes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
