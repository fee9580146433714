"""Pruning: exact sparsity, masks that survive training, zeros that reach the integer model, fewer timesteps."""

import numpy as np
import pytest
import torch

from spikeloom.model import golden, pruning as prune
from spikeloom.model.config import NeuronConfig, QuantConfig
from spikeloom.model.data import Dataset, Split
from spikeloom.model.errors import ConfigError
from spikeloom.model.snn import SNN, IntSNN
from spikeloom.model.train import TrainConfig, train_qat


def _net(arch="vgg", **kw):
    torch.manual_seed(0)
    net = SNN((1, 8, 8), 4, arch, NeuronConfig(1, "subtract", 16), t_max=2, **kw)
    net(torch.rand(32, 1, 8, 8))  # BatchNorm statistics
    return net.eval()


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.0, 0.37, 0.9, 1.0])
def test_magnitude_prune_exact_sparsity(scope, sparsity):
    net = _net("resnet")
    before = {n: p.detach().clone() for n, p in prune.prunable(net).items()}
    masks = prune.magnitude_prune(net, sparsity, scope)
    params = prune.prunable(net)
    assert set(masks) == set(params) and "blocks.1.sc.weight" in masks and "head.weight" in masks
    if scope == "layer":
        for n, p in params.items():
            assert int((p == 0).sum()) == round(sparsity * p.numel()) == int((~masks[n]).sum())
    else:
        total = sum(p.numel() for p in params.values())
        assert sum(int((p == 0).sum()) for p in params.values()) == round(sparsity * total)
        # global: every kept weight is at least as large as every pruned one
        kept = torch.cat([before[n][masks[n]].abs() for n in params])
        gone = torch.cat([before[n][~masks[n]].abs() for n in params])
        if len(kept) and len(gone):
            assert kept.min() >= gone.max()
    for n, p in params.items():
        assert (p[masks[n]] == before[n][masks[n]]).all()  # survivors untouched


def test_magnitude_prune_errors():
    net = _net()
    with pytest.raises(ConfigError, match="sparsity"):
        prune.magnitude_prune(net, 1.5)
    with pytest.raises(ConfigError, match="scope"):
        prune.magnitude_prune(net, 0.5, "row")
    with pytest.raises(ConfigError, match="not prunable"):
        prune.magnitude_prune(net, 0.5, names=["blocks.0.bn.weight"])


def test_masks_survive_optimizer_steps():
    net = _net((("conv", 4), ("res", 4, 2), ("pool", 2)))
    opt = torch.optim.Adam(net.parameters(), 1e-2, weight_decay=1e-3)
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 4
    for _ in range(2):  # momentum that would move pruned weights
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net.train()(x)[-1], y).backward()
        opt.step()
    masks = prune.magnitude_prune(net, 0.6)
    prune.attach_masks(opt, net, masks)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x)[-1], y).backward()
        opt.step()
    assert set(masks) == {"blocks.0.syn.weight", "blocks.1.syn.weight", "blocks.1.syn2.weight",
                          "blocks.1.sc.weight", "head.weight"}
    for n, p in prune.prunable(net).items():
        assert (p[~masks[n]] == 0).all() and int((p == 0).sum()) >= int((~masks[n]).sum())
    # and without the hook the same step would have moved them (the test can fail)
    opt2 = torch.optim.Adam(net.parameters(), 1e-2)
    opt2.zero_grad()
    torch.nn.functional.cross_entropy(net(x)[-1], y).backward()
    opt2.step()
    assert any((p[~masks[n]] != 0).any() for n, p in prune.prunable(net).items())


