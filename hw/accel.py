"""The accelerator top: event sources -> event pipeline -> SIMD PE array -> neuron update ->
early-exit controller. One sequencer drives the same command to every PE.

Phases of one inference:

* ``LOAD``: the analog layer's accumulate, once per image. Input values stream in; each nonzero
  value becomes an event (a row of weights, see :mod:`spikeloom.hw.plan`) with multiplier
  ``val``; zero values are accepted at once, also while earlier events are being issued.
* per timestep, for each layer ``l``: ``UPDATE`` (one chunk of one position per cycle: LIF step
  or output integration; spikes are pooled (OR, or a sum pool's counts) and pushed to the spike queue, and to the shortcut
  queue when a later layer reads them through a residual connection) then, for ``l + 1``,
  ``ACC`` (the events of the spike queue, then of the shortcut queue if ``l + 1`` has one).
* ``EXIT``: the top-1/top-2 of the output values is merged during the output ``UPDATE``; the
  registered margin comparison (``Top2.margin_ok``) decides between the next timestep and
  ``RESULT``.

The parts (each a ``wiring.Component`` with its own test):

* :class:`~spikeloom.hw.events.InputEventSource`, two :class:`~spikeloom.hw.events.SpikeEventSource`
  queues (spikes, shortcut) -> :class:`~spikeloom.hw.pipeline.EventPipeline` (``EV``, ``RW``,
  ``TP`` registers and the issue stage; events are fetched as soon as a queue has them, also
  while the producing layer is still updating);
* :class:`~spikeloom.hw.sequencer.Sequencer` (phases, layer, timestep, the update scan
  :class:`~spikeloom.hw.scan.UpdateScan`) -> the command to the :class:`~spikeloom.hw.pe.PE`
  array and its stage registers;
* the PEs' outputs -> :class:`~spikeloom.hw.pool.SpikePush` (pooling, queue pushes),
  :class:`~spikeloom.hw.counters.ActivityCounters`, :class:`~spikeloom.hw.top2.Top2`,
  :class:`~spikeloom.hw.trace.TraceQueue`; :class:`~spikeloom.hw.weights.WeightLoader` for
  ``weights="load"``.

``hw/perf.py`` replays every cycle of this, with the latencies and rules these parts define.
"""

import json
import re
from pathlib import Path

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from spikeloom.model.golden import COUNTERS

from .common import bits
from .counters import COUNTER_BITS, ActivityCounters, layers_layout
from .events import InputEventSource, SpikeEventSource, spike_entry_layout
from .pe import PE, check_bank_depth, pack_group
from .pipeline import EventPipeline, rows_words
from .plan import MEMORIES, QUEUE_DEPTH, STORAGES, WEIGHT_STORES, Plan, geometries
from .pool import SpikePush, pushes, shortcut_readers
from .sequencer import Phase, Sequencer
from .top2 import Top2
from .trace import TraceQueue
from .weights import WeightLoader

__all__ = ["Accelerator", "Phase", "describe", "generate", "result_layout", "trace_layout", "verilog_text"]

TOP_NAME = "spikeloom_accel"

CYCLES_DEFINITION = (
    "clock cycles strictly between the cycle in which the image's first input value is transferred "
    "(i_data valid & ready) and the first cycle in which o_result.valid is high; neither end counted; "
    "cycles in which the input stream is idle are included")


def result_layout(plan):
    """Payload of ``o_result`` for ``plan`` (fields LSB first in this order)."""
    return data.StructLayout({
        "pred": unsigned(bits(plan.model.n_classes)),
        "timesteps": unsigned(bits(plan.model.t_max + 1)),
        "cycles": unsigned(COUNTER_BITS),
        "layers": layers_layout(plan),
    })


