"""The trace queue (TraceQueue) under Amaranth's simulator: entries out in order under random
back-pressure, each readable from the cycle after its push, and ``empty``."""

import random

from amaranth import unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from spikeloom.hw.trace import TraceQueue

LAYOUT = data.StructLayout({"layer": unsigned(2), "pos": unsigned(5), "mask": unsigned(3)})


def test_fifo_order_latency_and_empty():
    dut = TraceQueue(LAYOUT, 6)
    rng = random.Random(0)
    pushes = [(i % 4, i % 32, (i % 7) + 1) for i in range(6)] * 3
    got, log = [], []

    async def bench(ctx):
        assert ctx.get(dut.empty) and not ctx.get(dut.pop.valid)
        i = 0
        for cyc in range(120):
            # a burst of at most `depth` entries, then it drains (the sequencer waits for `empty`)
            push = i < len(pushes) and (cyc // 10) % 2 == 0 and rng.random() < 0.8
            ready = rng.random() < 0.6
            if push:
                layer, pos, mask = pushes[i]
                ctx.set(dut.push.payload.layer, layer)
                ctx.set(dut.push.payload.pos, pos)
                ctx.set(dut.push.payload.mask, mask)
            ctx.set(dut.push.valid, push)
            ctx.set(dut.pop.ready, ready)
            if ctx.get(dut.pop.valid) and ready:
                p = dut.pop.payload
                got.append((ctx.get(p.layer), ctx.get(p.pos), ctx.get(p.mask)))
            log.append((push, ctx.get(dut.empty), ctx.get(dut.pop.valid)))
            if push:
                assert ctx.get(dut.push.ready)
                i += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == pushes
    # empty <=> nothing to pop; an entry pushed into an empty queue is poppable in the next cycle
    assert all(e == (not v) for _, e, v in log)
    assert all(log[c + 1][2] for c in range(len(log) - 1) if log[c][0] and log[c][1])
