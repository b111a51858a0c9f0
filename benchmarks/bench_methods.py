"""Speed of the closed-form erasure methods: fit time at SD1.5 size, and sampling under a fitted edit.

Issue 7 ("Speed"). Two parts:

1. **Fit time** of ``uce.fit``, ``trce.fit`` (stage 1) and ``erasepro.fit`` (their default configs) on a
   randomly initialised model with SD1.5's shapes: a CLIP text encoder (hidden 768, 12 layers, 12 heads,
   MLP 3072, quick_gelu, 77 positions, 49,408 tokens) and a ``UNet2DConditionModel`` with SD1.5's
   config (16 cross-attention layers, ``to_k`` / ``to_v`` of 320-1280 x 768), built in memory with
   ``torch.manual_seed``; a small VAE (fitting never uses it). The tokenizer is SD1.x's CLIP BPE,
   rebuilt offline from the merges file in the ``clip-anytorch`` wheel
   (``/work/shared/notes/sd-tokenizer-offline.md``) and cached in ``~/.cache/circuits/sd-tokenizer``;
   when that wheel cannot be fetched, a small word-list tokenizer padded to 77 positions is used and the
   output says so. The concept has 5 templates x 4 words = 20 target prompts. Each method's ``fit`` is
   timed end to end (``time.perf_counter``; everything the call does, the trace included): one warm-up,
   then the median of ``--repeats`` runs, with ``torch.set_num_threads(--threads)``.
   Goals: UCE < 2 s, TRCE stage 1 < 2 s, ErasePro < 10 s. A method that misses its goal is profiled once
   (cProfile) and the biggest entries are printed.
2. **Sampling under an erasure** costs what plain sampling costs (the weights are swapped once per
   context, not per UNet call): ``circuits.sample(pocket, 16 prompts, steps=25)`` plain vs with
   ``graph=uce.fit(pocket, circuits.pocket.concept("red"))``, and with an empty ``circuits.Graph()`` (the
   ``intervene`` context alone), in interleaved rounds (order rotated each round), one thread; the median
   paired ratio erasure / plain with a seeded bootstrap 95% interval. Goal: <= 1.02x.

Run (the numbers in docs/performance.md come from this)::

    HF_HUB_OFFLINE=1 python benchmarks/bench_methods.py --threads 2 1 --rounds 15 --json benchmarks/results_methods.json

``--threads 2 1`` times the fits at each thread count (on a busy shared machine two threads can be far
slower than one: every LAPACK call waits for the other core); ``--device cuda`` fits on a GPU;
``--methods`` picks methods. A method that raises is reported as FAILED and the run goes on.
``--quick``: a smoke run in well under a minute (the tiny random pipeline instead of SD1.5 size, one
thread, one timed fit, 4 prompts x 5 steps x 2 rounds on pocket); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime
import gc
import gzip
import io
import json
import os
import pstats
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

GOALS_S = {"UCE": 2.0, "TRCE stage 1": 2.0, "ErasePro": 10.0}
SAMPLING_GOAL = 1.02
TOKENIZER_CACHE = Path.home() / ".cache" / "circuits" / "sd-tokenizer"
CLIP_WHEEL = "clip-anytorch==2.6.0"
SD_VOCAB_SIZE = 49408
SD_POSITIONS = 77

# 5 templates x 4 words = 20 target prompts (and 20 anchor prompts, the word removed)
SD_CONCEPT = dict(
    target="cat",
    synonyms=["kitten", "kitty", "tabby"],
    anchor="",
    templates=[
        "a photo of a {}",
        "a painting of a {} sleeping in a garden",
        "a {} sitting on a sofa next to a window",
        "a close-up portrait of a {}, trending on artstation",
        "an oil painting of a {} playing with a ball of yarn, highly detailed",
    ],
)
# the same shape of concept in the tiny pipeline's vocabulary (--quick)
TINY_CONCEPT = dict(
    target="red",
    synonyms=["crimson", "orange", "purple"],
    anchor="",
    templates=[
        "a {} circle",
        "a photo of a {} square",
        "a {} cat on a white background",
        "a painting of a {} dog",
        "a striped {} triangle on a black background",
    ],
)


# --------------------------------------------------------------------------------------------
# SD1.x tokenizer, offline
# --------------------------------------------------------------------------------------------
def _write_sd_tokenizer_files(bpe_gz: bytes, folder: Path) -> None:
    """vocab.json + merges.txt of SD1.x's tokenizer from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``."""
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]  # as CLIP's SimpleTokenizer
    from circuits.pocket.tokenizer import bytes_to_unicode  # the same table CLIP and pocket use

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != SD_VOCAB_SIZE:
        raise RuntimeError(f"rebuilt vocabulary has {len(vocab)} tokens, expected {SD_VOCAB_SIZE}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )


def sd_tokenizer(cache: Path = TOKENIZER_CACHE, force_fallback: bool = False) -> tuple[Any, str]:
    """(tokenizer, description): SD1.x's CLIP tokenizer, or the word-list fallback padded to 77."""
    from transformers import CLIPTokenizer

    problem = "--fallback-tokenizer given"
    if not force_fallback:
        try:
            if not ((cache / "vocab.json").is_file() and (cache / "merges.txt").is_file()):
                with tempfile.TemporaryDirectory(prefix="clip_wheel_") as tmp:
                    cmd = [sys.executable, "-m", "pip", "download", CLIP_WHEEL, "--no-deps", "-q", "-d", tmp]
                    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
                    wheel = next(Path(tmp).glob("*.whl"))
                    with zipfile.ZipFile(wheel) as archive:
                        _write_sd_tokenizer_files(archive.read("clip/bpe_simple_vocab_16e6.txt.gz"), cache)
            tokenizer = CLIPTokenizer(str(cache / "vocab.json"), str(cache / "merges.txt"), model_max_length=77)
            ids = tokenizer("a photo of a cat").input_ids
            if ids != [49406, 320, 1125, 539, 320, 2368, 49407]:
                raise RuntimeError(f"check failed: 'a photo of a cat' -> {ids}")
            return tokenizer, f"SD1.x CLIP BPE (49,408 tokens, rebuilt offline from {CLIP_WHEEL}; cache {cache})"
        except (OSError, RuntimeError, StopIteration, KeyError, subprocess.SubprocessError) as error:
            problem = f"{type(error).__name__}: {str(error).strip()[-300:]}"
    from circuits.models.tiny_tokenizer import write_clip_tokenizer

    words = sorted({w.strip(",").lower() for t in SD_CONCEPT["templates"] for w in t.replace("{}", " ").split()}
                   | {SD_CONCEPT["target"], *SD_CONCEPT["synonyms"]})
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_clip_tokenizer(Path(tmp) / "tok", words, model_max_length=SD_POSITIONS)
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    return tokenizer, f"FALLBACK word-list tokenizer ({len(tokenizer)} tokens) padded to 77 positions ({problem})"


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )


