"""Memory plan: how a :class:`QuantModel` is laid out over an array of ``n_pe`` processing elements.

**Neurons.** PE ``p`` owns output channel ``o = c * n_pe + p`` of every layer (``c`` is the
*chunk*; a dense layer is a 1x1 map whose channels are its neurons): the rule is
:func:`spikeloom.model.geometry.owner` and its inverse ``channel``, which balanced pruning uses too. The neuron ``(o, y, x)`` of a
layer with a ``Ho x Wo`` map is at address ``neuron_base + (y * Wo + x) * chunks + c`` of the
``acc``, ``membrane``, ``bias`` and ``threshold`` memories of PE ``p`` (``bias``/``threshold`` repeat
the channel's value at every position). Lanes with ``o >= C_out`` are padding. The output layer
fires no spikes: its ``threshold`` words hold the exit threshold instead (:attr:`Plan.exit_word`),
which the exit unit reads from PE 0 with the output values, so that no model value is a constant
of the logic (the FPGA netlist of two models of one architecture differs in memory contents only).

**Synaptic sources.** Every layer has a main source (the previous layer's pooled spike map, or the
input image for the analog layer) and, for a residual layer, a shortcut source (an earlier layer's
pooled spikes through the 1x1 shortcut). An *event* is one nonzero input ``(ch, y, x)`` of a source.
Its weights form one *row*:

* conv source: row = input channel ``ch``; its ``k * k`` taps ``t = ky * k + kx`` land on output
  ``(oy, ox) = ((y + p - ky) / s, (x + p - kx) / s)`` when that is an integer inside the map
  (:meth:`spikeloom.model.geometry.Kernel.landing`; a shortcut is the 1x1 kernel of its stride);
* dense source: a single tap that always lands on the layer's 1x1 map; row = ``ch`` after a dense
  layer and for the input image (read flat, whatever ``input_shape``: row = index in the input
  stream, see :func:`source_map`), ``(y * W + x) * C + ch`` after a (C, H, W) conv map
  (position-major, so that the spike queue can form it as a per-entry base plus the lane; the
  weights are PyTorch's row-major flatten ``W[:, ch * H * W + y * W + x]``).

**Weight storage**, chosen per layer (``storage``), one memory per PE for all layers:

* ``dense``: row ``r`` holds ``k * k * chunks`` words from ``row_start[r]``; word
  ``t * chunks + c`` of PE ``p`` is ``W[c * n_pe + p, ch, ky, kx]`` (0 for padding lanes). An event
  costs ``chunks`` cycles per landing tap; zero weights are read.
* ``sparse`` (zero-skipping): PE ``p`` stores only its nonzero weights of the row, as entries
  ``(w, t, c)`` in (t, c) order. The row is cut into *segments* (``segments``, per layer, one of
  :data:`SEGMENTS`): the whole row, its kernel rows (taps ``ky * k .. ky * k + k - 1``) or its
  single taps, each a contiguous range of taps. Segment ``j`` of every PE is padded with ``w = 0``
  entries to the longest PE list of that segment; it starts at word ``row_start[r] + off`` and
  holds ``len`` words (``row_segs[r][j] = (off, len)``; ``row_len[r]`` is the row's total). An
  event issues one burst per segment with a landing tap and at least one entry; an entry whose
  tap does not land (or a padding entry) does nothing. So a pruned weight costs no cycle, no read
  and no storage (beyond the imbalance between PEs inside a segment, which balanced pruning of the
  same groups removes, ``model/pruning.py``), and with tap segments a tap that falls off the map
  costs nothing either.

**Packed tail.** A dense layer (not the first; its events spikes, value 1) with ``chunks >= 2``
whose last chunk has ``r <= n_pe / 2`` real lanes packs that chunk: its lanes form ``groups = n_pe
// r`` groups of ``r``, and lane ``p < groups * r`` stores, as word ``chunks - 1`` of every row,
the weight of channel ``(chunks - 1) * n_pe + p % r`` (dense storage, the copies in the lanes that
would be padding). An event issues its first ``chunks - 1`` words only; its last chunk's address
waits in the event pipeline until ``groups`` events have one, and one *packed word* then serves
them all: lane group ``g`` reads event ``g``'s row, and lane ``j < r`` adds the products of its
channel over every group (a sum across lanes) to its acc word. The events left over when the
layer's accumulate phase has drained share one more packed word (``EventPipeline``). So
an event costs ``chunks - 1 + 1 / groups`` words instead of ``chunks`` (the 10-class layer at
``n_pe = 8``: 1.25, its bound), and no counter changes: every lane of a valid group reads one
weight.

**Paired events.** A dense layer (not the first; one source, its events spikes, value 1) of one
chunk takes its events two to a word: the spike queue gives two lanes of an entry a cycle (its
lowest two; an entry's odd lane goes alone), the event pipeline carries the second event's row
as an offset from the first's (the rows of one entry are consecutive, and a row of one chunk and
one tap is one word, so the offset is also that of their words), and each PE reads both words,
one through its weight memory's second port (free in a dual-port block RAM), and adds both
weights to its acc word. Two events of an entry then cost one word, an entry's odd last event
one of its own (the 10-class layer at ``n_pe = 16``: its ten lanes in sixteen cost 0.625 a word,
its bound's share; paired, about 0.5 an event: a paired layer can run below its bound). Counters
count both events' reads and synaptic events. No weight is stored twice. The layer's dense form
costs :meth:`Plan.paired_cycles` in ``fast``'s figures. Entries of one lane (``n_pe = 1``, or a
source of one channel) give nothing to pair: no layer pairs then.

**PE queues.** In lockstep every PE reads word ``k`` of a compressed burst in the same cycle, so
an event costs the longest PE list of each landing segment: unbalanced weights (random, or pruned
without balance) leave the other PEs idle for the difference. With ``queue_depth > 0`` (the
default, :data:`QUEUE_DEPTH`; ``n_pe >= 2``) every compressed layer whose figure (below: the
busiest PE's own entries, or the pushes) is fewer cycles than in lockstep is *queued* (balanced
rows, e.g. ``make prune``'s, or segments of at most one word, gain nothing: they stay in lockstep,
without the queues' length fields and logic): each burst goes,
with each PE's own length of its segment, into one event queue per PE (``queue_depth`` entries;
a PE whose own length is 0 gets no entry), and each PE walks its own entries at its own pace, one
word a cycle from the segment's start. A burst enters the queues when no queue is full, one
burst a cycle. So an event costs each PE only its own entries of the landing segments, and one
PE's long row is made up by its short rows of later events; the phase ends once every queue and
walker is empty. The ``rows`` word holds each PE's length of each segment beside the shared
lengths (``pe<p>_len<j>``, :meth:`Plan.rows_layout`); the weight words are unchanged (padding
entries are stored, never read). No counter changes: padding entries never counted.

The burst rule of the two storages (:func:`bursts`) is what the event pipeline issues
(``EventPipeline.bursts`` applies it to an event) and what the cycle model replays.

A layer's *forms* are ``dense`` and ``sparse`` with each segmentation (one, ``row``, when no
source has more than one tap). ``auto`` picks, per layer, the form with fewer weight-word bits (the
shared ``rows`` table is not counted: its word has room for the most-cut layer's segments, see
"Weight word"), then fewer event cycles; ``fast`` the one with fewer event cycles (:func:`event_cycles` of an event at every
input ``(ch, y, x)`` of each of the layer's sources, summed: the layer's cost if every input were
active once), then fewer bits; ``sparse`` the compressed form with fewer bits, then cycles; a form
by name (``sparse:tap``) that form. On a tie the earlier form in (dense, row, kernel-row, tap)
order. The figures of every form are in ``storage_report`` (``forms``) whatever the choice;
``sparse_bits``/``sparse_cycles`` there are the compressed form's that the layer's rule would cut
(``fast``: by cycles; otherwise by bits).

**Weight word** (:meth:`Plan.word_fields`, LSB first, ``word_bits`` wide, one width for every
layer): ``w`` (``weight_bits``, two's complement) at bit 0; in the words of compressed layers
``t`` (``tap_bits``) above it and ``c`` (``chunk_bits``) above that, sized for the compressed
layers only (0 bits when no layer is compressed); in the words of dense layers, and in padding
entries, every bit above ``w`` is 0. ``row_start`` and ``row_segs`` form one shared table (the
``rows`` memory, :meth:`Plan.rows_word`): per row, LSB first, its first word (``start_bits``),
the length of segment 0 (``len_bits``), then for each further segment ``j`` its offset and its
length (``len_bits`` each), up to ``rows_segments`` segments (unused ones 0). A dense row is one
segment, its ``k * k * chunks`` words.

**Event values.** An event multiplies its row's weights by its value: the input value for the
analog layer, 1 for a spike, and the window's spike count (1..``pool^2``) for the events of a
sum-pooled layer (``pool_op = "sum"``). ``count_bits`` is the width of the largest count (0 when
no layer passes counts: spike events need no value field), ``value_bits`` that of every value the
PEs multiply by.

**Neuron models.** Every spiking layer has its own neuron model (``Layer.neuron``: leak, firing
rule, reset; ``model/SEMANTICS.md``, "Neuron models"). The plan lists the distinct ones once
(``neurons``, equal dynamics merged) and gives each layer the index of its own (``neuron_of``);
the PE selects its constants by that index. The resets that keep a per-neuron flag
(``LayerNeuron.has_flag``) store it as one more bit of the membrane word (``flag_bits``, see
:meth:`Plan.word_widths`).
"""

