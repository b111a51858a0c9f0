"""ActErase's diagnostics: ``acterase_masks``, ``patch_modules`` and ``multi_concept``.

Sun et al., *ActErase* (Alg. 1-2, Eqs. 4-9, Table 7, Table 11 / Fig. 10), on top of
:mod:`circuits.methods.acterase` (collect, patch, merge). Three experiments:

- ``acterase_masks`` -- what the collection step (Alg. 1 step 1, Eqs. 4-5) selects: the combined
  mask's density per layer, the rule's density at every step (layer x step heat map), the vote
  fractions behind the combined mask and the density each ``agreement`` threshold would give, and
  how much the masks of different concepts overlap (Jaccard per layer, against the overlap two
  independent masks of the same densities would have). No sampling beyond the collection: it runs
  on any SD folder (off pocket, give the concept's ``templates``).
- ``patch_modules`` -- the paper's module comparison (Table 7: FFN vs cross-attention output vs the
  UNet output). Each module is collected with the same settings and patched; the pocket evaluation
  sets (target, synonym, preservation and unnamed prompts of :func:`circuits.pocket.evaluation_sets`)
  are sampled under every patch and without one, as row blocks of one batched
  :func:`circuits.sampling.sweep` (``MaskedPatch`` graphs are per-call, so the variants share each
  batch), and read by the oracle (:func:`circuits.pocket.report.score_images`, the scoring of
  ``erasure_report``): erased rate on target and synonym prompts, kept attributes, preservation. Two
  pixel measures stand in for the paper's CLIP score: the mean absolute change against the unpatched
  image of the same prompt and seed, and the spread across prompts (per seed, the pixel standard
  deviation over the prompts; near 0 when every prompt gives the same image).
  Off pocket (any SD1.x/2.x folder): the concept is a word, ``templates`` put it in context (the
  collection prompts; the first ``prompts_per_set`` are the target prompts) and ``preservation`` are
  the prompts to leave alone; there is no oracle, so each module is measured by the mean absolute
  pixel change (0-255) against the unpatched images of the same noise on both sets and the
  selectivity (target change / preservation change); ``metrics["measure"]`` says which
  (``"oracle"`` or ``"pixel_change"``).
- ``multi_concept`` -- Alg. 2 (Eqs. 7-9) as the number of merged concepts grows (Table 11, Fig. 10):
  single-concept erasures of ``concepts`` are fitted once, the first ``n`` merged for each ``n`` of
  ``counts``; every merged patch (and no patch) samples the target prompts of every listed concept and
  of the attribute's values never erased, in one sweep. Reported per ``n``: each concept's rate on its
  own prompts (erased for the first ``n``, kept for the rest), preservation on the never-erased
  values, the other attributes kept, and the merged mask's density against the single masks'.
  Off pocket: each concept word is collected on ``templates``; every variant samples each concept's
  first ``prompts_per_concept`` template prompts and the ``preservation`` prompts, measured by the
  mean absolute pixel change against no erasure (per set; the erased concepts' sets, the listed but
  not yet erased ones, the preservation prompts) and the selectivity (erased-set change /
  preservation change), with the same mask densities.

Decisions:

- **Scores per module**: FFN uses ``wanda`` (``ffn_score``); cross-attention output and UNet output
  use ``magnitude``, the only score defined where no linear layer reads the site (the paper:
  "for the output module ... we directly used activation intensity"). tau and ``agreement`` are the
  same for all modules; the paper tuned the output module ("after multiple parameter adjustments"),
  which is left to overrides here. ``tau=None`` is App. A.3's value per concept (0.02 for pocket's
  textures, the "styles"; 0.01 otherwise), as :mod:`circuits.methods.catalog` fits ActErase.
- **UNet output** is the ``unet_output`` layer set of :mod:`circuits.methods.acterase` (a
  ``MaskedPatch`` at ``unet.eps``, the conditional noise prediction): nothing was added for it.
- **Evaluation**: every variant samples every prompt with the same seeds (one image per prompt and
  seed); the unnamed prompts are sampled under each patch too, so the figure shows how often the
  value appears unasked with and without the erasure.
- Oracle numbers only exist on pocket. Off pocket ``patch_modules`` and ``multi_concept`` report pixel
  change instead: it shows where a patch acts (and whether it spares the preservation prompts), not
  whether the concept is gone; erased rates need the pocket oracle. Both need ``templates`` and
  ``preservation`` off pocket (a ``ConfigError`` names the missing field); ``acterase_masks`` needs
  ``templates``.
- Collection keeps App. A.3's 30 steps and CFG 7.5 (a 24-pair concept collects in ~10 s on one
  pocket thread); evaluation samples 25 steps.
- Measured cost of the defaults (``circuits run NAME``, one thread, shared 2-core machine; CPU time of
  the process in brackets): ``acterase_masks`` 22.5 s (23 s), ``patch_modules`` 76 s (62 s),
  ``multi_concept`` 91 s (78 s).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from circuits.analysis.acterase import draw_masks, draw_modules, draw_multi
from circuits.errors import SiteError
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment, show_progress
from circuits.experiments.result import ExperimentResult
from circuits.methods import acterase
from circuits.methods.concept import Concept, ConceptError
from circuits.methods.erasure import Erasure
from circuits.models.diffusion import Diffusion

MODULE_LABELS = {"ffn": "FFN", "cross_attention": "cross-attention output", "unet_output": "UNet output"}
AGREEMENTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


# -- shared pieces -------------------------------------------------------------------------
def site_label(site: str) -> str:
    """``unet.up_blocks.1.attentions.0.transformer_blocks.0.ff.hidden`` -> ``up1.0`` (``mid``, ``eps``)."""
    if site == "unet.eps":
        return "eps"
    if ".mid_block." in site:
        match = re.search(r"attentions\.(\d+)", site)
        return "mid" if match is None or match.group(1) == "0" else f"mid.{match.group(1)}"
    match = re.search(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)", site)
    if match is None:
        return site.removeprefix("unet.")
    kind, block, attention, transformer = match.groups()
    return f"{kind}{block}.{attention}" + (f".{transformer}" if transformer != "0" else "")


def forward_order(site: str) -> tuple[int, int, int, int]:
    """Sort key: down blocks, mid block, up blocks (the UNet's forward order), then the output."""
    if site == "unet.eps":
        return (3, 0, 0, 0)
    numbers = [int(n) for n in re.findall(r"\.(\d+)", site)] + [0, 0, 0]
    stage = 0 if ".down_blocks." in site else 1 if ".mid_block." in site else 2
    return (stage, *numbers[:3])  # type: ignore[return-value]


def _tau(model: Diffusion, concept: Concept, tau: float | None) -> float:
    """App. A.3: 0.02 for styles (pocket's textures), 0.01 otherwise, unless ``tau`` is given."""
    if tau is not None:
        return tau
    from circuits.pocket.world import TEXTURES

    return acterase.STYLE_TAU if model.source == "pocket" and concept.target in TEXTURES else acterase.Config.tau


def _concept(model: Diffusion, word: str, anchor: str, templates: Sequence[str], owner: str) -> Concept:
    if templates:
        return Concept(target=word, anchor=anchor, templates=tuple(templates))
    if model.source != "pocket":
        raise ConfigError(f"{owner}: concept {word!r} on {model.source!r}: a bare word names a concept only on "
                          "pocket; give templates=('a photo of a {}', ...) for the prompts it is collected on")
    from circuits.pocket.concepts import concept as pocket_concept

    try:
        return pocket_concept(word, anchor=anchor)
    except ConceptError as error:
        raise ConfigError(f"{owner}: {error}") from None


def _check_collection(owner: str, tau: float | None, agreement: float, steps: int) -> None:
    if tau is not None and not tau >= 0:
        raise ConfigError(f"{owner}: tau={tau} must be >= 0 (or None for App. A.3's)")
    if not 0 < agreement <= 1:
        raise ConfigError(f"{owner}: agreement={agreement} must be in (0, 1]")
    if steps < 1:
        raise ConfigError(f"{owner}: collect_steps={steps} must be >= 1")


def _check_words(owner: str, words: Sequence[str], model: Diffusion) -> None:
    if not words:
        raise ConfigError(f"{owner}: concepts=() names no concept; give e.g. ('red',)")
    if len(set(words)) != len(words):
        raise ConfigError(f"{owner}: concepts={tuple(words)!r} names a concept twice")


def _sweep_sets(model: Diffusion, sets: dict[str, Sequence[str]], variants: dict[str, Any], *, seeds: Sequence[int],
                steps: int, guidance_scale: float, max_batch: int) -> tuple[dict[str, dict[str, list[Any]]], Any]:
    """Every set's prompts x seeds under every variant, as row blocks of one sweep; images by variant and set."""
    from circuits.sampling import sweep

    prompts = [p for ps in sets.values() for p in ps]
    result = sweep(model, prompts, variants, seeds=list(seeds), steps=steps, guidance_scale=guidance_scale,
                   max_batch=max_batch, progress=show_progress())  # fmt: skip
    per = len(seeds)
    out: dict[str, dict[str, list[Any]]] = {}
    for name in variants:
        images, start = result.images[name], 0
        out[name] = {}
        for set_name, ps in sets.items():
            out[name][set_name] = images[start:start + len(ps) * per]
            start += len(ps) * per
    return out, result


def _rows(prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
    return [p for p in prompts for _ in seeds]


def _score(images: list[Any], prompts: Sequence[str], seeds: Sequence[int], attribute: str, value: str, *,
           exclude_target: bool) -> dict[str, Any]:
    from circuits.pocket.report import score_images

    erased, per_attribute, _ = score_images(images, _rows(prompts, seeds), attribute, value,
                                            exclude_target=exclude_target)  # fmt: skip
    accuracy = per_attribute.pop("_mean")
    return {"rate": erased, "accuracy": accuracy, "per_attribute": per_attribute}


def _pixels(images: list[Any]) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float64) for image in images])


