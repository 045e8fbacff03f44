"""Attribution graphs as circuit-tracer's graph JSON, and circuit-tracer's influence pruning.

The JSON (what circuit-tracer's graph viewer reads) is one object:

    {"metadata": {slug, scan, transcoder_list, prompt_tokens, prompt, [node_threshold, schema_version]},
     "qParams":  {pinnedIds, supernodes, linkType, clickedId, sg_pos},
     "nodes":    [{node_id, feature, layer, ctx_idx, feature_type, jsNodeId, [token_prob, is_target_logit,
                   run_idx, reverse_ctx_idx, clerp, influence, activation]}, ...],
     "links":    [{source, target, weight}, ...]}           # source/target are node_ids

Node kinds (feature_type) and ids follow circuit-tracer: transcoder features are
"cross layer transcoder" (the viewer's name for any transcoder feature) with id
"{layer}_{feature}_{pos}"; errors "mlp reconstruction error", id "{layer}_error_{pos}" (circuit-tracer's
"0_{layer}_{pos}" collides with feature `layer` of layer 0; its forks use ours); input
embeddings (text or image tokens) "embedding", id "E_{token_id}_{pos}", layer "E"; logits
"logit", id "{n_layers+1}_{vocab_idx}_{pos}".

The adjacency matrix A is dense [N, N] with rows = targets and columns = sources:
A[t, s] is the direct effect of node s on node t (circuit-tracer's layout).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from circuitbook.artifacts import atomic_write_bytes

FEATURE, ERROR, EMBEDDING, LOGIT = "cross layer transcoder", "mlp reconstruction error", "embedding", "logit"

# field -> accepted types. Required fields must be present; optional ones, when present, must type-check.
TOP_REQUIRED = {"metadata": (dict,), "qParams": (dict,), "nodes": (list,), "links": (list,)}
METADATA_REQUIRED = {"slug": (str,), "scan": (str,), "transcoder_list": (list,),
                     "prompt_tokens": (list,), "prompt": (str,)}
METADATA_OPTIONAL = {"node_threshold": (int, float, type(None)), "schema_version": (int, type(None))}
QPARAMS_REQUIRED = {"pinnedIds": (list,), "supernodes": (list,), "linkType": (str,),
                    "clickedId": (str,), "sg_pos": (str,)}
NODE_REQUIRED = {"node_id": (str,), "feature": (int,), "layer": (str,), "ctx_idx": (int,),
                 "feature_type": (str,), "jsNodeId": (str,)}
NODE_OPTIONAL = {"token_prob": (int, float), "is_target_logit": (bool,), "run_idx": (int,),
                 "reverse_ctx_idx": (int,), "clerp": (str,), "influence": (int, float, type(None)),
                 "activation": (int, float, type(None))}
LINK_REQUIRED = {"source": (str,), "target": (str,), "weight": (int, float)}


# ---- nodes -----------------------------------------------------------------------------------------


def _node(node_id: str, feature: int, layer: str, ctx_idx: int, feature_type: str, js: str, **kw) -> dict:
    node = {"node_id": node_id, "feature": int(feature), "layer": layer, "ctx_idx": int(ctx_idx),
            "feature_type": feature_type, "jsNodeId": js, "token_prob": 0.0, "is_target_logit": False,
            "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "", "influence": None, "activation": None}
    node.update(kw)
    return node


def feature_node(
    layer: int, pos: int, feature: int, activation: float | None = None, clerp: str = ""
) -> dict:
    """A transcoder feature; its JSON `feature` is the Cantor pairing of (layer, index), as circuit-tracer."""
    cantor = (layer + feature) * (layer + feature + 1) // 2 + feature
    return _node(f"{layer}_{feature}_{pos}", cantor, str(layer), pos, FEATURE, f"{layer}_{feature}-0",
                 activation=None if activation is None else float(activation), clerp=clerp)


def error_node(layer: int, pos: int, clerp: str = "") -> dict:
    """The transcoder's error (true MLP output - reconstruction) at one layer and position."""
    return _node(f"{layer}_error_{pos}", -1, str(layer), pos, ERROR, f"{layer}_{pos}-0", clerp=clerp)


