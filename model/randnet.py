"""Random integer networks for tests and benchmarks (no training): valid QuantModels of any shape."""

import numpy as np

from .config import NeuronConfig
from .modelfile import Layer, QuantModel, signed_range


def random_model(sizes, *, seed=0, t_max=4, weight_bits=6, input_bits=4, leak_shift=1, reset="subtract",
                 membrane_bits=16, exit_threshold=8, density=0.8, threshold_range=(8, 40)):
    """A QuantModel with layer sizes ``sizes`` = (inputs, hidden..., classes) and random integers.

    ``density`` is the fraction of nonzero weights (the rest are pruned to exactly zero). Weights
    are biased positive so that hidden layers spike at useful rates.
    """
    rng = np.random.default_rng(seed)
    lo_w, hi_w = signed_range(weight_bits)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.integers(lo_w // 2, hi_w + 1, size=(n_out, n_in))
        w[rng.random(w.shape) >= density] = 0
        w = np.clip(w, lo_w + 1, hi_w)
        last = i == len(sizes) - 2
        role = "analog" if i == 0 else ("output" if last else "spiking")
        scale_in = (1 << input_bits) - 1 if i == 0 else 1
        th = None if last else rng.integers(threshold_range[0] * scale_in // 2 + 1,
                                            threshold_range[1] * scale_in // 2 + 2, size=n_out)
        b = rng.integers(-4, 5, size=n_out)
        layers.append(Layer(name=f"fc{i + 1}", role=role, weight=w.astype(np.int64), bias=b.astype(np.int64),
                            threshold=None if th is None else th.astype(np.int64), weight_bits=weight_bits,
                            scale=[1.0]))
    return QuantModel(name="random", dataset="random", input_shape=(sizes[0],), input_bits=input_bits,
                      t_max=t_max, neuron=NeuronConfig(leak_shift, reset, membrane_bits),
                      exit_criterion="margin", exit_threshold=exit_threshold, layers=layers)


def random_inputs(model, n, *, seed=0, zero_fraction=0.4):
    """``n`` random quantized inputs with about ``zero_fraction`` zeros (as in real images)."""
    rng = np.random.default_rng(seed + 1)
    x = rng.integers(0, 1 << model.input_bits, size=(n, model.input_size))
    x[rng.random(x.shape) < zero_fraction] = 0
    return x.astype(np.int64)
