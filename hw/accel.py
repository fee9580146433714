"""The accelerator top: event sources -> SIMD PE array -> neuron update -> early-exit controller.

Phases of one inference (one sequencer drives the same addresses to every PE):

* ``LOAD``: layer 0's accumulate. Input values stream in; each nonzero value ``x`` at index ``i``
  issues ``chunks[0]`` cycles of ``acc += W0[:, i] * x``; zero values cost one cycle, and are
  accepted even while a previous value's chunks are being issued. Done once per image.
* per timestep, for each layer ``l``: ``UPDATE`` (one chunk per cycle: LIF step or output
  integration, spikes pushed to the spike queue and the trace) then, for ``l + 1``, ``ACC`` (one
  event per popped spike, ``chunks[l + 1]`` cycles each, back to back).
* ``EXIT``: the top-1/top-2 of the output values is merged during the output ``UPDATE``; the
  registered margin comparison then decides between the next timestep and ``RESULT``.

Event stage: an event (a nonzero input value or a popped spike) first goes into a register, with
its weight-row address ``weight_base[l] + index * chunks[l]`` already computed, and is issued from
there (the multiply and the spike queue's priority encoder are off the weight-address path). The
register refills in the cycle it hands its event over, so events still follow back to back.

Pipeline-drain overhead (cycles in which no chunk is issued; ``hw/perf.py`` models it exactly):

* ``LOAD``: a nonzero value is issued one cycle after its transfer at the earliest (the event
  stage); that cycle is hidden while the previous value's chunks are being issued. Zero values cost
  a cycle only when no chunk is being issued (they are accepted in parallel with a nonzero value's
  chunks). ``LOAD`` -> ``UPDATE``: 0 cycles when a chunk is still being issued in the cycle after
  the last value's transfer (e.g. the last value is nonzero), else 1.
* ``UPDATE`` -> ``ACC``: a chunk's spikes reach the queue ``SPIKE_STAGE`` (5) cycles after its
  issue and the event stage one cycle after that, also while the layer is still updating (an
  event fetched then is issued in the first ``ACC`` cycle). The ``ACC`` phase cannot end while a
  spiking update is still in the PE pipeline, so with no spike at all it lasts ``SPIKE_STAGE``
  cycles (the last chunk's stages 1..4 and its push cycle; with spikes in the last chunk, their
  events follow).
* ``ACC`` -> ``UPDATE``: 0 cycles: the phase ends in the cycle that issues the last event's last
  chunk.
* output ``UPDATE`` -> next timestep or ``RESULT``: ``Z_STAGE + Top2.latency + 1`` cycles (the
  last chunk's outputs leave the PEs in stage ``Z_STAGE`` (4), pass the registered top-2 tree and
  merge, the margin comparison is registered, then the exit decision).

Weights: ``weights="rom"`` initialises the weight memories with the model's weights;
``weights="load"`` leaves them without initial contents (single-port RAM such as iCE40 UltraPlus
SPRAM) and adds the ``i_weights`` stream, taken in a ``WEIGHTS`` phase after every reset.
"""

import json
import re
from pathlib import Path

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.back import verilog
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeloom.model.golden import COUNTERS

