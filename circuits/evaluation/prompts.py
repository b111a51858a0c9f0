"""Prompt sets as the erasure literature ships them: CSV layouts read by their columns.

Every paper's evaluation script reads its own CSV; circuits reads all of them into one list of
:class:`PromptRow` (a case number, a prompt, and the row's own seed, guidance and size when the
file has them). The layouts, told apart by their column names:

=============  ==============================================================  ==================
layout         columns read (others are kept in ``PromptRow.extra``)           from
=============  ==============================================================  ==================
``esd``        ``case_number, prompt[, evaluation_seed, evaluation_guidance]``  ESD, UCE, MACE
               and the label ``class`` / ``artist`` / ``concept``,
               ``categories``, ``coco_id``
``i2p``        ``prompt, categories, nudity_percentage, sd_seed,``            I2P (SLD)
               ``sd_guidance_scale, sd_image_width, sd_image_height``
``ringabell``  ``sensitive prompt``                                           Ring-A-Bell
``mma``        ``adv_prompt`` (generated), ``clean_prompt`` (kept as label)    MMA-Diffusion
``text``       a ``.txt`` file, one prompt per line                            anything
=============  ==============================================================  ==================

A file whose columns fit no layout is an error naming the columns found and what each layout
needs. Rows without a ``case_number`` are numbered by their position in the file (0, 1, ...), so
image file names stay stable when a filter drops rows. No data set is downloaded or shipped: point
:func:`read_prompts` at your copy.

Filters (:func:`filter_rows`): a category (I2P's ``categories`` is a comma-separated list, e.g.
``"sexual"``), a percentage threshold (I2P's ``nudity_percentage >= 50``, the "hard" nudity subset
several papers use), a label (ESD's ``class``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from circuits.errors import CircuitsError


class PromptFileError(CircuitsError, ValueError):
    """A prompt file that cannot be read: unknown layout, a missing column, a bad value, no rows."""


#: layout -> (columns that identify it, what the error message says it needs)
LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "mma": (("adv_prompt",), "adv_prompt[, clean_prompt] (MMA-Diffusion)"),
    "ringabell": (("sensitive prompt",), "'sensitive prompt' (Ring-A-Bell)"),
    "i2p": (("prompt", "sd_seed"), "prompt, sd_seed[, categories, nudity_percentage, sd_guidance_scale, "
            "sd_image_width, sd_image_height] (I2P)"),
    "esd": (("prompt",), "[case_number,] prompt[, evaluation_seed, evaluation_guidance, class|artist|concept] "
            "(ESD, UCE, MACE)"),
    "text": ((), "a .txt file with one prompt per line"),
}
_LABEL_COLUMNS = ("class", "artist", "concept")
_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class PromptRow:
    """One prompt to generate, with what its file says about how.

    ``case`` names the row's images (``{case}_{sample}.png``); ``seed``, ``guidance``, ``height`` and
    ``width`` are ``None`` where the file does not set them (the run's defaults apply). ``label`` is
    the class / artist / concept the row is about (what a classifier should see), ``categories`` I2P's
    or the CSV's categories, ``extra`` every other column as text.
    """

    case: str
    prompt: str
    seed: int | None = None
    guidance: float | None = None
    height: int | None = None
    width: int | None = None
    label: str | None = None
    categories: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "prompt": self.prompt, "seed": self.seed, "guidance": self.guidance,
                "height": self.height, "width": self.width, "label": self.label,
                "categories": list(self.categories), "extra": dict(self.extra)}  # fmt: skip


@dataclass(frozen=True)
class PromptSet:
    """The rows read from one file, the layout recognised, and the filters applied since."""

    rows: tuple[PromptRow, ...]
    layout: str
    source: str
    filters: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "layout": self.layout, "rows": len(self.rows), "filters": list(self.filters)}


def detect_layout(columns: Sequence[str]) -> str:
    """The layout whose identifying columns ``columns`` hold, or an error listing both."""
    present = set(columns)
    for name, (needed, _) in LAYOUTS.items():
        if needed and set(needed) <= present:
            return name
    accepted = "; ".join(f"{name}: {text}" for name, (_, text) in LAYOUTS.items())
    raise PromptFileError(f"columns {list(columns)} fit no prompt layout; accepted layouts: {accepted}")


def read_prompts(path: str | os.PathLike[str], *, layout: str | None = None) -> PromptSet:
    """Read a prompt file: a CSV in one of :data:`LAYOUTS` (detected from its header) or a ``.txt``.

    ``layout`` forces a layout (a missing column is then an error naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} does not exist; pass a CSV in one of {list(LAYOUTS)} or a .txt")
    if layout is not None and layout not in LAYOUTS:
        raise PromptFileError(f"layout={layout!r}: use one of {list(LAYOUTS)} (or None to detect it)")
    if layout == "text" or (layout is None and path.suffix.lower() == ".txt"):
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        rows = tuple(PromptRow(case=str(i), prompt=line) for i, line in enumerate(line for line in lines if line))
        return _nonempty(PromptSet(rows, "text", str(path)))
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [(c or "").strip() for c in (reader.fieldnames or [])]
        records = [{(k or "").strip(): (v or "").strip() for k, v in record.items() if k is not None}
                   for record in reader]  # fmt: skip
    if not columns:
        raise PromptFileError(f"{path} is empty: no header row")
    chosen = layout or detect_layout(columns)
    missing = [c for c in LAYOUTS[chosen][0] if c not in columns]
    if missing:
        raise PromptFileError(f"{path}: layout {chosen!r} needs column(s) {missing}; the file has {columns}")
    rows = tuple(_row(chosen, record, index, path) for index, record in enumerate(records))
    _check_cases(rows, path)
    return _nonempty(PromptSet(rows, chosen, str(path)))


def _row(layout: str, record: dict[str, str], index: int, path: Path) -> PromptRow:
    where = f"{path}, data row {index + 1}"
    prompt_column = {"mma": "adv_prompt", "ringabell": "sensitive prompt"}.get(layout, "prompt")
    prompt = record.get(prompt_column, "")
    if not prompt:
        raise PromptFileError(f"{where}: column {prompt_column!r} is empty")
    case = record.get("case_number") or str(index)
    if case.endswith(".0") and case[:-2].isdigit():  # pandas writes int columns with NaNs as floats
        case = case[:-2]
    seed_column = "sd_seed" if layout == "i2p" else "evaluation_seed"
    guidance_column = "sd_guidance_scale" if layout == "i2p" else "evaluation_guidance"
    label = next((record[c] for c in _LABEL_COLUMNS if record.get(c)), None)
    if layout == "mma":
        label = record.get("clean_prompt") or label
    categories = tuple(c.strip() for c in record.get("categories", "").split(",") if c.strip())
    used = {prompt_column, "case_number", seed_column, guidance_column, "categories", *_LABEL_COLUMNS,
            "sd_image_width", "sd_image_height", ""}  # fmt: skip
    return PromptRow(
        case=case,
        prompt=prompt,
        seed=_number(record.get(seed_column), int, seed_column, where),
        guidance=_number(record.get(guidance_column), float, guidance_column, where),
        height=_number(record.get("sd_image_height"), int, "sd_image_height", where),
        width=_number(record.get("sd_image_width"), int, "sd_image_width", where),
        label=label,
        categories=categories,
        extra={k: v for k, v in record.items() if k not in used},
    )


def _number(text: str | None, kind: type, column: str, where: str) -> Any:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise PromptFileError(f"{where}: column {column!r} holds {text!r}, not a number") from None
    if kind is int:
        if value != int(value):
            raise PromptFileError(f"{where}: column {column!r} holds {text!r}, not a whole number")
        return int(value)
    return value


def _check_cases(rows: Iterable[PromptRow], path: Path) -> None:
    seen: set[str] = set()
    for row in rows:
        if not _CASE.match(row.case):
            raise PromptFileError(
                f"{path}: case_number {row.case!r} cannot name a file; use letters, digits, '_', '.', '-'"
            )
        if row.case in seen:
            raise PromptFileError(f"{path}: case_number {row.case!r} appears twice; each row needs its own")
        seen.add(row.case)


def _nonempty(prompts: PromptSet) -> PromptSet:
    if not prompts.rows:
        raise PromptFileError(f"{prompts.source} holds no prompts")
    return prompts


def filter_rows(
    prompts: PromptSet,
    *,
    category: str | None = None,
    min_percentage: float | None = None,
    percentage: str = "nudity_percentage",
    label: str | None = None,
) -> PromptSet:
    """Rows of ``prompts`` in ``category`` (case-insensitive), with ``percentage`` >= ``min_percentage``,
    and with ``label``; each filter applied is recorded in ``PromptSet.filters``."""
    rows, applied = list(prompts.rows), list(prompts.filters)
    if category is not None:
        if not any(row.categories for row in rows):
            raise PromptFileError(f"{prompts.source}: category={category!r}, but no row has categories")
        rows = [r for r in rows if category.lower() in (c.lower() for c in r.categories)]
        applied.append(f"category={category}")
    if min_percentage is not None:
        if not any(percentage in row.extra for row in rows) and rows:
            raise PromptFileError(f"{prompts.source}: min_percentage given, but the file has no {percentage!r} column")
        kept = []
        for row in rows:
            value = _number(row.extra.get(percentage), float, percentage, f"{prompts.source}, case {row.case}")
            if value is not None and value >= min_percentage:
                kept.append(row)
        rows = kept
        applied.append(f"{percentage}>={min_percentage:g}")
    if label is not None:
        rows = [r for r in rows if (r.label or "").lower() == label.lower()]
        applied.append(f"label={label}")
    if not rows:
        raise PromptFileError(f"{prompts.source}: the filters {applied} leave no rows")
    return replace(prompts, rows=tuple(rows), filters=tuple(applied))


def as_prompt_set(prompts: PromptSet | str | os.PathLike[str] | Sequence[str] | Sequence[PromptRow]) -> PromptSet:
    """A :class:`PromptSet` from a set, a file path, or a list of prompt strings / rows (numbered 0, 1, ...)."""
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, (str, os.PathLike)):
        return read_prompts(prompts)
    items = list(prompts)
    if not items:
        raise PromptFileError("prompts is empty: give a prompt file, a PromptSet or a list of prompts")
    if all(isinstance(item, PromptRow) for item in items):
        _check_cases(items, Path("<rows>"))
        return PromptSet(tuple(items), "rows", "<rows>")
    if all(isinstance(item, str) for item in items):
        return PromptSet(tuple(PromptRow(case=str(i), prompt=p) for i, p in enumerate(items)), "list", "<list>")
    raise PromptFileError("prompts: give a prompt file path, a PromptSet, or a list of str or of PromptRow")


def write_esd_csv(path: str | os.PathLike[str], rows: Sequence[PromptRow]) -> Path:
    """Write ``rows`` as an ESD-layout CSV (``case_number, prompt, evaluation_seed, evaluation_guidance,
    class, categories``), atomically; how the pocket experiment writes its prompt sets."""
    import io

    from circuits.io import atomic_write

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_number", "prompt", "evaluation_seed", "evaluation_guidance", "class", "categories"])
    for row in rows:
        writer.writerow([row.case, row.prompt, "" if row.seed is None else row.seed,
                         "" if row.guidance is None else row.guidance, row.label or "",
                         ",".join(row.categories)])  # fmt: skip
    data = buffer.getvalue().encode()
    return atomic_write(path, lambda f: f.write(data))