from dataclasses import dataclass, field

import numpy as np

from spikeloom.model import geometry
from spikeloom.model.errors import ModelFileError
from spikeloom.model.geometry import DENSE_LANDING, SEGMENTS, Kernel, channel, owner, pe_channels, segment_taps
from spikeloom.model.ir import QuantModel, bits_for, validate

from .common import bits

#: Processing elements a plan can have (the CLI checks ``--pes`` against it).
PES_RANGE = (1, 64)
MEMORIES = ("weight", "acc", "membrane", "bias", "threshold")
STORAGES = ("dense", "sparse")
#: A compressed storage with its segmentation named (``--storage LAYER=sparse:tap``).
SPARSE_FORMS = tuple(f"sparse:{sg}" for sg in SEGMENTS)
#: Rules that pick a storage per layer: fewer bits (``auto``, the default) or fewer event cycles (``fast``).
STORAGE_RULES = ("auto", "fast")
#: Every value ``storage`` (and ``--storage``) takes, for the whole network or a layer.
STORAGE_CHOICES = STORAGE_RULES + STORAGES + SPARSE_FORMS
#: How the weight memories get their contents: initialised (``rom``, block RAM initial values) or
#: written through the ``i_weights`` stream after reset (``load``: single-port RAM such as SPRAM).
WEIGHT_STORES = ("rom", "load")
#: Entries of each PE's event queue (module docstring, "PE queues"; ``Plan(queue_depth=)``, 0: none).
QUEUE_DEPTH = 8
#: The queue depths a plan can have besides 0 (compressed layers in lockstep).
QUEUE_DEPTH_RANGE = (2, 64)


def is_queue_depth(value):
    """A PE queue depth (``Plan(queue_depth=)``): an int, 0 or in :data:`QUEUE_DEPTH_RANGE`."""
    return type(value) is int and (value == 0 or QUEUE_DEPTH_RANGE[0] <= value <= QUEUE_DEPTH_RANGE[1])


