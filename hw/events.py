"""Event sources: they turn layer inputs into a stream of events for the PE array.

An event says "row ``row`` of the current source is active with multiplier ``x`` at input
position ``(y, x)``" (see :mod:`spikeloom.hw.plan` for rows and positions); the sequencer turns
each event into weight-word reads. Both sources present events as an ``amaranth.lib.stream``
whose ``valid`` never depends on ``ready``.
"""

from amaranth import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import bits


def event_layout(n_rows, max_h, max_w, value_bits):
    """One event: row ``row`` at ``(y, x)`` with the multiplier ``val`` (``Plan.value_bits`` wide)."""
    return data.StructLayout({
        "row": unsigned(bits(n_rows)),
        "y": unsigned(bits(max_h)),
        "x": unsigned(bits(max_w)),
        "val": unsigned(value_bits),
    })


def spike_entry_layout(n_pe, n_rows, max_h, max_w, count_bits=0):
    """One spike-queue entry: the spikes of one (pooled) position and chunk as an ``n_pe``-bit lane
    mask; lane ``p``'s event is row ``rbase + p`` at ``(y, x)``. With ``count_bits``
    (``Plan.count_bits``: some layer sum-pools) the entry also carries each lane's value ``count``
    (its window's spike count; 1 for a spike of a layer that does not sum-pool), nonzero exactly on
    the mask's lanes."""
    fields = {
        "rbase": unsigned(bits(n_rows)),
        "y": unsigned(bits(max_h)),
        "x": unsigned(bits(max_w)),
        "mask": unsigned(n_pe),
    }
    if count_bits:
        fields["count"] = data.ArrayLayout(unsigned(count_bits), n_pe)
    return data.StructLayout(fields)


