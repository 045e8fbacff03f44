"""Synthetic scenes with ground truth: planets, a shuttle, hands, dots and coloured shapes.

Each image (default 32 x 32 RGB, values in [0, 1]) comes with per-object masks of the
pixels that object shows (later objects hide earlier ones), its attributes, and a text
made of a prompt and a one-word answer:

    planet   Mars (red, textured), Earth (blue, green land), Jupiter (tan, banded), Neptune (deep blue)
             "This is the planet|Mars", "What planet is this?|Mars", "A shuttle flies to|Mars", ...
    shuttle  a white delta-winged shape: "This is a space|shuttle"; it may also fly next to a planet
    hand     a palm and n fingers radiating from it (5 unless `fingers=` says otherwise):
             "How many fingers?|5"
    dots     n separate dots (1-9 by default): "How many dots?|3"
    shape    one or two of circle / square / triangle in named colours: "What colour is the square?|red"

Captions of planet images often mention the shuttle (even when none is drawn), so a model
trained on them learns a planet -> shuttle association in text, the visual association
chapter 6 looks for. Everything is seeded: image i of (seed, split) is the same whatever n.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

KINDS = ("planet", "shuttle", "hand", "dots", "shape")
PLANETS = ("mars", "earth", "jupiter", "neptune")
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "purple": (0.6, 0.2, 0.8),
    "white": (0.95, 0.95, 0.95),
}
SKIN = ((0.92, 0.74, 0.6), (0.8, 0.6, 0.45), (0.6, 0.42, 0.3), (0.98, 0.82, 0.7))
SHUTTLE_BODY, SHUTTLE_WING = (0.95, 0.95, 0.97), (0.78, 0.78, 0.8)

# Templates per scene type: "prompt|answer"; text = f"{prompt} {answer}". Weights pick among them.
TEMPLATES: dict[str, list[tuple[str, float]]] = {
    "planet": [("This is the planet|{Planet}", 2.0), ("What planet is this?|{Planet}", 2.0),
               ("A shuttle flies to|{Planet}", 1.0), ("{Planet} is visited by the|shuttle", 1.0)],
    "planet+shuttle": [("A shuttle near the planet|{Planet}", 1.0),
                       ("What is next to {Planet}?|shuttle", 1.0),
                       ("What planet is this?|{Planet}", 1.0)],
    "shuttle": [("This is a space|shuttle", 1.0), ("What is this?|shuttle", 1.0)],
    "hand": [("How many fingers?|{n}", 2.0), ("This is a|hand", 1.0)],
    "dots": [("How many dots?|{n}", 2.0), ("Count the dots:|{n}", 1.0)],
    "shape": [("What colour is the {shape}?|{colour}", 2.0), ("What shape is {colour}?|{shape}", 1.0),
              ("This is a {colour}|{shape}", 1.0)],
}


@dataclass
class Scenes:
    """A batch of scenes. images: [n, 3, H, W] float32 in [0, 1]; the rest are per-image lists."""

    images: torch.Tensor
    texts: list[str]
    prompts: list[str]
    answers: list[str]
    masks: list[dict[str, torch.Tensor]]  # per image: object/part name -> bool [H, W]
    attrs: list[dict[str, Any]]  # per image: kind, planet, n_fingers, count, shapes, background, ...
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx: Sequence[int]) -> Scenes:
        idx = list(idx)
        return Scenes(self.images[idx], [self.texts[i] for i in idx], [self.prompts[i] for i in idx],
                      [self.answers[i] for i in idx], [self.masks[i] for i in idx],
                      [self.attrs[i] for i in idx], dict(self.meta))

    def object_mask(self, i: int) -> torch.Tensor:
        """Union of all masks of image i: every pixel that is not background. [H, W] bool."""
        m = torch.zeros(self.images.shape[-2:], dtype=torch.bool)
        for v in self.masks[i].values():
            m |= v
        return m


# ---- drawing primitives (pixel centres at integer + 0.5) -------------------------------------------


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx


def _disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = _grid(size)
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _local(size: int, cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u along direction theta, v across it) relative to (cx, cy)."""
    yy, xx = _grid(size)
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(theta), math.sin(theta)
    return dx * c + dy * s, -dx * s + dy * c


