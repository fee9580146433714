"""The spike queue (SpikeEventSource) under Amaranth's simulator: a layer's spikes in, exactly the
golden model's fired neurons out as events (lowest index first), under random back-pressure."""

import random

import numpy as np
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.hw.events import SpikeEventSource


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n_pe=st.integers(1, 8), neurons=st.integers(1, 40),
       rate=st.floats(0.0, 1.0))
def test_events_are_the_fired_neurons(seed, n_pe, neurons, rate):
    rng = np.random.default_rng(seed)
    chunks = -(-neurons // n_pe)
    spikes = rng.random(neurons) < rate
    dut = SpikeEventSource(n_pe, chunks, chunks, max(neurons, 2), 4)
    got = []
    pick = random.Random(seed)

    async def producer(ctx):
        for c in range(chunks):
            mask = sum(1 << p for p in range(n_pe) if c * n_pe + p < neurons and spikes[c * n_pe + p])
            if not mask:
                continue  # the update unit pushes only chunks with a spike
            ctx.set(dut.push.payload.chunk, c)
            ctx.set(dut.push.payload.mask, mask)
            ctx.set(dut.push.valid, 1)
            await ctx.tick().until(dut.push.ready)
        ctx.set(dut.push.valid, 0)

    async def consumer(ctx):
        for _ in range(4 * neurons + 20):
            ready = pick.random() < 0.7
            ctx.set(dut.events.ready, ready)
            await ctx.tick()
        ctx.set(dut.events.ready, 0)

    async def monitor(ctx):
        async for _, _, valid, ready, index, x in ctx.tick().sample(
                dut.events.valid, dut.events.ready, dut.events.payload.index, dut.events.payload.x):
            if valid and ready:
                got.append((index, x))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_process(monitor)
    sim.run_until(1e-6 * (4 * neurons + 30))
    assert [i for i, _ in got] == np.flatnonzero(spikes).tolist()
    assert all(x == 1 for _, x in got)
