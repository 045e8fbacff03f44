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
# > **DRAFT (not executed by CI; not in `_toc.yml`).** Runs end to end at the `ci` profile. The
# > full-profile bridged pair (`zoo.bridged_pair("full")`, ~70 min of one core) is trained by
# > `scripts/train_models.py ch4` and resumes from `data/scratch/full/bridged_sparse/`.

# %% [markdown]
# # 4. Bridges: a sparse model that explains a dense one
#
# **What you will learn.** Chapter 3 read circuits off a weight-sparse model. But the models people
# use are dense. Gao et al. (2025) {cite}`gao2025weightsparse` propose *bridges*: train a sparse
# model beside a fixed dense one, with a small encoder and decoder at every sublayer boundary that
# translate one residual stream into the other, and ask that the two models can swap halves at any
# boundary. Then a feature read in the sparse model is a direction in the dense one: change the
# sparse channel, decode the change, add it to the dense stream, and the dense model should respond
# as the sparse circuit predicts. This chapter builds the bridges, trains a pair, measures how well
# the hybrids agree with the dense model, and steers the dense model through a sparse channel.
# The paper published no bridge code; this is an open implementation of its description.
#
# **What the paper claims.** Bridged hybrids stay close to the dense model (small KL at every
# site), and interventions on interpretable sparse channels carry over to the dense model: moving
# the quote-type channel changes which quote the dense model closes a string with.

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
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from circuitbook import get_profile, seed_everything, viz, zoo
from circuitbook.bridges import (
    hybrid_kl_per_site,
    sparse_activations,
    steer,
    steer_control,
)
from circuitbook.data.tasks import TaskBatch, evaluate_task
from circuitbook.results import Claim, claims_table, write_results
from circuitbook.train import val_batches

prof = get_profile(profile)
seed_everything(seed)
torch.set_num_threads(2)
viz.setup()

# %% [markdown]
# ## The architecture
#
# Two models with the same number of layers. At every *site*, the residual stream before each
# attention block and before each MLP block, a bridge pair:
#
# $$ \text{enc}(x) = \mathrm{AbsTopK}(W_{enc} x + b_{enc}) \quad (\text{dense} \to \text{sparse}), \qquad
#    \text{dec}(h) = W_{dec} h + b_{dec} \quad (\text{sparse} \to \text{dense}). $$
#
# Training asks five things at once: the sparse model predicts the next token (its own LM loss); at
# every site the encoder maps the dense stream onto the sparse one and the decoder maps it back
# (NMSE both ways); a dense prefix, encoded, followed by the sparse suffix gives the dense model's
# output (KL, dense→sparse); and a sparse prefix, decoded, followed by the dense suffix does too
# (KL, sparse→dense). The dense model is frozen; gradients flow through it to the decoders.

# %%
dense, sparse, bridge, meta = zoo.bridged_pair(prof, seed, retrain=retrain)
sites = bridge.sites
fig, ax = plt.subplots(figsize=(min(2 + 1.3 * len(sites), 14), 2.6))
for y, name in ((1, "dense"), (0, "sparse")):
    ax.plot([-0.5, len(sites) - 0.5], [y, y], color="k", lw=2)
    ax.text(-0.7, y, name, ha="right", va="center")
for i, s in enumerate(sites):
    ax.annotate("", (i - 0.08, 0.1), (i - 0.08, 0.9), arrowprops=dict(arrowstyle="->", color="C0"))
    ax.annotate("", (i + 0.08, 0.9), (i + 0.08, 0.1), arrowprops=dict(arrowstyle="->", color="C3"))
    ax.text(i, 1.15, s.replace("blocks.", "L").replace(".hook_resid_", " "), ha="center", fontsize=8)
ax.text(len(sites) - 0.4, 0.5, "blue: encoder (AbsTopK)\nred: decoder (linear)", fontsize=8, va="center")
ax.set_axis_off()
ax.set_ylim(-0.3, 1.4)
plt.show()
print(f"{len(sites)} sites; dense d_model {dense.cfg.d_model}, sparse d_model {sparse.cfg.d_model}, "
      f"sparse L0 {meta['metrics']['l0']:,}; {meta['metrics']['tokens_per_s']:,.0f} tokens/s while training")

