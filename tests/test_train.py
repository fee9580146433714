"""Training: device selection, and QAT that keeps pruned weights at zero."""

import numpy as np
import pytest
import torch

from spikeloom.model import prune
from spikeloom.model.config import NeuronConfig, QuantConfig
from spikeloom.model.data import Dataset, Split
from spikeloom.model.errors import ConfigError
from spikeloom.model.snn import SNN
from spikeloom.model.train import TrainConfig, resolve_device, train_float, train_qat


def _split(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = (rng.random((n, 1, 4, 4)) * 0.3).astype(np.float32)
    x[np.arange(n), 0, y, :] += 0.7  # class c lights up row c
    d = Dataset("rows", np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64), tuple("abcd"))
    return Split(d, d, d)


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device="tpu")


def test_auto_device_trains_and_returns_a_cpu_model():
    split = _split()
    cfg = TrainConfig(t_max=2, epochs=2, qat_epochs=1, batch_size=16, device="auto")
    net, hist = train_float(split, cfg, NeuronConfig())
    assert len(hist) == 2 and all(p.device.type == "cpu" for p in net.parameters())
    imodel, _ = train_qat(net, split, cfg, NeuronConfig(), QuantConfig())
    assert all(p.device.type == "cpu" for p in imodel.parameters())


@pytest.mark.parametrize("keep_zeros", [True, False])
def test_qat_keeps_pruned_weights_at_zero(keep_zeros):
    split = _split()
    torch.manual_seed(0)
    net = SNN((1, 4, 4), 4, "mlp", NeuronConfig(), t_max=2)
    net(torch.rand(16, 1, 4, 4))
    prune.magnitude_prune(net.eval(), 0.75, balance=4, names=["blocks.0.syn.weight", "blocks.1.syn.weight"])
    cfg = TrainConfig(t_max=2, qat_epochs=2, batch_size=8, qat_lr=1e-2)
    imodel, _ = train_qat(net, split, cfg, NeuronConfig(), QuantConfig(), keep_zeros=keep_zeros)
    model = imodel.export("p", "rows", 0)
    pruned = [(ly.weight == 0).mean() for ly in model.layers[:2]]
    if keep_zeros:
        assert min(pruned) >= 0.75
        for ly in model.layers[:2]:
            assert prune.pe_load(ly.weight, 4)[1] == 1.0  # still balanced in the integer model
    else:
        assert max(pruned) < 0.75  # QAT moved them: the default is what keeps them
