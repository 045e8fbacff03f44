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
# # 3. Circuits: the smallest part of the model that does the task
#
# **What you will learn.** How to cut a trained transformer down to the few neurons and channels
# that a task needs, following Gao et al. (2025) {cite}`gao2025weightsparse`: every node (one
# neuron, one q/k/v channel, one residual read or write) gets a learned on/off mask; pruned nodes
# are replaced by their mean activation; a penalty on the number of kept nodes drives the mask
# down until only the circuit is left. Then we check that the circuit is *sufficient* (alone, it
# still does the task on prompts it never saw) and *necessary* (without it, the model fails), read
# its mechanism off the activations, and attack it where the mechanism predicts it should break.
# The paper published no pruning code; this chapter is an open implementation, built from its
# description.
#
# **What the paper claims.** In weight-sparse models, task circuits are tiny (the quote circuit:
# 12 nodes, 9 edges) and readable: a layer-0 "quote detector" and "quote-type" classifier, and an
# attention head that copies the quote type to the end. The bracket circuit averages `[` signals
# with a near-uniform head, and so fails on distractor brackets and on long lists. Learned masks
# find much smaller circuits than attribution-based pruning, and sparse models' circuits are about
# 16× smaller than dense models' at matched loss.

# %% tags=["remove-cell"]
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

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, display

from circuitbook import device, get_profile, seed_everything, set_threads, viz, zoo
from circuitbook.circuits import (
    NodeSet,
    ablation_hooks,
    all_kept,
    circuit_alone,
    circuit_edges,
    circuit_removed,
    circuit_size,
    draw_circuit,
    evaluate_masked,
    examples_html,
    examples_text,
    heaviside,
    node_examples,
    plotly_circuit,
    top_k_kept,
)
from circuitbook.circuits.draw import short_site
from circuitbook.data.attacks import bracket_attack_examples, bracket_length_sweep
from circuitbook.data.corpus import EOT, load_corpus
from circuitbook.data.strings import IN_DOUBLE, IN_SINGLE, IN_TRIPLE, string_windows
from circuitbook.data.tasks import encode_examples, evaluate_task, last_occurrence
from circuitbook.results import Claim, claims_table, write_results

prof = get_profile(profile)
seed_everything(seed)
set_threads()  # every usable core, or OMP_NUM_THREADS when set (`make test` sets 1)
viz.setup()

QUOTE, BRACKET, SOS = zoo.CIRCUIT_TASKS

# %% [markdown]
# ## The model and the tasks
#
# The weight-sparse model chosen in chapter 2 by its rule (d_model 64, 4 layers, 1 in 4 weights kept,
# 12.6M tokens), and three of the book's binary tasks: close a string with the quote that opened it,
# close a list with `]` or `]]` by its nesting depth, and continue `current` with `.` (a set) or ` +=`
# (a string).

# %%
# NBVAL_CHECK_OUTPUT
model, _ = zoo.the_sparse_model(prof, seed=seed)
model = model.float().eval()
model_name = zoo.the_sparse_name(prof, seed)
tok = zoo.tokenizer(prof)
streams = zoo.token_streams(prof, tok)
sets = zoo.task_sets(prof, tok, seed)
for t in zoo.CIRCUIT_TASKS:
    print(f"{t:20s} example prompt ending: {sets.examples[t][0].prompt[-40:]!r} -> {sets.examples[t][0].correct!r}")
    print(f"{'':20s} held-out accuracy of the whole model {evaluate_task(model, sets.test[t])['acc']:.3f}")

# %% [markdown]
# ## Nodes: one vocabulary of locations
#
# A node is one channel of one hook site: a residual *read* (the output of each norm), a q, k or v
# channel, an attention or MLP *write* to the residual stream, or one MLP neuron. The string that
# names the hook names the node's site, so masks, caches and drawings all speak the same language.

# %%
# NBVAL_CHECK_OUTPUT
nodes = NodeSet.from_model(model)
by_kind = pd.Series(dict(zip(nodes.sites, nodes.widths))).groupby(lambda s: nodes.kind(s)).sum()
print(f"{len(nodes):,} nodes in {len(nodes.sites)} sites, e.g. {nodes.sites[:3]}")
display(by_kind.to_frame("nodes"))

# %% [markdown]
# ## Mean ablation
#
# A pruned node is not set to zero but to its *mean* over the pretraining distribution, so the rest
# of the model sees a typical value rather than an impossible one. A mask of all ones must be the
# model itself; a mask of all zeros leaves nothing that depends on the prompt, and the task falls
# to chance (loss ln 2 = 0.693, accuracy about 0.5).

# %%
# NBVAL_CHECK_OUTPUT
means = zoo.circuit_means(prof, model, model_name, seed)
quote_test = sets.test[QUOTE]
ones = all_kept(nodes, device())
zeros = {s: torch.zeros_like(m) for s, m in ones.items()}
with torch.no_grad():
    same = torch.allclose(model(quote_test.tokens), model.run_with_hooks(
        quote_test.tokens, fwd_hooks=ablation_hooks(ones, means)), atol=1e-5)
print("all kept   ", evaluate_masked(model, quote_test, ones, means), "identical logits:", same)
print("all ablated", evaluate_masked(model, quote_test, zeros, means))

# %% [markdown]
# ## Learned masks
#
# One score per node, clamped to [-1, 1]. The forward pass keeps the node when its score is
# positive (a Heaviside step); the backward pass pretends the step was a sigmoid with a
# temperature, so that a node just below or above zero still learns which way to go:
#
# $$ g(s) = \mathbb{1}[s > 0], \qquad \frac{\partial g}{\partial s} := \frac{1}{T}\,\sigma(s/T)\,(1-\sigma(s/T)). $$
#
# The loss is the task's binary cross-entropy (over the two candidate tokens) plus `k_coef` times
# the number of kept nodes.

# %%
s = torch.linspace(-1, 1, 201, requires_grad=True)
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
for T in (0.3, 1.0, 3.0):
    s.grad = None
    g = heaviside(s, T)
    g.sum().backward()
    axes[1].plot(s.detach(), s.grad, label=f"T = {T}")
axes[0].plot(s.detach(), g.detach())
axes[0].set(title="forward: Heaviside", xlabel="score")
axes[1].set(title="backward: sigmoid surrogate", xlabel="score")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Pruning, and searching its settings
#
# After training, the nodes are ranked by score and the number kept is bisected to the smallest
# top-ranked set whose loss reaches the target. Two details matter at our scale:
#
# - **The target.** The paper's target is a task loss of 0.15. The mask is trained, and the
#   bisection run, on 400 train prompts; the circuit is then judged on 400 held-out ones. We bisect
#   to 0.12 on the train prompts so that the held-out loss lands under 0.15.
# - **Where to bisect.** Past the nodes the mask itself kept (score > 0) the loss need not fall as
#   more nodes are added: half a path is worse than none. `smallest_circuit` bisects within the
#   mask's own nodes when they reach the target, and over all nodes only when they do not.
#
# The paper searched `k_coef`, the learning rate, the temperature and the initialisation with CARBS
# (32 iterations); we use Optuna's TPE sampler, with fewer trials (below), starting from k_coef
# 1e-3 (at the paper's centre, 1e-4, the book's first chosen model, d128 with 5,760 nodes, kept
# about 100 nodes at a loss far below the target: the penalty is too weak to trade loss for size).
# Each trial trains a mask and bisects; its score is the circuit's node count. The full-profile
# searches ship as artifacts (`python -m circuitbook build circuit_search_<task>` makes one).

# %%
# NBVAL_CHECK_OUTPUT
base = zoo.prune_config(prof, seed=seed)
print(base)
searches, timings = {}, {}
for t in zoo.CIRCUIT_TASKS:
    start = time.time()
    searches[t] = zoo.circuit_search(prof, t, seed, retrain=retrain)
    timings[t] = time.time() - start
