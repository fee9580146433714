"""One processing element (``hw/pe.py``) under Amaranth's simulator: the LIF datapath against
``golden.lif_step`` / ``golden.saturate`` and the accumulate path against an integer dot product."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from spikeloom.hw.pe import PE, SPIKE_STAGE, W_NZ_STAGE, Z_STAGE
from spikeloom.hw.plan import Plan
from spikeloom.model import golden
from spikeloom.model.config import FIRE_RULES, RESETS, LayerNeuron
from spikeloom.model.ir import signed_range
from spikeloom.model.randnet import random_model

NOP = {}


def run_pe(plan, p, cmds):
    """Drive one command per cycle (``issue`` fields then, a cycle later, ``exe`` fields).

    ``cmds`` are dicts with ``w_addr``, ``n_addr`` and exec fields (``NOP``: nothing). Returns, per
    command, ``(read, syn, z, spike)`` sampled at the stages the PE documents.
    """
    dut = PE(plan, p)
    exe_fields = ("acc", "clear", "update", "output", "first_t", "layer0", "img", "val")
    several = len(plan.neurons) > 1  # the commands carry the neuron model's index
    out = [dict() for _ in cmds]

    async def bench(ctx):
        for cyc in range(len(cmds) + SPIKE_STAGE + 1):
            cur = cmds[cyc] if cyc < len(cmds) else NOP
            prev = cmds[cyc - 1] if 0 < cyc <= len(cmds) else NOP
            ctx.set(dut.issue.w_addr, cur.get("w_addr", 0))
            ctx.set(dut.issue.n_addr, cur.get("n_addr", 0))
            for f in exe_fields:
                ctx.set(getattr(dut.exe, f), prev.get(f, 0))
            ctx.set(dut.exe.addr, prev.get("n_addr", 0))
            ctx.set(dut.lane_valid, prev.get("lane_valid", 1))
            ctx.set(dut.lead.first_t, cur.get("first_t", 0))
            ctx.set(dut.lead.output, cur.get("output", 0))
            ctx.set(dut.lead.lane, cur.get("lane_valid", 1))
            if several:
                ctx.set(dut.exe.neuron, prev.get("neuron", 0))
                ctx.set(dut.lead.neuron, cur.get("neuron", 0))
            for name, stage in (("read", W_NZ_STAGE), ("syn", W_NZ_STAGE), ("z", Z_STAGE), ("spike", SPIKE_STAGE)):
                if 0 <= cyc - stage < len(cmds):
                    out[cyc - stage][name] = ctx.get(getattr(dut, name))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


def acc_cmds(plan, li, x, rng, gaps, img=1):
    """Accumulate commands of layer ``li`` for input ``x`` (events in index order, all chunks)."""
    lp = plan.layers[li]
    cmds = []
    for i in np.flatnonzero(x):
        for c in range(lp.chunks):
            cmds.append({"w_addr": int(plan.row_start[i + lp.sources[0].row_base] + c), "n_addr": lp.neuron_base + c,
                         "acc": 1, "val": int(x[i]), "layer0": int(li == 0), "img": img, "tag": ("acc", i, c)})
            if gaps:
                cmds += [NOP] * int(rng.integers(0, 3))  # read-after-write distances 1, 2 and 3
    return cmds


def update_cmds(plan, li, p, *, first_t, clear=False, img=1):
    lp = plan.layers[li]
    cmds = [{"n_addr": lp.neuron_base + c, "update": 1, "output": int(lp.role == "output"),
             "first_t": int(first_t), "clear": int(clear), "layer0": int(li == 0), "img": img,
             "neuron": plan.neuron_of[li], "lane_valid": int(c * plan.n_pe + p < lp.out_features), "tag": ("update", c)}
            for c in range(lp.chunks)]
    # the sequencer issues two updates of one neuron at least Z_STAGE + 1 cycles apart
    return cmds + [NOP] * (Z_STAGE + 1)


# n_pe: 16 = every layer one chunk (back-to-back events on one acc address), 3 = several chunks
@pytest.mark.parametrize("n_pe", [3, 16])
# gaps: events back to back, or with idle cycles between them (forwarding distances 2 and 3)
@pytest.mark.parametrize("gaps", [False, True])
def test_accumulate_is_dot_product(n_pe, gaps):
    model = random_model([12, 10, 5], seed=n_pe, membrane_bits=16, weight_bits=6, input_bits=4)
    plan = Plan(model, n_pe, "dense")
    rng = np.random.default_rng(7)
    for li, in_max in ((0, 15), (1, 1)):
        ly, lp = model.layers[li], plan.layers[li]
        for p in range(n_pe):
            cmds, want = [], []
            for rep in range(3):  # new images: the analog layer's parity, the others' clear, restart the sums
                img = 1 - rep % 2
                x = rng.integers(0, in_max + 1, ly.in_features) * (rng.random(ly.in_features) < 0.7)
                x[rng.integers(ly.in_features)] = in_max  # at least one event
                cmds += acc_cmds(plan, li, x, rng, gaps, img=1 - img if li == 0 else 1) + [NOP]
                # read the sums back: output-mode update from a zero membrane, z = acc + bias
                cmds += [{**c, "output": 1, "lane_valid": 1}
                         for c in update_cmds(plan, li, p, first_t=True, clear=li > 0, img=1 - img if li == 0 else 1)]
                for c in range(lp.chunks):
                    j = c * n_pe + p
                    want.append((int(ly.weight[j] @ x) + int(ly.bias[j])) if j < ly.out_features else 0)
            out = run_pe(plan, p, cmds)
            got = [o["z"] for c, o in zip(cmds, out) if c.get("tag", ("",))[0] == "update"]
            assert got == want, f"layer {li}, pe {p}"
            syn = [(o["syn"], o["read"], c["w_addr"]) for c, o in zip(cmds, out) if c.get("acc")]
            winit = plan.init(p, "weight")
            assert all(sy == (winit[a] != 0) and rd for sy, rd, a in syn)


# leak (a, f): 0 = integrate-and-fire, (1, 2) = version 1's shift leak, (26, 8) = beta 0.9 as a
# multiplier, (3, 2) = a multiplier that is not a shift
LEAKS = [(0, 0), (1, 2), (26, 8), (3, 2)]
# the analog layer's neuron when the tested layer's differs: the PE then selects per command
OTHER = LayerNeuron(1, 1, ">=", "subtract")


@pytest.mark.parametrize("leak", LEAKS, ids=["if", "shift2", "mul26f8", "mul3f2"])
# reset: every reset of model/SEMANTICS.md, "Neuron models"
@pytest.mark.parametrize("reset", RESETS)
# fire: both firing rules
@pytest.mark.parametrize("fire", FIRE_RULES)
# membrane_bits: 6 = saturation on most updates, 16 = none
@pytest.mark.parametrize("membrane_bits", [6, 16])
def test_lif_matches_golden(leak, reset, fire, membrane_bits):
    """Layer 1's update, timestep by timestep over two images, against ``golden.lif_step`` (its
    membrane and flag carried by the golden model): the saturated sum ``z`` and the spike."""
    nr = LayerNeuron(*leak, fire, reset)
    # the analog layer has the tested neuron too (one model: no select) or, for the multiplier
    # leaks, another one (two models: the PE selects by the command's neuron field)
    alone = leak[0] <= 1
    seed = LEAKS.index(leak) + RESETS.index(reset) + membrane_bits
    model = random_model([6, 9, 7, 4], seed=seed, membrane_bits=membrane_bits, weight_bits=5, input_bits=1,
                         threshold_range=(2, 20), density=0.9, neurons=[nr if alone else OTHER, nr])
    n_pe = 4
    plan = Plan(model, n_pe, "dense")
    assert len(plan.neurons) == (1 if alone or nr.same_as(OTHER) else 2)
    rng = np.random.default_rng(seed)
    li = 1  # the spiking layer; its inputs are spikes, its acc cleared by every update
    ly, lp = model.layers[li], plan.layers[li]
    lo, hi = signed_range(membrane_bits)
    saturated = fired = flagged = 0
    for p in range(n_pe):
        js = [c * n_pe + p for c in range(lp.chunks)]
        real = [j for j in js if j < ly.out_features]
        th = ly.threshold[real]
        cmds, want = [], []
        for image in range(2):  # image 2 starts with first_t over image 1's membranes and flags
            u = np.zeros(len(real), dtype=np.int64)
            r = np.zeros(len(real), dtype=bool)
            for t in range(5):
                s_in = (rng.random(ly.in_features) < 0.6).astype(np.int64)
                cmds += acc_cmds(plan, li, s_in, rng, gaps=False) + [NOP]
                cmds += update_cmds(plan, li, p, first_t=t == 0, clear=True)
                cur = ly.weight[real] @ s_in + ly.bias[real]
                pending = np.where(r, th, 0) if reset == "subtract_next" else 0
                z = golden.saturate(golden.leak(u, nr) + cur - pending, membrane_bits)
                u, r, s = golden.lif_step(u, r, cur, th, nr, membrane_bits)
                saturated += int(((z == lo) | (z == hi)).sum())
                fired += int(s.sum())
                flagged += int(r.sum())
                want += [(int(z[k]), int(s[k])) for k in range(len(real))]
                want += [(None, 0)] * (len(js) - len(real))  # padding lanes never spike
        out = run_pe(plan, p, cmds)
        got = [(o["z"], o["spike"]) for c, o in zip(cmds, out) if c.get("tag", ("",))[0] == "update"]
        got = [(z if w[0] is not None else None, s) for (z, s), w in zip(got, want)]
        assert got == want, f"pe {p}"
    assert fired
    if reset in ("subtract_next", "subtract_recheck"):
        assert flagged  # the flag was set, and read back in a later step
    if membrane_bits == 6:
        assert saturated


# neurons: version 1's shift leak (formed in stage 1), and a multiplier leak with a pending
# reset (stage 2's leak product and threshold): neither reaches the output integrator
@pytest.mark.parametrize("neurons", [None, [LayerNeuron(26, 8, ">", "subtract_next")]], ids=["v1", "mul"])
def test_output_integrator(neurons):
    """Output layer: no leak, no spike, no reset; z accumulates with saturation."""
    model = random_model([5, 6, 7], seed=3, leak_shift=2, membrane_bits=8, weight_bits=6, input_bits=1,
                         threshold_range=(2, 20), neurons=neurons)
    n_pe = 3
    plan = Plan(model, n_pe, "dense")
    rng = np.random.default_rng(11)
    li = 1
    ly, lp = model.layers[li], plan.layers[li]
    for p in range(n_pe):
        real = [c * n_pe + p for c in range(lp.chunks) if c * n_pe + p < ly.out_features]
        cmds, want = [], []
        zs = np.zeros(len(real), dtype=np.int64)
        for t in range(5):
            s_in = (rng.random(ly.in_features) < 0.7).astype(np.int64)
            cmds += acc_cmds(plan, li, s_in, rng, gaps=True) + [NOP]
            cmds += update_cmds(plan, li, p, first_t=t == 0, clear=True)
            cur = ly.weight[real] @ s_in + ly.bias[real]
            zs = golden.saturate(zs + cur, model.neuron.membrane_bits)
            want += [int(v) for v in zs] + [None] * (lp.chunks - len(real))
        out = run_pe(plan, p, cmds)
        got = [(o["z"], o["spike"]) for c, o in zip(cmds, out) if c.get("tag", ("",))[0] == "update"]
        assert [z if w is not None else None for (z, _), w in zip(got, want)] == want, f"pe {p}"
        assert not any(s for _, s in got)


def test_analog_parity_forgets_the_previous_image():
    """The analog layer's acc words of an earlier image read as 0: an image without events sees
    only the bias, and the next image's sums do not include the earlier ones."""
    model = random_model([6, 5, 3], seed=4, membrane_bits=16, weight_bits=5, input_bits=3)
    plan = Plan(model, 2, "dense")
    ly, lp = model.layers[0], plan.layers[0]
    rng = np.random.default_rng(2)
    x1 = np.array([3, 0, 5, 1, 0, 7])
    x3 = np.array([0, 2, 0, 0, 4, 0])
    for p in range(2):
        def read_back(img):
            return [{**c, "output": 1, "lane_valid": 1} for c in update_cmds(plan, 0, p, first_t=True, img=img)]
        cmds = acc_cmds(plan, 0, x1, rng, False, img=1) + [NOP] + read_back(1)
        cmds += read_back(0)  # image 2: no events at all
        cmds += acc_cmds(plan, 0, x3, rng, False, img=1) + [NOP] + read_back(1)
        out = run_pe(plan, p, cmds)
        got = [o["z"] for c, o in zip(cmds, out) if c.get("tag", ("",))[0] == "update"]
        js = [c * 2 + p for c in range(lp.chunks)]
        want = []
        for x in (x1, np.zeros(6, int), x3):
            want += [int(ly.weight[j] @ x + ly.bias[j]) if j < ly.out_features else 0 for j in js]
        assert [g if j < ly.out_features else 0 for g, j in zip(got, js * 3)] == want, f"pe {p}"
