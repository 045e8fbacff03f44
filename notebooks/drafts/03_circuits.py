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
# > **DRAFT (not executed by CI; not in `_toc.yml`).** Written from exploratory runs; numbers in
# > the prose are from `notebooks/drafts/03_circuits_findings.md` and must be re-read from the
# > executed notebook before the chapter ships. Missing or unfinished:
# >
# > - the circuits are pruned here with `cached_prune(..., prof)`, which writes `circuit_*`
# >   artifacts into `data/artifacts/` for the `full` profile: they are not shipped yet (add them to
# >   the manifest once the settings are final);
# > - `k_coef` (1e-3 / 3e-3 instead of the library's 1e-4) is an override found by hand, not by
# >   `search` (the Optuna search, 32 trials, was not run: ~3-5 min per trial on a busy 2-core machine);
# > - the goal of <= 30 nodes per circuit is not met with these settings (see the findings file);
# > - helpers defined inline below (`string_positions`, `quote_positions`, `bracket_attack_set`)
# >   belong in `circuitbook` (e.g. `circuitbook.data.tasks` / `circuitbook.circuits`) with tests;
# > - the set-or-string mechanism section and the bridge to chapter 4 are stubs;
# > - `bisect_within_mask` is a stop-gap for a library bug (the bisection over all nodes can end at
# >   thousands of nodes; see the findings file): fix `circuit_from_scores` and delete it;
# > - the bracket and set-or-string circuits miss <= 30 nodes and bracket misses the held-out 0.15
# >   (0.158); the corpus sign agreement is 0.83 (goal 0.9): decide the exact claim (findings, section 3);
# > - the notebook has not been executed end to end (only `string_positions` was run on its own);
# >   nbval `NBVAL_CHECK_OUTPUT` markers, the `ci` profile path and the 2-core timing claim are unchecked.

# %% [markdown]
# # 3. Circuits: the smallest part of the model that does the task
#
# **What you will learn.** How to cut a trained transformer down to the few neurons and channels
# that a task needs, following Gao et al. (2025) {cite}`gao2025weightsparse`: every node (one
# neuron, one q/k/v channel, one residual read or write) gets a learned on/off mask; pruned nodes
# are replaced by their mean activation; a penalty on the number of kept nodes drives the mask
# down until only the circuit is left. Then we check that the circuit is *sufficient* (alone, it
# still does the task on prompts it never saw) and *necessary* (without it, the model fails), read
# its mechanism off the weights, and attack it where the mechanism predicts it should break.
#
# **What the paper claims.** In weight-sparse models, task circuits are tiny (the quote circuit:
# 12 nodes, 9 edges) and readable: a layer-0 "quote detector" and "quote-type" classifier, and an
# attention head that copies the quote type to the end. Learned masks find much smaller circuits
# than attribution-based pruning, and sparse models' circuits are about 16× smaller than dense
# models' at matched loss.

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
# penalty per kept node, per task (the paper's search centre is 1e-4; see "Choosing the penalty")
k_coef = {"single_double_quote": 1e-3, "bracket_counting": 1e-3, "set_or_string": 3e-3}

# %%
import random
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, display

from circuitbook import get_profile, seed_everything, viz, zoo
from circuitbook.circuits import (NodeSet, ablation_hooks, all_kept, attribution_prune, cached_mean_activations,
                                  cached_prune, circuit_alone, circuit_edges, circuit_removed, circuit_size,
                                  draw_circuit, evaluate_masked, examples_text, node_examples, plotly_circuit,
                                  prune_config)
from circuitbook.data.corpus import EOT, load_corpus
from circuitbook.data.tasks import Example, TaskBatch, encode_examples, evaluate_task
from circuitbook.results import Claim, claims_table, write_results

prof = get_profile(profile)
seed_everything(seed)
torch.set_num_threads(2)
viz.setup()

QUOTE, BRACKET, SOS = "single_double_quote", "bracket_counting", "set_or_string"

# %%
model, _ = zoo.the_sparse_model(prof, seed=seed)
model = model.float().eval()
tok = zoo.tokenizer(prof)
streams = zoo.token_streams(prof, tok)
sets = zoo.task_sets(prof, tok, seed)
print(model.cfg)
for t in (QUOTE, BRACKET, SOS):
    print(f"{t:22s} held-out accuracy of the whole model {evaluate_task(model, sets.test[t])['acc']:.3f}")