circuits = {t: r.circuit for t, r in searches.items()}
trials = pd.concat({t: pd.DataFrame(r.trials).set_index("trial") for t, r in searches.items()})
display(trials.round(4))
for t, c in circuits.items():
    print(f"{t:20s} best: {c.summary()}  (k_coef {searches[t].config.k_coef:.2g}, lr {searches[t].config.lr:.2g})")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for i, t in enumerate(zoo.CIRCUIT_TASKS):
    tr = trials.loc[t]
    ok = tr["loss"] <= base.target_loss
    axes[0].scatter(tr.loc[ok, "k_coef"], tr.loc[ok, "n_nodes"], color=f"C{i}", label=t)
    axes[0].scatter(tr.loc[~ok, "k_coef"], tr.loc[~ok, "n_nodes"], color=f"C{i}", marker="x")
    h = pd.DataFrame(circuits[t].info["history"])
    axes[1].plot(h["step"], h["n_kept"], color=f"C{i}", label=f"{t} (kept nodes)")
axes[0].set(xscale="log", yscale="log", xlabel="k_coef", ylabel="circuit nodes",
            title="search trials (x: target missed)")
axes[0].legend(fontsize=8)
axes[1].set(yscale="log", xlabel="mask training step", ylabel="nodes the mask keeps", title="the best trial's mask")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The bisection walks the curve of task loss against the number of top-scored nodes kept. The
# curve is not monotone near its edge: one late node can carry the task, which is why a circuit's
# size is read off the bisection, not off the mask's own count.

# %%
# size_loss_curve(model, sets.train[t], means, nodes, c.scores, zoo.curve_sizes(c)) per task, cached as an
# artifact (`size_loss_<task>`: deterministic, and two minutes of masked forward passes at full)
curves = {t: zoo.search_curve(prof, t, seed, retrain=retrain) for t in circuits}
fig, ax = plt.subplots(figsize=(7, 3.4))
for i, (t, cv) in enumerate(curves.items()):
    ax.plot(list(cv), list(cv.values()), "o-", ms=3, color=f"C{i}", label=f"{t}: {circuits[t].n_nodes} nodes")
    ax.plot([circuits[t].n_nodes], [cv[circuits[t].n_nodes]], "k*", ms=10)
