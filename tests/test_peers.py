"""The golden model against snnTorch and SpikingJelly, spike for spike (model/SEMANTICS.md, "Neuron models").

Each case draws an integer-valued network of the peer: ``nn.Linear`` layers 16 -> 12 -> 10 -> 4 whose
real weights, biases and thresholds are integers, with the peer's neuron after each of them and a
dyadic decay ``beta = 1 - a / 2^f``. The peer runs it in float64 (the first layer's current computed
once and repeated every step, like our analog layer). Our integer network has the same arrays times
a power of two (:func:`exact_scales`), so that no leak product ever has bits below the binary point
and our floor is the peer's exact product; its 32-bit membranes never saturate
(:func:`assert_no_saturation`). Every layer's spikes at every step must be equal, and the class
layer's spike counts must be our output ``z`` (a spike-count readout, ``ir.count_readout``) at every
step, over 200 random inputs.
"""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import snntorch
import torch

with warnings.catch_warnings():
    # SpikingJelly before 2.0 compiled its neuron functions with torch.jit.script at import
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based import neuron as sj
    except ImportError as e:
        raise ImportError("tests/test_peers.py needs spikingjelly==2.0.0, which `make venv` installs "
                          "(pip --no-deps: it requires torchvision, which would replace the CPU torch)") from e

from spikeloom.model import golden
from spikeloom.model.config import FIRE_RULES, LEAK_FRAC_MAX, RESETS, LayerNeuron, NeuronConfig
from spikeloom.model.ir import signed_range, validate
from spikeloom.model.randnet import random_inputs, random_model

SIZES = (16, 12, 10, 4)
N_INPUTS = 200
BATCHES = 2  # the peer runs the inputs in batches, with its state reset between them
WEIGHT_BITS = 16  # our widest weights: the budget for the scaled peer weights
MEMBRANE_BITS = 32

F64 = torch.float64


def exact_scales(neuron: LayerNeuron, t_max, input_frac=0):
    """``(weight scale, threshold scale)``: powers of two that make our integer network equal the
    peer's real one.

    The peer's membrane after step ``t`` has at most ``f (t - 1) + input_frac`` bits below the binary
    point (``f`` of ``a / 2^f`` in lowest terms; ``input_frac``: fraction bits of the peer's input
    current, ``f`` when SpikingJelly divides it by ``tau = 2^f``), and the last leak acts on the
    membrane after step ``T - 1``: times ``2^(f (T - 1) + input_frac)`` (the threshold scale) every
    product ``u a`` is a multiple of ``2^f``, so the floor of ``(u a) >> f`` drops nothing. Weights
    and biases scale by ``2^(f (T - 1))``: the peer's division of its input by ``2^input_frac`` is
    folded into them. (``2^(f T)``, as in model/SEMANTICS.md, is enough too; this is the least
    scale, which leaves the peer's weights the most bits within our 16.)
    """
    f = neuron.leak_key()[1]
    th = 1 << (f * (t_max - 1) + input_frac)
    return th >> input_frac, th


