"""Exceptions and warnings raised by circuits.

Every error names the culprit (site, argument, file or prompt) and says what would be
right, so a user in a notebook can fix the call without reading our source.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CircuitsError(Exception):
    """Base class for every error circuits raises on bad input."""


def did_you_mean(given: object, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` with the closest of ``choices`` to ``given``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(given), list(choices), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


class SettingError(CircuitsError, ValueError):
    """A setting with a value it cannot take: a NaN or infinite number, a step count below 1, a
    seed that is not an int; the message names the argument and the values that work."""


class ConfigError(SettingError):
    """An unknown or mistyped field of a method's or an experiment's config."""


class NameNotFoundError(CircuitsError, KeyError):
    """A name (site, experiment, method) that is not there; the message lists what is."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class SiteError(NameNotFoundError):
    """A site name or pattern that matches no module of the model."""


class ScopeError(CircuitsError, ValueError):
    """A scope (steps, timesteps, branch, rows, tokens) that cannot be applied."""


class ShapeError(CircuitsError, ValueError):
    """A tensor argument whose shape or dtype does not fit the site it targets."""


class GraphFormatError(CircuitsError, ValueError):
    """Malformed graph JSON or an intervention that cannot be serialised."""


class PromptError(CircuitsError, ValueError):
    """An empty prompt list, a non-string prompt, or a prompt longer than the tokenizer allows."""


class ModelLoadError(CircuitsError, OSError):
    """A model source that cannot be loaded (missing folder, hub unreachable, wrong layout)."""


class OutputError(CircuitsError, OSError):
    """An output folder or file that cannot be written (checked before the work that fills it)."""


class OutputExistsError(OutputError, FileExistsError):
    """An output folder that exists and holds something other than what would replace it."""


class UnmatchedInterventionWarning(UserWarning):
    """An intervention whose site never ran or whose scope matched nothing."""
