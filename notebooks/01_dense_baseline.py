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
# # 1. A transformer trained on Python code
#
# **What you will learn.** How the book's one transformer is built and trained: a corpus made from
# the Python standard library plus generated idioms, a byte-level BPE tokenizer, a small GPT with a
# hook at every site (`blocks.0.mlp.hook_post`, ...), and the four binary *contrast tasks* on which
# the later chapters find circuits. The model trained here is the **dense baseline** that every
# later chapter compares against.
#
# **What the paper does.** Gao et al. (2025) train GPT-2-style models on Python code with a BPE
# vocabulary of 2048 and study circuits for next-token contrasts such as closing a string with the
# right quote {cite}`gao2025weightsparse`. Each task is a prompt and two candidate next tokens;
# the task loss is the binary cross-entropy over just those two logits. Their models have 8 layers
# and `d_model` 2048; ours has 4 layers and `d_model` 128 and trains on 2 CPU cores in under an
# hour. The question for this chapter: is such a small dense model good enough at the four tasks
# (held-out accuracy ≥ 0.9 each) to be worth explaining?

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
import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display

from circuitbook import device, get_profile, seed_everything, set_threads, viz, zoo
from circuitbook.data.corpus import EOT, corpus_config, load_corpus
from circuitbook.data.tasks import TASKS, evaluate_task, sample_examples
from circuitbook.data.tokenizer import TASK_TOKENS
from circuitbook.models.gpt import GPT
from circuitbook.results import Claim, claims_table, write_results
from circuitbook.train import evaluate_lm, val_batches

prof = get_profile(profile)
seed_everything(seed)
set_threads()  # every usable core, or OMP_NUM_THREADS when set (`make test` sets 1)
viz.setup()

# %% [markdown]
# ## The corpus
#
# Documents are the standard library's `.py` files (test suites left out) and blocks of generated
# snippets. The snippets exercise the tasks: strings opened with either quote, nested lists,
# a variable `current` initialised as `set()` or `""`, `while True:` and `return True`. They are
# written from *train-split* task prompts only, so no held-out prompt ever appears in the corpus
# (a unit test checks this). Everything is generated on your machine; nothing is downloaded.

# %%
# NBVAL_CHECK_OUTPUT
corpus = load_corpus(prof)
print(corpus_config(prof))
for split, text in corpus.items():
    print(f"{split:5s}: {len(text):>11,} characters, {text.count(EOT) + 1:>5} documents")
snippet_start = corpus["train"].find("current = set()")
print("\nA generated snippet:\n" + corpus["train"][corpus["train"].rfind("def", 0, snippet_start):][:260])

# %% [markdown]
# ## The tokenizer
#
# A byte-level BPE with 2048 tokens, trained on the training split. Pre-tokenization is GPT-2's
# without the English contraction rules (which would split Python strings such as `'s...`), and
# every newline is a token of its own. Then each task's two candidate answers are single tokens.

# %%
# NBVAL_CHECK_OUTPUT
tok = zoo.tokenizer(prof, retrain=retrain)
example = 'def greet(name):\n    msg = "hello " + name\n    items = [[1, 2], [3]]\n    return msg\n'
display(HTML(viz.token_html(tok.tokens(example))))
print(f"vocab {tok.vocab_size}; {len(tok.encode(example))} tokens for {len(example)} characters")
print("task answer tokens:", {t: tok.single_token(t) for t in TASK_TOKENS})

# %%
# NBVAL_CHECK_OUTPUT
streams = zoo.token_streams(prof, tok)
for split, ids in streams.items():
    print(f"{split:5s}: {len(ids):>10,} tokens ({len(corpus[split]) / len(ids):.2f} characters per token)")

# %% [markdown]
# ## The four contrast tasks
#
# Each example is a prompt, the correct next token and the wrong one. Prompts are split into train
# and test by a hash of their text; we report accuracy on the test prompts.

# %%
# NBVAL_CHECK_OUTPUT
for task in TASKS:
    e = sample_examples(task, "test", 1, seed)[0]
    print(f"── {task}: correct {e.correct!r}, wrong {e.wrong!r}")
    print(e.prompt[-150:] + "█\n")

# %% [markdown]
# ## The model
#
# One file, `circuitbook/models/gpt.py`, in the spirit of nanoGPT: embedding, pre-norm blocks of
# attention and MLP, final norm, untied unembedding. It is a TransformerLens `HookedRootModule`,
# so `run_with_cache` and `run_with_hooks` work, and its hook names are the book's vocabulary of
# locations. Options the later chapters switch on (RMSNorm, no positions, attention sinks, AbsTopK
# activation sparsity, a bigram table) are already here; the dense baseline uses RMSNorm and learned
# positions.

# %%
# NBVAL_CHECK_OUTPUT
gcfg, tcfg = zoo.dense_configs(prof)
print(gcfg)
print(tcfg)
print(f"{GPT(gcfg).n_params():,} parameters")
print("locations in block 0:", [n for n in GPT(gcfg).hook_names if n.startswith("blocks.0.")])

# %% [markdown]
# ## Training
#
# `circuitbook.train.train` is the book's one training loop: AdamW, a learning-rate schedule
# (here linear warmup and cosine decay), gradient clipping, evaluation, a progress bar, a
# checkpoint every few hundred steps, and resume after an interruption to bit-identical weights
# (tested). It also keeps a few checkpoints along the way, which chapter 7 uses to follow features
# through training. With `profile="full"` the shipped artifact is loaded; `retrain=True` trains
# again (about 45 minutes on 2 cores).

