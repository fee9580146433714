"""valid/ready stream drivers for the cocotb benches, written once.

:class:`StreamSource` drives a stream into the design (with random idle cycles: valid low),
:class:`StreamSink` takes one out of it (with random back-pressure: ready low, or the
look-then-accept handshake of a read-out that inspects the held payload first). Both wait on value
changes of the handshake, never step the clock while the design computes, so the simulator runs
free between transfers. Every bench (``tb_accel.py``, ``tb_top.py``, ``tb_faults.py``) uses them.

:class:`StreamMonitor` watches a stream the design drives (``o_result``, ``o_trace``) and checks the
handshake rule of :class:`HoldRule`: once valid is high without ready at a rising edge, valid stays
high and the payload stays the same until the transfer (or a reset). It also counts transfers and
stalled cycles.
"""

from dataclasses import dataclass

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time

__all__ = ["CLOCK_NS", "StreamSource", "StreamSink", "StreamMonitor", "HoldRule", "Sample", "cycle_now",
           "patience", "wait_high", "lost_message"]

#: The benches' clock period (ns): every cycle number a bench reports is simulated time / CLOCK_NS.
CLOCK_NS = 10
#: The longest random idle (valid low) a source draws, and the longest stall (ready low) a sink draws.
MAX_IDLE, MAX_STALL = 4, 6


