"""``erasure_benchmark``: every erasure method side by side on the same concepts (the papers' comparison tables).

The papers compare methods in tables of how much of the concept is left and how much of everything
else is kept (ErasePro Table 1 and ActErase Table 5 on objects, TRCE Table 1 and ANT Table 1 on
nudity), and of what each costs (ActErase Table 6, time consumption). Here the pocket oracle makes both a
measurement: for each concept and each method, the method is fitted with its pocket settings
(:mod:`circuits.methods.catalog`, the same entries ``benchmarks/methods_table.py`` uses), then the
pocket evaluation sets (:func:`circuits.pocket.evaluation_sets`: prompts naming the concept, its
synonyms, the attribute's other values, and the target prompts with the word removed) are sampled
from the same noise with and without the erasure and read by the oracle
(:func:`circuits.pocket.report.score_images`, the scoring of ``erasure_report``). Per row: the
erased-concept rate on target and synonym prompts, the kept attributes, preservation accuracy and
its ratio to before, fit seconds and sampling seconds (and sampling time per image against plain
sampling), all measured in the run.

Decisions:

- **Default methods**: UCE, UCE + preservation, ErasePro, TRCE stage 1 and ActErase (FFN), on
  ``red`` (a colour, with synonyms) and ``circle`` (a shape), 8 prompts per set x 2 seeds, 25 steps:
  about 100 s of CPU time on one thread (99 s idle before the conformance pass, 106 s at load 5-8
  after it), most of it sampling (512 images: per method 48 on red, 32 on circle, plus the baselines)
  and ActErase's 30-step collections. TRCE stage 1 + 2 (``"trce"``, 2-3 min of fine-tune per concept
  at load 5-8) and ANT (``"ant"``, 2000 fine-tune steps, 7-15 min at that load) do not fit the 120 s
  budget; add them by name
  (``methods=(..., "trce", "ant")``), as any method of :func:`circuits.methods.catalog.register`.
- **Batching**: the baseline's four sets are one sweep, each method's three sets another (one
  sampling call up to ``max_batch`` images). Methods that edit weights cannot share a batch with
  other variants (:func:`circuits.sampling.sweep` runs them in chunks of their own), so one sweep
  per method costs the same calls as one sweep of all and gives each method its own sampling time.
- **Goal**: erased rate <= 0.2 on target and synonym prompts with preservation ratio (accuracy
  after / before) >= 0.9, as in the method issues; both thresholds are settings. An erasure to the
  empty anchor cannot go below the "unnamed" rate (how often the model draws the value unasked).
- **Other models** (any SD1.x/2.x diffusers folder, ``model.source != "pocket"``): there is no oracle,
  so the measure changes (``metrics["measure"]``: ``"oracle"`` on pocket, ``"pixel_change"`` off it).
  A concept is a word, put in context by ``templates`` (target prompts: the templates filled with
  the word; synonym prompts: filled with each of its ``synonyms``), and ``preservation`` names the
  prompts every erasure must leave alone (required there; ``uce+preservation`` pins them too). The
  concept is a :class:`circuits.methods.Concept` with those fields, as in ``acterase_masks`` and
  ``saliency_intersection``. Each set (first ``prompts_per_set`` prompts) is sampled from the same
  noise with and without each erasure, in the same sweeps as on pocket, and measured against the
  unedited images of the same noise: the mean absolute pixel change (0-255) and the cosine of the
  final latents, per set; selectivity = target change / preservation change. Fit and sampling
  seconds as on pocket, after a one-step warm-up sweep (a freshly loaded folder's first call is
  several times slower and would make every erasure look cheaper than plain sampling). There is
  no goal verdict off pocket: the goal is defined on oracle rates, and a pixel change says how much
  an erasure changes the images, not whether the concept is gone (look at the image grids). The
  methods keep their catalog (pocket-measured) settings.
  ``templates``, ``synonyms`` and ``preservation`` are not used on pocket (its evaluation sets are
  :func:`circuits.pocket.evaluation_sets`); the notes say so when they are set there.

Length: just over 500 lines, a seventh of them this docstring; the oracle measure and the off-pocket
pixel measure share the config, the fits and the sweeps.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from circuits.analysis.benchmark import benchmark_figure, change_table, markdown_table, meets_goal
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment, show_progress
from circuits.experiments.result import ExperimentResult
from circuits.methods import catalog
from circuits.methods.concept import Concept, ConceptError, fill
from circuits.models.diffusion import Diffusion
from circuits.pocket.concepts import EvaluationSets, attribute_of, evaluation_sets
from circuits.pocket.concepts import concept as pocket_concept
from circuits.pocket.report import ErasureReport, SetScore, score_images
from circuits.sampling import sweep

#: the default templates off pocket (the concept word in context)
DEFAULT_TEMPLATES = ("a photo of a {}", "a painting of a {}", "a picture of a {}")
OWNER = "erasure_benchmark"


@dataclass(frozen=True)
class ErasureBenchmarkConfig:
    #: pocket concepts, each erased on its own: colours ("red"), shapes ("circle"), textures ("striped")
    concepts: tuple[str, ...] = ("red", "circle")
    #: methods by catalog name (circuits.methods.catalog.names()); "trce" (stage 1 + 2) and "ant" fine-tune
    #: for minutes and are left out of the default
    methods: tuple[str, ...] = ("uce", "uce+preservation", "erasepro", "trce1", "acterase")
    #: what the concept is mapped to ("" = nothing, the pocket default)
    anchor: str = ""
    #: prompts per evaluation set (target, synonyms, preservation, unnamed)
    prompts_per_set: int = 8
    #: one image per prompt and seed, the same noise before and after every erasure
    seeds: tuple[int, ...] = (0, 1)
    #: denoising steps and guidance scale of the evaluation sampling
    steps: int = 25
    guidance_scale: float = 7.5
    #: images per sampling call (bounds memory)
    max_batch: int = 64
    #: the goal: erased rate at most this on target and synonym prompts ...
    goal_erased: float = 0.2
    #: ... with preservation accuracy after / before at least this
    goal_preservation: float = 0.9
    #: target prompts (seed = first seed) whose images are kept per method, plus 2 preservation prompts
    show_prompts: int = 4
    #: other models only (pocket uses its evaluation sets): templates with one {} for the concept word
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    #: other models only: other words for a concept, as "concept:synonym" ("red:crimson"); a bare word when
    #: concepts names one concept
    synonyms: tuple[str, ...] = ()
    #: other models only, required there: prompts whose images every erasure must leave alone (not naming a concept)
    preservation: tuple[str, ...] = ()


def _check(config: ErasureBenchmarkConfig, pocket: bool = True) -> list[catalog.Method]:
    if not config.concepts:
        raise ConfigError("erasure_benchmark: concepts=() names no concept; give e.g. ('red',) or ('red', 'circle')")
    if pocket:  # pocket words only; other models check their words in _concepts
        for word in config.concepts:
            try:
                attribute_of(word)
            except ConceptError as error:
                raise ConfigError(f"erasure_benchmark: concepts: {error}") from None
        if len({attribute_of(w)[1] for w in config.concepts}) != len(config.concepts):
            raise ConfigError(f"erasure_benchmark: concepts={config.concepts!r} names a concept twice")
    elif len({w.strip().lower() for w in config.concepts}) != len(config.concepts):
        raise ConfigError(f"erasure_benchmark: concepts={config.concepts!r} names a concept twice")
    if not config.methods:
        raise ConfigError(f"erasure_benchmark: methods=() names no method; methods: {', '.join(catalog.names())}")
    try:
        methods = [catalog.get(name) for name in config.methods]
    except catalog.UnknownMethodError as error:
        raise ConfigError(f"erasure_benchmark: {error}") from None
    if len({m.name for m in methods}) != len(methods):
        raise ConfigError(f"erasure_benchmark: methods={config.methods!r} names a method twice")
    for name in ("prompts_per_set", "steps", "max_batch"):
        if getattr(config, name) < 1:
            raise ConfigError(f"erasure_benchmark: {name}={getattr(config, name)} must be >= 1")
    if not config.seeds:
        raise ConfigError("erasure_benchmark: seeds=() gives no images; give at least one seed")
    if config.show_prompts < 0:
        raise ConfigError(f"erasure_benchmark: show_prompts={config.show_prompts} must be >= 0")
    return methods


def _sweep(model: Diffusion, sets: dict[str, Any], graph: Any, label: str, config: ErasureBenchmarkConfig) -> Any:
    """Every set's prompts x seeds in one sweep (chunks of ``max_batch``), prompt-major."""
    prompts = [p for prompts in sets.values() for p in prompts]
    return sweep(model, prompts, {label: graph}, seeds=list(config.seeds), steps=config.steps,
                 guidance_scale=config.guidance_scale, max_batch=config.max_batch, progress=show_progress())


