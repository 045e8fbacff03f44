"""TopK dictionaries: sparse autoencoders (SAEs) and transcoders on one activation site.

A transcoder reads one vector and writes another through a wide, sparse layer:

    z(x)  = TopK(ReLU(W_enc x + b_enc))          # [n_features], at most k nonzero
    TC(x) = W_dec z(x) + b_dec                    # W_dec columns have unit norm

It is trained to predict a *target* y (an MLP's output from the MLP's input) and
measured by the fraction of variance it leaves unexplained,

    FVU = sum (y - y_hat)^2 / sum (y - mean y)^2.

An SAE is a transcoder whose target is its own input. The only other difference is
that an SAE subtracts its decoder bias before encoding, z = TopK(ReLU(W_enc (x - b_dec) + b_enc)),
so `SAE` is a subclass that switches that on. Everything else (training, metrics,
fine-tuning, saving) is shared.

Fine-tuning starts from a copy of a trained dictionary, so feature i before and
after is the same feature i: `decoder_cosine(a, b)` then says how much each
feature's direction turned (stage-wise model diffing, SAE-Track).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from tqdm.auto import trange

# What a dictionary can be trained on:
#   Tensor [N, d]                 an SAE's activations (target = input)
#   (Tensor [N, d_in], Tensor [N, d_out])   a transcoder's (input, target) pairs
#   callable (batch_size, generator) -> either of the above for one batch (an activation stream)
Data = Tensor | tuple[Tensor, Tensor] | Callable[[int, torch.Generator], Tensor | tuple[Tensor, Tensor]]


class Transcoder(nn.Module):
    """TopK transcoder: z = TopK(ReLU(W_enc x + b_enc)), y_hat = W_dec z + b_dec."""

    center_input = False  # an SAE encodes x - b_dec; a transcoder encodes x

    def __init__(self, d_in: int, n_features: int, k: int, d_out: int | None = None, seed: int = 0):
        super().__init__()
        d_out = d_in if d_out is None else d_out
        if not 0 < k <= n_features:
            raise ValueError(f"need 0 < k <= n_features, got k={k}, n_features={n_features}")
        self.d_in, self.d_out, self.n_features, self.k = d_in, d_out, n_features, k
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_out, n_features, generator=g)
        W_dec = W_dec / W_dec.norm(dim=0, keepdim=True)
        if d_in == d_out:  # tied initialisation (Gao et al. 2024): encoder starts as the decoder's transpose
            W_enc = W_dec.T.clone()
        else:
            W_enc = torch.randn(n_features, d_in, generator=g) / math.sqrt(d_in)
        self.W_enc = nn.Parameter(W_enc)  # [n_features, d_in]
        self.b_enc = nn.Parameter(torch.zeros(n_features))  # [n_features]
        self.W_dec = nn.Parameter(W_dec)  # [d_out, n_features], unit-norm columns
        self.b_dec = nn.Parameter(torch.zeros(d_out))  # [d_out]

    # ---- forward ---------------------------------------------------------------------------------
    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations W_enc x + b_enc. x: [..., d_in] -> [..., n_features]."""
        if self.center_input:
            x = x - self.b_dec
        return x @ self.W_enc.T + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """Sparse code z = TopK(ReLU(pre_acts)). x: [..., d_in] -> [..., n_features], <= k nonzero."""
        return topk_relu(self.pre_acts(x), self.k)

    def decode(self, z: Tensor) -> Tensor:
        """y_hat = W_dec z + b_dec. z: [..., n_features] -> [..., d_out]."""
        return z @ self.W_dec.T + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def forward_with_code(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(y_hat [..., d_out], z [..., n_features])."""
        z = self.encode(x)
        return self.decode(z), z

    # ---- constraints and copies ------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder column to unit norm (in place)."""
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove the part of each decoder column's gradient that would change its norm."""
        if self.W_dec.grad is not None:
            g, W = self.W_dec.grad, self.W_dec  # [d_out, n_features]
            g.sub_((g * W).sum(0, keepdim=True) * W)

    def config(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "d_in": self.d_in, "d_out": self.d_out,
                "n_features": self.n_features, "k": self.k}

    def copy(self) -> Transcoder:
        """An independent copy with the same weights (and so the same feature indices)."""
        new = type(self).from_tensors(self.to_tensors(), self.config())
        return new.to(self.W_dec.device)

    def to_tensors(self) -> dict[str, Tensor]:
        """Weights as a flat dict for `artifacts.save_tensors` (pair it with `config()`)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], config: dict[str, Any]) -> Transcoder:
        """Rebuild a dictionary saved by `to_tensors()` + `config()`; config["kind"] picks the class."""
        kind = {"SAE": SAE, "Transcoder": Transcoder}[config.get("kind", cls.__name__)]
        if kind is SAE:
            model = SAE(config["d_in"], config["n_features"], config["k"])
        else:
            model = Transcoder(config["d_in"], config["n_features"], config["k"], d_out=config["d_out"])
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
        return model

    @classmethod
    def from_weights(cls, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, k: int) -> Transcoder:
        """A dictionary with exactly these weights (W_enc [n, d_in], W_dec [d_out, n]); no renormalisation."""
        n, d_in = W_enc.shape
        model = cls(d_in, n, k) if cls is SAE else cls(d_in, n, k, d_out=W_dec.shape[0])
        model.load_state_dict({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec})
        return model


class SAE(Transcoder):
    """TopK sparse autoencoder: z = TopK(ReLU(W_enc (x - b_dec) + b_enc)), x_hat = W_dec z + b_dec."""

    center_input = True

    def __init__(self, d: int, n_features: int, k: int, seed: int = 0):
        super().__init__(d, n_features, k, d_out=d, seed=seed)


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep the k largest entries of ReLU(pre) along the last dim, zero the rest. [..., n] -> [..., n]."""
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


# ---- metrics ---------------------------------------------------------------------------------------


def fvu(y: Tensor, y_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained: sum (y - y_hat)^2 / sum (y - mean y)^2 over a batch [N, d]."""
    y, y_hat = y.reshape(-1, y.shape[-1]), y_hat.reshape(-1, y.shape[-1])
    return (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)


def decoder_cosine(a: Transcoder, b: Transcoder) -> Tensor:
    """Cosine of feature i's decoder vector in `a` and in `b`, for every i. -> [n_features]."""
    return torch.nn.functional.cosine_similarity(a.W_dec.detach(), b.W_dec.detach(), dim=0)


def _split(batch: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """A batch as (input, target): a lone tensor is its own target."""
    if isinstance(batch, tuple | list):
        return batch[0], batch[1]
    return batch, batch


def _batches(data: Data, batch_size: int, g: torch.Generator):
    """Endless (x, y) batches. Tensors are shuffled per epoch with `g`; a callable is just called."""
    if callable(data):
        while True:
            yield _split(data(batch_size, g))
    X, Y = _split(data)
    n = X.shape[0]
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = perm[i : i + batch_size].to(X.device)
            yield X[idx], Y[idx]


def _eval_batches(data: Data, batch_size: int, n_batches: int, seed: int):
    """Deterministic evaluation batches: every row of a tensor once, or n_batches from a callable."""
    if callable(data):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n_batches):
            yield _split(data(batch_size, g))
        return
    X, Y = _split(data)
    for i in range(0, X.shape[0], batch_size):
        yield X[i : i + batch_size], Y[i : i + batch_size]


@torch.no_grad()
def evaluate(
    model: Transcoder, data: Data, batch_size: int = 4096, n_batches: int = 8, seed: int = 12345
) -> dict[str, Any]:
    """FVU, mean L0, and dead features (never active over the whole evaluation set).

    Returns {"fvu", "l0", "n_dead", "dead_frac", "dead": bool [n_features], "freq": [n_features]}.
    FVU is pooled over the set: sum of squared errors / sum of squared deviations from the set's mean.
    """
    dev = model.W_dec.device
    sse = torch.zeros((), dtype=torch.float64)
    s1 = torch.zeros(model.d_out, dtype=torch.float64)  # sum y
    s2 = torch.zeros((), dtype=torch.float64)  # sum |y|^2
    fires = torch.zeros(model.n_features, dtype=torch.float64)
    n = 0
    for x, y in _eval_batches(data, batch_size, n_batches, seed):
        x, y = x.to(dev).reshape(-1, model.d_in), y.to(dev).reshape(-1, model.d_out)
        y_hat, z = model.forward_with_code(x)
        sse += (y - y_hat).double().pow(2).sum().cpu()
        s1 += y.double().sum(0).cpu()
        s2 += y.double().pow(2).sum().cpu()
        fires += (z > 0).double().sum(0).cpu()
        n += x.shape[0]
    total_var = s2 - s1.pow(2).sum() / n  # sum |y - mean y|^2
    freq = (fires / n).float()
    dead = fires == 0
    return {
        "fvu": float(sse / total_var.clamp_min(1e-12)),
        "l0": float(fires.sum() / n),
        "n_dead": int(dead.sum()),
        "dead_frac": float(dead.float().mean()),
        "dead": dead,
        "freq": freq,
    }


def dead_features(model: Transcoder, data: Data, **kw) -> Tensor:
    """Boolean mask [n_features]: features that never fire over the evaluation set."""
    return evaluate(model, data, **kw)["dead"]


# ---- training --------------------------------------------------------------------------------------


def train_dictionary(
    model: Transcoder,
    data: Data,
    steps: int,
    *,
    seed: int = 0,
    batch_size: int = 256,
    lr: float = 1e-3,
    init_b_dec: bool = True,
    aux_coef: float = 1 / 32,
    dead_after: int = 256,
    decay_frac: float = 0.2,
    progress: bool = True,
    desc: str = "dictionary",
) -> dict[str, list[float]]:
    """Train `model` in place on FVU (plus an AuxK term that revives dead features). Returns the history.

    - Adam at `lr`, constant, then linear decay to 0 over the last `decay_frac` of the steps.
    - Decoder columns stay unit-norm: the gradient's radial part is removed, then columns are rescaled.
    - `init_b_dec`: set b_dec to the mean target of the first batch (skip it when fine-tuning).
    - AuxK (Gao et al. 2024): features silent for `dead_after` steps try to explain the residual
      y - y_hat with their own top-k; weight `aux_coef` (0 turns it off).
    History, per step: "step", "fvu" (training batch), "l0", "aux", "dead_frac" (silent `dead_after` steps).
    """
    g = torch.Generator().manual_seed(seed)
    dev = model.W_dec.device
    batches = _batches(data, batch_size, g)
    hist: dict[str, list[float]] = {"step": [], "fvu": [], "l0": [], "aux": [], "dead_frac": []}
    if steps <= 0:
        return hist
    if init_b_dec:
        _, y0 = next(batches)
        with torch.no_grad():
            model.b_dec.copy_(y0.to(dev).reshape(-1, model.d_out).float().mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_decay = max(1, int(decay_frac * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (steps - s) / n_decay))
    silent = torch.zeros(model.n_features, dtype=torch.long, device=dev)  # steps since each feature fired
    k_aux = max(1, min(model.n_features // 2, model.d_out // 2))
    bar = trange(steps, desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        x, y = next(batches)
        x, y = x.to(dev).reshape(-1, model.d_in).float(), y.to(dev).reshape(-1, model.d_out).float()
        pre = model.pre_acts(x)  # [B, n_features]
        z = topk_relu(pre, model.k)
        y_hat = model.decode(z)
        loss_main = fvu(y, y_hat)
        loss = loss_main
        fired = (z > 0).any(0)
        silent = torch.where(fired, torch.zeros_like(silent), silent + 1)
        dead = silent >= dead_after
        aux = torch.zeros(())
        if aux_coef > 0 and bool(dead.any()):
            # the dead features' own top-k (no ReLU gate needed beyond topk_relu) reconstruct the residual
            k_dead = min(k_aux, int(dead.sum()))
            z_aux = topk_relu(pre.masked_fill(~dead, -torch.inf), k_dead).nan_to_num(0.0)
            resid = (y - y_hat).detach()
            aux = fvu(resid, z_aux @ model.W_dec.T)
            loss = loss + aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        model.project_decoder_grad_()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        model.normalize_decoder_()
        hist["step"].append(step + 1)
        hist["fvu"].append(loss_main.item())
        hist["l0"].append((z > 0).float().sum(-1).mean().item())
        hist["aux"].append(float(aux.detach()))
        hist["dead_frac"].append(dead.float().mean().item())
        if progress and (step % 50 == 0 or step == steps - 1):
            bar.set_postfix(fvu=f"{hist['fvu'][-1]:.4f}", l0=f"{hist['l0'][-1]:.1f}",
                            dead=f"{hist['dead_frac'][-1]:.2f}")
    return hist


def _fit(
    cls: type[Transcoder], data: Data, n_features: int | None, k: int | None, init: Transcoder | None,
    steps: int, seed: int, device: torch.device | str | None, desc: str, kw: dict[str, Any],
) -> tuple[Transcoder, dict[str, list[float]]]:
    torch.manual_seed(seed)
    if init is not None:  # fine-tune: same weights, same feature indices
        if not isinstance(init, cls):
            raise TypeError(f"init is a {type(init).__name__}, expected a {cls.__name__}")
        model = init.copy()
        kw.setdefault("init_b_dec", False)
    else:
        if n_features is None or k is None:
            raise ValueError("give n_features and k (or init= to fine-tune an existing dictionary)")
        probe = data(2, torch.Generator().manual_seed(seed)) if callable(data) else data
        x, y = _split(probe)
        if cls is SAE:
            if isinstance(probe, tuple | list):
                raise ValueError("an SAE's data is one tensor (its own target); pairs: train_transcoder")
            model = SAE(x.shape[-1], n_features, k, seed=seed)
        else:
            model = Transcoder(x.shape[-1], n_features, k, d_out=y.shape[-1], seed=seed)
    if device is None:  # where the data lives (a callable's batches: CPU unless told)
        device = "cpu" if callable(data) else _split(data)[0].device
    model = model.to(device)
    hist = train_dictionary(model, data, steps, seed=seed, desc=desc, **kw)
    return model, hist


def train_sae(
    data: Data,
    n_features: int | None = None,
    k: int | None = None,
    *,
    steps: int,
    seed: int = 0,
    init: SAE | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    **kw,
) -> tuple[SAE, dict[str, list[float]]]:
    """Train a TopK SAE on activations `data` ([N, d] tensor or `fn(batch_size, g) -> [B, d]`).

    From scratch: give n_features and k. Fine-tune: give `init=` a trained SAE; it is copied (never
    changed) and keeps its feature indices. Other keywords go to `train_dictionary` (batch_size, lr, ...).
    Returns (sae, history).
    """
    return _fit(SAE, data, n_features, k, init, steps, seed, device, "SAE", {"progress": progress, **kw})


def train_transcoder(
    data: Data,
    n_features: int | None = None,
    k: int | None = None,
    *,
    steps: int,
    seed: int = 0,
    init: Transcoder | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    **kw,
) -> tuple[Transcoder, dict[str, list[float]]]:
    """Train a TopK transcoder on (input, target) pairs: a tuple of [N, d_in], [N, d_out] tensors or a
    callable `fn(batch_size, g) -> (x, y)`. b_dec starts at the mean target. Returns (transcoder, history)."""
    return _fit(Transcoder, data, n_features, k, init, steps, seed, device, "transcoder",
                {"progress": progress, **kw})


def steps_to_fvu(history: dict[str, list[float]], target: float, window: int = 1) -> int | None:
    """First step whose training FVU (mean over the last `window` steps) is <= target; None if never."""
    f = history["fvu"]
    for i in range(len(f)):
        lo = max(0, i - window + 1)
        if sum(f[lo : i + 1]) / (i + 1 - lo) <= target:
            return history["step"][i]
    return None
