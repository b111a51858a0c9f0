"""Issue 15's mechanism targets, measured on a pocket pipeline folder (v1 or a v2 candidate).

    PYTHONPATH=. OMP_NUM_THREADS=1 nice python benchmarks/pocket_v2_targets.py --model DIR --json OUT.json

The folder is loaded with ``circuits.load`` and marked as a pocket model (``source = "pocket"``): the
experiments read the pocket oracle only for the built-in model, and a candidate folder is one. Measures:

* **first [EoT] similarity**: mean cosine of the first [EoT]'s final hidden state between different prompts
  (every pair of ``eot_zeroing``'s 8 pocket prompts), and for "a red circle" vs "a blue circle" (v1: 0.993);
* **word maps vs objects, one object** (``attention_maps`` with its default prompts): mean Pearson r of the
  colour and shape words' maps with the object mask (v1: about -0.7);
* **word maps, two objects**: held-out two-object prompts; each shape word's map (DAAM aggregation of
  ``attention_maps``) against the two objects the oracle finds (``Oracle.read_objects``); the word's own
  object is the one read as that shape (images where neither or both are: not counted); share of images
  where r(own) > r(other), and the mean r of both;
* **every [EoT] zeroed** (both CFG branches, TRCE's zeroing): explicit one-object prompts and implicit-noun
  prompts sampled plainly and with every [EoT] map zeroed; object-by-object prompt following
  (``circuits.pocket.following``) of named attributes (kept share) and implied attributes (how far towards
  chance: 1/6 colour, 1/4 shape).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

CHANCE = {"colour": 1 / 6, "shape": 1 / 4, "texture": 1 / 4}


def first_eot_similarity(model, prompts: list[str]) -> dict:
    from circuits.tokens import layout

    tok = model.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = model.text_encoder(ids)[0].double()
    eots = torch.stack([hidden[i, layout(tok, p).first_eot] for i, p in enumerate(prompts)])
    unit = torch.nn.functional.normalize(eots, dim=-1)
    cos = unit @ unit.T
    pairs = [float(cos[i, j]) for i, j in itertools.combinations(range(len(prompts)), 2)]
    return {"mean_cosine_between_prompts": float(np.mean(pairs)), "n_pairs": len(pairs)}


def one_object_maps(model) -> dict:
    import circuits
    from circuits.pocket.world import COLOURS, SHAPES

    res = circuits.run_experiment("attention_maps", model=model)
    rs: dict[str, list[float]] = {"colour": [], "shape": []}
    for entry in res.metrics["prompts"]:
        for t in entry["tokens"]:
            kind = "colour" if t["label"] in COLOURS else "shape" if t["label"] in SHAPES else None
            if kind and t["corr_mask"] is not None:
                rs[kind].append(t["corr_mask"])
    every = rs["colour"] + rs["shape"]
    return {"mean_r_colour_and_shape_words": float(np.mean(every)), "mean_r_colour": float(np.mean(rs["colour"])),
            "mean_r_shape": float(np.mean(rs["shape"])), "n_maps": len(every), "headline": res.headline}  # fmt: skip


def two_object_maps(model, n_prompts: int, steps: int) -> dict:
    from circuits.experiments.recipes.attention_maps import _corr, aggregate
    from circuits.interventions.capture import Capture
    from circuits.interventions.graph import Graph
    from circuits.pocket.evaluate import following_sets
    from circuits.pocket.oracle import shared_oracle
    from circuits.pocket.world import SHAPES
    from circuits.sampling import sample
    from circuits.tokens import layout

    prompts = following_sets(n_prompts)["two_objects"][:n_prompts]
    sites = [f"{s}.probs" for s in model.sites.resolve("unet.*attn2")]
    graph = Graph([Capture(s, mean_over=("heads",), over_steps="mean", branch="cond") for s in sites])
    result = sample(model, prompts, seed=list(range(len(prompts))), steps=steps, graph=graph, progress=False)
    images = list(result.images)
    size = images[0].size[0]
    maps = aggregate(model, result.captures, sites, size, "bicubic").double().numpy()
    reads = shared_oracle().read_objects(images, 2)
    wins, own_rs, other_rs, skipped = [], [], [], 0
    for row, (prompt, read) in enumerate(zip(prompts, reads)):
        lay = layout(model.tokenizer, prompt)
        for shape in SHAPES:
            positions = lay.keyword(shape)
            if not positions:
                continue
            owners = [o for o in read.objects if o.shape == shape]
            if len(read.objects) != 2 or len(owners) != 1:
                skipped += 1
                continue
            own = owners[0]
            other = next(o for o in read.objects if o is not own)
            heat = maps[row][positions].sum(axis=0)
            r_own, r_other = _corr(heat, own.mask), _corr(heat, other.mask)
            if r_own is None or r_other is None:
                skipped += 1
                continue
            wins.append(r_own > r_other)
            own_rs.append(r_own)
            other_rs.append(r_other)
    return {"share_own_object_higher": float(np.mean(wins)) if wins else None, "n_words": len(wins),
            "skipped_words": skipped, "mean_r_own": float(np.mean(own_rs)) if own_rs else None,
            "mean_r_other": float(np.mean(other_rs)) if other_rs else None, "prompts": len(prompts)}  # fmt: skip


def eot_zeroed_following(model, n_prompts: int, seeds: int, steps: int) -> dict:
    from circuits.methods.trce import eot_probe
    from circuits.pocket.evaluate import following_sets
    from circuits.pocket.following import follow_images, summarise
    from circuits.sampling import sample

    sets = following_sets(n_prompts)
    out: dict = {}
    zero_all = eot_probe(model.tokenizer.model_max_length)  # "last_eot:k" is capped at each prompt's K
    for name in ("one_object", "implicit"):
        prompts = [p for p in sets[name][:n_prompts] for _ in range(seeds)]
        seed = [100 * i + k for i in range(n_prompts) for k in range(seeds)][: len(prompts)]
        plain = summarise(follow_images(prompts, sample(model, prompts, seed=seed, steps=steps, progress=False).images))
        zeroed = summarise(follow_images(prompts, sample(model, prompts, seed=seed, steps=steps, graph=zero_all,
                                                         progress=False).images))  # fmt: skip
        out[name] = {"plain": plain, "every_eot_zeroed": zeroed, "n_images": len(prompts)}
    named = out["one_object"]
    out["named_kept"] = {a: named["every_eot_zeroed"][f"named.{a}"] / named["plain"][f"named.{a}"]
                         for a in ("colour", "shape", "texture") if named["plain"].get(f"named.{a}")}  # fmt: skip
    imp = out["implicit"]
    before, after = imp["plain"], imp["every_eot_zeroed"]
    out["implied_fall_towards_chance"] = {
        a: (before[f"implied.{a}"] - after[f"implied.{a}"]) / (before[f"implied.{a}"] - CHANCE[a])
        for a in ("colour", "shape") if before.get(f"implied.{a}", 0.0) > CHANCE[a]
    }
    return out


def main() -> None:
    import circuits
    from circuits.experiments.recipes.eot_zeroing import POCKET_PROMPTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a pocket pipeline folder")
    p.add_argument("--json", required=True, help="where to write the numbers")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--two-object-prompts", type=int, default=24)
    p.add_argument("--zeroing-prompts", type=int, default=12)
    p.add_argument("--zeroing-seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = circuits.load(args.model)
    model.source = "pocket"  # a pocket candidate: the experiments' pocket oracle and defaults apply
    res = {"model": args.model, "steps": args.steps}
    res["eot_similarity"] = first_eot_similarity(model, list(POCKET_PROMPTS))
    res["eot_similarity"]["red_circle_vs_blue_circle"] = first_eot_similarity(
        model, ["a red circle", "a blue circle"])["mean_cosine_between_prompts"]
    print(json.dumps(res["eot_similarity"]), flush=True)
    res["attention_one_object"] = one_object_maps(model)
    print(json.dumps(res["attention_one_object"]), flush=True)
    res["attention_two_objects"] = two_object_maps(model, args.two_object_prompts, args.steps)
    print(json.dumps(res["attention_two_objects"]), flush=True)
    res["eot_zeroing"] = eot_zeroed_following(model, args.zeroing_prompts, args.zeroing_seeds, args.steps)
    print(json.dumps(res["eot_zeroing"], indent=1), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
