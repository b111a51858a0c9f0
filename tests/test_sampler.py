"""The sampler matches StableDiffusionPipeline and implements the guidance strategies."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import circuits
from circuits.context import StepContext
from circuits.errors import PromptError


@pytest.fixture(scope="module")
def reference(tiny_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler", ["ddim", "dpm"])
def test_images_equal_diffusers_pipeline(model, reference, prompts, scheduler):
    """Tolerance: bitwise-equal uint8 images and latents equal to 1e-6 (same ops, same order, CPU)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    cls = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}[scheduler]
    reference.scheduler = cls.from_config(reference.scheduler.config)
    ref = reference(
        prompts, height=16, width=16, num_inference_steps=4, guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(11), output_type="latent",
    ).images
    ref_images = reference(
        prompts, height=16, width=16, num_inference_steps=4, guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(11), output_type="pil",
    ).images
    ours = circuits.sample(model, prompts, seed=11, steps=4, scheduler=scheduler, progress=False)
    torch.testing.assert_close(ours.latents, ref, rtol=0, atol=1e-6)
    for a, b in zip(ours.images, ref_images):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_negative_prompt_and_no_cfg_match_pipeline(model, reference, prompts):
    from diffusers import DDIMScheduler

    reference.scheduler = DDIMScheduler.from_config(reference.scheduler.config)
    for kwargs in ({"guidance_scale": 1.0}, {"negative_prompt": ["a dog", "a cat"]}):
        ref = reference(prompts, height=16, width=16, num_inference_steps=3, generator=torch.Generator().manual_seed(2),
                        output_type="latent", **kwargs).images
        ours = circuits.sample(model, prompts, seed=2, steps=3, progress=False, **kwargs)
        torch.testing.assert_close(ours.latents, ref, rtol=0, atol=1e-6)


def test_same_seed_same_images_bitwise(model, prompts):
    graph = [circuits.ZeroTokens("unet.*attn2", tokens="eot")]
    a = circuits.sample(model, prompts, seed=5, steps=3, graph=graph, progress=False)
    b = circuits.sample(model, prompts, seed=5, steps=3, graph=graph, progress=False)
    assert torch.equal(a.latents, b.latents)
    c = circuits.sample(model, prompts, seed=6, steps=3, graph=graph, progress=False)
    assert not torch.equal(a.latents, c.latents)


def test_trajectory_shapes_and_cfg_combination(model, prompts):
    result = circuits.sample(model, prompts, seed=1, steps=4, record=True, progress=False)
    traj = result.trajectory
    assert traj.latents.shape == (5, 2, 4, 8, 8)
    assert traj.noise_pred.shape == traj.noise_cond.shape == traj.noise_uncond.shape == (4, 2, 4, 8, 8)
    torch.testing.assert_close(traj.noise_pred, traj.noise_uncond + 7.5 * (traj.noise_cond - traj.noise_uncond))
    assert torch.equal(traj.latents[-1], result.latents)
    assert len(result.images) == 2 and result.images[0].size == (16, 16)


def test_reversed_cfg_flips_direction_for_t_at_or_below_t_prime(model, prompts):
    t_prime = 500
    result = circuits.sample(model, prompts, seed=1, steps=4, record=True, progress=False,
                             guidance=circuits.ReversedCFG(7.5, t_prime=t_prime))
    traj = result.trajectory
    for i, t in enumerate(traj.timesteps):
        sign = -1.0 if t <= t_prime else 1.0
        expected = traj.noise_uncond[i] + 7.5 * sign * (traj.noise_cond[i] - traj.noise_uncond[i])
        torch.testing.assert_close(traj.noise_pred[i], expected)
    assert any(t <= t_prime for t in traj.timesteps) and any(t > t_prime for t in traj.timesteps)
    plain = circuits.sample(model, prompts, seed=1, steps=4, record=True, progress=False)
    first_reversed = next(i for i, t in enumerate(traj.timesteps) if t <= t_prime)
    assert torch.equal(plain.trajectory.latents[: first_reversed + 1], traj.latents[: first_reversed + 1])


def test_bad_sampler_inputs(model):
    with pytest.raises(PromptError, match="empty"):
        circuits.sample(model, [], progress=False)
    with pytest.raises(PromptError, match="allows 16"):
        circuits.sample(model, [" ".join(["red"] * 30)], steps=1, progress=False)
    with pytest.raises(ValueError, match="multiples of 2"):
        circuits.sample(model, ["a"], height=15, steps=1, progress=False)
    with pytest.raises(ValueError, match="negative_prompt has 1"):
        circuits.sample(model, ["a", "b"], negative_prompt=["x"], steps=1, progress=False)
    with pytest.raises(ValueError, match="scheduler="):
        circuits.sample(model, ["a"], scheduler="nope", steps=1, progress=False)


def test_runner_helpers_are_public(model, prompts):
    """Methods with their own loop import these from circuits.sampling, not by private names."""
    from circuits.sampling import decode, encode_prompts, make_scheduler, publish_context
    from circuits.sampling import sampler as sampler_module

    assert not hasattr(sampler_module, "_publish") and "_CURRENT" not in inspect.getsource(sampler_module)
    assert encode_prompts(model, prompts, "cond").shape == (len(prompts), 16, 32)
    assert type(make_scheduler(model, "ddim")).__name__ == "DDIMScheduler"
    ctx = StepContext(phase="unet", branch_rows={"cond": (0,)}, step=3)
    with publish_context(ctx) as published:
        assert circuits.current_context() is ctx is published
    assert circuits.current_context() is None
    assert decode(model, torch.zeros(1, 4, 8, 8))[0].size == (16, 16)


def test_unconditional_guidance_follows_the_unconditional_branch_alone(model):
    """``Unconditional()`` (TRCE's null trajectories on SDXL) samples what the negative prompt alone gives."""
    from circuits.sampling import Unconditional

    ours = circuits.sample(model, ["a red circle"], seed=3, steps=3, guidance=Unconditional(), record=True,
                           progress=False)  # fmt: skip
    null = circuits.sample(model, [""], seed=3, steps=3, guidance_scale=1.0, progress=False)
    assert torch.allclose(ours.latents, null.latents, atol=1e-5)
    assert not torch.allclose(ours.trajectory.noise_cond[0], ours.trajectory.noise_uncond[0])  # both ran
