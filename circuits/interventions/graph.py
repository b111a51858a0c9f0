"""``Graph``: an ordered list of interventions that is also data (JSON round-trip)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Protocol, Union, runtime_checkable

from circuits.errors import CircuitsError, GraphFormatError
from circuits.interventions.base import REGISTRY, Intervention
from circuits.interventions.serialize import decode_value

FORMAT_VERSION = 1


class Graph(list):
    """Interventions applied in order (on one site, earlier ones see the value first)."""

    def __init__(self, interventions: Iterable[Intervention] = ()) -> None:
        items = list(interventions)
        for i, item in enumerate(items):
            _check_item(item, i)
        super().__init__(items)

    def append(self, item: Intervention) -> None:  # type: ignore[override]
        _check_item(item, len(self))
        super().append(item)

    def extend(self, items: Iterable[Intervention]) -> None:  # type: ignore[override]
        for item in items:
            self.append(item)

    def __add__(self, other: Iterable[Intervention]) -> "Graph":  # type: ignore[override]
        return Graph([*self, *other])

    def __repr__(self) -> str:
        return "Graph([\n" + "".join(f"  {item!r},\n" for item in self) + "])"

    def as_graph(self) -> "Graph":
        """Itself: a Graph is the simplest thing that has a graph (see :class:`HasGraph`)."""
        return self

    # -- JSON ----------------------------------------------------------------------------
    def to_json(self, **dump_kwargs: Any) -> str:
        return json.dumps(self.to_data(), **dump_kwargs)

    def to_data(self, tensors: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON-ready form; with a ``tensors`` dict, tensors go there and the data references them."""
        return {"circuits_graph": FORMAT_VERSION, "interventions": [i.to_dict(tensors) for i in self]}

    @classmethod
    def from_json(cls, text: str) -> "Graph":
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise GraphFormatError(f"graph JSON does not parse: {error}") from None
        return cls.from_data(data)

    @classmethod
    def from_data(cls, data: Any, tensors: dict[str, Any] | None = None) -> "Graph":
        """Inverse of :meth:`to_data` (``tensors``: the store its references point into)."""
        if not isinstance(data, dict) or "interventions" not in data:
            raise GraphFormatError('graph JSON must be an object {"circuits_graph": 1, "interventions": [...]}')
        if data.get("circuits_graph") != FORMAT_VERSION:
            raise GraphFormatError(
                f"graph JSON has format {data.get('circuits_graph')!r}; this circuits reads {FORMAT_VERSION}"
            )
        items = data["interventions"]
        if not isinstance(items, list):
            raise GraphFormatError("graph JSON: 'interventions' must be a list")
        return cls(_decode_item(item, i, tensors) for i, item in enumerate(items))


@runtime_checkable
class HasGraph(Protocol):
    """Anything that stands for a graph (a method's ``Erasure``): accepted wherever a Graph is."""

    def as_graph(self) -> Graph: ...


#: what ``intervene(model, graph)`` and ``sample(..., graph=)`` accept
GraphLike = Union[Graph, Iterable[Intervention], Intervention, HasGraph, None]


def _check_item(item: Any, index: int) -> None:
    if not isinstance(item, Intervention):
        raise TypeError(f"Graph item {index} is a {type(item).__name__}, not an intervention (Capture, Replace, ...)")


def _decode_item(item: Any, index: int, tensors: dict[str, Any] | None = None) -> Intervention:
    where = f"graph JSON intervention {index}"
    if not isinstance(item, dict) or "kind" not in item:
        raise GraphFormatError(f"{where}: must be an object with a 'kind'")
    kind = item["kind"]
    cls = REGISTRY.get(kind)
    if cls is None:
        raise GraphFormatError(f"{where}: unknown kind {kind!r}; known kinds: {sorted(REGISTRY)}")
    allowed = {f.name for f in fields(cls) if f.init}
    unknown = set(item) - allowed - {"kind"}
    if unknown:
        raise GraphFormatError(f"{where} ({kind}): unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    kwargs = {k: decode_value(v, where=f"{where}.{k}", tensors=tensors) for k, v in item.items() if k != "kind"}
    try:
        return cls(**kwargs)
    except (TypeError, CircuitsError) as error:
        raise GraphFormatError(f"{where} ({kind}): {error}") from None
