"""``sample(..., follow={i: j})``: prompt i rides prompt j's trajectory in the same batched call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import circuits


@pytest.mark.parametrize("scheduler", ["ddim", "dpm"])
def test_a_follower_reads_its_prompt_on_its_leaders_latents(model, scheduler) -> None:
    prompts = ["a red circle", "a blue square", "a circle"]
    graph = [circuits.Capture("unet.conv_in", name="latent"), circuits.Capture("unet.eps", branch="cond", name="eps")]
    tied = circuits.sample(model, prompts, seed=3, steps=4, scheduler=scheduler, graph=graph, follow={0: 2},
                           record=True, progress=False)
    # the UNet's input (a function of the latents alone) is the leader's at every step, in both branches
    latent = tied.captures["latent"]  # [steps, 2 * 3 rows, ...]: uncond rows 0-2, cond rows 3-5
    torch.testing.assert_close(latent[:, 0], latent[:, 2], rtol=0, atol=0)
    torch.testing.assert_close(latent[:, 3], latent[:, 5], rtol=0, atol=0)
    assert not torch.equal(latent[:, 1], latent[:, 2])
    # ... while its prediction is that of its own prompt
    eps = tied.captures["eps"]
    assert not torch.allclose(eps[:, 0], eps[:, 2])
    torch.testing.assert_close(tied.trajectory.latents[:, 0], tied.trajectory.latents[:, 2], rtol=0, atol=0)
    assert np.array_equal(np.asarray(tied.images[0]), np.asarray(tied.images[2]))
    # the leaders are sampled as without followers
    free = circuits.sample(model, prompts, seed=3, steps=4, scheduler=scheduler, progress=False)
    torch.testing.assert_close(tied.latents[1:], free.latents[1:], rtol=0, atol=0)


def test_a_follower_matches_its_prompt_sampled_by_hand_on_the_leaders_trajectory(model) -> None:
    """Row i's prediction at step k equals the UNet on (leader latent at k, prompt i): Alg. 1 lines 4-5."""
    prompts = ["a circle", "a red circle"]
    tied = circuits.sample(model, prompts, seed=1, steps=3, follow={1: 0}, record=True, progress=False,
                           guidance_scale=1.0)
    from circuits.sampling import encode_prompts, make_scheduler

    sched = make_scheduler(model)
    sched.set_timesteps(3)
    embeds = encode_prompts(model, prompts[1:], "cond")
    with torch.no_grad():
        for k, t in enumerate(sched.timesteps):
            x = sched.scale_model_input(tied.trajectory.latents[k, :1], t)
            eps = model.unet(x, t, encoder_hidden_states=embeds, return_dict=False)[0]
            torch.testing.assert_close(tied.trajectory.noise_cond[k, 1:], eps, rtol=1e-5, atol=1e-6)


def test_follow_keeps_gradients_flowing(model) -> None:
    result = circuits.sample(model, ["a red circle", "a circle"], steps=2, follow={0: 1}, grad=True, progress=False)
    assert result.latents.requires_grad


@pytest.mark.parametrize(
    ("follow", "match"),
    [
        ({0: 5}, r"leader 5 is not a prompt index \(there are 2 prompts: 0..1\)"),
        ({-1: 0}, "follower -1 is not a prompt index"),
        ({1: 1}, "prompt 1 cannot follow itself"),
        ({"a": 0}, "follower 'a' is not a prompt index"),
        ([(1, 0)], r"give a dict \{follower: leader\}"),
    ],
)
def test_bad_follow_maps_are_clear_errors(model, follow, match) -> None:
    with pytest.raises(ValueError, match=match):
        circuits.sample(model, ["a red circle", "a circle"], steps=1, follow=follow, progress=False)


def test_chains_are_refused(model) -> None:
    with pytest.raises(ValueError, match=r"prompt 2 follows 1, which itself follows 0; point it at the leader \(0\)"):
        circuits.sample(model, ["a circle", "a red circle", "a blue circle"], steps=1, follow={1: 0, 2: 1},
                        progress=False)


def test_an_empty_map_changes_nothing(model) -> None:
    a = circuits.sample(model, ["a red circle", "a circle"], seed=2, steps=2, follow={}, progress=False)
    b = circuits.sample(model, ["a red circle", "a circle"], seed=2, steps=2, progress=False)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)
