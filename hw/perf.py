"""Cycle model of the accelerator, from the golden model's activity (no RTL simulation needed).

:func:`cycles` gives the ``cycles`` field of :class:`~spikeloom.hw.accel.Accelerator`'s
``o_result`` when the input stream never idles (and, with a trace port, the trace is consumed at
once), exactly: the fast tests check it against the RTL for dense, conv, pooled, residual, dense-
and sparse-stored networks, and against :func:`cycles_reference` on random networks. The work bound
the design is measured against is :meth:`spikeloom.model.golden.GoldenResult.cycle_bound`.

**How.** Time advances event by event, not cycle by cycle. The sequencer's phases have
data-independent lengths except the accumulate phases (``LOAD``, ``ACC``), whose length is that of
the event pipeline (:class:`~spikeloom.hw.pipeline.EventPipeline`: ``EV``, ``RW``, ``TP``, the
issue stage) draining its events. Every event costs ``max(m, 1)`` ``RW`` cycles and ``m`` bursts
(:meth:`EventPipeline.bursts`: ``L`` words each for dense storage; for compressed storage one per
landing segment, of its length), of ``S`` words in all (the last burst ``L1`` words, the one before
it ``L2``); between the stages the pipeline is a chain of
one-entry registers with back-pressure, so each event's cycles follow from the previous one's in
a few ``max`` and ``+`` (:class:`_Pipe`): the cycle ``E`` it enters ``EV`` (its source offers it,
``EV`` frees), ``R`` it moves to ``RW`` (``RW`` frees), ``T1`` its first burst moves to ``TP``
(``TP`` frees), ``G1`` that burst starts to issue (the issue stage frees, the phase issues); the
bursts of one event then issue back to back. The events' sources are the golden model's spikes:
the spike queue's entries are pushed ``SPIKE_STAGE`` cycles after their update and readable
``SpikeEventSource.LATENCY`` later, a pooled entry at its window's last update
(:func:`~spikeloom.hw.pool.window_end`), in the update scan's order
(:func:`~spikeloom.hw.scan.scan_order`), one event per spiking lane; they are computed with numpy
per layer and timestep; a paired layer's (``hw/plan.py``, "Paired events") two of an entry to one
event. A packed layer's events (``hw/plan.py``, "Packed tail") issue ``chunks -
1`` words each, every ``groups``-th event one more (the packed word), and a phase that leaves
events over ends after one more packed word, issued once the phase has drained (:meth:`_Pipe.flushed`). :func:`cycles_reference` is the former register-by-register replay, one
loop iteration per cycle, kept as the reference the tests compare the fast model with.
"""

from collections import deque
from itertools import repeat

import numpy as np

from spikeloom.model.geometry import channel

from .events import SpikeEventSource
from .pe import PE
from .pipeline import EventPipeline
from .plan import Plan, geometries
from .pool import shortcut_readers, window_end, windows
from .scan import scan_order
from .sequencer import exit_wait as exit_wait_of

SPIKE_STAGE = PE.SPIKE_STAGE


def _plan(model, n_pe, plan):
    return plan if plan is not None else Plan(model, n_pe)


#: A cycle before any other: "no such event yet".
_NEVER = -(1 << 60)


