"""Sampling: the one sampler, guidance strategies, the result objects, and the runner helpers.

Methods with their own denoising loop (trajectory fine-tuning, saliency) build it from the same
helpers ``sample`` uses, so their text embeddings, schedules, decoding and step contexts match it:
``encode_prompts``, ``make_scheduler``, ``decode`` and ``publish_context``; on SDXL also ``encode_text``
(context and pooled embedding) and ``added_conditioning`` (the UNet's ``added_cond_kwargs``).
"""

from circuits.context import StepContext, publish_context
from circuits.sampling.conditioning import TextConditioning, added_conditioning, encode_text
from circuits.sampling.guidance import CFG, ReversedCFG, Rowwise, Unconditional
from circuits.sampling.result import SampleResult, Trajectory
from circuits.sampling.sampler import SCHEDULERS, decode, encode_prompts, make_scheduler, sample
from circuits.sampling.sweep import SweepResult, Variant, sweep

__all__ = [
    "CFG", "SCHEDULERS", "ReversedCFG", "Rowwise", "SampleResult", "StepContext", "SweepResult", "TextConditioning",
    "Trajectory", "Unconditional", "Variant", "added_conditioning", "decode", "encode_prompts", "encode_text",
    "make_scheduler", "publish_context", "sample", "sweep",
]
