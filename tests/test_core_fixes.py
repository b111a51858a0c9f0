"""Core fixes: token selections that match nothing, reports without a step context, and capture
bookkeeping (cached stack, the step of each call, attention maps with their query grid)."""

from __future__ import annotations

import warnings

import pytest
import torch
from model_state import assert_same_state, snapshot

import circuits
from circuits import Capture, Scale, ZeroTokens
from circuits.errors import ScopeError, ShapeError, UnmatchedInterventionWarning
from circuits.interventions.capture import CaptureRecord, to_maps
from circuits.sites.attention import query_grid

STEPS = 3
TEXT = "text_encoder.encoder.layers.0"


def sample(model, prompts, graph, **kwargs):
    return circuits.sample(model, prompts, steps=STEPS, progress=False, record=True, graph=graph, **kwargs)


def unet_call(model, height=8, width=8, rows=2):
    x = torch.randn(rows, 4, height, width)
    embeds = torch.randn(rows, model.tokenizer.model_max_length, model.text_encoder.config.hidden_size)
    with torch.no_grad():
        return model.unet(x, 500, encoder_hidden_states=embeds).sample


# -- 1. a token selection that matches nothing in any prompt is an error ---------------------------
@pytest.mark.parametrize(
    "tokens, suggestion",
    [("eos", "'eot'"), ("EOT", "'eot'"), ("word:rde", "'word:red'"), ("cirle", "'circle'"), ("zebra", None)],
)
def test_selection_matching_no_prompt_is_an_error_with_closest_names(model, prompts, tokens, suggestion):
    before = snapshot(model)
    with pytest.raises(ScopeError) as info:
        sample(model, prompts, [Capture(TEXT, tokens=tokens, name="c")])
    message = str(info.value)
    assert f"tokens={tokens!r}" in message and "'a red circle'" in message and "Capture" in message
    if suggestion:
        assert "closest valid selections" in message and suggestion in message
    else:
        assert "'sot', 'eot'" in message  # no close match: the valid forms are listed
    assert_same_state(before, snapshot(model))


def test_selection_typo_is_an_error_before_any_model_call(model, prompts):
    with pytest.raises(ScopeError, match=r"tokens='rde'.*closest valid selections: 'red'"):
        with circuits.intervene(model, [Capture(TEXT, name="text")]) as outer:
            sample(model, prompts, [ZeroTokens("unet.*attn2", tokens="rde")])
    assert outer.captures.records["text"].count == 0  # the sampler checked before encoding the prompts
    with pytest.raises(ScopeError, match="tokens=\\['rde', 'blu'\\]"):
        sample(model, prompts, [ZeroTokens("unet.*attn2", tokens=["rde", "blu"])])


