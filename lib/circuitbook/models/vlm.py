"""A tiny vision-language model: a ViT whose patch grid is pooled into a few soft tokens that the
book's GPT reads as a prefix before the text.

    image [B, 3, H, W]
      -> patches (P x P, a linear map each) + learned positions        vit.hook_patch_embed
      -> n pre-norm blocks with full (bidirectional) attention          vit.blocks.{l}.attn.hook_pattern, ...
      -> final norm                                                     vit.hook_out        [B, gh*gw, d_vit]
      -> average-pool each `pool` x `pool` square of patches   projector.hook_pooled        [B, n_img, d_vit]
      -> projector MLP (LLaVA-style) into the GPT's width      projector.hook_image_tokens  [B, n_img, d_model]
    GPT input = [image tokens ; text token embeddings] + positions     lm.hook_embed, lm.blocks.{l}....
    logits over the text positions only                                [B, T, vocab]

The ViT's blocks are the GPT's own `Block` with the causal mask switched off, so the two towers
share one vocabulary of locations (`vit.blocks.1.attn.hook_pattern` and `lm.blocks.1.attn.hook_pattern`)
and one implementation. Pooled image token j covers the patches of square j (row-major over the
grid of squares), which `dictionaries.rollout.rollout_heatmaps(block=pool)` mirrors.

Hook names are the VLM's: the GPT inside answers to `lm.blocks.{l}...` in caches, even when run on
its own (a HookPoint has one name); `lm.hooks(...)` still takes its own names (`blocks.{l}...`).

Language-model positions: the image prefix takes positions 0 .. n_img-1 and the text starts at n_img;
a text-only batch (`images=None`) starts at 0, exactly as the plain GPT. Attribution graphs and
feature interventions index the language model's positions (prefix included).

Late fusion (`late_fusion_layer = k > 0`): in the GPT's first k blocks a text position cannot attend to the
image tokens (`late_fusion_mask`), so the text reads the picture from layer k on; 0 is early fusion.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from circuitbook.models.gpt import GPT, Block, GPTConfig, Norm, init_weights, lm_loss
from circuitbook.train import Checkpoint, clip_gradients, cosine_schedule, get_batch


@dataclass(frozen=True, kw_only=True)
class VLMConfig:
    """The ViT, its pooling into image tokens, and the GPT that reads them as a prefix."""

    image_size: int = 32  # pixels per side
    patch_size: int = 4  # 32 / 4 = an 8 x 8 patch grid
    vit_d_model: int = 64  # ViT width
    vit_layers: int = 4  # ViT blocks
    vit_heads: int = 4  # ViT attention heads
    vit_d_head: int = 16  # ViT head width
    vit_d_mlp: int = 256  # ViT MLP neurons
    vit_norm: str = "layer"  # ViT norm: "layer" or "rms"
    pool: int = 2  # pool x pool patches -> one image token: 8x8 patches -> 4x4 = 16 image tokens
    lm: GPTConfig = field(default_factory=GPTConfig)  # the language model (a dict from JSON is converted)
    late_fusion_layer: int = 0  # text attends to image tokens from this LM layer on (0: every layer, early fusion)

    def __post_init__(self) -> None:
        if isinstance(self.lm, dict):
            object.__setattr__(self, "lm", GPTConfig(**self.lm))
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.grid % self.pool:
            raise ValueError(f"patch grid {self.grid} is not a multiple of pool {self.pool}")
        if self.lm.bigram:
            raise ValueError("the VLM's language model cannot have a bigram table (image tokens have no id)")
        if not 0 <= self.late_fusion_layer <= self.lm.n_layers:
            raise ValueError(f"late_fusion_layer {self.late_fusion_layer} is outside 0..{self.lm.n_layers}")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid**2

    @property
    def n_img(self) -> int:
        """Image tokens the language model reads."""
        return (self.grid // self.pool) ** 2

    def vit_block_config(self) -> GPTConfig:
        """The GPTConfig the ViT's blocks are built from (vocab and bias settings are unused there)."""
        return GPTConfig(vocab_size=1, n_ctx=self.n_patches, d_model=self.vit_d_model, n_layers=self.vit_layers,
                         n_heads=self.vit_heads, d_head=self.vit_d_head, d_mlp=self.vit_d_mlp, norm=self.vit_norm,
                         positions="none", init_std=self.lm.init_std)

    def to_dict(self) -> dict:
        """asdict, JSON-safe; `late_fusion_layer` only when set, so early-fusion artifacts keep their stored config."""
        d = json.loads(json.dumps(asdict(self)))
        if not self.late_fusion_layer:
            del d["late_fusion_layer"]
        return d