def _sample_sets(model: Diffusion, sets: dict[str, tuple[str, ...]], graph: Any, label: str, attribute: str,
                 value: str, config: ErasureBenchmarkConfig) -> tuple[dict[str, SetScore], float, list[Any]]:
    """Every set's prompts x seeds in one sweep (chunks of ``max_batch``), scored per set by the oracle."""
    seeds = list(config.seeds)
    result = _sweep(model, sets, graph, label, config)
    images = result.images[label]
    scores, start = {}, 0
    for name, set_prompts in sets.items():
        count = len(set_prompts) * len(seeds)
        rows = [p for p in set_prompts for _ in seeds]
        is_target = name != "preservation"
        erased, per_attribute, reads = score_images(images[start:start + count], rows, attribute, value,
                                                    exclude_target=is_target)  # fmt: skip
        mean = per_attribute.pop("_mean")
        share = result.seconds * count / len(images)
        scores[name] = SetScore(list(set_prompts), count, erased if is_target else None, mean, per_attribute, share,
                                reads)  # fmt: skip
        start += count
    return scores, result.seconds, images


def _shown(sets: EvaluationSets, images: list[Any], config: ErasureBenchmarkConfig, baseline: bool) -> list[Any]:
    """Seed-0 images of the first target prompts and the first 2 preservation prompts."""
    per = len(config.seeds)
    order = ["target", "synonyms", "preservation"] + (["unnamed"] if baseline else [])
    offsets, start = {}, 0
    for name in order:
        offsets[name] = start
        start += len(getattr(sets, name)) * per
    picks = [offsets["target"] + i * per for i in range(min(config.show_prompts, len(sets.target)))]
    if config.show_prompts:
        picks += [offsets["preservation"] + i * per for i in range(min(2, len(sets.preservation)))]
    return [images[i] for i in picks]


