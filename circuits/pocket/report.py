"""Erasure reports on pocket: does the concept leave, does the rest stay?

:func:`erasure_report` samples the prompt sets of :func:`circuits.pocket.evaluation_sets` (prompts naming
the target, naming its synonyms, implying it through an implicit noun, naming the attribute's other
values) with and without an erasure's graph, from the same noise, and lets the oracle read every image:

- **erased rate**: the fraction of images showing the target value (``red`` on "a red circle"; for an
  implicit noun, an object of its colour and shape; for a relation, the objects standing that way);
  before erasure it is the model's prompt following;
- **kept**: on target prompts, the accuracy of what the prompt asks for besides the target;
- **preservation accuracy**: on the other values' prompts, the accuracy over everything they ask for;
- **unnamed rate** (before only): how often the model draws the target value when the prompt does
  not name it ("a striped circle ..."): the floor an erasure to the empty anchor can reach.

Scoring (:func:`score_images`) reads as many objects as each prompt names and checks the prompt with
:mod:`circuits.pocket.following`. Each set is one batched sampling call (prompts x ``samples`` rows, noise
from ``seed``). :func:`damage` measures what a graph does to plain prompts: oracle accuracy and pixel
difference against unedited images of the same noise (ErasePro's depth-sensitivity probe).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from circuits.methods.concept import Concept, as_concept
from circuits.models.diffusion import Diffusion
from circuits.pocket.captions import parse
from circuits.pocket.concepts import EvaluationSets, attribute_of, evaluation_sets
from circuits.pocket.following import Following, follow, object_counts
from circuits.pocket.oracle import ImageRead, shared_oracle
from circuits.pocket.scene import IMPLICIT

SETS = ("target", "synonyms", "implicit", "preservation")


def named_attributes(prompt: str) -> dict[str, str]:
    """The attributes a prompt names for its first object: ``{"colour": "red", "shape": "circle", ...}``
    (synonyms canonical; an implicit noun names nothing, see :func:`implied_attributes`)."""
    objects = parse(prompt).objects
    return dict(objects[0].named) if objects else {}


def implied_attributes(prompt: str) -> dict[str, str]:
    """The attributes the first object's implicit noun means without naming them (``"a dax"``: red circle)."""
    objects = parse(prompt).objects
    return dict(objects[0].implied) if objects else {}


def value_present(read: ImageRead, attribute: str, value: str, following: Following | None = None) -> bool:
    """Whether the image shows the concept ``attribute = value``: some object has it (an implicit noun's
    concept: some object has its colour and its shape; a relation: the prompt's objects stand that way)."""
    if attribute == "implicit":
        meaning = IMPLICIT[value]
        return any(o.colour == meaning["colour"] and o.shape == meaning["shape"] for o in read.objects)
    if attribute == "relation":
        checks = [c for c in following.checks if c.kind == "relation"] if following is not None else []
        return bool(checks) and checks[0].read == value
    return any(o.get(attribute) == value for o in read.objects)


@dataclass
class SetScore:
    """What the oracle read on one prompt set under one graph."""

    prompts: list[str]
    images: int
    erased_rate: float | None  # fraction read as the target value (target and synonym sets)
    accuracy: float  # mean accuracy over the named attributes scored on this set
    per_attribute: dict[str, float]
    seconds: float
    reads: list[dict[str, str]] = field(default_factory=list, repr=False)