# %%
model, meta = zoo.dense_baseline(prof, seed=seed, retrain=retrain)
hist = meta["metrics"]["history"]
print(f"trained {hist[-1]['step']} steps at {meta['metrics']['tokens_per_s']:,.0f} tokens/s")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
viz.plot_history(hist, ("train_loss", "val_loss"), ax=axes[0])
axes[0].set_ylabel("loss per token (nats)")
axes[0].set_title("language-model loss")
viz.plot_history(hist, tuple(f"acc_{t}" for t in TASKS), ax=axes[1], marker="o")
axes[1].axhline(0.9, color="grey", ls="--", lw=1)
axes[1].set_ylabel("held-out accuracy")
axes[1].set_title("contrast tasks during training")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## How good is it?
#
# Validation loss over every non-overlapping window of the validation split, and each task's
# held-out loss and accuracy.

# %%
# NBVAL_CHECK_OUTPUT
val = val_batches(streams["val"], 10_000, 32, gcfg.n_ctx)
val_loss = evaluate_lm(model, val)
sets = zoo.task_sets(prof, tok, seed)
task_metrics = {t: evaluate_task(model, sets.test[t]) for t in TASKS}
print(f"validation loss {val_loss:.3f} nats/token over {sum(len(b) for b in val)} windows")
for t, m in task_metrics.items():
    print(f"{t:22s} test accuracy {m['acc']:.3f}   task loss {m['loss']:.3f}   (n={len(sets.test[t].tokens)})")

# %% [markdown]
# The learning curves above show when each task is learned. Accuracies at or near 1.0 mean the tasks,
# as generated here, are easy for a dense model of this size: the interesting question for the rest
# of the book is not *whether* a model solves them but *how*, and how small the mechanism can be.
#
# ## Looking inside: attention patterns
#
# `run_with_cache` returns every hooked activation, keyed by location. Here are the attention
# patterns on a quote prompt (pick a layer and head from the menu). Look for a head whose
# last-position row puts its weight on the opening quote: that is where the model can read which
# quote to close with. In a dense model this is one clue among many overlapping ones; chapter 3
# isolates the mechanism in a sparse model, where it is small enough to read whole.

# %%
e = next(x for x in sample_examples("single_double_quote", "test", 50, seed) if x.prompt.count("\n") <= 3)
ids = tok.encode(e.prompt)
logits, cache = model.run_with_cache(torch.tensor([ids], device=device()))
labels = [tok.decode([i]) for i in ids]
patterns = {layer: cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(gcfg.n_layers)}
viz.attention_figure(patterns, labels, title=f"attention on a quote prompt (answer {e.correct!r})").show()

# %%
# NBVAL_CHECK_OUTPUT
# A static summary for the printed book: where each head's last query position looks.
quote_pos = max(i for i, t in enumerate(labels) if t.strip() in ("'", '"'))
fig, ax = plt.subplots(figsize=(10, 2.6))
last_rows = torch.stack([p[:, -1] for p in patterns.values()]).flatten(0, 1)  # [layer*head, key]
ax.imshow(last_rows.cpu().numpy(), aspect="auto", cmap="Blues", vmin=0, vmax=1)
ax.set_yticks(range(len(last_rows)), [f"L{l}H{h}" for l in patterns for h in range(gcfg.n_heads)], fontsize=7)
ax.set_xticks(range(len(labels)), [repr(t)[1:-1][:6] for t in labels], rotation=90, fontsize=7)
ax.axvline(quote_pos, color="red", lw=1)
ax.set_title("attention from the last position (red line: the opening quote)")
plt.show()
att_to_quote = {f"L{l}H{h}": float(p[h, -1, quote_pos]) for l, p in patterns.items() for h in range(gcfg.n_heads)}
best = max(att_to_quote, key=att_to_quote.get)
print(f"head attending most to the opening quote: {best} ({att_to_quote[best]:.2f} of its attention)")

# %% [markdown]
# ## Try it
#
# Type Python and watch the next-token distribution (the widget needs a live kernel; in the HTML
# book it shows its initial state).

# %%
viz.next_token_widget(model, tok)

# %% [markdown]
# ## Claims
#
# The dense baseline's numbers, written to `data/results/01_dense_baseline.json` (the README's
# table is generated from these files). The paper reports no dense-baseline accuracy for these
# tasks at this scale, so the target is the book's own bar: a model worth explaining solves each
# task on held-out prompts at least 90% of the time.

# %%
# NBVAL_CHECK_OUTPUT
claims = [Claim("val_loss", "dense model's validation loss per token (nats)", round(val_loss, 4), target="report")]
for t in TASKS:
    acc = task_metrics[t]["acc"]
    claims.append(Claim(f"task_acc_{t}", f"held-out accuracy on {t}", round(acc, 4), target=">= 0.9", holds=acc >= 0.9))
results = write_results("01_dense_baseline", prof, claims)
claims_table(results)

# %% [markdown]
# ## What is next
#
# A dense model solves the tasks, but its weights are a tangle: every neuron reads from every
# residual direction. Chapter 2 trains the same architecture with most weights forced to zero,
# which is what makes the circuits of chapter 3 small enough to read.
