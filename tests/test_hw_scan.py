"""The update scan (UpdateScan) under Amaranth's simulator: every update of a layer's pass, in
order, with the fields the plan's geometry gives for it."""

import pytest
from amaranth.sim import Simulator

from spikeloom.hw.plan import Plan
from spikeloom.hw.pool import pool_words, shortcut_readers
from spikeloom.hw.scan import UpdateScan
from spikeloom.model.randnet import random_conv_model

# conv layers (C_out, k, stride, pad, pool, shortcut): a pooled conv read by a conv, a strided conv,
# a conv with a residual input and a pooled map read by a dense layer
NETS = [
    dict(in_shape=(2, 8, 8), convs=((5, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, False), (4, 3, 1, 1, 2, True)),
         hidden=(6,)),
    dict(in_shape=(1, 8, 8), convs=((3, 3, 2, 1, 1, False), (6, 1, 1, 0, 2, True)), hidden=()),
    # floor mode: 5x5 pooled by 2 and read by a residual layer; 7x5 pooled by 3 before a dense layer
    dict(in_shape=(2, 5, 5), convs=((5, 3, 1, 1, 2, False), (3, 3, 1, 1, 1, False), (4, 1, 1, 0, 1, True)),
         hidden=(6,)),
    dict(in_shape=(1, 7, 5), convs=((4, 3, 1, 1, 3, False),), hidden=(6,)),
]


def expected(plan, li):
    """Per update of layer ``li``: the fields, from the layer's map and its readers' row functions
    (an update past the last whole window, floor mode: those an entry never carries are left out)."""
    lp, n = plan.layers[li], plan.n_pe
    q = lp.pool
    sc_of = shortcut_readers(plan.model)
    nxt = plan.layers[li + 1].sources[0] if li + 1 < plan.n_layers else None
    sc = plan.layers[sc_of[li]].sources[1] if li in sc_of else None
    out = []
    for y in range(lp.ho):
        for x in range(lp.wo):
            for c in range(lp.chunks):
                py, px = y // q, x // q
                row = {
                    "c": c, "pos": y * lp.wo + x, "pidx": px * lp.chunks + c,
                    "first": int(y % q == 0 and x % q == 0), "last": int(y % q == q - 1 and x % q == q - 1),
                    "lanes": min(n, lp.channels - c * n),
                }
                if py < lp.ho // q and px < lp.wo // q:
                    row.update({
                        "py": py, "px": px,
                        "rbm": nxt.row_base + nxt.row(c * n, py, px) if nxt else c * n,
                        "rbs": sc.row_base + sc.row(c * n, py, px) if sc else c * n,
                    })
                out.append(row)
    return out


@pytest.mark.parametrize("net", range(len(NETS)))
# n_pe: 1 = one lane; 3 = channel counts not multiples of it (a partial last chunk)
@pytest.mark.parametrize("n_pe", [1, 3])
def test_scan_order_and_fields(net, n_pe):
    plan = Plan(random_conv_model(seed=net, **NETS[net]), n_pe, "dense")
    dut = UpdateScan(plan)
    fields = ("c", "pos", "py", "px", "pidx", "first", "last", "lanes", "rbm", "rbs")
    got = {}

    async def bench(ctx):
        for li, lp in enumerate(plan.layers):
            ctx.set(dut.layer, li)
            assert ctx.get(dut.last_chunk) == lp.chunks - 1
            assert ctx.get(dut.last_lanes) == lp.last_lanes
            rows = got[li] = []
            for k in range(lp.updates):
                # one idle cycle in the middle of the pass: the counters hold without `step`
                if k == lp.updates // 2:
                    ctx.set(dut.step, 0)
                    await ctx.tick()
                ctx.set(dut.step, 1)
                ctx.set(dut.restart, k == lp.updates - 1)
                rows.append({f: ctx.get(getattr(dut, f)) for f in fields})
                await ctx.tick()
            ctx.set(dut.step, 0)
            ctx.set(dut.restart, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for li in range(plan.n_layers):
        want = expected(plan, li)
        assert len(got[li]) == len(want)
        for k, (g, w) in enumerate(zip(got[li], want)):
            assert {f: g[f] for f in w} == w, f"layer {li} update {k}"
    lp = plan.layers[0]
    floor = lp.ho % lp.pool or lp.wo % lp.pool
    assert floor == (net >= 2)
    if floor:
        # the partial windows have pool words of their own, inside the pool memory
        assert max(r["pidx"] for r in got[0]) == pool_words(lp) - 1
        assert not any(r["last"] for r, w in zip(got[0], expected(plan, 0)) if "py" not in w)