def cycle_now():
    """The current cycle number (simulated time / :data:`CLOCK_NS`)."""
    return int(get_sim_time("ns") // CLOCK_NS)


def patience(cycle_bound, values, max_idle=MAX_IDLE, max_stall=MAX_STALL):
    """Cycles a bench waits for one result before it calls the result lost (or the design
    deadlocked): ten times the golden model's cycle bound for the image plus every input value at
    its longest idle, and the longest stall, with 1000 cycles to spare. A design within a small
    factor of its bound never comes near it; a lost result fails the run instead of hanging it."""
    return 10 * (int(cycle_bound) + values * (max_idle + 1) + max_stall) + 1000


def lost_message(name, what, within):
    """The failure of a bench that waited ``within`` cycles on stream ``name`` for ``what``."""
    return (f"{name}: no transfer of the {what} within {within} cycles (cycle {cycle_now()}): a lost result or a "
            "deadlocked design")


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

    def __init__(self, clk, valid, payload, ready, rng=None, idle=0.0, max_idle=MAX_IDLE):
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
    backpressure : probability, for each transfer, of a stall: ready low until valid is high, then
        for 1..``max_stall`` cycles more (the payload waits with valid high, as the hold rule covers).
    """

    def __init__(self, clk, valid, payload, ready, rng=None, backpressure=0.0, max_stall=MAX_STALL):
        super().__init__(clk, valid, payload, ready, rng, backpressure, max_stall)

    async def recv(self, within=None, what="result"):
        """The payload (a cocotb value) of the next transfer, ready raised (after a random stall)
        until it happens. ``within``: at most that many cycles, else an ``AssertionError`` naming
        the stream and ``what`` was lost (or the design deadlocked)."""
        if within is not None:
            try:
                return await with_timeout(self.recv(), within * CLOCK_NS, "ns")
            except SimTimeoutError:
                name = getattr(self.valid, "_name", "stream").removesuffix("__valid")
                raise AssertionError(lost_message(name, what, within)) from None
        if self.chance and self.rng.random() < self.chance:
            self.ready.value = 0
            await wait_high(self.valid)
            await ClockCycles(self.clk, self.rng.randint(1, self.longest))
        while True:
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


@dataclass(frozen=True)
class Sample:
    """The handshake of one stream at one rising edge: the values the edge samples (``payload`` an
    int, or the 0/1/X/Z string of a value with unresolved bits)."""

    cycle: int
    valid: bool
    ready: bool
    payload: int | str
    rst: bool = False


class HoldRule:
    """The valid/ready hold rule, fed one :class:`Sample` per rising edge (or only the edges after a
    stall: a sample without a pending stall asks nothing of the next one).

    A stall (valid high, ready low, reset low at an edge) obliges the next edge to see valid high
    and the same payload. :meth:`step` returns the violations as lines naming the stream, the cycle
    and the payload fields that changed.

    Parameters
    ----------
    name : the stream's name in the messages (``"o_result"``).
    fields : optional :class:`~spikeloom.sim.ports.Field` list of the payload, to name the changed
        fields; without it the payload is one field.
    """

    def __init__(self, name, fields=None):
        self.name, self.fields = name, fields
        self.prev = None
        self.since = None

    def changed_fields(self, old, new):
        """Names of the payload fields that differ between the payloads ``old`` and ``new`` (strings
        of 0/1/X/Z bits, MSB first, or ints)."""
        if not self.fields:
            return ["payload"]
        if isinstance(old, int) and isinstance(new, int):
            return [f.name for f in self.fields if f.extract(old) != f.extract(new)]
        old, new = str(old), str(new)
        n = max(len(old), len(new))
        old, new = old.rjust(n, "0"), new.rjust(n, "0")
        bad = {n - 1 - i for i in range(n) if old[i] != new[i]}
        return [f.name for f in self.fields if any(f.offset <= b < f.offset + f.width for b in bad)]

    def step(self, cur):
        """Check sample ``cur`` against the previous one; the violations found (empty if none)."""
        prev, out = self.prev, []
        if prev is not None and prev.valid and not prev.ready and not prev.rst:
            if self.since is None:
                self.since = prev.cycle
            if not cur.valid:
                out.append(f"{self.name}: valid dropped at cycle {cur.cycle} before the transfer "
                           f"(held without ready since cycle {self.since})")
            elif cur.payload != prev.payload:
                names = ", ".join(self.changed_fields(prev.payload, cur.payload))
                out.append(f"{self.name}: payload field(s) {names} changed at cycle {cur.cycle} while valid was "
                           f"held without ready (since cycle {self.since})")
        if not (cur.valid and not cur.ready and not cur.rst):
            self.since = None
        self.prev = cur
        return out


def _value(handle):
    """A handle's value as an int, or as its 0/1/X/Z string when it has unresolved bits."""
    v = handle.value
    try:
        return v.to_unsigned()
    except ValueError:
        return str(v)


class StreamMonitor:
    """Checks :class:`HoldRule` on a stream the design drives, and counts its transfers and stalls.

    Event-driven like the drivers: it steps the clock only while valid is high (so the simulator
    still runs free while the design computes), and reads every sample in the read-only phase of
    the cycle before the edge that takes it.

    Parameters
    ----------
    clk, valid, payload, ready : the clock and the stream's signal handles.
    name : the stream's name in the messages.
    fields : the payload's :class:`~spikeloom.sim.ports.Field` list (to name a changed field).
    rst : the reset handle: a stall with reset high obliges nothing (reset may drop valid).
    period_ns : the clock period, for the cycle numbers in the messages.

    Members
    -------
    errors : list of str
        The violations found so far.
    transfers, stalled_cycles : int
        Transfers seen, and cycles with valid high and ready low (out of reset).
    stalled_transfers : int
        Transfers that waited at least one stalled cycle.
    """

    def __init__(self, clk, valid, payload, ready, name, fields=None, rst=None, period_ns=CLOCK_NS):
        self.clk, self.valid, self.payload, self.ready, self.rst = clk, valid, payload, ready, rst
        self.rule = HoldRule(name, fields)
        self.period_ns = period_ns
        self.errors = []
        self.transfers = self.stalled_cycles = self.stalled_transfers = 0
        self._task = None

    @classmethod
    def of(cls, dut, prefix, fields=None, **kw):
        """The monitor of the design's Amaranth stream port ``prefix`` (``"o_result"``), with the
        design's ``rst``."""
        return cls(dut.clk, *_ports(dut, prefix), name=prefix, fields=fields, rst=dut.rst, **kw)

    def start(self):
        """Start watching (a background task); returns the monitor."""
        self._task = cocotb.start_soon(self._run())
        return self

    def _sample(self):
        return Sample(int(get_sim_time("ns") // self.period_ns), bool(self.valid.value), bool(self.ready.value),
                      _value(self.payload), bool(self.rst.value) if self.rst is not None else False)

    async def _run(self):
        await ReadOnly()
        stalled = False
        while True:
            if not self.valid.value:
                await RisingEdge(self.valid)
                await ReadOnly()
                continue
            s = self._sample()
            self.errors.extend(self.rule.step(s))
            if s.valid and not s.rst:
                if s.ready:
                    self.transfers += 1
                    self.stalled_transfers += stalled
                    stalled = False
                else:
                    self.stalled_cycles += 1
                    stalled = True
            else:
                stalled = False
            await RisingEdge(self.clk)
            await ReadOnly()
            if not self.valid.value:
                # a valid that drops after a stall is a violation the rule must see
                self.errors.extend(self.rule.step(self._sample()))
                stalled = False

    def check(self):
        """Raise ``AssertionError`` with the first violations, if any."""
        assert not self.errors, "\n".join(self.errors[:20])
