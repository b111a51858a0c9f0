"""The intervention base class: a site, a scope, and what to do with the value found there.

An intervention is plain data (a dataclass) so a graph of them can be saved as JSON. The
runtime (:mod:`circuits.interventions.runtime`) asks each one how to take part, with no special
cases for particular kinds:

- a per-call kind (``per_call = True``) is bound to each site it matches (:meth:`Intervention.bind`,
  like diffusers' ``ModelHook.initialize_hook``: a Capture makes its per-site copy with a record
  there), becomes a torch forward hook on it, and :meth:`Intervention.apply` runs on the calls its
  scope selects;
- a per-context kind (``per_call = False``, e.g. ``WeightEdit``) is entered once
  (:meth:`Intervention.enter`), and the undo it returns runs on exit, exceptions included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor

from circuits.context import StepContext
from circuits.errors import SiteError
from circuits.interventions.records import Captures
from circuits.interventions.scope import (
    Selection,
    check_branch,
    check_int_list,
    check_timesteps,
    normalise_tokens,
)
from circuits.tokens import TokenSelection

if TYPE_CHECKING:
    from circuits.models.diffusion import Diffusion
    from circuits.sites.index import SiteInfo

REGISTRY: dict[str, type["Intervention"]] = {}
#: what :meth:`Intervention.enter` returns: restores what entering changed
Undo = Callable[[], None]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


class RunView(Protocol):
    """What :meth:`Intervention.bind` may read of the run it joins.

    The runtime's ``Run`` is one; naming only these two attributes keeps this module free of the
    runtime that runs it (the runtime imports interventions, never the reverse).
    """

    @property
    def model(self) -> "Diffusion": ...

    @property
    def captures(self) -> Captures: ...


SCOPE_FIELDS = ("steps", "timesteps", "branch", "rows", "tokens")


@dataclass(kw_only=True, eq=False)
class Intervention:
    """Base class. Subclasses add ``site`` and their own arguments; the scope fields are shared."""

    steps: Sequence[int] | None = None
    timesteps: tuple[float, float] | None = None
    branch: str = "both"
    rows: Sequence[int] | None = None
    tokens: TokenSelection | None = None
    name: str | None = None

    kind: ClassVar[str] = "intervention"
    #: False for kinds that act once per context (WeightEdit): the runtime calls :meth:`enter` on
    #: entry and its undo on exit instead of hooking a site.
    per_call: ClassVar[bool] = True
    _parent: "Intervention | None" = field(default=None, init=False, repr=False, compare=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            REGISTRY[cls.kind] = cls

    def __post_init__(self) -> None:
        owner = self.describe()
        for argument in ("site", "param"):
            if not hasattr(self, argument):
                continue
            target = getattr(self, argument)
            if not isinstance(target, str) or not target:
                raise SiteError(f"{owner}: {argument}={target!r}; give a site name or glob string, e.g. 'unet.*attn2'")
        self.steps = check_int_list(self.steps, "steps", owner)
        self.rows = check_int_list(self.rows, "rows", owner)
        self.timesteps = check_timesteps(self.timesteps, owner)
        self.branch = check_branch(self.branch, owner)
        self.tokens = normalise_tokens(self.tokens)

    # -- description ---------------------------------------------------------------------
    def describe(self) -> str:
        target = getattr(self, "site", None) or getattr(self, "param", None)
        label = f"{type(self).__name__}({target!r})"
        return f"{label} named {self.name!r}" if self.name else label

    @property
    def origin(self) -> "Intervention":
        """The intervention the user wrote (for parts expanded from a composite one)."""
        return self._parent.origin if self._parent is not None else self

    def __eq__(self, other: object) -> bool:
        """Same kind and same arguments (tensors compared by dtype, shape and value)."""
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self) if f.init)

    # -- composition ---------------------------------------------------------------------
    def expand(self, model: "Diffusion") -> list["Intervention"]:
        """Primitive interventions this one stands for (itself, unless it is a composite)."""
        return [self]

    def scope_kwargs(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in SCOPE_FIELDS}

    def check_site(self, info: "SiteInfo", model: "Diffusion") -> None:
        """Raise early if this intervention cannot act on ``info``'s site."""

    def bind(self, run: RunView, site: str, expanded: bool) -> "Intervention":
        """What acts on ``site`` for ``run``: ``self``, or a per-site copy for kinds with per-site state.

        Called once per matched site when the context is entered (never per call). ``expanded`` is
        True when the site came from a glob matching several sites. A copy sets ``_parent = self``
        so reports name the intervention the user wrote.
        """
        return self

    def enter(self, model: "Diffusion") -> Undo:
        """For ``per_call = False`` kinds: make the whole-context change and return its undo."""
        raise NotImplementedError(f"{self.describe()} acts per call (per_call=True): it is bound, not entered")

    def apply(self, x: Tensor, selection: Selection, ctx: StepContext | None, site: str) -> Tensor:
        """Return the (possibly changed) value of ``site`` for the selected rows/tokens."""
        raise NotImplementedError

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self, tensors: dict[str, Tensor] | None = None) -> dict[str, Any]:
        """JSON-ready fields. Tensors are inlined as base64, or, when ``tensors`` is a dict, stored
        there under a fresh key and referenced (how erasures keep large edits out of JSON)."""
        from circuits.interventions.serialize import encode_value

        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if f.name in SCOPE_FIELDS + ("name",) and value is None:
                continue
            if f.name == "branch" and value == "both":
                continue
            out[f.name] = encode_value(value, owner=self.describe(), argument=f.name, tensors=tensors)
        return out