class _Pipe:
    """The event pipeline's timing state after the events so far (cycles; see the module docstring).

    ``e``: the last event entered ``EV``; ``r``: it moved to ``RW`` (``EV`` takes the next event
    from then on); ``tl``: its last ``RW`` cycle (``RW`` takes the next event from then on); ``gp``:
    the cycle the burst in ``TP`` after that issues (``_NEVER``: ``TP`` is empty after ``tl``);
    ``f``: the first cycle the issue stage is free (and the phase issues).
    """

    __slots__ = ("e", "r", "tl", "gp", "f", "lw", "depth", "end", "pops")

    def __init__(self, n_pe=1, depth=0):
        self.e = self.r = self.tl = self.gp = _NEVER
        self.f = 0
        self.lw = 0   # words of the last burst issued
        # PE queues (hw/plan.py, "PE queues"): per PE, the first cycle its walker is free, and the
        # cycles it took its last `depth` entries
        self.depth, self.end, self.pops = depth, [0] * n_pe, [deque() for _ in range(n_pe)]

    def quiet(self):
        """The first cycle the pipeline is drained after (the sequencer's ``quiet``), if no event follows
        (with PE queues, ``PEQueues.idle``: every entry taken in an earlier cycle, and at most each
        walker's last word left)."""
        return max(self.tl + 1, self.f - 1, *(max(q[-1] + 1 if q else 0, e - 1) for q, e in zip(self.pops, self.end)))

    def _push(self, p1, own):
        """A queued event's bursts (``own``: each one's lengths per PE) pushed into the PE queues,
        the first from cycle ``p1`` on, one a cycle, each once no queue is full. Returns the push
        cycles of its last two bursts (of one burst: ``p1 - 1``, then its own)."""
        end, pops, depth = self.end, self.pops, self.depth
        prev = pc = p1 - 1
        for lens in own:
            prev, pc = pc, pc + 1
            for q in pops:
                if len(q) == depth and q[0] + 1 > pc:
                    pc = q[0] + 1
            for p, ln in enumerate(lens):
                if ln:   # (a free walker takes the burst in the push's cycle)
                    s = end[p] if end[p] > pc else pc
                    q = pops[p]
                    q.append(s)
                    if len(q) > depth:
                        q.popleft()
                    end[p] = s + ln
        return prev, pc

    def run(self, a, m, tot, last, prev, own=None, gaps=None):
        """Pass events of ``m`` bursts, ``tot`` words in all, the last burst ``last`` words and the
        one before it ``prev``, offered from cycles ``a`` (ascending), or, with ``gaps`` instead,
        input values: each offered once the ``gaps`` zero values between it and the previous
        event's value are accepted, one per cycle. ``own`` (a queued layer's events): each
        event's bursts' lengths per PE (:meth:`EventPipeline.event_work`), pushed into the PE
        queues a burst a cycle instead of issued."""
        e, r, tl, gp, f = self.e, self.r, self.tl, self.gp, self.f
        for ai, z, mi, si, li, pi, oi in zip(a, gaps if gaps is not None else repeat(0), m, tot, last, prev,
                                             own if own is not None else repeat(None)):
            if gaps is not None:
                ai = e + 1 + z
            e = ai if ai > r else r
            r = e + 1 if e + 1 > tl else tl
            t1 = r + 1 if r + 1 > gp else gp
            if mi and oi is not None:
                before, gp = self._push(t1 + 1 if t1 + 1 > f else f, oi)
                f = gp + 1
                tl = t1 if mi == 1 else before
            elif mi:
                g1 = t1 + 1 if t1 + 1 > f else f
                f = g1 + si
                gp = f - li
                tl = t1 if mi == 1 else gp - pi
                self.lw = li
            else:
                tl, gp = t1, _NEVER
        self.e, self.r, self.tl, self.gp, self.f = e, r, tl, gp, f

    def flushed(self, drained):
        """The cycle after a packed layer's flush word, whose events are left over when the phase
        has drained in cycle ``drained`` (``EventPipeline``'s flush): the hold registers take it
        from the cycle after ``drained`` on, once ``EV``, ``RW`` and ``TP`` are empty and the issue
        stage is free or at a burst's last word; it issues a cycle later."""
        return max(drained + 1, self.tl + 1, self.f - 1 + (self.lw == 1)) + 1

    def run_two(self, main, sc):
        """Pass the events of two queues (``(a, m, tot, last, prev, own)`` lists each): the main queue's
        first whenever it offers one in the cycle ``EV`` takes an event (the event pipeline's
        source order)."""
        a0, a1 = main[0], sc[0]
        i = j = 0
        n0, n1 = len(a0), len(a1)
        while i < n0 or j < n1:
            c = self.r
            if i < n0 and (j >= n1 or max(a0[i], c) <= max(a1[j], c)):
                self.run(*(v if v is None else (v[i],) for v in main))
                i += 1
            else:
                self.run(*(v if v is None else (v[j],) for v in sc))
                j += 1

    def load(self, x, tab):
        """The load phase from cycle 0 (``tab``: ``(m, tot, last, prev, own)`` of each input value
        index's event). Returns its last cycle."""
        nz = np.flatnonzero(x)
        if not len(nz):
            return len(x)  # the zeros are accepted one per cycle
        self.e = -1
        self.run(repeat(None), *(v if v is None else v[nz].tolist() for v in tab), gaps=(np.diff(nz, prepend=-1) - 1).tolist())
        # the cycle after the last value is accepted: the zeros after the last event are taken
        # one per cycle once it has entered EV
        done = self.e + len(x) - int(nz[-1])
        return max(done, self.quiet())


