"""The event pipeline (EventPipeline) under Amaranth's simulator: the weight words issued for each
event, in order, with their neurons, and the pipeline's depth."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from spikeloom.hw.plan import geometries
from spikeloom.hw.pipeline import EventPipeline
from spikeloom.hw.plan import Plan
from spikeloom.model.randnet import random_conv_model

# a strided conv on the input, a conv with a 1x1 residual input, a dense layer after the map
MODEL = dict(in_shape=(2, 6, 6), convs=((4, 3, 2, 1, 1, False), (3, 3, 1, 1, 1, True)), hidden=(5,), density=0.4)
# the same with a 2x2 sum-pooled first conv on 2-bit inputs: the second conv's main and shortcut
# events carry counts 1..4, wider than the inputs (Plan.value_bits = 3)
SUM_MODEL = dict(MODEL, in_shape=(2, 8, 8), convs=((4, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, True)), input_bits=2,
                 pool_op="sum")


def expected_words(plan, gi, ch, y, x, val):
    """(w, n, val) of the words an event issues, from the plan's rows and the source's landing taps."""
    g = geometries(plan)[gi]
    lp = plan.layers[g.layer]
    row = g.row_base + g.row(ch, y, x)
    nmask = (1 << max(1, int(np.ceil(np.log2(plan.neuron_depth))))) - 1
    taps = g.landing(y, x, lp.ho, lp.wo)
    if lp.storage == "sparse":
        if not taps:
            return []
        oy, ox = ((y + g.pad) // g.stride, (x + g.pad) // g.stride) if g.conv else (0, 0)
        base = (lp.neuron_base + (oy * lp.wo + ox) * lp.chunks) & nmask
        hit = g.segment_landing(lp.segments, y, x, lp.ho, lp.wo)
        return [(plan.row_start[row] + off + k, base, val)
                for (off, ln), h in zip(plan.row_segs[row], hit) if h for k in range(ln)]
    return [(plan.row_start[row] + t * lp.chunks + k, lp.neuron_base + (oy * lp.wo + ox) * lp.chunks + k, val)
            for t, oy, ox in taps for k in range(lp.chunks)]


def expected_own_words(plan, gi, ch, y, x, val, p):
    """(w, n, val) of the words PE ``p`` reads of an event of a queued layer (hw/plan.py, "PE
    queues"): of each landing segment, its own entries only (the stored words before the padding)."""
    g = geometries(plan)[gi]
    lp = plan.layers[g.layer]
    r = g.row(ch, y, x)
    stored = plan.pe_entries(p, lp, g, r)
    words = expected_words(plan, gi, ch, y, x, val)   # every PE's words in lockstep, padding included
    start = plan.row_start[g.row_base + r]
    return [(w, n, v) for w, n, v in words if stored[w - start][0] != 0]


def events_of(plan, rng, n):
    """``n`` random events (source id, channel, y, x, value) of every source (value 1..the largest
    its source passes on: an input value, a count or 1)."""
    model, out = plan.model, []
    for gi, g in enumerate(geometries(plan)):
        ly = model.layers[g.layer]
        top = model.source(ly.shortcut).out_max if g.shortcut else model.in_max(ly)
        for _ in range(n):
            out.append((gi, int(rng.integers(g.c_in)), int(rng.integers(g.h)), int(rng.integers(g.w)),
                        int(rng.integers(1, top + 1)) if top > 1 else 1))
    return out


@pytest.mark.parametrize("storage", ["dense", "sparse", "sparse:kernel-row", "sparse:tap"])
@pytest.mark.parametrize("n_pe", [1, 3])
# model: spike events of value 1; or events of a sum-pooled layer, whose values are its counts
@pytest.mark.parametrize("model", [MODEL, SUM_MODEL], ids=["max", "sum"])
def test_issued_words(storage, n_pe, model):
    plan = Plan(random_conv_model(seed=4, **model), n_pe, storage)
    if model is SUM_MODEL:
        assert plan.value_bits == 3 > plan.model.input_bits
    geos = geometries(plan)
    dut = EventPipeline(plan, shortcut=True)
    events = events_of(plan, np.random.default_rng(n_pe), 6)
    issued, counted, first_issue, quiet_seen = [], [], [], []
    q = dut.queues   # PE queues (n_pe >= 2, compressed layers): each PE's own words
    assert (q is not None) == (storage != "dense" and n_pe > 1) == plan.queued
    own, held = [[] for _ in range(n_pe)], [None] * n_pe

    async def producer(ctx):
        ctx.set(dut.enable, 1)
        for gi, ch, y, x, val in events:
            g = geos[gi]
            port = dut.i_input if g.layer == 0 else dut.i_shortcut if g.shortcut else dut.i_main
            ctx.set(dut.load, g.layer == 0)
            ctx.set(dut.fetch_layer, g.layer)
            ctx.set(dut.fetch_shortcut, int(any(s.shortcut for s in plan.layers[g.layer].sources)))
            ctx.set(port.payload.row, g.row_base + g.row(ch, y, x))
            ctx.set(port.payload.y, y), ctx.set(port.payload.x, x), ctx.set(port.payload.val, val)
            ctx.set(port.valid, 1)
            await ctx.tick().until(port.ready)
            ctx.set(port.valid, 0)
            for _ in range(50):  # drained before the next event (bursts up to 36 words): its depth is visible
                await ctx.tick()

    async def monitor(ctx):
        cyc, offered = 0, None
        async for _, _, *v in ctx.tick().sample(
                dut.issue.valid, dut.issue.w, dut.issue.n, dut.issue.val, dut.issue.geo, dut.counted,
                dut.counted_geo, dut.quiet, dut.i_input.valid, dut.i_main.valid, dut.i_shortcut.valid,
                dut.i_input.ready, dut.i_main.ready, dut.i_shortcut.ready,
                *([] if q is None else [x for p in range(n_pe) for x in (q.valid[p], q.w[p], q.n1[p], q.val1[p],
                                                                          q.geo1[p])])):
            valid, w, n, val, geo, cnt, cgeo, quiet, *hs = v[:14]
            lanes, hs = v[14:], hs[:6]
            if any(a and b for a, b in zip(hs[:3], hs[3:])):
                offered = cyc
                first_issue.append(None)
            mine = False
            if q is not None:   # a PE's word: its address now, its neuron, value and source a cycle later
                for p in range(n_pe):
                    pv, pw, pn, pval, pgeo = lanes[5 * p:5 * p + 5]
                    if held[p] is not None:
                        own[p].append((held[p], pn, pval, pgeo))
                    held[p] = pw if pv else None
                    mine = mine or held[p] is not None
            if valid or mine:
                if valid:
                    issued.append((w, n, val, geo))
                if first_issue[-1] is None:
                    first_issue[-1] = cyc - offered
            if cnt:
                counted.append(cgeo)
            quiet_seen.append(quiet)
            cyc += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_process(monitor)
    sim.run()
    queued = lambda gi: plan.layers[geos[gi].layer].queued
    want = [(w, n, val, gi) for gi, ch, y, x, val in events if not queued(gi)
            for w, n, val in expected_words(plan, gi, ch, y, x, val)]
    assert issued == want and (want or q is not None)
    for p in range(n_pe):
        assert own[p] == [(w, n, val, gi) for gi, ch, y, x, val in events if queued(gi)
                          for w, n, val in expected_own_words(plan, gi, ch, y, x, val, p)], p
    if q is not None:   # padding skipped: some PE reads fewer words than the lockstep burst
        assert sum(map(len, own)) < n_pe * sum(len(expected_words(plan, *e)) for e in events if queued(e[0]))
    if model is SUM_MODEL:
        assert any(val > 3 and geos[gi].layer == 1 for *_, val, gi in want + [x for o in own for x in o]), \
            "no count wider than the inputs"
    # the burst rule the cycle model replays: the same number of words per event
    for gi, ch, y, x, val in events:
        assert sum(EventPipeline.bursts(plan, geos[gi], ch, y, x)[1]) == len(expected_words(plan, gi, ch, y, x, val))
    assert quiet_seen[-1] and not all(quiet_seen)
    assert counted == [gi for gi, *_ in events]
    # (a queued burst: pushed into the queues, a free walker with an empty queue takes it at once)
    assert {d for d in first_issue if d is not None} == {EventPipeline.DEPTH}


# (network, N): a packed output (4 groups of 2 lanes), a packed hidden layer (3 groups of 1 lane)
@pytest.mark.parametrize("sizes,n_pe,layer", [([20, 13, 10], 8, 1), ([16, 11, 10, 5], 3, 1)])
# events: fewer than a word's groups (only the flush word), whole words, whole words and a rest
@pytest.mark.parametrize("n_events", [2, 6, 7])
def test_packed_tail_words(sizes, n_pe, layer, n_events):
    """A packed layer's events (hw/plan.py, "Packed tail"): each issues its first chunks - 1 words
    (every lane group at the word's address), every ``groups``-th event then the packed word (lane
    group g at the tail address of the g-th event of those); the events left over keep ``quiet``
    low until ``drained``, which issues them as one more packed word of their groups."""
    from test_hw_accel import make_model

    plan = Plan(make_model(sizes, seed=80), n_pe, "dense")
    lp, g = plan.layers[layer], plan.layers[layer].sources[0]
    k, gi = lp.groups, geometries(plan).index(g)
    assert k > 1
    rows = [int(r) for r in np.random.default_rng(n_events).choice(g.rows, n_events)]
    dut = EventPipeline(plan)
    issued, quiet = [], {}

    async def producer(ctx):
        ctx.set(dut.enable, 1)
        ctx.set(dut.fetch_layer, layer)
        for r in rows:
            ctx.set(dut.i_main.payload.row, g.row_base + r)
            ctx.set(dut.i_main.payload.val, 1)
            ctx.set(dut.i_main.valid, 1)
            await ctx.tick().until(dut.i_main.ready)
            ctx.set(dut.i_main.valid, 0)
        for _ in range(12):
            await ctx.tick()
        quiet["before"] = ctx.get(dut.quiet)
        ctx.set(dut.drained, 1)
        for _ in range(4):
            await ctx.tick()
        quiet["after"] = ctx.get(dut.quiet)

    async def monitor(ctx):
        iss = dut.issue
        async for _, _, valid, w, n, packed, pkv, wg, geo in ctx.tick().sample(
                iss.valid, iss.w, iss.n, iss.packed, iss.pkv, iss.wg, iss.geo):
            if valid:
                # (every lane group reads wg: an unpacked word's must all be its address w)
                wgs = tuple(wg[j] for j in range(plan.max_groups))
                issued.append((n, geo, (packed, pkv, wgs) if packed else (0, wgs if wgs == (w,) * len(wgs) else None)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_process(monitor)
    sim.run()
    groups_of = lambda tails: tuple(tails) + (0,) * (plan.max_groups - len(tails))
    want, tails = [], []
    for r in rows:
        start = plan.row_start[g.row_base + r]
        want += [(lp.neuron_base + c, gi, (0, tuple([start + c] * plan.max_groups))) for c in range(lp.chunks - 1)]
        tails.append(start + lp.chunks - 1)
        if len(tails) == k:
            want.append((lp.neuron_base + lp.chunks - 1, gi, (1, (1 << plan.max_groups) - 1, groups_of(tails))))
            tails = []
    if tails:
        want.append((lp.neuron_base + lp.chunks - 1, gi, (1, (1 << len(tails)) - 1, None)))
    # a flush word's groups past its events read whatever the buffer held: compare its own groups only
    got = [(n, geo, (pk[0], pk[1], None)) if pk[0] and pk[1] != (1 << plan.max_groups) - 1 else (n, geo, pk)
           for n, geo, pk in issued]
    if tails:
        assert issued[-1][2][2][:len(tails)] == tuple(tails)
    assert got == want
    assert quiet == {"before": not tails, "after": 1}