# %% [markdown]
# ## Nodes: one vocabulary of locations
#
# A node is one channel of one hook site: a residual *read* (after each norm), a q, k or v channel,
# an attention or MLP *write* to the residual stream, or one MLP neuron. The same string that names
# the hook names the node set, so pruning needs no bookkeeping of its own.

# %%
nodes = NodeSet.from_model(model)
by_kind = pd.Series({s: w for s, w in zip(nodes.sites, nodes.widths)}).groupby(
    lambda s: nodes.kind(s)).sum()
print(f"{len(nodes):,} nodes in {len(nodes.sites)} sites")
display(by_kind.to_frame("nodes"))

# %% [markdown]
# ## Mean ablation
#
# A pruned node is not set to zero but to its *mean* over the pretraining distribution, so the rest
# of the model sees a typical value rather than an impossible one. A mask of all ones is the model
# itself; a mask of all zeros leaves nothing that depends on the prompt, and the task falls to chance.

# %%
means = cached_mean_activations("means_the_sparse_model", prof, model, streams["train"], nodes, retrain=retrain)
quote_test = sets.test[QUOTE]
ones = all_kept(nodes)
zeros = {s: torch.zeros_like(m) for s, m in ones.items()}
print("all kept   ", evaluate_masked(model, quote_test, ones, means))
print("all ablated", evaluate_masked(model, quote_test, zeros, means))

# %% [markdown]
# ## Learned masks
#
# One score per node, clamped to [-1, 1]; the forward pass keeps the node when its score is
# positive (a Heaviside step) and the backward pass pretends the step was a sigmoid. The loss is the
# task's binary cross-entropy plus `k_coef` times the number of kept nodes. After training, the
# nodes are ranked by score and the number kept is bisected to the smallest circuit that reaches the
# target loss 0.15 on the training prompts.
#
# **Choosing the penalty.** At the paper's search centre, k_coef = 1e-4, our 5,760-node model ends
# with a ~100-node quote circuit whose task loss (~0.005) is far *below* the target: the penalty is
# too weak to trade loss for size. Ten times larger (1e-3) roughly halves the circuit; set-or-string
# needs 3e-3. The paper
# searched these settings with CARBS; `circuitbook.circuits.search` does the same with Optuna.

# %%
PRUNE = {t: prune_config(prof, k_coef=k, seed=seed) for t, k in k_coef.items()}


def bisect_within_mask(model, c, batch, means):
    """TODO(lib): move into `circuit_from_scores`. The library bisects k over [0, all nodes]; the loss is not
    monotone in k (keeping the top 2,880 bracket nodes, most with negative scores, is *worse* than keeping the
    81 the mask kept), so the bisection can end at thousands of nodes. Bisect inside the mask's own kept set."""
    import torch.nn.functional as F
    from circuitbook.circuits import Circuit, bisect_smallest, fit_logit_calibration, masked_logit_diff, top_k_kept

    n_pos = int((c.scores > 0).sum())
    if c.n_nodes <= n_pos:
        return c
    diff_at = lambda k: masked_logit_diff(model, batch, c.nodes.split(top_k_kept(c.scores, k).float()), means)
    k, trace = bisect_smallest(lambda k: float(F.softplus(-diff_at(k)).mean()), n_pos, c.target_loss)
    diff = diff_at(k)
    a, b, cal = fit_logit_calibration(diff, batch.correct, batch.wrong)
    info = {**c.info, "bisection_within_mask": {str(i): v for i, v in sorted(trace.items())}}
    return Circuit(c.nodes, top_k_kept(c.scores, k), c.scores, c.target_loss, float(F.softplus(-diff).mean()),
                   cal, a, b, c.method, info)


circuits, timings = {}, {}
for t in (QUOTE, BRACKET, SOS):
    start = time.time()
    c = cached_prune(f"circuit_{t}_sparse", prof, model, sets.train[t], means, PRUNE[t], nodes, retrain=retrain)
    circuits[t] = bisect_within_mask(model, c, sets.train[t], means)
    timings[t] = time.time() - start
    print(circuits[t].summary(), f"({timings[t]:.0f} s; the library's bisection gave {c.n_nodes} nodes)")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.2))
