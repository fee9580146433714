# amaranth: UnusedElaboratable=no
# (these tests build Accelerators only to describe() them, never to elaborate them)
"""Energy model: technology-table validation, interpolation, and the accounting itself."""

import json
from dataclasses import replace

import numpy as np
import pytest

from spikeloom.flows import energy as flow_energy
from spikeloom.hw.accel import Accelerator, describe
from spikeloom.model import golden
from spikeloom.model.config import LayerNeuron
from spikeloom.model.power import DEFAULT_TECH, EVENT_KINDS, TechTableError, energy, load_tech, per_event
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model
from spikeloom.sim.ports import Ports


def _edit(tmp_path, edit):
    d = json.loads(DEFAULT_TECH.read_text())
    edit(d)
    p = tmp_path / "tech.json"
    p.write_text(json.dumps(d))
    return p


def test_default_table_loads_with_sources():
    t = load_tech()
    assert t.add(8) == 0.03 and t.add(32) == 0.1 and t.add(12) == pytest.approx(0.04)
    assert t.mult(8) == pytest.approx(0.2) and t.mult(32) == pytest.approx(3.1)
    assert t.sram(8 * 1024, 64) == pytest.approx(10) and t.sram(1024 * 1024, 64) == pytest.approx(100)
    assert t.sram(8 * 1024, 8) == pytest.approx(1.25)
    assert t.sram(2 * 1024, 64) < 10  # smaller memories cost less
    for key in ("add_pj", "mult_pj", "sram_pj_per_64bit"):
        assert key in t.sources


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d.pop("add_pj"), "missing field 'add_pj'"),
    (lambda d: d.pop("sources"), "sources"),
    (lambda d: d["mult_pj"].update({"8": -0.2}), "mult_pj['8'] = -0.2 must be > 0"),
    (lambda d: d.update(leakage_uw_per_kbyte=-1), "leakage_uw_per_kbyte = -1 must be >= 0"),
    (lambda d: d.update(unit="nJ"), "unit = 'nJ'; energies must be given in 'pJ'"),
    (lambda d: d["sram_pj_per_64bit"].update({"big": 3}), "non-numeric key 'big'"),
    (lambda d: d.update(clock_mhz="fast"), "clock_mhz must be a number"),
    (lambda d: d.update(version=9), "format/version"),
])
def test_malformed_tables(tmp_path, edit, needle):
    with pytest.raises(TechTableError) as e:
        load_tech(_edit(tmp_path, edit))
    assert needle in str(e.value) and "tech.json" in str(e.value)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(TechTableError, match="does not exist"):
        load_tech(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TechTableError, match="not a readable JSON"):
        load_tech(tmp_path / "bad.json")


def test_accounting_adds_up():
    model = random_model((12, 9, 4), seed=2)
    ports = Ports.from_dict(describe(Accelerator(model, 3)))
    x = random_inputs(model, 5)
    res = golden.run(model, x, sparse=())
    cyc = np.full(5, 1000)
    e = energy(model, ports, res.counters(), res.exit_t, cyc, load_tech())
    assert set(e["by_kind"]) == set(EVENT_KINDS)
    assert np.allclose(e["total"], sum(e["by_kind"].values()))
    assert np.allclose(sum(e["by_layer"].values()) + e["by_kind"]["exit_eval"] + e["by_kind"]["leakage"],
                       e["total"])
    # every count is priced: doubling every counter doubles the dynamic energy
    twice = {ln: {k: 2 * v for k, v in cs.items()} for ln, cs in res.counters().items()}
    e2 = energy(model, ports, twice, res.exit_t, cyc, load_tech())
    dyn = [k for k in EVENT_KINDS if k not in ("exit_eval", "leakage")]
    assert all(np.allclose(e2["by_kind"][k], 2 * e["by_kind"][k]) for k in dyn)
    pe = per_event(model, ports, load_tech())
    assert pe["fc1"]["first_layer_mac"][1] > 0 and pe["fc1"]["synaptic_ac"][1] == 0
    assert pe["fc2"]["synaptic_ac"][1] > 0 and pe["fc2"]["first_layer_mac"][1] == 0
    assert all(pe[ly.name]["value_mac"][1] == 0 for ly in model.layers)


def test_sum_pooled_counts_are_multiplied_and_multiplier_leaks_cost_adds():
    """A layer fed with a sum pool's counts pays a MAC per synaptic event, not an AC; a leak
    multiplier with more set bits costs more adds per neuron update than the shift leak."""
    model = random_conv_model(seed=3, pool_op="sum")
    model.layers[1] = replace(model.layers[1], neuron=LayerNeuron(13, 5, ">", "subtract_next"))
    ports = Ports.from_dict(describe(Accelerator(model, 2)))
    pe = per_event(model, ports, load_tech())
    after_sum = model.layers[2]  # reads conv2's 2x2 sum pool (counts 0..4)
    assert model.in_max(after_sum) == 4
    assert pe[after_sum.name]["value_mac"][1] > pe[after_sum.name]["synaptic_ac"][1] == 0
    assert pe["conv2"]["value_mac"][1] == 0 and pe["conv2"]["synaptic_ac"][1] > 0
    # 13 = 0b1101: three adds for the leak, one for the waiting reset, against one for a shift
    assert pe["conv2"]["neuron_update"][1] == pytest.approx(pe["conv1"]["neuron_update"][1] * (3 + 3 + 1) / 4)


# model: dense; conv with pooling and a residual shortcut (analog first layer counted in timestep 1)
@pytest.mark.parametrize("make", [lambda: random_model((12, 9, 7, 4), seed=5, exit_threshold=6),
                                  lambda: random_conv_model(seed=6, hidden=(5,))])
# n_pe: 1 (no rounding), 3 (rounding in every layer)
@pytest.mark.parametrize("n_pe", [1, 3])
def test_one_work_bound(make, n_pe):
    """``golden.work_bound`` is the sum over executed timesteps and layers of
    ceil(synaptic events / N) + ceil(neurons / N), for the golden run (``cycle_bound``, adaptive
    or all T) and for the energy step's dense network alike."""
    model = make()
    x = random_inputs(model, 5, seed=2)
    res = golden.run(model, x, sparse=())
    for adaptive in (True, False):
        want = [sum(-(-int(res.step_counters[ly.name]["synaptic_events"][t, b]) // n_pe)
                    + -(-ly.out_features // n_pe)
                    for t in range(int(res.exit_t[b]) if adaptive else model.t_max) for ly in model.layers)
                for b in range(len(x))]
        assert res.cycle_bound(model, n_pe, adaptive).tolist() == want
    T = model.t_max
    dense = [-(-ds // n_pe) * (1 if i == 0 else T) + -(-ly.out_features // n_pe) * T
             for i, (ly, ds) in enumerate(zip(model.layers, flow_energy.dense_synapses(model)))]
    got = golden.work_bound(model, flow_energy.dense_step_synapses(model), np.full(3, T), n_pe)
    assert got.tolist() == [sum(dense)] * 3
