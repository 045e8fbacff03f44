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
# **What you will learn.** How to open up a model that looks at pictures. A small ViT turns an
# image into a few soft tokens, the book's GPT reads them as a prefix and answers questions about
# the picture. We replace each of the GPT's MLPs by a *transcoder*, freeze attention and norms on
# one input, and read an *attribution graph* off the resulting linear model; we localise image
# tokens with *attention rollout*; and we edit features to change the answer. Synthetic scenes make
# every step measurable: we know where each object is and how many fingers each hand has.
#
# **What the paper claims** {cite}`vlmcircuits2026`, on Gemma-3-4B with a SigLIP encoder:
# transcoders trained on text alone explain much less of the middle layers than transcoders trained
# on multimodal data; a visual planet feature drives an associated concept with no text in between;
# suppressing the Mars features and injecting Earth's turns the answer "Mars" into "Earth"; shown a
# six-fingered hand, the model says 5, because a generic "hand" feature drives "5" directly, a
# prior that overrides perception. We rebuild each step at toy scale and measure it.

# %%
# Colab only: clone the book, install its library into this kernel (no restart), work in its notebooks/.
# Elsewhere this cell does nothing. The URL is _config.yml's (a fork: python scripts/set_repo_url.py URL).
import sys

if "google.colab" in sys.modules:
    import os
    import runpy
    import subprocess

    _cb = os.environ.get("CIRCUITBOOK_CLONE_DIR", "/content/cb")
    if not os.path.isdir(_cb):
        _url = os.environ.get("CIRCUITBOOK_REPO_URL", "https://github.com/circuitbook/circuitbook")
        subprocess.run(["git", "clone", "-q", "--depth", "1", _url, _cb], check=True)
    runpy.run_path(f"{_cb}/scripts/colab_install.py", run_name="__main__")
    os.chdir(f"{_cb}/notebooks")

# %% tags=["parameters"]
profile = "full"  # "full": the book's result (shipped artifacts); "ci": toy sizes, every code path, minutes
seed = 0
retrain = False

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from circuitbook import get_profile, seed_everything, set_threads, viz, zoo
from circuitbook.config import pick
from circuitbook.data.scenes import preview
from circuitbook.dictionaries import attribute_vlm, evaluate, intervention_hooks
from circuitbook.dictionaries.graph_json import merge_supernodes, plot_graph, validate_graph_json
from circuitbook.dictionaries.rollout import attention_rollout, iou, pool_maps, token_maps, upsample
from circuitbook.dictionaries.swap import random_control_features, random_control_hooks, swap_interventions
from circuitbook.models.vlm import answer_accuracy, encode_scenes, mlp_io, pairs_sha256, vit_patterns
from circuitbook.results import Claim, claims_table, write_results

prof = get_profile(profile)
seed_everything(seed)
set_threads(at_most=1)  # one core; the machine is shared
viz.setup()

# %% [markdown]
# ## Step 1: scenes with ground truth
#
# Planets (Mars red and cratered, Earth blue with green land, Jupiter banded, Neptune deep blue),
# a space shuttle, hands with n fingers, groups of n dots and coloured shapes, each with a question
# or caption and a one-word answer. Hands in training always have five fingers: the prior. Dots come
# in every count from 1 to 6, so counting is learnable and the model has seen every answer a
# four-, five- or six-fingered hand could get. Planet captions often mention the shuttle
# ("A shuttle flies to Mars", "Mars is visited by the shuttle"), so an association can form.

# %%
# NBVAL_CHECK_OUTPUT
vcfg, tcfg, data_cfg = zoo.vlm_configs(prof)
tok = zoo.tokenizer(prof)
N_TEXT = data_cfg.n_text
print("training mix (planet, shuttle, hand, dots, shape):", list(data_cfg.kind_weights),
      f"of {data_cfg.n_train:,} scenes; dot counts {list(data_cfg.dot_counts)}")
test_scenes = zoo.vlm_scenes(prof, "test", pick(prof, ci=128, full=1000), seed)
fig = preview(test_scenes, 16)
plt.show()

# %% [markdown]
# ## Step 2: the model
#
# The ViT cuts a 32 x 32 image into 4 x 4 patches (an 8 x 8 grid), runs a few pre-norm blocks with
# full attention, and averages each 2 x 2 square of patches into one of 16 image tokens; a small MLP
# projects them to the GPT's width. The GPT is the chapter-1 dense baseline, pretrained on Python
# code, which now learns to read the image prefix (at half the ViT's learning rate), trained on the
# answers while it keeps reading code windows so it stays a code model. Captions use the book's
# code tokenizer, which splits English words into pieces (" Mars" is " M" + "ars"), so answers are
# judged by their first token.

# %%
vlm, vlm_meta = zoo.vlm(prof, seed=seed, retrain=retrain)
hist = vlm_meta["metrics"]["history"]
evals = [r for r in hist if "val_answer_acc" in r]
print(f"{vlm.n_params():,} parameters ({sum(p.numel() for p in vlm.vit.parameters()):,} in the ViT); "
      f"trained {tcfg.steps} steps in {vlm_meta['metrics']['seconds'] / 60:.1f} min")
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
axes[0].plot([r["step"] for r in hist], [r["pair_loss"] for r in hist], lw=0.8, label="answer loss (train)")
axes[0].plot([r["step"] for r in evals], [r["val_pair_loss"] for r in evals], "o-", label="answer loss (held out)")
if "text_loss" in hist[0]:
    axes[0].plot([r["step"] for r in hist], [r["text_loss"] for r in hist], lw=0.8, label="code loss")
axes[0].set(xlabel="step", ylabel="loss")
axes[0].legend(fontsize=8)
axes[1].plot([r["step"] for r in evals], [r["val_answer_acc"] for r in evals], "o-")
axes[1].set(xlabel="step", ylabel="held-out answer accuracy", ylim=(0, 1))
plt.show()

# %% [markdown]
# Does the answer come from the picture? Accuracy per kind of scene, with the true images and with
# the images shuffled between scenes (same questions). Questions whose answer the text already gives
# away ("This is a space ... shuttle") stay right with the wrong picture; the rest should not.

# %%
# NBVAL_CHECK_OUTPUT
test_pairs = encode_scenes(test_scenes, tok, N_TEXT)
perm = torch.randperm(len(test_pairs), generator=torch.Generator().manual_seed(seed))
with torch.no_grad():
    b = torch.arange(len(test_pairs))
    pred = vlm(test_pairs.images, test_pairs.tokens)[b, test_pairs.answer_pos].argmax(-1).cpu()
    pred_shuf = vlm(test_pairs.images[perm], test_pairs.tokens)[b, test_pairs.answer_pos].argmax(-1).cpu()
