"""The spike queue (SpikeEventSource) under Amaranth's simulator: a layer's spikes (or a sum-pooled
layer's window counts) in, exactly the golden model's fired neurons (nonzero counts) out as events
with their values (lowest index first), under random back-pressure."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.hw.events import InputEventSource, SpikeEventSource, event_layout, spike_entry_layout


# count_bits: 0 = spike entries (every event's value is 1); 3 = a 2x2 sum pool's counts 0..4;
# 4 = a 3x3 sum pool's counts 0..9 (wider than the 3-bit event value would be without them);
# pairs: entries of a paired consumer (hw/plan.py, "Paired events") drawn at random among them
@pytest.mark.parametrize("count_bits,pairs", [(0, False), (3, False), (4, False), (0, True)])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n_pe=st.integers(1, 8), neurons=st.integers(1, 40),
       rate=st.floats(0.0, 1.0))
def test_events_are_the_fired_neurons(seed, n_pe, neurons, rate, count_bits, pairs):
    """Every fired neuron once, in order, with its value; a paired entry's events two a cycle (its
    lowest two lanes left; the last alone when odd), an unpaired entry's one a cycle."""
    rng = np.random.default_rng(seed)
    chunks = -(-neurons // n_pe)
    top = {0: 1, 3: 4, 4: 9}[count_bits]
    values = rng.integers(1, top + 1, neurons) * (rng.random(neurons) < rate)
    spikes = values != 0
    paired = [bool(v) for v in rng.random(chunks) < 0.6] if pairs else [False] * chunks
    layout = event_layout(max(neurons, 2), 3, 3, max(3, count_bits), n_pe if pairs else 0)
    dut = SpikeEventSource(n_pe, chunks, spike_entry_layout(n_pe, max(neurons, 2), 3, 3, count_bits, pairs), layout)
    got, words = [], []
    pick = random.Random(seed)

    async def producer(ctx):
        for c in range(chunks):
            mask = sum(1 << p for p in range(n_pe) if c * n_pe + p < neurons and spikes[c * n_pe + p])
            if not mask:
                continue  # the update unit pushes only chunks with a spike
            ctx.set(dut.push.payload.rbase, c * n_pe)
            ctx.set(dut.push.payload.y, c % 3)
            ctx.set(dut.push.payload.x, (c + 1) % 3)
            ctx.set(dut.push.payload.mask, mask)
            if pairs:
                ctx.set(dut.push.payload.pair, int(paired[c]))
            if count_bits:
                for p in range(n_pe):
                    ctx.set(dut.push.payload.count[p], int(values[c * n_pe + p]) if c * n_pe + p < neurons else 0)
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
        ev = dut.events.payload
        extra = (ev.two, ev.d2) if pairs else (dut.events.valid, dut.events.valid)
        async for _, _, valid, ready, row, y, x, val, two, d2 in ctx.tick().sample(
                dut.events.valid, dut.events.ready, ev.row, ev.y, ev.x, ev.val, *extra):
            if valid and ready:
                got.append((row, val))
                two = pairs and two
                words.append([row] + [row + d2] * two)
                if two:
                    assert 1 <= d2 < n_pe and val == 1
                    got.append((row + d2, 1))
                assert (y, x) == ((row // n_pe) % 3, (row // n_pe + 1) % 3)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_process(monitor)
    sim.run_until(1e-6 * (4 * neurons + 30))
    assert [i for i, _ in got] == np.flatnonzero(spikes).tolist()
    assert [v for _, v in got] == values[spikes].tolist()
    # per entry: a paired one's lanes two to a word, an unpaired one's one
    want = []
    for c in range(chunks):
        lanes = [i for i in np.flatnonzero(spikes).tolist() if i // n_pe == c]
        step = 2 if paired[c] else 1
        want += [lanes[j:j + step] for j in range(0, len(lanes), step)]
    assert words == want


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.sampled_from([(7,), (2, 3, 4), (1, 2, 2)]))
def test_input_events_carry_position(seed, shape):
    """Nonzero input values become events (channel/index row, y, x, value); zeros are taken at once."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    vals = rng.integers(0, 4, size) * (rng.random(size) < 0.5)
    full = shape if len(shape) == 3 else (shape[0], 1, 1)
    dut = InputEventSource(shape, 2, event_layout(max(full[0], 2), 4, 4, 2))
    got = []

    async def bench(ctx):
        ctx.set(dut.enable, 1)
        ctx.set(dut.events.ready, 1)
        for v in vals:
            ctx.set(dut.i_data.valid, 1)
            ctx.set(dut.i_data.payload, int(v))
            _, _, ev_valid, row, y, x, val = await ctx.tick().sample(
                dut.events.valid, dut.events.payload.row, dut.events.payload.y, dut.events.payload.x,
                dut.events.payload.val)
            if ev_valid:
                got.append((row, y, x, val))
        ctx.set(dut.i_data.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.done)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = []
    for i in np.flatnonzero(vals):
        c, rem = divmod(int(i), full[1] * full[2])
        want.append((c, rem // full[2], rem % full[2], int(vals[i])))
    assert got == want


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_pe=st.sampled_from([1, 2, 3, 4, 8]), entries=st.integers(1, 40),
       depth=st.integers(1, 12), push_rate=st.floats(0.2, 1.0), ready_rate=st.floats(0.1, 1.0))
def test_queue_has_first_word_fall_through_timing(seed, n_pe, entries, depth, push_rate, ready_rate):
    """Cycle by cycle, the events are those of an unbounded first-word-fall-through queue whose
    entry is split lane by lane: an entry pushed in cycle k is an event from cycle k + LATENCY when
    the entries before it are taken, under random pushes (held while ``ready`` is low: a queue
    memory shallower than the entries fills up and its pointers wrap) and back-pressure; ``empty``
    is high exactly when nothing pushed in an earlier cycle is left."""
    rng = random.Random(seed)
    masks = [rng.randrange(1, 1 << n_pe) for _ in range(entries)]
    layout = event_layout(max(entries * n_pe, 2), 3, 3, 3)
    dut = SpikeEventSource(n_pe, depth, spike_entry_layout(n_pe, max(entries * n_pe, 2), 3, 3), layout)
    lanes = sum(bin(mask).count("1") for mask in masks)
    pushes = []   # (cycle, rbase, mask)
    seen = []     # per cycle: (valid, row, ready, empty)

    async def producer(ctx):
        c = 0
        for e, mask in enumerate(masks):
            while rng.random() > push_rate:
                await ctx.tick()
                c += 1
            ctx.set(dut.push.payload.rbase, e * n_pe)
            ctx.set(dut.push.payload.mask, mask)
            ctx.set(dut.push.valid, 1)
            while not ctx.get(dut.push.ready):
                await ctx.tick()
                c += 1
            pushes.append((c, e * n_pe, mask))
            await ctx.tick()
            c += 1
            ctx.set(dut.push.valid, 0)

    async def consumer(ctx):
        taken = 0
        while taken < lanes or len(seen) < 3:   # until every event is taken (and a little more)
            ready = rng.random() < ready_rate
            ctx.set(dut.events.ready, ready)
            valid, row = ctx.get(dut.events.valid), ctx.get(dut.events.payload.row)
            seen.append((valid, row if valid else None, ready, ctx.get(dut.empty)))
            taken += valid and ready
            await ctx.tick()
        for _ in range(3):
            seen.append((ctx.get(dut.events.valid), None, False, ctx.get(dut.empty)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()

    # the reference queue, driven by the same pushes and ready
    lat = SpikeEventSource.LATENCY
    want, hold, fifo, i = [], [], [], 0
    for c, (_, _, ready, _) in enumerate(seen):
        on_way = any(c - lat < p < c for p, _, _ in pushes)   # pushed, not yet queued here
        want.append((bool(hold), hold[0] if hold else None, not hold and not fifo and not on_way))
        if hold and ready:
            hold.pop(0)
        while i < len(pushes) and pushes[i][0] + lat - 1 == c:   # queued from now on
            fifo.append([pushes[i][1] + p for p in range(n_pe) if pushes[i][2] >> p & 1])
            i += 1
        if not hold and fifo:
            hold = fifo.pop(0)
    assert [(bool(v), r, bool(e)) for v, r, _, e in seen] == want
    assert not hold and not fifo