def embedding_node(pos: int, token_id: int, clerp: str = "") -> dict:
    """An input embedding: a text token or an image token at position `pos`."""
    return _node(f"E_{token_id}_{pos}", pos, "E", pos, EMBEDDING, f"E_{token_id}-{pos}", clerp=clerp)


def logit_node(
    pos: int, vocab_idx: int, token: str, n_layers: int, prob: float, target: bool = False
) -> dict:
    """An output logit (the graph's sink); `prob` is its weight in pruning."""
    layer = str(n_layers + 1)
    return _node(f"{layer}_{vocab_idx}_{pos}", vocab_idx, layer, pos, LOGIT, f"L_{vocab_idx}-{pos}",
                 token_prob=float(prob), is_target_logit=target, clerp=f'Output "{token}" (p={prob:.3f})')


# ---- pruning (circuit-tracer's algorithm) ----------------------------------------------------------


class PruneResult(NamedTuple):
    node_mask: Tensor  # [N] bool: nodes kept
    edge_mask: Tensor  # [N, N] bool: edges kept (rows = targets, columns = sources)
    cumulative_scores: Tensor  # [N]: cumulative share of influence up to each node (by rank)
    influence: Tensor  # [N]: each node's total influence on the logits


def normalize_rows(A: Tensor) -> Tensor:
    """|A| with every row (a target's incoming edges) scaled to sum to 1 (rows of zeros stay zero)."""
    A = A.abs()
    return A / A.sum(1, keepdim=True).clamp_min(1e-10)


def influence(A: Tensor, w: Tensor, method: str = "series", max_iter: int = 1000) -> Tensor:
    """Total influence w (A + A^2 + ...) of every node on the weighted sinks w. A: [N, N], w: [N] -> [N].

    A is a normalised adjacency of a DAG, so the series ends (A is nilpotent): "series" sums it exactly;
    "inverse" uses w ((I - A)^-1 - I).
    """
    if method == "inverse":
        eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        return w @ (torch.linalg.inv(eye - A) - eye)
    term = w @ A
    total = term.clone()
    for _ in range(max_iter):
        if not term.any():
            return total
        term = term @ A
        total += term
    raise RuntimeError(f"influence did not converge in {max_iter} steps: is the graph acyclic?")


def score_cutoff(scores: Tensor, keep: float) -> Tensor:
    """The score above which the top-ranked entries hold a fraction `keep` of the total score."""
    s = scores.flatten().sort(descending=True).values
    cum = s.cumsum(0) / s.sum().clamp_min(1e-30)
    i = int(torch.searchsorted(cum, torch.tensor(keep, dtype=cum.dtype)).item())
    n_pos = int((s > 0).sum())
    return s[min(i, max(n_pos - 1, 0))]  # never a zero cut-off (it would keep every non-edge)