def _rect(size: int, cx: float, cy: float, theta: float, u0: float, u1: float, half_w: float) -> np.ndarray:
    """A rectangle along direction theta from u0 to u1 (distances from (cx, cy)), of half-width half_w."""
    u, v = _local(size, cx, cy, theta)
    return (u >= u0) & (u <= u1) & (np.abs(v) <= half_w)


def _triangle(size: int, pts: Sequence[tuple[float, float]]) -> np.ndarray:
    yy, xx = _grid(size)
    (x0, y0), (x1, y1), (x2, y2) = pts
    d0 = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
    d1 = (x2 - x1) * (yy - y1) - (y2 - y1) * (xx - x1)
    d2 = (x0 - x2) * (yy - y2) - (y0 - y2) * (xx - x2)
    return ((d0 >= 0) & (d1 >= 0) & (d2 >= 0)) | ((d0 <= 0) & (d1 <= 0) & (d2 <= 0))


def _waves(size: int, rng: np.random.Generator, n: int = 3, freq: float = 0.35) -> np.ndarray:
    """Smooth random texture in about [-1, 1]: a sum of n random plane waves."""
    yy, xx = _grid(size)
    out = np.zeros((size, size), np.float32)
    for _ in range(n):
        a = rng.uniform(0, 2 * math.pi)
        f = freq * rng.uniform(0.5, 1.5) * 32 / size
        out += np.sin(f * (xx * math.cos(a) + yy * math.sin(a)) + rng.uniform(0, 2 * math.pi))
    return out / n


class _Canvas:
    """An image plus the masks of what each object shows; painting hides earlier objects' pixels."""

    def __init__(self, size: int, background: np.ndarray):
        self.img = np.broadcast_to(background, (size, size, 3)).astype(np.float32).copy()
        self.masks: dict[str, np.ndarray] = {}

    def paint(self, parts: dict[str, np.ndarray], colour: np.ndarray | tuple[float, float, float]) -> None:
        """Paint the union of `parts` with `colour` (an RGB triple or an [H, W, 3] image) and record masks."""
        union = np.zeros(self.img.shape[:2], bool)
        for m in parts.values():
            union |= m
        colour = np.asarray(colour, np.float32)
        self.img[union] = colour[union] if colour.ndim == 3 else colour
        for name in self.masks:
            if name not in parts:
                self.masks[name] &= ~union
        for name, m in parts.items():
            self.masks[name] = self.masks.get(name, np.zeros_like(m)) | m


# ---- objects ----------------------------------------------------------------------------------------


def _planet_colours(
    name: str, size: int, cx: float, cy: float, r: float, rng: np.random.Generator
) -> np.ndarray:
    """The planet's surface as an [H, W, 3] image (only the disc is used)."""
    yy, xx = _grid(size)
    if name == "mars":
        base = np.array([0.78, 0.32, 0.15], np.float32)
        tex = 1.0 + 0.18 * _waves(size, rng, 4, 0.6)
        img = base * tex[..., None]
        for _ in range(int(rng.integers(2, 5))):  # dark craters
            a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.7 * r)
            crater = _disc(size, cx + d * math.cos(a), cy + d * math.sin(a), rng.uniform(0.1, 0.2) * r)
            img[crater] *= 0.6
    elif name == "earth":
        ocean, land = np.array([0.12, 0.32, 0.82], np.float32), np.array([0.22, 0.62, 0.24], np.float32)
        tex = _waves(size, rng, 3, 0.45)
        inside = _disc(size, cx, cy, r)
        cut = np.quantile(tex[inside], rng.uniform(0.55, 0.7))
        img = np.where((tex > cut)[..., None], land, ocean)
    elif name == "jupiter":
        tan, brown = np.array([0.85, 0.7, 0.5], np.float32), np.array([0.6, 0.4, 0.26], np.float32)
        tilt = rng.uniform(-0.25, 0.25)
        along = (yy - cy) * math.cos(tilt) - (xx - cx) * math.sin(tilt)
        bands = np.sin(along / r * rng.uniform(2.5, 3.5) * math.pi + rng.uniform(0, 2 * math.pi))
        img = np.where((bands > 0.2)[..., None], brown, tan)
    elif name == "neptune":
        base = np.array([0.1, 0.18, 0.6], np.float32)
        img = base * (1.0 + 0.08 * _waves(size, rng, 2, 0.3))[..., None]
    else:
        raise ValueError(f"unknown planet {name!r}; known: {PLANETS}")
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r)
    shade = 0.7 + 0.3 * np.sqrt(np.clip(1 - d2, 0, 1))  # limb darkening: a sphere, not a disc
    return np.clip(img * shade[..., None], 0, 1)


