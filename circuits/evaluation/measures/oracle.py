"""Pocket oracle rates: how often the oracle reads, in each image, the pocket value its row names.

The offline stand-in for a detector or classifier on the pocket model. Each row's ``label`` is a
pocket word (a colour, a colour synonym, a shape or a texture; ``circuits.pocket.concepts``); the
oracle reads that attribute back from the image, and the rate is the share of images where it reads
the label's value. Rates are given overall and per category (the prompt set: ``explicit``,
``synonym``, ``preservation``, ... in the ``erasure_eval`` experiment): an erasure should bring the
target sets' rates down and keep the preservation set's.
"""

from __future__ import annotations

import os
from typing import Any

from circuits.errors import CircuitsError
from circuits.evaluation.measures.common import load_images, records, weights_sha256


def oracle(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Overall and per-category rate at which the pocket oracle reads each row's label."""
    from circuits.pocket import ORACLE_PATH
    from circuits.pocket.concepts import attribute_of
    from circuits.pocket.oracle import shared_oracle

    rows = records(folder)
    wanted = []
    for row in rows:
        if not row.get("label"):
            raise CircuitsError(f"{row['file']}: no label; the oracle measure needs a pocket word per row (`class`)")
        wanted.append(attribute_of(row["label"]))
    read = shared_oracle().read(load_images(rows))
    hits = [read[attribute][i] == value for i, (attribute, value) in enumerate(wanted)]
    groups: dict[str, list[bool]] = {}
    for row, hit in zip(rows, hits):
        for category in row.get("categories") or ["all"]:
            groups.setdefault(category, []).append(hit)
    return {
        "values": {"rate": sum(hits) / len(hits), **{f"rate_{c}": sum(v) / len(v) for c, v in sorted(groups.items())}},
        "images": len(rows),
        "per_image": {row["file"]: {"label": row["label"], "attribute": a, "read": read[a][i], "hit": hit}
                      for i, (row, (a, _), hit) in enumerate(zip(rows, wanted, hits))},
        "provenance": {"package": "circuits.pocket.oracle", "weights": ORACLE_PATH.name,
                       "weights_sha256": weights_sha256(ORACLE_PATH)},
    }  # fmt: skip
