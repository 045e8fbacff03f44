"""The tiny VLM: shapes and hook names, the prefix, pooling, pair encoding, training and resuming."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from circuitbook.data.scenes import make_dataset
from circuitbook.dictionaries.rollout import pool_maps, rollout_heatmaps
from circuitbook.models.gpt import GPTConfig
from circuitbook.models.vlm import (
    VLM,
    VLMConfig,
    VLMTrainConfig,
    answer_accuracy,
    encode_pairs,
    encode_scenes,
    mlp_io,
    pair_loss,
    train_vlm,
    vit_patterns,
    vlm_from_state,
)

torch.set_num_threads(1)

PLANET_ONLY = {"planet": [("This is the planet|{Planet}", 1.0)]}


class WordTok:
    """A word-level tokenizer for tests: id 0 is EOT."""

    def __init__(self, words):
        self.vocab = {w: i + 1 for i, w in enumerate(sorted(set(words)))}
        self.eot_id = 0

    def encode(self, text: str) -> list[int]:
        return [self.vocab[w] for w in text.split()]


def tiny_cfg(vocab: int = 40, n_layers: int = 1, vit_layers: int = 1) -> VLMConfig:
    lm = GPTConfig(vocab_size=vocab, n_ctx=16, d_model=32, n_layers=n_layers, n_heads=2, d_head=16, d_mlp=64)
    return VLMConfig(image_size=16, patch_size=4, vit_d_model=32, vit_layers=vit_layers, vit_heads=2, vit_d_head=16,
                     vit_d_mlp=64, pool=2, lm=lm)


def planet_pairs(n: int, split: str):
    s = make_dataset(n, seed=0, split=split, size=16, kinds=("planet",), planets=("mars", "earth"), p_shuttle=0,
                     templates=PLANET_ONLY)
    tok = WordTok("This is the planet Mars Earth".split())
    return encode_scenes(s, tok, 8), tok


def test_shapes_hooks_and_prefix_positions():
    torch.manual_seed(0)
    cfg = tiny_cfg(n_layers=2, vit_layers=2)
    assert (cfg.grid, cfg.n_patches, cfg.n_img) == (4, 16, 4)
    m = VLM(cfg).eval()
    images, tokens = torch.rand(3, 3, 16, 16), torch.randint(0, 40, (3, 7))
    logits, cache = m.run_with_cache(images, tokens)
    assert logits.shape == (3, 7, 40)
    assert cache["vit.blocks.1.attn.hook_pattern"].shape == (3, 2, 16, 16)
    assert cache["projector.hook_image_tokens"].shape == (3, 4, 32)
    assert cache["lm.blocks.0.hook_resid_pre"].shape == (3, 4 + 7, 32)
    assert cache["lm.blocks.1.mlp.hook_post"].shape == (3, 11, 64)
    # the ViT attends both ways; the language model stays causal over [image ; text]
    vit_pat = cache["vit.blocks.0.attn.hook_pattern"]
    assert vit_pat.triu(1).sum() > 0.1
    assert cache["lm.blocks.0.attn.hook_pattern"].triu(1).abs().max() == 0
    # the image tokens come first: they equal the projector's output plus positions 0..n_img-1
    pos = m.lm.pos_embed.weight[:4]
    assert torch.allclose(cache["lm.blocks.0.hook_resid_pre"][:, :4], cache["projector.hook_image_tokens"] + pos)
    with pytest.raises(ValueError):
        m(images, torch.randint(0, 40, (3, 13)))  # 4 + 13 > n_ctx 16


def test_text_only_is_the_plain_gpt_and_the_image_reaches_the_text():
    torch.manual_seed(0)
    m = VLM(tiny_cfg(n_layers=2)).eval()
    tokens = torch.randint(0, 40, (2, 6))
    with torch.no_grad():
        assert torch.allclose(m(None, tokens), m.lm(tokens), atol=1e-6)
        a = m(torch.rand(2, 3, 16, 16), tokens)
        b = m(torch.rand(2, 3, 16, 16), tokens)
        assert not torch.allclose(a, b)  # different pictures, different predictions
        # causality in the text: changing token 4 changes nothing before it
        t2 = tokens.clone()
        t2[:, 4] = (t2[:, 4] + 1) % 40
        img = torch.rand(2, 3, 16, 16)
        c, d = m(img, tokens), m(img, t2)
        assert torch.allclose(c[:, :4], d[:, :4], atol=1e-6) and not torch.allclose(c[:, 4:], d[:, 4:])


def test_patchify_and_pooling_are_row_major_squares_like_rollout():
    cfg = tiny_cfg()
    m = VLM(cfg)
    img = torch.zeros(1, 3, 16, 16)
    img[0, :, 4:8, 8:12] = 1.0  # patch (row 1, col 2) -> patch index 1 * 4 + 2 = 6
    patches = m.vit.patchify(img)  # [1, 16, 48]
    assert patches.sum(-1)[0].nonzero().flatten().tolist() == [6]
    x = torch.arange(16.0).view(1, 16, 1)  # patch index as a feature
    pooled = m.projector.pool(x)[0, :, 0]  # squares of 2 x 2 patches, row-major
    assert pooled.tolist() == [2.5, 4.5, 10.5, 12.5]  # mean of {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}
    # rollout's pool_maps groups the same patches for the same pooled token
    maps = torch.eye(16).reshape(4, 4, 4, 4)  # patch i's map is a one-hot at patch i
    groups = pool_maps(maps, 2, reduce="max").reshape(4, 16)
    assert [g.nonzero().flatten().tolist() for g in groups] == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13],
                                                               [10, 11, 14, 15]]


def test_encode_pairs_masks_and_answer_positions():
    tok = WordTok("How many dots ? 3 10 This is a hand".split())
    p = encode_pairs(torch.zeros(2, 3, 16, 16), ["How many dots ?", "This is a"], ["3", "hand"], tok, n_text=8)
    assert p.tokens[0].tolist() == [tok.vocab[w] for w in "How many dots ? 3".split()] + [0, 0, 0]
    assert p.loss_mask[0].tolist() == [False] + [True] * 5 + [False] * 2  # caption tokens after the first + EOT
    assert p.answer_pos.tolist() == [3, 2] and p.answer_ids.tolist() == [tok.vocab["3"], tok.vocab["hand"]]
    with pytest.raises(ValueError):
        encode_pairs(torch.zeros(1, 3, 16, 16), ["How many dots ?"], ["3"], tok, n_text=4)
    # answer_only: the loss is the answer's (and EOT's) cross-entropy alone
    torch.manual_seed(0)
    m = VLM(tiny_cfg(vocab=len(tok.vocab) + 1)).eval()
    with torch.no_grad():
        logits = m(p.images, p.tokens)
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), p.tokens[:, 1:], reduction="none")
        want = (ce[0, 3:5].sum() + ce[1, 2:4].sum()) / 4  # row 0: "3", EOT; row 1: "hand", EOT
        assert torch.allclose(pair_loss(m, p, answer_only=True), want, atol=1e-6)
        assert torch.allclose(pair_loss(m, p), (ce[0, :5].sum() + ce[1, :4].sum()) / 9, atol=1e-6)


def test_training_learns_to_read_the_planet_from_the_image():
    """Mars or Earth after "This is the planet": only the picture tells. Chance is about 0.5."""
    train, tok = planet_pairs(128, "train")
    test, _ = planet_pairs(64, "test")
    torch.manual_seed(0)
    m = VLM(tiny_cfg(vocab=len(tok.vocab) + 1))
    with torch.no_grad():
        loss0 = float(pair_loss(m, test))
    out = train_vlm(m, train, VLMTrainConfig(steps=80, batch_size=16, text_batch_size=0, lr=3e-3, eval_every=40),
                    val_pairs=test, progress=False)
    last = out["history"][-1]
    assert last["val_pair_loss"] < 0.5 * loss0
    assert last["val_answer_acc"] >= 0.9
    shuffled = test.images[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))]
    assert answer_accuracy(m, test, images=shuffled) <= 0.75  # the answer comes from the picture


def test_interrupted_training_resumes_to_identical_weights_and_round_trips(tmp_path):
    train, tok = planet_pairs(32, "train")
    text = np.random.default_rng(0).integers(0, len(tok.vocab) + 1, 2000).astype(np.uint16)
    cfg = tiny_cfg(vocab=len(tok.vocab) + 1)
    tcfg = VLMTrainConfig(steps=8, batch_size=4, text_batch_size=2, text_ctx=8, eval_every=4, ckpt_every=3,
                          lm_lr_mult=0.5)

    def run(ckpt, stop_at=None):
        torch.manual_seed(0)
        m = VLM(cfg)
        return m, train_vlm(m, train, tcfg, text_tokens=text, ckpt_dir=ckpt, stop_at=stop_at, progress=False)

    ref, ref_out = run(None)
    run(tmp_path, stop_at=5)
    resumed, out = run(tmp_path)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [r["pair_loss"] for r in out["history"]] == [r["pair_loss"] for r in ref_out["history"]]
    assert "text_loss" in out["history"][0]
    back = vlm_from_state(ref.state_dict(), cfg.to_dict()).eval()
    img, toks = train.images[:2], train.tokens[:2]
    with torch.no_grad():
        assert torch.equal(back(img, toks), ref.eval()(img, toks))


def test_mlp_io_and_vit_patterns():
    torch.manual_seed(0)
    m = VLM(tiny_cfg(n_layers=2, vit_layers=3)).eval()
    images, tokens = torch.rand(5, 3, 16, 16), torch.randint(0, 40, (5, 6))
    xs, ys, n_prefix = mlp_io(m, images, tokens, layers=[1], batch_size=2)
    assert n_prefix == 4 and xs[1].shape == ys[1].shape == (5, 10, 32)
    with torch.no_grad():
        assert torch.allclose(ys[1], m.lm.blocks[1].mlp(xs[1]), atol=1e-6)  # (MLP input, MLP output) pairs
    xt, yt, n0 = mlp_io(m, None, tokens, layers=[0, 1])
    assert n0 == 0 and xt[0].shape == (5, 6, 32)
    with torch.no_grad():
        _, cache = m.lm.run_with_cache(tokens)  # the GPT on its own; inside a VLM its hooks are named lm.*
    assert torch.allclose(yt[1], cache["lm.blocks.1.hook_mlp_out"], atol=1e-6)  # text only = the plain GPT
    pats = vit_patterns(m, images)
    assert pats.shape == (3, 5, 2, 16, 16) and torch.allclose(pats.sum(-1), torch.ones(3, 5, 2, 16))
    maps = rollout_heatmaps(pats[:, 0], range(4), grid=(4, 4), image_size=16, last_k=2, block=2)
    assert maps.shape == (4, 16, 16)


def test_rollout_of_identity_attention_is_identity_and_maps_each_image_token_to_its_square():
    from circuitbook.dictionaries.rollout import attention_rollout

    torch.manual_seed(0)
    cfg = tiny_cfg(vit_layers=2)
    m = VLM(cfg).eval()
    eye = torch.eye(cfg.n_patches)
    hooks = [(f"vit.blocks.{la}.attn.hook_pattern", lambda p, hook: eye.expand_as(p).clone()) for la in range(2)]
    images = torch.rand(2, 3, 16, 16)
    with m.hooks(fwd_hooks=hooks):
        pats = vit_patterns(m, images)  # [layers, B, heads, P, P]
        tokens_a = m.image_tokens(images)
        changed = images.clone()
        changed[:, :, 8:, :] = torch.rand(2, 3, 8, 16)  # repaint the bottom half: image tokens 2 and 3
        tokens_b = m.image_tokens(changed)
    assert torch.equal(pats, eye.expand_as(pats))
    for q in (0.3, 1.0):
        assert torch.allclose(attention_rollout(pats[:, 0], last_k=2, q=q), eye)
    # each pooled image token's map is exactly its own 8 x 8 square of pixels ...
    maps = rollout_heatmaps(pats[:, 0], range(cfg.n_img), (cfg.grid, cfg.grid), 16, last_k=2, block=cfg.pool)
    for j in range(cfg.n_img):
        square = torch.zeros(16, 16)
        square[8 * (j // 2): 8 * (j // 2) + 8, 8 * (j % 2): 8 * (j % 2) + 8] = 1
        assert torch.equal(maps[j] > 0, square.bool())
    # ... and with no mixing between patches, a token depends on its own square only
    assert torch.allclose(tokens_a[:, :2], tokens_b[:, :2], atol=1e-6)
    assert not torch.allclose(tokens_a[:, 2:], tokens_b[:, 2:], atol=1e-3)


def late_pair(layers: int = 3, fusion: int = 2) -> tuple[VLM, VLM]:
    """An early- and a late-fusion VLM with the same weights."""
    torch.manual_seed(0)
    early = VLM(tiny_cfg(n_layers=layers)).eval()
    late = vlm_from_state(early.state_dict(), replace(tiny_cfg(n_layers=layers), late_fusion_layer=fusion)).eval()
    return early, late


def resid_posts(model: VLM, images: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
    n = model.cfg.lm.n_layers
    names = [f"lm.blocks.{la}.hook_resid_post" for la in range(n)]
    with torch.no_grad():
        _, cache = model.run_with_cache(images, tokens, names_filter=lambda x: x in names)
    return [cache[x] for x in names]


def test_late_fusion_blocks_text_to_image_attention_before_its_layer():
    early, late = late_pair()
    n_img = late.n_img
    tokens = torch.randint(1, 40, (2, 6), generator=torch.Generator().manual_seed(1))
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    ra, rb = resid_posts(late, a, tokens), resid_posts(late, b, tokens)
    # another image changes the image positions everywhere, but the text positions only from layer 2 on
    for la in (0, 1):
        assert not torch.allclose(ra[la][:, :n_img], rb[la][:, :n_img])
        assert torch.equal(ra[la][:, n_img:], rb[la][:, n_img:]), la
    assert (ra[2][:, n_img:] - rb[2][:, n_img:]).abs().max() > 1e-4
    # the same weights fused early: the text sees the image at layer 0 already
    ea, eb = resid_posts(early, a, tokens), resid_posts(early, b, tokens)
    assert (ea[0][:, n_img:] - eb[0][:, n_img:]).abs().max() > 1e-4
    # the patterns: no text query puts weight on an image key before layer 2; image tokens are unchanged
    with torch.no_grad():
        _, cache = late.run_with_cache(a, tokens)
        _, ecache = early.run_with_cache(a, tokens)
    for la in range(3):
        pat = cache[f"lm.blocks.{la}.attn.hook_pattern"]  # [B, H, S, S]
        assert (pat[:, :, n_img:, :n_img].sum() == 0) == (la < 2), la
    assert torch.allclose(ra[0][:, :n_img], resid_posts(early, a, tokens)[0][:, :n_img])
    assert not torch.allclose(ecache["lm.blocks.0.attn.hook_pattern"], cache["lm.blocks.0.attn.hook_pattern"])


def test_late_fusion_text_only_is_the_plain_gpt_and_configs_round_trip():
    early, late = late_pair()
    text = torch.randint(1, 40, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(late(None, text), early(None, text))  # text alone: plain causal masks
    # ... and the late-fusion masks are back afterwards
    assert not late.lm.blocks[0].attn.mask[late.n_img:, : late.n_img].any()
    assert late.lm.blocks[2].attn.mask[late.n_img:, : late.n_img].all()
    assert "late_fusion_layer" not in early.cfg.to_dict()  # early-fusion artifacts keep their stored config
    assert VLMConfig(**late.cfg.to_dict()) == late.cfg
    with pytest.raises(ValueError):
        replace(tiny_cfg(n_layers=2), late_fusion_layer=3)
    # a GPT handed to a late-fusion VLM keeps its own causal masks
    gpt = early.lm
    VLM(replace(tiny_cfg(n_layers=3), late_fusion_layer=2), lm=gpt)
    assert gpt.blocks[0].attn.mask[early.n_img:, : early.n_img].all()