from .events import InputEventSource, SpikeEventSource
from .exit import Top2
from .pe import PE, SPIKE_STAGE, W_NZ_STAGE, Z_STAGE, exec_layout, issue_layout
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
    """Payload of ``o_trace``: the spikes of one chunk of one layer update."""
    return data.StructLayout({
        "timestep": unsigned(_bits(plan.model.t_max + 1)),
        "layer": unsigned(_bits(plan.n_layers)),
        "chunk": unsigned(_bits(plan.max_chunks)),
        "mask": unsigned(plan.n_pe),
    })


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
    """Spiking-network inference accelerator generated for one fully-connected ``QuantModel``.

    Parameters
    ----------
    model : QuantModel
        The integer network (``golden.run`` is the specification).
    n_pe : int
        Processing elements (1..64); PE ``p`` owns neurons ``c * n_pe + p`` of every layer.
    trace : bool
        Add the ``o_trace`` spike-trace stream.
    weights : str
        ``"rom"`` (default): the weight memories are initialised with the model's weights (block
        RAM initial contents). ``"load"``: they have no initial contents and are written through
        ``i_weights`` after every reset (single-port RAM such as iCE40 UltraPlus SPRAM).

    Members
    -------
    i_data : In(stream.Signature(unsigned(model.input_bits)))
        ``model.input_size`` values per image in index order, no framing. Accepted only in the
        load phase of an image, i.e. after the previous image's result has been transferred.
        ``ready`` is combinational from ``valid`` and the payload (zeros are taken at once).
    o_result : Out(stream.Signature(result_layout(plan)))
        One transfer per image: ``pred``, ``timesteps`` (executed, 1..t_max), ``cycles`` (see
        ``CYCLES_DEFINITION``) and per layer the six ``golden.COUNTERS`` summed over executed
        timesteps. ``valid`` stays high with a stable payload until ``ready``; with ``trace`` it
        rises only once the trace queue has drained.
    i_weights : In(stream.Signature(unsigned(plan.weight_bits))), only with ``weights="load"``
        The weight memories' contents, two's complement, PE by PE: the ``weight_depth`` words of
        ``mem/pe_0_weight.hex`` in address order, then PE 1's, ..., ``n_pe * weight_depth`` words.
        After reset ``ready`` is high (registered, not dependent on ``valid``) until the last word
        has been transferred; then the accelerator clears its accumulators and ``i_data`` opens.
        The weights stay until the next reset; reloading them is reset, then the whole stream.
    o_trace : Out(stream.Signature(trace_layout(plan))), only with ``trace``
        One transfer per chunk with at least one spike, in production order: ``timestep``
        (1-based), ``layer`` (index), ``chunk`` and the lane ``mask`` (bit ``p``: neuron
        ``chunk * n_pe + p``). Back-pressure stalls the next spiking-layer update until the
        queue (depth: most chunks of a spiking layer) is empty; nothing is dropped.
    """

    def __init__(self, model, n_pe, trace=False, weights="rom"):
        try:
            if not isinstance(trace, bool):
                raise TypeError(f"trace must be a bool, got {trace!r}")
            if weights not in WEIGHT_STORES:
                raise ValueError(f"weights must be one of {', '.join(map(repr, WEIGHT_STORES))}, got {weights!r}")
            self.plan = Plan(model, n_pe)
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
            ports["i_weights"] = In(stream.Signature(unsigned(self.plan.weight_bits)))
        if trace:
            ports["o_trace"] = Out(stream.Signature(self.trace_layout))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        plan, model = self.plan, self.model
        n, n_layers = plan.n_pe, plan.n_layers
        out_layer = n_layers - 1

        loading = self.weights == "load"
        pes = [PE(plan, p, self.weights) for p in range(n)]
        for p, pe in enumerate(pes):
            m.submodules[f"pe_{p}"] = pe
        m.submodules.inputs = inputs = InputEventSource(model.input_size, model.input_bits, plan.max_in)
        wiring.connect(m, wiring.flipped(self.i_data), inputs.i_data)
        m.submodules.spikes = spikes = SpikeEventSource(
            n, plan.max_chunks, plan.max_spiking_chunks, plan.max_in, model.input_bits)
        m.submodules.exit = top2 = Top2(n, plan.membrane_bits, model.n_classes, model.exit_threshold)

        init_phase = Phase.WEIGHTS if loading else Phase.INIT
        phase = Signal(Phase, init=init_phase)
        # The next phase (default: stay), and registered one-hot flags of the phases the datapath
        # tests: they are a flip-flop each instead of a decode of `phase` in the event handshake.
        phase_nxt = Signal(Phase)
        m.d.comb += phase_nxt.eq(phase)
        m.d.sync += phase.eq(phase_nxt)
        flags = {}
        for ph in (Phase.LOAD, Phase.ACC, Phase.UPDATE, Phase.RESULT):
            flags[ph] = Signal(name=f"in_{ph.name.lower()}", init=int(init_phase == ph))
            m.d.sync += flags[ph].eq(phase_nxt == ph)
        layer = Signal(range(n_layers))
        t = Signal(range(model.t_max + 1), init=1)
        exit_wait = Z_STAGE + top2.latency  # cycles between the last output chunk's issue and EXIT
        cnt = Signal(range(max(plan.neuron_depth, exit_wait, 2)))
        running = Signal()
        cycles = Signal(COUNTER_BITS)
        counters = [{c: Signal(COUNTER_BITS, name=f"{lp.name}_{c}") for c in COUNTERS} for lp in plan.layers]

        def per_layer(values, width):
            return Array(Const(v, width) for v in values)[layer]

        last_c = per_layer([lp.chunks - 1 for lp in plan.layers], _bits(plan.max_chunks))
        n_base = per_layer([lp.neuron_base for lp in plan.layers], _bits(plan.neuron_depth))

        # Event stage: the next event, with its weight-row address already computed, waits in a
        # register (the multiply and the spike queue's priority encoder stay off the weight
        # address path). Spike events are fetched as soon as the queue has them, also while the
        # layer that produces them is still updating, so an ACC phase finds its first event there.
        in_load, in_acc, in_update = flags[Phase.LOAD], flags[Phase.ACC], flags[Phase.UPDATE]
        e_valid = Signal()
        e_base = Signal(issue_layout(plan).members["w_addr"])
        e_x = Signal(model.input_bits)
        e_first = Signal()
        src_valid = Signal()
        src_index = Signal.like(inputs.events.payload.index)
        src_base = Signal.like(e_base)
        m.d.comb += [
            src_valid.eq(Mux(in_load, inputs.events.valid, spikes.events.valid)),
            src_index.eq(Mux(in_load, inputs.events.payload.index, spikes.events.payload.index)),
        ]
        # Spike events fetched during layer l's UPDATE are layer l + 1's (their weights).
        with m.Switch(layer):
            for li, lp in enumerate(plan.layers):
                with m.Case(li):
                    if li + 1 < n_layers:
                        nx = plan.layers[li + 1]
                        m.d.comb += src_base.eq(Mux(in_update, nx.weight_base + src_index * nx.chunks,
                                                    lp.weight_base + src_index * lp.chunks))
                    else:
                        m.d.comb += src_base.eq(lp.weight_base + src_index * lp.chunks)

        # The event being issued: from the registers while busy (chunks 1.. of a multi-chunk
        # event), else from the event stage, so that events follow back to back.
        busy = Signal()
        # at least 1 bit: a zero-width signal (one chunk per layer) is emitted as an ascending `[-1:0]` vector
        ec = Signal(range(max(plan.max_chunks, 2)))
        eaddr = Signal.like(e_base)
        ex = Signal(model.input_bits)
        efirst = Signal()
        take = ~busy & e_valid & (in_load | in_acc)
        issuing = busy | take
        e_ready = ~e_valid | take
        cur_c = Signal.like(ec)
        cur_addr = Signal.like(e_base)
        cur_x = Signal.like(ex)
        cur_first = Signal()
        m.d.comb += [
            cur_c.eq(Mux(busy, ec, 0)),
            cur_addr.eq(Mux(busy, eaddr, e_base)),
            cur_x.eq(Mux(busy, ex, e_x)),
            cur_first.eq(Mux(busy, efirst, e_first)),
            inputs.enable.eq(in_load),
            inputs.events.ready.eq(e_ready & in_load),
            spikes.events.ready.eq(e_ready & ~in_load),
        ]
        with m.If(src_valid & e_ready):
            m.d.sync += [
                e_valid.eq(1),
                e_base.eq(src_base),
                e_x.eq(Mux(in_load, inputs.events.payload.x, 1)),
                e_first.eq(in_load & ~inputs.any),
            ]
        with m.Elif(take):
            m.d.sync += e_valid.eq(0)
        at_last = cur_c == last_c
        with m.Switch(layer):
            for li in range(n_layers):
                with m.Case(li):
                    with m.If(take):
                        m.d.sync += counters[li]["input_events"].eq(counters[li]["input_events"] + 1)
        with m.If(issuing & ~at_last):
            m.d.sync += [busy.eq(1), ec.eq(cur_c + 1), eaddr.eq(cur_addr + 1), ex.eq(cur_x), efirst.eq(cur_first)]
        with m.Else():
            m.d.sync += busy.eq(0)
        # Nothing left to issue after this cycle: the event stage is empty or handing over an event
        # of a single chunk, and the event being issued (if any) is in its last chunk.
        quiet = Signal()
        m.d.comb += quiet.eq(Mux(busy, ~e_valid & at_last, ~e_valid | at_last))

        # Stage 0 (issue) -> stage 1 (execute) broadcast.
        issue = Signal(issue_layout(plan))
        nxt = Signal(exec_layout(plan))
        exe = Signal(exec_layout(plan))
        nxt_chunk, s1_chunk = Signal.like(ec), Signal.like(ec)
        # the lane count of the chunk is derived in stage 1 from a registered last-chunk flag
        nxt_last, s1_last = Signal(), Signal()
        s1_lanes = Signal(range(n + 1))
        nxt_layer, s1_layer = Signal(range(n_layers)), Signal(range(n_layers))
        m.d.sync += [exe.eq(nxt), s1_chunk.eq(nxt_chunk), s1_last.eq(nxt_last), s1_layer.eq(nxt_layer)]
        last_lanes_s1 = Array(Const(lp.last_lanes, _bits(n + 1)) for lp in plan.layers)[s1_layer]
        m.d.comb += s1_lanes.eq(Mux(s1_last, last_lanes_s1, n))
        for p, pe in enumerate(pes):
            m.d.comb += [pe.issue.eq(issue), pe.exe.eq(exe), pe.lane_valid.eq(s1_lanes > p)]
        # The stage-1 command and its chunk, lane count and layer, delayed to stages 2..SPIKE_STAGE.
        stages = {1: (exe, s1_chunk, s1_lanes, s1_layer)}
        for st in range(2, SPIKE_STAGE + 1):
            cur = (Signal(exec_layout(plan), name=f"s{st}"), Signal.like(s1_chunk, name=f"s{st}_chunk"),
                   Signal.like(s1_lanes, name=f"s{st}_lanes"), Signal.like(s1_layer, name=f"s{st}_layer"))
            m.d.sync += [a.eq(b) for a, b in zip(cur, stages[st - 1])]
            stages[st] = cur

        chunk = Mux(in_update, cnt, cur_c)
        if loading:
            # PE by PE, address by address; the weight memories' one address serves the load.
            wl = self.i_weights
            wl_pe = Signal(range(max(n, 2)))
            wl_addr = Signal.like(e_base)
            wl_on = Signal(init=1)
            m.d.comb += [
                wl.ready.eq(wl_on),
                issue.w_addr.eq(Mux(wl_on, wl_addr, cur_addr)),
            ]
            for p, pe in enumerate(pes):
                m.d.comb += [pe.load_en.eq(wl.valid & wl_on & (wl_pe == p)), pe.load_data.eq(wl.payload)]
            with m.If(wl.valid & wl_on):
                with m.If(wl_addr == plan.weight_depth - 1):
                    m.d.sync += [wl_addr.eq(0), wl_pe.eq(wl_pe + 1)]
                    with m.If(wl_pe == n - 1):
                        m.d.comb += phase_nxt.eq(Phase.INIT)
                        m.d.sync += wl_on.eq(0)
                with m.Else():
                    m.d.sync += wl_addr.eq(wl_addr + 1)
        else:
            m.d.comb += issue.w_addr.eq(cur_addr)
        m.d.comb += [
            issue.n_addr.eq(n_base + chunk),
            nxt.addr.eq(n_base + chunk),
            nxt.x.eq(cur_x),
            nxt.zero_old.eq(cur_first),
            nxt.output.eq(layer == out_layer),
            nxt.first_t.eq(t == 1),
            nxt.gate.eq((layer == 0) & ~inputs.any),
            nxt_chunk.eq(chunk),
            nxt_last.eq(chunk == last_c),
            nxt_layer.eq(layer),
        ]

        # Synaptic-event counters (stage W_NZ_STAGE), output top-2 (stage Z_STAGE), spikes and
        # update counters (stage SPIKE_STAGE).
        sw, sw_chunk, sw_lanes, sw_layer = stages[W_NZ_STAGE]
        n_syn = _popcount(m, Cat(pe.w_nz for pe in pes), "n_syn")
        with m.If(sw.acc):
            with m.Switch(sw_layer):
                for li in range(n_layers):
                    with m.Case(li):
                        cs = counters[li]
                        m.d.sync += [
                            cs["weight_reads"].eq(cs["weight_reads"] + sw_lanes),
                            cs["synaptic_events"].eq(cs["synaptic_events"] + n_syn),
                        ]
        ss, ss_chunk, ss_lanes, ss_layer = stages[SPIKE_STAGE]
        mask = Signal(n)
        m.d.comb += mask.eq(Cat(pe.spike for pe in pes))
        n_spikes = _popcount(m, mask, "n_spikes")
        with m.If(ss.update):
            with m.Switch(ss_layer):
                for li in range(n_layers):
                    with m.Case(li):
                        cs = counters[li]
                        m.d.sync += [
                            cs["membrane_reads"].eq(cs["membrane_reads"] + ss_lanes),
                            cs["membrane_writes"].eq(cs["membrane_writes"] + ss_lanes),
                            cs["spikes"].eq(cs["spikes"] + n_spikes),
                        ]
        push = ss.update & ~ss.output & (mask != 0)
        m.d.comb += [
            spikes.push.valid.eq(push),
            spikes.push.payload.chunk.eq(ss_chunk),
            spikes.push.payload.mask.eq(mask),
        ]
        sz, sz_chunk, sz_lanes, _ = stages[Z_STAGE]
        z_base = Signal.like(top2.base)
        m.d.sync += z_base.eq(stages[Z_STAGE - 1][1] * n)
        for p, pe in enumerate(pes):
            m.d.comb += [top2.values[p].eq(pe.z), top2.valid[p].eq(sz_lanes > p)]
        m.d.comb += [
            top2.base.eq(z_base),
            top2.en.eq(sz.update & sz.output),
            top2.restart.eq(sz_chunk == 0),
        ]
        # A spiking-layer update still in the pipeline may yet push a spike-queue entry.
        update_in_flight = push
        for st in range(1, SPIKE_STAGE):
            update_in_flight = update_in_flight | stages[st][0].update

        if self.trace:
            m.submodules.trace_queue = tq = SyncFIFO(width=self.trace_layout.size,
                                                     depth=max(plan.max_spiking_chunks, 2))
            entry = Signal(self.trace_layout)
            m.d.comb += [
                entry.timestep.eq(t), entry.layer.eq(ss_layer), entry.chunk.eq(ss_chunk), entry.mask.eq(mask),
                tq.w_data.eq(entry.as_value()),
                tq.w_en.eq(push),
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
        for li, lp in enumerate(plan.layers):
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

        with m.Switch(phase):
            with m.Case(Phase.INIT):
                # acc of the spiking layers must start at 0; UPDATE keeps it so afterwards.
                m.d.comb += [nxt.clear.eq(1), nxt.addr.eq(cnt)]
                with m.If(cnt == plan.neuron_depth - 1):
                    m.d.comb += phase_nxt.eq(Phase.LOAD)
                    m.d.sync += cnt.eq(0)
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.LOAD, Phase.ACC):
                m.d.comb += nxt.acc.eq(issuing)
                with m.If(in_load & inputs.done & quiet):
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
                    m.d.sync += cnt.eq(0)
                # the previous UPDATE's last chunks may still push spike entries.
                with m.If(in_acc & ~spikes.events.valid & ~update_in_flight & quiet):
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
                    m.d.sync += cnt.eq(0)
            with m.Case(Phase.UPDATE):
                stall = (cnt == 0) & (layer != out_layer) & ~trace_empty
                with m.If(~stall):
                    m.d.comb += [nxt.update.eq(1), nxt.clear.eq(layer != 0)]
                    with m.If(cnt == last_c):
                        m.d.sync += cnt.eq(0)
                        with m.If(layer == out_layer):
                            m.d.comb += phase_nxt.eq(Phase.EXIT_WAIT)
                        with m.Else():
                            m.d.comb += phase_nxt.eq(Phase.ACC)
                            m.d.sync += layer.eq(layer + 1)
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.EXIT_WAIT):
                # until the last output chunk's values are in top2
                with m.If(cnt == exit_wait - 1):
                    m.d.comb += phase_nxt.eq(Phase.EXIT)
                    m.d.sync += cnt.eq(0)
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.EXIT):
                with m.If(done_now):
                    m.d.comb += phase_nxt.eq(Phase.RESULT)
                with m.Else():
                    m.d.comb += phase_nxt.eq(Phase.UPDATE)
                    m.d.sync += [t.eq(t + 1), layer.eq(0)]
            with m.Case(Phase.RESULT):
                with m.If(res.ready & res.valid):
                    m.d.comb += inputs.restart.eq(1)
                    m.d.comb += phase_nxt.eq(Phase.LOAD)
                    m.d.sync += [t.eq(1), layer.eq(0), running.eq(0)]
                    m.d.sync += [s.eq(0) for cs in counters for s in cs.values()]
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
        "weights": ({"store": "load", "port": "i_weights", "width": plan.weight_bits,
                     "count": plan.n_pe * plan.weight_depth,
                     "order": "PE by PE, address by address: the words of mem/pe_0_weight.hex, then "
                              "mem/pe_1_weight.hex, ...; two's complement; after every reset, before "
                              "the first image (i_data stays closed until the last word)"}
                    if accel.weights == "load" else
                    {"store": "rom", "port": None,
                     "order": "the weight memories are initialised with the model's weights"}),
        "cycles": CYCLES_DEFINITION,
        "counters": list(COUNTERS),
        "layers": [{"name": lp.name, "role": lp.role, "in_features": lp.in_features,
                    "out_features": lp.out_features, "chunks": lp.chunks, "neuron_base": lp.neuron_base,
                    "weight_base": lp.weight_base} for lp in plan.layers],
        "memories": [{"pe": f"pe_{p}", "name": mem, "depth": depths[mem], "width": widths[mem],
                      "file": f"mem/pe_{p}_{mem}.hex",
                      "initialised": not (mem == "weight" and accel.weights == "load")}
                     for p in range(plan.n_pe) for mem in MEMORIES],
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


def generate(model, n_pe, out_dir, trace=False, weights="rom"):
    """Write ``spikeloom_accel.v``, ``ports.json`` and ``mem/pe_<p>_<mem>.hex`` under ``out_dir``.

    With ``weights="load"`` the ``mem/pe_<p>_weight.hex`` files are what ``i_weights`` must carry.
    The output is deterministic: the same arguments give the same bytes. Returns the paths written.
    """
    accel = Accelerator(model, n_pe, trace=trace, weights=weights)
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
    widths = accel.plan.widths()
    for p in range(accel.plan.n_pe):
        for mem in MEMORIES:
            path = out / "mem" / f"pe_{p}_{mem}.hex"
            path.write_text(_hex_lines(accel.plan.init(p, mem), widths[mem]))
            written.append(path)
    return written