@experiment("erasure_benchmark", ErasureBenchmarkConfig, draw=benchmark_figure,
            paper="ErasePro Table 1; ActErase Tables 5-6",
            fast={"concepts": ("red",), "methods": ("uce", "trce1"), "prompts_per_set": 2, "seeds": (0,), "steps": 4,
                  "show_prompts": 2})
def erasure_benchmark(model: Diffusion, config: ErasureBenchmarkConfig) -> ExperimentResult:
    """Every erasure method on the same concepts: erased rate (off pocket: pixel change), preservation, cost."""
    if model.source != "pocket":
        return _off_pocket(model, config)
    methods = _check(config)
    goal = (config.goal_erased, config.goal_preservation)
    rows: list[dict[str, Any]] = []
    images: dict[str, list[Any]] = {}
    image_prompts: dict[str, list[str]] = {}
    for word in config.concepts:
        concept = pocket_concept(word, anchor=config.anchor)
        attribute, value = attribute_of(concept.target)
        sets = evaluation_sets(concept, n=config.prompts_per_set)
        named = {"target": sets.target, "synonyms": sets.synonyms, "preservation": sets.preservation}
        named = {k: v for k, v in named.items() if v}
        before, plain_seconds, plain_images = _sample_sets(
            model, {**named, "unnamed": sets.unnamed}, None, "no erasure", attribute, value, config)
        plain_per_image = plain_seconds / len(plain_images)
        if config.show_prompts:
            image_prompts[concept.name] = [*sets.target[:config.show_prompts], *sets.preservation[:2]]
            images[f"{concept.name}/no erasure"] = _shown(sets, plain_images, config, baseline=True)
        for method in methods:
            start = time.perf_counter()
            erasure = method(model, concept, show_progress())
            fit_seconds = time.perf_counter() - start
            after, seconds, method_images = _sample_sets(model, named, erasure, method.label, attribute, value,
                                                         config)  # fmt: skip
            report = ErasureReport(concept.name, attribute, value, before, after, len(config.seeds),
                                   config.seeds[0], config.steps)  # fmt: skip
            row = {"concept": concept.name, "name": method.name, "method": method.label, "fit_seconds": fit_seconds,
                   **report.summary(), "sampling_seconds": seconds,
                   "sampling_ratio": seconds / len(method_images) / plain_per_image,
                   "images": len(method_images), "notes": list(erasure.notes)}  # fmt: skip
            row["meets_goal"] = meets_goal(row, *goal)
            rows.append(row)
            if config.show_prompts:
                images[f"{concept.name}/{method.label}"] = _shown(sets, method_images, config, baseline=False)
        for row in rows:
            if row["concept"] == concept.name:
                row["plain_sampling_seconds"] = plain_seconds
                row["plain_images"] = len(plain_images)
    table = markdown_table(rows, timing=True, goal=goal)
    metrics = {"measure": "oracle", "rows": rows, "table_markdown": table, "image_prompts": image_prompts,
               "goal": {"erased": goal[0], "preservation_ratio": goal[1]},
               "left_out": _left_out(config)}
    met = [r for r in rows if r["meets_goal"]]
    headline: dict[str, Any] = {"rows meeting the goal": f"{len(met)} of {len(rows)}"}
    for r in rows:
        synonyms = "" if r["synonyms_after"] is None else f" (synonyms {r['synonyms_after']:.2f})"
        headline[f"{r['method']} on {r['concept']}"] = (
            f"erased {r['target_after']:.2f}{synonyms}, preservation {r['preservation_ratio']:.2f}, "
            f"fit {r['fit_seconds']:.1f} s")
    notes = _notes(rows, metrics, config, table)
    unused = _unused_on_pocket(config)
    if unused:
        notes.insert(-1, f"Not used on pocket: {unused} (settings for other models; pocket's evaluation sets are "
                         "circuits.pocket.evaluation_sets).")  # fmt: skip
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images=images)


