"""Random integer networks for tests and benchmarks (no training): valid QuantModels of any shape."""

import numpy as np

from dataclasses import replace

from .config import NeuronConfig
from .ir import Layer, QuantModel, count_readout, signed_range


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
