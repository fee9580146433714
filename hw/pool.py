"""Pooling of a layer's spikes (OR, or the window's count for ``pool_op = "sum"``) and the pushes
into the spike and shortcut queues.

The rules here are the one home of the facts that the RTL and the cycle model (``hw/perf.py``)
both use: which layer reads a layer's spikes through a residual connection
(:func:`shortcut_readers`), which windows a layer pools (:func:`windows`: floor mode, as in
model/SEMANTICS.md), at which update a pooled entry is pushed (:func:`window_end`), how many
entries a layer's update pushes at most (:func:`pushes`) and the pool memory's words
(:func:`pool_words`).

**Floor mode.** A map that does not divide by ``pool`` has rows and columns past its last whole
window. Their neurons update like every other (membranes, counters, trace), and their spikes are
pooled into words of their own like a whole window's, but such a window never reaches its last
update (its window counters stop short of ``pool - 1``), so it pushes nothing.
"""

from amaranth import Array, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import bits, per_layer


def shortcut_readers(model):
    """``{source layer index: index of the layer that reads its spikes through its shortcut}``."""
    names = [ly.name for ly in model.layers]
    return {names.index(ly.shortcut): li for li, ly in enumerate(model.layers) if ly.shortcut is not None}


def windows(lp):
    """``(rows, columns)`` of whole ``pool x pool`` windows of layer ``lp``'s map (floor mode: the
    pooled map the layer passes on; the rows and columns past them join no window)."""
    return lp.ho // lp.pool, lp.wo // lp.pool


def window_end(pool, y, x):
    """The pooled position ``(y // pool, x // pool)`` if the update of output position ``(y, x)``
    is the last of its ``pool x pool`` window (its entry is pushed then), else ``None``. A
    position past the last whole window (floor mode) is never a window's last: its row or column
    within the window stops short of ``pool - 1``."""
    if y % pool == pool - 1 and x % pool == pool - 1:
        return y // pool, x // pool
    return None


def pushes(lp):
    """At most this many queue entries per update pass of layer ``lp`` (one per whole window and
    chunk)."""
    hp, wp = windows(lp)
    return hp * wp * lp.chunks


