"""Pocket training, contrastive phase: the text encoder learns as CLIP's did, before any UNet.

Stable Diffusion's text encoder is CLIP: trained contrastively on captions and images, then
frozen while the UNet learns to read its last hidden states. A text encoder trained jointly with
the UNet instead learns to put the whole prompt in the padded [EoT] positions, and every
interpretability diagnostic on it comes out reversed (``../shared/notes/pocket-v2-trial.md``).
This phase reproduces CLIP's recipe at pocket scale:

* text tower: the pipeline's own causal ``CLIPTextModel`` (SD1.x layout, see
  :func:`train_common.make_text_encoder`); its ``pooler_output`` (the final-layer-norm state of
  the first [EoT]) goes through a bias-free linear projection, as ``CLIPModel.text_projection``;
* image tower (:class:`ImageEncoder`): three stride-2 convolutions over the 32x32 render, then a
  linear map of the *flattened* 4x4 feature map (not an average pool: spatial words such as
  "on the left" need the image embedding to know where things are);
* loss: symmetric InfoNCE with a learned temperature (``logit_scale``, CLIP's init log(1/0.07),
  clamped at log 100). A pocket batch holds many renders of the same scene, so the targets are
  *soft*: text i's target is uniform over the batch items whose scene equals item i's
  (:func:`train_common.scene_key`), and likewise for images.

Batches, captions and the order of items are drawn from generators seeded by (seed, step), so a
run resumed from its checkpoint continues bitwise. Output: ``clip_final.pt`` holding the text
encoder's state dict (what the UNet phase freezes and the export ships), the projection, the
image encoder and the last in-batch retrieval accuracy.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import nn

from .train_common import (
    Checkpointer,
    Progress,
    atomic_save,
    check_data,
    draw_caption,
    fix_steps,
    load_tokenizer,
    log,
    lr_at,
    make_text_encoder,
    resume_model,
    scene_key,
    set_lr,
    to_tensor,
    tokenize,
    world_items,
)


class ImageEncoder(nn.Module):
    """32x32 RGB -> ``dim``: conv(32, s2) - conv(64, s2) - conv(128, s2), GELU, flatten, linear."""

    def __init__(self, dim: int = 128, size: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.GELU(),
        )  # fmt: skip
        self.head = nn.Linear(128 * (size // 8) ** 2, dim)

    def forward(self, x: Float[torch.Tensor, "b 3 h w"]) -> Float[torch.Tensor, "b d"]:
        return self.head(self.convs(x).flatten(1))


class Contrastive(nn.Module):
    """The two towers, the text projection and the temperature: everything the loss trains."""

    def __init__(self, text: nn.Module, dim: int) -> None:
        super().__init__()
        self.text = text
        width = text.config.hidden_size
        self.text_projection = nn.Linear(width, dim, bias=False)
        self.image = ImageEncoder(dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def embed_text(self, ids: torch.Tensor) -> Float[torch.Tensor, "b d"]:
        return F.normalize(self.text_projection(self.text(ids).pooler_output), dim=-1)

    def embed_image(self, x: torch.Tensor) -> Float[torch.Tensor, "b d"]:
        return F.normalize(self.image(x), dim=-1)


def soft_targets(keys: list) -> Float[torch.Tensor, "b b"]:
    """Row i: uniform over the items j with ``keys[j] == keys[i]`` (always including i)."""
    same: Bool[torch.Tensor, "b b"] = torch.tensor([[a == b for b in keys] for a in keys])
    t = same.float()
    return t / t.sum(dim=1, keepdim=True)


def clip_loss(model: Contrastive, ids: torch.Tensor, images: torch.Tensor, keys: list) -> tuple[torch.Tensor, float]:
    """Symmetric soft-target InfoNCE; returns (loss, in-batch text->image top-1 accuracy, where a
    hit is any image of the same scene)."""
    t, i = model.embed_text(ids), model.embed_image(images)
    scale = model.logit_scale.clamp(max=float(np.log(100.0))).exp()
    logits = scale * t @ i.T
    target = soft_targets(keys)
    loss = 0.5 * (-(target * logits.log_softmax(dim=1)).sum(1).mean()
                  - (target * logits.T.log_softmax(dim=1)).sum(1).mean())  # fmt: skip
    with torch.no_grad():
        top1 = float((target.gather(1, logits.argmax(dim=1, keepdim=True)) > 0).float().mean())
    return loss, top1


def train_clip(args: argparse.Namespace, out: Path) -> bool:
    """Train the text encoder contrastively for ``--clip-steps``; writes ``clip_final.pt``.
    Returns False when it stopped early at ``--stop-after`` (checkpoint written)."""
    final = out / "clip_final.pt"
    if final.exists():
        log.info("clip: %s exists, skipping", final)
        return True
    check_data(args, out)
    total = fix_steps("clip_steps", args.clip_steps, out)
    tok = load_tokenizer(out)
    images = np.load(out / "data.npz")["train"]
    items = world_items(args)  # same order as the rendered images
    scenes = [sc for sc, _ in items]
    torch.manual_seed(args.seed + 2)
    model = Contrastive(make_text_encoder(tok), args.clip_dim)
    opt = torch.optim.AdamW(model.parameters(), lr=args.clip_lr, weight_decay=0.1)
    ckpt = out / "clip_ckpt.pt"
    step = resume_model(ckpt, model, opt, "clip", args.resume)
    model.train()
    prog = Progress("clip", total, step, args.log_every)
    cp = Checkpointer(args.ckpt_minutes, args.stop_after)
    top1 = float("nan")
    while step < total:
        set_lr(opt, lr_at(step, total, args.clip_lr, args.clip_warmup))
        rng = np.random.default_rng([args.seed, 5, step])
        idx = rng.integers(len(images), size=args.clip_batch)
        crng = random.Random(f"pocket-clip-captions/{args.seed}/{step}")
        ids = tokenize(tok, [draw_caption(scenes[i], crng) for i in idx])
        loss, top1 = clip_loss(model, ids, to_tensor(images[idx]), [scene_key(scenes[i]) for i in idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        prog(step, loss=loss.item(), top1=top1, temp=1 / model.logit_scale.exp().item())
        if step < total and cp.due(step):
            atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
            log.info("clip: checkpoint at step %d", step)
            if cp.stop(step):
                log.info("clip: stopping at step %d as asked (--stop-after)", step)
                return False
    state = {"text": model.text.state_dict(), "text_projection": model.text_projection.state_dict(),
             "image": model.image.state_dict(), "logit_scale": model.logit_scale.item(), "step": total,
             "last_top1": top1}  # fmt: skip
    atomic_save(state, final)
    log.info("clip: done, %d steps, last in-batch top-1 %.3f", total, top1)
    return True