def _kinds(nodes: Sequence[dict]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    t = [n["feature_type"] for n in nodes]
    logit = torch.tensor([x == LOGIT for x in t])
    emb = torch.tensor([x == EMBEDDING for x in t])
    err = torch.tensor(["error" in x for x in t])
    feat = ~(logit | emb | err)
    return feat, err, emb, logit


def prune_graph(
    adjacency: Tensor,
    nodes: Sequence[dict],
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    logit_weights: Tensor | None = None,
) -> PruneResult:
    """circuit-tracer's pruning on a dense adjacency [N, N] (rows = targets) and its node dicts.

    1. influence of every node on the logits (weights = the logit nodes' token_prob, or `logit_weights`
       given per logit node, in order) through the row-normalised |A|;
    2. keep the most influential nodes holding `node_threshold` of the total (embeddings and logits always);
    3. on the graph of kept nodes, score each edge by its normalised weight times its target's influence
       (plus the target's own logit weight) and keep the edges holding `edge_threshold` of the total;
    4. repeatedly drop feature/error nodes without outgoing edges and features without incoming edges.
    Node order is free: kinds come from each node's feature_type.
    """
    if not (0.0 <= node_threshold <= 1.0 and 0.0 <= edge_threshold <= 1.0):
        raise ValueError("thresholds must lie in [0, 1]")
    A = adjacency.detach().float()
    N = A.shape[0]
    if A.shape != (N, N) or len(nodes) != N:
        raise ValueError(f"adjacency {tuple(A.shape)} does not match {len(nodes)} nodes")
    feat, err, emb, logit = _kinds(nodes)
    w = torch.zeros(N)
    if logit_weights is None:
        w[logit] = torch.tensor([float(n.get("token_prob", 0.0)) for n, m in zip(nodes, logit) if m])
    else:
        w[logit] = torch.as_tensor(logit_weights, dtype=torch.float32)
    if w.sum() <= 0:
        raise ValueError("the logit nodes carry no weight (set token_prob or pass logit_weights)")

    node_infl = influence(normalize_rows(A), w)
    node_mask = node_infl >= score_cutoff(node_infl, node_threshold)
    node_mask |= emb | logit

    pruned = A.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    An = normalize_rows(pruned)
    edge_scores = An * (influence(An, w) + w)[:, None]  # [targets, sources]
    edge_mask = edge_scores >= score_cutoff(edge_scores, edge_threshold)
    edge_mask &= edge_scores > 0

    inner = feat | err  # nodes that must pass influence on
    while True:
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask &= ~inner | edge_mask.any(0)  # feature/error nodes need an outgoing edge
        node_mask &= ~feat | edge_mask.any(1)  # features need an incoming edge
        if torch.equal(node_mask, old):
            break

    order = node_infl.argsort(descending=True)
    cum = torch.zeros(N)
    cum[order] = node_infl[order].cumsum(0) / node_infl.sum().clamp_min(1e-30)
    return PruneResult(node_mask, edge_mask, cum, node_infl)


# ---- export and validation -------------------------------------------------------------------------


def graph_to_json(
    adjacency: Tensor,
    nodes: Sequence[dict],
    *,
    slug: str,
    prompt: str,
    prompt_tokens: Sequence[str],
    scan: str = "circuitbook",
    transcoder_list: Sequence[str] = (),
    prune: bool = True,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
) -> dict[str, Any]:
    """The graph as circuit-tracer JSON. With `prune`, only kept nodes and edges, as circuit-tracer exports;
    nodes left without any link are dropped (embeddings and logits stay). Node influence is the cumulative
    influence score circuit-tracer stores."""
    A = adjacency.detach().float().cpu()
    N = A.shape[0]
    if prune:
        node_mask, edge_mask, cum, _ = prune_graph(A, nodes, node_threshold, edge_threshold)
    else:
        node_mask, edge_mask = torch.ones(N, dtype=torch.bool), A != 0
        cum = None
    kept = [i for i in range(N) if node_mask[i]]
    out_nodes = {}
    for i in kept:
        n = dict(nodes[i])
        if cum is not None:
            n["influence"] = float(cum[i])
        out_nodes[i] = n
    dsts, srcs = edge_mask.nonzero(as_tuple=True)
    links = [{"source": out_nodes[s]["node_id"], "target": out_nodes[t]["node_id"], "weight": float(A[t, s])}
             for t, s in zip(dsts.tolist(), srcs.tolist()) if s in out_nodes and t in out_nodes]
    linked = {l["source"] for l in links} | {l["target"] for l in links}
    ends = (EMBEDDING, LOGIT)
    used = [n for n in out_nodes.values() if n["node_id"] in linked or n["feature_type"] in ends]
    return {
        "metadata": {"slug": slug, "scan": scan, "transcoder_list": list(transcoder_list),
                     "prompt_tokens": list(prompt_tokens), "prompt": prompt,
                     "node_threshold": node_threshold if prune else None, "schema_version": 1},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": used,
        "links": links,
    }


def _check(obj: Any, required: dict, optional: dict, where: str, errors: list[str]) -> None:
    if not isinstance(obj, dict):
        errors.append(f"{where}: expected an object, got {type(obj).__name__}")
        return
    for key, types in required.items():
        if key not in obj:
            errors.append(f"{where}: missing required field {key!r}")
        elif not _is(obj[key], types):
            errors.append(f"{where}.{key}: expected {'/'.join(t.__name__ for t in types)}, got {obj[key]!r}")
    for key, types in optional.items():
        if key in obj and not _is(obj[key], types):
            errors.append(f"{where}.{key}: expected {'/'.join(t.__name__ for t in types)}, got {obj[key]!r}")


def _is(value: Any, types: tuple) -> bool:
    if isinstance(value, bool) and bool not in types:  # JSON: true is not a number
        return False
    return isinstance(value, types)


def graph_json_errors(obj: Any) -> list[str]:
    """Every problem found in a graph JSON object (empty list: valid)."""
    errors: list[str] = []
    _check(obj, TOP_REQUIRED, {}, "graph", errors)
    if errors:
        return errors
    _check(obj["metadata"], METADATA_REQUIRED, METADATA_OPTIONAL, "metadata", errors)
    _check(obj["qParams"], QPARAMS_REQUIRED, {}, "qParams", errors)
    ids = set()
    for i, n in enumerate(obj["nodes"]):
        _check(n, NODE_REQUIRED, NODE_OPTIONAL, f"nodes[{i}]", errors)
        if isinstance(n, dict) and "node_id" in n:
            if n["node_id"] in ids:
                errors.append(f"nodes[{i}]: duplicate node_id {n['node_id']!r}")
            ids.add(n["node_id"])
    for i, l in enumerate(obj["links"]):
        _check(l, LINK_REQUIRED, {}, f"links[{i}]", errors)
        if isinstance(l, dict):
            for end in ("source", "target"):
                if end in l and l[end] not in ids:
                    errors.append(f"links[{i}].{end}: unknown node_id {l[end]!r}")
    return errors


def validate_graph_json(obj: Any) -> None:
    """Raise ValueError listing every missing or mistyped field (and links to unknown nodes)."""
    errors = graph_json_errors(obj)
    if errors:
        shown = "\n  ".join(errors[:20]) + (f"\n  ... {len(errors) - 20} more" if len(errors) > 20 else "")
        raise ValueError(f"invalid graph JSON ({len(errors)} problems):\n  {shown}")


def save_graph_json(obj: dict[str, Any], path: str | Path) -> Path:
    """Validate and write the graph (atomically). Returns the path."""
    validate_graph_json(obj)
    path = Path(path)
    atomic_write_bytes(path, json.dumps(obj, indent=2).encode())
    return path


# ---- supernodes and an interactive view ------------------------------------------------------------


def merge_supernodes(obj: dict[str, Any], supernodes: Sequence[Sequence[str]]) -> dict[str, Any]:
    """A copy of the graph with each group [name, node_id, node_id, ...] (circuit-tracer's qParams format)
    merged into one node "S_{name}": links into or out of a member are summed per (source, target), links
    inside a group are dropped. The groups are kept in qParams.supernodes, as the viewer stores them."""
    member: dict[str, str] = {}
    for group in supernodes:
        name, *ids = group
        for i in ids:
            member[i] = f"S_{name}"
    nodes = {n["node_id"]: n for n in obj["nodes"]}
    out_nodes = [n for n in obj["nodes"] if n["node_id"] not in member]
    for group in supernodes:
        name, *ids = group
        ms = [nodes[i] for i in ids if i in nodes]
        if not ms:
            continue
        layers = [_layer_num(m["layer"]) for m in ms]
        acts = [m.get("activation") or 0.0 for m in ms]
        out_nodes.append(_node(f"S_{name}", -1, str(round(sum(layers) / len(layers))),
                               round(sum(m["ctx_idx"] for m in ms) / len(ms)), "supernode", f"S_{name}",
                               clerp=f"{name} ({len(ms)} nodes)", activation=float(sum(acts)),
                               influence=max((m.get("influence") or 0.0) for m in ms)))
    weights: dict[tuple[str, str], float] = {}
    for link in obj["links"]:
        s, t = member.get(link["source"], link["source"]), member.get(link["target"], link["target"])
        if s != t:
            weights[(s, t)] = weights.get((s, t), 0.0) + float(link["weight"])
    q = dict(obj["qParams"], supernodes=[list(g) for g in supernodes])
    return {**obj, "qParams": q, "nodes": out_nodes,
            "links": [{"source": s, "target": t, "weight": w} for (s, t), w in weights.items()]}


def _layer_num(layer: str) -> float:
    return -1.0 if layer == "E" else float(layer)


def plot_graph(obj: dict[str, Any], max_links: int = 400, title: str = ""):
    """An interactive plotly view of a graph JSON: x = token position, y = layer (inputs at the bottom,
    logits at the top); links blue (excitatory) or red (inhibitory), width by |weight| (the strongest
    `max_links` only); hover shows each node's id, label, activation and influence. Returns the figure."""
    import plotly.graph_objects as go

    nodes = obj["nodes"]
    where = {}
    for n in nodes:  # spread nodes that share a (position, layer) cell a little sideways
        key = (n["ctx_idx"], _layer_num(n["layer"]))
        k = sum(1 for v in where.values() if v[2] == key)
        where[n["node_id"]] = (key[0] + 0.12 * k, key[1], key)
    links = sorted(obj["links"], key=lambda l: -abs(l["weight"]))[:max_links]
    wmax = max((abs(l["weight"]) for l in links), default=1.0) or 1.0
    fig = go.Figure()
    for sign, colour in ((1, "rgba(40,90,200,{a})"), (-1, "rgba(200,50,40,{a})")):
        for lo, hi, width in ((0.0, 0.1, 0.5), (0.1, 0.4, 1.5), (0.4, 1.01, 3.5)):
            xs, ys = [], []
            for l in links:
                r = abs(l["weight"]) / wmax
                if (l["weight"] >= 0) == (sign > 0) and lo <= r < hi and l["source"] in where and l["target"] in where:
                    (x0, y0, _), (x1, y1, _) = where[l["source"]], where[l["target"]]
                    xs += [x0, x1, None]
                    ys += [y0, y1, None]
            if xs:
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                         line={"width": width, "color": colour.format(a=0.3 + 0.5 * hi)}))
    symbols = {FEATURE: "circle", ERROR: "diamond", EMBEDDING: "square", LOGIT: "triangle-up", "supernode": "star"}
    for kind, symbol in symbols.items():
        ns = [n for n in nodes if n["feature_type"] == kind]
        if not ns:
            continue
        fig.add_trace(go.Scatter(
            x=[where[n["node_id"]][0] for n in ns], y=[where[n["node_id"]][1] for n in ns], mode="markers",
            name=kind, marker={"symbol": symbol, "size": [14 if kind == "supernode" else 9 for _ in ns]},
            text=[f"{n['node_id']}<br>{n.get('clerp', '')}<br>activation {n.get('activation')}<br>"
                  f"influence {n.get('influence')}" for n in ns], hoverinfo="text"))
    tokens = obj["metadata"].get("prompt_tokens", [])
    fig.update_layout(title=title or obj["metadata"].get("slug", ""), height=500, template="plotly_white",
                      xaxis={"title": "position", "tickvals": list(range(len(tokens))), "ticktext": tokens},
                      yaxis={"title": "layer (E = inputs)"})
    return fig