kinds = np.array([a["kind"] for a in test_scenes.attrs])
print(f"{'kind':8} {'n':>5} {'true image':>11} {'shuffled':>9}")
for k in dict.fromkeys(kinds):
    m = torch.from_numpy(kinds == k)
    print(f"{k:8} {int(m.sum()):5d} {float((pred == test_pairs.answer_ids)[m].float().mean()):11.3f} "
          f"{float((pred_shuf == test_pairs.answer_ids)[m].float().mean()):9.3f}")
acc_true = float((pred == test_pairs.answer_ids).float().mean())
acc_shuffled = float((pred_shuf == test_pairs.answer_ids).float().mean())
print(f"all      {len(kinds):5d} {acc_true:11.3f} {acc_shuffled:9.3f}")

# %% [markdown]
# ## Step 3: transcoders, text-only versus multimodal
#
# One transcoder per GPT layer reads the MLP's input and predicts its output:
# $z = \mathrm{TopK}(\mathrm{ReLU}(W_\text{enc} x + b_\text{enc}))$, $\hat y = W_\text{dec} z + b_\text{dec}$,
# $b_\text{dec}$ initialised to the mean MLP output, trained on the fraction of variance unexplained,
# FVU $= \sum (y - \hat y)^2 / \sum (y - \bar y)^2$. Two sets: one trained on text alone (code windows
# from the corpus), one on a multimodal mix (equal numbers of code positions and image + caption
# positions, the image-token positions included). The test the paper makes: FVU on the *image-token*
# positions of held-out scenes, layer by layer (and on captions and code for comparison).

# %%
# NBVAL_CHECK_OUTPUT
L, D = vlm.cfg.lm.n_layers, vlm.cfg.lm.d_model
n_img = vlm.n_img
tc_cfg = zoo.vlm_transcoder_configs(prof)
tcs, tc_meta = {}, {}
for kind in ("text", "multimodal"):
    tcs[kind], tc_meta[kind] = zoo.vlm_transcoders(prof, kind, seed=seed, retrain=retrain)
print(f"{L} layers x {tc_cfg.n_features} features, k = {tc_cfg.k}, {tc_cfg.steps} steps each")

xe, ye, _ = mlp_io(vlm, test_pairs.images, test_pairs.tokens, range(L))
code = zoo.text_windows(prof, pick(prof, ci=64, full=500), "val", tc_cfg.text_ctx)
xc, yc, _ = mlp_io(vlm, None, code, range(L))
where_slices = {"image": slice(0, n_img), "caption": slice(n_img, None)}
fvus = {kind: {"image": [], "caption": [], "code": []} for kind in tcs}
for kind, ts in tcs.items():
    for layer in range(L):
        for where, sl in where_slices.items():
            x, y = xe[layer][:, sl].reshape(-1, D), ye[layer][:, sl].reshape(-1, D)
            if where == "caption":  # real caption tokens only (not the EOT padding)
                keep = (test_pairs.tokens != tok.eot_id).flatten() | test_pairs.loss_mask.flatten()
                x, y = x[keep], y[keep]
            fvus[kind][where].append(evaluate(ts[layer], (x, y))["fvu"])
        x, y = xc[layer].reshape(-1, D), yc[layer].reshape(-1, D)
        fvus[kind]["code"].append(evaluate(ts[layer], (x, y))["fvu"])
fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
for ax, where in zip(axes, ("image", "caption", "code")):
    for kind in tcs:
        ax.plot(range(L), fvus[kind][where], "o-", label=f"trained on {kind}")
    ax.set(title=f"held-out {where} positions", xlabel="layer", xticks=range(L), yscale="log")
axes[0].set_ylabel("FVU")
axes[0].legend()
plt.show()
mid = L // 2
fvu_text_mid, fvu_mm_mid = fvus["text"]["image"][mid], fvus["multimodal"]["image"][mid]
l0 = float(np.mean([evaluate(t, (xe[la].reshape(-1, D), ye[la].reshape(-1, D)))["l0"]
                    for la, t in enumerate(tcs["multimodal"])]))
print(f"middle layer {mid}, image positions: FVU text-only {fvu_text_mid:.3f}, multimodal {fvu_mm_mid:.3f}; "
      f"mean L0 {l0:.1f} active features per position")

# %% [markdown]
# ## Step 4: an attribution graph for "This is the planet" on a Mars image
#
# On one input, every attention pattern and norm scale is frozen and each MLP is replaced by its
# transcoder plus an error node, so the model is linear from its sources (image tokens, text
# tokens, active features, errors) to its targets (feature pre-activations, logits). One backward
# pass per target gives its incoming edges $A[t, s] = a_s w_{s \to t}$; what is left is the bias
# terms. Completeness is the check: every target's value is the sum of its incoming edges plus its
# bias. This is the circuit-tracing recipe {cite}`ameisen2025circuit`. The graph is pruned by influence
# (80% of nodes, 98% of edges, as circuit-tracer does) and
# exported in circuit-tracer's JSON format.

# %%
mars = zoo.vlm_scenes(prof, "mars", pick(prof, ci=16, full=100), seed, kinds=("planet",), planets=("mars",),
                      p_shuttle=0, templates={"planet": [("This is the planet|Mars", 1.0)]})
earth = zoo.vlm_scenes(prof, "earth", len(mars), seed, kinds=("planet",), planets=("earth",), p_shuttle=0,
                       templates={"planet": [("This is the planet|Earth", 1.0)]})
prompt = torch.tensor(tok.encode("This is the planet"))
M_ID, E_ID = tok.encode(" Mars")[0], tok.encode(" Earth")[0]
targets = [M_ID, E_ID]  # the answer's first token: Mars (the graph's target logit), and Earth
attribute_vlm(vlm, mars.images[0], prompt, tcs["multimodal"], logit_tokens=targets)  # warm-up (first-call costs)
t0 = time.perf_counter()
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
validate_graph_json(gj)
print(f"pruned graph: {len(gj['nodes'])} nodes, {len(gj['links'])} links")

# %% [markdown]
# The pruned graph, with its feature nodes grouped into supernodes by where they sit: features at
# image-token positions ("visual") and at text positions, per layer. Hover for node details.

# %%


def supernode_groups(gj: dict) -> list[list[str]]:
    """[name, node_id, ...] groups: feature nodes by layer and by image vs text position."""
    groups: dict[str, list[str]] = {}
    for n in gj["nodes"]:
        if n["feature_type"] == "cross layer transcoder":
            name = f"{'visual' if n['ctx_idx'] < n_img else 'text'} L{n['layer']}"
            groups.setdefault(name, []).append(n["node_id"])
    return [[k, *v] for k, v in groups.items()]


