"""The accelerator top: event sources -> SIMD PE array -> neuron update -> early-exit controller.

Phases of one inference (one sequencer drives the same addresses to every PE):

* ``LOAD``: layer 0's accumulate. Input values stream in; each nonzero value ``x`` at index ``i``
  issues ``chunks[0]`` cycles of ``acc += W0[:, i] * x``; zero values cost one cycle, and are
  accepted even while a previous value's chunks are being issued. Done once per image.
* per timestep, for each layer ``l``: ``UPDATE`` (one chunk per cycle: LIF step or output
  integration, spikes pushed to the spike queue and the trace) then, for ``l + 1``, ``ACC`` (one
  event per popped spike, ``chunks[l + 1]`` cycles each, back to back).
* ``EXIT``: the top-1/top-2 of the output values is merged during the output ``UPDATE``; one
  cycle later the margin decides between the next timestep and ``RESULT``.

Pipeline-drain overhead (cycles in which no chunk is issued; ``hw/perf.py`` models it exactly):

* ``LOAD``: a zero input value costs a cycle only when no chunk is being issued (zeros are
  accepted in parallel with a nonzero value's chunks); ``LOAD`` -> ``UPDATE``: 0 cycles when the
  last value is nonzero and ``chunks[0] > 1``, else 1.
* ``UPDATE`` -> ``ACC``: a chunk's spikes reach the queue ``SPIKE_STAGE`` (5) cycles after its
  issue; the ``ACC`` phase cannot end while a spiking update is still in the PE pipeline, so with
  no spike at all it lasts ``SPIKE_STAGE - 1`` cycles (one more when the last chunk spiked).
* ``ACC`` -> ``UPDATE``: 0 cycles when ``chunks[l] > 1``, 1 when ``chunks[l] == 1`` (an empty
  queue is seen one cycle after the last pop).
* output ``UPDATE`` -> next timestep or ``RESULT``: ``Z_STAGE + Top2.latency`` cycles (the last
  chunk's outputs leave the PEs in stage ``Z_STAGE`` (4), pass the registered top-2 tree and merge,
  then the exit decision).
"""

import json
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
from .plan import MEMORIES, Plan

