"""Pictures of a circuit: an interactive plotly graph, a static matplotlib one, and each node's top
activating examples from a token stream.

Layout: one column per site in forward order (layers left to right: attn-read, q, k, v, attn-out,
mlp-read, neurons, mlp-out, ..., final read); a site's kept channels stacked in its column. Edge
width is |weight| relative to the largest edge of the same kind (residual gains and W_in entries live
on different scales); colour is the sign (red +, blue -; residual edges grey).
"""

from __future__ import annotations

import html

import numpy as np
import torch

from circuitbook.circuits.circuit import Circuit
from circuitbook.circuits.edges import Edge, circuit_edges
from circuitbook.circuits.nodes import FINAL_SITE, site_kind
from circuitbook.train import val_batches
from circuitbook.viz import token_html

Node = tuple[str, int]
KIND_COLOURS = {"read": "#4c72b0", "q": "#dd8452", "k": "#c44e52", "v": "#8172b3", "write": "#55a868",
                "neuron": "#937860"}
_SHORT = {"ln1.hook_normalized": "attn-read", "attn.hook_q": "q", "attn.hook_k": "k", "attn.hook_v": "v",
          "hook_attn_out": "attn-out", "ln2.hook_normalized": "mlp-read", "mlp.hook_post": "neurons",
          "hook_mlp_out": "mlp-out"}


def short_site(site: str) -> str:
    """'blocks.1.attn.hook_q' -> 'L1 q'; 'ln_final.hook_normalized' -> 'final read'."""
    if site == FINAL_SITE:
        return "final read"
    _, l, rel = site.split(".", 2)
    return f"L{l} {_SHORT[rel]}"


def layout(circuit: Circuit, compact: bool = True) -> tuple[dict[Node, tuple[float, float]], list[str]]:
    """Positions {node: (x, y)} and the column names. `compact` drops columns with no kept node."""
    by_site = circuit.by_site()
    sites = [s for s in circuit.nodes.sites if s in by_site or not compact]
    pos = {}
    for x, s in enumerate(sites):
        chans = by_site.get(s, [])
        for i, c in enumerate(chans):
            pos[(s, c)] = (float(x), i - (len(chans) - 1) / 2)
    return pos, sites


def _edge_style(edges: list[Edge]) -> list[tuple[float, str]]:
    """(width in [0.5, 6], colour) per edge, width relative to the largest |weight| of the same kind."""
    top: dict[str, float] = {}
    for e in edges:
        top[e.via] = max(top.get(e.via, 0.0), abs(e.weight))
    out = []
    for e in edges:
        w = 0.5 + 5.5 * abs(e.weight) / (top[e.via] or 1.0)
        colour = "#999999" if e.via == "resid" else ("#d62728" if e.weight > 0 else "#1f77b4")
        out.append((w, colour))
    return out


def plotly_circuit(
    model, circuit: Circuit, edges: list[Edge] | None = None, hover: dict[Node, str] | None = None,
    title: str | None = None, compact: bool = True,
):
    """An interactive plotly figure of the circuit; `hover` adds text per node (e.g. `examples_text`)."""
    import plotly.graph_objects as go

    edges = circuit_edges(model, circuit) if edges is None else edges
    pos, sites = layout(circuit, compact)
    fig = go.Figure()
    # edges: one trace per (colour, width bin) keeps the figure light for large circuits
    groups: dict[tuple[str, float], tuple[list, list, list]] = {}
    for e, (w, colour) in zip(edges, _edge_style(edges)):
        if e.src not in pos or e.dst not in pos:
            continue
        xs, ys, text = groups.setdefault((colour, round(w)), ([], [], []))
        (x0, y0), (x1, y1) = pos[e.src], pos[e.dst]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
        text += [f"{e.via} {e.weight:+.3g}"] * 2 + [None]
    for (colour, w), (xs, ys, text) in groups.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=max(w, 0.5)),
                                 opacity=0.6, hoverinfo="text", text=text, showlegend=False))
    scores = circuit.nodes.split(circuit.scores)
    for kind, colour in KIND_COLOURS.items():
        ns = [n for n in pos if site_kind(n[0]) == kind]
        if not ns:
            continue
        text = [f"{circuit.nodes.label(*n)}<br>score {float(scores[n[0]][n[1]]):.3g}"
                + (f"<br>{hover[n]}" if hover and n in hover else "") for n in ns]
        fig.add_trace(go.Scatter(x=[pos[n][0] for n in ns], y=[pos[n][1] for n in ns], mode="markers",
                                 marker=dict(size=12, color=colour, line=dict(width=1, color="black")),
                                 name=kind, hoverinfo="text", hovertext=text))
    fig.update_layout(
        title=title or circuit.summary(), plot_bgcolor="white", height=500,
        xaxis=dict(tickmode="array", tickvals=list(range(len(sites))), ticktext=[short_site(s) for s in sites],
                   tickangle=-45, showgrid=False, zeroline=False),
        yaxis=dict(showticklabels=False, showgrid=False, zeroline=False),
    )
    return fig


