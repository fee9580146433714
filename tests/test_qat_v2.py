"""Semantics v2 in the QAT network: per-layer neurons, sum pooling and the spike-count readout equal
the golden model exactly (float64), on random integer models and on folded float stages."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.model import golden, ir, modelfile
from spikeloom.model.config import FIRE_RULES, RESETS, LayerNeuron, NeuronConfig, QuantConfig
from spikeloom.model.errors import ConfigError
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model
from spikeloom.model.snn import Folded, IntSNN


@st.composite
def layer_neurons(draw):
    """Any layer neuron: no leak, v1 shift leaks, multipliers up to 16 fraction bits, both rules, every reset."""
    f = draw(st.integers(0, 16))
    a = draw(st.sampled_from([0, 1, 1 << f, draw(st.integers(0, 1 << f))]))
    return LayerNeuron(a, f if a else draw(st.integers(0, 16)), draw(st.sampled_from(FIRE_RULES)),
                       draw(st.sampled_from(RESETS)))


def _assert_exact(model, x_q):
    """IntSNN.from_model(model) equals golden.run on x_q, and exports the model's integers back."""
    ir.validate(model)
    net = IntSNN.from_model(model)
    want = golden.run(model, x_q, sparse=())
    assert (net.exact_z(x_q) == want.z).all()
    back = net.export(model.name, model.dataset, model.exit_threshold)
    ir.validate(back)
    assert [ly.name for ly in back.layers] == [ly.name for ly in model.layers]
    for a, b in zip(back.layers, model.layers):
        assert (a.weight == b.weight).all() and (a.bias == b.bias).all() and a.weight_bits == b.weight_bits
        assert (a.threshold is None) == (b.threshold is None)
        assert a.threshold is None or (a.threshold == b.threshold).all()
        assert a.neuron == b.neuron and a.pool_op == b.pool_op and a.role == b.role
        assert (a.shortcut, a.shortcut_stride) == (b.shortcut, b.shortcut_stride)
    assert back.readout == model.readout
    assert (golden.run(back, x_q, sparse=()).z == want.z).all()
    return want


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), neurons=st.lists(layer_neurons(), min_size=3, max_size=3),
       readout=st.sampled_from(["integrate", "count"]), mbits=st.sampled_from([6, 8, 12, 16]),
       t_max=st.integers(1, 6), wbits=st.integers(3, 8))
def test_dense_models_equal_golden(seed, neurons, readout, mbits, t_max, wbits):
    # mbits: 6 and 8 saturate membranes and the integrator; readout "count" makes the last layer spike
    n = 2 if readout == "integrate" else 3
    model = random_model((10, 8, 7, 4), seed=seed, t_max=t_max, weight_bits=wbits, membrane_bits=mbits,
                         neurons=neurons[:n], readout=readout)
    _assert_exact(model, random_inputs(model, 24, seed=seed))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), neurons=st.lists(layer_neurons(), min_size=4, max_size=4),
       pool_op=st.sampled_from(["max", "sum"]), readout=st.sampled_from(["integrate", "count"]),
       mbits=st.sampled_from([7, 10, 14]), hidden=st.sampled_from([(), (6,)]))
def test_conv_models_equal_golden(seed, neurons, pool_op, readout, mbits, hidden):
    # conv1 -> conv2 (pooled, pool_op) -> conv3 with a shortcut from conv1 -> [fc hidden] -> fc
    convs = ((3, 3, 1, 1, 1, False), (4, 3, 1, 1, 2, False), (4, 3, 1, 1, 1, True))
    model = random_conv_model(seed=seed, in_shape=(2, 6, 6), convs=convs, hidden=hidden, membrane_bits=mbits,
                              pool_op=pool_op, neurons=None, readout=readout, t_max=4)
    spiking = sum(ly.role != "output" for ly in model.layers)
    model = random_conv_model(seed=seed, in_shape=(2, 6, 6), convs=convs, hidden=hidden, membrane_bits=mbits,
                              pool_op=pool_op, neurons=(neurons * 2)[:spiking], readout=readout, t_max=4)
    assert model.layers[1].pool_op == pool_op and model.layers[2].shortcut == "conv1"
    _assert_exact(model, random_inputs(model, 12, seed=seed))