merged = merge_supernodes(gj, supernode_groups(gj))
plot_graph(merged, title="This is the planet -> ' M' (Mars image), features grouped").show()

# %% [markdown]
# The features that push the answer " M" most, directly, and how much of the logit comes straight
# from the inputs:

# %%
# NBVAL_CHECK_OUTPUT


def top_direct(g, token_id: int, text: torch.Tensor, n: int = 8) -> dict:
    """Print the features with the largest direct edges into one logit; return the sums by source kind."""
    sl = g.slices()
    row = sl["logits"].start + g.logit_tokens.tolist().index(token_id)
    direct = g.adjacency[row, : g.n_features]
    for k in direct.argsort(descending=True)[:n].tolist():
        layer, pos, f = g.features[k].tolist()
        where = "image" if pos < n_img else repr(tok.decode([int(text[pos - n_img])]))
        print(f"layer {layer} feature {f:5d} at {where:>8} (pos {pos:2d}): edge {float(direct[k]):+.3f}")
    img_feat = g.features[:, 1] < n_img
    sums = {"image-position features": float(direct[img_feat].sum()),
            "text-position features": float(direct[~img_feat].sum()),
            "errors": float(g.adjacency[row, sl["errors"]].sum()),
            "image tokens": float(g.adjacency[row, sl["inputs"]][:n_img].sum()),
            "text tokens": float(g.adjacency[row, sl["inputs"]][n_img:].sum()),
            "bias": float(g.bias[row])}
    print("direct contributions: " + ", ".join(f"{k} {v:+.2f}" for k, v in sums.items()))
    return sums


_ = top_direct(graph, M_ID, prompt)

# %% [markdown]
# ### The planet -> shuttle association
#
# The paper finds a visual planet feature that drives a feature of an associated object that is not
# in the picture. Our captions pair planets with the shuttle. Call a multimodal-transcoder feature a
# *shuttle feature* if it is among the most shuttle-specific at the image positions of
# shuttle-only scenes (mean activation on shuttles minus on planets, dots, hands and shapes). Do Mars
# images, with no shuttle drawn, switch shuttle features on more than scenes of dots, hands and shapes
# do? We look at the *text* positions of "This is the planet", where an association would have to
# arrive, at every layer.

# %%
n_assoc = pick(prof, ci=32, full=200)
shuttles = zoo.vlm_scenes(prof, "assoc_shuttle", n_assoc, seed, kinds=("shuttle",))
others = zoo.vlm_scenes(prof, "assoc_other", n_assoc, seed, kinds=("hand", "dots", "shape"),
                        kind_weights=(1, 1, 1))
planets_ns = zoo.vlm_scenes(prof, "assoc_planet", n_assoc, seed, kinds=("planet",), p_shuttle=0)


def feature_means(scenes, text: str, layers=range(L), positions: slice = slice(None)) -> dict[int, torch.Tensor]:
    """Mean multimodal-transcoder activations per layer over scenes x positions, with `text` as the prompt."""
    tokens = torch.tensor(tok.encode(text))[None].expand(len(scenes), -1)
    xs, _, _ = mlp_io(vlm, scenes.images, tokens, list(layers))
    return {la: tcs["multimodal"][la].encode(xs[la][:, positions]).mean((0, 1)) for la in layers}


def text_pos_means(scenes) -> dict[int, torch.Tensor]:
    return feature_means(scenes, "This is the planet", positions=slice(n_img, None))


n_top = 8
assoc = {}
with torch.no_grad():
    shut_img = feature_means(shuttles, "This is a space", positions=slice(0, n_img))
    rest_img = {la: (feature_means(others, "This is a space", positions=slice(0, n_img))[la]
                     + feature_means(planets_ns, "This is a space", positions=slice(0, n_img))[la]) / 2
                for la in range(L)}
    on_mars, on_other = text_pos_means(mars), text_pos_means(others)
    for la in range(L):
        feats = (shut_img[la] - rest_img[la]).topk(n_top).indices
        assoc[la] = (float(on_mars[la][feats].sum()), float(on_other[la][feats].sum()))
print("top shuttle features (from shuttle images), summed activation at the text positions of 'This is the planet':")
for la, (m, o) in assoc.items():
    print(f"  layer {la}: Mars images {m:.3f}, dots/hands/shapes {o:.3f}")
assoc_ratio = float(np.mean([m / max(o, 1e-6) for m, o in assoc.values()]))

# %% [markdown]
# ## Step 5: attention rollout on the ViT
#
# Attention rollout {cite}`abnar2020rollout`, in the paper's variant. For each held-out planet scene:
# which image tokens does the answer read from (the GPT's attention from the last prompt position
# to the image tokens, averaged over layers and heads), and where in the picture does each of those
# tokens draw from? Rollout multiplies the last K ViT layers'
# patterns (per layer: the 30% most focused heads, averaged, plus the identity, rows renormalised);
# each pooled image token's map is the max over its four patches' rows, upsampled to 32 x 32 with
# no smoothing. The baseline uses the last ViT layer's mean attention alone. The score is the IoU
# of the heatmap's top region (as large as the planet) with the planet's true mask.

# %%
# NBVAL_CHECK_OUTPUT
rollout_scenes = zoo.vlm_scenes(prof, "rollout", pick(prof, ci=32, full=300), seed, kinds=("planet",), p_shuttle=0,
                                templates={"planet": [("This is the planet|{Planet}", 1.0)]})
pp = encode_scenes(rollout_scenes, tok, N_TEXT)
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
size = vlm.cfg.image_size


def image_token_maps(R: torch.Tensor) -> torch.Tensor:
    """R [P, P] -> the map of every image token at image resolution [n_img, size, size]."""
    every = token_maps(R, range(P), (g, g))  # [P, g, g]
    return upsample(pool_maps(every.reshape(g, g, g, g), vlm.cfg.pool), size)


ious, base_ious, maps = [], [], []
for i in range(len(pp)):
    roll = image_token_maps(attention_rollout(pats[:, i], last_k=K_ROLL, q=0.3))
    base = image_token_maps(attention_rollout(pats[-1:, i], last_k=1, q=1.0, add_identity=False))
    hm_r = (w_img[i][:, None, None] * roll).sum(0)
    hm_b = (w_img[i][:, None, None] * base).sum(0)
    mask = rollout_scenes.masks[i]["planet"]
    ious.append(iou(hm_r, mask))
    base_ious.append(iou(hm_b, mask))
    maps.append((hm_r, hm_b, mask))
