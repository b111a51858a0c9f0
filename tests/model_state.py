"""Snapshot of everything an intervention could leave behind: hooks, processors, weights."""

from __future__ import annotations

import torch


def snapshot(model) -> dict:
    hooks = {}
    for root_name, root in (("unet", model.unet), ("text_encoder", model.text_encoder), ("vae", model.vae)):
        for name, module in root.named_modules():
            hooks[f"{root_name}.{name}"] = (
                tuple(module._forward_hooks),
                tuple(module._forward_pre_hooks),
                tuple(module._backward_hooks),
                "forward" in module.__dict__,
            )
    processors = {k: id(v) for k, v in model.unet.attn_processors.items()}
    weights = {
        f"{root_name}.{k}": v.detach().clone()
        for root_name, root in (("unet", model.unet), ("text_encoder", model.text_encoder))
        for k, v in root.state_dict().items()
    }
    return {"hooks": hooks, "processors": processors, "weights": weights}


def assert_same_state(before: dict, after: dict) -> None:
    assert after["hooks"] == before["hooks"], "a hook outlived its context"
    assert after["processors"] == before["processors"], "an attention processor was not restored"
    assert after["weights"].keys() == before["weights"].keys()
    for key, value in before["weights"].items():
        other = after["weights"][key]
        assert torch.equal(value.view(torch.uint8) if value.is_floating_point() else value,
                           other.view(torch.uint8) if other.is_floating_point() else other), f"{key} changed"
