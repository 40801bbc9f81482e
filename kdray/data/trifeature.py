"""``trifeature-shape`` / ``trifeature-texture``: the Trifeature stimuli (Hermann & Lampinen 2020).

A procedural generator that follows the dataset's definition (``docs/trifeature.md``):
10 shapes x 10 textures x 10 colours on grey, every combination ``per_combination`` times.
Each image is rendered at R = 224 in three steps: (1) the 128-px shape template is rotated
by an integer angle in [-45, 45) (linear interpolation, canvas grown to fit) and pasted at a
uniform random position where it fits entirely inside the R x R canvas; (2) the texture is
drawn on a 2R x 2R canvas, rotated by its own angle (nearest neighbour, canvas not grown)
and its central R x R kept; (3) mask = shape * texture, image = mask * colour +
(1 - mask) * grey, x 255 truncated to uint8. A smaller ``image_size`` is the same stimulus
area-averaged down from 224 (rounded to uint8).

Determinism: image ``rep`` of combination ``combo = (shape*10 + texture)*10 + colour`` uses
its own generator ``default_rng(SeedSequence([seed, combo, rep]))``, so the data are a pure
function of (image_size, per_combination, seed) and do not depend on execution order (a
larger ``per_combination`` extends a smaller one). Images are stored rep-major (index
``rep*1000 + combo``); the first ``test_per_combination`` reps of every combination are the
test split. The arrays are cached once per node under ``data_dir/trifeature/<key>/`` and
shared by both dataset names (the label is chosen after loading). ``mean``/``std`` are the
per-channel statistics of the training images (exact, from per-rep sums cached with the data).
"""

from __future__ import annotations

import numbers
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from scipy import special

from kdray.data import DatasetSplits, TensorData, register_dataset, register_tiny
from kdray.data.fetch import once

# ----------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------

SHAPES = ("triangle", "square", "plus", "circle", "tee", "rhombus", "pentagon", "star",
          "fivesquare", "trapezoid")
TEXTURES = ("solid", "stripes", "grid", "hexgrid", "dots", "noise", "triangles", "zigzags",
            "rain", "pluses")
COLOURS = ("red", "green", "blue", "yellow", "pink", "cyan", "purple", "ocean", "orange",
           "white")
COLOUR_RGB = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0.4, 1), (0, 1, 1),
                       (0.3, 0, 0.5), (0.1, 0.4, 0.5), (1, 0.6, 0), (1, 1, 1)], dtype=np.float64)
GREY = 0.5                # background (0.5, 0.5, 0.5)
RENDER_SIZE = 224         # R: every image is rendered at R x R, then downsampled
TEMPLATE_SIZE = 128       # s: shape templates are s x s, pasted unscaled into the R canvas
TEXTURE_SCALE = 10        # k
ANGLES = (-45, 45)        # integer rotation angles, uniform in [-45, 45)
N_COMBOS = len(SHAPES) * len(TEXTURES) * len(COLOURS)
FEATURE_NAMES = {"shape": SHAPES, "texture": TEXTURES, "colour": COLOURS}  # label order 0-9
VERSION = 1               # bump when the rendered images change (part of the cache key)


def _index(value, names: tuple[str, ...], what: str) -> int:
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"trifeature: unknown {what} {value!r}; expected one of {names}")
        return names.index(value)
    if not 0 <= int(value) < len(names):
        raise ValueError(f"trifeature: {what} index {value!r} is not in [0, {len(names)})")
    return int(value)


# ----------------------------------------------------------------------------------------
# Shape templates (binary s x s; i = row, j = column, // floor division)
# ----------------------------------------------------------------------------------------

