"""Toy models with known answers for parameter decomposition (chapter 5).

- `TMS`: the toy model of superposition, x̂ = ReLU(Wᵀ W x + b), W is [m, n] (Elhage et al. 2022).
  Optionally an m×m identity `hidden` layer is inserted between W x and Wᵀ: a matrix whose
  correct decomposition is known (m co-active rank-one pieces).
- `ResidMLP`: compressed computation (Braun et al. 2025): 100 features embedded in a 1000-wide
  residual stream by a fixed random embedding, one 50-neuron ReLU MLP, read off by the same
  embedding; labels y = x + ReLU(x).

Every weight lives in a named `nn.Linear`, so a decomposition selects it by its module name
("linear1", "hidden", "linear2", "mlp_in", "mlp_out"). Trainers are seeded and draw every
batch from their own `torch.Generator`, so a run is deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def sparse_features(
    batch: int,
    n_features: int,
    p: float,
    generator: torch.Generator,
    low: float = 0.0,
    high: float = 1.0,
) -> torch.Tensor:
    """Each feature is active with probability `p`, with a value ~ U[low, high]; else 0. -> [batch, n]."""
    active = torch.rand(batch, n_features, generator=generator) < p
    values = low + (high - low) * torch.rand(batch, n_features, generator=generator)
    return values * active


# ----------------------------------------------------------------------------- TMS


class TMS(nn.Module):
    """x̂ = ReLU(W_2 [I] W_1 x + b) with W_2 = W_1ᵀ after training (tied weights)."""

    def __init__(self, n_features: int, n_hidden: int, identity: bool = False):
        super().__init__()
        self.n_features, self.n_hidden = n_features, n_hidden
        self.linear1 = nn.Linear(n_features, n_hidden, bias=False)  # W: [m, n]
        self.hidden = nn.Linear(n_hidden, n_hidden, bias=False) if identity else None
        self.linear2 = nn.Linear(n_hidden, n_features, bias=True)  # Wᵀ: [n, m], b: [n]
        if self.hidden is not None:
            with torch.no_grad():
                self.hidden.weight.copy_(torch.eye(n_hidden))

    @classmethod
    def from_weights(cls, W: torch.Tensor, b: torch.Tensor, identity: bool = False) -> TMS:
        """Build a TMS from a trained W [m, n] and b [n] (the two layers get separate copies)."""
        m, n = W.shape
        model = cls(n, m, identity=identity)
        with torch.no_grad():
            model.linear1.weight.copy_(W)
            model.linear2.weight.copy_(W.T)
            model.linear2.bias.copy_(b)
        return model.requires_grad_(False)

    @property
    def W(self) -> torch.Tensor:
        return self.linear1.weight  # [m, n]; column j is feature j's direction

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., n] -> [..., n]
        h = self.linear1(x)  # [..., m]
        if self.hidden is not None:
            h = self.hidden(h)
        return F.relu(self.linear2(h))


def train_tms(
    n_features: int,
    n_hidden: int,
    *,
    identity: bool = False,
    steps: int = 10_000,
    batch_size: int = 1024,
    lr: float = 5e-3,
    p: float = 0.05,
    bias_init_zero: bool = False,
    n_instances: int = 4,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[TMS, dict[str, float]]:
    """Train tied-weight TMS models with AdamW (constant lr) on MSE(x̂, x); return the best one.

    TMS training sometimes stalls with dead features, so `n_instances` models are trained side by
    side on the same batches and the one with the lowest loss on a held-out batch is kept. Weights and
    batches are drawn on the CPU (the same numbers on every device) and trained on `device`.
    """
    gen = torch.Generator().manual_seed(seed)
    I = n_instances
    W0 = torch.empty(I, n_hidden, n_features)  # [I, m, n]
    bound = 1 / math.sqrt(n_features)  # nn.Linear's default init for W
    W0.uniform_(-bound, bound, generator=gen)
    b0 = (torch.rand(I, 1, n_features, generator=gen) * 2 - 1) / math.sqrt(n_hidden)
    W = nn.Parameter(W0.to(device))
    b = nn.Parameter((torch.zeros(I, 1, n_features) if bias_init_zero else b0).to(device))  # [I, 1, n]

    def forward(x: torch.Tensor) -> torch.Tensor:  # [B, n] -> [I, B, n]
        return F.relu(x @ W.transpose(1, 2) @ W + b)

    opt = torch.optim.AdamW([W, b], lr=lr)
    for _ in tqdm(range(steps), desc=f"TMS {n_features}-{n_hidden}", disable=not progress):
        x = sparse_features(batch_size, n_features, p, gen).to(device)  # [B, n]
        loss = ((forward(x) - x) ** 2).mean(dim=(1, 2)).sum()  # instances train independently
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        x = sparse_features(8192, n_features, p, torch.Generator().manual_seed(seed + 10_000)).to(device)
        losses = ((forward(x) - x) ** 2).mean(dim=(1, 2))  # [I]
    best = int(losses.argmin())
    model = TMS.from_weights(W[best].detach(), b[best, 0].detach(), identity=identity).to(device)
    return model, {"loss": float(losses[best]), "instance": best, "instance_losses": losses.tolist()}


# ----------------------------------------------------------------------------- residual MLP


class ResidMLP(nn.Module):
    """y = W_Eᵀ (r + MLP(r)), r = W_E x: a fixed random unit-norm embedding around one ReLU MLP."""

    def __init__(self, n_features: int = 100, d_embed: int = 1000, d_mlp: int = 50, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        W_E = torch.randn(n_features, d_embed, generator=gen)
        self.register_buffer("W_E", W_E / W_E.norm(dim=-1, keepdim=True))  # [n, d], fixed
        self.mlp_in = nn.Linear(d_embed, d_mlp, bias=False)  # [d_mlp, d]
        self.mlp_out = nn.Linear(d_mlp, d_embed, bias=False)  # [d, d_mlp]
        with torch.no_grad():  # Kaiming-normal init, as in the reference setup
            self.mlp_in.weight.normal_(0, math.sqrt(2 / d_embed), generator=gen)
            self.mlp_out.weight.normal_(0, math.sqrt(1 / d_mlp), generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., n] -> [..., n]
        r = x @ self.W_E  # [..., d]
        r = r + self.mlp_out(F.relu(self.mlp_in(r)))
        return r @ self.W_E.T


def resid_mlp_labels(x: torch.Tensor) -> torch.Tensor:
    """The task: y = x + ReLU(x)."""
    return x + F.relu(x)


def resid_mlp_features(batch: int, n_features: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """Residual-MLP inputs: each feature active with probability p, value ~ U[-1, 1]. -> [batch, n]."""
    return sparse_features(batch, n_features, p, generator, low=-1.0, high=1.0)


def train_resid_mlp(
    n_features: int = 100,
    d_embed: int = 1000,
    d_mlp: int = 50,
    *,
    steps: int = 1000,
    batch_size: int = 2048,
    lr: float = 3e-3,
    p: float = 0.01,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[ResidMLP, dict[str, float]]:
    """Train the MLP (embedding fixed): AdamW, cosine lr, MSE(y, x + ReLU(x)). Returns (model, metrics).
    Weights and batches are drawn on the CPU (the same numbers on every device) and trained on `device`."""
    model = ResidMLP(n_features, d_embed, d_mlp, seed=seed).to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    params = [model.mlp_in.weight, model.mlp_out.weight]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    loss = torch.tensor(0.0)
    for _ in tqdm(range(steps), desc="residual MLP", disable=not progress):
        x = resid_mlp_features(batch_size, n_features, p, gen).to(device)  # [B, n]
        loss = ((model(x) - resid_mlp_labels(x)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.requires_grad_(False), {"final_loss": float(loss.detach())}
