"""Attribution graphs for one input through a local replacement model, and feature interventions.

The replacement model for one input (the GPT alone, or the GPT part of the VLM):

- every attention pattern and every norm scale is frozen at its value on this input (detached), so
  attention is linear in its values and a norm is linear in its input;
- MLP l is replaced by its transcoder plus an error node: mlp_out = W_dec a + b_dec + err, with
  a = TopK(ReLU(W_enc x + b_enc)) the active features (frozen) and err = true MLP out - transcoder
  out (a constant). No gradient flows through an MLP.

The model is then affine from its sources to every target. The sources are

    inputs    the GPT's input residual at each position: token embedding (or image token) + position
    features  a_s d_s, what an active feature s writes (d_s = its unit decoder column, a_s its activation)
    errors    err_l[p]

and the targets are the active features' pre-activations W_enc[i] . x_l[p] + b_enc[i] (x_l the MLP
input) and a few logits (demeaned over the vocabulary by default, as circuit-tracer). For a target t,
one backward pass from t through the frozen model gives the gradient g_t at every source's residual
write; the edge is

    A[t, s] = g_t . (what s writes)  =  a_s * (d_s^T J_{s->t} e_t)  =  a_s * w_{s->t}

which counts the direct path only (the frozen features between s and t pass nothing on). What is
left is a constant, `bias[t]`: every bias term's contribution (attention b_V and b_O through the
frozen patterns, transcoder b_dec, LayerNorm b, the target's own b_enc, the unembedding bias),
measured separately by running the frozen model with every source set to zero. Completeness:

    value[t] = sum_s A[t, s] + bias[t]      exactly (up to float error), for every target t.

Bias terms are not nodes: circuit-tracer's JSON has no node type for them. Graphs are exported with
`graph_json.graph_to_json` (pruned by influence as circuit-tracer does).

Interventions: `intervention_hooks` sets transcoder feature i at (layer, position) to a value v by
adding (v - z_i) d_i to that MLP's output, z_i computed live from the MLP's input in the same run,
so several interventions at several layers compose.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from circuitbook.dictionaries.graph_json import embedding_node, error_node, feature_node, graph_to_json, logit_node
from circuitbook.dictionaries.sae import Transcoder
from circuitbook.models.gpt import GPT


@dataclass
class AttributionGraph:
    """Nodes in circuit-tracer's order: features, errors, inputs, logits. adjacency rows are targets."""

    adjacency: Tensor  # [N, N]: A[t, s] = direct effect of source s on target t (rows of non-targets are 0)
    nodes: list[dict]  # circuit-tracer node dicts (graph_json.feature_node, ...)
    value: Tensor  # [N]: targets' values in the model (feature pre-activations, logits); 0 for pure sources
    bias: Tensor  # [N]: the constant (bias) part of each target's value; 0 for pure sources
    activation: Tensor  # [N]: what each source carries: a_s for features, |err| for errors, |input| for inputs
    features: Tensor  # [n_features, 3] long: (layer, position, feature index) of the feature nodes
    logit_tokens: Tensor  # [n_logits] long
    logit_probs: Tensor  # [n_logits]
    logit_pos: int
    n_layers: int
    n_pos: int
    input_labels: list[str]
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return self.features.shape[0]

    def slices(self) -> dict[str, slice]:
        """Index ranges of each node kind."""
        f, e, i = self.n_features, self.n_layers * self.n_pos, self.n_pos
        return {"features": slice(0, f), "errors": slice(f, f + e), "inputs": slice(f + e, f + e + i),
                "logits": slice(f + e + i, f + e + i + len(self.logit_tokens))}

    def feature_node_index(self, layer: int, pos: int, feature: int) -> int:
        hit = ((self.features[:, 0] == layer) & (self.features[:, 1] == pos) & (self.features[:, 2] == feature))
        idx = hit.nonzero()
        if len(idx) == 0:
            raise KeyError(f"feature {feature} at layer {layer}, position {pos} is not active")
        return int(idx[0, 0])

    def target_rows(self) -> Tensor:
        """Node indices of the targets: every feature, then every logit. [n_targets]."""
        return torch.cat([torch.arange(self.n_features), torch.arange(len(self.nodes))[self.slices()["logits"]]])

    def completeness_error(self, relative_to: str = "value") -> Tensor:
        """Per target: |value - (sum of incoming edges + bias)|, divided by |value| ("value", the strict test)
        or by sum |edges| + |bias| ("terms", the scale float rounding works at). [n_targets].

        In float32 a small pre-activation that is the sum of large terms of both signs can miss 1e-4
        relative to its value by rounding alone; `attribute(..., dtype=torch.float64)` removes that."""
        rows = self.target_rows()
        total = self.adjacency[rows].sum(1) + self.bias[rows]
        if relative_to == "value":
            scale = self.value[rows].abs()
        elif relative_to == "terms":
            scale = self.adjacency[rows].abs().sum(1) + self.bias[rows].abs()
        else:
            raise ValueError(f"relative_to must be 'value' or 'terms', got {relative_to!r}")
        return (self.value[rows] - total).abs() / scale.clamp_min(1e-30)

    def to_json(self, slug: str, prompt: str, **kw) -> dict[str, Any]:
        """circuit-tracer graph JSON (pruned by default; see `graph_json.graph_to_json`)."""
        return graph_to_json(self.adjacency, self.nodes, slug=slug, prompt=prompt, prompt_tokens=self.input_labels,
                             transcoder_list=[f"transcoder_l{i}" for i in range(self.n_layers)], **kw)


