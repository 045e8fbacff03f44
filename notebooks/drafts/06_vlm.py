# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Circuit tracing in a tiny vision-language model
#
# **What you will learn.** How to open up a model that looks at pictures: a small ViT turns an
# image into a few soft tokens, the book's GPT reads them as a prefix and answers questions about
# the picture. We replace each of the GPT's MLPs by a transcoder, freeze attention and norms on one
# input, and read an *attribution graph* off the resulting linear model; we localise image tokens
# with attention rollout; and we edit features to change the answer. Synthetic scenes make every
# step measurable: we know where each object is and how many fingers each hand has.
#
# **What the paper claims** {cite}`vlmcircuits2026`: transcoders trained on text alone explain
# much less of the middle layers than transcoders trained on multimodal data; a visual planet
# feature drives an associated concept with no text in between; swapping Mars features for Earth
# features turns the answer "Mars" into "Earth"; shown a six-fingered hand, the model says 5,
# because a generic "hand" feature drives "5" directly (a prior that overrides perception).
#
# *Draft: the `fit` functions below belong in `circuitbook.zoo` once the chapter settles.*

# %%
# Colab only: fetch the book and install its library (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(["git", "clone", "-q", "--depth", "1", "https://github.com/circuitbook/circuitbook", "/content/cb"],
                   check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/cb"], check=True)
    import os

    os.chdir("/content/cb/notebooks")

# %% tags=["parameters"]
profile = "full"  # "full": the book's result (shipped artifacts); "ci": toy sizes, every code path, minutes
seed = 0
retrain = False

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from circuitbook import artifacts, get_profile, seed_everything, viz, zoo
from circuitbook.config import pick
from circuitbook.data.scenes import make_dataset, preview
from circuitbook.dictionaries import (Intervention, Transcoder, attribute_vlm, evaluate, intervention_hooks,
                                      train_transcoder)
from circuitbook.dictionaries.graph_json import plot_graph
from circuitbook.dictionaries.rollout import attention_rollout, iou, pool_maps, token_maps, upsample
from circuitbook.models.vlm import (VLM, VLMConfig, VLMTrainConfig, answer_accuracy, encode_scenes, mlp_io,
                                   train_vlm, vit_patterns, vlm_from_state)
from circuitbook.results import Claim, claims_table, write_results

prof = get_profile(profile)
seed_everything(seed)
torch.set_num_threads(2)
viz.setup()

# %% [markdown]
# ## Step 1: scenes with ground truth
#
# Planets (Mars red and cratered, Earth blue with green land, Jupiter banded, Neptune deep blue),
# a space shuttle, hands with n fingers, groups of n dots and coloured shapes, each with a question
# or caption and a one-word answer. Hands in training always have five fingers: the prior. Dots come
# in every count from 1 to 9, so counting is learnable. Planet captions often mention the shuttle.

# %%
N_TRAIN, N_TEST = pick(prof, ci=768, full=20_000), pick(prof, ci=128, full=1000)
train_scenes = make_dataset(N_TRAIN, seed=seed, split="train")
test_scenes = make_dataset(N_TEST, seed=seed, split="test")
fig = preview(train_scenes, 16)
plt.show()

# %% [markdown]
# ## Step 2: the model
#
# The ViT cuts a 32 x 32 image into 4 x 4 patches (an 8 x 8 grid), runs a few pre-norm blocks with
# full attention, and averages each 2 x 2 square of patches into one of 16 image tokens; a small MLP
# projects them to the GPT's width. The GPT is the chapter-1 dense baseline, pretrained on Python
# code, which now learns to read the image prefix. Captions use the book's code tokenizer, which
# splits English words into pieces (" Mars" is " M" + "ars"), so answers are judged by their first token.

# %%
tok = zoo.tokenizer(prof)
streams = zoo.token_streams(prof, tok)
dense, _ = zoo.dense_baseline(prof, seed=seed)
N_TEXT = 24  # caption tokens (the longest question, the answer and EOT fit)
vcfg = VLMConfig(image_size=32, patch_size=4, pool=2, lm=dense.cfg,
                 **pick(prof, ci=dict(vit_d_model=32, vit_layers=2, vit_heads=2, vit_d_head=16, vit_d_mlp=128),
                        full=dict(vit_d_model=64, vit_layers=4, vit_heads=4, vit_d_head=16, vit_d_mlp=256)))
