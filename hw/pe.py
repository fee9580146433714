"""One processing element: its slice of weights, input currents and membranes, and the LIF datapath."""

from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .plan import MEMORIES


def issue_layout(plan):
    """Stage-0 (read) command broadcast to every PE."""
    return data.StructLayout({
        "w_addr": unsigned(max(1, ceil_log2(plan.weight_depth))),
        "n_addr": unsigned(max(1, ceil_log2(plan.neuron_depth))),
    })


def exec_layout(plan):
    """Stage-1 (compute/write) command broadcast to every PE, one cycle after its issue."""
    return data.StructLayout({
        "acc": 1,        # acc[addr] <- (0 if zero_old else acc[addr]) + w * x
        "clear": 1,      # acc[addr] <- 0 (ignored when acc is set)
        "update": 1,     # membrane update of neuron addr
        "output": 1,     # update is the output integrator (no leak, no spike)
        "first_t": 1,    # timestep 1: the old membrane reads as 0
        "gate": 1,       # the input current reads as 0 (analog layer, all-zero image)
        "zero_old": 1,
        "addr": unsigned(max(1, ceil_log2(plan.neuron_depth))),
        "x": unsigned(plan.model.input_bits),
    })


class PE(wiring.Component):
    """Processing element ``index`` of the array.

    Two-stage pipeline: memories are read with the address in ``issue`` (cycle k); ``exe`` (cycle
    k + 1) selects what is computed from the read data and written back at the same address.

    Parameters
    ----------
    plan : Plan
    index : int
        Lane of this PE (neurons ``c * n_pe + index``).

    Members
    -------
    issue : In(issue_layout(plan))
        Read addresses, sampled at the clock edge ending cycle k.
    exe : In(exec_layout(plan))
        Command for the data read at cycle k - 1; results below are combinational in this cycle.
    lane_valid : In(1)
        This lane holds a real neuron of the current chunk (masks ``spike``).
    spike : Out(1)
        The updated neuron fired (``exe.update`` of a spiking layer, valid lane).
    w_nz : Out(1)
        The weight read for ``exe.acc`` is nonzero (a synaptic event).
    z : Out(signed(membrane_bits))
        The saturated updated membrane / output value.
    """

    def __init__(self, plan, index):
        self._plan = plan
        self._index = index
        mb = plan.membrane_bits
        super().__init__({
            "issue": In(issue_layout(plan)),
            "exe": In(exec_layout(plan)),
            "lane_valid": In(1),
            "spike": Out(1),
            "w_nz": Out(1),
            "z": Out(signed(mb)),
        })

    def elaborate(self, platform):
        m = Module()
        plan, p = self._plan, self._index
        widths, depths = plan.widths(), plan.depths()
        mems = {}
        for name in MEMORIES:
            # The weight memory is the design's bulk storage: ask for block RAM (Yosys and Vivado read
            # ram_style) even where a small one would fit in logic; the small per-neuron memories are
            # left to the tool (distributed RAM).
            attrs = {"ram_style": "block"} if name == "weight" else None
            mems[name] = m.submodules[name] = Memory(
                shape=signed(widths[name]), depth=depths[name], init=plan.init(p, name), attrs=attrs)

        w_rd = mems["weight"].read_port()
        acc_wr = mems["acc"].write_port()
        acc_rd = mems["acc"].read_port(transparent_for=(acc_wr,))
        mem_wr = mems["membrane"].write_port()
        mem_rd = mems["membrane"].read_port()
        bias_rd = mems["bias"].read_port()
        thr_rd = mems["threshold"].read_port()
        m.d.comb += [
            w_rd.addr.eq(self.issue.w_addr),
            acc_rd.addr.eq(self.issue.n_addr),
            mem_rd.addr.eq(self.issue.n_addr),
            bias_rd.addr.eq(self.issue.n_addr),
            thr_rd.addr.eq(self.issue.n_addr),
        ]

        exe = self.exe
        old_acc = Mux(exe.zero_old, 0, acc_rd.data)
        m.d.comb += [
            acc_wr.addr.eq(exe.addr),
            acc_wr.en.eq(exe.acc | exe.clear),
            acc_wr.data.eq(Mux(exe.acc, old_acc + w_rd.data * exe.x, 0)),
            self.w_nz.eq(w_rd.data != 0),
        ]

        mb = plan.membrane_bits
        k = plan.model.neuron.leak_shift
        lo, hi = -(1 << (mb - 1)), (1 << (mb - 1)) - 1
        u_old = Mux(exe.first_t, 0, mem_rd.data)
        leaked = u_old - (u_old >> k) if k else u_old
        pre = Mux(exe.output, u_old, leaked) + Mux(exe.gate, 0, acc_rd.data) + bias_rd.data
        u = self.z
        m.d.comb += u.eq(Mux(pre > hi, hi, Mux(pre < lo, lo, pre)))
        fire = u >= thr_rd.data
        after = 0 if plan.model.neuron.reset == "zero" else u - thr_rd.data
        m.d.comb += [
            mem_wr.addr.eq(exe.addr),
            mem_wr.en.eq(exe.update),
            mem_wr.data.eq(Mux(exe.output | ~fire, u, after)),
            self.spike.eq(exe.update & ~exe.output & fire & self.lane_valid),
        ]
        return m
