"""valid/ready stream drivers for the cocotb benches, written once.

:class:`StreamSource` drives a stream into the design (with random idle cycles: valid low),
:class:`StreamSink` takes one out of it (with random back-pressure: ready low, or the
look-then-accept handshake of a read-out that inspects the held payload first). Both wait on value
changes of the handshake, never step the clock while the design computes, so the simulator runs
free between transfers. Every bench (``tb_accel.py``, ``tb_top.py``) uses them.
"""

from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

__all__ = ["StreamSource", "StreamSink", "wait_high"]


async def wait_high(signal):
    """Return once ``signal`` has settled high in this or a later timestep (no clock stepping).

    The settled value is checked in ReadOnly first: a signal that rose in this timestep, after the
    value read at the clock edge, fires no later edge to wait for.
    """
    await ReadOnly()
    if not signal.value:
        await RisingEdge(signal)


def _ports(dut, prefix):
    """The (valid, payload, ready) handles of Amaranth stream port ``prefix`` (``i_data`` ->
    ``i_data__valid``, ``i_data__payload``, ``i_data__ready``)."""
    return tuple(getattr(dut, f"{prefix}__{s}") for s in ("valid", "payload", "ready"))


class _StreamEnd:
    """The handles of one valid/ready stream, and the random waits of its driver."""

    def __init__(self, clk, valid, payload, ready, rng=None, chance=0.0, longest=1):
        self.clk, self.valid, self.payload, self.ready = clk, valid, payload, ready
        self.rng, self.chance, self.longest = rng, chance, longest

    @classmethod
    def of(cls, dut, prefix, **kw):
        """The driver of the design's Amaranth stream port ``prefix`` (e.g. ``"i_data"``)."""
        return cls(dut.clk, *_ports(dut, prefix), **kw)

    async def _maybe_wait(self, line):
        """With probability ``chance``, hold ``line`` low for 1..``longest`` cycles."""
        if self.chance and self.rng.random() < self.chance:
            line.value = 0
            await ClockCycles(self.clk, self.rng.randint(1, self.longest))


class StreamSource(_StreamEnd):
    """Drives values into a valid/ready stream.

    Parameters
    ----------
    clk, valid, payload, ready : the clock and the stream's signal handles.
    rng : a ``random.Random`` for the idle cycles (needed when ``idle`` > 0).
    idle : probability, before each value, of dropping valid for 1..``max_idle`` cycles.
    """

    def __init__(self, clk, valid, payload, ready, rng=None, idle=0.0, max_idle=4):
        super().__init__(clk, valid, payload, ready, rng, idle, max_idle)

    async def send(self, value):
        """One transfer: ``value`` held with valid high until a rising edge with ready. Valid
        stays high afterwards (call :meth:`close` after the last value)."""
        await self._maybe_wait(self.valid)
        self.valid.value = 1
        self.payload.value = int(value)
        while True:
            await RisingEdge(self.clk)
            if self.ready.value:
                return
            await wait_high(self.ready)

    def close(self):
        self.valid.value = 0

    async def send_all(self, values):
        """Every value of ``values`` in order, then valid low."""
        for v in values:
            await self.send(v)
        self.close()


class StreamSink(_StreamEnd):
    """Takes transfers out of a valid/ready stream.

    Parameters
    ----------
    clk, valid, payload, ready : the clock and the stream's signal handles (``payload`` may be
        None for a read-out that :meth:`wait_valid` / :meth:`ack` drive).
    rng : a ``random.Random`` for the back-pressure (needed when ``backpressure`` > 0).
    backpressure : probability, before each transfer, of dropping ready for 1..``max_stall`` cycles.
    """

    def __init__(self, clk, valid, payload, ready, rng=None, backpressure=0.0, max_stall=6):
        super().__init__(clk, valid, payload, ready, rng, backpressure, max_stall)

    async def recv(self):
        """The payload (a cocotb value) of the next transfer, ready raised (after a random stall)
        until it happens."""
        while True:
            await self._maybe_wait(self.ready)
            self.ready.value = 1
            await wait_high(self.valid)
            await RisingEdge(self.clk)
            if self.valid.value:
                return self.payload.value

    async def wait_valid(self):
        """Look-then-accept, first half: wait with ready low until valid is high at a rising edge
        (returns in the read-only phase: read the held payload, then leave it)."""
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            if self.valid.value:
                return

    async def ack(self):
        """Look-then-accept, second half: ready high for one rising edge (the transfer)."""
        self.ready.value = 1
        await RisingEdge(self.clk)
        self.ready.value = 0