tcfg = pick(prof,
            ci=VLMTrainConfig(steps=150, batch_size=16, text_batch_size=4, text_ctx=64, lr=3e-3, lm_lr_mult=0.5,
                              eval_every=50, ckpt_every=50, seed=seed),
            full=VLMTrainConfig(steps=4000, batch_size=32, text_batch_size=8, text_ctx=64, lr=2e-3, lm_lr_mult=0.5,
                                eval_every=250, ckpt_every=100, seed=seed))
train_pairs = encode_scenes(train_scenes, tok, N_TEXT)
test_pairs = encode_scenes(test_scenes, tok, N_TEXT)
vlm_config = {"model": vcfg.to_dict(), "train": tcfg.to_dict(), "n_train": N_TRAIN, "n_text": N_TEXT}


def fit_vlm():
    seed_everything(seed)
    model = VLM(vcfg, lm=zoo.dense_baseline(prof, seed=seed)[0])
    out = train_vlm(model, train_pairs, tcfg, text_tokens=streams["train"], val_pairs=test_pairs,
                    ckpt_dir=zoo.scratch_dir(prof, "vlm"), progress=True)
    hist = [r for r in out["history"] if "val_pair_loss" in r]
    return ({k: v.half() for k, v in model.state_dict().items()},
            {"history": hist, "seconds": out["seconds"], "pairs_per_s": out["pairs_per_s"]})


tensors, vlm_meta = artifacts.load_or_train("vlm", prof, fit_vlm, vlm_config, retrain)
vlm = vlm_from_state(tensors, vcfg).eval()
hist = vlm_meta["metrics"]["history"]
print(f"{vlm.n_params():,} parameters; trained in {vlm_meta['metrics']['seconds'] / 60:.1f} min")
print(f"held-out caption loss {hist[-1]['val_pair_loss']:.3f}, answer accuracy {hist[-1]['val_answer_acc']:.3f}")

# %% [markdown]
# Does the answer come from the picture? The same questions with the images shuffled between scenes:

# %%
perm = torch.randperm(len(test_pairs), generator=torch.Generator().manual_seed(seed))
acc_true = answer_accuracy(vlm, test_pairs)
acc_shuffled = answer_accuracy(vlm, test_pairs, images=test_pairs.images[perm])
print(f"answer accuracy: true images {acc_true:.3f}, shuffled images {acc_shuffled:.3f}")

# %% [markdown]
# ## Step 3: transcoders, text-only versus multimodal
#
# One transcoder per GPT layer reads the MLP's input and predicts its output:
# z = TopK(ReLU(W_enc x + b_enc)), y_hat = W_dec z + b_dec, trained on FVU. Two sets: one on text
# alone (code windows from the corpus), one on a multimodal mix (equal parts code windows and
# image + caption sequences, image-token positions included). The test: FVU at the *image-token*
# positions of held-out scenes, layer by layer.

# %%
L = vlm.cfg.lm.n_layers
D = vlm.cfg.lm.d_model
N_FEAT, K = pick(prof, ci=8 * D, full=16 * D), pick(prof, ci=8, full=16)  # the paper: 32x wide, k = 48
TC_STEPS = pick(prof, ci=300, full=3000)
n_act = pick(prof, ci=256, full=4000)  # sequences of each kind


def text_windows(n: int, split: str, ctx: int = 32, offset: int = 0) -> torch.Tensor:
    s = streams[split]
    starts = np.linspace(offset, len(s) - ctx - 1, n).astype(np.int64)
    return torch.from_numpy(np.stack([s[i : i + ctx] for i in starts]).astype(np.int64))


def flat(d: dict, layer: int, pos: slice = slice(None)) -> torch.Tensor:
    return d[layer][:, pos].reshape(-1, D)


