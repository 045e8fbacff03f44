"""The one transformer of the book: a small GPT you can read top to bottom.

It is a `transformer_lens.HookedRootModule`, so `run_with_cache`, `run_with_hooks`
and `ActivationCache` work on it. Every site has a `HookPoint` named as
TransformerLens names it, and that name is the book's one vocabulary of
locations: the hook name, the activation-sparsity site, the pruning node set and
the cache key are all the same string, e.g. `blocks.0.mlp.hook_post`.

Options that later chapters use exist from the start: RMSNorm or LayerNorm,
learned or no positions, a per-head attention-sink logit, AbsTopK activation
sparsity at any named site, and an optional bigram table added to the logits.

The model owns its pieces, and `forward` is made of them (so partial runs cannot drift from it):

    GPT.embed_tokens(tokens) -> resid         token_embeddings (hook_embed) + add_positions (hook_pos_embed)
    Block.attn_half / Block.mlp_half          resid_pre -> resid_mid -> resid_post; Block.forward is both
    GPT.head(resid, tokens) -> logits         final norm (GPT.final_norm), unembedding, bigram logits
    GPT.run_to(tokens, site) -> resid         partial runs at every residual-stream site (`resid_sites`:
    GPT.run_from(site, resid, tokens)         blocks.{l}.hook_resid_pre / _mid / _post), hooks included
    GPT.run_with_resids(tokens, sites)        one differentiable pass that also returns the resids at sites
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

# Sites where the paper applies AbsTopK, as hook names relative to a block.
ABSTOPK_PAPER_SITES = (
    "ln1.hook_normalized",  # attention input (after norm)
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "hook_attn_out",
    "ln2.hook_normalized",  # MLP input (after norm)
    "mlp.hook_post",  # MLP neurons (after GELU)
    "hook_mlp_out",
)


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """Every shape and option of a GPT (stored with each artifact; `gpt_from_state` rebuilds from it)."""

    vocab_size: int = 2048  # BPE vocabulary
    n_ctx: int = 256  # longest sequence (learned positions and the causal mask have this length)
    d_model: int = 128  # residual-stream width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads per block
    d_head: int = 32  # width of one head's q, k, v
    d_mlp: int = 512  # MLP neurons per block
    norm: str = "rms"  # "rms" | "layer"
    positions: str = "learned"  # "learned" | "none"
    attn_sink: bool = False  # per-head learnable sink logit b_h, adds exp(b_h) to the softmax denominator
    abstopk_sites: tuple[str, ...] = ()  # block-relative hook names, e.g. ABSTOPK_PAPER_SITES
    afrac: float = 0.25  # AbsTopK keeps k = round(afrac * width) entries per position
    bigram: bool = False  # a dense [vocab, vocab] table added to the logits
    bias: bool = True  # biases in every linear layer
    init_std: float = 0.02  # std of the normal init (residual writes scaled by 1/sqrt(2 n_layers))

    def __post_init__(self) -> None:
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"norm must be 'rms' or 'layer', got {self.norm!r}")
        if self.positions not in ("learned", "none"):
            raise ValueError(f"positions must be 'learned' or 'none', got {self.positions!r}")
        bad = set(self.abstopk_sites) - set(ABSTOPK_PAPER_SITES)
        if bad:
            raise ValueError(f"unknown AbsTopK sites {sorted(bad)}; valid: {ABSTOPK_PAPER_SITES}")
        if not 0 < self.afrac <= 1:
            raise ValueError(f"afrac must be in (0, 1], got {self.afrac}")
        object.__setattr__(self, "abstopk_sites", tuple(self.abstopk_sites))  # lists from JSON

    def to_dict(self) -> dict:
        return asdict(self)


def abstopk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k entries of largest |x| along the last dim, zero the rest (exactly k survive)."""
    if k >= x.shape[-1]:
        return x
    idx = x.abs().topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