def bursts(storage, taps, chunks, seg_lens):
    """The work of one event: (cycles it holds the event pipeline's ``RW`` register, burst lengths
    in words). ``taps``: how many of its taps land; ``chunks``: its layer's; ``seg_lens`` (compressed
    storage): the lengths of its row's segments that have a landing tap, in order. Dense storage:
    one burst of ``chunks`` words per landing tap;
    compressed storage: one burst per landing segment with entries. ``RW`` holds the event one
    cycle per burst, at least one."""
    if storage == "sparse":
        words = [int(v) for v in seg_lens if v]
        return max(len(words), 1), words
    return max(taps, 1), [chunks] * taps


def event_cycles(rw, words):
    """Cycles an event occupies the event pipeline when events follow back to back (``rw``,
    ``words``: :func:`bursts`): the issue stage takes one word per cycle, ``RW`` holds the event
    ``rw`` cycles (``tests/test_perf.py`` checks the cycle model's pipeline against it)."""
    return max(rw, sum(words))


def source_map(layer, index, prev_shape):
    """The (C, H, W) map whose nonzero values are the events of layer ``index``'s main source.

    ``prev_shape`` is what the previous stage gives: the model's ``input_shape`` for the first
    layer, else the previous layer's ``out_shape``. The image is streamed in row-major (C, H, W)
    order (SEMANTICS.md, "Input order"), so a dense first layer reads it flat, as (F, 1, 1): its
    row is the stream index, which is PyTorch's flatten and the column of ``W``. A dense layer after
    a conv layer reads that layer's (C, H, W) spike map with position-major rows (see the module
    docstring); after a dense layer, (F, 1, 1).
    """
    shape = tuple(int(v) for v in prev_shape)
    if geometry.kernel(layer) is not None:
        return shape
    if index == 0 or len(shape) != 3:
        return (int(np.prod(shape)), 1, 1)
    return shape


