"""The generated accelerator against the golden model, under Amaranth's Python simulator.

Exact integer equality of prediction, executed timesteps, every counter of every layer and (with
the trace port) every spike; cycle counts against the cycle model in ``hw/perf.py``.
"""

import json
import re
from dataclasses import replace

import numpy as np
import pytest
from amaranth.back import verilog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_perf import floor_tail_case

from spikeloom.hw import perf
from spikeloom.hw.accel import Accelerator, describe, generate
from spikeloom.hw.pe import PE, SPIKE_STAGE
from spikeloom.hw.pipeline import EventPipeline
from spikeloom.hw.plan import Plan
from spikeloom.hw.sequencer import exit_wait
from spikeloom.hw.simulate import rtl_run
from spikeloom.model import golden
from spikeloom.model.config import LayerNeuron, NeuronConfig
from spikeloom.model.ir import Layer, QuantModel, signed_range
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model
from spikeloom.sim import records
from spikeloom.sim.strategies import N_PES, STORAGES, conv_nets, dense_nets

NEVER = 1 << 40  # exit threshold above any margin: every image runs t_max timesteps
CYCLE_REPORT = []


def make_model(sizes, *, seed=0, reset="subtract", leak_shift=2, membrane_bits=12, t_max=4,
               exit_threshold=NEVER, weight_bits=4, input_bits=4, silent=(), name="t"):
    """A random integer network; layers listed in ``silent`` get thresholds nothing reaches."""
    rng = np.random.default_rng(seed)
    lo_m, hi_m = signed_range(membrane_bits)
    w_max = (1 << (weight_bits - 1)) - 1
    layers = []
    for i in range(len(sizes) - 1):
        role = "analog" if i == 0 else ("output" if i == len(sizes) - 2 else "spiking")
        w = rng.integers(-w_max, w_max + 1, size=(sizes[i + 1], sizes[i]))
        b = rng.integers(max(lo_m, -2), min(hi_m, 2) + 1, size=sizes[i + 1])
        th = None
        if role != "output":
            scale = ((1 << input_bits) - 1) * 2 if i == 0 else 2
            th = rng.integers(1, min(hi_m, scale * 3) + 1, size=sizes[i + 1])
            if i in silent:
                th[:] = hi_m
                b[:] = 0
                w[:] = -np.abs(w)
        layers.append(Layer(f"fc{i}", role, w, b, th, weight_bits))
    return QuantModel(name, "synthetic", (sizes[0],), input_bits, t_max,
                      NeuronConfig(leak_shift, reset, membrane_bits), "margin", int(exit_threshold), layers)


def make_images(model, n, *, seed=1, density=0.6):
    rng = np.random.default_rng(seed)
    qmax = (1 << model.input_bits) - 1
    x = rng.integers(1, qmax + 1, size=(n, model.input_size)) * (rng.random((n, model.input_size)) < density)
    x[0] = 0  # an all-zero image: layer 0's current is 0, no clear pass needed
    return x


def expected(result, cycles=None):
    """The golden model's records of every image (with ``cycles``: the cycle model's, compared too)."""
    return records.from_golden(result, cycles)


def differences(want, got):
    """Mismatch lines of the RTL's results ``got`` (``rtl_run`` dicts) against the records ``want``."""
    return records.field_mismatches(want, got)


def check(model, n_pe, x, *, trace=False, seed=0, idle=0.3, storage="auto", cycles=False):
    """RTL == golden on every field (and trace spike); with ``cycles``, no input idles and the
    cycle model must give every image's cycles exactly."""
    plan = Plan(model, n_pe, storage)
    g = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    got = rtl_run(model, n_pe, x, trace=trace, seed=seed, idle=0.0 if cycles else idle,
                  backpressure=0.0 if cycles else 0.3, storage=storage)
    assert len(got) == len(x)
    cyc = [perf.cycles(model, n_pe, x[b], g, b, plan=plan, trace=trace) for b in range(len(x))] if cycles else None
    diff = differences(expected(g, cyc), got)
    assert not diff, "\n".join(diff)
    if trace:
        for b, r in enumerate(got):
            check_trace(plan, g, b, r["trace"])
    return g, got


def check_trace(plan, g, b, entries):
    model, n_pe = plan.model, plan.n_pe
    got = {}
    for e in entries:
        key = (e["timestep"], e["layer"])
        pos_n = plan.layers[e["layer"]].positions
        lanes = [(e["chunk"] * n_pe + p) * pos_n + e["pos"] for p in range(n_pe) if e["mask"] >> p & 1]
        assert e["mask"], f"image {b}: empty trace entry {e}"
        got.setdefault(key, set()).update(lanes)
    want = {}
    for t in range(int(g.exit_t[b])):
        for li, ly in enumerate(model.layers[:-1]):
            idx = set(np.flatnonzero(g.spikes[ly.name][t, b]).tolist())
            if idx:
                want[(t + 1, li)] = idx
    assert got == want, f"image {b}: trace spikes differ"
    order = [(e["timestep"], e["layer"], e["pos"], e["chunk"]) for e in entries]
    assert order == sorted(order) and len(set(order)) == len(order), "trace not in production order"


