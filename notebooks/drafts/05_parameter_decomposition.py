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
# # 5. Parameter decomposition: SPD and VPD
#
# **What you will learn.** How to explain a network through its *weights* instead of its
# activations, following Stochastic Parameter Decomposition (SPD) {cite}`bushnaq2025spd` and its
# predecessor APD {cite}`braun2025apd`: every weight matrix is written as a sum of rank-one
# *subcomponents* $W = \sum_c u_c v_c^\top$, and a small network predicts, for each input, how
# *causally important* each subcomponent is. Unimportant subcomponents must be ablatable without
# changing the output; important ones should be few. We build the component model, the
# causal-importance functions with their leaky hard sigmoids, the losses, and check the method on
# toy models whose right answer we know: the toy model of superposition {cite}`elhage2022tms`
# (TMS) and a residual MLP doing compressed computation. Then we replace SPD's *random* ablations
# by *adversarial* ones (VPD, Goodfire 2026) and measure what that buys under attack.
#
# **What the papers claim.** On TMS 5-2 and 40-10, SPD recovers exactly one subcomponent per
# feature: mean max cosine similarity (MMCS) 1.000 with the columns of W, norm ratio (ML2R)
# 0.99–1.03, and as many alive subcomponents as features. On the residual MLP, the input matrix
# splits into 100 subcomponents, one per feature. VPD's adversarially trained decompositions keep
# the output faithful under mask attacks where random-mask training gives no guarantee.

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
import torch

from circuitbook import get_profile, seed_everything, viz
from circuitbook.decomposition import (TOY_CONFIGS, activation_density, adversarial_attack, alive_count,
                                       feature_matches, lower_leaky_hard_sigmoid, random_mask_loss,
                                       single_feature_ci, toy_data_fn, toy_decomposition, toy_inputs, toy_metrics,
                                       toy_target, upper_leaky_hard_sigmoid)
from circuitbook.results import Claim, claims_table, write_results

prof = get_profile(profile)
seed_everything(seed)
torch.set_num_threads(1)  # the toys are small; one core each leaves the other free
viz.setup()

# %% [markdown]
# ## The toy model of superposition
#
# TMS compresses $n$ sparse features into $m < n$ hidden dimensions and reads them back:
# $\hat x = \mathrm{ReLU}(W^\top W x + b)$, $W \in \mathbb{R}^{m \times n}$. Each feature is on with
# probability 0.05, with a value uniform in [0, 1]. With 5 features in 2 dimensions the trained
# $W$ places the features' columns on a pentagon. The model's two matrices are `linear1` ($W$) and
# `linear2` ($W^\top$, with the bias $b$); these are the names the decomposition selects.

# %%
tms52, tms52_meta = toy_target("tms_5_2", prof, seed, retrain)
W52 = tms52.W.detach()  # [2, 5]
print(f"TMS 5-2 target: reconstruction MSE {tms52_meta['metrics']['loss']:.4f}")
fig, ax = plt.subplots(figsize=(3.5, 3.5))
for j in range(W52.shape[1]):
    ax.annotate("", W52[:, j].numpy(), (0, 0), arrowprops=dict(arrowstyle="->", color=f"C{j}", lw=2))
    ax.text(*(1.12 * W52[:, j]).numpy(), f"f{j}", color=f"C{j}", ha="center", va="center")
lim = 1.3 * float(W52.norm(dim=0).max())
ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title="columns of W (TMS 5-2)")
plt.show()

