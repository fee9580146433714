"""Pooling (OR and sum) and queue pushes (SpikePush) under Amaranth's simulator, and the push rules
that the cycle model shares with it."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from spikeloom.hw.events import spike_entry_layout
from spikeloom.hw.plan import Plan
from spikeloom.hw.pool import SpikePush, pool_words, pushes, shortcut_readers, window_end, windows
from spikeloom.model.randnet import random_conv_model

# conv1 pools by 2 and is read by conv3 through its shortcut; conv2 does not pool
MODEL = dict(in_shape=(2, 8, 8), convs=((5, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, False), (4, 1, 1, 0, 1, True)),
             hidden=(6,))
# the same with a 7x5 map pooled by 2 (floor mode: a row and a column past the last whole window)
MODEL_FLOOR = dict(MODEL, in_shape=(2, 7, 5))
# a 7x5 map pooled by 3 (a row and two columns past the last whole window), then 2x1 maps
MODEL_FLOOR3 = dict(MODEL, in_shape=(1, 7, 5), convs=((5, 3, 1, 1, 3, False),) + MODEL["convs"][1:])
MODELS = {"divides": MODEL, "floor2": MODEL_FLOOR, "floor3": MODEL_FLOOR3}


def test_shortcut_readers_and_window_rule():
    model = random_conv_model(seed=0, **MODEL)
    assert [ly.shortcut for ly in model.layers] == [None, None, "conv1", None, None]
    assert shortcut_readers(model) == {0: 2}
    for q, h, w in [(1, 3, 4), (2, 4, 6), (3, 6, 3), (2, 5, 5), (3, 7, 5), (2, 4, 3), (3, 3, 4)]:
        ends = [window_end(q, y, x) for y in range(h) for x in range(w)]
        # every whole window's pooled position exactly once, at its bottom-right update, in raster
        # order; the positions past the last whole window (floor mode) end none
        assert [e for e in ends if e is not None] == [(py, px) for py in range(h // q) for px in range(w // q)]
        assert ends[(q - 1) * w + q - 1] == (0, 0)
    for m in MODELS.values():
        plan = Plan(random_conv_model(seed=0, **m), 3, "dense")
        assert [pushes(lp) for lp in plan.layers] == [(lp.ho // lp.pool) * (lp.wo // lp.pool) * lp.chunks
                                                      for lp in plan.layers]
        assert [windows(lp) for lp in plan.layers] == [ly.out_shape[1:] for ly in plan.model.layers if ly.kind == "conv"] \
            + [(1, 1)] * (plan.n_layers - sum(ly.kind == "conv" for ly in plan.model.layers))
        # a pooled row's windows, the partial one included, per chunk
        assert [pool_words(lp) for lp in plan.layers] == [-(-lp.wo // lp.pool) * lp.chunks if lp.pool > 1 else 0
                                                          for lp in plan.layers]
    assert Plan(random_conv_model(seed=0, **MODEL_FLOOR3), 1).layers[0].pool == 3


def test_count_widths():
    """Plan.count_bits holds the largest window count of a sum-pooled layer; value_bits every value
    an event carries."""
    plan = Plan(random_conv_model(seed=0, **MODEL), 3)
    assert (plan.count_bits, plan.value_bits) == (0, 4)
    plan = Plan(random_conv_model(seed=0, pool_op="sum", **MODEL), 3)
    assert (plan.count_bits, plan.value_bits) == (3, 4)  # counts 0..4
    three = dict(in_shape=(1, 6, 6), convs=((2, 3, 1, 1, 3, False),), input_bits=2)
    plan = Plan(random_conv_model(seed=0, pool_op="sum", **three), 2)
    assert (plan.count_bits, plan.value_bits) == (4, 4)  # counts 0..9 on 2-bit inputs
    # the acc width covers the largest count times the positive weights
    ly = plan.model.layers[1]
    assert plan.acc_bits >= int(np.clip(ly.weight, 0, None).sum(axis=1).max() * 9).bit_length() + 1


# n_pe: 1 = one lane; 3 = a partial last chunk (5 channels)
@pytest.mark.parametrize("n_pe", [1, 3])
# layer: 0 = pooled and a shortcut source; 1 = unpooled, no shortcut reader
@pytest.mark.parametrize("li", [0, 1])
# pool_op: max = OR of the window (no counts); sum = layer 0's window counts (layer 1, unpooled,
# then passes counts 0/1 through the same count memory)
@pytest.mark.parametrize("pool_op", ["max", "sum"])
# net: a map that divides by pool; 7x5 by 2 and by 3 (floor mode: updates past the last whole window
# are pooled into words of their own and never pushed)
@pytest.mark.parametrize("net", sorted(MODELS))
def test_pushed_entries_are_the_pooled_spikes(n_pe, li, pool_op, net):
    plan = Plan(random_conv_model(seed=0, pool_op=pool_op, **MODELS[net]), n_pe, "dense")
    assert plan.model.layers[0].pool_op == pool_op and plan.model.layers[1].pool_op == "max"
    lp, q = plan.layers[li], plan.layers[li].pool
    rng = np.random.default_rng(n_pe + 10 * li)
    spikes = rng.random((lp.chunks * n_pe, lp.ho, lp.wo)) < (0.2 if pool_op == "max" else 0.5)
    spikes[lp.channels:] = False
    entry = spike_entry_layout(n_pe, plan.n_rows, 8, 8, plan.count_bits, plan.paired)
    counted = "count" in entry.members
    assert counted == (pool_op == "sum")
    dut = SpikePush(plan, entry, 8)
    got, pairs = {"main": [], "shortcut": []}, []

    def counts(c, ys, xs):
        """The window's count per lane as the entry carries it (0/1 for an OR-pooled layer)."""
        win = spikes[c * n_pe:(c + 1) * n_pe, ys, xs].reshape(n_pe, -1)
        return tuple(int(v) for v in (win.sum(axis=1) if plan.model.layers[li].pool_op == "sum" else win.any(axis=1)))

    def mask(c, ys, xs):
        return sum(1 << p for p, v in enumerate(counts(c, ys, xs)) if v)

    def fields(ctx, payload):
        out = tuple(ctx.get(getattr(payload, f)) for f in ("rbase", "y", "x", "mask"))
        return out + ((tuple(ctx.get(payload.count[p]) for p in range(n_pe)),) if counted else ())

    async def bench(ctx):
        ctx.set(dut.layer, li)
        for y in range(lp.ho):
            for x in range(lp.wo):
                for c in range(lp.chunks):
                    ctx.set(dut.en, 1)
                    ctx.set(dut.first, y % q == 0 and x % q == 0)
                    ctx.set(dut.last, y % q == q - 1 and x % q == q - 1)
                    ctx.set(dut.pidx, (x // q) * lp.chunks + c)
                    ctx.set(dut.py, y // q)
                    ctx.set(dut.px, x // q)
                    ctx.set(dut.rbm, 7 * c + 1)
                    ctx.set(dut.rbs, 5 * c + 2)
                    ctx.set(dut.mask, mask(c, slice(y, y + 1), slice(x, x + 1)))
                    for k, port in (("main", dut.main), ("shortcut", dut.shortcut)):
                        if ctx.get(port.valid):
                            got[k].append(fields(ctx, port.payload))
                            if k == "main":
                                pairs.append(ctx.get(port.payload.pair) if plan.paired else 0)
                    await ctx.tick()
                    # an idle cycle in between: nothing is pushed
                    ctx.set(dut.en, 0)
                    assert not ctx.get(dut.main.valid)
                    await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = []
    for py in range(lp.ho // q):
        for px in range(lp.wo // q):
            for c in range(lp.chunks):
                win = slice(py * q, py * q + q), slice(px * q, px * q + q)
                mk = mask(c, *win)
                if mk:
                    want.append((c, py, px, (mk,) + ((counts(c, *win),) if counted else ())))
    assert want, "the test needs spikes"
    if pool_op == "sum" and li == 0:
        assert max(max(v[1]) for *_, v in want) > 1, "the test needs a window with two spikes"
    assert got["main"] == [(7 * c + 1, py, px, *v) for c, py, px, v in want]
    assert got["shortcut"] == ([(5 * c + 2, py, px, *v) for c, py, px, v in want] if li == 0 else [])
    # a main entry's pair bit: its consumer (the next layer) takes two events a word
    assert pairs == [int(plan.layers[li + 1].paired)] * len(got["main"])
    if net != "divides" and li == 0:
        # spikes past the last whole window, which must not reach an entry
        hp, wp = windows(lp)
        assert spikes[:, hp * q:, :].any() or spikes[:, :, wp * q:].any(), "the test needs spikes outside windows"