def early_threshold(model, x):
    """An exit threshold at which some images exit before t_max and others do not."""
    g = golden.run(model.with_exit_threshold(NEVER), x, sparse=())
    return int(np.median(g.margin[min(1, model.t_max - 1)])) + 1


# n_pe: 1 = no lane parallelism; 3 = no layer size is a multiple; 8 = more lanes than classes
@pytest.mark.parametrize("n_pe", [1, 3, 8])
# reset: both LIF reset modes of golden.lif_step
@pytest.mark.parametrize("reset", ["zero", "subtract"])
# leak_shift: 0 = integrate-and-fire (no leak term), 2 = arithmetic-shift leak
@pytest.mark.parametrize("leak_shift", [0, 2])
def test_matches_golden(n_pe, reset, leak_shift):
    model = make_model([16, 11, 10, 5], seed=n_pe, reset=reset, leak_shift=leak_shift)
    x = make_images(model, 4, seed=n_pe + 10)
    model = model.with_exit_threshold(early_threshold(model, x))
    g, _ = check(model, n_pe, x, seed=n_pe)
    assert (g.exit_t < model.t_max).any() and (g.exit_t == model.t_max).any()


# the spiking layers' own neurons: every reset, both rules, multiplier leaks (beta 0.9 as 26 / 256;
# 3 / 4), version 1's shift leak and an IF layer (a = 0)
MIXED = [LayerNeuron(26, 8, ">", "subtract_next"), LayerNeuron(0, 0, ">=", "subtract_recheck"),
         LayerNeuron(3, 2, ">", "zero"), LayerNeuron(1, 1, ">=", "subtract"),
         LayerNeuron(26, 8, ">=", "subtract_recheck")]


# n_pe: 1, 3 (padding lanes) and 8 lanes; the layers take the neurons of MIXED rotated by n_pe
@pytest.mark.parametrize("n_pe", [1, 3, 8])
# readout: the output integrator, or the spike count of a spiking class layer (one more neuron)
@pytest.mark.parametrize("readout", ["integrate", "count"])
def test_per_layer_neurons(n_pe, readout):
    """Every spiking layer with a different neuron model: RTL == golden on every field and spike,
    and the cycle model (which knows nothing of neurons) is exact."""
    k = len(MIXED) - (readout == "integrate")
    neurons = (MIXED[n_pe % len(MIXED):] + MIXED[:n_pe % len(MIXED)])[:k]
    model = random_model([16, 12, 11, 10, 9, 5][:k + 1 + (readout == "integrate")], seed=70 + n_pe, t_max=5,
                         membrane_bits=10, threshold_range=(4, 16), neurons=neurons, readout=readout)
    assert len(Plan(model, n_pe).neurons) == len({(nr.leak_key(), nr.fire, nr.reset) for nr in neurons})
    x = random_inputs(model, 4, seed=n_pe)
    model = model.with_exit_threshold(early_threshold(model, x))
    g, _ = check(model, n_pe, x, trace=True, cycles=True)
    assert all(g.spikes[ly.name].any() for ly in model.layers[:-1]), "every spiking layer should spike"


# n_pe: 2 and 3 lanes over conv layers of 3 and 4 channels
@pytest.mark.parametrize("n_pe", [2, 3])
def test_per_layer_neurons_conv(n_pe):
    """Conv layers (pooled, residual) and a dense hidden layer, each with its own neuron model."""
    model = random_conv_model(seed=80 + n_pe, in_shape=(2, 6, 6), hidden=(6,), t_max=4,
                              convs=((3, 3, 1, 1, 2, False), (4, 3, 1, 1, 1, True), (3, 1, 1, 0, 1, True)),
                              neurons=MIXED[n_pe:] + MIXED[:n_pe - 1])
    x = random_inputs(model, 3, seed=n_pe)
    g, _ = check(model, n_pe, x, trace=True, storage="auto", cycles=True)
    assert all(g.spikes[ly.name].any() for ly in model.layers[:-1]), "every spiking layer should spike"


# exit threshold: NEVER = no early exit (t_max always), 0 = exit after timestep 1
@pytest.mark.parametrize("exit_threshold", [NEVER, 0])
# n_pe: 3 and 8 lanes over layers of 13 and 4 neurons
@pytest.mark.parametrize("n_pe", [3, 8])
def test_exit_extremes(exit_threshold, n_pe):
    model = make_model([20, 13, 4], seed=5, exit_threshold=exit_threshold, t_max=3)
    x = make_images(model, 4, seed=6)
    g, _ = check(model, n_pe, x, seed=2)
    assert set(g.exit_t) == {model.t_max if exit_threshold == NEVER else 1}


# n_pe: lanes over the trace mask (1 bit, 3 bits with padding lanes, 8 bits)
@pytest.mark.parametrize("n_pe", [1, 3, 8])
def test_trace(n_pe):
    model = make_model([16, 12, 10, 5], seed=20 + n_pe, reset="zero")
    x = make_images(model, 4, seed=21)
    model = model.with_exit_threshold(early_threshold(model, x))
    check(model, n_pe, x, trace=True, seed=3)


