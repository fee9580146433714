"""Event sources: they turn layer inputs into a stream of events for the PE array.

An event says "row ``row`` of the current source is active with multiplier ``x`` at input
position ``(y, x)``" (see :mod:`spikeloom.hw.plan` for rows and positions); the sequencer turns
each event into weight-word reads. Both sources present events as an ``amaranth.lib.stream``
whose ``valid`` never depends on ``ready``.
"""

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import bits


def event_layout(n_rows, max_h, max_w, value_bits, pair_pes=0):
    """One event: row ``row`` at ``(y, x)`` with the multiplier ``val`` (``Plan.value_bits`` wide).
    With ``pair_pes`` (the plan's ``n_pe`` when it pairs events, ``hw/plan.py``, "Paired events"):
    ``two``, a second event of the same entry rides along, at row ``row + d2`` (value 1)."""
    fields = {
        "row": unsigned(bits(n_rows)),
        "y": unsigned(bits(max_h)),
        "x": unsigned(bits(max_w)),
        "val": unsigned(value_bits),
    }
    if pair_pes:
        fields |= {"two": unsigned(1), "d2": unsigned(bits(pair_pes))}
    return data.StructLayout(fields)


def spike_entry_layout(n_pe, n_rows, max_h, max_w, count_bits=0, pairs=False):
    """One spike-queue entry: the spikes of one (pooled) position and chunk as an ``n_pe``-bit lane
    mask; lane ``p``'s event is row ``rbase + p`` at ``(y, x)``. With ``count_bits``
    (``Plan.count_bits``: some layer sum-pools) the entry also carries each lane's value ``count``
    (its window's spike count; 1 for a spike of a layer that does not sum-pool), nonzero exactly on
    the mask's lanes. With ``pairs`` (the plan pairs events) the entry's ``pair`` says its
    consumer takes its events two at a time."""
    fields = {
        "rbase": unsigned(bits(n_rows)),
        "y": unsigned(bits(max_h)),
        "x": unsigned(bits(max_w)),
        "mask": unsigned(n_pe),
    }
    if count_bits:
        fields["count"] = data.ArrayLayout(unsigned(count_bits), n_pe)
    if pairs:
        fields["pair"] = unsigned(1)
    return data.StructLayout(fields)