def late_fusion_mask(n_ctx: int, n_img: int) -> Tensor:
    """The causal mask [n_ctx, n_ctx] (True: may attend) with text queries (positions >= n_img) cut off from
    the image keys (positions < n_img); image tokens still attend causally among themselves."""
    mask = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool))
    mask[n_img:, :n_img] = False
    return mask


class ViT(nn.Module):
    """Patch embedding, learned positions, pre-norm blocks with bidirectional attention, final norm."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.cfg = cfg
        bcfg = cfg.vit_block_config()
        P, d = cfg.patch_size, cfg.vit_d_model
        self.patch_embed = nn.Linear(3 * P * P, d)
        self.hook_patch_embed = HookPoint()  # [batch, patch, d_vit]
        self.pos_embed = nn.Parameter(torch.zeros(cfg.n_patches, d))
        self.hook_pos_embed = HookPoint()  # [patch, d_vit]
        self.blocks = nn.ModuleList([Block(bcfg) for _ in range(cfg.vit_layers)])
        for block in self.blocks:
            block.attn.mask.fill_(True)  # every patch sees every patch
        self.ln_final = Norm(bcfg)
        self.hook_out = HookPoint()  # [batch, patch, d_vit]
        init_weights(self, cfg.lm.init_std, cfg.vit_layers)

    def patchify(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, gh*gw, 3*P*P], patches row-major over the grid."""
        B, C, H, W = images.shape
        P = self.cfg.patch_size
        x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, (H // P) * (W // P), C * P * P)

    def forward(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] in [0, 1] -> patch features [B, gh*gw, d_vit]."""
        if images.shape[-1] != self.cfg.image_size or images.shape[-2] != self.cfg.image_size:
            raise ValueError(f"expected {self.cfg.image_size}px images, got {tuple(images.shape[-2:])}")
        images = images.to(self.patch_embed.weight.device)  # as the GPT does with token ids
        x = self.hook_patch_embed(self.patch_embed(self.patchify(images - 0.5)))
        x = x + self.hook_pos_embed(self.pos_embed)[None]
        for block in self.blocks:
            x = block(x)
        return self.hook_out(self.ln_final.hook_normalized(self.ln_final(x)))


class Projector(nn.Module):
    """Average-pool `pool` x `pool` squares of patches, then a two-layer MLP into the GPT's width."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.cfg = cfg
        self.hook_pooled = HookPoint()  # [batch, n_img, d_vit]
        self.fc1 = nn.Linear(cfg.vit_d_model, cfg.lm.d_model)
        self.fc2 = nn.Linear(cfg.lm.d_model, cfg.lm.d_model)
        self.hook_image_tokens = HookPoint()  # [batch, n_img, d_model]
        nn.init.normal_(self.fc1.weight, std=1 / math.sqrt(cfg.vit_d_model))
        nn.init.normal_(self.fc2.weight, std=cfg.lm.init_std)  # image tokens start at the embeddings' scale
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def pool(self, x: Tensor) -> Tensor:
        """[B, gh*gw, d] -> [B, n_img, d]: the mean of each pool x pool square, squares row-major."""
        B, _, d = x.shape
        g, p = self.cfg.grid, self.cfg.pool
        x = x.reshape(B, g // p, p, g // p, p, d).mean(dim=(2, 4))
        return x.reshape(B, -1, d)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.hook_pooled(self.pool(x))
        out = self.fc2(F.gelu(self.fc1(pooled)))
        return self.hook_image_tokens(out)


class VLM(HookedRootModule):
    """ViT + projector + the book's GPT; forward(images, tokens) -> logits over the text positions."""

    def __init__(self, cfg: VLMConfig, lm: GPT | None = None):
        super().__init__()
        self.cfg = cfg
        self.vit = ViT(cfg)
        self.projector = Projector(cfg)
        if lm is not None and lm.cfg.to_dict() != cfg.lm.to_dict():
            raise ValueError("the given GPT's config differs from cfg.lm")
        if lm is not None and cfg.late_fusion_layer:
            lm = copy.deepcopy(lm)  # its masks change below; the caller's GPT stays as it was
        self.lm = lm if lm is not None else GPT(cfg.lm)
        # Late fusion: the first late_fusion_layer blocks carry the image-prefix mask in their (non-persistent)
        # mask buffer, so every run of lm.blocks on an image prefix (attribution too) applies it; a text-only
        # forward swaps the plain causal mask in for its duration (`_text_only_masks`).
        for block in self.lm.blocks[: cfg.late_fusion_layer]:
            block.attn.mask.copy_(late_fusion_mask(cfg.lm.n_ctx, cfg.n_img))
        self.setup()

    @property
    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    @property
    def n_img(self) -> int:
        return self.cfg.n_img

    def image_tokens(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] -> the soft tokens the GPT reads, [B, n_img, d_model]."""
        return self.projector(self.vit(images))

    def lm_input(self, images: Tensor | None, tokens: Tensor) -> Tensor:
        """The GPT's input residual stream [B, n_img + T, d_model]: image tokens, token embeddings, positions."""
        x = self.lm.token_embeddings(tokens)  # [B, T, d]
        if images is not None:
            x = torch.cat([self.image_tokens(images), x], dim=1)
        return self.lm.add_positions(x)  # counts the image prefix

    def forward(self, images: Tensor | None, tokens: Tensor, return_type: str = "logits") -> Tensor:
        """images [B, 3, H, W] (or None: text only), tokens [B, T] -> logits [B, T, vocab] at the text positions.

        return_type="loss": the mean next-token loss over the text (image prefix excluded)."""
        tokens = tokens.to(self.lm.embed.weight.device)  # inputs may be on the CPU (the ViT moves the images)
        if images is None and self.cfg.late_fusion_layer:
            with self._text_only_masks():
                resid = run_lm(self.lm, self.lm_input(images, tokens))
        else:
            resid = run_lm(self.lm, self.lm_input(images, tokens))
        logits = resid[:, resid.shape[1] - tokens.shape[1]:]
        if return_type == "logits":
            return logits
        if return_type == "loss":
            return lm_loss(logits, tokens)
        raise ValueError(f"return_type must be 'logits' or 'loss', got {return_type!r}")

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextmanager
    def _text_only_masks(self) -> Iterator[None]:
        """Plain causal masks in the late-fusion blocks while a text-only batch (no image prefix) runs."""
        blocks = self.lm.blocks[: self.cfg.late_fusion_layer]
        saved = [block.attn.mask for block in blocks]
        try:
            for block, m in zip(blocks, saved):
                block.attn.mask = torch.tril(torch.ones_like(m))
            yield
        finally:
            for block, m in zip(blocks, saved):
                block.attn.mask = m


def run_lm(lm: GPT, resid: Tensor) -> Tensor:
    """Run the GPT's blocks, final norm and unembedding on an input residual [B, S, d] -> logits [B, S, vocab]
    (no bigram table: it needs token ids)."""
    for block in lm.blocks:
        resid = block(resid)
    return lm.head(resid)


def vlm_from_state(tensors: dict[str, Tensor], cfg: dict | VLMConfig) -> VLM:
    """Rebuild a VLM from an artifact's tensors and stored config dict."""
    cfg = VLMConfig(**cfg) if isinstance(cfg, dict) else cfg
    model = VLM(cfg)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model


@torch.no_grad()
def mlp_io(
    model: VLM, images: Tensor | None, tokens: Tensor, layers: Sequence[int], batch_size: int = 64
) -> tuple[dict[int, Tensor], dict[int, Tensor], int]:
    """The language model's MLP inputs and outputs, what a transcoder of each layer reads and predicts.

    images [B, 3, H, W] or None (text only), tokens [B, T]. Returns (inputs {layer: [B, S, d]}, outputs
    {layer: [B, S, d]}, n_prefix): S = n_prefix + T positions, the first n_prefix (n_img, or 0) image tokens.
    """
    names = {f"lm.blocks.{la}.ln2.hook_normalized": ("x", la) for la in layers}
    names |= {f"lm.blocks.{la}.hook_mlp_out": ("y", la) for la in layers}
    out: dict[str, dict[int, list[Tensor]]] = {"x": {la: [] for la in layers}, "y": {la: [] for la in layers}}
    was = model.training
    model.eval()
    dev = next(model.parameters()).device  # inputs go where the model is; so do the outputs
    for i in range(0, tokens.shape[0], batch_size):
        imgs = None if images is None else images[i : i + batch_size].to(dev)
        _, cache = model.run_with_cache(imgs, tokens[i : i + batch_size].to(dev), names_filter=lambda n: n in names)
        for name, (kind, la) in names.items():
            out[kind][la].append(cache[name])
    model.train(was)
    xs = {la: torch.cat(v) for la, v in out["x"].items()}
    ys = {la: torch.cat(v) for la, v in out["y"].items()}
    return xs, ys, 0 if images is None else model.n_img


@torch.no_grad()
def vit_patterns(model: VLM, images: Tensor) -> Tensor:
    """Every ViT attention pattern, first layer first: [L, B, heads, patches, patches] (for rollout)."""
    L = model.cfg.vit_layers
    names = [f"vit.blocks.{la}.attn.hook_pattern" for la in range(L)]
    _, cache = model.run_with_cache(images, torch.zeros(images.shape[0], 1, dtype=torch.long, device=images.device),
                                    names_filter=lambda n: n in names)
    return torch.stack([cache[n] for n in names])


# ---------------------------------------------------------------- image-text data


class Encoder(Protocol):
    eot_id: int

    def encode(self, text: str) -> list[int]: ...


@dataclass
class ImageTextPairs:
    """Captioned images, tokenised. tokens are padded with EOT after the caption's own EOT."""

    images: Tensor  # [N, 3, H, W] float in [0, 1]
    tokens: Tensor  # [N, T] long: prompt, " answer", EOT, padding
    loss_mask: Tensor  # [N, T] bool: True where tokens[:, j] is a training target (predicted at j - 1)
    answer_pos: Tensor  # [N] long: text position whose next-token logits predict the answer's first token
    answer_ids: Tensor  # [N] long: the answer's first token

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: Tensor | np.ndarray | Sequence[int]) -> ImageTextPairs:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return ImageTextPairs(self.images[idx], self.tokens[idx], self.loss_mask[idx], self.answer_pos[idx],
                              self.answer_ids[idx])

    def to(self, device: torch.device | str) -> ImageTextPairs:
        """The same pairs on `device`."""
        return ImageTextPairs(self.images.to(device), self.tokens.to(device), self.loss_mask.to(device),
                              self.answer_pos.to(device), self.answer_ids.to(device))


def pairs_sha256(*sets: ImageTextPairs) -> str:
    """sha256 of image-text pair sets, in order: images as 8-bit pixels, then token ids (int64), then answer
    positions and ids: the prompt set a protocol names."""
    h = hashlib.sha256()
    for p in sets:
        h.update(np.ascontiguousarray((p.images.cpu() * 255).round().to(torch.uint8).numpy()).tobytes())
        for t in (p.tokens, p.answer_pos, p.answer_ids):
            h.update(np.ascontiguousarray(t.cpu().numpy().astype(np.int64)).tobytes())
    return h.hexdigest()


def encode_pairs(
    images: Tensor, prompts: Sequence[str], answers: Sequence[str], tok: Encoder, n_text: int
) -> ImageTextPairs:
    """Tokenise `prompt + " " + answer` + EOT, padded (with EOT, masked out) or cut to n_text tokens.

    Targets are every caption token after the first, and the closing EOT."""
    N = len(prompts)
    tokens = torch.full((N, n_text), tok.eot_id, dtype=torch.long)
    mask = torch.zeros(N, n_text, dtype=torch.bool)
    answer_pos = torch.zeros(N, dtype=torch.long)
    answer_ids = torch.zeros(N, dtype=torch.long)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        pid, aid = tok.encode(p), tok.encode(" " + a)
        ids = (pid + aid + [tok.eot_id])[:n_text]
        if len(pid) + 1 > n_text:
            raise ValueError(f"prompt {p!r} has {len(pid)} tokens; n_text={n_text} leaves no room for the answer")
        tokens[i, : len(ids)] = torch.tensor(ids)
        mask[i, 1 : len(ids)] = True
        answer_pos[i], answer_ids[i] = len(pid) - 1, aid[0]
    return ImageTextPairs(images.float(), tokens, mask, answer_pos, answer_ids)


def encode_scenes(scenes, tok: Encoder, n_text: int) -> ImageTextPairs:
    """`encode_pairs` of a `data.scenes.Scenes` (its images, prompts and answers)."""
    return encode_pairs(scenes.images, scenes.prompts, scenes.answers, tok, n_text)


def pair_loss(model: VLM, pairs: ImageTextPairs, answer_only: bool = False) -> Tensor:
    """Mean next-token loss over the caption tokens (loss_mask), the image prefix as context; with
    answer_only, over the answer's tokens and the closing EOT only (the prompt is not a target)."""
    logits = model(pairs.images, pairs.tokens)  # [B, T, vocab]
    m = pairs.loss_mask
    if answer_only:
        m = m & (torch.arange(m.shape[1], device=m.device)[None] > pairs.answer_pos[:, None])
    m = m[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), pairs.tokens[:, 1:].flatten(), reduction="none")
    return (ce * m.flatten()).sum() / m.sum().clamp_min(1)


