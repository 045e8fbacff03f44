"""The component model: a frozen target whose chosen nn.Linear layers are written as sums of rank-one pieces.

For a target matrix W [d_out, d_in] we learn U [d_out, C] and V [d_in, C], so U Vᵀ = Σ_c u_c v_cᵀ
should equal W. The masked layer computes ((x V) * m) Uᵀ + b: subcomponent c contributes only as
much as its mask m_c ∈ [0, 1] lets it. The bias b is the target's, frozen and never decomposed.
The optional Δ-component (W − U Vᵀ) is the part the subcomponents miss; it gets its own mask.

The target is wrapped through persistent forward hooks on the selected modules (selected by
their names in `target.named_modules()`): with no masks set the target runs untouched, and the
hook caches each selected layer's input; with masks set the hook replaces the layer's output.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from circuitbook.decomposition.importance import CIMLP, CISharedMLP, lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid


class LinearComponents(nn.Module):
    """C rank-one subcomponents of one weight matrix: W ≈ U Vᵀ = Σ_c u_c v_cᵀ."""

    def __init__(self, d_in: int, d_out: int, C: int, bias: torch.Tensor | None = None):
        super().__init__()
        self.d_in, self.d_out, self.C = d_in, d_out, C
        self.U = nn.Parameter(torch.randn(d_out, C) / math.sqrt(C))  # [d_out, C]
        self.V = nn.Parameter(torch.randn(d_in, C) / math.sqrt(d_in))  # [d_in, C]
        self.register_buffer("bias", None if bias is None else bias.detach().clone())  # frozen

    @property
    def weight(self) -> torch.Tensor:
        return self.U @ self.V.T  # [d_out, d_in], like nn.Linear.weight

    def acts(self, x: torch.Tensor) -> torch.Tensor:
        """Inner activations h_c = v_cᵀ x. [..., d_in] -> [..., C]"""
        return x @ self.V

    def forward(
        self,
        x: torch.Tensor,  # [..., d_in]
        mask: torch.Tensor | None = None,  # [..., C]
        delta: torch.Tensor | None = None,  # [d_out, d_in], W − U Vᵀ
        delta_mask: torch.Tensor | None = None,  # [...]
    ) -> torch.Tensor:  # [..., d_out]
        h = self.acts(x)  # [..., C]
        if mask is not None:
            h = h * mask
        out = h @ self.U.T  # [..., d_out]
        if delta is not None:
            d = x @ delta.T  # [..., d_out]
            out = out + (d if delta_mask is None else d * delta_mask.unsqueeze(-1))
        if self.bias is not None:
            out = out + self.bias
        return out


@dataclass
class CausalImportances:
    """g per module, two ways: `lower` (leaky below 0, for masks), `upper` (leaky above 1, for minimality)."""

    lower: dict[str, torch.Tensor]  # name -> [..., C]
    upper: dict[str, torch.Tensor]  # name -> [..., C]


def _key(name: str) -> str:
    return name.replace(".", "-")  # ModuleDict keys may not contain dots


class ComponentModel(nn.Module):
    """Wrap `target`'s nn.Linear layers named in `C` (name -> number of subcomponents).

    `model(x)` runs the target; `model(x, masks={name: m})` runs it with the named layers replaced
    by their masked components (layers not in `masks` keep their original weights).
    `ci_fn`: "mlp" (one tiny MLP per subcomponent on h_c, the toys) or "shared_mlp" (one MLP per
    matrix on the layer's input x, hidden width `ci_hidden`; the language model).
    """

    def __init__(
        self, target: nn.Module, C: dict[str, int], ci_hidden: int = 16, use_delta: bool = True, ci_fn: str = "mlp"
    ):
        super().__init__()
        self.target = target.requires_grad_(False)
        self.C = dict(C)
        self.names = list(C)
        self.use_delta = use_delta
        if ci_fn not in ("mlp", "shared_mlp"):
            raise ValueError(f"unknown ci_fn {ci_fn!r}")
        self.ci_fn = ci_fn
        modules = dict(target.named_modules())
        self.components = nn.ModuleDict()
        self.ci_fns = nn.ModuleDict()
        for name, c in self.C.items():
            lin = modules.get(name)
            if not isinstance(lin, nn.Linear):
                raise ValueError(f"{name!r} is not an nn.Linear in the target (got {type(lin).__name__})")
            self.components[_key(name)] = LinearComponents(lin.in_features, lin.out_features, c, lin.bias)
            self.ci_fns[_key(name)] = (
                CIMLP(c, ci_hidden) if ci_fn == "mlp" else CISharedMLP(lin.in_features, c, ci_hidden)
            )
            lin.register_forward_hook(self._hook(name))
        dev = next(target.parameters()).device
        self.components.to(dev)  # made on the CPU (the same draws on every device), used where the target is
        self.ci_fns.to(dev)
        self._masks: dict[str, torch.Tensor] | None = None
        self._delta_masks: dict[str, torch.Tensor] | None = None
        self._routing: dict[str, torch.Tensor] | None = None
        self._deltas: dict[str, torch.Tensor] | None = None
        self._cache: dict[str, torch.Tensor] = {}

    def component(self, name: str) -> LinearComponents:
        return self.components[_key(name)]

    def target_weight(self, name: str) -> torch.Tensor:
        return dict(self.target.named_modules())[name].weight  # [d_out, d_in]

    def weight_deltas(self) -> dict[str, torch.Tensor]:
        """Δ = W − U Vᵀ for every decomposed matrix (carries gradients to U and V)."""
        return {n: self.target_weight(n) - self.component(n).weight for n in self.names}

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            x = args[0]
            self._cache[name] = x
            if self._masks is None or name not in self._masks:
                return None  # keep the target's output
            delta = delta_mask = None
            if self._deltas is not None and name in self._deltas:
                delta = self._deltas[name]
                delta_mask = None if self._delta_masks is None else self._delta_masks[name]
            out = self.component(name)(x, self._masks[name], delta, delta_mask)
            if self._routing is not None and name in self._routing:  # [...] bool: True = use components
                out = torch.where(self._routing[name].unsqueeze(-1), out, output)
            return out

        return hook

    @contextmanager
    def _masked(self, masks, delta_masks, routing, deltas):
        self._masks, self._delta_masks, self._routing, self._deltas = masks, delta_masks, routing, deltas
        try:
            yield
        finally:
            self._masks = self._delta_masks = self._routing = self._deltas = None

    def forward(
        self,
        x: torch.Tensor,
        masks: dict[str, torch.Tensor] | None = None,  # name -> [..., C]
        delta_masks: dict[str, torch.Tensor] | None = None,  # name -> [...]
        routing: dict[str, torch.Tensor] | None = None,  # name -> [...] bool
        deltas: dict[str, torch.Tensor] | None = None,  # name -> [d_out, d_in]; None: no Δ-component
    ) -> torch.Tensor:
        with self._masked(masks, delta_masks, routing, deltas):
            return self.target(x)

    def run_with_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the target unmasked; return its output and the input of every decomposed layer."""
        self._cache = {}
        out = self(x)
        cache, self._cache = self._cache, {}
        return out, {n: cache[n] for n in self.names}

    def causal_importances(self, inputs: dict[str, torch.Tensor], detach: bool = False) -> CausalImportances:
        """g_c(x) = hard-sigmoid(MLP_c(v_cᵀ x)) (or MLP(x)[c] for "shared_mlp") per decomposed layer."""
        lower, upper = {}, {}
        for n in self.names:
            h = self.component(n).acts(inputs[n]) if self.ci_fn == "mlp" else inputs[n]  # [..., C] or [..., d_in]
            pre = self.ci_fns[_key(n)](h.detach() if detach else h)  # [..., C]
            lower[n] = lower_leaky_hard_sigmoid(pre)
            upper[n] = upper_leaky_hard_sigmoid(pre)
        return CausalImportances(lower, upper)

    def masked_with(self, x: torch.Tensor, value: float = 1.0, use_delta: bool = False) -> torch.Tensor:
        """Output with every mask set to `value` (1: all subcomponents kept)."""
        with torch.no_grad():
            _, inputs = self.run_with_inputs(x)  # each layer's input fixes its masks' leading shape
        masks = {n: torch.full((*inputs[n].shape[:-1], self.C[n]), value, device=inputs[n].device) for n in self.names}
        deltas = self.weight_deltas() if use_delta else None
        return self(x, masks=masks, deltas=deltas)

    @torch.no_grad()
    def set_from_weights(self, name: str, U: torch.Tensor, V: torch.Tensor) -> None:
        """Set subcomponents of `name` to given U [d_out, C] and V [d_in, C] (tests, hand-built cases)."""
        self.component(name).U.copy_(U)
        self.component(name).V.copy_(V)
