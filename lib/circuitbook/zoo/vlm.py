"""Chapter 6: the tiny vision-language model and its transcoders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from circuitbook import artifacts
from circuitbook.config import Profile, device, get_profile, pick, seed_everything
from circuitbook.data.scenes import KINDS, make_dataset
from circuitbook.dictionaries.sae import Transcoder, train_transcoder
from circuitbook.models.vlm import VLM, VLMConfig, VLMTrainConfig, encode_scenes, mlp_io, train_vlm, vlm_from_state
from circuitbook.zoo.core import half, parents, scratch_dir, suffix, to_device, token_streams, tokenizer
from circuitbook.zoo.dense import dense_baseline, dense_configs

VLM_N_TEXT = 24  # caption tokens: the longest question, the answer and EOT fit
# Scene mix of the VLM's training set (planet, shuttle, hand, dots, shape): counting dots is the slowest
# skill to learn, so dots get the largest share; hands always have five fingers (the prior).
VLM_KIND_WEIGHTS = (2.0, 0.5, 1.0, 3.0, 1.0)
VLM_DOT_COUNTS = (1, 2, 3, 4, 5, 6)
# The late-fusion variant: text positions read the image tokens only from this LM layer on (ci's GPT has 2 layers).
VLM_LATE_FUSION_LAYER = {"ci": 1, "full": 2}


@dataclass(frozen=True, kw_only=True)
class VLMData:
    """The VLM's training scenes."""

    n_train: int  # training scenes
    n_val: int  # validation scenes
    n_text: int = VLM_N_TEXT  # caption tokens per scene
    kind_weights: tuple[float, ...] = VLM_KIND_WEIGHTS  # mix of planet, shuttle, hand, dots, shape
    dot_counts: tuple[int, ...] = VLM_DOT_COUNTS  # how many dots a dots scene may have

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class TranscoderSettings:
    """Chapter 6's transcoders: width, k, steps, and how many sequences of each kind they read."""

    n_features: int  # dictionary width (8 x d_model)
    k: int  # TopK active features per position
    steps: int  # training steps per layer
    batch_size: int = 512  # positions per step
    n_seq: int  # sequences of each kind (corpus windows; scenes with captions)
    text_ctx: int = 32  # tokens per corpus window

    def to_dict(self) -> dict:
        return asdict(self)


def vlm_configs(
    profile: str | Profile, seed: int = 0, late_fusion_layer: int = 0
) -> tuple[VLMConfig, VLMTrainConfig, VLMData]:
    """The VLM (a ViT prefix on the chapter-1 dense baseline), its training settings and its data settings;
    late_fusion_layer > 0: the late-fusion variant (same training budget, data and seed)."""
    prof = get_profile(profile)
    gcfg, _ = dense_configs(prof)
    vcfg = VLMConfig(image_size=32, patch_size=4, pool=2, lm=gcfg, late_fusion_layer=late_fusion_layer,
                     **pick(prof, ci=dict(vit_d_model=32, vit_layers=2, vit_heads=2, vit_d_head=16, vit_d_mlp=128),
                            full=dict(vit_d_model=64, vit_layers=4, vit_heads=4, vit_d_head=16, vit_d_mlp=256)))
    tcfg = pick(prof,
                ci=VLMTrainConfig(steps=150, batch_size=16, text_batch_size=4, text_ctx=64, lr=3e-3, lm_lr_mult=0.5,
                                  answer_only=True, eval_every=50, ckpt_every=50),
                full=VLMTrainConfig(steps=4000, batch_size=32, text_batch_size=8, text_ctx=64, lr=2e-3,
                                    lm_lr_mult=0.5, answer_only=True, eval_every=250, ckpt_every=100))
    data = VLMData(n_train=pick(prof, ci=768, full=20_000), n_val=pick(prof, ci=128, full=500))
    return vcfg, replace(tcfg, seed=seed), data


def vlm_scenes(profile: str | Profile, split: str, n: int, seed: int = 0, **kw):
    """Scenes drawn like the VLM's training mix (kind weights, dot counts), `kw` overriding (`kinds` alone:
    uniform over those kinds)."""
    opts = {"kinds": KINDS, "kind_weights": VLM_KIND_WEIGHTS, "dot_counts": VLM_DOT_COUNTS} | kw
    if "kinds" in kw and "kind_weights" not in kw:
        opts["kind_weights"] = None  # other kinds: uniform
    return make_dataset(n, seed=seed, split=split, **opts)


def vlm(profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True):
    """Chapter 6's VLM: a small ViT whose pooled patch tokens the dense baseline reads as a prefix, trained on
    synthetic scenes mixed with the code corpus (artifact `vlm`, fp16; resumable from data/scratch).
    Returns (model, meta)."""
    return _vlm(get_profile(profile), seed, retrain, progress, late=False)


def vlm_late(profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True):
    """The late-fusion VLM: as `vlm` (same data, steps and seed), but text positions cannot attend to the image
    tokens before LM layer VLM_LATE_FUSION_LAYER[profile] (artifact `vlm_late`). Returns (model, meta)."""
    return _vlm(get_profile(profile), seed, retrain, progress, late=True)


