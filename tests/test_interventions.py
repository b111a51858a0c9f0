"""Each primitive does what its docstring says, checked against an independent computation."""

from __future__ import annotations

import warnings

import pytest
import torch
from model_state import assert_same_state, snapshot

import circuits
from circuits import Ablate, Capture, MaskedPatch, Replace, Scale, WeightEdit, ZeroTokens
from circuits.errors import ScopeError, ShapeError, SiteError, UnmatchedInterventionWarning

STEPS = 3


def run_eps(model, prompts, graph=(), **kwargs):
    """Sample and return the per-step guided noise prediction plus the result."""
    result = circuits.sample(model, prompts, steps=STEPS, progress=False, record=True, graph=list(graph), **kwargs)
    return result.trajectory, result


def test_empty_graph_changes_nothing(model, prompts):
    base, _ = run_eps(model, prompts)
    again, _ = run_eps(model, prompts, graph=[])
    assert torch.equal(base.noise_pred, again.noise_pred)


def test_scale_and_ablate_on_eps_rows_and_steps(model, prompts):
    base, _ = run_eps(model, prompts)
    traj, _ = run_eps(model, prompts, [Scale("unet.eps", 0.0, steps=[1], branch="uncond", rows=[1])])
    # steps before the scoped one are untouched
    assert torch.equal(traj.noise_cond[0], base.noise_cond[0])
    assert torch.equal(traj.noise_uncond[0], base.noise_uncond[0])
    # at step 1 exactly uncond row 1 is zero; the other rows are the unmodified predictions
    assert torch.count_nonzero(traj.noise_uncond[1, 1]) == 0
    assert torch.equal(traj.noise_uncond[1, 0], base.noise_uncond[1, 0])
    assert torch.equal(traj.noise_cond[1], base.noise_cond[1])


def test_capture_hits_exactly_the_scoped_rows_and_steps(model, prompts):
    traj, result = run_eps(model, prompts, [Capture("unet.eps", steps=[0, 2], branch="cond", rows=[1], name="e")])
    captured = result.captures["e"]
    assert captured.shape == (2, 1, 4, 8, 8)
    assert torch.equal(captured[0, 0], traj.noise_cond[0, 1])
    assert torch.equal(captured[1, 0], traj.noise_cond[2, 1])
    assert result.captures.records["e"].steps == [0, 2]


def test_timestep_range_scope(model, prompts):
    _, result = run_eps(model, prompts, [Capture("unet.eps", timesteps=(0, 500), name="late")])
    late = [t for t in result.timesteps if t <= 500]
    assert result.captures["late"].shape[0] == len(late)


def test_replace_tensor_and_function(model, prompts):
    site = model.sites.ffn_hidden()[0]
    _, ref = run_eps(model, prompts, [Capture(site, name="h", steps=[0])])
    hidden = ref.captures["h"][0]
    value = torch.randn(hidden.shape[1:])
    _, out = run_eps(
        model, prompts, [Replace(site, value, steps=[0], branch="cond"), Capture(site, name="h", steps=[0])]
    )
    got = out.captures["h"][0]
    n = len(prompts)
    assert torch.equal(got[n:], value.expand(n, *value.shape))
    assert torch.equal(got[:n], hidden[:n])
    _, fn_out = run_eps(
        model, prompts, [Replace(site, lambda x: x * 2, steps=[0]), Capture(site, name="h", steps=[0])]
    )
    torch.testing.assert_close(fn_out.captures["h"][0], hidden * 2)


def test_replace_function_receives_context(model, prompts):
    seen = []

    def fn(x, ctx):
        seen.append((ctx.step, ctx.timestep, x.shape[0]))
        return x

    run_eps(model, prompts, [Replace("unet.eps", fn, branch="cond")])
    assert [s for s, _, _ in seen] == list(range(STEPS)) and all(rows == len(prompts) for *_, rows in seen)


def test_mean_ablation_and_masked_patch(model, prompts):
    site = model.sites.ffn_hidden()[1]
    _, ref = run_eps(model, prompts, [Capture(site, name="h", steps=[0])])
    hidden = ref.captures["h"][0]
    _, ablated = run_eps(model, prompts, [Ablate(site, mode="mean", steps=[0]), Capture(site, name="h", steps=[0])])
    torch.testing.assert_close(ablated.captures["h"][0], hidden.mean(0, keepdim=True).expand_as(hidden))
    mask = (torch.rand(hidden.shape[1:], generator=torch.Generator().manual_seed(0)) > 0.5).float()
    source = torch.randn(hidden.shape[1:])
    _, patched = run_eps(model, prompts, [MaskedPatch(site, mask, source, steps=[0]), Capture(site, name="h", steps=[0])])
    torch.testing.assert_close(patched.captures["h"][0], mask * source + (1 - mask) * hidden)


