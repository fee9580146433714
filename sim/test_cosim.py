"""Co-simulation tier: generated Verilog under Verilator, every result checked against the golden model.

Each configuration exports its own Verilog into its own build folder and runs the cocotb scoreboard
bench (:mod:`spikeloom.sim.tb_accel`) with random idle cycles on the input and random back-pressure
on the outputs. Exact equality of class, exit timestep and every counter, never tolerances.
"""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeloom.hw import perf
from spikeloom.hw.accel import generate
from spikeloom.hw.plan import Plan
from spikeloom.model import golden, modelfile
from spikeloom.model.config import LayerNeuron, NeuronConfig
from spikeloom.model.ir import Layer, QuantModel
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model
from spikeloom.sim import records
from spikeloom.sim.ports import Ports
from spikeloom.sim.runner import cosim
from spikeloom.sim.streams import MAX_STALL
from spikeloom.sim.strategies import N_PES, STORAGES, conv_nets, dense_nets

pytestmark = pytest.mark.cosim


def run_config(tmp_path, model, n_pe, n_images=24, trace=False, seed=0, golden_model=None, simulator="verilator",
               weights="rom", load_model=None):
    """``weights="load"``: the weights are streamed into ``i_weights`` first, ``load_model``'s if
    given (generated into a folder of their own), else ``model``'s."""
    path = modelfile.save(model, tmp_path / "model.slm")
    gen = tmp_path / "rtl"
    generate(model, n_pe, gen, trace=trace, weights=weights)
    wdir = None
    if load_model is not None:
        wdir = tmp_path / "other"
        generate(load_model, n_pe, wdir, weights=weights)
    gpath = modelfile.save(golden_model, tmp_path / "golden.slm") if golden_model is not None else None
    x = random_inputs(model, n_images, seed=seed)
    x[0] = 0  # an all-zero image: no analog work, nothing spikes
    return cosim(path, gen, x, tmp_path / "work", simulator=simulator, seed=seed, golden_model_path=gpath,
                 weights_dir=wdir), x


# PE count: one lane, lanes not dividing the layers, the default; both reset modes of the LIF unit.
# The fast tier covers every N and both modes in three builds; the other three pairs are `slow`.
@pytest.mark.parametrize("reset,n_pe", [
    ("zero", 1), ("subtract", 3), ("zero", 8),
    *(pytest.param(r, n, marks=pytest.mark.slow) for r, n in [("subtract", 1), ("zero", 3), ("subtract", 8)]),
])
def test_random_network(tmp_path, n_pe, reset):
    model = random_model((20, 13, 11, 5), seed=n_pe, reset=reset, leak_shift=2 if reset == "zero" else 1,
                         exit_threshold=20, t_max=4)
    r, x = run_config(tmp_path, model, n_pe)
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]
    res = golden.run(model, x, sparse=())
    assert len(set(res.exit_t.tolist())) > 1, "the stimulus should exercise early and late exits"
    cycles = np.array([i["cycles"] for i in r["images"]])
    bound = np.array([i["cycle_bound"] for i in r["images"]])
    # (the work bound counts one synaptic operation per PE and cycle; a paired layer's PEs do two
    # (hw/plan.py, "Paired events"): then only the bound of 2N PEs is one for certain)
    assert (cycles >= (res.cycle_bound(model, 2 * n_pe) if Plan(model, n_pe).paired else bound)).all()


# n_pe: one lane; lanes not dividing the layers (padding words in the stream) with the trace port
@pytest.mark.parametrize("n_pe,trace", [pytest.param(1, False, marks=pytest.mark.slow), (3, True)])
def test_weights_loaded_through_port(tmp_path, n_pe, trace):
    """``weights="load"``: no initial weights in the Verilog; the bench streams mem/pe_<p>_weight.hex
    into i_weights (random idle cycles), then every image must match the golden model."""
    model = random_model((20, 13, 11, 5), seed=20 + n_pe, exit_threshold=20, t_max=4)
    r, x = run_config(tmp_path, model, n_pe, n_images=16, trace=trace, weights="load")
    text = (tmp_path / "rtl" / "spikeloom_accel.v").read_text()
    assert "i_weights__payload" in text and "weight[0] =" not in text
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]