rollout_iou, baseline_iou = float(np.mean(ious)), float(np.mean(base_ious))
print(f"IoU with the planet mask over {len(pp)} held-out scenes: rollout {rollout_iou:.3f}, "
      f"last-layer attention {baseline_iou:.3f}; rollout better on {np.mean(np.array(ious) > base_ious):.0%}")
fig, axes = plt.subplots(3, 8, figsize=(12, 4.8))
for j in range(8):
    hm_r, hm_b, mask = maps[j]
    for ax, im in zip(axes[:, j], (rollout_scenes.images[j].permute(1, 2, 0), hm_r, hm_b)):
        ax.imshow(im.cpu(), interpolation="nearest")
        ax.contour(mask.numpy(), levels=[0.5], colors="w", linewidths=0.8)
        ax.axis("off")
for ax, t in zip(axes[:, 0], ("image", "rollout", "last layer")):
    ax.set_title(t, fontsize=8, loc="left")
plt.show()

# %% [markdown]
# ## Step 6: Mars to Earth by editing features
#
# Which features separate Mars from Earth? At every layer and every position of
# "`<image>` This is the planet", rank the multimodal transcoder's features by their mean activation
# there on Mars images minus on Earth images. The edit, at a chosen set of layers and positions:
# set the top 8 Mars features to 0 and the top 8 Earth features to their mean value on Earth images,
# $h \leftarrow h + (v - z)\,d$. A flip is a Mars image whose answer was " M" and becomes " E". The
# features and values come from one half of the Mars and Earth images; flips are counted on the other half.
#
# The paper edits the *visual* features, so the claim is measured with the edit at the image-token
# positions (every layer). We then also edit at every position, image and text, and each layer alone.

# %%
# NBVAL_CHECK_OUTPUT
n_swap = pick(prof, ci=4, full=8)
half = len(mars) // 2
mars_p, earth_p = encode_scenes(mars, tok, N_TEXT), encode_scenes(earth, tok, N_TEXT)
S_mars = n_img + len(prompt)  # every Mars / Earth sequence is "<image> This is the planet" (+ answer, padding)
with torch.no_grad():
    xm, _, _ = mlp_io(vlm, mars_p.images, mars_p.tokens, range(L))
    xE, _, _ = mlp_io(vlm, earth_p.images, earth_p.tokens, range(L))
    zm = {la: tcs["multimodal"][la].encode(xm[la][:half, :S_mars]) for la in range(L)}  # [B, S, F]
    ze = {la: tcs["multimodal"][la].encode(xE[la][:half, :S_mars]) for la in range(L)}


held = mars_p.batch(range(half, len(mars_p)))
b = torch.arange(len(held))
with torch.no_grad():
    before = vlm(held.images, held.tokens)[b, held.answer_pos].argmax(-1)


def flip_rate(layers, positions) -> float:
    # the rule (dictionaries.swap): per (layer, position) the top Mars features set to 0, the top Earth ones to
    # their Earth mean
    hooks = intervention_hooks(tcs["multimodal"], swap_interventions(zm, ze, layers, positions, n_swap), prefix="lm.")
    with torch.no_grad():
        after = vlm.run_with_hooks(held.images, held.tokens, fwd_hooks=hooks)[b, held.answer_pos].argmax(-1)
    return float(((before == M_ID) & (after == E_ID)).sum() / (before == M_ID).sum().clamp_min(1))


mars_before = float((before == M_ID).float().mean())
where_edit = {"image positions": range(n_img), "text positions": range(n_img, S_mars),
              "all positions": range(S_mars)}
layer_sets = {"all layers": range(L)} | {f"layer {la}": [la] for la in range(L)}
flips = {w: {k: flip_rate(ls, pos) for k, ls in layer_sets.items()} for w, pos in where_edit.items()}
mars_to_earth = flips["image positions"]["all layers"]
mars_to_earth_all = flips["all positions"]["all layers"]
print(f"held-out Mars images answered ' M' before the edit: {mars_before:.2f}")
fig, ax = plt.subplots(figsize=(7, 2.6))
width = 0.8 / len(flips)
for j, (w, fl) in enumerate(flips.items()):
    ax.bar(np.arange(len(fl)) + (j - 1) * width, list(fl.values()), width, label=f"edit at {w}")
ax.set(xticks=range(len(layer_sets)), xticklabels=list(layer_sets), ylabel="Mars -> Earth flips", ylim=(0, 1.05))
ax.legend(fontsize=8)
plt.show()
for w, fl in flips.items():
    print(f"{w:16}: " + ", ".join(f"{k} {v:.2f}" for k, v in fl.items()))

# %% [markdown]
# Why can editing the image positions fail while an edit at every position of one layer succeeds?
# The attribution graph of Step 4 already said where the answer comes from: most of the " M" logit
# arrives through features at the *text* positions, and the first layer's attention can read the
# planet straight from the image tokens' input (the projector's output), before any MLP at an image
# position has run. An MLP edit at the image positions cannot reach that route; the planet's identity
# is already on the text positions after layer 0's attention. Where the edit lands on those
# positions, at the layer where they pick the planet up, the answer follows it.
# That is a statement about this architecture (early fusion), not about the method; Step 6b tests it by
# training a model in which the text cannot read the image before layer 2.

