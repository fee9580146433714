"""Conv, pooling and residual networks: the integer-exact QAT network equals the golden model."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.model import golden, ir
from spikeloom.model.config import NeuronConfig, QuantConfig
from spikeloom.model.errors import ConfigError
from spikeloom.model.snn import SNN, Folded, IntSNN


def _w(rng, shape, gain=2.0):
    fan_in = int(np.prod(shape[1:]))
    return rng.normal(0.25, 1.0, shape) * gain / np.sqrt(fan_in)


@st.composite
def conv_nets(draw):
    """Random folded conv nets: kernel 1/3, stride 1/2, padding 0/1, pooling, residual, dense hidden."""
    rng = np.random.default_rng(draw(st.integers(0, 10_000)))
    c_in, hw = draw(st.integers(1, 2)), draw(st.integers(5, 8))
    k = draw(st.sampled_from([1, 3]))
    pad = draw(st.integers(0, 1)) if k == 3 else 0
    stride = draw(st.sampled_from([1, 2]))
    c1 = draw(st.integers(2, 5))
    stages = [Folded("conv", _w(rng, (c1, c_in, k, k), 6.0), rng.normal(0.3, 0.3, c1), stride, pad)]
    h = (hw + 2 * pad - k) // stride + 1
    if h >= 4 and draw(st.booleans()):
        stages[0].pool = 2
        h //= 2
    shape = (c1, h)
    if draw(st.booleans()):  # a residual block: conv_a (stride s) -> conv_b + 1x1 shortcut (stride s)
        c2, s2 = draw(st.integers(2, 5)), draw(st.sampled_from([1, 2]))
        ka = draw(st.sampled_from([1, 3]))
        stages.append(Folded("conv", _w(rng, (c2, shape[0], ka, ka)), rng.normal(0.3, 0.3, c2), s2, ka // 2))
        stages.append(Folded("conv", _w(rng, (c2, c2, 3, 3)), rng.normal(0.3, 0.3, c2), 1, 1, shortcut=0,
                             shortcut_weight=_w(rng, (c2, shape[0], 1, 1)), shortcut_stride=s2))
        h = (h - 1) // s2 + 1
        if h >= 2 and draw(st.booleans()):
            stages[-1].pool = 2
            h //= 2
        shape = (c2, h)
    feat = shape[0] * shape[1] ** 2
    if draw(st.booleans()):
        n = draw(st.integers(3, 12))
        stages.append(Folded("dense", _w(rng, (n, feat)), rng.normal(0.3, 0.3, n)))
        feat = n
    stages.append(Folded("dense", rng.normal(0, 1, (4, feat)), rng.normal(0, 0.1, 4)))
    return stages, (c_in, hw, hw)


@settings(max_examples=25, deadline=None)
@given(net=conv_nets(), seed=st.integers(0, 1000), leak=st.integers(0, 2), reset=st.sampled_from(["zero", "subtract"]),
       wbits=st.integers(3, 8), ibits=st.integers(2, 8), mbits=st.sampled_from([10, 16]), per_channel=st.booleans())
def test_int_conv_snn_equals_golden(net, seed, leak, reset, wbits, ibits, mbits, per_channel):
    stages, in_shape = net
    imodel = IntSNN(stages, in_shape, NeuronConfig(leak, reset, mbits), QuantConfig(wbits, ibits, per_channel), t_max=3)
    model = imodel.export("t", "none", exit_threshold=seed % 5)
    ir.validate(model)
    x_q = golden.quantize_input(model, np.random.default_rng(seed).random((10, *in_shape)))
    r = golden.run(model, x_q, sparse=())
    assert (imodel.exact_z(x_q) == r.z).all()
    assert [ly.kind for ly in model.layers] == [s.kind for s in stages]


def _spiking_stages():
    rng = np.random.default_rng(3)
    return [Folded("conv", _w(rng, (4, 1, 3, 3), 6.0), rng.normal(0.3, 0.3, 4), 1, 1, pool=2),
              Folded("conv", _w(rng, (4, 4, 3, 3)), rng.normal(0.3, 0.3, 4), 2, 1),
              Folded("conv", _w(rng, (4, 4, 3, 3)), rng.normal(0.3, 0.3, 4), 1, 1, shortcut=0,
                     shortcut_weight=_w(rng, (4, 4, 1, 1)), shortcut_stride=2),
              Folded("dense", rng.normal(0, 1, (4, 16)), np.zeros(4))]


def test_random_conv_nets_do_spike():
    # weights drawn as in the strategy above give spiking conv and residual layers (not only silent ones)
    imodel = IntSNN(_spiking_stages(), (1, 8, 8), t_max=3)
    model = imodel.export("t", "none", 3)
    x_q = golden.quantize_input(model, np.random.default_rng(0).random((8, 1, 8, 8)))
    r = golden.run(model, x_q, sparse=())
    assert (imodel.exact_z(x_q) == r.z).all()
    for ly in model.layers[:-1]:
        assert r.counters()[ly.name]["spikes"].sum() > 0, ly.name
    assert model.layers[2].shortcut == "conv1" and model.layers[2].shortcut_weight.shape == (4, 4, 1, 1)


@pytest.mark.parametrize("arch,kw", [("vgg", {}), ("resnet", {}), ("resnet", {"units": 2, "unit_at": 2}),
                                     ("vgg", {"learn_threshold": True})])
def test_float_conv_snn_folds_and_runs_exactly(arch, kw):
    torch.manual_seed(0)
    net = SNN((1, 8, 8), 5, arch, NeuronConfig(1, "subtract", 16), t_max=2, **kw)
    x = torch.rand(16, 1, 8, 8)
    net.train()
    net(x)  # BatchNorm statistics that are not the identity
    if kw.get("learn_threshold"):
        with torch.no_grad():
            for p in net.thetas.values():
                p.uniform_(0.5, 1.5)
    net.eval()
    imodel = IntSNN(net.folded_stages(), (1, 8, 8), net.neuron, QuantConfig(8, 8), t_max=2)
    model = imodel.export(arch, "none", 3)
    x_q = golden.quantize_input(model, x.numpy())
    assert (imodel.exact_z(x_q) == golden.run(model, x_q, sparse=()).z).all()
    n_res = sum(k == "res" for k in net.kinds)
    assert sum(ly.shortcut is not None for ly in model.layers) == n_res
    assert len(model.layers) == sum(k != "pool" for k in net.kinds) + n_res + 1


def test_folding_matches_float_network():
    # at 16-bit weights, the folded (and threshold-divided) integer net reproduces the float net's decisions
    torch.manual_seed(1)
    net = SNN((1, 8, 8), 4, "resnet", NeuronConfig(1, "subtract", 24), t_max=3, learn_threshold=True)
    x = torch.rand(64, 1, 8, 8)
    net.train()
    net(x)
    with torch.no_grad():
        for p in net.thetas.values():
            p.uniform_(0.4, 0.8)
    net.eval()
    imodel = IntSNN(net.folded_stages(), (1, 8, 8), net.neuron, QuantConfig(16, 12), t_max=3)
    model = imodel.export("r", "none", 0)
    with torch.no_grad():
        zf = net(x).numpy()
    zi = golden.run(model, golden.quantize_input(model, x.numpy()), sparse=()).z * model.layers[-1].scale[0]
    agree = (zf[-1].argmax(1) == zi[-1].argmax(1)).mean()
    assert agree >= 0.9, agree


def test_int_conv_snn_gradients_flow():
    imodel = IntSNN(_spiking_stages(), (1, 8, 8), t_max=3)
    imodel(torch.randint(0, 256, (8, 64)).float()).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in imodel.parameters())
    assert len(imodel.Wsc) == 1
    assert all(p.grad.abs().sum() > 0 for p in list(imodel.W) + list(imodel.Wsc.values()))


def test_stage_errors():
    with pytest.raises(ConfigError, match="cannot be the first stage"):
        SNN((1, 8, 8), 3, (("res", 4),))
    with pytest.raises(ConfigError, match="pool stage must follow"):
        SNN((1, 8, 8), 3, (("conv", 4), ("pool", 2), ("pool", 2)))
    with pytest.raises(ConfigError, match="unknown stage kind"):
        SNN((1, 8, 8), 3, (("lstm", 4),))
    with pytest.raises(ConfigError, match="Units need"):
        SNN((1, 8, 8), 3, "mlp", units=1, unit_at=1)
    with pytest.raises(ConfigError, match="unit_at"):
        SNN((1, 8, 8), 3, "vgg", units=1, unit_at=9)
    with pytest.raises(ConfigError, match="cannot follow"):
        IntSNN([Folded("dense", np.ones((3, 64)), np.zeros(3)), Folded("conv", np.ones((2, 3, 3, 3)), np.zeros(2)),
                Folded("dense", np.ones((2, 2)), np.zeros(2))], (1, 8, 8))


@pytest.mark.parametrize("pool", ["sum", "avg"])
@pytest.mark.parametrize("arch", ["vgg", (("conv", 4), ("pool", 2), ("res", 6), ("pool", 2))])
def test_sum_and_average_pooling_fold_exactly(pool, arch):
    # sum and average pooling train in float and become sum pooling in the integer network; for the
    # average the 1/q^2 lands in the weights that read the pooled map (next conv, shortcut, head)
    torch.manual_seed(2)
    net = SNN((1, 8, 8), 4, arch, NeuronConfig(1, "subtract", 24), t_max=3, pool=pool, learn_threshold=True)
    x = torch.rand(64, 1, 8, 8)
    net.train()
    net(x)
    net.eval()
    with torch.no_grad():  # every layer spikes (a quarter to three quarters of its neurons per step)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(0.3)
        for p in net.thetas.values():
            p.uniform_(0.3, 0.6)
    imodel = IntSNN(net.folded_stages(), (1, 8, 8), net.neuron, QuantConfig(16, 12), t_max=3)
    model = imodel.export("p", "none", 0)
    assert [ly.pool_op for ly in model.layers if ly.pool > 1] == ["sum", "sum"]
    x_q = golden.quantize_input(model, x.numpy())
    res = golden.run(model, x_q, sparse=(), trace=True)
    assert (imodel.exact_z(x_q) == res.z).all()
    assert all(0.1 < s.mean() < 0.9 for s in res.spikes.values())
    with torch.no_grad():
        zf = net(x).numpy()
    zi = res.z * model.layers[-1].scale[0]
    # without the 1/q^2 (of the next conv or of the shortcut) agreement falls below 0.6, errors grow 4x
    assert (zf[-1].argmax(1) == zi[-1].argmax(1)).mean() >= 0.85
    assert np.abs(zi[-1] - zf[-1]).max() < 0.25 * np.abs(zf[-1]).max()


def test_pool_option_errors():
    with pytest.raises(ConfigError, match="pool = 'min'"):
        SNN((1, 8, 8), 3, "vgg", pool="min")
    with pytest.raises(ConfigError, match="needs an arch with pool stages"):
        SNN((1, 8, 8), 3, "mlp", pool="avg")
