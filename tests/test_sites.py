"""Site names follow module paths; hook points exist; selectors; unknown names get suggestions."""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.errors import SiteError


def test_site_names_are_state_dict_module_paths(model):
    names = set(model.sites())
    for key in model.unet.state_dict():
        assert f"unet.{key.rsplit('.', 1)[0]}" in names
    for key in model.text_encoder.state_dict():
        module_path = key.rsplit(".", 1)[0]
        if module_path in dict(model.text_encoder.named_modules()):
            assert f"text_encoder.{module_path}" in names


def test_instrumenting_leaves_state_dict_and_outputs_unchanged(tiny_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, local_files_only=True)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = pipe.unet(x, 10, encoder_hidden_states=emb).sample
    loaded = circuits.load(pipe)  # instruments in place
    assert loaded.unet is pipe.unet
    assert list(pipe.unet.state_dict()) == list(before)
    with torch.no_grad():
        out = pipe.unet(x, 10, encoder_hidden_states=emb).sample
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_hook_points_and_selectors(model):
    cross = model.sites.cross_attention()
    assert cross and all(n.endswith("attn2") for n in cross)
    assert all(n.endswith(("attn1", "attentions.0.transformer_blocks.0.attn1")) for n in model.sites.self_attention())
    assert model.sites.attention_probs() == [f"{n}.probs" for n in cross]
    ffn = model.sites.ffn_hidden()
    assert ffn and all(n.endswith("ff.hidden") for n in ffn)
    assert model.sites.text_layers() == ["text_encoder.encoder.layers.0", "text_encoder.encoder.layers.1"]
    assert model.sites.text_residual() == [f"{n}.resid_post" for n in model.sites.text_layers()]
    assert "unet.eps" in model.sites


def test_glob_patterns(model):
    assert model.sites("unet.*attn2") == model.sites.cross_attention()
    assert model.sites("unet.*ff.net.2") == [n.replace("ff.hidden", "ff.net.2") for n in model.sites.ffn_hidden()]
    assert model.sites("nothing*") == []


def test_text_model_alias(model):
    assert model.sites.resolve("text_encoder.text_model.encoder.layers.1") == ["text_encoder.encoder.layers.1"]
    p = model.parameter("text_encoder.text_model.encoder.layers.0.self_attn.k_proj.weight")
    assert p is model.text_encoder.encoder.layers[0].self_attn.k_proj.weight


@pytest.mark.parametrize("written", ["text_encoder.encoder.layers.*", "text_encoder.text_model.encoder.layers.*"])
def test_text_globs_resolve_in_either_spelling(model, written):
    layers = [f"text_encoder.encoder.layers.{i}" for i in range(len(model.text_encoder.encoder.layers))]
    resolved = model.sites.resolve(written)
    assert [n for n in resolved if n.rpartition(".")[2].isdigit()] == layers
    assert model.sites(written) == resolved
    assert model.sites.resolve(written.replace("*", "?")) == layers
    with circuits.intervene(model, [circuits.Capture(written.replace("*", "?"), tokens="eot")]) as run:
        circuits.sample(model, ["a red circle"], steps=1, progress=False)
    assert sorted(run.captures) == layers


def test_unknown_site_lists_closest_names(model):
    with pytest.raises(SiteError) as info:
        model.sites.resolve("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn3")
    message = str(info.value)
    assert "unknown site" in message and "down_blocks.0.attentions.0.transformer_blocks.0.attn2" in message
    with pytest.raises(SiteError, match="start with 'unet.'"):
        model.sites.resolve("down_blocks.0")
    with pytest.raises(SiteError):
        model.sites.resolve("unet.*nothing_like_this")


def test_ffn_hidden_is_input_of_out_projection(model):
    site = model.sites.ffn_hidden()[0]
    linear = model.sites.module(site.replace("ff.hidden", "ff.net.2"))
    seen = {}
    handle = linear.register_forward_pre_hook(lambda m, a: seen.setdefault("input", a[0].detach()))
    try:
        with circuits.intervene(model, [circuits.Capture(site, name="h")]) as run:
            circuits.sample(model, ["a red circle"], steps=1, progress=False, guidance_scale=1.0)
    finally:
        handle.remove()
    torch.testing.assert_close(run.captures["h"][0], seen["input"], rtol=0, atol=0)


def test_lazy_hook_points_materialise_only_when_read(model):
    import circuits.sites.attention as attention

    probs = model.sites.attention_probs()[0]
    point = model.sites.module(probs)
    assert not point.observed  # unhooked: the fused kernel runs
    with circuits.intervene(model, [circuits.Capture(probs)]):
        assert point.observed
    assert not point.observed
    assert model.sites.materialize("unet.*attn2.probs") == model.sites.attention_probs()
    try:
        assert point.observed
    finally:
        model.sites.materialize("unet.*attn2.probs", enabled=False)
    assert not point.observed
    with pytest.raises(SiteError, match="not a hook point"):
        model.sites.materialize("unet.conv_in")
    assert attention.CircuitsAttnProcessor  # the processor that reads `observed`
