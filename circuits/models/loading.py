"""``circuits.load``: a local diffusers folder, a hub id, a pipeline object, or ``"pocket"``."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from circuits.errors import ModelLoadError
from circuits.models.diffusion import Diffusion

POCKET_DIR = Path(__file__).resolve().parent.parent / "pocket" / "pipeline"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load(
    source: Any,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Diffusion:
    """Load a Stable Diffusion model and instrument it for circuits.

    Args:
        source: ``"pocket"`` (the built-in model), a local folder written by ``save_pretrained``,
            a hub id such as ``"runwayml/stable-diffusion-v1-5"`` (needs a reachable hub or a
            cached copy), or an existing ``StableDiffusionPipeline`` (its components are
            instrumented in place and shared). SDXL folders (``StableDiffusionXLPipeline`` in
            ``model_index.json``) and pipelines load with both text encoders.
        device: where to put the model (default: where it is, i.e. CPU after loading).
        dtype: parameter dtype (default: float32 for folders and hub ids; unchanged for pipelines).
    """
    if not isinstance(source, (str, os.PathLike)):
        model = _from_pipeline(source)
    elif str(source) == "pocket":
        if not (POCKET_DIR / "model_index.json").is_file():
            raise ModelLoadError(
                f"the pocket model is not installed at {POCKET_DIR}: its weights ship with circuits, so reinstall "
                "it (`pip install -e .` in a checkout); circuits/pocket/MODEL_CARD.md gives the commands that "
                "trained it"
            )
        model = _from_folder(POCKET_DIR, dtype, source="pocket")
    elif Path(source).exists():
        model = _from_folder(Path(source), dtype, source=str(source))
    elif isinstance(source, str) and _HUB_ID.match(source):
        model = _from_hub(source, dtype)
    else:
        raise ModelLoadError(
            f"cannot load {str(source)!r}: no such folder, and it is not a hub id of the form 'owner/name'. "
            "Pass 'pocket', a folder written by StableDiffusionPipeline.save_pretrained, a hub id, "
            "or a StableDiffusionPipeline object"
        )
    if device is not None or (dtype is not None and not isinstance(source, (str, os.PathLike))):
        model.to(device=device, dtype=dtype)
    return model


def _from_pipeline(pipe: Any, source: str = "<pipeline>") -> Diffusion:
    missing = [c for c in ("tokenizer", "text_encoder", "unet", "vae", "scheduler") if getattr(pipe, c, None) is None]
    if missing:
        raise ModelLoadError(
            f"cannot load a {type(pipe).__name__}: it lacks {', '.join(missing)}; "
            "pass a StableDiffusionPipeline (or an object with tokenizer, text_encoder, unet, vae, scheduler)"
        )
    second = [getattr(pipe, c, None) for c in ("tokenizer_2", "text_encoder_2")]
    if (second[0] is None) != (second[1] is None):
        raise ModelLoadError(
            f"cannot load a {type(pipe).__name__}: it has one of tokenizer_2 / text_encoder_2 but not the other; "
            "an SDXL pipeline carries both"
        )
    return Diffusion(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        unet=pipe.unet,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        source=source,
        tokenizer_2=second[0],
        text_encoder_2=second[1],
        force_zeros_for_empty_prompt=bool(getattr(getattr(pipe, "config", None), "force_zeros_for_empty_prompt", True)),
    )


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence what transformers and diffusers print while a pipeline loads and a user cannot act on
    (torchvision fallback notices, "install accelerate" advice, per-component progress bars).

    Their verbosity and progress-bar settings are restored on exit, so a user's own logging
    configuration is left as it was; errors still raise.
    """
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    libraries = (transformers_logging, diffusers_logging)
    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    for lib, _, _ in saved:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()


def _pretrained(where: str | Path, dtype: torch.dtype | None, local_files_only: bool, *, xl: bool = False) -> Any:
    """``StableDiffusionPipeline.from_pretrained`` (``StableDiffusionXLPipeline`` with ``xl``) without the
    safety checker, the watermarker and library chatter."""
    with quiet_libraries():
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        if xl:
            return StableDiffusionXLPipeline.from_pretrained(
                where, dtype=dtype or torch.float32, local_files_only=local_files_only, add_watermarker=False
            )
        return StableDiffusionPipeline.from_pretrained(
            where,
            dtype=dtype or torch.float32,
            local_files_only=local_files_only,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


#: what a Stable Diffusion pipeline folder holds: model_index.json naming these components, one subfolder each
COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
#: what an SDXL folder holds besides
XL_COMPONENTS = ("tokenizer_2", "text_encoder_2")
XL_CLASSES = ("StableDiffusionXLPipeline",)


def _check_index(folder: Path) -> bool:
    """A clear error when ``folder/model_index.json`` is not a pipeline index (diffusers would fail
    with a bare ``KeyError: '_class_name'`` or a JSON error deep inside ``from_pretrained``).

    Returns whether the folder is an SDXL pipeline (which also needs ``tokenizer_2``, ``text_encoder_2``)."""
    index = folder / "model_index.json"
    what = (f"a pipeline folder holds model_index.json (a JSON object with '_class_name', e.g. "
            f"'StableDiffusionPipeline', and an entry per component: {', '.join(COMPONENTS)}) and one subfolder "
            "per component, as StableDiffusionPipeline.save_pretrained writes it")  # fmt: skip
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{index} cannot be read as JSON ({error}); {what}") from None
    if not isinstance(data, dict) or "_class_name" not in data:
        found = f"keys {sorted(data)}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise ModelLoadError(f"{index} is not a pipeline index (no '_class_name'; found {found}); {what}")
    xl = data["_class_name"] in XL_CLASSES
    missing = [c for c in COMPONENTS + (XL_COMPONENTS if xl else ()) if c not in data]
    if missing:
        raise ModelLoadError(f"{index} names no {', '.join(missing)}; {what}" + (
            f" (an {data['_class_name']} also has {', '.join(XL_COMPONENTS)})" if xl else ""
        ))
    return xl


def _from_folder(folder: Path, dtype: torch.dtype | None, *, source: str) -> Diffusion:
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json); "
            "point at the folder that StableDiffusionPipeline.save_pretrained wrote"
        )
    xl = _check_index(folder)
    try:
        pipe = _pretrained(folder, dtype, local_files_only=True, xl=xl)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as error:
        # a component folder that is missing or of another library: diffusers' own error, named
        raise ModelLoadError(f"failed to load the pipeline in {folder}: {type(error).__name__}: {error}") from error
    return _from_pipeline(pipe, source=source)


def _from_hub(hub_id: str, dtype: torch.dtype | None) -> Diffusion:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        pipe = _pretrained(hub_id, dtype, local_files_only=offline)
    except Exception as error:  # hub errors come in many classes; all mean "not here"
        why = (
            "the hub is offline (HF_HUB_OFFLINE=1)" if offline else "the hub could not be reached or has no such model"
        )
        raise ModelLoadError(
            f"cannot load {hub_id!r}: {why}, and no cached copy was found. Download it where a hub is "
            f"reachable (StableDiffusionPipeline.from_pretrained({hub_id!r}).save_pretrained('some/folder')), "
            "copy the folder here, and call circuits.load('some/folder')"
        ) from error
    return _from_pipeline(pipe, source=hub_id)