def _unused_on_pocket(config: ErasureBenchmarkConfig) -> str:
    given = [name for name, default in (("templates", DEFAULT_TEMPLATES), ("synonyms", ()), ("preservation", ()))
             if getattr(config, name) != default]  # fmt: skip
    return ", ".join(given)


def _notes(rows: list[dict[str, Any]], metrics: dict[str, Any], config: ErasureBenchmarkConfig,
           table: str) -> list[str]:
    goal = f"erased <= {config.goal_erased:g} with preservation ratio >= {config.goal_preservation:g}"
    notes = []
    for concept in dict.fromkeys(r["concept"] for r in rows):
        mine = [r for r in rows if r["concept"] == concept]
        first = mine[0]
        floor = first["unnamed_rate"]
        head = (f"{concept}: before erasure {first['target_before']:.2f} of target-prompt images show it "
                f"({first['unnamed_rate']:.2f} when the prompt does not name it, the floor of an erasure to nothing); "
                f"preservation accuracy {first['preservation_before']:.2f}.")  # fmt: skip
        met = [r for r in mine if r["meets_goal"]]
        if met:
            said = ", ".join(f"{r['method']} ({r['target_after']:.2f}, ratio {r['preservation_ratio']:.2f})"
                             for r in met)  # fmt: skip
            head += f" Meeting the goal ({goal}): {said}."
        else:
            best = min(mine, key=lambda r: _distance(r, config))
            head += (f" No method meets the goal ({goal}); closest: {best['method']} "
                     f"(erased {best['target_after']:.2f}, ratio {best['preservation_ratio']:.2f}).")  # fmt: skip
        erasers = [r for r in mine if r["target_after"] <= config.goal_erased]
        keepers = [r for r in mine if r["preservation_ratio"] >= config.goal_preservation]
        head += (f" {len(erasers)} of {len(mine)} methods erase to <= {config.goal_erased:g}, {len(keepers)} keep "
                 f"preservation >= {config.goal_preservation:g}.")  # fmt: skip
        if floor is not None and any(r["target_after"] < floor for r in mine):
            below = [r["method"] for r in mine if r["target_after"] < floor]
            head += (f" Below that floor: {', '.join(below)} (the erasure also removes {concept} where the prompt "
                     "does not ask for it).")  # fmt: skip
        notes.append(head)
    return notes + _closing_notes(rows, metrics, table)