class InputEventSource(wiring.Component):
    """Events of the analog layer, from the image's input values.

    A value is accepted in the cycle it is offered unless an event waits in the skid register; a
    nonzero value becomes an event, which waits in the skid while ``events.ready`` is low, and
    the next value is accepted only once that event is taken (the events are taken in the same
    cycles as when a nonzero value waited on ``i_data`` for ``events.ready``; that value itself
    is accepted earlier). Values arrive in row-major order of
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
        Input values in order; ``ready`` is combinational from ``enable`` and registers.
    events : Out(stream.Signature(layout))
        Nonzero values; ``valid`` combinational from ``i_data`` (or the skid register, which holds
        an event that was not taken).
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
        # A value is accepted whenever the skid register is empty (`ready` does not depend on the
        # event's `ready`, which comes back through the event pipeline); a nonzero value's event
        # goes out at once, and waits in the skid while `events.ready` is low. The stream then stops
        # until the skid's event is taken, so the events, and the values after a waiting one, go
        # in the same cycles as when a nonzero value waited for `events.ready` on `i_data` itself.
        ev = Signal(self.events.payload.shape())
        m.d.comb += [ev.row.eq(row), ev.y.eq(y), ev.x.eq(x), ev.val.eq(value)]
        skid_valid = _skid(m, self.events, ev, open_ & self.i_data.valid & (value != 0))
        m.d.comb += self.i_data.ready.eq(open_ & ~skid_valid)
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
    of the mask out (lowest lane first), with that lane's count as its value. An entry whose
    ``pair`` is set (an entry layout with ``pair``: ``hw/plan.py``, "Paired events") gives two
    lanes an event, its lowest two (``two``, the second at ``row + d2``), its last lane alone
    when it has an odd count.

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
        Entries with a nonzero mask; ``ready`` is low only when the queue is full, or one entry
        short of it with an entry in the push register. An entry pushed in cycle k can be an
        event from cycle k + ``LATENCY``.
    events : Out(stream.Signature(layout))
        ``row = rbase + lane``; ``valid`` and the payload come from registers only (``hold``, or
        the skid register that keeps an event not taken).
    empty : Out(1)
        No entry is queued or being split, no event waits (combinational).
    """

    #: Cycles from an entry's push to the first cycle its events can be taken: the push register,
    #: then ``hold``.
    LATENCY = 2

    #: Entries held in registers between the queue memory and ``hold`` (see :meth:`elaborate`):
    #: enough to hide the memory's two cycles of read latency (address register, output register).
    PREFETCH = 3

    def __init__(self, n_pe, depth, entry, layout):
        self._n_pe = n_pe
        #: Entries of the queue memory (``depth``, at least 2: no zero-width pointers).
        self.memory_depth = max(depth, 2)
        super().__init__({
            "push": In(stream.Signature(entry)),
            "events": Out(stream.Signature(layout)),
            "empty": Out(1),
        })

    @staticmethod
    def level_marks(depth):
        """The fill levels of a queue memory of ``depth`` entries that have a flag register of
        their own (``level_is_<c>``): empty, one short of full, full."""
        return sorted({0, depth - 1, depth})

    @classmethod
    def consistent(cls, reg, entry, depth):
        """The states the queue reaches from reset, as an expression of its registers (``reg(name)``
        gives the register ``name``; ``entry``: the entry layout; ``depth``: the queue's
        :attr:`memory_depth`), for a proof by induction
        (``hw/formal.py``): hold's lane registers are those of its mask, the allocated
        slots are a prefix, each holds its entry or is a read in flight, the flights are in order,
        and the memory holds entries only while every slot is allocated, with room for the entry in
        the push register; the level's flags are its comparisons."""
        k = cls.PREFETCH
        alloc, full, level = reg("alloc"), reg("pre_full"), reg("level")
        hold = data.View(entry, reg("hold"))
        mask, lane = hold.mask, reg("hold_lane")
        one = (mask & (mask - 1)) == 0    # at most one lane
        rest = mask & (mask - 1)          # the lanes above the lowest
        if "pair" in entry.members:
            # a paired entry's take empties it at two lanes or fewer; hold_two: it gives two
            two = (rest & (rest - 1)) == 0
            ok = (reg("hold_valid") == (mask != 0)) & (~reg("hold_valid") | (reg("hold_last") == Mux(hold.pair, two, one)))
            ok &= reg("hold_two") == (hold.pair & ~one)
            # hold_rest: its lanes after the take (the lowest, or two of a paired entry, cleared)
            ok &= ~reg("hold_valid") | (reg("hold_rest") == Mux(hold.pair, rest & (rest - 1), rest))
            for b in range(len(mask)):   # hold_lane2 is the second lowest lane, when it has two
                ok &= ~rest[b] | ((rest & ((1 << b) - 1)) != 0) | (reg("hold_lane2") == b)
        else:
            ok = (reg("hold_valid") == (mask != 0)) & (~reg("hold_valid") | (reg("hold_last") == one))
        for b in range(len(mask)):   # hold_lane is the lowest lane of the mask
            ok &= ~mask[b] | ((mask & ((1 << b) - 1)) != 0) | (lane == b)
        flights = [(reg(f"flight{i}"), reg(f"flight{i}_slot")) for i in (1, 2)]
        ok &= (alloc <= k) & ((level == 0) | (alloc == k))
        # the memory has room for the entry in the push register, and the level's flags are its
        # comparisons
        ok &= level + reg("push_valid") <= depth
        for c in cls.level_marks(depth):
            ok &= reg(f"level_is_{c}") == (level == c)
        for f, slot in flights:
            ok &= ~f | ((slot < alloc) & ~full.bit_select(slot, 1))
        ok &= ~(flights[0][0] & flights[1][0]) | (flights[1][1] < flights[0][1])
        for i in range(k):
            in_flight = (flights[0][0] & (flights[0][1] == i)) | (flights[1][0] & (flights[1][1] == i))
            ok &= (i < alloc) == (full[i] | in_flight)
        return ok

    def _hold(self, m, entry, pushed, alloc, at0):
        """The register ``hold`` (the entry being split into events) with its lane registers, its
        event through the skid register, and ``empty`` (``pushed``, ``alloc``, ``at0``: the push
        register's valid, the slots allocated, the memory empty): ``(hold, valid, last,
        skid_valid, rest, lanes, two)``; ``rest``: hold's lanes after this cycle's take;
        ``lanes(mask, name, pair)``: the assignments of the lane registers to an entry's ``mask``
        (:func:`_first_lane`); ``two``: paired entries' register, else None."""
        n = self._n_pe
        hold = Signal(entry)
        # hold's lowest lane, and whether it is its last, are registers of their own, so that
        # whether hold is free comes from registers (`valid`, `last`) and no priority encoder
        valid = Signal(name="hold_valid")
        lane = Signal(range(max(n, 2)), name="hold_lane")   # >= 1 bit: N = 1 gives no zero-width signal
        last = Signal(name="hold_last")   # this take empties hold (paired: two lanes or fewer are left)
        pairs = "pair" in entry.members
        # paired entries: the second lowest lane, and whether this take gives two (registers too)
        lane2 = Signal.like(lane, name="hold_lane2") if pairs else None
        two = Signal(name="hold_two") if pairs else None
        # hold's event leaves whenever the skid register is empty: to the consumer, or into the
        # skid while `events.ready` is low (a first-word-fall-through queue's timing all the same:
        # the consumer sees the skid's event, then hold's). So `ready`, which comes back through
        # the event pipeline, reaches the skid only, not hold or the queue behind it.
        ev = Signal(self.events.payload.shape())
        m.d.comb += [
            ev.row.eq(hold.rbase + lane), ev.y.eq(hold.y), ev.x.eq(hold.x),
            ev.val.eq(hold.count[lane] if "count" in entry.members else 1),
        ]
        if pairs:
            m.d.comb += [ev.two.eq(two), ev.d2.eq(lane2 - lane)]
        skid_valid = _skid(m, self.events, ev, valid)
        m.d.comb += self.empty.eq(~pushed & ~valid & ~skid_valid & (alloc == 0) & at0)
        if pairs:
            # hold's lanes after this take, a register of its own, formed with the lane registers
            # from the entry's mask (no decode of the lane registers before the trees)
            rest = Signal(n, name="hold_rest")
            lanes = lambda mask, name, pair: _two_lanes(m, mask, pair, valid, lane, last, lane2, two, rest, name)
        else:
            rest = Signal(n)
            m.d.comb += rest.eq(hold.mask & ~(Const(1, n) << lane))
            lanes = lambda mask, name, pair: _first_lane(m, mask, valid, lane, last, name)
        return hold, valid, last, skid_valid, rest, lanes, two

    def elaborate(self, platform):
        m = Module()
        n = self._n_pe
        entry = self.push.payload.shape()
        k = self.PREFETCH
        # The entry being split into events sits in a register, `hold`; its mask keeps the lanes
        # not yet issued. Events come from it only (through the skid register below). It takes the
        # next entry in the cycle its last lane leaves (it is then "free"): the head of the prefetch
        # registers below, or, when no entry is queued, a pushed entry directly. That is the timing
        # of a first-word-fall-through queue behind the push register (LATENCY = 2). The push
        # register takes every push: the spike flags of all PEs, ORed into the entry's mask, end in
        # it, and the queue's decisions below start at registers only.
        #
        # Queued entries are in order: first the prefetch registers `pre` (a shift register whose
        # slot 0 is the head; a slot is allocated in order and filled now (a push) or when its read
        # lands), then the queue memory. A push goes to the registers while the memory holds no
        # entry and a slot is free, else to the memory. The memory is read at `consume` every
        # cycle; a read is "issued" (its entry allocated a slot) when the memory holds an entry and
        # a slot is free, and lands two cycles later from the memory's output register (a DP16KD's
        # OUTREG, or an iCE40 EBR's read register and a flip-flop). The registers cut the memory's
        # clock-to-output, and the events' `ready` (which comes back through the event pipeline)
        # out of its address and write enable: a pushed entry is always written at `produce`,
        # which advances only when the entry stays in the memory.
        #
        # Why PREFETCH = 3 slots keep the timing: the memory holds an entry only while all slots
        # are allocated (it receives pushes only then, and issues a read whenever a slot frees,
        # which then refills it in the same cycle). An entry issued in cycle c therefore has
        # PREFETCH - 1 entries before it in the slots after that cycle's take; `hold` takes one
        # a cycle at most, so it needs the entry in cycle c + PREFETCH at the earliest, when it is
        # in slot 0 (read address registered after c, output register after c + 1, slot after c + 2).
        depth = self.memory_depth
        # no_rw_check: a read that lands is never of the entry being written (it reads an entry
        # written in an earlier cycle), so Yosys need not keep old data on a collision; without it,
        # it puts a bypass multiplexer between the memory and `q` (not the block's output register)
        m.submodules.storage = storage = Memory(shape=unsigned(entry.size), depth=depth, init=[],
                                                attrs={"no_rw_check": 1})
        wr = storage.write_port()
        rd = storage.read_port()
        produce = Signal(range(depth))
        consume = Signal(range(depth))
        level = Signal(range(depth + 1))   # entries in the memory, not yet issued
        # level == 0, == depth, == depth - 1, each a register of its own: the decisions below and
        # the sequencer's (through `empty`) read a flip-flop instead of a comparison of `level`
        # (the 25F N = 8 critical path ran from `level` through `empty` into the sequencer)
        at = {c: Signal(name=f"level_is_{c}", init=int(c == 0)) for c in self.level_marks(depth)}
        q = Signal(entry.size, reset_less=True)   # the memory's output register
        pre = [Signal(entry, name=f"pre{i}", reset_less=True) for i in range(k)]
        full = Signal(k, name="pre_full")   # slot i holds its entry
        alloc = Signal(range(k + 1))        # slots allocated (a prefix)
        flight = [Signal(range(k), name=f"flight{i}_slot") for i in (1, 2)]   # the slot of the read
        issued = [Signal(name=f"flight{i}") for i in (1, 2)]                 # issued 1 / 2 cycles ago

        # the push register
        push = Signal(entry, name="push_entry", reset_less=True)
        pushed = Signal(name="push_valid")
        m.d.sync += [push.eq(self.push.payload), pushed.eq(self.push.valid & self.push.ready)]

        hold, valid, last, skid_valid, rest, lanes, two = self._hold(m, entry, pushed, alloc, at[0])
        pairs = two is not None
        # the decisions below as named wires: an expression used in several places is written
        # out in the Verilog at each (the queue's module had grown by 80%)
        take, free, take_pre, direct, room_has, to_pre, to_mem, issue, up, down = (
            Signal(name=name) for name in ("take", "free", "take_pre", "direct", "room_has", "to_pre", "to_mem",
                                           "issue", "level_up", "level_down"))
        m.d.comb += [
            take.eq(valid & ~skid_valid),
            free.eq(~valid | (take & last)),   # hold is free after this cycle
            take_pre.eq(free & full[0]),
            direct.eq(free & (alloc == 0) & at[0] & pushed),
        ]

        def after_take(x, test=None):
            # x - take_pre (a slot number or count after the shift), or test() of it, as a choice
            # between the two cases' values formed from registers: take_pre comes through hold's
            # handshake, and it then selects, last, instead of entering a subtraction and a
            # comparison (the queue's control was the 85F N = 8 critical path, six logic levels)
            test = test or (lambda v: v)
            return Mux(take_pre, test((x - 1)[:len(x)]), test(x))

        room = Signal(range(k + 1))   # slots allocated after this cycle's take
        m.d.comb += [
            room.eq(after_take(alloc)),
            room_has.eq(after_take(alloc, lambda v: v != k)),   # a free slot after the take
            to_pre.eq(pushed & ~direct & at[0] & room_has),
            to_mem.eq(pushed & ~direct & ~to_pre),
            issue.eq(~at[0] & room_has),
        ]
        m.d.comb += [
            # full: the memory, or all but one entry of it with one in the push register (it
            # may go to the memory)
            self.push.ready.eq(~(at[depth] | (at[depth - 1] & pushed))),
            wr.addr.eq(produce), wr.data.eq(push.as_value()),
            wr.en.eq(pushed),
            rd.addr.eq(consume),
        ]
        m.d.sync += q.eq(rd.data)
        with m.If(to_mem):
            m.d.sync += produce.eq(Mux(produce == depth - 1, 0, produce + 1))
        with m.If(issue):
            m.d.sync += consume.eq(Mux(consume == depth - 1, 0, consume + 1))
        m.d.comb += [up.eq(to_mem & ~issue), down.eq(issue & ~to_mem)]   # level + 1, level - 1
        m.d.sync += [r.eq(Mux(up, level == c - 1, Mux(down, level == c + 1, level == c))) for c, r in at.items()]
        m.d.sync += [level.eq(level + to_mem - issue), alloc.eq(room + to_pre + issue),
                     issued[0].eq(issue), issued[1].eq(issued[0]),
                     flight[0].eq(room), flight[1].eq(after_take(flight[0]))]

        # the slots: shift by one on a take, then the pushed entry into its slot, the landing one
        # into its slot (never the same slot: a push to the slots waits for an empty memory, and
        # a landing read was issued while the memory held it)
        for i in range(k):
            # the pushed entry's slot, and the landing read's, after the shift
            with m.If(to_pre & after_take(alloc, lambda v: v == i)):
                m.d.sync += [pre[i].eq(push), full[i].eq(1)]
            with m.Elif(issued[1] & after_take(flight[1], lambda v: v == i)):
                m.d.sync += [pre[i].eq(q), full[i].eq(1)]
            with m.Elif(take_pre):
                if i + 1 < k:
                    m.d.sync += [pre[i].eq(pre[i + 1]), full[i].eq(full[i + 1])]
                else:
                    m.d.sync += full[i].eq(0)
        pair_of = (lambda e: e.pair) if pairs else (lambda e: None)
        with m.If(free):
            with m.If(full[0]):
                m.d.sync += [hold.eq(pre[0]), *lanes(pre[0].mask, "pre", pair_of(pre[0]))]
            with m.Elif(direct):
                m.d.sync += [hold.eq(push), *lanes(push.mask, "push", pair_of(push))]
            with m.Else():
                m.d.sync += [hold.mask.eq(0), valid.eq(0)]
                if pairs:
                    m.d.sync += [two.eq(0), rest.eq(0)]
        with m.Elif(take):
            m.d.sync += [hold.mask.eq(rest), *lanes(rest, "rest", pair_of(hold))]
        return m