# %% [markdown]
# ## Training
#
# Each loss term along training (validation, every site).

# %%
hist = pd.DataFrame(meta["metrics"]["history"])
val = hist.dropna(subset=["val_total"]) if "val_total" in hist else hist
keys = ["sparse_lm", "nmse_d2s", "nmse_s2d", "kl_d2s", "kl_s2d"]
fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 2.8))
for ax, k in zip(axes, keys):
    ax.plot(hist["step"], hist[k], alpha=0.4, label="train")
    ax.plot(val["step"], val[f"val_{k}"], "o-", ms=3, label="val")
    ax.set(title=k, xlabel="step", yscale="log")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Does the sparse side do the tasks?
#
# The interventions below need the sparse model to solve the quote and the while/return tasks.

# %%
tok = zoo.tokenizer(prof)
sets = zoo.task_sets(prof, tok, seed)
QUOTE, WHILE = "single_double_quote", "while_return_true"
task_acc = {t: {"dense": evaluate_task(dense, sets.test[t])["acc"],
                "sparse": evaluate_task(sparse, sets.test[t])["acc"]}
            for t in (QUOTE, WHILE)}
display(pd.DataFrame(task_acc).T.round(3))

# %% [markdown]
# ## Hybrid passes, site by site
#
# For each site: KL from the dense model's output of the two hybrids, with the dense model's own
# output entropy for scale (a KL far below the entropy means the hybrid keeps most of what the dense
# model predicts), and the whole sparse model's KL from the dense one.

# %%
# NBVAL_CHECK_OUTPUT
streams = zoo.token_streams(prof, tok)
n_val = 8 if prof.name == "full" else 2
batches = val_batches(streams["val"], n_val, 16, dense.cfg.n_ctx)
per_site = pd.DataFrame(hybrid_kl_per_site(dense, sparse, bridge, batches)).set_index("site")
display(per_site.round(4))
kl_d2s_mean, kl_s2d_mean = float(per_site["kl_d2s"].mean()), float(per_site["kl_s2d"].mean())
dense_entropy = float(per_site["dense_entropy"].iloc[0])
print(f"mean KL over sites: dense->sparse {kl_d2s_mean:.3f}, sparse->dense {kl_s2d_mean:.3f} nats "
      f"(dense output entropy {dense_entropy:.3f}; whole sparse model {float(per_site['sparse_kl'].iloc[0]):.3f})")

# %%
fig, ax = plt.subplots(figsize=(8, 3))
x = np.arange(len(per_site))
ax.bar(x - 0.2, per_site["kl_d2s"], 0.4, label="dense prefix -> sparse suffix")
ax.bar(x + 0.2, per_site["kl_s2d"], 0.4, label="sparse prefix -> dense suffix")
ax.axhline(dense_entropy, color="k", ls="--", lw=1, label="dense output entropy")
ax.set_xticks(x, [s.replace("blocks.", "L").replace(".hook_resid_", " ") for s in per_site.index], rotation=30)
ax.set(ylabel="KL from dense (nats)", yscale="log")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Interventions that carry over
#
# Find, in the sparse model, the residual channel at a site that best separates the two classes at
# the last token (the same sign-separation measure chapter 3 uses for the quote-type node), move it
# from its class-A mean towards its class-B mean, decode the change into the dense stream at the same
# site, and read the dense model's probabilities of the two answers. The control moves a random
# channel by a dense-space change of the same norm.


# %%
def separating_channel(batch: TaskBatch) -> tuple[str, int, float, float, float]:
    """(site, channel, separation, class-0 mean, class-1 mean) of the sparse residual channel whose sign best
    separates the two labels at the last token, over every bridge site."""
    best = None
    for s in sites:
        h = sparse_activations(s, batch.tokens, batch.last, sparse=sparse)  # [batch, d_sparse]
        a, b = h[batch.labels == 0], h[batch.labels == 1]
        mid = (a.mean(0) + b.mean(0)) / 2
        sep = (((a > mid).float().mean(0) + (b < mid).float().mean(0)) / 2)
        sep = torch.maximum(sep, 1 - sep)  # [d_sparse]
        c = int(sep.argmax())
        if best is None or sep[c] > best[2]:
            best = (s, c, float(sep[c]), float(a[:, c].mean()), float(b[:, c].mean()))
    return best


