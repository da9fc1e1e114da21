"""The registered models: one short factory per name and budget (see docs/experiments.md for
how each layout was chosen)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .blocks import Head, PooledLinearHead, conv_bn, separable_conv_bn
from .registry import NUM_CLASSES, PARAM_BUDGET, register_model



@register_model("seednet", budget=PARAM_BUDGET,
                description="the job's original net: 3 convs 16-24-32, BN, ReLU, Dropout 0.05, GAP")
def seednet() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Dropout(0.05)]

    return nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 24), nn.MaxPool2d(2),
                         *block(24, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, NUM_CLASSES))


def pooled_cnn(c1: int, c2: int, c3: int, c4: int, *, act: Callable[..., nn.Module] = nn.ReLU,
               dropout: float = 0.05, anti_alias: bool = False) -> nn.Sequential:
    """Four 3x3 convs: c1 at 28x28 then pool, c2 and c3 at 14x14 then pool, c4 at 7x7.
    ``anti_alias``: the two pools between them are MaxBlurPools (the head's stays a max-pool)."""
    return nn.Sequential(
        conv_bn(1, c1, pool=True, act=act, anti_alias=anti_alias),  # (B, c1, 14, 14)
        conv_bn(c1, c2, act=act),
        conv_bn(c2, c3, pool=True, act=act, anti_alias=anti_alias),  # (B, c3, 7, 7)
        conv_bn(c3, c4, act=act),
        PooledLinearHead(c4, dropout=dropout),  # (B, c4 * 3 * 3) -> (B, 10)
    )


@register_model("cnn20k", budget=PARAM_BUDGET,
                description="default: convs 16-32-24-24 (28->14->7), pool-first, pooled linear head")
def cnn20k() -> nn.Module:
    return pooled_cnn(16, 32, 24, 24)


@register_model("cnn8k", budget=8_000,
                description="cnn20k's shape at 8-16 channels: convs 8-16-16-16, SiLU, anti-aliased pools, "
                "pooled linear head")
def cnn8k() -> nn.Module:
    # SiLU, no dropout and anti-aliased pools in the body: each measured on held-out images
    # (docs/experiments.md, "Why the zoo's layouts"); the head's pool stays a plain max-pool
    return pooled_cnn(8, 16, 16, 16, act=nn.SiLU, dropout=0.0, anti_alias=True)


@register_model("cnn2k", budget=2_000,
                description="conv 1-8 and depthwise-separable 16 at 28x28, separable 24-24 at 14 and 7, "
                "SiLU, global average head")
def cnn2k() -> nn.Module:
    # two layers at full resolution before the first pool, SiLU, no dropout: the net underfits,
    # so each change gives it capacity or compute (docs/experiments.md, "Why the zoo's layouts")
    return nn.Sequential(
        conv_bn(1, 8, act=nn.SiLU),  # (B, 8, 28, 28)
        separable_conv_bn(8, 16, pool=True, act=nn.SiLU),  # (B, 16, 14, 14)
        separable_conv_bn(16, 24, pool=True, act=nn.SiLU),  # (B, 24, 7, 7)
        separable_conv_bn(24, 24, act=nn.SiLU),
        Head(24),  # a pooled linear head alone would cost 2,170 weights
    )


class SpeedNet(nn.Sequential):
    """A strided 4x4 stem straight to 7x7 maps, two convs there, a pooled linear head.

    The stem's filters start as the whitening of the training data's 4x4 patches (see
    ``init_from_data``, after airbench): a good first layer from step one. They stay
    trainable: frozen, they cost accuracy and saved no measurable time (docs/experiments.md).
    """

    def __init__(self, width: int = 24, channels: int = 32):
        super().__init__(
            conv_bn(1, width, kernel=4, stride=2, pool=True),  # (B, 24, 7, 7)
            conv_bn(width, channels),
            conv_bn(channels, channels),
            PooledLinearHead(channels),
        )

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 1e-2) -> None:
        """Whitening filters from the patch covariance of ``images`` (normalized, (N, 1, 28, 28)).

        Each eigenvector of the 4x4-patch covariance, scaled by 1/sqrt(eigenvalue), is used
        twice, with both signs, so that ReLU keeps both halves of its response.
        """
        conv = self[0][0]
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        patches = nn.functional.unfold(images.float(), k, stride=s, padding=p)  # (N, k*k, L)
        patches = patches.transpose(1, 2).reshape(-1, k * k).double()
        patches = patches - patches.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        order = eigenvalues.argsort(descending=True)[: conv.out_channels // 2]
        filters = eigenvectors[:, order].T / (eigenvalues[order, None] + eps).sqrt()
        filters = torch.cat([filters, -filters]).view_as(conv.weight)
        conv.weight.copy_(filters.to(conv.weight))


@register_model("speednet", budget=PARAM_BUDGET,
                description="speedrun: whitened 4x4 stem + pool (28->7), convs 32-32, pooled linear head")
def speednet() -> nn.Module:
    return SpeedNet()