# the input shape of a dense first layer: grey (the digits MLP's (1, 8, 8)), RGB, four channels,
# non-square, and flat; until issue 18 every multi-channel image mismatched
@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 4, 4), (4, 4, 4), (3, 2, 5), (48,)])
def test_dense_first_layer_of_an_image_shaped_input(shape):
    """A fully-connected first layer reads a (C, H, W) image flattened in the input stream's
    row-major order (SEMANTICS.md, "Input order"): its events are the input indices."""
    f = int(np.prod(shape))
    model = random_model((f, 10, 3), seed=7, input_shape=shape, weight_bits=6, exit_threshold=30)
    x = random_inputs(model, 3, seed=2)
    check(model, 3, x, trace=True, cycles=True)


def test_silent_layer():
    """A hidden layer that never spikes: the output layer sees no events, only its bias."""
    model = make_model([16, 11, 10, 5], seed=7, silent=(1,))
    x = make_images(model, 4, seed=8, density=0.9)
    g, _ = check(model, 3, x, trace=True)
    cs = g.counters()
    assert cs["fc0"]["spikes"].any() and not cs["fc1"]["spikes"].any()


# n_pe: 3 = multi-chunk layers; 16 = one chunk per layer (back-to-back hits on one acc address)
@pytest.mark.parametrize("n_pe", [3, 16])
def test_saturation(n_pe):
    """Narrow membranes (6 bits) and strong weights: the saturating add is exercised."""
    model = make_model([12, 9, 4], seed=9, membrane_bits=6, weight_bits=6, input_bits=3, leak_shift=1)
    x = make_images(model, 4, seed=10, density=0.9)
    g, _ = check(model, n_pe, x)
    assert (np.abs(g.z) == 32).any() or (g.z == 31).any()


# n_pe: the cycle model must hold for every lane count (1, 3, 8)
@pytest.mark.parametrize("n_pe", [1, 3, 8])
# sizes: two hidden layers; one hidden layer with a 4-class output
@pytest.mark.parametrize("sizes", [[16, 11, 10, 5], [20, 13, 4]])
def test_cycles(n_pe, sizes):
    """``cycles`` equals the cycle model exactly and stays within the bound plus the pipeline drain.

    The allowance is one cycle per input value (the input stream) plus, per phase, the event
    pipeline (``EventPipeline.DEPTH``) and the spike path (``SPIKE_STAGE`` plus one for the queue)
    or the output path (the sequencer's ``exit_wait``, ``Z_STAGE`` plus the top-2 tree's latency,
    plus the exit decision), whichever is longer.
    """
    model = make_model(sizes, seed=30)
    x = make_images(model, 5, seed=31)
    model = model.with_exit_threshold(early_threshold(model, x))
    g, got = check(model, n_pe, x, cycles=True, storage="dense")
    drain = EventPipeline.DEPTH + max(SPIKE_STAGE + 1, exit_wait(n_pe) + 1)
    bounds = g.cycle_bound(model, n_pe)
    for b, r in enumerate(got):
        bound = int(bounds[b])
        allowance = model.input_size + drain * (len(model.layers) * int(g.exit_t[b]) + 1)
        # dense storage reads the zero weights too: the bound counts only nonzero ones
        density = min((ly.weight != 0).mean() for ly in model.layers)
        assert r["cycles"] <= 1.3 * bound / density + allowance, f"image {b}: {r['cycles']} cycles, bound {bound}"
        CYCLE_REPORT.append((tuple(sizes), n_pe, b, r["cycles"], bound))
    ratios = [c / bd for (s, n, _, c, bd) in CYCLE_REPORT if n == n_pe and s == tuple(sizes)]
    print(f"\n{sizes} n_pe={n_pe}: cycles/bound {min(ratios):.2f}..{max(ratios):.2f}")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_networks(data):
    """Random all-dense nets over every axis of ``strategies.AXES["dense_nets"]`` (flat or (C, H, W)
    inputs with C = 1..4, bit widths, neuron options, exit thresholds) and every N of ``N_PES``:
    RTL == golden on every field and spike, and the cycle model is exact when drawn."""
    model = data.draw(dense_nets(max_side=3, max_hidden=9), label="model")
    n_pe = data.draw(st.sampled_from(N_PES), label="n_pe")
    storage = data.draw(st.sampled_from(STORAGES), label="storage")
    x = random_inputs(model, 3, seed=data.draw(st.integers(0, 2**16), label="image_seed"))
    x[0] = 0  # an all-zero image: layer 0's current is the bias alone
    check(model, n_pe, x, trace=True, seed=5, storage=storage, cycles=data.draw(st.booleans(), label="cycles"))


