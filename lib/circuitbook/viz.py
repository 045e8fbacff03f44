"""Shared figures and widgets: matplotlib for static pictures, plotly for interactive ones, ipywidgets to explore."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
import torch


def setup() -> None:
    """Notebook defaults: readable matplotlib figures, plotly figures that render in JupyterLab and the HTML book."""
    import plotly.io as pio

    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False})
    pio.renderers.default = "plotly_mimetype+notebook_connected"


def plot_history(history: list[dict], keys: tuple[str, ...] = ("train_loss", "val_loss"), ax=None, **kw):
    """Curves of `keys` against step from a training history (rows without a key are skipped)."""
    ax = ax or plt.gca()
    for k in keys:
        rows = [r for r in history if k in r]
        ax.plot([r["step"] for r in rows], [r[k] for r in rows], label=k, **kw)
    ax.set_xlabel("step")
    ax.legend()
    return ax


def token_html(tokens: list[str], values: list[float] | None = None) -> str:
    """Tokens as boxes (newlines shown as ⏎), optionally shaded by a value in [-1, 1]."""
    spans = []
    for i, t in enumerate(tokens):
        shown = html.escape(t.replace("\n", "⏎")).replace(" ", "&nbsp;")
        if values is None:
            bg = "#eef" if i % 2 == 0 else "#efe"
        else:
            v = float(np.clip(values[i], -1, 1))
            bg = f"rgba(220,50,50,{v:.2f})" if v > 0 else f"rgba(50,90,220,{-v:.2f})"
        style = f"background:{bg};border:1px solid #ccc;margin:1px;font-family:monospace"
        spans.append(f'<span style="{style}">{shown}</span>')
    return "".join(spans)


def attention_figure(patterns: dict[int, torch.Tensor], labels: list[str], title: str = "attention"):
    """A plotly heatmap of attention patterns with a dropdown over (layer, head).

    patterns: {layer: [head, query, key]}; labels: the token strings.
    """
    import plotly.graph_objects as go

    shown = [f"{i}:{t!r}"[:14] for i, t in enumerate(labels)]
    traces, names = [], []
    for layer, p in patterns.items():
        for h in range(p.shape[0]):
            traces.append(go.Heatmap(z=p[h].cpu().numpy(), x=shown, y=shown, colorscale="Blues", zmin=0, zmax=1,
                                     visible=not traces, hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}"))
            names.append(f"layer {layer} head {h}")
    buttons = [dict(label=n, method="update", args=[{"visible": [j == i for j in range(len(traces))]}])
               for i, n in enumerate(names)]
    fig = go.Figure(traces)
    fig.update_layout(title=title, updatemenus=[dict(buttons=buttons, x=1.0, y=1.15)], height=520, width=620,
                      yaxis=dict(autorange="reversed"), xaxis=dict(tickangle=60))
    return fig


@torch.no_grad()
def next_token_table(model, tok, text: str, k: int = 10) -> list[tuple[str, float]]:
    """The model's top-k next tokens and probabilities after `text`."""
    ids = tok.encode(text)[-model.cfg.n_ctx :]
    if not ids:
        return []
    probs = model(torch.tensor([ids], device=next(model.parameters()).device))[0, -1].softmax(-1)
    p, i = probs.topk(k)
    return [(tok.decode([int(j)]), float(q)) for q, j in zip(p, i)]


def next_token_widget(model, tok, text: str = "def f(x):\n    s = 'hello world", k: int = 10):
    """Type code, see the model's next-token distribution (an ipywidgets box)."""
    import ipywidgets as w

    area = w.Textarea(value=text, layout=w.Layout(width="60%", height="140px"), description="code")
    out = w.HTML()

    def update(_=None):
        rows = "".join(
            f"<tr><td><code>{html.escape(repr(t))}</code></td><td>{p:.3f}</td>"
            f'<td><div style="background:#48c;height:10px;width:{int(300 * p)}px"></div></td></tr>'
            for t, p in next_token_table(model, tok, area.value, k)
        )
        out.value = f"<table><tr><th>next token</th><th>p</th><th></th></tr>{rows}</table>"

    area.observe(update, names="value")
    update()
    return w.HBox([area, out])