def _left_out(config: ErasureBenchmarkConfig) -> list[str]:
    """The catalog's fine-tuned methods this run did not ask for."""
    return [m.name for m in catalog.methods().values() if m.trained and m.name not in config.methods]


def _closing_notes(rows: list[dict[str, Any]], metrics: dict[str, Any], table: str) -> list[str]:
    """Timing, the methods left out, and the table: the last notes on pocket and off it."""
    notes = [_timing_note(rows)]
    if metrics["left_out"]:
        notes.append(f"Not run here: {', '.join(metrics['left_out'])} (fine-tunes, minutes each on a CPU); add them "
                     f"with methods=(..., {', '.join(repr(n) for n in metrics['left_out'])}).")  # fmt: skip
    notes.append("Comparison table:\n" + table)
    return notes


def _timing_note(rows: list[dict[str, Any]]) -> str:
    fastest = min(rows, key=lambda r: r["fit_seconds"])
    slowest = max(rows, key=lambda r: r["fit_seconds"])
    ratios = [r["sampling_ratio"] for r in rows]
    return (f"Fit time from {fastest['fit_seconds']:.2f} s ({fastest['method']}, {fastest['concept']}) to "
            f"{slowest['fit_seconds']:.2f} s ({slowest['method']}, {slowest['concept']}); sampling under an "
            f"erasure costs {min(ratios):.2f}-{max(ratios):.2f}x plain sampling per image, measured in this run "
            "(a weight edit adds nothing per step; an activation patch adds hooks).")  # fmt: skip


def _distance(row: dict[str, Any], config: ErasureBenchmarkConfig) -> float:
    """How far a row is from the goal region (0 inside it)."""
    worst = max(row["target_after"], row["synonyms_after"] or 0.0)
    return max(0.0, worst - config.goal_erased) + max(0.0, config.goal_preservation - row["preservation_ratio"])


# -- other models: no oracle, the change each erasure makes to the images ------------------------------------------
SETS = ("target", "synonyms", "preservation")


def _synonyms(config: ErasureBenchmarkConfig) -> dict[str, list[str]]:
    """``{concept: [synonym, ...]}`` from entries ``"concept:synonym"`` (or bare synonyms of the one concept)."""
    found: dict[str, list[str]] = {word: [] for word in config.concepts}
    for entry in config.synonyms:
        word, _, synonym = entry.rpartition(":")
        word, synonym = word.strip(), synonym.strip()
        if not word:
            if len(config.concepts) != 1:
                raise ConfigError(f"{OWNER}: synonyms: {entry!r} does not say whose synonym it is with "
                                  f"{len(config.concepts)} concepts; write it as '{config.concepts[0]}:{synonym}'")
            word = config.concepts[0]
        if word not in found:
            raise ConfigError(f"{OWNER}: synonyms: {entry!r} names the concept {word!r}, which is not in "
                              f"concepts={config.concepts!r}")  # fmt: skip
        if not synonym:
            raise ConfigError(f"{OWNER}: synonyms: {entry!r} gives no synonym; write 'concept:synonym', e.g. "
                              "'red:crimson'")  # fmt: skip
        if synonym == word or synonym in found[word]:
            raise ConfigError(f"{OWNER}: synonyms: {entry!r} repeats a word of {word!r}")
        found[word].append(synonym)
    return found


