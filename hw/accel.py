"""The accelerator top: event sources -> event pipeline -> SIMD PE array -> neuron update ->
early-exit controller. One sequencer drives the same command to every PE.

Phases of one inference:

* ``LOAD``: the analog layer's accumulate, once per image. Input values stream in; each nonzero
  value becomes an event (a row of weights, see :mod:`spikeloom.hw.plan`) with multiplier
  ``val``; zero values are accepted at once, also while earlier events are being issued.
* per timestep, for each layer ``l``: ``UPDATE`` (one chunk of one position per cycle: LIF step
  or output integration; spikes are OR-pooled and pushed to the spike queue, and to the shortcut
  queue when a later layer reads them through a residual connection) then, for ``l + 1``,
  ``ACC`` (the events of the spike queue, then of the shortcut queue if ``l + 1`` has one).
* ``EXIT``: the top-1/top-2 of the output values is merged during the output ``UPDATE``; the
  registered margin comparison (``Top2.margin_ok``) decides between the next timestep and
  ``RESULT``.

The event pipeline has three registers before the issue stage: ``EV`` (the event and its
geometry; events are fetched as soon as a queue has them, also while the producing layer is
still updating), ``RW`` (its row's start and length from the ``rows`` table, the taps that land
and the event's neuron base) and ``TP`` (one burst: a landing tap's ``chunks`` words for dense
storage, or the row's ``row_len`` entries for compressed storage). The issue stage sends one
word per cycle to the PEs. ``hw/perf.py`` models every cycle of this.
"""

import json
import re
from pathlib import Path

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.back import verilog
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeloom.model.golden import COUNTERS

from .events import InputEventSource, SpikeEventSource, event_layout, spike_entry_layout
from .exit import Top2
from .pe import PE, SPIKE_STAGE, W_NZ_STAGE, Z_STAGE, exec_layout, geometries, issue_layout
from .plan import MEMORIES, WEIGHT_STORES, Plan

__all__ = ["Accelerator", "Phase", "describe", "generate", "result_layout", "trace_layout", "verilog_text"]

TOP_NAME = "spikeloom_accel"
COUNTER_BITS = 32

CYCLES_DEFINITION = (
    "clock cycles strictly between the cycle in which the image's first input value is transferred "
    "(i_data valid & ready) and the first cycle in which o_result.valid is high; neither end counted; "
    "cycles in which the input stream is idle are included")


class Phase(enum.Enum, shape=3):
    INIT = 0
    LOAD = 1
    UPDATE = 2
    ACC = 3
    EXIT_WAIT = 4
    EXIT = 5
    RESULT = 6
    WEIGHTS = 7


def _bits(n):
    """Unsigned width of the values 0..n-1 (at least 1)."""
    return max(1, ceil_log2(n))


def counters_layout():
    return data.StructLayout({c: unsigned(COUNTER_BITS) for c in COUNTERS})


def result_layout(plan):
    """Payload of ``o_result`` for ``plan`` (fields LSB first in this order)."""
    return data.StructLayout({
        "pred": unsigned(_bits(plan.model.n_classes)),
        "timesteps": unsigned(_bits(plan.model.t_max + 1)),
        "cycles": unsigned(COUNTER_BITS),
        "layers": data.StructLayout({lp.name: counters_layout() for lp in plan.layers}),
    })


def trace_layout(plan):
    """Payload of ``o_trace``: the spikes of one chunk at one position of one layer update."""
    return data.StructLayout({
        "timestep": unsigned(_bits(plan.model.t_max + 1)),
        "layer": unsigned(_bits(plan.n_layers)),
        "pos": unsigned(_bits(max(lp.positions for lp in plan.layers))),
        "chunk": unsigned(_bits(plan.max_chunks)),
        "mask": unsigned(plan.n_pe),
    })


def _count_next_cycle(m, name, valid, layer, counters, incs):
    """Add ``incs`` ({counter name: value}) to layer ``layer``'s counters when ``valid``, one cycle
    later: valid, layer and the values are registered first."""
    v = Signal(name=f"{name}_valid")
    lr = Signal(layer.shape(), name=f"{name}_layer")
    regs = {k: Signal(Value.cast(x).shape(), name=f"{name}_{k}") for k, x in incs.items()}
    m.d.sync += [v.eq(valid), lr.eq(layer), *(regs[k].eq(x) for k, x in incs.items())]
    with m.If(v):
        with m.Switch(lr):
            for li, cs in enumerate(counters):
                with m.Case(li):
                    m.d.sync += [cs[k].eq(cs[k] + r) for k, r in regs.items()]


def _popcount(m, bits, name):
    terms = [bits[i] for i in range(len(bits))]
    depth = 0
    while len(terms) > 1:
        nxt = []
        for i in range(0, len(terms), 2):
            if i + 1 < len(terms):
                s = Signal(range(len(bits) + 1), name=f"{name}_{depth}_{i // 2}")
                m.d.comb += s.eq(terms[i] + terms[i + 1])
                nxt.append(s)
            else:
                nxt.append(terms[i])
        terms, depth = nxt, depth + 1
    return terms[0]