def _collect(model: Diffusion, concept: Concept, settings: acterase.Config, owner: str) -> tuple[Any, float]:
    """ActErase's collection step and its seconds; a bad word or layer set becomes a ConfigError of ``owner``."""
    start = time.perf_counter()
    try:
        collected = acterase.collect(model, concept, settings, progress=show_progress())
    except (ConceptError, SiteError) as error:
        raise ConfigError(f"{owner}: {error}") from None
    return collected, time.perf_counter() - start


def _density(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return float(sum(m.float().sum() for m in masks.values()) / total) if total else 0.0


# -- acterase_masks -------------------------------------------------------------------------
@dataclass(frozen=True)
class ActEraseMasksConfig:
    #: concepts, each collected on its own (pocket words; off pocket give templates too)
    concepts: tuple[str, ...] = ("red", "circle", "striped")
    #: prompt templates with "{}" for the concept word; () on pocket: circuits.pocket.concept's
    templates: tuple[str, ...] = ()
    #: what the concept word becomes in the source prompts ("" = nothing, the pocket default)
    anchor: str = ""
    #: layer set: "ffn" (the paper's), "cross_attention", "unet_output", or a glob of UNet sites
    layers: str = "ffn"
    #: importance score of Eq. 4: "wanda" (FFN hidden sites only) or "magnitude"
    score: Literal["wanda", "magnitude"] = "wanda"
    #: tau of Eq. 5; None: App. A.3's (0.02 for pocket textures, the "styles"; 0.01 otherwise)
    tau: float | None = None
    #: an entry is masked where Eq. 5 holds in at least this fraction of (step, prompt pair) votes
    agreement: float = 0.5
    #: collection run: denoising steps (App. A.3: 30), guidance scale (7.5), seed
    collect_steps: int = 30
    guidance_scale: float = 7.5
    seed: int = 0
    #: collect on the synonym prompts too
    synonyms: bool = True


def _vote_summary(votes: torch.Tensor) -> dict[str, Any]:
    flat = votes.flatten().float()
    histogram = torch.histc(flat, bins=20, min=0.0, max=1.0)
    return {
        "vote_quantiles": {f"{q:g}": float(torch.quantile(flat, q)) for q in QUANTILES},
        "vote_histogram": [float(v) for v in (histogram / flat.numel())],
        "density_at_agreement": [float((flat >= a).float().mean()) for a in AGREEMENTS],
    }


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Jaccard index of two masks, and the one two independent masks of the same densities would have."""
    union = float((a | b).float().sum())
    observed = float((a & b).float().sum()) / union if union else 0.0
    da, db = float(a.float().mean()), float(b.float().mean())
    denominator = da + db - da * db
    return observed, (da * db / denominator if denominator else 0.0)


@experiment("acterase_masks", ActEraseMasksConfig, draw=draw_masks, paper="ActErase Alg. 1, Eqs. 4-5",
            fast={"concepts": ("red", "circle"), "collect_steps": 3, "synonyms": False})  # fmt: skip
def acterase_masks(model: Diffusion, config: ActEraseMasksConfig) -> ExperimentResult:
    """ActErase's masks: density per layer and per step, vote fractions, overlap between concepts."""
    owner = "acterase_masks"
    _check_words(owner, config.concepts, model)
    _check_collection(owner, config.tau, config.agreement, config.collect_steps)
    entries, masks = [], {}
    for word in config.concepts:
        concept = _concept(model, word, config.anchor, config.templates, owner)
        tau = _tau(model, concept, config.tau)
        settings = acterase.Config(layers=config.layers, score=config.score, tau=tau, agreement=config.agreement,
                                   steps=config.collect_steps, guidance_scale=config.guidance_scale,
                                   seed=config.seed, synonyms=config.synonyms)  # fmt: skip
        collected, seconds = _collect(model, concept, settings, owner)
        sites = sorted(collected.mask, key=forward_order)
        layers = []
        for row in sorted(acterase.trace(collected), key=lambda r: forward_order(r["site"])):
            site = row["site"]
            stats = collected.stats[site]
            chance = [0.5 * float(v) for v in stats[:, 3]]  # a coin flip between I_s and I_t above tau
            layers.append({**row, "label": site_label(site), "entries": collected.mask[site].numel(),
                           "chance_density_per_step": chance, **_vote_summary(collected.votes[site])})  # fmt: skip
        masks[concept.name] = {s: collected.mask[s] for s in sites}
        total = sum(layer["entries"] for layer in layers)
        per_step = [sum(layer["entries"] * layer["density_per_step"][i] for layer in layers) / total
                    for i in range(config.collect_steps)]  # fmt: skip
        chance = [sum(layer["entries"] * layer["chance_density_per_step"][i] for layer in layers) / total
                  for i in range(config.collect_steps)]  # fmt: skip
        entries.append({
            "concept": concept.name, "tau": tau, "pairs": len(concept.pairs(synonyms=config.synonyms)),
            "seconds": seconds, "density": _density(masks[concept.name]), "entries": total,
            "density_per_step": per_step, "chance_density_per_step": chance,
            "density_at_agreement": [sum(la["entries"] * la["density_at_agreement"][i] for la in layers) / total
                                     for i in range(len(AGREEMENTS))],
            "layers": layers,
        })  # fmt: skip
    overlap = []
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            per_layer = {site_label(s): _jaccard(masks[a][s], masks[b][s]) for s in masks[a]}
            union = sum(float((masks[a][s] | masks[b][s]).float().sum()) for s in masks[a])
            both = sum(float((masks[a][s] & masks[b][s]).float().sum()) for s in masks[a])
            da, db = _density(masks[a]), _density(masks[b])
            overlap.append({
                "concepts": [a, b], "jaccard": both / union if union else 0.0,
                "independent": da * db / (da + db - da * db) if da + db > 0 else 0.0,
                "per_layer": {k: {"jaccard": v[0], "independent": v[1]} for k, v in per_layer.items()},
            })  # fmt: skip
    metrics = {"concepts": entries, "overlap": overlap, "agreements": list(AGREEMENTS),
               "quantiles": list(QUANTILES), "layers": config.layers, "score": config.score}  # fmt: skip
    headline, notes = _masks_summary(metrics, config)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes)


