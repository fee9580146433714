"""Per-PE event queues: each PE walks its own entries of a queued layer's bursts (``hw/plan.py``,
"PE queues")."""

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import bits
from .plan import geometries


def burst_layout(plan, lbits):
    """A queue entry: a burst's first weight word, its event's neuron base, value, landing taps and
    source, and this PE's words in it - 1."""
    geos = geometries(plan)
    return data.StructLayout({
        "w": unsigned(bits(plan.weight_depth)),
        "n": unsigned(bits(plan.neuron_depth)),
        "val": unsigned(plan.value_bits),
        "mask": unsigned(max(g.taps for g in geos)),
        "geo": unsigned(bits(len(geos))),
        "last": unsigned(lbits),
    })


class PEQueues(wiring.Component):
    """One event queue of ``plan.queue_depth`` bursts per PE, and each PE's walker.

    A burst is pushed in a cycle with ``push`` (only while ``ready``); PE ``p`` gets an entry when
    its length ``lens[p]`` is not 0. An entry pushed in cycle k is at its queue's head from k + 1;
    a walker whose previous burst ends takes the head in the cycle it issues the head's first
    word, then one word a cycle from ``w`` on: ``valid[p]``/``w[p]`` in that cycle (stage 0),
    ``valid1[p]`` and the word's ``n1``, ``val1``, ``mask1``, ``geo1`` registered a cycle later
    (the PE's stage 1, its ``exe``). A walker that is free with an empty queue takes a pushed
    burst at once: its first word in the push's cycle (the lockstep issue stage's timing), and no
    entry is written.

    Parameters
    ----------
    plan : Plan
        With ``queue_depth > 0``.
    lbits : int
        Width of a PE's own length (:attr:`~spikeloom.hw.plan.Plan.own_bits`).

    Members
    -------
    push : In(1)
        The burst (``w0``, ``n0``, ``val``, ``mask``, ``geo``, ``lens``) enters the queues.
    pending : In(1)
        From registers: a queued burst waits to be pushed (it may be pushed this cycle).
    ready : Out(1)
        A register: no queue is full (a push is taken).
    claim : Out(n_pe)
        From registers (and ``pending``): PE ``p``'s weight address is its walker's ``w[p]`` this
        cycle (a word, or, when ``valid[p]`` is low, a read nobody uses: ``valid1[p]`` is 0).
    any1 : Out(1)
        From registers: some PE's stage-1 word is its own (``valid1`` is not 0).
    idle : Out(1)
        A register: no queue holds an entry and every walker issues at most its burst's last word
        in this cycle (nothing is issued after this cycle unless a burst is pushed).
    """

    def __init__(self, plan, lbits):
        self._plan, self._lbits = plan, lbits
        n, lay = plan.n_pe, burst_layout(plan, lbits)
        self.entry = lay
        per_pe = lambda shape: Out(data.ArrayLayout(shape, n))
        super().__init__({
            "push": In(1),
            "pending": In(1),
            "ready": Out(1, init=1),
            "claim": Out(n),
            "any1": Out(1),
            "w0": In(lay["w"].shape), "n0": In(lay["n"].shape), "val": In(lay["val"].shape),
            "mask": In(lay["mask"].shape), "geo": In(lay["geo"].shape),
            "lens": In(data.ArrayLayout(lbits, n)),
            "valid": Out(n),
            "w": per_pe(lay["w"].shape),
            "valid1": Out(n),
            "n1": per_pe(lay["n"].shape), "val1": per_pe(lay["val"].shape),
            "mask1": per_pe(lay["mask"].shape), "geo1": per_pe(lay["geo"].shape),
            "idle": Out(1, init=1),
        })

    def _walker(self, m, p):
        """PE ``p``'s queue and walker: (whether it is full after this cycle, whether at most its last
        word is left after this cycle)."""
        depth = self._plan.queue_depth
        mem = m.submodules[f"queue_{p}"] = Memory(shape=self.entry, depth=depth, init=[])
        wr, rd = mem.write_port(), mem.read_port(domain="comb")
        wp, rp = Signal(range(depth), name=f"q{p}_wp"), Signal(range(depth), name=f"q{p}_rp")
        cnt = Signal(range(depth + 1), name=f"q{p}_cnt")
        busy, e_last = Signal(name=f"q{p}_busy"), Signal(name=f"q{p}_elast")
        ew, erem = Signal.like(self.w0, name=f"q{p}_ew"), Signal(self._lbits, name=f"q{p}_erem")
        head = rd.data
        put = Signal(name=f"q{p}_put")
        m.d.comb += [
            put.eq(self.push & (self.lens[p] != 0)),
            wr.addr.eq(wp),
            wr.data.w.eq(self.w0), wr.data.n.eq(self.n0), wr.data.val.eq(self.val), wr.data.mask.eq(self.mask),
            wr.data.geo.eq(self.geo), wr.data.last.eq(self.lens[p] - 1),
            rd.addr.eq(rp),
        ]
        has = cnt != 0
        take = ~busy & has
        # a free walker with an empty queue takes the pushed burst itself (no entry is written)
        bypass = ~busy & ~has & put
        first = Signal(self.entry, name=f"q{p}_first")   # the burst a free walker starts
        m.d.comb += [first.eq(Mux(has, head, wr.data)), wr.en.eq(put & ~bypass)]
        valid = busy | has | put
        rem = Mux(busy, erem, first.last)    # words of the burst after the one issued
        last = Mux(busy, e_last, first.last == 0)
        w = Mux(busy, ew, first.w)
        m.d.comb += [self.valid[p].eq(valid), self.w[p].eq(w), self.claim[p].eq(busy | has | self.pending)]
        # the held burst's fields are the stage-1 registers: a busy walker issued its word a cycle before
        m.d.sync += [
            self.valid1[p].eq(valid),
            self.n1[p].eq(Mux(busy, self.n1[p], first.n)), self.val1[p].eq(Mux(busy, self.val1[p], first.val)),
            self.mask1[p].eq(Mux(busy, self.mask1[p], first.mask)),
            self.geo1[p].eq(Mux(busy, self.geo1[p], first.geo)),
            busy.eq(valid & ~last), ew.eq(w + 1), erem.eq(rem - 1), e_last.eq(rem == 1),
        ]
        nxt = Signal.like(cnt, name=f"q{p}_next")
        m.d.comb += nxt.eq(cnt + (put & ~bypass) - take)
        m.d.sync += cnt.eq(nxt)
        with m.If(wr.en):
            m.d.sync += wp.eq(Mux(wp == depth - 1, 0, wp + 1))
        with m.If(take):
            m.d.sync += rp.eq(Mux(rp == depth - 1, 0, rp + 1))
        # after this cycle: no entry, and at most the burst's last word left
        return nxt == depth, (nxt == 0) & (~valid | last | (rem == 1))

    def elaborate(self, platform):
        m = Module()
        fulls, dones = zip(*(self._walker(m, p) for p in range(self._plan.n_pe)))
        m.d.comb += self.any1.eq(self.valid1.any())
        m.d.sync += [self.ready.eq(~Cat(*fulls).any()), self.idle.eq(Cat(*dones).all())]
        return m
