"""Random integer networks for tests and benchmarks (no training): valid QuantModels of any shape."""

import numpy as np

from dataclasses import replace

from .config import T_MAX_RANGE, WIDTH_RANGES, NeuronConfig  # noqa: F401 (WIDTH_RANGES, T_MAX_RANGE: re-exported)
from .ir import ACC_BITS_MAX, Layer, QuantModel, count_readout, signed_range


def _finish(model, neurons, readout):
    """Give the spiking layers their own neurons (``neurons``: one LayerNeuron per spiking layer,
    or None for version 1's network-wide one) and, for ``readout="count"``, count the spikes of a
    spiking last layer (the output layer becomes spiking, with thresholds, followed by
    :func:`~spikeloom.model.ir.count_readout`)."""
    if readout not in ("integrate", "count"):
        raise ValueError(f"readout = {readout!r}; allowed: 'integrate', 'count'")
    if readout == "count":
        out = model.layers[-1]
        rng = np.random.default_rng(len(model.layers))
        # around each neuron's current when its whole input is active (random hidden layers spike
        # densely): some classes fire at most steps, others rarely, so the counts part and exit
        w = out.weight.reshape(out.channels, -1).astype(np.int64) * model.in_max(out)
        ref = np.maximum(np.maximum(w.sum(axis=1) + out.bias, np.clip(w, 0, None).sum(axis=1) // 4), 1)
        th = np.clip((ref * rng.uniform(0.4, 1.5, size=out.channels)).astype(np.int64), 1,
                     signed_range(model.neuron.membrane_bits)[1])
        spiking = replace(out, role="spiking", threshold=th.astype(np.int64), scale=[1.0] * out.out_features)
        model.layers = model.layers[:-1] + [spiking, count_readout(spiking)]
        model.__post_init__()
    if neurons is not None:
        spiking = [i for i, ly in enumerate(model.layers) if ly.role != "output"]
        if len(neurons) != len(spiking):
            raise ValueError(f"neurons has {len(neurons)} entries for {len(spiking)} spiking layers")
        for i, n in zip(spiking, neurons):
            model.layers[i] = replace(model.layers[i], neuron=n)
    return model


def random_model(sizes, *, seed=0, t_max=4, weight_bits=6, input_bits=4, leak_shift=1, reset="subtract",
                 membrane_bits=16, exit_threshold=8, density=0.8, threshold_range=(8, 40), input_shape=None,
                 neurons=None, readout="integrate"):
    """A QuantModel with layer sizes ``sizes`` = (inputs, hidden..., classes) and random integers.

    ``density`` is the fraction of nonzero weights (the rest are pruned to exactly zero). Weights
    are biased positive so that hidden layers spike at useful rates. ``input_shape`` (default
    ``(sizes[0],)``): the shape of one input, e.g. an image (C, H, W) that the dense first layer
    reads flattened; its size must be ``sizes[0]``. Thresholds are clipped to the membrane range.
    ``neurons`` and ``readout``: see :func:`_finish` (a count readout adds a layer after the last).
    """
    if input_shape is None:
        input_shape = (sizes[0],)
    if int(np.prod(input_shape)) != sizes[0]:
        raise ValueError(f"input_shape {tuple(input_shape)!r} has {int(np.prod(input_shape))} values, "
                         f"but sizes[0] = {sizes[0]}")
    rng = np.random.default_rng(seed)
    lo_w, hi_w = signed_range(weight_bits)
    hi_m = signed_range(membrane_bits)[1]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.integers(lo_w // 2, hi_w + 1, size=(n_out, n_in))
        w[rng.random(w.shape) >= density] = 0
        w = np.clip(w, lo_w + 1, hi_w)
        last = i == len(sizes) - 2
        role = "analog" if i == 0 else ("output" if last else "spiking")
        scale_in = (1 << input_bits) - 1 if i == 0 else 1
        th = None if last else np.clip(rng.integers(threshold_range[0] * scale_in // 2 + 1,
                                                    threshold_range[1] * scale_in // 2 + 2, size=n_out), 1, hi_m)
        b = rng.integers(-4, 5, size=n_out)
        layers.append(Layer(name=f"fc{i + 1}", role=role, weight=w.astype(np.int64), bias=b.astype(np.int64),
                            threshold=None if th is None else th.astype(np.int64), weight_bits=weight_bits,
                            scale=[1.0]))
    return _finish(QuantModel(name="random", dataset="random", input_shape=tuple(input_shape),
                              input_bits=input_bits, t_max=t_max, neuron=NeuronConfig(leak_shift, reset, membrane_bits),
                              exit_criterion="margin", exit_threshold=exit_threshold, layers=layers,
                              extra={"density": density}), neurons, readout)


def random_inputs(model, n, *, seed=0, zero_fraction=0.4):
    """``n`` random quantized inputs with about ``zero_fraction`` zeros (as in real images)."""
    rng = np.random.default_rng(seed + 1)
    x = rng.integers(0, 1 << model.input_bits, size=(n, model.input_size))
    x[rng.random(x.shape) < zero_fraction] = 0
    return x.astype(np.int64)


def random_conv_model(*, seed=0, in_shape=(1, 6, 6), convs=((4, 3, 1, 1, 1, False), (5, 3, 1, 1, 2, True)),
                      n_classes=3, t_max=3, weight_bits=5, input_bits=4, leak_shift=1, reset="subtract",
                      membrane_bits=14, exit_threshold=6, density=0.7, threshold_range=(3, 12), hidden=(),
                      pool_op="max", neurons=None, readout="integrate"):
    """A conv QuantModel: conv layers ``convs`` = (C_out, k, stride, padding, pool, shortcut) each,
    then spiking dense layers of ``hidden`` neurons (reading the last conv map flattened), then a
    dense output layer. ``shortcut`` (not for the first conv) adds a 1x1 residual input from the
    conv layer two before it (or the first conv), with the stride that matches the map sizes.
    Thresholds are clipped to the membrane range. ``pool_op`` is every pooling conv layer's
    (``"max"`` or ``"sum"``); ``neurons`` and ``readout``: see :func:`_finish`.
    """
    rng = np.random.default_rng(seed)
    lo_w, hi_w = signed_range(weight_bits)
    hi_m = signed_range(membrane_bits)[1]
    layers, shape = [], tuple(in_shape)
    outs = []  # (name, out_shape) of the conv layers so far
    last_sc = 0  # residual connections never overlap (the hardware holds one shortcut map at a time)
    for i, (c_out, k, s, p, q, sc) in enumerate(convs):
        w = rng.integers(lo_w // 2, hi_w + 1, size=(c_out, shape[0], k, k))
        w[rng.random(w.shape) >= density] = 0
        scale_in = (1 << input_bits) - 1 if i == 0 else 1
        fan = max(1, int((w > 0).sum(axis=(1, 2, 3)).mean()))
        lo_t, hi_t = threshold_range
        th = np.clip(rng.integers(max(1, lo_t * fan * scale_in // 4), max(2, hi_t * fan * scale_in // 4) + 1,
                                  size=c_out), 1, hi_m)
        ho, wo = (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1
        kw = {}
        j = max(len(outs) - 2, 0)
        if sc and outs and j >= last_sc:
            src_name, src_shape = outs[j]
            r = max(1, -(-src_shape[1] // ho))
            if (src_shape[1] - 1) // r + 1 == ho and (src_shape[2] - 1) // r + 1 == wo:
                last_sc = i
                kw = {"shortcut": src_name, "shortcut_stride": r,
                      "shortcut_weight": rng.integers(lo_w // 2, hi_w + 1, size=(c_out, src_shape[0], 1, 1))}
        ly = Layer(name=f"conv{i + 1}", role="analog" if i == 0 else "spiking", weight=w.astype(np.int64),
                   bias=rng.integers(-2, 3, size=c_out).astype(np.int64), threshold=th.astype(np.int64),
                   weight_bits=weight_bits, scale=[1.0] * c_out, kind="conv", in_shape=shape, stride=s,
                   padding=p, pool=q, pool_op=pool_op if q > 1 else "max", **kw)
        layers.append(ly)
        shape = ly.out_shape
        outs.append((ly.name, shape))
    n_in = int(np.prod(shape))
    for j, n_out in enumerate(hidden):
        w = rng.integers(lo_w // 2, hi_w + 1, size=(n_out, n_in))
        w[rng.random(w.shape) >= density] = 0
        fan = max(1, int((w > 0).sum(axis=1).mean()))
        th = np.clip(rng.integers(max(1, threshold_range[0] * fan // 4),
                                  max(2, threshold_range[1] * fan // 4) + 1, size=n_out), 1, hi_m)
        layers.append(Layer(name=f"fc{j + 1}", role="spiking", weight=w.astype(np.int64),
                            bias=rng.integers(-2, 3, size=n_out).astype(np.int64), threshold=th.astype(np.int64),
                            weight_bits=weight_bits, scale=[1.0]))
        n_in = n_out
    w = rng.integers(lo_w // 2, hi_w + 1, size=(n_classes, n_in))
    w[rng.random(w.shape) >= density] = 0
    layers.append(Layer(name="fc", role="output", weight=w.astype(np.int64),
                        bias=rng.integers(-2, 3, size=n_classes).astype(np.int64), threshold=None,
                        weight_bits=weight_bits, scale=[1.0]))
    return _finish(QuantModel(name="random-conv", dataset="random", input_shape=tuple(in_shape),
                              input_bits=input_bits, t_max=t_max, neuron=NeuronConfig(leak_shift, reset, membrane_bits),
                              exit_criterion="margin", exit_threshold=exit_threshold, layers=layers,
                              extra={"density": density}), neurons, readout)


#: Named reference networks (``make sim NET=<name>``, ``make bench``): random integer weights with a
#: fixed seed, so that anyone can verify at the size of a real workload without a dataset.
#: ``cifar-random``: CIFAR-10 shaped input 3x32x32, five 3x3 conv layers (padding 1) of 32, 32 + pool 2,
#: 64, 64 + pool 2, 128 + pool 2 channels, a dense 10-class output; 8-bit weights at density 0.5,
#: 16-bit membranes, T_max = 4 (about 160k weights).
NAMED = {
    "cifar-random": lambda: random_conv_model(
        seed=1, in_shape=(3, 32, 32),
        convs=((32, 3, 1, 1, 1, False), (32, 3, 1, 1, 2, False), (64, 3, 1, 1, 1, False), (64, 3, 1, 1, 2, False),
               (128, 3, 1, 1, 2, False)),
        n_classes=10, t_max=4, weight_bits=8, membrane_bits=16, density=0.5),
}


def named_model(name):
    """The named reference network ``name`` (a key of :data:`NAMED`), as a QuantModel called ``name``."""
    if name not in NAMED:
        raise KeyError(f"no named network {name!r}; known: {', '.join(NAMED)}")
    m = NAMED[name]()
    return replace(m, name=name)


# ---------------------------------------------------------------------------------------------
# The whole space: random networks for the random-network campaign (flows/fuzz.py)

#: The widths and T_max the model file accepts (``ir.validate``, ``NeuronConfig``); the campaign
#: draws both ends of each (``tests`` check that one step beyond either end is refused).
#: Largest worst-case input current ``validate`` accepts (``acc_bits <= ACC_BITS_MAX``).
ACC_MAX = (1 << (ACC_BITS_MAX - 1)) - 1


def _at_ends(rng, lo, hi, p=0.3):
    """``lo`` or ``hi`` with probability ``p`` each, else uniform in between (inclusive)."""
    u = rng.random()
    return lo if u < p else hi if u < 2 * p else int(rng.integers(lo, hi + 1))


def _density(rng):
    """A layer's fraction of nonzero weights: all pruned, none pruned, or anything between."""
    u = rng.random()
    return 0.0 if u < 0.05 else 1.0 if u < 0.3 else float(rng.uniform(0.05, 1.0))


def _weights(rng, shape, bits, density):
    """Integer weights in the symmetric range of ``bits``: uniform, biased positive (so that layers
    spike), or only the two extreme values; ``1 - density`` of them pruned to exactly zero."""
    hi = (1 << (bits - 1)) - 1
    style = rng.integers(3)
    if style == 0:
        w = rng.integers(-hi, hi + 1, size=shape)
    elif style == 1:
        w = rng.integers(-(hi // 2), hi + 1, size=shape)
    else:
        w = np.where(rng.random(shape) < 0.65, hi, -hi)
    w[rng.random(shape) >= density] = 0
    return w.astype(np.int64)


def _fit(w, b, in_max, sc=None, sc_max=1):
    """Halve weights (toward zero) or biases until every channel's worst-case input current fits
    in 32 bits (``ACC_MAX``), the most ``validate`` accepts."""
    while True:
        rows = [w.reshape(len(b), -1) * in_max] + ([sc.reshape(len(b), -1) * sc_max] if sc is not None else [])
        pos = sum(np.clip(r, 0, None).sum(axis=1) for r in rows)
        neg = sum(np.clip(r, None, 0).sum(axis=1) for r in rows)
        if (pos + b).max() <= ACC_MAX and (neg + b).min() >= -ACC_MAX - 1:
            return w, b, sc
        if np.abs(b).max() > max(pos.max(), -neg.min()):
            b = np.fix(b / 2).astype(np.int64)
        else:
            w = np.fix(w / 2).astype(np.int64)
            sc = None if sc is None else np.fix(sc / 2).astype(np.int64)


def _bias_threshold(rng, w, in_max, membrane_bits, spiking, sc=None, sc_max=1):
    """Per channel: a bias (small, zero or a membrane extreme) and, for a spiking layer, a
    threshold around the current of a partly active input (some neurons fire at most steps, some
    rarely), or at its extremes 1 and the membrane maximum."""
    lo_m, hi_m = signed_range(membrane_bits)
    c = w.shape[0]
    ref = np.clip(w.reshape(c, -1), 0, None).sum(axis=1) * in_max
    if sc is not None:
        ref = ref + np.clip(sc.reshape(c, -1), 0, None).sum(axis=1) * sc_max
    ref = np.maximum(ref, 1)
    u = rng.random()
    if u < 0.2:
        b = np.zeros(c, np.int64)
    elif u < 0.35:
        b = rng.choice([lo_m, hi_m], size=c).astype(np.int64)
    else:
        span = np.maximum(ref // 6, 1)
        b = np.clip(rng.integers(-span, span + 1), lo_m, hi_m).astype(np.int64)
    th = None
    if spiking:
        u = rng.random()
        if u < 0.08:
            th = np.ones(c, np.int64)
        elif u < 0.16:
            th = np.full(c, hi_m, np.int64)
        else:
            th = np.clip((ref * rng.uniform(0.05, 1.2, size=c)).astype(np.int64), 1, hi_m)
    return b, th


def random_layer_neuron(rng):
    """One layer's neuron from the whole space of ``LayerNeuron``: no leak, a shift (``a = 1``), a
    multiplier ``a / 2^f`` (``f`` up to ``LEAK_FRAC_MAX``) or the full leak ``a = 2^f`` (beta 0);
    either firing rule; any reset."""
    from .config import FIRE_RULES, LEAK_FRAC_MAX, RESETS, LayerNeuron

    kind = rng.integers(4)
    f = _at_ends(rng, 1, LEAK_FRAC_MAX, 0.2)
    a, f = ((0, 0), (1, f), (int(rng.integers(1, (1 << f) + 1)), f), (1 << f, f))[kind]
    return LayerNeuron(a, f, str(rng.choice(FIRE_RULES)), str(rng.choice(RESETS)))


def random_any_model(rng):
    """A valid QuantModel drawn from the whole space the model file and the generator accept
    (``rng``: a numpy Generator): all-dense (flat or (C, H, W) inputs) or conv (C_in 1..3,
    non-square maps, kernel 1..4, stride 1..3, any padding, max or sum pooling 2..3 of any map with
    a whole window (floor mode where it does not divide), residual shortcuts from any earlier conv
    layer without overlap (model/SEMANTICS.md, "What the hardware maps")) with 0..2
    spiking dense layers; the integrating or the spike-count readout; version 1's network-wide
    neuron or one :func:`random_layer_neuron` per spiking layer (all equal or each its own); bit
    widths and T_max at both ends of ``WIDTH_RANGES`` / ``T_MAX_RANGE``; any exit threshold; per
    layer a density from 0 to 1 and weights, biases and thresholds up to their extremes (halved
    where the 32-bit input current requires it). Small enough to simulate in about a second.
    """
    from .config import RESET_MODES

    wb = _at_ends(rng, *WIDTH_RANGES["weight_bits"])
    ib = _at_ends(rng, *WIDTH_RANGES["input_bits"])
    mb = _at_ends(rng, *WIDTH_RANGES["membrane_bits"])
    u = rng.random()
    t_max = 1 if u < 0.2 else T_MAX_RANGE[1] if u < 0.25 else int(rng.integers(2, 7))
    conv = rng.random() < 0.55
    readout = "count" if rng.random() < 0.25 else "integrate"
    n_classes = int(rng.integers(2, 6))
    layers, outs = [], []  # outs: (layer index, out_shape) of the conv layers
    in_max = (1 << ib) - 1
    if conv:
        shape = (int(rng.integers(1, 4)), int(rng.integers(2, 7)), int(rng.integers(2, 7)))
        input_shape = shape
        open_until = -1  # the hardware holds one shortcut map at a time: connections never overlap
        for i in range(int(rng.integers(1, 4))):
            k = int(rng.integers(1, 5))
            s = int(rng.integers(1, 4))
            p = int(rng.integers(0, k))
            ho, wo = (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1
            if ho < 1 or wo < 1:
                break
            pools = [q for q in (2, 3) if ho >= q and wo >= q]
            q = int(rng.choice(pools)) if pools and rng.random() < 0.5 else 1
            c_out = int(rng.integers(1, 5))
            w = _weights(rng, (c_out, shape[0], k, k), wb, _density(rng))
            kw, sc, sc_max = {}, None, 1
            cands = [(j, src, r) for j, src in outs if j >= open_until for r in range(1, 5)
                     if (src[1] - 1) // r + 1 == ho and (src[2] - 1) // r + 1 == wo]
            if cands and rng.random() < 0.6:
                j, src, r = cands[int(rng.integers(len(cands)))]
                sc = _weights(rng, (c_out, src[0], 1, 1), wb, _density(rng))
                sc_max = layers[j].out_max
                open_until = i
                kw = {"shortcut": layers[j].name, "shortcut_stride": r}
            b, th = _bias_threshold(rng, w, in_max, mb, True, sc, sc_max)
            w, b, sc = _fit(w, b, in_max, sc, sc_max)
            ly = Layer(name=f"conv{i + 1}", role="analog" if i == 0 else "spiking", weight=w, bias=b,
                       threshold=th, weight_bits=wb, scale=[1.0], kind="conv", in_shape=shape, stride=s,
                       padding=p, pool=q, pool_op=str(rng.choice(("max", "sum"))) if q > 1 else "max",
                       shortcut_weight=sc, **kw)
            layers.append(ly)
            outs.append((i, ly.out_shape))
            shape = ly.out_shape
            in_max = ly.out_max
        if not layers:  # the first kernel did not fit the map: a 1x1 conv always does
            w = _weights(rng, (2, shape[0], 1, 1), wb, 1.0)
            b, th = _bias_threshold(rng, w, in_max, mb, True)
            w, b, _ = _fit(w, b, in_max)
            layers.append(Layer(name="conv1", role="analog", weight=w, bias=b, threshold=th, weight_bits=wb,
                                scale=[1.0], kind="conv", in_shape=shape))
            shape = layers[-1].out_shape
            in_max = 1
        n_in = int(np.prod(shape))
    else:
        if rng.random() < 0.5:
            input_shape = (int(rng.integers(1, 25)),)
        else:
            input_shape = (int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        n_in = int(np.prod(input_shape))
    n_dense = int(rng.integers(0, 3)) + (0 if layers else 1)  # dense nets: an analog dense layer first
    sizes = [int(rng.integers(1, 13)) for _ in range(n_dense)]
    if readout == "count":
        sizes.append(n_classes)
    for j, n_out in enumerate(sizes):
        w = _weights(rng, (n_out, n_in), wb, _density(rng))
        b, th = _bias_threshold(rng, w, in_max, mb, True)
        w, b, _ = _fit(w, b, in_max)
        layers.append(Layer(name=f"fc{j + 1}", role="analog" if not layers else "spiking", weight=w, bias=b,
                            threshold=th, weight_bits=wb, scale=[1.0]))
        n_in, in_max = n_out, 1
    if readout == "count":
        layers.append(count_readout(layers[-1]))
    else:
        w = _weights(rng, (n_classes, n_in), wb, _density(rng))
        b, _ = _bias_threshold(rng, w, in_max, mb, False)
        w, b, _ = _fit(w, b, in_max)
        layers.append(Layer(name="out", role="output", weight=w, bias=b, threshold=None, weight_bits=wb,
                            scale=[1.0]))
    spiking = [i for i, ly in enumerate(layers) if ly.role != "output"]
    if rng.random() < 0.35:
        neuron = NeuronConfig(int(rng.integers(0, 9)), str(rng.choice(RESET_MODES)), mb)
    else:
        neuron = NeuronConfig(1, "subtract", mb)
        each = [random_layer_neuron(rng) for _ in spiking]
        if len(each) > 1 and rng.random() < 0.3:
            each = [each[0]] * len(each)
        for i, nr in zip(spiking, each):
            layers[i] = replace(layers[i], neuron=nr)
    u = rng.random()
    exit_threshold = (0 if u < 0.2 else int(rng.integers(1, 10)) if u < 0.5
                      else int(rng.integers(10, 1000)) if u < 0.9 else (1 << mb) + int(rng.integers(0, 1 << 20)))
    return QuantModel(name="fuzz", dataset="random", input_shape=tuple(input_shape), input_bits=ib, t_max=t_max,
                      neuron=neuron, exit_criterion="margin", exit_threshold=exit_threshold, layers=layers)


def extreme_inputs(model, n, rng):
    """``n`` (>= 3) inputs for ``model``: all zeros, all at the largest value, then random values
    with a random fraction of zeros (0 to 1) each, some of them at the largest value."""
    hi = (1 << model.input_bits) - 1
    x = rng.integers(0, hi + 1, size=(n, model.input_size))
    x[rng.random(x.shape) < 0.2] = hi
    for row in x[2:]:
        row[rng.random(row.shape) < rng.uniform(0, 1)] = 0
    x[0], x[1] = 0, hi
    return x.astype(np.int64)