# %% [markdown]
# ## Step 6b: a late-fusion variant (a registered protocol)
#
# The failed image-position swap tests our architecture more than the method: layer 0's attention copies the
# planet onto the text positions before any image-position MLP acts. So we train a second VLM in which it
# cannot. **`vlm_late`**: the same ViT, projector, GPT, data, steps and seed as `vlm`, with one change, an
# attention mask in the GPT's first two blocks: a text position may not attend to an image token before layer
# 2 (`VLMConfig.late_fusion_layer = 2`; image tokens still attend causally among themselves, text among
# text). Its multimodal transcoders are trained with the same settings (`vlm_late_transcoders_multimodal`).
#
# The protocol, fixed before the measurement:
#
# - **Prompts.** New planet scenes, "`<image>` This is the planet", 400 Mars (split `mars_late`) and 400 Earth
#   (split `earth_late`), seed 0, no shuttle. The first 200 of each choose the features; the swap is measured on
#   the last 200 Mars scenes. The set's sha256 (8-bit pixels, token ids, answer positions and ids; all 800
#   scenes) is `LATE_SWAP_PROMPTS_SHA256` below, printed and asserted at `full`.
# - **Rule.** Exactly the early-fusion swap (`dictionaries.swap.swap_interventions`), on the late model's
#   multimodal transcoders: at every layer and every image position, the 8 features with the largest mean
#   activation on Mars minus Earth (selection half) set to 0, the 8 with the smallest set to their Earth mean,
#   $h \leftarrow h + (v - z)\,d$ with z live.
# - **Control.** Per (layer, image position), 16 features drawn at random (seeded, `random_control_features`)
#   from those the swap does not touch there; the MLP output moves along (sum of 8 of them) minus (sum of the
#   other 8), scaled so that, prompt by prompt, the edit has exactly the norm of the real swap's edit there
#   (`random_control_hooks`).
# - **Claims.** `mars_to_earth_flip_rate_late_fusion`: among the 200 held-out Mars scenes the late model
#   answers " M", the share answered " E" after the swap; target >= 0.8.
#   `mars_to_earth_flip_rate_late_fusion_random_control`: the same share under the control; target <= 0.1.
#   `mars_to_earth_flip_rate_early_fusion_n200`: the early model's swap on the same prompts (report).
#   `late_fusion_answer_acc`: the late model's held-out answer accuracy (Step 2's test scenes; report).
#   `mars_logit_direct_text_positions_{early,late}_fusion` and `..._image_positions_...`: in the attribution graphs
#   of the first 10 held-out Mars scenes (target " M"), the mean direct contribution to the " M" logit from the text
#   positions (features and tokens) and from the image positions (features and tokens); report.
# - **Prediction.** The flip rate rises from the early model's 0, because the text can now read the planet only
#   after the image-position MLPs of layers 0 and 1 have acted; but we predict it stays below 0.8, since the
#   text's layer-2 attention also reads the image tokens' input (the projector's output), which no MLP edit
#   removes. The control should flip (almost) nothing.

# %%
# NBVAL_CHECK_OUTPUT
LATE_SWAP_PROMPTS_SHA256 = "1d2ef41e1c0d8cdabfa9410b5bba9a420ee2e68ca732ed766eea5c26a44d281e"
vlm_late, vlm_late_meta = zoo.vlm_late(prof, seed=seed, retrain=retrain)
tcs_late, _ = zoo.vlm_late_transcoders(prof, "multimodal", seed=seed, retrain=retrain)
print(f"late fusion from layer {vlm_late.cfg.late_fusion_layer}; trained {tcfg.steps} steps in "
      f"{vlm_late_meta['metrics']['seconds'] / 60:.1f} min")
late_acc = answer_accuracy(vlm_late, test_pairs)
late_acc_shuf = answer_accuracy(vlm_late, test_pairs, images=test_pairs.images[perm])
print(f"held-out answer accuracy: late fusion {late_acc:.3f} (images shuffled {late_acc_shuf:.3f}); "
      f"early fusion {acc_true:.3f}")
n_late = pick(prof, ci=32, full=400)
late_sets = {
    name: zoo.vlm_scenes(prof, f"{name}_late", n_late, seed, kinds=("planet",), planets=(name,), p_shuttle=0,
                         templates={"planet": [(f"This is the planet|{name.capitalize()}", 1.0)]})
    for name in ("mars", "earth")}
late_mars_p, late_earth_p = (encode_scenes(s_, tok, N_TEXT) for s_ in late_sets.values())
late_sha = pairs_sha256(late_mars_p, late_earth_p)
print(f"late-fusion swap prompts: {n_late} Mars + {n_late} Earth scenes, sha256 {late_sha}")
if not prof.is_ci:
    assert late_sha == LATE_SWAP_PROMPTS_SHA256, "the prompt set differs from the registered one"

# %%
# NBVAL_CHECK_OUTPUT
half_late = n_late // 2
late_held = late_mars_p.batch(range(half_late, n_late))
b_late = torch.arange(len(late_held))


def swap_codes(model, ts, n: int) -> tuple[dict, dict]:
    """Feature activations {layer: [n, S, F]} on the first n Mars and Earth scenes (the selection half)."""
    with torch.no_grad():
        xm_, _, _ = mlp_io(model, late_mars_p.images[:n], late_mars_p.tokens[:n], range(L))
        xe_, _, _ = mlp_io(model, late_earth_p.images[:n], late_earth_p.tokens[:n], range(L))
        return ({la: ts[la].encode(xm_[la][:, :S_mars]) for la in range(L)},
                {la: ts[la].encode(xe_[la][:, :S_mars]) for la in range(L)})


def held_flip_rate(model, hooks) -> tuple[float, int]:
    """Share of the held-out Mars scenes answered ' M' that the hooks turn into ' E'; and how many were ' M'."""
    with torch.no_grad():
        before_ = model(late_held.images, late_held.tokens)[b_late, late_held.answer_pos].argmax(-1)
        after_ = model.run_with_hooks(late_held.images, late_held.tokens,
                                      fwd_hooks=hooks)[b_late, late_held.answer_pos].argmax(-1)
    n_m = int((before_ == M_ID).sum())
    return float(((before_ == M_ID) & (after_ == E_ID)).sum() / max(n_m, 1)), n_m


img_positions = range(n_img)
zm_late, ze_late = swap_codes(vlm_late, tcs_late, half_late)
ivs_late = swap_interventions(zm_late, ze_late, range(L), img_positions, n_swap)
ctrl_late = random_control_features(ivs_late, tcs_late[0].W_dec.shape[1], n_swap, seed)
flip_late, n_mars_late = held_flip_rate(vlm_late, intervention_hooks(tcs_late, ivs_late, prefix="lm."))
flip_late_ctrl, _ = held_flip_rate(vlm_late, random_control_hooks(tcs_late, ivs_late, ctrl_late, prefix="lm."))
zm_e, ze_e = swap_codes(vlm, tcs["multimodal"], half_late)
ivs_early = swap_interventions(zm_e, ze_e, range(L), img_positions, n_swap)
flip_early_n200, n_mars_early = held_flip_rate(vlm, intervention_hooks(tcs["multimodal"], ivs_early, prefix="lm."))
print(f"held-out Mars scenes answered ' M': late {n_mars_late}/{len(late_held)}, early {n_mars_early}/{len(late_held)}")
print(f"swap at the image positions (every layer): late fusion {flip_late:.3f}, random control {flip_late_ctrl:.3f}; "
      f"early fusion {flip_early_n200:.3f}")
late_by_layer = {la: held_flip_rate(vlm_late, intervention_hooks(
    tcs_late, [iv for iv in ivs_late if iv.layer == la], prefix="lm."))[0] for la in range(L)}
print("late fusion, image positions, one layer at a time: "
      + ", ".join(f"layer {la} {v:.2f}" for la, v in late_by_layer.items()))

# %% [markdown]
# Why the two models differ, in their attribution graphs: the direct contributions to the " M" logit from the
# text positions (their features and tokens) and from the image positions (their features and tokens), in the
# graphs of the first held-out Mars scenes, for each model.

