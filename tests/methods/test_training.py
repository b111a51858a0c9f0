"""The shared fine-tuning loop: only named (and masked) parameters move, the model is restored,
runs are reproducible, and a resumed run ends with the same deltas."""

from __future__ import annotations

import pytest
import torch

from circuits.methods.training import CheckpointError, finetune, trainable

PARAMS = ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
          "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q.weight"]


def _loss(model):
    def loss(step: int, generator: torch.Generator) -> torch.Tensor:
        x = torch.randn(2, 4, 8, 8, generator=generator)
        text = torch.randn(2, 16, 32, generator=generator)
        return model.unet(x, 10 + step, encoder_hidden_states=text).sample.pow(2).mean()
    return loss


def _state(model):
    return {k: v.clone() for k, v in model.unet.state_dict().items()}


def test_only_named_and_masked_parameters_move_and_the_model_is_restored(model) -> None:
    before = _state(model)
    with trainable(model, PARAMS) as named:
        assert {n for n, p in model.unet.named_parameters() if p.requires_grad} == {p[5:] for p in PARAMS}
        assert set(named) == set(PARAMS)
    mask = torch.zeros_like(model.parameter(PARAMS[0]), dtype=torch.bool)
    mask[:3] = True
    deltas, losses = finetune(model, PARAMS, _loss(model), steps=4, lr=1e-2, masks={PARAMS[0]: mask}, progress=False)
    assert len(losses) == 4 and set(deltas) == set(PARAMS)
    assert torch.count_nonzero(deltas[PARAMS[0]][~mask]) == 0 and torch.count_nonzero(deltas[PARAMS[0]][mask]) > 0
    assert torch.count_nonzero(deltas[PARAMS[1]]) > 0
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "training must leave the model as it was"


def test_reproducible_and_resumable(model, tmp_path) -> None:
    full, full_losses = finetune(model, PARAMS, _loss(model), steps=6, lr=1e-2, seed=3, progress=False)
    again, _ = finetune(model, PARAMS, _loss(model), steps=6, lr=1e-2, seed=3, progress=False)
    assert all(torch.equal(full[k], again[k]) for k in full)
    folder = tmp_path / "ckpt"
    finetune(model, PARAMS, _loss(model), steps=4, lr=1e-2, seed=3, checkpoint=folder, checkpoint_every=2,
             fingerprint={"lr": 1e-2}, progress=False)  # an interrupted run: 4 of 6 steps
    resumed, losses = finetune(model, PARAMS, _loss(model), steps=6, lr=1e-2, seed=3, checkpoint=folder,
                               checkpoint_every=2, fingerprint={"lr": 1e-2}, progress=False)
    assert losses == full_losses
    assert all(torch.equal(resumed[k], full[k]) for k in full), "a resumed run ends with the same deltas"
    with pytest.raises(CheckpointError, match="another run.*lr"):
        finetune(model, PARAMS, _loss(model), steps=6, lr=1e-2, checkpoint=folder, fingerprint={"lr": 5e-3},
                 progress=False)


def test_bad_masks_are_named(model) -> None:
    with pytest.raises(ValueError, match="not trained"):
        finetune(model, PARAMS[:1], _loss(model), steps=1, lr=1e-3, masks={PARAMS[1]: torch.ones(1, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool tensor of shape"):
        finetune(model, PARAMS[:1], _loss(model), steps=1, lr=1e-3, masks={PARAMS[0]: torch.ones(3)})


def test_named_loss_terms_are_recorded_and_survive_a_resume(model, tmp_path) -> None:
    def loss(step: int, generator: torch.Generator):
        value = _loss(model)(step, generator)
        return 2 * value, {"half": value.detach()}

    terms: list[dict[str, float]] = []
    _, losses = finetune(model, PARAMS, loss, steps=3, lr=1e-2, progress=False, terms=terms)
    assert [t["half"] for t in terms] == pytest.approx([x / 2 for x in losses])
    folder = tmp_path / "ckpt"
    finetune(model, PARAMS, loss, steps=2, lr=1e-2, checkpoint=folder, checkpoint_every=1, progress=False)
    resumed: list[dict[str, float]] = []
    finetune(model, PARAMS, loss, steps=3, lr=1e-2, checkpoint=folder, progress=False, terms=resumed)
    assert resumed == terms  # the first two steps' terms come from the checkpoint
