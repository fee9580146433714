"""model/geometry.py: the PE ownership rule and the kernels' landing taps, and that planning,
balanced pruning and the golden model all follow them."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.hw.plan import Plan
from spikeloom.model import geometry, golden, pruning as prune
from spikeloom.model.config import NeuronConfig
from spikeloom.model.geometry import Kernel, channel, chunks, owner, pe_channels, pe_slice
from spikeloom.model.ir import Layer, QuantModel
from spikeloom.model.randnet import random_conv_model


@given(o=st.integers(0, 500), n=st.integers(1, 64))
def test_owner_and_channel_are_inverse(o, n):
    pe, c = owner(o, n)
    assert 0 <= pe < n and channel(pe, c, n) == o
    assert o in pe_channels(pe, o + 1, n)
    assert c < chunks(o + 1, n)
    assert list(range(o + 1))[pe_slice(pe, n)] == list(pe_channels(pe, o + 1, n))


@given(k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), h=st.integers(1, 9), w=st.integers(1, 9))
def test_kernel_landing_is_the_convolution(k, s, p, h, w):
    """Tap t of an event at (y, x) lands on (oy, ox) exactly when the output (oy, ox) reads input
    (y, x) through tap t in a brute-force padded cross-correlation; cover and windows agree."""
    kn = Kernel(k, s, p)
    ho, wo = kn.out_hw((h, w))
    if ho < 1 or wo < 1:
        return
    want = {(y, x): set() for y in range(h) for x in range(w)}
    for oy in range(ho):
        for ox in range(wo):
            for ky in range(k):
                for kx in range(k):
                    y, x = oy * s + ky - p, ox * s + kx - p
                    if 0 <= y < h and 0 <= x < w:
                        want[(y, x)].add((ky * k + kx, oy, ox))
    cover = kn.cover((h, w), (ho, wo))
    for (y, x), taps in want.items():
        assert set(kn.landing(y, x, (ho, wo))) == taps
        assert cover[y, x] == bool(taps)
    img = np.arange(h * w).reshape(1, 1, h, w) + 1
    for ky, kx, win in kn.windows(img, (ho, wo)):
        for oy in range(ho):
            for ox in range(wo):
                v = int(win[0, 0, oy, ox])
                if v:
                    y, x = divmod(v - 1, w)
                    assert (ky * k + kx, oy, ox) in want[(y, x)]


def one_layer_model(weight):
    """A two-layer model whose output layer has ``weight`` (what the plan places and prune balances)."""
    c_in = weight.shape[1]
    first = Layer("a", "analog", np.eye(c_in, dtype=np.int64), np.zeros(c_in, np.int64), np.ones(c_in, np.int64), 8)
    out = Layer("b", "output", weight.astype(np.int64), np.zeros(len(weight), np.int64), None, 8)
    return QuantModel("g", "synthetic", (c_in,), 4, 2, NeuronConfig(1, "subtract", 16), "margin", 4, [first, out])


# out: fewer outputs than PEs, not a multiple of N, a multiple; n: 1, 3, 8 PEs
@pytest.mark.parametrize("out", [5, 13, 24])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_balanced_pruning_balances_the_plans_placement(out, n):
    """The (row, PE) groups that balanced pruning equalises are the per-PE word lists the plan
    stores: after pruning, every PE owning a channel holds the same number of nonzero weights of a
    row in the compressed storage, which is ``prune.pe_load``'s count."""
    g = torch.Generator().manual_seed(out * 10 + n)
    w = torch.randn(out, 7, generator=g)
    lin = torch.nn.Linear(7, out, bias=False)
    lin.weight.data = w
    prune.magnitude_prune(lin, 0.6, balance=n, fill=True)
    wq = torch.clamp(torch.round(lin.weight.data * 20), -127, 127).to(torch.int64)
    wq[(lin.weight.data != 0) & (wq == 0)] = 1
    model = one_layer_model(wq.numpy())
    plan = Plan(model, n, {"b": "sparse"})
    lp = plan.layers[1]
    s = lp.sources[0]
    loads, imbalance = prune.pe_load(wq.numpy(), n)
    for r in range(s.rows):
        per_pe = [sum(1 for e in plan.pe_entries(p, lp, s, r) if e[0] != 0) for p in range(n)]
        assert per_pe[:len(loads[r])] == loads[r].tolist() and not any(per_pe[len(loads[r]):])
        assert plan.row_len[s.row_base + r] == max(per_pe)
        # the stored chunk index is the owner's chunk of the channel PE p holds there
        for p in range(n):
            got = [(t, c) for wv, t, c in plan.pe_entries(p, lp, s, r) if wv != 0]
            assert got == [(0, owner(o, n)[1]) for o in pe_channels(p, out, n) if wq[o, r] != 0]
    assert loads.any() and (loads == loads[:, :1]).all() and imbalance == 1.0


def test_conv_rows_follow_the_same_owner():
    """Conv weights: the dense words of PE p are the channels ``channel(p, c, n)``; the conv
    landing taps the plan's hardware tables encode are the kernel's (`Kernel.landing`)."""
    model = random_conv_model(seed=3, density=0.5)
    n = 3
    plan = Plan(model, n, "dense")
    for lp, ly in zip(plan.layers, model.layers):
        for s in lp.sources:
            for r in range(min(s.rows, 4)):
                wr = s.row_weights(r)
                for p in range(n):
                    words = plan.pe_entries(p, lp, s, r)
                    want = [int(wr[channel(p, c, n), t]) if channel(p, c, n) < lp.channels else 0
                            for t in range(s.taps) for c in range(lp.chunks)]
                    assert [e[0] for e in words] == want
        kn = geometry.kernel(ly)
        if kn is not None:
            s = lp.sources[0]
            assert s.kernel == kn
            assert s.landing(1, 2, lp.ho, lp.wo) == kn.landing(1, 2, (lp.ho, lp.wo))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000))
def test_shortcut_is_the_strided_1x1_kernel(seed):
    """The golden model's residual current is the 1x1 kernel of stride r over the source map (the
    geometry the plan gives the shortcut source): the same as sub-sampling the map by r."""
    model = random_conv_model(seed=seed, in_shape=(1, 8, 8), convs=((3, 3, 1, 1, 1, False), (4, 3, 2, 1, 1, True)))
    ly = model.layers[1]
    sk = geometry.shortcut_kernel(ly)
    assert sk == Kernel(1, ly.shortcut_stride, 0) and sk.out_hw(model.layers[0].out_shape[1:]) == geometry.map_hw(ly)
    rng = np.random.default_rng(seed)
    src = rng.random((2,) + model.layers[0].out_shape) < 0.5
    r = ly.shortcut_stride
    ho, wo = geometry.map_hw(ly)
    want = golden.conv2d(src[:, :, ::r, ::r][:, :, :ho, :wo], ly.shortcut_weight)
    assert (golden.conv2d(src, ly.shortcut_weight, r) == want).all()