# %% [markdown]
# ## The component model
#
# For each chosen matrix $W$ [d_out, d_in] we learn $U$ [d_out, C] and $V$ [d_in, C], with $C$
# larger than the number of features we expect (here 20 for 5 features). A masked layer computes
# $((xV) \odot m)\,U^\top + b$: subcomponent $c$ contributes as much as its mask $m_c \in [0,1]$
# lets it; the bias is frozen and never decomposed. `ComponentModel` wraps the frozen target
# through forward hooks, so with no masks the target runs untouched.
#
# **Causal importance.** A tiny MLP per subcomponent (1 → 16 GELU → 1) reads the subcomponent's
# own inner activation $v_c^\top x$ and outputs $g_c(x)$ through a hard sigmoid $\mathrm{clamp}(\cdot,0,1)$.
# A clamp has zero gradient outside [0, 1], so SPD uses two leaky versions: for the masks, the
# gradient leaks below 0 (only in the direction that raises $g$), so a dead importance can come
# back; for the minimality penalty, the function leaks above 1, so an over-saturated importance is
# still pulled down.

# %%
z = torch.linspace(-0.5, 1.5, 201, requires_grad=True)
fig, axes = plt.subplots(1, 2, figsize=(8.5, 2.8))
lower = lower_leaky_hard_sigmoid(z, 0.05)  # alpha exaggerated to 0.05 (SPD: 0.01) so the leak is visible
upper = upper_leaky_hard_sigmoid(z, 0.05)
(g_lower,) = torch.autograd.grad(-lower.sum(), z)  # a loss that wants g larger (reconstruction)
(g_upper,) = torch.autograd.grad(upper.sum(), z)  # a loss that wants g smaller (minimality)
for y, label in ((lower, "lower-leaky (masks)"), (upper, "upper-leaky (minimality)")):
    axes[0].plot(z.detach(), y.detach(), label=label)
axes[1].plot(z.detach(), -g_lower, label="lower-leaky, loss = −g")
axes[1].plot(z.detach(), g_upper, label="upper-leaky, loss = g")
axes[0].set(title="forward", xlabel="pre-activation")
axes[1].set(title="|gradient| reaching the pre-activation", xlabel="pre-activation")
axes[0].legend(fontsize=8)
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# **Stochastic masks and the losses.** On each input, the masks are $m_c = g_c + (1-g_c)\,r_c$ with
# $r \sim U(0,1)$: an important subcomponent is always kept, an unimportant one is randomly
# ablated. The losses, each a small object with its coefficient:
#
# - *stochastic reconstruction*: MSE between the masked model's output and the target's;
# - *layerwise* stochastic reconstruction: the same with one matrix masked at a time;
# - *importance minimality*: $\sum_c |g_c(x)|^p$, averaged over inputs, which makes few subcomponents important;
# - faithfulness $\lVert W - UV^\top\rVert^2$ is replaced by the $\Delta$-component: the residual
#   $W - UV^\top$ is one extra subcomponent with importance 0, so it is randomly ablated like every
#   unimportant one, and any weight the subcomponents miss shows up in the reconstruction loss.
#
# Settings follow the reference configs (Adam, lr 1e-3 cosine, importance coefficient 3e-3, p = 1,
# C = 20, 200 faithfulness warm-up steps), but with 4× smaller batches and fewer steps so that one
# decomposition takes a minute or two on one CPU core.

# %%
cfg52 = TOY_CONFIGS["tms_5_2"][prof.name]
spd52, spd52_meta = toy_decomposition("tms_5_2", tms52, prof, "spd", seed, retrain)
m52 = toy_metrics("tms_5_2", spd52.model)
print(f"SPD on TMS 5-2: {cfg52['steps']} steps x batch {cfg52['batch_size']}, "
      f"trained in {spd52.seconds:.0f} s (when the artifact was made)")

# %%
# NBVAL_CHECK_OUTPUT
print(f"MMCS  linear1 {m52['mmcs']:.4f}   linear2 {m52['mmcs/linear2']:.4f}")
print(f"ML2R  linear1 {m52['ml2r']:.4f}   linear2 {m52['ml2r/linear2']:.4f}")
print(f"alive linear1 {m52['alive/linear1']}   linear2 {m52['alive/linear2']}   (of C = 20 each)")
print(f"CI pattern errors on one-hot inputs: linear1 {m52['ci_error/linear1']}, linear2 {m52['ci_error/linear2']}")