def test_wrong_weights_loaded_are_caught(tmp_path):
    """Another network's weights through i_weights: the results differ (the load really writes)."""
    model = random_model((20, 13, 11, 5), seed=31, exit_threshold=20, t_max=4)
    other = random_model((20, 13, 11, 5), seed=32, exit_threshold=20, t_max=4)
    r, _ = run_config(tmp_path, model, 3, n_images=8, weights="load", load_model=other)
    assert r["mismatched_images"] > 0


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=dense_nets(), n_pe=st.sampled_from(N_PES), storage=st.sampled_from(STORAGES), seed=st.integers(0, 99))
def test_hypothesis_random_networks(tmp_path_factory, model, n_pe, storage, seed):
    """Random all-dense nets over every axis of ``strategies.AXES["dense_nets"]`` (flat or (C, H, W)
    inputs, C = 1..4, bit widths, neuron options, exit thresholds): zero mismatches."""
    tmp = tmp_path_factory.mktemp("hyp")
    path = modelfile.save(model, tmp / "model.slm")
    generate(model, n_pe, tmp / "rtl", storage=storage)
    x = random_inputs(model, 10, seed=seed)
    r = cosim(path, tmp / "rtl", x, tmp / "work", seed=seed)
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]


@pytest.mark.slow  # make test runs test_every_v2_option_at_once (the same neurons with a sum pool and counts)
def test_per_layer_neurons(tmp_path):
    """Every spiking layer with its own neuron model (version 2): all four resets, both firing
    rules, a multiplier leak (beta 0.9 as 26 / 256), a shift leak and an IF layer, through the
    trace port: zero mismatches."""
    neurons = [LayerNeuron(26, 8, ">", "subtract_next"), LayerNeuron(0, 0, ">=", "subtract_recheck"),
               LayerNeuron(3, 2, ">", "zero"), LayerNeuron(1, 1, ">=", "subtract")]
    model = random_model((20, 13, 11, 10, 9, 5), seed=3, membrane_bits=12, threshold_range=(60, 140),
                         neurons=neurons, exit_threshold=16, t_max=5)
    assert len(Plan(model, 3).neurons) == 4
    r, x = run_config(tmp_path, model, 3, n_images=12, trace=True)
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]
    res = golden.run(model, x, trace=True, sparse=())
    assert len(set(res.exit_t.tolist())) > 1, "the stimulus should exercise early and late exits"
    # the layers' rules and resets matter: with the other rule and another reset, an executed spike differs
    ran = (np.arange(model.t_max)[:, None] < res.exit_t[None, :])[:, :, None]
    for i, nr in enumerate(neurons):
        other = LayerNeuron(nr.leak_mul, nr.leak_frac, ">=" if nr.fire == ">" else ">",
                            "zero" if nr.reset != "zero" else "subtract")
        alt = golden.run(replace(model, layers=[replace(ly, neuron=other) if j == i else ly
                                                for j, ly in enumerate(model.layers)]), x, trace=True, sparse=())
        name = model.layers[i].name
        assert ((alt.spikes[name] != res.spikes[name]) & ran).any(), f"layer {name}: {nr} changes nothing"


def rgb_dense_model(shape=(3, 4, 4)):
    """Issue 18's reproduction: a dense first layer over a multi-channel image (every image
    mismatched when the plan numbered the pixels position-major and the input stream flat)."""
    rng = np.random.default_rng(0)
    f = int(np.prod(shape))
    w1, b1 = rng.integers(-20, 21, (32, f)), rng.integers(-5, 6, 32)
    w2, b2 = rng.integers(-20, 21, (3, 32)), rng.integers(-5, 6, 3)
    return QuantModel(name="rgb", dataset="random", input_shape=shape, input_bits=4, t_max=4,
                      neuron=NeuronConfig(1, "subtract", 16), exit_criterion="margin", exit_threshold=50,
                      layers=[Layer("fc1", "analog", w1, b1, np.full(32, 60), 8, scale=[1.0]),
                              Layer("fc2", "output", w2, b2, None, 8, scale=[1.0])])


