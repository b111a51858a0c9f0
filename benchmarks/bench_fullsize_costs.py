"""What interventions, sweeps and closed-form fits cost at the shapes users run (SD1.5, SD2.1, SDXL).

Issue 17, item 4 (the rest of it: ``bench_fullsize.py`` measured the intervention-free path). For each
family: build the full-size random-weight folder once (:func:`circuits.models.fullsize.build_sd_pipeline`,
real tokenizers; ``--folder DIR`` keeps and reuses ``DIR/<family>``), ``circuits.load`` it, then in ONE
process measure, as ratios against plain ``circuits.sample`` timed in the same rounds:

- ``eot_zeroing``   every [EoT] attention map zeroed: ``ZeroTokens("unet.*attn2", tokens="eot_all")``,
                    both CFG branches (the ``eot_zeroing`` experiment's ``k = K`` arm);
- ``ffn_capture``   ActErase's source capture (``acterase.collect``'s ``x_avg``): ``Capture`` on every
                    ``ff.hidden`` site of the conditional rows, reduced with ``mean_over="batch"`` and
                    ``over_steps="mean"`` (one ``[positions, channels]`` tensor per site, not per step);
- ``acterase``      sampling under an ActErase patch (``acterase.fit`` once: one prompt pair, 1 DPM step,
                    its paper defaults otherwise; per-step masks on every FFN hidden site);
- ``sweep``         ``circuits.sampling.sweep`` of 4 variants (plain and three [EoT] probes, :func:`sweep_variants`)
                    in one batched call, against ``one_by_one``, the same variants as separate
                    ``circuits.sample`` calls.

Rounds interleave every arm (the order rotated each round), so drift of the shared machine hits all
alike; a ratio is the median over rounds of (arm / baseline of the same round). After the rounds:
the sweep's peak memory at ``max_batch=1`` and at ``max_batch=4`` (at ``--memory-size`` px, default 128, one
step: at 64 px a row's activations are below what every sampling call allocates), and each closed-form fit
(UCE, ErasePro, TRCE stage 1; 5 templates x 4 words = 20 target prompts) timed (one warm-up, median of
``--fit-repeats``) with its peak memory.

**Peak memory**, per phase in this one process: before each timed call the kernel's high-water mark is
reset (``echo 5 > /proc/self/clear_refs`` sets VmHWM to the current RSS) and VmHWM is read after it
(``/proc/self/status``). ``peak_gb`` is that high-water mark (the weights included); ``extra_gb`` is it
minus the RSS just before the call: what the phase itself needed on top of the loaded model. Where
``/proc`` cannot be written, the non-resettable ``ru_maxrss`` is recorded and ``memory_method`` says so.
The weights are memory-mapped (safetensors): the first sample pages them in before any phase is measured, but
under memory pressure the kernel may drop those pages and a phase that reads them back counts them in its
``extra_gb``; ``peak_gb`` is then the steadier figure.

**Size.** Images are 64 px and steps few (default 2): the cost is the UNet at full width, not the
resolution. ActErase's masks are per spatial position and ``acterase.fit`` collects at the model's
default size (512-1024 px, minutes per UNet call on one CPU thread); the benchmark collects at 64 px
by setting the UNet's ``sample_size`` config for the fit and restoring it (nothing reads it but the
default size).

Run (the numbers in docs/performance.md come from this)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice python benchmarks/bench_fullsize_costs.py --families sd15,sd21 \
        --json benchmarks/results_fullsize_costs.json

``--families sdxl`` needs about 16 GB free. ``--tiny`` runs the same on ``tiny=True`` pipelines (seconds; the
test uses it; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# measure the checkout this file is in (and whose commit is recorded), not whichever circuits is installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

PROMPT = "portrait of a woman, (masterpiece:1.2), highly detailed, by greg rutkowski, trending on artstation"
#: the closed-form fits' concept: bench_methods.py's (5 templates x 4 words = 20 target prompts)
FIT_TEMPLATES = (
    "a photo of a {}",
    "a painting of a {} sleeping in a garden",
    "a {} sitting on a sofa next to a window",
    "a close-up portrait of a {}, trending on artstation",
    "an oil painting of a {} playing with a ball of yarn, highly detailed",
)
FIT_METHODS = ("UCE", "ErasePro", "TRCE stage 1")
#: the arms timed in every round, besides the baseline
ARMS = ("eot_zeroing", "ffn_capture", "acterase", "sweep", "one_by_one")
#: marks a folder whose build finished (``--folder`` reuses only those)
BUILT = "bench_fullsize_costs.built"
_CLEAR_REFS, _STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


# ---------------------------------------------------------------------------------------------
# measuring: wall time and per-phase peak memory
# ---------------------------------------------------------------------------------------------
def _status_gb(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024**2  # kB
    raise RuntimeError(f"{field} not in {_STATUS}")


def memory_method() -> str:
    """How peaks are read here: the resettable VmHWM, or (no writable /proc) the process-wide ru_maxrss."""
    try:
        _CLEAR_REFS.write_text("5")
        _status_gb("VmHWM")
        return "VmHWM reset per phase (echo 5 > /proc/self/clear_refs), in process"
    except (OSError, RuntimeError):
        return "ru_maxrss (process-wide, NOT reset per phase: each peak is the largest so far)"


def measure(fn: Callable[[], Any]) -> dict[str, float]:
    """Run ``fn`` once: its wall time, the memory high-water mark during it, and that mark above the start RSS."""
    gc.collect()
    try:
        _CLEAR_REFS.write_text("5")  # VmHWM := current RSS
        before = _status_gb("VmRSS")
        read_peak: Callable[[], float] = lambda: _status_gb("VmHWM")  # noqa: E731
    except (OSError, RuntimeError):
        before = 0.0
        read_peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # noqa: E731
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = read_peak()
    # cpu_s: this process's CPU time, less sensitive than wall time to other jobs on a shared machine
    return {"s": seconds, "cpu_s": cpu, "peak_gb": peak, "extra_gb": max(peak - before, 0.0)}


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


@contextlib.contextmanager
def default_size(model: Any, size: int) -> Iterator[None]:
    """Temporarily make ``size`` px the model's default (what ``acterase.fit`` collects at)."""
    old = model.unet.config.sample_size
    model.unet.register_to_config(sample_size=size // model.vae_scale_factor)
    try:
        yield
    finally:
        model.unet.register_to_config(sample_size=old)


# ---------------------------------------------------------------------------------------------
# one family
# ---------------------------------------------------------------------------------------------
def _folder(family: str, parent: Path, tiny: bool, out: dict[str, Any]) -> Path:
    from circuits.models.fullsize import build_sd_pipeline

    folder = parent / (f"{family}-tiny" if tiny else family)
    done = folder / BUILT  # written last: a build killed half-way is built again, never loaded
    if done.is_file():
        out["build_and_save_s"] = None  # reused
        return folder
    start = time.perf_counter()
    pipe = build_sd_pipeline(family, folder, tiny=tiny)
    out["build_and_save_s"] = time.perf_counter() - start
    done.write_text(f"built by benchmarks/bench_fullsize_costs.py in {out['build_and_save_s']:.1f} s\n")
    del pipe
    gc.collect()
    return folder


def sweep_variants() -> dict[str, Any]:
    from circuits.methods import trce

    return {"plain": None, "eot k=1": trce.eot_probe(1), "eot k=4": trce.eot_probe(4), "eot k=16": trce.eot_probe(16)}


def fits(model: Any) -> dict[str, Callable[[], Any]]:
    from circuits.concept import Concept
    from circuits.methods import erasepro, trce, uce

    concept = Concept("cat", synonyms=("kitten", "kitty", "tabby"), templates=FIT_TEMPLATES)
    return {
        "UCE": lambda: uce.fit(model, concept),
        "ErasePro": lambda: erasepro.fit(model, concept),
        "TRCE stage 1": lambda: trce.fit(model, concept, stages=("text",), progress=False),
    }


def bench_family(family: str, folder_parent: Path, *, steps: int, size: int, rounds: int, fit_repeats: int,
                 memory_size: int = 128, tiny: bool = False) -> dict[str, Any]:
    import circuits
    from circuits.concept import Concept
    from circuits.interventions import Capture, Graph, ZeroTokens
    from circuits.methods import acterase
    from circuits.sampling import sweep

    out: dict[str, Any] = {"family": family, "tiny": tiny, "steps": steps, "size": size, "rounds": rounds}
    folder = _folder(family, folder_parent, tiny, out)
    start = time.perf_counter()
    model = circuits.load(folder)
    out["load_s"] = time.perf_counter() - start
    out["unet_params"] = sum(p.numel() for p in model.unet.parameters())
    common = {"seed": 0, "steps": steps, "height": size, "width": size, "progress": False}
    # the weights are memory-mapped: the first call pages them in, which no phase's peak should count
    circuits.sample(model, PROMPT, **common)
    out["rss_model_gb"] = _status_gb("VmRSS") if _STATUS.is_file() else None

    eot = Graph([ZeroTokens("unet.*attn2", tokens="eot_all", branch="both")])
    sites = model.sites.ffn_hidden()
    capture = Graph([Capture(s, branch="cond", mean_over="batch", over_steps="mean") for s in sites])
    out["ffn_sites"] = len(sites)
    fitted_erasure: list[Any] = []
    with default_size(model, size):  # collect at the size we sample at (see the module docstring)
        fitted = measure(lambda: fitted_erasure.append(acterase.fit(
            model, Concept("cat", anchor="dog", templates=("a photo of a {}",)), steps=1, synonyms=False)))
    erasure = fitted_erasure[0]
    out["acterase_fit"] = {**fitted, "patches": len(erasure.graph), "config": "paper defaults, steps=1, 1 pair"}
    variants = sweep_variants()
    out["sweep_variants"] = list(variants)

    def one_by_one() -> None:
        for graph in variants.values():
            circuits.sample(model, PROMPT, graph=graph, **common)

    arms: dict[str, Callable[[], Any]] = {
        "baseline": lambda: circuits.sample(model, PROMPT, **common),
        "eot_zeroing": lambda: circuits.sample(model, PROMPT, graph=eot, **common),
        "ffn_capture": lambda: circuits.sample(model, PROMPT, graph=capture, **common),
        "acterase": lambda: circuits.sample(model, PROMPT, graph=erasure, **common),
        "sweep": lambda: sweep(model, [PROMPT], variants, seeds=[0], steps=steps, height=size, width=size,
                               max_batch=len(variants), progress=False),
        "one_by_one": one_by_one,
    }
    for fn in arms.values():  # warm-up (and a check that each arm runs)
        fn()
    names = list(arms)
    timed: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for i in range(rounds):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            timed[name].append(measure(arms[name]))
    base = timed["baseline"]
    out["arms"] = {}
    for name in names:
        rows = timed[name]
        paired = [r["s"] / b["s"] for r, b in zip(rows, base)]
        out["arms"][name] = {
            "s": [r["s"] for r in rows], "median_s": _median(rows, "s"), "ratio": statistics.median(paired),
            "peak_gb": max(r["peak_gb"] for r in rows), "extra_gb": max(r["extra_gb"] for r in rows),
        }  # fmt: skip
    out["sweep_vs_one_by_one"] = statistics.median(
        s["s"] / o["s"] for s, o in zip(timed["sweep"], timed["one_by_one"]))

    # at 64 px a row's activations are a few MB, below what any sampling call allocates anyway: the
    # bound is measured at memory_size px (1 step: memory does not grow with steps), 1 and all rows per call
    out["sweep_memory"] = {"size": memory_size, "steps": 1}
    for max_batch in (1, len(variants)):
        out["sweep_memory"][str(max_batch)] = measure(lambda b=max_batch: sweep(
            model, [PROMPT], variants, seeds=[0], steps=1, height=memory_size, width=memory_size, max_batch=b,
            progress=False))

    out["fits"] = {}
    for name, fit in fits(model).items():
        try:
            warm = measure(fit)
        except Exception as error:  # noqa: BLE001 -- a method that cannot fit this family is reported, the run goes on
            out["fits"][name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        rows = [measure(fit) for _ in range(fit_repeats)]
        out["fits"][name] = {
            "warmup_s": warm["s"], "s": [r["s"] for r in rows], "median_s": _median(rows, "s"),
            "median_cpu_s": _median(rows, "cpu_s"),
            "peak_gb": max(r["peak_gb"] for r in rows + [warm]), "extra_gb": max(r["extra_gb"] for r in rows + [warm]),
        }  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def machine_info(argv: list[str]) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    import diffusers
    import transformers

    return {
        "command": "OMP_NUM_THREADS={} python benchmarks/bench_fullsize_costs.py {}".format(
            os.environ.get("OMP_NUM_THREADS"), shlex.join(argv)),
        "git_commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "circuits")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
        "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "memory_method": memory_method(),
    }  # fmt: skip


def table(row: dict[str, Any]) -> str:
    """The family's numbers as text: one line per arm, then the sweep's memory, then the fits."""
    lines = [f"{row['family']}{' (tiny)' if row['tiny'] else ''}: UNet {row['unet_params'] / 1e6:.1f} M, "
             f"{row['size']} px, {row['steps']} steps, {row['rounds']} rounds; "
             f"RSS with the weights paged in {row['rss_model_gb']:.2f} GB"]
    lines.append(f"  {'arm':14s} {'median s':>9s} {'ratio':>7s} {'peak GB':>8s} {'extra GB':>9s}")
    for name, arm in row["arms"].items():
        lines.append(f"  {name:14s} {arm['median_s']:9.2f} {arm['ratio']:6.3f}x {arm['peak_gb']:8.2f} "
                     f"{arm['extra_gb']:9.3f}")
    lines.append(f"  sweep / one_by_one ({len(row['sweep_variants'])} variants): {row['sweep_vs_one_by_one']:.3f}x")
    memory = row["sweep_memory"]
    for batch, m in memory.items():
        if isinstance(m, dict):
            lines.append(f"  sweep max_batch={batch} ({memory['size']} px, 1 step): {m['s']:.2f} s, "
                         f"peak {m['peak_gb']:.2f} GB, extra {m['extra_gb']:.3f} GB")
    fit = row["acterase_fit"]
    lines.append(f"  ActErase fit (1 step, 1 pair): {fit['s']:.2f} s, peak {fit['peak_gb']:.2f} GB, "
                 f"extra {fit['extra_gb']:.3f} GB")
    for name, fit in row["fits"].items():
        if "error" in fit:
            lines.append(f"  fit {name:13s} FAILED: {fit['error'][:200]}")
            continue
        lines.append(f"  fit {name:13s} {fit['median_s']:7.2f} s (warm-up {fit['warmup_s']:.2f} s)  peak "
                     f"{fit['peak_gb']:.2f} GB, extra {fit['extra_gb']:.3f} GB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15,sd21", help="comma-separated: sd15, sd21, sdxl")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="image side in px (a multiple of 8)")
    parser.add_argument("--memory-size", type=int, default=128, help="px of the sweep's peak-memory phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fit-repeats", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=None, help="keep / reuse the built folders as DIR/<family>")
    parser.add_argument("--tiny", action="store_true", help="tiny=True pipelines: a smoke run, numbers meaningless")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in families if f not in ("sd15", "sd21", "sdxl")]
    if bad or not families:
        parser.error(f"--families {args.families!r}: give some of sd15, sd21, sdxl")
    for name in ("steps", "size", "memory_size", "rounds", "fit_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    results: dict[str, Any] = {"machine": machine_info(argv), "families": []}
    with contextlib.ExitStack() as stack:
        parent = args.folder or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fullsize_costs_")))
        for family in families:
            row = bench_family(family, parent, steps=args.steps, size=args.size, rounds=args.rounds,
                               fit_repeats=args.fit_repeats, memory_size=args.memory_size, tiny=args.tiny)
            row["loadavg_after"] = os.getloadavg()
            results["families"].append(row)
            gc.collect()
            print(table(row), flush=True)
            if args.json:  # after each family, so a long run keeps what it measured
                results["machine"]["loadavg_end"] = os.getloadavg()
                args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
