"""The event pipeline: events of the layer being accumulated -> weight-word reads for the PEs."""

from types import SimpleNamespace

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import bits, per_layer
from .events import event_layout
from .plan import bursts as plan_bursts, geometries, segment_taps
from .queues import PEQueues


def issue_signature(plan):
    """The word the issue stage sends to the PEs this cycle (all members combinational)."""
    geos = geometries(plan)
    max_taps = max(g.taps for g in geos)
    groups = plan.max_groups
    packing = {
        "packed": Out(1),                                  # a packed tail word
        "pkl": Out(1),                                     # of a packed layer (its bursts end before the tail)
        "pkv": Out(groups),                                # packed word: the lane groups holding an event
        # each lane group's weight address: w, but in a packed word the address of the group's event
        "wg": Out(data.ArrayLayout(bits(plan.weight_depth), groups)),
    } if groups else {}
    pairing = {
        "pair": Out(1),                                    # a paired word: a second event of the entry
        "w2": Out(bits(plan.weight_depth)),                # ... whose weight address is this
    } if plan.paired else {}
    return wiring.Signature({
        **packing,
        **pairing,
        "valid": Out(1),                                   # a word is issued this cycle
        "w": Out(bits(plan.weight_depth)),                 # its weight address
        "n": Out(bits(plan.neuron_depth)),                 # its neuron (dense) or event base (sparse)
        "last": Out(1),                                    # the last word of its burst
        "val": Out(plan.value_bits),
        "sparse": Out(1),
        "chunked": Out(1),                                 # dense storage: word k is chunk k
        "mask": Out(max_taps),
        "geo": Out(bits(len(geos))),
    })


def rows_words(plan):
    """Contents of the ``rows`` table (``mem/rows.hex``): per row its first weight word and its
    segments' lengths and offsets (:meth:`~spikeloom.hw.plan.Plan.rows_word`)."""
    return [plan.rows_word(r) for r in range(plan.n_rows)] + [0] * (plan.rows_depth - plan.n_rows)