def build_sd15(seed: int, cache: Path = TOKENIZER_CACHE, force_fallback: bool = False) -> tuple[Any, dict[str, Any]]:
    """A circuits model with SD1.5's text encoder and UNet shapes, random weights (in memory)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    import circuits

    tokenizer, tokenizer_kind = sd_tokenizer(cache, force_fallback=force_fallback)
    start = time.perf_counter()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=SD_VOCAB_SIZE, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=SD_POSITIONS, hidden_act="quick_gelu",
            projection_dim=768, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )).eval()
        unet = UNet2DConditionModel(  # SD1.5's unet/config.json
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
        ).eval()
        vae = AutoencoderKL(  # small: fitting never runs it
            in_channels=3, out_channels=3, block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4, norm_num_groups=8,
        ).eval()
    finally:
        torch.random.set_rng_state(state)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_ddim(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    model = circuits.load(pipe)
    return model, {"tokenizer": tokenizer_kind, "build_s": time.perf_counter() - start}


def build_tiny(seed: int) -> tuple[Any, dict[str, Any]]:
    import circuits

    start = time.perf_counter()
    model = circuits.load(circuits.build_tiny_pipeline(seed=seed))
    return model, {"tokenizer": "tiny word-list tokenizer (16 positions)", "build_s": time.perf_counter() - start}


def describe(model) -> dict[str, Any]:
    cross = model.sites.cross_attention()
    shapes = sorted({tuple(model.parameter(f"{s}.to_k.weight").shape) for s in cross})
    return {
        "unet_params_M": round(sum(p.numel() for p in model.unet.parameters()) / 1e6, 1),
        "text_encoder_params_M": round(sum(p.numel() for p in model.text_encoder.parameters()) / 1e6, 1),
        "text_layers": len(model.sites.text_layers()),
        "cross_attention_layers": len(cross),
        "to_k_shapes": [list(s) for s in shapes],
        "positions": model.tokenizer.model_max_length,
    }


# --------------------------------------------------------------------------------------------
# part 1: fit time
# --------------------------------------------------------------------------------------------
def method_fits() -> dict[str, Callable[[Any, Any], Any]]:
    from circuits.methods import erasepro, trce, uce

    # trce.fit runs both stages since ba2fa9d; stage 1 alone is stages=("text",)
    stage1 = {"stages": ("text",)} if "stages" in {f.name for f in dataclasses.fields(trce.Config)} else {}
    return {
        "UCE": lambda m, c: uce.fit(m, c),
        "TRCE stage 1": lambda m, c: trce.fit(m, c, **stage1),
        "ErasePro": lambda m, c: erasepro.fit(m, c),
        # not the default: what UCE costs when the encoder may stop after the word (no goal; --methods "UCE keyword")
        "UCE keyword": lambda m, c: uce.fit(m, c, positions="keyword"),
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fits(
    model, concept, repeats: int, warmup: int, slow_factor: float, device: str = "cpu",
    methods: list[str] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per method: ``repeats`` wall times of ``fit`` after ``warmup`` untimed calls (methods in turn).

    A method whose warm-up already took ``slow_factor`` times its goal gets one timed run instead of
    ``repeats``, under cProfile (kernel-bound, so the profiler costs little): more runs would not change
    the verdict. A method that raises is recorded with its error and skipped. Returns the timings and
    those profiles.
    """
    fits = {name: fit for name, fit in method_fits().items() if name in (GOALS_S if methods is None else methods)}
    out: dict[str, dict[str, Any]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    for name, fit in fits.items():
        try:
            out[name] = _time_fit(fit, model, concept, repeats, warmup, slow_factor, device, GOALS_S.get(name))
        except Exception as error:  # noqa: BLE001 -- a broken method must not hide the others' numbers
            out[name] = {"error": f"{type(error).__name__}: {error}", "goal_s": GOALS_S.get(name), "met": None}
            print(f"  {name:14s} fit FAILED: {out[name]['error']}", flush=True)
            continue
        profile = out[name].pop("profile", None)
        if profile:
            profiles[name] = profile
        r = out[name]
        note = ""
        if r["repeats_cut"]:
            note = f" (warm-up {min(r['warmup_s']):.1f} s > {slow_factor:g}x goal: one profiled run)"
        print(f"  {name:14s} fit: {', '.join(f'{t:.2f}' for t in r['times_s'])} s -> median {r['median_s']:.2f} s"
              f"{note}", flush=True)
    return out, profiles


def _time_fit(fit, model, concept, repeats, warmup, slow_factor, device, goal) -> dict[str, Any]:
    warm = []
    for _ in range(warmup):
        start = time.perf_counter()
        fit(model, concept)
        _sync(device)
        warm.append(time.perf_counter() - start)
    slow = bool(warm) and goal is not None and min(warm) > slow_factor * goal
    walls, cpus, inner, profile = [], [], [], None
    for _ in range(1 if slow else repeats):
        gc.collect()
        profiler = cProfile.Profile() if slow else None
        start, start_cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        erasure = fit(model, concept)
        _sync(device)
        if profiler:
            profiler.disable()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
        inner.append(erasure.seconds)
        if profiler:
            profile = summarise_profile(profiler, walls[-1])
    rows = erasure.trace
    median = statistics.median(walls)
    return {
        "median_s": median,
        "times_s": walls,
        "warmup_s": warm,
        "cpu_times_s": cpus,
        "erasure_seconds": inner,  # the method's own timer (ErasePro's excludes its trace)
        "goal_s": goal,
        "met": None if goal is None else median < goal,
        "repeats_cut": slow,
        "edits": len(erasure.graph),
        "columns": sorted({r.get("columns") for r in rows if r.get("columns") is not None}),
        "solvers": sorted({r.get("solver") for r in rows if r.get("solver")}),
        "profile": profile,
    }


def time_text_encoding(model, concept, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Median seconds of the text-encoder passes a fit needs: as the methods run them, and the alternatives.

    ``every_prompt``: all target and anchor prompts, padded (what every method did before 4ccd0ac);
    ``distinct``: ``common.text_embeddings`` on the target batch and on the anchor batch at full length
    (since 4ccd0ac each distinct prompt once: an empty anchor makes 20 anchor prompts 5): what UCE
    ("keyword+eot") and ErasePro ("all") read; ``unique_to_first_eot``: each distinct prompt once, the
    sequence cut after the longest prompt's first [EoT] (exact up to there: CLIP's text attention is
    causal): what positions "eot"/"keyword" need (TRCE stage 1 since 008e3c2).
    ``max_abs_diff_first_eot`` checks that the cut gives the same first-[EoT] embeddings.
    """
    from circuits.methods.common import text_embeddings
    from circuits.sampling.sampler import encode_prompts
    from circuits.tokens import layout

    pairs = concept.pairs()
    targets, anchors = [p.target for p in pairs], [p.anchor for p in pairs]
    unique = list(dict.fromkeys(targets + anchors))
    lays = [layout(model.tokenizer, p) for p in unique]
    cut = max(lay.first_eot for lay in lays) + 1
    ids = torch.tensor([lay.input_ids[:cut] for lay in lays], device=model.device)

    def truncated():
        with torch.no_grad():
            return model.text_encoder(ids)[0]

    def every_prompt():
        with torch.no_grad():
            return encode_prompts(model, targets, "cond"), encode_prompts(model, anchors, "cond")

    variants = {
        "every_prompt": every_prompt,
        "distinct": lambda: (text_embeddings(model, targets), text_embeddings(model, anchors)),
        "unique_to_first_eot": truncated,
    }
    out: dict[str, Any] = {}
    for name, fn in variants.items():
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times[1:])
    with torch.no_grad():
        full = encode_prompts(model, unique, "cond")
    short = truncated()
    rows = torch.arange(len(lays))
    first = torch.tensor([lay.first_eot for lay in lays])
    out["max_abs_diff_first_eot"] = float((full[rows, first] - short[rows, first]).abs().max())
    out["prompts"] = {
        "every_prompt": len(targets) + len(anchors), "unique": len(unique), "tokens_cut": cut,
        "positions": model.tokenizer.model_max_length,
    }
    return out


def swap_cost(model, concept, repeats: int = 5) -> dict[str, Any]:
    """Seconds to enter and leave ``intervene(model, erasure)`` once (what sampling under it pays per call).

    The UCE erasure: one ``WeightEdit`` per cross-attention K/V (32 at SD1.5 size).
    """
    import circuits

    try:
        erasure = method_fits()["UCE"](model, concept)
    except Exception as error:  # noqa: BLE001
        return {"error": f"{type(error).__name__}: {error}"}
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with circuits.intervene(model, erasure):
            pass
        times.append(time.perf_counter() - start)
    return {"edits": len(erasure.graph), "median_s": statistics.median(times[1:]), "times_s": times[1:]}


def summarise_profile(profiler: cProfile.Profile, wall: float, top: int = 18) -> dict[str, Any]:
    """The biggest entries by own time, and circuits' functions by cumulative time."""
    stats = pstats.Stats(profiler, stream=io.StringIO())

    def label(key) -> str:
        file, line, func = key
        if file == "~":
            return func
        parts = Path(file).parts
        short = "/".join(parts[parts.index("circuits"):]) if "circuits" in parts else "/".join(parts[-2:])
        return f"{short}:{line}({func})"

    entries = [(label(k), v[1], v[2], v[3]) for k, v in stats.stats.items()]  # calls, tottime, cumtime
    own = sorted(entries, key=lambda e: -e[2])[:top]
    ours = sorted((e for e in entries if e[0].startswith("circuits/")), key=lambda e: -e[3])[:top]
    return {
        "wall_s": wall,
        "by_own_time": [{"function": f, "calls": n, "own_s": t, "cumulative_s": c} for f, n, t, c in own],
        "circuits_by_cumulative": [{"function": f, "calls": n, "own_s": t, "cumulative_s": c} for f, n, t, c in ours],
    }


def profile_fit(model, concept, name: str, device: str = "cpu") -> dict[str, Any]:
    """cProfile one ``fit``."""
    fit = method_fits()[name]
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    fit(model, concept)
    _sync(device)
    profiler.disable()
    return summarise_profile(profiler, time.perf_counter() - start)


def print_profile(name: str, prof: dict[str, Any]) -> None:
    print(f"\nprofile of one {name} fit ({prof['wall_s']:.2f} s under cProfile); biggest own times:")
    for e in prof["by_own_time"]:
        print(f"  {e['own_s']:8.3f} s own {e['cumulative_s']:8.3f} s cum {e['calls']:6d} calls  {e['function']}")
    print("circuits functions by cumulative time:")
    for e in prof["circuits_by_cumulative"]:
        print(f"  {e['cumulative_s']:8.3f} s cum {e['own_s']:8.3f} s own {e['calls']:6d} calls  {e['function']}")


# --------------------------------------------------------------------------------------------
# part 2: sampling under a fitted erasure
# --------------------------------------------------------------------------------------------
def pocket_prompts(n: int) -> list[str]:
    from circuits.pocket.world import all_scenes, prompt

    scenes = all_scenes()
    step = max(1, len(scenes) // n)
    return [prompt(s) for s in scenes[::step][:n]]


def median_ci(values: list[float], level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """Seeded bootstrap confidence interval of the median."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]


def sampling_bench(n_prompts: int, steps: int, rounds: int) -> dict[str, Any]:
    """``rounds`` interleaved rounds of plain sampling, sampling under an empty graph, and under the erasure.

    Each round runs the three in an order rotated by one per round. The headline is erasure / plain per
    round; erasure / empty isolates the weight edit from the ``intervene`` context itself.
    """
    import circuits
    from circuits.methods import uce

    model = circuits.load("pocket")
    prompts = pocket_prompts(n_prompts)
    start = time.perf_counter()
    erasure = uce.fit(model, circuits.pocket.concept("red"))
    fit_s = time.perf_counter() - start
    params = [edit.param for edit in erasure.graph]
    originals = {p: model.parameter(p).detach().clone() for p in params}
    variants = {
        "plain": lambda: circuits.sample(model, prompts, steps=steps, progress=False),
        "empty": lambda: circuits.sample(model, prompts, steps=steps, progress=False, graph=circuits.Graph()),
        "erasure": lambda: circuits.sample(model, prompts, steps=steps, progress=False, graph=erasure),
    }

    # checks: the edit changes the images, and the weights come back bitwise afterwards
    import numpy as np

    a, b = variants["plain"]().images[0], variants["erasure"]().images[0]
    changed = not np.array_equal(np.asarray(a), np.asarray(b))
    restored = all(torch.equal(model.parameter(p).detach(), w) for p, w in originals.items())

    # what the swap itself costs: entering and leaving the context once
    swaps = []
    for _ in range(20):
        begin = time.perf_counter()
        with circuits.intervene(model, erasure):
            pass
        swaps.append(time.perf_counter() - begin)

    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for name in names[i % 3:] + names[: i % 3]:
            gc.collect()
            begin = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - begin)
        print(f"  round {i + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in names)
              + f"; erasure/plain {times['erasure'][-1] / times['plain'][-1]:.3f}", flush=True)

    def paired(num: str, den: str) -> dict[str, Any]:
        ratios = [x / y for x, y in zip(times[num], times[den])]
        return {"ratios": ratios, "median": statistics.median(ratios), "ci95": median_ci(ratios)}

    headline = paired("erasure", "plain")
    return {
        "model": "pocket",
        "prompts": prompts,
        "steps": steps,
        "rounds": rounds,
        "erasure": f"uce.fit(pocket, concept('red')): {len(erasure.graph)} weight edits",
        "uce_fit_s": fit_s,
        "times_s": times,
        "median_paired_ratio": headline["median"],
        "paired_ratio_ci95": headline["ci95"],
        "ratios": headline["ratios"],
        "erasure_over_empty": paired("erasure", "empty"),
        "empty_over_plain": paired("empty", "plain"),
        "ratio_of_medians": statistics.median(times["erasure"]) / statistics.median(times["plain"]),
        "swap_enter_exit_ms_median": 1e3 * statistics.median(swaps),
        "goal": SAMPLING_GOAL,
        "met": headline["median"] <= SAMPLING_GOAL,
        "checks": {"images_changed": changed, "weights_restored_bitwise": restored},
    }


# --------------------------------------------------------------------------------------------
def _goal(seconds: float | None) -> str:
    return "-" if seconds is None else f"< {seconds:g} s"


def print_fit(fit: dict[str, Any]) -> None:
    info = fit["model_info"]
    for run in fit["runs"].values():
        print(f"\nfit time, {fit['model']} on {info['device']} ({info['tokenizer']}), {run['threads']} threads, "
              f"median of {fit['repeats']} after {fit['warmup']} warm-up:")
        print(f"{'method':14s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'goal':>7s}  verdict")
        for name, r in run["methods"].items():
            if "error" in r:
                print(f"{name:14s} {'-':>9s} {'-':>7s} {'-':>7s} {_goal(r['goal_s']):>7s}  "
                      f"FAILED: {r['error'][:200]}")
                continue
            verdict = "" if r["goal_s"] is None else ("met" if r["met"] else "MISSED")
            cut = f" (warm-up {min(r['warmup_s']):.1f} s; 1 profiled run)" if r["repeats_cut"] else ""
            print(f"{name:14s} {r['median_s']:9.2f} {min(r['times_s']):7.2f} {max(r['times_s']):7.2f} "
                  f"{_goal(r['goal_s']):>7s}  {verdict}{cut}")
        e = run["text_encoding_s"]
        n = e["prompts"]
        print(f"text encoding: every prompt ({n['every_prompt']} x {n['positions']} tokens) {e['every_prompt']:.2f} s; "
              f"distinct prompts ({n['unique']}) {e['distinct']:.2f} s; distinct prompts cut after the first "
              f"[EoT] ({n['tokens_cut']} tokens) {e['unique_to_first_eot']:.2f} s "
              f"(first-[EoT] max abs diff {e['max_abs_diff_first_eot']:.1e})")
        swap = run["swap_s"]
        if "error" not in swap:
            print(f"entering + leaving intervene(model, UCE erasure) ({swap['edits']} weight edits): "
                  f"{1e3 * swap['median_s']:.1f} ms")
        for name, prof in run["profiles"].items():
            print_profile(f"{name} ({run['threads']} threads)", prof)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch threads for the fit timings (default 2; --quick: 1); several: time each, the first "
                        "is the headline")
    parser.add_argument("--device", default="cpu", help="where the SD1.5-size model fits (cpu, cuda)")
    parser.add_argument("--methods", nargs="+", choices=tuple(method_fits()), default=None,
                        help="time only these methods (default: the three with goals)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per method (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed fits per method first")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed of the random SD1.5-size weights")
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved sampling rounds (plain, empty graph, erasure; order rotated)")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per sampling run")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps")
    parser.add_argument("--skip", choices=("fit", "sample"), action="append", default=[], help="skip a part")
    parser.add_argument("--slow-factor", type=float, default=5.0,
                        help="a method whose warm-up takes this many times its goal gets one (profiled) timed run")
    parser.add_argument("--no-profile", action="store_true", help="do not profile methods that miss their goal")
    parser.add_argument("--profile-all", action="store_true", help="profile every method, met or missed")
    parser.add_argument("--tokenizer-cache", type=Path, default=TOKENIZER_CACHE,
                        help="where SD's vocab.json + merges.txt are cached (built there when missing)")
    parser.add_argument("--fallback-tokenizer", action="store_true",
                        help="use the word-list tokenizer padded to 77 even if SD's can be built")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (< 1 min): tiny pipeline, 1 thread, 1 fit each, 4 prompts x 5 steps x 2 rounds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:  # one thread: on a busy machine two threads make every small op wait for the other core
        args.repeats, args.warmup, args.rounds, args.prompts, args.steps = 1, 0, 2, 4, 5
        args.threads = args.threads or [1]
    args.threads = args.threads or [2]

    command = "HF_HUB_OFFLINE=1 python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else argv)
    )
    from bench_hooks import machine  # one machine record for every benchmark (same folder)

    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"command: {command}\ncommit: {info.get('git_commit')} (circuits dirty: {info.get('circuits_dirty')}), "
          f"load average {info['loadavg_start']}", flush=True)
    payload: dict[str, Any] = {"command": command, "machine": info, "quick": args.quick}

    if "fit" not in args.skip:
        from circuits.methods import Concept

        if args.quick:
            model, built = build_tiny(args.seed)
            concept = Concept(**TINY_CONCEPT)
        else:
            model, built = build_sd15(args.seed, args.tokenizer_cache, args.fallback_tokenizer)
            concept = Concept(**SD_CONCEPT)
        if args.device != "cpu":
            model.to(args.device)
        model_info = {**describe(model), **built, "device": str(model.device)}
        print(f"model: {model_info}", flush=True)
        runs = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"fit: {len(concept.pairs())} target prompts, torch threads {torch.get_num_threads()}, "
                  f"{args.warmup} warm-up + {args.repeats} timed per method; load average {os.getloadavg()}",
                  flush=True)
            fits, profiles = time_fits(
                model, concept, args.repeats, args.warmup, args.slow_factor, args.device, args.methods
            )
            encode = time_text_encoding(model, concept, args.repeats, args.device)
            for name, result in fits.items():
                wanted = "error" not in result and (
                    args.profile_all or (result["met"] is False and threads == args.threads[0])
                )
                if not args.no_profile and wanted and name not in profiles:
                    profiles[name] = profile_fit(model, concept, name, args.device)
            runs[str(threads)] = {
                "threads": torch.get_num_threads(), "methods": fits, "text_encoding_s": encode,
                "swap_s": swap_cost(model, concept), "profiles": profiles, "loadavg_after": os.getloadavg(),
            }
        payload["fit"] = {
            "model": "tiny" if args.quick else "sd15-random", "model_info": model_info,
            "concept": concept.to_dict(), "repeats": args.repeats, "warmup": args.warmup,
            "slow_factor": args.slow_factor, "runs": runs,
        }
        del model
        gc.collect()

    if "sample" not in args.skip:
        torch.set_num_threads(1)
        print(f"\nsampling on pocket: {args.prompts} prompts x {args.steps} steps, {args.rounds} interleaved rounds, "
              f"torch threads {torch.get_num_threads()}", flush=True)
        payload["sample"] = sampling_bench(args.prompts, args.steps, args.rounds)
        payload["sample"]["threads"] = torch.get_num_threads()
    info["loadavg_end"] = os.getloadavg()

    print(f"\ncommand: {command}")
    if "fit" in payload:
        print_fit(payload["fit"])
    if "sample" in payload:
        s = payload["sample"]
        lo, hi = s["paired_ratio_ci95"]
        e, z = s["erasure_over_empty"], s["empty_over_plain"]
        print(f"\nsampling under a UCE erasure / plain (pocket, {len(s['prompts'])} prompts x {s['steps']} steps, "
              f"{s['rounds']} interleaved rounds, 1 thread):")
        print(f"  median paired ratio {s['median_paired_ratio']:.3f} [95% CI {lo:.3f}-{hi:.3f}], ratio of medians "
              f"{s['ratio_of_medians']:.3f}; plain median {statistics.median(s['times_s']['plain']):.2f} s; "
              f"goal <= {s['goal']:.2f}x: {'met' if s['met'] else 'MISSED'}")
        print(f"  erasure / empty graph {e['median']:.3f} [{e['ci95'][0]:.3f}-{e['ci95'][1]:.3f}]; empty graph / plain "
              f"{z['median']:.3f} [{z['ci95'][0]:.3f}-{z['ci95'][1]:.3f}]; weight swap (enter + exit) "
              f"{s['swap_enter_exit_ms_median']:.2f} ms")
        print(f"  checks: {s['checks']}")
    print(f"machine: {info}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(path)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
