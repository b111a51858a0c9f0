"""``erasure_eval``: the evaluation layer end to end on pocket (prompt files, generate, measure, report).

What a researcher does with SD1.4 and I2P, on pocket in seconds: write prompt sets in the ESD
layout (``case_number, prompt, evaluation_seed, class``) for a concept, fit an erasure
(:func:`circuits.methods.catalog.fit`), generate every set with and without it into generation
folders (:func:`circuits.evaluation.generate`: manifest, resumable), measure both folders with the
pocket oracle and, for the pipeline's sake, CLIP score with a tiny random local CLIP (its numbers
mean nothing; it checks that the CLIP path runs), and write the literature's table
(:func:`circuits.evaluation.report`).

The prompt sets come from :func:`circuits.pocket.evaluation_sets` (none of them a fitting
template): **explicit** (the concept named), **synonym** (a synonym named; colours only),
**implicit** (the same prompts with the word removed: the concept is not named, and the rate says how
often the model draws it unasked — the floor an erasure to the empty anchor cannot go below), and
**preservation** (the attribute's other values; each row's label is the value its prompt names).
The oracle's rate per set is the share of images in which it reads the row's label. Rows share
their ``evaluation_seed`` across the two folders, so before and after start from the same noise.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuits.analysis.evaluation import draw_erasure_eval
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment, show_progress
from circuits.experiments.result import ExperimentResult
from circuits.models.diffusion import Diffusion


@dataclass(frozen=True)
class ErasureEvalConfig:
    #: the pocket word to erase (a colour, colour synonym, shape or texture)
    concept: str = "red"
    #: a method of circuits.methods.catalog (its pocket settings)
    method: str = "uce"
    #: prompts per set (explicit, synonym, implicit, preservation)
    prompts_per_set: int = 8
    #: images per prompt row
    samples: int = 1
    #: sampling steps
    steps: int = 25
    #: classifier-free guidance where the file sets none
    guidance_scale: float = 7.5
    #: images per sampling call
    batch_size: int = 32
    #: also measure CLIP score with a tiny random local CLIP (the pipeline's path, not a meaningful number)
    clip_score: bool = True


def _sets(config: ErasureEvalConfig) -> dict[str, list[tuple[str, str]]]:
    """``{set: [(prompt, label), ...]}`` from the pocket evaluation sets."""
    from circuits.pocket import evaluation_sets
    from circuits.pocket.report import named_attributes

    sets = evaluation_sets(config.concept, n=config.prompts_per_set)
    out = {"explicit": [(p, sets.value) for p in sets.target]}
    if sets.synonyms:
        out["synonym"] = [(p, sets.value) for p in sets.synonyms]
    out["implicit"] = [(p, sets.value) for p in sets.unnamed]
    out["preservation"] = [(p, named_attributes(p)[sets.attribute]) for p in sets.preservation]
    return out


@experiment("erasure_eval", ErasureEvalConfig, draw=draw_erasure_eval, paper="evaluation protocol (issue 16)",
            fast={"prompts_per_set": 2, "steps": 4}, needs=("oracle",))  # fmt: skip
def erasure_eval(model: Diffusion, config: ErasureEvalConfig) -> ExperimentResult:
    """Prompt sets in the ESD layout, generated with and without an erasure, measured and tabled (pocket)."""
    from circuits.evaluation.generation import generate
    from circuits.evaluation.measures import measure
    from circuits.evaluation.measures.clip_score import build_tiny_clip
    from circuits.evaluation.prompts import PromptRow, read_prompts, write_esd_csv
    from circuits.evaluation.reporting import report
    from circuits.methods import catalog
    from circuits.pocket import concept as pocket_concept
    from circuits.pocket.world import COLOURS, SHAPES, SYNONYMS, TEXTURES

    if config.prompts_per_set < 1 or config.samples < 1 or config.steps < 1 or config.batch_size < 1:
        raise ConfigError("erasure_eval: prompts_per_set, samples, steps and batch_size must be >= 1")
    catalog.get(config.method)  # an unknown method is an error listing the catalog
    sets = _sets(config)
    rows, case = [], 0
    for name, pairs in sets.items():
        for prompt, label in pairs:
            rows.append(PromptRow(str(case), prompt, seed=case, label=label, categories=(name,)))
            case += 1
    start = time.perf_counter()
    erasure = catalog.fit(config.method, model, pocket_concept(config.concept), progress=False)
    fit_seconds = time.perf_counter() - start
    settings = {"samples": config.samples, "steps": config.steps, "guidance": config.guidance_scale,
                "batch_size": config.batch_size, "progress": show_progress()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="erasure_eval_") as tmp:
        work = Path(tmp)
        # the ESD-layout file, read back: the path a user's CSV takes
        csv_path = write_esd_csv(work / "prompts.csv", rows)
        prompt_file = read_prompts(csv_path)
        folders, seconds = {}, {}
        for label, applied in (("before", None), ("after", erasure)):
            start = time.perf_counter()
            folders[label] = generate(model, prompt_file, work / label, erasure=applied, **settings).out
            seconds[f"generate_{label}"] = time.perf_counter() - start
        measured: dict[str, dict[str, Any]] = {}
        clip = build_tiny_clip(work / "clip", words=[*COLOURS, *SHAPES, *TEXTURES, *SYNONYMS, "a", "an", "on",
                                                     "background", "with"]) if config.clip_score else None  # fmt: skip
        for label, folder in folders.items():
            measured[label] = {"oracle": measure(folder, "oracle")}
            if clip is not None:
                measured[label]["clip_score"] = measure(folder, "clip_score", clip=clip)
        table = report([folders["before"], folders["after"]], work / "report",
                       names=["pocket (no erasure)", f"{erasure.method} ({erasure.concept.name})"])  # fmt: skip
        images = {label: _first_images(folder, 8) for label, folder in folders.items()}
        csv_text = csv_path.read_text()
        report_png = (work / "report" / "report.png").stat().st_size
    rates = {name: {label: measured[label]["oracle"]["values"][f"rate_{name}"] for label in folders}
             for name in sets}  # fmt: skip
    metrics = {
        "concept": config.concept, "method": config.method, "rates": rates, "fit_seconds": fit_seconds,
        "seconds": seconds, "table": table.markdown, "table_csv": table.csv, "prompts_csv": csv_text,
        "images": len(rows) * config.samples, "report_png_bytes": report_png,
        "measure_seconds": {label: {name: m["seconds"] for name, m in measured[label].items()} for label in folders},
        "clip_score": {label: measured[label]["clip_score"]["values"]["clip_score"] for label in folders}
        if config.clip_score else None,
    }  # fmt: skip
    headline = {f"{name} {label}": round(rate, 3) for name, pair in rates.items() for label, rate in pair.items()}
    notes = [
        f"{config.method} on '{config.concept}': the oracle read the concept in {rates['explicit']['before']:.2f} of "
        f"explicit-prompt images before and {rates['explicit']['after']:.2f} after; preservation "
        f"{rates['preservation']['before']:.2f} -> {rates['preservation']['after']:.2f}.",
        "implicit = the explicit prompts without the word: how often the model draws the value unasked.",
        "CLIP score here uses a tiny random CLIP built for the run: it checks the path, its value means nothing.",
    ]  # fmt: skip
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images=images)


def _first_images(folder: Path, n: int) -> list[Any]:
    from PIL import Image

    out = []
    for path in sorted(folder.glob("*_0.png"), key=lambda p: int(p.name.split("_")[0]))[:n]:
        with Image.open(path) as image:
            out.append(image.convert("RGB"))
    return out