# %% [markdown]
# Each feature's column of $W$ beside the subcomponent that matches it best ($u_c v_c[j]$, the
# subcomponent's contribution to column $j$), and the norms of all 20 subcomponents: five carry
# the matrix, the rest have shrunk to nothing.

# %%
def plot_subcomponents_vs_features(cm, W, title):
    """Left: W's columns (solid) and the best-matching subcomponent columns (dashed). Right: ‖u_c v_cᵀ‖."""
    comp = cm.component("linear1")
    best, cos, ratio = feature_matches(comp.U, comp.V, W, "in")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
    ax = axes[0]
    for j in range(W.shape[1]):
        c = int(best[j])
        col = (comp.U[:, c] * comp.V[j, c]).detach()  # [m]
        ax.plot([0, W[0, j]], [0, W[1, j]], color=f"C{j}", lw=3, alpha=0.4)
        ax.plot([0, col[0]], [0, col[1]], color=f"C{j}", lw=1.5, ls="--")
        ax.text(*(1.15 * W[:, j]).numpy(), f"f{j}→c{c}", color=f"C{j}", ha="center", va="center", fontsize=8)
    lim = 1.35 * float(W.norm(dim=0).max())
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    norms = (comp.U.norm(dim=0) * comp.V.norm(dim=0)).detach()  # ‖u_c v_cᵀ‖_F = ‖u_c‖ ‖v_c‖
    colors = ["lightgray"] * len(norms)
    for j in range(W.shape[1]):
        colors[int(best[j])] = f"C{j}"
    axes[1].bar(range(len(norms)), norms, color=colors)
    axes[1].set(title="norm of each subcomponent of W", xlabel="subcomponent c", ylabel="‖u_c v_cᵀ‖")
    plt.tight_layout()
    plt.show()


plot_subcomponents_vs_features(spd52.model, W52, "W's columns (solid) vs subcomponents (dashed)")


# %% [markdown]
# Causal importances on the five one-hot inputs (feature $j$ at 0.75, the rest 0): each input
# needs exactly one subcomponent of each matrix, a different one per feature.

# %%
def plot_one_hot_ci(cm, n_features, names, title):
    """Heat maps of g on one-hot inputs, columns ordered by the feature each subcomponent serves."""
    ci = single_feature_ci(cm, n_features)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 0.35 * n_features + 1.4), squeeze=False)
    for ax, n in zip(axes[0], names):
        g = ci[n]  # [n_features, C]
        order = torch.argsort(torch.where(g.max(0).values > 0.1, g.argmax(0).float(), float(n_features)))
        im = ax.imshow(g[:, order], aspect="auto", cmap="Blues", vmin=0, vmax=1)
        ax.set(title=f"{n}", xlabel="subcomponent (sorted)", ylabel="active feature")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="causal importance g")
    fig.suptitle(title)
    plt.show()


plot_one_hot_ci(spd52.model, 5, ["linear1", "linear2"], "TMS 5-2: causal importance on one-hot inputs")

# %% [markdown]
# ## Identity insertion: a matrix that should *not* split
#
# Insert a 2×2 identity between $W$ and $W^\top$. It does nothing, and it has rank 2: on every
# input, the right decomposition of this matrix uses the same two subcomponents (a dense pattern),
# while $W$ and $W^\top$ still split into one subcomponent per feature.

# %%
tms52id, _ = toy_target("tms_5_2_id", prof, seed, retrain)
spd52id, _ = toy_decomposition("tms_5_2_id", tms52id, prof, "spd", seed, retrain)
m52id = toy_metrics("tms_5_2_id", spd52id.model)

# %%
# NBVAL_CHECK_OUTPUT
print(f"MMCS linear1 {m52id['mmcs']:.4f}, alive: linear1 {m52id['alive/linear1']}, "
      f"hidden {m52id['alive/hidden']}, linear2 {m52id['alive/linear2']}")