def _skid(m, events, ev, offered):
    """A skid register in front of the stream ``events``: the event ``ev``, offered while
    ``offered``, goes out at once, or waits in the skid while ``events.ready`` is low (the skid's
    event goes out first). Returns the skid's valid, a register: while it is set the source keeps
    its next event, so ``events.ready`` reaches the skid only."""
    skid_valid = Signal(name="skid_valid")
    skid = Signal(events.payload.shape(), name="skid")
    m.d.comb += events.valid.eq(skid_valid | offered)
    with m.If(skid_valid):
        m.d.comb += events.payload.eq(skid)
        with m.If(events.ready):
            m.d.sync += skid_valid.eq(0)
    with m.Else():
        m.d.comb += events.payload.eq(ev)
        with m.If(offered & ~events.ready):
            m.d.sync += [skid_valid.eq(1), skid.eq(ev)]
    return skid_valid


def _lane_tree(mask):
    """One balanced tree over the lanes of ``mask`` (no carry chain: a few logic levels): (any
    lane set, at most one, at most two, lowest set lane, second lowest, ``mask`` with its lowest
    lane cleared, with its lowest two cleared). :func:`_first_lane` takes the first three of a
    node's results; only what a caller assigns is generated."""

    def tree(lo, hi):
        if hi - lo == 1:
            return mask[lo], Const(1, 1), Const(1, 1), Const(0, 1), Const(0, 1), Const(0, 1), Const(0, 1)
        mid = lo + (hi - lo + 1) // 2
        a, b = tree(lo, mid), tree(mid, hi)
        (a_any, a_one, a_two, a_low, a_low2, a_c1, a_c2), (b_any, b_one, b_two, b_low, b_low2, b_c1, b_c2) = a, b
        off, a_mask, a_many = mid - lo, mask[lo:mid], a_any & ~a_one
        return (a_any | b_any, a_one & b_one & ~(a_any & b_any),
                Mux(a_any, Mux(b_any, a_one & b_one, a_two), b_two),
                Mux(a_any, a_low, b_low + off),
                Mux(a_many, a_low2, Mux(a_any, b_low + off, b_low2 + off)),
                Mux(a_any, Cat(a_c1, mask[mid:hi]), Cat(a_mask, b_c1)),
                Mux(a_many, Cat(a_c2, mask[mid:hi]), Mux(a_any, Cat(a_c1, b_c1), Cat(a_mask, b_c2))))

    return tree(0, len(mask))