# ---------------------------------------------------------------- the frozen replacement forward


def _check_lm(lm: GPT, transcoders: Sequence[Transcoder]) -> None:
    if lm.cfg.abstopk_sites:
        raise NotImplementedError("attribution through AbsTopK sites is not supported (their masks would freeze)")
    if len(transcoders) != lm.cfg.n_layers:
        raise ValueError(f"need one transcoder per layer ({lm.cfg.n_layers}), got {len(transcoders)}")


def _freeze_hooks(frozen: dict[str, Tensor]) -> list[tuple[str, Callable]]:
    """Hooks that replace each named activation (norm scales, patterns) by its frozen, detached value."""

    def make(value: Tensor) -> Callable:
        return lambda act, hook: value.expand_as(act)

    return [(name, make(v.detach())) for name, v in frozen.items()]


class _Const(torch.nn.Module):
    """Stands in for an MLP during the frozen forward: returns a given tensor (no MLP compute wasted)."""

    def __init__(self, value: Tensor):
        super().__init__()
        self.value = value

    def forward(self, x: Tensor) -> Tensor:
        return self.value.expand_as(x)


def _frozen_forward(
    lm: GPT, x0: Tensor, frozen: dict[str, Tensor], mlp_writes: Sequence[Tensor], n_blocks: int | None = None
) -> tuple[list[Tensor], Tensor | None]:
    """Run the frozen replacement model. x0 [B, S, d] input residual; mlp_writes[l] [B, S, d] replace
    each MLP's output. Returns (MLP inputs per layer [B, S, d], final normalized residual [B, S, d]);
    with n_blocks < n_layers only that many blocks run and the second item is None."""
    L = lm.cfg.n_layers
    n_blocks = L if n_blocks is None else n_blocks
    mlp_in: list[Tensor] = [x0] * L
    hooks = _freeze_hooks(frozen)
    for layer in range(n_blocks):
        hooks.append((f"blocks.{layer}.ln2.hook_normalized", _store(mlp_in, layer)))
    mlps = [block.mlp for block in lm.blocks]
    try:
        for layer in range(n_blocks):
            lm.blocks[layer].mlp = _Const(mlp_writes[layer])
        with lm.hooks(fwd_hooks=hooks):
            resid = x0
            for block in lm.blocks[:n_blocks]:
                resid = block(resid)
            final = lm.final_norm(resid) if n_blocks == L else None
    finally:
        for block, mlp in zip(lm.blocks, mlps):
            block.mlp = mlp
    return mlp_in, final


def _logit_readout(
    lm: GPT, h: Tensor, pos: int, tok: Tensor, demean: bool, offset: Tensor | None
) -> Tensor:
    """Logit of tok[b] read from the final normalized residual h[b] [B, d] at position `pos` (minus the mean
    logit over the vocabulary if demean), plus a constant offset [S, vocab]. -> [B]."""
    W = lm.unembed.weight  # [V, d]
    b = lm.unembed.bias if lm.unembed.bias is not None else torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
    out = (h * W[tok]).sum(-1) + b[tok]
    if offset is not None:
        out = out + offset[pos, tok]
    if demean:
        out = out - (h @ W.mean(0) + b.mean() + (offset[pos].mean() if offset is not None else 0.0))
    return out


