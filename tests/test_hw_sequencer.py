"""The sequencer under Amaranth's simulator, with an idle event pipeline and empty queues: the
phases of two images, cycle by cycle, from the durations its documentation gives."""

import random

import pytest
from amaranth import Value
from amaranth.sim import Simulator

from spikeloom.hw.pe import PE
from spikeloom.hw.plan import Plan
from spikeloom.hw.sequencer import Sequencer, exit_wait
from spikeloom.model.randnet import random_model

T_MAX = 2


def expected(plan, exit_t):
    """Per cycle from reset: (update, clear, addr of an update or clear, layer of an update, t,
    in_load, in_acc, in_result) for images exiting after ``exit_t`` timesteps each."""
    nd, out = plan.neuron_depth, plan.n_layers - 1
    rows = [(0, 1, a, 0, 1, 0, 0, 0) for a in range(nd)]         # INIT: clear every acc word
    for et in exit_t:
        rows.append((0, 0, 0, 0, 1, 1, 0, 0))                     # LOAD: the inputs are in already
        for t in range(1, et + 1):
            for li, lp in enumerate(plan.layers):
                if li:   # ACC: the previous updates leave PE stages 1 .. SPIKE_STAGE (in_flight)
                    rows += [(0, 0, 0, 0, t, 0, 1, 0)] * (PE.SPIKE_STAGE + 1)
                rows += [(1, int(li != 0), lp.neuron_base + k, li, t, 0, 0, 0) for k in range(lp.updates)]
            rows += [(0, 0, 0, 0, t, 0, 0, 0)] * (exit_wait(plan.n_pe) + 1)   # EXIT_WAIT, EXIT
        rows += [(0, 0, 0, 0, et, 0, 0, 1)] * 3                   # RESULT, taken in its third cycle
    return rows


# n_pe: 1 and 3 (lanes not dividing the layers; another exit wait)
@pytest.mark.parametrize("n_pe", [1, 3])
def test_phases(n_pe):
    plan = Plan(random_model((7, 5, 4, 3), seed=0, t_max=T_MAX), n_pe, "dense")
    dut = Sequencer(plan)
    assert dut.exit_wait == {1: 7, 3: 8}[n_pe]   # the counters' wait at one lane, the exit unit's at three
    exit_t = [T_MAX, 1]
    want = expected(plan, exit_t)
    got, nxt_raw, stages = [], [], []

    async def bench(ctx):
        for port in (dut.quiet, dut.main_empty, dut.sc_empty, dut.trace_empty, dut.load_done):
            ctx.set(port, 1)
        image, result_cycles = 0, 0
        for _ in range(len(want)):
            cmd = dut.nxt.cmd
            upd, clr = ctx.get(cmd.update), ctx.get(cmd.clear)
            got.append((upd, clr, ctx.get(cmd.addr) if upd or clr else 0, ctx.get(dut.nxt.layer) if upd else 0,
                        ctx.get(dut.t), ctx.get(dut.in_load), ctx.get(dut.in_acc), ctx.get(dut.in_result)))
            if upd:
                assert ctx.get(dut.n_addr) == ctx.get(cmd.addr)
            nxt_raw.append(ctx.get(Value.cast(dut.nxt)))
            stages.append([ctx.get(Value.cast(getattr(dut, f"s{s}"))) for s in range(1, PE.SPIKE_STAGE + 1)])
            # the exit unit's margin: the second image exits after timestep 1
            ctx.set(dut.margin_ok, image == 1)
            taken = ctx.get(dut.in_result) and result_cycles == 2
            result_cycles = result_cycles + 1 if ctx.get(dut.in_result) else 0
            ctx.set(dut.taken, taken)
            await ctx.tick()
            if taken:
                assert ctx.get(dut.in_load)
                image += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for cyc, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"cycle {cyc}"
    # the command travels along the stage registers unchanged
    for cyc in range(len(stages)):
        for s in range(1, PE.SPIKE_STAGE + 1):
            assert stages[cyc][s - 1] == (nxt_raw[cyc - s] if cyc >= s else 0), (cyc, s)


# Layers of one update (7 -> 1 -> 1 -> 3 at 4 lanes) and of several; stalls on the trace queue,
# exits at random timesteps, images back to back, the weights port (WEIGHTS first) or not.
@pytest.mark.parametrize("sizes,n_pe,loading", [((7, 5, 4, 3), 3, False), ((7, 1, 1, 3), 4, True),
                                                ((7, 4, 1, 2), 1, True)])
def test_updates_in_order_under_random_handshakes(sizes, n_pe, loading):
    """Whatever the handshakes do, the issued updates walk every layer's neurons in order, each
    layer's exactly ``updates`` of them (the last-update flag ends each pass at its last neuron)."""
    plan = Plan(random_model(sizes, seed=0, t_max=3), n_pe, "dense")
    dut = Sequencer(plan, loading=loading)
    layers, rng = plan.layers, random.Random(sum(sizes) * 10 + n_pe)
    seen = {"layer": 0, "k": 0, "updates": 0, "timesteps": 0}

    async def bench(ctx):
        for _ in range(3000):
            for port in (dut.quiet, dut.main_empty, dut.sc_empty, dut.load_done, dut.loaded):
                ctx.set(port, rng.random() < 0.7)
            ctx.set(dut.trace_empty, rng.random() < 0.4)
            ctx.set(dut.margin_ok, rng.random() < 0.3)
            ctx.set(dut.taken, rng.random() < 0.5)
            if ctx.get(dut.nxt.cmd.update):
                li, addr = ctx.get(dut.nxt.layer), ctx.get(dut.nxt.cmd.addr)
                assert (li, addr) == (seen["layer"], layers[li].neuron_base + seen["k"]), seen
                seen["k"] += 1
                seen["updates"] += 1
                if seen["k"] == layers[li].updates:
                    seen["k"], seen["layer"] = 0, (li + 1) % len(layers)
                    seen["timesteps"] += li == len(layers) - 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["timesteps"] >= 20, seen   # many passes, not a few