def _tiny_split(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.random((n, 1, 8, 8)).astype(np.float32) * 0.3
    for i, c in enumerate(y):  # class c lights up quadrant c
        x[i, 0, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 0.7
    x = np.clip(x, 0, 1).astype(np.float32)
    classes = tuple(str(c) for c in range(4))
    d = Dataset("quadrants", x, y.astype(np.int64), classes)
    return Split(train=d, val=d, test=d)


def test_pruned_weights_reach_the_integer_model_and_cut_events():
    net = _net("vgg")
    split = _tiny_split()
    quant, neu = QuantConfig(8, 8), net.neuron
    dense_model = IntSNN(net.folded_stages(), (1, 8, 8), neu, quant, 2).export("d", "none", 0)
    prune.magnitude_prune(net, 0.7, "layer")
    keeper = prune.KeepZeros()
    cfg = TrainConfig(arch="vgg", t_max=2, qat_epochs=1, batch_size=16, qat_lr=1e-2)
    imodel, _ = train_qat(net, split, cfg, neu, quant, after_step=keeper)
    pruned = imodel.export("p", "none", 0)
    for ly_d, ly_p, (name, w) in zip(dense_model.layers, pruned.layers, prune.prunable(net).items()):
        zero = (w == 0).numpy()
        assert (ly_p.weight[zero] == 0).all(), name  # every pruned float weight is an exact integer zero
        assert (ly_p.weight == 0).mean() >= zero.mean()
    assert (prune.sparsity(imodel)["total"]) >= 0.7
    x_q = golden.quantize_input(pruned, split.val.x)
    r_p, r_d = golden.run(pruned, x_q, sparse=()), golden.run(dense_model, x_q, sparse=())
    assert (imodel.exact_z(x_q) == r_p.z).all()
    first = pruned.layers[0].name
    # the analog layer sees the same inputs, so its synaptic events drop with its weights
    nnz_ratio = (pruned.layers[0].weight != 0).sum() / (dense_model.layers[0].weight != 0).sum()
    assert r_p.counters()[first]["synaptic_events"].sum() < r_d.counters()[first]["synaptic_events"].sum()
    assert nnz_ratio < 0.6
    for ly in pruned.layers:
        c = r_p.counters()[ly.name]
        assert (c["synaptic_events"] <= c["weight_reads"]).all()


def test_channel_prune_kills_channels():
    net = _net("resnet")
    masks = prune.channel_prune(net, 0.5)
    stages = net.folded_stages()
    for f in stages[:-1]:
        dead = np.all(f.weight.reshape(len(f.weight), -1) == 0, axis=1)
        assert dead.sum() == round(0.5 * len(f.weight))
        assert (f.bias[dead] == 0).all()
        if f.shortcut_weight is not None:
            assert (f.shortcut_weight[dead] == 0).all()
    assert masks["blocks.0.bn.bias"].sum() == 8
    imodel = IntSNN(stages, (1, 8, 8), net.neuron, t_max=2)
    model = imodel.export("c", "none", 0)
    x_q = golden.quantize_input(model, np.random.default_rng(0).random((6, 1, 8, 8)))
    r = golden.run(model, x_q, trace=True, sparse=())
    for ly in model.layers[:-1]:
        dead = np.all(ly.weight.reshape(ly.channels, -1) == 0, axis=1)
        sp = r.spikes[ly.name].reshape(2, 6, ly.channels, -1)
        assert not sp[:, :, dead].any()  # a pruned channel never spikes
    with pytest.raises(TypeError):
        prune.channel_prune(imodel, 0.5)


def test_units_train_then_come_out():
    split = _tiny_split()
    torch.manual_seed(0)
    net = SNN((1, 8, 8), 4, "vgg", NeuronConfig(), t_max=2, units=2, unit_at=1)
    assert net.kinds == ["conv", "unit", "unit", "conv", "pool", "conv", "pool"] and sum(net.is_unit) == 2
    from spikeloom.model.train import train_float
    cfg = TrainConfig(arch="vgg", t_max=2, epochs=1, batch_size=16)
    net, _ = train_float(split, cfg, NeuronConfig(), model=net)
    base = prune.remove_units(net)
    assert base.kinds == SNN((1, 8, 8), 4, "vgg").kinds and not any(base.is_unit)
    sd, bsd = net.state_dict(), base.state_dict()
    assert torch.equal(bsd["blocks.1.syn.weight"], sd["blocks.3.syn.weight"])  # after the 2 units
    assert torch.equal(bsd["blocks.0.bn.running_mean"], sd["blocks.0.bn.running_mean"])
    assert torch.equal(bsd["head.weight"], sd["head.weight"])
    base, _ = train_float(split, cfg, NeuronConfig(), model=base)  # fine-tune the base net
    imodel = IntSNN(base.folded_stages(), (1, 8, 8), t_max=2)
    assert len(imodel.export("b", "none", 0).layers) == 4


def _layer(shape, seed=0):
    """A one-layer module whose prunable weight ``0.weight`` has ``shape`` (dense or conv)."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(shape[1], shape[0]) if len(shape) == 2
                            else torch.nn.Conv2d(shape[1], shape[0], shape[2]))
    return m


@pytest.mark.parametrize("shape", [(128, 64), (10, 37), (32, 16, 3, 3), (20, 3, 3, 3), (6, 5)])  # dense / conv,
@pytest.mark.parametrize("n", [1, 3, 8, 64])  # outputs divisible by N or not; N > outputs
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_balanced_prune_exact_group_counts(shape, n, sparsity):
    net = _layer(shape)
    before = net[0].weight.detach().clone()
    mask = prune.magnitude_prune(net, sparsity, balance=n)["0.weight"]
    w = net[0].weight.detach()
    k = prune.balanced_keep(shape, 1 - sparsity, n)
    out, rows = shape[0], shape[1]
    taps = int(np.prod(shape[2:]))
    pes = min(n, out)
    assert k == min(int(np.floor((1 - sparsity) * out * taps / pes + 1e-9)), (out // n if out >= n else 1) * taps)
    for i in range(rows):
        for p in range(pes):
            g_w, g_b, g_m = w[p::n, i].flatten(), before[p::n, i].abs().flatten(), mask[p::n, i].flatten()
            assert int((g_w != 0).sum()) == int(g_m.sum()) == k, (i, p)  # same count in every group
            if k and k < len(g_b):
                assert g_b[g_m].min() >= g_b[~g_m].max()  # the largest magnitudes stay
    assert (w[mask] == before[mask]).all() and (w[~mask] == 0).all()
    assert prune.sparsity(net)["total"] >= sparsity - 1e-12  # rounding down: at least the target
    loads, imbalance = prune.pe_load(w, n)
    assert loads.shape == (rows, pes) and (loads == k).all()
    assert imbalance == 1.0 or (k == 0 and np.isnan(imbalance))


def test_balanced_prune_rounds_down_and_is_reproducible():
    shape = (128, 64)
    a, b = _layer(shape), _layer(shape)
    ma = prune.magnitude_prune(a, 0.8, balance=8)["0.weight"]
    mb = prune.magnitude_prune(b, 0.8, balance=8)["0.weight"]
    assert torch.equal(ma, mb) and torch.equal(a[0].weight, b[0].weight)
    assert prune.balanced_keep(shape, 0.2, 8) == 3  # 0.2 * 16 = 3.2 -> 3 of each PE's 16
    assert prune.sparsity(a)["total"] == 1 - 3 / 16
    assert prune.balanced_keep((128, 64), 0.25, 8) == 4  # exact: no rounding
    # ties: equal magnitudes keep the lower index of the group, every time
    t = torch.nn.Sequential(torch.nn.Linear(4, 16))
    with torch.no_grad():
        t[0].weight.fill_(0.5)
    m = prune.magnitude_prune(t, 0.5, balance=4)["0.weight"]
    assert m[:, 0].tolist() == [True] * 8 + [False] * 8  # PE p keeps o = p, p + 4 (its first 2 of 4)
    # an unbalanced 80% prune of the same weights is not balanced, the balanced one is
    c = _layer(shape)
    prune.magnitude_prune(c, 0.8)
    assert prune.pe_load(c[0].weight, 8)[1] > 1.2
    assert prune.pe_load(a[0].weight, 8)[1] == 1.0


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_balanced_prune_bad_n(bad):
    net = _layer((16, 8))
    with pytest.raises(ConfigError, match=r"balance = .* must be a positive integer"):
        prune.magnitude_prune(net, 0.5, balance=bad)
    with pytest.raises(ConfigError, match="balance"):
        prune.pe_load(net[0].weight, bad)
    assert (net[0].weight != 0).all()  # nothing was pruned


def test_balanced_prune_needs_layer_scope():
    net = _layer((16, 8))
    with pytest.raises(ConfigError, match="scope = 'layer'"):
        prune.magnitude_prune(net, 0.5, scope="global", balance=4)


@pytest.mark.parametrize("shape", [(10, 128), (32, 16, 3, 3), (128, 64), (20, 3, 3, 3)])  # head, conv, dense, uneven
@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_balanced_fill_spends_the_budget_on_whole_rows(shape, sparsity):
    n = 8
    net = _layer(shape)
    before = net[0].weight.detach().abs().clone()
    mask = prune.magnitude_prune(net, sparsity, balance=n, fill=True)["0.weight"]
    w = net[0].weight.detach()
    k = prune.balanced_keep(shape, 1 - sparsity, n)
    pes = min(n, shape[0])
    budget = int(np.floor((1 - sparsity) * w.numel() + 1e-9))
    kept = int(mask.sum())
    assert budget - pes < kept <= budget  # at least the sparsity asked for, within one row of it
    counts = torch.stack([mask[p::n].transpose(0, 1).reshape(shape[1], -1).sum(1) for p in range(pes)], 1)
    assert (counts == counts[:, :1]).all()  # every row balanced: all its PEs hold the same count
    assert set(counts[:, 0].tolist()) <= {k, k + 1}
    filled = counts[:, 0] == k + 1
    gain = sum(torch.sort(before[p::n].transpose(0, 1).reshape(shape[1], -1), 1, descending=True).values[:, k]
               for p in range(pes))
    if filled.any() and (~filled).any():
        assert gain[filled].min() >= gain[~filled].max()  # the rows that gain most get the extra weight
    assert prune.pe_load(w, n)[1] == 1.0
    if shape == (10, 128) and sparsity == 0.8:
        assert k == 0 and int(filled.sum()) == 32  # 256 weights: 32 rows of one weight per PE


@pytest.mark.parametrize("groups", ["kernel-row", "tap"])
@pytest.mark.parametrize("shape", [(32, 16, 3, 3), (20, 3, 3, 3), (6, 4, 5, 5)])
@pytest.mark.parametrize("n", [3, 8])
def test_balanced_prune_per_segment_of_a_row(groups, shape, n):
    """``groups``: every PE keeps as many weights of each kernel row (or tap) of every input row,
    the largest of that segment, with ``fill`` spending the budget on whole segments; a row stays
    balanced as a whole too."""
    net = _layer(shape, seed=2)
    before = net[0].weight.detach().abs().clone()
    mask = prune.magnitude_prune(net, 0.8, balance=n, fill=True, groups=groups)["0.weight"]
    k = shape[-1]
    per = k if groups == "kernel-row" else 1
    seg_mask = mask.reshape(shape[0], -1, per)
    pes = min(n, shape[0])
    counts = torch.stack([seg_mask[p::n].sum(dim=(0, 2)) for p in range(pes)], 1)  # (rows * segments, PEs)
    assert (counts == counts[:, :1]).all() and counts.sum() > 0
    budget = int(np.floor(0.2 * mask.numel() + 1e-9))
    assert budget - pes * per < int(mask.sum()) <= budget
    seg_before = before.reshape(shape[0], -1, per)
    for r in range(seg_mask.shape[1]):
        for p in range(pes):
            g_m, g_b = seg_mask[p::n, r].flatten(), seg_before[p::n, r].flatten()
            if g_m.any() and not g_m.all():
                assert g_b[g_m].min() >= g_b[~g_m].max()
    assert prune.pe_load(net[0].weight, n)[1] == 1.0
    with pytest.raises(ConfigError, match="groups = 'ky'; allowed: row, kernel-row, tap"):
        prune.magnitude_prune(_layer(shape), 0.5, balance=n, groups="ky")


def test_fill_needs_balance():
    with pytest.raises(ConfigError, match="fill"):
        prune.magnitude_prune(_layer((16, 8)), 0.5, fill=True)


def test_gradual_prune_ramps_to_the_final_masks_and_keeps_them():
    net = _net()
    names = ["blocks.1.syn.weight"]
    w = prune.prunable(net)[names[0]]
    seen = []

    def prune_fn(m, f):
        seen.append(f)
        return prune.magnitude_prune(m, 0.8 * f, names=names)

    hook = prune.GradualPrune(prune_fn, ramp=8, every=2)
    assert hook.fraction(0) == 0.0 and hook.fraction(8) == 1.0 == hook.fraction(99)
    assert all(hook.fraction(k) < hook.fraction(k + 1) for k in range(8))
    zero_before = None
    for k in range(12):
        with torch.no_grad():
            w.add_(0.01)  # an optimizer step that would move pruned weights
        hook(net)
        zeros = w == 0
        if zero_before is not None:
            assert (zeros | ~zero_before).all()  # a pruned weight stays pruned
        zero_before = zeros
        if k >= 8:
            assert float(zeros.float().mean()) == pytest.approx(0.8, abs=0.01)
    assert seen == [hook.fraction(k) for k in (0, 2, 4, 6, 8)]  # re-pruned every 2 steps, then kept
    assert ((w != 0) == hook.masks[names[0]]).all()
    with pytest.raises(ConfigError, match="GradualPrune"):
        prune.GradualPrune(prune_fn, ramp=0, every=1)
