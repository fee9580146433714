"""One processing element: its slice of weights, input currents and membranes, and the LIF datapath."""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .plan import MEMORIES

#: Pipeline stages of the PE outputs (stage ``s`` of a command issued in cycle k is cycle k + s;
#: ``exe`` is stage 1): ``w_nz`` in stage 3, ``z`` in stage 4, ``spike`` in stage 5.
W_NZ_STAGE, Z_STAGE, SPIKE_STAGE = 3, 4, 5


def issue_layout(plan):
    """Stage-0 (read) command broadcast to every PE."""
    return data.StructLayout({
        "w_addr": unsigned(max(1, ceil_log2(plan.weight_depth))),
        "n_addr": unsigned(max(1, ceil_log2(plan.neuron_depth))),
    })


def exec_layout(plan):
    """Stage-1 (compute) command broadcast to every PE, one cycle after its issue."""
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

    Five-stage pipeline for a command whose ``issue`` is sampled in cycle k (stage 0):

    * stage 0 (k): weight, membrane and bias memories read at ``issue``'s addresses;
    * stage 1 (k + 1, ``exe``): the read data are registered (the block RAM's output register);
    * stage 2 (k + 2): ``w * x`` and the leaked old membrane plus bias are computed and
      registered; the acc memory is read at the command's address;
    * stage 3 (k + 3): ``acc + w * x`` (or 0) is written back to acc; the membrane update adds the
      acc value and saturates (registered as ``z``); the threshold is read;
    * stage 4 (k + 4): fire, reset and membrane write-back; ``spike`` is registered.

    The acc read (stage 2) is transparent for the acc write (stage 3), so a command reads the value
    written by the command one cycle before it (back-to-back events on one acc address): no
    read-after-write distance needs a stall. The membrane is read in stage 0 and written in
    stage 4 without forwarding: the sequencer issues two updates of one neuron at least 5 cycles
    apart (there is always an ACC phase or the exit wait between them).

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
        Command for the data read at cycle k - 1 (stage 1).
    lane_valid : In(1)
        With ``exe``: this lane holds a real neuron of the current chunk (masks ``spike``).
    w_nz : Out(1)
        Registered, stage ``W_NZ_STAGE`` (3): the weight read for the command was nonzero (a
        synaptic event when that command was ``acc``).
    z : Out(signed(membrane_bits))
        Registered, stage ``Z_STAGE`` (4): the saturated updated membrane / output value of an
        ``update`` command.
    spike : Out(1)
        Registered, stage ``SPIKE_STAGE`` (5): the updated neuron fired (``update`` of a spiking
        layer, valid lane).
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

        mb = plan.membrane_bits
        k = plan.model.neuron.leak_shift
        lo, hi = -(1 << (mb - 1)), (1 << (mb - 1)) - 1
        abits = widths["acc"]
        exe = self.exe

        # Stage 2..4 control: the stage-1 command and lane_valid, delayed.
        s2, s3, s4 = (Signal(exec_layout(plan), name=f"s{i}") for i in (2, 3, 4))
        s2_lane, s3_lane, s4_lane = (Signal(name=f"s{i}_lane") for i in (2, 3, 4))
        m.d.sync += [s2.eq(exe), s3.eq(s2), s4.eq(s3),
                     s2_lane.eq(self.lane_valid), s3_lane.eq(s2_lane), s4_lane.eq(s3_lane)]

        # Stage 0: reads.
        m.d.comb += [
            w_rd.addr.eq(self.issue.w_addr),
            mem_rd.addr.eq(self.issue.n_addr),
            bias_rd.addr.eq(self.issue.n_addr),
        ]

        # Stage 1: register the read data (block RAM clock-to-output is slow).
        w1 = Signal.like(w_rd.data, name="w1")
        mem1 = Signal.like(mem_rd.data, name="mem1")
        bias1 = Signal.like(bias_rd.data, name="bias1")
        m.d.sync += [w1.eq(w_rd.data), mem1.eq(mem_rd.data), bias1.eq(bias_rd.data)]

        # Stage 2: product, leak + bias; acc read.
        prod = Signal(signed(widths["weight"] + plan.model.input_bits + 1), name="prod")
        base = Signal(signed(mb + 2), name="base")
        u_old = Mux(s2.first_t, 0, mem1)
        leaked = u_old - (u_old >> k) if k else u_old
        m.d.comb += acc_rd.addr.eq(s2.addr)
        m.d.sync += [
            prod.eq(w1 * s2.x),
            base.eq(Mux(s2.output, u_old, leaked) + bias1),
            self.w_nz.eq(w1 != 0),
        ]

        # Stage 3: acc write-back; integrate and saturate; threshold read.
        old_acc = Mux(s3.zero_old, 0, acc_rd.data)
        new_acc = Signal(signed(abits), name="new_acc")
        m.d.comb += [
            new_acc.eq(old_acc + prod),
            acc_wr.addr.eq(s3.addr),
            acc_wr.en.eq(s3.acc | s3.clear),
            acc_wr.data.eq(Mux(s3.acc, new_acc, 0)),
            thr_rd.addr.eq(s3.addr),
        ]
        pre = Signal(signed(max(mb + 2, abits) + 1), name="pre")
        m.d.comb += pre.eq(base + Mux(s3.gate, 0, acc_rd.data))
        u = self.z
        m.d.sync += u.eq(Mux(pre > hi, hi, Mux(pre < lo, lo, pre)))

        # Stage 4: fire, reset, membrane write-back.
        fire = u >= thr_rd.data
        after = 0 if plan.model.neuron.reset == "zero" else u - thr_rd.data
        m.d.comb += [
            mem_wr.addr.eq(s4.addr),
            mem_wr.en.eq(s4.update),
            mem_wr.data.eq(Mux(s4.output | ~fire, u, after)),
        ]
        m.d.sync += self.spike.eq(s4.update & ~s4.output & fire & s4_lane)
        return m