# the input shape of the dense first layer: RGB (the case); four channels and non-square in
# make test-slow
@pytest.mark.parametrize("shape", [(3, 4, 4), pytest.param((4, 3, 5), marks=pytest.mark.slow)])
def test_dense_first_layer_on_multichannel_images(tmp_path, shape):
    model = rgb_dense_model(shape)
    r, x = run_config(tmp_path, model, 8, n_images=12)
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]
    assert len({i["timesteps"] for i in r["images"]}) > 1, "the stimulus should exercise early and late exits"


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=conv_nets(), n_pe=st.sampled_from(N_PES), storage=st.sampled_from(STORAGES),
       seed=st.integers(0, 99))
def test_hypothesis_random_conv_networks(tmp_path_factory, model, n_pe, storage, seed):
    """Random conv/pool/residual nets (kernel sizes, strides, padding, channels, pooling), dense or
    compressed weight storage, under Verilator with the trace port: zero mismatches."""
    tmp = tmp_path_factory.mktemp("conv")
    path = modelfile.save(model, tmp / "model.slm")
    generate(model, n_pe, tmp / "rtl", trace=True, storage=storage)
    x = random_inputs(model, 6, seed=seed)
    r = cosim(path, tmp / "rtl", x, tmp / "work", seed=seed)
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]


def test_injected_mismatch_is_located(tmp_path):
    """One changed weight in the golden model: the checker names image, timestep, layer and neuron."""
    model = random_model((16, 12, 4), seed=5, exit_threshold=1000, t_max=3)
    x = random_inputs(model, 8, seed=0)
    base = golden.run(model, x, trace=True, sparse=())
    wrong = random_model((16, 12, 4), seed=5, exit_threshold=1000, t_max=3)
    # raise one hidden neuron's weight from the most active input so that its spikes change
    j, i = 7, int(np.argmax((x != 0).sum(axis=0)))
    wrong.layers[0].weight = wrong.layers[0].weight.copy()
    wrong.layers[0].weight[j, i] = 31
    changed = golden.run(wrong, x, trace=True, sparse=())
    assert (changed.spikes["fc1"] != base.spikes["fc1"]).any(), "the edit must change a spike"
    r, _ = run_config(tmp_path, model, 3, n_images=8, trace=True, golden_model=wrong)
    assert r["mismatched_images"] > 0
    located = [m for m in r["mismatches"] if "first divergence" in m]
    assert located, r["mismatches"]
    assert "timestep" in located[0] and "layer 0 (fc1)" in located[0] and "neuron 7" in located[0]
    assert located[0].startswith("image ")


def test_energy_from_rtl_counters_equals_golden(tmp_path):
    """Energy from the RTL's counters and cycles equals energy from the golden counts and the cycle
    model on every co-simulated image (input without idle cycles, so that cycles are comparable)."""
    from spikeloom.flows import energy as flow_energy
    from spikeloom.model.power import load_tech

    model = random_model((20, 13, 11, 5), seed=11, exit_threshold=20)
    path = modelfile.save(model, tmp_path / "model.slm")
    generate(model, 4, tmp_path / "rtl")
    x = random_inputs(model, 16, seed=3)
    r = cosim(path, tmp_path / "rtl", x, tmp_path / "work", idle=0.0, backpressure=0.3)
    assert r["mismatched_images"] == 0
    ports = Ports.load(tmp_path / "rtl")
    tech = load_tech()
    names = [ly.name for ly in model.layers]

    def on(recs):
        return flow_energy.records_energy(model, ports, recs, names, tech)

    rtl = on([records.InferenceRecord.from_fields(i) for i in r["images"]])
    plan = Plan(model, 4)
    res = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    gold = on(records.from_golden(res, flow_energy.cycles_model(model, 4, x, res, plan)))
    assert (rtl["total"] == gold["total"]).all()
    for k in rtl["by_kind"]:
        assert (rtl["by_kind"][k] == gold["by_kind"][k]).all(), k