ax.axhline(base.target_loss, color="k", ls="--", lw=1)
ax.set(xscale="log", yscale="log", xlabel="top-scored nodes kept", ylabel="task loss (train prompts)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Sufficient and necessary
#
# On the *held-out* prompts: the circuit alone (everything else mean-ablated) should still reach
# the paper's target loss of 0.15, and the model without the circuit (its nodes mean-ablated, the
# rest intact) should fall toward chance. Size is counted in nodes and in edges, the nonzero weights
# between kept nodes (the paper's headline metric; `circuitbook.circuits.edges` spells out the
# convention).

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for t, c in circuits.items():
    size = circuit_size(model, c)
    alone, removed = circuit_alone(model, c, sets.test[t], means), circuit_removed(model, c, sets.test[t], means)
    rows.append({"task": t, "nodes": size["nodes"], "edges": size["edges"], "alone loss": alone["loss"],
                 "alone acc": alone["acc"], "removed acc": removed["acc"]})
table = pd.DataFrame(rows).set_index("task")
display(table.round(3))
print("whole model, held-out loss:", {t: round(evaluate_task(model, sets.test[t])["loss"], 3) for t in circuits})

# %% [markdown]
# All three circuits are sufficient and necessary: alone they stay under the target on prompts they
# never saw, and without them the model is at chance. They are not as small as the paper's, though:
# 26 to 33 nodes where the paper's quote circuit has 12. Part of the difference is bookkeeping (our
# circuits keep the residual reads that feed a head's queries and keys, up to one per embedding
# channel the head reads), part is the search (6 trials here, 32 in the paper), and part is the
# model: ours is 32 times narrower, so each channel carries more. All three live in layer 0's
# attention and the final reads: no MLP neuron and no later layer is kept.
#
# ## The quote circuit
#
# Nodes are coloured by kind, columns are sites in forward order; edges are the nonzero weights
# between kept nodes (red positive, blue negative, grey the residual stream's identity). In the
# interactive version, hover over a node to see the corpus tokens where it is largest.

# %%
qc = circuits[QUOTE]
draw_circuit(model, qc)
plt.show()
examples = node_examples(model, qc, streams["val"], tok, k=4)
plotly_circuit(model, qc, hover={n: examples_text(e) for n, e in examples.items()}, title="quote circuit").show()
print("kept nodes per site:", {short_site(s): len(ch) for s, ch in qc.by_site().items()})

# %% [markdown]
# ### Which node knows the quote type?
#
# For every node of the circuit, its value at the opening quote and at the last token of each
# held-out prompt, split by the quote that opened the string. A *quote detector* is positive at
# both quotes; a *quote-type* node is one whose sign separates `'` from `"`.

# %%
# NBVAL_CHECK_OUTPUT
from circuitbook.separation import sign_separation

quote_ids = [tok.single_token(q) for q in ("'", '"', " '", ' "')]  # a string opens with one of these tokens
openpos = last_occurrence(quote_test, quote_ids)  # the last quote before the end opens the unclosed string
is_double = (quote_test.correct == tok.single_token('"')).long()
ar = torch.arange(len(openpos))
with torch.no_grad():
    _, cache = model.run_with_cache(quote_test.tokens)

rows = []
for site, ch in qc.node_list():
    a = cache[site].reshape(len(ar), quote_test.tokens.shape[1], -1)[..., ch]
    row = {"node": nodes.label(site, ch)}
    for where, pos in (("open", openpos), ("last", quote_test.last)):
        v = a[ar, pos]
        row[f"{where}: mean '"] = float(v[is_double == 0].mean())
        row[f'{where}: mean "'] = float(v[is_double == 1].mean())
        row[f"{where}: sign separates"] = float(sign_separation(v, is_double))  # share on its quote's side of 0
    rows.append(row)
quote_nodes = pd.DataFrame(rows).set_index("node")
display(quote_nodes.sort_values("last: sign separates", ascending=False).head(30).round(3))
# the quote-type node: the best separating node at the last token that is not the final read
candidates = quote_nodes[~quote_nodes.index.str.startswith("final")]
qtype_node = candidates["last: sign separates"].idxmax()
best_sep = candidates.loc[qtype_node, "last: sign separates"]
print(f"quote-type node: {qtype_node} (sign separates ' from \" on {best_sep:.3f}"
      " of held-out prompts at the last token)")
detectors = quote_nodes[(quote_nodes["open: mean '"] > 0) & (quote_nodes['open: mean "'] > 0)]
print("positive at both opening quotes (detector candidates):", list(detectors.index))

# %% [markdown]
# ### The head that carries it to the end
#
# The circuit's q, k and v channels belong to a few heads. How much of the last token's attention
# goes to the opening quote, in the whole model and in the circuit alone?

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad(), model.hooks(fwd_hooks=ablation_hooks(qc.masks(), means)):
    _, circ_cache = model.run_with_cache(quote_test.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
head_rows = []
for (l, h), n_qkv in qc.heads.items():
    key = f"blocks.{l}.attn.hook_pattern"
    head_rows.append({"head": f"L{l}h{h}",
                      "q/k/v nodes": n_qkv,
                      "attn last->quote (model)": float(cache[key][ar, h, quote_test.last, openpos].mean()),
                      "attn last->quote (circuit)": float(circ_cache[key][ar, h, quote_test.last, openpos].mean())})
display(pd.DataFrame(head_rows).set_index("head").round(3))
qtype = next(n for n in qc.node_list() if nodes.label(*n) == qtype_node)  # (site, channel)
into = [e for e in circuit_edges(model, qc) if e.dst == qtype]
print(f"weights into the quote-type node {qtype_node}:")
for e in into:
    print(f"  {nodes.label(*e.src):18s} --{e.via}--> {e.weight:+.3f}")

# %% [markdown]
# Read together, the tables give the mechanism. The circuit lives entirely in layer 0 and uses one
# attention head. Its *keys* are large at both kinds of opening quote: they are the quote detector
# (positive for both quotes, as in the paper), read straight from the embedding. Its *query* at the
# last token is large and nearly the same for both quote types: a near-constant query, again as in
# the paper, so the head attends to wherever the detector fired. Its *values* are where the type
# lives: three value channels are zero at a single quote and on at a double quote, and the output
# matrix W_O adds them, with positive weights, onto one residual channel. That channel is the
# quote-type node: at the last token it is near zero or below after a single quote and positive
# after a double one, so its sign says which quote opened the string. Unlike the paper's model, ours
# does not compute the type in an MLP at the quote token; the head's OV circuit turns one-hot value
# channels into one signed channel, and the final reads take the residual channels straight to the
# logits (the circuit keeps no MLP neuron).

# %% [markdown]
# ### Does the sign hold on real code?
#
# The task prompts are generated; the corpus has real Python strings, with prefixes, escapes and
# f-strings. Python's own tokenizer finds every literal (`circuitbook.data.strings`); for every
# token inside a one-line literal, does the quote-type node's sign agree with the quote that opened
# it? A value of exactly zero (AbsTopK silenced the channel) counts as a miss. Triple-quoted
# docstrings are counted apart: `"""` is a token of its own.

# %%
# NBVAL_CHECK_OUTPUT
docs = load_corpus(prof)["val"].split(EOT)
n_windows = 400 if prof.name == "full" else 40
W, L = string_windows(docs, tok, model.cfg.n_ctx, n_windows)
site, ch = qtype
with torch.no_grad():
    _, cc = model.run_with_cache(W, names_filter=site)
a = cc[site].reshape(*W.shape, -1)[..., ch]
single_sign = 1.0 if quote_nodes.loc[qtype_node, "last: mean '"] > quote_nodes.loc[qtype_node, 'last: mean "'] else -1.0
agree = {"'": torch.sign(a[L == IN_SINGLE]) == single_sign, '"': torch.sign(a[L == IN_DOUBLE]) == -single_sign}
n_in = sum(len(v) for v in agree.values())
corpus_agreement = float(sum(v.sum() for v in agree.values()) / max(n_in, 1))
inside = torch.cat([a[L == IN_SINGLE], a[L == IN_DOUBLE]])
nonzero_agreement = float(sum(v.sum() for v in agree.values()) / max(int((inside != 0).sum()), 1))
triple = a[L == IN_TRIPLE]
n_s, n_d = len(agree["'"]), len(agree['"'])
print(f"{qtype_node} on {n_in} tokens inside one-line strings ({n_s} in ', {n_d} in \") "
      f"of {len(W)} windows: sign agreement {corpus_agreement:.3f} (' {float(agree[chr(39)].float().mean()):.3f}, "
      f"\" {float(agree[chr(34)].float().mean()):.3f}); {float((inside == 0).float().mean()):.1%} exactly zero; "
      f"among nonzero values {nonzero_agreement:.3f}")
print(f"inside docstrings ({len(triple)} tokens): positive on {float((triple > 0).float().mean()):.3f}, "
      f"negative on {float((triple < 0).float().mean()):.3f}")

# %%
fig, ax = plt.subplots(figsize=(7, 3))
bins = np.linspace(float(a.min()), float(a.max()), 50)
ax.hist(a[L == IN_SINGLE].cpu().numpy(), bins, alpha=0.6, density=True, label="inside '...'")
ax.hist(a[L == IN_DOUBLE].cpu().numpy(), bins, alpha=0.6, density=True, label='inside "..."')
ax.hist(a[L == 0].cpu().numpy(), bins, alpha=0.3, density=True, label="outside strings", color="grey")
ax.set(xlabel=qtype_node, ylabel="density", title="the quote-type node on the validation corpus")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# On real code the node keeps its meaning, but less cleanly than on the task's prompts: its sign
# follows the quote type on most tokens inside one-line strings, better inside `"`-strings than
# inside `'`-strings, and a fraction of its values are exactly zero (AbsTopK silenced the channel on
# those tokens). Inside docstrings it carries no type (`"""` is a different token, which the
# detector keys do not fire on). The claims table reports the strict agreement (zeros count as
# misses) against the goal of 0.9, and the agreement among nonzero values beside it.

# %% [markdown]
# ## Bracket counting, and how to break it
#
# The paper's bracket circuit reads `[` from the embedding into a few residual channels and lets a
# head with near-uniform attention average them: the mean encodes the nesting depth. Our tokenizer
# makes `[[` a single token, so depth 2 can be read from one token's embedding. Below: the circuit,
# then its heads' attention, then the two attacks the averaging mechanism predicts.

# %%
bc = circuits[BRACKET]
draw_circuit(model, bc)
plt.show()
bt = sets.test[BRACKET].to(device())
bracket_ids = [i for i in range(len(tok.tok.get_vocab())) if "[" in tok.decode([i])]
with torch.no_grad():
    _, bcache = model.run_with_cache(bt.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
rows = []
for l, h in bc.heads:
    p = bcache[f"blocks.{l}.attn.hook_pattern"][torch.arange(len(bt.last)), h, bt.last]  # [batch, key]
    on_bracket = torch.isin(bt.tokens, torch.tensor(bracket_ids, device=device())).float()
    ent = -(p.clamp_min(1e-9).log() * p).sum(-1)
    rows.append({"head": f"L{l}h{h}", "attn to sink (pos 0)": float(p[:, 0].mean()),
                 "attn to [-tokens": float((p * on_bracket).sum(-1).mean()),
                 "entropy / log(len)": float((ent / (bt.last + 1).float().log()).mean())})
display(pd.DataFrame(rows).set_index("head").round(3))

# %% [markdown]
# **The attacks.** *Distractor*: a closed nested list `[[…], […]]` on an earlier line (a closed flat
# list is also tried; it carries no `[[`). *Long lists*: 20–30 elements at depth 1, 4–6 groups of
# 4–6 at depth 2, which dilute an averaged signal. All prompts come from the held-out split.

# %%
# NBVAL_CHECK_OUTPUT
n_attack = 200 if prof.name == "full" else 40
attacks = {}
for kind in ("normal", "flat", "distractor", "long"):
    exs = [e for e in bracket_attack_examples(kind, n_attack, seed=123 + seed)
           if len(tok.encode(e.prompt)) <= model.cfg.n_ctx]
    b = encode_examples(exs, tok)
    d1 = b[b.labels == 0]
    attacks[kind] = {"prompts": len(exs), "model acc": evaluate_task(model, b)["acc"],
                     "model acc, depth 1": evaluate_task(model, d1)["acc"],
                     "circuit acc": circuit_alone(model, bc, b, means)["acc"]}
attacks = pd.DataFrame(attacks).T
display(attacks.round(3))
distractor_drop = attacks.loc["normal", "model acc"] - attacks.loc["distractor", "model acc"]
long_drop = attacks.loc["normal", "model acc"] - attacks.loc["long", "model acc"]
distractor_drop1 = attacks.loc["normal", "model acc, depth 1"] - attacks.loc["distractor", "model acc, depth 1"]
print(f"accuracy drop: distractor {distractor_drop:.3f} (depth-1 prompts {distractor_drop1:.3f}), "
      f"long lists {long_drop:.3f}")

# %% [markdown]
# **The depth signal against list length.** For depth-1 lists of exactly n elements: the model's
# accuracy, and the value at the last token of each attention write the circuit keeps (the heads'
# output into the residual stream, where an average would live).

# %%
lengths = [1, 2, 4, 6, 8, 12, 16, 20, 25, 30] if prof.name == "full" else [1, 4, 12]
sweep = bracket_length_sweep(lengths, n=40 if prof.name == "full" else 8, seed=seed)
writes = [(s, ch) for s, ch in bc.node_list() if s.endswith("hook_attn_out")]
rows = []
for n_items, exs in sweep.items():
    exs = [e for e in exs if len(tok.encode(e.prompt)) <= model.cfg.n_ctx]
    if not exs:
        continue
    b = encode_examples(exs, tok)
    with torch.no_grad():
        _, sc = model.run_with_cache(b.tokens, names_filter=lambda n: n.endswith("hook_attn_out"))
    row = {"elements": n_items, "acc": evaluate_task(model, b)["acc"]}
    for s, ch in writes:
        row[nodes.label(s, ch)] = float(sc[s][torch.arange(len(b.last)), b.last, ch].mean())
    rows.append(row)
sweep_df = pd.DataFrame(rows).set_index("elements")
fig, ax = plt.subplots(figsize=(7, 3.2))
for col in sweep_df.columns[1:]:
    ax.plot(sweep_df.index, sweep_df[col], "o-", ms=3, label=col)
ax.set(xlabel="elements in the open depth-1 list", ylabel="value at the last token")
ax2 = ax.twinx()
ax2.plot(sweep_df.index, sweep_df["acc"], "k--", label="model accuracy")
ax2.set(ylabel="accuracy", ylim=(0, 1.05))
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.12, 1))
plt.tight_layout()
plt.show()
display(sweep_df.round(3))

# %% [markdown]
# The bracket circuit is again one layer-0 head, which puts three quarters of its attention on bracket
# tokens; what it writes to the residual stream changes steadily with the length of the open list, and
# accuracy falls as the list grows (from 1.0 at 8 elements to about 0.1 to 0.4 at 20 to 30), as an
# averaging mechanism predicts: long lists cost half the accuracy, and more on depth-1 prompts. The
# distractor, which broke the book's first sparse model (it lost 0.27 of its accuracy, more than half
# on depth 1), barely moves this one (0.02): a closed `[[` earlier in the function no longer makes
# depth-1 lists look deeper to the whole model, although the circuit alone still falls for it (its
# accuracy drops to 0.57). The whole model uses more than the circuit to resist it.

# %% [markdown]
# ## Set or string
#
# The paper's set-or-string circuit takes two hops: one head copies what `current` was set to
# (`set()` or `""`) onto the `current` token of that line, and a later head attends from the last
# `current` back to it. Here is ours, and where its heads look from the last token.

# %%
# NBVAL_CHECK_OUTPUT
sc_ = circuits[SOS]
draw_circuit(model, sc_)
plt.show()
st = sets.test[SOS]
cur = tok.encode("\n    current")[-1]
first_cur = torch.tensor([int((row == cur).nonzero()[0, 0]) if (row == cur).any() else 0 for row in st.tokens])
with torch.no_grad():
    _, scache = model.run_with_cache(st.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
rows = []
for l, h in sc_.heads:
    p = scache[f"blocks.{l}.attn.hook_pattern"][torch.arange(len(st.last)), h, st.last]  # [batch, key]
    ar_s = torch.arange(len(st.last))
    rows.append({"head": f"L{l}h{h}", "attn last -> first `current`": float(p[ar_s, first_cur].mean()),
                 "attn last -> its initialiser": float(p[ar_s, (first_cur + 2).clamp_max(p.shape[1] - 1)].mean()),
                 "attn to sink": float(p[:, 0].mean())})
sos_heads = pd.DataFrame(rows).set_index("head")
display(sos_heads.round(3))
hop = sos_heads["attn last -> its initialiser"].idxmax()
print(f"the head that looks back at `set()` / '\"\"' from the last `current`: {hop} "
      f"({sos_heads.loc[hop, 'attn last -> its initialiser']:.3f} of its attention)")

# %% [markdown]
# The set-or-string circuit, like the other two, lives in layer 0's attention. One head does the
# looking back: from the last `current` it attends to the token that initialised it (`set` or `""`)
# rather than to the first `current`, so in our model the information is fetched from the initialiser
# directly, in one hop. The paper's two-hop story (copy the type onto `current` first) is not what our
# circuit does.

# %% [markdown]
# ## Learned masks against attribution
#
# The baseline ranks nodes by |activation × gradient| of the task loss and keeps the top ones, with
# the same mean ablation and the same bisection to the same target. Size in edges.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for t, c in circuits.items():
    # attribution_prune(model, sets.train[t], means, nodes, target_loss=base.target_loss), cached as an
    # artifact (`circuit_attribution_<task>`: deterministic, minutes of bisection at full)
    attr = zoo.attribution_circuit(prof, t, seed, retrain=retrain)
    a_size, l_size = circuit_size(model, attr), circuit_size(model, c)
    rows.append({"task": t, "attribution nodes": a_size["nodes"], "attribution edges": a_size["edges"],
                 "learned nodes": l_size["nodes"], "learned edges": l_size["edges"],
                 "attribution loss": attr.loss, "edge ratio": a_size["edges"] / max(l_size["edges"], 1)})
attr_table = pd.DataFrame(rows).set_index("task")
display(attr_table.round(3))
attr_ratio = float(attr_table.loc[QUOTE, "edge ratio"])

# %% [markdown]
# At the same target loss, attribution pruning needs about as many edges as learned masks on the quote
# task (1.2 times), but 10 and 38 times more on the other two: ranking nodes one at a time by a
# first-order estimate misses that nodes work in groups, which the learned mask sees by ablating them
# together.

# %% [markdown]
# ## Sparse against dense
#
# The same pruning on the chapter-1 dense baseline (same depth; width 128 against the sparse model's 64,
# so about twice the nodes), at the same target loss. For a fair comparison neither side is searched:
# both use the base settings (`prune_config`), which is also the search's first trial.

# %%
# NBVAL_CHECK_OUTPUT
dense = zoo.dense_baseline(prof, seed=seed)[0].float().eval()
dense_name = f"dense_baseline{zoo.suffix(seed)}"
dc = zoo.pruned_circuit(prof, dense, dense_name, QUOTE, base, seed)
qc_base = zoo.pruned_circuit(prof, model, model_name, QUOTE, base, seed)
dense_means = zoo.circuit_means(prof, dense, dense_name, seed)
dense_size, sparse_size = circuit_size(dense, dc), circuit_size(model, qc_base)
dense_alone = circuit_alone(dense, dc, sets.test[QUOTE], dense_means)
dense_ratio = dense_size["edges"] / max(sparse_size["edges"], 1)
print(dc.summary(), f"held-out loss alone {dense_alone['loss']:.3f}")
print(f"dense: {dense_size['nodes']} nodes, {dense_size['edges']} edges; sparse (same settings): "
      f"{sparse_size['nodes']} nodes, {sparse_size['edges']} edges -> edge ratio {dense_ratio:.1f} "
      f"(against the searched sparse circuit: {dense_size['edges'] / max(circuit_size(model, qc)['edges'], 1):.1f})")

# %%
draw_circuit(dense, dc, labels=False)
plt.show()

# %% [markdown]
# ## The capability-interpretability frontier
#
# The paper finds that sparser models (at a given width) have smaller circuits but a worse loss, and that wider
# sparse models push the frontier out. Chapter 2 draws that frontier across its whole family (section "The
# capability-interpretability frontier" there, claim `sparse_frontier`): every model's quote circuit by the
# second method below, against its validation loss, coloured by width. (This section drew it with the first
# method on chapter 2's first, retired family.)

# %% [markdown]
# ## The second method: pruning that measures size
#
# An independent check of the sections above found three faults in how they count a circuit. The mask's
# scores clamp at 1, and ties broke by node index: 29 of the 35 bracket nodes and 56 of the 109
# set-or-string nodes scored exactly 1.0, so the order the bisection walked, and the counts it returned,
# were arbitrary. The mask's own loss settled far below the target (0.017 against 0.12 for quote), so the
# penalty was not what set the size. And six search trials could miss the narrow band of `k_coef` where
# the mask is small and still sufficient. The second method (`prune_v2`) fixes each of these:
#
# - **An order with no ties.** Nodes are ranked by score. Within a group of equal scores they are ranked by
#   their measured leave-one-out effect on the mask's circuit. Nodes that no measurement tells apart are kept
#   or dropped together, so renumbering the nodes cannot change the size (`tests/test_prune_v2.py`).
# - **A dual update of `k_coef`.** The sparsity pressure rises while the running task loss is under the
#   target and falls while it is over, so the mask settles at the target.
# - **The paper's target, 0.15, on the calibrated loss** (after the best logit scale and shift for the
#   circuit), with the calibration learned along with the mask. **24 search trials** per task.
#
# ### The protocol, written before the measurement
#
# Everything below this paragraph was committed before the second method's searches were first read.
#
# - **Prompts for pruning** (`choose_pruning_prompts`): a task is pruned on its *pruning forms* when the
#   whole model's calibrated loss on them reaches the target. Otherwise it is pruned on the generated train
#   prompts, because a circuit cannot do better than its own model. The held-out forms are never used to
#   find or select anything.
# - **Sufficiency** (`circuit_sufficient_v2_<task>`): the circuit's calibrated loss on the held-out forms,
#   with the scale and shift fitted on the pruning prompts. Goal: at most 0.2. The same loss on the
#   generated test prompts is reported beside it.
# - **Necessity without the final reads** (`circuit_necessary_without_final_reads_<task>`): only the
#   circuit's interior is mean-ablated. Its final reads (the unembedding's own inputs) are kept, because
#   removing them breaks any task whatever computes it. This is measured on the generated test prompts,
#   where the whole model is at least 0.99 accurate; on forms the model already fails, a low accuracy would
#   prove nothing. Goal: accuracy at most 0.6.
# - **Matched loss** (`sparse_vs_dense_circuit_ratio_matched_loss`): the kept checkpoint of the dense
#   baseline whose validation loss is nearest the sparse model's (`matched_checkpoint`). If none is within
#   0.05 nats, intermediate checkpoints are trained first. Both models are pruned for the quote task with
#   the second method's base settings, on the same generated train prompts; neither side is searched. The
#   claim is the edge ratio, dense over sparse; goal at least 4. The node ratio is reported.
# - **Matched loss, searched** (`sparse_vs_dense_circuit_ratio_matched_loss_searched`, registered after the
#   base-settings number below showed the dense mask collapsing, before any dense search ran): the same dense
#   checkpoint gets a 24-trial search of its own (`matched_search_v2`) over `SPACE_V2_K`, the second method's space
#   plus the starting k_coef (1e-6 to 1e-2, log-uniform), on the same generated train prompts. The sparse side is
#   the chapter's own v2 quote search (`circuit_search_v2`, the same prompts, the smaller space: if anything the
#   dense side is favoured). The claim is the edge ratio of the two best circuits, dense over sparse; goal at least
#   4, and it holds only if both searches reach the target. The node ratio, every trial of the dense search and
#   the share of its trials that reached the target are reported.
# - **The quote-type node** (`best_sign_separating`): among the v2 quote circuit's residual-stream nodes
#   (reads and writes, but not the final read), the node whose sign best separates `'` from `"` at the last
#   token of the *train* prompts; ties go to the earlier node in forward order. Its agreement is measured at
#   the last token of the *wild* quote prompts (strings from code the model never saw), where a zero counts
#   as a miss: `quote_type_sign_agreement_v2`, goal at least 0.9, with each quote type reported alone.
# - **Bracket attacks** (`data.attacks.AVERAGING_PREDICTS`): the mechanism this chapter names for the
#   bracket circuit is an average of `[` signals over the context. It predicts, per depth:
#   - closed brackets before the list add to the average, so depth-1 lists look deeper: depth-1 prompts
#     fail, and depth-2 prompts (already deep) do not;
#   - bracket-free tokens dilute the average, so depth-2 lists look shallower: depth-2 prompts fail, and
#     depth-1 prompts do not.
#
#   "Fail" means accuracy drops by at least 0.1; "do not" means the accuracy changes by at most 0.05. Three
#   attacks were found after the fact (tried until one broke the model): `flat` (three closed flat lists),
#   `distractor` (one closed `[[..], [..]]`) and `long` (long lists). Three more were written with their
#   predictions before they were measured: `flat_one` (one closed flat list), `subscripts` (three lines
#   that index, `a = b[2]`) and `long_prefix` (8 to 12 bracket-free lines before the list). Each attack
#   has 400 held-out prompts (ci: 40), half at each depth. Every one is reported.
#
# The prompt sets' sha256 (first 12 hex digits) are fixed here, and the run checks them.

# %%
# NBVAL_CHECK_OUTPUT
from circuitbook.circuits import FINAL_SITE, choose_pruning_prompts, heldout_sufficiency
from circuitbook.data.attacks import ATTACKS, AVERAGING_PREDICTS, FOUND_AFTER_THE_FACT
from circuitbook.data.forms import examples_sha256
from circuitbook.separation import best_sign_separating

PROTOCOL_SHA256 = {  # full profile: prompt sets fixed with the protocol
    "pruning forms": {QUOTE: "aac325dbbba0", BRACKET: "bc2d7d9c0e03", SOS: "71cc437171a7"},
    "held-out forms": {QUOTE: "e4d8076dac90", BRACKET: "41a5fe1051c9", SOS: "c39bad0eb4ec"},
    "wild": {QUOTE: "e9040c866193"},
    "attacks": {"normal": "725f8347fad1", "flat": "336dc3d94114", "distractor": "0db380cc92e3",
                "long": "3d26dc2ae449", "flat_one": "3a40f48bccb4", "subscripts": "fd712d9c9e99",
                "long_prefix": "ab89ea4da584"},
}
forms = zoo.form_sets(prof, tok, seed)
wild = zoo.wild_sets(prof, tok)
n_attack_v2 = 400 if prof.name == "full" else 40
attack_examples = {k: [e for e in bracket_attack_examples(k, n_attack_v2, seed=123 + seed)
                       if len(tok.encode(e.prompt)) <= model.cfg.n_ctx] for k in ATTACKS}
digests = {"pruning forms": {t: forms.sha256["pruning"][t][:12] for t in zoo.CIRCUIT_TASKS},
           "held-out forms": {t: forms.sha256["heldout"][t][:12] for t in zoo.CIRCUIT_TASKS},
           "wild": {QUOTE: wild.sha256[QUOTE][:12]},
           "attacks": {k: examples_sha256(v)[:12] for k, v in attack_examples.items()}}
for name, d in digests.items():
    print(f"{name:15s}", d)
if prof.name == "full" and seed == 0:
    assert digests == PROTOCOL_SHA256, "a prompt set differs from the one fixed with the protocol"
    print("every prompt set is the one fixed with the protocol")

# %% [markdown]
# ### Which prompts each task is pruned on
#
# The whole model's calibrated loss on each candidate set, and the set the rule picks.

# %%
# NBVAL_CHECK_OUTPUT
base_v2 = zoo.prune_config_v2(prof, seed=seed)
prompt_rows = {}
for t in zoo.CIRCUIT_TASKS:
    chosen, _, whole_losses = zoo.v2_pruning_set(prof, t, seed)
    assert chosen == choose_pruning_prompts(whole_losses, base_v2.target_loss)
    prompt_rows[t] = {**{f"whole model, {k}": v for k, v in whole_losses.items()}, "pruned on": chosen}
display(pd.DataFrame(prompt_rows).T.round(3))

# %% [markdown]
# ### The searches
#
# Each task gets 24 trials (ci: 3) over the learning rate, the initial scores, the dual step and the
# calibration's learning rate. `k_coef` itself is not searched, because the dual update sets it. A trial's
# score is its node count if the circuit reaches the target, and the total node count plus its loss if it
# does not.

# %%
# NBVAL_CHECK_OUTPUT
searches_v2 = {t: zoo.circuit_search_v2(prof, t, seed, retrain=retrain) for t in zoo.CIRCUIT_TASKS}
circuits_v2 = {t: r.circuit for t, r in searches_v2.items()}
trials_v2 = pd.concat({t: pd.DataFrame(r.trials).set_index("trial") for t, r in searches_v2.items()})
display(trials_v2.round(4))
for t, c in circuits_v2.items():
    reached = int((trials_v2.loc[t, "sufficiency_loss"] <= base_v2.target_loss).sum())
    print(f"{t:20s} best: {c.n_nodes} nodes, calibrated train loss {c.sufficiency_loss:.3f}; "
          f"{reached} of {len(trials_v2.loc[t])} trials reached the target")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for i, (t, c) in enumerate(circuits_v2.items()):
    h = pd.DataFrame(c.info["history"])
    axes[0].plot(h["step"], h["loss_ema"], color=f"C{i}", label=t)
    axes[1].plot(h["step"], h["k_coef"], color=f"C{i}", label=t)
    bis = {int(k): v for k, v in c.info["bisection"].items()}
    ks = sorted(bis)
    axes[2].plot(ks, [bis[k] for k in ks], "o", ms=4, color=f"C{i}", label=f"{t}: {c.n_nodes} nodes")
    axes[2].plot([c.n_nodes], [bis[c.n_nodes]], "k*", ms=10)
axes[0].axhline(base_v2.target_loss, color="k", ls="--", lw=1)
axes[0].set(xlabel="mask step", ylabel="running task loss", title="the dual update holds the target")
axes[1].set(xlabel="mask step", ylabel="k_coef", yscale="log", title="k_coef, set by the dual update")
axes[2].axhline(base_v2.target_loss, color="k", ls="--", lw=1)
axes[2].set(xscale="symlog", yscale="log", xlabel="nodes kept (prefix of the measured order)",
            ylabel="calibrated loss", title="every prefix the bisection tried")
for ax in axes:
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Sufficient, and necessary without the final reads

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for t, c in circuits_v2.items():
    size = circuit_size(model, c)
    suff_forms = heldout_sufficiency(model, c, forms.heldout[t], means)
    suff_test = heldout_sufficiency(model, c, sets.test[t], means)
    interior = circuit_removed(model, c, sets.test[t], means, spare_sites=(FINAL_SITE,))
    rows.append({"task": t, "pruned on": prompt_rows[t]["pruned on"], "nodes": size["nodes"], "edges": size["edges"],
                 "final reads": len(c.by_site().get(FINAL_SITE, [])),
                 "held-out forms: loss": suff_forms["loss"], "held-out forms: acc": suff_forms["acc"],
                 "test: loss": suff_test["loss"], "test: acc": suff_test["acc"],
                 "interior removed: acc": interior["acc"],
                 "whole model, held-out forms acc": evaluate_task(model, forms.heldout[t])["acc"]})
table_v2 = pd.DataFrame(rows).set_index("task")
display(table_v2.round(3))

# %% [markdown]
# **What the second method finds.** Two of the three circuits are within their goals: 15 nodes for bracket
# (21 edges) and 11 for set-or-string (17 edges). The quote circuit has 29 nodes (76 edges), over its goal
# of 20: the rule pruned it on the pruning forms (the whole model's loss there, 0.108, is under the target),
# which ask more of a circuit than the generated prompts (merged closing quotes, comparisons, keyword
# arguments), and its size is what they cost. Every trial of every search reached the target. The dual update
# holds the mask's running loss at the target instead of far below it (the first figure), so the penalty,
# not the starting `k_coef`, sets the size. A circuit alone reaches the target on the prompts it was pruned
# on, and on generated test prompts it stays under it (0.073, 0.106, 0.112). Removing a circuit's interior,
# with its final reads kept, brings each task to chance (accuracy 0.52, 0.51, 0.48).
#
# **Where it falls short, and why.** On the held-out forms the set-or-string circuit is sufficient (0.123,
# accuracy 1.00), the quote circuit is close (0.293 against the goal of 0.2, accuracy 0.90; the whole model
# gets 0.967), and the bracket circuit is far from it (1.44). For brackets the model is the limit, not the
# pruning: the whole model is right on 0.62 of those prompts (it never learned mixed nesting, nor did the
# dense baseline), so there is no circuit for them to find; the rule saw it in advance (the whole model's
# loss on the pruning forms, 0.231, is over the target) and pruned bracket on the generated prompts. With the
# book's first sparse model (d128, recipe 1), quote failed the same way (held-out forms 0.60, circuit loss
# 2.43); the retrained model learned the forms, and its circuit now carries most of them.

# %%
for t in (QUOTE, BRACKET):
    draw_circuit(model, circuits_v2[t])
    plt.title(f"{t}: the second method's circuit ({circuits_v2[t].n_nodes} nodes)")
    plt.show()

# %% [markdown]
# ### Sparse against dense at matched loss

# %%
# NBVAL_CHECK_OUTPUT
sparse_val = zoo.model_eval(prof, model_name, model, seed)["val_loss"]
matched_name, matched, ckpt_losses = zoo.dense_matched(prof, sparse_val, seed)
gap = ckpt_losses[matched_name] - sparse_val
print(f"sparse model val loss {sparse_val:.4f}; dense checkpoints:", {n: round(v, 4) for n, v in ckpt_losses.items()})
print(f"-> {matched_name} (gap {gap:+.4f})")
if abs(gap) > zoo.MATCH_WITHIN:  # the book's models have one (full); toy sizes need not
    assert prof.name != "full", "no dense checkpoint within 0.05 nats of the sparse model"
    print("(no checkpoint within 0.05 nats at this profile: the nearest is used)")
dc_v2 = zoo.pruned_circuit_v2(prof, matched, matched_name, QUOTE, seed)
qc_v2_base = zoo.pruned_circuit_v2(prof, model, model_name, QUOTE, seed)
m_size, s_size = circuit_size(matched, dc_v2), circuit_size(model, qc_v2_base)
matched_ratio = m_size["edges"] / max(s_size["edges"], 1)
matched_ratio_nodes = m_size["nodes"] / max(s_size["nodes"], 1)
display(pd.DataFrame({
    f"dense ({matched_name})": {"val loss": ckpt_losses[matched_name], "nodes": m_size["nodes"],
                                "edges": m_size["edges"], "calibrated train loss": dc_v2.sufficiency_loss},
    "sparse": {"val loss": sparse_val, "nodes": s_size["nodes"], "edges": s_size["edges"],
               "calibrated train loss": qc_v2_base.sufficiency_loss}}).T.round(4))
print(f"quote circuit at matched loss, dense over sparse: edges {matched_ratio:.2f}, nodes {matched_ratio_nodes:.2f}")
for label, c in (("dense", dc_v2), ("sparse", qc_v2_base)):
    h = c.info["history"][-1]
    print(f"{label}: the mask kept {c.info['n_kept_by_mask']} nodes (last step's task loss {h['task_loss']:.3f}); "
          f"the bisection walked {c.info['walk']} nodes")

# %% [markdown]
# The registered ratio holds, but it does not measure what the paper measures. At the base settings the dense
# model's mask collapsed: it ends with a handful of nodes at a task loss far above the target (the last lines
# above), and the dual update did not bring it back within 200 steps. Its circuit is then the bisection over
# every node the mask had not pushed to the floor, thousands of nodes. So the ratio records that the method,
# tuned on sparse models, fails on this dense checkpoint (the same happened at the first sparse model's matched
# checkpoint); it is not evidence for the paper's 16x. A fair number needs the dense checkpoint searched as the
# sparse model was; the next cell does that (`sparse_vs_dense_circuit_ratio_matched_loss_searched`, protocol
# above).

# %%
# NBVAL_CHECK_OUTPUT
dense_search = zoo.matched_search_v2(prof, matched, matched_name, QUOTE, seed, retrain=retrain)
ds_c, ss_c = dense_search.circuit, circuits_v2[QUOTE]
ds_size, ss_size = circuit_size(matched, ds_c), circuit_size(model, ss_c)
dense_trials = pd.DataFrame(dense_search.trials).set_index("trial")
dense_reached = float((dense_trials["sufficiency_loss"] <= ds_c.target_loss).mean())
searched_ratio = ds_size["edges"] / max(ss_size["edges"], 1)
searched_ratio_nodes = ds_size["nodes"] / max(ss_size["nodes"], 1)
shown = dense_trials[["k_coef", "dual_lr", "lr", "n_nodes", "sufficiency_loss"]].round(4)
shown["k_coef"] = dense_trials["k_coef"].map("{:.1e}".format)  # the starting value; it spans four decades
display(shown)
display(pd.DataFrame({
    f"dense ({matched_name}), searched": {"nodes": ds_size["nodes"], "edges": ds_size["edges"],
                                          "calibrated train loss": ds_c.sufficiency_loss, "reached": ds_c.reached},
    "sparse, searched (circuit_search_v2)": {"nodes": ss_size["nodes"], "edges": ss_size["edges"],
                                             "calibrated train loss": ss_c.sufficiency_loss,
                                             "reached": ss_c.reached}}).T)
print(f"dense search: {dense_reached:.2f} of {len(dense_trials)} trials reached the target; best k_coef start "
      f"{dense_search.config.k_coef:.2e}")
print(f"searched, dense over sparse: edges {searched_ratio:.2f}, nodes {searched_ratio_nodes:.2f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ok = dense_trials["sufficiency_loss"] <= ds_c.target_loss
ax.scatter(dense_trials["k_coef"][ok], dense_trials["n_nodes"][ok], label="reached the target")
ax.scatter(dense_trials["k_coef"][~ok], dense_trials["n_nodes"][~ok], marker="x", label="missed")
ax.axhline(ss_size["nodes"], color="C2", ls="--", label="sparse circuit (nodes)")
ax.set(xscale="log", yscale="log", xlabel="starting k_coef", ylabel="circuit nodes",
       title=f"the dense checkpoint's search ({matched_name})")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Searched, the ratio is large and the circuit is no longer the method's failure.** The dense checkpoint's
# best circuit (table above) is a little over a hundred nodes, every one of them connected to the rest by dense
# weights, against the sparse model's 29 nodes and 76 edges; the printed ratios are the claims. The starting
# k_coef decides almost everything: the starts near the base 5e-3 (trial 0 and the ones like it) collapse and
# leave the bisection to walk thousands of nodes, the starts between about 1e-5 and 1e-3 land in a narrow band
# of node counts (122 to 161), and the smallest starts keep more. Three caveats go with the number. It is one
# task and one seed. The sparse side was searched in the smaller space (`SPACE_V2`): a search that also moved
# its starting k_coef might find a smaller sparse circuit, not a larger one. And an edge ratio grows roughly
# with the square of the node ratio when one side is dense, so the node ratio beside it (4.2) is the more
# conservative reading; both exceed the registered goal of 4, and the edge ratio (19.9) exceeds the paper's
# ~16x. (With the book's first sparse model the same comparison gave 78x in edges, 7.6x in nodes: its quote
# circuit, pruned on the generated prompts, was half the size of today's.)

# %% [markdown]
# ### The quote-type node, chosen by the rule, measured on wild strings

# %%
# NBVAL_CHECK_OUTPUT
qc2 = circuits_v2[QUOTE]
train_q = sets.train[QUOTE].to(device())
resid = [(s, ch) for s, ch in qc2.node_list() if nodes.kind(s) in ("read", "write") and s != FINAL_SITE]
with torch.no_grad():
    _, tcache = model.run_with_cache(train_q.tokens, names_filter=lambda n: n in {s for s, _ in resid})
ar_t = torch.arange(len(train_q.last))
values = {nodes.label(s, ch): tcache[s].reshape(len(ar_t), train_q.tokens.shape[1], -1)[ar_t, train_q.last, ch]
          for s, ch in resid}
if values:
    qtype_v2, train_sep = best_sign_separating(values, train_q.labels)
    site_v2, ch_v2 = next((s, ch) for s, ch in resid if nodes.label(s, ch) == qtype_v2)
    single_sign_v2 = 1.0 if float(values[qtype_v2][train_q.labels == 0].mean()) > 0 else -1.0
    wq = wild.test[QUOTE].to(device())
    with torch.no_grad():
        _, wcache = model.run_with_cache(wq.tokens, names_filter=site_v2)
    ar_w = torch.arange(len(wq.last))
    v = wcache[site_v2].reshape(len(ar_w), wq.tokens.shape[1], -1)[ar_w, wq.last, ch_v2]
    want = torch.where(wq.labels == 0, single_sign_v2, -single_sign_v2)
    hit = torch.sign(v) == want  # a zero is a miss
    wild_agree = float(hit.float().mean())
    wild_agree_by = {q: float(hit[wq.labels == i].float().mean()) for i, q in enumerate(("'", '"'))}
    print(f"rule's quote-type node: {qtype_v2} (sign separation on train prompts {train_sep:.3f}, "
          f"{len(resid)} residual-stream candidates)")
    print(f"wild quote prompts ({len(ar_w)}): sign agreement {wild_agree:.3f} "
          f"(' {wild_agree_by[chr(39)]:.3f}, \" {wild_agree_by[chr(34)]:.3f}); exactly zero on "
          f"{float((v == 0).float().mean()):.1%}")
else:
    qtype_v2, wild_agree, wild_agree_by = None, float("nan"), {"'": float("nan"), '"': float("nan")}
    print("the v2 quote circuit keeps no residual-stream node besides the final reads")

# %% [markdown]
# The rule's node separates the quote types on the train prompts, but on strings from real code its sign
# follows the type inside `"`-strings more often than inside `'`-strings (the numbers above), and a quarter of
# its values are exactly zero: in the wild it behaves more like a "double quote" channel than a signed type.
# It is the same channel the first method's circuit uses (the section "Which node knows the quote type?").
# The claim fails its goal of 0.9.
#
# ### The bracket attacks: predictions against measurements

# %%
# NBVAL_CHECK_OUTPUT
bc2 = circuits_v2[BRACKET]
acc_by = {}
for k, exs in attack_examples.items():
    acc_by[k] = {1: float("nan"), 2: float("nan"), "circuit": float("nan")}  # no prompt fits the context (ci)
    if exs:
        b = encode_examples(exs, tok)
        for d in (1, 2):
            if bool((b.labels == d - 1).any()):
                acc_by[k][d] = evaluate_task(model, b[b.labels == d - 1])["acc"]
        acc_by[k]["circuit"] = circuit_alone(model, bc2, b, means, calibrated=True)["acc"]
rows = []
for k in ATTACKS:
    if k == "normal":
        continue
    for d in (1, 2):
        drop = acc_by["normal"][d] - acc_by[k][d]
        pred = AVERAGING_PREDICTS[k][d]
        held = drop >= 0.1 if pred == "drop" else abs(drop) <= 0.05
        rows.append({"attack": k, "depth": d,
                     "when": "found after the fact" if k in FOUND_AFTER_THE_FACT else "registered",
                     "predicted": pred, "model acc": acc_by[k][d], "drop": drop, "prediction held": held,
                     "circuit acc (both depths)": acc_by[k]["circuit"]})
attack_table = pd.DataFrame(rows).set_index(["attack", "depth"])
print(f"no attack: model acc depth 1 {acc_by['normal'][1]:.3f}, depth 2 {acc_by['normal'][2]:.3f}; "
      f"circuit acc {acc_by['normal']['circuit']:.3f}")
display(attack_table.round(3))
reg = attack_table[attack_table["when"] == "registered"]
print(f"registered predictions that held: {int(reg['prediction held'].sum())} of {len(reg)}")

# %% [markdown]
# Averaging is not what this model does. None of the three registered attacks that averaging says should
# hurt did: one closed flat list and three subscripts leave depth-1 accuracy at 1.00, and a dozen
# bracket-free lines do not move depth-2 accuracy at all. Their "none" predictions held, but only because
# nothing happened. Of the attacks found after the fact, only long lists break the model, and they hurt
# *both* depths (depth 1 most: 0.26 left), where averaging predicts only depth 2. The distractor that broke
# the book's first sparse model (a closed `[[` before the list cost its depth-1 prompts 0.60) costs this one
# 0.02, although its circuit alone still falls for it (0.54 on both depths together). The averaging reading
# is therefore not supported: the whole model uses more than its circuit to read depth from a `[[` token, and
# something that long lists disturb. The chapter reports the drops of all six attacks as claims, with their
# predictions.

# %% [markdown]
# ## Explore: a task and a target loss
#
# Pick a task and a target loss; the circuit is the smallest top-scored set on the loss curve above
# that reaches it (read off the precomputed curve, so it is instant). In the static book the widget
# shows its first setting.

# %%
# NBVAL_SKIP (interactive only; papermill runs it in the ci test)
import ipywidgets as widgets  # noqa: E402


def show_circuit(task: str = QUOTE, target: float = 0.15):
    c, cv = circuits[task], curves[task]
    ok = [k for k, v in cv.items() if v <= target]
    if not ok:
        print(f"no size on the curve reaches {target} (best {min(cv.values()):.3f})")
        return
    k = min(ok)
    sub = type(c)(c.nodes, top_k_kept(c.scores, k), c.scores, target, cv[k], method=c.method)
    size = circuit_size(model, sub)
    print(f"{task}: {k} nodes, {size['edges']} edges, train loss {cv[k]:.3f}")
    draw_circuit(model, sub, labels=k <= 60)
    plt.show()


widgets.interact(show_circuit, task=list(zoo.CIRCUIT_TASKS),
                 target=widgets.FloatSlider(value=0.15, min=0.02, max=0.5, step=0.01))

# %% [markdown]
# ## Top activating examples
#
# Every node of the quote circuit on the validation corpus: the contexts where it is largest, the
# token it fires on last, shaded by its value.

# %%
html_rows = [examples_html(ex, nodes.label(*n)) for n, ex in list(examples.items())[:12]]
display(HTML("<hr>".join(html_rows)))

# %% [markdown]
# ## Claims
#
# Measured above, against the paper. `alone loss` is uncalibrated: the fitted logit scale and shift
# (stored with each circuit) are reported in the artifacts but not used for sufficiency.

# %%
# NBVAL_CHECK_OUTPUT
claims = []
for t, r in table.iterrows():
    claims += [
        Claim(f"circuit_nodes_{t}", f"nodes in the learned {t} circuit (sparse model)", int(r["nodes"]),
              paper="12 (quote)" if t == QUOTE else ("7 (simplified)" if t == BRACKET else None), target="<= 30",
              holds=bool(r["nodes"] <= 30)),
        Claim(f"circuit_edges_{t}", f"edges in the learned {t} circuit", int(r["edges"]),
              paper="9 (quote)" if t == QUOTE else ("4 (simplified)" if t == BRACKET else None), target="report"),
        Claim(f"circuit_sufficient_{t}", f"{t}: held-out task loss of the circuit alone",
              round(float(r["alone loss"]), 4),
              paper="reaches 0.15", target="<= 0.15", holds=bool(r["alone loss"] <= 0.15)),
        Claim(f"circuit_necessary_{t}", f"{t}: held-out accuracy with the circuit ablated",
              round(float(r["removed acc"]), 4), paper="destroyed", target="<= 0.6",
              holds=bool(r["removed acc"] <= 0.6)),
    ]
claims += [
    Claim("sparse_vs_dense_circuit_ratio", "quote circuit edges, dense baseline over sparse model",
          round(dense_ratio, 3),
          paper="~16", target=">= 4", holds=dense_ratio >= 4),
    Claim("learned_vs_attribution_ratio", "quote circuit edges, attribution pruning over learned masks",
          round(attr_ratio, 3), paper="learned much smaller", target=">= 3", holds=attr_ratio >= 3),
    Claim("quote_type_sign_agreement", "quote-type node's sign agrees with the enclosing one-line string's quote "
          "(validation corpus, zero counts as a miss)", round(corpus_agreement, 4), paper="monosemantic",
          target=">= 0.9", holds=corpus_agreement >= 0.9),
    Claim("quote_type_sign_agreement_nonzero", "the same among nonzero values", round(nonzero_agreement, 4),
          target="report"),
    Claim("bracket_distractor_acc_drop", "model accuracy drop with a closed nested list before the list",
          round(float(distractor_drop), 4), paper="fails (predicted)", target=">= 0.3", holds=distractor_drop >= 0.3),
    Claim("bracket_distractor_acc_drop_depth1", "the same on depth-1 prompts (those the distractor can mislead)",
          round(float(distractor_drop1), 4), paper="fails (predicted)", target="report"),
    Claim("bracket_long_list_acc_drop", "model accuracy drop on long lists", round(float(long_drop), 4),
          paper="fails (predicted)", target=">= 0.3", holds=long_drop >= 0.3),
    Claim("learned_vs_attribution_ratio_bracket", "bracket circuit edges, attribution over learned",
          round(float(attr_table.loc[BRACKET, "edge ratio"]), 3), target="report"),
    Claim("learned_vs_attribution_ratio_set_or_string", "set_or_string circuit edges, attribution over learned",
          round(float(attr_table.loc[SOS, "edge ratio"]), 3), target="report"),
]
for t, r in table_v2.iterrows():  # the second method (issue 16), registered before it was measured
    goal = 20 if t == QUOTE else 30
    claims += [
        Claim(f"circuit_nodes_v2_{t}", f"nodes in the {t} circuit of the second method (24-trial search, "
              "calibrated loss 0.15, prompts by choose_pruning_prompts)", int(r["nodes"]),
              paper="12 (quote)" if t == QUOTE else None, target=f"<= {goal}", holds=bool(r["nodes"] <= goal)),
        Claim(f"circuit_edges_v2_{t}", f"edges in the {t} circuit of the second method", int(r["edges"]),
              paper="9 (quote)" if t == QUOTE else None, target="report"),
        Claim(f"circuit_sufficient_v2_{t}", f"{t}: calibrated loss of the second method's circuit alone on the "
              "held-out forms (scale and shift fitted on the pruning prompts)",
              round(float(r["held-out forms: loss"]), 4),
              paper="reaches 0.15", target="<= 0.2", holds=bool(r["held-out forms: loss"] <= 0.2)),
        Claim(f"circuit_sufficient_v2_test_{t}", f"{t}: the same on the generated test prompts",
              round(float(r["test: loss"]), 4), target="report"),
        Claim(f"circuit_necessary_without_final_reads_{t}", f"{t}: generated-test accuracy with the second "
              "method's circuit mean-ablated except its final reads", round(float(r["interior removed: acc"]), 4),
              paper="destroyed", target="<= 0.6", holds=bool(r["interior removed: acc"] <= 0.6)),
    ]
claims += [
    Claim("sparse_vs_dense_circuit_ratio_matched_loss", "quote circuit edges, the dense baseline's checkpoint nearest "
          "the sparse model's validation loss over the sparse model (second method, base settings, both)",
          round(matched_ratio, 3), paper="~16", target=">= 4", holds=matched_ratio >= 4,
          context=f"{matched_name}: val {ckpt_losses[matched_name]:.4f}; sparse val {sparse_val:.4f}"),
    Claim("sparse_vs_dense_circuit_ratio_matched_loss_nodes", "the same in nodes", round(matched_ratio_nodes, 3),
          target="report"),
    Claim("sparse_vs_dense_circuit_ratio_matched_loss_searched", "quote circuit edges at matched loss, both models "
          "searched: the dense checkpoint's 24-trial search over SPACE_V2_K over the sparse model's v2 search; "
          "holds only if both reach the target", round(searched_ratio, 3), paper="~16", target=">= 4",
          holds=bool(searched_ratio >= 4 and ds_c.reached and ss_c.reached),
          context=f"{matched_name}; dense trials reaching the target {dense_reached:.2f}"),
    Claim("sparse_vs_dense_circuit_ratio_matched_loss_searched_nodes", "the same in nodes",
          round(searched_ratio_nodes, 3), target="report"),
    Claim("dense_matched_search_reached_share", "share of the dense checkpoint's search trials that reached the "
          "target", round(dense_reached, 4), target="report"),
    Claim("quote_type_sign_agreement_v2", "sign agreement of the rule's quote-type node (best sign separation on "
          "train prompts among the v2 circuit's residual nodes) with the quote type, last token of the wild quote "
          "prompts, zero counts as a miss", round(wild_agree, 4), paper="monosemantic", target=">= 0.9",
          holds=wild_agree >= 0.9, context=f"node {qtype_v2}"),
    Claim("quote_type_sign_agreement_v2_single", "the same on wild prompts in ' strings",
          round(wild_agree_by["'"], 4), target="report"),
    Claim("quote_type_sign_agreement_v2_double", 'the same on wild prompts in " strings',
          round(wild_agree_by['"'], 4), target="report"),
]
for (k, d), r in attack_table.iterrows():
    pred = AVERAGING_PREDICTS[k][d]
    claims.append(Claim(
        f"bracket_attack_v2_drop_depth{d}_{k}", f"model accuracy drop on depth-{d} prompts under the {k} attack "
        f"({'found after the fact' if k in FOUND_AFTER_THE_FACT else 'registered before measuring'}; averaging "
        f"predicts {'a drop' if pred == 'drop' else 'none'})", round(float(r["drop"]), 4),
        paper="fails (predicted)" if pred == "drop" else None, target=">= 0.1" if pred == "drop" else "abs <= 0.05",
        holds=bool(r["prediction held"])))
results = write_results("03_circuits", prof, claims)
claims_table(results)

# %% [markdown]
# ## What is next
#
# Chapter 4 trains bridges between the dense baseline and this sparse model, and uses the
# quote-type node found here to steer the dense model.