def test_every_option_is_exercised():
    # the random models above do what they are meant to: sums above one reach the next layer,
    # membranes saturate, the counted classes spike, and each reset gives its own spikes
    conv = random_conv_model(seed=4, pool_op="sum", t_max=4, membrane_bits=7,
                             neurons=[LayerNeuron(26, 8, ">", "subtract_next"), LayerNeuron(3, 4, ">=", "subtract_recheck")])
    x = random_inputs(conv, 16, seed=1)
    _assert_exact(conv, x)
    tr = golden.run(conv, x, sparse=(), trace=True)
    c2 = tr.spikes["conv2"].reshape(-1, *conv.layers[1].map_shape)
    assert golden.pool_spikes(c2, 2, "sum").max() > 1
    assert (tr.z == (1 << 6) - 1).any() or (tr.z == -(1 << 6)).any()  # the 7-bit integrator saturates
    dense = {r: random_model((10, 8, 4), seed=3, t_max=6, readout="count",
                             neurons=[LayerNeuron(26, 8, ">", r)] * 2) for r in RESETS}
    x = random_inputs(dense["zero"], 40, seed=2)
    zs = {r: _assert_exact(m, x).z for r, m in dense.items()}
    assert all(zs[r].max() > 0 for r in RESETS)  # the class neurons spike
    assert len({zs[r].tobytes() for r in RESETS}) == len(RESETS)


def _stages(rng):
    def w(shape, gain=2.0):
        return rng.normal(0.25, 1.0, shape) * gain / np.sqrt(int(np.prod(shape[1:])))
    return [Folded("conv", w((4, 1, 3, 3), 6.0), rng.normal(0.3, 0.3, 4), 1, 1, pool=2, pool_op="sum"),
            Folded("conv", w((4, 4, 3, 3)), rng.normal(0.3, 0.3, 4), 2, 1),
            Folded("conv", w((4, 4, 3, 3)), rng.normal(0.3, 0.3, 4), 1, 1, shortcut=0,
                   shortcut_weight=w((4, 4, 1, 1)), shortcut_stride=2),
            Folded("dense", rng.normal(0.3, 1, (5, 16)), rng.normal(0.5, 0.2, 5))]


@pytest.mark.parametrize("readout", ["integrate", "count"])
@pytest.mark.parametrize("reset", RESETS)
def test_folded_stages_with_v2_neurons_equal_golden(readout, reset):
    # the training path: quantizing folded float stages, per-layer neurons, sum pooling, both readouts
    rng = np.random.default_rng(RESETS.index(reset))
    stages = _stages(rng)
    n = len(stages) - (readout == "integrate")
    neurons = [LayerNeuron.from_beta(b, 8, fire, reset) for b, fire in zip((0.9, 0.95, 1.0, 0.8), (">=", ">", ">", ">="))][:n]
    net = IntSNN(stages, (1, 8, 8), NeuronConfig(1, "subtract", 12), QuantConfig(6, 4), t_max=4, neurons=neurons,
                 readout=readout)
    model = net.export("v2", "none", 2)
    assert model.readout == readout and model.layers[0].pool_op == "sum"
    assert [ly.neuron for ly in model.layers if ly.role != "output"] == neurons
    x_q = golden.quantize_input(model, np.random.default_rng(0).random((16, 1, 8, 8)))
    res = golden.run(model, x_q, sparse=())
    assert (net.exact_z(x_q) == res.z).all()
    assert res.z.any()
    back = modelfile.load(modelfile.save(model, f"/tmp/qat_v2_{readout}_{reset}.slm"))
    assert (golden.run(back, x_q, sparse=()).z == res.z).all()