@pytest.mark.slow  # make test: test_every_v2_option_at_once here, shortcuts over sum pools in tests/test_hw_accel.py
def test_sum_pooling(tmp_path):
    """Sum pooling of spikes under Verilator: a 2x2 sum-pooled first conv on 2-bit inputs (its
    counts 0..4 are wider than the inputs) that the next conv reads and the third reads through
    its shortcut, compressed weight storage, the trace port, 3 lanes: zero mismatches."""
    model = random_conv_model(seed=21, in_shape=(2, 8, 8), convs=((5, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, False),
                                                                   (4, 1, 1, 0, 1, True)),
                              hidden=(6,), input_bits=2, pool_op="sum")
    assert model.layers[0].pool_op == "sum" and model.layers[2].shortcut == "conv1"
    path = modelfile.save(model, tmp_path / "model.slm")
    generate(model, 3, tmp_path / "rtl", trace=True, storage="sparse")
    x = random_inputs(model, 8, seed=4)
    r = cosim(path, tmp_path / "rtl", x, tmp_path / "work", seed=4)
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]
    res = golden.run(model, x, trace=True, sparse=Plan(model, 3, "sparse").sparse_layers)
    s = res.spikes["conv1"].reshape((-1,) + model.layers[0].map_shape)
    assert golden.pool_spikes(s, 2, "sum").max() > 1, "some window must pass on more than one spike"


# Floor-mode pooling (maps that do not divide by their pool, model/SEMANTICS.md): (pool_op, N,
# storage, model) per net; the same nets as tests/test_hw_accel.py FLOOR_POOL_NETS
FLOOR_POOL_NETS = {
    # 5x5 pooled by 2 (OR), read by the next conv and by conv3's shortcut; 3 lanes, compressed rows
    "5x5_by_2_residual": ("max", 3, "sparse", dict(
        seed=31, in_shape=(2, 5, 5), convs=((4, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, False), (4, 1, 1, 0, 1, True)),
        hidden=(5,))),
    # a spiking 7x5 map sum-pooled by 3 (one row and two columns left over); one lane, dense words
    "7x5_by_3_sum": ("sum", 1, "dense", dict(
        seed=32, in_shape=(1, 7, 5), convs=((3, 3, 1, 1, 1, False), (5, 3, 1, 1, 3, False), (3, 1, 1, 0, 1, False)))),
}


def floor_pool_cosim(tmp_path, net, simulator):
    """Co-simulate FLOOR_POOL_NETS[net] with the trace port: zero mismatches (every field and every
    traced spike) with random idle cycles and back-pressure; without them (the trace consumed at
    once) every image's cycles equal the cycle model's too."""
    pool_op, n_pe, storage, kw = FLOOR_POOL_NETS[net]
    model = random_conv_model(pool_op=pool_op, t_max=3, density=0.8, threshold_range=(1, 4), **kw)
    pooled = [ly for ly in model.layers if ly.pool > 1]
    assert pooled and all(ly.map_shape[1] % ly.pool or ly.map_shape[2] % ly.pool for ly in pooled)
    path = modelfile.save(model, tmp_path / "model.slm")
    generate(model, n_pe, tmp_path / "rtl", trace=True, storage=storage)
    x = random_inputs(model, 8, seed=n_pe)
    r = cosim(path, tmp_path / "rtl", x, tmp_path / "work", simulator=simulator, idle=0.3, backpressure=0.3)
    exact = cosim(path, tmp_path / "rtl", x, tmp_path / "work", simulator=simulator, idle=0.0, backpressure=0.0)
    for run in (r, exact):
        assert run["simulator"] == simulator and run["n_images"] == len(x)
        assert run["mismatched_images"] == 0, run["mismatches"][:5]
        assert run["spikes_compared"] == len(x)
    plan = Plan(model, n_pe, storage)
    res = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    assert [i["cycles"] for i in exact["images"]] == [perf.cycles(model, n_pe, x[b], res, b, plan=plan, trace=True)
                                                      for b in range(len(x))]
    assert all(i["cycles"] >= i["cycle_bound"] for i in exact["images"])
    for ly in pooled:  # the rows and columns past the last whole window spike (and pass on nothing)
        s = res.spikes[ly.name].reshape((-1,) + ly.map_shape)
        hp, wp = ly.out_shape[1:]
        assert s[:, :, hp * ly.pool:].any() or s[:, :, :, wp * ly.pool:].any()
    return r


