"""Nodes: the units a circuit keeps or drops, named in the model's one vocabulary of locations.

A node is one channel of one site, `(site, channel)`, where the site is a hook name of the GPT:

    kind     site                                   width              what it is
    read     blocks.{l}.ln1.hook_normalized         d_model            residual read before attention
    q/k/v    blocks.{l}.attn.hook_q|k|v             n_heads * d_head   one query/key/value channel
    write    blocks.{l}.hook_attn_out               d_model            attention's residual write
    read     blocks.{l}.ln2.hook_normalized         d_model            residual read before the MLP
    neuron   blocks.{l}.mlp.hook_post               d_mlp              one MLP neuron (after GELU)
    write    blocks.{l}.hook_mlp_out                d_model            the MLP's residual write
    read     ln_final.hook_normalized               d_model            the unembedding's read

q/k/v activations are [batch, pos, head, d_head]; their channels are flattened head-major, so
channel j is head j // d_head, dimension j % d_head. A `NodeSet` lists sites in forward order and
numbers every node 0..N-1 (site by site, channel by channel), so a mask over all nodes is one flat
vector that `split` turns into a per-site dict and `cat` turns back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

# Block-relative site -> node kind, in forward order.
BLOCK_SITES: dict[str, str] = {
    "ln1.hook_normalized": "read",
    "attn.hook_q": "q",
    "attn.hook_k": "k",
    "attn.hook_v": "v",
    "hook_attn_out": "write",
    "ln2.hook_normalized": "read",
    "mlp.hook_post": "neuron",
    "hook_mlp_out": "write",
}
FINAL_SITE = "ln_final.hook_normalized"
KINDS = ("read", "q", "k", "v", "write", "neuron")


def site_kind(site: str) -> str:
    """'read' | 'q' | 'k' | 'v' | 'write' | 'neuron' for a node site name."""
    if site == FINAL_SITE:
        return "read"
    rel = site.split(".", 2)[2] if site.startswith("blocks.") else site
    if rel not in BLOCK_SITES:
        raise ValueError(f"{site!r} is not a node site; valid block sites: {list(BLOCK_SITES)} and {FINAL_SITE!r}")
    return BLOCK_SITES[rel]


def site_layer(site: str, n_layers: int) -> int:
    """The block a site belongs to (ln_final counts as layer n_layers)."""
    return n_layers if site == FINAL_SITE else int(site.split(".")[1])


def node_sites(n_layers: int, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """Every node site of an n_layers GPT whose kind is in `kinds`, in forward order."""
    sites = [f"blocks.{l}.{s}" for l in range(n_layers) for s, k in BLOCK_SITES.items() if k in kinds]
    return sites + ([FINAL_SITE] if "read" in kinds else [])


@dataclass(frozen=True)
class NodeSet:
    """Sites (forward order) and their widths; node i <-> (site, channel)."""

    sites: tuple[str, ...]
    widths: tuple[int, ...]
    n_layers: int
    d_head: int
    offsets: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.sites) != len(self.widths):
            raise ValueError("sites and widths differ in length")
        offs, o = [], 0
        for w in self.widths:
            offs.append(o)
            o += w
        object.__setattr__(self, "offsets", tuple(offs))

    @classmethod
    def from_model(cls, model, kinds: tuple[str, ...] = KINDS) -> NodeSet:
        """All nodes of `model` (a GPT) whose kind is in `kinds`."""
        c = model.cfg
        width = {"read": c.d_model, "write": c.d_model, "neuron": c.d_mlp,
                 "q": c.n_heads * c.d_head, "k": c.n_heads * c.d_head, "v": c.n_heads * c.d_head}
        sites = node_sites(c.n_layers, kinds)
        return cls(tuple(sites), tuple(width[site_kind(s)] for s in sites), c.n_layers, c.d_head)

    # ------------------------------------------------------------ sizes and indices

    def __len__(self) -> int:
        return sum(self.widths)

    def __contains__(self, site: str) -> bool:
        return site in self.sites

    def width(self, site: str) -> int:
        return self.widths[self.sites.index(site)]

    def offset(self, site: str) -> int:
        return self.offsets[self.sites.index(site)]

    def index(self, site: str, channel: int) -> int:
        """(site, channel) -> flat node index."""
        i = self.sites.index(site)
        if not 0 <= channel < self.widths[i]:
            raise IndexError(f"channel {channel} out of range for {site} (width {self.widths[i]})")
        return self.offsets[i] + channel

    def node(self, i: int) -> tuple[str, int]:
        """flat node index -> (site, channel)."""
        if not 0 <= i < len(self):
            raise IndexError(f"node {i} out of range ({len(self)} nodes)")
        s = max(j for j, o in enumerate(self.offsets) if o <= i)
        return self.sites[s], i - self.offsets[s]

    def kind(self, site: str) -> str:
        return site_kind(site)

    def layer(self, site: str) -> int:
        return site_layer(site, self.n_layers)

    def label(self, site: str, channel: int) -> str:
        """A short readable name, e.g. 'L1 q h0.3', 'L0 neuron 17', 'L2 attn-out 5', 'final read 4'."""
        kind = site_kind(site)
        if site == FINAL_SITE:
            return f"final read {channel}"
        l = site_layer(site, self.n_layers)
        if kind in ("q", "k", "v"):
            return f"L{l} {kind} h{channel // self.d_head}.{channel % self.d_head}"
        if kind == "read":
            return f"L{l} {'attn' if '.ln1.' in site else 'mlp'}-read {channel}"
        if kind == "write":
            return f"L{l} {'attn' if 'attn' in site else 'mlp'}-out {channel}"
        return f"L{l} neuron {channel}"

    # ------------------------------------------------------------ flat <-> per site

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """flat [..., N] -> {site: [..., width]} (views)."""
        return dict(zip(self.sites, flat.split(list(self.widths), dim=-1)))

    def cat(self, per_site: dict[str, Tensor]) -> Tensor:
        """{site: [..., width]} -> flat [..., N]."""
        return torch.cat([per_site[s] for s in self.sites], dim=-1)

    def by_site(self, kept: Tensor) -> dict[str, Tensor]:
        """bool [N] -> {site: LongTensor of kept channels} (every site present, maybe empty)."""
        return {s: m.nonzero()[:, 0] for s, m in self.split(kept.bool()).items()}

    def to_dict(self) -> dict:
        return {"sites": list(self.sites), "widths": list(self.widths), "n_layers": self.n_layers,
                "d_head": self.d_head}

    @classmethod
    def from_dict(cls, d: dict) -> NodeSet:
        return cls(tuple(d["sites"]), tuple(d["widths"]), d["n_layers"], d["d_head"])