def _named(prompt: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", prompt, flags=re.IGNORECASE) is not None


def _concepts(model: Diffusion, config: ErasureBenchmarkConfig) -> list[Concept]:
    """Off pocket: each word as a :class:`Concept` of ``templates``, its ``synonyms`` and ``preservation``."""
    where = f"on {model.source!r} (not pocket: a concept is a word)"
    if not config.templates:
        raise ConfigError(f"{OWNER}: templates=() {where}: give templates with one '{{}}' for the word, e.g. "
                          f"templates={DEFAULT_TEMPLATES!r}")  # fmt: skip
    for template in config.templates:
        if template.count("{}") != 1:
            raise ConfigError(f"{OWNER}: templates: {template!r} must contain exactly one '{{}}' where the concept "
                              "word goes, e.g. 'a photo of a {}'")  # fmt: skip
    if not config.preservation:
        raise ConfigError(f"{OWNER}: preservation=() {where}: give the prompts whose images every erasure must "
                          "leave alone, e.g. preservation=('a photo of a dog', 'a painting of a house')")  # fmt: skip
    empty = [p for p in config.preservation if not p.strip()]
    if empty:
        raise ConfigError(f"{OWNER}: preservation holds an empty prompt; give prompts such as 'a photo of a dog'")
    synonyms = _synonyms(config)
    concepts = []
    for word in config.concepts:
        for prompt in config.preservation:
            hit = next((w for w in (word, *synonyms[word]) if _named(prompt, w)), None)
            if hit is not None:
                raise ConfigError(f"{OWNER}: preservation prompt {prompt!r} names {hit!r} (concept {word!r}); "
                                  "preservation prompts are the ones an erasure must leave alone")  # fmt: skip
        try:
            concept = Concept(target=word, synonyms=tuple(synonyms[word]), anchor=config.anchor,
                              templates=config.templates, preservation=config.preservation)  # fmt: skip
        except ConceptError as error:
            raise ConfigError(f"{OWNER}: concepts: {error}") from None
        try:
            concept.check(model.tokenizer)
        except ConceptError as error:
            raise ConfigError(f"{OWNER}: concepts/synonyms/anchor: {error}") from None
        concepts.append(concept)
    return concepts


def _sets(concept: Concept, n: int) -> dict[str, list[str]]:
    """The first ``n`` target prompts, synonym prompts (if any) and preservation prompts."""
    sets = {"target": concept.prompts()[:n],
            "synonyms": [fill(t, s) for s in concept.synonyms for t in concept.templates][:n],
            "preservation": list(concept.preservation)[:n]}  # fmt: skip
    return {name: prompts for name, prompts in sets.items() if prompts}


def _split(sets: dict[str, list[str]], result: Any, label: str, seeds: int) -> dict[str, tuple[np.ndarray, Any]]:
    """``{set: (pixels, latents)}`` of one sweep over every set (prompt-major, ``seeds`` images per prompt)."""
    out, start = {}, 0
    images, latents = result.images[label], result.latents[label]
    for name, prompts in sets.items():
        count = len(prompts) * seeds
        pixels = np.stack([np.asarray(image, dtype=np.float64) for image in images[start:start + count]])
        out[name] = (pixels, latents[start:start + count])
        start += count
    return out


def _change(before: tuple[np.ndarray, Any], after: tuple[np.ndarray, Any]) -> tuple[float, float]:
    """Mean |pixel change| (0-255) and mean cosine of the final latents, image by image."""
    pixels = float(np.abs(after[0] - before[0]).mean())
    a, b = (t.flatten(1).to(torch.float64) for t in (after[1], before[1]))
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())
    return pixels, cosine


def _picks(sets: dict[str, list[str]], images: list[Any], config: ErasureBenchmarkConfig) -> list[Any]:
    """Seed-0 images of the first target prompts and the first 2 preservation prompts."""
    per, offsets, start = len(config.seeds), {}, 0
    for name, prompts in sets.items():
        offsets[name] = start
        start += len(prompts) * per
    picks = [offsets["target"] + i * per for i in range(min(config.show_prompts, len(sets["target"])))]
    picks += [offsets["preservation"] + i * per for i in range(min(2, len(sets["preservation"])))]
    return [images[i] for i in picks]


