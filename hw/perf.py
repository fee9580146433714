"""Cycle model of the accelerator, from the golden model's activity (no simulation needed).

:func:`cycles` reproduces, cycle for cycle, the ``cycles`` field of ``o_result`` when the input
stream never idles (and, with a trace port, the trace is consumed at once); the fast tests check
it against the RTL. The work bound the design is measured against is
:meth:`spikeloom.model.golden.GoldenResult.cycle_bound`.
"""

import numpy as np
from amaranth.utils import ceil_log2

from .pe import SPIKE_STAGE, Z_STAGE


def _ceil(a, b):
    return -(-int(a) // b)


def _quiet(e_valid, rem, c):
    """Nothing left to issue after this cycle (``quiet`` in the sequencer)."""
    if rem > 0:
        return not e_valid and rem == 1
    return not e_valid or c == 1


def _step(e_valid, rem, c, src_valid):
    """One sequencer cycle: the event stage hands an event to the issue when it is free and is
    refilled from the source when empty or handing over. Returns ``(e_valid, rem, loaded)``."""
    take = rem == 0 and e_valid
    loaded = src_valid and (not e_valid or take)
    if rem > 0:
        rem -= 1
    elif take:
        rem = c - 1
    return (e_valid and not take) or loaded, rem, loaded


def _load(x, c0):
    """Cycle (from the first input transfer = 0) in which LOAD hands over to UPDATE."""
    cyc = rem = i = 0
    e_valid = False
    while True:
        done = i == len(x)
        if done and _quiet(e_valid, rem, c0):
            return cyc
        # zeros are taken at once; a nonzero value when the event stage takes it
        src = not done and x[i] != 0
        e_valid, rem, loaded = _step(e_valid, rem, c0, src)
        if not done and (x[i] == 0 or loaded):
            i += 1
        cyc += 1


def _acc(avail, push0, c):
    """Cycles of an ACC phase whose events become available at cycles ``avail`` (sorted).

    An event available in cycle ``a`` < 0 (during the previous UPDATE) is in the event stage at
    the start when it is the first. The previous UPDATE's last chunk is in pipeline stage ``s`` at
    cycle ``s - 1``: the phase cannot end while it is in stages ``1 .. SPIKE_STAGE - 1``, nor while
    it pushes spikes (``push0``).
    """
    e_valid = bool(avail) and avail[0] <= -1
    cyc, rem, j = 0, 0, int(e_valid)
    while True:
        src = j < len(avail) and avail[j] <= cyc
        in_flight = cyc < SPIKE_STAGE - 1 or (cyc == SPIKE_STAGE - 1 and push0)
        if not src and not in_flight and _quiet(e_valid, rem, c):
            return cyc + 1
        e_valid, rem, loaded = _step(e_valid, rem, c, src)
        j += loaded
        cyc += 1


def cycles(model, n_pe, x, result, b):
    """Expected ``cycles`` of image ``b`` (input ``x``, ``result = golden.run(..., trace=True)``)."""
    chunks = [_ceil(ly.out_features, n_pe) for ly in model.layers]
    now = _load(np.asarray(x).ravel(), chunks[0]) + 1
    for t in range(int(result.exit_t[b])):
        for i, ly in enumerate(model.layers):
            now += chunks[i]
            if ly.role == "output":
                # the last chunk's outputs reach the top-2 tree, its merge, the registered margin
                # comparison, the exit decision
                now += Z_STAGE + ceil_log2(n_pe) + 2
                continue
            fired = np.flatnonzero(result.spikes[ly.name][t, b])
            per_chunk = np.bincount(fired // n_pe, minlength=chunks[i])
            # chunk c is issued at UPDATE cycle c, pushed SPIKE_STAGE cycles later, poppable one after
            avail = [c + SPIKE_STAGE + 1 - chunks[i] for c in range(chunks[i]) for _ in range(per_chunk[c])]
            now += _acc(avail, per_chunk[-1] > 0, chunks[i + 1])
    return now - 1


def issue_cycles(model, n_pe, result, b):
    """Cycles in which the sequencer issues a chunk: the design's work at lane granularity.

    Every event costs ``chunks[l]`` cycles whatever its weights (no zero-weight skipping) and every
    layer update ``chunks[l]``; :func:`cycles` minus this is pipeline drain and input streaming.
    """
    chunks = [_ceil(ly.out_features, n_pe) for ly in model.layers]
    sc = result.step_counters
    total = 0
    for t in range(int(result.exit_t[b])):
        for i, ly in enumerate(model.layers):
            total += chunks[i] * (1 + int(sc[ly.name]["input_events"][t, b]))
    return total
