"""The sequencer: the phases of an inference and the command broadcast to the PEs."""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from .common import bits, per_layer
from .counters import ActivityCounters
from .pe import PE, exec_layout
from .pipeline import issue_signature
from .pool import shortcut_readers
from .scan import UpdateScan, scan_widths
from .top2 import Top2


class Phase(enum.Enum, shape=3):
    INIT = 0
    LOAD = 1
    UPDATE = 2
    ACC = 3
    EXIT_WAIT = 4
    EXIT = 5
    RESULT = 6
    WEIGHTS = 7


def exit_wait(n_pe):
    """Cycles of ``EXIT_WAIT``: between the last output update's issue and ``EXIT``, the longer of
    two waits. The exit unit's values, and the registered margin comparison beside them, are in
    place ``PE.Z_STAGE + Top2.latency_of(n_pe) - 1`` cycles after the issue. The last update's
    count reaches the activity counters ``ActivityCounters.LATENCY`` cycles after the PE's spike
    stage, which the result (a cycle after ``EXIT``) must include: ``PE.SPIKE_STAGE +
    ActivityCounters.LATENCY - 2``, the longer wait when the exit unit's tree is short (N <= 2)."""
    return max(PE.Z_STAGE + Top2.latency_of(n_pe) - 1, PE.SPIKE_STAGE + ActivityCounters.LATENCY - 2)


def control_layout(plan):
    """The command of one cycle with the update's bookkeeping, as it travels along the PE pipeline."""
    return data.StructLayout({"cmd": exec_layout(plan), "layer": unsigned(bits(plan.n_layers)),
                              **{k: unsigned(w) for k, w in scan_widths(plan).items()},
                              **({"pkv": unsigned(plan.max_groups)} if plan.max_groups else {})})