class AbsTopK(nn.Module):
    """AbsTopK over the last `flat_dims` dims (q/k/v use 2: heads x d_head are one width)."""

    def __init__(self, width: int, afrac: float, flat_dims: int = 1, enabled: bool = True):
        super().__init__()
        self.k = max(1, round(afrac * width))
        self.flat_dims = flat_dims
        self.enabled = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        shape = x.shape
        flat = x.flatten(-self.flat_dims) if self.flat_dims > 1 else x
        return abstopk(flat, self.k).reshape(shape)


class Norm(nn.Module):
    """RMSNorm or LayerNorm with hooks on the scale and the normalized output."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.kind = cfg.norm
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.norm == "layer" else None
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
        x = x / scale * self.w
        if self.b is not None:
            x = x + self.b
        return x


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.n_heads * cfg.d_head
        self.W_Q = nn.Linear(cfg.d_model, hd, bias=cfg.bias)
        self.W_K = nn.Linear(cfg.d_model, hd, bias=cfg.bias)
        self.W_V = nn.Linear(cfg.d_model, hd, bias=cfg.bias)
        self.W_O = nn.Linear(hd, cfg.d_model, bias=cfg.bias)
        self.sink = nn.Parameter(torch.zeros(cfg.n_heads)) if cfg.attn_sink else None
        sites = set(cfg.abstopk_sites)
        self.topk_q = AbsTopK(hd, cfg.afrac, 2, "attn.hook_q" in sites)
        self.topk_k = AbsTopK(hd, cfg.afrac, 2, "attn.hook_k" in sites)
        self.topk_v = AbsTopK(hd, cfg.afrac, 2, "attn.hook_v" in sites)
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.register_buffer("mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, D = self.cfg.n_heads, self.cfg.d_head
        q = self.hook_q(self.topk_q(self.W_Q(x).view(B, T, H, D)))
        k = self.hook_k(self.topk_k(self.W_K(x).view(B, T, H, D)))
        v = self.hook_v(self.topk_v(self.W_V(x).view(B, T, H, D)))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        scores = self.hook_attn_scores(scores)
        if self.sink is not None:
            # The sink is an extra key with logit b_h and a zero value: it takes probability mass, adds nothing.
            sink = self.sink.view(1, H, 1, 1).expand(B, H, T, 1)
            pattern = torch.cat([scores, sink], dim=-1).softmax(-1)[..., :T]
        else:
            pattern = scores.softmax(-1)
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        return self.W_O(z.reshape(B, T, H * D))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.W_in = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.bias)
        self.W_out = nn.Linear(cfg.d_mlp, cfg.d_model, bias=cfg.bias)
        self.topk_post = AbsTopK(cfg.d_mlp, cfg.afrac, 1, "mlp.hook_post" in cfg.abstopk_sites)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(self.W_in(x))
        post = self.hook_post(self.topk_post(F.gelu(pre)))
        return self.W_out(post)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        sites = set(cfg.abstopk_sites)
        # Modules are registered in forward order, so `GPT.hook_names` lists locations in that order.
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.ln1 = Norm(cfg)
        self.topk_attn_in = AbsTopK(cfg.d_model, cfg.afrac, 1, "ln1.hook_normalized" in sites)
        self.attn = Attention(cfg)
        self.topk_attn_out = AbsTopK(cfg.d_model, cfg.afrac, 1, "hook_attn_out" in sites)
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.ln2 = Norm(cfg)
        self.topk_mlp_in = AbsTopK(cfg.d_model, cfg.afrac, 1, "ln2.hook_normalized" in sites)
        self.mlp = MLP(cfg)
        self.topk_mlp_out = AbsTopK(cfg.d_model, cfg.afrac, 1, "hook_mlp_out" in sites)
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def attn_half(self, resid: torch.Tensor) -> torch.Tensor:
        """The attention half: resid_pre (after its hook) -> resid_mid (ending with its hook). [batch, pos, d_model]."""
        attn_in = self.ln1.hook_normalized(self.topk_attn_in(self.ln1(resid)))
        attn_out = self.hook_attn_out(self.topk_attn_out(self.attn(attn_in)))
        return self.hook_resid_mid(resid + attn_out)

    def mlp_half(self, resid: torch.Tensor) -> torch.Tensor:
        """The MLP half: resid_mid (after its hook) -> resid_post (ending with its hook). [batch, pos, d_model]."""
        mlp_in = self.ln2.hook_normalized(self.topk_mlp_in(self.ln2(resid)))
        mlp_out = self.hook_mlp_out(self.topk_mlp_out(self.mlp(mlp_in)))
        return self.hook_resid_post(resid + mlp_out)

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        return self.mlp_half(self.attn_half(self.hook_resid_pre(resid)))


class GPT(HookedRootModule):
    """Token (and optional position) embedding, `n_layers` pre-norm blocks, final norm, untied unembedding."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model) if cfg.positions == "learned" else None
        self.hook_pos_embed = HookPoint() if cfg.positions == "learned" else None  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = Norm(cfg)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.bias)
        self.bigram = nn.Embedding(cfg.vocab_size, cfg.vocab_size) if cfg.bigram else None
        self._init_weights()
        self.setup()  # names every HookPoint after its module path

    def _init_weights(self) -> None:
        init_weights(self, self.cfg.init_std, self.cfg.n_layers)

    @property
    def hook_names(self) -> list[str]:
        """Every location in the model, in forward order: the book's vocabulary."""
        return list(self.hook_dict)

    # ------------------------------------------------------------------ the pieces of forward

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [batch, pos] -> the residual stream entering block 0 (what `blocks.0.hook_resid_pre` sees),
        [batch, pos, d_model]: token embeddings plus positions. (`self.embed` is the embedding module.)"""
        return self.add_positions(self.token_embeddings(tokens))

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [batch, pos] -> token embeddings through `hook_embed`, [batch, pos, d_model] (no positions).
        Token ids are moved to the model's device (as TransformerLens does): callers may keep them on the CPU."""
        return self.hook_embed(self.embed(tokens.to(self.embed.weight.device)))

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        """Add learned positions 0 .. pos-1 (through `hook_pos_embed`; nothing if positions='none') to an input
        stream x [batch, pos, d_model], e.g. a VLM's image tokens followed by token embeddings."""
        S = x.shape[1]
        if S > self.cfg.n_ctx:
            raise ValueError(f"sequence of {S} positions exceeds n_ctx={self.cfg.n_ctx}")
        if self.pos_embed is not None:
            x = x + self.hook_pos_embed(self.pos_embed(torch.arange(S, device=x.device)))[None]
        return x

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """The final norm and its hook: [batch, pos, d_model] -> what the unembedding reads, [batch, pos, d_model]."""
        return self.ln_final.hook_normalized(self.ln_final(resid))

    def head(self, resid: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """The last residual stream [batch, pos, d_model] -> logits [batch, pos, vocab]: final norm, unembedding
        and, if the model has one, the bigram table's logits for `tokens` [batch, pos] (needed only then)."""
        logits = self.unembed(self.final_norm(resid))
        if self.bigram is not None:
            if tokens is None:
                raise ValueError("this model adds a bigram table to its logits: pass the tokens")
            logits = logits + self.bigram(tokens.to(logits.device))
        return logits

    def forward(self, tokens: torch.Tensor, return_type: str = "logits") -> torch.Tensor:
        """tokens [batch, pos] -> logits [batch, pos, vocab], or the mean next-token loss if return_type='loss'.
        The tokens may be on the CPU: they are moved to the model's device."""
        tokens = tokens.to(self.embed.weight.device)
        resid = self.embed_tokens(tokens)
        for block in self.blocks:
            resid = block(resid)
        logits = self.head(resid, tokens)
        if return_type == "logits":
            return logits
        if return_type == "loss":
            return lm_loss(logits, tokens)
        raise ValueError(f"return_type must be 'logits' or 'loss', got {return_type!r}")

    # ------------------------------------------------------------------ partial execution

    @property
    def resid_sites(self) -> list[str]:
        """Every residual-stream site, in forward order: blocks.{l}.hook_resid_pre, _mid, _post per layer."""
        return [site for site, _ in self._resid_steps()]

    def _resid_steps(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """[(site, fn)] in forward order; fn carries the residual from the previous site to this one and ends
        with the site's HookPoint. embed_tokens -> every fn -> head is exactly forward (same modules and hooks)."""
        steps = []
        for l, block in enumerate(self.blocks):
            steps += [(f"blocks.{l}.hook_resid_pre", block.hook_resid_pre),
                      (f"blocks.{l}.hook_resid_mid", block.attn_half),
                      (f"blocks.{l}.hook_resid_post", block.mlp_half)]
        return steps

    def _resid_index(self, site: str) -> int:
        sites = self.resid_sites
        if site not in sites:
            raise ValueError(f"{site!r} is not a residual-stream site of this model: those are "
                             f"blocks.{{l}}.hook_resid_{{pre,mid,post}} for l < {self.cfg.n_layers}")
        return sites.index(site)

    def run_to(self, tokens: torch.Tensor, site: str) -> torch.Tensor:
        """The residual stream at `site` (a name in `resid_sites`): tokens [batch, pos] -> [batch, pos, d_model].
        The site's own HookPoint belongs to this half (a hook there changes what is returned)."""
        stop = self._resid_index(site)
        resid = self.embed_tokens(tokens)
        for _, fn in self._resid_steps()[: stop + 1]:
            resid = fn(resid)
        return resid

    def run_from(self, site: str, resid: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Continue from the residual stream at `site`: resid [batch, pos, d_model] -> logits [batch, pos, vocab].
        Attention is causal over resid's positions; positions are not added again (they are in resid).
        `tokens` [batch, pos] is needed only by a model with a bigram table."""
        if resid.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"sequence of {resid.shape[1]} positions exceeds n_ctx={self.cfg.n_ctx}")
        start = self._resid_index(site)
        for _, fn in self._resid_steps()[start + 1 :]:
            resid = fn(resid)
        return self.head(resid, tokens)

    def run_with_resids(
        self, tokens: torch.Tensor, sites: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One forward pass that also returns the residual stream at each of `sites` (differentiable, unlike
        run_with_cache). -> (logits [batch, pos, vocab], {site: resid [batch, pos, d_model]})."""
        for s in sites:
            self._resid_index(s)
        want, resids = set(sites), {}
        resid = self.embed_tokens(tokens)
        for name, fn in self._resid_steps():
            resid = fn(resid)
            if name in want:
                resids[name] = resid
        return self.head(resid, tokens), resids

    def n_params(self, nonzero: bool = False) -> int:
        return sum(int((p != 0).sum()) if nonzero else p.numel() for p in self.parameters())


def init_weights(model: nn.Module, std: float, n_layers: int) -> None:
    """The book's initialization, in parameter order: norm gains 1, sink logits, biases and the bigram table 0,
    residual writes (W_O, W_out) N(0, std / sqrt(2 n_layers)), every other weight N(0, std)."""
    for name, p in model.named_parameters():
        if name.endswith(".w") or name.endswith("sink"):
            continue  # norm gains stay 1, sink logits stay 0
        if name.endswith("bias") or name.endswith(".b"):
            nn.init.zeros_(p)
        elif name.endswith("W_O.weight") or name.endswith("W_out.weight"):
            nn.init.normal_(p, std=std / math.sqrt(2 * n_layers))  # residual writes
        elif name.startswith("bigram"):
            nn.init.zeros_(p)
        else:
            nn.init.normal_(p, std=std)


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: logits [batch, pos, vocab] predict tokens[:, 1:]."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def gpt_from_state(tensors: dict[str, torch.Tensor], cfg: dict | GPTConfig) -> GPT:
    """Rebuild a GPT from an artifact's tensors and stored config dict."""
    if isinstance(cfg, dict):
        cfg = GPTConfig(**{**cfg, "abstopk_sites": tuple(cfg.get("abstopk_sites", ()))})
    model = GPT(cfg)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model