def networks(seed, t_max, neuron, scales, uniform_threshold=False):
    """``(peer, ours, x)``: the peer's integer-valued network as a QuantModel (with our count readout
    after its class layer) and ours, its weights and biases times ``scales[0]`` and thresholds times
    ``scales[1]`` (:func:`exact_scales`). The peer's weights are small enough that the scaled ones
    fit our widest weights; its thresholds are integers placed by :func:`calibrate` on the random
    inputs ``x`` (200 of them). ``uniform_threshold``: one threshold per layer (SpikingJelly's
    ``v_threshold`` is a float).
    """
    w_scale, th_scale = scales
    spare = WEIGHT_BITS - w_scale.bit_length()
    assert spare >= 1, f"a weight scale of {w_scale} leaves no weight bits"
    peer = random_model(SIZES, seed=seed, t_max=t_max, weight_bits=min(spare, 4) + 1, input_bits=4,
                        membrane_bits=MEMBRANE_BITS, neurons=[neuron] * (len(SIZES) - 1), readout="count")
    ours = replace(peer, layers=[ly if ly.threshold is None else
                                 replace(ly, weight=ly.weight * w_scale, bias=ly.bias * w_scale,
                                         weight_bits=WEIGHT_BITS)
                                 for ly in peer.layers])
    x = random_inputs(peer, N_INPUTS, seed=seed)
    for i, ly in enumerate(peer.layers[:-1]):
        th = calibrate(ours, i, x)
        th = np.full_like(th, np.median(th)) if uniform_threshold else th
        th = np.maximum(th // th_scale, 1)
        peer.layers[i] = replace(ly, threshold=th)
        ours.layers[i] = replace(ours.layers[i], threshold=th * th_scale)
    return validate(peer), validate(ours), x


def calibrate(model, i, x):
    """Thresholds for spiking layer ``i`` of ``model`` (the layers before it already calibrated) that
    make its spikes informative: each neuron's is the 70th percentile of the membranes it reaches
    over the inputs ``x`` and the steps when it never fires."""
    ly = model.layers[i]
    if i == 0:
        currents = [golden.synapses(ly, x)[0]] * model.t_max
    else:
        prev = golden.run(model, x, sparse=(), trace=True).spikes[model.layers[i - 1].name]
        currents = [golden.synapses(ly, s)[0] for s in prev]
    never = np.full(ly.out_features, signed_range(MEMBRANE_BITS)[1])
    u, flag, seen = np.zeros_like(currents[0]), np.zeros(currents[0].shape, bool), []
    for c in currents:
        u, flag, _ = golden.lif_step(u, flag, c, never, ly.neuron, MEMBRANE_BITS)
        seen.append(u)
    return np.maximum(np.percentile(np.stack(seen), 70, axis=(0, 1)).astype(np.int64), 1)


def assert_no_saturation(model):
    """|u| grows by at most max|I| + theta per step: our 32-bit membranes never clip, so the
    peer's unbounded float membrane is ours exactly."""
    hi = signed_range(model.neuron.membrane_bits)[1]
    for ly in model.layers[:-1]:
        lo_i, hi_i = model.acc_range(ly)
        assert model.t_max * (max(-lo_i, hi_i) + int(ly.threshold.max())) <= hi, ly.name


def linears(model):
    """The peer's ``nn.Linear`` layers (float64) with the model's integer weights and biases."""
    out = []
    for ly in model.layers[:-1]:
        fc = torch.nn.Linear(ly.in_features, ly.out_features, dtype=F64)
        with torch.no_grad():
            fc.weight.copy_(torch.from_numpy(ly.weight.astype(np.float64)))
            fc.bias.copy_(torch.from_numpy(ly.bias.astype(np.float64)))
        out.append(fc)
    return out


def run_peer(fcs, nodes, x, t_max, step_mode="s", reset=None):
    """Every layer's spikes (T, B, n) of the peer's network ``fcs[i] -> nodes[i]`` on the inputs
    ``x``, in batches; ``reset(nodes)`` clears the peer's state before each batch. ``step_mode``
    ``"s"``: one call per layer and step; ``"m"``: SpikingJelly's multi-step call per layer on the
    whole (T, B, n) sequence."""
    per_layer = [[] for _ in nodes]
    with torch.no_grad():
        for xb in np.array_split(x, BATCHES):
            reset(nodes)
            cur0 = fcs[0](torch.from_numpy(xb.astype(np.float64)))
            if step_mode == "m":
                s = cur0.expand(t_max, *cur0.shape)
                for i, (fc, node) in enumerate(zip(fcs, nodes)):
                    s = node(s if i == 0 else fc(s)).to(F64)
                    per_layer[i].append(s)
                continue
            steps = [[] for _ in nodes]
            for _ in range(t_max):
                s = None
                for i, (fc, node) in enumerate(zip(fcs, nodes)):
                    out = node(cur0 if i == 0 else fc(s))
                    s = (out[0] if isinstance(out, tuple) else out).to(F64)
                    steps[i].append(s)
            for i, st in enumerate(steps):
                per_layer[i].append(torch.stack(st))
    return [torch.cat(p, dim=1).numpy() != 0 for p in per_layer]


def assert_spike_for_spike(ours, x, peer_spikes):
    """Every layer's spikes at every step, and the class layer's spike counts as our output ``z``."""
    r = golden.run(ours, x, sparse=(), trace=True)
    spiking = [ly for ly in ours.layers if ly.role != "output"]
    assert len(spiking) == len(peer_spikes)
    for ly, theirs in zip(spiking, peer_spikes):
        mine = r.spikes[ly.name]
        assert mine.shape == theirs.shape
        diff = np.argwhere(mine != theirs)
        assert not len(diff), f"{ly.name}: {len(diff)} spikes differ, first at (t, input, neuron) {tuple(diff[0])}"
        # a comparison of silent (or saturated) layers would prove nothing
        assert 0.02 < theirs.mean() < 0.98, f"{ly.name} spikes at rate {theirs.mean():.3f}"
    counts = np.cumsum(peer_spikes[-1], axis=0)
    assert np.array_equal(r.z, counts)
    assert np.array_equal(r.fixed_pred(), golden.first_argmax(counts[-1]))
    assert len(np.unique(counts[-1], axis=0)) > 1


# ---------------------------------------------------------------------------------------------
# snnTorch 1.0 ``snn.Leaky``: mem = beta mem + I - reset threshold, spike on mem > threshold.

# (beta, T): dyadic decays (beta 1: no leak), each T within what the scale 2^(f (T - 1)) leaves of
# our 16 weight bits (0.5 at T = 15: the peer's weights are -1, 0, 1)
SNNTORCH_BETAS = [(1.0, 8), (0.5, 8), (0.5, 15), (0.75, 6), (0.875, 3), (0.875, 5), (29 / 32, 3), (0.8984375, 2)]
# (reset_mechanism, reset_delay) -> our reset
SNNTORCH_RESETS = {("subtract", True): "subtract_next", ("subtract", False): "subtract_recheck",
                   ("zero", True): "zero", ("zero", False): "zero"}


def leaky_nodes(model, beta, mechanism, delay):
    return [snntorch.Leaky(beta=torch.tensor(beta, dtype=F64),
                           threshold=torch.from_numpy(ly.threshold.astype(np.float64)),
                           reset_mechanism=mechanism, reset_delay=delay)
            for ly in model.layers if ly.role != "output"]


def reset_leaky(nodes):
    for n in nodes:
        n.reset_mem()


@pytest.mark.parametrize("mechanism,delay", list(SNNTORCH_RESETS))
@pytest.mark.parametrize("beta,t_max", SNNTORCH_BETAS)
def test_snntorch_leaky(beta, t_max, mechanism, delay):
    neuron = LayerNeuron.from_beta(beta, frac_bits=8, fire=">", reset=SNNTORCH_RESETS[mechanism, delay])
    assert neuron.beta == beta  # dyadic: our leak is the peer's decay exactly
    seed = SNNTORCH_BETAS.index((beta, t_max)) * 10 + list(SNNTORCH_RESETS).index((mechanism, delay))
    peer, ours, x = networks(seed, t_max, neuron, exact_scales(neuron, t_max))
    assert_no_saturation(ours)
    spikes = run_peer(linears(peer), leaky_nodes(peer, beta, mechanism, delay), x, t_max, reset=reset_leaky)
    assert_spike_for_spike(ours, x, spikes)


# ---------------------------------------------------------------------------------------------
# SpikingJelly 2.0 ``neuron.LIFNode`` / ``neuron.IFNode``: H = V - (V - V_reset) / tau + X
# (``decay_input=False``) or V + (X - (V - V_reset)) / tau (``True``), IF: H = V + X; spike on
# H >= v_threshold; hard reset to ``v_reset = 0`` or soft (``v_reset=None``) by subtraction.

# (tau, T, decay_input): 1 / tau = 2^-f, the only taus whose float and reciprocal are both exact;
# tau None: IFNode (no leak, no decay_input)
SJ_NEURONS = [(tau, t_max, decay) for tau, t_max in [(2.0, 8), (4.0, 6), (8.0, 4)] for decay in (True, False)] \
    + [(None, 8, False)]
SJ_RESETS = {0.0: "zero", None: "subtract"}


def sj_nodes(model, tau, decay_input, v_reset, step_mode, training):
    nodes = []
    for ly in model.layers[:-1]:
        assert np.all(ly.threshold == ly.threshold[0])  # v_threshold: one float per layer
        th = float(ly.threshold[0])
        node = sj.IFNode(v_threshold=th, v_reset=v_reset, step_mode=step_mode) if tau is None else \
            sj.LIFNode(tau=tau, decay_input=decay_input, v_threshold=th, v_reset=v_reset, step_mode=step_mode)
        nodes.append(node.train(training))
    return nodes


def reset_sj(nodes):
    for n in nodes:
        functional.reset_net(n)


# training: the Python charge/fire/reset path with its surrogate's Heaviside; else the scripted
# inference path (``v >= v_threshold``)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("v_reset", list(SJ_RESETS), ids=["hard", "soft"])
@pytest.mark.parametrize("tau,t_max,decay_input", SJ_NEURONS)
def test_spikingjelly(tau, t_max, decay_input, v_reset, step_mode, training):
    a, f = (0, 0) if tau is None else (1, int(tau).bit_length() - 1)
    assert tau is None or 2.0 ** f == tau
    neuron = LayerNeuron(a, f, ">=", SJ_RESETS[v_reset])
    # decay_input divides the current by tau: f more fraction bits, folded into our weights
    scales = exact_scales(neuron, t_max, input_frac=f if decay_input else 0)
    seed = 100 + SJ_NEURONS.index((tau, t_max, decay_input)) * 2 + (v_reset is None)
    peer, ours, x = networks(seed, t_max, neuron, scales, uniform_threshold=True)
    assert_no_saturation(ours)
    nodes = sj_nodes(peer, tau, decay_input, v_reset, step_mode, training)
    spikes = run_peer(linears(peer), nodes, x, t_max, step_mode=step_mode, reset=reset_sj)
    assert_spike_for_spike(ours, x, spikes)


# ---------------------------------------------------------------------------------------------
# What the comparisons can tell apart, and what is not exact.

@pytest.mark.parametrize("mechanism,delay", list(SNNTORCH_RESETS))
def test_other_neurons_differ(mechanism, delay):
    """The spike-for-spike comparison tells the neuron models apart: on the same snnTorch run, every
    other firing rule and reset of ours, and another leak (beta 0.875), differs in some spike."""
    beta, t_max = 0.75, 6
    right = LayerNeuron.from_beta(beta, frac_bits=8, fire=">", reset=SNNTORCH_RESETS[mechanism, delay])
    seed = 200 + list(SNNTORCH_RESETS).index((mechanism, delay))
    peer, ours, x = networks(seed, t_max, right, exact_scales(right, t_max))
    spikes = run_peer(linears(peer), leaky_nodes(peer, beta, mechanism, delay), x, t_max, reset=reset_leaky)
    assert_spike_for_spike(ours, x, spikes)
    wrong = [replace(right, fire=fire, reset=reset) for fire in FIRE_RULES for reset in RESETS]
    wrong = [n for n in wrong if not n.same_as(right)] + [replace(right, leak_mul=right.leak_mul // 2)]
    for n in wrong:
        other = replace(ours, layers=[ly if ly.neuron is None else replace(ly, neuron=n) for ly in ours.layers])
        r = golden.run(other, x, sparse=(), trace=True)
        differ = sum(int((r.spikes[ly.name] != s).sum()) for ly, s in zip(other.layers[:-1], spikes))
        assert differ > 0, f"{n} gives the same spikes as snnTorch's {mechanism!r}, reset_delay={delay}"


def test_non_dyadic_beta_is_rounded():
    """``beta = 0.9`` (not dyadic) has no exact integer leak; what differs, without claiming equality.

    Version 1's shift leak ``1 - 2^-k`` gets no nearer than 0.875 (``k = 3``, 0.025 off). The
    multiplier with ``f = 8`` gives ``a = 26``, ``beta_q = 0.8984375`` (0.0015625 off), and no
    ``f <= 16`` gives 0.9 itself. Our network with ``beta_q`` is exactly snnTorch's with
    ``beta = 0.8984375``; snnTorch's with ``beta = 0.9`` keeps ``0.0015625 u`` more membrane each
    step, so a membrane that lands between the two crosses the threshold there and not here: the
    spikes are close but not the same, and only their disagreement is asserted.
    """
    v1 = [LayerNeuron.of(NeuronConfig(k, "subtract", MEMBRANE_BITS)).beta for k in range(1, 9)]
    assert min(v1, key=lambda b: abs(b - 0.9)) == 0.875
    q = LayerNeuron.from_beta(0.9, frac_bits=8, fire=">", reset="subtract_next")
    assert (q.leak_mul, q.leak_frac, q.beta) == (26, 8, 0.8984375)
    assert all(LayerNeuron.from_beta(0.9, frac_bits=f).beta != 0.9 for f in range(LEAK_FRAC_MAX + 1))
    t_max = 2  # the scale of a T = 2 network leaves 5-bit weights, a T = 3 one 2-bit ones
    peer, ours, x = networks(300, t_max, q, exact_scales(q, t_max))
    assert_no_saturation(ours)
    run = {beta: run_peer(linears(peer), leaky_nodes(peer, beta, "subtract", True), x, t_max, reset=reset_leaky)
           for beta in (q.beta, 0.9)}
    assert_spike_for_spike(ours, x, run[q.beta])

    def differ(neuron):
        """Spikes of ours with ``neuron`` in every spiking layer that differ from snnTorch's at beta 0.9."""
        model = replace(ours, layers=[ly if ly.neuron is None else replace(ly, neuron=neuron) for ly in ours.layers])
        r = golden.run(model, x, sparse=(), trace=True)
        return sum(int((r.spikes[ly.name] != s).sum()) for ly, s in zip(model.layers[:-1], run[0.9]))

    near, shift = differ(q), differ(replace(q, leak_mul=1, leak_frac=3))  # v1's nearest leak, 0.875
    # fewer than one spike in a thousand differs (7 of 10400 here), far fewer than with the shift leak (123)
    assert 0 < near < sum(s.size for s in run[0.9]) / 1000 and near < shift
