"""The network's integer intermediate representation: the types every stage after training reads.

:class:`QuantModel` (a quantized SNN: metadata plus integer layers) and :class:`Layer` (one synaptic
layer, ``dense`` or ``conv``), and :func:`validate`, which checks a model for consistency and names
the first problem. The semantics of every field are in ``model/SEMANTICS.md``; the file format that
stores these types is :mod:`spikeloom.model.modelfile`. Numpy only (no torch).
"""

import re
from dataclasses import dataclass, field, replace

import numpy as np

from . import geometry
from .config import T_MAX_RANGE, WIDTH_RANGES, LayerNeuron, NeuronConfig, check_int
from .errors import ConfigError, ModelFileError

#: The longest layer name, and the characters one may use: it names the hardware's signals and
#: ports (counters, memories), the exported test bench's messages and ``--storage``'s ``LAYER=S``.
LAYER_NAME_MAX = 100
LAYER_NAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{LAYER_NAME_MAX}}}")

#: The widest worst-case input current (bits, signed) a layer may need: the accumulators' width.
ACC_BITS_MAX = 32

ROLES = ("analog", "spiking", "output")
KINDS = ("dense", "conv")
#: How a conv layer pools its spikes: ``max`` (OR of the window) or ``sum`` (the window's spike count).
POOL_OPS = ("max", "sum")


def signed_range(bits):
    """The closed range of a two's-complement integer of ``bits`` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def threshold_cap(membrane_bits):
    """The largest integer threshold quantization gives (1/8 of the membrane range): the headroom
    above a threshold keeps saturation rare. Training (``IntSNN.qparams``) and import share it."""
    return (signed_range(membrane_bits)[1] + 1) // 8


def bits_for(lo, hi):
    """Smallest two's-complement width holding every integer in [lo, hi]."""
    b = 1
    while not (signed_range(b)[0] <= lo and hi <= signed_range(b)[1]):
        b += 1
    return b


