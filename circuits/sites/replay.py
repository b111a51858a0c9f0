"""Record a module's calls and replay them on new inputs.

Layer-by-layer methods (ErasePro's progressive alignment) need "layer i applied to these hidden
states", with whatever extra arguments the model passes that layer (attention masks, position
ids, flags that change between library versions). Rather than rebuilding those arguments, record
one real call with :func:`record_calls` and :meth:`ModuleCall.replay` it with a new first input:
the layer runs exactly as inside the model, under whatever interventions are active.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from circuits.sites.index import SiteIndex


@dataclass(eq=False)
class ModuleCall:
    """One call of ``module``: its positional and keyword arguments."""

    site: str
    module: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def input(self) -> Any:
        """The first argument (the hidden states, for a transformer layer)."""
        return self.args[0] if self.args else next(iter(self.kwargs.values()))

    def replay(self, first: Tensor) -> Tensor:
        """Call the module again with ``first`` in place of its first argument; return its main tensor."""
        if self.args:
            output = self.module(first, *self.args[1:], **self.kwargs)
        else:
            name = next(iter(self.kwargs))
            output = self.module(**{**self.kwargs, name: first})
        return primary_tensor(output)


def primary_tensor(output: Any) -> Tensor:
    """The main tensor of a module output (a tensor, the first item of a tuple, or ``.sample``)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    if hasattr(output, "sample"):
        return output.sample
    if hasattr(output, "keys"):
        return output[next(iter(output.keys()))]
    raise TypeError(f"cannot find the tensor in a module output of type {type(output).__name__}")


@contextlib.contextmanager
def record_calls(sites: SiteIndex, names: Sequence[str]) -> Iterator[dict[str, list[ModuleCall]]]:
    """Record every call of the modules at ``names`` inside the block: ``{site: [ModuleCall, ...]}``.

    The hooks are removed on exit, exceptions included.
    """
    calls: dict[str, list[ModuleCall]] = {}
    handles = []
    try:
        for name in names:
            for site in sites.resolve(name):
                module = sites.module(site)
                calls[site] = []

                def pre_hook(mod: nn.Module, args: tuple, kwargs: dict, _site: str = site) -> None:
                    calls[_site].append(ModuleCall(_site, mod, args, dict(kwargs)))

                handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        yield calls
    finally:
        for handle in reversed(handles):
            handle.remove()
