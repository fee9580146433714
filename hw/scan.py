"""The update scan: the position counters of a layer's update pass."""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .common import bits, per_layer
from .plan import geometries
from .pool import pool_words, shortcut_readers, windows


def scan_order(lp):
    """``(y, x, chunk)`` of layer ``lp``'s updates in the order the scan issues them."""
    return [(y, x, c) for y in range(lp.ho) for x in range(lp.wo) for c in range(lp.chunks)]


def row_bases(plan):
    """Per layer: the event rows of its spikes in the consumer's main source (``main``, ``pos``:
    added per pooled column, ``prow``: per pooled row; a dense consumer reads position-major) and
    in the shortcut reader's source (``sc``)."""
    layers, sc_of = plan.layers, shortcut_readers(plan.model)
    out = {"main": [], "pos": [], "prow": [], "sc": []}
    for li, lp in enumerate(layers):
        nxt = layers[li + 1].sources[0] if li + 1 < plan.n_layers else None
        dense_next = nxt is not None and not nxt.conv
        out["main"].append(nxt.row_base if nxt else 0)
        out["pos"].append(lp.channels if dense_next else 0)
        out["prow"].append(lp.channels * windows(lp)[1] if dense_next else 0)
        out["sc"].append(layers[sc_of[li]].sources[1].row_base if li in sc_of else 0)
    return out


def scan_widths(plan):
    """Widths of :class:`UpdateScan`'s per-update outputs (fields of the sequencer's command word)."""
    layers, geos = plan.layers, geometries(plan)
    rb = bits(plan.n_rows)
    return {
        "c": bits(plan.max_chunks),
        "pos": bits(max(lp.positions for lp in layers)),
        "pidx": bits(max(max(pool_words(lp) for lp in layers), 1)),
        "py": bits(max(g.h for g in geos)),
        "px": bits(max(g.w for g in geos)),
        "first": 1,
        "last": 1,
        "rbm": rb,
        "rbs": rb,
        "lanes": bits(plan.n_pe + 1),
    }