def _zero_columns(renormalize):
    def fn(probs, ctx):
        columns = circuits.token_mask(circuits_model.tokenizer, [ctx.prompts[r] for r in ctx.rows_of("cond")], "eot_all")
        out = probs * (~columns)[:, None, None, :].to(probs.dtype)
        return out / out.sum(-1, keepdim=True) if renormalize else out

    return fn


circuits_model = None


@pytest.mark.parametrize("renormalize", [False, True])
def test_zero_tokens_equals_editing_materialised_probabilities(model, prompts, renormalize):
    global circuits_model
    circuits_model = model
    ours, _ = run_eps(model, prompts, [ZeroTokens("unet.*attn2", tokens="eot_all", branch="cond", renormalize=renormalize)])
    peer = [Replace(site, _zero_columns(renormalize), branch="cond") for site in model.sites.attention_probs()]
    theirs, _ = run_eps(model, prompts, peer)
    base, _ = run_eps(model, prompts)
    effect = (ours.noise_pred - base.noise_pred).abs().max()
    mismatch = (ours.noise_pred - theirs.noise_pred).abs().max()
    # fused SDPA vs explicit softmax differ by float rounding (amplified by guidance 7.5 over 3 steps)
    assert effect > 1e-2 and mismatch < 1e-4 and mismatch < 1e-3 * effect


def test_zero_tokens_rejects_self_attention(model):
    with pytest.raises(ScopeError, match="not a cross-attention"):
        with circuits.intervene(model, [ZeroTokens(model.sites.self_attention()[0], tokens="eot")]):
            pass


def test_token_scope_on_text_encoder(model, prompts):
    site = "text_encoder.encoder.layers.1.resid_post"
    _, ref = run_eps(model, prompts, [Capture(site, name="r", branch="cond")])
    _, out = run_eps(
        model, prompts, [Ablate(site, tokens="eot", branch="cond"), Capture(site, name="r", branch="cond")]
    )
    before, after = ref.captures["r"][0], out.captures["r"][0]
    eots = [circuits.layout(model.tokenizer, p).first_eot for p in prompts]
    for row, eot in enumerate(eots):
        assert torch.count_nonzero(after[row, eot]) == 0
        keep = [i for i in range(after.shape[1]) if i != eot]
        assert torch.equal(after[row, keep], before[row, keep])


def test_capture_reductions(model, prompts):
    probs = model.sites.attention_probs()[0]
    _, full = run_eps(model, prompts, [Capture(probs, name="p", steps=[0, 1])])
    _, red = run_eps(
        model, prompts, [Capture(probs, name="p", mean_over=("batch", "heads", "positions"), over_steps="mean")]
    )
    p = full.captures["p"]  # [calls, batch, heads, queries, keys]
    assert p.shape[:2] == (2, 2 * len(prompts))
    torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)))
    assert red.captures["p"].shape == (p.shape[-1],)
    _, all_steps = run_eps(model, prompts, [Capture(probs, name="p")])
    torch.testing.assert_close(red.captures["p"], all_steps.captures["p"].mean(dim=(0, 1, 2, 3)))


def test_capture_eot_gather(model, prompts):
    site = "text_encoder.encoder.layers.0"
    _, out = run_eps(model, prompts, [Capture(site, name="all", branch="cond"), Capture(site, name="eot", tokens="eot", branch="cond")])
    eots = [circuits.layout(model.tokenizer, p).first_eot for p in prompts]
    full, eot = out.captures["all"][0], out.captures["eot"][0]
    assert eot.shape == (len(prompts), 1, full.shape[-1])
    for row, pos in enumerate(eots):
        assert torch.equal(eot[row, 0], full[row, pos])


def test_weight_edit_is_reversible_bitwise(model, prompts):
    name = model.sites.cross_attention()[0] + ".to_k.weight"
    param = model.parameter(name)
    original = param.detach().clone()
    before = snapshot(model)
    with circuits.intervene(model, [WeightEdit(name, value=torch.zeros_like(param))]):
        assert torch.count_nonzero(param) == 0
    assert torch.equal(param, original)
    with circuits.intervene(model, [WeightEdit(name, delta=torch.ones_like(param))]):
        torch.testing.assert_close(param.detach(), original + 1)
    assert_same_state(before, snapshot(model))


def test_gradient_flows_through_replace(model, prompts):
    site = model.sites.ffn_hidden()[0]
    module_shape = None
    with circuits.intervene(model, [Capture(site, name="h")]) as run:
        circuits.sample(model, prompts[:1], steps=1, progress=False, guidance_scale=1.0)
    module_shape = run.captures["h"].shape[2:]
    value = torch.zeros(module_shape, requires_grad=True)
    x = torch.randn(1, 4, 8, 8)
    emb = torch.randn(1, 16, 32)
    with circuits.intervene(model, [Replace(site, value)]):
        out = model.unet(x, 10, encoder_hidden_states=emb).sample
    out.square().mean().backward()
    assert value.grad is not None and value.grad.abs().sum() > 0
    weight = model.unet.conv_in.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    model.unet.zero_grad(set_to_none=True)


