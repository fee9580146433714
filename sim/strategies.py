"""Hypothesis strategies for random networks the hardware supports (shared by the Amaranth-sim and
the co-simulation tests; needs the ``dev`` extra).

A random test finds only what its generator draws: the dense first layer on a multi-channel image
went wrong on every image for months because no strategy drew a dense layer over a (C, H, W)
input. ``AXES`` lists every axis the strategies draw, with the values; ``tests/test_strategies.py``
draws a few hundred networks from each strategy and fails if any listed value never occurs in the
networks themselves (so narrowing a generator is a test failure, not a silent loss of coverage).
The axes the tests draw *around* a network (N, storage, trace port, image seed, idle and
back-pressure) are drawn by the tests themselves from ``N_PES`` and ``STORAGES``.
"""

from math import prod

from hypothesis import strategies as st

from spikeloom.model.config import FIRE_RULES, RESETS, LayerNeuron
from spikeloom.model.randnet import random_conv_model, random_model

#: Multiplier leaks ``(a, f)`` the strategies draw: beta = 0.9, 0.95, 0.25 and 0.5625 (7 / 16 leaked).
LEAK_MULTIPLIERS = ((26, 8), (13, 8), (3, 2), (7, 4))
#: The neuron axes of both strategies: version 1's one network-wide neuron (``leak_shift``, reset
#: zero or subtract, rule ``>=``) or a neuron per spiking layer (model/SEMANTICS.md, "Neuron
#: models"), each layer with its ``leak`` (none: IF; a shift, ``a = 1``; a multiplier of
#: ``LEAK_MULTIPLIERS``), rule ``fire`` and ``reset`` (read off every layer); ``mixed``: the layers
#: of one network have different neuron models (the PE selects per command).
NEURON_AXES = {
    "neurons": ("v1", "per_layer"),
    "leak_shift": (0, 1, 2, 3),            # version 1's networks only
    "reset": RESETS,
    "fire": FIRE_RULES,
    "leak": ("none", "shift", "multiplier"),
    "mixed": (False, True),
}

#: Every axis a strategy draws: {strategy: {axis: the values drawn}}. The names are the keys that
#: :func:`axes_of` reads off a network (``tests/test_strategies.py`` checks each value occurs).
AXES = {
    "dense_nets": {
        # the input as the first (analog, dense) layer sees it: flat (F,), or an image (C, H, W)
        # read flattened; C = 1..4 covers grey, RGB and more channels than colours
        "input_form": ("flat", "image"),
        "c_in": (1, 2, 3, 4),
        "square": (True, False),           # image H == W or not
        "hidden_layers": (0, 1, 2),        # spiking dense layers between the analog and the output
        "weight_bits": (2, 3, 4, 5, 6, 7, 8),
        "input_bits": (1, 2, 3, 4, 5, 6, 7, 8),
        "membrane_bits": (6, 8, 10, 12, 14, 16),
        **NEURON_AXES,
        "t_max": (1, 2, 3, 4),
        "exit_threshold": ("0", "1..9", ">=10"),
        "density": (0.3, 0.8, 1.0),
    },
    "conv_nets": {
        "c_in": (1, 2, 3, 4),
        "square": (True, False),           # input map H == W or not
        "n_conv": (1, 2, 3),
        "kernel": (1, 2, 3),
        "stride": (1, 2),
        "padding": (0, 1, 2),
        "pool": (1, 2),
        # of the pooling conv layers: the map divides by the pool, or rows/columns are left past the
        # last whole window (floor mode, model/SEMANTICS.md)
        "pool_fit": ("divides", "floor"),
        "pool_op": ("max", "sum"),         # of the pooling conv layers: OR, or the window's count
        "shortcut": (False, True),
        "hidden_layers": (0, 1),           # a spiking dense layer after the last conv map
        "weight_bits": (3, 4, 5, 6),
        "input_bits": (1, 2, 4, 6),
        "membrane_bits": (10, 12, 14, 16),
        **NEURON_AXES,
        "t_max": (1, 2, 3),
        "exit_threshold": ("0", "1..9", ">=10"),
        "density": (0.3, 0.8),
    },
}

