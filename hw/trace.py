"""The trace queue: the spike masks of a timestep's updates, on their way to ``o_trace``."""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out


class TraceQueue(wiring.Component):
    """A first-word-fall-through queue of trace entries.

    Parameters
    ----------
    layout : StructLayout
        The entry (``accel.trace_layout(plan)``).
    depth : int
        Entries; at least the updates of the largest spiking layer, so that one layer's pass never
        finds it full when it starts empty.

    Members
    -------
    push : In(stream.Signature(layout))
        An entry is written when ``valid``; ``ready`` is 1 unless the queue is full (the writer
        does not look at it: the sequencer starts a spiking layer's pass only when ``empty``).
    pop : Out(stream.Signature(layout))
        The oldest entry from the cycle after its push; ``valid`` from the queue's level.
    empty : Out(1)
        No entry queued.
    """

    def __init__(self, layout, depth):
        self._layout = layout
        self._depth = max(depth, 2)
        super().__init__({
            "push": In(stream.Signature(layout)),
            "pop": Out(stream.Signature(layout)),
            "empty": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=self._layout.size, depth=self._depth)
        m.d.comb += [
            fifo.w_data.eq(self.push.payload.as_value()),
            fifo.w_en.eq(self.push.valid),
            self.push.ready.eq(fifo.w_rdy),
            self.pop.valid.eq(fifo.r_rdy),
            self.pop.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.pop.ready),
            self.empty.eq(fifo.level == 0),
        ]
        return m