# %%
# NBVAL_CHECK_OUTPUT
n_graphs = pick(prof, ci=2, full=10)


def direct_by_side(model, ts, image: torch.Tensor) -> tuple[float, float]:
    """(text positions, image positions): direct edges into the ' M' logit, features and input tokens."""
    g_ = attribute_vlm(model, image, prompt, ts, logit_tokens=targets)
    row = g_.slices()["logits"].start
    direct = g_.adjacency[row, : g_.n_features]
    img_feat = g_.features[:, 1] < n_img
    inputs = g_.adjacency[row, g_.slices()["inputs"]]
    return (float(direct[~img_feat].sum() + inputs[n_img:].sum()), float(direct[img_feat].sum() + inputs[:n_img].sum()))


sides = {name: np.array([direct_by_side(m_, ts, late_held.images[i]) for i in range(n_graphs)])
         for name, m_, ts in (("early fusion", vlm, tcs["multimodal"]), ("late fusion", vlm_late, tcs_late))}
for name, v in sides.items():
    print(f"{name}: direct to ' M' from text positions {v[:, 0].mean():+.2f} (sd {v[:, 0].std():.2f}), "
          f"from image positions {v[:, 1].mean():+.2f} (sd {v[:, 1].std():.2f}), {n_graphs} Mars scenes")
fig, ax = plt.subplots(figsize=(5, 2.6))
for j, (name, v) in enumerate(sides.items()):
    ax.bar(np.arange(2) + (j - 0.5) * 0.4, v.mean(0), 0.4, yerr=v.std(0), label=name)
ax.set(xticks=range(2), xticklabels=["text positions", "image positions"], ylabel="direct to ' M' logit")
ax.axhline(0, color="k", lw=0.5)
ax.legend(fontsize=8)
plt.show()
graph_late = attribute_vlm(vlm_late, late_held.images[0], prompt, tcs_late, logit_tokens=targets,
                           token_strings=lambda t: tok.decode([t]))
gj_late = graph_late.to_json("mars-late-fusion", "<image> This is the planet (late fusion)")
validate_graph_json(gj_late)
late_sums = top_direct(graph_late, M_ID, prompt)

# %%
plot_graph(merge_supernodes(gj_late, supernode_groups(gj_late)),
           title="late fusion: This is the planet -> ' M' (Mars image), features grouped").show()

# %% [markdown]
# After the fact (not part of the protocol, no claims): where does the late model's text read the planet from?
# The late graph's image-position contribution comes largely from the image *tokens*, the projector's output,
# which the text's layer-2 attention reads directly and which no MLP edit touches. Three edits, on the same 200
# held-out Mars scenes: the swap at every position (image and text, every layer); the image tokens replaced by
# their mean over the Earth selection half (no feature edit); and both, the image tokens replaced and the
# image-position swap.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    _, c_e = vlm_late.run_with_cache(late_earth_p.images[:half_late], late_earth_p.tokens[:half_late, :1],
                                     names_filter=lambda n: n == "projector.hook_image_tokens")
    earth_tokens = c_e["projector.hook_image_tokens"].mean(0)  # [n_img, d]
earth_input = [("projector.hook_image_tokens", lambda act, hook: earth_tokens.expand_as(act))]
ivs_late_all = swap_interventions(zm_late, ze_late, range(L), range(S_mars), n_swap)
posthoc = {"swap at every position": intervention_hooks(tcs_late, ivs_late_all, prefix="lm."),
           "image tokens := Earth mean": earth_input,
           "image tokens := Earth mean + image-position swap":
               earth_input + intervention_hooks(tcs_late, ivs_late, prefix="lm.")}
for name, hooks in posthoc.items():
    print(f"late fusion, {name}: Mars -> Earth {held_flip_rate(vlm_late, hooks)[0]:.3f}")

# %% [markdown]
# Read against the prediction: the goal fails, as predicted, but more plainly than predicted. Cutting the text off
# from the image for two layers did not move the planet's identity into the image-position MLPs' features: the
# text's layer-2 and layer-3 attention reads it from the image tokens themselves, so a swap of MLP features at the
# image positions still leaves the answer where it was, while the same swap at every position, or a replaced image
# input, moves it (the numbers above). In both architectures the claim tests where the model keeps the planet, and
# in neither is it in the image-position MLP features alone. The claims table and "What we found" give the numbers.

# %% [markdown]
# ## Step 7: the six-fingered hand
#
# Training hands always have five fingers. How many does the model see on hands with 4, 5 and 6
# fingers, and how well does it count dots, which it has seen in every number from 1 to 6? The
# answer is read off the digit logits only.

# %%
# NBVAL_CHECK_OUTPUT
digits = {n: tok.encode(f" {n}")[0] for n in range(1, 10)}
hand_answers = {}
for n in (4, 5, 6):
    h = zoo.vlm_scenes(prof, f"hand{n}", pick(prof, ci=32, full=300), seed, kinds=("hand",), fingers=n,
                       templates={"hand": [("How many fingers?|{n}", 1.0)]})
    hp = encode_scenes(h, tok, N_TEXT)
    with torch.no_grad():
        logits = vlm(hp.images, hp.tokens)[torch.arange(len(hp)), hp.answer_pos][:, list(digits.values())]
    hand_answers[n] = torch.bincount(logits.argmax(-1), minlength=9).float().cpu() / len(hp)  # share answering 1..9
dots = zoo.vlm_scenes(prof, "dots_test", pick(prof, ci=64, full=600), seed, kinds=("dots",),
                      templates={"dots": [("How many dots?|{n}", 1.0)]})
dp = encode_scenes(dots, tok, N_TEXT)
dot_count_acc = answer_accuracy(vlm, dp)
with torch.no_grad():
    dot_pred = vlm(dp.images, dp.tokens)[torch.arange(len(dp)), dp.answer_pos][:, list(digits.values())].argmax(-1) + 1
dot_true = torch.tensor([a["count"] for a in dots.attrs])
six_says_five = float(hand_answers[6][4])
fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
for n, share in hand_answers.items():
    axes[0].plot(range(1, 10), share.numpy(), "o-", label=f"{n} fingers")
axes[0].set(xlabel="answer", ylabel="share of hands", xticks=range(1, 10), title="How many fingers?")
axes[0].legend()
cm = torch.zeros(6, 9)
for t, p_ in zip(dot_true.tolist(), dot_pred.tolist()):
    cm[t - 1, p_ - 1] += 1