print("CI pattern errors (identity pattern for linear1/2, dense 2-of-C for hidden):",
      {k.split('/')[1]: v for k, v in m52id.items() if k.startswith("ci_error")})

# %%
plot_one_hot_ci(spd52id.model, 5, ["linear1", "hidden", "linear2"], "TMS 5-2 + identity: CI on one-hot inputs")

# %% [markdown]
# ## TMS 40-10
#
# Forty features in ten dimensions: no longer a picture in the plane, but the same test. The
# reference decomposes with C = 200 per matrix, p = 2 and an importance coefficient of 1e-4, with
# batches of 4096 for 10k steps on a GPU.

# %%
tms4010, tms4010_meta = toy_target("tms_40_10", prof, seed, retrain)
spd4010, _ = toy_decomposition("tms_40_10", tms4010, prof, "spd", seed, retrain)
m4010 = toy_metrics("tms_40_10", spd4010.model)
cfg4010 = TOY_CONFIGS["tms_40_10"][prof.name]
print(f"SPD on TMS 40-10: C {cfg4010.get('C', TOY_CONFIGS['tms_40_10']['C'])}, {cfg4010['steps']} steps x batch "
      f"{cfg4010['batch_size']}, trained in {spd4010.seconds:.0f} s")

# %%
# NBVAL_CHECK_OUTPUT
print(f"MMCS  linear1 {m4010['mmcs']:.4f}   linear2 {m4010['mmcs/linear2']:.4f}")
print(f"ML2R  linear1 {m4010['ml2r']:.4f}   linear2 {m4010['ml2r/linear2']:.4f}")
print(f"alive linear1 {m4010['alive/linear1']}   linear2 {m4010['alive/linear2']}")
print(f"CI pattern errors: linear1 {m4010['ci_error/linear1']}, linear2 {m4010['ci_error/linear2']}")

# %%
plot_one_hot_ci(spd4010.model, 40, ["linear1", "linear2"], "TMS 40-10: causal importance on one-hot inputs")

# %% [markdown]
# ## The residual MLP: compressed computation
#
# 100 features live in a 1000-wide residual stream through a fixed random embedding $W_E$; one
# ReLU MLP with only 50 neurons is trained so that the output is $x + \mathrm{ReLU}(x)$, i.e. it
# computes 100 ReLUs with 50 neurons. The right decomposition of its input matrix has one
# subcomponent per feature (100), each reading one feature's direction, even though the matrix
# has rank 50: the subcomponents are not linearly independent, and only the sparsity of the inputs
# makes them separable. The output matrix, by contrast, is used densely.

# %%
rmlp, rmlp_meta = toy_target("resid_mlp", prof, seed, retrain)
print(f"residual MLP target: final training MSE {rmlp_meta['metrics']['final_loss']:.5f}")
spd_r, _ = toy_decomposition("resid_mlp", rmlp, prof, "spd", seed, retrain)
m_r = toy_metrics("resid_mlp", spd_r.model)

# %%
# NBVAL_CHECK_OUTPUT
print(f"alive: mlp_in {m_r['alive/mlp_in']} (goal 100 ± 10), mlp_out {m_r['alive/mlp_out']}")

# %%
plot_one_hot_ci(spd_r.model, 100, ["mlp_in", "mlp_out"], "residual MLP: causal importance on one-hot inputs")

