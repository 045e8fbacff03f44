"""Learned node masks: a Heaviside step forward, a sigmoid surrogate gradient backward.

One parameter s_i per node, clamped to [-1, 1], shared over prompts and positions:

    forward   m_i = H(s_i) = 1 if s_i > 0 else 0              (the node is kept or mean-ablated)
    backward  dm_i/ds_i := sigmoid'(s_i / T) / T               (a smooth stand-in; T = temperature)

so the forward pass always runs a real, discrete circuit, and the gradient says which way each
node's score should move. The number of kept nodes, sum_i H(s_i), gets the same surrogate gradient.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from circuitbook.circuits.nodes import NodeSet


class HeavisideSigmoid(torch.autograd.Function):
    """H(x) forward; sigmoid'(x / T) / T backward."""

    @staticmethod
    def forward(ctx, x: Tensor, temperature: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.temperature = temperature
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x / ctx.temperature)
        return grad * s * (1 - s) / ctx.temperature, None


def heaviside(x: Tensor, temperature: float = 1.0) -> Tensor:
    return HeavisideSigmoid.apply(x, temperature)


class NodeMask(nn.Module):
    """One score per node of `nodes`, initialised to noise_bias + noise_scale * N(0, 1)."""

    def __init__(self, nodes: NodeSet, noise_scale: float = 1e-2, noise_bias: float = 1e-1,
                 temperature: float = 1.0, seed: int = 0):
        super().__init__()
        self.nodes = nodes
        self.temperature = temperature
        g = torch.Generator().manual_seed(seed)
        self.score = nn.Parameter(noise_bias + noise_scale * torch.randn(len(nodes), generator=g))  # [N]

    def forward(self) -> Tensor:
        """The gates, 0/1 [N], with the surrogate gradient."""
        return heaviside(self.score, self.temperature)

    def masks(self) -> dict[str, Tensor]:
        """{site: gates [width]} for the ablation hooks."""
        return self.nodes.split(self())

    @torch.no_grad()
    def clamp_(self) -> None:
        self.score.clamp_(-1.0, 1.0)

    @property
    def kept(self) -> Tensor:
        return self.score.detach() > 0  # bool [N]

    def n_kept(self) -> int:
        return int(self.kept.sum())
