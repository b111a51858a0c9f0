"""Checks of the numbers users pass in: one place, so a sampler argument, a method's config and an
experiment's config refuse a NaN or an infinity alike.

A NaN slips through every comparison (``nan > 1`` and ``nan < 1`` are both false), so a range check
alone lets it in, and it comes out as black images or NaN metrics minutes later. These checks run
at the boundary and name the argument (or config field), its owner and what would be right.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

from circuits.errors import CircuitsError, SettingError


def nonfinite(value: Any) -> list[float]:
    """The NaN and infinite numbers inside ``value`` (a number, or numbers nested in tuples, lists,
    sets and dict values); strings, tensors and other objects are not looked into."""
    if isinstance(value, bool):
        return []
    if isinstance(value, numbers.Real):
        return [] if math.isfinite(float(value)) else [float(value)]
    if isinstance(value, Mapping):
        return [bad for item in value.values() for bad in nonfinite(item)]
    if isinstance(value, (tuple, list, set, frozenset)):
        return [bad for item in value for bad in nonfinite(item)]
    return []


def check_finite(value: Any, argument: str, owner: str, *, error: type[CircuitsError] = SettingError) -> None:
    """Raise ``error`` naming ``owner`` and ``argument`` when ``value`` holds a NaN or an infinity."""
    bad = nonfinite(value)
    if bad:
        raise error(f"{owner}: {argument}={value!r} holds {bad[0]!r}; give a finite number")


def check_fields_finite(config: Any, owner: str, *, error: type[CircuitsError] = SettingError) -> None:
    """:func:`check_finite` on every field of the dataclass ``config``."""
    for field in dataclasses.fields(config):
        check_finite(getattr(config, field.name), field.name, owner, error=error)


def real_number(value: Any, argument: str, owner: str, *, error: type[CircuitsError] = SettingError) -> float:
    """``value`` as a float when it is a finite real number (an int, float, numpy scalar or one-element
    tensor; not a bool or a string), else ``error`` naming it."""
    number = None
    if not isinstance(value, (bool, str, bytes)) and hasattr(value, "__float__"):
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):  # complex numbers, tensors of several elements
            number = None
    if number is None:
        raise error(f"{owner}: {argument}={value!r} is not a number; give a finite float, e.g. 7.5")
    check_finite(number, argument, owner, error=error)
    return number
