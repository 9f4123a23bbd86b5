"""Image flows: squeeze, masks, multi-scale split, dequantisation, bits/dim, data loaders."""

from __future__ import annotations

import gzip
import math
import struct
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import perturb

import pyroflows as pf
from pyroflows import transforms as T
from pyroflows.datasets import DIGITS_LEVELS, digits, read_idx
from pyroflows.diagnostics import image_grid

# ---- squeeze, masks, slices ---------------------------------------------------------------------


def test_squeeze_moves_each_2x2_block_to_four_channels():
    x = torch.arange(2 * 4 * 4.0).reshape(2, 4, 4)
    z = T.space_to_depth(x)
    assert z.shape == (8, 2, 2)
    # channel c, pixel (2i + a, 2j + b) -> channel 4c + 2a + b at (i, j)
    for c in range(2):
        for a in range(2):
            for b in range(2):
                torch.testing.assert_close(z[4 * c + 2 * a + b], x[c, a::2, b::2])
    t = T.Squeeze((2, 4, 4))
    assert t.inv(x).shape == (8, 2, 2) and torch.equal(t(t.inv(x)), x)
    assert t.forward_shape((5, 8, 2, 2)) == (5, 2, 4, 4)
    assert t.inverse_shape((5, 2, 4, 4)) == (5, 8, 2, 2)


