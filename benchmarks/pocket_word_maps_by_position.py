"""Where pocket's word maps sit, by layer and by the word's place in the prompt: a diagnosis of
issue 15's word-map target (colour words' maps on the background, shape words' on the object).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/pocket_word_maps_by_position.py [--model DIR] [--json OUT]

Runs the ``attention_maps`` experiment (its default pocket prompts, one image each) once over every
cross-attention layer and once per UNet block, and averages each token's r(mask) (Pearson r of its
DAAM map with the generated object's mask) over groups: the SoT, the words *before* the prompt's shape
noun (article, texture, colour: a causal encoder has not yet seen the noun there), the shape noun, the
words *after* it, and the [EoT]s' summed map. Positive: on the object; negative: on the background.

Then the word-order probe: the same colours and shapes prompted as "a red circle" and as "a circle in
red" (one image each, every cross-attention layer): if a colour word's map sits on the background
because of what it is, both orders agree; if it is where it stands (before the noun, so its causal
state has not seen the object), the colour and shape words swap places.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LAYER_GLOBS = ("unet.*attn2", "unet.down_blocks.0.*attn2", "unet.down_blocks.1.*attn2",
               "unet.mid_block.*attn2", "unet.up_blocks.1.*attn2", "unet.up_blocks.2.*attn2")  # fmt: skip


def group_of(label: str, index: int, noun_index: int | None) -> str | None:
    """The group of the ``index``-th mapped token of a prompt whose shape noun is token ``noun_index``."""
    if label == "[SoT]":
        return "SoT"
    if label.startswith("all ") and label.endswith("[EoT]s"):
        return "[EoT]s, summed"
    if label == "[EoT]" or noun_index is None:
        return None
    if index < noun_index:
        return "words before the noun"
    return "shape noun" if index == noun_index else "words after the noun"


def by_position(model, layers: str) -> dict[str, float]:
    import numpy as np

    import circuits
    from circuits.pocket.world import COLOURS, SHAPES

    res = circuits.run_experiment("attention_maps", model=model, layers=layers)
    groups: dict[str, list[float]] = {}
    for entry in res.metrics["prompts"]:
        labels = [t["label"] for t in entry["tokens"]]
        noun = next((i for i, label in enumerate(labels) if label in SHAPES), None)
        for i, t in enumerate(entry["tokens"]):
            if t["corr_mask"] is None:
                continue
            for name in filter(None, (group_of(t["label"], i, noun),
                                      "colour words" if t["label"] in COLOURS else None)):  # fmt: skip
                groups.setdefault(name, []).append(t["corr_mask"])
    return {name: round(float(np.mean(v)), 3) for name, v in groups.items()}


ORDER_PAIRS = (("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross"),
               ("orange", "circle"), ("purple", "square"))  # fmt: skip


def word_order(model) -> dict[str, dict[str, float]]:
    """Mean r(mask) of the colour and the shape words, with the colour before the noun and after it."""
    import numpy as np

    import circuits

    orders = {"colour first ('a red circle')": tuple(f"a {c} {s}" for c, s in ORDER_PAIRS),
              "colour last ('a circle in red')": tuple(f"a {s} in {c}" for c, s in ORDER_PAIRS)}  # fmt: skip
    out = {}
    for order, prompts in orders.items():
        res = circuits.run_experiment("attention_maps", model=model, prompts=prompts)
        rs: dict[str, list[float]] = {"colour word": [], "shape word": []}
        for (colour, shape), entry in zip(ORDER_PAIRS, res.metrics["prompts"]):
            for t in entry["tokens"]:
                kind = "colour word" if t["label"] == colour else "shape word" if t["label"] == shape else None
                if kind and t["corr_mask"] is not None:
                    rs[kind].append(t["corr_mask"])
        out[order] = {kind: round(float(np.mean(v)), 3) for kind, v in rs.items() if v}
    return out


def main() -> None:
    import torch

    import circuits
    from circuits.io import atomic_write

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pocket", help="'pocket' or a pocket pipeline folder")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = circuits.load(args.model)
    model.source = "pocket"  # a pocket candidate folder: the experiment's pocket oracle applies
    table = {layers: by_position(model, layers) for layers in LAYER_GLOBS}
    names = sorted({g for row in table.values() for g in row})
    print("| layers | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for layers, row in table.items():
        print(f"| `{layers}` | " + " | ".join(f"{row.get(n, float('nan')):+.2f}" for n in names) + " |")
    orders = word_order(model)
    print("\n| word order | colour word r(mask) | shape word r(mask) |\n|---|---|---|")
    for order, row in orders.items():
        print(f"| {order} | {row.get('colour word', float('nan')):+.2f} | {row.get('shape word', float('nan')):+.2f} |")
    if args.json:
        payload = json.dumps({"model": args.model, "r_mask_by_group": table, "word_order": orders}, indent=2).encode()
        atomic_write(args.json, lambda f: f.write(payload))


if __name__ == "__main__":
    main()
