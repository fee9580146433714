"""The activity counters (``golden.COUNTERS`` per layer) and the cycle counter of ``o_result``."""

from amaranth import Module, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from spikeloom.model.golden import COUNTERS

from .common import bits
from .plan import geometries

COUNTER_BITS = 32


def counters_layout():
    return data.StructLayout({c: unsigned(COUNTER_BITS) for c in COUNTERS})


def layers_layout(plan):
    """Every layer's counters, by layer name (``o_result.payload.layers``)."""
    return data.StructLayout({lp.name: counters_layout() for lp in plan.layers})


def popcount(m, bits_, name):
    """The number of ones of ``bits_``: a balanced tree of adders (combinational)."""
    terms = [bits_[i] for i in range(len(bits_))]
    depth = 0
    while len(terms) > 1:
        nxt = []
        for i in range(0, len(terms), 2):
            if i + 1 < len(terms):
                s = Signal(range(len(bits_) + 1), name=f"{name}_{depth}_{i // 2}")
                m.d.comb += s.eq(terms[i] + terms[i + 1])
                nxt.append(s)
            else:
                nxt.append(terms[i])
        terms, depth = nxt, depth + 1
    return terms[0]


class ActivityCounters(wiring.Component):
    """Per-layer activity counters and the ``cycles`` counter.

    An ``acc`` or ``update`` count reaches its counter ``LATENCY`` (2) cycles after its inputs are
    presented: the inputs (valid, layer, popcounts) are registered first, so that no path runs
    from the PEs' flags through the adder tree into a 32-bit counter's carry chain. An ``event``
    (registered by its producer) counts at the next clock edge.

    Parameters
    ----------
    plan : Plan

    Members
    -------
    event, event_geo : In(1), In(source id)
        An event of source ``event_geo`` (``geometries(plan)``) was looked up: ``input_events``
        of its layer + 1 at the clock edge.
    acc, acc_layer, reads, syns : In(1), In(layer), In(n_pe), In(n_pe)
        An accumulate word of ``acc_layer``: ``weight_reads`` += popcount(``reads``),
        ``synaptic_events`` += popcount(``syns``).
    event_two, reads2, syns2 : In(1), In(n_pe), In(n_pe), only when a layer is paired
        With ``event``, ``reads`` and ``syns``: those of a paired word's second event
        (``hw/plan.py``, "Paired events"), counted with them.
    update, update_layer, lanes, spikes : In(1), In(layer), In(lanes), In(n_pe)
        An update of ``update_layer``: ``membrane_reads`` and ``membrane_writes`` += ``lanes``,
        ``spikes`` += popcount(``spikes``).
    clear : In(1)
        The result is taken: every counter is 0 from the cycle after next (a registered pulse: the
        clear reaches every counter bit, too wide a fan-out for the handshake's logic); counts of
        the next cycle are kept. No count may be presented in the cycle of ``clear`` (the sequencer
        is in ``RESULT``: nothing counts).
    first : In(1)
        The image's first input value is transferred: ``cycles`` is 1 two cycles later and counts
        every cycle until ``stop``.
    stop : In(1)
        ``o_result.valid``: ``cycles`` holds. With ``clear`` the count ends.
    layers : Out(layers_layout(plan))
        The counters (registers).
    cycles : Out(COUNTER_BITS)
        The cycle count (register).
    """

    LATENCY = 2

    def __init__(self, plan):
        self._plan = plan
        n, lw = plan.n_pe, bits(plan.n_layers)
        super().__init__({
            "event": In(1),
            "event_geo": In(bits(len(geometries(plan)))),
            "acc": In(1),
            "acc_layer": In(lw),
            "reads": In(n),
            "syns": In(n),
            "update": In(1),
            "update_layer": In(lw),
            "lanes": In(bits(n + 1)),
            "spikes": In(n),
            "clear": In(1),
            "first": In(1),
            "stop": In(1),
            **({"event_two": In(1), "reads2": In(n), "syns2": In(n)} if plan.paired else {}),
            "layers": Out(layers_layout(plan)),
            "cycles": Out(COUNTER_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        counters = [self.layers[lp.name] for lp in plan.layers]
        clear = Signal()
        m.d.sync += clear.eq(self.clear)
        with m.If(clear):
            m.d.sync += [counters[li][c].eq(0) for li in range(plan.n_layers) for c in COUNTERS]
        with m.If(self.event):
            with m.Switch(self.event_geo):
                for gi, g in enumerate(geometries(plan)):
                    with m.Case(gi):
                        cs = counters[g.layer]["input_events"]
                        m.d.sync += cs.eq(cs + 1 + self.event_two if plan.paired else cs + 1)
        # (a paired plan's second popcounts are registered beside the first ones and added to the counter
        # with them: the popcount trees of the PEs' flags do not grow)
        self._count_next_cycle(m, "acc_cnt", self.acc, self.acc_layer, counters, {
            "weight_reads": (popcount(m, self.reads, "n_read"),
                             *([popcount(m, self.reads2, "n_read2")] if plan.paired else [])),
            "synaptic_events": (popcount(m, self.syns, "n_syn"),
                                *([popcount(m, self.syns2, "n_syn2")] if plan.paired else []))})
        self._count_next_cycle(m, "upd_cnt", self.update, self.update_layer, counters, {
            "membrane_reads": self.lanes, "membrane_writes": self.lanes,
            "spikes": popcount(m, self.spikes, "n_spikes")})

        # The first transfer is registered before it starts the count (it is combinational from the
        # input handshake; the counter is wide): in the next cycle the count is 1.
        first_r, running = Signal(), Signal()
        m.d.sync += first_r.eq(self.first)
        with m.If(first_r):
            m.d.sync += [self.cycles.eq(1), running.eq(1)]
        with m.Elif(running & ~self.stop):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.stop & self.clear):
            m.d.sync += running.eq(0)
        return m

    @staticmethod
    def _count_next_cycle(m, name, valid, layer, counters, incs):
        """Add ``incs`` ({counter name: value, or a tuple of values added together}) to layer
        ``layer``'s counters when ``valid``, one cycle later: valid, layer and the values are
        registered first."""
        v = Signal(name=f"{name}_valid")
        lr = Signal(layer.shape(), name=f"{name}_layer")
        incs = {k: x if isinstance(x, tuple) else (x,) for k, x in incs.items()}
        regs = {k: [Signal(Value.cast(x).shape(), name=f"{name}_{k}" + (f"_{i}" if i else "")) for i, x in enumerate(xs)]
                for k, xs in incs.items()}
        m.d.sync += [v.eq(valid), lr.eq(layer), *(r.eq(x) for k, xs in incs.items() for r, x in zip(regs[k], xs))]
        with m.If(v):
            with m.Switch(lr):
                for li, cs in enumerate(counters):
                    with m.Case(li):
                        m.d.sync += [cs[k].eq(sum(r, cs[k])) for k, r in regs.items()]
