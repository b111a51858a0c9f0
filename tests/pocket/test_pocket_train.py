"""Training continues from an exported pipeline: ``--init-from`` seeds a run folder with its weights."""

from __future__ import annotations

import pytest
import torch

from circuits.pocket import PIPELINE_DIR
from circuits.pocket import train as pocket_train


def test_init_from_seeds_a_run_folder_with_the_pipelines_weights(tmp_path):
    from diffusers import UNet2DConditionModel

    args = pocket_train.parse_args(["--out", str(tmp_path), "--n-train", "32", "--n-val", "8",
                                    "--init-from", str(PIPELINE_DIR)])  # fmt: skip
    pocket_train.seed_from_pipeline(args, tmp_path, PIPELINE_DIR)
    assert (tmp_path / "tokenizer" / "vocab.json").read_bytes() == (PIPELINE_DIR / "tokenizer" / "vocab.json").read_bytes()
    seeded = torch.load(tmp_path / "unet_final.pt", weights_only=False)
    shipped = UNet2DConditionModel.from_pretrained(PIPELINE_DIR / "unet", dtype=torch.float32, local_files_only=True)
    for name, value in shipped.state_dict().items():
        assert torch.equal(seeded["ema_unet"][name], value), name
    vae = torch.load(tmp_path / "vae.pt", weights_only=False)
    latents = torch.load(tmp_path / "latents.pt")
    assert latents.shape == (32, 4, 8, 8) and vae["scaling_factor"] == pytest.approx(0.6064, abs=1e-3)
    # the export of a run seeded this way reproduces the pipeline (fp16 -> fp32 -> fp16 is lossless)
    args.pipeline_out = str(tmp_path / "exported")
    (tmp_path / "unet2_final.pt").write_bytes((tmp_path / "unet_final.pt").read_bytes())
    pocket_train.export(args, tmp_path)
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        from safetensors.torch import load_file

        a, b = load_file(tmp_path / "exported" / part), load_file(PIPELINE_DIR / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_init_from_rejects_a_folder_that_is_not_a_pipeline(tmp_path):
    args = pocket_train.parse_args(["--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a pipeline folder"):
        pocket_train.seed_from_pipeline(args, tmp_path, tmp_path / "nothing")