def test_generate_deterministic(tmp_path):
    model = make_model([16, 11, 10, 5], seed=40)
    a = generate(model, 3, tmp_path / "a", trace=True)
    b = generate(model, 3, tmp_path / "b", trace=True)
    rel = sorted(p.relative_to(tmp_path / "a") for p in a)
    assert rel == sorted(p.relative_to(tmp_path / "b") for p in b)
    for r in rel:
        assert (tmp_path / "a" / r).read_bytes() == (tmp_path / "b" / r).read_bytes(), r
    text = (tmp_path / "a" / "spikeloom_accel.v").read_text()
    assert "module spikeloom_accel" in text and "i_data__payload" in text and "o_trace__payload" in text
    ports = json.loads((tmp_path / "a" / "ports.json").read_text())
    assert ports["n_pe"] == 3 and ports["input"] == {"port": "i_data", "width": 4, "count": 16, "shape": [16]}
    assert len(ports["memories"]) == 3 * 5 + 1  # five per PE and the shared rows table
    hexw = (tmp_path / "a" / "mem" / "pe_1_weight.hex").read_text().split()
    w = model.layers[0].weight
    assert int(hexw[1 * 4 + 0], 16) == w[1, 1] & 0xF  # layer 0, input 1, chunk 0, lane 1


def test_describe_fields():
    model = make_model([16, 11, 10, 5], seed=41)
    accel = Accelerator(model, 8, trace=True)
    d = describe(accel)
    fields = d["result"]["fields"]
    names = [f["name"] for f in fields]
    assert names[:3] == ["pred", "timesteps", "cycles"]
    assert names[3:] == [f"fc{i}.{c}" for i in range(3) for c in golden.COUNTERS]
    ends = [f["offset"] + f["width"] for f in fields]
    assert [f["offset"] for f in fields[1:]] == ends[:-1] and ends[-1] == d["result"]["width"]
    assert [f["name"] for f in d["trace"]["fields"]] == ["timestep", "layer", "pos", "chunk", "mask"]
    assert json.loads(json.dumps(d)) == d
    assert "module spikeloom_accel" in verilog.convert(accel, name="spikeloom_accel", emit_src=False)


def test_bad_arguments():
    model = make_model([5, 3, 2])
    for n_pe in (0, 65):
        with pytest.raises(ValueError, match=repr(n_pe)):
            Accelerator(model, n_pe)
    for n_pe in ("4", 2.0, True):
        with pytest.raises(TypeError, match="n_pe"):
            Accelerator(model, n_pe)
    with pytest.raises(TypeError, match="QuantModel"):
        Accelerator({"layers": []}, 4)
    with pytest.raises(TypeError, match="trace"):
        Accelerator(model, 4, trace="yes")
    with pytest.raises(ValueError, match="'flash'"):
        Accelerator(model, 4, weights="flash")
    bad = make_model([5, 3, 2])
    bad.layers[0].threshold[0] = 0
    with pytest.raises(ValueError, match="threshold"):
        Accelerator(bad, 2)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_conv_networks(data):
    """Random conv/pool/residual nets, dense or compressed storage: RTL == golden on every field and
    spike, and the cycle model is exact."""
    model = data.draw(conv_nets(), label="model")
    n_pe = data.draw(st.sampled_from(N_PES), label="n_pe")
    storage = data.draw(st.sampled_from(STORAGES), label="storage")
    x = random_inputs(model, 2, seed=data.draw(st.integers(0, 99), label="image_seed"))
    check(model, n_pe, x, trace=True, storage=storage, cycles=data.draw(st.booleans(), label="cycles"))


# storage: the same pruned conv net in both forms; compressed storage costs fewer cycles and bits
def test_sparse_storage_saves_cycles_and_bits():
    model = random_conv_model(seed=11, in_shape=(1, 6, 6), convs=((8, 3, 1, 1, 2, False), (8, 3, 1, 1, 1, False)),
                              density=0.2)
    x = random_inputs(model, 2, seed=3)
    _, dense = check(model, 4, x, storage="dense", cycles=True)
    _, sparse = check(model, 4, x, storage="sparse", cycles=True)
    assert all(s["cycles"] < 0.7 * d["cycles"] for s, d in zip(sparse, dense))
    # (in lockstep; the PE queues of these unbalanced rows add each PE's lengths to the rows table only)
    queued, lockstep = Plan(model, 4, "sparse"), Plan(model, 4, "sparse", queue_depth=0)
    assert lockstep.weight_memory_bits < 0.7 * Plan(model, 4, "dense").weight_memory_bits
    assert queued.queued and queued.weight_memory_bits - queued.n_rows * queued.rows_bits == (
        lockstep.weight_memory_bits - lockstep.n_rows * lockstep.rows_bits)