#: PE counts the tests draw: one lane, lanes that do or do not divide the layers.
N_PES = (1, 2, 3, 4, 7)
#: Weight storages the tests draw (``hw/plan.py``): every layer dense or compressed (rows cut as
#: ``auto`` picks, or by kernel row or tap: a burst per landing segment), or per layer by bits
#: (``auto``) or by event cycles (``fast``).
STORAGES = ("dense", "sparse", "auto", "fast", "sparse:kernel-row", "sparse:tap")


def _threshold_class(t):
    return "0" if t == 0 else ("1..9" if t < 10 else ">=10")


def _layer_neuron(draw, axes):
    """One spiking layer's own neuron model."""
    kind = draw(st.sampled_from(axes["leak"]), label="leak")
    if kind == "none":
        a, f = 0, 0
    elif kind == "shift":
        a, f = 1, draw(st.integers(1, 3), label="leak_frac")
    else:
        a, f = draw(st.sampled_from(LEAK_MULTIPLIERS), label="leak_mul")
    return LayerNeuron(a, f, draw(st.sampled_from(axes["fire"]), label="fire"),
                       draw(st.sampled_from(axes["reset"]), label="layer_reset"))


def _neuron(draw, axes, n_spiking):
    """The keyword arguments of randnet's generators for the bit widths, neurons (``n_spiking``
    spiking layers) and exit of a network."""
    neurons = None
    if draw(st.sampled_from(axes["neurons"]), label="neurons") == "per_layer":
        neurons = [_layer_neuron(draw, axes) for _ in range(n_spiking)]
        if len(neurons) > 1 and draw(st.booleans(), label="same"):
            neurons = [neurons[0]] * n_spiking  # one model over several layers: no select in the PE
    return dict(
        weight_bits=draw(st.sampled_from(axes["weight_bits"]), label="weight_bits"),
        input_bits=draw(st.sampled_from(axes["input_bits"]), label="input_bits"),
        membrane_bits=draw(st.sampled_from(axes["membrane_bits"]), label="membrane_bits"),
        leak_shift=draw(st.sampled_from(axes["leak_shift"]), label="leak_shift"),
        reset=draw(st.sampled_from(("zero", "subtract")), label="reset"),
        neurons=neurons,
        t_max=draw(st.sampled_from(axes["t_max"]), label="t_max"),
        exit_threshold=draw(st.one_of(st.just(0), st.integers(1, 9), st.integers(10, 40)), label="exit_threshold"),
        density=draw(st.sampled_from(axes["density"]), label="density"),
    )


@st.composite
def dense_nets(draw, max_side=4, max_flat=24, max_hidden=12):
    """A random all-dense QuantModel whose analog first layer reads a flat vector or a (C, H, W)
    image (C = 1..4, H and W = 1..``max_side``, square or not) flattened, 0-2 spiking hidden layers
    after it and 2-5 classes, with every bit width, neuron option (version 1's or per layer) and
    exit threshold of ``AXES``."""
    axes = AXES["dense_nets"]
    if draw(st.sampled_from(axes["input_form"]), label="input_form") == "flat":
        shape = (draw(st.integers(1, max_flat), label="features"),)
    else:
        c = draw(st.sampled_from(axes["c_in"]), label="c_in")
        h = draw(st.integers(1, max_side), label="h")
        w = draw(st.integers(1, max_side), label="w")
        shape = (c, h, w)
    n_hidden = draw(st.sampled_from(axes["hidden_layers"]), label="hidden_layers")
    hidden = [draw(st.integers(1, max_hidden), label="hidden") for _ in range(n_hidden)]
    analog = draw(st.integers(1, max_hidden), label="analog")
    sizes = (prod(shape), analog, *hidden, draw(st.integers(2, 5), label="classes"))
    return random_model(sizes, seed=draw(st.integers(0, 2**16), label="seed"), input_shape=shape,
                        **_neuron(draw, axes, 1 + n_hidden))


