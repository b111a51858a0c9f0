"""``cfg_reversal``: ANT Fig. 3, the same noise sampled with plain CFG and with the condition direction
reversed for ``t <= t'``, over a grid of ``t'``.

ANT (Sec. 3.1, Eq. 1) flips ``delta = eps(z, t, c) - eps(z, t)`` in the mid-to-late steps. Its Fig. 3
shows that with a well-chosen ``t'`` the image keeps its layout and loses attributes, that too early a
``t'`` loses the structure, and that too late a ``t'`` changes only details. Here
:func:`circuits.methods.ant.reversal_study` samples every ``t'`` and plain CFG as row blocks of batched
calls (:func:`circuits.sampling.sweep`, Rowwise guidance), and the figure is a grid (rows: plain CFG
and each ``t'``; columns: prompts) plus the measures against ``t'``.

Decisions:

- "Kept" is measured against the plain image of the same prompt and noise, never against the
  prompt: an attribute is kept when the pocket oracle reads the same value on both images. Shape is
  the layout; colour and texture are the attributes (their mean is "attributes kept").
- Layout without the oracle's classifiers: the cosine of the final latents, the mean absolute pixel
  difference (0-255), and from the oracle's foreground masks the IoU of their bounding boxes (where
  the object is and how large) and the shift of their centres in pixels. The IoU of the masks and
  of the *silhouettes* (masks with their holes filled) are reported too; both are low even for
  near-identical images (0.5-0.6 at t' = 100 on pocket), since the foreground of striped and
  outlined 32 x 32 objects is thin, in pieces, and shifts by a pixel; the box is the robust one.
- 50 DDIM steps, as the paper samples (Sec. 4.1), whatever the model's own scheduler
  (``scheduler=None`` uses that one; pocket's own is DDIM).
- ``t'`` is in the scheduler's timestep units (0-1000). The paper reverses at 25, 35 and 45 of 50
  steps; the figure labels each ``t'`` with the number of reversed steps for comparison.
- On a model other than pocket only the latent cosine and the pixel difference are measured.
- The default prompts are the pocket evaluation prompts of ``red``, ``circle`` and ``striped`` (two
  each), all striped or outlined objects on gray, as in ``docs/recipes/ant.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circuits.analysis.ant import draw_reversal
from circuits.experiments.overrides import ConfigError
from circuits.experiments.registry import experiment, show_progress
from circuits.experiments.result import ExperimentResult
from circuits.methods.ant import reversal_study
from circuits.models.diffusion import Diffusion

#: two evaluation prompts of each of red, circle, striped (circuits.pocket.evaluation_sets(w, n=2).target)
POCKET_PROMPTS = (
    "an outlined red triangle on a gray background", "a striped red square on a gray background",
    "an outlined blue circle on a gray background", "a striped purple circle on a gray background",
    "a striped blue triangle on a gray background", "a striped purple square on a gray background",
)  # fmt: skip
ATTRIBUTES = ("shape", "colour", "texture", "background")
#: share of images whose shape the oracle reads as on the plain image, from which a t' counts as keeping the layout
LAYOUT_KEPT = 0.5


@dataclass(frozen=True)
class CfgReversalConfig:
    #: prompts, one column each in the grid
    prompts: tuple[str, ...] = POCKET_PROMPTS
    #: noise seeds: each prompt is sampled once per seed, with the same noise for plain CFG and every t'
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    #: reversal timesteps t' in scheduler units (0-1000); plain CFG is always sampled too
    t_primes: tuple[float, ...] = (100.0, 200.0, 300.0, 400.0, 500.0, 700.0, 860.0)
    #: denoising steps (the paper: 50)
    steps: int = 50
    #: sampler (the paper: DDIM, Sec. 4.1); None = the model's own (PNDM on SD 1.x checkpoints)
    scheduler: str | None = "ddim"
    #: CFG scale of both the plain and the reversed guidance
    guidance_scale: float = 7.5
    #: images per batched sampling call
    max_batch: int = 64
    #: seeds of each prompt drawn in the image grid (the first ones)
    show_seeds: int = 1


def _check(config: CfgReversalConfig) -> None:
    if not config.prompts or not config.seeds or not config.t_primes:
        raise ConfigError("cfg_reversal: give at least one prompt, one seed and one t' (t_primes)")
    if config.steps < 2 or config.max_batch < 1 or config.show_seeds < 0:
        raise ConfigError(f"cfg_reversal: steps={config.steps} >= 2, max_batch={config.max_batch} >= 1 and "
                          f"show_seeds={config.show_seeds} >= 0 are required")  # fmt: skip
    if len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"cfg_reversal: seeds={config.seeds!r} repeats a seed")


def _label(t_prime: float, reversed_steps: int, steps: int) -> str:
    return f"t'={t_prime:g} ({reversed_steps}/{steps} rev.)"


@experiment("cfg_reversal", CfgReversalConfig, draw=draw_reversal, paper="ANT Fig. 3",
            fast={"prompts": POCKET_PROMPTS[:2], "seeds": (0,), "t_primes": (0.0, 300.0, 999.0),
                  "steps": 4})  # fmt: skip
def cfg_reversal(model: Diffusion, config: CfgReversalConfig) -> ExperimentResult:
    """Reverse the CFG direction for t <= t' over a grid of t': which t' keeps the layout and changes attributes?"""
    _check(config)
    study = reversal_study(model, list(config.prompts), list(config.t_primes), seeds=list(config.seeds),
                           steps=config.steps, guidance_scale=config.guidance_scale, max_batch=config.max_batch,
                           scheduler=config.scheduler, progress=show_progress())  # fmt: skip
    oracle = bool(study.reads)
    rows = sorted((_with_kept(row) for row in study.rows), key=lambda r: r["t_prime"])
    reference = _with_kept(study.reference)
    n_seeds = len(config.seeds)
    shown = [(p, s) for p in range(len(config.prompts)) for s in range(min(config.show_seeds, n_seeds))]
    images: dict[str, list[Any]] = {}
    if shown:
        images["plain CFG"] = [study.baseline[p * n_seeds + s] for p, s in shown]
        for row in rows:
            label = _label(row["t_prime"], row["reversed_steps"], config.steps)
            images[label] = [study.images[row["t_prime"]][p * n_seeds + s] for p, s in shown]
    columns = [config.prompts[p] + (f" (seed {config.seeds[s]})" if config.show_seeds > 1 else "") for p, s in shown]
    metrics = {
        "prompts": list(config.prompts), "seeds": list(config.seeds), "steps": config.steps,
        "timesteps": study.timesteps, "oracle": oracle, "plain": reference, "rows": rows,
        "reads": {("plain" if key == "plain" else f"t'={key:g}"): value for key, value in study.reads.items()},
        "shown_columns": columns, "sampling_calls": study.calls,
        "images_per_variant": len(study.baseline),
    }  # fmt: skip
    headline, notes = summarise(metrics)
    return ExperimentResult(metrics=metrics, headline=headline, notes=notes, images=images)