def test_unmatched_interventions_are_reported(model, prompts):
    graph = [
        Capture("text_encoder.encoder.layers.0", steps=[0], name="never_in_scope"),
        Capture("unet.eps", rows=[5], branch="cond", name="row_out_of_range_is_error"),
    ]
    with pytest.raises(ScopeError, match="rows=\\[5\\]"):
        run_eps(model, prompts, graph[1:])
    with pytest.warns(UnmatchedInterventionWarning, match="never_in_scope"):
        run_eps(model, prompts, graph[:1])
    with pytest.raises(ScopeError, match="never ran"):
        with circuits.intervene(model, [Capture("unet.eps")], strict=True):
            pass  # nothing ran
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_eps(model, prompts, [Capture("unet.eps")])  # matched: no warning


def test_bad_inputs_raise_and_leave_nothing_behind(model, prompts):
    before = snapshot(model)
    site = model.sites.ffn_hidden()[0]
    with pytest.raises(ShapeError, match=site.replace(".", r"\.")):
        run_eps(model, prompts, [Capture(site), Replace(site, torch.zeros(3, 5))])
    with pytest.raises(ShapeError, match="dtype"):
        run_eps(model, prompts, [MaskedPatch(site, torch.ones(1, dtype=torch.int64), torch.zeros(1))])
    with pytest.raises(SiteError, match="closest"):
        run_eps(model, prompts, [Capture("unet.eps"), Capture("unet.epss")])
    with pytest.raises(ScopeError, match="did you mean 'cond'"):
        Scale("unet.eps", 2.0, branch="cnd")
    with pytest.raises(ScopeError, match="outside this 3-step schedule"):
        run_eps(model, prompts, [Capture("unet.eps", steps=[7])])
    with pytest.raises(ScopeError, match="miss this schedule"):
        run_eps(model, prompts, [Capture("unet.eps", timesteps=(2000, 3000))])
    with pytest.raises(ShapeError, match="has shape"):
        with circuits.intervene(model, [WeightEdit("unet.conv_in.weight", value=torch.zeros(2))]):
            pass
    with pytest.raises(SiteError, match="unknown parameter"):
        with circuits.intervene(model, [WeightEdit("unet.conv_in.wieght", value=torch.zeros(2))]):
            pass
    with pytest.raises(ScopeError, match="tokens"):
        with circuits.intervene(model, [Ablate("unet.conv_in", tokens="eot")]):
            pass
    with pytest.raises(ShapeError, match="returned"):
        run_eps(model, prompts, [Replace("unet.eps", lambda x: x[:1])])
    assert_same_state(before, snapshot(model))


def test_model_output_sites_are_interventable(model, prompts):
    _, ref = run_eps(model, prompts, [Capture("text_encoder.encoder", name="enc", branch="cond")])
    _, out = run_eps(model, prompts, [Scale("text_encoder.encoder", 0.0, branch="cond"),
                                      Capture("text_encoder.final_layer_norm", name="ln", branch="cond")])
    assert ref.captures["enc"].shape[-2:] == (16, 32)
    # the final layer norm of an all-zero residual stream is its bias, the same at every position
    ln = out.captures["ln"][0]
    torch.testing.assert_close(ln, model.text_encoder.final_layer_norm.bias.detach().expand_as(ln))


def test_replace_passes_ctx_only_to_functions_that_want_it(model, prompts):
    site = model.sites.ffn_hidden()[0]
    _, ref = run_eps(model, prompts, [Capture(site, name="h", steps=[0])])
    hidden = ref.captures["h"][0]
    for value, expected in [
        (torch.nn.GELU(), torch.nn.functional.gelu(hidden)),  # a module: forward(x) only
        (lambda x, k=2.0: x * k, hidden * 2),  # an optional second argument is not the context
        (lambda x, ctx: x * (ctx.step + 3), hidden * 3),  # named ctx: gets it
    ]:
        _, out = run_eps(model, prompts, [Replace(site, value, steps=[0]), Capture(site, name="h", steps=[0])])
        torch.testing.assert_close(out.captures["h"][0], expected)


