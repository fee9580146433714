"""Training: device selection, and QAT that keeps pruned weights at zero."""

import numpy as np
import pytest
import torch

from spikeloom.model import pruning as prune
from spikeloom.model.config import NeuronConfig, QuantConfig
from spikeloom.model.data import Dataset, Split
from spikeloom.model.errors import ConfigError
from spikeloom.model.snn import SNN
from spikeloom.model import golden
from spikeloom.model.train import TrainConfig, reduce_timesteps, resolve_device, train_float, train_qat


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


def test_reduce_timesteps_down_to_one():
    split = _split(n=48)
    torch.manual_seed(0)
    net = SNN((1, 4, 4), 4, (("conv", 4), ("res", 4), ("pool", 2)), NeuronConfig(), t_max=3)
    cfg = TrainConfig(arch="vgg", t_max=3, epochs=1, batch_size=16)
    history = []
    one = reduce_timesteps(net, split, cfg, t_from=3, t_to=1, history=history)
    assert one.t_max == 1 and [h["t_max"] for h in history] == [2, 1] and net.t_max == 3
    assert one.learn_threshold and not net.learn_threshold
    assert any((p != 1).any() for p in one.thetas.values())  # thresholds were trained
    with torch.no_grad():
        assert one(torch.as_tensor(split.val.x)).shape == (1, 48, 4)
    imodel, _ = train_qat(one, split, TrainConfig(arch="vgg", t_max=1, qat_epochs=0), NeuronConfig(), QuantConfig())
    model = imodel.export("t1", "none", 0)
    assert model.t_max == 1
    x_q = golden.quantize_input(model, split.val.x)
    r = golden.run(model, x_q, sparse=())
    assert r.z.shape == (1, 48, 4) and (r.exit_t == 1).all()
    assert (imodel.exact_z(x_q) == r.z).all()
    with pytest.raises(ConfigError, match="t_from"):
        reduce_timesteps(net, split, cfg, t_from=4, t_to=1)


def test_pool_option():
    # the option only exists for archs with pool stages; at its default it leaves the keys and the
    # model-file metadata of earlier runs as they were
    assert "pool" not in TrainConfig().as_dict() and TrainConfig(arch="vgg", pool="avg").as_dict()["pool"] == "avg"
    with pytest.raises(ConfigError, match="train.pool = 'avg' needs an arch with pool stages"):
        TrainConfig(pool="avg")
    with pytest.raises(ConfigError, match="train.pool = 'min'"):
        TrainConfig(arch="vgg", pool="min")


def test_sum_pool_trains_and_exports_exactly():
    split = _split(n=32)
    cfg = TrainConfig(arch="vgg", t_max=2, epochs=1, qat_epochs=1, batch_size=16, pool="sum")
    net, _ = train_float(split, cfg, NeuronConfig(beta=0.9, fire=">", reset="subtract_recheck"))
    assert net.pool == "sum"
    imodel, _ = train_qat(net, split, cfg, net.neuron, QuantConfig())
    model = imodel.export("s", "rows", 0)
    assert [ly.pool_op for ly in model.layers if ly.pool > 1] == ["sum", "sum"]
    assert all(ly.neuron.reset == "subtract_recheck" and ly.neuron.leak_mul == 26 for ly in model.layers[:-1])
    x_q = golden.quantize_input(model, split.val.x)
    assert (imodel.exact_z(x_q) == golden.run(model, x_q, sparse=()).z).all()


def test_reduce_timesteps_in_chosen_stages():
    split = _split(n=32)
    torch.manual_seed(0)
    net = SNN((1, 4, 4), 4, "mlp", NeuronConfig(), t_max=4)
    cfg = TrainConfig(t_max=4, epochs=1, batch_size=16)
    history = []
    one = reduce_timesteps(net, split, cfg, t_from=4, t_to=1, epochs=2, history=history, stages=[1])
    assert one.t_max == 1 and [(h["t_max"], len(h["history"])) for h in history] == [(1, 2)]
    history.clear()
    reduce_timesteps(net, split, cfg, t_from=4, t_to=1, history=history, stages=[2, 1], epochs=[1, 3])
    assert [(h["t_max"], len(h["history"])) for h in history] == [(2, 1), (1, 3)]  # each stage its epochs
    with pytest.raises(ConfigError, match="one per stage"):
        reduce_timesteps(net, split, cfg, t_from=4, t_to=1, epochs=[1, 1])
    for bad in ([], [3, 2], [4, 1], [1, 2, 1], [2, 2, 1]):
        with pytest.raises(ConfigError, match="stages"):
            reduce_timesteps(net, split, cfg, t_from=4, t_to=1, stages=bad)


def test_fit_keeps_no_state_before_select_from():
    """A pruning ramp's early states are denser than the result: the best validation state is
    picked among the epochs from ``select_from`` on, even when an earlier one scored higher."""
    from spikeloom.model import train

    split = _split()
    torch.manual_seed(0)
    net = SNN((1, 4, 4), 4, "mlp", NeuronConfig(), t_max=2)
    states = []
    scores = iter([0.9, 0.8, 0.1, 0.5, 0.3])  # epoch 0 best overall, epoch 3 best from epoch 2 on

    def evaluate(m):
        states.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    x, y = torch.as_tensor(split.train.x), torch.as_tensor(split.train.y)
    hist = train._fit(net, train.TimeLoss("early", 2), x, y, 5, 1e-2, 0.0, 16, 0, "t", evaluate, select_from=2)
    assert len(hist) == 5
    assert all((net.state_dict()[k] == v).all() for k, v in states[3].items())
    assert not all((net.state_dict()[k] == v).all() for k, v in states[0].items())
    with pytest.raises(ConfigError, match="select_from"):
        train._fit(net, train.TimeLoss("early", 2), x, y, 2, 1e-2, 0.0, 16, 0, "t", evaluate, select_from=2)


def test_qat_distils_from_a_teacher(monkeypatch):
    """train_qat(teacher=...) trains on DistillLoss with the teacher's logits on the float images."""
    from spikeloom.model import losses, train

    split = _split()
    cfg = TrainConfig(t_max=2, epochs=1, qat_epochs=1, batch_size=16)
    torch.manual_seed(0)
    net, _ = train_float(split, cfg, NeuronConfig())
    seen = []
    orig = losses.DistillLoss.forward

    def spy(self, z, y, soft):
        seen.append((self.alpha, tuple(soft.shape)))
        return orig(self, z, y, soft)

    monkeypatch.setattr(losses.DistillLoss, "forward", spy)
    train_qat(net, split, cfg, NeuronConfig(), QuantConfig())
    assert not seen  # no teacher: the plain time-dependent loss
    train_qat(net, split, cfg, NeuronConfig(), QuantConfig(), teacher=net, distill=0.25)
    assert seen and all(a == 0.25 and s[1] == 4 for a, s in seen)