@dataclass
class Layer:
    """One synaptic layer of the integer network: fully-connected (``dense``) or convolutional (``conv``).

    ``role`` is ``"analog"`` for the first layer (its input current is computed once per inference
    from the unsigned input values), ``"spiking"`` for hidden LIF layers driven by spike events, and
    ``"output"`` for the last, non-spiking integrator (``z <- sat(z + W s + b)``; always ``dense``).
    ``scale`` maps the layer's integers back to real units (the output layer's ``z * scale`` are
    the logits).

    ``neuron`` (:class:`~spikeloom.model.config.LayerNeuron`): the leak, firing rule and reset of the
    layer's neurons (``None`` for the output integrator; a :class:`QuantModel` gives a spiking
    layer without one the network-wide neuron of version 1).

    ``kind = "dense"``: ``weight`` (out, in), ``bias`` and ``threshold`` (out,) (``None`` for the
    output layer). A dense layer after a conv layer reads its (C, H, W) output flattened row-major.

    ``kind = "conv"``: ``weight`` (C_out, C_in, k, k) applied with ``stride`` and zero ``padding`` to
    the (C_in, H, W) spike map ``in_shape``; ``bias``, ``threshold`` (C_out,) per output channel. The
    layer's spikes are pooled over ``pool`` x ``pool`` windows (floor mode) before they leave it:
    ``pool_op = "max"`` ORs them, ``"sum"`` passes on each window's spike count (a value in
    ``[0, pool^2]`` that the next layer multiplies its weights by). Optional residual input: ``shortcut`` names an earlier layer whose (pooled) output
    spikes drive a 1x1 convolution ``shortcut_weight`` (C_out, C_src, 1, 1) with ``shortcut_stride``,
    added to this layer's input current (see ``model/SEMANTICS.md``).
    """

    name: str
    role: str
    weight: np.ndarray
    bias: np.ndarray
    threshold: np.ndarray | None
    weight_bits: int
    scale: list = field(default_factory=list)
    kind: str = "dense"
    in_shape: tuple = ()
    stride: int = 1
    padding: int = 0
    pool: int = 1
    shortcut: str | None = None
    shortcut_weight: np.ndarray | None = None
    shortcut_stride: int = 1
    neuron: LayerNeuron | None = None
    pool_op: str = "max"

    @property
    def out_max(self):
        """Largest value the layer passes on per position and timestep (1 for spikes, ``pool^2``
        for a sum pool)."""
        return self.pool * self.pool if self.pool_op == "sum" else 1

    @property
    def kernel(self):
        return int(self.weight.shape[-1]) if self.kind == "conv" else 1

    @property
    def map_shape(self):
        """(C_out, H_out, W_out) of the neuron map (conv) or (out,) (dense)."""
        if self.kind != "conv":
            return (int(self.weight.shape[0]),)
        return (int(self.weight.shape[0]), *geometry.kernel(self).out_hw(self.in_shape[1:]))

    @property
    def out_shape(self):
        """Shape of the spike map the layer passes on (after pooling)."""
        if self.kind != "conv":
            return self.map_shape
        c, h, w = self.map_shape
        return (c, h // self.pool, w // self.pool)

    @property
    def in_features(self):
        return int(self.weight.shape[1]) if self.kind != "conv" else int(np.prod(self.in_shape))

    @property
    def out_features(self):
        """Number of neurons (membranes) of the layer."""
        return int(np.prod(self.map_shape))

    @property
    def out_size(self):
        """Number of spikes the layer passes on per timestep (after pooling)."""
        return int(np.prod(self.out_shape))

    @property
    def channels(self):
        """Output channels (= neurons for dense): the length of ``bias`` and ``threshold``."""
        return int(self.weight.shape[0])


@dataclass
class QuantModel:
    """A quantized SNN: integer arrays plus the metadata that defines their semantics."""

    name: str
    dataset: str
    input_shape: tuple
    input_bits: int
    t_max: int
    neuron: NeuronConfig
    exit_criterion: str
    exit_threshold: int
    layers: list
    classes: tuple = ()
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # Version 1 has one neuron for the network: a spiking layer without its own takes it.
        if isinstance(self.layers, tuple):
            self.layers = list(self.layers)
        if isinstance(self.neuron, NeuronConfig) and isinstance(self.layers, list):
            try:
                v1 = LayerNeuron.of(self.neuron)
            except ConfigError:
                return  # validate() names the bad field
            self.layers = [replace(ly, neuron=v1) if isinstance(ly, Layer) and ly.neuron is None
                           and ly.threshold is not None else ly for ly in self.layers]

    @property
    def readout(self):
        """``"count"`` when the output layer counts the spikes of the layer before it (an identity
        integrator, see :func:`count_readout`), else ``"integrate"``."""
        out = self.layers[-1]
        k = out.out_features
        if len(self.layers) > 2 and out.kind == "dense" and out.weight.shape == (k, k) \
                and np.array_equal(out.weight, np.eye(k, dtype=out.weight.dtype)) and not np.any(out.bias):
            return "count"
        return "integrate"

    def uses_v1_neuron(self):
        """True when every spiking layer has the network-wide neuron of version 1."""
        try:
            v1 = LayerNeuron.of(self.neuron)
        except ConfigError:
            return False
        return all(ly.neuron is None or ly.neuron.same_as(v1) for ly in self.layers)

    def in_max(self, layer: Layer):
        """Largest input value of ``layer`` (the analog layer's inputs; else what the previous layer
        passes on)."""
        if layer.role == "analog":
            return (1 << self.input_bits) - 1
        i = next((j for j, ly in enumerate(self.layers) if ly is layer),
                 next(j for j, ly in enumerate(self.layers) if ly.name == layer.name))
        return self.layers[i - 1].out_max

    def source(self, name):
        """The layer called ``name``."""
        return next(ly for ly in self.layers if ly.name == name)

    @property
    def input_size(self):
        return int(np.prod(self.input_shape))

    @property
    def n_classes(self):
        return self.layers[-1].out_features

    @property
    def is_dense(self):
        """True when every layer is fully connected."""
        return all(ly.kind == "dense" for ly in self.layers)

    def acc_range(self, layer: Layer, bias=True):
        """Worst-case range of one timestep's input current ``W s + b`` of ``layer`` (per-channel fan-in
        for conv layers, shortcut included; padding can only remove terms; ``bias=False``: of
        ``W s`` alone), each weight times the largest value its source passes on."""
        in_max = self.in_max(layer)
        w = layer.weight.astype(np.int64).reshape(layer.channels, -1)
        b = layer.bias if bias else 0
        pos = np.clip(w, 0, None).sum(axis=1) * in_max + b
        neg = np.clip(w, None, 0).sum(axis=1) * in_max + b
        if layer.shortcut_weight is not None:
            sc = layer.shortcut_weight.astype(np.int64).reshape(layer.channels, -1)
            sc_max = self.source(layer.shortcut).out_max
            pos = pos + np.clip(sc, 0, None).sum(axis=1) * sc_max
            neg = neg + np.clip(sc, None, 0).sum(axis=1) * sc_max
        return int(min(neg.min(), 0)), int(max(pos.max(), 0))

    def acc_bits(self, layer: Layer):
        """Accumulator width that can never overflow for ``layer`` (checked, not assumed)."""
        return bits_for(*self.acc_range(layer))

    def with_exit_threshold(self, threshold: int):
        return replace(self, exit_threshold=int(threshold))


def check_exit_threshold(value, name="exit.threshold"):
    """The exit margin: an integer >= 0 (``name``: the field or option that gave it)."""
    return check_int(None, name, value, 0)


def fail(path, msg):
    raise ModelFileError(f"{path}: {msg}")


def validate(model: QuantModel, path="model"):
    """Check the whole model for consistency; raise ModelFileError naming the first problem."""
    if not model.layers:
        fail(path, "has no layers")
    try:
        neuron = NeuronConfig(model.neuron.leak_shift, model.neuron.reset, model.neuron.membrane_bits)
    except ConfigError as e:
        fail(path, str(e))
    lo, hi = T_MAX_RANGE
    if not isinstance(model.t_max, int) or not lo <= model.t_max <= hi:
        fail(path, f"t_max = {model.t_max!r} is outside the allowed range [{lo}, {hi}]")
    lo, hi = WIDTH_RANGES["input_bits"]
    if not isinstance(model.input_bits, int) or not lo <= model.input_bits <= hi:
        fail(path, f"input.bits = {model.input_bits!r} is outside the allowed range [{lo}, {hi}]")
    if model.exit_criterion != "margin":
        fail(path, f"exit.criterion = {model.exit_criterion!r}; the integer model supports 'margin'")
    try:
        check_exit_threshold(model.exit_threshold)
    except ConfigError as e:
        fail(path, str(e))
    lo_m, hi_m = signed_range(neuron.membrane_bits)
    expect_shape = tuple(model.input_shape)
    earlier = []
    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({layer.name!r})"
        if not isinstance(layer.name, str) or not layer.name:
            fail(path, f"layer {i}: name = {layer.name!r} must be a non-empty string")
        if not LAYER_NAME.fullmatch(layer.name):
            fail(path, f"layer {i}: name = {layer.name!r}; a layer name is 1 to {LAYER_NAME_MAX} ASCII letters, "
                 "digits, '_', '-' or '.' (it names signals and ports of the hardware, and --storage's LAYER=S)")
        if any(ly.name == layer.name for ly in earlier):
            fail(path, f"{where}: the name {layer.name!r} is used twice (layer names must be unique: "
                  "counters, shortcuts and memories are named after them)")
        want_role = "analog" if i == 0 else ("output" if i == len(model.layers) - 1 else "spiking")
        if len(model.layers) == 1:
            fail(path, "needs at least two layers (an analog input layer and an output layer)")
        if layer.role != want_role:
            fail(path, f"{where}: role {layer.role!r}, expected {want_role!r} at this position")
        if layer.kind not in KINDS:
            fail(path, f"{where}: kind = {layer.kind!r}; allowed: {KINDS}")
        if layer.kind == "conv" and layer.role == "output":
            fail(path, f"{where}: the output layer must be 'dense' (one integrator per class), got 'conv'")
        if not WIDTH_RANGES["weight_bits"][0] <= layer.weight_bits <= WIDTH_RANGES["weight_bits"][1]:
            fail(path, f"{where}: weight_bits = {layer.weight_bits!r} outside [{', '.join(map(str, WIDTH_RANGES['weight_bits']))}]")
        wdim = 4 if layer.kind == "conv" else 2
        for nm, arr, ndim in (("weight", layer.weight, wdim), ("bias", layer.bias, 1)):
            if not isinstance(arr, np.ndarray) or arr.ndim != ndim or arr.dtype.kind not in "iu":
                fail(path, f"{where}: {nm} must be a {ndim}-d integer array, got "
                      f"{getattr(arr, 'dtype', type(arr))} with shape {getattr(arr, 'shape', None)}")
        if 0 in layer.weight.shape:
            fail(path, f"{where}: has no neurons or no inputs (weight shape {layer.weight.shape}); every layer "
                  "needs at least one of each")
        if layer.kind == "dense":
            if layer.in_shape or layer.stride != 1 or layer.padding != 0 or layer.pool != 1 \
                    or layer.pool_op != "max" or layer.shortcut is not None or layer.shortcut_weight is not None:
                fail(path, f"{where}: in_shape, stride, padding, pool, pool_op and shortcut are for conv "
                      "layers only")
            out, inp = layer.weight.shape
            expect_in = int(np.prod(expect_shape))
            if inp != expect_in:
                fail(path, f"{where}: weight has {inp} inputs (shape {layer.weight.shape}) but the "
                      f"previous stage gives {expect_in}")
        else:
            _check_conv(path, where, layer, expect_shape, earlier)
            out = layer.channels
        if layer.bias.shape != (out,):
            fail(path, f"{where}: bias shape {layer.bias.shape} does not match {out} outputs")
        _check_scale(path, where, layer.scale, layer.channels)
        lo_w, hi_w = signed_range(layer.weight_bits)
        for nm, arr in (("weight", layer.weight), ("shortcut_weight", layer.shortcut_weight)):
            if arr is None:
                continue
            bad = np.argwhere((arr < lo_w + 1) | (arr > hi_w))
            if len(bad):
                at = ", ".join(str(int(v)) for v in bad[0])
                fail(path, f"{where}: {nm} value {int(arr[tuple(bad[0])])} at [{at}] does not fit "
                      f"in {layer.weight_bits}-bit signed range [{lo_w + 1}, {hi_w}]")
        if np.any(layer.bias < lo_m) or np.any(layer.bias > hi_m):
            fail(path, f"{where}: bias outside the {neuron.membrane_bits}-bit membrane range "
                  f"[{lo_m}, {hi_m}] (min {int(layer.bias.min())}, max {int(layer.bias.max())})")
        if layer.pool_op not in POOL_OPS:
            fail(path, f"{where}: pool_op = {layer.pool_op!r}; allowed: {POOL_OPS}")
        if layer.role == "output":
            if layer.threshold is not None or layer.neuron is not None:
                fail(path, f"{where}: the output integrator has no threshold and no neuron (a spike-count "
                      "readout is a spiking layer followed by an identity integrator)")
            if out < 2:
                fail(path, f"{where}: an output layer needs at least 2 classes, got {out}")
        else:
            th = layer.threshold
            if not isinstance(th, np.ndarray) or th.shape != (out,) or th.dtype.kind not in "iu":
                fail(path, f"{where}: threshold must be an integer array of shape ({out},), got "
                      f"{getattr(th, 'shape', th)!r}")
            if np.any(th < 1) or np.any(th > hi_m):
                fail(path, f"{where}: thresholds must lie in [1, {hi_m}] "
                      f"(min {int(th.min())}, max {int(th.max())})")
            if not isinstance(layer.neuron, LayerNeuron):
                fail(path, f"{where}: neuron must be a LayerNeuron, got {layer.neuron!r}")
        if model.acc_bits(layer) > ACC_BITS_MAX:
            fail(path, f"{where}: the worst-case input current needs {model.acc_bits(layer)} bits; "
                  "at most 32 are supported (lower weight_bits or input bits)")
        expect_shape = layer.out_shape
        earlier.append(layer)
    if model.classes and len(model.classes) != model.n_classes:
        fail(path, f"{len(model.classes)} class names for {model.n_classes} outputs")
    return model


def _check_scale(path, where, scale, channels):
    """``scale``: one real unit per channel, one for the layer, or none (integers only): finite
    numbers > 0."""
    if not isinstance(scale, (list, tuple)) or len(scale) not in (0, 1, channels):
        n = f"{len(scale)} values" if isinstance(scale, (list, tuple)) else repr(scale)
        fail(path, f"{where}: scale = {n} must be a list of numbers of length 0, 1 or {channels} "
              "(one per channel)")
    for v in scale:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            fail(path, f"{where}: scale value {v!r} is not a number (scale must be a list of numbers)")
        if not np.isfinite(v) or v <= 0:
            fail(path, f"{where}: scale value {v!r} must be finite and > 0")


def int_at_least(v, lo=1):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _check_conv(path, where, layer, expect_shape, earlier):
    """The conv-only checks of :func:`validate` (geometry, shapes, the residual shortcut)."""
    shp = tuple(layer.in_shape)
    if len(shp) != 3 or not all(int_at_least(v) for v in shp):
        fail(path, f"{where}: in_shape = {layer.in_shape!r} must be (C, H, W), three positive integers")
    if len(expect_shape) != 3:
        fail(path, f"{where}: a conv layer needs a (C, H, W) spike map but the previous stage gives "
              f"shape {tuple(expect_shape)}")
    if shp != tuple(expect_shape):
        fail(path, f"{where}: in_shape {shp} but the previous stage gives {tuple(expect_shape)}")
    c_out, c_in, kh, kw = layer.weight.shape
    if kh != kw or kh < 1 or c_out < 1:
        fail(path, f"{where}: conv weight must be (C_out, C_in, k, k) with a square kernel, got "
              f"{layer.weight.shape}")
    if c_in != shp[0]:
        fail(path, f"{where}: weight has {c_in} input channels (shape {layer.weight.shape}) but the "
              f"input map has {shp[0]}")
    for nm in ("stride", "pool", "shortcut_stride"):
        if not int_at_least(getattr(layer, nm)):
            fail(path, f"{where}: {nm} = {getattr(layer, nm)!r} must be an integer >= 1")
    if not int_at_least(layer.padding, 0) or layer.padding >= kh:
        fail(path, f"{where}: padding = {layer.padding!r} must be an integer in [0, {kh - 1}] "
              f"(kernel {kh})")
    _, h, w = layer.map_shape
    if h < 1 or w < 1:
        fail(path, f"{where}: kernel {kh}, stride {layer.stride}, padding {layer.padding} on a "
              f"{shp[1]}x{shp[2]} map give an empty output ({h}x{w})")
    if h < layer.pool or w < layer.pool:
        fail(path, f"{where}: pool = {layer.pool} is larger than the {h}x{w} output map")
    if (layer.shortcut is None) != (layer.shortcut_weight is None):
        fail(path, f"{where}: shortcut = {layer.shortcut!r} and shortcut_weight must be given together")
    if layer.shortcut is None:
        return
    src = [ly for ly in earlier if ly.name == layer.shortcut]
    if len(src) != 1:
        fail(path, f"{where}: shortcut = {layer.shortcut!r} must name exactly one earlier layer, "
              f"found {len(src)}")
    src_shape = src[0].out_shape
    if src[0].kind != "conv":
        fail(path, f"{where}: shortcut source {layer.shortcut!r} is {src[0].kind!r}; it must be a conv layer")
    sw = layer.shortcut_weight
    if not isinstance(sw, np.ndarray) or sw.dtype.kind not in "iu" or sw.shape != (c_out, src_shape[0], 1, 1):
        fail(path, f"{where}: shortcut_weight must be an integer array of shape "
              f"({c_out}, {src_shape[0]}, 1, 1), got {getattr(sw, 'shape', sw)!r}")
    ss = layer.shortcut_stride
    got = ((src_shape[1] - 1) // ss + 1, (src_shape[2] - 1) // ss + 1)
    if got != (h, w):
        fail(path, f"{where}: the shortcut from {layer.shortcut!r} ({src_shape[1]}x{src_shape[2]}, "
              f"stride {ss}) gives a {got[0]}x{got[1]} map, the layer's is {h}x{w}")




def count_readout(layer: Layer, name=None):
    """The integrator that counts the spikes of the spiking layer ``layer`` (dense, one neuron per
    class): identity weights in 2 bits, no bias, ``z * 1`` in spikes. Appended after ``layer``
    it makes the network's output the spike count of ``layer`` (:attr:`QuantModel.readout` is
    then ``"count"``)."""
    k = layer.out_features
    return Layer(name=name or f"{layer.name}_count", role="output", weight=np.eye(k, dtype=np.int64),
                 bias=np.zeros(k, np.int64), threshold=None, weight_bits=2, scale=[1.0])