axes[1].imshow(cm / cm.sum(1, keepdim=True).clamp_min(1), cmap="Blues", vmin=0, vmax=1)
axes[1].set(xlabel="answer", ylabel="dots", xticks=range(9), xticklabels=range(1, 10), yticks=range(6),
            yticklabels=range(1, 7), title="How many dots?")
plt.show()
print(f"six-fingered hands answered 5: {six_says_five:.2f} (answered 6: {float(hand_answers[6][5]):.2f}); "
      f"four-fingered answered 5: {float(hand_answers[4][4]):.2f}; dot counting accuracy {dot_count_acc:.2f}")

# %% [markdown]
# Where does the "5" come from on a six-fingered hand? The graph of one such hand, target " 5"
# (and " 6" for comparison): the features with the largest direct edges into " 5", and how much of
# the logit arrives from image-position features, text-position features, errors and the inputs.

# %%
six = zoo.vlm_scenes(prof, "hand6", 1, seed, kinds=("hand",), fingers=6)
question = torch.tensor(tok.encode("How many fingers?"))
graph6 = attribute_vlm(vlm, six.images[0], question, tcs["multimodal"], logit_tokens=[digits[5], digits[6]],
                       token_strings=lambda t: tok.decode([t]))
print("target logits:", [(tok.decode([t]), round(float(p), 3)) for t, p in zip(graph6.logit_tokens,
                                                                               graph6.logit_probs)])
five_sums = top_direct(graph6, digits[5], question)

# %% [markdown]
# Is there a counting path? If the model counted fingers, the " 5" logit on a hand would depend on
# the picture's details. Compare the direct contribution of the image-position features to " 5" on
# hands with 4, 5 and 6 fingers (a few hands each): if it barely moves, the "5" comes from a generic
# hand signal, not from counting.

# %%
n_hands = pick(prof, ci=3, full=10)
hand_direct = {}
for n in (4, 5, 6):
    h = zoo.vlm_scenes(prof, f"hand{n}", n_hands, seed, kinds=("hand",), fingers=n)
    vals = []
    for i in range(n_hands):
        g6 = attribute_vlm(vlm, h.images[i], question, tcs["multimodal"], logit_tokens=[digits[5], digits[6]])
        row = g6.slices()["logits"].start
        vals.append(float(g6.adjacency[row, : g6.n_features][g6.features[:, 1] < n_img].sum()))
    hand_direct[n] = (float(np.mean(vals)), float(np.std(vals)))
    print(f"{n} fingers: image-position features -> ' 5' directly {hand_direct[n][0]:+.2f} "
          f"(sd {hand_direct[n][1]:.2f} over {n_hands} hands)")

# %% [markdown]
# ## Explore
#
# Pick a held-out scene: the picture, the rollout heatmap of what the answer reads, and the model's
# top answers. (Interactive; not run by the tests.)

# %%
# NBVAL_SKIP (interactive only; papermill runs it in the ci test)
import ipywidgets as widgets  # noqa: E402


def show_scene(i: int = 0):
    pair = test_pairs.batch([i])
    with torch.no_grad():
        _, c = vlm.run_with_cache(pair.images, pair.tokens,
                                  names_filter=lambda n: n.startswith("lm.") and n.endswith("hook_pattern"))
        logits = vlm(pair.images, pair.tokens)[0, pair.answer_pos[0]]
    qp = n_img + int(pair.answer_pos[0])
    w = torch.stack([c[f"lm.blocks.{la}.attn.hook_pattern"][0, :, qp, :n_img] for la in range(L)]).mean((0, 1))
    R = attention_rollout(vit_patterns(vlm, pair.images)[:, 0], last_k=K_ROLL, q=0.3)
    hm = ((w / w.sum())[:, None, None] * image_token_maps(R)).sum(0)
    fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
    axes[0].imshow(pair.images[0].permute(1, 2, 0))
    axes[1].imshow(hm.cpu())
    for ax in axes:
        ax.axis("off")
    axes[0].set_title(test_scenes.prompts[i], fontsize=8)
    top = logits.softmax(-1).topk(5)
    axes[1].set_title(", ".join(f"{tok.decode([t])!r} {p:.2f}" for p, t in zip(top.values.tolist(),
                                                                              top.indices.tolist())), fontsize=7)
    plt.show()


widgets.interact(show_scene, i=widgets.IntSlider(value=0, min=0, max=len(test_scenes) - 1))

# %% [markdown]
# ## Claims
#
# Definitions, fixed before measuring. FVU: held-out scenes' image-token positions, middle layer
# (layer L/2). L0: mean active features per position of the multimodal transcoders over all positions
# of held-out scenes. Rollout vs baseline: mean IoU with the planet mask over held-out planet scenes.
# Mars -> Earth: flips among held-out Mars images answered " M", editing every layer's top-8 Mars and
# Earth features (ranked per position) at every image position; the all-positions variant was added
# after the image-position edit failed, and is reported beside it, not in its place. Six fingers:
# share of six-fingered hands answered 5 (digit logits only). Dots: held-out accuracy of the first
# answer token. Graph time: one attribution graph (all active features and two logits), after a
# warm-up call, one thread.
# The late-fusion claims (`*_late_fusion*`, `*_early_fusion*`, `late_fusion_answer_acc`) are the protocol of
# Step 6b, committed before their measurement; the early-fusion ids above keep their definitions and targets.

