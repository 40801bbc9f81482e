"""The Trifeature generator: templates, the literal rendering steps, determinism, the
attributes agreeing with the pixels, the registered splits and their cache."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from kdray.data import load_dataset
from kdray.data import trifeature as T

R = 224
GREY = np.array([127, 127, 127], dtype=np.uint8)
SMALL = {"image_size": 16, "per_combination": 2, "test_per_combination": 1}


def literal_render(shape, texture, colour, rng):
    """docs/trifeature.md's three steps on full canvases, with scipy rotations (slow reference)."""
    tmpl = T.shape_template(shape).astype(np.float64)
    rot = np.clip(ndi.rotate(tmpl, int(rng.integers(-45, 45)), order=1, reshape=True), 0, 1)
    h, w = rot.shape
    r0, c0 = int(rng.integers(0, R - h + 1)), int(rng.integers(0, R - w + 1))
    shp = np.zeros((R, R))
    shp[r0:r0 + h, c0:c0 + w] = rot
    tex = T.texture_pattern(texture, 2 * R, rng).astype(np.uint8)
    tex = ndi.rotate(tex, int(rng.integers(-45, 45)), order=0, reshape=False)
    mask = (shp * tex[R // 2:R // 2 + R, R // 2:R // 2 + R])[..., None]
    rgb = T.COLOUR_RGB[T.COLOURS.index(colour)]
    return ((mask * rgb + (1 - mask) * 0.5) * 255).astype(np.uint8)


def colour_pixels(img, colour):
    return (img == (T.COLOUR_RGB[T.COLOURS.index(colour)] * 255).astype(np.uint8)).all(-1)


@pytest.fixture(scope="module")
def gen16():
    return T.generate(image_size=16, per_combination=1, seed=0)


# ---- templates and textures -----------------------------------------------------------

def test_templates_nonempty_and_distinct():
    templates = [T.shape_template(name) for name in T.SHAPES]
    for name, t in zip(T.SHAPES, templates):
        assert t.shape == (128, 128) and t.dtype == bool
        assert 0.1 * t.size < t.sum() <= t.size, name
    assert len({t.tobytes() for t in templates}) == len(T.SHAPES)
    assert T.shape_template("square").all()
    assert abs(T.shape_template("circle").sum() - np.pi * 64 ** 2) < 0.01 * 64 ** 2 * np.pi
    tri = T.shape_template("triangle")
    assert tri[0].sum() < 5 and tri[-1].sum() > 120  # apex at the top
    with pytest.raises(ValueError, match="shape"):
        T.shape_template("hexagon")


def test_textures_binary_distinct_and_dense_as_defined():
    pats = {n: T.texture_pattern(n, 2 * R, np.random.default_rng(0)) for n in T.TEXTURES}
    for name, p in pats.items():
        assert p.shape == (2 * R, 2 * R) and p.dtype == bool and p.any(), name
    assert pats["solid"].all()
    assert len({p.tobytes() for p in pats.values()}) == len(T.TEXTURES)
    assert abs(pats["stripes"].mean() - 0.3) < 0.01      # y mod 10 < 3
    assert abs(pats["grid"].mean() - 0.51) < 0.01
    assert abs(pats["noise"].mean() - 0.5) < 0.01
    assert abs(pats["rain"].mean() - (1 - 0.95 ** 7)) < 0.02
    with pytest.raises(ValueError, match="texture"):
        T.texture_pattern("plaid", 20, np.random.default_rng(0))


def test_texture_rotation_is_scipy_nearest_rotation_for_every_angle():
    canvas = np.random.default_rng(1).random((2 * R, 2 * R)) < 0.5
    idx = np.arange(R) + R // 2
    for angle in range(-45, 45):
        y, x = T._rotation_source(angle, idx, idx, 2 * R)
        ref = ndi.rotate(canvas.astype(np.uint8), angle, order=0, reshape=False)[idx][:, idx]
        assert np.array_equal(canvas[y, x], ref.astype(bool)), angle


# ---- one image ------------------------------------------------------------------------

@pytest.mark.parametrize("texture", T.TEXTURES)
def test_render_is_the_literal_definition(texture):
    for k, (shape, colour) in enumerate([("star", "pink"), ("fivesquare", "ocean")]):
        seed = [7, T.TEXTURES.index(texture), k]
        got = T.render(shape, texture, colour, np.random.default_rng(seed))
        want = literal_render(shape, texture, colour, np.random.default_rng(seed))
        assert got.shape == (R, R, 3) and got.dtype == np.uint8
        assert np.array_equal(got, want)


@pytest.mark.parametrize("colour", T.COLOURS)
def test_shape_pixels_have_the_drawn_colour(colour):
    img = T.render("circle", "solid", colour, np.random.default_rng(3)).astype(np.float64)
    assert 0.2 * 128 ** 2 < colour_pixels(img.astype(np.uint8), colour).sum()
    # every pixel is grey + m (colour - grey) for one m in [0, 1] (edges blend; truncation <= 1)
    v = (T.COLOUR_RGB[T.COLOURS.index(colour)] - 0.5) * 255
    d = (img + 0.5 - 127.5).reshape(-1, 3)
    m = d @ v / (v @ v)
    assert (m > -0.01).all() and (m < 1.01).all()
    assert np.abs(d - m[:, None] * v).max() <= 1.0


@pytest.mark.parametrize("shape", T.SHAPES)
def test_solid_shape_is_the_rotated_template(shape):
    img = T.render(shape, "solid", "red", np.random.default_rng(5))
    on = colour_pixels(img, "red")
    assert (img[~on] != GREY).any(-1).sum() < on.sum()  # only anti-aliased edges besides
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    crop = on[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    tmpl = T.shape_template(shape).astype(np.float64)
    matches = []
    for angle in range(-45, 45):
        full = ndi.rotate(tmpl, angle, order=1, reshape=True) > 1 - 1e-9  # m = 1: exactly red
        r, c = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
        matches.append(np.array_equal(full[r[0]:r[-1] + 1, c[0]:c[-1] + 1], crop))
    assert any(matches)


@pytest.mark.parametrize("texture", T.TEXTURES[1:])
def test_texture_cuts_the_solid_shape(texture):
    # the shape is drawn first, so the same seed gives the same shape and placement
    solid = colour_pixels(T.render("square", "solid", "green", np.random.default_rng(9)), "green")
    on = colour_pixels(T.render("square", texture, "green", np.random.default_rng(9)), "green")
    assert not (on & ~solid).any()
    density = T.texture_pattern(texture, 2 * R, np.random.default_rng(0)).mean()
    assert abs(on.sum() / solid.sum() - density) < 0.1


def test_small_render_is_the_downsampled_stimulus():
    big = T.render(2, 3, 4, np.random.default_rng(11)).astype(np.float64)
    small = T.render(2, 3, 4, np.random.default_rng(11), size=32)
    want = big.reshape(32, 7, 32, 7, 3).mean((1, 3))
    assert small.shape == (32, 32, 3) and np.abs(small - want).max() <= 0.5 + 1e-6


# ---- the dataset ----------------------------------------------------------------------

def test_every_combination_once_per_rep(gen16):
    assert gen16["images"].shape == (1000, 3, 16, 16) and gen16["images"].dtype == np.uint8
    combos = (gen16["shape"] * 10 + gen16["texture"]) * 10 + gen16["colour"]
    assert np.array_equal(np.sort(combos), np.arange(1000))
    feats = T._features(3)
    combos = (feats["shape"] * 10 + feats["texture"]) * 10 + feats["colour"]
    assert np.array_equal(np.bincount(combos), np.full(1000, 3))


def test_deterministic_for_a_seed_and_different_for_another(gen16):
    again = T.generate(image_size=16, per_combination=1, seed=0)
    assert all(again[k].tobytes() == gen16[k].tobytes() for k in gen16)
    other = T.generate(image_size=16, per_combination=1, seed=1)
    assert other["images"].tobytes() != gen16["images"].tobytes()
    assert np.array_equal(other["shape"], gen16["shape"])


def test_generated_images_are_their_labels(gen16):
    for n in np.random.default_rng(0).choice(1000, 25, replace=False):
        s, t, c = (int(gen16[k][n]) for k in ("shape", "texture", "colour"))
        img = T.render(s, t, c, T.image_rng(0, n % 1000, n // 1000), size=16)
        assert np.array_equal(gen16["images"][n], img.transpose(2, 0, 1))
    # and the colour label is what the pixels show: the total shift from grey points to it
    d = gen16["images"].astype(np.float64).sum((2, 3)) - 127.5 * 16 * 16  # [N, 3]
    dirs = T.COLOUR_RGB - 0.5
    cos = (d @ dirs.T) / np.linalg.norm(d, axis=1, keepdims=True) / np.linalg.norm(dirs, axis=1)
    assert np.array_equal(cos.argmax(1), gen16["colour"])


def test_registered_splits_and_cache(tmp_path, monkeypatch):
    d = load_dataset("trifeature-shape", SMALL, root=tmp_path)
    assert d.num_classes == 10 and d.image_size == 16 and d.in_channels == 3 and d.in_memory
    for split, n in ((d.train, 1000), (d.test, 1000)):
        assert tuple(split.x.shape) == (n, 3, 16, 16) and str(split.x.dtype) == "torch.uint8"
        assert str(split.y.dtype) == "torch.int64"
        assert np.array_equal(np.bincount(split.y.numpy(), minlength=10), np.full(10, n // 10))
    assert set(d.attributes) == {"color", "texture"}
    combos = (d.test.y.numpy() * 10 + d.attributes["texture"]) * 10 + d.attributes["color"]
    assert np.array_equal(np.sort(combos), np.arange(1000))  # every combination in test
    x = d.train.x.double() / 255
    assert np.allclose(d.mean, x.mean((0, 2, 3)).numpy())
    assert np.allclose(d.std, x.std((0, 2, 3)).numpy(), atol=1e-4)
    assert list((tmp_path / "trifeature").glob("size16-per2-seed0-v*/images.npy"))

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been reused")
    monkeypatch.setattr(T, "generate", fail)
    e = load_dataset("trifeature-texture", SMALL, root=tmp_path)
    assert set(e.attributes) == {"color", "shape"}
    assert np.array_equal(e.test.x.numpy(), d.test.x.numpy())
    assert np.array_equal(e.test.y.numpy(), d.attributes["texture"])
    assert np.array_equal(e.attributes["shape"], d.test.y.numpy())
    assert e.train.y.min() == 0 and e.train.y.max() == 9


@pytest.mark.parametrize("option,value", [
    ("image_size", 4), ("image_size", 300), ("image_size", 32.0), ("image_size", True),
    ("per_combination", 1), ("test_per_combination", 0), ("test_per_combination", 2),
    ("data_seed", -1), ("data_seed", "0"),
])
def test_bad_options_name_the_option(tmp_path, option, value):
    with pytest.raises(ValueError, match=option):
        load_dataset("trifeature-shape", {**SMALL, option: value}, root=tmp_path)
    assert not (tmp_path / "trifeature").exists()
