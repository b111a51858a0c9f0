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
#: dots per inch of the gallery copies: sharp enough to read
GALLERY_DPI = 80
#: a committed figure above this size is stored with a 256-colour palette instead
MAX_BYTES = 150_000


def gallery_stem(experiment: str, figure: str, index: int) -> str:
    """The file name of a gallery copy: the experiment's name for its first figure, else
    ``<experiment>_<figure>`` (the figure's own name when it already starts with the experiment's)."""
    if index == 0:
        return experiment
    return figure if figure.startswith(experiment) else f"{experiment}_{figure}"


def small_png(figure) -> bytes:
    """``figure`` as PNG at GALLERY_DPI, palette-quantised when the full-colour file is over MAX_BYTES."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=GALLERY_DPI, bbox_inches="tight")
    if buffer.tell() <= MAX_BYTES:
        return buffer.getvalue()
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").quantize(256, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def save_small(result, names: list[str] | None = None) -> list[Path]:
    from circuits.io import atomic_write

    written = []
    for index, (figure_name, figure) in enumerate(result.figures.items()):
        if names is not None and figure_name not in names:
            continue
        path = HERE / "figures" / f"{gallery_stem(result.name, figure_name, index)}.png"
        data = small_png(figure)
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
