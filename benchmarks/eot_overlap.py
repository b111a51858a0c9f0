"""How alike pocket's text embeddings are at the first [EoT] across a concept's prompt sets.

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/eot_overlap.py blue square dotted

For each concept (``circuits.pocket.concept``): the cosine similarity of the text encoder's output at
the first [EoT] between the concept's target prompts and (a) its anchor prompts (the same templates
with the word removed: what an erasure maps them to; template by template), (b) its preservation
prompts (what an erasure must leave alone; all pairs), and within each set. An edit that maps the target's [EoT] columns
onto the anchor's moves every column close to them: when (b) is about as high as (a), the preservation
prompts' [EoT]s move with the target's unless a preservation term pins them. Text encoder only: seconds.
"""

from __future__ import annotations

import argparse

import torch

import circuits
from circuits.methods.common import text_embeddings
from circuits.pocket import concept as pocket_concept
from circuits.tokens import layout


def first_eot_columns(model, prompts: list[str]) -> torch.Tensor:
    """Unit-norm text-encoder outputs at each prompt's first [EoT], ``[prompts, dim]`` (float64)."""
    embeds = text_embeddings(model, prompts).to(torch.float64)
    rows = [embeds[i, layout(model.tokenizer, p).first_eot] for i, p in enumerate(prompts)]
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def mean_cosine(a: torch.Tensor, b: torch.Tensor, paired: bool = False) -> float:
    """Mean cosine over all pairs of rows of ``a`` and ``b`` (or row by row when ``paired``)."""
    return float((a * b).sum(-1).mean() if paired else (a @ b.T).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("concepts", nargs="+")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = circuits.load("pocket")
    print("| concept | target vs anchor (paired) | target vs preservation | within target | within preservation |")
    print("|---|---|---|---|---|")
    for name in args.concepts:
        concept = pocket_concept(name)
        pairs = concept.pairs(synonyms=False)
        target = first_eot_columns(model, [p.target for p in pairs])
        anchor = first_eot_columns(model, [p.anchor for p in pairs])
        keep = first_eot_columns(model, list(concept.preservation))
        print(f"| {name} | {mean_cosine(target, anchor, paired=True):.3f} | {mean_cosine(target, keep):.3f} | "
              f"{mean_cosine(target, target):.3f} | "
              f"{mean_cosine(keep, keep):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
