"""Edges: the nonzero weights between kept nodes. A circuit's headline size is its edge count.

The book's convention (the paper defines an edge as "a nonzero weight between two kept nodes" and
leaves the details open; these are ours). With nn.Linear weights W [out, in]:

    read  blocks.l.ln1 c   -> q/k/v channel j        W_Q / W_K / W_V [j, c] != 0
    v channel j            -> attn-out write c       W_O [c, j] != 0      (j's head is j // d_head; W_O reads
                                                                           exactly that head's channels)
    read  blocks.l.ln2 c   -> neuron n               W_in [n, c] != 0
    neuron n               -> mlp-out write c        W_out [c, n] != 0
    write (attn/mlp-out) c -> every later read c     the reader's norm gain w[c] != 0 (the residual stream
                                                     is the identity; an RMSNorm read of channel c is
                                                     x_c * w_c / rms(x), so it reads channel c only)

Not edges: q and k channels meet in the attention score (a product of activations, not a weight), so
q and k nodes have incoming edges only; biases; the normaliser rms(x) (a scalar shared by all
channels); LayerNorm's mean subtraction (the paper's models use RMSNorm; with LayerNorm we still count
channel to channel). Only sites in the circuit's NodeSet take part.

Embedding and unembedding are not nodes. Their edges are counted apart, per token, only when asked:

    token t -> read r, c    embed.weight[t, c] != 0 and the reader's gain w[c] != 0   (for t in embed_tokens)
    final read c -> token t unembed.weight[t, c] != 0                               (for t in unembed_tokens)

e.g. embed_tokens = the tokens of the task's prompts, unembed_tokens = its two candidate answers
(`task_tokens`). Learned positional embeddings are not counted (the paper's models have none).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from circuitbook.circuits.circuit import Circuit
from circuitbook.circuits.nodes import FINAL_SITE, NodeSet, site_kind
from circuitbook.data.tasks import TaskBatch

Node = tuple[str, int]  # (site, channel); ("embed", token) and ("unembed", token) for the io edges


@dataclass(frozen=True)
class Edge:
    src: Node
    dst: Node
    weight: float
    via: str  # "W_Q" | "W_K" | "W_V" | "W_O" | "W_in" | "W_out" | "resid" | "embed" | "unembed"


def _reader_gain(model, site: str) -> Tensor:
    return model.get_submodule(site.rsplit(".", 1)[0]).w.detach()  # [d_model]


def _blocks(model, nodes: NodeSet, kept: Tensor) -> Iterator[tuple[str, str, str, Tensor, Tensor, Tensor]]:
    """Yields (src site, dst site, via, src channels [E], dst channels [E], weights [E]) per weight matrix."""
    K = nodes.by_site(kept.cpu())
    K = {s: ix.to(next(model.parameters()).device) for s, ix in K.items()}

    def pairs(src: str, dst: str, via: str, W: Tensor):  # W [dst width, src width]
        if src in K and dst in K and len(K[src]) and len(K[dst]):
            sub = W.detach()[K[dst]][:, K[src]]  # [n_dst, n_src]
            d, s = sub.nonzero(as_tuple=True)
            yield src, dst, via, K[src][s], K[dst][d], sub[d, s]

    for l, blk in enumerate(model.blocks):
        p = f"blocks.{l}."
        for kind, W in (("q", blk.attn.W_Q), ("k", blk.attn.W_K), ("v", blk.attn.W_V)):
            yield from pairs(p + "ln1.hook_normalized", p + f"attn.hook_{kind}", f"W_{kind.upper()}", W.weight)
        yield from pairs(p + "attn.hook_v", p + "hook_attn_out", "W_O", blk.attn.W_O.weight)
        yield from pairs(p + "ln2.hook_normalized", p + "mlp.hook_post", "W_in", blk.mlp.W_in.weight)
        yield from pairs(p + "mlp.hook_post", p + "hook_mlp_out", "W_out", blk.mlp.W_out.weight)

    order = list(nodes.sites)
    writes = [s for s in order if site_kind(s) == "write"]
    reads = [s for s in order if site_kind(s) == "read"]
    for w in writes:
        for r in reads:
            if order.index(r) < order.index(w) or not len(K[w]) or not len(K[r]):
                continue
            gain = _reader_gain(model, r)
            common = K[w][torch.isin(K[w], K[r])]
            common = common[gain[common] != 0]
            yield w, r, "resid", common, common, gain[common]


def _io_blocks(model, nodes: NodeSet, kept: Tensor, embed_tokens, unembed_tokens):
    K = nodes.by_site(kept.cpu())
    if embed_tokens is not None:
        toks = torch.tensor(sorted(set(map(int, embed_tokens))), dtype=torch.long)
        E = model.embed.weight.detach().cpu()  # [vocab, d_model]
        for r in (s for s in nodes.sites if site_kind(s) == "read" and len(K[s])):
            ch = K[r][_reader_gain(model, r).cpu()[K[r]] != 0]
            sub = E[toks][:, ch]  # [n_tok, n_ch]
            t, c = sub.nonzero(as_tuple=True)
            yield "embed", r, "embed", toks[t], ch[c], sub[t, c]
    if unembed_tokens is not None and FINAL_SITE in nodes and len(K[FINAL_SITE]):
        toks = torch.tensor(sorted(set(map(int, unembed_tokens))), dtype=torch.long)
        ch = K[FINAL_SITE]
        sub = model.unembed.weight.detach().cpu()[toks][:, ch]  # [n_tok, n_ch]
        t, c = sub.nonzero(as_tuple=True)
        yield FINAL_SITE, "unembed", "unembed", ch[c], toks[t], sub[t, c]


def _kept(circuit: Circuit | Tensor, nodes: NodeSet | None) -> tuple[NodeSet, Tensor]:
    if isinstance(circuit, Circuit):
        return circuit.nodes, circuit.kept
    if nodes is None:
        raise ValueError("pass `nodes` with a kept mask")
    return nodes, circuit.bool()


@torch.no_grad()
def circuit_edges(
    model,
    circuit: Circuit | Tensor,
    nodes: NodeSet | None = None,
    *,
    embed_tokens: Iterable[int] | None = None,
    unembed_tokens: Iterable[int] | None = None,
) -> list[Edge]:
    """Every edge between kept nodes (and, if tokens are given, the embedding/unembedding edges).
    `circuit` is a Circuit or a bool kept mask [N] over `nodes`."""
    nodes, kept = _kept(circuit, nodes)
    out = []
    blocks = list(_blocks(model, nodes, kept)) + list(_io_blocks(model, nodes, kept, embed_tokens, unembed_tokens))
    for src, dst, via, si, di, w in blocks:
        for a, b, x in zip(si.tolist(), di.tolist(), w.tolist()):
            out.append(Edge((src, a), (dst, b), x, via))
    return out


@torch.no_grad()
def circuit_size(
    model,
    circuit: Circuit | Tensor,
    nodes: NodeSet | None = None,
    *,
    embed_tokens: Iterable[int] | None = None,
    unembed_tokens: Iterable[int] | None = None,
) -> dict[str, int]:
    """{"nodes", "edges" (between kept nodes: the headline), "embed_edges", "unembed_edges"}."""
    nodes, kept = _kept(circuit, nodes)
    size = {"nodes": int(kept.sum()), "edges": sum(len(b[3]) for b in _blocks(model, nodes, kept))}
    size |= {"embed_edges": 0} if embed_tokens is not None else {}
    size |= {"unembed_edges": 0} if unembed_tokens is not None else {}
    for _, _, via, si, _, _ in _io_blocks(model, nodes, kept, embed_tokens, unembed_tokens):
        size[f"{via}_edges"] += len(si)
    return size


def task_tokens(batch: TaskBatch) -> tuple[list[int], list[int]]:
    """(tokens of the prompts, candidate answer tokens) of a task batch, for the io edges."""
    prompt = {int(t) for row, last in zip(batch.tokens, batch.last) for t in row[: int(last) + 1]}
    answers = {int(t) for t in torch.cat([batch.correct, batch.wrong])}
    return sorted(prompt), sorted(answers)