class Sequencer(wiring.Component):
    """Phases, layer, timestep and the command to the PEs (see :mod:`spikeloom.hw.accel`).

    ``INIT`` clears every neuron's acc word (``neuron_depth`` cycles); ``LOAD`` and ``ACC`` pass
    the issued words of the event pipeline to the PEs as accumulate commands; ``UPDATE`` issues
    one chunk of one position per cycle (:class:`~spikeloom.hw.scan.UpdateScan`), stalling at the
    start of a spiking layer until the trace queue is empty; ``EXIT_WAIT`` lasts ``exit_wait``
    cycles; ``EXIT`` ends the image or starts the next timestep; ``RESULT`` holds until the result
    is taken. With weights loaded through the port, ``WEIGHTS`` comes first.

    Parameters
    ----------
    plan : Plan
    loading : bool
        Start in ``WEIGHTS`` until ``loaded``.

    Members
    -------
    issue : In(issue_signature(plan))
        The event pipeline's word of this cycle.
    load_done, quiet, main_empty, sc_empty, trace_empty, margin_ok, taken, loaded : In(1)
        All input values transferred; the event pipeline is drained after this cycle; the spike
        and shortcut queues are empty; the trace queue is empty; the exit unit's registered
        margin; ``o_result`` transferred; the last weight word transferred. ``ACC`` ends in a
        cycle with the queues empty, the pipeline drained and no spiking-layer update in the PE
        stages 1 to ``SPIKE_STAGE`` (one that may still push, whether it spikes or not): so an
        update phase never starts while the trace queue holds an entry of the layer before, and
        a trace port never changes the cycle count.
    in_load, in_acc, in_result : Out(1)
        Registered phase flags (a flip-flop each, not a decode of the phase).
    in_issue : Out(1)
        Registered: ``LOAD`` or ``ACC`` (the event pipeline's ``enable``, one flip-flop of its own
        instead of an OR of two flags routed from the sequencer).
    fetch_layer, fetch_shortcut : Out
        The layer whose events are fetched (the next one while a layer updates), and whether it
        has a shortcut source.
    t : Out(range(t_max + 1))
        The timestep (1-based, register).
    restart : Out(1)
        The result is taken: the input source starts the next image.
    n_addr : Out(bits(neuron_depth))
        The PEs' membrane read address (a register).
    nxt : Out(control_layout(plan))
        The command of this cycle (stage 0, combinational).
    s1 .. s{PE.SPIKE_STAGE} : Out(control_layout(plan))
        The command ``s`` cycles later (registers): ``s1.cmd`` is the PEs' ``exe``.
    drained : Out(1), only when a layer is packed (``hw/plan.py``, "Packed tail")
        A register: in the cycle before, ``ACC`` had its queues empty and no spiking update in
        flight (no event is to come: the event pipeline issues a packed word for the events that
        wait for one, and is ``quiet`` only after it).
    """

    def __init__(self, plan, loading=False):
        self._plan = plan
        self._loading = loading
        self._sc_of = shortcut_readers(plan.model)
        self.exit_wait = exit_wait(plan.n_pe)
        ctl = control_layout(plan)
        ports = {
            "issue": In(issue_signature(plan)),
            **{k: In(1) for k in ("load_done", "quiet", "main_empty", "sc_empty", "trace_empty",
                                  "margin_ok", "taken", "loaded")},
            "in_load": Out(1),
            "in_acc": Out(1),
            "in_result": Out(1),
            "in_issue": Out(1),
            "fetch_layer": Out(range(plan.n_layers)),
            "fetch_shortcut": Out(1),
            "t": Out(range(plan.model.t_max + 1), init=1),
            "restart": Out(1),
            "n_addr": Out(bits(plan.neuron_depth)),
            "nxt": Out(ctl),
            **{f"s{s}": Out(ctl) for s in range(1, PE.SPIKE_STAGE + 1)},
        }
        if plan.max_groups:
            ports["drained"] = Out(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        n, n_layers, layers = plan.n_pe, plan.n_layers, plan.layers
        out_layer = n_layers - 1
        m.submodules.scan = scan = UpdateScan(plan)

        init_phase = Phase.WEIGHTS if self._loading else Phase.INIT
        phase = Signal(Phase, init=init_phase)
        # The next phase (default: stay), and registered flags of the phases the datapath tests:
        # a flip-flop each instead of a decode of `phase` in the event handshake (their next
        # values: _flags).
        phase_nxt = Signal(Phase)
        m.d.comb += phase_nxt.eq(phase)
        m.d.sync += phase.eq(phase_nxt)
        flags = {ph: Signal(name=f"in_{ph.name.lower()}", init=int(init_phase == ph))
                 for ph in (Phase.LOAD, Phase.ACC, Phase.UPDATE, Phase.RESULT)}
        in_update = flags[Phase.UPDATE]
        m.d.comb += [self.in_load.eq(flags[Phase.LOAD]), self.in_acc.eq(flags[Phase.ACC]),
                     self.in_result.eq(flags[Phase.RESULT])]
        layer = Signal(range(n_layers))
        img = Signal(init=1)
        cnt = Signal(range(max(plan.neuron_depth, self.exit_wait, 2)))
        m.d.comb += [
            scan.layer.eq(layer),
            self.fetch_layer.eq(Mux(in_update & (layer != out_layer), layer + 1, layer)),
            self.fetch_shortcut.eq(per_layer([int(li in self._sc_of.values()) for li in range(n_layers)], 1,
                                             self.fetch_layer)),
        ]

        nxt = self.nxt
        m.d.sync += self.s1.eq(nxt)
        for s in range(2, PE.SPIKE_STAGE + 1):
            m.d.sync += getattr(self, f"s{s}").eq(getattr(self, f"s{s - 1}"))

        # The update's neuron, n_base + cnt, kept in a register of its own: it counts with cnt in
        # UPDATE and is preset to the next update's layer base in the other phases (every phase
        # before an UPDATE lasts a cycle at least), so that the PEs' read address comes from a
        # flip-flop and cnt's fan-out stays in the sequencer.
        # (upd_next = upd_addr + 1, counted beside it: no adder between the widely routed address
        # and its own next value)
        nbits = bits(plan.neuron_depth)
        upd_addr = self.n_addr
        upd_next = Signal(nbits, init=1)
        n_base = per_layer([lp.neuron_base for lp in layers], nbits, layer)
        with m.If(in_update):
            with m.If(nxt.cmd.update):
                m.d.sync += [upd_addr.eq(upd_next), upd_next.eq(upd_next + 1)]
        with m.Elif(phase == Phase.EXIT):
            m.d.sync += [upd_addr.eq(layers[0].neuron_base), upd_next.eq(layers[0].neuron_base + 1)]
        with m.Else():
            m.d.sync += [upd_addr.eq(n_base), upd_next.eq(n_base + 1)]

        # "cnt is the layer's last update" in a register of its own, counted beside cnt like the
        # address above (preset in the phases before an UPDATE): the comparison of cnt with the
        # layer's update count was in front of the phase's and the scan's next values, the
        # 85F N = 1 critical path.
        upd_last = Signal(name="upd_last", init=int(layers[0].updates == 1))
        with m.If(in_update):
            with m.If(nxt.cmd.update):
                # the next update is the last when this one is the one before it (after the last,
                # the phase leaves UPDATE and the value is preset again)
                m.d.sync += upd_last.eq(cnt == per_layer([max(lp.updates - 2, 0) for lp in layers],
                                                         cnt.shape().width, layer))
        with m.Elif(phase == Phase.EXIT):
            m.d.sync += upd_last.eq(layers[0].updates == 1)
        with m.Else():
            m.d.sync += upd_last.eq(per_layer([int(lp.updates == 1) for lp in layers], 1, layer))

        self._phases(m, phase, phase_nxt, flags, layer, img, cnt, scan, upd_last)
        return m

    def _flags(self, m, phase, flags, *, load_end, acc_end, upd_end, last_layer, init_end, exit_go):
        """The phase flags' next values, each from its own phase's transitions (the same as a
        decode of the next phase, ``_phases``): a flag's logic sees only the conditions of the
        transitions into and out of its phase, not every condition of the next-phase choice (the
        result handshake and the exit margin were in front of ``in_update`` and ``in_load``)."""
        in_load, in_acc, in_update, in_result = (flags[p] for p in (Phase.LOAD, Phase.ACC, Phase.UPDATE,
                                                                     Phase.RESULT))
        nxt_load = ((phase == Phase.INIT) & init_end) | (in_load & ~load_end) | (in_result & self.taken)
        nxt_acc = (upd_end & ~last_layer) | (in_acc & ~acc_end)
        m.d.sync += [
            in_load.eq(nxt_load), in_acc.eq(nxt_acc), self.in_issue.eq(nxt_load | nxt_acc),
            in_update.eq(load_end | acc_end | (in_update & ~upd_end) | ((phase == Phase.EXIT) & ~exit_go)),
            in_result.eq(((phase == Phase.EXIT) & exit_go) | (in_result & ~self.taken)),
        ]

    def _phases(self, m, phase, phase_nxt, flags, layer, img, cnt, scan, last_update):
        plan, n = self._plan, self._plan.n_pe
        in_update = flags[Phase.UPDATE]
        out_layer = plan.n_layers - 1
        t, nxt, iss = self.t, self.nxt, self.issue
        cmd = nxt.cmd
        # Fields common to the commands, assigned inside the phase switch below: a comb assignment
        # of a few bits of `nxt` outside it becomes an `always @*` block of its own, which an
        # event-driven simulator (Icarus) does not run at time 0 (sim/test_lint.py checks).
        common = [cmd.first_t.eq(t == 1), cmd.output.eq(layer == out_layer), cmd.img.eq(img), nxt.layer.eq(layer)]
        if len(plan.neurons) > 1:
            common.append(cmd.neuron.eq(per_layer(plan.neuron_of, cmd.neuron.shape().width, layer)))
        # A spiking-layer update in stages 1 .. SPIKE_STAGE may yet push a spike-queue entry (in
        # its spike stage): the accumulate phase does not end while one is. One register, the OR of
        # stages 0 .. SPIKE_STAGE - 1 a cycle before, not the PEs' spikes: those came from every
        # PE across the die through the pool's push into this decision (the 25F N = 8 critical
        # path), for at most one cycle more when the last update does not spike.
        in_flight = Signal(name="in_flight")
        upd_in = nxt.cmd.update & ~nxt.cmd.output
        for s in range(1, PE.SPIKE_STAGE):
            st = getattr(self, f"s{s}")
            upd_in = upd_in | (st.cmd.update & ~st.cmd.output)
        m.d.sync += in_flight.eq(upd_in)
        queues_empty = self.main_empty & (~self.fetch_shortcut | self.sc_empty) if self._sc_of else self.main_empty
        if plan.max_groups:
            m.d.sync += self.drained.eq(self.in_acc & queues_empty & ~in_flight)
        # The update scan steps with every issued update: from the registered phase flag and the
        # stall (the first update of a spiking layer waits for the trace queue), not a decode of
        # the phase, so that its counters' enables are short.
        first = Signal(name="upd_first", init=int(0 != out_layer))
        stall = first & ~self.trace_empty
        m.d.comb += [scan.step.eq(in_update & ~stall), scan.restart.eq(last_update)]
        with m.If(scan.step):
            m.d.sync += first.eq(0)
        with m.Elif(phase == Phase.EXIT):
            m.d.sync += first.eq(0 != out_layer)
        with m.Elif(phase != Phase.UPDATE):
            m.d.sync += first.eq(layer != out_layer)
        # the transitions' conditions, once for the phase and the flags
        load_end = self.in_load & self.load_done & self.quiet
        # (the previous UPDATE's last updates may still push spike entries)
        acc_end = self.in_acc & queues_empty & ~in_flight & self.quiet
        init_end, exit_go = cnt == plan.neuron_depth - 1, self.margin_ok | (t == plan.model.t_max)
        self._flags(m, phase, flags, load_end=load_end, acc_end=acc_end, upd_end=in_update & ~stall & last_update,
                    last_layer=layer == out_layer, init_end=init_end, exit_go=exit_go)
        with m.Switch(phase):
            with m.Case(Phase.WEIGHTS):
                with m.If(self.loaded):
                    m.d.comb += phase_nxt.eq(Phase.INIT)
            with m.Case(Phase.INIT):
                # acc of every layer must start at 0 (parity 0); UPDATE keeps it so afterwards.
                m.d.comb += [cmd.clear.eq(1), cmd.addr.eq(cnt)]
                with m.If(init_end):
                    m.d.sync += cnt.eq(0)
                    m.d.comb += phase_nxt.eq(Phase.LOAD)
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.LOAD, Phase.ACC):
                m.d.comb += common
                m.d.comb += [
                    cmd.acc.eq(iss.valid),
                    cmd.sparse.eq(iss.sparse),
                    cmd.addr.eq(iss.n),
                    cmd.mask.eq(iss.mask),
                    cmd.geo.eq(iss.geo),
                    cmd.val.eq(iss.val),
                    cmd.layer0.eq(layer == 0),
                    # a dense burst's last word: the last chunk (not of a packed layer: its packed word's lanes are pkv's)
                    nxt.lanes.eq(Mux(iss.chunked & iss.last & ~iss.pkl if plan.max_groups else iss.chunked & iss.last,
                                     scan.last_lanes, n)),
                ]
                if plan.max_groups:
                    m.d.comb += [cmd.packed.eq(iss.packed), nxt.pkv.eq(iss.pkv)]
                if plan.paired:
                    m.d.comb += cmd.pair.eq(iss.pair)
                if plan.queued:   # (a PE's own word of a queued layer may take this command's place)
                    m.d.comb += cmd.own.eq(1)
                with m.If(load_end):
                    m.d.sync += cnt.eq(0)
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
                with m.If(acc_end):
                    m.d.sync += cnt.eq(0)
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
            with m.Case(Phase.UPDATE):
                m.d.comb += common
                m.d.comb += [
                    nxt.c.eq(scan.c), nxt.pos.eq(scan.pos), nxt.pidx.eq(scan.pidx), nxt.py.eq(scan.py),
                    nxt.px.eq(scan.px), nxt.first.eq(scan.first), nxt.last.eq(scan.last),
                    nxt.rbm.eq(scan.rbm), nxt.rbs.eq(scan.rbs), nxt.lanes.eq(scan.lanes),
                    cmd.addr.eq(self.n_addr),
                    cmd.layer0.eq(layer == 0),
                ]
                with m.If(~stall):
                    m.d.comb += [cmd.update.eq(1), cmd.clear.eq(layer != 0)]
                    with m.If(last_update):
                        m.d.sync += cnt.eq(0)
                        with m.If(layer == out_layer):
                            m.d.comb += phase_nxt.eq(Phase.EXIT_WAIT)
                        with m.Else():
                            m.d.sync += layer.eq(layer + 1)
                            m.d.comb += phase_nxt.eq(Phase.ACC)
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.EXIT_WAIT):
                # until the last output chunk's values are in the exit unit
                with m.If(cnt == self.exit_wait - 1):
                    m.d.sync += cnt.eq(0)
                    m.d.comb += phase_nxt.eq(Phase.EXIT)
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.EXIT):
                with m.If(exit_go):
                    m.d.comb += phase_nxt.eq(Phase.RESULT)
                with m.Else():
                    m.d.sync += [t.eq(t + 1), layer.eq(0)]
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
            with m.Case(Phase.RESULT):
                with m.If(self.taken):
                    m.d.comb += self.restart.eq(1)
                    m.d.sync += [t.eq(1), layer.eq(0), img.eq(~img)]
                    m.d.comb += phase_nxt.eq(Phase.LOAD)
