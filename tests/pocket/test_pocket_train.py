"""Pocket training (v2 recipe) on tiny sizes: the contrastive phase learns, the UNet phase keeps the
encoder frozen, the export loads through ``circuits.load``, and interrupted phases resume bitwise.

One module-scoped folder holds the slow shared part (tokenizer, a few renders, the shipped VAE
re-used with no fine-tuning); each test copies it, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from circuits.pocket import PIPELINE_DIR
from circuits.pocket import train as pocket_train
from circuits.pocket.train_clip import Contrastive, clip_loss, soft_targets
from circuits.pocket.train_common import load_tokenizer, make_text_encoder, scene_key, to_tensor, tokenize, world_items
from circuits.pocket.world import prompt

TINY = ["--n-train", "48", "--n-val", "8", "--vae-from", str(PIPELINE_DIR), "--vae-finetune-steps", "0",
        "--clip-batch", "24", "--clip-warmup", "2", "--unet-batch", "4", "--unet-warmup", "2",
        "--log-every", "1000", "--threads", "1"]  # fmt: skip


def args_for(out, *extra):
    return pocket_train.parse_args(["--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("pocket_base")
    pocket_train.run(args_for(out, "--phase", "vae"))
    return out


def copy_of(base, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base, dst)
    return dst


def test_soft_targets_spread_over_duplicates_of_a_scene():
    t = soft_targets(["a", "b", "a", "c"])
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert t[0, 0] == t[0, 2] == 0.5 and t[0, 1] == 0 and t[1, 1] == 1.0


def test_contrastive_phase_lowers_its_loss(base, tmp_path):
    out = copy_of(base, tmp_path)
    pocket_train.run(args_for(out, "--phase", "clip", "--clip-steps", "120", "--clip-lr", "2e-3"))
    tok = load_tokenizer(out)
    items = world_items(args_for(out))
    images = to_tensor(np.load(out / "data.npz")["train"][:24])
    ids = tokenize(tok, [prompt(sc) for sc, _ in items[:24]])
    keys = [scene_key(sc) for sc, _ in items[:24]]
    torch.manual_seed(2)  # the phase's own init seed (--seed 0 + 2)
    fresh = Contrastive(make_text_encoder(tok), 128)
    trained = Contrastive(make_text_encoder(tok), 128)
    state = torch.load(out / "clip_final.pt", weights_only=False)
    trained.text.load_state_dict(state["text"])
    trained.text_projection.load_state_dict(state["text_projection"])
    trained.image.load_state_dict(state["image"])
    trained.logit_scale.data.fill_(float(np.log(1 / 0.07)))  # compare at the same temperature
    with torch.no_grad():
        before, _ = clip_loss(fresh.eval(), ids, images, keys)
        after, _ = clip_loss(trained.eval(), ids, images, keys)
    assert after < 0.8 * before, (float(before), float(after))


def test_export_loads_with_circuits_load_and_ships_the_frozen_encoder(base, tmp_path):
    import circuits

    out = copy_of(base, tmp_path)
    pocket_train.run(args_for(out, "--clip-steps", "3", "--unet-steps", "3"))
    model = circuits.load(out / "pipeline")
    tok = model.tokenizer
    cfg = model.text_encoder.config
    assert cfg.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert cfg.max_position_embeddings == tok.model_max_length
    assert tok("a red circle", padding="max_length", max_length=tok.model_max_length).input_ids[-1] == tok.eos_token_id
    # frozen: the UNet phase left the contrastive encoder as it was (up to the fp16 export)
    clip_text = torch.load(out / "clip_final.pt", weights_only=False)["text"]
    shipped = model.text_encoder.state_dict()
    for name, value in clip_text.items():
        assert torch.equal(shipped[name].float(), value.half().float()), name
    size = sum(f.stat().st_size for f in (out / "pipeline").rglob("*") if f.is_file())
    assert size <= 40e6


def test_joint_mode_trains_the_encoder_with_the_unet(base, tmp_path):
    out = copy_of(base, tmp_path)
    pocket_train.run(args_for(out, "--text-mode", "joint", "--phase", "all", "--unet-steps", "3"))
    assert not (out / "clip_final.pt").exists()
    state = torch.load(out / "unet_final.pt", weights_only=False)
    torch.manual_seed(1)  # the UNet phase's init seed; the encoder is built right after the UNet
    pocket_train.make_unet()
    fresh = make_text_encoder(load_tokenizer(out)).state_dict()
    assert state["text_mode"] == "joint"
    assert any(not torch.equal(fresh[k], v) for k, v in state["ema_text"].items())


@pytest.mark.parametrize("phase,steps", [("clip", "--clip-steps"), ("unet", "--unet-steps")])
def test_an_interrupted_phase_resumes_bitwise(base, tmp_path, phase, steps):
    straight, split = tmp_path / "straight", tmp_path / "split"
    for dst in (straight, split):
        shutil.copytree(base, dst)
        if phase == "unet":
            pocket_train.run(args_for(dst, "--phase", "clip", "--clip-steps", "2"))
    pocket_train.run(args_for(straight, "--phase", phase, steps, "6"))
    pocket_train.run(args_for(split, "--phase", phase, steps, "6", "--stop-after", "3"))
    assert not (split / f"{phase}_final.pt").exists() and (split / f"{phase}_ckpt.pt").exists()
    pocket_train.run(args_for(split, "--phase", phase, steps, "6", "--resume"))
    a = torch.load(straight / f"{phase}_final.pt", weights_only=False)
    b = torch.load(split / f"{phase}_final.pt", weights_only=False)
    key = "text" if phase == "clip" else "ema_unet"
    assert a[key].keys() == b[key].keys()
    for name in a[key]:
        assert torch.equal(a[key][name], b[key][name]), name


def test_a_resumed_run_must_keep_its_step_count(base, tmp_path):
    out = copy_of(base, tmp_path)
    pocket_train.run(args_for(out, "--phase", "clip", "--clip-steps", "6", "--stop-after", "2"))
    with pytest.raises(SystemExit, match="clip_steps was 6"):
        pocket_train.run(args_for(out, "--phase", "clip", "--clip-steps", "8", "--resume"))


def test_export_without_a_trained_unet_says_what_to_do(base, tmp_path):
    out = copy_of(base, tmp_path)
    with pytest.raises(SystemExit, match="--from-checkpoint"):
        pocket_train.export(args_for(out), out)


def test_unet_init_starts_from_an_earlier_runs_weights(base, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for dst in (first, second):
        shutil.copytree(base, dst)
    pocket_train.run(args_for(first, "--phase", "all", "--clip-steps", "2", "--unet-steps", "2"))
    shutil.copy(first / "clip_final.pt", second / "clip_final.pt")
    pocket_train.run(args_for(second, "--phase", "unet", "--unet-steps", "0", "--unet-init", str(first / "unet_final.pt")))
    a = torch.load(first / "unet_final.pt", weights_only=False)["ema_unet"]
    b = torch.load(second / "unet_final.pt", weights_only=False)["ema_unet"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_phase_refuses_data_arguments_other_than_the_renders(base, tmp_path):
    out = copy_of(base, tmp_path)
    with pytest.raises(SystemExit, match="seed: rendered with 0, now 1"):
        pocket_train.run(args_for(out, "--phase", "clip", "--clip-steps", "2", "--seed", "1"))
