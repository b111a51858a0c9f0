"""The step context: what the sampler is doing right now, published for every intervention.

The sampler (or a user calling the UNet by hand) sets one :class:`StepContext` around each
text-encoder and UNet call. Interventions read it to decide whether they apply (denoising step,
timestep, classifier-free-guidance branch, batch rows, token positions). Nothing in circuits
counts its own calls: the step index always comes from here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

Phase = Literal["text", "unet"]
BRANCHES: tuple[str, ...] = ("uncond", "cond")


@dataclass(frozen=True)
class StepContext:
    """One model call as the sampler sees it.

    Attributes:
        phase: ``"text"`` while the text encoder runs, ``"unet"`` while the UNet runs.
        step: index of the denoising step (0 = first, noisiest); ``None`` in the text phase.
        timestep: the scheduler's timestep value for this step; ``None`` in the text phase.
        branch_rows: batch rows of each CFG branch, e.g. ``{"uncond": (0, 1), "cond": (2, 3)}``; empty
            when unknown (a hand-published context without prompts), meaning every row is ``"cond"``.
        prompts: the prompt of every batch row (the negative prompt on uncond rows).
        num_steps: length of the schedule, when known.
    """

    phase: Phase
    branch_rows: Mapping[str, tuple[int, ...]]
    prompts: tuple[str, ...] = ()
    step: int | None = None
    timestep: float | None = None
    num_steps: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return sum(len(rows) for rows in self.branch_rows.values())

    def rows_of(self, branch: str) -> tuple[int, ...]:
        """Rows of one branch (``"cond"``/``"uncond"``) or all rows (``"both"``), in batch order."""
        if branch == "both":
            return tuple(sorted(r for rows in self.branch_rows.values() for r in rows))
        return tuple(self.branch_rows.get(branch, ()))


_CURRENT: ContextVar[StepContext | None] = ContextVar("circuits_step_context", default=None)


def current_context() -> StepContext | None:
    """The context of the model call in progress, or ``None`` outside the sampler."""
    return _CURRENT.get()


@contextlib.contextmanager
def step_context(
    *,
    phase: Phase = "unet",
    prompts: Sequence[str] = (),
    branch_rows: Mapping[str, Sequence[int]] | None = None,
    step: int | None = None,
    timestep: float | None = None,
    num_steps: int | None = None,
) -> Iterator[StepContext]:
    """Publish a context around a hand-written model call.

    ``branch_rows`` defaults to every row being ``"cond"``, which is what a user calling the UNet
    directly on conditional inputs means: one row per prompt, or, without prompts, every row of the
    batch the hooked module sees.
    """
    if branch_rows is None:
        branch_rows = {"cond": tuple(range(len(prompts)))} if prompts else {}
    unknown = set(branch_rows) - set(BRANCHES)
    if unknown:
        raise ValueError(f"step_context: unknown branch names {sorted(unknown)}; use 'cond' and 'uncond'")
    ctx = StepContext(
        phase=phase,
        branch_rows={k: tuple(v) for k, v in branch_rows.items()},
        prompts=tuple(prompts),
        step=step,
        timestep=timestep,
        num_steps=num_steps,
    )
    with publish_context(ctx):
        yield ctx


@contextlib.contextmanager
def publish_context(ctx: StepContext) -> Iterator[StepContext]:
    """Make ``ctx`` the current context inside the block (restored on exit, exceptions included).

    The sampler publishes one around every text-encoder and UNet call; a method with its own
    denoising loop does the same so step/branch/token scopes apply to its calls.
    """
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)
