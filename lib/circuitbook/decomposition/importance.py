"""Causal importance: how much of subcomponent c input x needs, g_c(x) ∈ [0, 1].

Each subcomponent has its own tiny MLP on its own inner activation h_c = v_cᵀ x (1 -> 16 GELU -> 1),
followed by a hard sigmoid clamp(·, 0, 1). That is SPD's choice for toys. For language models the
reference code uses a *shared* MLP per matrix on the layer's whole input vector x (d_in -> hidden GELU
-> C), which can tell apart inputs that load a subcomponent equally (`CISharedMLP`).

A plain clamp has zero gradient outside [0, 1], so a subcomponent whose importance fell to 0 could
never come back. SPD therefore uses two leaky versions:

- lower-leaky, for the masks: below 0 the gradient leaks (× alpha) but only when it pushes g *up*,
  so the reconstruction losses can revive a dead importance;
- upper-leaky, for the minimality loss: above 1 the function leaks (1 + alpha (x − 1)), so the
  penalty keeps pulling an over-saturated importance down toward 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _LowerLeakyHardSigmoid(torch.autograd.Function):
    """Forward clamp(x, 0, 1). Backward: grad on [0, 1]; alpha·grad below 0 only if grad < 0; 0 above 1."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        zero = torch.zeros_like(grad)
        below = torch.where(grad < 0, ctx.alpha * grad, zero)  # only "increase g" leaks through
        inside = torch.where(x <= 1, grad, zero)
        return torch.where(x <= 0, below, inside), None


def lower_leaky_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """clamp(x, 0, 1) with a one-sided leaky gradient below 0 (the masks' g)."""
    return _LowerLeakyHardSigmoid.apply(x, alpha)


def upper_leaky_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """0 below 0, x on [0, 1], 1 + alpha (x − 1) above 1 (the minimality loss's g)."""
    return torch.where(x > 1, 1 + alpha * (x - 1), x.clamp(0.0, 1.0))


class CIMLP(nn.Module):
    """C independent MLPs 1 -> hidden (GELU) -> 1, one per subcomponent, run in parallel."""

    def __init__(self, C: int, hidden: int = 16):
        super().__init__()
        self.W1 = nn.Parameter(torch.randn(C, hidden) * math.sqrt(2.0))  # [C, H]; fan-in 1, ReLU-gain init
        self.b1 = nn.Parameter(torch.zeros(C, hidden))  # [C, H]
        self.W2 = nn.Parameter(torch.randn(C, hidden) / math.sqrt(hidden))  # [C, H]
        self.b2 = nn.Parameter(torch.zeros(C))  # [C]

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [..., C] -> [..., C] (pre-sigmoid)
        z = F.gelu(h.unsqueeze(-1) * self.W1 + self.b1)  # [..., C, H]
        return (z * self.W2).sum(-1) + self.b2


class CISharedMLP(nn.Module):
    """One MLP per matrix on the layer's input vector: x [..., d_in] -> hidden (GELU) -> [..., C] (pre-sigmoid)."""

    def __init__(self, d_in: int, C: int, hidden: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