# %%
# NBVAL_CHECK_OUTPUT
claims = [
    Claim("fvu_text_only_mid", f"FVU of the text-only transcoder at layer {mid}, image positions",
          round(fvu_text_mid, 4), target="report"),
    Claim("fvu_multimodal_mid", f"FVU of the multimodal transcoder at layer {mid}, image positions",
          round(fvu_mm_mid, 4), target="report"),
    Claim("multimodal_fvu_lower", "the multimodal transcoder leaves less variance unexplained there",
          fvu_mm_mid < fvu_text_mid, paper="holds", target="holds", holds=fvu_mm_mid < fvu_text_mid),
    Claim("transcoder_l0", "mean active features per position (multimodal transcoders)", round(l0, 2),
          paper="k = 48", target="report"),
    Claim("rollout_iou", "IoU of the rollout heatmap with the planet mask", round(rollout_iou, 4),
          target="> baseline_iou", holds=rollout_iou > baseline_iou),
    Claim("baseline_iou", "IoU of last-layer mean attention with the planet mask", round(baseline_iou, 4),
          target="report"),
    Claim("mars_to_earth_flip_rate", "Mars answers turned into Earth by swapping the features at the image positions "
          "(every layer)", round(mars_to_earth, 4), paper="flips", target=">= 0.8", holds=mars_to_earth >= 0.8),
    Claim("mars_to_earth_flip_rate_all_positions", "the same swap at every position, image and text (every layer)",
          round(mars_to_earth_all, 4), paper="flips", target=">= 0.8", holds=mars_to_earth_all >= 0.8),
    Claim("six_finger_answers_five_rate", "six-fingered hands answered 5", round(six_says_five, 4),
          paper="answers 5", target="report"),
    Claim("dot_count_acc", "dot counting accuracy (held-out scenes, 1-6 dots)", round(dot_count_acc, 4),
          target=">= 0.8", holds=dot_count_acc >= 0.8),
    Claim("attribution_graph_seconds", "seconds for one attribution graph", round(graph_seconds, 3),
          target="<= 5", holds=graph_seconds <= 5, kind="timing"),
    Claim("attribution_completeness_err", "worst |value - sum of incoming edges - bias| / |value| (float64)",
          completeness, target="<= 1e-4", holds=completeness <= 1e-4),
    Claim("answer_acc_true_vs_shuffled", "held-out answer accuracy with the true images (vs images shuffled)",
          round(acc_true, 4), target="> shuffled", holds=acc_true > acc_shuffled,
          context=f"shuffled {acc_shuffled:.3f}"),
    Claim("shuttle_feature_assoc_ratio", "shuttle features at the text positions: Mars images / other scenes",
          round(assoc_ratio, 3), paper="planet -> shuttle", target="report"),
    Claim("mars_to_earth_flip_rate_late_fusion", "late-fusion VLM (text reads the image from layer 2): Mars answers "
          "turned into Earth by the image-position swap (every layer), held-out registered Mars scenes",
          round(flip_late, 4), paper="flips", target=">= 0.8", holds=flip_late >= 0.8,
          context=f"{n_mars_late} of {len(late_held)} answered ' M'; sha256 {late_sha[:12]}"),
    Claim("mars_to_earth_flip_rate_late_fusion_random_control", "late-fusion VLM: the same scenes under the "
          "same-norm random-feature control of that swap", round(flip_late_ctrl, 4), target="<= 0.1",
          holds=flip_late_ctrl <= 0.1),
    Claim("mars_to_earth_flip_rate_early_fusion_n200", "early-fusion VLM: the image-position swap (every layer) on "
          "the registered late-fusion Mars scenes", round(flip_early_n200, 4), target="report",
          context=f"{n_mars_early} of {len(late_held)} answered ' M'"),
    Claim("late_fusion_answer_acc", "late-fusion VLM: held-out answer accuracy with the true images",
          round(late_acc, 4), target="report", context=f"shuffled {late_acc_shuf:.3f}; early fusion {acc_true:.3f}"),
    Claim("mars_logit_direct_text_positions_early_fusion", "early-fusion VLM: mean direct contribution of the text "
          "positions (features and tokens) to the ' M' logit, graphs of the first 10 held-out registered Mars scenes",
          round(float(sides["early fusion"][:, 0].mean()), 3), target="report"),
    Claim("mars_logit_direct_image_positions_early_fusion", "early-fusion VLM: the same from the image positions "
          "(features and tokens)", round(float(sides["early fusion"][:, 1].mean()), 3), target="report"),
    Claim("mars_logit_direct_text_positions_late_fusion", "late-fusion VLM: mean direct contribution of the text "
          "positions (features and tokens) to the ' M' logit, graphs of the first 10 held-out registered Mars scenes",
          round(float(sides["late fusion"][:, 0].mean()), 3), target="report"),
    Claim("mars_logit_direct_image_positions_late_fusion", "late-fusion VLM: the same from the image positions "
          "(features and tokens)", round(float(sides["late fusion"][:, 1].mean()), 3), target="report"),
]
results = write_results("06_vlm", prof, claims)
claims_table(results)

# %% [markdown]
# ## What we found
#
# The verdicts below are computed from this run's numbers (the table above is the record).

# %%
yes = lambda ok: "holds" if ok else "does not hold"  # noqa: E731
print(f"- Transcoders: at layer {mid}'s image positions the text-only transcoder leaves FVU {fvu_text_mid:.3f}, "
      f"the multimodal one {fvu_mm_mid:.3f}: the paper's claim {yes(fvu_mm_mid < fvu_text_mid)} here.")
print(f"- Attribution graphs are exact (float64 completeness {completeness:.0e}) and cheap ({graph_seconds:.2f} s).")
print(f"- Rollout localises the planet better than last-layer attention: IoU {rollout_iou:.2f} vs {baseline_iou:.2f} "
      f"({yes(rollout_iou > baseline_iou)}).")
print(f"- Mars -> Earth: editing the image positions flips {mars_to_earth:.0%} of the answers, editing every "
      f"position {mars_to_earth_all:.0%}.")
print(f"- Late fusion (text reads the image from layer {vlm_late.cfg.late_fusion_layer}): the same image-position "
      f"swap flips {flip_late:.0%} of "
      f"{n_mars_late} held-out Mars answers (goal >= 80%: {yes(flip_late >= 0.8)}; the early model "
      f"{flip_early_n200:.0%} on the same scenes), the same-norm random control {flip_late_ctrl:.0%} (goal <= 10%: "
      f"{yes(flip_late_ctrl <= 0.1)}). Direct to ' M' from text / image positions: early "
      f"{sides['early fusion'][:, 0].mean():+.1f} / {sides['early fusion'][:, 1].mean():+.1f}, late "
      f"{sides['late fusion'][:, 0].mean():+.1f} / {sides['late fusion'][:, 1].mean():+.1f}.")
print(f"- Six fingers: {six_says_five:.0%} of six-fingered hands are answered 5, while dots are counted right "
      f"{dot_count_acc:.0%} of the time; the image features' direct push on ' 5' is about the same for 4, 5 and 6 "
      f"fingers ({', '.join(f'{v[0]:+.2f}' for v in hand_direct.values())}).")

# %% [markdown]
# Read against the paper: the multimodal-versus-text-only gap in transcoder quality and the
# six-finger prior are the clearest reproductions. A transcoder trained only on code has never seen
# an image token, so its failure at the image positions is expected; the question was its size. The
# model that counts dots almost perfectly still answers 5 for hands of four and six fingers: hands in
# training always had five, and nothing in the loss ever asked it to count fingers. The Mars -> Earth
# edit shows how much the answer to "where do the visual features live" depends on the model: in our
# 4-layer GPT the planet is copied onto the text positions by the first attention layer, so the edit
# has to follow it there.
#
# Limits: per-layer transcoders miss cross-layer superposition; error nodes carry what the
# transcoders do not explain; our "visual features" live in a 4-layer GPT reading 16 soft tokens;
# the association ("shuttle features" on Mars images) is a correlation measured at the text positions,
# not a traced path.