class Accelerator(wiring.Component):
    """Spiking-network inference accelerator generated for one ``QuantModel`` (dense, conv, pooled
    and residual layers; dense or compressed weight storage per layer).

    Parameters
    ----------
    model : QuantModel
        The integer network (``golden.run`` is the specification).
    n_pe : int
        Processing elements (1..64); PE ``p`` owns output channels ``c * n_pe + p`` of every layer.
    trace : bool
        Add the ``o_trace`` spike-trace stream.
    storage : str or dict
        Weight storage per layer (:class:`~spikeloom.hw.plan.Plan`); ``"auto"``: fewer bits.
    weights : str
        ``"rom"`` (default): the weight memories are initialised with the model's weights (block
        RAM initial contents). ``"load"``: they have no initial contents and are written through
        ``i_weights`` after every reset (single-port RAM such as iCE40 UltraPlus SPRAM).

    Members
    -------
    i_data : In(stream.Signature(unsigned(model.input_bits)))
        ``model.input_size`` values per image in row-major order of ``model.input_shape``, no
        framing. Accepted only in the load phase of an image, i.e. after the previous image's
        result has been transferred. ``ready`` is combinational from ``valid`` and the payload
        (zeros are taken at once).
    o_result : Out(stream.Signature(result_layout(plan)))
        One transfer per image: ``pred``, ``timesteps`` (executed, 1..t_max), ``cycles`` (see
        ``CYCLES_DEFINITION``) and per layer the six ``golden.COUNTERS`` summed over executed
        timesteps (``weight_reads`` as ``golden.run(..., sparse=plan.sparse_layers)`` counts
        them). ``valid`` stays high with a stable payload until ``ready``; with ``trace`` it rises
        only once the trace queue has drained.
    i_weights : In(stream.Signature(unsigned(plan.word_bits))), only with ``weights="load"``
        The weight memories' contents, PE by PE: the ``weight_depth`` words of
        ``mem/pe_0_weight.hex`` in address order, then PE 1's, ..., ``n_pe * weight_depth`` words.
        After reset ``ready`` is high (registered, not dependent on ``valid``) until the last word
        has been transferred; then the accelerator clears its accumulators and ``i_data`` opens.
        The weights stay until the next reset; reloading them is reset, then the whole stream.
    o_trace : Out(stream.Signature(trace_layout(plan))), only with ``trace``
        One transfer per update with at least one spike (before pooling), in production order:
        ``timestep`` (1-based), ``layer`` (index), ``pos`` (``y * W + x`` in the layer's map),
        ``chunk`` and the lane ``mask`` (bit ``p``: channel ``chunk * n_pe + p``). Back-pressure
        stalls the next spiking-layer update until the queue is empty; nothing is dropped.
    """

    def __init__(self, model, n_pe, trace=False, storage="auto", weights="rom"):
        try:
            if not isinstance(trace, bool):
                raise TypeError(f"trace must be a bool, got {trace!r}")
            if weights not in WEIGHT_STORES:
                raise ValueError(f"weights must be one of {', '.join(map(repr, WEIGHT_STORES))}, got {weights!r}")
            self.plan = Plan(model, n_pe, storage)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # never elaborated: no "created but never used" warning
            raise
        self.model = model
        self.n_pe = n_pe
        self.trace = trace
        self.weights = weights
        self.result_layout = result_layout(self.plan)
        self.trace_layout = trace_layout(self.plan)
        ports = {
            "i_data": In(stream.Signature(unsigned(model.input_bits))),
            "o_result": Out(stream.Signature(self.result_layout)),
        }
        if weights == "load":
            ports["i_weights"] = In(stream.Signature(unsigned(self.plan.word_bits)))
        if trace:
            ports["o_trace"] = Out(stream.Signature(self.trace_layout))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        plan, model = self.plan, self.model
        n, n_layers = plan.n_pe, plan.n_layers
        out_layer = n_layers - 1
        layers = plan.layers
        geos = geometries(plan)
        gid = {(g.layer, g.shortcut): i for i, g in enumerate(geos)}
        max_h = max(g.h for g in geos)
        max_w = max(g.w for g in geos)
        ev_layout = event_layout(plan.n_rows, max_h, max_w, model.input_bits)
        entry = spike_entry_layout(n, plan.n_rows, max_h, max_w)
        # shortcut source layer -> the layer that reads it
        sc_of = {next(i for i, lp in enumerate(layers) if lp.name == model.layers[li].shortcut): li
                 for li in range(n_layers) if model.layers[li].shortcut is not None}

        loading = self.weights == "load"
        pes = [PE(plan, p, self.weights) for p in range(n)]
        for p, pe in enumerate(pes):
            m.submodules[f"pe_{p}"] = pe
        m.submodules.inputs = inputs = InputEventSource(plan.layers[0].sources[0].shape, model.input_bits,
                                                        ev_layout)
        wiring.connect(m, wiring.flipped(self.i_data), inputs.i_data)

        def pushes(lp):
            return (lp.positions // (lp.pool * lp.pool)) * lp.chunks

        m.submodules.spikes = mainq = SpikeEventSource(
            n, max(pushes(lp) for lp in layers[:-1]), entry, ev_layout)
        scq = None
        if sc_of:
            m.submodules.shortcut = scq = SpikeEventSource(
                n, max(pushes(layers[s]) for s in sc_of), entry, ev_layout)
        m.submodules.exit = top2 = Top2(n, plan.membrane_bits, model.n_classes, model.exit_threshold)

        sbits, lbits = _bits(plan.weight_depth + 1), _bits(plan.max_row_len + 1)
        m.submodules.rows = rows = Memory(
            shape=unsigned(sbits + lbits), depth=max(plan.n_rows, 1),
            init=[st | ln << sbits for st, ln in zip(plan.row_start, plan.row_len)])
        rows_rd = rows.read_port()

        init_phase = Phase.WEIGHTS if loading else Phase.INIT
        phase = Signal(Phase, init=init_phase)
        # The next phase (default: stay), and registered flags of the phases the datapath tests:
        # a flip-flop each instead of a decode of `phase` in the event handshake.
        phase_nxt = Signal(Phase)
        m.d.comb += phase_nxt.eq(phase)
        m.d.sync += phase.eq(phase_nxt)
        flags = {}
        for ph in (Phase.LOAD, Phase.ACC, Phase.UPDATE, Phase.RESULT):
            flags[ph] = Signal(name=f"in_{ph.name.lower()}", init=int(init_phase == ph))
            m.d.sync += flags[ph].eq(phase_nxt == ph)
        layer = Signal(range(n_layers))
        t = Signal(range(model.t_max + 1), init=1)
        img = Signal(init=1)
        # cycles between the last output chunk's issue and EXIT: its values are in top2 after
        # Z_STAGE + latency - 1, top2's registered margin comparison one cycle later
        exit_wait = Z_STAGE + top2.latency
        cnt = Signal(range(max(plan.neuron_depth, exit_wait, 2)))
        running = Signal()
        cycles = Signal(COUNTER_BITS)
        counters = [{c: Signal(COUNTER_BITS, name=f"{lp.name}_{c}") for c in COUNTERS} for lp in layers]
        # The counters are cleared in the cycle after the result is taken (a registered pulse: the
        # clear reaches every counter bit, too wide a fan-out for the handshake's logic); none
        # counts in that cycle.
        clear_counters = Signal()
        with m.If(clear_counters):
            m.d.sync += [s.eq(0) for cs in counters for s in cs.values()]
        nbits = _bits(plan.neuron_depth)
        wbits = _bits(plan.weight_depth)

        def per_layer(values, width, sel=layer):
            return Array(Const(v, width) for v in values)[sel]

        in_load, in_acc, in_update = flags[Phase.LOAD], flags[Phase.ACC], flags[Phase.UPDATE]

        # ---------------------------------------------------------------- event pipeline
        # EV: the event being looked up.
        max_taps = max(g.taps for g in geos)
        gbits = _bits(len(geos))
        ev_valid = Signal()
        ev = Signal(ev_layout)
        ev_geo = Signal(gbits)
        # RW: its row (rows_rd.data), landing taps, neuron base.
        rw_valid = Signal()
        rw_geo = Signal(gbits)
        rw_val = Signal(model.input_bits)
        rw_mask = Signal(max_taps)
        rw_e = Signal(nbits)  # modulo 2**nbits: a landing tap's neuron is exact in these bits
        rw_start = Signal(sbits)
        rw_len = Signal(lbits)
        m.d.comb += [rw_start.eq(rows_rd.data[:sbits]), rw_len.eq(rows_rd.data[sbits:])]
        # TP: one burst of words.
        tp_valid = Signal()
        tp_w0 = Signal(wbits)
        tp_n0 = Signal(nbits)
        tp_last = Signal(lbits)      # words - 1
        tp_val = Signal(model.input_bits)
        tp_sparse = Signal()
        tp_mask = Signal(max_taps)
        tp_geo = Signal(gbits)
        tp_chunked = Signal()        # dense storage: word k is chunk k (padding lanes in the last)

        # the layer whose events are fetched: the next one while a layer updates
        cl = Signal(range(n_layers))
        m.d.comb += cl.eq(Mux(in_update & (layer != out_layer), layer + 1, layer))
        src_valid = Signal()
        src = Signal(ev_layout)
        src_geo = Signal(gbits)
        ev_ready = Signal()
        take_main = Signal()
        take_sc = Signal()
        sc_here = per_layer([int(li in sc_of.values()) for li in range(n_layers)], 1, cl)
        with m.If(in_load):
            m.d.comb += [src_valid.eq(inputs.events.valid), src.eq(inputs.events.payload),
                         src_geo.eq(gid[(0, False)]), inputs.events.ready.eq(ev_ready)]
        with m.Elif(mainq.events.valid):
            m.d.comb += [src_valid.eq(1), src.eq(mainq.events.payload), take_main.eq(ev_ready),
                         src_geo.eq(per_layer([gid[(li, False)] for li in range(n_layers)], gbits, cl))]
        if scq is not None:
            with m.Elif(sc_here & scq.events.valid):
                m.d.comb += [src_valid.eq(1), src.eq(scq.events.payload), take_sc.eq(ev_ready),
                             src_geo.eq(per_layer([gid.get((li, True), 0) for li in range(n_layers)], gbits, cl))]
            m.d.comb += scq.events.ready.eq(take_sc)
        m.d.comb += [inputs.enable.eq(in_load), mainq.events.ready.eq(take_main)]

        rw_ready = Signal()
        m.d.comb += ev_ready.eq(~ev_valid | rw_ready)
        # An event is counted in the cycle after it enters EV (ev_new), off the handshake's path.
        ev_new = Signal()
        m.d.sync += ev_new.eq(ev_ready & src_valid)
        with m.If(ev_ready):
            m.d.sync += [ev_valid.eq(src_valid), ev.eq(src), ev_geo.eq(src_geo)]
        with m.If(ev_new):
            with m.Switch(ev_geo):
                for gi, g in enumerate(geos):
                    with m.Case(gi):
                        cs = counters[g.layer]["input_events"]
                        m.d.sync += cs.eq(cs + 1)

        # EV -> RW: the rows table read, the landing taps and the event's neuron base.
        m.d.comb += [rows_rd.addr.eq(ev.row), rows_rd.en.eq(ev_valid & rw_ready)]
        with m.If(rw_ready):
            m.d.sync += [rw_valid.eq(ev_valid), rw_geo.eq(ev_geo), rw_val.eq(ev.val)]
            with m.Switch(ev_geo):
                for gi, g in enumerate(geos):
                    lp = layers[g.layer]
                    with m.Case(gi):
                        if g.conv:
                            ys, xs, _ = g.tables(lp.chunks, lp.ho, lp.wo)
                            ym = Array(Const(v[0], g.k) for v in ys)[ev.y]
                            xm = Array(Const(v[0], g.k) for v in xs)[ev.x]
                            yo = Array(Const(v[1] % (1 << nbits), nbits) for v in ys)[ev.y]
                            xo = Array(Const(v[1] % (1 << nbits), nbits) for v in xs)[ev.x]
                            bits = [ym[t // g.k] & xm[t % g.k] for t in range(g.taps)]
                            m.d.sync += [rw_mask.eq(Cat(*bits)), rw_e.eq(lp.neuron_base + yo + xo)]
                        else:
                            m.d.sync += [rw_mask.eq(1), rw_e.eq(lp.neuron_base)]

        # RW -> TP: bursts. Dense storage: one per landing tap (lowest first); compressed: one per event.
        tp_ready = Signal()
        tap = Signal(range(max(max_taps, 2)))
        for b in reversed(range(max_taps)):
            with m.If(rw_mask[b]):
                m.d.comb += tap.eq(b)
        rest = Signal(max_taps)
        m.d.comb += rest.eq(rw_mask & ~(Const(1, max_taps) << tap))
        rw_sparse = Signal()
        rw_chunks = Signal(lbits)
        toff = Signal(wbits)
        dtap = Signal(nbits)
        with m.Switch(rw_geo):
            for gi, g in enumerate(geos):
                lp = layers[g.layer]
                with m.Case(gi):
                    d = g.tables(lp.chunks, lp.ho, lp.wo)[2]
                    m.d.comb += [
                        rw_sparse.eq(lp.storage == "sparse"),
                        rw_chunks.eq(lp.chunks - 1),
                        toff.eq(Array(Const(tt * lp.chunks, wbits) for tt in range(g.taps))[tap]),
                        dtap.eq(Array(Const(v % (1 << nbits), nbits) for v in d)[tap]),
                    ]
        rw_done = Mux(rw_sparse, 1, rest == 0)
        m.d.comb += rw_ready.eq(~rw_valid | (tp_ready & rw_done))
        with m.If(tp_ready):
            m.d.sync += tp_valid.eq(rw_valid & (rw_mask != 0) & (~rw_sparse | (rw_len != 0)))
        # (the rows table's read data is defined only once an event has been looked up: a
        # simulator with X values, e.g. Icarus, must not see it on the weight address)
        with m.If(tp_ready & rw_valid):
            m.d.sync += [tp_val.eq(rw_val), tp_sparse.eq(rw_sparse), tp_mask.eq(rw_mask), tp_geo.eq(rw_geo),
                         tp_chunked.eq(~rw_sparse)]
            with m.If(rw_sparse):
                m.d.sync += [tp_w0.eq(rw_start), tp_n0.eq(rw_e), tp_last.eq(rw_len - 1)]
            with m.Else():
                m.d.sync += [tp_w0.eq(rw_start + toff), tp_n0.eq(rw_e - dtap), tp_last.eq(rw_chunks)]
                with m.If(~rw_done):
                    m.d.sync += rw_mask.eq(rest)

        # Issue: the burst's words, one per cycle, back to back.
        busy = Signal()
        ek = Signal(lbits)
        ew = Signal(wbits)
        en_ = Signal(nbits)
        elast = Signal(lbits)
        eval_ = Signal(model.input_bits)
        esparse = Signal()
        emask = Signal(max_taps)
        egeo = Signal(gbits)
        echunked = Signal()
        take = ~busy & tp_valid & (in_load | in_acc)
        issuing = busy | take
        m.d.comb += tp_ready.eq(~tp_valid | take)
        cur_k = Mux(busy, ek, 0)
        cur_w = Mux(busy, ew, tp_w0)
        cur_n = Mux(busy, en_, tp_n0)
        cur_last = Mux(busy, elast, tp_last)
        cur_val = Mux(busy, eval_, tp_val)
        cur_sparse = Mux(busy, esparse, tp_sparse)
        cur_mask = Mux(busy, emask, tp_mask)
        cur_geo = Mux(busy, egeo, tp_geo)
        cur_chunked = Mux(busy, echunked, tp_chunked)
        at_last = cur_k == cur_last
        with m.If(issuing & ~at_last):
            m.d.sync += [busy.eq(1), ek.eq(cur_k + 1), ew.eq(cur_w + 1), en_.eq(cur_n + cur_chunked), elast.eq(cur_last),
                         eval_.eq(cur_val), esparse.eq(cur_sparse), emask.eq(cur_mask), egeo.eq(cur_geo),
                         echunked.eq(cur_chunked)]
        with m.Else():
            m.d.sync += busy.eq(0)
        quiet = Signal()  # nothing left to issue after this cycle
        m.d.comb += quiet.eq(~ev_valid & ~rw_valid & Mux(busy, at_last & ~tp_valid, ~tp_valid | (take & at_last)))

        # ---------------------------------------------------------------- update counters
        ctl = data.StructLayout({
            "cmd": exec_layout(plan),
            "lanes": unsigned(_bits(n + 1)),
            "layer": unsigned(_bits(n_layers)),
            "c": unsigned(_bits(plan.max_chunks)),
            "pos": unsigned(_bits(max(lp.positions for lp in layers))),
            "pidx": unsigned(_bits(max(max((lp.wo // lp.pool) * lp.chunks for lp in layers), 1))),
            "py": unsigned(_bits(max_h)),
            "px": unsigned(_bits(max_w)),
            "first": 1,
            "last": 1,
            "rbm": unsigned(_bits(plan.n_rows)),
            "rbs": unsigned(_bits(plan.n_rows)),
        })
        uc = Signal(range(max(plan.max_chunks, 2)))
        ux = Signal(range(max(max(lp.wo for lp in layers), 2)))
        upos = Signal.like(Signal(ctl).pos)
        xq = Signal(range(max(max(lp.pool for lp in layers), 2)))
        yq = Signal.like(xq)
        px = Signal(_bits(max_w))
        py = Signal(_bits(max_h))
        pcol = Signal.like(Signal(ctl).pidx)
        rb_row = Signal(_bits(plan.n_rows))
        rb_col = Signal(_bits(plan.n_rows))
        cN = Signal(_bits(plan.n_rows + n))

        last_c = per_layer([lp.chunks - 1 for lp in layers], _bits(plan.max_chunks))
        last_x = per_layer([lp.wo - 1 for lp in layers], ux.shape().width)
        last_q = per_layer([lp.pool - 1 for lp in layers], xq.shape().width)
        last_lanes = per_layer([lp.last_lanes for lp in layers], _bits(n + 1))
        n_base = per_layer([lp.neuron_base for lp in layers], nbits)
        chunks_c = per_layer([lp.chunks for lp in layers], pcol.shape().width)
        # the rows of the next layer's main source (dense consumer: position-major) and shortcut
        rb_main, rb_pos, rb_prow, rb_sc = [], [], [], []
        for li, lp in enumerate(layers):
            nxt = layers[li + 1].sources[0] if li + 1 < n_layers else None
            rb_main.append(nxt.row_base if nxt else 0)
            dense_next = nxt is not None and not nxt.conv
            rb_pos.append(lp.channels if dense_next else 0)
            rb_prow.append(lp.channels * (lp.wo // lp.pool) if dense_next else 0)
            rb_sc.append(layers[sc_of[li]].sources[1].row_base if li in sc_of else 0)
        rbw = _bits(plan.n_rows)
        c_rb_main = per_layer(rb_main, rbw)
        c_rb_pos = per_layer(rb_pos, rbw)
        c_rb_prow = per_layer(rb_prow, rbw)
        c_rb_sc = per_layer(rb_sc, rbw)
        pool_on = per_layer([int(lp.pool > 1) for lp in layers], 1)

        # ---------------------------------------------------------------- commands to the PEs
        issue = Signal(issue_layout(plan))
        nxt = Signal(ctl)
        st = {1: Signal(ctl, name="s1")}
        m.d.sync += st[1].eq(nxt)
        for s in range(2, SPIKE_STAGE + 1):
            st[s] = Signal(ctl, name=f"s{s}")
            m.d.sync += st[s].eq(st[s - 1])
        for p, pe in enumerate(pes):
            m.d.comb += [pe.issue.eq(issue), pe.exe.eq(st[1].cmd), pe.lane_valid.eq(st[1].lanes > p),
                         pe.lead.first_t.eq(nxt.cmd.first_t), pe.lead.output.eq(nxt.cmd.output),
                         pe.lead.lane.eq(nxt.lanes > p)]

        # Fields common to the commands, assigned inside the phase switch below: a comb assignment
        # of a few bits of `nxt` outside it becomes an `always @*` block of its own, which an
        # event-driven simulator (Icarus) does not run at time 0 (sim/test_lint.py checks).
        cmd = nxt.cmd
        common = [cmd.first_t.eq(t == 1), cmd.output.eq(layer == out_layer), cmd.img.eq(img), nxt.layer.eq(layer)]
        # The update's neuron, n_base + cnt, kept in a register of its own: it counts with cnt in
        # UPDATE and is preset to the next update's layer base in the other phases (every phase
        # before an UPDATE lasts a cycle at least), so that the PEs' read address comes from a
        # flip-flop and cnt's fan-out stays in the sequencer.
        # (upd_next = upd_addr + 1, counted beside it: no adder between the widely routed address
        # and its own next value)
        upd_addr = Signal(nbits)
        upd_next = Signal(nbits, init=1)
        with m.If(in_update):
            with m.If(cmd.update):
                m.d.sync += [upd_addr.eq(upd_next), upd_next.eq(upd_next + 1)]
        with m.Elif(phase == Phase.EXIT):
            m.d.sync += [upd_addr.eq(layers[0].neuron_base), upd_next.eq(layers[0].neuron_base + 1)]
        with m.Else():
            m.d.sync += [upd_addr.eq(n_base), upd_next.eq(n_base + 1)]
        if loading:
            # PE by PE, address by address; the weight memories' one address serves the load.
            wl = self.i_weights
            wl_pe = Signal(range(max(n, 2)))
            wl_addr = Signal(wbits)
            wl_on = Signal(init=1)
            m.d.comb += [wl.ready.eq(wl_on), issue.w_addr.eq(Mux(wl_on, wl_addr, cur_w))]
            for p, pe in enumerate(pes):
                m.d.comb += [pe.load_en.eq(wl.valid & wl_on & (wl_pe == p)), pe.load_data.eq(wl.payload)]
            with m.If(wl.valid & wl_on):
                with m.If(wl_addr == plan.weight_depth - 1):
                    m.d.sync += [wl_addr.eq(0), wl_pe.eq(wl_pe + 1)]
                    with m.If(wl_pe == n - 1):
                        m.d.sync += wl_on.eq(0)
                        m.d.comb += phase_nxt.eq(Phase.INIT)
                with m.Else():
                    m.d.sync += wl_addr.eq(wl_addr + 1)
        else:
            m.d.comb += issue.w_addr.eq(cur_w)
        m.d.comb += [
            issue.n_addr.eq(upd_addr),
        ]

        # ---------------------------------------------------------------- outputs of the pipeline
        # The activity counters add a cycle after the stage they count: the PEs' flags are popcounted
        # into registers first, so that no path runs from them through the adder tree into a 32-bit
        # counter's carry chain (the critical path at N = 16 on the ECP5-85F and N = 4 on the UP5K).
        # The last update of an inference reaches its counters by the first RESULT cycle (EXIT_WAIT
        # is Z_STAGE + Top2's latency >= SPIKE_STAGE cycles long).
        sw = st[W_NZ_STAGE]
        _count_next_cycle(m, "acc_cnt", sw.cmd.acc, sw.layer, counters, {
            "weight_reads": _popcount(m, Cat(pe.read for pe in pes), "n_read"),
            "synaptic_events": _popcount(m, Cat(pe.syn for pe in pes), "n_syn")})
        ss = st[SPIKE_STAGE]
        mask = Signal(n)
        m.d.comb += mask.eq(Cat(pe.spike for pe in pes))
        _count_next_cycle(m, "upd_cnt", ss.cmd.update, ss.layer, counters, {
            "membrane_reads": ss.lanes, "membrane_writes": ss.lanes,
            "spikes": _popcount(m, mask, "n_spikes")})
        # OR-pooling: a row of pooled outputs is kept in `pool` until its window's last update.
        orv = Signal(n)
        if any(lp.pool > 1 for lp in layers):
            depth = max((lp.wo // lp.pool) * lp.chunks for lp in layers if lp.pool > 1)
            m.submodules.pool = pool = Memory(shape=unsigned(n), depth=max(depth, 2), init=[])
            pool_rd = pool.read_port(domain="comb")
            pool_wr = pool.write_port()
            m.d.comb += [
                pool_rd.addr.eq(ss.pidx),
                orv.eq(mask | Mux(ss.first, 0, pool_rd.data)),
                pool_wr.addr.eq(ss.pidx),
                pool_wr.data.eq(orv),
                pool_wr.en.eq(ss.cmd.update & ~ss.cmd.output & ~ss.last),
            ]
        else:
            m.d.comb += orv.eq(mask)
        push = Signal()
        m.d.comb += push.eq(ss.cmd.update & ~ss.cmd.output & ss.last & (orv != 0))
        m.d.comb += [
            mainq.push.valid.eq(push),
            mainq.push.payload.rbase.eq(ss.rbm),
            mainq.push.payload.y.eq(ss.py),
            mainq.push.payload.x.eq(ss.px),
            mainq.push.payload.mask.eq(orv),
        ]
        if scq is not None:
            is_src = Array(Const(int(li in sc_of), 1) for li in range(n_layers))[ss.layer]
            m.d.comb += [
                scq.push.valid.eq(push & is_src),
                scq.push.payload.rbase.eq(ss.rbs),
                scq.push.payload.y.eq(ss.py),
                scq.push.payload.x.eq(ss.px),
                scq.push.payload.mask.eq(orv),
            ]
        sz = st[Z_STAGE]
        z_base = Signal.like(top2.base)
        m.d.sync += z_base.eq(st[Z_STAGE - 1].c * n)
        for p, pe in enumerate(pes):
            m.d.comb += [top2.values[p].eq(pe.z), top2.valid[p].eq(sz.lanes > p)]
        m.d.comb += [
            top2.base.eq(z_base),
            top2.en.eq(sz.cmd.update & sz.cmd.output),
            top2.restart.eq(sz.c == 0),
        ]
        # A spiking-layer update still in the pipeline may yet push a spike-queue entry.
        update_in_flight = push
        for s in range(1, SPIKE_STAGE):
            update_in_flight = update_in_flight | (st[s].cmd.update & ~st[s].cmd.output)

        if self.trace:
            depth = max(lp.updates for lp in layers[:-1])
            m.submodules.trace_queue = tq = SyncFIFO(width=self.trace_layout.size, depth=max(depth, 2))
            tentry = Signal(self.trace_layout)
            m.d.comb += [
                tentry.timestep.eq(t), tentry.layer.eq(ss.layer), tentry.pos.eq(ss.pos),
                tentry.chunk.eq(ss.c), tentry.mask.eq(mask),
                tq.w_data.eq(tentry.as_value()),
                tq.w_en.eq(ss.cmd.update & ~ss.cmd.output & (mask != 0)),
                self.o_trace.valid.eq(tq.r_rdy),
                self.o_trace.payload.eq(tq.r_data),
                tq.r_en.eq(self.o_trace.ready),
            ]
            trace_empty = tq.level == 0
        else:
            trace_empty = Const(1)

        done_now = top2.margin_ok | (t == model.t_max)
        res = self.o_result
        m.d.comb += [
            res.valid.eq(flags[Phase.RESULT] & trace_empty),
            res.payload.pred.eq(top2.top1_index),
            res.payload.timesteps.eq(t),
            res.payload.cycles.eq(cycles),
        ]
        for li, lp in enumerate(layers):
            for c in COUNTERS:
                m.d.comb += res.payload.layers[lp.name][c].eq(counters[li][c])

        # The first transfer is registered before it starts the count (it is combinational from the
        # input handshake; the counter is wide): in the next cycle the count is 1.
        first_r = Signal()
        m.d.sync += first_r.eq(inputs.first)
        with m.If(first_r):
            m.d.sync += [cycles.eq(1), running.eq(1)]
        with m.Elif(running & ~res.valid):
            m.d.sync += cycles.eq(cycles + 1)

        # ---------------------------------------------------------------- the sequencer
        queues_empty = mainq.empty if scq is None else (mainq.empty & (~sc_here | scq.empty))
        with m.Switch(phase):
            with m.Case(Phase.INIT):
                # acc of every layer must start at 0 (parity 0); UPDATE keeps it so afterwards.
                m.d.comb += [cmd.clear.eq(1), cmd.addr.eq(cnt)]
                with m.If(cnt == plan.neuron_depth - 1):
                    m.d.sync += cnt.eq(0)
                    m.d.comb += phase_nxt.eq(Phase.LOAD)
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.LOAD, Phase.ACC):
                m.d.comb += common
                m.d.comb += [
                    cmd.acc.eq(issuing),
                    cmd.sparse.eq(cur_sparse),
                    cmd.addr.eq(cur_n),
                    cmd.mask.eq(cur_mask),
                    cmd.geo.eq(cur_geo),
                    cmd.val.eq(cur_val),
                    cmd.layer0.eq(layer == 0),
                    nxt.lanes.eq(Mux(cur_chunked & (cur_k == last_c), last_lanes, n)),
                ]
                with m.If(in_load & inputs.done & quiet):
                    m.d.sync += cnt.eq(0)
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
                # the previous UPDATE's last updates may still push spike entries.
                with m.If(in_acc & queues_empty & ~update_in_flight & quiet):
                    m.d.sync += cnt.eq(0)
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
            with m.Case(Phase.UPDATE):
                m.d.comb += common
                stall = (cnt == 0) & (layer != out_layer) & ~trace_empty
                first = (xq == 0) & (yq == 0)
                last = (xq == last_q) & (yq == last_q)
                m.d.comb += [
                    nxt.c.eq(uc), nxt.pos.eq(upos), nxt.pidx.eq(pcol + uc), nxt.py.eq(py), nxt.px.eq(px),
                    nxt.first.eq(first | ~pool_on), nxt.last.eq(last | ~pool_on),
                    nxt.rbm.eq(c_rb_main + rb_row + rb_col + cN), nxt.rbs.eq(c_rb_sc + cN),
                    nxt.lanes.eq(Mux(uc == last_c, last_lanes, n)),
                    cmd.addr.eq(upd_addr),
                    cmd.layer0.eq(layer == 0),
                ]
                with m.If(~stall):
                    m.d.comb += [cmd.update.eq(1), cmd.clear.eq(layer != 0)]
                    wrap_c = uc == last_c
                    m.d.sync += [uc.eq(Mux(wrap_c, 0, uc + 1)), cN.eq(Mux(wrap_c, 0, cN + n))]
                    with m.If(wrap_c):
                        m.d.sync += upos.eq(upos + 1)
                        wrap_x = ux == last_x
                        with m.If(wrap_x):
                            m.d.sync += [ux.eq(0), xq.eq(0), px.eq(0), pcol.eq(0), rb_col.eq(0)]
                            with m.If(yq == last_q):
                                m.d.sync += [yq.eq(0), py.eq(py + 1), rb_row.eq(rb_row + c_rb_prow)]
                            with m.Else():
                                m.d.sync += yq.eq(yq + 1)
                        with m.Else():
                            m.d.sync += ux.eq(ux + 1)
                            with m.If(xq == last_q):
                                m.d.sync += [xq.eq(0), px.eq(px + 1), pcol.eq(pcol + chunks_c),
                                             rb_col.eq(rb_col + c_rb_pos)]
                            with m.Else():
                                m.d.sync += xq.eq(xq + 1)
                    with m.If(cnt == per_layer([lp.updates - 1 for lp in layers], cnt.shape().width)):
                        m.d.sync += [cnt.eq(0), uc.eq(0), cN.eq(0), upos.eq(0), ux.eq(0), xq.eq(0),
                                     yq.eq(0), px.eq(0), py.eq(0), pcol.eq(0), rb_row.eq(0), rb_col.eq(0)]
                        with m.If(layer == out_layer):
                            m.d.comb += phase_nxt.eq(Phase.EXIT_WAIT)
                        with m.Else():
                            m.d.sync += layer.eq(layer + 1)
                            m.d.comb += phase_nxt.eq(Phase.ACC)
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.EXIT_WAIT):
                # until the last output chunk's values are in top2
                with m.If(cnt == exit_wait - 1):
                    m.d.sync += cnt.eq(0)
                    m.d.comb += phase_nxt.eq(Phase.EXIT)
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.EXIT):
                with m.If(done_now):
                    m.d.comb += phase_nxt.eq(Phase.RESULT)
                with m.Else():
                    m.d.sync += [t.eq(t + 1), layer.eq(0)]
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
            with m.Case(Phase.RESULT):
                with m.If(res.ready & res.valid):
                    m.d.comb += inputs.restart.eq(1)
                    m.d.sync += [t.eq(1), layer.eq(0), running.eq(0), img.eq(~img)]
                    m.d.comb += phase_nxt.eq(Phase.LOAD)
        m.d.sync += clear_counters.eq(res.ready & res.valid)
        return m


def _flatten(layout, prefix="", base=0):
    out = []
    for name, field in layout:
        full = f"{prefix}{name}"
        if isinstance(field.shape, data.StructLayout):
            sub = "" if name == "layers" and not prefix else full + "."
            out += _flatten(field.shape, sub, base + field.offset)
        else:
            out.append({"name": full, "offset": base + field.offset, "width": field.width})
    return out


def describe(accel):
    """JSON-able description of ``accel``'s ports, payload fields, memories and counters.

    Payload field offsets are bit offsets in the flattened payload, LSB first: a field's value is
    ``(payload >> offset) & ((1 << width) - 1)``. Per-layer counters are named
    ``"<layer>.<counter>"``.
    """
    if not isinstance(accel, Accelerator):
        raise TypeError(f"describe() needs an Accelerator, got {type(accel).__name__}")
    plan, model = accel.plan, accel.model
    widths, depths = plan.widths(), plan.depths()
    return {
        "top": TOP_NAME,
        "model": model.name,
        "n_pe": plan.n_pe,
        "input": {"port": "i_data", "width": model.input_bits, "count": model.input_size},
        "result": {"port": "o_result", "width": accel.result_layout.size,
                   "fields": _flatten(accel.result_layout)},
        "trace": ({"port": "o_trace", "width": accel.trace_layout.size,
                   "fields": _flatten(accel.trace_layout)} if accel.trace else None),
        "weights": ({"store": "load", "port": "i_weights", "width": plan.word_bits,
                     "count": plan.n_pe * plan.weight_depth,
                     "order": "PE by PE, address by address: the words of mem/pe_0_weight.hex, then "
                              "mem/pe_1_weight.hex, ...; after every reset, before the first image "
                              "(i_data stays closed until the last word)"}
                    if accel.weights == "load" else
                    {"store": "rom", "port": None,
                     "order": "the weight memories are initialised with the model's weights"}),
        "cycles": CYCLES_DEFINITION,
        "counters": list(COUNTERS),
        "layers": [{"name": lp.name, "role": lp.role, "kind": lp.kind, "in_features": lp.in_features,
                    "out_features": lp.out_features, "channels": lp.channels, "map": [lp.ho, lp.wo],
                    "pool": lp.pool, "positions": lp.positions, "chunks": lp.chunks,
                    "neuron_base": lp.neuron_base, "weight_base": lp.weight_base, "storage": lp.storage,
                    "weight_words": r["words"], "dense_bits": r["dense_bits"], "sparse_bits": r["sparse_bits"]}
                   for lp, r in zip(plan.layers, plan.storage_report)],
        "sparse_layers": list(plan.sparse_layers),
        "weight_word": {"weight_bits": plan.weight_bits, "tap_bits": plan.tap_bits, "chunk_bits": plan.chunk_bits},
        "weight_memory_bits": plan.weight_memory_bits,
        "memories": [{"pe": f"pe_{p}", "name": mem, "depth": depths[mem], "width": widths[mem] + (mem == "acc"),
                      "file": f"mem/pe_{p}_{mem}.hex",
                      "initialised": not (mem == "weight" and accel.weights == "load")}
                     for p in range(plan.n_pe) for mem in MEMORIES]
        + [{"pe": None, "name": "rows", "depth": max(plan.n_rows, 1), "width": plan.rows_bits,
            "file": "mem/rows.hex", "initialised": True}],
    }


def _hex_lines(values, width):
    digits = -(-width // 4)
    mask = (1 << width) - 1
    return "".join(f"{v & mask:0{digits}x}\n" for v in values)


# write_verilog's initial block of an all-zero memory named `weight` (Amaranth gives every memory
# initial contents; a weight memory written through i_weights has none).
_ZERO_WEIGHT_INIT = re.compile(r"^(  reg \[\d+:0\] weight \[\d+:0\];\n)  initial begin\n(?:    weight\[\d+\] = \d+'h0+;\n)+  end\n",
                               re.M)


def verilog_text(accel):
    """The accelerator's Verilog. With ``weights="load"`` the weight memories carry no initial
    contents (no ``initial`` block), so that tools map them to RAM that has none (iCE40 SPRAM)."""
    text = verilog.convert(accel, name=TOP_NAME, emit_src=False)
    if accel.weights == "load":
        text, k = _ZERO_WEIGHT_INIT.subn(r"\1", text)
        if k != accel.plan.n_pe:
            raise RuntimeError(f"found {k} weight-memory initial blocks to drop, expected {accel.plan.n_pe}")
    return text


def generate(model, n_pe, out_dir, trace=False, storage="auto", weights="rom"):
    """Write ``spikeloom_accel.v``, ``ports.json``, ``mem/pe_<p>_<mem>.hex`` and ``mem/rows.hex``
    under ``out_dir``.

    The output is deterministic: the same arguments give the same bytes. Returns the paths written.
    """
    accel = Accelerator(model, n_pe, trace=trace, storage=storage, weights=weights)
    out = Path(out_dir)
    (out / "mem").mkdir(parents=True, exist_ok=True)
    text = verilog_text(accel)
    written = []
    path = out / f"{TOP_NAME}.v"
    path.write_text(text)
    written.append(path)
    desc = describe(accel)
    path = out / "ports.json"
    path.write_text(json.dumps(desc, indent=2) + "\n")
    written.append(path)
    plan = accel.plan
    widths = plan.widths()
    widths["acc"] += 1  # the image parity bit
    for p in range(plan.n_pe):
        for mem in MEMORIES:
            path = out / "mem" / f"pe_{p}_{mem}.hex"
            path.write_text(_hex_lines(plan.init(p, mem), widths[mem]))
            written.append(path)
    sbits = max(1, ceil_log2(plan.weight_depth + 1))
    path = out / "mem" / "rows.hex"
    path.write_text(_hex_lines([st | ln << sbits for st, ln in zip(plan.row_start, plan.row_len)] or [0],
                               plan.rows_bits))
    written.append(path)
    return written
