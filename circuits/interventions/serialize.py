"""JSON encoding of intervention arguments.

Tensors become base64 with dtype and shape, or, given a ``tensors`` store, a reference
``{"__tensor_ref__": key}`` to an entry of that store (saved beside the JSON as safetensors).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

from circuits.errors import GraphFormatError

_TENSOR = "__tensor__"
_REF = "__tensor_ref__"


def encode_value(value: Any, *, owner: str, argument: str, tensors: dict[str, torch.Tensor] | None = None) -> Any:
    if isinstance(value, torch.Tensor) and tensors is not None:
        key = f"t{len(tensors)}"
        tensors[key] = value.detach()
        return {_REF: key}
    if isinstance(value, torch.Tensor):
        # reshape first: a 0-dim tensor (a number given to Replace/Scale) cannot be viewed as bytes
        t = value.detach().cpu().contiguous().reshape(-1)
        return {
            _TENSOR: {
                "dtype": str(t.dtype).removeprefix("torch."),
                "shape": list(value.shape),
                "data": base64.b64encode(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").decode(),
            }
        }
    if callable(value):
        raise GraphFormatError(
            f"{owner}: argument {argument!r} is a Python function, which JSON cannot hold; "
            "use a tensor value to save this graph"
        )
    if isinstance(value, tuple):
        return list(value)
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    raise GraphFormatError(f"{owner}: argument {argument!r} of type {type(value).__name__} cannot be saved as JSON")


def decode_value(value: Any, *, where: str, tensors: dict[str, torch.Tensor] | None = None) -> Any:
    if isinstance(value, dict) and set(value) == {_REF}:
        if tensors is None or value[_REF] not in tensors:
            raise GraphFormatError(f"{where}: refers to tensor {value[_REF]!r}, which the tensor file does not hold")
        return tensors[value[_REF]]
    if isinstance(value, dict):
        if set(value) != {_TENSOR}:
            raise GraphFormatError(f"{where}: unexpected object {sorted(value)}; only encoded tensors are objects")
        spec = value[_TENSOR]
        try:
            dtype = getattr(torch, spec["dtype"])
            raw = base64.b64decode(spec["data"])
            flat = torch.from_numpy(np.frombuffer(bytearray(raw), dtype=np.uint8))
            return flat.view(dtype).reshape(spec["shape"]).clone()
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            raise GraphFormatError(f"{where}: malformed tensor encoding ({error})") from None
    return value