@torch.no_grad()
def answer_accuracy(model: VLM, pairs: ImageTextPairs, batch_size: int = 256, images: Tensor | None = None) -> float:
    """Share of pairs whose answer's first token is the argmax at the answer position.
    `images` replaces the pairs' images (e.g. shuffled, to check that the answer comes from the picture)."""
    was = model.training
    model.eval()
    hits = 0
    dev = next(model.parameters()).device
    for i in range(0, len(pairs), batch_size):
        b = pairs.batch(range(i, min(i + batch_size, len(pairs)))).to(dev)
        imgs = b.images if images is None else images[i : i + batch_size].to(dev)
        logits = model(imgs, b.tokens)
        pred = logits[torch.arange(len(b.tokens), device=dev), b.answer_pos].argmax(-1)
        hits += int((pred == b.answer_ids).sum())
    model.train(was)
    return hits / max(1, len(pairs))


# ---------------------------------------------------------------- training


@dataclass(frozen=True, kw_only=True)
class VLMTrainConfig:
    """Settings of `train_vlm`."""

    steps: int  # optimizer steps
    batch_size: int = 32  # image-text pairs per step
    text_batch_size: int = 8  # windows of the text corpus per step (0: none)
    text_ctx: int = 64  # tokens per corpus window
    text_weight: float = 1.0  # loss = pair loss + text_weight * corpus loss
    answer_only: bool = False  # pair loss on the answer (and EOT) only, as instruction tuning does
    lr: float = 2e-3  # peak learning rate of the ViT and the projection
    lm_lr_mult: float = 1.0  # the GPT's LR multiplier (below 1 when it starts from a pretrained model)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    weight_decay: float = 0.1  # AdamW weight decay
    clip_value: float = 1.0  # global gradient-norm clip
    warmup_frac: float = 0.05  # cosine schedule's warmup share
    eval_every: int = 200  # steps between validation evaluations
    ckpt_every: int = 200  # steps between resumable checkpoints
    seed: int = 0  # seeds the init (by the caller) and the batch order

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def pair_batch(n: int, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the pairs of step `step`; they depend only on (seed, step)."""
    return np.random.default_rng([seed, step, 7]).integers(0, n, size=batch_size)


def _optimizer(model: VLM, cfg: VLMTrainConfig) -> torch.optim.AdamW:
    groups: dict[tuple[bool, bool], list[Tensor]] = {}
    for name, p in model.named_parameters():
        groups.setdefault((name.startswith("lm."), p.dim() >= 2), []).append(p)
    param_groups = [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0,
                     "lr_mult": cfg.lm_lr_mult if is_lm else 1.0}
                    for (is_lm, decay), ps in sorted(groups.items())]
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=cfg.betas)


def train_vlm(
    model: VLM,
    pairs: ImageTextPairs,
    cfg: VLMTrainConfig,
    text_tokens: np.ndarray | None = None,
    val_pairs: ImageTextPairs | None = None,
    ckpt_dir: Path | None = None,
    eval_fn: Callable[[VLM], dict[str, float]] | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on image-text pairs mixed with corpus windows; resume from `ckpt_dir/latest` if it exists.

    Each step: `batch_size` pairs (indices from (seed, step)) and `text_batch_size` corpus windows
    (`train.get_batch`, seed + 1), AdamW with a warmup-cosine schedule, global-norm clipping, as the
    book's one training loop; checkpoints hold weights, optimizer state and history, so an interrupted
    run resumes to the same weights. Returns {"history", "seconds", "pairs_per_s"}.
    """
    if cfg.text_batch_size > 0 and text_tokens is None:
        raise ValueError("text_batch_size > 0 needs text_tokens (or set text_batch_size=0)")
    opt = _optimizer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    schedule = cosine_schedule(cfg.warmup_frac)
    history: list[dict] = []
    start = 0
    ckpt = Checkpoint(ckpt_dir, {"model": model}, opt, cfg.to_dict())
    if (meta := ckpt.resume()) is not None:
        start, history = meta["step"], meta["history"]

    dev = next(model.parameters()).device  # batches go where the model is
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress, desc="vlm")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * g["lr_mult"] * schedule(step, cfg.steps)
        batch = pairs.batch(pair_batch(len(pairs), step, cfg.batch_size, cfg.seed)).to(dev)
        loss_pairs = pair_loss(model, batch, cfg.answer_only)
        loss = loss_pairs
        row = {"step": step + 1, "pair_loss": loss_pairs.item()}
        if cfg.text_batch_size > 0:
            text = get_batch(text_tokens, step, cfg.text_batch_size, cfg.text_ctx, cfg.seed + 1).to(dev)
            loss_text = lm_loss(model(None, text), text)
            loss = loss + cfg.text_weight * loss_text
            row["text_loss"] = loss_text.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        row["grad_norm"] = clip_gradients(params, "norm", cfg.clip_value)
        opt.step()
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            if val_pairs is not None:
                with torch.no_grad():
                    model.eval()
                    row["val_pair_loss"] = float(pair_loss(model, val_pairs.to(dev), cfg.answer_only))
                    model.train()
                row["val_answer_acc"] = answer_accuracy(model, val_pairs)
            if eval_fn is not None:
                row.update(eval_fn(model))
            bar.set_postfix(loss=f"{loss_pairs.item():.3f}")
        history.append(row)
        if ckpt.step_done(done, cfg.steps, cfg.ckpt_every, stop_at, history):
            break
    bar.close()
    dt = time.perf_counter() - t0
    n_steps = len(history) - start
    return {"history": history, "seconds": dt, "pairs_per_s": n_steps * cfg.batch_size / dt if dt > 0 else 0.0}