def pool_words(lp):
    """Words of the pool memory that layer ``lp``'s pass uses: one per window of a pooled row
    (the partial window past the last whole one included, which is pooled but never pushed) and
    chunk; 0 without pooling."""
    return -(-lp.wo // lp.pool) * lp.chunks if lp.pool > 1 else 0


def pool_depth(layers):
    """Entries of the pool memory: the :func:`pool_words` of the widest pooled layer (0: none pools)."""
    return max((pool_words(lp) for lp in layers), default=0)


class SpikePush(wiring.Component):
    """Pools the spike masks of a spiking layer's updates and pushes the queue entries.

    Updates arrive in the scan order of :class:`~spikeloom.hw.scan.UpdateScan` (rows of
    positions, chunks innermost). With pooling, a pooled row's masks are ORed into the ``pool``
    memory (one word per window of the row and chunk, :func:`pool_words`) until the window's last
    update (:func:`window_end`), which pushes the ORed mask; without pooling every update pushes
    its own mask. Entries with an empty mask are not pushed. The windows past the last whole one
    (floor mode) are pooled the same way and never pushed.

    When the plan has a sum-pooled layer (``plan.count_bits``), the ``pool`` words hold a count per
    lane instead of a bit: a sum-pooled layer's updates add their spikes to it, the others' OR them
    (counts 0 or 1), and the entry carries the counts (``count``) beside the mask of the nonzero
    ones.

    Parameters
    ----------
    plan : Plan
    entry : StructLayout
        The queue entry (:func:`~spikeloom.hw.events.spike_entry_layout`).
    pidx_bits : int
        Width of ``pidx``.

    Members
    -------
    en : In(1)
        An update of a spiking layer, with the fields below and ``mask``, this cycle.
    layer, first, last, pidx, py, px, rbm, rbs : In
        The update's layer, first/last update of its pooling window, pool word (pooled column
        times chunks plus chunk), pooled position, and the row bases of its entry's events in the
        consumer's main source (``rbm``) and in the shortcut reader's source (``rbs``).
    mask : In(n_pe)
        The update's spikes (lane ``p``: channel ``chunk * n_pe + p``).
    main : Out(stream.Signature(entry))
        The spike-queue push, combinational from the inputs (``ready`` is ignored: the queue
        holds :func:`pushes` entries of the largest layer).
    shortcut : Out(stream.Signature(entry)), only if the plan has a residual layer
        The same entry with ``rbs``, for layers whose spikes a later layer reads.
    """

    def __init__(self, plan, entry, pidx_bits):
        self._plan = plan
        self._sc_of = shortcut_readers(plan.model)
        n_layers = plan.n_layers
        rb = bits(plan.n_rows)
        ports = {
            "en": In(1),
            "layer": In(bits(n_layers)),
            "first": In(1),
            "last": In(1),
            "pidx": In(pidx_bits),
            "py": In(entry["y"].shape),
            "px": In(entry["x"].shape),
            "rbm": In(rb),
            "rbs": In(rb),
            "mask": In(plan.n_pe),
            "main": Out(stream.Signature(entry)),
        }
        if self._sc_of:
            ports["shortcut"] = Out(stream.Signature(entry))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        plan, n = self._plan, self._plan.n_pe
        mask = self.mask
        depth = pool_depth(plan.layers)
        if plan.count_bits:
            orv, count = self._counts(m, depth)
        else:
            orv = Signal(n)
            if depth:
                m.submodules.pool = pool = Memory(shape=unsigned(n), depth=max(depth, 2), init=[])
                pool_rd = pool.read_port(domain="comb")
                pool_wr = pool.write_port()
                m.d.comb += [
                    pool_rd.addr.eq(self.pidx),
                    orv.eq(mask | Mux(self.first, 0, pool_rd.data)),
                    pool_wr.addr.eq(self.pidx),
                    pool_wr.data.eq(orv),
                    pool_wr.en.eq(self.en & ~self.last),
                ]
            else:
                m.d.comb += orv.eq(mask)
        m.d.comb += [
            self.main.valid.eq(self.en & self.last & (orv != 0)),
            self.main.payload.rbase.eq(self.rbm),
            self.main.payload.y.eq(self.py),
            self.main.payload.x.eq(self.px),
            self.main.payload.mask.eq(orv),
        ]
        if plan.count_bits:
            m.d.comb += self.main.payload.count.eq(count)
        if plan.paired:   # the consumer (the next layer) takes its events two at a time
            m.d.comb += self.main.payload.pair.eq(per_layer([int(v) for v in plan.feeds_paired], 1, self.layer))
        if self._sc_of:
            is_src = Array(Const(int(li in self._sc_of), 1) for li in range(plan.n_layers))[self.layer]
            m.d.comb += [
                self.shortcut.valid.eq(self.main.valid & is_src),
                self.shortcut.payload.rbase.eq(self.rbs),
                self.shortcut.payload.y.eq(self.py),
                self.shortcut.payload.x.eq(self.px),
                self.shortcut.payload.mask.eq(orv),
            ]
            if plan.count_bits:
                m.d.comb += self.shortcut.payload.count.eq(count)
        return m

    def _counts(self, m, depth):
        """The window's lane counts so far (this update's spikes included) and their nonzero mask."""
        plan, n = self._plan, self._plan.n_pe
        layout = data.ArrayLayout(unsigned(plan.count_bits), n)
        count = Signal(layout)
        nonzero = Signal(n, name="orv")
        old = Signal(layout)
        if depth:
            m.submodules.pool = pool = Memory(shape=unsigned(layout.size), depth=max(depth, 2), init=[])
            pool_rd = pool.read_port(domain="comb")
            pool_wr = pool.write_port()
            m.d.comb += [
                pool_rd.addr.eq(self.pidx),
                old.eq(Mux(self.first, 0, pool_rd.data)),
                pool_wr.addr.eq(self.pidx),
                pool_wr.data.eq(count),
                pool_wr.en.eq(self.en & ~self.last),
            ]
        summing = per_layer([int(ly.pool_op == "sum") for ly in plan.model.layers], 1, self.layer)
        for p in range(n):
            m.d.comb += [
                count[p].eq(Mux(summing, old[p] + self.mask[p], old[p] | self.mask[p])),
                nonzero[p].eq(count[p] != 0),
            ]
        return nonzero, count
