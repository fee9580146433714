"""Resets, stalls and the stream protocol: the fault bench (:mod:`spikeloom.sim.tb_faults`) and the
hold-rule monitor every bench runs (:class:`spikeloom.sim.streams.StreamMonitor`).

Fast tier: a dense network with ROM weights (N = 1) and one with weights loaded through ``i_weights``
(N = 3), each with >= 20 resets of every kind and >= 200 checked inferences; the monitor's rule
against hand-made handshakes and, wired into the scoreboard bench, against a design whose result
payload changes and whose valid drops while it is held. Slow tier (``make test-slow``): >= 10,000
inferences under random idle and back-pressure with resets, on a dense and a small conv network.
"""

import json

import pytest
from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from spikeloom.hw.accel import TOP_NAME, Accelerator, generate
from spikeloom.model import modelfile
from spikeloom.model.config import LayerNeuron
from spikeloom.model.errors import SpikeloomError
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model
from spikeloom.sim.ports import Field
from spikeloom.sim.runner import cosim
from spikeloom.sim.streams import HoldRule, Sample
from spikeloom.sim.tb_faults import IMAGE_KINDS, KINDS


# -- the hold rule, sample by sample ------------------------------------------------------------

FIELDS = [Field("pred", 0, 2), Field("timesteps", 2, 3)]


def feed(rule, samples):
    return [e for c, s in enumerate(samples) for e in rule.step(Sample(c, *s))]


def test_hold_rule_accepts_a_held_payload_and_a_reset():
    rule = HoldRule("o_result", FIELDS)
    # (valid, ready, payload, rst): held for three cycles then taken; a new payload at once after
    # the transfer; a stall cut by reset may drop valid
    assert feed(rule, [(0, 0, 0, 0), (1, 0, 5, 0), (1, 0, 5, 0), (1, 1, 5, 0), (1, 0, 9, 0), (1, 0, 9, 1),
                       (0, 0, 0, 0), (1, 1, 3, 0), (0, 0, 0, 0)]) == []


def test_hold_rule_names_a_changed_field_and_the_cycle():
    rule = HoldRule("o_result", FIELDS)
    errs = feed(rule, [(1, 0, 0b01101, 0), (1, 0, 0b01101, 0), (1, 0, 0b10101, 0), (1, 1, 0b10101, 0)])
    assert len(errs) == 1, errs
    assert errs[0].startswith("o_result: payload field(s) timesteps changed at cycle 2") and "since cycle 0" in errs[0]
    # unresolved bits (strings, MSB first) are compared as they are
    assert HoldRule("o_trace", FIELDS).changed_fields("0x101", "01101") == ["timesteps"]


def test_hold_rule_catches_a_dropped_valid():
    rule = HoldRule("o_trace")
    errs = feed(rule, [(1, 0, 7, 0), (0, 0, 7, 0), (1, 1, 7, 0)])
    assert errs == ["o_trace: valid dropped at cycle 1 before the transfer (held without ready since cycle 0)"]


# -- the checks against a mutated design ---------------------------------------------------------

def connect_others(m, outer, core):
    """Every port of ``core`` but ``o_result`` to the same port of the wrapper ``outer``."""
    for name, member in outer.signature.members.items():
        if name == "o_result":
            continue
        if member.flow == In:
            wiring.connect(m, wiring.flipped(getattr(outer, name)), getattr(core, name))
        else:
            wiring.connect(m, getattr(core, name), wiring.flipped(getattr(outer, name)))