# %% [markdown]
# ## VPD: adversarial masks
#
# SPD checks that the unimportant subcomponents can be ablated *on average* over random masks. A
# decomposition can pass that test and still fail badly for a specific mask: random masks rarely
# hit the worst combination. VPD trains against the worst case. Mask *sources* $r \in [0,1]$ (one
# per example and subcomponent, plus one for Δ) persist across training steps; before each step
# they are pushed uphill on the reconstruction loss by a few Adam steps (lr 0.01, betas 0.5/0.99)
# and clamped to [0, 1]; the decomposition then trains to be faithful under them. Subset routing
# masks a random subset of matrices per example. At evaluation the attack is stricter than
# training: fresh sources *shared by the whole batch* and 20 sign-gradient steps of size 0.1, so
# the adversary must find a systematic flaw, not a per-example one.
#
# We decompose the residual MLP again, with VPD's adversarial loss added, and attack both.

# %%
vpd_r, _ = toy_decomposition("resid_mlp", rmlp, prof, "vpd", seed, retrain)
m_rv = toy_metrics("resid_mlp", vpd_r.model)
x_eval = toy_inputs("resid_mlp", 512 if prof.is_ci else 4096)
attack = {name: adversarial_attack(d.model, x_eval, n_steps=20, step_size=0.1)
          for name, d in (("SPD", spd_r), ("VPD", vpd_r))}
rand = {name: random_mask_loss(d.model, x_eval) for name, d in (("SPD", spd_r), ("VPD", vpd_r))}

# %%
# NBVAL_CHECK_OUTPUT
for name in attack:
    print(f"{name}: MSE under random masks {rand[name]:.3g}; under the 20-step attack {attack[name][-1]:.3g}")
print(f"VPD alive: mlp_in {m_rv['alive/mlp_in']}, mlp_out {m_rv['alive/mlp_out']}")
adv_ratio = attack["VPD"][-1] / attack["SPD"][-1]
print(f"VPD / SPD under the attack: {adv_ratio:.3f}")

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
for name, h in attack.items():
    ax.plot(range(len(h)), h, marker="o", ms=3, label=name)
    ax.axhline(rand[name], ls=":", color=ax.lines[-1].get_color(), lw=1)
ax.set(yscale="log", xlabel="attack steps (sign gradient, shared sources)", ylabel="output MSE vs target",
       title="residual MLP: divergence under adversarial masks (dotted: random masks)")
ax.legend()
plt.show()

# %% [markdown]
# ## Claims

# %%
claims = [
    Claim("tms_5_2_mmcs", "SPD on TMS 5-2: mean max cosine similarity of subcomponents with W's columns",
          round(m52["mmcs"], 4), paper=1.0, target=">= 0.99", holds=m52["mmcs"] >= 0.99),
    Claim("tms_5_2_ml2r", "SPD on TMS 5-2: mean norm ratio of the best-matching subcomponent to W's column",
          round(m52["ml2r"], 4), paper="0.99-1.03", target="0.95-1.05", holds=0.95 <= m52["ml2r"] <= 1.05),
    Claim("tms_5_2_alive", "SPD on TMS 5-2: alive subcomponents of W (important on some inputs)",
          m52["alive/linear1"], paper=5, target="= 5", holds=m52["alive/linear1"] == 5),
    Claim("tms_40_10_mmcs", "SPD on TMS 40-10: MMCS with W's columns",
          round(m4010["mmcs"], 4), paper=1.0, target=">= 0.98", holds=m4010["mmcs"] >= 0.98),
    Claim("tms_40_10_alive", "SPD on TMS 40-10: alive subcomponents of W",
          m4010["alive/linear1"], paper=40, target="= 40", holds=m4010["alive/linear1"] == 40),
    Claim("resid_mlp_alive_in", "SPD on the residual MLP: alive subcomponents of the input matrix",
          m_r["alive/mlp_in"], paper=100, target="100 ± 10", holds=abs(m_r["alive/mlp_in"] - 100) <= 10),
    Claim("vpd_vs_spd_adv_kl_ratio",
          "residual MLP: VPD's output divergence (MSE) under a 20-step shared-source attack over SPD's",
          round(adv_ratio, 4), target="< 1", holds=adv_ratio < 1),
]
results = write_results("05_parameter_decomposition", prof, claims)
claims_table(results)
