"""The activity counters and the cycle counter (ActivityCounters) under Amaranth's simulator."""

import numpy as np
from amaranth.sim import Simulator

from spikeloom.hw.counters import ActivityCounters
from spikeloom.hw.plan import geometries
from spikeloom.hw.plan import Plan
from spikeloom.model.golden import COUNTERS
from spikeloom.model.randnet import random_conv_model

N_PE = 3


def make_plan():
    # conv2 has a shortcut source: two sources (geometry ids) count into one layer's input_events
    model = random_conv_model(seed=1, in_shape=(1, 6, 6), convs=((4, 3, 1, 1, 1, False), (4, 3, 1, 1, 1, True)))
    return Plan(model, N_PE, "dense")


def read(ctx, dut, plan):
    return {(li, c): ctx.get(dut.layers[lp.name][c]) for li, lp in enumerate(plan.layers) for c in COUNTERS}


def test_counts_arrive_when_documented_and_sum():
    plan = make_plan()
    geos = geometries(plan)
    assert len(geos) == plan.n_layers + 1
    dut = ActivityCounters(plan)
    rng = np.random.default_rng(0)
    want = {(li, c): 0 for li in range(plan.n_layers) for c in COUNTERS}

    async def bench(ctx):
        for cyc in range(60):
            ev, acc, upd = (bool(v) for v in rng.random(3) < 0.6)
            geo = int(rng.integers(len(geos)))
            al, ul = (int(v) for v in rng.integers(plan.n_layers, size=2))
            reads, syns, spikes = (int(v) for v in rng.integers(0, 1 << N_PE, 3))
            lanes = int(rng.integers(0, N_PE + 1))
            for port, v in ((dut.event, ev), (dut.event_geo, geo), (dut.acc, acc), (dut.acc_layer, al),
                            (dut.reads, reads), (dut.syns, syns), (dut.update, upd), (dut.update_layer, ul),
                            (dut.lanes, lanes), (dut.spikes, spikes)):
                ctx.set(port, v)
            await ctx.tick()
            ctx.set(dut.event, 0), ctx.set(dut.acc, 0), ctx.set(dut.update, 0)
            if ev:  # events (already from registers) count at the next clock edge
                want[(geos[geo].layer, "input_events")] += 1
            assert read(ctx, dut, plan) == want, f"cycle {cyc}: a count early or late"
            inc = dict.fromkeys(want, 0)
            if acc:
                inc[(al, "weight_reads")] += bin(reads).count("1")
                inc[(al, "synaptic_events")] += bin(syns).count("1")
            if upd:
                inc[(ul, "membrane_reads")] += lanes
                inc[(ul, "membrane_writes")] += lanes
                inc[(ul, "spikes")] += bin(spikes).count("1")
            await ctx.tick()
            for k in want:
                want[k] += inc[k]
            assert read(ctx, dut, plan) == want, f"cycle {cyc}"
        assert min(want.values()) > 0
        # the result is taken in cycle k (nothing counts then: the sequencer is in RESULT); a count
        # presented in cycle k + 1 is kept, everything before is cleared
        ctx.set(dut.clear, 1), ctx.set(dut.stop, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0), ctx.set(dut.stop, 0)
        ctx.set(dut.update, 1), ctx.set(dut.update_layer, 0), ctx.set(dut.lanes, 2), ctx.set(dut.spikes, 0)
        await ctx.tick()
        ctx.set(dut.update, 0)
        assert all(v == 0 for v in read(ctx, dut, plan).values())
        await ctx.tick()
        got = read(ctx, dut, plan)
        assert got[(0, "membrane_reads")] == got[(0, "membrane_writes")] == 2
        assert sum(got.values()) == 4

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_cycle_counter():
    dut = ActivityCounters(make_plan())
    seen = []

    async def bench(ctx):
        ctx.set(dut.first, 1)   # the first input value is transferred in cycle 0
        await ctx.tick()
        ctx.set(dut.first, 0)
        for cyc in range(1, 12):
            ctx.set(dut.stop, 6 <= cyc)      # o_result.valid from cycle 6
            ctx.set(dut.clear, cyc == 9)     # taken in cycle 9
            seen.append(ctx.get(dut.cycles))
            await ctx.tick()
        seen.append(ctx.get(dut.cycles))
        ctx.set(dut.stop, 0), ctx.set(dut.clear, 0)
        await ctx.tick()
        seen.append(ctx.get(dut.cycles))     # not running: holds

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # cycles strictly between cycle 0 and cycle 6: 5, held while o_result.valid
    assert seen == [0, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5]