class ResultFault(wiring.Component):
    """The accelerator with every port passed through but ``o_result``, which :meth:`fault` drives
    from the core's (``res``) to the wrapper's (``out``)."""

    def __init__(self, accel):
        self.core = accel
        super().__init__(accel.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        connect_others(m, self, core)
        self.fault(m, core.o_result, self.o_result)
        return m


class Mutant(ResultFault):
    """The accelerator with faults on ``o_result`` that leave every transferred payload right, so
    that the scoreboard's comparison alone cannot see them:

    * a one-entry result buffer that reset does not clear: a result that waits when reset comes is
      delivered after it (a stale result);
    * from the second cycle of a stall on, ``pred`` reads inverted on odd stall cycles and valid
      drops on even ones (the hold rule broken).
    """

    def fault(self, m, res, out):
        full = Signal(reset_less=True)
        buf = Signal(res.payload.shape(), reset_less=True)
        m.d.comb += res.ready.eq(~full)
        with m.If(out.valid & out.ready):
            m.d.sync += full.eq(0)
        with m.If(res.valid & ~full):
            m.d.sync += [full.eq(1), buf.eq(res.payload)]
        held = Signal(range(8))
        with m.If(full & ~out.ready):
            m.d.sync += held.eq(held + 1)
        with m.Else():
            m.d.sync += held.eq(0)
        late = (held != 0) & ~out.ready
        m.d.comb += [out.payload.eq(buf), out.valid.eq(full & ~(late & ~held[0]))]
        with m.If(late & held[0]):
            m.d.comb += out.payload.pred.eq(~buf.pred)


def faulty_design(tmp_path, wrapper):
    """A small network's model file and generated folder whose top is ``wrapper`` (a
    :class:`ResultFault`) around the accelerator (N = 2): ``(model, path, gen, work)``."""
    model = random_model((10, 6, 3), seed=4, exit_threshold=20, t_max=3)
    path = modelfile.save(model, tmp_path / "model.slm")
    gen, work = tmp_path / "rtl", tmp_path / "work"
    generate(model, 2, gen)
    (gen / f"{TOP_NAME}.v").write_text(verilog.convert(wrapper(Accelerator(model, 2)), name=TOP_NAME, emit_src=False))
    return model, path, gen, work


@pytest.mark.cosim
def test_checks_catch_a_mutated_design(tmp_path):
    """Both benches on :class:`Mutant` (one build, one work folder): the scoreboard bench's monitor
    reports the unstable payload and the dropped valid with every result right; the fault bench
    reports the stale result after a reset and the next images' mismatches."""
    model, path, gen, work = faulty_design(tmp_path, Mutant)
    x = random_inputs(model, 30, seed=1)
    with pytest.raises(SpikeloomError, match="stream protocol violated"):
        cosim(path, gen, x, work, backpressure=0.6)
    r = json.loads((work / "results.json").read_text())
    assert r["mismatched_images"] == 0 and r["n_images"] == len(x), "the faults must leave every transfer right"
    errs = r["protocol_errors"]
    assert any(e.startswith("o_result: payload field(s) pred changed at cycle") for e in errs), errs[:5]
    assert any(e.startswith("o_result: valid dropped at cycle") for e in errs), errs[:5]

    with pytest.raises(SpikeloomError, match="stream protocol violated"):
        cosim(path, gen, x, work, bench="tb_faults", options={"resets": {"result": 4, "input": 2}})
    r = json.loads((work / "results.json").read_text())
    assert r["resets"]["result"] >= 4
    assert any("right after a reset (result)" in e for e in r["order_errors"]), r["order_errors"][:5]
    assert r["mismatched_images"] > 0, "the stale result is compared with the next image's expectation"


# -- the fault bench ----------------------------------------------------------------------------

def run_faults(tmp_path, model, n_pe, n_images, resets, weights="rom", seed=0, idle=0.2, backpressure=0.3):
    path = modelfile.save(model, tmp_path / "model.slm")
    generate(model, n_pe, tmp_path / "rtl", weights=weights)
    x = random_inputs(model, n_images, seed=seed)
    r = cosim(path, tmp_path / "rtl", x, tmp_path / "work", seed=seed, idle=idle, backpressure=backpressure,
              bench="tb_faults", options={"resets": resets})
    print(f"\n{model.name} N={n_pe} weights={weights}: checked {r['checked']} inferences, resets {r['resets']}, "
          f"{r['stalled_cycles']['o_result']} stalled cycles over {r['stalled_results']} stalled results, "
          f"{r['sim_cycles']} cycles in {r['wall_s']:.1f} s")
    return r, x


def assert_clean(r, x, at_least):
    assert r["mismatches"] == [] and r["order_errors"] == [] and r["protocol_errors"] == [], \
        (r["mismatches"][:5], r["order_errors"][:5], r["protocol_errors"][:5])
    assert r["checked"] + r["interrupted"] == len(x) and r["result_transfers"] == r["checked"]
    for k, n in at_least.items():
        assert r["resets"][k] >= n, (k, r["resets"])
    assert r["stalled_results"] > 0 and r["stalled_cycles"]["o_result"] > r["stalled_results"]


# weight store and N: ROM weights on one lane, with the neuron models whose state carries a pending
# reset into the next timestep; weights streamed in (again after every reset) on three lanes that do
# not divide the layers
@pytest.mark.cosim
@pytest.mark.parametrize("weights,n_pe", [("rom", 1), ("load", 3)])
def test_resets_then_exact_results(tmp_path, weights, n_pe):
    neurons = [LayerNeuron(26, 8, ">", "subtract_next"), LayerNeuron(0, 0, ">=", "subtract_recheck")]
    model = random_model((20, 13, 11, 5), seed=40 + n_pe, exit_threshold=20, t_max=4,
                         neurons=neurons if weights == "rom" else None)
    kinds = KINDS if weights == "load" else IMAGE_KINDS
    # "compute" resets that find the result already there count as "result": plan a few more
    plan = {"input": 20, "compute": 26, "result": 20, "weights": 20}
    r, x = run_faults(tmp_path, model, n_pe, 200 + 66, {k: plan[k] for k in kinds}, weights=weights)
    assert_clean(r, x, {k: 20 for k in kinds})
    assert r["checked"] >= 200
    if weights == "rom":
        assert r["resets"]["weights"] == 0


@pytest.mark.cosim
@pytest.mark.slow
@pytest.mark.parametrize("net", ["dense", "conv"])
def test_ten_thousand_inferences_with_resets(tmp_path, net):
    if net == "dense":
        model = random_model((20, 13, 11, 5), seed=60, exit_threshold=20, t_max=4)
        n_pe, weights = 3, "load"
    else:
        model = random_conv_model(seed=61)
        n_pe, weights = 2, "rom"
    kinds = KINDS if weights == "load" else IMAGE_KINDS
    r, x = run_faults(tmp_path, model, n_pe, 10_000 + 3 * 110, {k: 110 for k in kinds}, weights=weights, seed=7)
    assert_clean(r, x, {k: 100 for k in kinds if k != "compute"})
    assert r["checked"] >= 10_000


class Swallow(ResultFault):
    """The accelerator with its third result taken from the core and never offered (a lost result)."""

    def fault(self, m, res, out):
        seen = Signal(range(4))
        lose = seen == 2
        m.d.comb += [out.payload.eq(res.payload), out.valid.eq(res.valid & ~lose), res.ready.eq(out.ready | lose)]
        with m.If(res.valid & res.ready & (seen != 3)):
            m.d.sync += seen.eq(seen + 1)


@pytest.mark.cosim
@pytest.mark.icarus
@pytest.mark.parametrize("bench", ["tb_accel", "tb_faults"])
def test_a_lost_result_fails_the_run_instead_of_hanging_it(tmp_path, bench):
    """The benches wait a bounded number of cycles for each result (streams.patience): a design that
    loses one fails with the image named, and the images after it count as mismatched."""
    model, path, gen, work = faulty_design(tmp_path, Swallow)
    x = random_inputs(model, 6, seed=1)
    if bench == "tb_accel":
        # the third result is lost, the later ones come one image early: the last one never comes
        r = cosim(path, gen, x, work, simulator="icarus")
        assert r["n_images"] == 5 and r["mismatched_images"] >= 2
        assert r["mismatches"][0].startswith("o_result: no transfer of the result of image 5 within"), r["mismatches"][:2]
    else:
        with pytest.raises(SpikeloomError, match="wrote no results: o_result: no transfer of the result of image 5"):
            cosim(path, gen, x, work, simulator="icarus", bench=bench, options={"resets": {}})