def shape_template(name: str, s: int = TEMPLATE_SIZE) -> np.ndarray:
    """The binary ``s x s`` template of shape ``name`` (bool array), as in docs/trifeature.md."""
    i, j = np.ogrid[:s, :s]
    h = s // 2
    band = lambda a: (a >= h - s // 6) & (a <= h + s // 6)  # [s//2 - s//6, s//2 + s//6]
    between = lambda x: (x < j) & (j < s - x)               # x < j < s - x
    full = np.ones((s, s), dtype=bool)
    if name == "square":
        out = full
    elif name == "circle":       # (i+0.5-s//2)^2 + (j+0.5-s//2)^2 < (s//2)^2
        out = (i + 0.5 - h) ** 2 + (j + 0.5 - h) ** 2 < h ** 2
    elif name == "triangle":     # |j - s//2| - |i//2| < 1, apex at the top
        out = np.abs(j - h) - np.abs(i // 2) < 1
    elif name == "plus":         # column band or row band
        out = band(j) | band(i)
    elif name == "tee":          # column band or the top third of rows
        out = band(j) | (i < s // 3)
    elif name == "rhombus":      # 0 < j - s//2 + i//2 < s//2
        d = j - h + i // 2
        out = (0 < d) & (d < h)
    elif name == "pentagon":     # i < m: |j - s//2| - 1.25 i < 1; else x < j < s-x, x = (i-m)//3.1
        m = int(0.4 * s)
        out = np.where(i < m, np.abs(j - h) - 1.25 * i < 1, between((i - m) // 3.1))
    elif name == "star":         # a top spike, a wide middle bar, two legs
        l1 = int(0.4 * s)
        l3 = l1 + int(0.15 * s)
        top = (i < l1) & (np.abs(j - h) - i // 4 < 1)
        mid = (i >= l1) & (i < l1 + int(0.2 * s)) & between(2.4 * (i - l1))
        a = 0.33 * s - 0.43 * (i - l3)
        b = 0.62 * s - 1.05 * (i - l3)
        legs = (i >= l3) & (((a < j) & (j < b)) | ((a < s - j) & (s - j < b)))
        out = top | mid | legs
    elif name == "fivesquare":   # minus the middle third of rows and columns, plus the centre
        mid_i = (i >= s // 3) & (i < 2 * s // 3)
        mid_j = (j >= s // 3) & (j < 2 * s // 3)
        out = ~(mid_i | mid_j) | (mid_i & mid_j)
    elif name == "trapezoid":    # x < j < s - x, x = i // 3.1
        out = between(i // 3.1)
    else:
        raise ValueError(f"trifeature: unknown shape {name!r}; expected one of {SHAPES}")
    return np.broadcast_to(out, (s, s)).copy()


@lru_cache(maxsize=None)
def _template(shape: int) -> np.ndarray:
    return shape_template(SHAPES[shape]).astype(np.float64)


def _rotated_template(shape: int, angle: int) -> np.ndarray:
    """Step 1: linear interpolation, canvas grown to fit (values in [0, 1])."""
    return np.clip(ndi.rotate(_template(shape), angle, order=1, reshape=True), 0.0, 1.0)


# ----------------------------------------------------------------------------------------
# Textures (binary on an n x n canvas, k = 10; y = i + oy, x = j + ox; u = y mod k, v = x mod k)
# ----------------------------------------------------------------------------------------

def _texture_sampler(name: str, n: int, rng: np.random.Generator):
    """Draw the texture's randomness (offsets ox, oy in [0, k), then any random canvas) and
    return ``f(i, j) -> bool`` that evaluates it at integer canvas coordinates."""
    k = TEXTURE_SCALE
    ox, oy = (int(o) for o in rng.integers(0, k, size=2))
    lw, thin = k // 3, k // 5
    if name == "noise":          # independent Bernoulli(0.5) pixels
        canvas = rng.random((n, n)) < 0.5
        return lambda i, j: canvas[i, j]
    if name == "rain":           # each pixel starts (p = 0.05) a streak k - k//3 tall, 1 wide
        starts = rng.random((n, n)) < 0.05
        canvas = starts.copy()
        for d in range(1, k - k // 3):
            canvas[d:] |= starts[:-d]
        return lambda i, j: canvas[i, j]
    if name not in TEXTURES:
        raise ValueError(f"trifeature: unknown texture {name!r}; expected one of {TEXTURES}")

    def f(i, j):
        y, x = i + oy, j + ox
        u, v = y % k, x % k
        if name == "solid":
            return np.ones(np.broadcast_shapes(np.shape(i), np.shape(j)), dtype=bool)
        if name == "stripes":    # y mod k < k//3
            return u < lw
        if name == "grid":       # stripes or x mod k < k//3
            return (u < lw) | (v < lw)
        if name == "hexgrid":    # (x ± int(1.73 y)) mod k < k//5, or y mod k < k//5
            t = (1.73 * y).astype(np.int64)
            return ((x + t) % k < thin) | ((x - t) % k < thin) | (u < thin)
        if name == "dots":       # (v - k//2)^2 + (u - k//2)^2 < (3k//7)^2
            return (v - k // 2) ** 2 + (u - k // 2) ** 2 < (3 * k // 7) ** 2
        if name == "triangles":  # u//2 - |v - k//2| > 0
            return u // 2 - np.abs(v - k // 2) > 0
        if name == "zigzags":    # v mirrored on odd bands of k rows; u//2 < v < (k - k//2) + u//2
            v = np.where((y // k) % 2 == 1, k - 1 - v, v)
            return (u // 2 < v) & (v < (k - k // 2) + u // 2)
        # pluses: even bands of k rows hold a plus centred in each k x k cell; odd bands the
        # shifted pattern: cell edges, or the horizontal bar away from the centre column
        bar = np.abs(u - k // 2) < 1.5
        centre_col = np.abs(v - k // 2) < 1.5
        plus = centre_col | bar
        shifted = (np.abs(v) < 1.5) | (k - v < 1.5) | (bar & ~centre_col)
        return np.where((y // k) % 2 == 0, plus, shifted)
    return f


def texture_pattern(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """The texture ``name`` on a ``size x size`` canvas (bool; ``size`` = 2R in a render)."""
    i, j = np.ogrid[:size, :size]
    return np.broadcast_to(_texture_sampler(name, size, rng)(i, j), (size, size)).copy()


def texture_window(texture, rows: np.ndarray, cols: np.ndarray, rng: np.random.Generator
                   ) -> np.ndarray:
    """The mask (bool [rows, cols]) that ``texture`` (name or index) puts on those rows and
    columns of an R x R image, drawn as a render draws it: the texture's randomness on a
    2R x 2R canvas, then its angle; the canvas rotated (nearest, not grown), its centre kept."""
    R = RENDER_SIZE
    sample = _texture_sampler(TEXTURES[_index(texture, TEXTURES, "texture")], 2 * R, rng)
    angle = int(rng.integers(*ANGLES))
    y, x = _rotation_source(angle, np.asarray(rows) + R // 2, np.asarray(cols) + R // 2, 2 * R)
    return sample(y, x)


def _rotation_source(angle: int, rows: np.ndarray, cols: np.ndarray, n: int):
    """Source pixel of each output pixel (rows x cols) of an n x n nearest-neighbour rotation
    about the centre, canvas not grown. Same arithmetic as ``scipy.ndimage.rotate(order=0,
    reshape=False)`` (in = M out + offset, M = [[c, s], [-s, c]]), so the same pixels."""
    c, s = special.cosdg(angle), special.sindg(angle)
    centre = (n - 1) / 2
    off = centre - np.array([[c, s], [-s, c]]) @ np.array([centre, centre])
    p, q = rows[:, None].astype(np.float64), cols[None, :].astype(np.float64)
    y = np.floor(off[0] + c * p + s * q + 0.5).astype(np.int64)
    x = np.floor(off[1] - s * p + c * q + 0.5).astype(np.int64)
    return y, x  # the central R x R of a 2R canvas never reads outside it (R/sqrt(2) < R)


# ----------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------

def _render_full(shape: int, texture: int, colour: int, rng: np.random.Generator) -> np.ndarray:
    """One image at R = 224, uint8 [R, R, 3]. Draws, in order: shape angle, paste row, paste
    column, the texture (offsets, random canvas), texture angle."""
    R = RENDER_SIZE
    # 1. rotated template (grown canvas) at a uniform position where it fits in R x R
    shp = _rotated_template(shape, int(rng.integers(*ANGLES)))
    h, w = shp.shape
    r0, c0 = int(rng.integers(0, R - h + 1)), int(rng.integers(0, R - w + 1))
    # 2. texture on 2R x 2R, rotated (nearest, not grown), central R x R; only the pasted
    #    window is evaluated (elsewhere mask = 0)
    texture_mask = texture_window(texture, np.arange(r0, r0 + h), np.arange(c0, c0 + w), rng)
    # 3. mask = shape x texture; image = mask colour + (1 - mask) grey, x 255 truncated
    mask = (shp * texture_mask)[..., None]
    image = np.full((R, R, 3), int(GREY * 255), dtype=np.uint8)  # mask = 0: 127.5 -> 127
    image[r0:r0 + h, c0:c0 + w] = ((mask * COLOUR_RGB[colour] + (1 - mask) * GREY) * 255
                                   ).astype(np.uint8)
    return image


def _downsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, R, R, 3] -> uint8 [N, 3, size, size], area averaging, rounded."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if size != x.shape[-1]:
        x = F.interpolate(x.float(), size=(size, size), mode="area").round().clamp(0, 255)
    return x.to(torch.uint8).contiguous().numpy()


def render(shape, texture, colour, rng: np.random.Generator, size: int = RENDER_SIZE
           ) -> np.ndarray:
    """One Trifeature image, uint8 [size, size, 3].

    Parameters
    ----------
    shape, texture, colour : str or int
        Feature names (see SHAPES, TEXTURES, COLOURS) or their indices.
    rng : numpy.random.Generator
        All randomness (angles, position, texture) is drawn from it.
    size : int
        Output size; rendered at 224 and area-downsampled when smaller.
    """
    if not 1 <= size <= RENDER_SIZE:
        raise ValueError(f"trifeature: size must be in [1, {RENDER_SIZE}], got {size!r}")
    img = _render_full(_index(shape, SHAPES, "shape"), _index(texture, TEXTURES, "texture"),
                       _index(colour, COLOURS, "colour"), rng)
    return img if size == RENDER_SIZE else _downsample(img[None], size)[0].transpose(1, 2, 0)


# ----------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------

def _features(per_combination: int) -> dict[str, np.ndarray]:
    """Shape, texture, colour of image ``rep*1000 + combo`` (combo = (s*10 + t)*10 + c)."""
    combo = np.tile(np.arange(N_COMBOS), per_combination)
    return {"shape": combo // 100, "texture": combo // 10 % 10, "colour": combo % 10}


def image_rng(seed: int, combo: int, rep: int) -> np.random.Generator:
    """The generator of image ``rep`` of combination ``combo``: independent of any other."""
    return np.random.default_rng(np.random.SeedSequence([seed, combo, rep]))


def generate(image_size: int = RENDER_SIZE, per_combination: int = 10, seed: int = 0,
             chunk: int = 100) -> dict[str, np.ndarray]:
    """Every (shape, texture, colour) combination ``per_combination`` times.

    Returns
    -------
    dict with ``images`` uint8 [N, 3, H, W] (N = 1000 * per_combination, H = W =
    image_size) and ``shape``, ``texture``, ``colour`` int64 [N]; image ``rep*1000 + combo``
    is rendered with ``image_rng(seed, combo, rep)``, a pure function of the arguments.
    """
    feats = _features(per_combination)
    n = len(feats["shape"])
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    for a in range(0, n, chunk):
        batch = np.stack([_render_full(feats["shape"][k], feats["texture"][k],
                                       feats["colour"][k], image_rng(seed, k % N_COMBOS,
                                                                     k // N_COMBOS))
                          for k in range(a, min(a + chunk, n))])
        images[a:a + len(batch)] = _downsample(batch, image_size)
    return {"images": images, **{k: v.astype(np.int64) for k, v in feats.items()}}


# ----------------------------------------------------------------------------------------
# Options, cache, registration
# ----------------------------------------------------------------------------------------

DEFAULTS = {"image_size": RENDER_SIZE, "per_combination": 10, "test_per_combination": 2,
            "data_seed": 0}


def _check_options(options: dict) -> dict[str, int]:
    def integer(name: str, lo: int, hi: int | None = None) -> int:
        v = options[name]
        if (not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < lo
                or (hi is not None and v > hi)):
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ValueError(f"trifeature: option {name!r} must be an int {bound}, got {v!r}")
        return int(v)

    o = {"image_size": integer("image_size", 8, RENDER_SIZE),
         "per_combination": integer("per_combination", 2),
         "data_seed": integer("data_seed", 0)}
    o["test_per_combination"] = integer("test_per_combination", 1, o["per_combination"] - 1)
    return o


def _build(folder: Path, o: dict[str, int]) -> None:
    data = generate(o["image_size"], o["per_combination"], o["data_seed"])
    for name, arr in data.items():
        np.save(folder / f"{name}.npy", arr)
    # per-rep channel sums (exact integers, in chunks) so any split's training mean/std is
    # exact and cheap to get at load time
    images, p = data["images"], o["per_combination"]
    sums, sumsq = np.zeros((p, 3), dtype=np.uint64), np.zeros((p, 3), dtype=np.uint64)
    for a in range(0, len(images), 100):
        x = images[a:a + 100].astype(np.uint32)
        r = a // N_COMBOS  # 100 divides 1000: a chunk lies inside one rep
        sums[r] += x.sum((0, 2, 3), dtype=np.uint64)
        sumsq[r] += (x * x).sum((0, 2, 3), dtype=np.uint64)
    np.savez(folder / "stats.npz", sum=sums, sumsq=sumsq,
             count=N_COMBOS * images.shape[2] * images.shape[3])


def _load(options: dict, root: Path, label: str) -> DatasetSplits:
    o = _check_options(options)
    key = f"size{o['image_size']}-per{o['per_combination']}-seed{o['data_seed']}-v{VERSION}"
    folder = once(Path(root) / "trifeature" / key, lambda tmp: _build(tmp, o),
                  what=f"trifeature {key}")
    x = torch.from_numpy(np.load(folder / "images.npy"))
    feats = {name: np.load(folder / f"{name}.npy") for name in ("shape", "texture", "colour")}
    t = o["test_per_combination"] * N_COMBOS  # rep-major: the first reps are the test split
    stats = np.load(folder / "stats.npz")
    count = float(stats["count"]) * (o["per_combination"] - o["test_per_combination"])
    train_reps = slice(o["test_per_combination"], None)
    mean = stats["sum"][train_reps].sum(0).astype(np.float64) / count / 255
    sq = stats["sumsq"][train_reps].sum(0).astype(np.float64) / count / 255 ** 2
    std = np.sqrt(np.maximum(sq - mean ** 2, 0.0))
    y = torch.from_numpy(feats[label])
    names = {"color": "colour", "texture": "texture", "shape": "shape"}
    attributes = {a: feats[f][:t] for a, f in names.items() if f != label}
    return DatasetSplits(train=TensorData(x[t:], y[t:]), test=TensorData(x[:t], y[:t]),
                         num_classes=10, attributes=attributes,
                         class_names=list(FEATURE_NAMES[label]),
                         attribute_values={a: list(FEATURE_NAMES[f]) for a, f in names.items()
                                           if f != label},
                         mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                         image_size=o["image_size"], in_channels=3)


_SOURCE = ("procedural, after Hermann & Lampinen (NeurIPS 2020) as defined in "
           "docs/trifeature.md; generated locally and cached (no download)")


@register_dataset("trifeature-shape", num_classes=10, batch_size=64, defaults=DEFAULTS,
                  attributes=("color", "texture"), source=_SOURCE, check=_check_options)
def load_trifeature_shape(options: dict, root: Path) -> DatasetSplits:
    return _load(options, root, "shape")


@register_dataset("trifeature-texture", num_classes=10, batch_size=64, defaults=DEFAULTS,
                  attributes=("color", "shape"), source=_SOURCE, check=_check_options)
def load_trifeature_texture(options: dict, root: Path) -> DatasetSplits:
    return _load(options, root, "texture")


@register_tiny("trifeature-shape", "trifeature-texture")
def tiny_trifeature(root: Path) -> dict:
    """Generated, nothing to write: the smallest options (2,000 images of 16 px)."""
    return {"image_size": 16, "per_combination": 2, "test_per_combination": 1}
