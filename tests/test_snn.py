"""The integer-exact QAT network equals the golden model; the float SNN trains."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.model import golden
from spikeloom.model.config import NeuronConfig, QuantConfig
from spikeloom.model.errors import ConfigError
from spikeloom.model.snn import SNN, IntSNN


def _folded(sizes, seed):
    g = np.random.default_rng(seed)
    return [(g.normal(0, 1.5 / np.sqrt(i), (o, i)), g.normal(0.2, 0.3, o)) for i, o in zip(sizes[:-1], sizes[1:])]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), hidden=st.integers(2, 24), leak=st.integers(0, 3),
       reset=st.sampled_from(["zero", "subtract"]), wbits=st.integers(3, 8), ibits=st.integers(2, 8),
       mbits=st.sampled_from([10, 16]), per_channel=st.booleans())
def test_intsnn_equals_golden(seed, hidden, leak, reset, wbits, ibits, mbits, per_channel):
    neuron = NeuronConfig(leak, reset, mbits)
    quant = QuantConfig(wbits, ibits, per_channel)
    net = IntSNN(_folded((16, hidden, hidden, 5), seed), (16,), neuron, quant, t_max=4)
    model = net.export("t", "none", exit_threshold=seed % 7)
    x = np.random.default_rng(seed).random((20, 16))
    x_q = golden.quantize_input(model, x)
    r = golden.run(model, x_q, sparse=())
    assert (net.exact_z(x_q) == r.z).all()


def test_intsnn_gradients_flow():
    net = IntSNN(_folded((8, 6, 3), 0), (8,), t_max=3)
    x = torch.randint(0, 256, (4, 8)).float()
    net(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert any(p.grad.abs().sum() > 0 for p in net.W)


@pytest.mark.parametrize("arch", [
    "mlp", "vgg",
    (("conv", 4), ("res", 4), ("res", 8, 2), ("pool", 2)),  # residual blocks, one with stride 2
])
def test_float_snn_learns_a_batch(arch):
    torch.manual_seed(0)
    net = SNN((1, 8, 8), 3, arch, t_max=2)
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 3
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x)[-1], y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


def test_unknown_arch():
    with pytest.raises(ConfigError, match="arch"):
        SNN((1, 8, 8), 3, "transformer")