def test_shape_changing_transforms_check_the_shape_of_each_direction():
    t = T.Squeeze((1, 4, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 1, 4, 4\)"):
        t.inv(torch.randn(3, 4, 2, 2))  # data side must be (1, 4, 4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 2, 2\)"):
        t(torch.randn(3, 1, 4, 4))  # base side must be (4, 2, 2)
    with pytest.raises(ValueError, match="divisible"):
        T.Squeeze((1, 5, 4))
    with pytest.raises(ValueError, match="same number of entries"):
        T.Reshape((1, 4, 4), data_shape=(3, 2, 2))


def test_checkerboard_coupling_keeps_the_pixels_it_conditions_on():
    t = T.ImageCoupling((2, 4, 4), hidden_channels=(8,), mask="checkerboard")
    perturb(t)
    x = torch.randn(3, 2, 4, 4)
    y = t(x)
    seen = t.board.bool().expand_as(x)
    assert torch.equal(y[seen], x[seen]) and not torch.allclose(y[~seen], x[~seen])
    # changing an unseen pixel leaves every other output unchanged (triangular structure)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1.0  # board is 0 at (0, 0): a transformed pixel
    assert (t(x2) != y).nonzero().tolist() == [[0, 0, 0, 0]]
    x3 = x.clone()
    x3[0, 0, 0, 1] += 1.0  # board is 1 at (0, 1): a conditioning pixel moves its neighbours
    assert len((t(x3) != y).nonzero()) > 2


def test_channel_coupling_keeps_the_identity_half():
    for swap, kept in ((False, slice(0, 1)), (True, slice(1, 3))):
        t = T.ImageCoupling((3, 4, 4), hidden_channels=(8,), swap=swap)
        perturb(t)
        x = torch.randn(2, 3, 4, 4)
        y = t(x)
        assert torch.equal(y[:, kept], x[:, kept])


def test_channel_coupling_needs_two_channels():
    with pytest.raises(ValueError, match="checkerboard"):
        T.ImageCoupling((1, 4, 4), mask="channel")
    with pytest.raises(ValueError, match="mask"):
        T.ImageCoupling((2, 4, 4), mask="stripes")


def test_channel_slice_passes_the_head_and_names_an_inner_layer_on_nan():
    inner = T.ImageCoupling((2, 2, 2), hidden_channels=(8,))
    perturb(inner)
    t = T.ChannelSlice((5, 2, 2), start=3, transforms=[inner])
    x = torch.randn(4, 5, 2, 2)
    y = t.inv(x)
    assert torch.equal(y[:, :3], x[:, :3]) and not torch.allclose(y[:, 3:], x[:, 3:])
    with torch.no_grad():
        inner.conditioner.net[0].weight.fill_(float("nan"))
    with pytest.raises(pf.NonFiniteError, match="ImageCoupling"):
        t.inv(torch.randn(4, 5, 2, 2))


# ---- the multi-scale flows ----------------------------------------------------------------------


def test_later_levels_do_not_touch_the_factored_out_half():
    flow = pf.Glow(shape=(1, 8, 8), levels=2, steps_per_level=1, hidden_channels=8, logit=None)
    perturb(flow)
    *inner, reshape = flow.transforms[::-1]  # data -> base, the final Reshape last
    assert isinstance(reshape, T.Reshape) and reshape.output_shape == (16, 2, 2)
    slices = [t for t in inner if isinstance(t, T.ChannelSlice)]
    assert [s.start for s in slices] == [
        8
    ]  # level 1 factored out 2 of 4 channels = 8 after squeeze

    def latent(x):
        for t in inner:
            x = t.inverse_and_log_det(x)[0]
        return x

    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        z = latent(x)
        perturb(slices[0])  # change only the second level
        z2 = latent(x)
    assert torch.equal(z2[:, :8], z[:, :8]) and not torch.allclose(z2[:, 8:], z[:, 8:])


def test_glow_structure_and_base_shape():
    flow = pf.Glow(shape=(3, 8, 8), levels=3, steps_per_level=2, hidden_channels=8)
    names = [type(t).__name__ for t in flow.transforms]
    assert names[0] == "Reshape" and names[-1] == "Logit"
    assert names.count("Squeeze") == 3 and names.count("ChannelSlice") == 2
    assert flow.base_dist().event_shape == (3, 8, 8)
    assert sum(isinstance(t, T.LULinear) for t in flow.transforms) == 2  # level 1, unwrapped
    with pytest.raises(ValueError, match="divisible by 16"):
        pf.Glow(shape=(1, 8, 8), levels=4)
    with pytest.raises(ValueError, match="either input_dim"):
        pf.Glow(4, shape=(1, 8, 8))
    with pytest.raises(ValueError, match="either input_dim"):
        pf.RealNVP()


@pytest.mark.parametrize("preset", [pf.Glow, pf.RealNVP])
def test_logit_flows_on_unit_interval_data(preset):
    """The registry checks image flows without the logit; here the default (logit) forms."""
    flow = preset(shape=(1, 4, 4), levels=2, steps_per_level=1, hidden_channels=8)
    assert isinstance(flow.transforms[-1], T.Logit)
    perturb(flow, 0.1)
    y = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    base = flow.double()
    x = y
    for t in reversed(base.transforms):
        x = t.inverse_and_log_det(x)[0]
    report = pf.check_flow(base, x.detach(), tolerance=1e-6)
    assert report.passed, str(report)
    s = flow.float().sample((64,))
    a = flow.transforms[-1].alpha
    assert s.min() > -a / (1 - 2 * a) and s.max() < (1 - a) / (1 - 2 * a)
    assert torch.isfinite(flow.log_prob(y.float())).all()
    with pytest.raises(ValueError, match="dequantize"):
        flow.log_prob(torch.randint(0, 17, (2, 1, 4, 4)).float())  # raw levels, not in [0, 1]


def test_image_flow_save_load_keeps_the_image_options(tmp_path):
    flow = pf.Glow(
        shape=(1, 8, 8), levels=2, steps_per_level=1, hidden_channels=(8,), coupling="additive"
    )
    perturb(flow, 0.1)
    pf.save(flow, tmp_path / "glow.pt")
    again = pf.load(tmp_path / "glow.pt")
    assert again.config["shape"] == (1, 8, 8) and again.config["coupling"] == "additive"
    y = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(again.log_prob(y), flow.log_prob(y))


def test_actnorm_initialises_from_a_single_image():
    flow = pf.Glow(
        shape=(1, 8, 8), levels=3, steps_per_level=1, hidden_channels=8
    )  # last level is 1x1
    lp = flow.log_prob(torch.rand(1, 1, 8, 8))
    assert torch.isfinite(lp).all()
    norms = [m for m in flow.modules() if isinstance(m, T.ActNorm)]
    assert len(norms) == 3 and all(bool(m.initialized) for m in norms)
    assert torch.isfinite(flow.log_prob(torch.rand(16, 1, 8, 8))).all()


def test_temperature_zero_gives_the_same_image_and_lower_spread():
    flow = pf.Glow(shape=(1, 4, 4), levels=2, steps_per_level=1, hidden_channels=8)
    perturb(flow, 0.1)
    cold = flow.sample((2,), temperature=0.0)
    torch.testing.assert_close(cold[0], cold[1])
    warm, hot = flow.sample((500,), temperature=0.5), flow.sample((500,))
    assert warm.std(0).mean() < hot.std(0).mean()


def test_fit_trains_glow_on_integer_images():
    x = digits("train")[:256]
    flow = pf.Glow(shape=(1, 8, 8), levels=2, steps_per_level=1, hidden_channels=16)
    loss = pf.bits_per_dim_loss(levels=DIGITS_LEVELS)
    before = pf.bits_per_dim(flow, x, levels=17, generator=torch.Generator().manual_seed(0))
    history = pf.fit(
        flow, x, steps=60, batch_size=64, lr=3e-3, objective=loss, progress=False, seed=0
    )
    after = pf.bits_per_dim(flow, x, levels=17, generator=torch.Generator().manual_seed(0))
    assert history.steps == 60 and after < before - 0.5


# ---- dequantisation and bits/dim ----------------------------------------------------------------


def test_dequantize_range_and_errors():
    x = torch.randint(0, 17, (200, 1, 8, 8))
    y = T.dequantize(x, levels=17)
    assert ((y * 17).floor() == x).all()
    assert T.dequantize(torch.tensor([255]), n_bits=8) < 1
    with pytest.raises(ValueError, match="levels=17"):
        T.dequantize(x, n_bits=4)  # 16 > 15
    with pytest.raises(ValueError, match="integer levels"):
        T.dequantize(x / 16.0, levels=17)
    with pytest.raises(ValueError, match="only one"):
        T.dequantize(x, n_bits=4, levels=17)


def _analytic_bpd(k: int, alpha: float | None) -> float:
    """Expected bits/dim of a standard normal model (after an optional logit) under
    y ~ U(0, 1), by midpoint quadrature (independent of the library code)."""
    y = (torch.arange(1_000_000, dtype=torch.float64) + 0.5) / 1_000_000
    if alpha is None:
        nll = 0.5 * math.log(2 * math.pi) + 0.5 * y**2
    else:
        p = alpha + (1 - 2 * alpha) * y
        s = torch.log(p / (1 - p))
        nll = 0.5 * math.log(2 * math.pi) + 0.5 * s**2 - torch.log((1 - 2 * alpha) / (p * (1 - p)))
    return (float(nll.mean()) + math.log(k)) / math.log(2)


@pytest.mark.parametrize(("alpha", "levels"), [(None, 17), (None, 256), (0.05, 17)])
def test_bits_per_dim_of_an_untrained_flow_matches_the_analytic_value(alpha, levels):
    images = torch.randint(0, levels, (3000, 1, 4, 4))
    # untrained Glow in eval mode: ActNorm stays the identity, couplings and priors are zero,
    # the 1x1 convolutions are rotations: the density is a standard normal (after the logit)
    flow = pf.Glow(
        shape=(1, 4, 4), levels=2, steps_per_level=2, hidden_channels=8, logit=alpha
    ).eval()
    g = torch.Generator().manual_seed(0)
    bpd = pf.bits_per_dim(flow, images, levels=levels, samples=4, generator=g)
    # standard error <= 0.002 bits; the log K and logit terms are >= 0.15 bits
    assert bpd == pytest.approx(_analytic_bpd(levels, alpha), abs=0.01)
    if alpha is None:  # the identity flow with the same noise gives the same figure
        same = pf.bits_per_dim(
            pf.Flow([], event_shape=(1, 4, 4)),
            images,
            levels=levels,
            samples=4,
            generator=torch.Generator().manual_seed(0),
        )
        assert bpd == pytest.approx(same, abs=1e-4)


def test_bits_per_dim_options_and_errors():
    flow = pf.Flow([], event_shape=(1, 4, 4))
    images = torch.randint(0, 8, (10, 1, 4, 4))
    g = torch.Generator
    a = pf.bits_per_dim(flow, images, n_bits=3, generator=g().manual_seed(1))
    b = pf.bits_per_dim(flow, images, levels=8, generator=g().manual_seed(1))
    per = pf.bits_per_dim(flow, images, levels=8, generator=g().manual_seed(1), reduction="none")
    assert a == b and per.shape == (10,) and float(per.mean()) == pytest.approx(a)
    two = pf.bits_per_dim(flow, images, levels=8, samples=2, batch_size=3)
    assert two == pytest.approx(a, abs=0.2)
    with pytest.raises(ValueError, match=r"\(N, 1, 4, 4\)"):
        pf.bits_per_dim(flow, images[:, 0], levels=8)
    with pytest.raises(ValueError, match="integer levels"):
        pf.bits_per_dim(flow, images, n_bits=2)


# ---- data ---------------------------------------------------------------------------------------


def test_digits_split_is_fixed_disjoint_and_complete():
    train, test, every = digits("train"), digits("test"), digits("all")
    assert every.shape == (1797, 1, 8, 8) and every.dtype == torch.int64
    assert len(train) == 1438 and len(test) == 359
    assert int(every.min()) == 0 and int(every.max()) == DIGITS_LEVELS - 1

    def rows(t):
        return Counter(tuple(r) for r in t.reshape(len(t), -1).tolist())

    assert rows(train) + rows(test) == rows(every)
    assert torch.equal(digits("test"), test)
    assert not torch.equal(digits("test", seed=1), test)
    assert len(digits("test", test_fraction=0.5)) == 898
    with pytest.raises(ValueError, match="split"):
        digits("valid")
    with pytest.raises(ValueError, match="test_fraction"):
        digits("test", test_fraction=1.0)


def _idx(array: np.ndarray, type_byte: int) -> bytes:
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_read_idx_plain_gzip_and_types(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    (tmp_path / "img-idx3-ubyte").write_bytes(_idx(images, 0x08))
    (tmp_path / "img.gz").write_bytes(gzip.compress(_idx(images, 0x08)))
    for name in ("img-idx3-ubyte", "img.gz"):
        x = read_idx(tmp_path / name)
        assert x.dtype == torch.uint8 and np.array_equal(x.numpy(), images)
    values = np.array([[-1.5, 2.25], [3.0, 1e6]], dtype=np.float32)
    (tmp_path / "f").write_bytes(_idx(values, 0x0D))
    assert np.array_equal(read_idx(tmp_path / "f").numpy(), values)
    labels = np.array([7, -3, 70000], dtype=np.int32)
    (tmp_path / "i").write_bytes(_idx(labels, 0x0C))
    assert read_idx(tmp_path / "i").tolist() == [7, -3, 70000]


def test_read_idx_errors(tmp_path):
    good = _idx(np.zeros((2, 3), dtype=np.uint8), 0x08)
    cases = {
        "magic": (b"\x01" + good[1:], "two zero bytes"),
        "type": (good[:2] + b"\x07" + good[3:], "unknown IDX data type 0x07"),
        "short": (good[:-1], "truncated"),
        "long": (good + b"\x00", "holds 7 bytes"),
        "header": (good[:6], "truncated IDX header"),
        "gzip": (gzip.compress(good)[:-8] + b"\x00", "gzip"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            read_idx(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


def test_save_image_grid_writes_the_pixels(tmp_path):
    import matplotlib.image

    images = torch.zeros(3, 1, 2, 2)
    images[1] = 1.0
    path = pf.save_image_grid(images, tmp_path / "g.png", nrow=2, padding=1, pad_value=0.5)
    png = matplotlib.image.imread(path)
    assert png.shape[:2] == (7, 7)  # 2 rows x 2 columns of 2x2 images with 1-pixel padding
    assert png[1, 1, 0] == 0.0 and png[1, 4, 0] == 1.0 and abs(png[0, 0, 0] - 0.5) < 0.01
    assert image_grid(torch.rand(2, 3, 4, 4), scale=2).shape == (3, 12, 22)
    with pytest.raises(ValueError, match=r"\.png"):
        pf.save_image_grid(images, tmp_path / "g.jpg")
    with pytest.raises(ValueError, match="C = 1 or 3"):
        pf.save_image_grid(torch.rand(2, 2, 4, 4), tmp_path / "h.png")


@pytest.mark.slow
def test_glow_on_digits_reaches_a_good_test_bits_per_dim():
    """Dense MAF/RealNVP elsewhere reach 2.24-2.33 bits/dim on this split."""
    train, test = digits("train"), digits("test")
    flow = pf.Glow(shape=(1, 8, 8), levels=2, steps_per_level=4, hidden_channels=64)
    pf.fit(
        flow,
        train,
        steps=600,
        batch_size=64,
        lr=1e-3,
        lr_schedule="cosine",
        objective=pf.bits_per_dim_loss(levels=DIGITS_LEVELS),
        progress=False,
        seed=0,
    )
    flow.eval()
    g = torch.Generator().manual_seed(0)
    bpd = pf.bits_per_dim(flow, test, levels=DIGITS_LEVELS, samples=4, generator=g)
    assert bpd < 2.5