class UpdateScan(wiring.Component):
    """Counts through the updates of one layer: positions ``(y, x)`` row by row, the chunks of a
    position innermost (:func:`scan_order`), and derives each update's pooling window, pool word
    and queue row bases.

    Parameters
    ----------
    plan : Plan

    Members
    -------
    layer : In(range(n_layers))
        The layer being updated (stable during its pass). The passes go through the layers in
        order, from layer 0 after reset and after the last layer.
    step : In(1)
        An update is issued this cycle: advance to the next one at the clock edge.
    restart : In(1)
        With ``step``: it is the layer's last update; back to the first at the clock edge.
    c, pos, pidx, py, px, first, last, rbm, rbs, lanes : Out
        Combinational from the counters (registers) and ``layer``, for the current update: its
        chunk, position ``y * wo + x``, pool word, pooled position, first/last update of its
        pooling window (both 1 without pooling), the row bases of its spike entry (main and
        shortcut source), and the lanes holding a channel. Past the last whole window of a map
        that does not divide by ``pool`` (floor mode, :mod:`~spikeloom.hw.pool`), ``last`` stays 0
        (the window's row and column counters stop short of ``pool - 1``) and the pooled position
        and row bases, which only a pushed entry carries, may wrap; ``pidx`` points to the
        partial window's own word (:func:`~spikeloom.hw.pool.pool_words`).
    last_chunk, last_lanes : Out
        ``layer``'s last chunk index and the lanes of its last chunk.
    """

    def __init__(self, plan):
        self._plan = plan
        super().__init__({
            "layer": In(range(plan.n_layers)),
            "step": In(1),
            "restart": In(1),
            **{k: Out(w) for k, w in scan_widths(plan).items()},
            "last_chunk": Out(bits(plan.max_chunks)),
            "last_lanes": Out(bits(plan.n_pe + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        plan, n = self._plan, self._plan.n_pe
        layers, layer = plan.layers, self.layer
        uc = Signal(range(max(plan.max_chunks, 2)))
        ux = Signal(range(max(max(lp.wo for lp in layers), 2)))
        upos = Signal.like(self.pos)
        xq = Signal(range(max(max(lp.pool for lp in layers), 2)))
        yq = Signal.like(xq)
        px, py = Signal.like(self.px), Signal.like(self.py)
        pcol = Signal.like(self.pidx)
        rbw = bits(plan.n_rows)
        rb_row, rb_col = Signal(rbw), Signal(rbw)
        cN = Signal(bits(plan.n_rows + n))

        last_c = self.last_chunk
        last_x = per_layer([lp.wo - 1 for lp in layers], ux.shape().width, layer)
        last_q = per_layer([lp.pool - 1 for lp in layers], xq.shape().width, layer)
        chunks_c = per_layer([lp.chunks for lp in layers], pcol.shape().width, layer)
        rb = row_bases(plan)
        c_rb_main, c_rb_pos, c_rb_prow, c_rb_sc = (per_layer(rb[k], rbw, layer) for k in ("main", "pos", "prow", "sc"))
        pool_on = per_layer([int(lp.pool > 1) for lp in layers], 1, layer)
        m.d.comb += [
            last_c.eq(per_layer([lp.chunks - 1 for lp in layers], last_c.shape().width, layer)),
            self.last_lanes.eq(per_layer([lp.last_lanes for lp in layers], self.last_lanes.shape().width, layer)),
            self.c.eq(uc), self.pos.eq(upos), self.pidx.eq(pcol + uc), self.py.eq(py), self.px.eq(px),
            self.first.eq(((xq == 0) & (yq == 0)) | ~pool_on),
            self.last.eq(((xq == last_q) & (yq == last_q)) | ~pool_on),
            self.rbm.eq(c_rb_main + rb_row + rb_col + cN), self.rbs.eq(c_rb_sc + cN),
            self.lanes.eq(Mux(uc == last_c, self.last_lanes, n)),
        ]
        # "uc is the position's last chunk" in a register of its own, counted beside uc: a
        # comparison of uc with the layer's chunk count was in front of every counter's enable.
        # A pass restarts at the next layer's first update (after the last layer, layer 0's).
        wrap_c = Signal(name="c_last", init=int(layers[0].chunks == 1))
        one = [int(lp.chunks == 1) for lp in layers]
        with m.If(self.step):
            m.d.sync += wrap_c.eq(Mux(self.restart, per_layer(one[1:] + one[:1], 1, layer),
                                      Mux(wrap_c, per_layer(one, 1, layer),
                                          uc == per_layer([max(lp.chunks - 2, 0) for lp in layers],
                                                          uc.shape().width, layer))))
        with m.If(self.step):
            m.d.sync += [uc.eq(Mux(wrap_c, 0, uc + 1)), cN.eq(Mux(wrap_c, 0, cN + n))]
            with m.If(wrap_c):
                m.d.sync += upos.eq(upos + 1)
                with m.If(ux == last_x):
                    m.d.sync += [ux.eq(0), xq.eq(0), px.eq(0), pcol.eq(0), rb_col.eq(0)]
                    with m.If(yq == last_q):
                        m.d.sync += [yq.eq(0), py.eq(py + 1), rb_row.eq(rb_row + c_rb_prow)]
                    with m.Else():
                        m.d.sync += yq.eq(yq + 1)
                with m.Else():
                    m.d.sync += ux.eq(ux + 1)
                    with m.If(xq == last_q):
                        m.d.sync += [xq.eq(0), px.eq(px + 1), pcol.eq(pcol + chunks_c), rb_col.eq(rb_col + c_rb_pos)]
                    with m.Else():
                        m.d.sync += xq.eq(xq + 1)
            with m.If(self.restart):
                m.d.sync += [uc.eq(0), cN.eq(0), upos.eq(0), ux.eq(0), xq.eq(0), yq.eq(0), px.eq(0), py.eq(0),
                             pcol.eq(0), rb_row.eq(0), rb_col.eq(0)]
        return m