def _masks_summary(metrics: dict[str, Any], config: ActEraseMasksConfig) -> tuple[dict[str, Any], list[str]]:
    headline: dict[str, Any] = {}
    notes = []
    for entry in metrics["concepts"]:
        layers = entry["layers"]
        low = min(layers, key=lambda r: r["density"])
        high = max(layers, key=lambda r: r["density"])
        rule = sum(entry["density_per_step"]) / len(entry["density_per_step"])
        chance = sum(entry["chance_density_per_step"]) / len(entry["chance_density_per_step"])
        headline[f"mask density, {entry['concept']}"] = entry["density"]
        headline[f"rule density per step, {entry['concept']}"] = rule
        middle = [sum(layer["entries"] * layer["vote_histogram"][k] for layer in layers) / entry["entries"]
                  for k in (8, 9, 10, 11)]  # fmt: skip
        notes.append(
            f"{entry['concept']} (tau {entry['tau']:g}, {entry['pairs']} prompt pairs, collected in "
            f"{entry['seconds']:.1f} s): the combined mask (agreement {config.agreement:g}) covers "
            f"{entry['density']:.3f} of the entries, from {low['density']:.3f} ({low['label']}) to "
            f"{high['density']:.3f} ({high['label']}). At a single step the rule (Eq. 5) holds for "
            f"{min(entry['density_per_step']):.3f}-{max(entry['density_per_step']):.3f} of the entries (mean "
            f"{rule:.3f}); a coin flip between I_s and I_t above tau would give {chance:.3f}. "
            f"{sum(middle):.2f} of the entries have vote fractions between 0.4 and 0.6, so the density moves "
            f"with the agreement threshold: {entry['density_at_agreement'][2]:.3f} at 0.3, "
            f"{entry['density_at_agreement'][4]:.3f} at 0.5, {entry['density_at_agreement'][6]:.3f} at 0.7."
        )  # fmt: skip
    for pair in metrics["overlap"]:
        a, b = pair["concepts"]
        ratio = pair["jaccard"] / pair["independent"] if pair["independent"] else float("nan")
        headline[f"Jaccard {a} / {b}"] = pair["jaccard"]
        notes.append(
            f"The masks of {a} and {b} overlap with Jaccard {pair['jaccard']:.3f}; two independent masks of the "
            f"same densities would give {pair['independent']:.3f} ({ratio:.2f}x): "
            + ("they share more entries than chance, so part of what each selects is common to both concepts "
               "(what naming any word in the prompt raises), not specific to one."
               if ratio > 1.2 else "about as related as independent masks.")
        )  # fmt: skip
    return headline, notes


