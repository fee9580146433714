"""The exit unit (Top2) under Amaranth's simulator against the golden model's top-2 margin and argmax."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.hw.top2 import Top2
from spikeloom.model import golden


def run_top2(z, n_lanes, bits, threshold=0, idle=None, port=False):
    """Feed the K values of each row of ``z`` in chunks of ``n_lanes``, the rows back to back, or
    with ``idle[i]`` cycles without a step (``en`` low) before step ``i``. ``port``: the threshold
    through the member ``threshold`` with every step (another value in the cycles without one).

    Returns (top1, top2, index, margin_ok) per row, sampled ``dut.latency`` cycles after the row's
    last chunk (``margin_ok`` in the same cycle as the values); every later cycle before the next
    row's first step is included must show the same outputs (the values and their margin stay
    while no step comes).
    """
    dut = Top2(n_lanes, bits, z.shape[1], None if port else threshold)
    assert dut.latency == Top2.latency_of(n_lanes) == (
        max(0, int(np.ceil(np.log2(n_lanes)))) + 1 + (n_lanes >= Top2.INPUT_REGISTER_LANES))
    steps = []  # (lanes, base, restart, row whose last chunk this is, or None)
    for r, row in enumerate(z):
        bases = list(range(0, len(row), n_lanes))
        steps += [(row[b:b + n_lanes], b, c == 0, r if c == len(bases) - 1 else None) for c, b in enumerate(bases)]
    idle = [0] * len(steps) if idle is None else idle
    schedule = [s for i, step in enumerate(steps) for s in [None] * idle[i] + [step]]
    out = {}

    async def bench(ctx):
        merged = None   # the last step the outputs include
        for cyc in range(len(schedule) + dut.latency + 2):
            step = schedule[cyc] if cyc < len(schedule) else None
            if step is not None:
                lanes, base, restart, _ = step
                for p in range(n_lanes):
                    ctx.set(dut.values[p], int(lanes[p]) if p < len(lanes) else 0)
                ctx.set(dut.valid, (1 << len(lanes)) - 1)
                ctx.set(dut.base, base)
            ctx.set(dut.en, step is not None)
            ctx.set(dut.restart, step is not None and step[2])
            if port:
                ctx.set(dut.threshold, threshold if step is not None else ~threshold & ((1 << bits) - 1))
            await ctx.tick()
            done = cyc + 1 - dut.latency  # the cycle whose step (if any) the outputs now include
            if 0 <= done < len(schedule) and schedule[done] is not None:
                merged = schedule[done]
            if merged is not None and merged[3] is not None:
                got = (ctx.get(dut.top1), ctx.get(dut.top2), ctx.get(dut.top1_index), ctx.get(dut.margin_ok))
                assert out.setdefault(merged[3], got) == got, (merged[3], got, out[merged[3]])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sorted(out) == list(range(len(z)))
    return np.array([out[r] for r in range(len(z))])


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 40),
       n_lanes=st.one_of(st.integers(1, 8), st.sampled_from([16, 17, 24])), ties=st.booleans(),
       gaps=st.booleans(), threshold=st.sampled_from([0, 1, 2, 3, 40, 255, 511, 512, 1 << 40]), port=st.booleans())
def test_top2_matches_golden(seed, k, n_lanes, ties, gaps, threshold, port):
    """Lane counts below and from ``INPUT_REGISTER_LANES`` on, rows of one chunk and of several,
    steps back to back or with idle cycles between them; the threshold a constant or given with
    the steps (``port``: up to 255, the member's 8 bits)."""
    rng = np.random.default_rng(seed)
    bits = 8
    threshold = min(threshold, (1 << bits) - 1) if port else threshold
    # small ranges make equal values (ties) frequent
    z = rng.integers(-3, 4, (6, k)) if ties else rng.integers(-(1 << 7), 1 << 7, (6, k))
    chunks = 6 * -(-k // n_lanes)
    got = run_top2(z, n_lanes, bits, threshold, idle=list(rng.integers(0, 3, chunks)) if gaps else None, port=port)
    assert (got[:, 0] - got[:, 1] == golden.top2_margin(z)).all()
    assert (got[:, 2] == golden.first_argmax(z)).all()
    assert (got[:, 0] == z.max(axis=1)).all()
    assert (got[:, 3] == (golden.top2_margin(z) >= threshold)).all()


@pytest.mark.parametrize("port", [False, True])
@pytest.mark.parametrize("n_lanes", [1, 4, 8, 16])  # one lane, lanes < K, ranked, lanes > K (padding lanes)
def test_extremes(n_lanes, port):
    z = np.array([[127, -128, 127, 0, -128, 5, 5, 5, 126, 127]])
    got = run_top2(z, n_lanes, 8, threshold=1, port=port)
    assert got.tolist() == [[127, 127, 0, 0]]
    # the largest margin there is: 127 - (-128), met by the largest threshold the member holds
    z = np.array([[127, -128]])
    assert run_top2(z, n_lanes, 8, threshold=255, port=port).tolist() == [[127, -128, 0, 1]]
    assert run_top2(z, n_lanes, 8, threshold=254, port=port).tolist() == [[127, -128, 0, 1]]
    if not port:
        assert run_top2(z, n_lanes, 8, threshold=256).tolist() == [[127, -128, 0, 0]]
    z = np.array([[126, -128]])
    assert run_top2(z, n_lanes, 8, threshold=255, port=port).tolist() == [[126, -128, 0, 0]]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_lanes=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 12, 16]), k=st.integers(1, 4),
       threshold=st.sampled_from([0, 1, 5, 40]), port=st.booleans())
