"""What ``circuits.sample`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Float
from torch import Tensor

from circuits.interventions.records import Captures


@dataclass
class Trajectory:
    """Per-step record of a sampling run (when ``record=True``).

    ``latents[i]`` is the latent entering step i (``latents[-1]`` the final one); ``noise_pred[i]``
    the guided prediction at step i; ``noise_cond`` / ``noise_uncond`` the two branches (uncond is
    ``None`` without CFG). All on the CPU, shape ``[steps(+1), batch, C, h, w]``.
    """

    timesteps: list[float]
    latents: Float[Tensor, "steps_plus_one batch channels height width"]
    noise_pred: Float[Tensor, "steps batch channels height width"]
    noise_cond: Float[Tensor, "steps batch channels height width"]
    noise_uncond: Float[Tensor, "steps batch channels height width"] | None


@dataclass
class SampleResult:
    """Images (PIL), final latents, optional trajectory, and the captures of the graph."""

    images: list[Any]
    latents: Float[Tensor, "batch channels height width"]
    prompts: list[str]
    seed: int | list[int]
    timesteps: list[float]
    trajectory: Trajectory | None = None
    captures: Captures = field(default_factory=Captures)

    def _repr_html_(self) -> str:  # a row of thumbnails in Jupyter
        import base64
        import io

        cells = []
        for image, prompt in zip(self.images, self.prompts):
            buffer = io.BytesIO()
            image.resize((96, 96), resample=0).save(buffer, format="PNG")
            data = base64.b64encode(buffer.getvalue()).decode()
            cells.append(
                f'<figure style="display:inline-block;margin:2px"><img src="data:image/png;base64,{data}"/>'
                f'<figcaption style="font-size:10px;max-width:96px">{prompt}</figcaption></figure>'
            )
        return "<div>" + "".join(cells) + "</div>"