@st.composite
def conv_nets(draw, max_convs=3, max_hw=6):
    """A random conv/pool/residual QuantModel: a C_in = 1..4 input map (square or not), 1-3 conv
    layers (kernel 1-3, stride 1-2, padding < kernel, 1-5 channels, 2x2 OR- or sum-pooling of any
    map with a whole window, floor mode where it does not divide, residual 1x1 shortcuts), an
    optional spiking dense layer on the flattened map
    and a dense output layer, with random integer weights (30% or 80% nonzero) and the bit widths,
    neuron options (version 1's or per layer) and exit thresholds of ``AXES``."""
    axes = AXES["conv_nets"]
    c_in = draw(st.sampled_from(axes["c_in"]), label="c_in")
    h = draw(st.integers(3, max_hw), label="h")
    w = h if draw(st.booleans(), label="square") else draw(st.integers(3, max_hw), label="w")
    convs, shape = [], (c_in, h, w)
    for i in range(draw(st.integers(1, max_convs), label="n_conv")):
        k = draw(st.sampled_from(axes["kernel"]), label="k")
        s = draw(st.sampled_from(axes["stride"]), label="stride")
        p = draw(st.integers(0, k - 1), label="pad")
        ho = (shape[1] + 2 * p - k) // s + 1
        wo = (shape[2] + 2 * p - k) // s + 1
        if ho < 1 or wo < 1:
            break
        q = 2 if ho >= 2 and wo >= 2 and draw(st.booleans(), label="pool") else 1
        c = draw(st.integers(1, 5), label="c_out")
        convs.append((c, k, s, p, q, i > 0 and draw(st.booleans(), label="shortcut")))
        shape = (c, ho // q, wo // q)
    if not convs:
        convs = [(2, 3, 1, 1, 1, False)]
    n_hidden = draw(st.sampled_from(axes["hidden_layers"]), label="hidden_layers")
    hidden = tuple(draw(st.integers(1, 8), label="hidden") for _ in range(n_hidden))
    pool_op = draw(st.sampled_from(axes["pool_op"]), label="pool_op")
    return random_conv_model(seed=draw(st.integers(0, 2**16), label="seed"), in_shape=(c_in, h, w),
                             convs=convs, hidden=hidden, pool_op=pool_op,
                             **_neuron(draw, axes, len(convs) + n_hidden))


def axes_of(model):
    """The ``AXES`` values a network shows (read off the network, not off the draws)."""
    convs = [ly for ly in model.layers if ly.kind == "conv"]
    neurons = [ly.neuron for ly in model.layers if ly.role != "output"]
    spiking_dense = [ly for ly in model.layers[1:-1] if ly.kind == "dense"]
    shape = tuple(model.input_shape)
    out = {
        "c_in": shape[0] if len(shape) == 3 else None,
        "square": shape[1] == shape[2] if len(shape) == 3 else None,
        "hidden_layers": len(spiking_dense),
        "weight_bits": model.layers[0].weight_bits,
        "input_bits": model.input_bits,
        "membrane_bits": model.neuron.membrane_bits,
        "neurons": "v1" if model.uses_v1_neuron() else "per_layer",
        "leak_shift": model.neuron.leak_shift if model.uses_v1_neuron() else None,
        "reset": {nr.reset for nr in neurons},
        "fire": {nr.fire for nr in neurons},
        "leak": {("none", "shift")[nr.leak_key()[0]] if nr.leak_key()[0] <= 1 else "multiplier" for nr in neurons},
        "mixed": len({(nr.leak_key(), nr.fire, nr.reset) for nr in neurons}) > 1,
        "t_max": model.t_max,
        "exit_threshold": _threshold_class(model.exit_threshold),
        "density": model.extra.get("density"),  # the generator's own record (randnet)
    }
    if not convs:
        out["input_form"] = "image" if len(shape) == 3 else "flat"
    else:
        out.update(n_conv=len(convs), kernel={ly.kernel for ly in convs}, stride={ly.stride for ly in convs},
                   padding={ly.padding for ly in convs}, pool={ly.pool for ly in convs},
                   pool_op={ly.pool_op for ly in convs if ly.pool > 1},
                   pool_fit={"floor" if ly.map_shape[1] % ly.pool or ly.map_shape[2] % ly.pool else "divides"
                             for ly in convs if ly.pool > 1},
                   shortcut={ly.shortcut is not None for ly in convs})
    return out