def _vlm(prof: Profile, seed: int, retrain: bool, progress: bool, late: bool):
    vcfg, tcfg, data = vlm_configs(prof, seed, VLM_LATE_FUSION_LAYER[prof.name] if late else 0)
    name = f"vlm{'_late' if late else ''}{suffix(seed)}"
    config = {"model": vcfg.to_dict(), "train": tcfg.to_dict(), "data": data.to_dict()}

    def fit():
        seed_everything(seed)
        tok = tokenizer(prof)
        streams = token_streams(prof, tok)
        train_pairs = encode_scenes(vlm_scenes(prof, "train", data.n_train, seed), tok, data.n_text)
        val_pairs = encode_scenes(vlm_scenes(prof, "val", data.n_val, seed), tok, data.n_text)
        model = to_device(VLM(vcfg, lm=dense_baseline(prof, seed)[0].float()))
        out = train_vlm(model, train_pairs, tcfg, text_tokens=streams["train"], val_pairs=val_pairs,
                        ckpt_dir=scratch_dir(prof, name), progress=progress)
        hist = [r for r in out["history"] if "val_pair_loss" in r or r["step"] % 50 == 0]
        return half(model.state_dict()), {"history": hist, "seconds": out["seconds"],
                                           "pairs_per_s": out["pairs_per_s"]}

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain,
                                            parents=parents(prof, f"dense_baseline{suffix(seed)}"))
    return to_device(vlm_from_state(tensors, vcfg).eval()), meta


def vlm_transcoder_configs(profile: str | Profile) -> TranscoderSettings:
    """Transcoder settings of chapter 6."""
    prof = get_profile(profile)
    d = dense_configs(prof)[0].d_model
    return TranscoderSettings(n_features=8 * d, k=pick(prof, ci=8, full=16), steps=pick(prof, ci=300, full=1500),
                              n_seq=pick(prof, ci=256, full=3000))


def text_windows(profile: str | Profile, n: int, split: str = "train", ctx: int = 32) -> torch.Tensor:
    """n evenly spaced windows of `ctx` tokens of the corpus split, [n, ctx] long."""
    s = token_streams(profile)[split]
    starts = np.linspace(0, len(s) - ctx - 1, n).astype(np.int64)
    return torch.from_numpy(np.stack([s[i : i + ctx] for i in starts]).astype(np.int64))


def vlm_transcoders(profile: str | Profile, kind: str, seed: int = 0, retrain: bool = False, progress: bool = False):
    """One TopK transcoder per GPT layer of the chapter-6 VLM, trained on MLP inputs -> outputs of text alone
    (`kind="text"`: corpus windows) or of a multimodal mix (`"multimodal"`: equal numbers of corpus positions
    and image + caption positions, image tokens included). Artifact `vlm_transcoders_<kind>`, fp16.
    Returns (list of Transcoders, meta)."""
    return _vlm_transcoders(get_profile(profile), kind, seed, retrain, progress, late=False)


def vlm_late_transcoders(
    profile: str | Profile, kind: str, seed: int = 0, retrain: bool = False, progress: bool = False
):
    """`vlm_transcoders` of the late-fusion VLM (same settings and data): artifact `vlm_late_transcoders_<kind>`."""
    return _vlm_transcoders(get_profile(profile), kind, seed, retrain, progress, late=True)


def _vlm_transcoders(prof: Profile, kind: str, seed: int, retrain: bool, progress: bool, late: bool):
    if kind not in ("text", "multimodal"):
        raise ValueError(f"kind must be 'text' or 'multimodal', got {kind!r}")
    model, vmeta = (vlm_late if late else vlm)(prof, seed)
    L, D = model.cfg.lm.n_layers, model.cfg.lm.d_model
    tc = vlm_transcoder_configs(prof)
    base = "vlm_late" if late else "vlm"
    name = f"{base}_transcoders_{kind}{suffix(seed)}"
    config = {"kind": kind, **tc.to_dict(), "vlm": vmeta["config"]}

    def fit():
        seed_everything(seed)
        xt, yt, _ = mlp_io(model, None, text_windows(prof, tc.n_seq, "train", tc.text_ctx), range(L))
        if kind == "multimodal":
            pairs = encode_scenes(vlm_scenes(prof, "transcoder", tc.n_seq, seed), tokenizer(prof), VLM_N_TEXT)
            xm, ym, _ = mlp_io(model, pairs.images, pairs.tokens, range(L))
        tensors, metrics = {}, {}
        for layer in range(L):
            x, y = xt[layer].reshape(-1, D), yt[layer].reshape(-1, D)
            if kind == "multimodal":  # equal numbers of text and multimodal positions
                xi, yi = xm[layer].reshape(-1, D), ym[layer].reshape(-1, D)
                n = min(len(x), len(xi))
                x, y = torch.cat([x[:n], xi[:n]]), torch.cat([y[:n], yi[:n]])
            t, h = train_transcoder((x, y), tc.n_features, tc.k, steps=tc.steps, seed=seed + layer,
                                    batch_size=tc.batch_size, progress=progress, device=device())
            tensors |= {f"l{layer}.{k}": v.half() for k, v in t.to_tensors().items()}
            metrics[f"l{layer}_train_fvu"] = float(np.mean(h["fvu"][-20:]))
        return tensors, metrics

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain,
                                            parents=parents(prof, f"{base}{suffix(seed)}"))
    cfg = {"kind": "Transcoder", "d_in": D, "d_out": D, "n_features": tc.n_features, "k": tc.k}
    return [to_device(Transcoder.from_tensors({k[len(f"l{la}."):]: v.float() for k, v in tensors.items()
                                               if k.startswith(f"l{la}.")}, cfg)) for la in range(L)], meta