def fit_transcoders(kind: str):
    seed_everything(seed)
    xt, yt, _ = mlp_io(vlm, None, text_windows(n_act, "train"), range(L))
    if kind == "multimodal":
        sc = make_dataset(n_act, seed=seed, split="transcoder")
        pairs = encode_scenes(sc, tok, N_TEXT)
        xm, ym, _ = mlp_io(vlm, pairs.images, pairs.tokens, range(L))
    tensors, metrics = {}, {}
    for layer in range(L):
        x, y = flat(xt, layer), flat(yt, layer)
        if kind == "multimodal":  # equal numbers of text and multimodal positions
            xi, yi = flat(xm, layer), flat(ym, layer)
            n = min(len(x), len(xi))
            x, y = torch.cat([x[:n], xi[:n]]), torch.cat([y[:n], yi[:n]])
        tc, h = train_transcoder((x, y), N_FEAT, K, steps=TC_STEPS, seed=seed + layer, batch_size=512,
                                 progress=False)
        tensors |= {f"l{layer}.{k}": v.half() for k, v in tc.to_tensors().items()}
        metrics[f"l{layer}_train_fvu"] = float(np.mean(h["fvu"][-20:]))
    return tensors, metrics


def load_transcoders(kind: str) -> list[Transcoder]:
    config = {"kind": kind, "n_features": N_FEAT, "k": K, "steps": TC_STEPS, "n_act": n_act, "vlm": vlm_config}
    t, _ = artifacts.load_or_train(f"vlm_transcoders_{kind}", prof, lambda: fit_transcoders(kind), config, retrain)
    cfg = {"kind": "Transcoder", "d_in": D, "d_out": D, "n_features": N_FEAT, "k": K}
    return [Transcoder.from_tensors({k[len(f"l{la}."):]: v for k, v in t.items() if k.startswith(f"l{la}.")}, cfg)
            for la in range(L)]


tcs = {kind: load_transcoders(kind) for kind in ("text", "multimodal")}

# %%
xe, ye, n_img = mlp_io(vlm, test_pairs.images, test_pairs.tokens, range(L))
xte, yte, _ = mlp_io(vlm, None, text_windows(pick(prof, ci=64, full=500), "val"), range(L))
fvus = {kind: {"image": [], "caption": [], "code": []} for kind in tcs}
for kind, ts in tcs.items():
    for layer in range(L):
        for where, (x, y) in {"image": (flat(xe, layer, slice(0, n_img)), flat(ye, layer, slice(0, n_img))),
                              "caption": (flat(xe, layer, slice(n_img, None)), flat(ye, layer, slice(n_img, None))),
                              "code": (flat(xte, layer), flat(yte, layer))}.items():
            fvus[kind][where].append(evaluate(ts[layer], (x, y), n_batches=1)["fvu"])
fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
for ax, where in zip(axes, ("image", "caption", "code")):
    for kind in tcs:
        ax.plot(range(L), fvus[kind][where], "o-", label=f"trained on {kind}")
    ax.set(title=f"held-out {where} positions", xlabel="layer", xticks=range(L))
axes[0].set_ylabel("FVU")
axes[0].legend()
plt.show()
mid = L // 2
l0 = float(np.mean([evaluate(t, (flat(xe, la), flat(ye, la)), n_batches=1)["l0"]
                    for la, t in enumerate(tcs["multimodal"])]))
print(f"middle layer {mid}, image positions: FVU text-only {fvus['text']['image'][mid]:.3f}, "
      f"multimodal {fvus['multimodal']['image'][mid]:.3f}; mean L0 {l0:.1f}")

# %% [markdown]
# ## Step 4: an attribution graph for "This is the planet" on a Mars image
#
# On one input, every attention pattern and norm scale is frozen and each MLP is replaced by its
# transcoder plus an error node, so the model is linear from its sources (image tokens, text
# tokens, active features, errors) to its targets (feature pre-activations, logits). One backward
# pass per target gives its incoming edges A[t, s] = a_s w_{s -> t}; what is left is the bias terms.
# Completeness is the check: every target's value is the sum of its incoming edges plus its bias.

# %%
mars = make_dataset(pick(prof, ci=16, full=100), seed=seed, split="mars", kinds=("planet",), planets=("mars",),
                    p_shuttle=0, templates={"planet": [("This is the planet|Mars", 1.0)]})
