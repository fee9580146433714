"""The golden model against hand-computed values and its own invariants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.model import golden
from spikeloom.model.config import LayerNeuron, NeuronConfig
from spikeloom.model.errors import InputError
from spikeloom.model.ir import Layer, QuantModel
from spikeloom.model.randnet import random_inputs, random_model


def tiny(reset="subtract", leak_shift=1, exit_threshold=3):
    """2 inputs -> 2 LIF neurons -> 2 classes, small enough to compute by hand."""
    layers = [Layer("fc1", "analog", np.array([[3, 0], [1, -1]]), np.array([0, 1]), np.array([4, 2]), 4),
              Layer("fc2", "output", np.array([[2, 0], [0, 1]]), np.array([0, 0]), None, 4)]
    return QuantModel("tiny", "none", (2,), 2, 3, NeuronConfig(leak_shift, reset, 8), "margin", exit_threshold, layers)


def test_hand_computed_subtract_reset():
    # I0 = [3*2, 2-1+1] = [6, 2]; theta = [4, 2]; leak u - (u >> 1)
    # t1: u = [6, 2] -> spikes [1, 1], u = [2, 0]; z = [2, 1], margin 1
    # t2: u = [2-1+6, 0+2] = [7, 2] -> [1, 1], u = [3, 0]; z = [4, 2], margin 2
    # t3: u = [3-1+6, 2] = [8, 2] -> [1, 1]; z = [6, 3], margin 3 -> exit at T anyway
    r = golden.run(tiny(), np.array([[2, 1]]), trace=True, sparse=())
    assert r.z[:, 0].tolist() == [[2, 1], [4, 2], [6, 3]]
    assert r.margin[:, 0].tolist() == [1, 2, 3]
    assert r.exit_t.tolist() == [3] and r.pred.tolist() == [0]
    assert r.spikes["fc1"][:, 0].tolist() == [[True, True]] * 3
    c = r.counters()
    assert c["fc1"]["input_events"].tolist() == [2]
    assert c["fc1"]["synaptic_events"].tolist() == [3]  # column 0 has 2 nonzeros, column 1 has 1
    assert c["fc1"]["weight_reads"].tolist() == [4]
    assert c["fc1"]["membrane_reads"].tolist() == [6] and c["fc1"]["spikes"].tolist() == [6]
    assert c["fc2"]["input_events"].tolist() == [6] and c["fc2"]["synaptic_events"].tolist() == [6]
    assert c["fc2"]["weight_reads"].tolist() == [12] and c["fc2"]["spikes"].tolist() == [0]


def test_early_exit_cuts_counters():
    r = golden.run(tiny(exit_threshold=2), np.array([[2, 1]]), sparse=())
    assert r.exit_t.tolist() == [2]
    assert r.counters()["fc2"]["input_events"].tolist() == [4]
    assert r.counters(adaptive=False)["fc2"]["input_events"].tolist() == [6]


def test_zero_reset_and_negative_leak_floor():
    u, _, s = golden.lif_step(np.array([-5, 9, 3]), np.zeros(3, bool), np.array([0, 0, 0]), np.array([4, 4, 4]),
                              LayerNeuron(1, 1, ">=", "zero"), 8)
    # -5 - (-5 >> 1) = -5 - (-3) = -2 (arithmetic shift floors); 9 - 4 = 5 >= 4 fires, reset to 0
    assert u.tolist() == [-2, 0, 2] and s.tolist() == [False, True, False]


def test_saturation():
    u, _, s = golden.lif_step(np.array([100, -100]), np.zeros(2, bool), np.array([200, -200]), np.array([127, 127]),
                              LayerNeuron(0, 0, ">=", "subtract"), 8)
    assert u.tolist() == [0, -128] and s.tolist() == [True, False]


def test_margin_ties_and_argmax():
    z = np.array([[5, 5, 1], [1, 7, 3]])
    assert golden.top2_margin(z).tolist() == [0, 4]
    assert golden.first_argmax(z).tolist() == [0, 1]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), hidden=st.integers(1, 20), reset=st.sampled_from(["zero", "subtract"]),
       leak=st.integers(0, 3), thr=st.integers(0, 60))
def test_batch_independence_and_invariants(seed, hidden, reset, leak, thr):
    m = random_model((12, hidden, 4), seed=seed, leak_shift=leak, reset=reset, exit_threshold=thr, t_max=3)
    x = random_inputs(m, 6, seed=seed)
    r = golden.run(m, x, sparse=())
    for i in range(len(x)):
        ri = golden.run(m, x[i:i + 1], sparse=())
        assert ri.pred[0] == r.pred[i] and ri.exit_t[0] == r.exit_t[i]
        assert (ri.z[:, 0] == r.z[:, i]).all()
    for cs in r.counters().values():
        assert (cs["synaptic_events"] <= cs["weight_reads"]).all()
    # a larger threshold never exits earlier
    r2 = golden.run(m, x, exit_threshold=thr + 5, sparse=())
    assert (r2.exit_t >= r.exit_t).all()


def test_input_errors():
    m = tiny()
    with pytest.raises(InputError, match="expects 2"):
        golden.run(m, np.zeros((1, 3), int), sparse=())
    with pytest.raises(InputError, match=r"\[0, 3\]"):
        golden.run(m, np.array([[4, 0]]), sparse=())
    with pytest.raises(InputError, match="integer"):
        golden.run(m, np.zeros((1, 2)), sparse=())


def _trace(neuron, currents, theta=10, bits=16):
    """(spikes, membranes, flags) of one neuron driven by ``currents``, step by step."""
    u, r, out = np.zeros(1, np.int64), np.zeros(1, bool), []
    for cur in currents:
        u, r, s = golden.lif_step(u, r, np.array([cur]), np.array([theta]), neuron, bits)
        out.append((bool(s[0]), int(u[0]), bool(r[0]) if r is not None else None))
    return out


# The worked example of SEMANTICS.md, "Neuron models" (theta = 10, a = 26, f = 8), row by row.
def test_neuron_models_worked_example():
    beta = LayerNeuron.from_beta(0.9, 8)
    assert (beta.leak_mul, beta.leak_frac, beta.beta) == (26, 8, 0.8984375)
    sub = _trace(LayerNeuron(26, 8, ">=", "subtract"), [7, 7, 0, 0])
    assert [(s, u) for s, u, _ in sub] == [(False, 7), (True, 4), (False, 4), (False, 4)]
    zero = _trace(LayerNeuron(26, 8, ">", "zero"), [7, 7, 0, 0])
    assert [(s, u) for s, u, _ in zero] == [(False, 7), (True, 0), (False, 0), (False, 0)]
    nxt = _trace(LayerNeuron(26, 8, ">", "subtract_next"), [7, 7, 0, 0])
    assert nxt == [(False, 7, False), (True, 14, True), (False, 3, False), (False, 3, False)]
    rechk = _trace(LayerNeuron(26, 8, ">", "subtract_recheck"), [30, 0, 0, 0])
    assert rechk == [(True, 20, True), (False, 18, True), (False, 17, True), (False, 16, True)]


def test_fire_rule_at_the_threshold():
    # u = theta fires under '>=' and not under '>'
    assert _trace(LayerNeuron(0, 0, ">=", "subtract"), [10])[0][:2] == (True, 0)
    assert _trace(LayerNeuron(0, 0, ">", "subtract"), [10])[0][:2] == (False, 10)


def test_v1_shift_leak_is_the_multiplier_with_a_1():
    u = np.arange(-300, 300)
    for k in range(0, 9):
        v1 = LayerNeuron.of(NeuronConfig(leak_shift=k))
        want = u - (u >> k) if k else u
        assert (golden.leak(u, v1) == want).all()
        assert (golden.leak(u, LayerNeuron(2, k + 1)) == golden.leak(u, LayerNeuron(1, k))).all() if k else True


def test_subtract_next_equals_subtract_without_leak():
    # with no leak, subtracting theta now or at the start of the next step gives the same spikes
    rng = np.random.default_rng(5)
    cur = rng.integers(-5, 25, size=40)
    a = _trace(LayerNeuron(0, 0, ">=", "subtract"), cur)
    b = _trace(LayerNeuron(0, 0, ">=", "subtract_next"), cur)
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    assert any(s for s, _, _ in a)


def test_int_matmul_is_exact_on_both_paths():
    """golden.int_matmul: float64 BLAS below the 2^53 bound, int64 above it; int64 @'s result either way,
    including products a float64 could not hold (where the int64 path must be taken)."""
    from spikeloom.model.golden import FLOAT64_EXACT, int_matmul

    rng = np.random.default_rng(0)
    for shape_a, shape_b, hi in (((7, 300), (300, 11), 2 ** 15), ((5, 64), (64,), 2 ** 20), ((3, 4, 9), (9, 2), 7)):
        a = rng.integers(-hi, hi, shape_a)
        b = rng.integers(-hi, hi, shape_b)
        got = int_matmul(a, b)
        assert got.dtype == np.int64 and np.array_equal(got, a @ b)
    # just above the bound: 2^53 + 1 is no float64, the int64 path gives it exactly
    a = np.array([[2 ** 27, 1]], np.int64)
    b = np.array([[2 ** 26], [1]], np.int64)
    assert 2 ** 27 * (2 ** 26 + 1) >= FLOAT64_EXACT
    assert int_matmul(a, b)[0, 0] == 2 ** 53 + 1
    assert int_matmul(np.zeros((0, 3), np.int64), np.ones((3, 2), np.int64)).shape == (0, 2)


def test_check_input_refuses_images_of_another_layout():
    """An image array of the right size but another shape (channels last, H and W swapped) would be
    read scrambled: refused in one line; the input shape with or without its size-1 axes is taken."""
    from spikeloom.model.errors import InputError
    from spikeloom.model.randnet import random_conv_model

    m = random_conv_model(seed=1, in_shape=(2, 5, 4))
    x = np.zeros((3, 2, 5, 4), np.int64)
    assert golden.check_input(m, x).shape == (3, 40)
    assert golden.check_input(m, x.reshape(3, 40)).shape == (3, 40)
    for bad in (x.transpose(0, 2, 3, 1), x.reshape(3, 2, 4, 5)):
        with pytest.raises(InputError, match=r"input images of shape \(\d, \d, \d\); the model's input shape is \(2, 5, 4\)"):
            golden.check_input(m, bad)
    m1 = random_conv_model(seed=1, in_shape=(1, 6, 6))
    assert golden.check_input(m1, np.zeros((2, 6, 6, 1), np.int64)).shape == (2, 36)
    # a flat input (F,) reads any image row-major (an MLP imported from NIR, run on digits images)
    flat = random_model((64, 5, 3), seed=1)
    assert golden.check_input(flat, np.zeros((2, 1, 8, 8), np.int64)).shape == (2, 64)