def test_v2_gradients_flow():
    # straight-through gradients reach every weight through the new leak, resets and sum pooling
    stages = _stages(np.random.default_rng(1))
    net = IntSNN(stages, (1, 8, 8), t_max=3, readout="count",
                 neurons=[LayerNeuron(26, 8, ">", "subtract_next"), LayerNeuron(3, 4, ">=", "subtract_recheck"),
                          LayerNeuron(0, 0, ">", "zero"), LayerNeuron(13, 7, ">=", "subtract")])
    net(torch.randint(0, 256, (8, 64)).float()).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert all(p.grad.abs().sum() > 0 for p in list(net.W) + list(net.Wsc.values()))


def test_from_model_fine_tunes():
    # an imported model's parameters are trainable and their quantization starts at its integers
    model = random_model((10, 8, 4), seed=5, neurons=[LayerNeuron(26, 8, ">", "subtract_next")] * 2,
                         readout="count", t_max=4)
    net = IntSNN.from_model(model)
    assert net.readout == "count" and [n.reset for n in net.neurons] == ["subtract_next"] * 2
    x = torch.as_tensor(random_inputs(model, 8, seed=0), dtype=torch.float64)
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.W)
    with torch.no_grad():
        net.b[0] += 3 * net.eff0  # three integer steps
    assert (net.integer_params()[0][1] == model.layers[0].bias + 3).all()


def test_v1_default_is_unchanged():
    # the default neurons are the v1 neuron of NeuronConfig: same export as before (version-1 file)
    stages = _stages(np.random.default_rng(2))
    stages[0].pool_op = "max"
    net = IntSNN(stages, (1, 8, 8), NeuronConfig(2, "zero", 16), QuantConfig(8, 4), t_max=3)
    model = net.export("v1", "none", 1)
    assert model.uses_v1_neuron() and model.readout == "integrate" and model.neuron == NeuronConfig(2, "zero", 16)
    assert all(ly.neuron == LayerNeuron(1, 2, ">=", "zero") for ly in model.layers[:-1])
    assert modelfile.features(model) == []


def test_bad_neurons_and_readout():
    stages = _stages(np.random.default_rng(0))
    with pytest.raises(ConfigError, match="neurons must be 3 LayerNeurons"):
        IntSNN(stages, (1, 8, 8), neurons=[LayerNeuron()] * 4)
    with pytest.raises(ConfigError, match="readout = 'softmax'"):
        IntSNN(stages, (1, 8, 8), readout="softmax")
    stages[1].pool_op = "avg"
    with pytest.raises(ConfigError, match="pool_op = 'avg'"):
        IntSNN(stages, (1, 8, 8))


@pytest.mark.parametrize("fire", FIRE_RULES)
@pytest.mark.parametrize("reset", RESETS)
def test_float_snn_neuron_is_golden_without_leak(fire, reset):
    # the float network's LIF (SNN.lif) runs the same rule and reset: with beta = 1 (no leak, so no
    # rounding) and integer currents it is the golden update spike for spike
    from spikeloom.model.snn import SNN

    net = SNN((1, 4, 4), 3, "mlp", NeuronConfig(reset=reset, fire=fire, beta=1.0, membrane_bits=32), t_max=12)
    cur = np.random.default_rng(7).integers(-6, 14, size=(12, 5, 8))
    theta = np.arange(4, 12)
    with torch.no_grad():
        got = net.lif(torch.as_tensor(cur, dtype=torch.float64), torch.as_tensor(theta, dtype=torch.float64))
    u, r, want = np.zeros((5, 8), np.int64), np.zeros((5, 8), bool), []
    for c in cur:
        u, r, s = golden.lif_step(u, r, c, theta, LayerNeuron(0, 0, fire, reset), 32)
        want.append(s)
    assert (got.numpy() == np.array(want)).all() and np.array(want).any()