def test_mean_ablation_with_tokens_averages_the_selected_positions(model, prompts):
    site = "text_encoder.encoder.layers.1"
    _, ref = run_eps(model, prompts, [Capture(site, name="x", branch="cond")])
    x = ref.captures["x"][0]  # [prompts, tokens, channels], the text phase runs once per branch
    eot = [circuits.layout(model.tokenizer, p).first_eot for p in prompts]
    assert eot[0] != eot[1]  # the EoTs sit at different positions: a per-position mean would mix tokens
    mean_eot = torch.stack([x[r, e] for r, e in enumerate(eot)]).mean(0)
    _, out = run_eps(model, prompts, [Ablate(site, mode="mean", tokens="eot", branch="cond"),
                                      Capture(site, name="x", branch="cond")])
    got = out.captures["x"][0]
    for r, e in enumerate(eot):
        torch.testing.assert_close(got[r, e], mean_eot)
        others = [i for i in range(x.shape[1]) if i != e]
        assert torch.equal(got[r, others], x[r, others])


def test_mean_over_a_single_entry_is_an_error_not_a_silent_no_op(model, prompts):
    with pytest.raises(ScopeError, match="only 1 row"):
        run_eps(model, prompts[:1], [Ablate("unet.eps", mode="mean", branch="cond")])
    with pytest.raises(ScopeError, match=r"only 1 \(row, token\)"):
        run_eps(model, prompts, [Ablate("text_encoder.encoder.layers.0", mode="mean", tokens="circle", branch="cond")])


def test_glob_captures_with_a_name_key_by_name_and_site(model, prompts):
    probs = model.sites.attention_probs()
    graph = [Capture("unet.*attn2.probs", name="a", steps=[0], mean_over="heads"),
             Capture("unet.*attn2.probs", name="b", steps=[1], mean_over="heads")]
    _, result = run_eps(model, prompts, graph)
    assert sorted(result.captures) == sorted([f"a/{s}" for s in probs] + [f"b/{s}" for s in probs])
    with pytest.warns(UnmatchedInterventionWarning) as caught:
        # "unicorn" is in the second prompt only (so not a typo), and rows=[0] selects the first
        run_eps(model, prompts, [Capture("unet.*attn2.probs", name="never", branch="cond", rows=[0], tokens="unicorn")])
    lines = [line for w in caught for line in str(w.message).splitlines() if "never" in line]
    assert len(lines) == 1, lines  # one report for the capture, not one per matched site


def test_token_scoped_capture_records_the_rows_it_kept(model, prompts):
    _, result = run_eps(model, prompts, [Capture("text_encoder.encoder.layers.0", tokens="unicorn", name="u")])
    record = result.captures.records["u"]
    # the text encoder runs once per branch; only the second prompt says "unicorn"
    assert record.rows == [(1,)] and result.captures["u"].shape[1] == 1


def test_hand_published_context_without_prompts_treats_every_row_as_cond(model):
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor(500)
    embeds = torch.randn(2, model.tokenizer.model_max_length, model.text_encoder.config.hidden_size)
    with circuits.intervene(model, [Scale("unet.eps", 0.0, steps=[0], branch="cond")], strict=True):
        with circuits.step_context(step=0), torch.no_grad():
            eps = model.unet(x, t, encoder_hidden_states=embeds).sample
    assert torch.count_nonzero(eps) == 0


def test_token_positions_outside_the_site_are_an_error(model, prompts):
    with pytest.raises(ScopeError, match=r"positions \[40\] do not exist"):
        run_eps(model, prompts, [Capture("text_encoder.encoder.layers.0", tokens=[40])])
    with pytest.raises(ScopeError, match="K >= 1"):
        Capture("text_encoder.encoder.layers.0", tokens="last_eot:0")
    with pytest.raises(ShapeError, match="factor='two'"):
        Scale("unet.eps", "two")
    with pytest.raises(SiteError, match="site=5"):
        Capture(5)


def test_nested_contexts_with_tensor_arguments_unwind_in_any_order(model, prompts):
    outer = circuits.intervene(model, [Replace("unet.eps", torch.zeros(4, 8, 8), steps=[0])])
    inner = circuits.intervene(model, [Replace("unet.eps", torch.ones(4, 8, 8), steps=[0])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmatchedInterventionWarning)
        with outer, inner:
            assert len(model.active_runs) == 2
    assert model.active_runs == []


def test_masked_patch_mask_must_lie_in_the_unit_interval():
    site = "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.hidden"
    for bad, found in [(torch.full((3,), 2.0), r"\[2, 2\]"), (torch.tensor([-0.5, 0.5]), r"\[-0.5, 0.5\]")]:
        with pytest.raises(ShapeError, match=f"MaskedPatch.*{found}.*outside \\[0, 1\\]"):
            MaskedPatch(site, bad, torch.zeros(3))
    with pytest.raises(ShapeError, match="nan"):
        MaskedPatch(site, torch.tensor([float("nan")]), torch.zeros(1))
    MaskedPatch(site, torch.tensor([0.0, 0.25, 1.0]), torch.zeros(3))
    MaskedPatch(site, torch.tensor([True, False]), torch.zeros(2))