earth = make_dataset(len(mars), seed=seed, split="earth", kinds=("planet",), planets=("earth",), p_shuttle=0,
                     templates={"planet": [("This is the planet|Earth", 1.0)]})
prompt = torch.tensor(tok.encode("This is the planet"))
M_ID, E_ID = tok.encode(" Mars")[0], tok.encode(" Earth")[0]
t0 = time.perf_counter()
targets = [M_ID, E_ID]  # the answer's first token, Mars first (the graph's target logit), and Earth
graph = attribute_vlm(vlm, mars.images[0], prompt, tcs["multimodal"], logit_tokens=targets,
                      token_strings=lambda t: tok.decode([t]))
graph_seconds = time.perf_counter() - t0
graph64 = attribute_vlm(vlm, mars.images[0], prompt, tcs["multimodal"], logit_tokens=targets, dtype=torch.float64)
completeness = float(graph64.completeness_error().max())
print(f"{len(graph.nodes)} nodes ({graph.n_features} active features) in {graph_seconds:.2f} s")
print(f"completeness, worst target: float32 {float(graph.completeness_error().max()):.1e} of its value "
      f"({float(graph.completeness_error('terms').max()):.1e} of its terms); float64 {completeness:.1e}")
print("target logits:", [(tok.decode([t]), round(float(p), 3)) for t, p in zip(graph.logit_tokens, graph.logit_probs)])
gj = graph.to_json("mars-this-is-the-planet", "<image> This is the planet")
print(f"pruned graph: {len(gj['nodes'])} nodes, {len(gj['links'])} links")
plot_graph(gj).show()

# %% [markdown]
# The features that push the answer " M" most, directly:

# %%


def top_direct(g, token_id: int, text: torch.Tensor, n: int = 8) -> None:
    """The features with the largest direct edges into one logit, and where they sit."""
    row = g.slices()["logits"].start + g.logit_tokens.tolist().index(token_id)
    direct = g.adjacency[row, : g.n_features]
    for k in direct.argsort(descending=True)[:n].tolist():
        layer, pos, f = g.features[k].tolist()
        where = "image" if pos < n_img else repr(tok.decode([int(text[pos - n_img])]))
        print(f"layer {layer} feature {f:5d} at {where:>8} (pos {pos:2d}): edge {float(direct[k]):+.3f}")
    sl = g.slices()
    inputs = g.adjacency[row, sl["inputs"]]
    print(f"direct from inputs: image tokens {float(inputs[:n_img].sum()):+.3f}, "
          f"text {float(inputs[n_img:].sum()):+.3f}")


top_direct(graph, M_ID, prompt)

# %% [markdown]
# ## Step 5: attention rollout on the ViT
#
# For each held-out planet scene: which image token does the answer read from (the GPT's attention
# from the last prompt position to the image tokens, averaged over layers and heads), and where in
# the picture does that token draw from? Rollout multiplies the last K layers' (focused heads, plus
# identity, renormalised) patterns; the baseline uses the last layer's mean attention alone.

# %%
planets = make_dataset(pick(prof, ci=32, full=300), seed=seed, split="rollout", kinds=("planet",), p_shuttle=0,
                       templates={"planet": [("This is the planet|{Planet}", 1.0)]})
pp = encode_scenes(planets, tok, N_TEXT)
with torch.no_grad():
    _, cache = vlm.run_with_cache(pp.images, pp.tokens,
                                  names_filter=lambda n: n.startswith("lm.") and n.endswith("hook_pattern"))
lm_att = torch.stack([cache[f"lm.blocks.{la}.attn.hook_pattern"] for la in range(L)])  # [L, B, H, S, S]
q_pos = n_img + pp.answer_pos  # [B]
att = lm_att.permute(1, 0, 2, 3, 4)  # [B, L, H, S, S]
w_img = att[torch.arange(len(pp)), :, :, q_pos, :n_img].mean((1, 2))  # [B, n_img]
w_img = w_img / w_img.sum(-1, keepdim=True)
pats = vit_patterns(vlm, pp.images)  # [Lv, B, Hv, P, P]
g, P, K_ROLL = vlm.cfg.grid, vlm.cfg.n_patches, min(4, vlm.cfg.vit_layers)


