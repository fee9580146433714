"""One processing element: its slice of weights, input currents and membranes, and the LIF datapath."""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .plan import MEMORIES, WEIGHT_STORES

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
      registered; the acc memory is read at the command's address (data registered);
    * stage 3 (k + 3): ``acc + w * x`` (or 0) is written back to acc; the membrane update adds the
      acc value and saturates (registered as ``z``); the threshold is read;
    * stage 4 (k + 4): fire, reset and membrane write-back; ``spike`` is registered.

    The acc value a command uses in stage 3 is the one written by the command one cycle before it
    when that wrote the same address (forwarded from a register: back-to-back events on one acc
    address), else the stage-2 read: no read-after-write distance needs a stall, and no memory
    read lies in the stage-3 read-modify-write path. The membrane is read in stage 0 and written in
    stage 4 without forwarding: the sequencer issues two updates of one neuron at least 5 cycles
    apart (there is always an ACC phase or the exit wait between them).

    Parameters
    ----------
    plan : Plan
    index : int
        Lane of this PE (neurons ``c * n_pe + index``).
    weights : str
        ``"rom"``: the weight memory holds the model's weights from configuration (initial
        contents). ``"load"``: it starts empty and is written through ``load_en``/``load_data``;
        its one address (``issue.w_addr``) serves the reads and the writes, so that the memory
        maps to single-port RAM without initial contents (iCE40 UltraPlus SPRAM).

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
    load_en : In(1), only with ``weights="load"``
        Write ``load_data`` to the weight memory at ``issue.w_addr`` at the clock edge ending
        this cycle (the weight memory is not read in that cycle).
    load_data : In(signed(weight_bits)), only with ``weights="load"``
    """

    def __init__(self, plan, index, weights="rom"):
        if weights not in WEIGHT_STORES:
            raise ValueError(f"weights must be one of {WEIGHT_STORES!r}, got {weights!r}")
        self._plan = plan
        self._index = index
        self._weights = weights
        mb = plan.membrane_bits
        ports = {
            "issue": In(issue_layout(plan)),
            "exe": In(exec_layout(plan)),
            "lane_valid": In(1),
            "spike": Out(1),
            "w_nz": Out(1),
            "z": Out(signed(mb)),
        }
        if weights == "load":
            ports["load_en"] = In(1)
            ports["load_data"] = In(signed(plan.weight_bits))
        super().__init__(ports)

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
            init = [] if name == "weight" and self._weights == "load" else plan.init(p, name)
            mems[name] = m.submodules[name] = Memory(
                shape=signed(widths[name]), depth=depths[name], init=init, attrs=attrs)

        w_rd = mems["weight"].read_port()
        if self._weights == "load":
            # One address for the write and the read port, and no read while writing: Yosys maps
            # the pair to one single-port RAM port (read-during-write: don't care).
            w_wr = mems["weight"].write_port()
            m.d.comb += [
                w_wr.addr.eq(self.issue.w_addr),
                w_wr.data.eq(self.load_data),
                w_wr.en.eq(self.load_en),
                w_rd.en.eq(~self.load_en),
            ]
        acc_wr = mems["acc"].write_port()
        acc_rd = mems["acc"].read_port()
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

        # The stage-3 write of this cycle, for the stage-2 command reading the same address.
        fwd = Signal(name="fwd")
        fwd_data = Signal(signed(abits), name="fwd_data")
        m.d.sync += [
            fwd.eq(acc_wr.en & (acc_wr.addr == s2.addr)),
            fwd_data.eq(acc_wr.data),
        ]

        # Stage 3: acc write-back; integrate and saturate; threshold read.
        acc_val = Mux(fwd, fwd_data, acc_rd.data)
        old_acc = Mux(s3.zero_old, 0, acc_val)
        new_acc = Signal(signed(abits), name="new_acc")
        m.d.comb += [
            new_acc.eq(old_acc + prod),
            acc_wr.addr.eq(s3.addr),
            acc_wr.en.eq(s3.acc | s3.clear),
            acc_wr.data.eq(Mux(s3.acc, new_acc, 0)),
            thr_rd.addr.eq(s3.addr),
        ]
        pre = Signal(signed(max(mb + 2, abits) + 1), name="pre")
        m.d.comb += pre.eq(base + Mux(s3.gate, 0, acc_val))
        u = self.z
        # pre fits in mb bits iff its bits mb - 1 .. top are all equal: a short reduction instead
        # of two wide comparisons after the adder (this is the PE's longest path).
        top = pre[mb - 1:]
        fits = (top == 0) | (top == (1 << len(top)) - 1)
        m.d.sync += u.eq(Mux(fits, pre[:mb], Mux(pre[-1], lo, hi)))

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
