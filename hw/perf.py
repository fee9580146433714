"""Cycle model of the accelerator, from the golden model's activity (no RTL simulation needed).

:func:`cycles` replays the sequencer of :class:`~spikeloom.hw.accel.Accelerator` register by
register (phases, the EV/RW/TP event pipeline, the issue stage, the spike and shortcut queues, the
update pipeline and the trace queue) with the golden model's spikes as the only data, and returns
the ``cycles`` field of ``o_result`` when the input stream never idles (and, with a trace port,
the trace is consumed at once); the fast tests check it against the RTL for dense, conv, pooled,
residual, dense- and sparse-stored networks. The work bound the design is measured against is
:meth:`spikeloom.model.golden.GoldenResult.cycle_bound`.
"""

from collections import deque

import numpy as np

from spikeloom.model.geometry import channel

from .events import SpikeEventSource
from .pe import PE
from .pipeline import EventPipeline
from .plan import Plan, geometries
from .pool import shortcut_readers, window_end
from .scan import scan_order
from .sequencer import exit_wait as exit_wait_of

SPIKE_STAGE = PE.SPIKE_STAGE


def _plan(model, n_pe, plan):
    return plan if plan is not None else Plan(model, n_pe)


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
        return self.head(c) is None


def _events_of(plan, geo_id, ch_list, y, x):
    """Event descriptors (RW steps, burst lengths) of row events of source ``geo_id``."""
    g = geometries(plan)[geo_id]
    return [EventPipeline.bursts(plan, g, ch, y, x) for ch in ch_list]


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


def batch_cycles(model, n_pe, x, result, plan=None):
    """Expected ``cycles`` of every image of the batch ``x`` (``result`` its golden run with
    ``trace=True``), an int64 array: :func:`cycles` image by image."""
    plan = _plan(model, n_pe, plan)
    return np.array([cycles(model, n_pe, x[b], result, b, plan=plan) for b in range(len(x))], dtype=np.int64)


def cycles(model, n_pe, x, result, b, plan=None, trace=False):
    """Expected ``cycles`` of image ``b`` (input ``x``, ``result = golden.run(..., trace=True)``;
    ``trace``: the accelerator has the trace port, consumed at once)."""
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
    ev = rw = tp = None      # ev/rw: [rw steps, bursts]; tp: burst length
    rw_bursts = None
    busy, ek, elast = False, 0, 0
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
        while upd and upd[0][0] <= c - SPIKE_STAGE:
            ic, li, k, tt = upd.popleft()
            if ic == c - SPIKE_STAGE:
                key = (li, tt)
                if key not in pushes_cache:
                    pushes_cache[key] = _update_pushes(plan, li, result.spikes[layers[li].name][tt - 1, b])
                any_spike, entry = pushes_cache[key][k]
                trace_now += any_spike and trace
                if entry is not None:
                    push_now.append((li, entry))
        in_flight = bool(push_now) or any(c - SPIKE_STAGE < ic < c for ic, _, _, _ in upd)
        trace_empty = trace_level == 0
        if phase == "RESULT" and trace_empty:
            return c - 1
        cl = layer + 1 if in_update and layer != out_layer else layer
        sc_here = cl in sc_of.values()
        take = not busy and tp is not None and (in_load or in_acc)
        cur_k = ek if busy else 0
        cur_last = elast if busy else (tp - 1 if tp is not None else 0)
        at_last = cur_k == cur_last
        issuing = busy or take
        tp_ready = tp is None or take
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
        queues_empty = mainq.empty(c) and (not sc_here or scq.empty(c))

        # ---- registers at the end of cycle c
        # trace queue (consumed at once): pops what was readable, pushes this cycle's entries
        trace_level = trace_level - (1 if trace_level else 0) + trace_now
        for li, (ch, py, px) in push_now:
            consumer = li + 1
            evs = _events_of(plan, gid[(consumer, False)], ch, py, px)
            mainq.fifo.append((c + SpikeEventSource.LATENCY, evs))
            if li in sc_of:
                scq.fifo.append((c + SpikeEventSource.LATENCY, _events_of(plan, gid[(sc_of[li], True)], ch, py, px)))
        # issue stage
        if issuing and not at_last:
            busy, ek, elast = True, cur_k + 1, cur_last
        else:
            busy = False
        # TP
        new_tp = tp
        if tp_ready:
            new_tp = None
            if rw is not None:
                if rw_bursts:
                    new_tp = rw_bursts[0]
                    rw_bursts = rw_bursts[1:]
                if not rw_done:
                    rw = [rw[0] - 1, rw_bursts]
        # RW
        if rw_ready:
            rw = None if ev is None else [ev[0], list(ev[1])]
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
        c += 1