# -- patch_modules ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchModulesConfig:
    #: the concept to erase: a pocket word (colours have synonym prompts), or off pocket any word with templates
    concept: str = "red"
    #: prompt templates with "{}" for the concept word; () on pocket: circuits.pocket.concept's. Off pocket
    #: (required) the collection prompts, and the first prompts_per_set of them are the target evaluation prompts
    templates: tuple[str, ...] = ()
    #: off pocket (required): prompts the patch should leave alone, every one sampled (pocket: its evaluation sets)
    preservation: tuple[str, ...] = ()
    #: modules to patch (Table 7): "ffn", "cross_attention" (attn2 outputs), "unet_output" (unet.eps)
    modules: tuple[str, ...] = ("ffn", "cross_attention", "unet_output")
    #: score on the FFN ("wanda" |x| * ||W2[:, j]||, or "magnitude"); the other modules use magnitude
    ffn_score: Literal["wanda", "magnitude"] = "wanda"
    #: what the concept word becomes in the source prompts ("" = nothing)
    anchor: str = ""
    #: tau of Eq. 5 for every module; None: App. A.3's (0.02 for textures, 0.01 otherwise)
    tau: float | None = None
    #: mask agreement over (step, prompt pair) votes, the same for every module
    agreement: float = 0.5
    #: CFG branch the patch acts on
    branch: Literal["cond", "both"] = "cond"
    #: collection run: steps (App. A.3: 30), seed; guidance_scale is shared with the evaluation
    collect_steps: int = 30
    collect_seed: int = 0
    #: collect on the synonym prompts too
    synonyms: bool = True
    #: prompts per evaluation set (target, synonyms, preservation, unnamed)
    prompts_per_set: int = 6
    #: one image per prompt and seed, the same noise for every module and for no patch
    seeds: tuple[int, ...] = (0, 1)
    #: evaluation: denoising steps and guidance scale
    steps: int = 25
    guidance_scale: float = 7.5
    #: images per sampling call (bounds memory)
    max_batch: int = 64
    #: target prompts (first seed) shown per module, plus 2 preservation prompts
    show_prompts: int = 4


SETS = ("target", "synonyms", "preservation", "unnamed")


def _module_summary(scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def rate(name: str) -> float | None:
        return scores[name]["rate"] if name in scores else None

    return {
        "target": rate("target"), "synonyms": rate("synonyms"), "unnamed": rate("unnamed"),
        "kept": scores["target"]["accuracy"], "preservation": scores["preservation"]["accuracy"],
        "per_attribute": {k: v["per_attribute"] for k, v in scores.items()},
    }  # fmt: skip


@experiment("patch_modules", PatchModulesConfig, draw=draw_modules, paper="ActErase Table 7",
            fast={"modules": ("ffn", "unet_output"), "collect_steps": 2, "synonyms": False, "prompts_per_set": 1,
                  "seeds": (0,), "steps": 3, "show_prompts": 1})  # fmt: skip
def patch_modules(model: Diffusion, config: PatchModulesConfig) -> ExperimentResult:
    """ActErase patching FFN vs cross-attention output vs UNet output: erased rate and preservation."""
    owner = "patch_modules"
    pocket = model.source == "pocket"
    if not config.modules:
        raise ConfigError(f"{owner}: modules=() names no module; give some of {', '.join(MODULE_LABELS)}")
    unknown = [m for m in config.modules if m not in MODULE_LABELS]
    if unknown or len(set(config.modules)) != len(config.modules):
        raise ConfigError(f"{owner}: modules={config.modules!r}; give each of {', '.join(MODULE_LABELS)} at most once")
    _check_collection(owner, config.tau, config.agreement, config.collect_steps)
    _check_evaluation(owner, config.prompts_per_set, config.seeds, config.steps, config.max_batch, config.show_prompts)
    concept = _concept(model, config.concept, config.anchor, config.templates, owner)
    if pocket:
        from circuits.pocket.concepts import attribute_of, evaluation_sets

        attribute, value = attribute_of(concept.target)
    else:
        _check_preservation(owner, config.preservation, model)
        attribute, value = "", concept.target
    tau = _tau(model, concept, config.tau)

    modules: dict[str, dict[str, Any]] = {}
    variants: dict[str, Any] = {"no patch": None}
    for module in config.modules:
        score = config.ffn_score if module == "ffn" else "magnitude"
        settings = acterase.Config(layers=module, score=score, tau=tau, agreement=config.agreement,
                                   branch=config.branch, steps=config.collect_steps,
                                   guidance_scale=config.guidance_scale, seed=config.collect_seed,
                                   synonyms=config.synonyms)  # fmt: skip
        collected, seconds = _collect(model, concept, settings, owner)
        variants[MODULE_LABELS[module]] = acterase.patch(collected, config.branch)
        modules[module] = {
            "label": MODULE_LABELS[module], "score": score, "collect_seconds": seconds,
            "density": _density(collected.mask), "entries": sum(m.numel() for m in collected.mask.values()),
            "layers": [{"label": site_label(s), "density": float(collected.mask[s].float().mean())}
                       for s in sorted(collected.mask, key=forward_order)],
        }  # fmt: skip

    if pocket:
        sets_ = evaluation_sets(concept, n=config.prompts_per_set)
        sets = {name: getattr(sets_, name) for name in SETS if getattr(sets_, name)}
    else:  # off pocket: the concept's own prompts and the given preservation prompts
        sets = {"target": tuple(concept.prompts()[:config.prompts_per_set]), "preservation": config.preservation}
    images, swept = _sweep_sets(model, sets, variants, seeds=config.seeds, steps=config.steps,
                                guidance_scale=config.guidance_scale, max_batch=config.max_batch)  # fmt: skip
    results: dict[str, dict[str, Any]] = {name: {} for name in variants}
    if pocket:
        for name in variants:
            scores = {s: _score(images[name][s], prompts, config.seeds, attribute, value,
                                exclude_target=s != "preservation") for s, prompts in sets.items()}  # fmt: skip
            results[name] = _module_summary(scores)
    plain = {name: _pixels(images["no patch"][name]) for name in sets}
    for name in variants:
        edited = {set_name: _pixels(images[name][set_name]) for set_name in sets}
        results[name]["pixel_change"] = {k: float(np.abs(v - plain[k]).mean()) for k, v in edited.items()}
        everything = np.concatenate(list(edited.values()))  # prompt-major: prompt i, seed j at i * per + j
        per_seed = [everything[j::len(config.seeds)] for j in range(len(config.seeds))]
        results[name]["spread"] = float(np.mean([images_.std(axis=0).mean() for images_ in per_seed]))
    before = results["no patch"]
    for entry in modules.values():
        entry.update(results[entry["label"]])
        if pocket:
            entry["preservation_ratio"] = (entry["preservation"] / before["preservation"] if before["preservation"]
                                           else None)  # fmt: skip
            entry["kept_ratio"] = entry["kept"] / before["kept"] if before["kept"] else None
        else:
            entry["selectivity"] = _ratio(entry["pixel_change"]["target"], entry["pixel_change"]["preservation"])

    shown = list(sets["target"][:config.show_prompts]) + (list(sets["preservation"][:2]) if config.show_prompts else [])
    per = len(config.seeds)
    image_rows = {}
    if config.show_prompts:
        for name in variants:
            picks = [images[name]["target"][i * per] for i in range(min(config.show_prompts, len(sets["target"])))]
            picks += [images[name]["preservation"][i * per] for i in range(min(2, len(sets["preservation"])))]
            image_rows[name] = picks
    metrics = {
        "measure": "oracle" if pocket else "pixel_change",
        "concept": concept.name, "attribute": attribute, "value": value, "tau": tau, "before": before,
        "modules": modules, "order": list(config.modules), "prompts": sets, "shown_prompts": shown,
        "sampling_seconds": swept.seconds, "sampling_calls": swept.calls,
        "images_per_variant": len(swept.images["no patch"]),
    }  # fmt: skip
    headline, notes = _modules_summary(metrics) if pocket else _modules_pixel_summary(metrics)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images=image_rows)