def test_legitimate_partial_selections_stay_quiet(model, prompts):
    """Keywords held by some rows only, uncond rows with empty negative prompts, reserved names."""
    graph = [
        Capture(TEXT, tokens="unicorn", name="some_rows"),  # prompt 1 only; the uncond rows ("") have no words
        ZeroTokens("unet.*attn2", tokens="unicorn", branch="both"),
        Capture(TEXT, tokens="eot", name="eot"), Capture(TEXT, tokens="sot", name="sot"),
        Capture(TEXT, tokens="last_eot:2", name="last"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = sample(model, prompts, graph, strict=True)
    assert result.captures.records["some_rows"].rows == [(1,)]
    # an uncond-only selection of a word in the negative prompt
    result = sample(model, prompts, [Capture(TEXT, tokens="blurry", branch="uncond", name="neg")],
                    negative_prompt="blurry", strict=True)
    assert result.captures.calls("neg")[0].branch == "uncond"
    # a word only the negative prompts hold, selected in both branches
    result = sample(model, prompts, [Capture(TEXT, tokens="striped", name="neg_only")], negative_prompt="striped",
                    strict=True)
    assert [c.branch for c in result.captures.calls("neg_only")] == ["uncond"]
    # a keyword the cond prompts hold, restricted to a row without it: unmatched (reported), not a typo
    with pytest.warns(UnmatchedInterventionWarning, match="matched no call"):
        sample(model, prompts, [Capture(TEXT, tokens="unicorn", rows=[0], branch="cond", name="r0")])
    # the uncond branch alone, for a word only the cond prompts hold: reported, not a typo either
    with pytest.warns(UnmatchedInterventionWarning, match="matched no call"):
        sample(model, prompts, [Capture(TEXT, tokens="red", branch="uncond", name="u")])


def test_hand_published_contexts_raise_where_they_show_every_prompt(model):
    """The text encoder runs once per branch: a text call shows only its own branch's prompts."""
    def encode(batch, **ctx):
        ids = model.tokenizer(batch, padding="max_length", max_length=16, return_tensors="pt").input_ids
        with circuits.step_context(phase="text", prompts=batch, **ctx), torch.no_grad():
            model.text_encoder(ids)

    prompts = ["a red circle", "a cat"]
    with pytest.warns(UnmatchedInterventionWarning, match="matched no call"):
        with circuits.intervene(model, [Capture(TEXT, tokens="rde")]):  # both branches: each call sees half
            encode(["", ""], branch_rows={"uncond": (0, 1)})
            encode(prompts)
    with pytest.raises(ScopeError, match="tokens='rde'.*'a red circle', 'a cat'.*'red'"):
        with circuits.intervene(model, [Capture(TEXT, tokens="rde", branch="cond")]):
            encode(prompts)
    with pytest.raises(ScopeError, match="tokens='rde'"):  # a UNet call holds the whole batch
        with circuits.intervene(model, [ZeroTokens("unet.*attn2", tokens="rde")]), torch.no_grad():
            with circuits.step_context(prompts=["", ""] + prompts, branch_rows={"uncond": (0, 1), "cond": (2, 3)}):
                model.unet(torch.randn(4, 4, 8, 8), 500, encoder_hidden_states=torch.randn(4, 16, 32))


# -- 2. outside the sampler the report names the missing step context ------------------------------
@pytest.mark.parametrize("scope", [{"steps": [0]}, {"branch": "cond"}, {"timesteps": (0, 999)}])
def test_context_scoped_interventions_outside_the_sampler_say_why(model, scope):
    with pytest.raises(ScopeError, match=r"no step context.*circuits\.step_context") as info:
        with circuits.intervene(model, [Scale("unet.eps", 0.0, **scope)], strict=True):
            unet_call(model)
    assert "circuits.sample" in str(info.value)
    with pytest.warns(UnmatchedInterventionWarning, match="no step context"):
        with circuits.intervene(model, [Capture(TEXT, tokens="eot")]):
            with torch.no_grad():
                model.text_encoder(torch.zeros(1, 16, dtype=torch.long))
    # a site that never ran keeps its own reason
    with pytest.raises(ScopeError, match="never ran"):
        with circuits.intervene(model, [Scale("unet.eps", 0.0, steps=[0])], strict=True):
            pass


# -- 3. captures: cached stack, steps per call, attention maps -------------------------------------
def test_stacked_capture_is_cached_until_a_value_is_added():
    record = CaptureRecord("k", "stack")
    record.add(torch.zeros(2), None, (0,))
    first = record.value
    assert record.value is first  # no re-stacking on every access
    record.add(torch.ones(2), None, (0,))
    assert record.value is not first and record.value.shape == (2, 2)
    mean = CaptureRecord("m", "mean")
    mean.add(torch.ones(2), None, (0,))
    assert mean.value is mean.value


def test_capture_calls_steps_and_by_step(model, prompts):
    graph = [Capture("unet.eps", steps=[0, 2], name="e"), Capture(TEXT, name="t"), Capture(TEXT, tokens="eot", name="eot")]
    result = sample(model, prompts, graph)
    captures, n = result.captures, len(prompts)
    assert captures["e"] is captures["e"]
    assert captures.steps("e") == [0, 2] and captures.records["e"].steps == [0, 2]
    calls = captures.calls("e")
    assert [(c.phase, c.step, c.timestep, c.branch, c.rows) for c in calls] == [
        ("unet", 0, result.timesteps[0], "both", tuple(range(2 * n))),
        ("unet", 2, result.timesteps[2], "both", tuple(range(2 * n))),
    ]
    by_step = captures.by_step("e")
    assert sorted(by_step) == [0, 2]
    assert torch.equal(by_step[2][n:], result.trajectory.noise_cond[2])
    # the text encoder runs once per branch, with no step: the calls say which branch
    text = captures.calls("t")
    assert [(c.phase, c.step, c.branch) for c in text] == [("text", None, "cond"), ("text", None, "uncond")]
    assert captures.steps("t") == [None, None] and captures.by_step("t") == {}
    assert captures.records["t"].axes == ("call", "batch", "tokens", "channels")
    with pytest.raises(KeyError, match="captured keys"):
        captures.calls("nope")


def test_by_step_refuses_a_running_mean_and_repeated_steps(model, prompts):
    with circuits.intervene(model, [Capture("unet.eps", steps=[0], name="e"),
                                    Capture("unet.eps", over_steps="mean", name="m")]) as run:
        for _ in range(2):
            circuits.sample(model, prompts, steps=2, progress=False)
    with pytest.raises(ScopeError, match="step 0 was recorded more than once"):
        run.captures.by_step("e")
    with pytest.raises(ScopeError, match="over_steps='mean'"):
        run.captures.by_step("m")
    assert run.captures.records["m"].axes == ("batch", "channels", "height", "width")


def test_attention_maps_for_a_non_square_image(model, prompts):
    """16x24 images: latents 8x12, the second level 4x6. Each probs call records its query grid."""
    probs = model.sites.attention_probs() + model.sites.attention_probs(cross=False)
    blocks = sorted({p.split(".transformer_blocks")[0] for p in probs})
    graph = [Capture(p, steps=[0, 1], name=p) for p in probs] + [Capture(b, steps=[0], name=b) for b in blocks]
    result = sample(model, prompts, graph, height=16, width=24)
    grids = set()
    for site in probs:
        feature = result.captures[site.split(".transformer_blocks")[0]]  # [calls, batch, C, h, w]
        calls = result.captures.calls(site)
        assert [c.grid for c in calls] == [tuple(feature.shape[-2:])] * 2
        grids.add(calls[0].grid)
        raw = result.captures[site]  # [calls, rows, heads, queries, keys]
        maps = result.captures.maps(site)
        height, width = calls[0].grid
        assert maps.shape == (*raw.shape[:3], height, width, raw.shape[-1])
        assert torch.equal(maps[:, :, :, 1, 2], raw[:, :, :, width + 2])  # row-major: query y * width + x
    assert grids == {(8, 12), (4, 6)}


def test_attention_maps_outside_the_sampler_and_after_reductions(model):
    site = model.sites.attention_probs()[0]
    with circuits.intervene(model, [Capture(site, name="p", mean_over=("batch", "heads"))]) as run:
        unet_call(model, height=6, width=10)
    assert run.captures.calls("p")[0].grid == (6, 10) and run.captures.calls("p")[0].phase is None
    assert run.captures.maps("p").shape == (1, 6, 10, 16)  # [calls, h, w, keys]
    with circuits.intervene(model, [Capture(site, name="q", mean_over="queries")]) as run:
        unet_call(model)
    with pytest.raises(ShapeError, match="queries axis"):
        run.captures.maps("q")


def test_query_grid_and_to_maps():
    assert query_grid(96, (8, 12)) == (8, 12)
    assert query_grid(24, (8, 12)) == (4, 6)
    assert query_grid(6, (8, 12)) == (2, 3)
    assert query_grid(12, (5, 7)) == (3, 4)  # odd sides round up, as the stride-2 convolution does
    assert query_grid(64, None) == (8, 8) and query_grid(96, None) is None
    probs = torch.arange(2 * 6 * 3.0).view(2, 6, 3)
    assert torch.equal(to_maps(probs, 2, 3)[1, 1, 0], probs[1, 3])
    with pytest.raises(ShapeError, match="2 x 2 = 4"):
        to_maps(probs, 2, 2)
