"""Event sources: they turn layer inputs into a stream of ``(index, x)`` events for the PE array.

An event says "input ``index`` of the current layer is active with multiplier ``x``"; the
sequencer turns each event into one weight-row read per chunk. Both sources present events as
an ``amaranth.lib.stream`` whose ``valid`` never depends on ``ready``.
"""

from amaranth import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2


def event_layout(max_in, input_bits):
    return data.StructLayout({
        "index": unsigned(max(1, ceil_log2(max_in))),
        "x": unsigned(input_bits),
    })


def spike_entry_layout(n_pe, max_chunks):
    """One spike-queue entry: the spikes of chunk ``chunk`` as an ``n_pe``-bit lane mask."""
    return data.StructLayout({
        "chunk": unsigned(max(1, ceil_log2(max_chunks))),
        "mask": unsigned(n_pe),
    })


class InputEventSource(wiring.Component):
    """Events of the analog layer, from the image's input values.

    A zero value is accepted in the cycle it is offered, whatever ``events.ready``; a nonzero
    value at position ``i`` becomes the event ``(i, value)`` and is accepted with it.

    Parameters
    ----------
    count : int
        Input values per image.
    input_bits : int
    max_in : int
        Size of the index field (largest fan-in of the network).

    Members
    -------
    i_data : In(stream.Signature(unsigned(input_bits)))
        Input values in index order; ``ready`` is combinational from ``valid``, the payload,
        ``enable`` and ``events.ready``.
    events : Out(stream.Signature(event_layout(...)))
        Nonzero values; ``valid`` combinational from ``i_data``.
    enable : In(1)
        Accept values (the load phase).
    restart : In(1)
        Start a new image (synchronous; takes effect next cycle).
    first : Out(1)
        The first value of the image is transferred this cycle.
    done : Out(1)
        All ``count`` values of the image have been transferred (registered).
    any : Out(1)
        A nonzero value has been transferred in this image (registered).
    """

    def __init__(self, count, input_bits, max_in):
        self._count = count
        super().__init__({
            "i_data": In(stream.Signature(unsigned(input_bits))),
            "events": Out(stream.Signature(event_layout(max_in, input_bits))),
            "enable": In(1),
            "restart": In(1),
            "first": Out(1),
            "done": Out(1),
            "any": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        index = Signal(range(self._count))
        value = self.i_data.payload
        open_ = self.enable & ~self.done
        m.d.comb += [
            self.events.valid.eq(open_ & self.i_data.valid & (value != 0)),
            self.events.payload.index.eq(index),
            self.events.payload.x.eq(value),
            self.i_data.ready.eq(open_ & ((value == 0) | self.events.ready)),
        ]
        accept = self.i_data.valid & self.i_data.ready
        m.d.comb += self.first.eq(accept & (index == 0))
        with m.If(self.restart):
            m.d.sync += [index.eq(0), self.done.eq(0), self.any.eq(0)]
        with m.Elif(accept):
            with m.If(value != 0):
                m.d.sync += self.any.eq(1)
            with m.If(index == self._count - 1):
                m.d.sync += self.done.eq(1)
            with m.Else():
                m.d.sync += index.eq(index + 1)
        return m


class SpikeEventSource(wiring.Component):
    """The spike queue: chunk spike masks in, one event per spike out (lowest lane first).

    The entry being split into events sits in a register (``hold``): events come from registers
    only (no queue read in the event path), and ``hold`` takes the queue's next entry in the cycle
    its last lane is taken, or a pushed entry directly when the queue is empty, so the timing is
    that of a first-word-fall-through queue.

    Parameters
    ----------
    n_pe : int
    max_chunks : int
        Size of the chunk field.
    depth : int
        Queue entries; at least the chunks one layer update can push.
    max_in, input_bits : int
        Shape of the event payload (``x`` is always 1).

    Members
    -------
    push : In(stream.Signature(spike_entry_layout(...)))
        Entries with a nonzero mask; ``ready`` is low only when the queue is full. An entry
        pushed in cycle k can be an event from cycle k + 1.
    events : Out(stream.Signature(event_layout(...)))
        ``index = chunk * n_pe + lane``; ``valid`` and the payload are registered state only.
    """

    def __init__(self, n_pe, max_chunks, depth, max_in, input_bits):
        self._n_pe = n_pe
        self._depth = depth
        entry = spike_entry_layout(n_pe, max_chunks)
        super().__init__({
            "push": In(stream.Signature(entry)),
            "events": Out(stream.Signature(event_layout(max_in, input_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._n_pe
        entry = self.push.payload.shape()
        # depth >= 2: a 1-entry SyncFIFO has zero-width pointers (ascending `[-1:0]` vectors in Verilog)
        m.submodules.queue = queue = SyncFIFO(width=entry.size, depth=max(self._depth, 2))
        head = data.View(entry, queue.r_data)

        # The entry being split into events; its mask keeps the lanes not yet issued.
        hold = Signal(entry)
        # at least 1 bit: a zero-width signal (N = 1) is emitted as an ascending `[-1:0]` vector
        lane = Signal(range(max(n, 2)))
        for b in reversed(range(n)):
            with m.If(hold.mask[b]):
                m.d.comb += lane.eq(b)
        m.d.comb += [
            self.events.valid.eq(hold.mask != 0),
            self.events.payload.index.eq(hold.chunk * n + lane),
            self.events.payload.x.eq(1),
        ]
        rest = Signal(n)
        m.d.comb += rest.eq(hold.mask & ~(Const(1, n) << lane))
        take = self.events.valid & self.events.ready
        # hold is free after this cycle: empty, or its last lane is taken now
        free = ~self.events.valid | (take & (rest == 0))
        direct = free & ~queue.r_rdy & self.push.valid
        m.d.comb += [
            queue.w_data.eq(self.push.payload.as_value()),
            queue.w_en.eq(self.push.valid & ~direct),
            self.push.ready.eq(queue.w_rdy | direct),
            queue.r_en.eq(free),
        ]
        with m.If(free):
            with m.If(queue.r_rdy):
                m.d.sync += hold.eq(head)
            with m.Elif(self.push.valid):
                m.d.sync += hold.eq(self.push.payload)
            with m.Else():
                m.d.sync += hold.mask.eq(0)
        with m.Elif(take):
            m.d.sync += hold.mask.eq(rest)
        return m