@dataclass
class ErasureReport:
    """Before/after scores of one erasure on pocket."""

    concept: str
    attribute: str
    value: str
    before: dict[str, SetScore]
    after: dict[str, SetScore]
    samples: int
    seed: int
    steps: int

    @property
    def erased_rate(self) -> dict[str, float | None]:
        return {name: score.erased_rate for name, score in self.after.items()
                if name in ("target", "synonyms", "implicit")}  # fmt: skip

    @property
    def preservation(self) -> float:
        return self.after["preservation"].accuracy

    @property
    def preservation_ratio(self) -> float:
        """Preservation accuracy after / before (1 = nothing lost)."""
        before = self.before["preservation"].accuracy
        return self.after["preservation"].accuracy / before if before > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        """The headline numbers (what the methods table prints)."""
        def rate(scores: dict[str, SetScore], name: str) -> float | None:
            return scores[name].erased_rate if name in scores else None

        return {
            "concept": self.concept,
            "unnamed_rate": rate(self.before, "unnamed"),
            "target_before": rate(self.before, "target"),
            "target_after": rate(self.after, "target"),
            "synonyms_before": rate(self.before, "synonyms"),
            "synonyms_after": rate(self.after, "synonyms"),
            "implicit_before": rate(self.before, "implicit"),
            "implicit_after": rate(self.after, "implicit"),
            "kept_before": self.before["target"].accuracy,
            "kept_after": self.after["target"].accuracy,
            "preservation_before": self.before["preservation"].accuracy,
            "preservation_after": self.after["preservation"].accuracy,
            "preservation_ratio": self.preservation_ratio,
            "sampling_seconds": sum(s.seconds for s in self.after.values()),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = self.summary()
        return out


def score_images(images: Sequence[Any], prompts: Sequence[str], attribute: str, value: str, *,
                 exclude_target: bool) -> tuple[float, dict[str, float], list[dict[str, str]]]:
    """Erased rate (share of images showing ``attribute = value``) and the accuracy of what each prompt asks
    for, per attribute (without the erased one when ``exclude_target``): named colour/shape/texture, the
    ``implied_*`` attributes of implicit nouns, and for two-object prompts ``binding`` and ``relation``.
    Objects are read as :func:`circuits.pocket.following.follow_images` reads them (as many as each prompt
    names). ``rows``: per image, what the oracle read of the prompt's first object and the background."""
    parsed = [parse(p) for p in prompts]
    reads = shared_oracle().read_objects(list(images), object_counts(parsed))
    followings = [follow(p, r) for p, r in zip(parsed, reads)]
    target_keys = {attribute}
    if attribute == "implicit":
        target_keys = {f"implied_{k}" for k in IMPLICIT.get(value, {})} | {"binding"}
    elif attribute in ("colour", "shape", "texture"):
        target_keys |= {f"implied_{attribute}"}
    hits: dict[str, list[bool]] = {}
    rows = []
    for following, read, p in zip(followings, reads, parsed):
        for check in following.checks:
            if check.kind == "background" or (check.kind == "binding" and len(p.objects) < 2):
                continue  # as in v1: backgrounds are not scored; one object's binding is its colour and shape
            key = {"named": check.attribute, "implied": f"implied_{check.attribute}"}.get(check.kind, check.kind)
            if exclude_target and key in target_keys:
                continue
            hits.setdefault(key, []).append(check.ok)
        first = following.matched[0] if following.matched else None
        obj = read.objects[first] if first is not None else (read.objects[0] if read.objects else None)
        row = {k: (obj.get(k) if obj is not None else "") for k in ("colour", "shape", "texture")}
        rows.append(row | {"background": read.background})
    erased = float(np.mean([value_present(r, attribute, value, f) for r, f in zip(reads, followings)]))
    per_attribute = {k: float(np.mean(v)) for k, v in hits.items()}
    all_hits = [h for v in hits.values() for h in v]
    return erased, per_attribute | {"_mean": float(np.mean(all_hits)) if all_hits else float("nan")}, rows


def _score_set(model: Diffusion, prompts: Sequence[str], graph: Any, attribute: str, value: str, *,
               is_target: bool, samples: int, seed: int, steps: int, progress: bool) -> SetScore:
    import circuits

    rows = [p for p in prompts for _ in range(samples)]
    start = time.perf_counter()
    result = circuits.sample(model, rows, seed=seed, steps=steps, graph=graph, progress=progress)
    seconds = time.perf_counter() - start
    erased, per_attribute, reads = score_images(result.images, rows, attribute, value, exclude_target=is_target)
    mean = per_attribute.pop("_mean")
    return SetScore(list(prompts), len(rows), erased if is_target else None, mean, per_attribute, seconds, reads)


def erasure_report(
    model: Diffusion,
    concept: Concept | str,
    graph: Any,
    *,
    sets: EvaluationSets | None = None,
    samples: int = 4,
    seed: int = 0,
    steps: int = 25,
    baseline: ErasureReport | None = None,
    progress: bool = False,
) -> ErasureReport:
    """Oracle reads of target, synonym and preservation prompts with and without ``graph``.

    ``graph`` is anything ``circuits.sample`` takes (an ``Erasure``, a ``Graph``). ``baseline``
    reuses the "before" scores of an earlier report on the same concept and settings.
    """
    concept = as_concept(concept, model)
    attribute, value = attribute_of(concept.target)
    sets = sets or evaluation_sets(concept)
    prompt_sets = {"target": sets.target, "synonyms": sets.synonyms, "implicit": sets.implicit,
                   "preservation": sets.preservation}  # fmt: skip
    prompt_sets = {k: v for k, v in prompt_sets.items() if v}
    settings = dict(samples=samples, seed=seed, steps=steps, progress=progress)

    def run(g: Any) -> dict[str, SetScore]:
        scores = {
            name: _score_set(model, prompts, g, attribute, value, is_target=name != "preservation", **settings)
            for name, prompts in prompt_sets.items()
        }
        if g is None and sets.unnamed:
            scores["unnamed"] = _score_set(model, sets.unnamed, None, attribute, value, is_target=True, **settings)
        return scores

    if baseline is not None and (baseline.value, baseline.samples, baseline.seed, baseline.steps) == (
        value, samples, seed, steps
    ):
        before = baseline.before
    else:
        before = run(None)
    return ErasureReport(concept.name, attribute, value, before, run(graph), samples, seed, steps)


def damage(model: Diffusion, prompts: Sequence[str], graph: Any, *, samples: int = 2, seed: int = 0,
           steps: int = 25, progress: bool = False) -> dict[str, Any]:
    """What ``graph`` does to ``prompts``: oracle accuracy (all named attributes) and the mean absolute
    pixel difference (0-255) and PSNR against the unedited images from the same noise."""
    import circuits

    rows = [p for p in prompts for _ in range(samples)]
    plain = circuits.sample(model, rows, seed=seed, steps=steps, progress=progress)
    edited = circuits.sample(model, rows, seed=seed, steps=steps, graph=graph, progress=progress)
    a = np.stack([np.asarray(i, dtype=np.float64) for i in plain.images])
    b = np.stack([np.asarray(i, dtype=np.float64) for i in edited.images])
    mse = float(np.mean((a - b) ** 2))
    _, before, _ = score_images(plain.images, rows, "colour", "", exclude_target=False)
    _, after, _ = score_images(edited.images, rows, "colour", "", exclude_target=False)
    return {
        "accuracy_before": before.pop("_mean"),
        "accuracy_after": after.pop("_mean"),
        "per_attribute_after": after,
        "pixel_difference": float(np.mean(np.abs(a - b))),
        "psnr_db": float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf"),
        "images": edited.images,
    }