def image_token_maps(R: torch.Tensor) -> torch.Tensor:
    """R [P, P] -> the map of every image token at image resolution [n_img, 32, 32]."""
    every = token_maps(R, range(P), (g, g))  # [P, g, g]
    return upsample(pool_maps(every.reshape(g, g, g, g), vlm.cfg.pool), 32)


ious, base_ious, maps = [], [], []
for i in range(len(pp)):
    roll = image_token_maps(attention_rollout(pats[:, i], last_k=K_ROLL, q=0.3))
    base = image_token_maps(attention_rollout(pats[-1:, i], last_k=1, q=1.0, add_identity=False))
    hm_r = (w_img[i][:, None, None] * roll).sum(0)
    hm_b = (w_img[i][:, None, None] * base).sum(0)
    mask = planets.masks[i]["planet"]
    ious.append(iou(hm_r, mask))
    base_ious.append(iou(hm_b, mask))
    maps.append((hm_r, hm_b, mask))
rollout_iou, baseline_iou = float(np.mean(ious)), float(np.mean(base_ious))
print(f"IoU with the planet mask: rollout {rollout_iou:.3f}, last-layer attention {baseline_iou:.3f}")
fig, axes = plt.subplots(3, 6, figsize=(10, 5))
for j in range(6):
    hm_r, hm_b, mask = maps[j]
    for ax, im in zip(axes[:, j], (planets.images[j].permute(1, 2, 0), hm_r, hm_b)):
        ax.imshow(im, interpolation="nearest")
        ax.axis("off")
    axes[0, j].contour(mask.numpy(), levels=[0.5], colors="w", linewidths=0.8)
for ax, t in zip(axes[:, 0], ("image", "rollout", "last layer")):
    ax.set_title(t, fontsize=8, loc="left")
plt.show()

# %% [markdown]
# ## Step 6: Mars to Earth by editing features
#
# Features that separate Mars from Earth at the image-token positions (mean activation on Mars
# images minus on Earth images), at the middle layer: suppress the Mars ones (set to 0) and inject
# the Earth ones (set to their mean Earth value), at every image position, h <- h + (v - z) d.

# %%
n_swap = pick(prof, ci=4, full=8)
mars_p = encode_scenes(mars, tok, N_TEXT)
earth_p = encode_scenes(earth, tok, N_TEXT)
tcm = tcs["multimodal"][mid]
with torch.no_grad():
    zm = tcm.encode(mlp_io(vlm, mars_p.images, mars_p.tokens, [mid])[0][mid][:, :n_img])  # [B, n_img, F]
    ze = tcm.encode(mlp_io(vlm, earth_p.images, earth_p.tokens, [mid])[0][mid][:, :n_img])
diff = zm.mean((0, 1)) - ze.mean((0, 1))
mars_feats, earth_feats = diff.topk(n_swap).indices.tolist(), (-diff).topk(n_swap).indices.tolist()
ivs = [Intervention(mid, p, f, 0.0) for p in range(n_img) for f in mars_feats]
ivs += [Intervention(mid, p, f, float(ze[:, p, f].mean())) for p in range(n_img) for f in earth_feats]
hooks = intervention_hooks(tcs["multimodal"], ivs, prefix="lm.")
b = torch.arange(len(mars_p))
with torch.no_grad():
    before = vlm(mars_p.images, mars_p.tokens)[b, mars_p.answer_pos].argmax(-1)
    after = vlm.run_with_hooks(mars_p.images, mars_p.tokens, fwd_hooks=hooks)[b, mars_p.answer_pos].argmax(-1)
mars_before = float((before == M_ID).float().mean())
flip_rate = float(((before == M_ID) & (after == E_ID)).sum() / (before == M_ID).sum().clamp_min(1))
print(f"Mars answered ' M' before: {mars_before:.2f}; of those, now ' E': {flip_rate:.2f}")

# %% [markdown]
# ## Step 7: the six-fingered hand
#
# Training hands always have five fingers. How many does the model see on hands with 4, 5 and 6,
# and how well does it count dots it has seen in every number?

