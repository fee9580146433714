"""The memory plan's weight storage (dense and compressed) against the golden model: walking every
event through the stored words the way the hardware does reproduces golden currents and counters."""

from dataclasses import replace
from pathlib import Path

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spikeloom.hw.pipeline import EventPipeline
from spikeloom.hw.plan import STORAGES as KINDS, Plan, event_cycles
from spikeloom.model import golden
from spikeloom.model.config import LayerNeuron
from spikeloom.model.ir import validate
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model
from spikeloom.sim.strategies import N_PES, STORAGES, conv_nets, dense_nets


def decode(plan, word):
    u = word & ((1 << plan.word_bits) - 1)
    wb = plan.weight_bits
    w = u & ((1 << wb) - 1)
    w = w - (1 << wb) if w >> (wb - 1) & 1 else w
    t = (u >> wb) & ((1 << plan.tap_bits) - 1)
    c = (u >> (wb + plan.tap_bits)) & ((1 << plan.chunk_bits) - 1)
    return w, t, c


def walk(plan, li, inputs):
    """Currents (without bias) and weight reads of layer ``li`` from its sources' input maps, by
    walking the stored words per event (``inputs``: one (B, C, H, W) array per source)."""
    lp = plan.layers[li]
    n = plan.n_pe
    words = [plan.init(p, "weight") for p in range(n)]
    b = len(inputs[0])
    cur = np.zeros((b, lp.channels, lp.ho, lp.wo), np.int64)
    reads = np.zeros(b, np.int64)
    for s, inp in zip(lp.sources, inputs):
        for bi in range(b):
            for ch, y, x in zip(*np.nonzero(inp[bi])):
                val = int(inp[bi, ch, y, x])
                row = s.row_base + s.row(ch, y, x)
                start, ln = plan.row_start[row], plan.row_len[row]
                land = {t: (oy, ox) for t, oy, ox in s.landing(y, x, lp.ho, lp.wo)}
                # the hardware's tables give the same landing taps and neuron addresses
                ys, xs, d = s.tables(lp.chunks, lp.ho, lp.wo)
                if s.conv:
                    k = s.k
                    hw_land = {t for t in range(s.taps) if ys[y][0] >> (t // k) & 1 and xs[x][0] >> (t % k) & 1}
                    assert hw_land == set(land)
                    for t, (oy, ox) in land.items():
                        assert ys[y][1] + xs[x][1] - d[t] == (oy * lp.wo + ox) * lp.chunks
                if lp.storage == "dense":
                    assert ln == s.taps * lp.chunks
                    for t, (oy, ox) in land.items():
                        for c in range(lp.chunks):
                            for p in range(n):
                                w, _, _ = decode(plan, words[p][start + t * lp.chunks + c])
                                o = c * n + p
                                r = lp.last_lanes
                                if lp.packed and c == lp.chunks - 1 and r <= p < lp.groups * r:
                                    # a packed tail's lane group copy: the weight of channel p mod r, which
                                    # the lane of group 0 adds for this event (another event's row in the word)
                                    assert w == decode(plan, words[p % r][start + t * lp.chunks + c])[0]
                                elif o < lp.channels:
                                    reads[bi] += 1
                                    cur[bi, o, oy, ox] += w * val
                                else:
                                    assert w == 0
                elif land:
                    hit = s.segment_landing(lp.segments, y, x, lp.ho, lp.wo)
                    seg_words = [j for (off, sl), h in zip(plan.row_segs[row], hit) if h for j in range(off, off + sl)]
                    assert sum(sl for _, sl in plan.row_segs[row]) == ln
                    for j in seg_words:
                        for p in range(n):
                            w, t, c = decode(plan, words[p][start + j])
                            if w == 0:
                                continue
                            reads[bi] += 1
                            if t in land:
                                oy, ox = land[t]
                                addr = lp.neuron_base + (oy * lp.wo + ox) * lp.chunks + c
                                assert lp.neuron_base <= addr < lp.neuron_base + lp.updates
                                cur[bi, c * n + p, oy, ox] += w * val
    return cur, reads


def check_plan(model, n_pe, storage, x):
    plan = Plan(model, n_pe, storage)
    res = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    first = model.layers[0]
    inp = [x.reshape((len(x),) + tuple(first.in_shape)) if first.kind == "conv" else x.reshape(len(x), -1, 1, 1)]
    cur, reads = walk(plan, 0, inp)
    want, counts = golden.synapses(first, inp[0] if first.kind == "conv" else x, sparse=plan.sparse_layers.get(first.name, False))
    assert (cur.reshape(want.shape) == want - first.bias.reshape((-1,) + (1,) * (want.ndim - 2))).all()
    assert (reads == counts["weight_reads"]).all()
    assert (reads == res.step_counters[first.name]["weight_reads"][0]).all()
    # later layers: feed the golden model's (pooled) spikes of timestep 1
    outs = {}
    for li, ly in enumerate(model.layers[:-1]):
        s = res.spikes[ly.name][0].reshape((len(x),) + tuple(ly.map_shape))
        outs[ly.name] = golden.pool_spikes(s, ly.pool, ly.pool_op) if ly.kind == "conv" else s
    for li in range(1, len(model.layers)):
        ly = model.layers[li]
        prev = outs[model.layers[li - 1].name]
        srcs = [prev.reshape(len(x), -1, 1, 1) if prev.ndim == 2 else prev]
        if ly.shortcut:
            srcs.append(outs[ly.shortcut])
        cur, reads = walk(plan, li, [v.astype(np.int64) for v in srcs])
        want, counts = golden.synapses(ly, prev, outs.get(ly.shortcut), plan.sparse_layers.get(ly.name, False))
        assert (cur.reshape(want.shape) == want - ly.bias.reshape((-1,) + (1,) * (want.ndim - 2))).all()
        assert (reads == counts["weight_reads"]).all()
        assert (reads == res.step_counters[ly.name]["weight_reads"][0]).all()
    return plan


conv_layers = st.tuples(st.integers(1, 5), st.sampled_from([1, 2, 3]), st.sampled_from([1, 2]),
                        st.integers(0, 1), st.sampled_from([1, 2]), st.booleans())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_conv_plan_walk_equals_golden(data):
    convs = data.draw(st.lists(conv_layers, min_size=1, max_size=3), label="convs")
    hw = data.draw(st.integers(4, 8), label="hw")
    convs = [(c, k, s, min(p, k - 1), 1, sc) for c, k, s, p, _, sc in convs]
    # pooling by 2 of any map with a whole window (floor mode where it does not divide)
    in_shape = shape = (data.draw(st.integers(1, 3), label="c_in"), hw, hw)
    fixed = []
    for c, k, s, p, _, sc in convs:
        ho = (shape[1] + 2 * p - k) // s + 1
        assume(ho >= 1)
        q = 2 if ho >= 2 and data.draw(st.booleans(), label="pool") else 1
        fixed.append((c, k, s, p, q, sc))
        shape = (c, ho // q, ho // q)
    model = random_conv_model(seed=data.draw(st.integers(0, 999), label="seed"), in_shape=in_shape, convs=fixed)
    n_pe = data.draw(st.sampled_from([1, 2, 3, 4]), label="n_pe")
    storage = data.draw(st.sampled_from(["dense", "sparse", "auto", "fast", "sparse:kernel-row", "sparse:tap"]),
                        label="storage")
    check_plan(model, n_pe, storage, random_inputs(model, 3, seed=1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.one_of(dense_nets(), conv_nets()), n_pe=st.sampled_from(N_PES), storage=st.sampled_from(STORAGES))
def test_strategy_nets_plan_walk_equals_golden(model, n_pe, storage):
    """Every axis of the shared strategies (flat and (C, H, W) inputs to a dense first layer, conv
    nets with dense hidden layers, all bit widths): the walk equals golden, and every initial value
    fits its memory (a dense layer's word once carried tap indices wider than a compressed layer's
    tap field, which Amaranth truncated)."""
    plan = check_plan(model, n_pe, storage, random_inputs(model, 3, seed=1))
    for mem, width in plan.widths().items():
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        for p in range(n_pe):
            vals = plan.init(p, mem)
            assert min(vals) >= lo and max(vals) <= hi, (mem, width, min(vals), max(vals))


@pytest.mark.parametrize("storage", ["dense", "sparse", "auto"])
@pytest.mark.parametrize("n_pe", [1, 3, 8])
def test_dense_plan_walk_equals_golden(storage, n_pe):
    model = random_model([12, 10, 9, 4], seed=3, density=0.3)
    check_plan(model, n_pe, storage, random_inputs(model, 4, seed=2))


def test_sparse_storage_shrinks_a_pruned_layer():
    model = random_model([64, 128, 128, 10], seed=1, density=0.2, weight_bits=8)
    dense, auto = Plan(model, 8, "dense"), Plan(model, 8, "auto")
    assert auto.sparse_layers and auto.weight_memory_bits < 0.6 * dense.weight_memory_bits
    rep = {r["layer"]: r for r in auto.storage_report}
    assert all(rep[n]["sparse_bits"] < rep[n]["dense_bits"] for n in auto.sparse_layers)


def test_storage_errors():
    model = random_model([6, 5, 3], seed=0)
    with pytest.raises(ValueError, match="allowed: 'auto'"):
        Plan(model, 2, "compressed")
    with pytest.raises(ValueError, match="does not have"):
        Plan(model, 2, {"nope": "sparse"})


def test_neurons_once_per_model_and_flag_bit():
    """The plan lists each distinct neuron model once (equal dynamics merged: ``a / 2^f`` in lowest
    terms), gives every layer its index, and widens the membrane word by the flag bit only when a
    layer's reset keeps a flag."""
    v1 = random_model([6, 5, 4, 3], seed=0, leak_shift=2)
    plan = Plan(v1, 2)
    assert plan.neurons == (LayerNeuron(1, 2, ">=", "subtract"),) and plan.neuron_of == (0, 0, 0)
    assert plan.flag_bits == 0 and plan.word_widths()["membrane"] == plan.membrane_bits
    shift, same = LayerNeuron(1, 2, ">", "zero"), LayerNeuron(2, 3, ">", "zero")  # 2 / 8 = 1 / 4
    for late in ("subtract_next", "subtract_recheck"):
        mixed = random_model([6, 5, 4, 4, 3], seed=0, neurons=[shift, LayerNeuron(26, 8, ">=", late), same])
        plan = Plan(mixed, 2)
        assert plan.neurons == (shift, LayerNeuron(26, 8, ">=", late)) and plan.neuron_of == (0, 1, 0, 0)
        assert plan.flag_bits == 1
        assert plan.word_widths()["membrane"] == plan.widths()["membrane"] + 1 == plan.membrane_bits + 1
    plan = Plan(random_model([6, 5, 3], seed=0, neurons=[shift]), 2)
    assert plan.flag_bits == 0 and plan.word_widths()["membrane"] == plan.membrane_bits


def _event_cycles_by_the_pipeline(model, n_pe, storage, layer):
    """Cycles of an event at every input (ch, y, x) of each source of ``layer``, summed, read off
    the event pipeline's bursts on a plan built with every layer in ``storage``."""
    plan = Plan(model, n_pe, storage)
    lp = plan.layers[layer]
    events = [(g, ch, y, x) for g in lp.sources for ch in range(g.c_in) for y in range(g.h) for x in range(g.w)]
    # a packed tail (hw/plan.py): one packed word per `groups` events beside their own bursts; paired
    # events: one word per two events of a spike-queue entry (a position and chunk of channels)
    if lp.paired:
        assert all(EventPipeline.bursts(plan, *e) == (1, [1]) for e in events)
        entries = Counter((y, x, ch // n_pe) for _, ch, y, x in events)
        return sum(-(-k // 2) for k in entries.values())
    if lp.queued:   # PE queues: the busiest PE's own words, or a push a burst (an event at least one cycle)
        own = [EventPipeline.event_work(plan, *e)[2] for e in events]
        return max(max(sum(b[p] for o in own for b in o) for p in range(n_pe)), sum(max(len(o), 1) for o in own))
    return (sum(event_cycles(*EventPipeline.bursts(plan, *e)) for e in events)
            + (-(-len(events) // lp.groups) if lp.packed else 0))


# the networks: a dense MLP at 50% weights, a conv net with pooling, a shortcut and a dense layer after
# the map, at 40% (compressed rows shorter than a dense tap burst) and 90% (longer)
@pytest.mark.parametrize("make", [lambda: random_model([20, 16, 12, 5], seed=3, density=0.5),
                                  lambda: random_conv_model(seed=2, density=0.4, hidden=(6,)),
                                  lambda: random_conv_model(seed=4, density=0.9)])
@pytest.mark.parametrize("n_pe", [1, 3, 8])
def test_fast_storage_picks_fewer_event_cycles_and_auto_fewer_bits(make, n_pe):
    """``fast``'s figures are the event pipeline's own bursts (the cycle model's), for every form
    (dense, and compressed with each cut of its rows); per layer ``fast`` takes the fewer cycles and
    ``auto`` the fewer bits (ties: the other figure, then dense, row, kernel-row, tap)."""
    model = make()
    fast, auto = Plan(model, n_pe, "fast"), Plan(model, n_pe, "auto")
    assert [r["forms"] for r in fast.storage_report] == [r["forms"] for r in auto.storage_report]
    for i, (f, a) in enumerate(zip(fast.storage_report, auto.storage_report)):
        forms = f["forms"]
        assert list(forms)[:2] == ["dense", "sparse:row"]
        for form, v in forms.items():
            assert v["cycles"] == _event_cycles_by_the_pipeline(model, n_pe, form, i), (f["layer"], form)
        order = list(forms)
        chosen = lambda r: "dense" if r["storage"] == "dense" else f"sparse:{r['segments']}"
        assert chosen(f) == min(order, key=lambda k: (forms[k]["cycles"], forms[k]["bits"], order.index(k))), f
        assert chosen(a) == min(order, key=lambda k: (forms[k]["bits"], forms[k]["cycles"], order.index(k))), a
        # the compressed figures: of the cut the rule takes among the compressed forms
        for r, key in ((f, lambda k: (forms[k]["cycles"], forms[k]["bits"])), (a, lambda k: (forms[k]["bits"],
                                                                                           forms[k]["cycles"]))):
            best = min(order[1:], key=lambda k: (*key(k), order.index(k)))
            assert (r["sparse_bits"], r["sparse_cycles"]) == (forms[best]["bits"], forms[best]["cycles"])
        assert (f["dense_bits"], f["dense_cycles"]) == (forms["dense"]["bits"], forms["dense"]["cycles"])
        assert (f["rule"], a["rule"]) == ("fast", "auto")


def test_fast_storage_per_layer_and_errors():
    model = random_conv_model(seed=2, density=0.4, hidden=(6,))
    names = [ly.name for ly in model.layers]
    plan = Plan(model, 3, {names[0]: "fast", names[1]: "dense"})
    rep = {r["layer"]: r for r in plan.storage_report}
    assert rep[names[0]]["rule"] == "fast" and rep[names[1]] == {**rep[names[1]], "rule": "dense", "storage": "dense"}
    assert [rep[n]["rule"] for n in names[2:]] == ["auto"] * (len(names) - 2)
    with pytest.raises(ValueError, match="allowed: 'auto', 'fast', 'dense', 'sparse', 'sparse:row'"):
        Plan(model, 3, {names[0]: "quick"})


def test_weight_words_never_truncate():
    """Every word is its fields, packed by ``word_fields``: a value a field cannot hold is refused."""
    plan = Plan(random_conv_model(seed=2, density=0.4), 3, "sparse")
    assert plan.word_fields("dense") == {"w": (0, plan.weight_bits)}
    assert plan.word(-1, 0, 0, "dense") == (1 << plan.weight_bits) - 1
    with pytest.raises(ValueError, match="does not fit"):
        plan.word(1 << plan.weight_bits, 0, 0, "dense")
    with pytest.raises(ValueError, match="t = 1 does not fit its 0-bit field of a dense word"):
        plan.word(1, 1, 0, "dense")
    with pytest.raises(ValueError, match="does not fit"):
        plan.word(1, 1 << plan.tap_bits, 0, "sparse")


def test_hardware_limits():
    """Maps that do not divide by their pool are mapped (floor mode); residual connections that
    overlap are refused, and the message points to where model/SEMANTICS.md states the limit."""
    floor = random_conv_model(seed=0, in_shape=(1, 7, 5), convs=((3, 3, 1, 1, 2, False), (2, 1, 1, 0, 2, False)))
    assert [(ly.map_shape[1:], ly.out_shape[1:]) for ly in floor.layers[:2]] == [((7, 5), (3, 2)), ((3, 2), (1, 1))]
    check_plan(floor, 2, "auto", random_inputs(floor, 3, seed=1))
    # conv3 reads conv1 (from two layers back), conv4 reads conv2: the two connections overlap
    convs = ((2, 1, 1, 0, 1, False), (2, 1, 1, 0, 1, False), (2, 1, 1, 0, 1, True), (2, 1, 1, 0, 1, False))
    model = random_conv_model(seed=0, in_shape=(1, 3, 3), convs=convs)
    model.layers[3] = replace(model.layers[3], shortcut="conv2", shortcut_stride=1,
                              shortcut_weight=np.ones((2, 2, 1, 1), np.int64))
    validate(model)
    assert [ly.shortcut for ly in model.layers[:4]] == [None, None, "conv1", "conv2"]
    with pytest.raises(ValueError, match=r"'conv4': its shortcut from 'conv2' overlaps the residual connection "
                                         r"into 'conv3'.*model/SEMANTICS.md, \"What the hardware maps\""):
        Plan(model, 2)
    with open(Path(__file__).parents[1] / "model" / "SEMANTICS.md") as f:
        assert "\n### What the hardware maps\n" in f.read()


@pytest.mark.parametrize("n_pe", [3, 8])
@pytest.mark.parametrize("groups", ["kernel-row", "tap"])
def test_rows_cut_as_pruning_balanced_them_cost_the_landing_work(n_pe, groups):
    """Conv weights balanced per kernel row or tap (``model/pruning.py`` ``groups``) over the PEs:
    ``auto`` cuts their compressed rows the same way (no padding, so no more bits than an uncut
    row, and fewer cycles), and with tap cuts an event costs exactly its landing synaptic events
    over the PEs that own outputs, at the map's edges too (one cycle when none lands)."""
    import torch

    from spikeloom.model import pruning

    model = random_conv_model(seed=3, in_shape=(2, 6, 6), convs=((16, 3, 1, 1, 1, False), (12, 3, 1, 1, 2, False)),
                              density=1.0)
    torch.manual_seed(0)
    for ly in model.layers[:2]:
        ly.weight[ly.weight == 0] = 1  # every group can keep its count
        w = torch.tensor(ly.weight, dtype=torch.float32) + 0.01 * torch.randn(ly.weight.shape)
        keep = pruning._balanced_mask(w, 0.25, n_pe, fill=True, groups=groups).numpy()
        ly.weight[~keep] = 0
    plan = Plan(model, n_pe, "auto")
    for lp, r in zip(plan.layers[:2], plan.storage_report):
        assert (lp.storage, lp.segments) == ("sparse", groups), r
        assert r["forms"][f"sparse:{groups}"]["bits"] == r["forms"]["sparse:row"]["bits"]
        assert r["forms"][f"sparse:{groups}"]["cycles"] < r["forms"]["sparse:row"]["cycles"]
        if groups != "tap":
            continue
        g = lp.sources[0]
        owners = min(n_pe, lp.channels)
        want = 0
        for ch in range(g.c_in):
            for y in range(g.h):
                for x in range(g.w):
                    landing = [t for t, _, _ in g.landing(y, x, lp.ho, lp.wo)]
                    syn = int((g.weight[:, ch].reshape(lp.channels, -1)[:, landing] != 0).sum())
                    assert syn % owners == 0
                    want += max(syn // owners, 1)
        assert r["forms"]["sparse:tap"]["cycles"] == want
    check_plan(model, n_pe, "auto", random_inputs(model, 2, seed=0))


def test_packed_tail_plan():
    """Which layers pack their last chunk (hw/plan.py, "Packed tail"): dense, not the first, spike
    events, two chunks or more, r <= N / 2; the copies in the tail word; ``pack=False`` none."""
    model = random_model([20, 13, 10, 5], seed=3, density=1.0)
    assert [lp.groups for lp in Plan(model, 8, "dense").layers] == [1, 4, 1]    # 10 = 8 + 2; 5 < 8: one chunk
    assert [lp.groups for lp in Plan(model, 4, "dense").layers] == [1, 2, 4]    # 13 = 3 * 4 + 1 is the first
    assert [lp.groups for lp in Plan(model, 3, "dense").layers] == [1, 3, 1]    # 10 = 3 * 3 + 1; 5 = 3 + 2
    assert [lp.groups for lp in Plan(model, 8, "dense", pack=False).layers] == [1, 1, 1]
    assert [lp.groups for lp in Plan(model, 8, "sparse").layers] == [1, 1, 1]   # compressed rows: not packed
    plan = Plan(model, 8, "dense")
    lp, w = plan.layers[1], model.layers[1].weight
    for p in range(8):
        tail = plan.init(p, "weight")[lp.weight_base + 1::2][:w.shape[1]]   # word 1 of every row
        assert tail == [int(v) for v in w[8 + p % 2]]                        # channel 8 + p mod 2
    with pytest.raises(TypeError, match="pack must be a bool"):
        Plan(model, 8, pack="yes")


def test_paired_layers_rule():
    """Which layers take two events a word (hw/plan.py, "Paired events"): dense, after the first,
    one chunk, spike events, entries that can hold two lanes; ``pair=False`` none."""
    model = random_model([20, 16, 12, 5], seed=3, density=0.5)
    assert [lp.paired for lp in Plan(model, 16).layers] == [False, True, True]
    assert [lp.paired for lp in Plan(model, 8).layers] == [False, False, True]   # 12 > 8: two chunks
    assert not Plan(model, 16, pair=False).paired and Plan(model, 16).pair
    assert not Plan(model, 1).paired                      # one lane an entry: nothing to pair
    assert not Plan(random_model([20, 1, 5], seed=3), 8).paired   # a source of one channel
    assert not Plan(model, 16, "sparse").paired           # compressed storage never pairs