# n_pe: 1 = one memory, 3 = lanes not dividing the layers (padding words are loaded too)
@pytest.mark.parametrize("n_pe", [1, 3])
# storage: dense words, and packed compressed entries (w, tap, chunk) through the same port
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_weights_loaded_through_port(n_pe, storage):
    """``weights="load"``: the weight memories start empty; after the i_weights stream (with idle
    cycles) the results, counters, spikes and cycles are those of the initialised design."""
    model = make_model([16, 11, 10, 5], seed=50 + n_pe)
    x = make_images(model, 4, seed=51)
    model = model.with_exit_threshold(early_threshold(model, x))
    plan = Plan(model, n_pe, storage)
    g = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    got = rtl_run(model, n_pe, x, trace=True, seed=6, idle=0.3, weights="load", storage=storage)
    assert not differences(expected(g), got)
    for b, r in enumerate(got):
        check_trace(plan, g, b, r["trace"])
    # with the input never idle the cycle model holds as for the initialised memories
    got = rtl_run(model, n_pe, x, seed=7, idle=0.0, backpressure=0.0, weights="load", storage=storage)
    assert [r["cycles"] for r in got] == [perf.cycles(model, n_pe, x[b], g, b, plan=plan) for b in range(len(x))]


# bank_depth: 2 = the smallest banks (the select at its widest), 8 = banks and a short last bank
@pytest.mark.parametrize("n_pe,storage,bank_depth", [(1, "dense", 8), (3, "sparse", 2), (2, "dense", 32)])
def test_banked_weight_memories(n_pe, storage, bank_depth):
    """``bank_depth``: each weight memory in banks with a register each and the bank chosen a
    stage later (``BankedROM``) gives the same results, counters, spikes and cycles."""
    model = make_model([16, 11, 10, 5], seed=70 + n_pe)
    x = make_images(model, 4, seed=71)
    model = model.with_exit_threshold(early_threshold(model, x))
    plan = Plan(model, n_pe, storage)
    assert plan.weight_depth > 2 * bank_depth  # several banks
    g = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    got = rtl_run(model, n_pe, x, trace=True, seed=8, idle=0.0, backpressure=0.0, storage=storage,
                  bank_depth=bank_depth)
    assert not differences(expected(g), got)
    for b, r in enumerate(got):
        check_trace(plan, g, b, r["trace"])
    assert [r["cycles"] for r in got] == [perf.cycles(model, n_pe, x[b], g, b, plan=plan) for b in range(len(x))]
    text = verilog.convert(Accelerator(model, n_pe, storage=storage, bank_depth=bank_depth), emit_src=False)
    banks = -(-plan.weight_depth // bank_depth)
    assert len(re.findall(r"reg \[\d+:0\] bank_\d+ ?\[", text)) == n_pe * banks


@pytest.mark.parametrize("bank_depth,weights,needle", [
    (3, "rom", "power of two"), (1, "rom", "power of two"), (True, "rom", "power of two"),
    (4, "load", "weights 'rom'")])
def test_bad_bank_depth(bank_depth, weights, needle):
    with pytest.raises(ValueError, match=needle):
        Accelerator(make_model([4, 3, 2]), 1, weights=weights, bank_depth=bank_depth)


def test_loaded_weights_are_used():
    """Loading another network's weights changes the results: the port really writes the memories."""
    model = make_model([16, 11, 10, 5], seed=60)
    other = make_model([16, 11, 10, 5], seed=61)
    x = make_images(model, 4, seed=62)
    want = expected(golden.run(model, x, sparse=()))
    got = rtl_run(model, 3, x, seed=1, weights="load", load_model=other, storage="dense")
    assert len(got) == len(want) and differences(want, got)


def test_compressed_layer_without_index_fields():
    """A compressed 1x1 layer with one chunk stores bare weights (no tap or chunk field); its
    padding entries (lanes without a channel) must still neither count as reads nor write."""
    model = random_conv_model(seed=5, in_shape=(2, 4, 4), convs=((4, 2, 2, 0, 1, False), (1, 1, 2, 0, 1, False)),
                              density=0.6, t_max=2)
    storage = {"conv1": "dense", "conv2": "sparse", "fc": "dense"}
    plan = Plan(model, 2, storage)
    assert tuple(plan.sparse_layers) == ("conv2",) and plan.tap_bits == 0 and plan.chunk_bits == 0
    check(model, 2, random_inputs(model, 3, seed=0), storage=storage, cycles=True)


# A 2x2 sum-pooled first conv that the third conv reads through its shortcut (events of both
# sources carry counts 1..4) on 2-bit inputs (the counts are wider than the inputs), a 3x3 sum
# pool (counts up to 9) before a spiking dense layer, and a net mixing a sum-pooled and an
# OR-pooled layer (one count memory serves both).
SUM_POOL_NETS = {
    "shortcut": dict(seed=21, in_shape=(2, 8, 8), convs=((5, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, False),
                                                          (4, 1, 1, 0, 1, True)), hidden=(6,), input_bits=2),
    "pool3": dict(seed=22, in_shape=(1, 6, 6), convs=((4, 3, 1, 1, 3, False),), hidden=(5,)),
    "mixed": dict(seed=23, in_shape=(2, 8, 8), convs=((4, 3, 1, 1, 2, False), (4, 3, 1, 1, 2, False)), hidden=()),
}


def sum_pool_net(name):
    model = random_conv_model(pool_op="sum", **SUM_POOL_NETS[name])
    if name == "mixed":
        model.layers[1] = replace(model.layers[1], pool_op="max")
    return model


# net: see SUM_POOL_NETS
@pytest.mark.parametrize("net", sorted(SUM_POOL_NETS))
# n_pe, storage: one lane with dense words; 3 lanes (partial chunks) with compressed entries
@pytest.mark.parametrize("n_pe, storage", [(1, "dense"), (3, "sparse")])
def test_sum_pooling(net, n_pe, storage):
    """Sum pooling of spikes: the next layer (and a shortcut reader) multiplies its weights by each
    window's spike count. RTL == golden on every field and spike, and the cycle model is exact."""
    model = sum_pool_net(net)
    ops = {ly.name: ly.pool_op for ly in model.layers if ly.pool > 1}
    assert set(ops.values()) == ({"sum", "max"} if net == "mixed" else {"sum"})
    x = random_inputs(model, 3, seed=n_pe)
    g, _ = check(model, n_pe, x, trace=True, storage=storage, cycles=True)
    # the test means something only if some window passes on more than one spike
    counts = [golden.pool_spikes(g.spikes[ly.name].reshape((-1,) + ly.map_shape), ly.pool, "sum").max()
              for ly in model.layers if ops.get(ly.name) == "sum"]
    assert max(counts) > 1
    if net == "shortcut":
        assert model.layers[2].shortcut == "conv1" and Plan(model, n_pe).value_bits > model.input_bits


# Floor-mode pooling (model/SEMANTICS.md): maps that do not divide by their pool; the updates past
# the last whole window update their neurons (counters, trace) and push nothing.
FLOOR_POOL_NETS = {
    # 5x5 pooled by 2, read by the next conv and by conv3's shortcut, before a spiking dense layer
    "5x5_by_2_residual": dict(seed=31, in_shape=(2, 5, 5), convs=((4, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, False),
                                                                  (4, 1, 1, 0, 1, True)), hidden=(5,)),
    # a spiking 7x5 map pooled by 3 (one row and two columns left over) read by a conv
    "7x5_by_3": dict(seed=32, in_shape=(1, 7, 5), convs=((3, 3, 1, 1, 1, False), (5, 3, 1, 1, 3, False),
                                                          (3, 1, 1, 0, 1, False))),
}


# net: see FLOOR_POOL_NETS
@pytest.mark.parametrize("net", sorted(FLOOR_POOL_NETS))
# pool_op: OR of each whole window, or its count; n_pe, storage: one lane with dense words, 3 lanes
# (partial chunks) with compressed entries. make test: each pool_op and each lane/storage once; the
# other two pairs in make test-slow
@pytest.mark.parametrize("pool_op, n_pe, storage", [
    ("max", 1, "dense"), ("sum", 3, "sparse"),
    *(pytest.param(*p, marks=pytest.mark.slow) for p in [("sum", 1, "dense"), ("max", 3, "sparse")])])
def test_floor_pooling(net, pool_op, n_pe, storage):
    """RTL == golden on every field and spike, and the cycle model is exact, with spikes past the
    last whole window."""
    model = random_conv_model(pool_op=pool_op, t_max=3, density=0.8, threshold_range=(1, 4), **FLOOR_POOL_NETS[net])
    pooled = [ly for ly in model.layers if ly.pool > 1]
    assert pooled and all(ly.map_shape[1] % ly.pool or ly.map_shape[2] % ly.pool for ly in pooled)
    x = random_inputs(model, 3, seed=n_pe)
    g, _ = check(model, n_pe, x, trace=True, storage=storage, cycles=True)
    for ly in pooled:
        s = g.spikes[ly.name].reshape((-1,) + ly.map_shape)
        hp, wp = ly.out_shape[1:]
        assert s[:, :, hp * ly.pool:].any() or s[:, :, :, wp * ly.pool:].any(), "the test needs spikes outside windows"


# trace: with the trace port, the spikes of the last update (pushing nothing) hold the phase, so
# the next layer's pass does not stall on the trace queue; without it, the count is the same
@pytest.mark.parametrize("trace", [False, True])
def test_floor_pooling_tail(trace):
    """The last update of a floor-pooled layer spikes and pushes nothing (tests/test_perf.py
    ``floor_tail_case``): the cycles equal the cycle model's with and without the trace port."""
    model, x = floor_tail_case()
    check(model, 1, x, trace=trace, cycles=True)


# (network, N): the tail packs groups = N // r events to a word (hw/plan.py, "Packed tail")
@pytest.mark.parametrize("make,n_pe,groups", [
    # the 10-class output at N = 8: r = 2, 4 groups (the digits MLP's case)
    (lambda: make_model([20, 13, 10], seed=80), 8, [1, 4]),
    # a hidden layer packed (r = 1 of 3 lanes: 3 groups) before an unpacked output
    (lambda: make_model([16, 11, 10, 5], seed=81), 3, [1, 3, 1]),
    # r = 1 of 8 lanes: 8 groups, the widest sum across lanes (a hidden layer: its spikes are traced)
    (lambda: make_model([16, 12, 9, 4], seed=84), 8, [1, 8, 1]),
    # a dense layer reading a conv map (position-major rows) packed (r = 2 of 4 lanes), then the output (r = 1)
    (lambda: random_conv_model(seed=83, hidden=(6,), n_classes=5), 4, [1, 1, 2, 4]),
])
def test_packed_tail(make, n_pe, groups):
    """Packed tail words: RTL == golden on every field and spike (with input idles and result
    back-pressure; the conv network without), the cycle model exact (with no idles), and the plan's dense event cycles of a
    packed layer are ``events * (chunks - 1) + ceil(events / groups)``."""
    model = make()
    # (the conv network's Python simulation is slow: 3 images, which still leave events over for the flush)
    x = make_images(model, 6, seed=84) if model.layers[0].kind == "dense" else random_inputs(model, 3, seed=84)
    model = model.with_exit_threshold(early_threshold(model, x))
    plan = Plan(model, n_pe, "dense")
    assert [lp.groups for lp in plan.layers] == groups
    for lp, r in zip(plan.layers, plan.storage_report):
        if lp.packed:
            ev = lp.sources[0].rows
            assert r["dense_cycles"] == ev * (lp.chunks - 1) + -(-ev // lp.groups)
    if model.layers[0].kind == "dense":
        check(model, n_pe, x, trace=True, seed=9, storage="dense")
    # (the conv network's Python simulation is slow: one run, traced, without idles)
    g, got = check(model, n_pe, x, storage="dense", cycles=True, trace=model.layers[0].kind != "dense")
    # the flush word is exercised: some accumulate phase of a packed layer leaves events over
    left = [int(g.step_counters[lp.name]["input_events"][t, b]) % lp.groups for lp in plan.layers if lp.packed
            for b in range(len(x)) for t in range(int(g.exit_t[b]))]
    assert any(left)


# (network, N, storage, queue depth): compressed layers' PE queues (hw/plan.py, "PE queues")
@pytest.mark.parametrize("make,n_pe,storage,depth", [
    # an MLP at 50% weights, rows uncut: each PE walks its own entries of the row
    (lambda: make_model([16, 12, 9, 5], seed=96), 3, "sparse", 8),
    # a conv net with a residual shortcut, rows cut by tap, queues of 2 that fill (pushes wait)
    (lambda: random_conv_model(seed=97, density=0.5, n_classes=5), 4, "sparse:tap", 2),
    # the same in lockstep (no queues)
    (lambda: random_conv_model(seed=97, density=0.5, n_classes=5), 4, "sparse:tap", 0),
])
def test_pe_queues(make, n_pe, storage, depth):
    """PE queues: RTL == golden on every field and spike (the MLP with input idles and result
    back-pressure; the conv network without, one run for all), the cycle model exact, and each
    queued core's ports.json records them."""
    model = make()
    x = make_images(model, 5, seed=98) if model.layers[0].kind == "dense" else random_inputs(model, 2, seed=98)
    model = model.with_exit_threshold(early_threshold(model, x))
    plan = Plan(model, n_pe, storage, queue_depth=depth)
    # (queued: the layers whose unbalanced PE lists cost cycles in lockstep; the others in lockstep)
    assert plan.queued == bool(depth) and not all(lp.queued for lp in plan.layers)
    g = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    want = [perf.cycles(model, n_pe, x[b], g, b, plan=plan) for b in range(len(x))]
    idles = model.layers[0].kind == "dense"
    got = rtl_run(model, n_pe, x, trace=True, seed=13, storage=storage, queue_depth=depth,
                  **({} if idles else {"idle": 0.0, "backpressure": 0.0}))
    assert not differences(expected(g, None if idles else want), got)
    for b, r in enumerate(got):
        check_trace(plan, g, b, r["trace"])
    if idles:
        got = rtl_run(model, n_pe, x, seed=14, idle=0.0, backpressure=0.0, storage=storage, queue_depth=depth)
        assert [r["cycles"] for r in got] == want
    dut = Accelerator(model, n_pe, storage=storage, queue_depth=depth)
    desc = describe(dut)
    dut._MustUse__silence = True
    assert desc["pe_queue_depth"] == depth and [ly["queued"] for ly in desc["layers"]] == [lp.queued for lp in plan.layers]
    fields = desc["rows_word"]["fields"]
    assert (f"pe{n_pe - 1}_len{plan.queued_segments - 1}" in fields) == bool(depth)


# (network, N, paired layers): a layer of one chunk after the first takes two events a word
# (hw/plan.py, "Paired events")
@pytest.mark.parametrize("make,n_pe,bank_depth,paired", [
    # two paired layers, a hidden one (its spikes traced) and the output, from 12 and 9 lanes of 16
    (lambda: make_model([16, 12, 9, 5], seed=90), 16, None, [False, True, True]),
    # the same through banked weight memories (the second port of every bank)
    (lambda: make_model([16, 12, 9, 5], seed=91), 16, 8, [False, True, True]),
    # a dense layer reading a conv map (position-major rows), then the output, both paired
    (lambda: random_conv_model(seed=92, hidden=(6,), n_classes=5), 8, None, [False, False, True, True]),
])
def test_paired_events(make, n_pe, bank_depth, paired):
    """Paired events: RTL == golden on every field and spike (input idles, result back-pressure;
    the conv network without), the cycle model exact (no idles), fewer cycles than unpaired, and the plan's dense event
    cycles of a paired layer are two events of a spike-queue entry a word."""
    model = make()
    x = make_images(model, 6, seed=93) if model.layers[0].kind == "dense" else random_inputs(model, 3, seed=93)
    model = model.with_exit_threshold(early_threshold(model, x))
    plan, unpaired = Plan(model, n_pe, "dense"), Plan(model, n_pe, "dense", pair=False)
    assert [lp.paired for lp in plan.layers] == paired and not unpaired.paired
    for lp, r in zip(plan.layers, plan.storage_report):
        if lp.paired:   # two lanes of an entry a word: per position, ceil(lanes / 2) per chunk of the source
            s = lp.sources[0]
            assert r["dense_cycles"] == s.h * s.w * sum(-(-min(n_pe, s.c_in - c) // 2) for c in range(0, s.c_in, n_pe))
    g = golden.run(model, x, trace=True, sparse=())
    want = [perf.cycles(model, n_pe, x[b], g, b, plan=plan) for b in range(len(x))]
    # (the conv network's Python simulation is slow: one run, without idles, checks all of it)
    idles = model.layers[0].kind == "dense"
    got = rtl_run(model, n_pe, x, trace=True, seed=10, storage="dense", bank_depth=bank_depth,
                  **({} if idles else {"idle": 0.0, "backpressure": 0.0}))
    assert not differences(expected(g, None if idles else want), got)
    for b, r in enumerate(got):
        check_trace(plan, g, b, r["trace"])
    if idles:
        got = rtl_run(model, n_pe, x, seed=11, idle=0.0, backpressure=0.0, storage="dense", bank_depth=bank_depth)
        assert [r["cycles"] for r in got] == want
    assert sum(want) < sum(perf.cycles(model, n_pe, x[b], g, b, plan=unpaired) for b in range(len(x)))
    # some word carried two events
    assert any(int(g.step_counters[lp.name]["input_events"][t, b]) >= 2 for lp in plan.layers if lp.paired
               for b in range(len(x)) for t in range(int(g.exit_t[b])))


def test_paired_events_off():
    """``pair=False``, and weights loaded into single-port RAM: no layer is paired, RTL == golden
    and the unpaired plan's cycles; a PE of a paired plan refuses ``weights="load"``."""
    model = make_model([16, 12, 9, 5], seed=94)
    x = make_images(model, 4, seed=95)
    plan = Plan(model, 16, "dense", pair=False)
    g = golden.run(model, x, trace=True, sparse=())
    want = [perf.cycles(model, 16, x[b], g, b, plan=plan) for b in range(len(x))]
    for kw in ({"pair": False}, {"weights": "load"}):
        dut = Accelerator(model, 16, storage="dense", **kw)
        dut._MustUse__silence = True   # (only its plan is looked at)
        assert not dut.plan.paired and not dut.plan.layers[1].paired
    got = rtl_run(model, 16, x, seed=12, idle=0.0, backpressure=0.0, weights="load", storage="dense")
    assert not differences(expected(g, want), got)
    with pytest.raises(ValueError, match="second weight"):
        PE(Plan(model, 16, "dense"), 0, weights="load")
    with pytest.raises(TypeError, match="pair must be a bool"):
        Plan(model, 16, pair=1)


def test_unpacked_with_loaded_weights():
    """``pack=False`` with weights loaded through the port (the iCE40 UP5K build): a layer that
    would pack does not, RTL == golden on every field and spike, and the unpacked plan's cycle
    model is exact (more cycles than the packed design's)."""
    model = make_model([16, 11, 10, 5], seed=85)
    x = make_images(model, 4, seed=86)
    model = model.with_exit_threshold(early_threshold(model, x))
    plan, packed = Plan(model, 3, "dense", pack=False), Plan(model, 3, "dense")
    assert [lp.groups for lp in plan.layers] == [1, 1, 1] and [lp.groups for lp in packed.layers] == [1, 3, 1]
    g = golden.run(model, x, trace=True, sparse=())
    got = rtl_run(model, 3, x, trace=True, seed=3, weights="load", storage="dense", pack=False)
    assert not differences(expected(g), got)
    for b, r in enumerate(got):
        check_trace(plan, g, b, r["trace"])
    got = rtl_run(model, 3, x, seed=4, idle=0.0, backpressure=0.0, weights="load", storage="dense", pack=False)
    want = [perf.cycles(model, 3, x[b], g, b, plan=plan) for b in range(len(x))]
    assert [r["cycles"] for r in got] == want
    assert sum(want) > sum(perf.cycles(model, 3, x[b], g, b, plan=packed) for b in range(len(x)))
