"""Concept-erasure methods, each a composition of the core primitives.

Every method module has a frozen ``Config`` (the paper's defaults) and
``fit(model, concept, config=None, **overrides) -> Erasure``:

- :mod:`~circuits.methods.uce` - UCE, closed-form K/V edit (ErasePro paper Eq. 1-2; the baseline);
- :mod:`~circuits.methods.erasepro` - ErasePro, zero-residual edits applied shallow to deep;
- :mod:`~circuits.methods.trce` - TRCE: stage 1 (closed form at the first [EoT]), stage 2 (trajectory
  steering), the [EoT] probes;
- :mod:`~circuits.methods.acterase` - ActErase: masked FFN activation patching and multi-concept merging;
- :mod:`~circuits.methods.ant` - ANT: CFG reversal study, saliency maps, masked trajectory-aware fine-tune;

An :class:`Erasure` is data (a graph of weight edits and a trace), applied by passing it wherever a
graph is taken; ``erasure.save(folder)`` / :func:`load` store it as safetensors + JSON.
"""

from circuits.methods import acterase, ant, erasepro, trce, uce
from circuits.methods.concept import Concept, ConceptError, PromptPair
from circuits.methods.erasure import Erasure, ErasureFormatError, load

__all__ = [
    "Concept", "ConceptError", "Erasure", "ErasureFormatError", "PromptPair", "acterase", "ant", "erasepro", "load",
    "trce", "uce",
]