# net: see FLOOR_POOL_NETS; make test runs the 7x5 one here and the 5x5 one under Icarus
# (sim/test_icarus.py), make test-slow both on both
@pytest.mark.parametrize("net", [pytest.param(n, marks=pytest.mark.slow) if n == "5x5_by_2_residual" else n
                                 for n in sorted(FLOOR_POOL_NETS)])
def test_floor_pooling(tmp_path, net):
    floor_pool_cosim(tmp_path, net, "verilator")


def test_every_v2_option_at_once(tmp_path):
    """One network with every option of Semantics v2 together under Verilator: a neuron model per
    layer (the four resets, both rules, a multiplier leak, an IF layer), a sum-pooled conv, and a
    spike-count readout (a spiking class layer counted by the identity integrator), saved and
    read back as a version-2 model file: zero mismatches, and the counts exit early."""
    neurons = [LayerNeuron(26, 8, ">", "subtract_next"), LayerNeuron(0, 0, ">=", "subtract_recheck"),
               LayerNeuron(3, 2, ">", "zero"), LayerNeuron(1, 1, ">=", "subtract")]
    model = random_conv_model(seed=5, in_shape=(1, 6, 6), convs=((4, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, False)),
                              hidden=(7,), pool_op="sum", neurons=neurons, readout="count", t_max=5,
                              exit_threshold=1)
    assert model.readout == "count" and model.layers[0].pool_op == "sum"
    r, x = run_config(tmp_path, model, 3, n_images=12, trace=True)
    assert modelfile.load(tmp_path / "model.slm").layers[2].neuron == neurons[2]
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]
    res = golden.run(model, x, trace=True, sparse=())
    assert all(res.spikes[ly.name].any() for ly in model.layers[:-1]), "every spiking layer should spike"
    assert len(set(res.exit_t.tolist())) > 1, "the counts should exit early for some images, not all"


def test_harness_rounds_idle_backpressure_and_exact_cycles(tmp_path):
    """The free-running harness (sim/harness.py), three images per round: with the input never idle
    the RTL's cycles equal the cycle model's exactly; random idle cycles lengthen them and random
    back-pressure stalls results (the hold rule is checked on every stall), every result still equal
    to the golden model; the same seed gives the same run, another seed another one. With the trace
    port, its entries are tagged with their image across the rounds."""
    model = random_model((20, 13, 11, 5), seed=8, exit_threshold=20, t_max=4)
    path = modelfile.save(model, tmp_path / "model.slm")
    gen, work = tmp_path / "rtl", tmp_path / "work"
    generate(model, 3, gen, trace=True)
    x = random_inputs(model, 10, seed=3)
    rounds = {"round_images": 3}
    plain = cosim(path, gen, x, work, idle=0.0, backpressure=0.5, trace=False, options=rounds)
    assert (plain["n_images"], plain["mismatched_images"]) == (10, 0), plain["mismatches"][:5]
    res = golden.run(model, x, sparse=Ports.load(gen).sparse_layers, trace=True)
    want = [perf.cycles(model, 3, x[b], res, b, trace=True) for b in range(len(x))]
    assert [i["cycles"] for i in plain["images"]] == want
    assert plain["stalled_cycles"]["o_result"] > 0 and not plain["protocol_errors"]
    runs = [cosim(path, gen, x, work, idle=0.5, backpressure=0.5, seed=s, options=rounds) for s in (1, 1, 2)]
    for r in runs:
        assert (r["n_images"], r["mismatched_images"]) == (10, 0), r["mismatches"][:5]
    assert sum(i["cycles"] for i in runs[0]["images"]) > sum(want)
    assert runs[0]["images"] == runs[1]["images"] and runs[0]["sim_cycles"] == runs[1]["sim_cycles"]
    assert runs[0]["sim_cycles"] != runs[2]["sim_cycles"]
    assert runs[0]["spikes_compared"] == 10 and runs[0]["rounds"] == 4
    # every value idle first, every result stalled: 1..MAX_STALL edges each, as sim/streams.py's sink
    r = cosim(path, gen, x, work, idle=1.0, backpressure=1.0, options=rounds)
    assert (r["n_images"], r["mismatched_images"]) == (10, 0), r["mismatches"][:5]
    assert 10 <= r["stalled_cycles"]["o_result"] <= MAX_STALL * 10
