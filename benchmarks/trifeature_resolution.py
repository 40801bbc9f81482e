"""How much of each Trifeature texture survives when an image is made smaller.

    python benchmarks/trifeature_resolution.py
    python benchmarks/trifeature_resolution.py --sizes 24 48 96 --images 4

Every texture repeats every k = 10 pixels of the 224 px rendering. kdray makes a smaller image
by area-averaging the 224 px one, so at 24 px (224 / 24 = 9.3 px per pixel) a pixel averages
about one period and the pattern is gone: what is left of a texture is its mean fill (the
share of the shape's pixels it colours) and whatever aliasing the rotation leaves. The script
draws textures exactly as a rendering does (random offsets, rotated by a random angle, the
central 224 x 224 of the 448 px canvas), area-averages each mask to every size asked for, and
prints per texture:

- ``fill``: the mask's mean at 224 px (textures with the same fill look alike once the
  pattern is averaged away);
- per size, the contrast kept: the standard deviation of the averaged mask over the one at
  224 px (1.00: the pattern is intact; 0.00: a flat tone).

No training: this is why a label that is a texture needs larger images than one that is a
shape (docs/recipes.md has the probes).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from kdray.cli_help import command_parser, one_value, description_of
from kdray.data.trifeature import RENDER_SIZE, TEXTURES, texture_window


def masks(texture: str, images: int, rng: np.random.Generator) -> torch.Tensor:
    """``images`` masks of ``texture`` as a rendering draws them, float [images, 1, R, R]."""
    whole = np.arange(RENDER_SIZE)
    drawn = [texture_window(texture, whole, whole, rng) for _ in range(images)]
    return torch.from_numpy(np.stack(drawn).astype(np.float32))[:, None]


def contrast_kept(mask: torch.Tensor, size: int) -> float:
    """The standard deviation of ``mask`` area-averaged to ``size`` px over its own."""
    full = mask.std().item()
    small = F.interpolate(mask, size=(size, size), mode="area")  # at 224 px: mask itself
    return small.std().item() / full if full > 0 else float("nan")


def table(sizes: list[int], images: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = ["texture      fill  " + " ".join(f"{s:>5d}px" for s in sizes)]
    for name in TEXTURES:
        m = masks(name, images, rng)
        kept = " ".join(f"{contrast_kept(m, s):7.2f}" for s in sizes)
        lines.append(f"{name:<10s} {m.mean().item():6.3f}  {kept}")
    return lines


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/trifeature_resolution.py", description_of(__doc__))
    p.add_argument("--sizes", type=int, nargs="+", default=[24, 32, 48, 64, 96, 112, 224],
                   metavar="PX", help="image sizes")
    p.add_argument("--images", type=int, default=8, help="masks per texture")
    p.add_argument("--seeds", "--seed", nargs="+", type=int, default=[0], metavar="S",
                   help="the seed: one value")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    args.seed = one_value(p, "--seeds", args.seeds)
    bad = [s for s in args.sizes if not 1 <= s <= RENDER_SIZE]
    if bad or args.images < 1:
        p.error(f"--sizes must be in [1, {RENDER_SIZE}] (got {bad}) and --images >= 1 "
                f"(got {args.images})")
    torch.set_num_threads(1)
    print("\n".join(table(args.sizes, args.images, args.seed)))
    print("contrast kept: std of the area-averaged mask / std at 224 px "
          "(1.00 intact, 0.00 a flat tone); solid has none (nan)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