def steering_curve(task: str, strengths: np.ndarray) -> tuple[pd.DataFrame, dict]:
    test = sets.test[task]
    s, c, sep, m0, m1 = separating_channel(sets.train[task])
    a = TaskBatch(*(getattr(test, f)[test.labels == 0] for f in ("tokens", "last", "correct", "wrong", "labels")))
    targets = [int(a.correct[0]), int(a.wrong[0])]  # class 0's answer, class 1's answer
    rows = []
    for st in strengths:
        r = steer(dense, bridge, a.tokens, s, c, m0, m1, st, targets, at=a.last)
        k = steer_control(dense, bridge, a.tokens, s, c, m0, m1, st, targets, at=a.last, seed=seed)
        rows.append({"strength": st, "p_diff": float((r.probs[:, 0] - r.probs[:, 1]).mean()),
                     "control_p_diff": float((k.probs[:, 0] - k.probs[:, 1]).mean())})
    return pd.DataFrame(rows).set_index("strength"), {"site": s, "channel": c, "separation": sep,
                                                      "mean class 0": m0, "mean class 1": m1}


strengths = np.linspace(0, 1, 6)
curves, found = {}, {}
for t in (QUOTE, WHILE):
    curves[t], found[t] = steering_curve(t, strengths)
display(pd.DataFrame(found).T)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
labels = {QUOTE: ("P(') - P(\")", "single-quote prompts"), WHILE: ("P(:) - P(newline)", "`while True` prompts")}
for ax, (t, cv) in zip(axes, curves.items()):
    ax.plot(cv.index, cv["p_diff"], "o-", label=f"{found[t]['site']} ch {found[t]['channel']}")
    ax.plot(cv.index, cv["control_p_diff"], "s--", color="grey", label="random channel, same norm")
    ax.set(xlabel="steering strength", ylabel=labels[t][0], title=f"dense model, {labels[t][1]}")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
delta = {t: float(cv["p_diff"].iloc[-1] - cv["p_diff"].iloc[0]) for t, cv in curves.items()}
control = {t: float(cv["control_p_diff"].iloc[-1] - cv["control_p_diff"].iloc[0]) for t, cv in curves.items()}
for t in curves:
    print(f"{t}: change at full strength {delta[t]:+.3f} (control {control[t]:+.3f})")

# %% [markdown]
# ## Claims

# %%
claims = [
    Claim("hybrid_kl_d2s_mean", "mean KL (nats) of dense prefix -> sparse suffix from the dense output, over sites",
          round(kl_d2s_mean, 4), paper="small", target=f"report (dense entropy {dense_entropy:.2f})"),
    Claim("hybrid_kl_s2d_mean", "mean KL (nats) of sparse prefix -> dense suffix from the dense output, over sites",
          round(kl_s2d_mean, 4), paper="small", target=f"report (dense entropy {dense_entropy:.2f})"),
    Claim("quote_intervention_delta_p", "change in dense P(') - P(\") at full steering strength (magnitude)",
          round(abs(delta[QUOTE]), 4), paper="interventions transfer", target=">= 0.3", holds=abs(delta[QUOTE]) >= 0.3),
    Claim("quote_control_delta_p", "the same for a random channel of equal norm", round(control[QUOTE], 4),
          target="|x| <= 0.05", holds=abs(control[QUOTE]) <= 0.05),
    Claim("while_intervention_delta_p", "change in dense P(:) - P(newline) at full strength (magnitude)",
          round(abs(delta[WHILE]), 4), paper="interventions transfer", target=">= 0.3", holds=abs(delta[WHILE]) >= 0.3),
    Claim("while_control_delta_p", "the same for a random channel of equal norm", round(control[WHILE], 4),
          target="|x| <= 0.05", holds=abs(control[WHILE]) <= 0.05),
]
results = write_results("04_bridges", prof, claims)
claims_table(results)