def _store(out: list[Tensor], i: int) -> Callable:
    def hook(act: Tensor, hook) -> Tensor:
        out[i] = act
        return act

    return hook


def lm_input_gpt(gpt: GPT, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
    """A GPT's input residual for tokens [S]: (x0 [S, d] = token embedding + position, bigram logits or None)."""
    with torch.no_grad():
        x0 = gpt.embed_tokens(tokens[None])[0]
        offset = gpt.bigram(tokens) if gpt.bigram is not None else None
    return x0, offset


# ---------------------------------------------------------------- attribution


@torch.no_grad()
def _clean_run(lm: GPT, x0: Tensor, logit_offset: Tensor | None) -> tuple[dict[str, Tensor], list, list, Tensor]:
    """One ordinary forward: frozen scales and patterns, MLP inputs and outputs, logits [S, vocab]."""
    L = lm.cfg.n_layers
    frozen: dict[str, Tensor] = {}
    mlp_in: list[Tensor] = [x0] * L
    mlp_out: list[Tensor] = [x0] * L

    def keep(name: str) -> Callable:
        def hook(act: Tensor, hook) -> Tensor:
            frozen[name] = act.detach().clone()
            return act

        return hook

    names = [f"blocks.{layer}.{s}" for layer in range(L) for s in ("ln1.hook_scale", "attn.hook_pattern",
                                                                     "ln2.hook_scale")] + ["ln_final.hook_scale"]
    hooks = [(n, keep(n)) for n in names]
    for layer in range(L):
        hooks.append((f"blocks.{layer}.ln2.hook_normalized", _store(mlp_in, layer)))
        hooks.append((f"blocks.{layer}.hook_mlp_out", _store(mlp_out, layer)))
    with lm.hooks(fwd_hooks=hooks):
        resid = x0[None]
        for block in lm.blocks:
            resid = block(resid)
        logits = lm.unembed(lm.final_norm(resid))[0]  # the bigram table, if any, is logit_offset
    if logit_offset is not None:
        logits = logits + logit_offset
    return frozen, [m[0] for m in mlp_in], [m[0] for m in mlp_out], logits


def attribute(
    lm: GPT,
    x0: Tensor,
    transcoders: Sequence[Transcoder],
    *,
    input_labels: Sequence[str] | None = None,
    input_ids: Sequence[int] | None = None,
    logit_pos: int = -1,
    logit_tokens: Sequence[int] | None = None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    demean_logits: bool = True,
    logit_offset: Tensor | None = None,
    token_strings: Callable[[int], str] | None = None,
    batch_size: int = 128,
    dtype: torch.dtype | None = None,
) -> AttributionGraph:
    """The attribution graph of one input through `lm` with one transcoder per layer (MLP in -> MLP out).

    x0 [S, d]: the GPT's input residual (see `lm_input_gpt`, or `VLM.lm_input(...)[0]` for a VLM).
    input_ids [S]: token id per position for the embedding node ids (image tokens: any id, e.g. vocab_size).
    Logit targets at `logit_pos`: `logit_tokens`, or the most likely tokens up to `desired_logit_prob`
    cumulative probability (at most `max_n_logits`), as circuit-tracer. logit_offset [S, vocab]: a constant
    added to the logits (a bigram table's). dtype: compute on copies of the model and transcoders in this
    dtype (float64 for exact completeness). Returns an `AttributionGraph`; see the module docstring.
    """
    t0 = time.perf_counter()
    _check_lm(lm, transcoders)
    if dtype is not None and dtype != x0.dtype:
        lm = copy.deepcopy(lm).to(dtype)
        transcoders = [copy.deepcopy(tc).to(dtype) for tc in transcoders]
        x0 = x0.to(dtype)
        logit_offset = None if logit_offset is None else logit_offset.to(dtype)
    L, (S, d) = lm.cfg.n_layers, x0.shape
    x0 = x0.detach()
    logit_pos = logit_pos % S
    frozen, mlp_in, mlp_out, logits = _clean_run(lm, x0, logit_offset)
    probs = logits[logit_pos].softmax(-1)
    if logit_tokens is None:
        top = probs.sort(descending=True)
        n = int((top.values.cumsum(0) < desired_logit_prob).sum()) + 1
        logit_tokens = top.indices[: min(n, max_n_logits)]
    logit_tokens = torch.as_tensor(logit_tokens, dtype=torch.long, device=x0.device).flatten()

    with torch.no_grad():
        acts, pre, err = [], [], []
        for layer, tc in enumerate(transcoders):
            p = tc.pre_acts(mlp_in[layer])  # [S, F]
            a = tc.encode(mlp_in[layer])  # [S, F]
            pre.append(p)
            acts.append(a)
            err.append(mlp_out[layer] - tc.decode(a))  # [S, d]
    per_layer = []
    for layer, a in enumerate(acts):
        nz = a.nonzero().cpu()  # [n, 2]: (position, feature) of the active features
        per_layer.append(torch.cat([torch.full((len(nz), 1), layer), nz], 1))
    feats = torch.cat(per_layer) if per_layer else torch.zeros(0, 3, dtype=torch.long)  # [nF, 3]
    nF, nE, nI, nL = len(feats), L * S, S, len(logit_tokens)
    N = nF + nE + nI + nL
    A = torch.zeros(N, N, dtype=x0.dtype)
    # feature nodes of each layer, as (node indices, positions, feature indices)
    layer_nodes = []
    for layer in range(L):
        idx = torch.nonzero(feats[:, 0] == layer)[:, 0]  # ordered by position, then feature
        layer_nodes.append((idx, feats[idx, 1].to(x0.device), feats[idx, 2].to(x0.device)))
    # per layer, the active features' decoder rows padded to [S, kmax, d], and where each node sits in S * kmax
    dec_pad, flat = [], []
    for layer, (_, fp, fi) in enumerate(layer_nodes):
        counts = torch.bincount(fp, minlength=S)
        kmax = max(1, int(counts.max())) if len(fp) else 1
        slot = torch.arange(len(fp), device=x0.device) - (torch.cumsum(counts, 0) - counts)[fp]  # rank in position
        pad = torch.zeros(S, kmax, dtype=torch.long, device=x0.device)
        pad[fp, slot] = fi
        dec_pad.append(transcoders[layer].W_dec.detach().T[pad])  # [S, kmax, d]
        flat.append(fp * kmax + slot)  # [n]

    # targets: every feature node, then every logit node
    t_kind = torch.cat([torch.zeros(nF, dtype=torch.long), torch.ones(nL, dtype=torch.long)])  # 0 feature, 1 logit
    t_row = torch.cat([torch.arange(nF), torch.arange(nF + nE + nI, N)])
    for c in range(0, len(t_row), batch_size):
        rows = t_row[c : c + batch_size]
        is_feat = t_kind[c : c + batch_size] == 0
        B = len(rows)
        # run only the blocks the batch's targets need (features are ordered by layer)
        n_blocks = L if (~is_feat).any() else int(feats[rows[is_feat], 0].max()) + 1
        x_leaf = x0.expand(B, S, d).clone().requires_grad_(True)
        writes = [mlp_out[layer].expand(B, S, d).clone().requires_grad_(True) for layer in range(n_blocks)]
        with torch.enable_grad():
            m_in, final = _frozen_forward(lm, x_leaf, frozen, writes, n_blocks)
            obj = torch.zeros(B, dtype=x0.dtype, device=x0.device)
            if is_feat.any():
                fr = rows[is_feat]
                fl, fp, fi = feats[fr, 0], feats[fr, 1].to(x0.device), feats[fr, 2].to(x0.device)
                bsel = torch.nonzero(is_feat)[:, 0].to(x0.device)
                vals = torch.zeros(len(fr), dtype=x0.dtype, device=x0.device)
                for layer in fl.unique().tolist():
                    m = (fl == layer).to(x0.device)
                    W = transcoders[layer].W_enc.detach()[fi[m]]  # [n, d]
                    vals = vals.index_put((m.nonzero()[:, 0],), (m_in[layer][bsel[m], fp[m]] * W).sum(-1))
                obj = obj.index_put((bsel,), vals)
            if (~is_feat).any():
                lsel = torch.nonzero(~is_feat)[:, 0].to(x0.device)
                toks = logit_tokens[(rows[~is_feat] - (nF + nE + nI)).to(x0.device)]
                read = _logit_readout(lm, final[lsel, logit_pos], logit_pos, toks, demean_logits, logit_offset)
                obj = obj.index_put((lsel,), read)
            grads = torch.autograd.grad(obj.sum(), [x_leaf, *writes], allow_unused=True, materialize_grads=True)
        with torch.no_grad():
            g0, gw = grads[0], grads[1:]
            A[rows, nF + nE : nF + nE + nI] = (g0 * x0).sum(-1).cpu()  # inputs
            for layer in range(n_blocks):  # sources at later layers get no gradient: their edges stay 0
                A[rows, nF + layer * S : nF + (layer + 1) * S] = (gw[layer] * err[layer]).sum(-1).cpu()  # errors
                idx, fp, fi = layer_nodes[layer]
                if len(idx):
                    w = torch.bmm(gw[layer].transpose(0, 1), dec_pad[layer].transpose(1, 2))  # [S, B, kmax]
                    w = w.transpose(0, 1).reshape(B, -1)[:, flat[layer]]  # [B, n]: g at the feature's pos . d_s
                    A[rows[:, None], idx[None]] = (w * acts[layer][fp, fi]).cpu()

    # values and the bias part (every source set to zero)
    with torch.no_grad():
        zero_writes = [tc.b_dec.detach().expand(1, S, d) for tc in transcoders]
        m_in0, final0 = _frozen_forward(lm, torch.zeros(1, S, d, device=x0.device), frozen, zero_writes)
        value, bias, activation = (torch.zeros(N, dtype=x0.dtype) for _ in range(3))
        for layer, tc in enumerate(transcoders):
            idx, fp, fi = layer_nodes[layer]
            if len(idx):
                value[idx] = pre[layer][fp, fi].cpu()
                bias[idx] = tc.pre_acts(m_in0[layer][0])[fp, fi].cpu()  # the encoder's constant part included
                activation[idx] = acts[layer][fp, fi].cpu()
            activation[nF + layer * S : nF + (layer + 1) * S] = err[layer].norm(dim=-1).cpu()
        activation[nF + nE : nF + nE + nI] = x0.norm(dim=-1).cpu()
        row = logits[logit_pos]  # [V], the model's own logits (offset included)
        value[nF + nE + nI :] = (row[logit_tokens] - (row.mean() if demean_logits else 0.0)).cpu()
        bias[nF + nE + nI :] = _logit_readout(lm, final0[0, logit_pos].expand(nL, d), logit_pos, logit_tokens,
                                              demean_logits, logit_offset).cpu()

    # node dicts
    labels = list(input_labels) if input_labels is not None else [str(i) for i in range(S)]
    ids = list(input_ids) if input_ids is not None else list(range(S))
    nodes = [feature_node(int(layer), int(p), int(i), activation=float(activation[k]))
             for k, (layer, p, i) in enumerate(feats.tolist())]
    nodes += [error_node(layer, p) for layer in range(L) for p in range(S)]
    nodes += [embedding_node(p, int(ids[p]), clerp=labels[p]) for p in range(S)]
    tok_str = token_strings or (lambda t: str(t))
    lp = probs[logit_tokens].cpu()
    nodes += [logit_node(logit_pos, int(t), tok_str(int(t)), L, float(p), target=k == 0)
              for k, (t, p) in enumerate(zip(logit_tokens.tolist(), lp.tolist()))]
    return AttributionGraph(A, nodes, value, bias, activation, feats.long(), logit_tokens.cpu(), lp, logit_pos, L, S,
                            labels, seconds=time.perf_counter() - t0,
                            meta={"demean_logits": demean_logits, "n_nodes": N})


def attribute_gpt(gpt: GPT, tokens: Tensor, transcoders: Sequence[Transcoder], **kw) -> AttributionGraph:
    """`attribute` for a GPT on tokens [S] (the bigram table, if any, is a constant offset)."""
    x0, offset = lm_input_gpt(gpt, tokens)
    kw.setdefault("input_ids", tokens.tolist())
    return attribute(gpt, x0, transcoders, logit_offset=offset, **kw)


def attribute_vlm(vlm, image: Tensor, tokens: Tensor, transcoders: Sequence[Transcoder], **kw) -> AttributionGraph:
    """`attribute` for a VLM on one image [3, H, W] and tokens [T]; inputs are the n_img image tokens, then
    the text tokens (LM positions: image prefix first). Image tokens get the id vocab_size (one soft-token id);
    input labels are "<img row,col>" and the text tokens through `token_strings` when given."""
    with torch.no_grad():
        x0 = vlm.lm_input(image[None], tokens[None])[0]
    n_img = vlm.n_img
    kw.setdefault("input_ids", [vlm.lm.cfg.vocab_size] * n_img + tokens.tolist())
    if "input_labels" not in kw:
        side = vlm.cfg.grid // vlm.cfg.pool
        text = kw.get("token_strings") or str
        img = [f"<img {j // side},{j % side}>" for j in range(n_img)]
        kw["input_labels"] = img + [text(t) for t in tokens.tolist()]
    return attribute(vlm.lm, x0, transcoders, **kw)


# ---------------------------------------------------------------- interventions


@dataclass(frozen=True)
class Intervention:
    """Set transcoder feature `feature` of layer `layer` to `value` at LM position `pos` (None: every position)."""

    layer: int
    pos: int | None
    feature: int
    value: float


def intervention_hooks(
    transcoders: Sequence[Transcoder], interventions: Sequence[Intervention], prefix: str = ""
) -> list[tuple[str, Callable]]:
    """Forward hooks for `model.run_with_hooks(..., fwd_hooks=...)` that apply h <- h + (v - z) d at each
    intervened layer's MLP output h, z = the feature's live value from that MLP's input in the same run,
    d = its decoder column. prefix: "" for a GPT, "lm." for a VLM's language model."""
    by_layer: dict[int, list[Intervention]] = {}
    for iv in interventions:
        by_layer.setdefault(iv.layer, []).append(iv)
    hooks: list[tuple[str, Callable]] = []
    for layer, ivs in sorted(by_layer.items()):
        tc = transcoders[layer]

        def delta_of(z: Tensor, out: Tensor, tc: Transcoder = tc, ivs: list = ivs) -> Tensor:
            delta = torch.zeros_like(out)
            for iv in ivs:
                pos = slice(None) if iv.pos is None else iv.pos
                coef = iv.value - z[:, pos, iv.feature]  # [B] or [B, S]
                delta[:, pos] += coef[..., None] * tc.W_dec[:, iv.feature].detach()
            return delta

        hooks += live_mlp_edit_hooks(tc, layer, delta_of, prefix)
    return hooks


def live_mlp_edit_hooks(tc: Transcoder, layer: int, delta_of: Callable[[Tensor, Tensor], Tensor],
                        prefix: str = "") -> list[tuple[str, Callable]]:
    """The two forward hooks of an edit at one layer's MLP: the first keeps the MLP's input, the second adds
    `delta_of(z, out)` to the MLP's output `out` [B, S, d], z = the transcoder's live codes of that input
    [B, S, F] in the same run. prefix: "" for a GPT, "lm." for a VLM's language model."""
    seen: dict[str, Tensor] = {}

    def grab(act: Tensor, hook) -> Tensor:
        seen["x"] = act
        return act

    def edit(out: Tensor, hook) -> Tensor:
        return out + delta_of(tc.encode(seen["x"]), out)

    return [(f"{prefix}blocks.{layer}.ln2.hook_normalized", grab), (f"{prefix}blocks.{layer}.hook_mlp_out", edit)]


def effective_feature_values(
    tc: Transcoder, mlp_in: Tensor, mlp_out_true: Tensor, mlp_out: Tensor, features: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """The replacement-model values of `features` in an MLP output that may have been edited.

    The edit out - MLP(x) is written as sum_f c_f d_f over those features' decoder columns (least squares);
    the value of f is z_f(x) + c_f. A feature set to v by `intervention_hooks` at a position reads v there.
    mlp_in [..., d_in], outputs [..., d] -> (values [..., n], the part of the edit outside their span [..., d]).
    """
    D = tc.W_dec.detach()[:, list(features)]  # [d, n]
    delta = mlp_out - mlp_out_true  # [..., d]
    c = delta @ torch.linalg.pinv(D).T  # [..., n]
    return tc.encode(mlp_in)[..., list(features)] + c, delta - c @ D.T
