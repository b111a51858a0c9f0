"""``patch_modules``: ActErase's module comparison (Table 7: FFN vs cross-attention output vs UNet output).

Sun et al., *ActErase*, on top of :mod:`circuits.methods.acterase`. Each module is collected with the
same settings and patched; the pocket evaluation sets (target, synonym, preservation and unnamed
prompts of :func:`circuits.pocket.evaluation_sets`) are sampled under every patch and without one, as
row blocks of one batched :func:`circuits.sampling.sweep` (``MaskedPatch`` graphs are per-call, so the
variants share each batch), and read by the oracle (:func:`circuits.pocket.report.score_images`, the
scoring of ``erasure_report``): erased rate on target and synonym prompts, kept attributes,
preservation. Two pixel measures stand in for the paper's CLIP score: the mean absolute change against
the unpatched image of the same prompt and seed, and the spread across prompts (per seed, the pixel
standard deviation over the prompts; near 0 when every prompt gives the same image).

Off pocket (any SD1.x/2.x folder): the concept is a word, ``templates`` put it in context (the
collection prompts; the first ``prompts_per_set`` are the target prompts) and ``preservation`` are the
prompts to leave alone; there is no oracle, so each module is measured by the mean absolute pixel
change (0-255) against the unpatched images of the same noise on both sets and the selectivity
(target change / preservation change); ``metrics["measure"]`` says which (``"oracle"`` or
``"pixel_change"``).

Decisions (the shared ones: :mod:`.acterase_shared`):

- **Scores per module**: FFN uses ``wanda`` (``ffn_score``); cross-attention output and UNet output
  use ``magnitude``, the only score defined where no linear layer reads the site (the paper: "for the
  output module ... we directly used activation intensity"). tau and ``agreement`` are the same for
  all modules; the paper tuned the output module ("after multiple parameter adjustments"), which is
  left to overrides here.
- **UNet output** is the ``unet_output`` layer set of :mod:`circuits.methods.acterase` (a
  ``MaskedPatch`` at ``unet.eps``, the conditional noise prediction): nothing was added for it.
- **Evaluation**: every variant samples every prompt with the same seeds (one image per prompt and
  seed); the unnamed prompts are sampled under each patch too, so the figure shows how often the
  value appears unasked with and without the erasure.

Measured cost of the defaults (``circuits run patch_modules``, one thread, shared 2-core machine):
76 s (62 s CPU time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from circuits.analysis.acterase import draw_modules
from circuits.experiments.overrides import ConfigError
from circuits.experiments.recipes.acterase_shared import (
    check_collection,
    check_evaluation,
    check_preservation,
    collect_timed,
    concept_for,
    fmt,
    forward_order,
    mask_density,
    oracle_score,
    pixel_note,
    plural,
    ratio_or_none,
    site_label,
    sweep_sets,
    tau_for,
    to_pixels,
)
from circuits.experiments.registry import experiment
from circuits.experiments.result import ExperimentResult
from circuits.methods import acterase
from circuits.methods.common import model_defaults
from circuits.models.diffusion import Diffusion

MODULE_LABELS = {"ffn": "FFN", "cross_attention": "cross-attention output", "unet_output": "UNet output"}


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
    check_collection(owner, config.tau, config.agreement, config.collect_steps)
    check_evaluation(owner, config.prompts_per_set, config.seeds, config.steps, config.max_batch, config.show_prompts)
    concept = concept_for(model, config.concept, config.anchor, config.templates, owner)
    if pocket:
        from circuits.pocket.concepts import attribute_of, evaluation_sets

        attribute, value = attribute_of(concept.target)
    else:
        check_preservation(owner, config.preservation, model)
        attribute, value = "", concept.target
    tau = tau_for(model, concept, config.tau)

    modules: dict[str, dict[str, Any]] = {}
    variants: dict[str, Any] = {"no patch": None}
    for module in config.modules:
        score = config.ffn_score if module == "ffn" else "magnitude"
        settings = replace(model_defaults(acterase.Config, model),  # paper() on SD, pocket() on pocket
                           layers=module, score=score, tau=tau, agreement=config.agreement,
                           branch=config.branch, steps=config.collect_steps,
                           guidance_scale=config.guidance_scale, seed=config.collect_seed,
                           synonyms=config.synonyms)  # fmt: skip
        collected, seconds = collect_timed(model, concept, settings, owner)
        variants[MODULE_LABELS[module]] = acterase.patch(collected, config.branch)
        modules[module] = {
            "label": MODULE_LABELS[module], "score": score, "collect_seconds": seconds,
            "density": mask_density(collected.mask), "entries": sum(m.numel() for m in collected.mask.values()),
            "layers": [{"label": site_label(s), "density": float(collected.mask[s].float().mean())}
                       for s in sorted(collected.mask, key=forward_order)],
        }  # fmt: skip

    if pocket:
        sets_ = evaluation_sets(concept, n=config.prompts_per_set)
        sets = {name: getattr(sets_, name) for name in SETS if getattr(sets_, name)}
    else:  # off pocket: the concept's own prompts and the given preservation prompts
        sets = {"target": tuple(concept.prompts()[:config.prompts_per_set]), "preservation": config.preservation}
    images, swept = sweep_sets(model, sets, variants, seeds=config.seeds, steps=config.steps,
                               guidance_scale=config.guidance_scale, max_batch=config.max_batch)  # fmt: skip
    results: dict[str, dict[str, Any]] = {name: {} for name in variants}
    if pocket:
        for name in variants:
            scores = {s: oracle_score(images[name][s], prompts, config.seeds, attribute, value,
                                      exclude_target=s != "preservation") for s, prompts in sets.items()}  # fmt: skip
            results[name] = _module_summary(scores)
    plain = {name: to_pixels(images["no patch"][name]) for name in sets}
    for name in variants:
        edited = {set_name: to_pixels(images[name][set_name]) for set_name in sets}
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
            entry["selectivity"] = ratio_or_none(entry["pixel_change"]["target"], entry["pixel_change"]["preservation"])

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



def _modules_summary(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    before, modules, concept = metrics["before"], metrics["modules"], metrics["concept"]
    headline: dict[str, Any] = {f"{concept} rate, no patch": before["target"]}
    notes = [f"Without a patch {before['target']:.2f} of the target-prompt images show {concept} "
             f"(synonym prompts {fmt(before['synonyms'])}, {fmt(before['unnamed'])} when the prompt does not name "
             f"it); preservation accuracy {before['preservation']:.2f}, other attributes kept {before['kept']:.2f}."]
    for entry in modules.values():
        headline[f"{entry['label']}: erased / preservation ratio"] = (
            f"{entry['target']:.2f} / {fmt(entry['preservation_ratio'])}")
        notes.append(
            f"{entry['label']} ({entry['score']} score, mask density {entry['density']:.3f} of "
            f"{entry['entries']} entries): target rate {entry['target']:.2f}, synonyms {fmt(entry['synonyms'])}, "
            f"unnamed {fmt(entry['unnamed'])}; kept {entry['kept']:.2f}, preservation {entry['preservation']:.2f} "
            f"(ratio {fmt(entry['preservation_ratio'])}); mean pixel change on preservation prompts "
            f"{entry['pixel_change']['preservation']:.1f} of 255, pixel spread across prompts "
            f"{entry['spread']:.1f} (no patch {before['spread']:.1f})."
        )  # fmt: skip
    if "ffn" in modules and "cross_attention" in modules:
        ffn, ca = modules["ffn"], modules["cross_attention"]
        better = "erases more" if ffn["target"] < ca["target"] else "erases less" if ffn["target"] > ca["target"] \
            else "erases as much"
        notes.append(f"FFN {better} than cross-attention output ({ffn['target']:.2f} vs {ca['target']:.2f}) at "
                     f"preservation ratio {fmt(ffn['preservation_ratio'])} vs {fmt(ca['preservation_ratio'])}; "
                     "the paper (Table 7, nudity on SD 1.5): FFN 6 exposed parts, CA 206, of 665 unpatched, "
                     "CLIP 30.42 vs 30.76.")  # fmt: skip
    if "unet_output" in modules:
        out = modules["unet_output"]
        same = " (the images barely depend on the prompt)" if out["spread"] < 0.5 * before["spread"] else ""
        notes.append(f"UNet output: target rate {out['target']:.2f}, preservation ratio "
                     f"{fmt(out['preservation_ratio'])} with a mask over {out['density']:.2f} of the noise "
                     f"prediction; pixel spread {out['spread']:.1f} vs {before['spread']:.1f} unpatched{same}; "
                     "the paper's output patch (tuned) erases (100 of 665) but degrades generation (CLIP 25.59 vs "
                     "31.38).")  # fmt: skip
    return headline, notes


def _modules_pixel_summary(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    before, modules, concept = metrics["before"], metrics["modules"], metrics["concept"]
    counts = {name: len(prompts) for name, prompts in metrics["prompts"].items()}
    headline: dict[str, Any] = {}
    notes = [f"Erasing {concept!r} on {plural(counts['target'], 'target prompt')} (the templates) and "
             f"{plural(counts['preservation'], 'preservation prompt')}: {pixel_note('patched', 'unpatched')}"]
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
            f"{change['preservation']:.1f} on the preservation prompts, selectivity {fmt(entry['selectivity'])} "
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