def test_float_snn_uses_the_quantized_beta():
    from spikeloom.model.snn import SNN

    net = SNN((1, 4, 4), 3, "mlp", NeuronConfig(beta=0.9, leak_frac=4, reset="zero"), t_max=3)
    assert net.neuron.leak == 1 - 2 / 16  # a = rint(0.1 * 16) = 2
    with torch.no_grad():
        s = net.lif(torch.tensor([0.96, 0.15, 0.2], dtype=torch.float64).reshape(3, 1, 1))
    # 0.96; 0.875 * 0.96 + 0.15 = 0.99 (beta 0.9 would give 1.014 and fire); 0.875 * 0.99 + 0.2 >= 1
    assert s.flatten().tolist() == [0.0, 0.0, 1.0]


def test_neuron_config_v2_fields():
    assert NeuronConfig().is_v1 and NeuronConfig().layer_neuron() == LayerNeuron(1, 1, ">=", "subtract")
    assert NeuronConfig(0, "zero").layer_neuron() == LayerNeuron(0, 0, ">=", "zero")
    for kw in ({"fire": ">"}, {"reset": "subtract_next"}, {"beta": 0.5}):
        assert not NeuronConfig(**kw).is_v1
        with pytest.raises(ConfigError, match="not a version-1 neuron"):
            LayerNeuron.of(NeuronConfig(**kw))
    assert NeuronConfig(beta=0.5, leak_frac=1).layer_neuron() == LayerNeuron(1, 1)
    assert NeuronConfig(beta=1.0).layer_neuron() == LayerNeuron(0, 0) and NeuronConfig(beta=1.0).leak == 1.0
    with pytest.raises(ConfigError, match="both set the leak"):
        NeuronConfig(leak_shift=2, beta=0.9)
    with pytest.raises(ConfigError, match="give neuron.beta too"):
        NeuronConfig(leak_frac=4)
    with pytest.raises(ConfigError, match=r"neuron.beta = 1.5 is outside the allowed range \[0, 1\]"):
        NeuronConfig(beta=1.5)
    with pytest.raises(ConfigError, match="neuron.fire"):
        NeuronConfig(fire="=>")


def test_pipeline_trains_a_v2_neuron(tmp_path):
    # train -> quantize -> evaluate with snnTorch's default neuron (beta 0.9, '>', reset next step):
    # the model file is version 2 with the quantized beta in every layer, golden == fake-quant
    from spikeloom.flows import steps
    from spikeloom.model.train import TrainConfig

    neuron = NeuronConfig(beta=0.9, leak_frac=8, fire=">", reset="subtract_next")
    ctx = steps.Context(build=tmp_path, train=TrainConfig(epochs=2, qat_epochs=1), neuron=neuron)
    logs = []
    im, qm = steps.step_quantize(ctx, steps.step_train(ctx, log=logs.append), log=logs.append)
    assert any("leak a = 26, f = 8 (beta 0.898438), fire '>', reset subtract_next" in s for s in logs)
    assert all(ly.neuron == LayerNeuron(26, 8, ">", "subtract_next") for ly in qm.layers[:-1])
    _, meta = modelfile.read_meta(ctx.model_path)
    assert meta["version"] == 2 and meta["requires"] == ["layer_neurons"]
    steps.step_evaluate(ctx, im, qm, log=lambda *_: None)
    assert ctx.report["model"]["golden_vs_fakequant_agreement"] == 1.0
    assert ctx.report["model"]["accuracy_fixed_t"] > 0.5


def test_from_model_is_exact_at_32_bit_membranes():
    # biases and thresholds beyond float32's 24-bit mantissa come back exactly (float64 parameters)
    model = random_model((6, 5, 4, 3), seed=1, membrane_bits=32, neurons=[LayerNeuron(3, 2, ">", "subtract_recheck")] * 2)
    big = [ly.bias + (1 << 29) + 1 for ly in model.layers]
    for ly, b in zip(model.layers, big):
        ly.bias = b
        if ly.threshold is not None:
            ly.threshold = ly.threshold + (1 << 28) + 3
    net = IntSNN.from_model(model)
    ip = net.integer_params()
    assert all((p[1] == ly.bias).all() for p, ly in zip(ip, model.layers))
    assert all((p[2] == ly.threshold).all() for p, ly in zip(ip[:-1], model.layers[:-1]))
    _assert_exact(model, random_inputs(model, 16, seed=3))