class InputEventSource(wiring.Component):
    """Events of the analog layer, from the image's input values.

    A zero value is accepted in the cycle it is offered, whatever ``events.ready``; a nonzero
    value becomes an event and is accepted with it. Values arrive in row-major order of
    ``shape``: (C, H, W) for a conv first layer (event row = channel, at ``(y, x)``), or (F,) for
    a dense one (event row = index, at (0, 0)).

    Parameters
    ----------
    shape : tuple
        (C, H, W) or (F,).
    input_bits : int
    layout : StructLayout
        The event payload (:func:`event_layout`; ``val`` at least ``input_bits`` wide).

    Members
    -------
    i_data : In(stream.Signature(unsigned(input_bits)))
        Input values in order; ``ready`` is combinational from ``valid``, the payload, ``enable``
        and ``events.ready``.
    events : Out(stream.Signature(layout))
        Nonzero values; ``valid`` combinational from ``i_data``.
    enable : In(1)
        Accept values (the load phase).
    restart : In(1)
        Start a new image (synchronous; takes effect next cycle).
    first : Out(1)
        The first value of the image is transferred this cycle.
    done : Out(1)
        All values of the image have been transferred (registered).
    """

    @staticmethod
    def chw(shape):
        """The (C, H, W) the values are counted in: a conv input's own, a dense input's (F,) as (F, 1, 1)."""
        return tuple(shape) if len(shape) == 3 else (int(shape[0]), 1, 1)

    def __init__(self, shape, input_bits, layout):
        self._shape = self.chw(shape)
        super().__init__({
            "i_data": In(stream.Signature(unsigned(input_bits))),
            "events": Out(stream.Signature(layout)),
            "enable": In(1),
            "restart": In(1),
            "first": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n_c, n_h, n_w = self._shape
        row = Signal(range(max(n_c, 2)))
        y = Signal(range(max(n_h, 2)))
        x = Signal(range(max(n_w, 2)))
        value = self.i_data.payload
        open_ = self.enable & ~self.done
        m.d.comb += [
            self.events.valid.eq(open_ & self.i_data.valid & (value != 0)),
            self.events.payload.row.eq(row),
            self.events.payload.y.eq(y),
            self.events.payload.x.eq(x),
            self.events.payload.val.eq(value),
            self.i_data.ready.eq(open_ & ((value == 0) | self.events.ready)),
        ]
        accept = self.i_data.valid & self.i_data.ready
        m.d.comb += self.first.eq(accept & (row == 0) & (y == 0) & (x == 0))
        with m.If(self.restart):
            m.d.sync += [row.eq(0), y.eq(0), x.eq(0), self.done.eq(0)]
        with m.Elif(accept):
            with m.If(x == n_w - 1):
                m.d.sync += x.eq(0)
                with m.If(y == n_h - 1):
                    m.d.sync += y.eq(0)
                    with m.If(row == n_c - 1):
                        m.d.sync += self.done.eq(1)
                    with m.Else():
                        m.d.sync += row.eq(row + 1)
                with m.Else():
                    m.d.sync += y.eq(y + 1)
            with m.Else():
                m.d.sync += x.eq(x + 1)
        return m


class SpikeEventSource(wiring.Component):
    """A spike queue: entries (row base, position, lane mask, lane counts) in, one event per lane
    of the mask out (lowest lane first), with that lane's count as its value.

    Parameters
    ----------
    n_pe : int
    depth : int
        Queue entries; at least the entries one layer update can push.
    entry : StructLayout
        :func:`spike_entry_layout`.
    layout : StructLayout
        The event payload (:func:`event_layout`); ``val`` is the lane's ``count`` when the entry
        has counts, else 1.

    Members
    -------
    push : In(stream.Signature(entry))
        Entries with a nonzero mask; ``ready`` is low only when the queue is full. An entry
        pushed in cycle k can be an event from cycle k + 1.
    events : Out(stream.Signature(layout))
        ``row = rbase + lane``; ``valid`` and the payload come from registers only.
    empty : Out(1)
        No entry is queued or being split (combinational).
    """

    #: Cycles from an entry's push to the first cycle its events can be taken.
    LATENCY = 1

    def __init__(self, n_pe, depth, entry, layout):
        self._n_pe = n_pe
        self._depth = depth
        super().__init__({
            "push": In(stream.Signature(entry)),
            "events": Out(stream.Signature(layout)),
            "empty": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._n_pe
        entry = self.push.payload.shape()
        # The queue: a memory with a registered read port, read one entry ahead (at the pointer
        # it will have in the next cycle) and transparent to the write port, so that its head has
        # the timing of a first-word-fall-through queue and the memory can be block RAM (iCE40
        # EBR) instead of flip-flops and a read multiplexer. depth >= 2: no zero-width pointers.
        depth = max(self._depth, 2)
        m.submodules.storage = storage = Memory(shape=unsigned(entry.size), depth=depth, init=[])
        wr = storage.write_port()
        rd = storage.read_port(transparent_for=(wr,))
        produce = Signal(range(depth))
        consume = Signal(range(depth))
        level = Signal(range(depth + 1))
        r_rdy = Signal()
        m.d.comb += r_rdy.eq(level != 0)
        head = data.View(entry, rd.data)

        # The entry being split into events sits in a register; its mask keeps the lanes not yet
        # issued. Events come from it only (no queue read in the event path): it takes the
        # queue's next entry in the cycle its last lane is taken, or a pushed entry directly when
        # the queue is empty, which is the timing of a first-word-fall-through queue.
        hold = Signal(entry)
        # at least 1 bit: a zero-width signal (N = 1) is emitted as an ascending `[-1:0]` vector
        lane = Signal(range(max(n, 2)))
        for b in reversed(range(n)):
            with m.If(hold.mask[b]):
                m.d.comb += lane.eq(b)
        valid = hold.mask != 0
        m.d.comb += [
            self.events.valid.eq(valid),
            self.events.payload.row.eq(hold.rbase + lane),
            self.events.payload.y.eq(hold.y),
            self.events.payload.x.eq(hold.x),
            self.events.payload.val.eq(hold.count[lane] if "count" in entry.members else 1),
            self.empty.eq(~valid & ~r_rdy),
        ]
        rest = Signal(n)
        m.d.comb += rest.eq(hold.mask & ~(Const(1, n) << lane))
        take = valid & self.events.ready
        # hold is free after this cycle: empty, or its last lane is taken now
        free = ~valid | (take & (rest == 0))
        # A pushed entry is always written (the write does not wait for the events' ready, which
        # comes back through the event pipeline); when hold takes it directly (hold free, queue
        # empty), the read pointer steps over it in the same cycle. (The queue is never full and
        # empty at once: a direct take is never refused.)
        direct = free & ~r_rdy & self.push.valid
        w_en = Signal()
        r_en = Signal()   # the read pointer advances
        m.d.comb += [
            w_en.eq(self.push.valid & (level != depth)),
            r_en.eq(free & r_rdy | direct),
            self.push.ready.eq(level != depth),
            wr.addr.eq(produce),
            wr.data.eq(self.push.payload.as_value()),
            wr.en.eq(w_en),
        ]
        nxt_consume = Mux(consume == depth - 1, 0, consume + 1)
        m.d.comb += rd.addr.eq(Mux(r_en, nxt_consume, consume))
        with m.If(w_en):
            m.d.sync += produce.eq(Mux(produce == depth - 1, 0, produce + 1))
        with m.If(r_en):
            m.d.sync += consume.eq(nxt_consume)
        with m.If(w_en & ~r_en):
            m.d.sync += level.eq(level + 1)
        with m.Elif(r_en & ~w_en):
            m.d.sync += level.eq(level - 1)
        with m.If(free):
            with m.If(r_rdy):
                m.d.sync += hold.eq(head)
            with m.Elif(self.push.valid):
                m.d.sync += hold.eq(self.push.payload)
            with m.Else():
                m.d.sync += hold.mask.eq(0)
        with m.Elif(take):
            m.d.sync += hold.mask.eq(rest)
        return m