def draw_circuit(model, circuit: Circuit, edges: list[Edge] | None = None, ax=None, labels: bool | None = None,
                 compact: bool = True):
    """A static matplotlib picture of the circuit (node labels when there are at most 60 nodes)."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    edges = circuit_edges(model, circuit) if edges is None else edges
    pos, sites = layout(circuit, compact)
    ax = ax or plt.figure(figsize=(max(6, 0.9 * len(sites)), 4.5)).gca()
    keep = [(e, s) for e, s in zip(edges, _edge_style(edges)) if e.src in pos and e.dst in pos]
    if keep:
        segs = [[pos[e.src], pos[e.dst]] for e, _ in keep]
        ax.add_collection(LineCollection(segs, linewidths=[s[0] * 0.6 for _, s in keep],
                                         colors=[s[1] for _, s in keep], alpha=0.6, zorder=1))
    for kind, colour in KIND_COLOURS.items():
        ns = [n for n in pos if site_kind(n[0]) == kind]
        if ns:
            ax.scatter([pos[n][0] for n in ns], [pos[n][1] for n in ns], s=60, c=colour, edgecolors="black",
                       label=kind, zorder=2)
    if labels or (labels is None and len(pos) <= 60):
        for (_, c), (x, y) in pos.items():
            ax.annotate(str(c), (x, y), xytext=(5, 3), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(len(sites)), [short_site(s) for s in sites], rotation=45, ha="right")
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(sites) - 0.5)
    ys = [y for _, y in pos.values()] or [0.0]
    ax.set_ylim(min(ys) - 1, max(ys) + 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_title(circuit.summary(), fontsize=9)
    return ax


# ---------------------------------------------------------------- top activating examples


@torch.no_grad()
def top_activations(
    model, tokens: np.ndarray, nodes: list[Node], tokenizer, k: int = 5, n_windows: int = 64,
    n_ctx: int | None = None, context: int = 12, absolute: bool = False,
) -> dict[Node, list[dict]]:
    """For each node, the k (window, position) pairs of a token stream where it is largest (by |value|
    if `absolute`), each as {"value", "tokens": [str] (context ending at the position), "acts": [float]
    (the node on those tokens), "window", "pos"}. Windows are spread evenly over the stream."""
    n_ctx = n_ctx or model.cfg.n_ctx
    x = val_batches(tokens, 1, n_windows, n_ctx)[0].to(next(model.parameters()).device)  # [W, n_ctx]
    sites = {s for s, _ in nodes}
    _, cache = model.run_with_cache(x, names_filter=lambda name: name in sites)
    out = {}
    for site, ch in nodes:
        acts = cache[site].reshape(x.shape[0], x.shape[1], -1)[..., ch].float().cpu()  # [W, T]
        key = acts.abs() if absolute else acts
        top = key.flatten().topk(min(k, key.numel())).indices
        rows = []
        for i in top.tolist():
            w, p = divmod(i, x.shape[1])
            lo = max(0, p - context)
            toks = [tokenizer.decode([t]) for t in x[w, lo : p + 1].tolist()]
            rows.append({"value": float(acts[w, p]), "tokens": toks, "acts": acts[w, lo : p + 1].tolist(),
                         "window": w, "pos": p})
        out[(site, ch)] = rows
    return out


def examples_text(examples: list[dict], n_tokens: int = 6) -> str:
    """Plain hover text: the last tokens of each example, the top one marked [..]."""
    lines = []
    for ex in examples:
        toks = [t.replace("\n", "⏎") for t in ex["tokens"][-n_tokens:]]
        lines.append(html.escape("".join(toks[:-1]) + f"[{toks[-1]}]") + f"  {ex['value']:+.2f}")
    return "<br>".join(lines)


def examples_html(examples: list[dict], title: str = "") -> str:
    """HTML rows of tokens shaded by the node's activation (the example's own maximum = full colour)."""
    rows = [f"<b>{html.escape(title)}</b>"] if title else []
    for ex in examples:
        a = torch.tensor(ex["acts"])
        scale = float(a.abs().max()) or 1.0
        rows.append(f"<div>{token_html(ex['tokens'], (a / scale).tolist())} <i>{ex['value']:+.3f}</i></div>")
    return "\n".join(rows)


def node_examples(model, circuit: Circuit, tokens: np.ndarray, tokenizer, k: int = 5, **kw) -> dict[Node, list[dict]]:
    """`top_activations` for every kept node of a circuit."""
    return top_activations(model, tokens, circuit.node_list(), tokenizer, k, **kw)