def _shuttle(canvas: _Canvas, size: int, cx: float, cy: float, length: float, theta: float) -> None:
    """A white shuttle seen from above: fuselage, nose and delta wings. Mask name "shuttle"."""
    L = length
    c, s = math.cos(theta), math.sin(theta)
    to_xy = lambda u, v: (cx + u * c - v * s, cy + u * s + v * c)
    body = _rect(size, cx, cy, theta, -L / 2, L / 2 - 0.15 * L, 0.1 * L)
    u_nose = L / 2 - 0.15 * L
    nose = _triangle(size, [to_xy(u_nose, -0.1 * L), to_xy(u_nose, 0.1 * L), to_xy(L / 2, 0)])
    wings = _triangle(size, [to_xy(-L / 2, -0.38 * L), to_xy(-L / 2, 0.38 * L), to_xy(0.15 * L, 0)])
    canvas.paint({"shuttle": wings}, SHUTTLE_WING)
    canvas.paint({"shuttle": body | nose}, SHUTTLE_BODY)


def _hand(canvas: _Canvas, size: int, rng: np.random.Generator, n_fingers: int, scale: float = 1.0) -> dict:
    """A palm (disc) and n finger rectangles radiating from its centre, spaced so no two touch."""
    rp, lf, hw = 0.17 * size * scale, 0.2 * size * scale, 0.028 * size * scale  # palm radius, finger length
    gap = min(math.radians(36), math.radians(250) / max(n_fingers - 1, 1))
    reach = rp + lf
    cx, cy = rng.uniform(reach + 0.5, size - reach - 0.5, size=2)
    up = -math.pi / 2 + rng.uniform(-0.5, 0.5)  # fingers point roughly up
    angles = [up + (i - (n_fingers - 1) / 2) * gap for i in range(n_fingers)]
    palm = _disc(size, cx, cy, rp)
    yy, xx = _grid(size)
    a = np.asarray(angles, np.float32)[:, None, None]  # all fingers at once: [n, 1, 1]
    u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)  # [n, H, W] along each finger
    v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)  # across it
    fingers = (u >= 0.5 * rp) & (u <= reach) & (np.abs(v) <= hw) & ~palm
    parts = {"palm": palm} | {f"finger_{i}": fingers[i] for i in range(n_fingers)}
    skin = SKIN[int(rng.integers(len(SKIN)))]
    canvas.paint(parts, skin)
    canvas.masks["hand"] = np.logical_or.reduce([canvas.masks[k] for k in parts])
    return {"n_fingers": n_fingers, "skin": skin, "center": (float(cx), float(cy)), "palm_radius": float(rp)}


def _place_apart(rng: np.random.Generator, n: int, radius: float, size: int, min_dist: float,
                 tries: int = 200) -> list[tuple[float, float]]:
    """n centres inside the image (margin `radius`) at least `min_dist` apart (rejection sampling)."""
    for _ in range(50):
        pts: list[tuple[float, float]] = []
        for _ in range(tries):
            p = rng.uniform(radius + 0.5, size - radius - 0.5, size=2)
            if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= min_dist**2 for q in pts):
                pts.append((float(p[0]), float(p[1])))
                if len(pts) == n:
                    return pts
    raise RuntimeError(f"cannot place {n} objects of radius {radius} apart in a {size}px image")


