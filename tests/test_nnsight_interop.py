"""nnsight interop (issue 2, item 7): hook points are modules, so an nnsight trace sees them, and
nnsight and circuits read identical values at the same site and denoising step.

Every test loads its *own* copy of the tiny pipeline: ``NNsight(module)`` installs a controller
``forward`` on every submodule for the life of the module, so wrapping the session-wide ``model``
fixture would leak into other tests.

Wrapping must not change what circuits computes: ``HookPoint.observed`` counts torch hooks and an
explicit ``model.sites.materialize(...)`` only, so the nnsight controller ``forward`` leaves attention
on the fused SDPA kernel and values are bitwise equal. Lazy points (``probs``, ``key_bias``) are
computed for nnsight only after ``materialize``.
"""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.sampling.sampler import encode_prompts, make_scheduler

nnsight = pytest.importorskip("nnsight")
from nnsight import NNsight  # noqa: E402

PROMPTS = ["a red circle", "a photo of a blue unicorn on a white background"]
STEPS = 4
STEP = 2  # the step compared (not the first, so earlier steps' numerics feed into it)
BLOCK = "down_blocks.1.attentions.0.transformer_blocks.0"  # the 64-channel resolution
SITE = f"unet.{BLOCK}.ff.hidden"


@pytest.fixture()
def fresh(tiny_dir):
    """A model of our own: NNsight wrapping is permanent on the modules it wraps."""
    return circuits.load(tiny_dir)


def _envoy(root, site: str):
    """The nnsight envoy of a circuits site name (``unet.a.0.b`` -> ``root.a[0].b``)."""
    envoy = root
    for part in site.split(".")[1:]:
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


def _circuits_capture(model):
    """Circuits' capture of SITE at STEP (full value, all rows), and the recorded trajectory.

    Step STEP - 1 is captured too (``result.previous``) so tests can show the match pins the step.
    """
    result = circuits.sample(
        model, PROMPTS, seed=0, steps=STEPS, progress=False, record=True,
        graph=[circuits.Capture(SITE, steps=[STEP - 1, STEP])],
    )
    captured = result.captures[SITE]
    assert captured.shape[0] == 2  # two calls: exactly steps STEP - 1 and STEP
    result.previous = captured[0]
    return captured[1], result


def _nnsight_on_recorded_call(model, result):
    """Re-run the UNet call of step STEP from the recorded latents inside an nnsight trace."""
    cond = encode_prompts(model, PROMPTS, "cond")
    uncond = encode_prompts(model, [""] * len(PROMPTS), "uncond")
    embeds = torch.cat([uncond, cond])  # diffusers' CFG layout: [uncond, cond]
    scheduler = make_scheduler(model)
    scheduler.set_timesteps(STEPS)
    t = scheduler.timesteps[STEP]
    latents = result.trajectory.latents[STEP]
    model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    unet = NNsight(model.unet)
    with torch.no_grad(), unet.trace(model_input, t, encoder_hidden_states=embeds):
        hidden = _envoy(unet, SITE).output.save()
        eps = unet.eps.output.save()
    return hidden, eps


def _nnsight_across_sampling(model):
    """nnsight trace over the whole ``circuits.sample`` loop, saving SITE at the STEP-th UNet call."""
    unet = NNsight(model.unet)

    def run(prompts):
        return circuits.sample(model, prompts, seed=0, steps=STEPS, progress=False)

    with unet.trace(PROMPTS, fn=run) as tracer:
        for _ in tracer.iter[STEP]:
            hidden = _envoy(unet, SITE).output.save()
    return hidden


def test_nnsight_sees_hook_points(fresh):
    """unet.eps, ff.hidden, attention probs/key_bias and the text residual are envoys nnsight can trace."""
    unet = NNsight(fresh.unet)
    attn2 = _envoy(unet, fresh.sites.cross_attention()[0])
    for name in ("probs", "key_bias"):
        assert hasattr(attn2, name)
    assert _envoy(unet, SITE) is not None
    text = NNsight(fresh.text_encoder)
    layer = fresh.sites.text_residual()[0]
    assert _envoy(text, layer) is not None

    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    embeds = torch.randn(2, fresh.tokenizer.model_max_length, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), unet.trace(sample, 10, encoder_hidden_states=embeds):
        hidden = _envoy(unet, SITE).output.save()  # read in execution order, as nnsight requires
        out = unet.output.save()  # the root's forward returns before its forward hooks run ...
        eps = unet.eps.output.save()  # ... and unet.eps is called from circuits' forward hook
    assert torch.equal(eps, out.sample)  # unet.eps is the noise prediction itself
    assert hidden.shape == (2, 4 * 4, 4 * 64)  # [batch, 4x4 positions, GEGLU hidden = 4 x 64 channels]

    ids = fresh.tokenizer(PROMPTS, padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad(), text.trace(ids):
        resid = _envoy(text, layer).output.save()
        last = text.output.save()
    assert resid.shape == (2, fresh.tokenizer.model_max_length, 32)
    assert torch.isfinite(resid).all() and last is not None


def test_recorded_call_bitwise(fresh):
    """Same site, same step: nnsight on the recorded UNet inputs of step STEP vs circuits' Capture.

    Same inputs, same modules, same kernels, so bitwise equal on the CPU (no tolerance).
    """
    captured, result = _circuits_capture(fresh)
    hidden, eps = _nnsight_on_recorded_call(fresh, result)
    assert hidden.shape == captured.shape
    assert torch.equal(hidden, captured)
    assert torch.equal(eps.chunk(2)[1], result.trajectory.noise_cond[STEP])
    # the previous step differs clearly, so the match pins the step, not just the site
    assert (hidden - result.previous).abs().max() > 1e-3


def test_sampling_loop_bitwise(fresh):
    """An nnsight trace over the whole circuits.sample loop, read at iteration STEP, sees step STEP."""
    captured, result = _circuits_capture(fresh)
    hidden = _nnsight_across_sampling(fresh)
    assert torch.equal(hidden, captured)
    assert (hidden - result.previous).abs().max() > 1e-3


def test_wrapping_keeps_fused_attention(fresh):
    """Wrapping with NNsight must not change what circuits computes outside a trace."""
    before = circuits.sample(fresh, PROMPTS, seed=0, steps=STEPS, progress=False).latents
    NNsight(fresh.unet)
    probs = fresh.sites.module(fresh.sites.attention_probs()[0])
    assert not probs.observed
    after = circuits.sample(fresh, PROMPTS, seed=0, steps=STEPS, progress=False).latents
    assert torch.equal(before, after)


def test_materialized_probs_match(fresh):
    """Attention probabilities, materialised for nnsight, equal circuits' Capture at the same step."""
    site = fresh.sites.attention_probs()[1]  # cross-attention of down_blocks.1
    result = circuits.sample(
        fresh, PROMPTS, seed=0, steps=STEPS, progress=False, graph=[circuits.Capture(site, steps=[STEP])]
    )
    captured = result.captures[site][0]
    assert fresh.sites.materialize(site) == [site]
    try:
        unet = NNsight(fresh.unet)

        def run(prompts):
            return circuits.sample(fresh, prompts, seed=0, steps=STEPS, progress=False)

        with unet.trace(PROMPTS, fn=run) as tracer:
            for _ in tracer.iter[STEP]:
                probs = _envoy(unet, site).output.save()
    finally:
        fresh.sites.materialize(site, enabled=False)
    assert probs.shape == captured.shape  # [rows, heads, queries, keys]
    assert torch.equal(probs, captured)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
