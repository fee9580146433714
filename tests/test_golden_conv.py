"""The golden model's conv, pool and residual semantics against a brute-force event-driven reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloom.model import golden, ir, modelfile
from spikeloom.model.config import NeuronConfig
from spikeloom.model.errors import ModelFileError
from spikeloom.model.ir import Layer, QuantModel
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model


def brute_conv(layer, x, src=None):
    """Current and counters by iterating over input events (not over output windows, as golden does)."""
    b_, c_in, h, w = x.shape
    c_out, _, ho, wo = layer.map_shape[0], None, *layer.map_shape[1:]
    k, s, p = layer.kernel, layer.stride, layer.padding
    cur = np.zeros((b_, c_out, ho, wo), np.int64) + layer.bias[None, :, None, None]
    ev = np.zeros(b_, np.int64)
    syn = np.zeros(b_, np.int64)
    reads = np.zeros(b_, np.int64)
    for b in range(b_):
        for c, y, xx in zip(*np.nonzero(x[b])):
            ev[b] += 1
            for ky in range(k):
                for kx in range(k):
                    ny, nx = y + p - ky, xx + p - kx
                    if ny % s or nx % s or not (0 <= ny // s < ho and 0 <= nx // s < wo):
                        continue
                    reads[b] += c_out
                    syn[b] += int((layer.weight[:, c, ky, kx] != 0).sum())
                    cur[b, :, ny // s, nx // s] += layer.weight[:, c, ky, kx] * int(x[b, c, y, xx])
        if src is not None:
            ss = layer.shortcut_stride
            for c, y, xx in zip(*np.nonzero(src[b])):
                ev[b] += 1
                if y % ss or xx % ss or y // ss >= ho or xx // ss >= wo:
                    continue
                reads[b] += c_out
                syn[b] += int((layer.shortcut_weight[:, c, 0, 0] != 0).sum())
                cur[b, :, y // ss, xx // ss] += layer.shortcut_weight[:, c, 0, 0]
    return cur, {"input_events": ev, "synaptic_events": syn, "weight_reads": reads}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 2, 3]), stride=st.sampled_from([1, 2, 3]),
       pad=st.integers(0, 2), c_in=st.integers(1, 3), c_out=st.integers(1, 4), hw=st.integers(3, 7),
       analog=st.booleans(), shortcut=st.booleans())
def test_conv_synapses_equal_brute_force(seed, k, stride, pad, c_in, c_out, hw, analog, shortcut):
    pad = min(pad, k - 1)
    rng = np.random.default_rng(seed)
    wgt = rng.integers(-3, 4, (c_out, c_in, k, k))
    wgt[rng.random(wgt.shape) < 0.3] = 0
    ly = Layer("c", "spiking", wgt, rng.integers(-2, 3, c_out), np.full(c_out, 5), 4, kind="conv",
               in_shape=(c_in, hw, hw), stride=stride, padding=pad)
    x = rng.integers(0, 16 if analog else 2, (3, c_in, hw, hw))
    src = None
    if shortcut:
        _, ho, wo = ly.map_shape
        ss = stride
        src_hw = ho * ss - rng.integers(0, ss)  # any size whose stride-ss sampling gives ho x wo
        ly.shortcut, ly.shortcut_stride = "s", ss
        ly.shortcut_weight = rng.integers(-3, 4, (c_out, 2, 1, 1))
        src = rng.integers(0, 2, (3, 2, src_hw, src_hw + (wo - ho) * ss))
    cur, counts = golden.synapses(ly, x, src)
    ref_cur, ref_counts = brute_conv(ly, x, src)
    assert (cur == ref_cur).all()
    for key, v in ref_counts.items():
        assert counts[key].tolist() == v.tolist(), key


def test_hand_counted_padding_and_stride():
    # one input value 5 in the corner of a 3x3 map; channel 0 kernel all ones, channel 1 only the centre
    w = np.zeros((2, 1, 3, 3), np.int64)
    w[0] = 1
    w[1, 0, 1, 1] = 1
    x = np.zeros((1, 1, 3, 3), np.int64)
    x[0, 0, 0, 0] = 5
    ly = Layer("c", "analog", w, np.zeros(2, np.int64), np.ones(2, np.int64), 3, kind="conv",
               in_shape=(1, 3, 3), stride=1, padding=1)
    cur, c = golden.synapses(ly, x)
    # taps (ky, kx) in {0,1}^2 land (outputs (1-ky, 1-kx)); 4 taps x 2 channels read; nonzero: 4 + 1
    assert (c["input_events"], c["weight_reads"], c["synaptic_events"]) == ([1], [8], [5])
    assert cur[0, 0].tolist() == [[5, 5, 0], [5, 5, 0], [0, 0, 0]] and cur[0, 1, 0, 0] == 5
    ly.stride = 2  # 2x2 output: only the centre tap lands, at output (0, 0)
    cur, c = golden.synapses(ly, x)
    assert (c["input_events"], c["weight_reads"], c["synaptic_events"]) == ([1], [2], [2])
    assert cur[0].tolist() == [[[5, 0], [0, 0]], [[5, 0], [0, 0]]]


def test_or_pool_floor_mode():
    s = np.zeros((1, 1, 5, 5), bool)
    s[0, 0, 1, 1] = s[0, 0, 2, 3] = s[0, 0, 4, 4] = True  # (4, 4) falls in the dropped last row/column
    assert golden.pool_spikes(s, 2, "max")[0, 0].tolist() == [[True, False], [False, True]]


def conv_net(reset="subtract", t_max=3, exit_threshold=4, pool=2, shortcut=True):
    """2x4x4 input -> conv 3x3 (analog) -> conv 3x3 + 1x1 shortcut from conv1 (pool) -> dense 3 classes."""
    rng = np.random.default_rng(7)
    l1 = Layer("conv1", "analog", rng.integers(-1, 4, (3, 2, 3, 3)), rng.integers(0, 3, 3), np.full(3, 20), 4,
               kind="conv", in_shape=(2, 4, 4), padding=1)
    l2 = Layer("conv2", "spiking", rng.integers(-1, 4, (4, 3, 3, 3)), rng.integers(-1, 2, 4), np.full(4, 6), 4,
               kind="conv", in_shape=(3, 4, 4), padding=1, pool=pool,
               shortcut="conv1" if shortcut else None,
               shortcut_weight=rng.integers(0, 4, (4, 3, 1, 1)) if shortcut else None)
    n_in = 4 * (4 // pool) ** 2
    l3 = Layer("fc3", "output", rng.integers(-3, 4, (3, n_in)), np.zeros(3, np.int64), None, 4)
    return QuantModel("conv", "none", (2, 4, 4), 3, t_max, NeuronConfig(1, reset, 12), "margin", exit_threshold,
                      [l1, l2, l3])


def brute_run(model, x):
    """Straight-line reference of golden.run for conv_net-shaped models: z and per-layer spike totals."""
    nb, neu = len(x), model.neuron
    l1, l2, l3 = model.layers
    cur1, _ = brute_conv(l1, x.reshape(nb, *l1.in_shape))
    u1 = np.zeros_like(cur1)
    u2 = np.zeros((nb, *l2.map_shape), np.int64)
    z = np.zeros((nb, 3), np.int64)
    zs, spikes = [], {"conv1": 0, "conv2": 0}
    for _ in range(model.t_max):
        u1, _, s1 = golden.lif_step(u1, None, cur1, l1.threshold[:, None, None], l1.neuron, neu.membrane_bits)
        cur2, _ = brute_conv(l2, s1.astype(np.int64), s1 if l2.shortcut else None)
        u2, _, s2 = golden.lif_step(u2, None, cur2, l2.threshold[:, None, None], l2.neuron, neu.membrane_bits)
        p = l2.pool
        pooled = s2.reshape(nb, 4, 4 // p, p, 4 // p, p).max(axis=(3, 5))
        z = golden.saturate(z + pooled.reshape(nb, -1) @ l3.weight.T, neu.membrane_bits)
        zs.append(z)
        spikes["conv1"] += int(s1.sum())
        spikes["conv2"] += int(s2.sum())
    return np.stack(zs), spikes


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("pool,shortcut", [(2, True), (1, True), (2, False)])
def test_conv_net_equals_straight_line_reference(reset, pool, shortcut):
    m = conv_net(reset, pool=pool, shortcut=shortcut)
    ir.validate(m)
    x = np.random.default_rng(1).integers(0, 8, (5, 32))
    r = golden.run(m, x, trace=True, sparse=())
    z, spikes = brute_run(m, x)
    assert (r.z == z).all()
    tot = r.counters(adaptive=False)
    assert int(tot["conv1"]["spikes"].sum()) == spikes["conv1"] > 0
    assert int(tot["conv2"]["spikes"].sum()) == spikes["conv2"] > 0
    assert r.spikes["conv2"].shape == (3, 5, 4 * 4 * 4)
    for ly in m.layers:
        c = tot[ly.name]
        assert (c["membrane_reads"] == ly.out_features * 3).all()
        assert (c["synaptic_events"] <= c["weight_reads"]).all()
    # the output layer receives the pooled spikes only
    pooled = r.spikes["conv2"].reshape(3, 5, 4, 4 // pool, pool, 4 // pool, pool).any(axis=(4, 6))
    assert (tot["fc3"]["input_events"] == pooled.sum(axis=(0, 2, 3, 4))).all()


def test_conv_model_file_round_trip(tmp_path):
    m = conv_net()
    p = modelfile.save(m, tmp_path / "c.slm")
    back = modelfile.load(p)
    for a, b in zip(m.layers, back.layers):
        assert (a.kind, a.in_shape, a.stride, a.padding, a.pool, a.shortcut) == \
               (b.kind, b.in_shape, b.stride, b.padding, b.pool, b.shortcut)
        assert (a.weight == b.weight).all() and a.weight.shape == b.weight.shape
    assert (back.layers[1].shortcut_weight == m.layers[1].shortcut_weight).all()
    assert not back.is_dense
    x = np.random.default_rng(2).integers(0, 8, (4, 32))
    assert (golden.run(back, x, sparse=()).z == golden.run(m, x, sparse=()).z).all()
    assert modelfile.save(back, tmp_path / "d.slm").read_bytes() == p.read_bytes()


def _broken(edit):
    m = conv_net()
    edit(m)
    return m


@pytest.mark.parametrize("edit,match", [
    (lambda m: setattr(m.layers[1], "kind", "lstm"), "kind = 'lstm'"),
    (lambda m: setattr(m.layers[2], "kind", "conv"), "output layer must be 'dense'"),
    (lambda m: setattr(m.layers[1], "in_shape", (3, 5, 4)), r"in_shape \(3, 5, 4\) but the previous stage gives"),
    (lambda m: setattr(m.layers[1], "weight", m.layers[1].weight[:, :2]), "2 input channels"),
    (lambda m: setattr(m.layers[1], "weight", m.layers[1].weight[:, :, :, :2]), "square kernel"),
    (lambda m: setattr(m.layers[1], "padding", 3), "padding = 3"),
    (lambda m: setattr(m.layers[1], "stride", 0), "stride = 0"),
    (lambda m: setattr(m.layers[1], "pool", 5), "pool = 5"),
    (lambda m: setattr(m.layers[1], "shortcut", "fc9"), "'fc9' must name exactly one earlier layer"),
    (lambda m: setattr(m.layers[1], "shortcut_weight", np.zeros((4, 2, 1, 1), np.int64)), r"\(4, 3, 1, 1\)"),
    (lambda m: setattr(m.layers[1], "shortcut_stride", 2), "gives a 2x2 map"),
    (lambda m: setattr(m.layers[1], "shortcut_weight", None), "given together"),
    (lambda m: setattr(m.layers[2], "weight", np.zeros((3, 17), np.int64)), "previous stage gives 16"),
    (lambda m: setattr(m, "input_shape", (32,)), "needs a \\(C, H, W\\) spike map"),
    (lambda m: setattr(m.layers[0], "stride", 2) or setattr(m.layers[0], "pool", 1), "previous stage gives"),
    (lambda m: m.layers[1].shortcut_weight.__setitem__((0, 0, 0, 0), 9), r"shortcut_weight value 9 at \[0, 0, 0, 0\]"),
])
def test_conv_validation_errors(edit, match):
    with pytest.raises(ModelFileError, match=match):
        ir.validate(_broken(edit))


def test_conv_file_errors(tmp_path):
    import json
    import zipfile
    p = modelfile.save(conv_net(), tmp_path / "c.slm")

    def rewrite(edit):
        with zipfile.ZipFile(p) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        meta = json.loads(members["model.json"])
        edit(meta)
        members["model.json"] = json.dumps(meta)
        out = tmp_path / "e.slm"
        with zipfile.ZipFile(out, "w") as zf:
            for n, d in members.items():
                zf.writestr(n, d)
        return out

    with pytest.raises(ModelFileError, match="kind = 'pool'"):
        modelfile.load(rewrite(lambda m: m["layers"][1].update(kind="pool")))
    with pytest.raises(ModelFileError, match="missing field layers\\[1\\].'stride'"):
        modelfile.load(rewrite(lambda m: m["layers"][1].pop("stride")))
    with pytest.raises(ModelFileError, match="kernel = 5"):
        modelfile.load(rewrite(lambda m: m["layers"][1].update(kernel=5)))
    with pytest.raises(ModelFileError, match="in_shape"):
        modelfile.load(rewrite(lambda m: m["layers"][1].update(in_shape=[3, 4])))
    with pytest.raises(ModelFileError, match="out_shape"):
        modelfile.load(rewrite(lambda m: m["layers"][1].update(out_shape=[4, 4, 4])))
    with pytest.raises(ModelFileError, match="shortcut_weight"):
        modelfile.load(rewrite(lambda m: m["layers"][1]["arrays"].pop("shortcut_weight")))


def test_sum_pool_counts_the_window():
    s = np.zeros((1, 1, 5, 5), bool)
    s[0, 0, 0, :2] = s[0, 0, 1, 0] = s[0, 0, 3, 3] = s[0, 0, 4, 4] = True  # row/column 4 dropped (floor)
    assert golden.pool_spikes(s, 2, "sum")[0, 0].tolist() == [[3, 0], [0, 1]]


def test_sum_pool_feeds_counts_to_the_next_layer():
    m = random_conv_model(seed=3, pool_op="sum", t_max=3)
    x = random_inputs(m, 6, seed=2)
    res = golden.run(m, x, sparse=(), trace=True)
    conv2, fc = m.layers[1], m.layers[2]
    assert conv2.pool == 2 and conv2.pool_op == "sum" and conv2.out_max == 4
    counts = golden.pool_spikes(res.spikes["conv2"].reshape(m.t_max, len(x), *conv2.map_shape).reshape(
        m.t_max * len(x), *conv2.map_shape), 2, "sum").reshape(m.t_max, len(x), -1)
    assert counts.max() > 1  # some window carried more than one spike
    z = np.cumsum(counts @ fc.weight.T + fc.bias, axis=0)
    assert (z == res.z).all()  # 14-bit membranes: no saturation in this network
    # the accumulator width counts the largest window sum
    assert m.acc_range(fc)[1] == max(0, int((np.clip(fc.weight, 0, None).sum(axis=1) * 4 + fc.bias).max()))


def test_count_readout_counts_the_class_spikes():
    m = random_model((12, 9, 4), seed=2, readout="count", t_max=5, exit_threshold=2)
    assert m.readout == "count" and m.layers[-1].weight_bits == 2 and len(m.layers) == 3
    x = random_inputs(m, 40, seed=1)
    res = golden.run(m, x, sparse=(), trace=True)
    counts = np.cumsum(res.spikes[m.layers[-2].name], axis=0)
    assert (res.z == counts).all() and counts.max() > 0
    assert (res.exit_t < m.t_max).any()  # the margin of the counts exits early