@dataclass(frozen=True)
class SourcePlan:
    """One synaptic source of a layer: the geometry its events arrive in and where its rows are."""

    layer: int          # index of the layer it drives
    shortcut: bool      # the residual 1x1 path
    conv: bool          # kernel taps (else a single-tap dense row per input)
    c_in: int
    h: int              # input map the events index, (c_in, h, w); dense after dense: (in, 1, 1)
    w: int
    k: int
    stride: int
    pad: int
    weight: np.ndarray = field(repr=False, compare=False)  # (C_out, c_in, k, k) or dense (C_out, c_in, h, w)
    row_base: int = 0   # first global row

    @property
    def shape(self):
        """(C, H, W) of the map whose events this source takes (the input stream's order for the
        analog layer)."""
        return (self.c_in, self.h, self.w)

    @property
    def rows(self):
        return self.c_in if self.conv else self.c_in * self.h * self.w

    @property
    def taps(self):
        return self.k * self.k

    @property
    def kernel(self):
        """The :class:`~spikeloom.model.geometry.Kernel` of a conv source (``None``: dense)."""
        return Kernel(self.k, self.stride, self.pad) if self.conv else None

    def row(self, ch, y, x):
        """Local row of the event ``(ch, y, x)``."""
        return ch if self.conv else (y * self.w + x) * self.c_in + ch

    def row_weights(self, r):
        """(C_out, taps) weights of local row ``r``."""
        if self.conv:
            return self.weight[:, r].reshape(len(self.weight), -1)
        pos, ch = divmod(r, self.c_in)
        return self.weight[:, ch, pos // self.w, pos % self.w][:, None]

    def pe_counts(self, n_pe):
        """(n_pe, rows, taps): the nonzero weights PE ``p`` holds of each row and tap (it owns the
        output channels ``o`` with ``owner(o) = p``)."""
        nz = self.weight != 0
        if self.conv:
            nz = nz.reshape(len(nz), self.c_in, self.taps)
        else:  # row (y * w + x) * c_in + ch
            nz = nz.reshape(len(nz), self.c_in, self.h * self.w).transpose(0, 2, 1).reshape(len(nz), -1, 1)
        pad = -len(nz) % n_pe
        nz = np.concatenate([nz, np.zeros((pad,) + nz.shape[1:], bool)]) if pad else nz
        return nz.reshape(-1, n_pe, *nz.shape[1:]).sum(axis=0, dtype=np.int64)

    def segment_landing(self, segments, y, x, ho, wo):
        """Whether each segment (:func:`segment_taps`) of an event at ``(y, x)`` has a landing tap."""
        land = {t for t, _, _ in self.landing(y, x, ho, wo)}
        return [any(t in land for t in seg) for seg in segment_taps(segments, self.k)]

    def tables(self, chunks, ho, wo):
        """Event geometry for the hardware: per input row ``y``: (landing-tap mask over ky, neuron
        offset ``floor((y + p) / s) * Wo * chunks``), the same per column ``x`` (offset
        ``floor((x + p) / s) * chunks``), and per tap ``t``: ``D[t] = (floor(ky / s) * Wo +
        floor(kx / s)) * chunks``. A landing tap ``t`` of an event at ``(y, x)`` writes neuron
        ``neuron_base + yoff[y] + xoff[x] - D[t] + c`` (dense source: masks 1, offsets 0)."""
        if not self.conv:
            return [(1, 0)], [(1, 0)], [0]
        kn = self.kernel
        k, s, p = kn.k, kn.stride, kn.pad

        def axis(n, out_n, step):
            return [(sum(1 << kk for kk, _ in kn.axis_landing(v, out_n)), (v + p) // s * step) for v in range(n)]

        return (axis(self.h, ho, wo * chunks), axis(self.w, wo, chunks),
                [((t // k) // s * wo + (t % k) // s) * chunks for t in range(k * k)])

    def landing(self, y, x, ho, wo):
        """Taps of an event at ``(y, x)`` that land, as (t, oy, ox) (dense: the one tap, (0, 0))."""
        if not self.conv:
            return list(DENSE_LANDING)
        return self.kernel.landing(y, x, (ho, wo))


@dataclass(frozen=True)
class LayerPlan:
    """Placement of one layer: ``positions`` x ``chunks`` neuron groups of ``n_pe``, the last chunk
    with ``last_lanes`` real lanes, and how its weights are stored."""

    name: str
    role: str
    kind: str
    channels: int
    ho: int
    wo: int
    pool: int
    chunks: int
    last_lanes: int
    neuron_base: int
    weight_base: int
    storage: str
    sources: tuple
    segments: str = "row"   # how its compressed rows are cut (SEGMENTS; "row" for dense storage)
    groups: int = 1         # packed tail (module docstring, "Packed tail"): lane groups of a tail word; 1: none
    paired: bool = False    # its events go two to a word (module docstring, "Paired events")
    queued: bool = False    # compressed, each PE walks its own entries from its queue (module docstring, "PE queues")

    @property
    def packed(self):
        """Its events' last chunks are packed, ``groups`` events to a word (module docstring)."""
        return self.groups > 1

    @property
    def positions(self):
        return self.ho * self.wo

    @property
    def out_features(self):
        return self.channels * self.positions

    @property
    def in_features(self):
        s = self.sources[0]
        return s.c_in * s.h * s.w

    @property
    def updates(self):
        """Cycles of one update phase (one chunk of one position per cycle)."""
        return self.positions * self.chunks


class Plan:
    """Everything the generator derives from ``(model, n_pe, storage)``: sizes, widths, contents.

    Parameters
    ----------
    model : QuantModel
    n_pe : int
        Number of processing elements, 1..64.
    storage : str or dict
        ``"auto"`` (default: per layer, whichever form needs fewer bits), ``"fast"``, ``"dense"``,
        ``"sparse"``, ``"sparse:<segments>"`` (:data:`SPARSE_FORMS`), or ``{layer name: any of
        these}`` (unnamed layers: auto). See the module docstring, "Weight storage".
    pack : bool
        Pack the last chunk of the layers that allow it (module docstring, "Packed tail"; the
        default). False: no layer is packed (the logic it takes is not generated: a design that
        must fit a small device, e.g. the iCE40 UltraPlus, trades the cycles for it).
    pair : bool
        Take the events of the layers that allow it two to a word (module docstring, "Paired
        events"; the default): every PE then reads its weight memory through a second port.
        False: no layer is paired (weights loaded into single-port RAM, ``weights="load"``).
    queue_depth : int
        Entries of each PE's event queue (module docstring, "PE queues"; default
        :data:`QUEUE_DEPTH`): with ``n_pe >= 2`` the PEs of every compressed layer that is faster so
        walk their own entries. 0: compressed layers work in lockstep (no queue is generated).
    """

    def __init__(self, model, n_pe, storage="auto", pack=True, pair=True, queue_depth=QUEUE_DEPTH):
        if not isinstance(model, QuantModel):
            raise TypeError(f"model must be a QuantModel, got {type(model).__name__} ({model!r:.80})")
        if isinstance(n_pe, bool) or not isinstance(n_pe, int):
            raise TypeError(f"n_pe must be an integer, got {n_pe!r}")
        if not PES_RANGE[0] <= n_pe <= PES_RANGE[1]:
            raise ValueError(f"n_pe = {n_pe!r} is outside the allowed range [{PES_RANGE[0]}, {PES_RANGE[1]}]")
        if not isinstance(pack, bool):
            raise TypeError(f"pack must be a bool, got {pack!r}")
        if not isinstance(pair, bool):
            raise TypeError(f"pair must be a bool, got {pair!r}")
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int):
            raise TypeError(f"queue_depth must be an integer, got {queue_depth!r}")
        if not is_queue_depth(queue_depth):
            raise ValueError(f"queue_depth = {queue_depth!r} is outside the allowed range: 0 (no queues) or "
                             f"[{QUEUE_DEPTH_RANGE[0]}, {QUEUE_DEPTH_RANGE[1]}]")
        self.pack, self.pair = pack, pair
        # (one PE has no other to wait for: its queue would only add latency)
        self.queue_depth = queue_depth if n_pe >= 2 else 0
        try:
            validate(model)
        except ModelFileError as e:
            raise ValueError(f"invalid model: {e}") from e
        names = [ly.name for ly in model.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names!r}")
        choice = self._storage_choice(storage, names)
        self.model = model
        self.n_pe = n_pe
        self.weight_bits = max(ly.weight_bits for ly in model.layers)
        self._check_geometry(model)

        # sources, rows, storage per layer
        by_name = {ly.name: i for i, ly in enumerate(model.layers)}
        srcs_per_layer, row = [], 0
        prev_shape = tuple(model.input_shape)
        for i, ly in enumerate(model.layers):
            srcs = []
            c, h, w = source_map(ly, i, prev_shape)
            kn = geometry.kernel(ly)
            if kn is not None:
                srcs.append(SourcePlan(i, False, True, c, h, w, kn.k, kn.stride, kn.pad,
                                       ly.weight.astype(np.int64), row))
            else:
                wt = ly.weight.astype(np.int64).reshape(len(ly.weight), c, h, w)
                srcs.append(SourcePlan(i, False, False, c, h, w, 1, 1, 0, wt, row))
            row += srcs[-1].rows
            if ly.shortcut is not None:
                sc_shape = model.layers[by_name[ly.shortcut]].out_shape
                sk = geometry.shortcut_kernel(ly)
                srcs.append(SourcePlan(i, True, True, sc_shape[0], sc_shape[1], sc_shape[2], sk.k,
                                       sk.stride, sk.pad, ly.shortcut_weight.astype(np.int64), row))
                row += srcs[-1].rows
            srcs_per_layer.append(tuple(srcs))
            prev_shape = tuple(ly.out_shape)
        self.n_rows = row

        # storage choice and per-PE row contents
        geo = []
        for ly in model.layers:
            geo.append((ly.channels, *geometry.map_hw(ly), geometry.chunks(ly.channels, n_pe)))
        self.tap_bits = 0
        self.chunk_bits = 0
        decided = []
        self._groups = [self.pack_groups(model, i, n_pe) if pack else 1 for i in range(len(model.layers))]
        pairable = [pair and self.pairable(model, i, n_pe) for i in range(len(model.layers))]
        for i, (ly, srcs) in enumerate(zip(model.layers, srcs_per_layer)):
            _, ho, wo, chunks = geo[i]
            forms = self._forms(srcs, chunks, ho, wo, self._groups[i], pairable[i])
            want = choice.get(ly.name, "auto")
            decided.append((self._pick(forms, want), forms))
            chosen = forms[decided[-1][0]]
            if "index_bits" in chosen:  # compressed: the words' tap and chunk fields
                self.tap_bits = max(self.tap_bits, chosen["index_bits"][0])
                self.chunk_bits = max(self.chunk_bits, chosen["index_bits"][1])
        self.word_bits = self.weight_bits + self.tap_bits + self.chunk_bits

        self.layers, self.row_start, self.row_len, self.row_segs = [], [], [], []
        self.row_pe_lens = []   # per row: each PE's entries per segment (queued layers; else None)
        self.storage_report = []
        nb = wb = 0
        for i, (ly, srcs) in enumerate(zip(model.layers, srcs_per_layer)):
            ch_out, ho, wo, chunks = geo[i]
            (st, segs), forms = decided[i]
            layer_wb = wb
            queued = st == "sparse" and forms[(st, segs)]["queued"]
            for si, (s, lens) in enumerate(zip(srcs, forms[(st, segs)]["lens"])):
                for r in range(s.rows):
                    self.row_pe_lens.append(tuple(tuple(int(v) for v in pe) for pe in forms[(st, segs)]["pe_lens"][si][:, r])
                                            if queued else None)
                    if st == "dense":
                        row_segs = ((0, s.taps * chunks),)
                    else:
                        offs = np.concatenate([[0], np.cumsum(lens[r])[:-1]])
                        row_segs = tuple((int(o), int(v)) for o, v in zip(offs, lens[r]))
                    n_words = sum(v for _, v in row_segs)
                    self.row_start.append(wb)
                    self.row_len.append(n_words)
                    self.row_segs.append(row_segs)
                    wb += n_words
            self.layers.append(LayerPlan(ly.name, ly.role, ly.kind, ch_out, ho, wo, geometry.pool(ly), chunks,
                                         ch_out - channel(0, chunks - 1, n_pe), nb, layer_wb, st, srcs, segs,
                                         self._groups[i] if st == "dense" else 1, pairable[i] and st == "dense",
                                         queued))
            want = choice.get(ly.name, "auto")
            # the compressed figures reported: of the cut the layer's rule would take were it compressed
            best_sparse = self._pick(forms, want if want.startswith("sparse:") or want == "fast" else "sparse",
                                     sparse_only=True)
            self.storage_report.append({
                "layer": ly.name, "storage": st, "segments": segs if st == "sparse" else None,
                "rule": want, "words": wb - layer_wb,
                "dense_bits": forms[("dense", "row")]["bits"], "sparse_bits": forms[best_sparse]["bits"],
                "dense_cycles": forms[("dense", "row")]["cycles"], "sparse_cycles": forms[best_sparse]["cycles"],
                "forms": {("dense" if f[0] == "dense" else f"sparse:{f[1]}"): {"bits": v["bits"], "cycles": v["cycles"]}
                          for f, v in forms.items()}})
            nb += ho * wo * chunks
        self.neuron_depth = nb
        #: width of a PE's own segment length in the ``rows`` word (``pe<p>_len<j>``, queued layers;
        #: module docstring, "PE queues"): the longest such length's (a segment of one tap holds at
        #: most ``chunks`` entries of a PE)
        self.own_bits = bits(max((v for lens in self.row_pe_lens if lens for pe in lens for v in pe), default=0) + 1)
        #: segments of the queued layers' rows the ``rows`` word has each PE's length of (0: none queued)
        self.queued_segments = max((len(v) for v, pl in zip(self.row_segs, self.row_pe_lens) if pl), default=0)
        # (at least 2 words: a memory of one word has a zero-width address, which Verilog cannot declare)
        self.weight_depth = max(wb, 2)
        self.max_chunks = max(lp.chunks for lp in self.layers)
        self.max_spiking_chunks = max(lp.chunks for lp in self.layers[:-1])
        self.max_row_len = max(self.row_len) if self.row_len else 1
        self.membrane_bits = model.neuron.membrane_bits
        # The values events carry: the analog layer's inputs, and the window counts of sum-pooled
        # layers (0: none passes counts; a spike event's value is 1).
        self.count_bits = max((bits(ly.out_max + 1) for ly in model.layers if ly.out_max > 1), default=0)
        self.value_bits = max(model.input_bits, self.count_bits)
        self.acc_bits = max(self._acc_bits(ly) for ly in model.layers)
        self.neurons, self.neuron_of = self._neurons(model)
        self.flag_bits = int(any(nr.has_flag for nr in self.neurons))

    # ------------------------------------------------------------------ checks and choices

    @staticmethod
    def _storage_choice(storage, names):
        allowed = ", ".join(repr(v) for v in STORAGE_CHOICES)
        if isinstance(storage, str):
            if storage not in STORAGE_CHOICES:
                raise ValueError(f"storage = {storage!r}; allowed: {allowed} or a dict")
            return {} if storage == "auto" else {n: storage for n in names}
        if not isinstance(storage, dict):
            raise TypeError(f"storage must be a string or a dict, got {type(storage).__name__}")
        for k, v in storage.items():
            if k not in names:
                raise ValueError(f"storage names layer {k!r}, which the model does not have ({names})")
            if v not in STORAGE_CHOICES:
                raise ValueError(f"storage[{k!r}] = {v!r}; allowed: {allowed}")
        return dict(storage)

    @staticmethod
    def _check_geometry(model):
        """Refuses what the hardware does not map (model/SEMANTICS.md, "What the hardware maps"):
        residual connections that overlap (one shortcut queue holds one source map at a time; a
        connection may start at the layer where the previous one ends). Pooling of any map size
        is mapped (floor mode, :mod:`~spikeloom.hw.pool`)."""
        by_name = {ly.name: i for i, ly in enumerate(model.layers)}
        open_until = -1
        for i, ly in enumerate(model.layers):
            if ly.shortcut is not None:
                s = by_name[ly.shortcut]
                if s < open_until:
                    raise ValueError(f"layer {ly.name!r}: its shortcut from {ly.shortcut!r} overlaps the residual "
                                     f"connection into {model.layers[open_until].name!r}; the hardware holds one "
                                     f"shortcut map at a time (model/SEMANTICS.md, \"What the hardware maps\")")
                open_until = i

    @staticmethod
    def _neurons(model):
        """The distinct neuron models of the spiking layers in layer order (``LayerNeuron.same_as``
        merges equal dynamics), and per layer the index of its own (0 for the output integrator)."""
        kinds, of = [], []
        for ly in model.layers:
            j = 0
            if ly.role != "output":
                j = next((i for i, nr in enumerate(kinds) if nr.same_as(ly.neuron)), len(kinds))
                if j == len(kinds):
                    kinds.append(ly.neuron)
            of.append(j)
        return tuple(kinds), tuple(of)

    @staticmethod
    def pack_groups(model, i, n_pe):
        """Lane groups of layer ``i``'s packed tail word were it stored dense (module docstring,
        "Packed tail"): ``n_pe // r`` for a dense layer after the first whose events are spikes
        (value 1), with two chunks or more and ``r <= n_pe / 2`` real lanes in its last; else 1."""
        ly = model.layers[i]
        if i == 0 or geometry.kernel(ly) is not None or model.layers[i - 1].out_max != 1:
            return 1
        chunks = geometry.chunks(ly.channels, n_pe)
        r = ly.channels - channel(0, chunks - 1, n_pe)
        return n_pe // r if chunks >= 2 and 2 * r <= n_pe else 1

    @staticmethod
    def pairable(model, i, n_pe):
        """Layer ``i``'s events could go two to a word were it stored dense (module docstring,
        "Paired events"): a dense layer after the first, of one chunk, with one source whose
        events are spikes (value 1) and whose entries can hold two lanes (N >= 2, two channels or
        more)."""
        ly = model.layers[i]
        return (i > 0 and geometry.kernel(ly) is None and ly.shortcut is None and n_pe >= 2
                and model.layers[i - 1].out_max == 1 and model.layers[i - 1].channels >= 2
                and geometry.chunks(ly.channels, n_pe) == 1)

    @staticmethod
    def paired_cycles(s, n_pe):
        """Words of a paired layer's source ``s`` were every input active once: per position, its
        channels' spike-queue entries (``n_pe`` lanes each, the last the rest), two lanes a word."""
        return s.h * s.w * sum(-(-min(n_pe, s.c_in - c) // 2) for c in range(0, s.c_in, n_pe))

    def _forms(self, srcs, chunks, ho, wo, groups=1, paired=False):
        """``{(storage, segments): {"bits", "cycles", "lens"}}`` of a layer with sources ``srcs``:
        its weight bits and event cycles (:meth:`_source_cycles`) in every form; ``lens``: per
        source, the (rows, segments) lengths of its compressed rows (``None`` for dense); the
        compressed forms' ``index_bits``: the (tap, chunk) field widths their words need."""
        n = self.n_pe
        wb = self.weight_bits
        # a packed tail (groups > 1; one dense source of one tap): chunks - 1 words per event, and
        # one word per `groups` events; paired (one dense source of one tap, one chunk): a word per
        # two events
        ev = srcs[0].rows
        forms = {("dense", "row"): {
            "bits": sum(s.rows * s.taps * chunks for s in srcs) * wb * n,
            "cycles": (ev * (chunks - 1) + -(-ev // groups) if groups > 1 else self.paired_cycles(srcs[0], n)
                       if paired else sum(self._source_cycles(s, "dense", "row", chunks, ho, wo, None)[0] for s in srcs)),
            "lens": [None] * len(srcs)}}
        tb = max(bits(s.taps) if s.taps > 1 else 0 for s in srcs)
        cb = bits(chunks) if chunks > 1 else 0
        counts = [s.pe_counts(n) for s in srcs]
        cuts = SEGMENTS if any(s.taps > 1 for s in srcs) else SEGMENTS[:1]
        for segs in cuts:
            # per source: (PE, rows, segments) entries of each PE; the rows' segment lengths their maxima
            pe_lens = [np.stack([cnt[:, :, seg].sum(axis=2) for seg in segment_taps(segs, s.k)], axis=2)
                       for s, cnt in zip(srcs, counts)]
            lens = [v.max(axis=0) for v in pe_lens]
            figs = [self._source_cycles(s, "sparse", segs, chunks, ho, wo, v, pl if self.queue_depth else None)
                    for s, v, pl in zip(srcs, lens, pe_lens)]
            cycles = sum(f[0] for f in figs)
            # queued (module docstring, "PE queues") when its figure is fewer cycles than lockstep's
            own = sum(f[1] for f in figs) if self.queue_depth else cycles
            forms[("sparse", segs)] = {
                "bits": sum(int(v.sum()) for v in lens) * (wb + tb + cb) * n, "cycles": min(cycles, own),
                "lens": lens, "pe_lens": pe_lens, "queued": own < cycles, "index_bits": (tb, cb)}
        return forms

    @staticmethod
    def _pick(forms, want, sparse_only=False):
        """The form ``want`` asks for among ``forms`` (module docstring, "Weight storage";
        ``sparse_only``: among the compressed ones)."""
        order = [f for f in forms if not sparse_only or f[0] == "sparse"]  # dense, then SEGMENTS: the tie order
        by_bits = lambda f: (forms[f]["bits"], forms[f]["cycles"], order.index(f))
        if want == "auto":
            return min(order, key=by_bits)
        if want == "fast":
            return min(order, key=lambda f: (forms[f]["cycles"], forms[f]["bits"], order.index(f)))
        if want == "dense":
            return ("dense", "row")
        if want == "sparse":
            return min((f for f in order if f[0] == "sparse"), key=by_bits)
        segs = want.split(":", 1)[1]
        return ("sparse", segs) if ("sparse", segs) in forms else ("sparse", "row")

    @staticmethod
    def _source_cycles(s, storage, segs, chunks, ho, wo, lens, pe_lens=None):
        """:func:`event_cycles` of an event at every input ``(ch, y, x)`` of source ``s``, summed,
        were its layer stored as ``storage`` (``lens``: the source's (rows, segments) compressed
        row segment lengths): ``(cycles, queued)``. With ``pe_lens`` (PE, rows, segments), the PEs'
        own lengths, ``queued`` is the figure of the layer queued (module docstring, "PE queues"):
        the busiest PE's entries of the landing segments over all those events, or the queue
        pushes (a landing segment with entries a cycle, an event at least one) when more; else None."""
        total, own, pushes = 0, np.zeros(0 if pe_lens is None else len(pe_lens), np.int64), 0
        for y in range(s.h):
            for x in range(s.w):
                if storage == "dense":
                    taps = len(s.landing(y, x, ho, wo))
                    total += s.c_in * event_cycles(*bursts("dense", taps, chunks, ()))
                    continue
                hit = np.array(s.segment_landing(segs, y, x, ho, wo))
                rows = [s.row(ch, y, x) for ch in range(s.c_in)]
                seg_lens = lens[rows][:, hit]
                total += int(np.maximum(seg_lens.sum(axis=1), 1).sum())
                if pe_lens is not None:
                    own += pe_lens[:, rows][:, :, hit].sum(axis=(1, 2))
                    pushes += int(np.maximum((seg_lens != 0).sum(axis=1), 1).sum())
        return total, None if pe_lens is None else max(int(own.max()), pushes)

    def _acc_bits(self, ly):
        # The acc memory holds one timestep's W x (shortcut included) without the bias (added in
        # UPDATE); partial sums lie between the sums of the negative and of the positive terms.
        return max(bits_for(*self.model.acc_range(ly, bias=False)), self.model.acc_bits(ly))

    # ------------------------------------------------------------------ sizes

    @property
    def n_layers(self):
        return len(self.layers)

    @property
    def weight_memory_bits(self):
        """Bits of weight storage over all PEs (every stored word, index fields included) plus the
        shared row table."""
        return self.n_pe * self.weight_depth * self.word_bits + self.n_rows * self.rows_bits

    @property
    def rows_fields(self):
        """``(start_bits, len_bits)`` of a ``rows`` table word (:meth:`rows_word`): its row's first
        weight word, and each segment's length (and offset, from segment 1 on)."""
        return bits(self.weight_depth + 1), bits(self.max_row_len + 1)

    @property
    def rows_depth(self):
        """Words of the ``rows`` memory: a word per row, at least 2 (no zero-width address)."""
        return max(self.n_rows, 2)

    @property
    def rows_segments(self):
        """Segments a ``rows`` word has room for: the most of any row (1 without cut rows)."""
        return max((len(v) for v in self.row_segs), default=1)

    @property
    def rows_bits(self):
        sbits, lbits = self.rows_fields
        return sbits + (2 * self.rows_segments - 1) * lbits + self.n_pe * self.queued_segments * self.own_bits

    def rows_layout(self):
        """``{field: (lsb, width)}`` of a ``rows`` word, LSB first: ``start``, ``len0``, then
        ``off1``, ``len1``, ... up to :attr:`rows_segments`; with queued layers (module docstring,
        "PE queues") then each PE's own length of each segment (as many as the queued layers' rows
        have, :attr:`queued_segments`), ``pe0_len0``, ``pe0_len1``, ..., ``pe1_len0``, ..."""
        sbits, lbits = self.rows_fields
        out, lsb = {"start": (0, sbits), "len0": (sbits, lbits)}, sbits + lbits
        for j in range(1, self.rows_segments):
            out[f"off{j}"], out[f"len{j}"] = (lsb, lbits), (lsb + lbits, lbits)
            lsb += 2 * lbits
        for p in range(self.n_pe):
            for j in range(self.queued_segments):
                out[f"pe{p}_len{j}"] = (lsb, self.own_bits)
                lsb += self.own_bits
        return out

    def rows_word(self, r):
        """The ``rows`` table word of global row ``r`` (:meth:`rows_layout`; unused segments 0)."""
        if getattr(self, "_rows_lay", None) is None:   # (the layout once: a word per row reads it)
            self._rows_lay = self.rows_layout()
        lay = self._rows_lay
        v = self.row_start[r] << lay["start"][0]
        for j, (off, ln) in enumerate(self.row_segs[r]):
            v |= ln << lay[f"len{j}"][0]
            if j:
                v |= off << lay[f"off{j}"][0]
        for p, lens in enumerate(self.row_pe_lens[r] or ()):
            for j, ln in enumerate(lens):
                v |= ln << lay[f"pe{p}_len{j}"][0]
        return v

    def widths(self):
        """Value width of each per-PE memory (``acc``: the accumulator value, without its parity bit)."""
        return {"weight": self.word_bits, "acc": self.acc_bits, "membrane": self.membrane_bits,
                "bias": self.membrane_bits, "threshold": self.membrane_bits}

    def word_widths(self):
        """Stored word width of each per-PE memory: :meth:`widths`, plus the image parity bit that
        every ``acc`` word carries (a new image needs no clearing pass, see ``hw/pe.py``) and, when
        a layer's reset keeps a flag (``flag_bits``), the flag bit above each ``membrane`` value."""
        return {**self.widths(), "acc": self.acc_bits + 1, "membrane": self.membrane_bits + self.flag_bits}

    def depths(self):
        return {"weight": self.weight_depth, "acc": self.neuron_depth, "membrane": self.neuron_depth,
                "bias": self.neuron_depth, "threshold": self.neuron_depth}

    @property
    def exit_word(self):
        """The exit threshold as the output layer's ``threshold`` words hold it (read as unsigned
        ``membrane_bits`` bits by the exit unit, :class:`~spikeloom.hw.top2.Top2` with
        ``threshold=None``), or None when it does not fit them: a threshold of ``2**membrane_bits``
        or more is above every margin of two membrane values (never met), and the exit unit
        then holds it as a constant."""
        thr, mb = self.model.exit_threshold, self.membrane_bits
        if thr >= 1 << mb:
            return None
        return thr - (1 << mb) if thr >> (mb - 1) else thr

    @property
    def max_groups(self):
        """The most lane groups of any packed layer's tail word (0: no layer is packed; module
        docstring, "Packed tail")."""
        return max((lp.groups for lp in self.layers if lp.packed), default=0)

    @property
    def paired(self):
        """Some layer takes its events two to a word (module docstring, "Paired events"): the
        spike queue splits two lanes a cycle, the PEs read a second weight."""
        return any(lp.paired for lp in self.layers)

    @property
    def queued(self):
        """Some layer's PEs walk their own entries from event queues (module docstring, "PE queues")."""
        return any(lp.queued for lp in self.layers)

    @property
    def feeds_paired(self):
        """Per layer: the layer after it (its spikes' main consumer) is paired, so its spike-queue
        entries are (``pair``; module docstring, "Paired events")."""
        return [li + 1 < self.n_layers and self.layers[li + 1].paired for li in range(self.n_layers)]

    @property
    def sparse_layers(self):
        """``{name: segments}`` of the layers in compressed storage, in layer order: how each cuts
        its rows (``golden.run(..., sparse=...)``; a dict, so ``name in`` and ``list()`` give names)."""
        return {lp.name: lp.segments for lp in self.layers if lp.storage == "sparse"}

    # ------------------------------------------------------------------ contents

    def pe_entries(self, pe, lp, s, r):
        """Stored words of PE ``pe`` for local row ``r`` of source ``s`` as (w, t, c) tuples (a dense
        layer's words are in (t, c) order and store no index: t = c = 0)."""
        wr = s.row_weights(r)
        n, chunks = self.n_pe, lp.chunks
        if lp.storage == "dense":
            out = []
            for t in range(s.taps):
                for c in range(chunks):
                    o = channel(pe, c, n)
                    if lp.packed and c == chunks - 1 and pe < lp.groups * lp.last_lanes:
                        o = channel(pe % lp.last_lanes, c, n)  # the packed tail: lane group copies
                    out.append((int(wr[o, t]) if o < lp.channels else 0, 0, 0))
            return out
        out = []
        for seg, (_, ln) in zip(segment_taps(lp.segments, s.k), self.row_segs[s.row_base + r]):
            ents = [(int(wr[o, t]), t, owner(o, n)[1]) for t in seg for o in pe_channels(pe, lp.channels, n)
                    if wr[o, t] != 0]
            out += ents + [(0, 0, 0)] * (ln - len(ents))
        return out

    def word_fields(self, storage):
        """The fields of a weight word of a layer in ``storage``: ``{name: (lsb, width)}``, LSB
        first (module docstring, "Weight word"); the word's other bits are 0."""
        fields = {"w": (0, self.weight_bits)}
        if storage == "sparse":
            fields.update({"t": (self.weight_bits, self.tap_bits),
                           "c": (self.weight_bits + self.tap_bits, self.chunk_bits)})
        return {k: v for k, v in fields.items() if v[1]}

    def word(self, w, t, c, storage="sparse"):
        """The packed (unsigned) weight word of entry ``(w, t, c)`` of a layer in ``storage``
        (:meth:`word_fields`); a field that does not hold its value is an error, never truncated."""
        v, fields = 0, self.word_fields(storage)
        for name, val in (("w", w), ("t", t), ("c", c)):
            lsb, width = fields.get(name, (0, 0))
            if name == "w":
                if not -(1 << (width - 1)) <= val < 1 << (width - 1):
                    raise ValueError(f"weight {val} does not fit the {width}-bit field w")
                val &= (1 << width) - 1
            elif not 0 <= val < 1 << width:
                raise ValueError(f"{name} = {val} does not fit its {width}-bit field of a {storage} word")
            v |= val << lsb
        return v

    def init(self, pe, mem):
        """Initial contents of memory ``mem`` of PE ``pe`` (signed ints; ``weight``: packed words)."""
        n = self.n_pe
        if mem in ("acc", "membrane"):
            return [0] * self.neuron_depth
        out = []
        for lp, ly in zip(self.layers, self.model.layers):
            if mem == "weight":
                for s in lp.sources:
                    for r in range(s.rows):
                        out += [self._signed_word(self.word(*e, lp.storage)) for e in self.pe_entries(pe, lp, s, r)]
            elif mem == "threshold" and lp.role == "output":
                out += [self.exit_word or 0] * (lp.positions * lp.chunks)
            else:
                arr = ly.bias if mem == "bias" else ly.threshold
                for _ in range(lp.positions):
                    for c in range(lp.chunks):
                        j = channel(pe, c, n)
                        out.append(int(arr[j]) if arr is not None and j < lp.channels else 0)
        if mem == "weight":
            out += [0] * (self.weight_depth - len(out))
        return out

    def _signed_word(self, v):
        b = self.word_bits
        return v - (1 << b) if v >> (b - 1) & 1 else v


def geometries(plan):
    """The synaptic sources of ``plan`` in a fixed order (a source's index is its geometry id)."""
    return [s for lp in plan.layers for s in lp.sources]
