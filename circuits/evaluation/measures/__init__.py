"""Measures over a generation folder, each in its own module, each recording its provenance.

=================  ====================================================  =========================
name               what                                                  needs
=================  ====================================================  =========================
``nudenet``        per-class exposed counts (>= 0.6), attack success      ``nudenet`` (``[eval]``)
                   rate (any nude class >= 0.45)
``clip_score``     100 x cos(image, prompt), mean                         ``clip=`` a CLIPModel folder
``fid``            FID and KID against reference images                   ``reference=``, ``inception=``
``classifier``     top-1 accuracy on the row's class                      ``model=`` a classifier folder
``oracle``         pocket oracle rate of the row's label, per category    nothing (pocket)
=================  ====================================================  =========================

``measure(folder, name, **options)`` computes one and writes ``measures/{name}.json`` into the
folder (what :func:`circuits.evaluation.report` reads).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from circuits.errors import NameNotFoundError, did_you_mean


def _measures() -> dict[str, Callable[..., dict[str, Any]]]:
    from circuits.evaluation.measures.classifier import classifier
    from circuits.evaluation.measures.clip_score import clip_score
    from circuits.evaluation.measures.fid import fid
    from circuits.evaluation.measures.nudenet import nudenet
    from circuits.evaluation.measures.oracle import oracle

    return {"nudenet": nudenet, "clip_score": clip_score, "fid": fid, "classifier": classifier, "oracle": oracle}


NAMES = ("nudenet", "clip_score", "fid", "classifier", "oracle")


class UnknownMeasureError(NameNotFoundError):
    """A measure name that is not one of :data:`NAMES`."""


def measure(folder: str | os.PathLike[str], name: str, **options: Any) -> dict[str, Any]:
    """Compute measure ``name`` on a generation folder, write ``measures/{name}.json``, return the result."""
    from circuits.evaluation.measures.common import write_result

    table = _measures()
    if name not in table:
        raise UnknownMeasureError(f"no measure named {name!r}{did_you_mean(name, NAMES)}; measures: {', '.join(NAMES)}")
    start = time.perf_counter()
    result = table[name](folder, **options)
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["images_per_second"] = round(result["images"] / max(result["seconds"], 1e-9), 2)
    write_result(folder, name, result)
    return result