def _first_lane(m, mask, valid, lane, last, name):
    """Assignments to ``valid``, ``lane`` and ``last`` of a lane mask: it has a lane, its lowest
    lane, it has one lane at most (:func:`_lane_tree`): a few logic levels between the slot or
    push register and hold's lane registers."""
    low = Signal.like(lane, name=f"{name}_lane")
    anyset, one, _, first, *_ = _lane_tree(mask)
    m.d.comb += low.eq(first)
    return [valid.eq(anyset), lane.eq(low), last.eq(one)]


def _two_lanes(m, mask, pair, valid, lane, last, lane2, two, rest, name):
    """:func:`_first_lane` of a queue of paired entries: also ``lane2`` (the second lowest lane),
    ``two`` (a paired entry with two lanes or more: this take gives two), ``last`` (this take
    empties it: one lane at most, or two of a paired entry) and ``rest`` (its lanes after this
    take: the lowest one, or two when ``two``, cleared), from the entry's ``mask`` and ``pair``,
    by the same tree (``rest`` chosen from its halves' cleared masks)."""
    low, low2 = Signal.like(lane, name=f"{name}_lane"), Signal.like(lane, name=f"{name}_lane2")
    anyset, one, at_two, first, second, c1, c2 = _lane_tree(mask)
    m.d.comb += [low.eq(first), low2.eq(second)]
    return [valid.eq(anyset), lane.eq(low), last.eq(Mux(pair, at_two, one)), lane2.eq(low2),
            two.eq(pair & ~one), rest.eq(Mux(pair, c2, c1))]