def _with_kept(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for attr in ATTRIBUTES:
        if f"changed_{attr}" in row:
            out[f"kept_{attr}"] = 1.0 - row[f"changed_{attr}"]
    if "kept_colour" in out:
        out["kept_attributes"] = (out["kept_colour"] + out["kept_texture"]) / 2
    return out


def summarise(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Headline numbers and notes, computed from the rows (every claim is a number of this run)."""
    rows, steps = metrics["rows"], metrics["steps"]
    n = metrics["images_per_variant"]
    headline: dict[str, Any] = {}
    notes: list[str] = []

    def at(row: dict[str, Any]) -> str:
        return f"t'={row['t_prime']:g} ({row['reversed_steps']}/{steps} steps reversed)"

    if not metrics["oracle"]:
        for row in (rows[0], rows[-1]):
            headline[f"latent cosine, t'={row['t_prime']:g}"] = row["latent_cosine"]
            headline[f"pixel diff, t'={row['t_prime']:g}"] = row["pixel_difference"]
        notes.append(
            "Latent cosine with the plain images, by t': "
            + ", ".join(f"{r['t_prime']:g}: {r['latent_cosine']:.2f}" for r in rows)
            + f" ({n} images per t'; no oracle off pocket, so no attribute reads)."
        )
        return headline, notes

    plain = metrics["plain"]
    asked = ", ".join(f"{a} {plain[f'matches_{a}']:.2f}" for a in ("colour", "shape", "texture")
                      if plain.get(f"matches_{a}") == plain.get(f"matches_{a}"))  # fmt: skip
    notes.append(f"Plain CFG: the oracle reads what the prompt names in these fractions of the {n} images: {asked}.")
    reversing = [r for r in rows if r["reversed_steps"] > 0]
    if not reversing:
        notes.append("No t' reverses any step of this schedule, so every image equals its plain one.")
        return headline, notes
    # the gap only means "layout kept, attributes changed" where the layout is kept; at a t' that redraws
    # everything, shapes can match by chance
    keeping = [r for r in reversing if r["kept_shape"] >= LAYOUT_KEPT]
    if not keeping:
        most = max(reversing, key=lambda r: r["kept_shape"])
        notes.append(
            f"No t' keeps the layout: at best {at(most)} keeps shapes in {most['kept_shape']:.2f} of the images, "
            "so no t' here changes the attributes while keeping the layout (ANT Fig. 3)."
        )
        return headline, notes
    best = max(keeping, key=lambda r: (r["kept_shape"] - r["kept_attributes"], -r["t_prime"]))
    gap = best["kept_shape"] - best["kept_attributes"]
    headline["t' with the widest layout-attribute gap"] = best["t_prime"]
    headline["shape kept there"] = best["kept_shape"]
    headline["colour kept there"] = best["kept_colour"]
    headline["texture kept there"] = best["kept_texture"]
    headline["bounding-box IoU there"] = best["box_iou"]
    notes.append(
        f"Among the t' that keep the layout (shapes kept in at least {LAYOUT_KEPT:.2f}), the widest gap between "
        f"layout kept and attributes kept is at {at(best)}: shapes kept in {best['kept_shape']:.2f} of the images, "
        f"colours in {best['kept_colour']:.2f}, textures in "
        f"{best['kept_texture']:.2f} (gap {gap:+.2f}); bounding-box IoU with the plain image "
        f"{best['box_iou']:.2f}, latent cosine {best['latent_cosine']:.2f}."
    )
    late = [r for r in reversing if r["t_prime"] < best["t_prime"]]
    if late:
        row = late[0]
        notes.append(
            f"Reversing later, {at(row)} keeps shapes in {row['kept_shape']:.2f}, colours in "
            f"{row['kept_colour']:.2f} and textures in {row['kept_texture']:.2f} (bounding-box IoU "
            f"{row['box_iou']:.2f}, latent cosine {row['latent_cosine']:.2f}, pixel difference "
            f"{row['pixel_difference']:.1f} of 255)."
        )
    lost = [r for r in reversing if r["kept_shape"] < LAYOUT_KEPT]
    if lost:
        first = min(lost, key=lambda r: r["t_prime"])
        headline["first t' keeping under half the shapes"] = first["t_prime"]
        notes.append(
            f"From {at(first)} on the layout goes: shapes kept in {first['kept_shape']:.2f}, bounding-box IoU "
            f"{first['box_iou']:.2f}, mask centre moved {first['centre_shift']:.1f} px, latent cosine "
            f"{first['latent_cosine']:.2f}; at the earliest t' ({reversing[-1]['t_prime']:g}) the background "
            f"changes in {reversing[-1]['changed_background']:.2f} of the images."
        )
    else:
        lowest = min(r["kept_shape"] for r in reversing)
        notes.append(f"Every t' here keeps at least half of the shapes (lowest: {lowest:.2f}).")
    reversed_share = best["reversed_steps"] / steps
    notes.append(
        f"ANT's Fig. 3 finds its good t' at 35 of 50 steps reversed (0.70 of the schedule) on SD; here the widest "
        f"gap is at {best['reversed_steps']} of {steps} ({reversed_share:.2f}): this model "
        + ("decides its layout later in the schedule than SD." if reversed_share < 0.6 else
           "decides its layout at a similar point of the schedule.")
    )
    return headline, notes
