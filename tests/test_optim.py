"""The optimizer: AdamW alone, or Muon for the channel-mixing conv weights and AdamW for the rest."""

from __future__ import annotations

import pytest
import torch

from tinymnist.config import preset_config
from tinymnist.models import create_model, list_models
from tinymnist.training.optim import MuonAdamW, build_optimizer, mixes_channels, orthogonalize


def test_the_adamw_groups_of_muon_adamw_step_exactly_like_torch_adamw():
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    initial = [p.detach().clone() for p in ours]
    conv = torch.randn(8, 4, 3, 3, requires_grad=True)  # a Muon weight beside them
    a = MuonAdamW([{"params": ours[:1], "weight_decay": 0.01}, {"params": ours[1:], "weight_decay": 0.0},
                   {"params": [conv], "weight_decay": 0.01, "muon": True}], lr=0.01, betas=(0.85, 0.99))
    b = torch.optim.AdamW([{"params": theirs[:1], "weight_decay": 0.01}, {"params": theirs[1:], "weight_decay": 0.0}],
                          lr=0.01, betas=(0.85, 0.99))
    for _ in range(5):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        conv.grad = torch.randn_like(conv)
        a.step()
        b.step()
    for p, q, p0 in zip(ours, theirs, initial):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
        assert (p - p0).abs().min() > 1e-5  # every entry moved: the comparison is not vacuous
    assert conv.grad is not None  # handed back after AdamW's step
    assert set(a.state[conv]) == {"step", "momentum_buffer"}  # Muon's state, not AdamW's moments


@pytest.mark.parametrize("shape", [(32, 288), (32, 216), (216, 32)])  # speednet's convs, and tall
def test_orthogonalize_keeps_the_directions_and_evens_out_the_singular_values(shape):
    torch.manual_seed(0)
    # columns scaled over two decades (5 Newton-Schulz steps lift singular values down to ~1/500
    # of the largest, and no further)
    g = torch.randn(*shape) @ torch.diag(torch.logspace(0, 2, shape[1]))
    o = orthogonalize(g)
    s = torch.linalg.svdvals(o)
    assert o.shape == g.shape and s.min() > 0.6 and s.max() < 1.2
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cosine = (o * (u @ vh)).sum() / (o.norm() * (u @ vh).norm())
    assert cosine > 0.95  # the nearest orthogonal matrix, not just any


@pytest.mark.parametrize("name", list_models())
def test_muon_takes_the_channel_mixing_conv_weights_and_adamw_the_rest(name):
    model = create_model(name)
    optimizer, _ = build_optimizer(model, preset_config("default", muon_lr=0.1), total_steps=100)
    groups = optimizer.param_groups
    muon = [p for g in groups if g.get("muon") for p in g["params"]]
    expected = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                and m.in_channels // m.groups > 1]  # not the input layer, not depthwise convs
    assert isinstance(optimizer, MuonAdamW) and expected
    assert {id(p) for p in muon} == {id(p) for p in expected}
    assert all(mixes_channels(p) for p in muon)
    everything = [p for g in groups for p in g["params"]]
    assert len(everything) == len({id(p) for p in everything}) == len(list(model.parameters()))
    plain, _ = build_optimizer(model, preset_config("default"), total_steps=100)
    assert type(plain) is torch.optim.AdamW  # muon_lr 0: the fused AdamW, as before


def test_the_schedule_peaks_at_lr_for_adamw_and_at_muon_lr_for_muon():
    config = preset_config("default", lr=0.01, muon_lr=0.2, pct_start=0.25)
    optimizer, schedule = build_optimizer(create_model("cnn20k"), config, total_steps=100)
    for _ in range(24):  # to the peak: the warm-up ends at step pct_start * 100 - 1
        optimizer.step()
        schedule.step()
    peaks = {g.get("muon", False): g["lr"] for g in optimizer.param_groups}
    assert peaks[False] == pytest.approx(0.01) and peaks[True] == pytest.approx(0.2)


def test_muon_moves_a_conv_weight_by_the_same_rms_whatever_its_gradient_scale():
    # the update is orthogonalized: a gradient 1000x larger moves the weight just as far
    moved = []
    for scale in (1e-3, 1.0):
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(16, 32, 3, bias=False)
        before = conv.weight.detach().clone()
        optimizer = MuonAdamW([{"params": [conv.weight], "muon": True}], lr=0.01)
        conv.weight.grad = scale * torch.randn_like(conv.weight)
        optimizer.step()
        moved.append((conv.weight.detach() - before).pow(2).mean().sqrt().item())
    assert moved[0] == pytest.approx(moved[1], rel=1e-3)
    # the RMS of an orthogonal 32x144 matrix is 1/12, times the 0.2 * sqrt(144) scale: lr * 0.2
    assert 0.5 * 0.01 * 0.2 < moved[0] < 1.1 * 0.01 * 0.2