# %%
digits = {n: tok.encode(f" {n}")[0] for n in range(1, 10)}
hand_answers = {}
for n in (4, 5, 6):
    h = make_dataset(pick(prof, ci=32, full=300), seed=seed, split=f"hand{n}", kinds=("hand",), fingers=n,
                     templates={"hand": [("How many fingers?|{n}", 1.0)]})
    hp = encode_scenes(h, tok, N_TEXT)
    with torch.no_grad():
        logits = vlm(hp.images, hp.tokens)[torch.arange(len(hp)), hp.answer_pos][:, list(digits.values())]
    hand_answers[n] = torch.bincount(logits.argmax(-1), minlength=9).float() / len(hp)  # share answering 1..9
dots = make_dataset(pick(prof, ci=64, full=900), seed=seed, split="dots_test", kinds=("dots",),
                    templates={"dots": [("How many dots?|{n}", 1.0)]})
dp = encode_scenes(dots, tok, N_TEXT)
dot_count_acc = answer_accuracy(vlm, dp)
six_says_five = float(hand_answers[6][4])
fig, ax = plt.subplots(figsize=(6, 2.6))
for n, share in hand_answers.items():
    ax.plot(range(1, 10), share.numpy(), "o-", label=f"{n} fingers")
ax.set(xlabel="answer", ylabel="share of hands", xticks=range(1, 10))
ax.legend()
plt.show()
print(f"six-fingered hands answered 5: {six_says_five:.2f}; dot counting accuracy {dot_count_acc:.2f}")

# %% [markdown]
# Where does the "5" come from on a six-fingered hand? The graph of one such hand, target " 5":

# %%
six = make_dataset(1, seed=seed, split="hand6", kinds=("hand",), fingers=6)
question = torch.tensor(tok.encode("How many fingers?"))
graph6 = attribute_vlm(vlm, six.images[0], question, tcs["multimodal"], logit_tokens=[digits[5], digits[6]],
                       token_strings=lambda t: tok.decode([t]))
top_direct(graph6, digits[5], question)

# %% [markdown]
# ## Claims

# %%
fvu_t, fvu_m = fvus["text"]["image"][mid], fvus["multimodal"]["image"][mid]
claims = [
    Claim("fvu_text_only_mid", f"FVU of the text-only transcoder at layer {mid}, image positions", round(fvu_t, 4),
          target="report"),
    Claim("fvu_multimodal_mid", f"FVU of the multimodal transcoder at layer {mid}, image positions",
          round(fvu_m, 4), target="report"),
    Claim("multimodal_fvu_lower", "the multimodal transcoder leaves less variance unexplained there",
          fvu_m < fvu_t, paper="holds", target="holds", holds=fvu_m < fvu_t),
    Claim("transcoder_l0", "mean active features per position (multimodal transcoders)", round(l0, 2),
          target="report"),
    Claim("rollout_iou", "IoU of the rollout heatmap with the planet mask", round(rollout_iou, 4),
          target="> baseline_iou", holds=rollout_iou > baseline_iou),
    Claim("baseline_iou", "IoU of last-layer mean attention with the planet mask", round(baseline_iou, 4),
          target="report"),
    Claim("mars_to_earth_flip_rate", "Mars answers turned into Earth by the feature swap", round(flip_rate, 4),
          paper="flips", target=">= 0.8", holds=flip_rate >= 0.8),
    Claim("six_finger_answers_five_rate", "six-fingered hands answered 5", round(six_says_five, 4),
          paper="answers 5", target="report"),
    Claim("dot_count_acc", "dot counting accuracy (held-out scenes)", round(dot_count_acc, 4), target=">= 0.8",
          holds=dot_count_acc >= 0.8),
    Claim("attribution_graph_seconds", "seconds for one attribution graph", round(graph_seconds, 3),
          target="<= 5", holds=graph_seconds <= 5),
    Claim("attribution_completeness_err", "worst |value - sum of incoming edges - bias| / |value| (float64)",
          completeness, target="<= 1e-4", holds=completeness <= 1e-4),
]
results = write_results("06_vlm", prof, claims)
claims_table(results)