def _off_pocket(model: Diffusion, config: ErasureBenchmarkConfig) -> ExperimentResult:
    methods = _check(config, pocket=False)
    concepts = _concepts(model, config)
    seeds = len(config.seeds)
    rows: list[dict[str, Any]] = []
    images: dict[str, list[Any]] = {}
    image_prompts: dict[str, list[str]] = {}
    prompts: dict[str, dict[str, list[str]]] = {}
    # a fresh model's first call is slow: keep it out of the plain-sampling time
    _sweep(model, _sets(concepts[0], config.prompts_per_set), None, "warm-up", dataclasses.replace(config, steps=1))
    for concept in concepts:
        sets = _sets(concept, config.prompts_per_set)
        prompts[concept.name] = sets
        plain = _sweep(model, sets, None, "no erasure", config)
        plain_images = plain.images["no erasure"]
        before = _split(sets, plain, "no erasure", seeds)
        plain_per_image = plain.seconds / len(plain_images)
        if config.show_prompts:
            image_prompts[concept.name] = [*sets["target"][:config.show_prompts], *sets["preservation"][:2]]
            images[f"{concept.name}/no erasure"] = _picks(sets, plain_images, config)
        for method in methods:
            start = time.perf_counter()
            erasure = method(model, concept, show_progress())
            fit_seconds = time.perf_counter() - start
            edited = _sweep(model, sets, erasure, method.label, config)
            after = _split(sets, edited, method.label, seeds)
            row: dict[str, Any] = {"concept": concept.name, "name": method.name, "method": method.label,
                                   "fit_seconds": fit_seconds}  # fmt: skip
            for name in SETS:
                change = _change(before[name], after[name]) if name in sets else (None, None)
                row[f"{name}_change"], row[f"{name}_latent_cos"] = change
            pres = row["preservation_change"]
            row["selectivity"] = row["target_change"] / pres if pres > 0 else None
            method_images = edited.images[method.label]
            row.update({"sampling_seconds": edited.seconds,
                        "sampling_ratio": edited.seconds / len(method_images) / plain_per_image,
                        "images": len(method_images), "notes": list(erasure.notes),
                        "plain_sampling_seconds": plain.seconds, "plain_images": len(plain_images)})  # fmt: skip
            rows.append(row)
            if config.show_prompts:
                images[f"{concept.name}/{method.label}"] = _picks(sets, method_images, config)
    table = change_table(rows, timing=True)
    metrics = {"measure": "pixel_change", "rows": rows, "table_markdown": table, "image_prompts": image_prompts,
               "prompts": prompts,
               "left_out": _left_out(config)}
    headline: dict[str, Any] = {"measure": "mean |pixel change| (0-255) against the same noise unedited"}
    for r in rows:
        selectivity = "–" if r["selectivity"] is None else f"{r['selectivity']:.2f}"
        headline[f"{r['method']} on {r['concept']}"] = (
            f"change: target {r['target_change']:.1f}, preservation {r['preservation_change']:.1f} "
            f"(selectivity {selectivity}), fit {r['fit_seconds']:.1f} s")
    return ExperimentResult(metrics=metrics, headline=headline, notes=_change_notes(rows, metrics, config, table),
                            images=images)  # fmt: skip


def _change_notes(rows: list[dict[str, Any]], metrics: dict[str, Any], config: ErasureBenchmarkConfig,
                  table: str) -> list[str]:
    notes = []
    for concept in dict.fromkeys(r["concept"] for r in rows):
        mine = [r for r in rows if r["concept"] == concept]
        most = max(mine, key=lambda r: r["target_change"])
        least = min(mine, key=lambda r: r["preservation_change"])
        head = (f"{concept}: mean absolute pixel change (0-255) against the unedited images of the same noise; "
                f"largest on target prompts: {most['method']} ({most['target_change']:.1f}), smallest on "
                f"preservation prompts: {least['method']} ({least['preservation_change']:.1f}).")  # fmt: skip
        ranked = [r for r in mine if r["selectivity"] is not None]
        if ranked:
            best = max(ranked, key=lambda r: r["selectivity"])
            head += (f" Highest selectivity (target / preservation change): {best['method']} "
                     f"({best['selectivity']:.2f}).")  # fmt: skip
        same = [r["method"] for r in mine if r["target_change"] == 0 and r["preservation_change"] == 0]
        if same:
            head += f" Unchanged images (change 0): {', '.join(same)}."
        cosines = [r["target_latent_cos"] for r in mine]
        head += f" Final-latent cosine to the unedited on target prompts: {min(cosines):.3f}-{max(cosines):.3f}."
        notes.append(head)
    notes.append(
        "No goal verdict on this model: the goal (erased rate <= "
        f"{config.goal_erased:g}, preservation ratio >= {config.goal_preservation:g}) is defined on the pocket "
        "oracle's rates; a pixel change says how much an erasure changes the images, not whether the concept is "
        "gone (look at the image grids). Methods use their catalog settings, measured on pocket.")  # fmt: skip
    return notes + _closing_notes(rows, metrics, table)
