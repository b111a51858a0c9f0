"""Overhead of circuits' hooks and interventions, as ratios to plain ``StableDiffusionPipeline`` sampling.

Issue 2, item 9. One process, one model folder, one seed; every variant samples the same prompts
with the same schedule, and the variants are *interleaved* (each round runs every variant once, in a
rotated order) so slow drift of a shared machine hits them all alike. Reported per variant: median
wall time, spread, the ratio of medians to the baseline and the median of per-round ratios (paired,
more robust to drift). Then peak memory of full vs reduced FFN capture, each in a fresh subprocess.

Variants (goal in brackets):

- ``diffusers``          plain ``StableDiffusionPipeline.from_pretrained(folder)`` -- the baseline
- ``circuits_none``      ``circuits.sample(graph=None)`` (no ``intervene`` context at all)
- ``circuits_empty``     ``circuits.sample(graph=Graph())``                      [<= 1.02x]
- ``zero_eot``           ``ZeroTokens(every cross-attention, tokens="eot_all")`` [<= 1.05x]
- ``capture_ffn_mean``   ``Capture(every ff.hidden, mean_over=("batch","positions"))``: one mean
                         vector per site and step                                [<= 1.10x]
- ``capture_ffn_full``   the same capture unreduced (``[steps, batch, positions, channels]``)
- ``nnsight_ffn_mean``   the per-step means through nnsight: ``NNsight(unet)`` traced over
                         ``circuits.sample`` (``fn=``), ``tracer.iter`` over steps, reading each
                         ``ff.hidden`` hook point (a separately loaded copy of the model)
- ``nnsight_diffusers``  the same through nnsight alone: ``NNsight(pipe.unet)`` of a plain pipeline,
                         traced over ``pipe(...)``, reading each ``ff.net[2].input``

Per UNet call (adjacent pairs against the plain pipeline's UNet): the graphs above, and
``nnsight_wrapped_idle`` (circuits' UNet after ``NNsight(unet)``, called outside any trace).

Run (the numbers in docs/performance.md come from this)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_hooks.py --json benchmarks/results.json

``--model pocket|pocket-arch|tiny`` (default: pocket when installed, else tiny). ``pocket-arch`` builds
the pocket architecture (configs from ``circuits.pocket.train``) with untrained weights in a temporary
folder -- timing depends on the architecture only; ``tiny`` is ``circuits.build_tiny_pipeline``.
``--folder PATH`` benchmarks any diffusers SD folder.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

PROMPTS = [  # single tokens in both the tiny and the pocket vocabularies
    "a red circle",
    "a blue square on a white background",
    "a yellow dotted cross",
    "a purple outlined circle on a black background",
]
GOALS = {"circuits_empty": 1.02, "zero_eot": 1.05, "capture_ffn_mean": 1.10}


# --------------------------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------------------------
def resolve_folder(args: argparse.Namespace) -> tuple[str, Path, Any]:
    """(model label, pipeline folder, tempdir keeper)."""
    from circuits.models.loading import POCKET_DIR

    if args.folder:
        return f"folder {Path(args.folder).name}", Path(args.folder), None
    model = args.model
    if model is None:
        model = "pocket" if (POCKET_DIR / "model_index.json").is_file() else "tiny"
    if model == "pocket":
        if not (POCKET_DIR / "model_index.json").is_file():
            sys.exit(f"--model pocket: not installed at {POCKET_DIR}; use --model pocket-arch or tiny")
        return "pocket", POCKET_DIR, None
    keeper = tempfile.TemporaryDirectory(prefix=f"bench_{model}_")
    folder = Path(keeper.name) / model
    if model == "pocket-arch":
        build_pocket_arch(folder)
    else:
        import circuits

        circuits.build_tiny_pipeline(folder)
    return model, folder, keeper


def build_pocket_arch(folder: Path) -> None:
    """The pocket model's architecture, tokenizer and float16 export, with untrained (seeded) weights:
    speed depends on the architecture, not on what the weights learned."""
    from diffusers import StableDiffusionPipeline

    from circuits.pocket import tokenizer as pocket_tokenizer
    from circuits.pocket import train

    tok_dir = folder.parent / "pocket_tokenizer"
    tokenizer = pocket_tokenizer.build(tok_dir)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        pipe = StableDiffusionPipeline(
            vae=train.make_vae(), text_encoder=train.make_text_encoder(tokenizer), tokenizer=tokenizer,
            unet=train.make_unet(), scheduler=train.make_ddim(), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
    finally:
        torch.random.set_rng_state(state)
    pipe.to(torch.float16)  # as circuits.pocket.train.export ships it
    pipe.save_pretrained(folder, safe_serialization=True)
    pocket_tokenizer.fix_saved_tokenizer(tok_dir, folder / "tokenizer")


def load_pipeline(folder: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(  # float32, as circuits.load (pocket ships float16)
        folder, dtype=torch.float32, local_files_only=True, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def execution_order(model, sites: list[str], prompts: list[str], size: int) -> list[str]:
    """``sites`` sorted by when they run in a UNet call (nnsight wants reads in execution order)."""
    import circuits

    order: list[str] = []
    handles = [
        model.sites.module(s).register_forward_hook(lambda m, a, o, s=s: order.append(s) if s not in order else None)
        for s in sites
    ]
    try:
        circuits.sample(model, prompts[:1], steps=1, progress=False, height=size, width=size)
    finally:
        for h in handles:
            h.remove()
    return order


def envoy_of(root, path: str):
    """``a.0.b`` -> ``root.a[0].b``."""
    envoy = root
    for part in path.split("."):
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


def build_variants(args, folder: Path) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    import circuits

    prompts, steps, seed = PROMPTS[: args.batch], args.steps, args.seed
    model = circuits.load(folder)
    size = model.default_size
    pipe = load_pipeline(folder)
    ffn = model.sites.ffn_hidden()
    cross = model.sites.cross_attention()
    info = {
        "unet_params_M": round(sum(p.numel() for p in model.unet.parameters()) / 1e6, 2),
        "image_size": size,
        "ffn_sites": len(ffn),
        "cross_attention_sites": len(cross),
    }

    def run_diffusers():
        return pipe(
            prompts, num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
            generator=torch.Generator("cpu").manual_seed(seed), output_type="pil",
        ).images

    def sampler(graph, on=model):
        return lambda: circuits.sample(on, prompts, seed=seed, steps=steps, graph=graph, progress=False)

    variants: dict[str, Callable[[], Any]] = {
        "diffusers": run_diffusers,
        "circuits_none": sampler(None),
        "circuits_empty": sampler(circuits.Graph()),
        "zero_eot": sampler(circuits.Graph([circuits.ZeroTokens(s, tokens="eot_all") for s in cross])),
        "capture_ffn_mean": sampler(
            circuits.Graph([circuits.Capture(s, mean_over=("batch", "positions")) for s in ffn])
        ),
        "capture_ffn_full": sampler(circuits.Graph([circuits.Capture(s) for s in ffn])),
    }

    if not args.no_nnsight:
        import nnsight
        from nnsight import NNsight

        # nnsight installs a controller forward on every module it wraps, for good: wrap copies.
        nn_model = circuits.load(folder)
        ordered = [s.removeprefix("unet.") for s in execution_order(nn_model, ffn, prompts, size)]
        nn_unet = NNsight(nn_model.unet)

        def circuits_run(batch):
            return circuits.sample(nn_model, batch, seed=seed, steps=steps, progress=False)

        def run_nnsight_circuits():
            with torch.no_grad(), nn_unet.trace(prompts, fn=circuits_run) as tracer:
                means = {s: [] for s in ordered}
                for _ in tracer.iter[:steps]:
                    for s in ordered:
                        means[s].append(envoy_of(nn_unet, s).output.mean(dim=(0, 1)))
                means = nnsight.save(means)
            return means

        nn_pipe = load_pipeline(folder)
        plain_unet = NNsight(nn_pipe.unet)
        net2 = [s.removesuffix(".hidden") + ".net.2" for s in ordered]

        def pipe_run(batch):
            return nn_pipe(
                batch, num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="pil",
            )

        def run_nnsight_diffusers():
            with torch.no_grad(), plain_unet.trace(prompts, fn=pipe_run) as tracer:
                means = {s: [] for s in net2}
                for _ in tracer.iter[:steps]:
                    for s in net2:
                        means[s].append(envoy_of(plain_unet, s).input.mean(dim=(0, 1)))
                means = nnsight.save(means)
            return means

        variants["nnsight_ffn_mean"] = run_nnsight_circuits
        variants["nnsight_diffusers"] = run_nnsight_diffusers

    # sanity: same images as the baseline, and the captures agree
    check = {}
    import numpy as np

    base = run_diffusers()
    mine = circuits.sample(model, prompts, seed=seed, steps=steps, progress=False).images
    same = [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(base, mine)]
    check["circuits_images_equal_diffusers"] = all(same)
    cap = circuits.sample(
        model, prompts, seed=seed, steps=steps, progress=False,
        graph=[circuits.Capture(s, mean_over=("batch", "positions")) for s in ffn],
    ).captures
    if not args.no_nnsight:
        means = run_nnsight_circuits()
        worst = max(
            (torch.stack(means[s.removeprefix("unet.")]) - cap[s]).abs().max().item() for s in ffn
        )
        check["nnsight_vs_circuits_ffn_mean_maxabs"] = worst
        plain = run_nnsight_diffusers()
        worst = max(
            (torch.stack(plain[s.removeprefix("unet.").removesuffix(".hidden") + ".net.2"]) - cap[s]).abs().max().item()
            for s in ffn
        )
        check["nnsight_diffusers_vs_circuits_ffn_mean_maxabs"] = worst
    check["capture_ffn_mean_shape"] = list(cap[ffn[0]].shape)
    return variants, {**info, "checks": check}


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
def time_variants(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process CPU seconds per run, ``repeats`` interleaved rounds."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: no variant always goes first
        for name in order:
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            variants[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
        print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n}={wall[n][-1]:.3f}s" for n in names), flush=True)
    return wall, cpu


def _median_ci(values: list[float], level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """Bootstrap confidence interval of the median (seeded, so reruns print the same interval)."""
    import random

    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def summarise(times: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    base, base_cpu = times["diffusers"], cpu["diffusers"]
    out = {}
    for name, ts in times.items():
        paired = [t / b for t, b in zip(ts, base)]
        q1, q3 = _quartiles(ts)
        p1, p3 = _quartiles(paired)
        out[name] = {
            "median_s": statistics.median(ts),
            "q1_s": q1,
            "q3_s": q3,
            "min_s": min(ts),
            "ratio_of_medians": statistics.median(ts) / statistics.median(base),
            "median_paired_ratio": statistics.median(paired),
            "paired_ratio_q1": p1,
            "paired_ratio_q3": p3,
            "paired_ratio_ci95": _median_ci(paired),
            "ratio_of_mins": min(ts) / min(base),
            "cpu_median_s": statistics.median(cpu[name]),
            "cpu_ratio_of_medians": statistics.median(cpu[name]) / statistics.median(base_cpu),
        }
    return out


# --------------------------------------------------------------------------------------------
# per-UNet-call microbenchmark: adjacent calls pair up, so slow drift cancels
# --------------------------------------------------------------------------------------------
def unet_call_bench(args: argparse.Namespace, folder: Path) -> dict[str, dict[str, float]]:
    """One UNet call (CFG batch, mid-schedule timestep) of the plain pipeline's UNet vs circuits' UNet
    under each graph, alternating call by call (ABBA), ``args.unet_pairs`` pairs per graph."""
    import circuits
    from circuits.sampling.sampler import encode_prompts, make_scheduler

    model = circuits.load(folder)
    pipe = load_pipeline(folder)
    prompts = PROMPTS[: args.batch]
    n = len(prompts)
    cond = encode_prompts(model, prompts, "cond")
    uncond = encode_prompts(model, [""] * n, "uncond")
    embeds = torch.cat([uncond, cond])
    scheduler = make_scheduler(model)
    scheduler.set_timesteps(args.steps)
    step = args.steps // 2
    t = scheduler.timesteps[step]
    side = model.default_size // model.vae_scale_factor
    x = torch.randn(2 * n, model.unet.config.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    ctx = dict(
        phase="unet", prompts=[""] * n + prompts, branch_rows={"uncond": range(n), "cond": range(n, 2 * n)},
        step=step, timestep=float(t), num_steps=args.steps,
    )
    ffn, cross = model.sites.ffn_hidden(), model.sites.cross_attention()
    graphs = {
        "circuits_empty": circuits.Graph(),
        "zero_eot": circuits.Graph([circuits.ZeroTokens(s, tokens="eot_all") for s in cross]),
        "capture_ffn_mean": circuits.Graph(
            [circuits.Capture(s, mean_over=("batch", "positions"), over_steps="mean") for s in ffn]
        ),
        # running mean over calls instead of a stack, so memory stays flat over many calls
        "capture_ffn_full": circuits.Graph([circuits.Capture(s, over_steps="mean") for s in ffn]),
    }

    units = {name: model.unet for name in graphs}
    if not args.no_nnsight:
        from nnsight import NNsight

        # an nnsight-wrapped copy, called outside any trace: what wrapping costs when idle
        wrapped = circuits.load(folder)
        NNsight(wrapped.unet)
        graphs["nnsight_wrapped_idle"] = circuits.Graph()
        units["nnsight_wrapped_idle"] = wrapped.unet

    def plain():
        return pipe.unet(x, t, encoder_hidden_states=embeds, return_dict=False)[0]

    out: dict[str, dict[str, float]] = {}
    for name, graph in graphs.items():
        unet = units[name]
        owner = model if unet is model.unet else wrapped

        def hooked(unet=unet):
            return unet(x, t, encoder_hidden_states=embeds, return_dict=False)[0]

        with torch.no_grad(), circuits.intervene(owner, graph), circuits.step_context(**ctx):
            for _ in range(3):
                plain(), hooked()
            ratios, t_plain, t_hooked = [], [], []
            for i in range(args.unet_pairs):
                pair = {}
                for label, fn in (("p", plain), ("h", hooked)) if i % 2 == 0 else (("h", hooked), ("p", plain)):
                    start = time.perf_counter()
                    fn()
                    pair[label] = time.perf_counter() - start
                t_plain.append(pair["p"])
                t_hooked.append(pair["h"])
                ratios.append(pair["h"] / pair["p"])
        q1, q3 = _quartiles(ratios)
        out[name] = {
            "median_paired_ratio": statistics.median(ratios),
            "paired_ratio_q1": q1,
            "paired_ratio_q3": q3,
            "paired_ratio_ci95": _median_ci(ratios),
            "ratios": ratios,
            "ratio_of_medians": statistics.median(t_hooked) / statistics.median(t_plain),
            "plain_median_ms": 1e3 * statistics.median(t_plain),
            "hooked_median_ms": 1e3 * statistics.median(t_hooked),
            "extra_ms_per_call": 1e3 * (statistics.median(t_hooked) - statistics.median(t_plain)),
            "pairs": len(ratios),
        }
        print(f"  unet call {name}: paired ratio {out[name]['median_paired_ratio']:.3f}", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# memory (one fresh subprocess per mode: peak RSS only ever grows)
# --------------------------------------------------------------------------------------------
def _peak_rss_kib() -> int:
    """Peak resident set size of this process (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_child(args: argparse.Namespace) -> None:
    import circuits

    torch.set_num_threads(1)
    model = circuits.load(args.folder)
    prompts = PROMPTS[: args.batch]
    ffn = model.sites.ffn_hidden()
    graph = {
        "empty": circuits.Graph(),
        "reduced": circuits.Graph([circuits.Capture(s, mean_over=("batch", "positions")) for s in ffn]),
        "full": circuits.Graph([circuits.Capture(s) for s in ffn]),
    }[args.memory_child]
    circuits.sample(model, prompts, seed=args.seed, steps=args.steps, progress=False)  # warm the allocator
    gc.collect()
    reset = _reset_peak_rss()
    before = _rss_kib()
    result = circuits.sample(model, prompts, seed=args.seed, steps=args.steps, graph=graph, progress=False)
    peak = _peak_rss_kib()
    held = sum(t.numel() * t.element_size() for t in (result.captures[k] for k in result.captures))
    print(json.dumps({"mode": args.memory_child, "rss_before_kib": before, "peak_rss_kib": peak,
                      "peak_reset": reset, "captures_bytes": held}))


def measure_memory(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Each mode ``args.memory_repeats`` times, each in a fresh process; glibc's allocator makes single
    peak-RSS readings jump by tens of MiB, so the median and the range are reported."""
    out = {}
    for mode in ("empty", "reduced", "full"):
        runs = []
        for _ in range(args.memory_repeats):
            cmd = [sys.executable, __file__, "--_memory-child", mode, "--folder", str(folder),
                   "--batch", str(args.batch), "--steps", str(args.steps), "--seed", str(args.seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                raise RuntimeError(f"memory child {mode} failed:\n{proc.stderr[-3000:]}")
            line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
            data = json.loads(line)
            data["peak_growth_kib"] = data["peak_rss_kib"] - data["rss_before_kib"]
            runs.append(data)
        growth = [r["peak_growth_kib"] for r in runs]
        out[mode] = {
            "captures_bytes": runs[0]["captures_bytes"],
            "peak_growth_kib": statistics.median(growth),
            "peak_growth_kib_min": min(growth),
            "peak_growth_kib_max": max(growth),
            "peak_rss_kib": statistics.median(r["peak_rss_kib"] for r in runs),
            "runs": runs,
        }
    return out


# --------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:  # which circuits was measured
        root = Path(__file__).resolve().parent.parent
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no", "circuits"]
        info["circuits_dirty"] = bool(subprocess.run(status, cwd=root, capture_output=True, text=True).stdout)
    except (OSError, subprocess.CalledProcessError):
        pass
    for pkg in ("diffusers", "transformers", "nnsight"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001
            info[pkg] = None
    return info


def print_table(summary: dict[str, dict[str, float]]) -> None:
    print(
        f"\n{'variant':20s} {'median s':>9s} {'IQR s':>13s} {'ratio':>6s} {'paired':>6s} {'paired IQR':>11s} "
        f"{'min':>6s} {'cpu':>6s}  goal (on ratio)"
    )
    for name, s in summary.items():
        goal = GOALS.get(name)
        verdict = ""
        if goal:
            verdict = f"<= {goal:.2f}x " + ("met" if s["ratio_of_medians"] <= goal else "MISSED")
        print(
            f"{name:20s} {s['median_s']:9.3f} {s['q1_s']:6.3f}-{s['q3_s']:<6.3f} {s['ratio_of_medians']:6.3f} "
            f"{s['median_paired_ratio']:6.3f} {s['paired_ratio_q1']:5.3f}-{s['paired_ratio_q3']:<5.3f} "
            f"{s['ratio_of_mins']:6.3f} {s['cpu_ratio_of_medians']:6.3f}  {verdict}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("pocket", "pocket-arch", "tiny"), default=None,
                        help="pocket (default when installed); pocket-arch: its architecture with untrained weights; "
                        "tiny: a tiny random pipeline (default otherwise)")
    parser.add_argument("--folder", help="benchmark this diffusers SD folder instead")
    parser.add_argument("--batch", type=int, default=4, choices=range(1, len(PROMPTS) + 1), metavar="N")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (each runs every variant once)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-nnsight", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per memory mode")
    parser.add_argument("--unet-pairs", type=int, default=200,
                        help="pairs of single UNet calls per graph in the per-call benchmark (0: skip it)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    if args.memory_child:
        memory_child(args)
        return

    command = "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else argv)
    )
    info_machine = machine()  # before the run: the commit whose code is imported below
    label, folder, keeper = resolve_folder(args)
    print(f"command: {command}\nmodel: {label} ({folder})", flush=True)
    variants, info = build_variants(args, folder)
    print(f"model info: {info}", flush=True)
    times, cpu_times = time_variants(variants, args.repeats, args.warmup)
    summary = summarise(times, cpu_times)
    per_call = unet_call_bench(args, folder) if args.unet_pairs else None
    memory = None if args.no_memory else measure_memory(args, folder)
    info_machine["loadavg_end"] = os.getloadavg()

    print(f"\ncommand: {command}")
    print(f"model: {label}, {info['unet_params_M']}M UNet params, {info['image_size']}px, batch {args.batch} "
          f"(x2 with CFG), {args.steps} steps, {args.repeats} interleaved rounds")
    print_table(summary)
    print(
        "ratio = median / median(diffusers); paired = median over rounds of (variant / diffusers that round); "
        "min = best / best; cpu = ratio of median process CPU time"
    )
    print(f"checks: {info['checks']}")
    if per_call:
        print(f"\nper UNet call ({args.unet_pairs} adjacent pairs; plain pipeline UNet vs circuits UNet + graph):")
        print(f"{'graph':20s} {'paired':>7s} {'paired IQR':>13s} {'plain ms':>9s} {'extra ms':>9s}  goal (on paired)")
        for name, c in per_call.items():
            goal = GOALS.get(name)
            verdict = f"<= {goal:.2f}x " + ("met" if c["median_paired_ratio"] <= goal else "MISSED") if goal else ""
            print(
                f"{name:20s} {c['median_paired_ratio']:7.3f} {c['paired_ratio_q1']:6.3f}-{c['paired_ratio_q3']:<6.3f} "
                f"{c['plain_median_ms']:9.2f} {c['extra_ms_per_call']:9.2f}  {verdict}"
            )
    if memory:
        print("\npeak memory (fresh process each; peak RSS during the run minus RSS before it, after a warm-up run):")
        for mode, m in memory.items():
            print(
                f"  {mode:8s} peak growth {m['peak_growth_kib'] / 1024:8.2f} MiB "
                f"({m['peak_growth_kib_min'] / 1024:.1f}-{m['peak_growth_kib_max'] / 1024:.1f}), captures held "
                f"{m['captures_bytes'] / 2**20:9.3f} MiB, peak RSS {m['peak_rss_kib'] / 1024:.1f} MiB"
            )
    print(f"machine: {info_machine}")

    if args.json:
        payload = {
            "command": command, "model": label, "folder": str(folder) if keeper is None else f"<tmp {label}>",
            "prompts": PROMPTS[: args.batch], "steps": args.steps, "seed": args.seed, "repeats": args.repeats,
            "model_info": info, "goals": GOALS, "summary": summary, "times_s": times, "cpu_times_s": cpu_times,
            "per_unet_call": per_call, "memory": memory,
            "machine": info_machine,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    if keeper is not None:
        keeper.cleanup()


if __name__ == "__main__":
    main()