class EventPipeline(wiring.Component):
    """Events in, one weight word per cycle out: three registers ``EV``, ``RW``, ``TP`` and the
    issue stage.

    * ``EV``: the event taken from one of the sources (the input values in the load phase, else
      the spike queue, then the shortcut queue when the fetched layer has a shortcut source).
    * ``RW``: its row's start and length from the ``rows`` table (read as the event enters
      ``EV``, registered with it into ``RW``), the taps that land and the event's neuron base.
    * ``TP``: one burst: a landing tap's ``chunks`` words for dense storage (one burst per tap,
      lowest tap first), or for compressed storage one segment's entries (one burst per segment
      with a landing tap and entries, lowest first; an uncut row is one segment).
    * issue: the burst's words, one per cycle, back to back, while ``enable``.

    An event offered in cycle k is in ``EV`` in k + 1; with no stall its first word is issued in
    cycle k + ``DEPTH``. ``hw/perf.py`` replays these registers.

    **Paired events** (``hw/plan.py``): an event with ``two`` carries a second of the same entry,
    ``d2`` rows after it; its layer is dense with one chunk and one tap, so its burst is one word
    and the second event's word is ``d2`` words after the first's (``issue.w2``, with
    ``issue.pair``), looked up with no second ``rows`` read.

    **PE queues** (``hw/plan.py``): a queued layer's burst in ``TP`` is not issued here but pushed
    into the PEs' queues (``queues``, :class:`~spikeloom.hw.queues.PEQueues`), one a cycle while
    none is full, with each PE's own length of its segment (the ``rows`` word's ``pe<p>_len<j>``,
    registered beside ``TP``); each PE's walker then issues its own words. ``quiet`` waits for the
    queues' ``idle``.

    Parameters
    ----------
    plan : Plan

    Members
    -------
    i_input : In(stream.Signature(event_layout))
        The analog layer's events; taken only while ``load``.
    i_main, i_shortcut : In(stream.Signature(event_layout))
        The spike queue's and the shortcut queue's events (``i_shortcut`` only if the plan has a
        residual layer). ``ready`` is combinational from ``valid``, ``load`` and ``fetch_*``.
    load : In(1)
        The load phase: events come from ``i_input``, of the first layer's main source.
    fetch_layer : In(range(n_layers))
        The layer whose events are fetched from the queues.
    fetch_shortcut : In(1)
        ``fetch_layer`` has a shortcut source: ``i_shortcut`` is read once ``i_main`` is empty.
    enable : In(1)
        Issue words (the load and accumulate phases).
    issue : Out(issue_signature(plan))
        The word issued this cycle.
    quiet : Out(1)
        Nothing is left to issue after this cycle (no event in the pipeline).
    counted, counted_geo : Out(1), Out(source id)
        From registers: an event entered ``EV`` in the previous cycle, and its source (the index
        in ``geometries(plan)``).
    counted_two : Out(1), only when a layer is paired
        From a register, with ``counted``: the event was two (``hw/plan.py``, "Paired events").
    drained : In(1), only when a layer is packed (``hw/plan.py``, "Packed tail")
        A register: the accumulate phase has no event to come (its queues were empty and no
        update in flight in the cycle before). Events of a packed layer that still wait for their
        packed word then get it (the flush), and ``quiet`` holds only once it is issued.

    **Packed tail.** A packed layer's event moves from ``RW`` to ``TP`` with a burst of its
    ``chunks - 1`` first words, and its last chunk's address goes to a buffer of ``groups``
    registers; the event that fills the buffer takes the buffer along instead, and its burst
    ends with the packed word (``issue.packed``): lane group ``g`` reads address ``wg[g]``, its
    event's (in every other word ``wg[g] = w``). The flush issues the buffer as a packed word of the
    groups it fills (``pkv``): once ``drained``, when nothing is left in ``EV``, ``RW`` or ``TP``
    and the issue stage is free or at a burst's last word (a decision of registers only), the hold
    registers take it as the next word.
    """

    #: Registers between an event's source and the issue stage (EV, RW, TP).
    DEPTH = 3

    @staticmethod
    def bursts(plan, g, ch, y, x):
        """The work of the event ``(ch, y, x)`` of source ``g``: (cycles it holds ``RW``, burst
        lengths in words), by the plan's burst rule (:func:`spikeloom.hw.plan.bursts`: one burst of
        ``chunks`` words per landing tap for dense storage; for compressed storage one per segment
        of its row with a landing tap and entries, of that segment's length). A packed layer's
        event (``hw/plan.py``, "Packed tail") issues ``chunks - 1`` words of its own; every
        ``groups``-th event's burst has the packed word as one more (the cycle model adds it)."""
        return EventPipeline.event_work(plan, g, ch, y, x)[:2]

    @staticmethod
    def event_work(plan, g, ch, y, x):
        """:meth:`bursts` of the event, and for a queued layer (``hw/plan.py``, "PE queues") per
        burst, in order, each PE's own words of its segment (a tuple of ``n_pe``; None when the
        layer is not queued): ``(rw, bursts, own)``."""
        lp = plan.layers[g.layer]
        taps = len(g.landing(y, x, lp.ho, lp.wo))
        r = g.row_base + g.row(ch, y, x)
        hit = g.segment_landing(lp.segments, y, x, lp.ho, lp.wo)
        segs = [j for j, ((_, ln), h) in enumerate(zip(plan.row_segs[r], hit)) if h]
        rw, words = plan_bursts(lp.storage, taps, lp.chunks - lp.packed, [plan.row_segs[r][j][1] for j in segs])
        pe = plan.row_pe_lens[r] if lp.queued else None
        return rw, words, pe and [tuple(v[j] for v in pe) for j in segs if plan.row_segs[r][j][1]]

    def __init__(self, plan, shortcut=False):
        self._plan = plan
        self._shortcut = shortcut
        geos = geometries(plan)
        self._gid = {(g.layer, g.shortcut): i for i, g in enumerate(geos)}
        self.ev_layout = event_layout(plan.n_rows, max(g.h for g in geos), max(g.w for g in geos),
                                      plan.value_bits, plan.n_pe if plan.paired else 0)
        ports = {
            "i_input": In(stream.Signature(self.ev_layout)),
            "i_main": In(stream.Signature(self.ev_layout)),
            "load": In(1),
            "fetch_layer": In(range(plan.n_layers)),
            "fetch_shortcut": In(1),
            "enable": In(1),
            "issue": Out(issue_signature(plan)),
            "quiet": Out(1),
            "counted": Out(1),
            "counted_geo": Out(bits(len(geos))),
        }
        if plan.paired:
            ports["counted_two"] = Out(1)
        if shortcut:
            ports["i_shortcut"] = In(stream.Signature(self.ev_layout))
        if plan.max_groups:
            ports["drained"] = In(1)
        super().__init__(ports)
        #: the PEs' event queues of queued layers (``hw/plan.py``, "PE queues"; None without): each
        #: PE's own weight address (``claim``, ``w``) and its word's stage-1 fields, read by the accelerator
        self.queues = PEQueues(plan, plan.own_bits) if plan.queued else None

    def _source(self, m, ev_ready):
        """The event offered to ``EV`` this cycle: (valid, event, source id); the chosen input's
        ``ready`` is ``ev_ready``."""
        plan, n_layers = self._plan, self._plan.n_layers
        gbits = bits(len(geometries(plan)))
        cl = self.fetch_layer
        src_valid = Signal()
        src = Signal(self.ev_layout)
        src_geo = Signal(gbits)
        take_main, take_sc = Signal(), Signal()
        with m.If(self.load):
            m.d.comb += [src_valid.eq(self.i_input.valid), src.eq(self.i_input.payload),
                         src_geo.eq(self._gid[(0, False)]), self.i_input.ready.eq(ev_ready)]
        with m.Elif(self.i_main.valid):
            m.d.comb += [src_valid.eq(1), src.eq(self.i_main.payload), take_main.eq(ev_ready),
                         src_geo.eq(per_layer([self._gid[(li, False)] for li in range(n_layers)], gbits, cl))]
        if self._shortcut:
            with m.Elif(self.fetch_shortcut & self.i_shortcut.valid):
                m.d.comb += [src_valid.eq(1), src.eq(self.i_shortcut.payload), take_sc.eq(ev_ready),
                             src_geo.eq(per_layer([self._gid.get((li, True), 0) for li in range(n_layers)],
                                                  gbits, cl))]
            m.d.comb += self.i_shortcut.ready.eq(take_sc)
        m.d.comb += self.i_main.ready.eq(take_main)
        return src_valid, src, src_geo

    @staticmethod
    def _next_burst(m, field, n_seg, rw_seg, rw_valid, rw_sparse, rw_mask, rest, rw_start, rw_len):
        """The burst ``RW`` moves to ``TP`` next: (the event's last, a burst is loaded, its first
        word, its words - 1, the segments left after it). Dense storage: the lowest landing tap
        (``rest``: the taps after it). Compressed: the lowest segment with a landing tap and
        entries (``rw_seg``: the segments with a landing tap not yet issued; ``field``: a field of
        the row's ``rows`` word); an uncut row (``n_seg == 1``) is one burst at the row's start. And
        the segment (0 for an uncut row)."""
        if n_seg == 1:
            return (Mux(rw_sparse, 1, rest == 0), rw_valid & (rw_mask != 0) & (~rw_sparse | (rw_len != 0)),
                    rw_start, rw_len - 1, None, 0)
        lbits = len(field("len0"))
        seg_len = [field(f"len{j}") for j in range(n_seg)]
        seg_off = [Const(0, lbits)] + [field(f"off{j}") for j in range(1, n_seg)]
        pend = Signal(n_seg)
        seg = Signal(range(max(n_seg, 2)))
        m.d.comb += pend.eq(rw_seg & Cat(*(ln != 0 for ln in seg_len)))
        for b in reversed(range(n_seg)):
            with m.If(pend[b]):
                m.d.comb += seg.eq(b)
        seg_rest = Signal(n_seg)
        m.d.comb += seg_rest.eq(pend & ~(Const(1, n_seg) << seg))
        return (Mux(rw_sparse, seg_rest == 0, rest == 0), rw_valid & Mux(rw_sparse, pend != 0, rw_mask != 0),
                rw_start + Array(seg_off)[seg], Array(seg_len)[seg] - 1, seg_rest, seg)

    def _pack_buffer(self, m, rw_geo, wbits, nbits, gbits):
        """The packed tail's registers (class docstring, "Packed tail"): the buffer of tail
        addresses (``cnt`` of them in ``w``, with the neuron and source of the tail word; ``nz``:
        ``cnt != 0``), TP's and the issue stage's copies of a full one (``tp_pkw``, ``e_pkw``) and
        whether their burst ends with the packed word (``tp_pk``, ``e_pk``), the held word's group
        addresses (``e_wg``) and groups (``e_pkv``), whether it is the packed word (``e_word``); and
        whether the event in ``RW`` is of a packed layer (``rw_pkl``) and fills the buffer (``rw_full``)."""
        plan, geos, groups = self._plan, geometries(self._plan), self._plan.max_groups
        addrs = lambda name: Signal(data.ArrayLayout(wbits, groups), name=name)
        pk = SimpleNamespace(
            cnt=Signal(range(groups), name="pk_cnt"), nz=Signal(name="pk_nz"), w=addrs("pk_w"),
            n=Signal(nbits, name="pk_n"), geo=Signal(gbits, name="pk_geo"),
            rw_pkl=Signal(name="rw_pkl"), rw_full=Signal(name="rw_full"),
            tp_pk=Signal(name="tp_pk"), tp_pkl=Signal(name="tp_pkl"), tp_pkw=addrs("tp_pkw"),
            e_pk=Signal(name="e_pk"), e_pkl=Signal(name="e_pkl"), e_pkw=addrs("e_pkw"), e_wg=addrs("e_wg"),
            e_word=Signal(name="e_word"), e_pkv=Signal(groups, name="e_pkv"))
        with m.Switch(rw_geo):
            for gi, g in enumerate(geos):
                lp = plan.layers[g.layer]
                if lp.packed:
                    with m.Case(gi):
                        m.d.comb += [pk.rw_pkl.eq(1), pk.rw_full.eq(pk.cnt == lp.groups - 1)]
        return pk

    @staticmethod
    def _pack_tp(m, pk, rw_chunks, rw_start, rw_e, rw_geo, tp_len):
        """A dense event moves from ``RW`` to ``TP``: a packed layer's (one tap) burst is its first
        ``chunks - 1`` words and its tail address joins the buffer, or, when it fills the buffer,
        its whole ``chunks`` words, the last the packed word of the buffer and itself."""
        own = rw_start + rw_chunks
        with m.If(pk.rw_pkl):
            with m.If(pk.rw_full):
                m.d.sync += [pk.cnt.eq(0), pk.nz.eq(0),
                             *(pk.tp_pkw[g].eq(Mux(pk.cnt == g, own, pk.w[g])) for g in range(len(pk.e_pkv)))]
            with m.Else():
                m.d.sync += [*tp_len(rw_chunks - 1), pk.cnt.eq(pk.cnt + 1), pk.nz.eq(1), pk.w[pk.cnt].eq(own),
                             pk.n.eq(rw_e + rw_chunks), pk.geo.eq(rw_geo)]

    def _pack_issue(self, m, pk, busy, rem_one, tp_w0, hold):
        """The issue stage's group addresses and packed word. A packed word is never a burst's
        first (``chunks >= 2``), so it issues from the hold registers, which take its group
        addresses a cycle before (``hold``: they take the burst's next word). Returns the hold
        registers' writes that make the buffer's events the next word (the flush)."""
        iss, groups = self.issue, self._plan.max_groups
        m.d.comb += [
            iss.packed.eq(busy & pk.e_word), iss.pkv.eq(pk.e_pkv),
            iss.pkl.eq(Mux(busy, pk.e_pkl, pk.tp_pkl)),
            *(iss.wg[g].eq(Mux(busy, pk.e_wg[g], tp_w0)) for g in range(groups)),
        ]
        burst_pk, burst_pkw = Mux(busy, pk.e_pk, pk.tp_pk), Mux(busy, pk.e_pkw, pk.tp_pkw)
        nxt_pk = burst_pk & rem_one   # the next word is the burst's last, its packed word
        with m.If(hold):
            m.d.sync += [pk.e_pk.eq(burst_pk), pk.e_pkl.eq(iss.pkl), pk.e_pkw.eq(burst_pkw), pk.e_word.eq(nxt_pk),
                         pk.e_pkv.eq((1 << groups) - 1),
                         *(pk.e_wg[g].eq(Mux(nxt_pk, Mux(busy, pk.e_pkw[g], pk.tp_pkw[g]), iss.w + 1))
                           for g in range(groups))]
        return [pk.e_word.eq(1), pk.e_pkl.eq(1), pk.e_wg.eq(pk.w), pk.cnt.eq(0), pk.nz.eq(0),
                pk.e_pkv.eq(Array(Const((1 << v) - 1, groups) for v in range(groups))[pk.cnt])]

    def _landing(self, m, ev, ev_geo, rw_mask, rw_e, rw_seg):
        """Into ``RW`` with the event in ``EV`` (source ``ev_geo``): the taps that land
        (``rw_mask``), its neuron base (``rw_e``) and, for rows cut in segments, the segments with a
        landing tap (``rw_seg``)."""
        plan, n_seg, nbits = self._plan, self._plan.rows_segments, len(rw_e)
        with m.Switch(ev_geo):
            for gi, g in enumerate(geometries(plan)):
                lp = plan.layers[g.layer]
                with m.Case(gi):
                    if g.conv:
                        ys, xs, _ = g.tables(lp.chunks, lp.ho, lp.wo)
                        ym = Array(Const(v[0], g.k) for v in ys)[ev.y]
                        xm = Array(Const(v[0], g.k) for v in xs)[ev.x]
                        yo = Array(Const(v[1] % (1 << nbits), nbits) for v in ys)[ev.y]
                        xo = Array(Const(v[1] % (1 << nbits), nbits) for v in xs)[ev.x]
                        taps = [ym[t // g.k] & xm[t % g.k] for t in range(g.taps)]
                        m.d.sync += [rw_mask.eq(Cat(*taps)), rw_e.eq(lp.neuron_base + yo + xo)]
                        if n_seg > 1:
                            segs = [Cat(*(taps[t] for t in seg)).any() for seg in segment_taps(lp.segments, g.k)]
                            m.d.sync += rw_seg.eq(Cat(*segs))
                    else:
                        m.d.sync += [rw_mask.eq(1), rw_e.eq(lp.neuron_base)]
                        if n_seg > 1:
                            m.d.sync += rw_seg.eq(1)

    def _tap_fields(self, m, rw_mask, rw_geo, lbits, wbits, nbits):
        """What ``RW``'s event (source ``rw_geo``, landing taps ``rw_mask``) gives its next dense
        burst, combinational: ``(rest, rw_sparse, rw_chunks, toff, dtap)``: the landing taps after
        the lowest, whether the source's layer is compressed, its chunks - 1, the lowest tap's word
        offset in the row and its neuron offset."""
        plan, geos = self._plan, geometries(self._plan)
        max_taps = len(rw_mask)
        tap = Signal(range(max(max_taps, 2)))
        for b in reversed(range(max_taps)):
            with m.If(rw_mask[b]):
                m.d.comb += tap.eq(b)
        rest = Signal(max_taps)
        m.d.comb += rest.eq(rw_mask & ~(Const(1, max_taps) << tap))
        rw_sparse = Signal()
        rw_chunks = Signal(lbits)
        toff = Signal(wbits)
        dtap = Signal(nbits)
        with m.Switch(rw_geo):
            for gi, g in enumerate(geos):
                lp = plan.layers[g.layer]
                with m.Case(gi):
                    d = g.tables(lp.chunks, lp.ho, lp.wo)[2]
                    m.d.comb += [
                        rw_sparse.eq(lp.storage == "sparse"),
                        rw_chunks.eq(lp.chunks - 1),
                        toff.eq(Array(Const(tt * lp.chunks, wbits) for tt in range(g.taps))[tap]),
                        dtap.eq(Array(Const(v % (1 << nbits), nbits) for v in d)[tap]),
                    ]
        return rest, rw_sparse, rw_chunks, toff, dtap

    def _queue_tp(self, m, rw_geo, field, seg, move):
        """A queued layer's burst (``hw/plan.py``, "PE queues") goes from ``TP`` to the PEs' queues
        (``self.queues``) with each PE's own length of its segment (``seg``, of ``RW``'s row:
        ``field``), registered into the queues' ``lens`` as it moves to ``TP`` (``move``). Returns
        ``tp_own``: the burst in ``TP`` is queued."""
        plan, q = self._plan, self.queues
        m.submodules.queues = q
        tp_own, rw_own = Signal(name="tp_own"), Signal(name="rw_own")
        with m.Switch(rw_geo):
            for gi, g in enumerate(geometries(plan)):
                if plan.layers[g.layer].queued:
                    with m.Case(gi):
                        m.d.comb += rw_own.eq(1)
        lens = Signal.like(q.lens, name="tp_lens")
        m.d.comb += q.lens.eq(lens)
        with m.If(move):
            m.d.sync += [tp_own.eq(rw_own),
                         *(lens[p].eq(Array(field(f"pe{p}_len{j}") for j in range(plan.queued_segments))[seg])
                           for p in range(plan.n_pe))]
        return tp_own

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        geos = geometries(plan)
        gbits = bits(len(geos))
        n_layers = plan.n_layers
        max_taps = max(g.taps for g in geos)
        nbits, wbits = bits(plan.neuron_depth), bits(plan.weight_depth)
        sbits, lbits = plan.rows_fields
        n_seg = plan.rows_segments
        m.submodules.rows = rows = Memory(
            shape=unsigned(plan.rows_bits), depth=plan.rows_depth,
            init=rows_words(plan))
        rows_rd = rows.read_port()

        # EV: the event being looked up.
        ev_valid = Signal()
        ev = Signal(self.ev_layout)
        ev_geo = Signal(gbits)
        ev_ready, rw_ready, tp_ready = Signal(), Signal(), Signal()
        src_valid, src, src_geo = self._source(m, ev_ready)

        m.d.comb += ev_ready.eq(~ev_valid | rw_ready)
        # An event is counted in the cycle after it enters EV, off the handshake's path.
        m.d.sync += self.counted.eq(ev_ready & src_valid)
        if plan.paired:
            m.d.sync += self.counted_two.eq(ev_ready & src_valid & src.two)
        m.d.comb += self.counted_geo.eq(ev_geo)
        with m.If(ev_ready):
            m.d.sync += [ev_valid.eq(src_valid), ev.eq(src), ev_geo.eq(src_geo)]

        # RW: its row (rows_rd.data), landing taps, neuron base.
        rw_valid = Signal()
        rw_geo = Signal(gbits)
        rw_val = Signal(plan.value_bits)
        rw_mask = Signal(max_taps)
        rw_e = Signal(nbits)  # modulo 2**nbits: a landing tap's neuron is exact in these bits
        rw_seg = Signal(n_seg)  # compressed rows cut in segments: those with a landing tap, not yet issued
        rw_two, rw_d2 = (Signal(name="rw_two"), Signal.like(ev.d2, name="rw_d2")) if plan.paired else (None, None)
        lay = plan.rows_layout()
        # the rows word is read as the event enters EV and registered with it into RW: no path
        # from the block RAM's slow clock-to-output goes beyond that register
        rw_row = Signal(plan.rows_bits, reset_less=True)   # (no reset: it can be the block RAM port's output register)
        field = lambda name: rw_row[lay[name][0]:lay[name][0] + lay[name][1]]
        rw_start, rw_len = field("start"), field("len0")
        m.d.comb += [rows_rd.addr.eq(src.row), rows_rd.en.eq(ev_ready)]
        with m.If(rw_ready):
            m.d.sync += [rw_valid.eq(ev_valid), rw_geo.eq(ev_geo), rw_val.eq(ev.val)]
            if plan.paired:
                m.d.sync += [rw_two.eq(ev.two), rw_d2.eq(ev.d2)]
            with m.If(ev_valid):
                m.d.sync += rw_row.eq(rows_rd.data)
            self._landing(m, ev, ev_geo, rw_mask, rw_e, rw_seg)

        # TP: one burst of words.
        tp_valid = Signal()
        tp_w0 = Signal(wbits)
        tp_n0 = Signal(nbits)
        tp_last = Signal(lbits)      # words - 1
        # tp_last == 0 and == 1 in registers of their own (the issue stage's last-word flags)
        tp_one, tp_two = Signal(init=1), Signal()
        tp_len = lambda v: [tp_last.eq(v), tp_one.eq(v == 0), tp_two.eq(v == 1)]
        tp_val = Signal(plan.value_bits)
        tp_sparse = Signal()
        tp_mask = Signal(max_taps)
        tp_geo = Signal(gbits)
        tp_chunked = Signal()        # dense storage: word k is chunk k (padding lanes in the last)
        tp_pair, tp_w2 = (Signal(name="tp_pair"), Signal(wbits, name="tp_w2")) if plan.paired else (None, None)
        rest, rw_sparse, rw_chunks, toff, dtap = self._tap_fields(m, rw_mask, rw_geo, lbits, wbits, nbits)
        groups = plan.max_groups
        pk = self._pack_buffer(m, rw_geo, wbits, nbits, gbits) if groups else None
        rw_done, tp_load, s_w0, s_last, seg_rest, seg = self._next_burst(m, field, n_seg, rw_seg, rw_valid,
                                                                         rw_sparse, rw_mask, rest, rw_start, rw_len)
        q, tp_own = self.queues, self._queue_tp(m, rw_geo, field, seg, tp_ready & rw_valid) if self.queues else None
        m.d.comb += rw_ready.eq(~rw_valid | (tp_ready & rw_done))
        with m.If(tp_ready):
            m.d.sync += tp_valid.eq(tp_load)
        # (the rows table's read data is defined only once an event has been looked up: a
        # simulator with X values, e.g. Icarus, must not see it on the weight address)
        with m.If(tp_ready & rw_valid):
            m.d.sync += [tp_val.eq(rw_val), tp_sparse.eq(rw_sparse), tp_mask.eq(rw_mask), tp_geo.eq(rw_geo),
                         tp_chunked.eq(~rw_sparse)]
            if plan.paired:
                # (a paired event's layer is dense, one chunk of one tap: its word is the row's start,
                # the second event's d2 words on; two is 0 in every other event)
                m.d.sync += [tp_pair.eq(rw_two), tp_w2.eq(rw_start + rw_d2)]
            with m.If(rw_sparse):
                m.d.sync += [tp_w0.eq(s_w0), tp_n0.eq(rw_e), *tp_len(s_last)]
                if n_seg > 1:
                    with m.If(~rw_done):
                        m.d.sync += rw_seg.eq(seg_rest)
            with m.Else():
                m.d.sync += [tp_w0.eq(rw_start + toff), tp_n0.eq(rw_e - dtap), *tp_len(rw_chunks)]
                with m.If(~rw_done):
                    m.d.sync += rw_mask.eq(rest)
                if groups:
                    self._pack_tp(m, pk, rw_chunks, rw_start, rw_e, rw_geo, tp_len)
            if groups:   # (a packed layer is dense: rw_pkl is 0 for a compressed one)
                m.d.sync += [pk.tp_pk.eq(pk.rw_pkl & pk.rw_full), pk.tp_pkl.eq(pk.rw_pkl)]

        # Issue: the burst's words, one per cycle, back to back; `e*` hold the burst after its first word.
        # the held word's burst: words left after it, whether it is the last and the one before (so the
        # last-word flag, which ends the burst and picks the PEs' lanes, is a choice of registers)
        busy, erem, e_last, e_two = Signal(), Signal(lbits), Signal(), Signal()
        ew, en_ = Signal(wbits), Signal(nbits)
        eval_, emask, egeo = Signal(plan.value_bits), Signal(max_taps), Signal(gbits)
        esparse, echunked = Signal(), Signal()
        take = ~busy & tp_valid & self.enable
        push = None
        if q is not None:   # a queued burst is pushed into the PEs' queues instead (when none is full)
            take, push = take & ~tp_own, tp_valid & tp_own & self.enable & q.ready
            m.d.comb += [q.push.eq(push), q.pending.eq(tp_valid & tp_own), q.w0.eq(tp_w0), q.n0.eq(tp_n0),
                         q.val.eq(tp_val), q.mask.eq(tp_mask), q.geo.eq(tp_geo)]
        iss = self.issue
        rem = Mux(busy, erem, tp_last)   # words after the issued one
        at_last = Mux(busy, e_last, tp_one)
        rem_one = Mux(busy, e_two, tp_two)   # rem == 1
        m.d.comb += [
            tp_ready.eq((~tp_valid | take) if push is None else (~tp_valid | take | push)),
            iss.valid.eq(busy | take),
            iss.last.eq(at_last),
            iss.w.eq(Mux(busy, ew, tp_w0)),
            iss.n.eq(Mux(busy, en_, tp_n0)),
            iss.val.eq(Mux(busy, eval_, tp_val)),
            iss.sparse.eq(Mux(busy, esparse, tp_sparse)),
            iss.mask.eq(Mux(busy, emask, tp_mask)),
            iss.geo.eq(Mux(busy, egeo, tp_geo)),
            iss.chunked.eq(Mux(busy, echunked, tp_chunked)),
        ]
        if plan.paired:   # (a paired burst is one word: it is never in the hold registers)
            m.d.comb += [iss.pair.eq(~busy & tp_pair), iss.w2.eq(tp_w2)]
        hold = iss.valid & ~at_last
        with m.If(hold):
            m.d.sync += [busy.eq(1), erem.eq(rem - 1), e_last.eq(rem_one), e_two.eq(rem == 2), ew.eq(iss.w + 1),
                         en_.eq(iss.n + iss.chunked), eval_.eq(iss.val), esparse.eq(iss.sparse),
                         emask.eq(iss.mask), egeo.eq(iss.geo), echunked.eq(iss.chunked)]
        with m.Else():
            m.d.sync += busy.eq(0)
        if groups:
            flush_word = self._pack_issue(m, pk, busy, rem_one, tp_w0, hold)
            # (nothing else is left to issue: the registers' other writes of this cycle are overridden)
            with m.If(self.drained & self.enable & pk.nz & ~ev_valid & ~rw_valid & ~tp_valid & (~busy | e_last)):
                m.d.sync += [busy.eq(1), e_last.eq(1), e_two.eq(0), erem.eq(0), en_.eq(pk.n), egeo.eq(pk.geo), esparse.eq(0),
                             echunked.eq(0), emask.eq(1), *flush_word]
        quiet = ~ev_valid & ~rw_valid & Mux(busy, at_last & ~tp_valid, ~tp_valid | (take & at_last))
        # (and nothing is left in the PEs' queues: a register, from the cycle after the last word)
        quiet = quiet & q.idle if q is not None else quiet
        # (packed events waiting for their word: not quiet until the flush has issued it)
        m.d.comb += self.quiet.eq(quiet & ~pk.nz if groups else quiet)
        return m