def _check_evaluation(owner: str, per_set: int, seeds: Sequence[int], steps: int, max_batch: int, show: int) -> None:
    for name, value in (("prompts", per_set), ("steps", steps), ("max_batch", max_batch)):
        if value < 1:
            raise ConfigError(f"{owner}: {name} setting {value} must be >= 1")
    if not seeds:
        raise ConfigError(f"{owner}: seeds=() gives no images; give at least one seed")
    if show < 0:
        raise ConfigError(f"{owner}: show_prompts={show} must be >= 0")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _ratio(a: float, b: float) -> float | None:
    """Selectivity: the change on the concept's prompts over the change on the preservation prompts."""
    return a / b if b > 0 else None


def _check_preservation(owner: str, prompts: Sequence[str], model: Diffusion) -> None:
    if not prompts:
        raise ConfigError(f"{owner}: preservation=() on {model.source!r}: off pocket there is no oracle and no "
                          "evaluation set; give preservation=('a photo of a dog', ...), prompts the erasure should "
                          "leave alone (their pixel change is the measure of damage)")  # fmt: skip
    bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ConfigError(f"{owner}: preservation holds empty prompts {bad!r}")


def _pixel_note(edited: str, plain: str) -> str:
    return (f"there is no oracle off pocket, so the numbers are the mean absolute pixel change (0-255) of each "
            f"{edited} image against the {plain} image of the same prompt and noise; a change shows that a patch acts "
            "on a prompt, not that the concept is gone, and erased rates need the pocket oracle (model='pocket').")


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _modules_summary(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    before, modules, concept = metrics["before"], metrics["modules"], metrics["concept"]
    headline: dict[str, Any] = {f"{concept} rate, no patch": before["target"]}
    notes = [f"Without a patch {before['target']:.2f} of the target-prompt images show {concept} "
             f"(synonym prompts {_fmt(before['synonyms'])}, {_fmt(before['unnamed'])} when the prompt does not name "
             f"it); preservation accuracy {before['preservation']:.2f}, other attributes kept {before['kept']:.2f}."]
    for entry in modules.values():
        headline[f"{entry['label']}: erased / preservation ratio"] = (
            f"{entry['target']:.2f} / {_fmt(entry['preservation_ratio'])}")
        notes.append(
            f"{entry['label']} ({entry['score']} score, mask density {entry['density']:.3f} of "
            f"{entry['entries']} entries): target rate {entry['target']:.2f}, synonyms {_fmt(entry['synonyms'])}, "
            f"unnamed {_fmt(entry['unnamed'])}; kept {entry['kept']:.2f}, preservation {entry['preservation']:.2f} "
            f"(ratio {_fmt(entry['preservation_ratio'])}); mean pixel change on preservation prompts "
            f"{entry['pixel_change']['preservation']:.1f} of 255, pixel spread across prompts "
            f"{entry['spread']:.1f} (no patch {before['spread']:.1f})."
        )  # fmt: skip
    if "ffn" in modules and "cross_attention" in modules:
        ffn, ca = modules["ffn"], modules["cross_attention"]
        better = "erases more" if ffn["target"] < ca["target"] else "erases less" if ffn["target"] > ca["target"] \
            else "erases as much"
        notes.append(f"FFN {better} than cross-attention output ({ffn['target']:.2f} vs {ca['target']:.2f}) at "
                     f"preservation ratio {_fmt(ffn['preservation_ratio'])} vs {_fmt(ca['preservation_ratio'])}; "
                     "the paper (Table 7, nudity on SD 1.5): FFN 6 exposed parts, CA 206, of 665 unpatched, "
                     "CLIP 30.42 vs 30.76.")  # fmt: skip
    if "unet_output" in modules:
        out = modules["unet_output"]
        same = " (the images barely depend on the prompt)" if out["spread"] < 0.5 * before["spread"] else ""
        notes.append(f"UNet output: target rate {out['target']:.2f}, preservation ratio "
                     f"{_fmt(out['preservation_ratio'])} with a mask over {out['density']:.2f} of the noise "
                     f"prediction; pixel spread {out['spread']:.1f} vs {before['spread']:.1f} unpatched{same}; "
                     "the paper's output patch (tuned) erases (100 of 665) but degrades generation (CLIP 25.59 vs "
                     "31.38).")  # fmt: skip
    return headline, notes


def _modules_pixel_summary(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    before, modules, concept = metrics["before"], metrics["modules"], metrics["concept"]
    counts = {name: len(prompts) for name, prompts in metrics["prompts"].items()}
    headline: dict[str, Any] = {}
    notes = [f"Erasing {concept!r} on {_count(counts['target'], 'target prompt')} (the templates) and "
             f"{_count(counts['preservation'], 'preservation prompt')}: {_pixel_note('patched', 'unpatched')}"]
    for entry in modules.values():
        change = entry["pixel_change"]
        headline[f"{entry['label']}: pixel change target / preservation"] = (
            f"{change['target']:.1f} / {change['preservation']:.1f}")
        headline[f"{entry['label']}: selectivity"] = entry["selectivity"]
        if entry["selectivity"] is None:
            reading = "the preservation prompts do not change, so the ratio is undefined"
        elif entry["selectivity"] > 1:
            reading = "the prompts naming the concept change more than the others"
        else:
            reading = "the preservation prompts change as much as or more than the prompts naming the concept"
        notes.append(
            f"{entry['label']} ({entry['score']} score, mask density {entry['density']:.3f} of {entry['entries']} "
            f"entries): mean pixel change {change['target']:.1f} of 255 on the target prompts and "
            f"{change['preservation']:.1f} on the preservation prompts, selectivity {_fmt(entry['selectivity'])} "
            f"({reading}); pixel spread across prompts {entry['spread']:.1f} (no patch {before['spread']:.1f})."
        )  # fmt: skip
    rated = [e for e in modules.values() if e["selectivity"] is not None]
    if len(rated) > 1:
        best = max(rated, key=lambda e: e["selectivity"])
        worst = min(rated, key=lambda e: e["selectivity"])
        notes.append(f"Most selective: {best['label']} ({best['selectivity']:.2f}); least: {worst['label']} "
                     f"({worst['selectivity']:.2f}). The paper (Table 7, SD 1.5) finds the FFN patch erases while "
                     "keeping CLIP score, the UNet output patch degrades generation.")  # fmt: skip
    return headline, notes


# -- multi_concept ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MultiConceptConfig:
    #: concepts, erased in this order: n concepts means the first n merged (Alg. 2); pocket words, or off
    #: pocket any words with templates
    concepts: tuple[str, ...] = ("red", "green", "blue", "yellow")
    #: prompt templates with "{}" for each concept word; () on pocket: circuits.pocket.concept's. Off pocket
    #: (required) the collection prompts, and the first prompts_per_concept of them each concept's evaluation prompts
    templates: tuple[str, ...] = ()
    #: off pocket (required): prompts no erasure should change, every one sampled (pocket: the never-erased values)
    preservation: tuple[str, ...] = ()
    #: numbers of merged concepts to evaluate (0, no erasure, is always there)
    counts: tuple[int, ...] = (1, 2, 4)
    #: ActErase settings of every single-concept erasure (tau None: App. A.3's per concept)
    layers: str = "ffn"
    score: Literal["wanda", "magnitude"] = "wanda"
    tau: float | None = None
    agreement: float = 0.5
    anchor: str = ""
    collect_steps: int = 30
    collect_seed: int = 0
    synonyms: bool = True
    #: also sample each later concept's own single erasure (tells a merge failure from a concept ActErase
    #: does not erase on its own)
    singles: bool = True
    #: evaluation prompts per listed concept (its pocket evaluation target prompts)
    prompts_per_concept: int = 4
    #: evaluation prompts per value of the concepts' attributes that is never erased
    prompts_per_other: int = 2
    #: one image per prompt and seed, the same noise for every n
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 25
    guidance_scale: float = 7.5
    max_batch: int = 64
    #: show the first prompt (first seed) of each concept and of each never-erased value
    show_images: bool = True


@experiment("multi_concept", MultiConceptConfig, draw=draw_multi, paper="ActErase Alg. 2, Table 11, Fig. 10",
            fast={"concepts": ("red", "blue"), "counts": (1, 2), "collect_steps": 2, "synonyms": False,
                  "prompts_per_concept": 1, "prompts_per_other": 1, "seeds": (0,), "steps": 3})  # fmt: skip
def multi_concept(model: Diffusion, config: MultiConceptConfig) -> ExperimentResult:
    """ActErase's merge (Alg. 2) of 1, 2, 4 concepts: erasure of each and preservation of the rest."""
    owner = "multi_concept"
    pocket = model.source == "pocket"
    _check_words(owner, config.concepts, model)
    _check_collection(owner, config.tau, config.agreement, config.collect_steps)
    _check_evaluation(owner, config.prompts_per_concept, config.seeds, config.steps, config.max_batch, 0)
    if config.prompts_per_other < 0:
        raise ConfigError(f"{owner}: prompts_per_other={config.prompts_per_other} must be >= 0")
    if not config.counts or any(not 1 <= n <= len(config.concepts) for n in config.counts) \
            or len(set(config.counts)) != len(config.counts):
        raise ConfigError(f"{owner}: counts={config.counts!r}; give distinct numbers of concepts in 1.."
                          f"{len(config.concepts)} (the first n of concepts={config.concepts!r} are merged)")
    concepts = [_concept(model, w, config.anchor, config.templates, owner) for w in config.concepts]
    if pocket:
        from circuits.pocket.concepts import ATTRIBUTES, attribute_of, evaluation_sets

        values = [attribute_of(c.target) for c in concepts]
        if len(set(values)) != len(values):
            raise ConfigError(f"{owner}: concepts={config.concepts!r} names a concept twice (synonyms are one "
                              "concept)")  # fmt: skip
    else:
        _check_preservation(owner, config.preservation, model)
        if "preservation" in config.concepts:
            raise ConfigError(f"{owner}: concepts={config.concepts!r}: 'preservation' names the preservation "
                              "prompt set; rename the concept")  # fmt: skip

    singles, fits = [], []
    for concept in concepts:
        settings = acterase.Config(layers=config.layers, score=config.score, tau=_tau(model, concept, config.tau),
                                   agreement=config.agreement, steps=config.collect_steps,
                                   guidance_scale=config.guidance_scale, seed=config.collect_seed,
                                   synonyms=config.synonyms)  # fmt: skip
        collected, seconds = _collect(model, concept, settings, owner)
        erasure = Erasure("acterase", concept, {}, acterase.patch(collected), acterase.trace(collected),
                          seconds=seconds)
        singles.append(erasure)
        fits.append({"concept": concept.name, "tau": settings.tau, "seconds": erasure.seconds,
                     "density": _density(collected.mask)})  # fmt: skip

    counts = sorted(config.counts)
    variants: dict[str, Any] = {"no erasure": None}
    erased_by: dict[str, tuple[str, int, list[str]]] = {"no erasure": ("none", 0, [])}
    merged_info = []
    for n in counts:
        merged = acterase.merge(singles[:n])
        masks = {item.site: item.mask for item in merged.graph}
        variants[f"n={n}"] = merged.graph
        erased_by[f"n={n}"] = ("merged", n, [c.name for c in concepts[:n]])
        merged_info.append({"n": n, "concepts": [c.name for c in concepts[:n]], "density": _density(masks),
                            "sum_of_single_densities": sum(f["density"] for f in fits[:n])})  # fmt: skip

    if config.singles:
        for concept, single in list(zip(concepts, singles))[1:]:
            variants[f"{concept.name} alone"] = single.graph
            erased_by[f"{concept.name} alone"] = ("single", 1, [concept.name])
    if not pocket:
        return _multi_pixels(model, config, concepts, variants, erased_by, fits, merged_info)
    sets: dict[str, tuple[str, ...]] = {c.name: evaluation_sets(c, n=config.prompts_per_concept).target
                                        for c in concepts}  # fmt: skip
    listed = set(values)
    others = [(a, v) for a in dict.fromkeys(a for a, _ in values) for v in ATTRIBUTES[a] if (a, v) not in listed]
    if config.prompts_per_other:
        for _, other in others:
            sets[f"other:{other}"] = evaluation_sets(other, n=config.prompts_per_other).target
    images, swept = _sweep_sets(model, sets, variants, seeds=config.seeds, steps=config.steps,
                                guidance_scale=config.guidance_scale, max_batch=config.max_batch)  # fmt: skip
    kinds = {c.name: attribute_of(c.target) for c in concepts} | {f"other:{v}": (a, v) for a, v in others}
    rows = []
    for variant in variants:
        kind, n, names = erased_by[variant]
        erased = set(names)
        per_set = {}
        for name, prompts in sets.items():
            attribute, value = kinds[name]
            rate = _score(images[variant][name], prompts, config.seeds, attribute, value, exclude_target=False)
            kept = _score(images[variant][name], prompts, config.seeds, attribute, value, exclude_target=True)
            per_set[name] = {"rate": rate["rate"], "accuracy": rate["accuracy"], "kept": kept["accuracy"],
                             "erased": name in erased}  # fmt: skip
        erased_rates = [per_set[c]["rate"] for c in erased]
        rest = [per_set[c.name]["rate"] for c in concepts if c.name not in erased]
        other_acc = [v["accuracy"] for k, v in per_set.items() if k.startswith("other:")]
        kept = [v["kept"] for v in per_set.values()]
        rows.append({
            "variant": variant, "kind": kind, "n": n, "sets": per_set,
            "erased_rate": sum(erased_rates) / len(erased_rates) if erased_rates else None,
            "rest_rate": sum(rest) / len(rest) if rest else None,
            "others_accuracy": sum(other_acc) / len(other_acc) if other_acc else None,
            "kept": sum(kept) / len(kept),
            "density": _variant_density(kind, n, erased, merged_info, fits),
        })  # fmt: skip
    return _multi_result("oracle", config, concepts, fits, merged_info, rows, sets, images, swept)


def _multi_pixels(model: Diffusion, config: MultiConceptConfig, concepts: list[Concept], variants: dict[str, Any],
                  erased_by: dict[str, tuple[str, int, list[str]]], fits: list[dict[str, Any]],
                  merged_info: list[dict[str, Any]]) -> ExperimentResult:
    """Off pocket: every concept's prompts and the preservation prompts under every variant, in one sweep, measured
    as the mean absolute pixel change against the same prompts and noise without erasure."""
    sets: dict[str, tuple[str, ...]] = {c.name: tuple(c.prompts()[:config.prompts_per_concept]) for c in concepts}
    sets["preservation"] = tuple(config.preservation)
    images, swept = _sweep_sets(model, sets, variants, seeds=config.seeds, steps=config.steps,
                                guidance_scale=config.guidance_scale, max_batch=config.max_batch)  # fmt: skip
    plain = {name: _pixels(images["no erasure"][name]) for name in sets}
    rows = []
    for variant in variants:
        kind, n, names = erased_by[variant]
        erased = set(names)
        per_set = {name: {"pixel_change": float(np.abs(_pixels(images[variant][name]) - plain[name]).mean()),
                          "erased": name in erased} for name in sets}  # fmt: skip
        erased_change = [per_set[c]["pixel_change"] for c in names]
        rest = [per_set[c.name]["pixel_change"] for c in concepts if c.name not in erased]
        mean_erased = sum(erased_change) / len(erased_change) if erased_change else None
        preservation = per_set["preservation"]["pixel_change"]
        rows.append({
            "variant": variant, "kind": kind, "n": n, "sets": per_set,
            "erased_change": mean_erased, "rest_change": sum(rest) / len(rest) if rest else None,
            "preservation_change": preservation,
            "selectivity": None if mean_erased is None else _ratio(mean_erased, preservation),
            "density": _variant_density(kind, n, erased, merged_info, fits),
        })  # fmt: skip
    return _multi_result("pixel_change", config, concepts, fits, merged_info, rows, sets, images, swept)


def _variant_density(kind: str, n: int, erased: set[str], merged_info: list[dict[str, Any]],
                     fits: list[dict[str, Any]]) -> float:
    """A merged variant's merged-mask density (0 with no erasure); a single erasure's own mask density."""
    if kind == "single":
        return next(f["density"] for f in fits if f["concept"] in erased)
    return next((m["density"] for m in merged_info if m["n"] == n), 0.0)


def _multi_result(measure: str, config: MultiConceptConfig, concepts: list[Concept], fits: list[dict[str, Any]],
                  merged_info: list[dict[str, Any]], rows: list[dict[str, Any]], sets: dict[str, tuple[str, ...]],
                  images: dict[str, dict[str, list[Any]]], swept: Any) -> ExperimentResult:
    """The metrics both measures share, the summary of ``measure``, and each variant's first image per set."""
    image_rows = {}
    if config.show_images:
        image_rows = {variant: [images[variant][name][0] for name in sets] for variant in images}
    metrics = {
        "measure": measure, "concepts": [c.name for c in concepts], "fits": fits, "merged": merged_info,
        "rows": rows, "prompts": sets, "shown_prompts": [ps[0] for ps in sets.values()], "set_names": list(sets),
        "sampling_seconds": swept.seconds, "sampling_calls": swept.calls,
        "images_per_variant": len(swept.images["no erasure"]),
    }  # fmt: skip
    headline, notes = (_multi_summary if measure == "oracle" else _multi_pixel_summary)(metrics)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images=image_rows)


def _multi_pixel_summary(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    rows = [row for row in metrics["rows"] if row["kind"] != "single"]
    singles = [row for row in metrics["rows"] if row["kind"] == "single"]
    counts = {name: len(prompts) for name, prompts in metrics["prompts"].items()}
    headline: dict[str, Any] = {}
    notes = [f"{len(metrics['concepts'])} concepts ({', '.join(metrics['concepts'])}; "
             f"{_count(counts[metrics['concepts'][0]], 'template prompt')} each) and "
             f"{_count(counts['preservation'], 'preservation prompt')}: {_pixel_note('erased', 'unerased')}"]
    for row, merged in zip(rows[1:], metrics["merged"]):
        headline[f"n={row['n']}: pixel change erased / preservation"] = (
            f"{row['erased_change']:.1f} / {row['preservation_change']:.1f}")
        headline[f"n={row['n']}: selectivity"] = row["selectivity"]
        each = ", ".join(f"{c} {row['sets'][c]['pixel_change']:.1f}" for c in merged["concepts"])
        rest = f", listed but not yet erased {row['rest_change']:.1f}" if row["rest_change"] is not None else ""
        notes.append(
            f"n={row['n']} (merged mask density {merged['density']:.3f}; the single masks sum to "
            f"{merged['sum_of_single_densities']:.3f}): mean pixel change on the erased concepts' prompts "
            f"{row['erased_change']:.1f} of 255 ({each}){rest}, on the preservation prompts "
            f"{row['preservation_change']:.1f}; selectivity {_fmt(row['selectivity'])}."
        )  # fmt: skip
    if singles:
        parts = [f"{row['variant']}: own prompts {row['erased_change']:.1f}, preservation "
                 f"{row['preservation_change']:.1f}" for row in singles]  # fmt: skip
        notes.append("Each later concept's own single erasure: " + "; ".join(parts) + ".")
    first, last = rows[1], rows[-1]
    if last["n"] > first["n"]:
        trend = "rises" if last["preservation_change"] > first["preservation_change"] + 1e-9 else "does not rise"
        notes.append(f"As n grows from {first['n']} to {last['n']} the merged mask grows from {first['density']:.3f} "
                     f"to {last['density']:.3f} and the pixel change on the preservation prompts {trend} "
                     f"({first['preservation_change']:.1f} -> {last['preservation_change']:.1f}; selectivity "
                     f"{_fmt(first['selectivity'])} -> {_fmt(last['selectivity'])}); the paper (Table 11) sees FID "
                     "rise from 20.9 to 222 from 1 to 10 merged concepts on SD 1.5.")  # fmt: skip
    return headline, notes


def _multi_summary(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    rows = [row for row in metrics["rows"] if row["kind"] != "single"]
    singles = {row["variant"].removesuffix(" alone"): row for row in metrics["rows"] if row["kind"] == "single"}
    base = rows[0]
    headline: dict[str, Any] = {}
    notes = []
    before = ", ".join(f"{c} {base['sets'][c]['rate']:.2f}" for c in metrics["concepts"])
    notes.append(f"Without erasure each concept's prompts show it at rate {before}; never-erased values' accuracy "
                 f"{_fmt(base['others_accuracy'])}, other attributes kept {base['kept']:.2f}.")  # fmt: skip
    for row, merged in zip(rows[1:], metrics["merged"]):
        headline[f"n={row['n']}: erased rate"] = row["erased_rate"]
        headline[f"n={row['n']}: others accuracy"] = row["others_accuracy"]
        each = ", ".join(f"{c} {row['sets'][c]['rate']:.2f}" for c in merged["concepts"])
        rest = [c for c in metrics["concepts"] if c not in merged["concepts"]]
        rest_text = ", not erased: " + ", ".join(
            f"{c} {row['sets'][c]['rate']:.2f} (was {base['sets'][c]['rate']:.2f})" for c in rest) if rest else ""
        notes.append(
            f"n={row['n']} (merged mask density {merged['density']:.3f}; the single masks sum to "
            f"{merged['sum_of_single_densities']:.3f}): erased {each}{rest_text}; never-erased values' accuracy "
            f"{_fmt(row['others_accuracy'])} (was {_fmt(base['others_accuracy'])}), other attributes kept "
            f"{row['kept']:.2f} (was {base['kept']:.2f})."
        )  # fmt: skip
    if singles:
        last = rows[-1]
        parts = []
        for name, row in singles.items():
            erased = last["sets"][name]["erased"]
            in_merge = f", in the n={last['n']} merge {last['sets'][name]['rate']:.2f}" if erased else ""
            off = [v["rate"] for k, v in row["sets"].items() if not v["erased"]]
            parts.append(f"{name} {row['sets'][name]['rate']:.2f} (every other set's own value "
                         f"{sum(off) / len(off):.2f}, kept {row['kept']:.2f}{in_merge})")
        erased = [name for name, row in singles.items() if row["sets"][name]["rate"] <= 0.5]
        notes.append("Each later concept's own single erasure: rate on its prompts " + "; ".join(parts) + ". "
                     f"{len(erased)} of {len(singles)} of them bring their concept's rate to <= 0.5 on their own"
                     + (f" ({', '.join(erased)})" if erased else "") + ".")
    first, last = rows[1], rows[-1]
    if last["n"] > first["n"] and last["others_accuracy"] is not None and first["others_accuracy"] is not None:
        trend = "falls" if last["others_accuracy"] < first["others_accuracy"] - 1e-9 else "does not fall"
        notes.append(f"As n grows from {first['n']} to {last['n']} the merged mask grows from {first['density']:.3f} "
                     f"to {last['density']:.3f} and the accuracy on never-erased values {trend} "
                     f"({first['others_accuracy']:.2f} -> {last['others_accuracy']:.2f}); the paper (Table 11) sees "
                     "FID rise from 20.9 to 222 and CLIP fall from 30.7 to 20.3 from 1 to 10 merged concepts on "
                     "SD 1.5.")  # fmt: skip
    return headline, notes
