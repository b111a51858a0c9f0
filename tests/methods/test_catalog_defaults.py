"""Issue 14, "Done when": ``fit(pocket_model, concept)`` with no config is the catalog's pocket entry.

The catalog (``circuits.methods.catalog``) is what the methods table and the ``erasure_benchmark``
experiment fit; a user calls ``uce.fit(model, concept)``. If the two resolved different settings, the
numbers in ``docs/methods.md`` would not be what a user gets. No sampling is needed to check that:

- every method's default entry resolves the same ``Config`` as the bare ``fit`` (and it is the
  model's ``Config.pocket()``), on every colour, shape and texture of the pocket world. The fits are
  stopped right after the config is resolved, so the trained methods (TRCE stage 2, ANT) cost nothing;
- for the closed forms (UCE, ErasePro, TRCE stage 1; a fraction of a second each) the two erasures'
  configs and graphs (every edited tensor) are identical too.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch

import circuits
from circuits.interventions.weight_edit import WeightEdit
from circuits.methods import acterase, ant, catalog, erasepro, trce, uce
from circuits.methods.common import resolve_config
from circuits.pocket import concept as pocket_concept
from circuits.pocket.scene import COLOURS, SHAPES, TEXTURES

#: catalog name -> (the method's module, what a user passes besides (model, concept)): each of these
#: entries is documented as "the method's defaults" (catalog summaries, docs/methods.md)
DEFAULT_ENTRIES: dict[str, tuple[ModuleType, dict[str, Any]]] = {
    "uce+preservation": (uce, {}),
    "erasepro": (erasepro, {}),
    "trce1": (trce, {"stages": ("text",)}),
    "trce": (trce, {}),
    "acterase": (acterase, {}),
    "ant": (ant, {}),
}
CLOSED_FORM = ("uce+preservation", "erasepro", "trce1")
EVERY_VALUE = (*COLOURS, *SHAPES, *TEXTURES)


class _Resolved(Exception):
    """Raised right after a fit resolved its config, carrying it (stops the fit before any work)."""

    def __init__(self, config: Any) -> None:
        super().__init__("config resolved")
        self.config = config


@pytest.fixture(scope="module")
def pocket():
    return circuits.load("pocket")


def resolved_config(monkeypatch: pytest.MonkeyPatch, module: ModuleType, call: Callable[..., Any], *args,
                    **kwargs) -> Any:
    """The config ``module.fit`` resolves when ``call(*args, **kwargs)`` runs it; the fit goes no further."""

    def stop(*args, **kwargs):
        raise _Resolved(resolve_config(*args, **kwargs))

    with monkeypatch.context() as patch:
        patch.setattr(module, "resolve_config", stop)
        try:
            call(*args, **kwargs)
        except _Resolved as done:
            return done.config
    raise AssertionError(f"{module.__name__}.fit returned without resolving its config through resolve_config")


def test_every_method_module_has_a_default_entry() -> None:
    """Every module of circuits.methods with a ``fit`` and model-aware defaults (``Config.pocket``) is
    checked here: a new method must add its default catalog entry to DEFAULT_ENTRIES."""
    import circuits.methods as package

    found = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if callable(getattr(module, "fit", None)) and callable(getattr(getattr(module, "Config", None), "pocket", None)):
            found.add(module.__name__)
    assert found == {m.__name__ for m, _ in DEFAULT_ENTRIES.values()}
    assert set(DEFAULT_ENTRIES) <= set(catalog.names())


@pytest.mark.parametrize("name", list(DEFAULT_ENTRIES))
def test_catalog_entry_resolves_the_bare_fits_config(pocket, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    module, extra = DEFAULT_ENTRIES[name]
    expected = resolve_config(module.Config, None, {}, pocket)
    assert expected == module.Config.pocket(), f"{module.__name__}: pocket defaults are not Config.pocket()"
    for value in EVERY_VALUE:
        concept = pocket_concept(value)
        bare = resolved_config(monkeypatch, module, module.fit, pocket, concept, **extra)
        entry = resolved_config(monkeypatch, module, catalog.fit, name, pocket, concept)
        assert entry == bare, f"catalog {name!r} on {value!r}: {entry} != bare fit's {bare}"
        if not extra:
            assert bare == expected, f"{module.__name__}.fit(pocket, {value!r}) did not start from Config.pocket()"


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_closed_form_entry_is_the_bare_fit(pocket, name: str) -> None:
    module, extra = DEFAULT_ENTRIES[name]
    torch.set_num_threads(1)
    for value in EVERY_VALUE:
        concept = pocket_concept(value)
        bare = module.fit(pocket, concept, **extra)
        entry = catalog.fit(name, pocket, concept)
        assert entry.config == bare.config, f"{name} on {value!r}: configs differ"
        ours, theirs = entry.as_graph(), bare.as_graph()
        assert len(ours) == len(theirs) > 0, f"{name} on {value!r}: {len(ours)} vs {len(theirs)} interventions"
        for a, b in zip(ours, theirs, strict=True):
            assert isinstance(a, WeightEdit) and isinstance(b, WeightEdit), f"{name}: closed forms edit weights"
            assert a.param == b.param, f"{name} on {value!r}: {a.param} vs {b.param}"
            for field in ("delta", "value"):
                x, y = getattr(a, field), getattr(b, field)
                assert (x is None) == (y is None), f"{name} on {value!r}: {a.param} {field} given in one only"
                assert x is None or torch.equal(x, y), f"{name} on {value!r}: the {field} of {a.param} differs"
