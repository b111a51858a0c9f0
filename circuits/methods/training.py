"""The fine-tuning loop shared by the trained methods (TRCE stage 2, ANT).

:func:`finetune` trains chosen parameters of a model against a loss the method supplies and
returns only their **deltas**; the model's weights are restored bitwise on exit, so the result is
an ordinary reversible :class:`~circuits.WeightEdit` graph, and no second copy of the model is
ever written to disk.

What it guarantees:

- only the named parameters get gradients (``requires_grad`` is set on exactly those for the
  duration, and restored after); with ``masks``, entries outside a parameter's mask stay bitwise
  equal to the original (gradients are masked and the entries are copied back after every step);
- reproducible on CPU: step ``i`` calls ``loss_fn(i, generator)`` with a generator seeded by
  ``(seed, i)``, so a run and a resumed run draw the same batches, noise and timesteps;
- named loss terms: ``loss_fn`` may return ``(loss, {"name": value, ...})``; each step's terms (as
  floats) are appended to the list passed as ``terms`` and checkpointed with the losses, so a resumed
  run reports the earlier steps' terms too;
- resumable: with ``checkpoint=folder`` the deltas, the optimizer state and the step are saved
  atomically every ``checkpoint_every`` steps; calling again with the same folder and the same
  ``fingerprint`` continues where it stopped and ends with the same deltas. A checkpoint written
  for another fingerprint (another config, concept or model) is an error, never silently reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuits.errors import CircuitsError
from circuits.models.diffusion import Diffusion

LossFn = Callable[[int, torch.Generator], "Tensor | tuple[Tensor, Mapping[str, Tensor | float]]"]
STATE_NAME, TENSORS_NAME = "state.json", "deltas.safetensors"


class CheckpointError(CircuitsError, ValueError):
    """A checkpoint folder that belongs to another run, or that cannot be read."""


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step: the same for a run and for a resumed run."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


@contextlib.contextmanager
def trainable(
    model: Diffusion, params: Sequence[str], *, restore: bool = True
) -> Iterator[dict[str, torch.nn.Parameter]]:
    """``requires_grad`` on exactly ``params`` (every other parameter of every component frozen, SDXL's
    second text encoder included) inside the block; flags are restored on exit, exceptions included,
    and so are the weights unless ``restore=False``: a caller that only reads gradients (ANT's saliency
    over the whole UNet) skips the copy, which would be the size of the UNet (10 GB on SDXL)."""
    named = {name: model.parameter(name) for name in params}
    modules = (model.unet, *model.text_encoders.values(), model.vae)
    everything = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in everything]
    originals = {name: p.detach().clone() for name, p in named.items()} if restore else {}
    try:
        for p in everything:
            p.requires_grad_(False)
        for p in named.values():
            p.requires_grad_(True)
        yield named
    finally:
        with torch.no_grad():
            for name, p in named.items():
                if name in originals:
                    p.copy_(originals[name])
        for p, flag in zip(everything, flags):
            p.requires_grad_(flag)


def finetune(
    model: Diffusion,
    params: Sequence[str],
    loss_fn: LossFn,
    *,
    steps: int,
    lr: float,
    seed: int = 0,
    masks: Mapping[str, Tensor] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 50,
    fingerprint: Mapping[str, Any] | None = None,
    progress: bool = True,
    description: str = "fine-tune",
    on_step: Callable[[int, float], None] | None = None,
    terms: list[dict[str, float]] | None = None,
) -> tuple[dict[str, Tensor], list[float]]:
    """Adam on ``params`` for ``steps`` steps of ``loss_fn``; returns ``(deltas, losses)``.

    ``masks`` maps a parameter name to a bool tensor of its shape: only True entries train.
    ``terms``, if given, receives one dict of named loss terms per step (when ``loss_fn`` returns
    ``(loss, terms)``; empty dicts otherwise). The model is left exactly as it was.
    """
    if not params:
        raise ValueError("finetune: params is empty; name the parameters to train")
    if steps < 0 or lr <= 0:
        raise ValueError(f"finetune: steps={steps} must be >= 0 and lr={lr} > 0")
    masks = dict(masks or {})
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"finetune: masks for parameters that are not trained: {unknown}")
    fingerprint = json.loads(json.dumps(dict(fingerprint or {}), default=str))
    folder = Path(checkpoint) if checkpoint is not None else None
    with trainable(model, params) as named:
        originals = {name: p.detach().clone() for name, p in named.items()}
        for name, mask in masks.items():
            if mask.shape != named[name].shape or mask.dtype != torch.bool:
                raise ValueError(
                    f"finetune: mask for {name} has shape {tuple(mask.shape)} and dtype {mask.dtype}; "
                    f"give a bool tensor of shape {tuple(named[name].shape)}"
                )
        optimizer = torch.optim.Adam(list(named.values()), lr=lr)
        start, losses, history = 0, [], []
        if folder is not None and (folder / STATE_NAME).is_file():
            start, losses, history = _resume(folder, named, originals, optimizer, fingerprint)
        bar = tqdm(range(start, steps), disable=not progress, desc=description, initial=start, total=steps)
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(step, step_generator(seed, step))
            loss, parts = loss if isinstance(loss, tuple) else (loss, {})
            if not loss.requires_grad:
                raise CircuitsError(f"finetune: the loss at step {step} does not depend on the trained parameters")
            loss.backward()
            for name, mask in masks.items():
                grad = named[name].grad
                if grad is not None:
                    grad.mul_(mask.to(grad.dtype))
            optimizer.step()
            with torch.no_grad():
                for name, mask in masks.items():  # Adam's epsilon never moves a frozen entry, but be exact
                    named[name].copy_(torch.where(mask, named[name], originals[name]))
            losses.append(float(loss.detach()))
            history.append({name: float(value) for name, value in parts.items()})
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if on_step is not None:
                on_step(step, losses[-1])
            done = step + 1
            if folder is not None and (done % checkpoint_every == 0 or done == steps):
                _save(folder, named, originals, optimizer, done, losses, fingerprint, history)
        deltas = {name: (p.detach() - originals[name]).clone() for name, p in named.items()}
    if terms is not None:
        terms.extend(history)
    return deltas, losses


def _save(folder: Path, named, originals, optimizer, step: int, losses: list[float], fingerprint: dict,
          history: list[dict[str, float]]) -> None:
    from safetensors.torch import save_file

    # float64 deltas: original + delta then rounds back to the trained float32 weight exactly
    tensors = {f"delta/{n}": (p.detach().double() - originals[n].double()).contiguous() for n, p in named.items()}
    state = optimizer.state_dict()
    names = list(named)
    for index, slot in state["state"].items():
        for key, value in slot.items():
            if isinstance(value, Tensor):
                tensors[f"adam/{names[index]}/{key}"] = value.detach().contiguous()
    meta = {"step": step, "losses": losses, "terms": history, "fingerprint": fingerprint, "params": names,
            "param_groups": state["param_groups"]}
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(staging / TENSORS_NAME))
        (staging / STATE_NAME).write_text(json.dumps(meta))
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _resume(folder: Path, named, originals, optimizer, fingerprint: dict) -> tuple[int, list[float], list[dict]]:
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / STATE_NAME).read_text())
        tensors = load_file(str(folder / TENSORS_NAME))
    except Exception as error:  # json or safetensors errors
        raise CheckpointError(f"checkpoint {folder} cannot be read ({error}); delete it to start over") from None
    if meta.get("fingerprint") != fingerprint or meta.get("params") != list(named):
        changed = sorted(
            k for k in set(fingerprint) | set(meta.get("fingerprint", {}))
            if fingerprint.get(k) != meta.get("fingerprint", {}).get(k)
        )
        raise CheckpointError(
            f"checkpoint {folder} was written by another run "
            f"(differs in: {', '.join(changed) or 'trained parameters'}); "
            "pass another checkpoint folder or delete this one"
        )
    with torch.no_grad():
        for name, p in named.items():
            p.copy_((originals[name].double() + tensors[f"delta/{name}"]).to(p.dtype))
    names = list(named)
    state = {"state": {}, "param_groups": meta["param_groups"]}
    for index, name in enumerate(names):
        slot = {key.rsplit("/", 1)[1]: value for key, value in tensors.items() if key.startswith(f"adam/{name}/")}
        if slot:
            state["state"][index] = slot
    optimizer.load_state_dict(state)
    return int(meta["step"]), list(meta["losses"]), list(meta.get("terms", [{} for _ in meta["losses"]]))