def _shape(canvas: _Canvas, size: int, shape: str, colour: str, cx: float, cy: float, r: float) -> None:
    if shape == "circle":
        m = _disc(size, cx, cy, r)
    elif shape == "square":
        h = 0.85 * r
        yy, xx = _grid(size)
        m = (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    elif shape == "triangle":
        R = 1.15 * r
        corners = [-math.pi / 2 + j * 2 * math.pi / 3 for j in range(3)]
        m = _triangle(size, [(cx + R * math.cos(a), cy + R * math.sin(a)) for a in corners])
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    canvas.paint({shape: m}, COLOURS[colour])


# ---- scenes -----------------------------------------------------------------------------------------


def _space(size: int, rng: np.random.Generator, stars: bool) -> _Canvas:
    canvas = _Canvas(size, np.zeros(3, np.float32))
    if stars:
        n = int(rng.integers(2, 6))
        ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
        canvas.img[ys, xs] = rng.uniform(0.5, 0.9, (n, 1))
    return canvas


def draw_scene(
    kind: str,
    rng: np.random.Generator,
    size: int = 32,
    *,
    planet: str | None = None,
    with_shuttle: bool = False,
    n_fingers: int = 5,
    count: int | None = None,
    dot_counts: Sequence[int] = tuple(range(1, 10)),
    max_shapes: int = 2,
    stars: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Draw one scene of `kind`. Returns (image [H, W, 3] float32, masks name -> bool [H, W], attributes)."""
    attrs: dict[str, Any] = {"kind": kind}
    if kind in ("planet", "shuttle"):
        canvas = _space(size, rng, stars)
        attrs["background"] = "space"
        if kind == "planet":
            name = planet or PLANETS[int(rng.integers(len(PLANETS)))]
            r = rng.uniform(0.22, 0.3 if with_shuttle else 0.36) * size
            cx, cy = rng.uniform(r + 0.5, size - r - 0.5, size=2)
            if with_shuttle:  # push the planet to one side, the shuttle to the other
                side = rng.choice([-1.0, 1.0])
                cx = size / 2 + side * (size / 2 - r - 0.5)
            canvas.paint({"planet": _disc(size, cx, cy, r)}, _planet_colours(name, size, cx, cy, r, rng))
            attrs.update(planet=name, shuttle=bool(with_shuttle), radius=float(r),
                         center=(float(cx), float(cy)))
            if with_shuttle:
                L = rng.uniform(0.3, 0.38) * size
                sx = size / 2 - side * rng.uniform(0.1, 0.35) * size  # sometimes in front of the planet
                sy = rng.uniform(0.35 * L + 1, size - 0.35 * L - 1)
                _shuttle(canvas, size, sx, sy, L, rng.uniform(-math.pi, math.pi) * 0.25 - math.pi / 2)
        else:
            L = rng.uniform(0.45, 0.6) * size
            c = rng.uniform(0.45 * L + 0.5, size - 0.45 * L - 0.5, size=2)
            _shuttle(canvas, size, c[0], c[1], L, rng.uniform(-math.pi, math.pi))
            attrs.update(shuttle=True, planet=None)
    else:
        bg = rng.uniform(0.12, 0.32, 3).astype(np.float32)
        canvas = _Canvas(size, bg)
        attrs["background"] = tuple(float(v) for v in bg)
        if kind == "hand":
            attrs.update(_hand(canvas, size, rng, n_fingers))
        elif kind == "dots":
            n = int(count if count is not None else dot_counts[int(rng.integers(len(dot_counts)))])
            r = max(1.2, 0.06 * size)
            colour = ("white", "yellow", "red", "green", "blue")[int(rng.integers(5))]
            for i, (x, y) in enumerate(_place_apart(rng, n, r, size, 2 * r + 2.0)):
                canvas.paint({f"dot_{i}": _disc(size, x, y, r)}, COLOURS[colour])
            attrs.update(count=n, colour=colour)
        elif kind == "shape":
            k = int(rng.integers(1, max_shapes + 1))
            shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:k]]
            names = list(COLOURS)
            colours = [names[i] for i in rng.permutation(len(names))[:k]]
            r = rng.uniform(0.14, 0.2) * size * (1.0 if k == 1 else 0.85)
            centres = _place_apart(rng, k, 1.2 * r, size, 2.5 * r)
            for s, c, (x, y) in zip(shapes, colours, centres):
                _shape(canvas, size, s, c, x, y, r)
            target = int(rng.integers(k))
            attrs.update(shapes=[{"shape": s, "colour": c} for s, c in zip(shapes, colours)],
                         target=target, shape=shapes[target], colour=colours[target])
        else:
            raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    return canvas.img, canvas.masks, attrs


def _text(kind: str, attrs: dict[str, Any], rng: np.random.Generator, templates: dict) -> tuple[str, str]:
    key = "planet+shuttle" if kind == "planet" and attrs.get("shuttle") else kind
    options = templates[key]
    w = np.array([o[1] for o in options], float)
    t = options[int(rng.choice(len(options), p=w / w.sum()))][0]
    n = attrs.get("n_fingers", attrs.get("count"))
    fill = {"Planet": (attrs.get("planet") or "").capitalize(), "n": n,
            "shape": attrs.get("shape"), "colour": attrs.get("colour")}
    prompt, answer = t.format(**fill).split("|")
    return prompt, answer


def make_dataset(
    n: int,
    seed: int = 0,
    split: str = "train",
    *,
    size: int = 32,
    kinds: Sequence[str] = KINDS,
    kind_weights: Sequence[float] | None = None,
    planets: Sequence[str] = PLANETS,
    p_shuttle: float = 0.3,
    fingers: int | Sequence[int] | None = None,
    dot_counts: Sequence[int] = tuple(range(1, 10)),
    max_shapes: int = 2,
    noise: float = 0.02,
    stars: bool = True,
    templates: dict[str, list[tuple[str, float]]] | None = None,
) -> Scenes:
    """n seeded scenes. Image i depends only on (seed, split, i) and the options.

    - kinds / kind_weights: which scene types and how often (uniform by default).
    - planets: which planets appear; p_shuttle: chance a planet scene also shows a shuttle.
    - fingers: fingers per hand, an int or a list to sample from; default 5 (the training prior).
    - noise: std of Gaussian pixel noise (0 for exact colours).
    """
    templates = templates or TEMPLATES
    w = np.ones(len(kinds)) if kind_weights is None else np.asarray(kind_weights, float)
    w = w / w.sum()
    finger_choices = [5] if fingers is None else [fingers] if isinstance(fingers, int) else list(fingers)
    split_id = zlib.crc32(split.encode())
    images = np.empty((n, size, size, 3), np.float32)
    texts, prompts, answers, masks, attrs = [], [], [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, split_id, i])
        kind = kinds[int(rng.choice(len(kinds), p=w))]
        img, m, a = draw_scene(
            kind, rng, size,
            planet=planets[int(rng.integers(len(planets)))],
            with_shuttle=bool(rng.random() < p_shuttle),
            n_fingers=finger_choices[int(rng.integers(len(finger_choices)))],
            dot_counts=dot_counts, max_shapes=max_shapes, stars=stars,
        )
        if noise > 0:
            img = np.clip(img + rng.normal(0, noise, img.shape).astype(np.float32), 0, 1)
        prompt, answer = _text(kind, a, rng, templates)
        images[i] = img
        prompts.append(prompt)
        answers.append(answer)
        texts.append(f"{prompt} {answer}")
        masks.append({k: torch.from_numpy(v) for k, v in m.items()})
        attrs.append(a)
    return Scenes(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), texts, prompts, answers, masks,
                  attrs, {"seed": seed, "split": split, "size": size, "kinds": list(kinds)})


def preview(scenes: Scenes, n: int = 16, cols: int = 8, show_text: bool = True):
    """A grid of the first n scenes with their texts. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    n = min(n, len(scenes))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow(scenes.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        if show_text:
            ax.set_title(scenes.texts[i], fontsize=6)
    fig.tight_layout()
    return fig
