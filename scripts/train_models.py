"""Train (or load) the shipped artifacts of a chapter in the background: `python scripts/train_models.py ch2`.

Everything goes through circuitbook.zoo, exactly as the notebooks call it, so a notebook run afterwards
only loads. Runs resume from data/scratch/ after an interruption.
"""

from __future__ import annotations

import argparse
import time

import torch

from circuitbook import zoo


def ch1(profile: str) -> None:
    zoo.dense_baseline(profile)


def ch2(profile: str, widths: list[int] | None = None, fractions: list[float] | None = None) -> None:
    for d in widths or zoo.sparse_widths(profile):
        for kept in fractions or zoo.SPARSE_FRACTIONS:
            t0 = time.time()
            _, meta = zoo.sparse_model(profile, kept, d)
            print(f"sparse d={d} kept={kept}: val {meta['metrics']['history'][-1]['val_loss']:.3f} "
                  f"({time.time() - t0:.0f}s)", flush=True)


def ch2_clip(profile: str) -> None:
    for clip in ("none",):  # clipping at RMS 1 alone never acts at our gradient scale: it is the "none" run
        zoo.sparse_model(profile, zoo.clip_demo(profile)["kept"], zoo.clip_demo(profile)["d_model"], clip=clip)


def ch3(profile: str) -> None:
    """Circuit searches for the three tasks (chapter 3's circuits)."""
    for task in zoo.CIRCUIT_TASKS:
        t0 = time.time()
        r = zoo.circuit_search(profile, task)
        print(f"{task}: {r.circuit.summary()} ({time.time() - t0:.0f}s)", flush=True)


def ch3_frontier(profile: str) -> None:
    """The quote task pruned with the base settings (`zoo.prune_config`) on the dense baseline and on every model
    of the chapter-2 family: the frontier, and the dense-vs-sparse comparison."""
    quote, cfg = zoo.CIRCUIT_TASKS[0], zoo.prune_config(profile)
    models = {"dense_baseline": lambda: zoo.dense_baseline(profile)[0]}
    for d in sorted(zoo.sparse_widths(profile), reverse=True):
        for kept in zoo.SPARSE_FRACTIONS:
            models[zoo.sparse_name(kept, d)] = lambda kept=kept, d=d: zoo.sparse_model(profile, kept, d)[0]
    for name, load in models.items():
        t0 = time.time()
        c = zoo.pruned_circuit(profile, load().float(), name, quote, cfg)
        print(f"{name}: {c.summary()} ({time.time() - t0:.0f}s)", flush=True)


def ch4(profile: str) -> None:
    """The bridged pair of chapter 4 (resumes from data/scratch after an interruption)."""
    t0 = time.time()
    *_, meta = zoo.bridged_pair(profile)
    print(f"bridged pair: {meta['metrics']['history'][-1]} ({time.time() - t0:.0f}s)", flush=True)


def ch6(profile: str) -> None:
    """Chapter 6's VLM (resumes from data/scratch after an interruption), then its two transcoder sets."""
    t0 = time.time()
    _, meta = zoo.vlm(profile)
    print(f"vlm: {meta['metrics']['history'][-1]} ({time.time() - t0:.0f}s)", flush=True)
    for kind in ("text", "multimodal"):
        t0 = time.time()
        _, meta = zoo.vlm_transcoders(profile, kind)
        print(f"transcoders {kind}: {meta['metrics']} ({time.time() - t0:.0f}s)", flush=True)


def ch5(profile: str) -> None:
    """Chapter 5's VPD of the dense GPT (resumes from data/scratch after an interruption)."""
    t0 = time.time()
    streams = zoo.token_streams(profile)
    d, _ = zoo.lm_decomposition(zoo.dense_baseline(profile)[0], streams["train"], profile, val_stream=streams["val"],
                                retrain=True)
    print(f"vpd_lm: {d.seconds:.0f}s of training ({time.time() - t0:.0f}s in this call)", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["ch1", "ch2", "ch2_clip", "ch3", "ch3_frontier", "ch4", "ch5", "ch6"])
    ap.add_argument("--profile", default="full")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--widths", type=int, nargs="*")
    ap.add_argument("--fractions", type=float, nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.what == "ch2":
        ch2(a.profile, a.widths, a.fractions)
    else:
        globals()[a.what](a.profile)
