"""Classifier accuracy: does an image classifier still see the class the prompt names?

The object-erasure tables (ESD's Imagenette, UCE, MACE's CIFAR-10 objects) generate "an image of a
{class}" and count how often a pretrained ImageNet classifier (ResNet-50 in ESD/UCE) names that
class top-1. Here the classifier is any local transformers image-classification folder (e.g.
``microsoft/resnet-50`` copied locally); the class of each image is its row's ``label`` (ESD's
``class`` column) and is matched against the model's ``id2label`` names: ImageNet labels list
synonyms ("tench, Tinca tinca"), any of which matches, case- and underscore-insensitively.
:data:`IMAGENETTE` maps Imagenette's ten short names to ImageNet's.
"""

from __future__ import annotations

import os
from typing import Any

from circuits.errors import CircuitsError, did_you_mean
from circuits.evaluation.measures.common import load_images, package_version, records, require, weights_sha256

#: Imagenette's ten classes (ESD's names) -> their ImageNet-1k label (first synonym)
IMAGENETTE = {
    "cassette player": "cassette player", "chain saw": "chain saw", "church": "church",
    "english springer": "English springer", "french horn": "French horn", "garbage truck": "garbage truck",
    "gas pump": "gas pump", "golf ball": "golf ball", "parachute": "parachute", "tench": "tench",
}  # fmt: skip
_HOW = ("give a transformers image-classification folder, e.g. `huggingface-cli download microsoft/resnet-50 "
        "--local-dir resnet-50` on a machine with the hub, then copy it here")  # fmt: skip


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def label_index(id2label: dict[Any, str]) -> dict[str, int]:
    """Every synonym of every label (normalised) -> its class index."""
    out: dict[str, int] = {}
    for index, label in id2label.items():
        for synonym in str(label).split(","):
            out.setdefault(_norm(synonym), int(index))
    return out


def classifier(folder: str | os.PathLike[str], *, model: str | os.PathLike[str] | None, batch_size: int = 32,
               device: str = "cpu") -> dict[str, Any]:  # fmt: skip
    """Top-1 accuracy (overall and per class) of a local classifier on each image's row label."""
    import torch
    import transformers

    path = require(model, "image classifier folder (--classifier)", _HOW)
    network = transformers.AutoModelForImageClassification.from_pretrained(path, local_files_only=True)
    network = network.eval().to(device)
    processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True, use_fast=False)
    names = label_index(network.config.id2label)
    rows = records(folder)
    targets = []
    for row in rows:
        label = row.get("label")
        if not label:
            raise CircuitsError(f"{row['file']}: its prompt row has no class label (ESD's `class` column); "
                                "the classifier measure needs one per row")  # fmt: skip
        key = _norm(IMAGENETTE.get(_norm(label), label))
        if key not in names:
            hint = did_you_mean(key, names, n=3)
            raise CircuitsError(f"class {label!r} ({row['file']}) is not a label of the classifier at {path}{hint}")
        targets.append(names[key])
    predictions: list[int] = []
    for start in range(0, len(rows), batch_size):
        pixels = processor(images=load_images(rows[start : start + batch_size]), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            logits = network(pixel_values=pixels.to(device)).logits
        predictions.extend(logits.argmax(-1).tolist())
    correct = [p == t for p, t in zip(predictions, targets)]
    per_class: dict[str, list[bool]] = {}
    for row, ok in zip(rows, correct):
        per_class.setdefault(row["label"], []).append(ok)
    id2label = network.config.id2label
    return {
        "values": {"accuracy": sum(correct) / len(correct),
                   **{f"accuracy_{label}": sum(v) / len(v) for label, v in sorted(per_class.items())}},
        "images": len(rows),
        "per_image": {row["file"]: {"label": row["label"], "predicted": id2label[p], "correct": ok}
                      for row, p, ok in zip(rows, predictions, correct)},
        "provenance": {"package": "transformers", "version": package_version("transformers"), "weights": str(path),
                       "weights_sha256": weights_sha256(path), "architecture": type(network).__name__,
                       "classes": sorted(per_class), "top_k": 1},
    }  # fmt: skip