def test_invalid_lanes_are_ignored(seed, n_lanes, k, threshold, port):
    """Steps with invalid lanes (and steps with no valid lane at all): the outputs are
    those of the valid values alone (one lane merges its step without a tree, the valid bit
    entering the comparisons' results)."""
    rng = np.random.default_rng(seed)
    bits = 6
    dut = Top2(n_lanes, bits, k * n_lanes, None if port else threshold)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    # sparse, half or dense valid lanes (steps with no valid lane, or one); values from a few
    # (ties) or from the whole range
    density, span = rng.choice([0.0, 0.2, 0.5, 0.9]), rng.choice([3, hi - lo])
    steps = [(rng.integers(lo, lo + span, n_lanes), (rng.random(n_lanes) < density).astype(int)) for _ in range(k)]
    steps[0][1][0] = 1  # the restart step has a valid lane
    got = []

    async def bench(ctx):
        for cyc in range(k + dut.latency):
            if cyc < k:
                vals, valid = steps[cyc]
                for p in range(n_lanes):
                    ctx.set(dut.values[p], int(vals[p]))
                ctx.set(dut.valid, int(sum(int(v) << p for p, v in enumerate(valid))))
                ctx.set(dut.base, cyc * n_lanes)
                ctx.set(dut.en, 1)
                ctx.set(dut.restart, cyc == 0)
                if port:
                    ctx.set(dut.threshold, threshold)
            else:
                ctx.set(dut.en, 0)
                if port:
                    ctx.set(dut.threshold, (1 << bits) - 1)
            await ctx.tick()
        got.extend([ctx.get(dut.top1), ctx.get(dut.top2), ctx.get(dut.top1_index), ctx.get(dut.margin_ok)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    seen = [(int(v), c * n_lanes + p) for c, (vals, valid) in enumerate(steps)
            for p, v in enumerate(vals) if valid[p]]
    ordered = sorted(seen, key=lambda e: (-e[0], e[1]))
    top2 = ordered[1][0] if len(ordered) > 1 else -(1 << bits)
    assert got == [ordered[0][0], top2, ordered[0][1], int(ordered[0][0] - top2 >= threshold)]


@pytest.mark.parametrize("n_lanes", [1, 2, 8, 16])
@pytest.mark.parametrize("threshold", [0, 1, None])
def test_outputs_before_any_step(n_lanes, threshold):
    """Before a step: top1 = top2 = none and ``margin_ok`` their margin (0 >= threshold), held
    while ``en`` stays low (``margin_ok`` keeps itself when the running values stay); with the
    threshold given with the steps (None), 0."""
    dut = Top2(n_lanes, 6, 10, threshold)
    seen = []

    async def bench(ctx):
        for _ in range(dut.latency + 3):
            ctx.set(dut.values[0], 5)
            ctx.set(dut.valid, 1)
            seen.append((ctx.get(dut.top1), ctx.get(dut.top2), ctx.get(dut.margin_ok)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert set(seen) == {(-64, -64, int(threshold == 0))}   # None == 0 is False


def test_ordered_comparisons_match_signed():
    """``hw/common.py`` ``signed_ge`` (the exit unit's and the PE's firing comparisons): every pair
    of a signed and an unsigned or wider signed value compares as integers do."""
    from amaranth import Module, Signal, signed, unsigned

    from spikeloom.hw.common import signed_ge

    a, b, c = Signal(signed(4)), Signal(unsigned(3)), Signal(signed(5))
    cases = {"a>=b": (signed_ge(a, b), lambda x, y, z: x >= y), "a>b": (signed_ge(a, b, True), lambda x, y, z: x > y),
             "a>=c": (signed_ge(a, c), lambda x, y, z: x >= z), "c>a": (signed_ge(c, a, True), lambda x, y, z: z > x),
             "b>=a": (signed_ge(b, a), lambda x, y, z: y >= x)}
    m = Module()
    outs = {k: Signal(name=k.replace(">", "gt").replace("=", "e")) for k in cases}
    m.d.comb += [outs[k].eq(v[0]) for k, v in cases.items()]
    bad = []

    async def bench(ctx):
        for x in range(-8, 8):
            for y in range(8):
                for z in range(-16, 16):
                    ctx.set(a, x), ctx.set(b, y), ctx.set(c, z)
                    bad.extend((k, x, y, z) for k, (_, f) in cases.items() if ctx.get(outs[k]) != f(x, y, z))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, bad[:5]


@pytest.mark.parametrize("n_lanes", [1, 2, 4, 8, 16])
def test_the_comparisons_are_carry_chains_only(n_lanes):
    """No ``$gt`` / ``$le`` cell (Yosys gives those an equality tree beside the carry chain, whose
    LUT levels were the ECP5 exit unit's critical path): strict comparisons go through
    ``common.greater`` (``b < a``)."""
    import re

    from amaranth.back import rtlil

    text = rtlil.convert(Top2(n_lanes, 16, 10, threshold=3)) + rtlil.convert(Top2(n_lanes, 16, 10, threshold=None))
    cells = re.findall(r"^\s*cell \\?\$(\w+)", text, re.M)
    assert "lt" in cells or "ge" in cells, sorted(set(cells))
    assert not {"gt", "le"} & set(cells), sorted(set(cells))