__all__ = ["Accelerator", "Phase", "describe", "generate", "result_layout", "trace_layout"]

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
    o_trace : Out(stream.Signature(trace_layout(plan))), only with ``trace``
        One transfer per chunk with at least one spike, in production order: ``timestep``
        (1-based), ``layer`` (index), ``chunk`` and the lane ``mask`` (bit ``p``: neuron
        ``chunk * n_pe + p``). Back-pressure stalls the next spiking-layer update until the
        queue (depth: most chunks of a spiking layer) is empty; nothing is dropped.
    """

    def __init__(self, model, n_pe, trace=False):
        try:
            if not isinstance(trace, bool):
                raise TypeError(f"trace must be a bool, got {trace!r}")
            self.plan = Plan(model, n_pe)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # never elaborated: no "created but never used" warning
            raise
        self.model = model
        self.n_pe = n_pe
        self.trace = trace
        self.result_layout = result_layout(self.plan)
        self.trace_layout = trace_layout(self.plan)
        ports = {
            "i_data": In(stream.Signature(unsigned(model.input_bits))),
            "o_result": Out(stream.Signature(self.result_layout)),
        }
        if trace:
            ports["o_trace"] = Out(stream.Signature(self.trace_layout))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        plan, model = self.plan, self.model
        n, n_layers = plan.n_pe, plan.n_layers
        out_layer = n_layers - 1

        pes = [PE(plan, p) for p in range(n)]
        for p, pe in enumerate(pes):
            m.submodules[f"pe_{p}"] = pe
        m.submodules.inputs = inputs = InputEventSource(model.input_size, model.input_bits, plan.max_in)
        wiring.connect(m, wiring.flipped(self.i_data), inputs.i_data)
        m.submodules.spikes = spikes = SpikeEventSource(
            n, plan.max_chunks, plan.max_spiking_chunks, plan.max_in, model.input_bits)
        m.submodules.top2 = top2 = Top2(n, plan.membrane_bits, model.n_classes)

        phase = Signal(Phase, init=Phase.INIT)
        layer = Signal(range(n_layers))
        t = Signal(range(model.t_max + 1), init=1)
        exit_wait = Z_STAGE + top2.latency - 1  # cycles between the last output chunk's issue and EXIT
        cnt = Signal(range(max(plan.neuron_depth, exit_wait, 2)))
        running = Signal()
        cycles = Signal(COUNTER_BITS)
        counters = [{c: Signal(COUNTER_BITS, name=f"{lp.name}_{c}") for c in COUNTERS} for lp in plan.layers]

        def per_layer(values, width):
            return Array(Const(v, width) for v in values)[layer]

        last_c = per_layer([lp.chunks - 1 for lp in plan.layers], _bits(plan.max_chunks))
        n_base = per_layer([lp.neuron_base for lp in plan.layers], _bits(plan.neuron_depth))
        last_lanes = per_layer([lp.last_lanes for lp in plan.layers], _bits(n + 1))

        # The event being issued: from the registers while busy (chunks 1.. of a multi-chunk
        # event), else straight from the event source, so that events follow back to back.
        busy = Signal()
        # at least 1 bit: a zero-width signal (one chunk per layer) is emitted as an ascending `[-1:0]` vector
        ec = Signal(range(max(plan.max_chunks, 2)))
        ebase = Signal(issue_layout(plan).members["w_addr"])
        ex = Signal(model.input_bits)
        efirst = Signal()

        in_load = phase == Phase.LOAD
        in_acc = phase == Phase.ACC
        ev_valid = Signal()
        ev_index = Signal.like(inputs.events.payload.index)
        new_base = Signal.like(ebase)
        m.d.comb += [
            ev_valid.eq((in_load & inputs.events.valid) | (in_acc & spikes.events.valid)),
            ev_index.eq(Mux(in_load, inputs.events.payload.index, spikes.events.payload.index)),
        ]
        take = ~busy & ev_valid
        issuing = busy | ev_valid
        cur_c = Signal.like(ec)
        cur_base = Signal.like(ebase)
        cur_x = Signal.like(ex)
        cur_first = Signal()
        m.d.comb += [
            cur_c.eq(Mux(busy, ec, 0)),
            cur_base.eq(Mux(busy, ebase, new_base)),
            cur_x.eq(Mux(busy, ex, Mux(in_load, inputs.events.payload.x, 1))),
            cur_first.eq(Mux(busy, efirst, in_load & ~inputs.any)),
            inputs.enable.eq(in_load),
            inputs.events.ready.eq(take & in_load),
            spikes.events.ready.eq(take & in_acc),
        ]
        at_last = cur_c == last_c
        with m.Switch(layer):
            for li, lp in enumerate(plan.layers):
                with m.Case(li):
                    m.d.comb += new_base.eq(lp.weight_base + ev_index * lp.chunks)
                    with m.If(take):
                        m.d.sync += counters[li]["input_events"].eq(counters[li]["input_events"] + 1)
        with m.If(issuing & ~at_last):
            m.d.sync += [busy.eq(1), ec.eq(cur_c + 1), ebase.eq(cur_base), ex.eq(cur_x), efirst.eq(cur_first)]
        with m.Else():
            m.d.sync += busy.eq(0)

        # Stage 0 (issue) -> stage 1 (execute) broadcast.
        issue = Signal(issue_layout(plan))
        nxt = Signal(exec_layout(plan))
        exe = Signal(exec_layout(plan))
        nxt_chunk, s1_chunk = Signal.like(ec), Signal.like(ec)
        nxt_lanes, s1_lanes = Signal(range(n + 1)), Signal(range(n + 1))
        nxt_layer, s1_layer = Signal(range(n_layers)), Signal(range(n_layers))
        m.d.sync += [exe.eq(nxt), s1_chunk.eq(nxt_chunk), s1_lanes.eq(nxt_lanes), s1_layer.eq(nxt_layer)]
        for p, pe in enumerate(pes):
            m.d.comb += [pe.issue.eq(issue), pe.exe.eq(exe), pe.lane_valid.eq(s1_lanes > p)]
        # The stage-1 command and its chunk, lane count and layer, delayed to stages 2..SPIKE_STAGE.
        stages = {1: (exe, s1_chunk, s1_lanes, s1_layer)}
        for st in range(2, SPIKE_STAGE + 1):
            cur = (Signal(exec_layout(plan), name=f"s{st}"), Signal.like(s1_chunk, name=f"s{st}_chunk"),
                   Signal.like(s1_lanes, name=f"s{st}_lanes"), Signal.like(s1_layer, name=f"s{st}_layer"))
            m.d.sync += [a.eq(b) for a, b in zip(cur, stages[st - 1])]
            stages[st] = cur

        in_update = phase == Phase.UPDATE
        chunk = Mux(in_update, cnt, cur_c)
        m.d.comb += [
            issue.w_addr.eq(cur_base + cur_c),
            issue.n_addr.eq(n_base + chunk),
            nxt.addr.eq(n_base + chunk),
            nxt.x.eq(cur_x),
            nxt.zero_old.eq(cur_first),
            nxt.output.eq(layer == out_layer),
            nxt.first_t.eq(t == 1),
            nxt.gate.eq((layer == 0) & ~inputs.any),
            nxt_chunk.eq(chunk),
            nxt_lanes.eq(Mux(chunk == last_c, last_lanes, n)),
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

        margin = top2.top1 - top2.top2
        done_now = (margin >= model.exit_threshold) | (t == model.t_max)
        res = self.o_result
        m.d.comb += [
            res.valid.eq((phase == Phase.RESULT) & trace_empty),
            res.payload.pred.eq(top2.top1_index),
            res.payload.timesteps.eq(t),
            res.payload.cycles.eq(cycles),
        ]
        for li, lp in enumerate(plan.layers):
            for c in COUNTERS:
                m.d.comb += res.payload.layers[lp.name][c].eq(counters[li][c])

        with m.If(inputs.first):
            m.d.sync += [cycles.eq(0), running.eq(1)]
        with m.Elif(running & ~res.valid):
            m.d.sync += cycles.eq(cycles + 1)

        with m.Switch(phase):
            with m.Case(Phase.INIT):
                # acc of the spiking layers must start at 0; UPDATE keeps it so afterwards.
                m.d.comb += [nxt.clear.eq(1), nxt.addr.eq(cnt)]
                with m.If(cnt == plan.neuron_depth - 1):
                    m.d.sync += [cnt.eq(0), phase.eq(Phase.LOAD)]
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.LOAD, Phase.ACC):
                m.d.comb += nxt.acc.eq(issuing)
                drained = ~busy | at_last
                with m.If(in_load & inputs.done & drained):
                    m.d.sync += [cnt.eq(0), phase.eq(Phase.UPDATE)]
                # the previous UPDATE's last chunks may still push spike entries.
                with m.If(in_acc & ~ev_valid & ~update_in_flight & drained):
                    m.d.sync += [cnt.eq(0), phase.eq(Phase.UPDATE)]
            with m.Case(Phase.UPDATE):
                stall = (cnt == 0) & (layer != out_layer) & ~trace_empty
                with m.If(~stall):
                    m.d.comb += [nxt.update.eq(1), nxt.clear.eq(layer != 0)]
                    with m.If(cnt == last_c):
                        m.d.sync += cnt.eq(0)
                        with m.If(layer == out_layer):
                            m.d.sync += phase.eq(Phase.EXIT_WAIT)
                        with m.Else():
                            m.d.sync += [layer.eq(layer + 1), phase.eq(Phase.ACC)]
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.EXIT_WAIT):
                # until the last output chunk's values are in top2
                with m.If(cnt == exit_wait - 1):
                    m.d.sync += [cnt.eq(0), phase.eq(Phase.EXIT)]
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
            with m.Case(Phase.EXIT):
                with m.If(done_now):
                    m.d.sync += phase.eq(Phase.RESULT)
                with m.Else():
                    m.d.sync += [t.eq(t + 1), layer.eq(0), phase.eq(Phase.UPDATE)]
            with m.Case(Phase.RESULT):
                with m.If(res.ready & res.valid):
                    m.d.comb += inputs.restart.eq(1)
                    m.d.sync += [phase.eq(Phase.LOAD), t.eq(1), layer.eq(0), running.eq(0)]
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
        "cycles": CYCLES_DEFINITION,
        "counters": list(COUNTERS),
        "layers": [{"name": lp.name, "role": lp.role, "in_features": lp.in_features,
                    "out_features": lp.out_features, "chunks": lp.chunks, "neuron_base": lp.neuron_base,
                    "weight_base": lp.weight_base} for lp in plan.layers],
        "memories": [{"pe": f"pe_{p}", "name": mem, "depth": depths[mem], "width": widths[mem],
                      "file": f"mem/pe_{p}_{mem}.hex"}
                     for p in range(plan.n_pe) for mem in MEMORIES],
    }


def _hex_lines(values, width):
    digits = -(-width // 4)
    mask = (1 << width) - 1
    return "".join(f"{v & mask:0{digits}x}\n" for v in values)


def generate(model, n_pe, out_dir, trace=False):
    """Write ``spikeloom_accel.v``, ``ports.json`` and ``mem/pe_<p>_<mem>.hex`` under ``out_dir``.

    The output is deterministic: the same arguments give the same bytes. Returns the paths written.
    """
    accel = Accelerator(model, n_pe, trace=trace)
    out = Path(out_dir)
    (out / "mem").mkdir(parents=True, exist_ok=True)
    text = verilog.convert(accel, name=TOP_NAME, emit_src=False)
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