def trace_layout(plan):
    """Payload of ``o_trace``: the spikes of one chunk at one position of one layer update."""
    return data.StructLayout({
        "timestep": unsigned(bits(plan.model.t_max + 1)),
        "layer": unsigned(bits(plan.n_layers)),
        "pos": unsigned(bits(max(lp.positions for lp in plan.layers))),
        "chunk": unsigned(bits(plan.max_chunks)),
        "mask": unsigned(plan.n_pe),
    })


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
    bank_depth : int or None
        With ``"rom"``: weight memories deeper than this are split into banks this deep, each
        with its own read register (:class:`~spikeloom.hw.pe.BankedROM`); the same cycles and
        results. ``make synth`` gives the ECP5 block RAM's depth at the word's width.
    pack : bool
        Pack the last chunk of the layers that allow it (``hw/plan.py``, "Packed tail"; default);
        False: fewer cells, more cycles.
    pair : bool
        Take the events of the layers that allow it two to a word (``hw/plan.py``, "Paired
        events"; default), through a second read port of every weight memory; never with
        ``weights="load"`` (single-port RAM). False: fewer cells, more cycles.
    queue_depth : int
        Entries of each PE's event queue for the compressed layers (``hw/plan.py``, "PE queues";
        default :data:`~spikeloom.hw.plan.QUEUE_DEPTH`); 0: they work in lockstep (fewer cells,
        more cycles on unbalanced weights).

    Members
    -------
    i_data : In(stream.Signature(unsigned(model.input_bits)))
        ``model.input_size`` values per image in row-major order of ``model.input_shape``, no
        framing. Accepted only in the load phase of an image, i.e. after the previous image's
        result has been transferred. ``ready`` comes from registers only (during the load it is
        high unless the event of an accepted nonzero value still waits for the event pipeline).
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

    def __init__(self, model, n_pe, trace=False, storage="auto", weights="rom", bank_depth=None, pack=True,
                 pair=True, queue_depth=QUEUE_DEPTH):
        try:
            if not isinstance(trace, bool):
                raise TypeError(f"trace must be a bool, got {trace!r}")
            if weights not in WEIGHT_STORES:
                raise ValueError(f"weights must be one of {', '.join(map(repr, WEIGHT_STORES))}, got {weights!r}")
            self.bank_depth = check_bank_depth(bank_depth, weights)
            if not isinstance(pair, bool):
                raise TypeError(f"pair must be a bool, got {pair!r}")
            self.plan = Plan(model, n_pe, storage, pack, pair and weights == "rom", queue_depth)
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
        plan, model, n = self.plan, self.model, self.plan.n_pe
        layers = plan.layers
        sc_of = shortcut_readers(model)
        geos = geometries(plan)
        entry = spike_entry_layout(n, plan.n_rows, max(g.h for g in geos), max(g.w for g in geos), plan.count_bits,
                                   plan.paired)

        pes = [PE(plan, p, self.weights, self.bank_depth) for p in range(n)]
        for p, pe in enumerate(pes):
            m.submodules[f"pe_{p}"] = pe
        m.submodules.events = pipe = EventPipeline(plan, shortcut=bool(sc_of))
        m.submodules.inputs = inputs = InputEventSource(layers[0].sources[0].shape, model.input_bits, pipe.ev_layout)
        m.submodules.spikes = mainq = SpikeEventSource(n, max(pushes(lp) for lp in layers[:-1]), entry,
                                                       pipe.ev_layout)
        m.submodules.seq = seq = Sequencer(plan, loading=self.weights == "load")
        m.submodules.push = push = SpikePush(plan, entry, seq.nxt.pidx.shape().width)
        m.submodules.exit = top2 = Top2(n, plan.membrane_bits, model.n_classes,
                                        None if plan.exit_word is not None else model.exit_threshold)
        m.submodules.counters = counters = ActivityCounters(plan)

        # events: input values / spike queue / shortcut queue -> event pipeline -> sequencer
        wiring.connect(m, wiring.flipped(self.i_data), inputs.i_data)
        wiring.connect(m, inputs.events, pipe.i_input)
        wiring.connect(m, mainq.events, pipe.i_main)
        wiring.connect(m, push.main, mainq.push)
        if sc_of:
            m.submodules.shortcut = scq = SpikeEventSource(n, max(pushes(layers[s]) for s in sc_of), entry,
                                                           pipe.ev_layout)
            wiring.connect(m, scq.events, pipe.i_shortcut)
            wiring.connect(m, push.shortcut, scq.push)
            m.d.comb += seq.sc_empty.eq(scq.empty)
        wiring.connect(m, pipe.issue, seq.issue)
        m.d.comb += [
            inputs.enable.eq(seq.in_load), inputs.restart.eq(seq.restart),
            pipe.load.eq(seq.in_load), pipe.enable.eq(seq.in_issue),
            pipe.fetch_layer.eq(seq.fetch_layer), pipe.fetch_shortcut.eq(seq.fetch_shortcut),
            seq.load_done.eq(inputs.done), seq.quiet.eq(pipe.quiet), seq.main_empty.eq(mainq.empty),
            seq.margin_ok.eq(top2.margin_ok),
        ]
        if plan.max_groups:
            m.d.comb += pipe.drained.eq(seq.drained)

        # the command to the PEs; the weight memories' one address also serves the weight load
        w_addr, wl = pipe.issue.w, None
        if self.weights == "load":
            m.submodules.weights = wl = WeightLoader(n, plan.weight_depth, plan.word_bits)
            wiring.connect(m, wiring.flipped(self.i_weights), wl.i_weights)
            m.d.comb += [wl.issue_addr.eq(pipe.issue.w), seq.loaded.eq(wl.done)]
            m.d.comb += [x for p, pe in enumerate(pes) for x in (pe.load_en.eq(wl.load_en[p]),
                                                                  pe.load_data.eq(wl.load_data))]
            w_addr = wl.w_addr
        s1, nxt = seq.s1, seq.nxt
        for p, pe in enumerate(pes):
            pe_w, lane = self._packing(m, pes, p, w_addr, pipe, seq, wl) if plan.max_groups else (w_addr, s1.lanes > p)
            if plan.paired:
                m.d.comb += pe.issue.w_addr2.eq(pipe.issue.w2)
            exe = s1.cmd
            if plan.queued:
                pe_w, exe = self._own_word(m, p, pe_w, pipe.queues, s1.cmd)
            m.d.comb += [pe.issue.w_addr.eq(pe_w), pe.issue.n_addr.eq(seq.n_addr),
                         pe.exe.eq(exe), pe.lane_valid.eq(lane),
                         pe.lead.first_t.eq(nxt.cmd.first_t), pe.lead.output.eq(nxt.cmd.output),
                         pe.lead.lane.eq(nxt.lanes > p)]
            if len(plan.neurons) > 1:
                m.d.comb += pe.lead.neuron.eq(nxt.cmd.neuron)

        # the PEs' outputs: counters, pooled spike pushes, trace, exit unit
        sw, ss = (getattr(seq, f"s{s}") for s in (PE.W_NZ_STAGE, PE.SPIKE_STAGE))
        spikes = Cat(pe.spike for pe in pes)
        m.d.comb += [
            counters.event.eq(pipe.counted), counters.event_geo.eq(pipe.counted_geo),
            counters.acc.eq(self._own_counted(m, pipe.queues, sw) if plan.queued else sw.cmd.acc),
            counters.acc_layer.eq(sw.layer),
            counters.reads.eq(Cat(pe.read for pe in pes)), counters.syns.eq(Cat(pe.syn for pe in pes)),
            *([counters.reads2.eq(Cat(pe.read2 for pe in pes)), counters.syns2.eq(Cat(pe.syn2 for pe in pes)),
               counters.event_two.eq(pipe.counted_two)] if plan.paired else []),
            counters.update.eq(ss.cmd.update), counters.update_layer.eq(ss.layer),
            counters.lanes.eq(ss.lanes), counters.spikes.eq(spikes),
            counters.first.eq(inputs.first),
            push.en.eq(ss.cmd.update & ~ss.cmd.output), push.layer.eq(ss.layer), push.first.eq(ss.first),
            push.last.eq(ss.last), push.pidx.eq(ss.pidx), push.py.eq(ss.py), push.px.eq(ss.px),
            push.rbm.eq(ss.rbm), push.rbs.eq(ss.rbs), push.mask.eq(spikes),
        ]
        # the exit unit's controls of the z stage, registered from the stage before (the decodes
        # of sz's fields would come before its comparisons)
        s_pre = getattr(seq, f"s{PE.Z_STAGE - 1}")
        z_base, z_valid = Signal.like(top2.base), Signal(n, name="z_valid")
        z_en, z_restart = Signal(name="z_en"), Signal(name="z_restart")
        m.d.sync += [z_base.eq(s_pre.c * n), z_en.eq(s_pre.cmd.update & s_pre.cmd.output),
                     z_restart.eq(s_pre.c == 0), *(z_valid[p].eq(s_pre.lanes > p) for p in range(n))]
        m.d.comb += [top2.values[p].eq(pe.z) for p, pe in enumerate(pes)]
        if plan.exit_word is not None:   # the output layer's threshold words, read with z (hw/plan.py)
            m.d.comb += top2.threshold.eq(pes[0].thr.as_unsigned())
        m.d.comb += [top2.valid.eq(z_valid), top2.base.eq(z_base), top2.en.eq(z_en), top2.restart.eq(z_restart)]
        trace_empty = Const(1)
        if self.trace:
            m.submodules.trace_queue = tq = TraceQueue(self.trace_layout, max(lp.updates for lp in layers[:-1]))
            wiring.connect(m, tq.pop, wiring.flipped(self.o_trace))
            m.d.comb += [
                tq.push.valid.eq(ss.cmd.update & ~ss.cmd.output & (spikes != 0)),
                tq.push.payload.timestep.eq(seq.t), tq.push.payload.layer.eq(ss.layer),
                tq.push.payload.pos.eq(ss.pos), tq.push.payload.chunk.eq(ss.c), tq.push.payload.mask.eq(spikes),
            ]
            trace_empty = tq.empty

        res = self.o_result
        taken = res.valid & res.ready
        m.d.comb += [
            res.valid.eq(seq.in_result & trace_empty),
            res.payload.pred.eq(top2.top1_index),
            res.payload.timesteps.eq(seq.t),
            res.payload.cycles.eq(counters.cycles),
            res.payload.layers.eq(counters.layers),
            seq.trace_empty.eq(trace_empty), seq.taken.eq(taken),
            counters.clear.eq(taken), counters.stop.eq(res.valid),
        ]
        return m


    def _own_word(self, m, p, pe_w, queues, cmd):
        """PE ``p``'s weight address and stage-1 command in a plan with queued layers (``hw/plan.py``,
        "PE queues"): its walker's address while it claims the port (a choice of registers), and
        in the load and accumulate phases (``cmd.own``) its own word's accumulate fields, registered
        by the walker, in place of the command."""
        w = Signal.like(pe_w, name=f"w_addr_{p}")
        exe = Signal.like(cmd, name=f"exe_{p}")
        m.d.comb += w.eq(Mux(queues.claim[p], queues.w[p], pe_w))
        # (every bit of exe in both branches: a few bits assigned outside them would be an `always @*`
        # block of their own, which an event-driven simulator, Icarus, does not run at time 0)
        with m.If(cmd.own & queues.valid1[p]):
            m.d.comb += [exe.eq(cmd), exe.acc.eq(1), exe.sparse.eq(1), exe.addr.eq(queues.n1[p]),
                         exe.val.eq(queues.val1[p]), exe.mask.eq(queues.mask1[p]), exe.geo.eq(queues.geo1[p])]
        with m.Else():
            m.d.comb += exe.eq(cmd)
        return w, exe

    @staticmethod
    def _own_counted(m, queues, sw):
        """The counters' accumulate word (stage ``W_NZ_STAGE``) in a plan with queued layers: the
        command's, or some PE's own word (``any1``, stage 1, registered to that stage) of a load or
        accumulate phase."""
        own = queues.any1
        for s in range(2, PE.W_NZ_STAGE + 1):
            own, prev = Signal(name=f"own_{s}"), own
            m.d.sync += own.eq(prev)
        return sw.cmd.acc | (sw.cmd.own & own)

    def _packing(self, m, pes, p, w_addr, pipe, seq, wl):
        """PE ``p``'s weight address and stage-1 lane in a plan with packed layers (``hw/plan.py``,
        "Packed tail"): a lane of group ``g`` reads ``wg[g]`` (the issued word's address, but in a
        packed word its group's event's; a choice of registers, no decision on the address path,
        unless the lane's group differs between packed layers: then the word's source selects it) and
        is valid in a packed word when ``pkv[g]``; its ``psum`` is the sum of its channel's weights
        over the groups of the word (0 outside group 0)."""
        plan, geos = self.plan, geometries(self.plan)
        iss, s1, s3 = pipe.issue, seq.s1, seq.s3
        lane = Signal(name=f"lane_{p}")
        m.d.comb += [lane.eq(s1.lanes > p), pes[p].psum.eq(0)]
        grouped = {gi: pack_group(plan, gi, p) for gi in range(len(geos)) if plan.layers[geos[gi].layer].packed}
        own = {g for g in grouped.values() if g is not None}
        pe_w = Signal.like(w_addr, name=f"w_addr_{p}")
        if not own:
            m.d.comb += pe_w.eq(w_addr)
        elif len(own) == 1:   # the same group in every packed layer (the usual case: one packed layer)
            m.d.comb += pe_w.eq(iss.wg[next(iter(own))])
        else:
            m.d.comb += pe_w.eq(iss.w)
            with m.Switch(iss.geo):
                for gi, g in grouped.items():
                    if g is not None:
                        with m.Case(gi):
                            m.d.comb += pe_w.eq(iss.wg[g])
        if own and wl is not None:
            pe_w = Mux(wl.loading, wl.load_addr, pe_w)
        for gi, g in grouped.items():
            lp = plan.layers[geos[gi].layer]
            with m.If(s1.cmd.packed & (s1.cmd.geo == gi)):
                m.d.comb += lane.eq(s1.pkv[g] if g is not None else 0)
            if g == 0:
                r = lp.last_lanes
                terms = [pes[q * r + p].tail for q in range(lp.groups)]
                while len(terms) > 1:   # a balanced adder tree
                    terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                             for i in range(0, len(terms), 2)]
                # (a lane's tail is 0 outside a packed word: with one packed source, no choice of
                # source after the adders)
                if len(grouped) == 1:
                    m.d.comb += pes[p].psum.eq(terms[0])
                else:
                    with m.If(s3.cmd.geo == gi):
                        m.d.comb += pes[p].psum.eq(terms[0])
        return pe_w, lane


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
    widths, depths = plan.word_widths(), plan.depths()
    return {
        "top": TOP_NAME,
        "model": model.name,
        "n_pe": plan.n_pe,
        "input": {"port": "i_data", "width": model.input_bits, "count": model.input_size,
                  "shape": list(model.input_shape)},   # values in row-major order of this shape
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
                    "pool": lp.pool, "positions": lp.positions, "chunks": lp.chunks, "groups": lp.groups, "paired": lp.paired,
                    "queued": lp.queued,
                    "neuron_base": lp.neuron_base, "weight_base": lp.weight_base, "storage": lp.storage,
                    "segments": lp.segments if lp.storage == "sparse" else None, "forms": r["forms"],
                    "weight_words": r["words"], "dense_bits": r["dense_bits"], "sparse_bits": r["sparse_bits"],
                    "storage_rule": r["rule"], "dense_cycles": r["dense_cycles"], "sparse_cycles": r["sparse_cycles"],
                    "sources": [{"shortcut": g.shortcut, "row_base": g.row_base, "rows": g.rows, "k": g.k}
                                for g in lp.sources]}
                   for lp, r in zip(plan.layers, plan.storage_report)],
        "packed_tail": plan.pack,   # whether layers may pack their last chunk (each layer's "groups")
        "paired_events": plan.pair,  # whether layers may take two events a word (each layer's "paired")
        "pe_queue_depth": plan.queue_depth,  # each PE's event queue, 0: none (each layer's "queued")
        "sparse_layers": list(plan.sparse_layers),
        "sparse_segments": dict(plan.sparse_layers),  # how each compressed layer cuts its rows
        "rows_word": {**dict(zip(("start_bits", "len_bits"), plan.rows_fields)), "segments": plan.rows_segments,
                      "width": plan.rows_bits,
                      "fields": {k: {"lsb": lsb, "width": w} for k, (lsb, w) in plan.rows_layout().items()}},
        "weight_word": {"weight_bits": plan.weight_bits, "tap_bits": plan.tap_bits, "chunk_bits": plan.chunk_bits,
                        "width": plan.word_bits,
                        "fields": {st: {k: {"lsb": lsb, "width": w} for k, (lsb, w) in plan.word_fields(st).items()}
                                   for st in STORAGES}},
        "weight_memory_bits": plan.weight_memory_bits,
        "memories": [{"pe": f"pe_{p}", "name": mem, "depth": depths[mem], "width": widths[mem],
                      "file": f"mem/pe_{p}_{mem}.hex",
                      "initialised": not (mem == "weight" and accel.weights == "load")}
                     for p in range(plan.n_pe) for mem in MEMORIES]
        + [{"pe": None, "name": "rows", "depth": plan.rows_depth, "width": plan.rows_bits,
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


def generate(model, n_pe, out_dir, trace=False, storage="auto", weights="rom", bank_depth=None, pack=True,
             pair=True, queue_depth=QUEUE_DEPTH):
    """Write ``spikeloom_accel.v``, ``ports.json``, ``mem/pe_<p>_<mem>.hex`` and ``mem/rows.hex``
    under ``out_dir``.

    The output is deterministic: the same arguments give the same bytes. Returns the paths written.
    """
    accel = Accelerator(model, n_pe, trace=trace, storage=storage, weights=weights, bank_depth=bank_depth, pack=pack,
                        pair=pair, queue_depth=queue_depth)
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
    widths = plan.word_widths()
    for p in range(plan.n_pe):
        for mem in MEMORIES:
            path = out / "mem" / f"pe_{p}_{mem}.hex"
            path.write_text(_hex_lines(plan.init(p, mem), widths[mem]))
            written.append(path)
    path = out / "mem" / "rows.hex"
    path.write_text(_hex_lines(rows_words(plan) or [0], plan.rows_bits))
    written.append(path)
    return written