for ax, (t, c) in zip(axes, circuits.items()):
    h = pd.DataFrame(c.info["history"])
    ax.plot(h["step"], h["n_kept"], color="C0")
    ax.set(yscale="log", xlabel="mask step", ylabel="kept nodes", title=t)
    ax2 = ax.twinx()
    ax2.plot(h["step"], h["task_loss"], color="C1", alpha=0.6)
    ax2.set_ylabel("task loss", color="C1")
plt.tight_layout()
plt.show()

# %% [markdown]
# The bisection on the number of top-scored nodes: the loss is not monotone near the edge (one
# late node can carry the task), which is why the circuit's size is read from the bisection, not
# from the mask's own count.

# %%
fig, ax = plt.subplots(figsize=(7, 3.4))
for t, c in circuits.items():
    tr = sorted((int(k), v) for k, v in c.info["bisection"].items())
    ax.plot(*zip(*tr), "o-", label=f"{t}: {c.n_nodes} nodes")
ax.axhline(0.15, color="k", ls="--", lw=1)
ax.set(xscale="log", yscale="log", xlabel="top-scored nodes kept", ylabel="task loss (train prompts)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Sufficient and necessary
#
# On the *held-out* prompts: the circuit alone (everything else mean-ablated) should still reach
# the target loss, and the model without the circuit (its nodes mean-ablated) should fall toward
# chance.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for t, c in circuits.items():
    size = circuit_size(model, c)
    alone, removed = circuit_alone(model, c, sets.test[t], means), circuit_removed(model, c, sets.test[t], means)
    rows.append({"task": t, "nodes": size["nodes"], "edges": size["edges"], "alone loss": alone["loss"],
                 "alone acc": alone["acc"], "removed acc": removed["acc"], "prune s": timings[t]})
table = pd.DataFrame(rows).set_index("task")
display(table.round(3))

# %% [markdown]
# ## The quote circuit
#
# Nodes are coloured by kind; edges are the nonzero weights between kept nodes (red positive,
# blue negative, grey the residual stream). Hover over a node in the interactive version to see
# where it fires most in the corpus.

# %%
qc = circuits[QUOTE]
draw_circuit(model, qc)
plt.show()
examples = node_examples(model, qc, streams["val"], tok, k=4)
plotly_circuit(model, qc, hover={n: examples_text(e) for n, e in examples.items()}, title="quote circuit").show()


# %% [markdown]
# ### Which node knows the quote type?
#
# For every node of the circuit, its value at the opening quote and at the last token of each
# held-out prompt, split by the quote that opened the string. A *quote-type* node is one whose sign
# separates `'` from `"`.

# %%
def quote_positions(batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(position of the opening quote token, 1 if it is a double quote) for each quote-task prompt."""
    sq, dq = tok.single_token(" '"), tok.single_token(' "')
    pos = torch.tensor([max(i for i in range(int(l) + 1) if int(row[i]) in (sq, dq))
                        for row, l in zip(batch.tokens, batch.last)])
    return pos, (batch.tokens[torch.arange(len(pos)), pos] == dq).long()


openpos, is_double = quote_positions(quote_test)
with torch.no_grad():
    _, cache = model.run_with_cache(quote_test.tokens)
ar = torch.arange(len(openpos))
rows = []
for site, ch in qc.node_list():
    a = cache[site].reshape(len(ar), quote_test.tokens.shape[1], -1)[..., ch]
    row = {"node": nodes.label(site, ch)}
    for where, pos in (("open", openpos), ("last", quote_test.last)):
        v = a[ar, pos]
        s, d = v[is_double == 0], v[is_double == 1]
        row[f"{where}: mean '"], row[f'{where}: mean "'] = float(s.mean()), float(d.mean())
        row[f"{where}: sign separates"] = max(float(((s > 0).float().mean() + (d < 0).float().mean()) / 2),
                                              float(((s < 0).float().mean() + (d > 0).float().mean()) / 2))
    rows.append(row)
quote_nodes = pd.DataFrame(rows).set_index("node")
display(quote_nodes.round(3))
# the quote-type node: the best separating node that is not the final read (which sums everything before it)
qtype_node = quote_nodes[~quote_nodes.index.str.startswith("final")]["last: sign separates"].idxmax()
print("best quote-type node at the last token:", qtype_node, f"({quote_nodes.loc[qtype_node, 'last: sign separates']:.3f})")

# %% [markdown]
# ### The head that carries it to the end
#
# The circuit's q/k/v channels belong to one or two heads. How much of the last token's attention
# goes to the opening quote, in the whole model and in the circuit alone?

# %%
heads = sorted({(nodes.layer(s), ch // nodes.d_head) for s, ch in qc.node_list() if nodes.kind(s) in ("q", "k", "v")})
with torch.no_grad(), model.hooks(fwd_hooks=ablation_hooks(qc.masks(), means)):
    _, circ_cache = model.run_with_cache(quote_test.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
for l, h in heads:
    full = cache[f"blocks.{l}.attn.hook_pattern"][ar, h, quote_test.last, openpos].mean()
    circ = circ_cache[f"blocks.{l}.attn.hook_pattern"][ar, h, quote_test.last, openpos].mean()
    print(f"L{l} head {h}: attention last -> opening quote {full:.3f} (whole model), {circ:.3f} (circuit alone)")


# %% [markdown]
# ### Does the sign hold on real code?
#
# The task prompts are generated; the corpus has real Python strings, with prefixes, triple quotes
# and f-strings. Python's own tokenizer finds every string literal; for every token *inside* one,
# does the quote-type node's sign agree with the quote that opened it? (Triple-quoted docstrings are
# counted apart: `"""` is a token of its own, and the circuit's quote detector does not fire on it.)

# %%
def string_positions(n_windows: int = 400, max_chars: int = 800_000):
    """Windows [W, n_ctx] of validation-corpus tokens and labels [W, n_ctx]: 0 outside strings, 1 / 2 inside a
    '- / "-quoted literal (content tokens only), 3 / 4 the token holding the opening ' / "."""
    import io
    import tokenize

    def spans(src):
        starts = np.cumsum([0] + [len(x) for x in src.splitlines(keepends=True)])
        off = lambda rc: int(starts[rc[0] - 1] + rc[1])
        out, stack = [], []
        try:
            for t in tokenize.generate_tokens(io.StringIO(src).readline):
                kind = tokenize.tok_name[t.type]
                if kind == "STRING":
                    i = next(j for j, ch in enumerate(t.string) if ch in "'\"")
                    q = t.string[i]
                    n = 3 if t.string[i:i + 3] == q * 3 else 1
                    a, b = off(t.start), off(t.end)
                    out.append((a + i, a + i + n, b - n, q))
                elif kind == "FSTRING_START":  # Python >= 3.12 splits f-strings into parts
                    q, ce = t.string[-1], off(t.end)
                    stack.append((ce - (3 if t.string.endswith(q * 3) else 1), ce, q))
                elif kind == "FSTRING_END" and stack:
                    qpos, ce, q = stack.pop()
                    out.append((qpos, ce, off(t.start), q))
        except (tokenize.TokenError, SyntaxError):
            pass
        return out

    n_ctx = model.cfg.n_ctx
    windows, labels = [], []
    for doc in load_corpus(prof)["val"][:max_chars].split(EOT):
        enc = tok.tok.encode(doc)
        lab = np.zeros(len(enc.ids), dtype=np.int64)
        sp = spans(doc)
        for k, (a, b) in enumerate(enc.offsets):
            for qpos, cs, ce, q in sp:
                if cs <= a < b <= ce:
                    lab[k] = (1 if q == "'" else 2) if cs - qpos == 1 else 5  # 5: triple-quoted (docstrings)
                elif a <= qpos < b:
                    lab[k] = 3 if q == "'" else 4
        for i in range(0, len(enc.ids) - n_ctx + 1, n_ctx):
            windows.append(enc.ids[i:i + n_ctx])
            labels.append(lab[i:i + n_ctx])
        if len(windows) >= n_windows:
            break
    return torch.tensor(windows[:n_windows]), torch.tensor(np.stack(labels[:n_windows]))


W, L = string_positions()
site, ch = next(n for n in qc.node_list() if nodes.label(*n) == qtype_node)
with torch.no_grad():
    _, cc = model.run_with_cache(W, names_filter=site)
a = cc[site].reshape(*W.shape, -1)[..., ch]
sign_single = 1 if quote_nodes.loc[qtype_node, "last: mean '"] > quote_nodes.loc[qtype_node, 'last: mean "'] else -1
inside_s, inside_d = a[L == 1], a[L == 2]
agree_single = float((torch.sign(inside_s) == sign_single).float().mean())
agree_double = float((torch.sign(inside_d) == -sign_single).float().mean())
corpus_agreement = float(((torch.sign(inside_s) == sign_single).sum() + (torch.sign(inside_d) == -sign_single).sum())
                         / (len(inside_s) + len(inside_d)))
zero_frac = float(((inside_s == 0).sum() + (inside_d == 0).sum()) / (len(inside_s) + len(inside_d)))
print(f"{qtype_node} on {len(inside_s)} tokens inside '-strings and {len(inside_d)} inside \"-strings: "
      f"sign agreement {corpus_agreement:.3f} (' {agree_single:.3f}, \" {agree_double:.3f}; "
      f"{zero_frac:.1%} exactly zero after AbsTopK); inside docstrings {int((L == 5).sum())} tokens")

# %% [markdown]
# ## Bracket counting, and how to break it
#
# TODO(prose): describe the circuit once its mechanism is read (the tokenizer makes `[[` one token,
# so depth 2 can be read off a single embedding; a head averaging `[` embeddings over the context
# is the paper's mechanism). The mechanism predicts two failures: a distractor list earlier in the
# function, and very long lists.

# %%
bc = circuits[BRACKET]
draw_circuit(model, bc)
plt.show()


def bracket_attack_set(kind: str, n: int = 200, seed: int = 123) -> list[Example]:
    """Bracket prompts, normal or attacked: 'distractor' puts a closed nested list `[[..], [..]]` on a line
    before the prompt's list, 'flat' three closed flat lists, 'long' makes the open list 20-30 elements (or 4-6
    groups of 4-6). (Our tokenizer makes `[[` one token, so the nested distractor is the one that bites.)"""
    from circuitbook.data.tasks import NAMES, _elems, _filler, _header

    rng = random.Random(f"{kind}/{seed}")
    out = []
    for i in range(n):
        label = i % 2
        ctx = _filler(rng, "    ", rng.randint(0, 3))
        ctx += [f"    {rng.choice(NAMES)} = [{', '.join(_elems(rng, rng.randint(1, 3)))}]"
                for _ in range(3 if kind == "flat" else 0)]
        ctx += [f"    {rng.choice(NAMES)} = [[{', '.join(_elems(rng, 2))}], [{', '.join(_elems(rng, 2))}]]"
                for _ in range(1 if kind == "distractor" else 0)]
        long = kind == "long"
        if label == 0:
            body = "[" + ", ".join(_elems(rng, rng.randint(*((20, 30) if long else (1, 6)))))
        else:
            groups = [", ".join(_elems(rng, rng.randint(*((4, 6) if long else (1, 3)))))
                      for _ in range(rng.randint(*((4, 6) if long else (1, 3))))]
            body = "[[" + "], [".join(groups)
        prompt = "\n".join([_header(rng), *ctx, f"    {rng.choice(NAMES)} = {body}"])
        out.append(Example(prompt, *(("]", "]]") if label == 0 else ("]]", "]")), label, BRACKET))
    return out


attacks = {}
for kind in ("normal", "flat", "distractor", "long"):
    b = encode_examples(bracket_attack_set(kind), tok)
    depth1 = TaskBatch(*(getattr(b, f)[b.labels == 0] for f in ("tokens", "last", "correct", "wrong", "labels")))
    attacks[kind] = {"model acc": evaluate_task(model, b)["acc"], "model acc, depth 1": evaluate_task(model, depth1)["acc"],
                     "circuit acc": circuit_alone(model, bc, b, means)["acc"]}
attacks = pd.DataFrame(attacks).T
display(attacks.round(3))

# %% [markdown]
# ## Set or string
#
# TODO: the paper's two hops (a head copies `current` into the `set()` / `""` token; a later head
# attends from the last `current` back to it). Check which heads of our circuit do this.

# %%
sc = circuits[SOS]
draw_circuit(model, sc)
plt.show()

# %% [markdown]
# ## Learned masks against attribution
#
# The baseline ranks nodes by |activation × gradient| and keeps the top ones, with the same
# bisection and the same mean ablation. Size is measured in edges (the paper's headline metric).

# %%
attr = attribution_prune(model, sets.train[QUOTE], means, nodes)
attr_size, learned_size = circuit_size(model, attr), circuit_size(model, qc)
attr_ratio = attr_size["edges"] / max(learned_size["edges"], 1)
print(attr.summary())
print(f"attribution: {attr_size['nodes']} nodes, {attr_size['edges']} edges; learned: {learned_size['nodes']} nodes, "
      f"{learned_size['edges']} edges -> ratio {attr_ratio:.1f}")

# %% [markdown]
# ## Sparse against dense
#
# The same pruning on the chapter-1 dense baseline (same width, depth and node count).

# %%
dense, _ = zoo.dense_baseline(prof, seed=seed)
dense = dense.float().eval()
dense_nodes = NodeSet.from_model(dense)
dense_means = cached_mean_activations("means_dense_baseline", prof, dense, streams["train"], dense_nodes,
                                      retrain=retrain)
dc = cached_prune(f"circuit_{QUOTE}_dense", prof, dense, sets.train[QUOTE], dense_means, PRUNE[QUOTE], dense_nodes,
                  retrain=retrain)
dc = bisect_within_mask(dense, dc, sets.train[QUOTE], dense_means)
dense_size = circuit_size(dense, dc)
dense_ratio = dense_size["edges"] / max(learned_size["edges"], 1)
print(dc.summary())
print(f"dense: {dense_size['nodes']} nodes, {dense_size['edges']} edges; sparse: {learned_size['edges']} edges "
      f"-> ratio {dense_ratio:.1f}")

# %% [markdown]
# ## Claims

# %%
claims = []
for t, r in table.iterrows():
    claims += [
        Claim(f"{t}_circuit_nodes", f"nodes in the learned {t} circuit (sparse model)", int(r["nodes"]),
              paper="12 (quote)" if t == QUOTE else None, target="<= 30", holds=r["nodes"] <= 30),
        Claim(f"{t}_circuit_edges", f"edges in the learned {t} circuit", int(r["edges"]),
              paper="9 (quote)" if t == QUOTE else None, target="report"),
        Claim(f"{t}_sufficient", f"{t}: held-out task loss of the circuit alone", round(r["alone loss"], 4),
              target="<= 0.15", holds=r["alone loss"] <= 0.15),
        Claim(f"{t}_necessary", f"{t}: held-out accuracy with the circuit ablated", round(r["removed acc"], 4),
              target="<= 0.6", holds=r["removed acc"] <= 0.6),
    ]
claims += [
    Claim("quote_type_corpus_sign_agreement", "quote-type node's sign agrees with the enclosing string's quote "
          "(tokens inside strings, validation corpus)", round(corpus_agreement, 4), target=">= 0.9",
          holds=corpus_agreement >= 0.9),
    Claim("bracket_distractor_acc_drop", "accuracy drop of the model with distractor lists before the list",
          round(attacks.loc["normal", "model acc"] - attacks.loc["distractor", "model acc"], 4),
          paper="fails (predicted by the mechanism)", target=">= 0.3",
          holds=attacks.loc["normal", "model acc"] - attacks.loc["distractor", "model acc"] >= 0.3),
    Claim("bracket_long_acc_drop", "accuracy drop of the model on long lists",
          round(attacks.loc["normal", "model acc"] - attacks.loc["long", "model acc"], 4),
          paper="fails (predicted by the mechanism)", target=">= 0.3",
          holds=attacks.loc["normal", "model acc"] - attacks.loc["long", "model acc"] >= 0.3),
    Claim("dense_over_sparse_edges", "quote circuit edges, dense baseline over sparse model", round(dense_ratio, 3),
          paper="~16", target=">= 4", holds=dense_ratio >= 4),
    Claim("attribution_over_learned_edges", "quote circuit edges, attribution pruning over learned masks",
          round(attr_ratio, 3), paper="learned much smaller", target=">= 3", holds=attr_ratio >= 3),
    Claim("prune_seconds_per_task", "wall time to prune one task (full sparse model)", round(max(timings.values()), 1),
          target="<= 300 on 2 cores", holds=max(timings.values()) <= 300),
]
results = write_results("03_circuits", prof, claims)
claims_table(results)

# %% [markdown]
# ## What is next
#
# Chapter 4 trains bridges between the dense baseline and this sparse model, and uses the
# quote-type channel found here to steer the dense model.