class CycleModel:
    """The cycle model of one plan: the tables every image shares (the cost of every event of every
    source), then :meth:`cycles` per image.

    A trace port consumed at once does not change the count. The update phase of a spiking layer
    waits for the trace queue to empty, which holds the entry of a spiking update ``u`` in cycle
    ``u + SPIKE_STAGE + 1`` only; the accumulate phase before an update phase ends
    ``SPIKE_STAGE + 1`` cycles after the last update ``u`` before it at the earliest (no
    spiking-layer update in the PE stages 1 to ``SPIKE_STAGE``, the sequencer's ``in_flight``),
    so no update phase starts in such a cycle. The tests check it against
    :func:`cycles_reference`, which replays the trace queue.

    Parameters
    ----------
    plan : Plan
    """

    def __init__(self, plan):
        self.plan = plan
        self.exit_wait = exit_wait_of(plan.n_pe)
        self.sc_of = shortcut_readers(plan.model)
        geos = geometries(plan)
        gid = {(g.layer, g.shortcut): i for i, g in enumerate(geos)}
        tables = [self._burst_table(plan, g) for g in geos]
        self.n_pe, self.depth = plan.n_pe, plan.queue_depth
        self.main_table = [tables[gid[(li + 1, False)]] if li + 1 < plan.n_layers else None
                           for li in range(plan.n_layers)]
        self.sc_table = {li: tables[gid[(r, True)]] for li, r in self.sc_of.items()}
        self.input_tab = tuple(v if v is None else v.ravel() for v in tables[gid[(0, False)]])  # per value index (C, H, W row-major)
        # lane groups of each layer's packed tail word (1: not packed)
        self.groups = [lp.groups for lp in plan.layers]
        # the main consumer of each layer's spikes takes them two to a word (hw/plan.py, "Paired events")
        self.paired = plan.feeds_paired
        self.push_update = [self._push_updates(lp) for lp in plan.layers]

    @staticmethod
    def _burst_table(plan, g):
        """``(m, tot, last, prev)``, each ``(c_in, h, w)``: the bursts of every event of source
        ``g`` (:meth:`EventPipeline.bursts`; in dense storage they depend on the position only):
        how many, their words in all, the last one's and the one's before it; and for a queued layer
        (``hw/plan.py``, "PE queues") an object array of each event's bursts' lengths per PE
        (:meth:`EventPipeline.event_work`), else None."""
        lp = plan.layers[g.layer]
        tab = np.zeros((4, g.c_in, g.h, g.w), np.int64)
        own = np.empty((g.c_in, g.h, g.w), object) if lp.queued else None
        chans = range(g.c_in) if lp.storage == "sparse" else (slice(None),)
        for y in range(g.h):
            for x in range(g.w):
                for ch in chans:
                    rw, bursts, queued = EventPipeline.event_work(plan, g, 0 if isinstance(ch, slice) else ch, y, x)
                    # the timing below holds for an event of max(m, 1) RW cycles
                    assert rw == max(len(bursts), 1), (rw, bursts)
                    v = (len(bursts), sum(bursts), bursts[-1] if bursts else 0, bursts[-2] if len(bursts) > 1 else 0)
                    tab[:, ch, y, x] = np.array(v)[:, None] if isinstance(ch, slice) else v
                    if own is not None:
                        own[ch, y, x] = queued
        return (*tab, own)

    @staticmethod
    def _push_updates(lp):
        """``windows(lp) + (chunks,)``: the update (index in :func:`scan_order`) that pushes the
        entry of each pooled position and chunk of layer ``lp`` (:func:`window_end`)."""
        k = np.zeros(windows(lp) + (lp.chunks,), np.int64)
        for i, (y, x, c) in enumerate(scan_order(lp)):
            end = window_end(lp.pool, y, x)
            if end is not None:
                k[end[0], end[1], c] = i
        return k

    def _pushes(self, li, spikes, u0):
        """The events that the update phase of layer ``li`` (first update in cycle ``u0``; its
        ``(out_features,)`` spikes) pushes: per consumer (main, and the shortcut reader's if any)
        ``(a, m, tot, last, prev, own)`` lists (``a``: the cycle its event is readable; ``own``: None
        unless the consumer is queued)."""
        lp, q = self.plan.layers[li], self.plan.layers[li].pool
        s = np.asarray(spikes, bool).reshape(lp.channels, lp.ho, lp.wo)
        hp, wp = windows(lp)
        pooled = s[:, :hp * q, :wp * q].reshape(lp.channels, hp, q, wp, q).any(axis=(2, 4)) if q > 1 else s
        # entries in push order, an entry's events lowest lane first: (py, px, chunk, lane), i.e.
        # (py, px, channel) as channel = chunk * n_pe + lane
        py, px, ch = np.nonzero(pooled.transpose(1, 2, 0))
        k = self.push_update[li][py, px, ch // self.plan.n_pe]
        a = u0 + SPIKE_STAGE + SpikeEventSource.LATENCY + k
        out = []
        for tab, paired in ((self.main_table[li], self.paired[li]), (self.sc_table.get(li), False)):
            if tab is not None:
                keep = slice(None)
                if paired:
                    # two events of an entry a word (hw/plan.py, "Paired events"): every other event
                    # of each entry (k: its push, one per entry) stands for the word, its last alone
                    first = np.flatnonzero(np.diff(k, prepend=-1) != 0)
                    keep = (np.arange(len(k)) - np.repeat(first, np.diff(np.append(first, len(k))))) % 2 == 0
                out.append((a[keep].tolist(), *(v if v is None else v[ch, py, px][keep].tolist() for v in tab)))
        return out

    def cycles(self, x, result, b):
        """Expected ``cycles`` of image ``b`` (input ``x``, ``result = golden.run(..., trace=True)``)."""
        plan = self.plan
        layers = plan.layers
        out_layer = len(layers) - 1
        readers = {r: li for li, r in self.sc_of.items()}
        pipe = _Pipe(self.n_pe, self.depth)
        c = pipe.load(np.asarray(x).ravel(), self.input_tab) + 1
        sc_events = None
        for t in range(1, int(result.exit_t[b]) + 1):
            for li, lp in enumerate(layers):
                # UPDATE of layer li, from cycle c (the next layer's events are fetched from now)
                if li == out_layer:
                    c += lp.updates + self.exit_wait + 1   # its updates, EXIT_WAIT, EXIT
                    break
                u_last = c + lp.updates - 1
                spikes = result.spikes[lp.name][t - 1, b]
                pushed = self._pushes(li, spikes, c)
                if li in self.sc_of:
                    sc_events = pushed[1]
                # ACC of layer li + 1 from u_last + 1: it ends drained, its queues empty and no update
                # in the PE pipeline (a push after that would bring an event, which ends later)
                pipe.f = max(pipe.f, u_last + 1)
                k = self.groups[li + 1]
                flush = False
                if k > 1:
                    # packed tail: every k-th event's burst ends with the packed word; the events
                    # left over take one more word once the phase has drained (the flush)
                    a, mm, tot, last, prev, own = pushed[0]
                    tot, last = list(tot), list(last)
                    for i in range(k - 1, len(tot), k):
                        tot[i] += 1
                        last[i] += 1
                    pushed[0] = (a, mm, tot, last, prev, own)
                    flush = len(tot) % k != 0
                if li + 1 in readers:
                    a, *rest = sc_events
                    pipe.run_two(pushed[0], ([max(v, c) for v in a], *rest))
                else:
                    pipe.run(*pushed[0])
                if flush:   # the phase drains once the queue is empty and no update is in flight
                    c = pipe.flushed(max(u_last + SPIKE_STAGE + 1, pipe.e + 1)) + 1
                else:
                    c = max(pipe.quiet(), u_last + SPIKE_STAGE + 1) + 1
        return c - 1   # the first cycle in RESULT is not counted


def batch_cycles(model, n_pe, x, result, plan=None):
    """Expected ``cycles`` of every image of the batch ``x`` (``result`` its golden run with
    ``trace=True``), an int64 array: one :class:`CycleModel` for the batch, :meth:`CycleModel.cycles`
    image by image."""
    cm = CycleModel(_plan(model, n_pe, plan))
    return np.array([cm.cycles(x[b], result, b) for b in range(len(x))], dtype=np.int64)


def cycles(model, n_pe, x, result, b, plan=None, trace=False):
    """Expected ``cycles`` of image ``b`` (input ``x``, ``result = golden.run(..., trace=True)``;
    ``trace``: the accelerator has the trace port, consumed at once, which does not change the
    count: see :class:`CycleModel`)."""
    return CycleModel(_plan(model, n_pe, plan)).cycles(x, result, b)


# ---------------------------------------------------------------------- the per-cycle replay


class _Queue:
    """A spike queue (``SpikeEventSource``): FIFO entries readable ``SpikeEventSource.LATENCY``
    cycles after their push, split lane by lane."""

    def __init__(self):
        self.fifo = deque()  # (first readable cycle, [events])
        self.hold = []

    def head(self, c):
        if self.hold:
            return self.hold[0]
        if self.fifo and self.fifo[0][0] <= c:
            return self.fifo[0][1][0]
        return None

    def take(self):
        if self.hold:
            self.hold.pop(0)
        else:
            self.hold = self.fifo.popleft()[1][1:]

    def empty(self, c):
        """No event to offer in cycle ``c``."""
        return self.head(c) is None

    def idle(self):
        """Nothing pushed is left (the queue's ``empty``; an entry counts from its push on, readable
        or not)."""
        return not self.hold and not self.fifo


def _events_of(plan, geo_id, ch_list, y, x):
    """Event descriptors (RW steps, burst lengths, lane groups of its layer's packed tail word,
    and for a queued layer its bursts' lengths per PE, else None) of row events of source ``geo_id``."""
    g = geometries(plan)[geo_id]
    lp = plan.layers[g.layer]
    return [(rw, words, lp.groups, own) for rw, words, own in (EventPipeline.event_work(plan, g, ch, y, x)
                                                                for ch in ch_list)]


class _Lanes:
    """The PE queues and their walkers (``PEQueues``), register by register."""

    def __init__(self, n_pe, depth):
        self.depth = depth
        self.fifo = [deque() for _ in range(n_pe)]   # per PE: its entries' words
        self.rem = [None] * n_pe                     # per PE: the words of its burst after this cycle's (None: not busy)
        self.idle = True

    def full(self):
        return any(len(f) == self.depth for f in self.fifo)

    def step(self, push):
        """One clock edge: ``push`` (a burst's lengths per PE, or None) enters the queues and each
        walker issues a word (taking its queue's head when not busy, or the pushed burst when its
        queue is empty)."""
        for p, f in enumerate(self.fifo):
            ln = push[p] if push is not None else 0
            if self.rem[p] is None and f:
                self.rem[p] = f.popleft()
            elif self.rem[p] is None and ln:   # a free walker, its queue empty: the burst at once
                self.rem[p], ln = ln, 0
            if ln:
                f.append(ln)
            if self.rem[p] is not None:
                self.rem[p] -= 1
                if self.rem[p] == 0:
                    self.rem[p] = None
        # no entry left, and at most a walker's last word in the next cycle
        self.idle = not any(self.fifo) and all(v is None or v == 1 for v in self.rem)


def _update_pushes(plan, li, spikes_t):
    """Per update index of layer ``li`` (one timestep): (spike mask != 0, main entry or None).

    ``spikes_t``: the layer's (out_features,) spikes of the timestep, golden flat order.
    An entry is the list of its lanes' channels plus the pooled position.
    """
    lp = plan.layers[li]
    n, q = plan.n_pe, lp.pool
    pos_n = lp.positions
    s = np.asarray(spikes_t, bool).reshape(lp.channels, lp.ho, lp.wo)
    out = []
    for y, x, c in scan_order(lp):
        chans = [o for o in (channel(p, c, n) for p in range(n)) if o < lp.channels]
        lanes = [o for o in chans if s[o, y, x]]
        entry = None
        end = window_end(q, y, x)
        if end is not None:
            py, px = end
            ch = [o for o in chans if s[o, py * q:(py + 1) * q, px * q:(px + 1) * q].any()]
            if ch:
                entry = (ch, py, px)
        out.append((bool(lanes), entry))
    assert len(out) == pos_n * lp.chunks
    return out


def _input_events(plan, x):
    """``{value index: event descriptor}`` of the nonzero input values ``x`` (flat)."""
    shape = plan.layers[0].sources[0].shape
    gid = next(i for i, g in enumerate(geometries(plan)) if g.layer == 0 and not g.shortcut)
    out = {}
    for i in np.flatnonzero(x):
        c, rem = divmod(int(i), shape[1] * shape[2])
        y, xx = divmod(rem, shape[2])
        out[int(i)] = _events_of(plan, gid, [c], y, xx)[0]
    return out


def _next_phase(state, layers, exit_wait, exit_t, *, load_end, acc_end, trace_empty):
    """The sequencer's ``(phase, layer, t, cnt)`` after one cycle (``Sequencer``'s phase switch)."""
    phase, layer, t, cnt = state
    out_layer = len(layers) - 1
    if phase == "LOAD":
        if load_end:
            return "UPDATE", layer, t, 0
    elif phase == "ACC":
        if acc_end:
            return "UPDATE", layer, t, 0
    elif phase == "UPDATE":
        if cnt == 0 and layer != out_layer and not trace_empty:  # stall
            return state
        if cnt < layers[layer].updates - 1:
            return phase, layer, t, cnt + 1
        return ("EXIT_WAIT", layer, t, 0) if layer == out_layer else ("ACC", layer + 1, t, 0)
    elif phase == "EXIT_WAIT":
        return ("EXIT", layer, t, 0) if cnt == exit_wait - 1 else (phase, layer, t, cnt + 1)
    elif phase == "EXIT":
        return ("RESULT", layer, t, cnt) if t >= exit_t else ("UPDATE", 0, t + 1, cnt)
    return state


def cycles_reference(model, n_pe, x, result, b, plan=None, trace=False):
    """:func:`cycles` by the per-cycle replay: every register of the sequencer and the event
    pipeline, one loop iteration per clock cycle (slow; the fast model is tested against it)."""
    plan = _plan(model, n_pe, plan)
    layers = plan.layers
    n_layers = len(layers)
    out_layer = n_layers - 1
    geos = geometries(plan)
    gid = {(g.layer, g.shortcut): i for i, g in enumerate(geos)}
    sc_of = shortcut_readers(model)
    exit_wait = exit_wait_of(plan.n_pe)
    x = np.asarray(x).ravel()
    in_ev = _input_events(plan, x)
    n_in = len(x)

    # state
    phase, layer, t, cnt = "LOAD", 0, 1, 0
    i_in, done = 0, False
    ev = rw = tp = tp_own = None   # ev/rw: [rw steps, bursts, groups, own lengths]; tp: burst length (tp_own: per PE)
    rw_bursts = None
    lanes = _Lanes(plan.n_pe, plan.queue_depth) if plan.queued else None
    busy, ek, elast = False, 0, 0
    pk, drained_r = 0, False  # packed tail: events waiting for their word; the sequencer's drained
    mainq, scq = _Queue(), _Queue()
    upd = deque()             # (issue cycle, layer, update index, timestep) of spiking updates in flight
    trace_level = 0
    pushes_cache = {}
    exit_t = int(result.exit_t[b])
    c = 0
    while True:
        # ---- combinational view of cycle c
        in_load, in_acc, in_update = phase == "LOAD", phase == "ACC", phase == "UPDATE"
        done_c = done
        # pipeline outputs at SPIKE_STAGE (pushes) of updates issued at c - SPIKE_STAGE
        push_now = []
        trace_now = 0
        at_spike_stage = False
        while upd and upd[0][0] <= c - SPIKE_STAGE:
            ic, li, k, tt = upd.popleft()
            if ic == c - SPIKE_STAGE:
                at_spike_stage = True
                key = (li, tt)
                if key not in pushes_cache:
                    pushes_cache[key] = _update_pushes(plan, li, result.spikes[layers[li].name][tt - 1, b])
                any_spike, entry = pushes_cache[key][k]
                trace_now += any_spike and trace
                if entry is not None:
                    push_now.append((li, entry))
        # the sequencer's in_flight: a spiking-layer update in PE stages 1 .. SPIKE_STAGE
        in_flight = at_spike_stage or any(c - SPIKE_STAGE < ic < c for ic, _, _, _ in upd)
        trace_empty = trace_level == 0
        if phase == "RESULT" and trace_empty:
            return c - 1
        cl = layer + 1 if in_update and layer != out_layer else layer
        sc_here = cl in sc_of.values()
        push = tp is not None and tp_own is not None and (in_load or in_acc) and not lanes.full()
        take = not busy and tp is not None and (in_load or in_acc) and tp_own is None
        cur_k = ek if busy else 0
        cur_last = elast if busy else (tp - 1 if tp is not None else 0)
        at_last = cur_k == cur_last
        issuing = busy or take
        tp_ready = tp is None or take or push
        rw_done = rw is not None and rw[0] <= 1
        rw_ready = rw is None or (tp_ready and rw_done)
        ev_ready = ev is None or rw_ready
        if busy:
            quiet = ev is None and rw is None and at_last and tp is None
        else:
            quiet = ev is None and rw is None and (tp is None or (take and at_last))
        # source of the next event
        src, src_q = None, None
        accept_zero = False
        if in_load:
            if not done and i_in < n_in:
                if x[i_in] != 0:
                    src = in_ev[i_in]
                else:
                    accept_zero = True
        elif not mainq.empty(c):
            src, src_q = mainq.head(c), mainq
        elif sc_here and not scq.empty(c):
            src, src_q = scq.head(c), scq
        queues_empty = mainq.idle() and (not sc_here or scq.idle())
        quiet = quiet and pk == 0 and (lanes is None or lanes.idle)   # (events waiting for their packed word; PE queues)
        # the flush: the hold registers take the buffer's events as the next word
        flush = drained_r and in_acc and pk > 0 and ev is None and rw is None and tp is None and (not busy or at_last)

        # ---- registers at the end of cycle c
        # trace queue (consumed at once): pops what was readable, pushes this cycle's entries
        trace_level = trace_level - (1 if trace_level else 0) + trace_now
        for li, (ch, py, px) in push_now:
            consumer = li + 1
            evs = _events_of(plan, gid[(consumer, False)], ch, py, px)
            if layers[consumer].paired:   # two lanes of the entry an event, the last alone when odd
                evs = evs[::2]
            mainq.fifo.append((c + SpikeEventSource.LATENCY, evs))
            if li in sc_of:
                scq.fifo.append((c + SpikeEventSource.LATENCY, _events_of(plan, gid[(sc_of[li], True)], ch, py, px)))
        # issue stage
        if issuing and not at_last:
            busy, ek, elast = True, cur_k + 1, cur_last
        else:
            busy = False
        if flush:
            busy, ek, elast, pk = True, 0, 0, 0
        if lanes is not None:
            lanes.step(tp_own if push else None)
        # TP
        new_tp = tp
        if tp_ready:
            new_tp = tp_own = None
            if rw is not None:
                if rw_bursts:
                    new_tp = rw_bursts[0]
                    rw_bursts = rw_bursts[1:]
                    if rw[3] is not None:
                        tp_own, rw[3] = rw[3][0], rw[3][1:]
                    if rw[2] > 1:   # a packed layer's event: its tail waits, or the burst takes the packed word
                        if pk == rw[2] - 1:
                            new_tp, pk = new_tp + 1, 0
                        else:
                            pk += 1
                if not rw_done:
                    rw = [rw[0] - 1, rw_bursts, rw[2], rw[3]]
        # RW
        if rw_ready:
            rw = None if ev is None else [ev[0], list(ev[1]), ev[2], ev[3]]
            rw_bursts = rw[1] if rw is not None else None
        tp = new_tp
        # EV
        if ev_ready:
            ev = src
            if src_q is not None:
                src_q.take()
            if in_load and src is not None:
                i_in += 1
                if i_in == n_in:
                    done = True
        if accept_zero:
            i_in += 1
            if i_in == n_in:
                done = True
        # phases
        if phase == "UPDATE" and layer != out_layer and not (cnt == 0 and not trace_empty):
            upd.append((c, layer, cnt, t))
        phase, layer, t, cnt = _next_phase(
            (phase, layer, t, cnt), layers, exit_wait, exit_t,
            load_end=done_c and quiet, acc_end=queues_empty and not in_flight and quiet, trace_empty=trace_empty)
        drained_r = in_acc and queues_empty and not in_flight
        c += 1
